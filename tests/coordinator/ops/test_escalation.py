"""Escalation with time as input: pure decisions, then the shell on a real SQLite file
queueing WeCom then SMS to the next people on call, stopped by an acknowledgement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.db import Database
from coordinator.ops import escalation_store, incident_log
from coordinator.ops.config import NotifyConfig, SmsConfig, WecomConfig
from coordinator.ops.escalation import OpenIncident, Policy, due, recipients
from coordinator.ops.notify import outbox
from coordinator.ops.notify.wording import short_ref

T0 = datetime(2026, 1, 14, 18, 17, tzinfo=UTC)  # 02:17 in Hangzhou
POLICY = Policy(first_after=timedelta(minutes=10), repeat_after=timedelta(minutes=10),
                max_levels=3)


@dataclass(frozen=True)
class Staff:
    name: str
    role: str
    phone: str


ON_DUTY = [Staff("赵主管", "warehouse_lead", "13900000002"),
           Staff("钱操作", "operator", "13900000001"),
           Staff("孙经理", "manager", "13900000003")]


def incident(levels: int = 0, acked: bool = False,
             last: datetime | None = None) -> OpenIncident:
    return OpenIncident("ep-1", "WH-02", T0, acked, levels, last)


def test_nothing_before_the_first_delay_then_one_level_at_a_time() -> None:
    assert due([incident()], POLICY, T0 + timedelta(minutes=9, seconds=59)) == []
    [first] = due([incident()], POLICY, T0 + timedelta(minutes=10))
    assert (first.level, first.channel, first.due_at) == (1, "wecom", T0 + timedelta(minutes=10))
    # a coordinator down for an hour sends the next level, not all the missed ones
    [second] = due([incident(1, last=T0 + timedelta(minutes=10))], POLICY,
                   T0 + timedelta(hours=1))
    assert (second.level, second.channel) == (2, "sms")
    assert due([incident(1, last=T0 + timedelta(minutes=10))], POLICY,
               T0 + timedelta(minutes=19)) == []
    assert due([incident(3, last=T0)], POLICY, T0 + timedelta(days=1)) == []  # the limit
    assert due([incident(acked=True)], POLICY, T0 + timedelta(days=1)) == []


def test_each_level_reaches_one_more_person_operators_first() -> None:
    assert [p.name for p in recipients(1, ON_DUTY)] == ["钱操作", "赵主管", "孙经理"]
    assert [p.name for p in recipients(2, ON_DUTY)] == ["钱操作"]
    assert [p.name for p in recipients(3, ON_DUTY)] == ["钱操作", "赵主管"]
    assert recipients(2, [Staff("无电话", "operator", "")]) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 120), min_size=1, max_size=12), st.integers(0, 120))
def test_never_past_the_limit_and_never_after_an_acknowledgement(
        minutes: list[int], acked_at: int) -> None:
    levels, last = 0, None
    for m in sorted(minutes):
        now = T0 + timedelta(minutes=m)
        acked = m >= acked_at
        out = due([incident(levels, acked, last)], POLICY, now)
        assert not (acked and out)
        for e in out:
            assert e.level == levels + 1 <= POLICY.max_levels and e.due_at <= now
            levels, last = e.level, now


def _db(db: Database) -> Database:
    """``db`` (the ``ops_db`` fixture) holding WH-02 and its open incident ep-1."""
    db.conn.execute(
        "INSERT INTO warehouses (id, name, address, lat, lon, cold_chain, available, paused, "
        "updated_at) VALUES ('WH-02', '杭州冷链一号仓', '余杭区 1 号', 30.3, 120.1, 1, 0, 0, :t)",
        {"t": T0.isoformat()})
    db.conn.execute(
        "INSERT INTO ops_incidents (incident_id, warehouse_id, cause, reason, opened_at) "
        "VALUES ('ep-1', 'WH-02', 'breaker:cold_chain', 'breaker cold_chain: "
        "threshold_exceeded', :t)", {"t": T0.isoformat()})
    return db


CONFIG = NotifyConfig(wecom=WecomConfig(enabled=True, url="http://127.0.0.1:9/wecom"),
                      sms=SmsConfig(enabled=True, url="http://127.0.0.1:9/sms",
                                    phone_numbers=["13800000000"]),
                      dashboard_url="https://ops.example.cn")


def test_the_shell_queues_wecom_then_sms_once_per_level_until_acknowledged(
        ops_db: Database) -> None:
    db = _db(ops_db)

    def roster(_: Database, warehouse_id: str, at: datetime) -> list[Staff]:
        assert warehouse_id == "WH-02"
        return ON_DUTY

    def run(minutes: int) -> list[int]:
        return [e.level for e in escalation_store.run(
            db, POLICY, CONFIG, T0 + timedelta(minutes=minutes), roster)]

    assert run(5) == []
    assert run(10) == [1]
    assert run(10) == []  # once per level
    assert run(21) == [2]
    sent = {n.dedupe_key: n.payload for n in outbox.listing(db)}
    wecom = sent["wecom:ep-1:escalation:1"]
    assert wecom["text"]["mentioned_mobile_list"] == ["13900000001", "13900000002",
                                                      "13900000003"]
    assert wecom["text"]["content"] == (
        f"【升级提醒 第1次】杭州冷链一号仓 事件 {short_ref('ep-1')} 已 10 分钟无人确认"
        "（断路器 冷链: 超过阈值并持续，开始于 2026-01-15 02:17:00 (Asia/Shanghai)），"
        "请立即处理并在看板上确认。 https://ops.example.cn/dashboard/incidents/ep-1")
    sms = sent["sms:ep-1:escalation:2"]
    assert sms["phone_numbers"] == ["13900000001"]  # the next person on call
    assert sms["content"].startswith("【Breakwater】【升级提醒 第2次】")
    incident_log.add_action(db, "ep-1", "acknowledged", "钱操作", {}, T0 + timedelta(minutes=25))
    assert run(40) == []
    story = [(a.action, a.actor, a.detail.get("level")) for a in incident_log.actions(db, "ep-1")]
    assert story == [("escalated", "system", 1), ("escalated", "system", 2),
                     ("acknowledged", "钱操作", None)]


def test_without_a_roster_sms_goes_to_the_configured_numbers(
        ops_db: Database) -> None:
    db = _db(ops_db)
    escalation_store.run(db, POLICY, CONFIG, T0 + timedelta(minutes=10))
    escalation_store.run(db, POLICY, CONFIG, T0 + timedelta(minutes=20))
    sms = {n.dedupe_key: n.payload for n in outbox.listing(db)}["sms:ep-1:escalation:2"]
    assert sms["phone_numbers"] == ["13800000000"]


def test_the_staff_roster_says_who_is_on_call_by_their_hours(ops_db: Database) -> None:
    from coordinator.roster import StaffIn, StaffMember
    from coordinator.roster_store import on_duty, upsert_staff

    db = _db(ops_db)
    upsert_staff(db, [
        StaffIn(id="s1", warehouse_id="WH-02", name="夜班李", role="operator",
                phone="13900000011", on_duty="20:00-08:00"),
        StaffIn(id="s2", warehouse_id="WH-02", name="白班张", role="operator",
                phone="13900000012", on_duty="08:00-20:00"),
    ], T0)

    def roster(db: Database, warehouse_id: str, at: datetime) -> list[StaffMember]:
        return on_duty(db, warehouse_id, at)

    escalation_store.run(db, POLICY, CONFIG, T0 + timedelta(minutes=10), roster)
    wecom = {n.dedupe_key: n.payload for n in outbox.listing(db)}["wecom:ep-1:escalation:1"]
    # 02:27 in Hangzhou: only the night shift is on duty
    assert wecom["text"]["mentioned_mobile_list"] == ["13900000011"]
