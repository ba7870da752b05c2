"""Two coordinator processes on one database (a SQLite file, or the private PostgreSQL) and
one broker: the leader dies in the middle of a reroute (SIGKILL at several moments) or is
paused past its lease (SIGSTOP, then resumed); the standby takes over, and nothing is lost
or done twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from benchmarks.reroute import seed_orders_at
from coordinator.db import open_database
from protocols import Topics, encode
from simulators.brokers import Broker
from simulators.coordinators import CoordinatorProcess, coordinators
from simulators.pg_server import PostgresServer
from tests.auth import ADMIN
from tests.coordinator.ops.factories import breaker_event
from tests.coordinator.ops.helpers import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(180)]
WH = "WH-02"
AGENT = "gw-WH-02"
ORDERS = 120
TTL_S = 2.0


def read(target: str, sql: str, args: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` as committed, on either backend (a path or a URL)."""
    db = open_database(target, migrate=False)
    try:
        return [tuple(r) for r in db.execute(sql, args or []).fetchall()]
    finally:
        db.conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def leader(db_path: str) -> str | None:
    """The name (``a``/``b``) of the instance holding an unexpired lease."""
    rows = read(db_path, "SELECT holder, expires_at FROM ops_lease WHERE name = 'ops'")
    if not rows:
        return None
    holder, expires_at = rows[0]
    now = datetime.now(UTC)
    return str(holder)[-1] if datetime.fromisoformat(str(expires_at)) > now else None


@contextmanager
def instances(db_path: str, broker: Broker, topics: Topics,
              workdir: Path) -> Iterator[dict[str, CoordinatorProcess]]:
    with coordinators(db_path, [broker.url], topics.root, workdir,
                      lease_ttl_s=TTL_S) as running:
        yield running


def applied_seqs(db_path: str) -> list[int]:
    return [int(r[0]) for r in read(
        db_path, "SELECT seq FROM ops_processed_events WHERE agent_id = ? ORDER BY seq",
        [AGENT])]


async def publish(broker: Broker, topics: Topics, seqs: range) -> None:
    """What the agent's uplink does: QoS 1, retained live events."""
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"{AGENT}-{topics.root}",
                              clean_session=False) as agent:
        for seq in seqs:
            breaker = "cold_chain" if seq == 1 else f"b{seq}"
            event = breaker_event(seq=seq, open=True, agent=AGENT, warehouse=WH,
                                  breaker=breaker, episode=f"ep-{seq}")
            await agent.publish(topics.breaker(WH, breaker), encode(event), qos=1,
                                retain=True)


def seeded(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> str:
    """The sample region with ``ORDERS`` orders held at ``WH``, on ``backend``: a SQLite
    file, or a fresh database on the session's private PostgreSQL."""
    if backend == "sqlite":
        path = str(tmp_path / "coordinator.sqlite")
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        path = server.create_database()
    db = open_database(path)
    held = seed_orders_at(db, WH, ORDERS, datetime.now(UTC), stock_boost=100)
    db.conn.close()
    assert held == ORDERS
    return path


def delivered(db_path: str) -> bool:
    """Nothing owed (store notices composed) and nothing pending (delivered)."""
    return read(db_path, "SELECT (SELECT count(*) FROM ops_pending_store_notices) + "
                         "(SELECT count(*) FROM ops_notifications WHERE status = 'pending')"
                ) == [(0,)]


def assert_consistent(db_path: str, workdir: Path) -> None:
    """Every unshipped order at exactly one feasible warehouse, reservations equal the
    sum over orders, one incident, one coupon per order, each notice delivered once."""
    where = read(db_path, "SELECT o.id, count(DISTINCT r.warehouse_id), min(r.warehouse_id) "
                          "FROM orders o JOIN reservations r ON r.order_id = o.id "
                          "AND r.status = 'held' WHERE o.status = 'allocated' GROUP BY o.id")
    assert where and all(n == 1 and wh != WH for _, n, wh in where)
    assert read(db_path, "SELECT count(*) FROM reservations WHERE warehouse_id = ? "
                         "AND status = 'held'", [WH]) == [(0,)]
    mismatched = read(db_path, """
        SELECT i.warehouse_id, i.sku_id FROM inventory i
        LEFT JOIN (SELECT warehouse_id, sku_id, sum(qty) AS held FROM reservations
                   WHERE status = 'held' GROUP BY warehouse_id, sku_id) r
          ON r.warehouse_id = i.warehouse_id AND r.sku_id = i.sku_id
        WHERE i.reserved != coalesce(r.held, 0)""")
    assert mismatched == []
    assert read(db_path, "SELECT count(*) FROM ops_incidents WHERE warehouse_id = ?",
                [WH]) == [(1,)]
    assert read(db_path, "SELECT count(*) FROM (SELECT order_id FROM ops_coupons "
                         "GROUP BY order_id HAVING count(*) > 1) AS twice") == [(0,)]
    lines = (workdir / "franchisee.jsonl").read_text(encoding="utf-8").splitlines()
    sent = read(db_path, "SELECT count(*) FROM ops_notifications "
                         "WHERE kind = 'franchisee' AND status = 'sent'")
    assert len(lines) == len({json.dumps(json.loads(x), sort_keys=True) for x in lines})
    assert [(len(lines),)] == sent
    # every store with an order moved heard of it, once
    assert read(db_path, "SELECT count(DISTINCT o.store_id) FROM incident_orders io "
                         "JOIN orders o ON o.id = io.order_id WHERE io.outcome = 'moved'"
                ) == sent


# Every timing on PostgreSQL (what instances on several hosts share); one on SQLite,
# where the same code runs under the file lock: the suite's time goes where it matters.
@pytest.mark.parametrize(("backend", "kill_after_s"), [
    ("postgresql", 0.0), ("postgresql", 0.03), ("postgresql", 0.15), ("sqlite", 0.03)])
async def test_leader_killed_mid_reroute_standby_finishes_and_nothing_is_done_twice(
    tmp_path: Path, broker: Broker, topics: Topics, kill_after_s: float, backend: str,
    request: pytest.FixtureRequest,
) -> None:
    db_path = seeded(tmp_path, backend, request)
    with instances(db_path, broker, topics, tmp_path) as procs:
        await wait_for(lambda: leader(db_path) is not None, 30, "a leader")
        first = leader(db_path)
        assert first is not None
        await publish(broker, topics, range(1, 2))
        await asyncio.sleep(kill_after_s)
        procs[first].kill()
        # published while nobody leads: the standby's own session received them
        await publish(broker, topics, range(2, 5))
        other = "b" if first == "a" else "a"
        await wait_for(lambda: leader(db_path) == other, 30, "the standby to take over")
        await wait_for(lambda: applied_seqs(db_path) == [1, 2, 3, 4], 30,
                       "every event applied")
        await wait_for(lambda: delivered(db_path), 30, "notices composed and delivered")
        async with httpx.AsyncClient(base_url=procs[other].url, headers=ADMIN) as client:
            cluster = (await client.get("/metrics/summary")).json()["cluster"]
            scraped = (await client.get("/metrics")).text
        assert "breakwater_ops_leader 1.0" in scraped
        assert "breakwater_ops_lease_terms_total 1.0" in scraped
        assert cluster["leading"] and cluster["holder"] == procs[other].instance
        assert cluster["inbox_backlog"] == 0 and cluster["terms"] == 1
    assert_consistent(db_path, tmp_path)


@pytest.mark.parametrize(("backend", "pause_after_s"), [
    ("postgresql", 0.0), ("postgresql", 0.03), ("sqlite", 0.03)])
async def test_leader_paused_mid_reroute_past_its_lease_writes_nothing_after_it_resumes(
    tmp_path: Path, broker: Broker, topics: Topics, backend: str,
    request: pytest.FixtureRequest, pause_after_s: float,
) -> None:
    db_path = seeded(tmp_path, backend, request)
    with instances(db_path, broker, topics, tmp_path) as procs:
        await wait_for(lambda: leader(db_path) is not None, 30, "a leader")
        first = leader(db_path)
        assert first is not None
        other = "b" if first == "a" else "a"
        await publish(broker, topics, range(1, 2))
        await asyncio.sleep(pause_after_s)
        procs[first].pause()  # SIGSTOP: before, inside or after its reroute transaction
        await publish(broker, topics, range(2, 4))
        if backend == "postgresql":
            # stopped inside its transaction, it holds the write lock: the server ends
            # its session after the lease TTL, so the standby leads while it is stopped
            try:
                await wait_for(lambda: leader(db_path) == other, 30,
                               "the standby, while the leader is stopped")
                await wait_for(lambda: applied_seqs(db_path) == [1, 2, 3], 30,
                               "the events, while the leader is stopped")
            except AssertionError as exc:
                # what held whom: the sessions and their locks, for the failure report
                sessions = read(db_path, "SELECT pid, application_name, state, wait_event, "
                                "left(query, 80) FROM pg_stat_activity "
                                "WHERE datname = current_database()")
                raise AssertionError(f"{exc}; sessions: {sessions}") from None
        else:
            # a SQLite writer stopped inside its transaction keeps the file lock until it
            # resumes (instances share one host there): it then commits what it checked
            # before anyone else could write, finds its lease expired and, first to the
            # lock, may take it again under a new epoch; past its lease either way
            await asyncio.sleep(TTL_S * 1.5)
        procs[first].resume()
        await wait_for(lambda: leader(db_path) is not None, 30, "a leader again")
        await wait_for(lambda: applied_seqs(db_path) == [1, 2, 3], 30, "the events")
        # epoch 1 wrote its last: whoever leads now does so under a later epoch
        holder, epoch = read(db_path, "SELECT holder, epoch FROM ops_lease")[0]
        assert epoch > 1
        if backend == "postgresql":
            assert str(holder).endswith(f"-{other}")
        await publish(broker, topics, range(4, 5))
        await wait_for(lambda: applied_seqs(db_path) == [1, 2, 3, 4], 30, "a later event")
        await asyncio.sleep(TTL_S)  # the resumed one had time to try
        assert read(db_path, "SELECT holder, epoch FROM ops_lease") == [(holder, epoch)]
        await wait_for(lambda: delivered(db_path), 30, "notices composed and delivered")
    assert_consistent(db_path, tmp_path)


async def test_a_leader_stopped_cleanly_hands_over_without_waiting_out_its_lease(
    tmp_path: Path, broker: Broker, topics: Topics, backend: str,
    request: pytest.FixtureRequest,
) -> None:
    db_path = seeded(tmp_path, backend, request)
    long_ttl = 30.0  # a standby that waited it out would fail the bound below
    with coordinators(db_path, [broker.url], topics.root, tmp_path,
                      lease_ttl_s=long_ttl) as procs:
        await wait_for(lambda: leader(db_path) is not None, 30, "a leader")
        first = leader(db_path)
        assert first is not None
        other = "b" if first == "a" else "a"
        procs[first].stop()  # SIGTERM: a rolling restart
        await wait_for(lambda: leader(db_path) == other, 10, "the standby, at once")
        await publish(broker, topics, range(1, 2))
        await wait_for(lambda: applied_seqs(db_path) == [1], 30, "the trip")
