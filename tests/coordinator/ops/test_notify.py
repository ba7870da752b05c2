"""Notifications against a real HTTP receiver on loopback: retries, formats, no loss,
no duplicates, dead letters after N failures, WeCom rate limit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from coordinator.db import Database, open_database
from coordinator.ops.config import (
    DispatcherConfig,
    FranchiseeConfig,
    NotifyConfig,
    SmsConfig,
    WebhookConfig,
    WecomConfig,
)
from coordinator.ops.notify import outbox
from coordinator.ops.notify.channels import TokenBucket
from coordinator.ops.notify.dispatcher import Dispatcher
from coordinator.ops.notify.franchisee import (
    PendingStoreNotices,
    compose_store_notices,
    coupon_code,
    defer_store_notices,
    pending_store_notices,
    queue_store_notices,
)
from coordinator.ops.notify.messages import (
    IncidentSummary,
    MovedNotice,
    StuckNotice,
    TripFacts,
    WarehouseInfo,
    incident_notices,
)
from coordinator.ops.notify.outbox import OutgoingNotice
from coordinator.ops.notify.wording import local_time, short_ref, short_time
from protocols.clock import ManualClock
from protocols.timestamps import stamp
from simulators.receiver import Receiver
from tests.coordinator.ops.factories import T0

OLD = WarehouseInfo("wh-cc-2", "杭州冷链二仓", "余杭区仓前街道 8 号", 30.29, 120.01)
NEW = WarehouseInfo("wh-cc-1", "杭州冷链一仓", "萧山区新街 1 号", 30.20, 120.26)


def summary(incident: str = "ep-1", moved: int = 3, stuck: int = 1) -> IncidentSummary:
    return IncidentSummary(
        incident_id=incident, warehouse=OLD, cause="breaker:cold_chain",
        reason="threshold_exceeded", at=T0,
        moved=[MovedNotice(f"o-{i}", NEW) for i in range(moved)],
        stuck=[StuckNotice(f"x-{i}", "no cold-chain stock nearby") for i in range(stuck)],
        trip=TripFacts(at=T0, zone="cold_room_2", metric="temperature_c", value=9.6,
                       op="above", limit=8.0, for_s=300),
    )


def config(receiver: Receiver, tmp_path: Path, **dispatcher: float) -> NotifyConfig:
    return NotifyConfig(
        franchisee=FranchiseeConfig(sink="jsonl", jsonl_path=tmp_path / "franchisee.jsonl"),
        wecom=WecomConfig(enabled=True, url=receiver.url + "/wecom"),
        sms=SmsConfig(enabled=True, url=receiver.url + "/sms", phone_numbers=["13800000000"],
                      signature="冷链哨兵", api_key="k1"),
        webhook=WebhookConfig(enabled=True, url=receiver.url + "/hook"),
        dashboard_url="https://ops.example.cn",
        dispatcher=DispatcherConfig(backoff_base_s=2, **dispatcher),
    )


@pytest.fixture
def db(db_target: str) -> Iterator[Database]:
    """The outbox on each backend; dispatchers open ``db_target`` themselves."""
    db = open_database(db_target)
    try:
        yield db
    finally:
        db.conn.close()


def queue(db: Database, cfg: NotifyConfig, s: IncidentSummary) -> int:
    """The incident's ops messages plus a franchisee notice per moved order."""
    notices = incident_notices(s, cfg)
    notices += [OutgoingNotice("franchisee", f"franchisee:{s.incident_id}:{m.order_id}",
                               {"order_id": m.order_id}, s.incident_id) for m in s.moved]
    with db.atomic():
        return outbox.queue(db, notices, T0)


async def drain(dispatcher: Dispatcher, clock: ManualClock, rounds: int = 12) -> None:
    for _ in range(rounds):
        await dispatcher.run_once()
        clock.advance(700)  # past any backoff


async def test_failed_deliveries_are_retried_and_each_notice_arrives_once(
        db: Database, db_target: str, tmp_path: Path) -> None:
    clock = ManualClock(T0)
    with Receiver(fail_first=2) as receiver:
        cfg = config(receiver, tmp_path)
        assert queue(db, cfg, summary()) == 6  # 3 franchisee + wecom + sms + webhook
        dispatcher = Dispatcher(lambda: open_database(db_target), cfg, clock)
        await dispatcher.run_once()
        assert {r.path for r in receiver.requests} == {"/wecom", "/sms", "/hook"}
        assert len(outbox.listing(db, status="pending")) == 3
        await drain(dispatcher, clock)
        assert len(receiver.on("/sms")) == 3  # two failures, then success
        for path in ("/wecom", "/sms", "/hook"):
            assert len(receiver.accepted(path)) == 1
        assert queue(db, cfg, summary()) == 0  # replay of the incident queues nothing
        await drain(dispatcher, clock, rounds=2)
        for path in ("/wecom", "/sms", "/hook"):
            assert len(receiver.accepted(path)) == 1
        await dispatcher.aclose()
    sent = outbox.listing(db, status="sent")
    assert len(sent) == 6
    assert {n.attempts for n in sent if n.kind != "franchisee"} == {3}
    lines = (tmp_path / "franchisee.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["order_id"] for line in lines) == ["o-0", "o-1", "o-2"]


async def test_backoff_is_exponential_and_failed_notices_are_dead_after_max_attempts(
        db: Database, db_target: str, tmp_path: Path) -> None:
    clock = ManualClock(T0)
    with Receiver(fail_first=100, fail_status=503) as receiver:
        cfg = config(receiver, tmp_path, max_attempts=3)
        queue(db, cfg, summary(moved=0))
        dispatcher = Dispatcher(lambda: open_database(db_target), cfg, clock)
        await dispatcher.run_once()
        [sms] = outbox.listing(db, kind="sms")
        assert sms.next_attempt_at == stamp(T0 + outbox.backoff_delay(1, 2, 600))
        clock.advance(1.5)
        assert await dispatcher.run_once() == 0  # not due yet
        clock.advance(1)
        assert await dispatcher.run_once() == 3
        [sms] = outbox.listing(db, kind="sms")
        assert sms.next_attempt_at == stamp(clock.now() + outbox.backoff_delay(2, 2, 600))
        await drain(dispatcher, clock)
        await dispatcher.aclose()
        assert len(receiver.on("/sms")) == 3
    dead = outbox.listing(db, status="failed")
    assert {n.kind for n in dead} == {"wecom", "sms", "webhook"}
    assert all("HTTP 503" in (n.last_error or "") for n in dead)
    assert outbox.retry(db, dead[0].id, clock.now())
    assert len(outbox.listing(db, status="failed")) == 2


async def test_payloads_match_the_wecom_robot_and_sms_gateway_formats(
        db: Database, db_target: str, tmp_path: Path) -> None:
    clock = ManualClock(T0)
    with Receiver() as receiver:
        cfg = config(receiver, tmp_path)
        queue(db, cfg, summary(moved=5, stuck=2))
        dispatcher = Dispatcher(lambda: open_database(db_target), cfg, clock)
        await dispatcher.run_once()
        await dispatcher.aclose()
        [wecom] = receiver.on("/wecom")
        [sms] = receiver.on("/sms")
        [hook] = receiver.on("/hook")
    assert set(wecom.body) == {"msgtype", "markdown"}
    assert wecom.body["msgtype"] == "markdown"
    content = wecom.body["markdown"]["content"]
    assert "杭州冷链二仓（wh-cc-2）" in content
    # a short reference instead of the machine id, the reading against its limit, the
    # trip's local time and the incident page
    assert "ep-1" not in content.replace("incidents/ep-1", "")
    assert f'> 事件：<font color="warning">{short_ref("ep-1")}</font>' in content
    assert "> 原因：超过阈值并持续" in content
    assert "> 读数：cold_room_2 9.6°C（阈值 高于 8°C 持续 5 分钟）" in content
    assert "[打开事件页面](https://ops.example.cn/dashboard/incidents/ep-1)" in content
    assert '<font color="info">5</font>' in content and "x-0, x-1" in content
    assert len(content.encode()) <= 4096
    # the people on duty read their own wall-clock time; machines get UTC
    assert f"> 熔断时间：{local_time(T0, 'Asia/Shanghai')}" in content
    assert sms.body["content"] == (
        "【冷链哨兵】杭州冷链二仓停止接单：超过阈值并持续 cold_room_2 9.6°C（阈值 高于 8°C "
        "持续 5 分钟），2026-11-24 10:17:00 (Asia/Shanghai)。已改派5单，2单待处理。"
        f"{short_ref('ep-1')} https://ops.example.cn/dashboard/incidents/ep-1")
    assert hook.body["at"].endswith("Z")
    assert hook.body["at_local"] == sms.body["template_param"]["at_local"]
    assert sms.body["phone_numbers"] == ["13800000000"]
    assert sms.body["sign_name"] == "冷链哨兵"
    assert sms.body["template_param"]["moved"] == "5"
    assert sms.body["content"].startswith("【冷链哨兵】杭州冷链二仓")
    assert sms.headers["Authorization"] == "Bearer k1"
    assert hook.body["needs_attention"][1] == {"order_id": "x-1",
                                               "reason": "no cold-chain stock nearby"}
    assert hook.headers["Idempotency-Key"] == "webhook:ep-1:opened"


async def test_wecom_text_message_and_robot_error_codes_are_retried(
        db: Database, db_target: str, tmp_path: Path) -> None:
    clock = ManualClock(T0)
    with Receiver(fail_first=1, wecom_style=True) as receiver:
        cfg = NotifyConfig(
            franchisee=FranchiseeConfig(jsonl_path=tmp_path / "f.jsonl"),
            wecom=WecomConfig(enabled=True, url=receiver.url + "/wecom", msgtype="text",
                              mentioned_mobile_list=["13900000000"]),
        )
        queue(db, cfg, summary(moved=1, stuck=0))
        dispatcher = Dispatcher(lambda: open_database(db_target), cfg, clock)
        await drain(dispatcher, clock, rounds=3)
        await dispatcher.aclose()
        first, second = receiver.on("/wecom")
    assert (first.accepted, second.accepted) == (False, True)
    assert second.body["msgtype"] == "text"
    assert second.body["text"]["mentioned_mobile_list"] == ["13900000000"]
    [wecom] = outbox.listing(db, kind="wecom")
    assert (wecom.status, wecom.attempts) == ("sent", 2)


async def test_wecom_rate_limit_defers_instead_of_failing(
        db: Database, db_target: str, tmp_path: Path) -> None:
    clock = ManualClock(T0)
    with Receiver() as receiver:
        cfg = NotifyConfig(
            franchisee=FranchiseeConfig(jsonl_path=tmp_path / "f.jsonl"),
            wecom=WecomConfig(enabled=True, url=receiver.url + "/wecom", per_minute=20),
        )
        for i in range(25):
            queue(db, cfg, summary(incident=f"ep-{i}", moved=0, stuck=0))
        dispatcher = Dispatcher(lambda: open_database(db_target), cfg, clock)
        await dispatcher.run_once()
        assert len(receiver.on("/wecom")) == 20
        assert dispatcher.stats.deferred == 5
        clock.advance(3)
        await dispatcher.run_once()
        assert len(receiver.on("/wecom")) == 21
        clock.advance(60)
        await dispatcher.run_once()
        await dispatcher.aclose()
        assert len(receiver.on("/wecom")) == 25
    assert len({r.body["markdown"]["content"] for r in receiver.requests}) == 25
    assert outbox.listing(db, status="pending") == []


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(20)
    assert all(bucket.take(0.0) == 0.0 for _ in range(20))
    assert bucket.take(0.0) == pytest.approx(3.0)
    assert bucket.take(3.0) == 0.0


def test_coupon_codes_are_unique_per_order_and_incident_and_stable() -> None:
    codes = {coupon_code("BW", f"o-{i}", f"ep-{j}") for i in range(200) for j in range(5)}
    assert len(codes) == 1000
    assert coupon_code("BW", "o-1", "ep-1") == coupon_code("BW", "o-1", "ep-1")


def test_a_franchisee_gets_one_readable_message_per_store_and_incident(db: Database) -> None:
    from benchmarks.reroute import seed_orders_at
    from coordinator.reroute import reroute_warehouse
    from coordinator.settings import Settings

    seed_orders_at(db, "WH-02", 12, T0, stock_boost=50)
    # a busy night: three stores with four orders each
    ids = [r[0] for r in db.execute("SELECT id FROM orders ORDER BY id").fetchall()]
    db.conn.executemany("UPDATE orders SET store_id = ? WHERE id = ?",
                        [(f"HZ-S00{1 + n % 3}", oid) for n, oid in enumerate(ids)])
    result = reroute_warehouse(db, "WH-02", incident_id="ep-9", reason="threshold_exceeded",
                               now=T0, config=Settings().allocation)
    stores = {m.store_id for m in result.moved}
    assert len(result.moved) == 12 and len(stores) == 3
    cfg = FranchiseeConfig(coupon_prefix="HZ", coupon_value_yuan=15, coupon_valid_days=30)
    names = dict(db.execute("SELECT id, name FROM warehouses").fetchall())
    reason = "breaker cold_chain: threshold_exceeded"
    with db.atomic():  # owed in the reroute's transaction
        defer_store_notices(db, "ep-9", reason=reason, at=T0,
                            warehouse_name=names["WH-02"], now=T0)
    owed = pending_store_notices(db)
    assert owed == [PendingStoreNotices("ep-9", reason, T0, names["WH-02"])]
    composed = compose_store_notices(db, owed[0], config=cfg, timezone="Asia/Shanghai")
    with db.atomic():
        assert queue_store_notices(db, composed) == len(stores)
    assert pending_store_notices(db) == []  # settled with the queueing
    with db.atomic():  # composed twice (a crash before the owed row was settled)
        assert queue_store_notices(db, composed) == 0  # once per store
    notices = {n.payload["store_id"]: n.payload for n in outbox.listing(db, kind="franchisee")}
    assert set(notices) == stores
    one = sorted(stores)[1]  # a caller scoped to one store sees that store's notice only
    assert [n.payload["store_id"] for n in outbox.listing(db, stores=[one])] == [one]
    store_id = sorted(stores)[0]
    p = notices[store_id]
    mine = sorted((m for m in result.moved if m.store_id == store_id),
                  key=lambda m: m.order_id)
    orders = {o["order_id"]: o for o in p["orders"]}
    assert set(orders) == {m.order_id for m in mine}
    store_name = db.execute("SELECT name FROM stores WHERE id = ?", [store_id]).fetchone()[0]
    code = coupon_code("HZ", f"store:{store_id}", "ep-9")
    assert p["coupon"]["code"] == code and p["coupon"]["value_yuan"] == 15.0
    assert p["coupon"]["valid_until"] == "2026-12-24T02:17:00.000Z"
    text = p["text"].splitlines()
    # T0 is 02:17 UTC: 10:17 in Shanghai, the same clock the dashboard and the demo show
    assert text[0] == (f"【改派通知】{store_name}您好：2026-11-24 10:17:00 (Asia/Shanghai)，"
                       f"{names['WH-02']}因断路器 冷链: 超过阈值并持续暂停发货。"
                       f"您门店的 {len(mine)} 笔订单已改由其他仓库发货，明细如下：")
    assert len(text) == 2 + len(mine)
    for n, line in enumerate(text[1:-1], 1):
        o = next(o for o in p["orders"] if f"订单 {o['channel_order_id']}：" in line)
        items = "、".join(f"{i['name']} ×{i['qty']}" for i in o["items"])
        eta = datetime.fromisoformat(o["new_eta"]).astimezone(ZoneInfo("Asia/Shanghai"))
        wh = o["new_warehouse"]
        assert line == (f"{n}. 微信小程序订单 {o['channel_order_id']}：{items} → "
                        f"{wh['name']}（{wh['address']}），"
                        f"预计 {eta.month}月{eta.day}日 {eta:%H:%M} 送达")
        assert "SKU-" not in items  # items by name
    assert text[-1] == (f"为补偿本次改派可能造成的送达延迟，赠送门店补偿券 {code}（15 元），"
                        f"可在下次订货时抵扣，有效期至 12月24日 10:17。"
                        f"事件编号 {p['incident_ref']}。")
    assert "ep-9" not in p["text"] and "UTC" not in p["text"]  # no machine ids or UTC
    coupons = db.execute("SELECT count(*), count(DISTINCT code) FROM ops_store_coupons")
    assert tuple(coupons.fetchone()) == (len(stores), len(stores))


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        (WecomConfig, {"enabled": True}, "url"),
        (SmsConfig, {"enabled": True, "url": "http://x"}, "phone_numbers"),
        (FranchiseeConfig, {"sink": "webhook"}, "webhook_url"),
        (DispatcherConfig, {"max_attempts": 0}, "max_attempts"),
        (NotifyConfig, {"wecom": {"enabled": True, "url": "u", "bogus": 1}}, "bogus"),
        (NotifyConfig, {"timezone": "Mars/Olympus_Mons"}, "timezone"),
        (NotifyConfig, {"timezone": "../../etc/passwd"}, "timezone"),
    ],
)
def test_bad_notification_config_names_the_field(model: type[BaseModel], data: dict[str, object],
                                                 field: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=field):
        model.model_validate(data)


async def test_a_requested_stop_ends_between_batches_so_a_restart_sends_nothing_twice(
        db: Database, db_target: str, tmp_path: Path) -> None:
    clock = ManualClock(T0)
    with Receiver() as receiver:
        cfg = config(receiver, tmp_path)
        s = summary(moved=150, stuck=0)
        queue(db, cfg, s)
        sink = tmp_path / "franchisee.jsonl"
        first = Dispatcher(lambda: open_database(db_target), cfg, clock)
        task = asyncio.create_task(first.run())
        for _ in range(500):  # stop as soon as the first notice has been written
            if sink.exists() and sink.read_text():
                break
            await asyncio.sleep(0.01)
        first.request_stop()
        await asyncio.wait_for(task, 10)
        await first.aclose()
        written = [json.loads(line)["order_id"] for line in sink.read_text().splitlines()]
        sent = {n.dedupe_key.rsplit(":", 1)[1] for n in outbox.listing(db, status="sent")
                if n.kind == "franchisee"}
        assert written and sorted(written) == sorted(sent)  # written <=> marked sent
        second = Dispatcher(lambda: open_database(db_target), cfg, clock)
        await drain(second, clock, rounds=3)
        await second.aclose()
    written = [json.loads(line)["order_id"] for line in sink.read_text().splitlines()]
    assert sorted(written) == sorted(f"o-{i}" for i in range(150))  # each exactly once


def test_local_time_is_the_wall_clock_of_the_zone() -> None:
    at = datetime(2026, 1, 14, 18, 17, 30, tzinfo=UTC)  # 02:17:30 the next day in Hangzhou
    assert local_time(at, "Asia/Shanghai") == "2026-01-15 02:17:30 (Asia/Shanghai)"
    assert local_time(at, "UTC") == "2026-01-14 18:17:30 (UTC)"


@given(at=st.datetimes(min_value=datetime(1972, 1, 1), max_value=datetime(2099, 12, 31),
                       timezones=st.just(UTC)),
       zone=st.sampled_from(["Asia/Shanghai", "America/New_York", "Europe/London",
                             "Asia/Kolkata", "Australia/Lord_Howe", "Asia/Kathmandu"]))
def test_an_eta_in_a_sentence_reads_the_local_minute_of_any_instant(at: datetime,
                                                                      zone: str) -> None:
    """The wording caches the local minute per UTC minute (a reroute words thousands of
    ETAs): it must read exactly as the zone conversion of the instant itself, across
    daylight-saving changes and half-hour and 45-minute offsets."""
    local = at.astimezone(ZoneInfo(zone))
    assert short_time(at, zone) == f"{local.month}月{local.day}日 {local:%H:%M}"


async def test_a_leader_that_lost_its_lease_mid_batch_leaves_the_rest_to_its_successor(
        db: Database, db_target: str, tmp_path: Path) -> None:
    # leading when the batch is picked, no longer when it comes to deliver (it was paused
    # past its lease): nothing goes out, nothing is marked, the next leader sends it all
    clock = ManualClock(T0)
    with Receiver() as receiver:
        cfg = config(receiver, tmp_path)
        queue(db, cfg, summary())
        answers = iter([True])
        paused = Dispatcher(lambda: open_database(db_target), cfg, clock,
                            allowed=lambda: next(answers, False))
        assert await paused.run_once() == 6
        await paused.aclose()
        assert paused.stats.yielded == 6 and paused.stats.sent == 0
        assert receiver.requests == [] and not (tmp_path / "franchisee.jsonl").exists()
        assert len(outbox.listing(db, status="pending")) == 6
        successor = Dispatcher(lambda: open_database(db_target), cfg, clock,
                               allowed=lambda: True)
        await drain(successor, clock, rounds=1)
        await successor.aclose()
        assert successor.stats.sent == 6
        for path in ("/wecom", "/sms", "/hook"):
            assert len(receiver.accepted(path)) == 1
