"""Message templates of the customer side: ten default scripts, validation, rendering.

A template is ``str.format`` text over a fixed set of placeholders. Templates are chosen
per node and channel: ``templates[node][channel]``, falling back to
``templates[node]["default"]``; SMS uses ``templates[node]["sms"]`` when given. They are
validated when the coordinator starts (:func:`check_templates`): an unknown placeholder, a
malformed brace or an SMS that can exceed its length is a ``ConfigError`` naming the
template, e.g. ``customer.templates.shipped.sms: ...``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Literal

# The status nodes a customer hears about, in timeline order, then the other scripts.
NodeName = Literal["allocated", "rerouted", "shipped", "in_transit", "delivered", "delayed"]
STATUS_NODES: tuple[NodeName, ...] = ("allocated", "rerouted", "shipped", "in_transit",
                                      "delivered", "delayed")
SCRIPTS = (*STATUS_NODES, "inquiry_reply", "unpaid_reminder", "unpaid_cancelled",
           "unpaid_store_reminder")

# what each placeholder means (docs/customer.md lists them)
PLACEHOLDERS: Mapping[str, str] = {
    "order_no": "the channel's order number",
    "status": "the order's status label (已分仓, 已出库, 在途 ...)",
    "time": "when the node happened, local wall clock (MM-DD HH:MM)",
    "eta": "expected arrival, local wall clock (MM-DD HH:MM; 待定 when unknown)",
    "warehouse": "the warehouse's name",
    "tracking_link": "customer.tracking_url with the order filled in",
    "store": "the store's name",
    "coupon_code": "the coupon's code",
    "coupon_value": "the coupon's value in yuan",
    "minutes": "minutes since the order was placed",
    "timeline": "the order's nodes and times (inquiry replies)",
}

# The worst case of each placeholder, for the SMS length check: the longest value a
# rendered message can carry (order numbers up to 32 characters, a 40-character link).
_WIDEST: Mapping[str, str] = {
    "order_no": "9" * 32, "status": "需人工处理", "time": "12-31 23:59", "eta": "12-31 23:59",
    "warehouse": "仓" * 12, "tracking_link": "https://t.example.cn/" + "x" * 20,
    "store": "店" * 12, "coupon_code": "X" * 20, "coupon_value": "100", "minutes": "9999",
    "timeline": "",
}

# The ten scripts a tea-drink chain's customer service uses most.
DEFAULT_TEMPLATES: Mapping[str, Mapping[str, str]] = {
    "allocated": {"default": "您的订单{order_no}已分仓，由{warehouse}为您备货，预计{eta}送达。"},
    "rerouted": {"default": "抱歉，原仓库临时停止出货，您的订单{order_no}已改由{warehouse}配送，"
                            "预计{eta}送达。"},
    "shipped": {"default": "您的包裹已发出，点击查看实时物流：{tracking_link}",
                "sms": "订单{order_no}已出库，物流：{tracking_link}"},
    "in_transit": {"default": "您的订单{order_no}正在配送途中，预计{eta}送达，"
                              "请保持电话畅通。"},
    "delivered": {"default": "您的订单{order_no}已于{time}送达，祝您饮用愉快！"
                             "如有问题请随时联系我们。"},
    "delayed": {"default": "非常抱歉，您的订单{order_no}配送有所延迟，最新预计{eta}送达，"
                           "我们正在加急处理。"},
    "inquiry_reply": {"default": "您好，订单{order_no}当前状态：{status}（{time}），"
                                 "预计{eta}送达。{timeline}"},
    "unpaid_reminder": {"default": "您的订单{order_no}还未支付，送您{coupon_value}元券"
                                   "{coupon_code}，完成支付即可使用。"},
    "unpaid_cancelled": {"default": "您的订单{order_no}超时未支付，已自动取消，欢迎再次光临。"},
    "unpaid_store_reminder": {"default": "门店{store}：订单{order_no}已下单{minutes}分钟仍未支付，"
                                         "已向顾客发送催付短信及优惠券，请留意。"},
}


def placeholders_of(text: str) -> list[str]:
    """The placeholder names ``text`` uses; ``ValueError`` for a malformed brace."""
    names: list[str] = []
    for _, field, spec, conversion in string.Formatter().parse(text):
        if field is None:
            continue
        if not field or not field.isidentifier():
            message = f"placeholder {{{field}}} is not a name (e.g. {{order_no}})"
            raise ValueError(message)
        if spec or conversion:
            message = f"placeholder {{{field}}} takes no format spec or conversion"
            raise ValueError(message)
        names.append(field)
    return names


def template_problem(text: str, *, sms_max_chars: int | None) -> str | None:
    """Why ``text`` cannot be used (None: it can). ``sms_max_chars``: check the widest
    rendering against an SMS's length (signature included by the caller's budget)."""
    if not text.strip():
        return "is empty"
    try:
        names = placeholders_of(text)
    except ValueError as exc:
        return str(exc)
    unknown = [n for n in names if n not in PLACEHOLDERS]
    if unknown:
        return (f"unknown placeholder {{{unknown[0]}}} (known: "
                f"{', '.join(sorted(PLACEHOLDERS))})")
    if sms_max_chars is not None:
        widest = len(render(text, _WIDEST))
        if widest > sms_max_chars:
            return (f"SMS can reach {widest} characters, over the {sms_max_chars} of "
                    "customer.sms.max_chars")
    return None


def render(text: str, values: Mapping[str, str]) -> str:
    """Fill ``text``; placeholders without a value render empty (validated before)."""
    return text.format_map({name: values.get(name, "") for name in PLACEHOLDERS})


def pick(templates: Mapping[str, Mapping[str, str]], script: str, channel: str,
         *, sms: bool = False) -> str:
    """The template of ``script`` for ``channel`` (SMS: its ``sms`` variant first)."""
    variants = templates[script]
    if sms and "sms" in variants:
        return variants["sms"]
    return variants.get(channel, variants["default"])
