"""What the demo measured, collected from the coordinator at the end, and the final
report printed from it (the demo test asserts on :class:`DemoOutcome`)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from protocols import BreakerEvent
from simulators.harness import UplinkOutageRun
from simulators.orders import GeneratedOrder
from simulators.receiver import Receiver
from simulators.reference import Trip
from simulators.scenario import Scenario


@dataclass
class RerouteSeen:
    warehouse: str
    moved: int
    stuck: int
    started: float  # perf_counter: the BreakerEvent's arrival at the coordinator
    committed: float  # perf_counter: the reroute transaction committed


@dataclass
class DemoOutcome:
    """What the demo measured (the report prints it; the demo test asserts on it)."""

    expected: list[Trip] = field(default_factory=list)
    trips: list[BreakerEvent] = field(default_factory=list)
    reroutes: list[RerouteSeen] = field(default_factory=list)
    # perf_counter when the reading that completed each expected trip was published
    trip_readings: dict[str, float] = field(default_factory=dict)
    waiting: int = 0
    waiting_now: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    notifications: dict[str, int] = field(default_factory=dict)
    alerts: int = 0
    sink_path: Path | None = None
    sink_lines: int = 0
    dashboard_url: str | None = None
    replay_line: str = ""
    inbox: Receiver | None = None
    uplink_outages: list[UplinkOutageRun] = field(default_factory=list)
    # enacted uplink outages as narrated: (warehouse, cut wall, back event time, back wall)
    uplink_windows: list[tuple[str, float, datetime | None, float | None]] = field(
        default_factory=list
    )

    def reported_late(self, warehouse: str) -> tuple[datetime, float] | None:
        """When (event time, perf_counter) the uplink of ``warehouse`` came back, if its
        trip reading was published while the uplink was cut (the trip waited for it)."""
        reading = self.trip_readings.get(warehouse)
        if reading is None:
            return None
        for site, cut_wall, back_at, back_wall in self.uplink_windows:
            if site != warehouse or back_at is None or back_wall is None:
                continue
            if cut_wall <= reading < back_wall:
                return back_at, back_wall
        return None



async def coordinator_report(
    base_url: str, headers: dict[str, str], waiting: list[GeneratedOrder], outcome: DemoOutcome
) -> None:
    """Where the waiting orders are now (re-posting is idempotent and answers with the
    order's current status and warehouse), the seed's metrics, notices and alerts."""
    import httpx

    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as http:
        response = await http.post("/orders", json=[o.body() for o in waiting])
        if response.status_code == 200:
            for row in response.json().get("results", []):
                key = f"{row.get('status')} at {row.get('warehouse_id') or '-'}"
                outcome.waiting_now[key] = outcome.waiting_now.get(key, 0) + 1
        # customers ask where their order is (by the channel's order number): each gets
        # the status at once, and the reply goes to the channel (the first response)
        for order in waiting[:INQUIRIES]:
            await http.post("/inquiries", json={"channel": order.channel.value,
                                                "channel_order_id": order.channel_order_id,
                                                "question": "我的订单到哪了"})
        # let the dispatcher deliver the queued notices (file sink: milliseconds)
        deadline = time.monotonic() + 5
        while True:
            response = await http.get("/metrics/summary")
            if response.status_code != 200:
                break
            outcome.metrics = response.json()
            pending = sum(
                by.get("pending", 0) for by in outcome.metrics.get("notifications", {}).values()
            )
            if pending == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        for kind, by in outcome.metrics.get("notifications", {}).items():
            for status, n in by.items():
                outcome.notifications[f"{kind} {status}"] = int(n)
        # open: the alert's order still waits (a retry may have placed it since)
        response = await http.get("/alerts", params={"open": "true", "limit": 1000})
        if response.status_code == 200:
            body = response.json()
            outcome.alerts = len(body) if isinstance(body, list) else int(body.get("count", 0))
    if outcome.sink_path is not None and outcome.sink_path.exists():
        with outcome.sink_path.open(encoding="utf-8") as sink:
            outcome.sink_lines = sum(1 for _ in sink)


INQUIRIES = 20  # customers of waiting orders who ask where their order is


def _pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "n/a"


def print_report(
    scenario: Scenario, workdir: Path, outcome: DemoOutcome, *, hold: bool
) -> None:
    tz = scenario.start.tzinfo
    print("\n== Breakwater demo report ==")
    print(f"scenario: {scenario.name}  ({scenario.description})")
    print(outcome.replay_line)
    print("breakers the rule must trip (reference evaluation of the replayed readings):")
    for trip in outcome.expected:
        print(
            f"  {trip.warehouse}/{trip.breaker} zone {trip.zone}: above since"
            f" {trip.crossed_at.astimezone(tz):%H:%M:%S}, trips at"
            f" {trip.trips_at.astimezone(tz):%H:%M:%S} ({trip.readings} readings)"
        )
    if not outcome.expected:
        print("  none")
    for outage in outcome.uplink_outages:
        cut = f"{outage.cut_at.astimezone(tz):%H:%M:%S}"
        back = f"{outage.restored_at.astimezone(tz):%H:%M:%S}" if outage.restored_at else "end"
        print(f"uplink cut at {outage.warehouse} {cut}-{back} event time: {outage.queued}"
              " messages kept in the agent's outbox, all delivered after reconnecting"
              f" ({outage.reconnect_wall_s or 0:.2f} s wall)")  # fmt: skip
    print(f"breakers tripped by the edge agents: {len(outcome.trips)}")
    for event in outcome.trips:
        print(
            f"  {event.warehouse_id}/{event.breaker} tripped at"
            f" {event.event_time.astimezone(tz):%H:%M:%S} event time ({event.reason})"
        )
    for seen in outcome.reroutes:
        since = outcome.trip_readings.get(seen.warehouse)
        late = outcome.reported_late(seen.warehouse)
        if late is not None:
            wall = (
                f"reported when its uplink came back at {late[0].astimezone(tz):%H:%M:%S}"
                f" event time; {seen.committed - late[1]:.3f} s wall from the uplink's return"
                " to commit"
            )
        elif since is not None:
            wall = f"{seen.committed - since:.3f} s wall from publishing the trip reading to commit"
        else:
            wall = "trip by silence or courier"
        print(
            f"orders rerouted from {seen.warehouse}: {seen.moved + seen.stuck}"
            f" ({seen.moved} moved, {seen.stuck} needs_attention); {wall};"
            f" coordinator {seen.committed - seen.started:.3f} s"
        )
    if outcome.waiting_now:
        where = ", ".join(f"{n} {k}" for k, n in sorted(outcome.waiting_now.items()))
        print(f"the {outcome.waiting} waiting orders now: {where}")
    if outcome.metrics:
        first = outcome.metrics.get("first_response", {})
        internal = outcome.metrics.get("order_to_first_status", {})
        transparency = outcome.metrics.get("status_transparency", {})
        healing = outcome.metrics.get("self_healing", {})
        print("the three customer-facing metrics:")
        p50, p95 = first.get("p50_s"), first.get("p95_s")
        print(f"  first response time: p95 {p95 if p95 is not None else 'n/a'} s,"
              f" p50 {p50 if p50 is not None else 'n/a'} s over {first.get('answered', 0)}"
              f" of {first.get('inquiries', 0)} inquiries (a customer's question at the channel"
              " -> the status reply acknowledged by the channel; replay clock)")  # fmt: skip
        print(f"  status transparency: {_pct(transparency.get('rate'))}"
              f" ({transparency.get('complete_timelines', 0)} of"
              f" {transparency.get('shipped_orders', 0)} shipped orders with allocated,"
              " shipped and in-transit times)")  # fmt: skip
        print(f"  self-healing rate:   {_pct(healing.get('rate'))}"
              f" ({healing.get('resolved_automatically', 0)} of"
              f" {healing.get('exceptions', 0)} exceptions resolved automatically)")  # fmt: skip
        p95 = internal.get("p95_s")
        print(f"  (internal: order received -> first status entry, p95"
              f" {p95 if p95 is not None else 'n/a'} s over {internal.get('answered', 0)}"
              " orders)")  # fmt: skip
        sent = ", ".join(f"{k}: {n}" for k, n in sorted(outcome.notifications.items()))
        print(f"notices and alerts: {sent or 'none'};"
              f" {outcome.alerts} open order alerts (unallocated or stuck)")  # fmt: skip
    if outcome.sink_path is not None:
        print(f"franchisee notices (file sink): {outcome.sink_path} ({outcome.sink_lines} lines)")
    if outcome.inbox is not None:
        counts = ", ".join(f"{k}: {n}" for k, n in sorted(outcome.inbox.by_channel().items()))
        print(f"operations alerts (local HTTP inbox standing in for WeCom, SMS, webhook):"
              f" {counts or 'none'} -> {outcome.inbox.journal}")  # fmt: skip
        for entry in outcome.inbox.accepted():
            body = entry.body
            if entry.path.startswith("/wecom") and isinstance(body, dict):
                content = (body.get("markdown") or body.get("text") or {}).get("content", "")
                for line in str(content).splitlines()[:6]:
                    print(f"  | {line}")
                break
    print(f"work files: {workdir}")
    if outcome.dashboard_url:
        print(f"dashboard: {outcome.dashboard_url}")
        if not hold:
            print("  (serving while the demo runs; add --hold to keep it up after the report)")
