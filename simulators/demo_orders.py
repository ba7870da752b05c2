"""The demo's orders: the day's stream and the orders waiting at the incident warehouse,
as the scenario sets them, and loading them into the coordinator before the replay."""

from __future__ import annotations

import asyncio
import importlib
import time
from datetime import datetime
from pathlib import Path

from simulators.orders import GeneratedOrder, order_stream, post_orders, targeted_orders
from simulators.region import Region
from simulators.scenario import Scenario


def scenario_orders(
    scenario: Scenario, region: Region
) -> tuple[list[GeneratedOrder], list[GeneratedOrder]]:
    seed = scenario.orders.seed if scenario.orders.seed is not None else scenario.seed
    day = order_stream(
        region,
        scenario.orders.background,
        seed=seed,
        start=scenario.start,
        per_day=scenario.orders.per_day,
    )
    waiting: list[GeneratedOrder] = []
    for entry in scenario.orders.waiting:
        waiting += targeted_orders(
            region, entry.warehouse, entry.count, seed=seed, start=scenario.start
        )
    return day, waiting



async def load_orders(
    base_url: str,
    headers: dict[str, str],
    db_path: Path,
    at: datetime,
    day: list[GeneratedOrder],
    waiting: list[GeneratedOrder],
) -> None:
    """The day's orders are shipped and in transit before the night, so exactly the
    waiting orders sit unshipped at the incident warehouse."""
    started = time.perf_counter()
    posted = await post_orders(day, base_url, batch=500, headers=headers)
    ids = [
        str(r["order_id"])
        for r in posted.results
        if r.get("status") == "allocated" and r.get("order_id")
    ]
    moved_on = await asyncio.to_thread(_ship_in_store, db_path, ids, at)
    held = await post_orders(waiting, base_url, batch=500, headers=headers)
    where: dict[str, int] = {}
    for row in held.results:
        key = str(row.get("warehouse_id"))
        where[key] = where.get(key, 0) + 1
    print(
        f"orders: {len(posted.results)} of the day posted, {moved_on} shipped and in transit;"
        f" {len(held.results)} waiting: "
        + ", ".join(f"{n} at {wh}" for wh, n in sorted(where.items()))
        + f"  ({time.perf_counter() - started:.1f} s)",
        flush=True,
    )


def _ship_in_store(db_path: Path, order_ids: list[str], at: datetime) -> int:
    """Mark orders shipped, then in transit, with the coordinator's own ledger function
    (what ``POST /orders/{id}/events`` runs), in one write transaction: 4,000 HTTP calls
    would take the demo tens of seconds on a shared machine for nothing it shows."""
    db_module = importlib.import_module("coordinator.db")
    ledger = importlib.import_module("coordinator.ledger")
    db = db_module.open_database(str(db_path))
    try:
        with db_module.write_transaction(db):
            for order_id in order_ids:
                ledger.record_status_event(db, order_id, "shipped", at)
                ledger.record_status_event(db, order_id, "in_transit", at)
    finally:
        db.conn.close()
    return len(order_ids)
