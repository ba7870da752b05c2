"""Courier silence: a carrier whose open shipments from a warehouse all went quiet.

Pure: ``feed(update, now)`` and ``tick(now)`` return actions. A (warehouse, carrier)
pair is stale when it has open shipments and none of them had an update (by the
update's event time) for more than ``silence``; it clears with the next fresh update.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from protocols import TrackingUpdate

CLOSED_STATUSES = frozenset({"delivered"})


@dataclass(frozen=True, slots=True)
class Shipment:
    shipment_id: str
    carrier: str
    warehouse_id: str
    order_id: str | None
    status: str
    open: bool
    first_update_at: datetime
    last_update_at: datetime


@dataclass(frozen=True, slots=True)
class ShipmentRecorded:
    shipment: Shipment


@dataclass(frozen=True, slots=True)
class CourierStale:
    warehouse_id: str
    carrier: str
    last_update_at: datetime
    open_shipments: int


@dataclass(frozen=True, slots=True)
class CourierResumed:
    warehouse_id: str
    carrier: str


CourierAction = ShipmentRecorded | CourierStale | CourierResumed


@dataclass
class CourierState:
    shipments: dict[str, Shipment] = field(default_factory=dict)
    stale: set[tuple[str, str]] = field(default_factory=set)


class CourierSilenceDetector:
    def __init__(self, silence: timedelta = timedelta(minutes=30),
                 state: CourierState | None = None) -> None:
        self.silence = silence
        self.state = state or CourierState()

    @classmethod
    def restore(cls, silence: timedelta, shipments: Iterable[Shipment],
                stale: Iterable[tuple[str, str]]) -> CourierSilenceDetector:
        state = CourierState({s.shipment_id: s for s in shipments}, set(stale))
        return cls(silence, state)

    def feed(self, update: TrackingUpdate, now: datetime) -> list[CourierAction]:
        # A scan stamped ahead of our clock (a carrier's skewed clock, or junk that is
        # well-formed) counts as arriving now: kept as is, one update dated 2099 would
        # mute silence detection for its whole carrier and warehouse until then.
        ts = min(update.ts, now)
        current = self.state.shipments.get(update.shipment_id)
        if current is None:
            shipment = Shipment(
                shipment_id=update.shipment_id,
                carrier=update.carrier,
                warehouse_id=update.warehouse_id,
                order_id=update.order_id,
                status=update.status,
                open=update.status not in CLOSED_STATUSES,
                first_update_at=ts,
                last_update_at=ts,
            )
        elif ts >= current.last_update_at:
            shipment = replace(
                current,
                status=update.status,
                # A delivered shipment stays closed whatever a late scan says.
                open=current.open and update.status not in CLOSED_STATUSES,
                order_id=current.order_id or update.order_id,
                last_update_at=ts,
            )
        else:
            # An older scan arriving late tells nothing new about silence.
            return []
        self.state.shipments[shipment.shipment_id] = shipment
        actions: list[CourierAction] = [ShipmentRecorded(shipment)]
        group = (shipment.warehouse_id, shipment.carrier)
        if group in self.state.stale and now - ts <= self.silence:
            self.state.stale.discard(group)
            actions.append(CourierResumed(*group))
        return actions

    def tick(self, now: datetime) -> list[CourierAction]:
        latest: dict[tuple[str, str], datetime] = {}
        counts: dict[tuple[str, str], int] = {}
        for s in self.state.shipments.values():
            if not s.open:
                continue
            group = (s.warehouse_id, s.carrier)
            counts[group] = counts.get(group, 0) + 1
            if group not in latest or s.last_update_at > latest[group]:
                latest[group] = s.last_update_at
        actions: list[CourierAction] = []
        for group in sorted(latest):
            if group in self.state.stale:
                continue
            if now - latest[group] > self.silence:
                self.state.stale.add(group)
                actions.append(CourierStale(group[0], group[1], latest[group], counts[group]))
        return actions
