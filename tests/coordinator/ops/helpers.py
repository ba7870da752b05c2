"""Shared pieces of the ops integration tests."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coordinator.catalog import WarehouseIn, upsert_warehouses
from coordinator.db import Database, dialect, open_database
from coordinator.gateways.store import register, warehouse_exists
from coordinator.ops.config import FranchiseeConfig, NotifyConfig, OpsConfig, WecomConfig
from coordinator.settings import Settings
from protocols import Topics


async def wait_for(predicate: Callable[[], bool], within: float = 15.0,
                   what: str = "condition") -> None:
    try:
        async with asyncio.timeout(within):
            # Polls the database another connection writes: there is no event to await.
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def settings_for(target: str | Path, broker_url: str, topics: Topics) -> Settings:
    """``target``: a SQLite path or a ``postgresql://`` URL (the ``db_target`` fixture)."""
    return Settings(db_path=str(target), mqtt_url=broker_url, topic_root=topics.root)


def ops_config(tmp_path: Path, *, wecom_url: str | None = None, grace_s: float = 120,
               silence_min: float = 30, tick_s: float = 0.05, max_attempts: int = 6
               ) -> OpsConfig:
    return OpsConfig(
        mqtt={"client_id": f"ops-test-{uuid.uuid4().hex[:8]}"},
        agent_offline_grace_s=grace_s,
        courier_silence_min=silence_min,
        tick_interval_s=tick_s,
        notify=NotifyConfig(
            franchisee=FranchiseeConfig(jsonl_path=tmp_path / "franchisee.jsonl"),
            wecom=(WecomConfig(enabled=True, url=wecom_url) if wecom_url else WecomConfig()),
            dispatcher={"poll_interval_s": 0.05, "backoff_base_s": 0.05,
                        "max_attempts": max_attempts},
        ),
    )


def read(target: str | Path, sql: str, args: list[Any] | None = None
         ) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` as committed, on either backend (``target``: path or URL)."""
    db = open_database(target, migrate=False)
    try:
        return [tuple(r) for r in db.execute(sql, args or []).fetchall()]
    finally:
        db.conn.close()


def assignments(target: str | Path) -> dict[str, tuple[str | None, str]]:
    rows = read(target, "SELECT id, warehouse_id, status FROM orders")
    return {r[0]: (r[1], r[2]) for r in rows}


def counter(target: str | Path, name: str) -> int:
    """An ops counter as committed (0 when never bumped)."""
    rows = read(target, "SELECT value FROM ops_counters WHERE name = ?", [name])
    return int(rows[0][0]) if rows else 0


def warehouse_available(target: str | Path, warehouse_id: str) -> bool:
    return read(target, "SELECT available FROM warehouses WHERE id = ?",
                [warehouse_id]) == [(1,)]


def strand_at(db: Database, warehouse_id: str, count: int, now: datetime,
              incident_id: str) -> list[str]:
    """``count`` orders held at ``warehouse_id``, then its reroute with no stock anywhere
    else: every one is stuck (needs_attention). Returns their ids."""
    from benchmarks.reroute import seed_orders_at
    from coordinator.catalog import set_warehouse_availability
    from coordinator.reroute import reroute_warehouse
    from coordinator.settings import AllocationConfig

    seed_orders_at(db, warehouse_id, count, now, stock_boost=50)
    db.execute("UPDATE inventory SET on_hand = reserved WHERE warehouse_id != ?",
               [warehouse_id])
    set_warehouse_availability(db, warehouse_id, available=False, reason="breaker", now=now)
    stuck = reroute_warehouse(db, warehouse_id, incident_id=incident_id, reason="breaker",
                              now=now, config=AllocationConfig()).stuck
    assert len(stuck) == count
    return [s.order_id for s in stuck]


def register_gateways(target: str | Path, gateways: dict[str, str],
                      now: datetime | None = None) -> None:
    """Register each agent for its warehouse (the coordinator refuses unregistered ones);
    a warehouse the test's catalogue lacks is added first (at 0,0)."""
    at = now or datetime.now(UTC)
    db = open_database(target)
    try:
        for warehouse in sorted(set(gateways.values())):
            if not warehouse_exists(db, warehouse):
                upsert_warehouses(db, [WarehouseIn(id=warehouse, name=warehouse, lat=0,
                                                   lon=0)], at)
        for agent, warehouse in gateways.items():
            register(db, agent, warehouse, actor="test", now=at)
    finally:
        db.conn.close()


def refuse_inserts(db: Database, table: str) -> str:
    """Make every insert into ``table`` fail ('disk says no'), on either backend; returns
    the statement that lifts it again (a store failing mid-transaction, for real)."""
    if dialect(db) == "postgresql":
        db.execute("CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN RAISE EXCEPTION 'disk says no'; END $$")
        db.execute(f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                   "FOR EACH ROW EXECUTE FUNCTION refuse()")
        return f"DROP TRIGGER refuse_{table} ON {table}"
    db.execute(f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
               "BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    return f"DROP TRIGGER refuse_{table}"


def refuse_deletes_of(db: Database, incident_id: str) -> str:
    """Make settling one incident's owed store notices fail, on either backend; returns
    the statement that lifts it again."""
    quoted = incident_id.replace("'", "''")
    if dialect(db) == "postgresql":
        db.execute("CREATE OR REPLACE FUNCTION refuse_owed() RETURNS trigger LANGUAGE "
                   "plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk says no'; END $$")
        db.execute("CREATE TRIGGER refuse_owed BEFORE DELETE ON ops_pending_store_notices "
                   f"FOR EACH ROW WHEN (OLD.incident_id = '{quoted}') "
                   "EXECUTE FUNCTION refuse_owed()")
        return "DROP TRIGGER refuse_owed ON ops_pending_store_notices"
    db.execute("CREATE TRIGGER refuse_owed BEFORE DELETE ON ops_pending_store_notices "
               f"WHEN OLD.incident_id = '{quoted}' BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    return "DROP TRIGGER refuse_owed"


async def next_state(lines: Any) -> dict[str, Any]:
    """The next ``event: state`` of a server-sent event stream."""
    event = None
    async for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "state":
            state: dict[str, Any] = json.loads(line[6:])
            return state
    raise AssertionError("the stream ended")
