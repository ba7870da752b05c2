"""Security alerts to operations (pure): a refused, held or flagged gateway message is
raised on the WeCom robot and the webhook, and shown on the dashboard (from
``security_events``). A flood must not drown the robot (about 20 messages a minute):
one message per (reason, agent, warehouse) and hour; the dashboard counts every one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from coordinator.gateways.policy import Outcome, Verdict
from coordinator.ops.config import NotifyConfig
from coordinator.ops.notify.escape import wecom_markdown
from coordinator.ops.notify.outbox import OutgoingNotice
from coordinator.ops.notify.wording import local_time
from protocols.timestamps import stamp

HEADLINES = {
    Outcome.REFUSE: "安全告警：已拒绝网关消息 refused",
    Outcome.HOLD: "安全告警：新网关身份待确认 awaiting confirmation",
    Outcome.APPLY_FLAGGED: "安全告警：可疑跳闸已执行 suspect trip applied",
}


def security_notices(verdict: Verdict, now: datetime,
                     config: NotifyConfig) -> list[OutgoingNotice]:
    if verdict.outcome is Outcome.APPLY:
        return []
    message = verdict.message
    reason = verdict.reason.value if verdict.reason else "unknown"
    key = (f"security:{reason}:{message.warehouse_id}:{message.agent_id}:"
           f"{now:%Y%m%dT%H}")
    fields: dict[str, Any] = {
        "event": "security_alert", "outcome": verdict.outcome.value, "reason": reason,
        "field": verdict.field, "agent_id": message.agent_id,
        "warehouse_id": message.warehouse_id, "detail": verdict.detail, "at": stamp(now),
        "at_local": local_time(now, config.timezone)}
    notices: list[OutgoingNotice] = []
    headline = HEADLINES[verdict.outcome]
    if config.wecom.enabled:
        lines = [f"## {headline}",
                 f"> 原因 reason：{wecom_markdown(reason)}"
                 f"（{wecom_markdown(verdict.field or '')}）",
                 f"> 网关 agent：{wecom_markdown(message.agent_id)}",
                 f"> 仓库 warehouse：{wecom_markdown(message.warehouse_id)}",
                 f"> {wecom_markdown(verdict.detail)}",
                 f"> 时间：{fields['at_local']}"]
        body: dict[str, Any] = (
            {"msgtype": "markdown", "markdown": {"content": "\n".join(lines)}}
            if config.wecom.msgtype == "markdown" else
            {"msgtype": "text", "text": {"content": "\n".join(
                [headline, reason, message.agent_id, message.warehouse_id, verdict.detail,
                 fields["at_local"]])}})
        notices.append(OutgoingNotice("wecom", "wecom:" + key, body))
    if config.webhook.enabled:
        notices.append(OutgoingNotice("webhook", "webhook:" + key, fields))
    return notices
