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

from coordinator.ops.config import NotifyConfig
from coordinator.ops.notify.escape import sms_checked, sms_text, wecom_markdown
from coordinator.ops.notify.outbox import OutgoingNotice
from coordinator.ops.notify.wording import local_time, reason_zh, short_ref
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
class TripFacts:
    """What tripped a breaker, as the agent reported it: zone, the reading furthest past
    the limit, the limit itself (``above 8 °C for 300 s``), and the trip's event time."""

    at: datetime
    zone: str | None
    metric: str | None
    value: float | None
    op: str | None
    limit: float | None
    for_s: float | None


@dataclass(frozen=True, slots=True)
class IncidentSummary:
    incident_id: str
    warehouse: WarehouseInfo
    cause: str
    reason: str
    at: datetime  # the trip's event time when a breaker tripped, else when it was decided
    moved: list[MovedNotice] = field(default_factory=list)
    stuck: list[StuckNotice] = field(default_factory=list)
    trip: TripFacts | None = None


def _truncate(text: str, max_bytes: int) -> str:
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    return raw[: max_bytes - 3].decode(errors="ignore") + "..."


def _destinations(summary: IncidentSummary) -> list[tuple[str, int]]:
    names = {m.new_warehouse.id: m.new_warehouse.name for m in summary.moved}
    counted = Counter(m.new_warehouse.id for m in summary.moved)
    return [(f"{names[wid]} ({wid})", n) for wid, n in sorted(counted.items())]


UNITS = {"temperature_c": "°C", "humidity_pct": "%"}


def reading_text(trip: TripFacts | None) -> str:
    """``cold_room_2 9.6°C（阈值 高于 8°C 持续 5 分钟）``, or '' without a reading."""
    if trip is None or trip.value is None:
        return ""
    unit = UNITS.get(trip.metric or "", "")
    text = f"{trip.zone or ''} {trip.value:g}{unit}".strip()
    if trip.limit is not None:
        op = "高于" if trip.op == "above" else "低于"
        held = f" 持续 {trip.for_s / 60:g} 分钟" if trip.for_s else ""
        text += f"（阈值 {op} {trip.limit:g}{unit}{held}）"
    return text


def _incident_fields(summary: IncidentSummary, timezone: str,
                     dashboard_url: str | None = None) -> dict[str, Any]:
    trip = summary.trip
    link = (f"{dashboard_url.rstrip('/')}/dashboard/incidents/{summary.incident_id}"
            if dashboard_url else "")
    return {
        "incident_id": summary.incident_id,
        "incident_ref": short_ref(summary.incident_id),
        "warehouse_id": summary.warehouse.id,
        "warehouse_name": summary.warehouse.name,
        "cause": summary.cause,
        "reason": summary.reason,
        "reason_zh": reason_zh(summary.reason),
        "zone": trip.zone if trip and trip.zone else "",
        "reading": reading_text(trip),
        "moved": len(summary.moved),
        "stuck": len(summary.stuck),
        "at": stamp(summary.at),
        "at_local": local_time(summary.at, timezone),
        "link": link,
    }


# fields whose text comes from people or channels, not from the coordinator itself
UNTRUSTED_FIELDS = ("warehouse_name", "reason", "reason_zh", "cause", "incident_id",
                    "warehouse_id", "zone", "reading")


def wecom_body(summary: IncidentSummary, msgtype: str, mentioned_mobile_list: list[str],
               timezone: str, dashboard_url: str | None = None) -> dict[str, Any]:
    """The robot's documented JSON: ``{"msgtype": "markdown", "markdown": {"content"}}``.
    Says the warehouse, zone, reading and limit, the local trip time, a short incident
    reference and (with ``ops.notify.dashboard_url``) the incident page's link."""
    f = _incident_fields(summary, timezone, dashboard_url)
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
            f"## 仓库停止接单：{f['warehouse_name']}（{f['warehouse_id']}）",
            f"> 事件：<font color=\"warning\">{f['incident_ref']}</font>",
            f"> 原因：{f['reason_zh']}",
        ]
        if f["reading"]:
            lines.append(f"> 读数：{f['reading']}")
        lines += [
            f"> 熔断时间：{f['at_local']}",
            f"> 已自动改派：<font color=\"info\">{f['moved']}</font> 单",
            f"> 待人工处理：<font color=\"warning\">{f['stuck']}</font> 单",
            f"改派去向：{where}",
        ]
        if stuck_ids:
            lines.append(f"待处理订单：{stuck_ids}")
        if f["link"]:
            lines.append(f"[打开事件页面]({f['link']})")
        content = _truncate("\n".join(lines), WECOM_MARKDOWN_MAX_BYTES)
        return {"msgtype": "markdown", "markdown": {"content": content}}
    text = (
        f"仓库停止接单：{f['warehouse_name']}（{f['warehouse_id']}）\n"
        f"事件 {f['incident_ref']}，原因：{f['reason_zh']}"
        + (f"，读数 {f['reading']}" if f["reading"] else "") + "\n"
        f"熔断时间：{f['at_local']}\n"
        f"已自动改派 {f['moved']} 单，待人工处理 {f['stuck']} 单\n改派去向：{where}"
    )
    if stuck_ids:
        text += f"\n待处理订单：{stuck_ids}"
    if f["link"]:
        text += f"\n{f['link']}"
    body: dict[str, Any] = {"content": _truncate(text, WECOM_TEXT_MAX_BYTES)}
    if mentioned_mobile_list:
        body["mentioned_mobile_list"] = list(mentioned_mobile_list)
    return {"msgtype": "text", "text": body}


def sms_body(summary: IncidentSummary, config: NotifyConfig) -> dict[str, Any]:
    sms = config.sms
    # one line each, no control characters; the whole body within the gateways' limit
    params = {k: sms_text(str(v)) for k, v in
              _incident_fields(summary, config.timezone, config.dashboard_url).items()}
    content = sms_checked(sms.template.format(signature=sms.signature, **params))
    return {
        "phone_numbers": list(sms.phone_numbers),
        "sign_name": sms.signature,
        "template_code": sms.template_code,
        "template_param": params,
        "content": content,
    }


def webhook_body(summary: IncidentSummary, timezone: str,
                 dashboard_url: str | None = None) -> dict[str, Any]:
    return {
        "event": "warehouse_unavailable",
        **_incident_fields(summary, timezone, dashboard_url),
        "warehouse": summary.warehouse.as_json(),
        "rerouted_to": {name: n for name, n in _destinations(summary)},
        "needs_attention": [{"order_id": s.order_id, "reason": s.reason}
                            for s in summary.stuck],
    }


def incident_notices(summary: IncidentSummary, config: NotifyConfig) -> list[OutgoingNotice]:
    """The operations messages of one incident (franchisee notices are queued set-wise by
    :func:`coordinator.ops.notify.franchisee.compose_store_notices`)."""
    notices: list[OutgoingNotice] = []
    inc = summary.incident_id
    if config.wecom.enabled:
        notices.append(OutgoingNotice(
            "wecom", f"wecom:{inc}:opened",
            wecom_body(summary, config.wecom.msgtype, config.wecom.mentioned_mobile_list,
                       config.timezone, config.dashboard_url), inc))
    if config.sms.enabled:
        notices.append(OutgoingNotice("sms", f"sms:{inc}:opened", sms_body(summary, config), inc))
    if config.webhook.enabled:
        notices.append(OutgoingNotice("webhook", f"webhook:{inc}:opened",
                                      webhook_body(summary, config.timezone,
                                                   config.dashboard_url), inc))
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
