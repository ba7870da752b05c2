"""Settings of the customer side: the ``[customer]`` table of the coordinator's file.

Validated when the coordinator starts (:func:`customer_config_of`); every error is a
``ConfigError`` naming the field, and template errors name the template
(``customer.templates.shipped.sms``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from coordinator.customer.templates import (
    DEFAULT_TEMPLATES,
    SCRIPTS,
    STATUS_NODES,
    NodeName,
    template_problem,
)
from coordinator.errors import ConfigError
from coordinator.settings import Settings

Route = Literal["webhook", "wechat_subscribe", "sms", "none"]
CHANNELS = ("wechat_mini", "meituan", "douyin", "manual")


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelRoute(_Config):
    """How a channel's customers are reached: the channel's own webhook (Meituan, Douyin
    open platforms), a WeChat subscribe message (mini-program), an SMS, or not at all."""

    route: Route = "none"
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # WeChat subscribe message: the template id approved in the mini-program console and
    # the page a tap opens
    template_id: str | None = None
    page: str = "pages/order/detail"

    @model_validator(mode="after")
    def _url(self) -> ChannelRoute:
        if self.route in ("webhook", "wechat_subscribe") and not self.url:
            message = f"url is required for route {self.route!r}"
            raise ValueError(message)
        if self.route == "wechat_subscribe" and not self.template_id:
            raise ValueError("template_id is required for route 'wechat_subscribe'")
        return self


class CustomerSms(_Config):
    """The SMS gateway for customers (marketing and service SMS need their own signature)."""

    url: str | None = None
    api_key: str | None = None
    signature: str = Field(default="Breakwater", min_length=1, max_length=16)
    # a message over 70 characters is sent as a concatenated (long) SMS; this caps it
    max_chars: int = Field(default=120, ge=20, le=500)


class PaymentConfig(_Config):
    unpaid_reserves_stock: bool = True
    remind_after_min: float = Field(default=120.0, gt=0, le=7 * 24 * 60)
    cancel_after_min: float = Field(default=240.0, gt=0, le=30 * 24 * 60)
    coupon_prefix: str = Field(default="PAY", pattern=r"^[A-Z0-9]{1,8}$")
    coupon_value_yuan: float = Field(default=5.0, ge=0, le=1000)

    @model_validator(mode="after")
    def _order(self) -> PaymentConfig:
        if self.cancel_after_min <= self.remind_after_min:
            raise ValueError("cancel_after_min must be later than remind_after_min")
        return self

    @property
    def remind_after(self) -> timedelta:
        return timedelta(minutes=self.remind_after_min)

    @property
    def cancel_after(self) -> timedelta:
        return timedelta(minutes=self.cancel_after_min)


def _default_channels() -> dict[str, ChannelRoute]:
    return {c: ChannelRoute() for c in CHANNELS}


class CustomerConfig(_Config):
    retention_days: float = Field(default=90, gt=0, le=3650,
                                  description="personal data kept after delivery/cancel")
    contacts_radius_km: float = Field(default=3.0, gt=0, le=100)
    tracking_url: str = Field(default="https://track.example.cn/o/{order_no}", max_length=200)
    # an order whose ETA passed this long ago, not delivered, is "delayed" (one message)
    delayed_after_min: float = Field(default=15.0, ge=0, le=24 * 60)
    inquiry_max_orders: int = Field(default=3, ge=1, le=20)
    # the status nodes customers are told about (a chain may skip e.g. in_transit)
    message_nodes: tuple[NodeName, ...] = STATUS_NODES
    channels: dict[str, ChannelRoute] = Field(default_factory=_default_channels)
    sms: CustomerSms = CustomerSms()
    payment: PaymentConfig = PaymentConfig()
    templates: dict[str, dict[str, str]] = Field(default_factory=dict)

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.retention_days)

    @property
    def delayed_after(self) -> timedelta:
        return timedelta(minutes=self.delayed_after_min)

    def merged_templates(self) -> dict[str, dict[str, str]]:
        """The defaults with this file's templates laid over them, variant by variant."""
        out = {script: dict(variants) for script, variants in DEFAULT_TEMPLATES.items()}
        for script, variants in self.templates.items():
            out.setdefault(script, {}).update(variants)
        return out

    def route_of(self, channel: str) -> ChannelRoute:
        return self.channels.get(channel, ChannelRoute())


def check_templates(config: CustomerConfig) -> dict[str, dict[str, str]]:
    """Every template usable, or :class:`ConfigError` naming the first bad one."""
    templates = config.merged_templates()
    budget = config.sms.max_chars - len(config.sms.signature) - 2  # 【signature】
    sms_used = any(r.route == "sms" for r in config.channels.values())
    for script, variants in templates.items():
        where = f"customer.templates.{script}"
        if script not in SCRIPTS:
            message = f"invalid setting {where}: unknown script (known: {', '.join(SCRIPTS)})"
            raise ConfigError(message)
        if "default" not in variants:
            message = f"invalid setting {where}.default: required"
            raise ConfigError(message)
        for variant, text in variants.items():
            if variant not in ("default", "sms", *CHANNELS):
                message = (f"invalid setting {where}.{variant}: unknown variant (default, sms, "
                           f"{', '.join(CHANNELS)})")
                raise ConfigError(message)
            # what may go out as an SMS: the sms variant, the unpaid reminder, and the
            # default of every script when a channel is reached by SMS
            is_sms = (variant == "sms" or (script == "unpaid_reminder" and "sms" not in variants)
                      or (sms_used and variant == "default" and "sms" not in variants
                          and script != "unpaid_store_reminder"))
            problem = template_problem(text, sms_max_chars=budget if is_sms else None)
            if problem is not None:
                message = f"invalid setting {where}.{variant}: {problem}"
                raise ConfigError(message)
    return templates


def customer_config_of(settings: Settings | Mapping[str, object]) -> CustomerConfig:
    """The validated ``[customer]`` table (defaults when absent), templates included."""
    raw = settings.section("customer") if isinstance(settings, Settings) else settings
    try:
        config = CustomerConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in ("customer", *first["loc"]))
        message = f"invalid setting {where}: {first['msg']}"
        raise ConfigError(message) from exc
    check_templates(config)
    return config
