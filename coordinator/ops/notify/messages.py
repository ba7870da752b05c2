"""What to say, to whom: building the notices of an incident (pure, no I/O).

Franchisees get one structured notice per rerouted order; operations get ONE message
per incident on each enabled channel (WeCom robot, SMS gateway, JSON webhook), with
counts rather than one message per order (the WeCom robot takes ~20 messages/min).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from coordinator.ops.config import NotifyConfig
from coordinator.ops.notify.escape import sms_checked, sms_text, wecom_markdown
from coordinator.ops.notify.outbox import OutgoingNotice
from protocols.timestamps import stamp

WECOM_MARKDOWN_MAX_BYTES = 4096
WECOM_TEXT_MAX_BYTES = 2048


@dataclass(frozen=True, slots=True)
class WarehouseInfo:
    id: str
    name: str
    address: str
    lat: float
    lon: float

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "address": self.address}


@dataclass(frozen=True, slots=True)
class MovedNotice:
    order_id: str
    new_warehouse: WarehouseInfo


@dataclass(frozen=True, slots=True)
class StuckNotice:
    order_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class IncidentSummary:
    incident_id: str
    warehouse: WarehouseInfo
    cause: str
    reason: str
    at: datetime
    moved: list[MovedNotice] = field(default_factory=list)
    stuck: list[StuckNotice] = field(default_factory=list)


def _truncate(text: str, max_bytes: int) -> str:
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    return raw[: max_bytes - 3].decode(errors="ignore") + "..."


def _destinations(summary: IncidentSummary) -> list[tuple[str, int]]:
    names = {m.new_warehouse.id: m.new_warehouse.name for m in summary.moved}
    counted = Counter(m.new_warehouse.id for m in summary.moved)
    return [(f"{names[wid]} ({wid})", n) for wid, n in sorted(counted.items())]


def local_time(at: datetime, timezone: str) -> str:
    """``2026-01-15 02:17:30 (Asia/Shanghai)``: how a person on duty reads a time."""
    return f"{at.astimezone(ZoneInfo(timezone)):%Y-%m-%d %H:%M:%S} ({timezone})"


def _incident_fields(summary: IncidentSummary, timezone: str) -> dict[str, Any]:
    return {
        "incident_id": summary.incident_id,
        "warehouse_id": summary.warehouse.id,
        "warehouse_name": summary.warehouse.name,
        "cause": summary.cause,
        "reason": summary.reason,
        "moved": len(summary.moved),
        "stuck": len(summary.stuck),
        "at": stamp(summary.at),
        "at_local": local_time(summary.at, timezone),
    }


# fields whose text comes from people or channels, not from the coordinator itself
UNTRUSTED_FIELDS = ("warehouse_name", "reason", "cause", "incident_id", "warehouse_id")


def wecom_body(summary: IncidentSummary, msgtype: str, mentioned_mobile_list: list[str],
               timezone: str) -> dict[str, Any]:
    """The robot's documented JSON: ``{"msgtype": "markdown", "markdown": {"content"}}``."""
    f = _incident_fields(summary, timezone)
    where = "，".join(f"{name} ×{n}" for name, n in _destinations(summary)) or "无"
    stuck_ids = ", ".join(s.order_id for s in summary.stuck[:10])
    if len(summary.stuck) > 10:
        stuck_ids += f" 等{len(summary.stuck)}单"
    if msgtype == "markdown":
        # operator, catalogue and channel text must stay text in the robot's markdown
        f = {**f, **{k: wecom_markdown(str(f[k])) for k in UNTRUSTED_FIELDS}}
        where = "，".join(f"{wecom_markdown(name)} ×{n}"
                         for name, n in _destinations(summary)) or "无"
        stuck_ids = ", ".join(wecom_markdown(s.order_id) for s in summary.stuck[:10]) + (
            f" 等{len(summary.stuck)}单" if len(summary.stuck) > 10 else "")
        lines = [
            f"## 仓库停止接单：{f['warehouse_name']}",
            f"> 事件：<font color=\"warning\">{f['incident_id']}</font>",
            f"> 原因：{f['reason']}（{f['cause']}）",
            f"> 已自动改派：<font color=\"info\">{f['moved']}</font> 单",
            f"> 待人工处理：<font color=\"warning\">{f['stuck']}</font> 单",
            f"> 时间：{f['at_local']}",
            f"改派去向：{where}",
        ]
        if stuck_ids:
            lines.append(f"待处理订单：{stuck_ids}")
        content = _truncate("\n".join(lines), WECOM_MARKDOWN_MAX_BYTES)
        return {"msgtype": "markdown", "markdown": {"content": content}}
    text = (
        f"仓库停止接单：{f['warehouse_name']}（{f['warehouse_id']}）\n"
        f"事件 {f['incident_id']}，原因：{f['reason']}\n"
        f"已自动改派 {f['moved']} 单，待人工处理 {f['stuck']} 单\n改派去向：{where}\n"
        f"时间：{f['at_local']}"
    )
    if stuck_ids:
        text += f"\n待处理订单：{stuck_ids}"
    body: dict[str, Any] = {"content": _truncate(text, WECOM_TEXT_MAX_BYTES)}
    if mentioned_mobile_list:
        body["mentioned_mobile_list"] = list(mentioned_mobile_list)
    return {"msgtype": "text", "text": body}


def sms_body(summary: IncidentSummary, config: NotifyConfig) -> dict[str, Any]:
    sms = config.sms
    # one line each, no control characters; the whole body within the gateways' limit
    params = {k: sms_text(str(v)) for k, v in _incident_fields(summary, config.timezone).items()}
    content = sms_checked(sms.template.format(signature=sms.signature, **params))
    return {
        "phone_numbers": list(sms.phone_numbers),
        "sign_name": sms.signature,
        "template_code": sms.template_code,
        "template_param": params,
        "content": content,
    }


def webhook_body(summary: IncidentSummary, timezone: str) -> dict[str, Any]:
    return {
        "event": "warehouse_unavailable",
        **_incident_fields(summary, timezone),
        "warehouse": summary.warehouse.as_json(),
        "rerouted_to": {name: n for name, n in _destinations(summary)},
        "needs_attention": [{"order_id": s.order_id, "reason": s.reason}
                            for s in summary.stuck],
    }


def incident_notices(summary: IncidentSummary, config: NotifyConfig) -> list[OutgoingNotice]:
    """The operations messages of one incident (franchisee notices are queued set-wise by
    :func:`coordinator.ops.notify.franchisee.queue_franchisee_notices`)."""
    notices: list[OutgoingNotice] = []
    inc = summary.incident_id
    if config.wecom.enabled:
        notices.append(OutgoingNotice(
            "wecom", f"wecom:{inc}:opened",
            wecom_body(summary, config.wecom.msgtype, config.wecom.mentioned_mobile_list,
                       config.timezone), inc))
    if config.sms.enabled:
        notices.append(OutgoingNotice("sms", f"sms:{inc}:opened", sms_body(summary, config), inc))
    if config.webhook.enabled:
        notices.append(OutgoingNotice("webhook", f"webhook:{inc}:opened",
                                      webhook_body(summary, config.timezone), inc))
    return notices


def recovery_notices(warehouse: WarehouseInfo, incident_id: str, at: datetime,
                     config: NotifyConfig) -> list[OutgoingNotice]:
    """One 'taking orders again' message per incident on the ops channels."""
    notices: list[OutgoingNotice] = []
    text = (f"仓库恢复接单：{warehouse.name}（{warehouse.id}），事件 {incident_id} 结束 "
            f"{local_time(at, config.timezone)}")
    if config.wecom.enabled:
        body: dict[str, Any] = (
            {"msgtype": "markdown", "markdown": {"content": f"### {text}"}}
            if config.wecom.msgtype == "markdown"
            else {"msgtype": "text", "text": {"content": text}}
        )
        notices.append(OutgoingNotice("wecom", f"wecom:{incident_id}:closed", body, incident_id))
    if config.webhook.enabled:
        notices.append(OutgoingNotice(
            "webhook", f"webhook:{incident_id}:closed",
            {"event": "warehouse_available", "incident_id": incident_id,
             "warehouse": warehouse.as_json(), "at": stamp(at)}, incident_id))
    return notices
