"""The escalation shell: read open incidents, ask the roster who is on call, queue the
messages through the notification outbox (once per incident and level: the dedupe key)
and record each escalation on the incident's timeline. Runs on the ops thread from the
ops service's ticker; the decisions are :mod:`coordinator.ops.escalation`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from coordinator.db import Database, write_transaction
from coordinator.ops import incident_log
from coordinator.ops.config import NotifyConfig
from coordinator.ops.escalation import Escalate, OpenIncident, Person, Policy, due, recipients
from coordinator.ops.notify import outbox
from coordinator.ops.notify.outbox import OutgoingNotice
from coordinator.ops.notify.wording import local_time, reason_zh, short_ref

# (db, warehouse_id, at) -> the people on duty; the staff roster's on_duty
RosterLookup = Callable[[Database, str, datetime], Sequence[Person]]


def no_roster(db: Database, warehouse_id: str, at: datetime) -> Sequence[Person]:
    """Before a roster is configured: nobody by name (SMS falls back to the configured
    ``ops.notify.sms.phone_numbers``)."""
    return ()


def open_incidents(db: Database) -> list[OpenIncident]:
    rows = db.conn.execute(
        "SELECT i.incident_id, i.warehouse_id, i.opened_at, "
        "(SELECT count(*) FROM ops_incident_actions a WHERE a.incident_id = i.incident_id "
        " AND a.action = 'acknowledged'), "
        "(SELECT count(*) FROM ops_incident_actions a WHERE a.incident_id = i.incident_id "
        " AND a.action = 'escalated'), "
        "(SELECT max(a.at) FROM ops_incident_actions a WHERE a.incident_id = i.incident_id "
        " AND a.action = 'escalated') "
        "FROM ops_incidents i WHERE i.closed_at IS NULL ORDER BY i.opened_at").fetchall()
    return [OpenIncident(r[0], r[1], datetime.fromisoformat(r[2]), r[3] > 0, r[4],
                         datetime.fromisoformat(r[5]) if r[5] else None) for r in rows]


def _text(e: Escalate, db: Database, now: datetime, config: NotifyConfig) -> str:
    row = db.conn.execute(
        "SELECT w.name, i.reason, i.opened_at FROM ops_incidents i LEFT JOIN warehouses w "
        "ON w.id = i.warehouse_id WHERE i.incident_id = :i", {"i": e.incident_id}).fetchone()
    name, reason = row[0] or e.warehouse_id, row[1] or ""
    # the trip's time when a breaker tripped: the one time every message shows
    trip = incident_log.trip_facts(db, e.warehouse_id, e.incident_id)
    began = trip.at if trip else datetime.fromisoformat(row[2])
    minutes = int((now - began).total_seconds() // 60)
    link = (f" {config.dashboard_url.rstrip('/')}/dashboard/incidents/{e.incident_id}"
            if config.dashboard_url else "")
    return (f"【升级提醒 第{e.level}次】{name} 事件 {short_ref(e.incident_id)} "
            f"已 {minutes} 分钟无人确认（{reason_zh(reason)}，"
            f"开始于 {local_time(began, config.timezone)}），"
            f"请立即处理并在看板上确认。{link}").rstrip()


def _notice(e: Escalate, people: list[Person], text: str, config: NotifyConfig
            ) -> tuple[OutgoingNotice | None, list[str]]:
    phones = [p.phone for p in people]
    key = f"{e.channel}:{e.incident_id}:escalation:{e.level}"
    if e.channel == "wecom" and config.wecom.enabled:
        body: dict[str, Any] = {"msgtype": "text", "text": {
            "content": text,
            "mentioned_mobile_list": phones or list(config.wecom.mentioned_mobile_list)}}
        return OutgoingNotice("wecom", key, body, e.incident_id), [p.name for p in people]
    if e.channel == "sms" and config.sms.enabled:
        to = phones or list(config.sms.phone_numbers)
        body = {"phone_numbers": to, "sign_name": config.sms.signature,
                "template_code": "BW_ESCALATION",
                "template_param": {"incident_ref": short_ref(e.incident_id),
                                   "level": str(e.level)},
                "content": f"【{config.sms.signature}】{text}"}
        return OutgoingNotice("sms", key, body, e.incident_id), (
            [p.name for p in people] or ["ops.notify.sms.phone_numbers"])
    return None, []


def run(db: Database, policy: Policy, config: NotifyConfig, now: datetime,
        roster: RosterLookup = no_roster) -> list[Escalate]:
    """Queue every escalation due at ``now``; return them (empty: nothing to do)."""
    with write_transaction(db):
        todo = due(open_incidents(db), policy, now)
        for e in todo:
            people = recipients(e.level, roster(db, e.warehouse_id, now))
            notice, to = _notice(e, people, _text(e, db, now, config), config)
            if notice is not None:
                outbox.queue(db, [notice], now)
            # recorded even when the channel is off, so the next level comes on time
            incident_log.add_action(db, e.incident_id, "escalated", "system",
                                    {"level": e.level, "channel": e.channel,
                                     "to": to, "queued": notice is not None}, now)
    return todo
