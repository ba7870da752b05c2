"""The availability tracker's decisions: a warehouse is available when none of its
breakers is open and it has no hold; each time it stops being available an incident
(an unavailability episode) opens under a unique id, and it closes when every cause
cleared. Holds (manual pauses, an agent offline, a carrier's stale data) are set and
lifted here; breaker states and agent sessions are fed in by the layers above
(:mod:`coordinator.ops.agent_liveness`, :mod:`coordinator.ops.availability`)."""

from __future__ import annotations

from datetime import datetime

from coordinator.ops.availability_state import (
    Action,
    BreakerRecord,
    Hold,
    HoldLifted,
    HoldSet,
    TrackerConfig,
    TrackerState,
    WarehouseAvailable,
    WarehouseUnavailable,
)


class AvailabilityCore:
    def __init__(self, config: TrackerConfig | None = None,
                 state: TrackerState | None = None) -> None:
        self.config = config or TrackerConfig()
        self.state = state or TrackerState()

    # -- queries ---------------------------------------------------------------------
    def available(self, warehouse_id: str) -> bool:
        return not self._causes(warehouse_id)

    def incident(self, warehouse_id: str) -> str | None:
        return self.state.incidents.get(warehouse_id)

    def warehouses(self) -> set[str]:
        known = {wh for wh, _ in self.state.breakers}
        known |= {a.warehouse_id for a in self.state.agents.values()}
        known |= {wh for wh, _ in self.state.holds}
        return known

    def open_breakers(self, warehouse_id: str) -> list[BreakerRecord]:
        return sorted(
            (r for (wh, _), r in self.state.breakers.items() if wh == warehouse_id and r.open),
            key=lambda r: r.breaker,
        )

    def holds(self, warehouse_id: str) -> list[Hold]:
        return sorted(
            (h for (wh, _), h in self.state.holds.items() if wh == warehouse_id),
            key=lambda h: h.name,
        )

    def _causes(self, warehouse_id: str) -> list[str]:
        causes = [f"breaker:{r.breaker}" for r in self.open_breakers(warehouse_id)]
        causes += [h.name for h in self.holds(warehouse_id)]
        return causes

    # -- holds -----------------------------------------------------------------------
    def hold(self, warehouse_id: str, name: str, *, reason: str, now: datetime,
             incident_hint: str) -> list[Action]:
        """Make the warehouse unavailable for ``name`` (idempotent)."""
        key = (warehouse_id, name)
        if key in self.state.holds:
            return []
        before = self.available(warehouse_id)
        new = Hold(warehouse_id, name, incident_hint, reason, now)
        self.state.holds[key] = new
        actions: list[Action] = [HoldSet(new)]
        actions += self._transition(warehouse_id, before, now, incident_hint, name, reason)
        return actions

    def release(self, warehouse_id: str, name: str, now: datetime) -> list[Action]:
        """Lift the hold ``name`` (idempotent)."""
        key = (warehouse_id, name)
        if key not in self.state.holds:
            return []
        before = self.available(warehouse_id)
        del self.state.holds[key]
        actions: list[Action] = [HoldLifted(warehouse_id, name)]
        actions += self._transition(warehouse_id, before, now, "", name, "")
        return actions

    def _transition(self, warehouse_id: str, before: bool, now: datetime, hint: str,
                    cause: str, reason: str) -> list[Action]:
        after = self.available(warehouse_id)
        if before and not after:
            incident = hint
            n = 1
            while incident in self.state.used_incidents:
                n += 1
                incident = f"{hint}-{n}"
            self.state.used_incidents.add(incident)
            self.state.incidents[warehouse_id] = incident
            return [WarehouseUnavailable(warehouse_id, incident, cause, reason, now)]
        if after and not before:
            incident = self.state.incidents.pop(warehouse_id, "")
            return [WarehouseAvailable(warehouse_id, incident, now)]
        return []
