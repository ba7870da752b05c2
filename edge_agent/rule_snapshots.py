"""A rule machine's state as the gateway's store keeps it, and its rebuilding after a
restart (:class:`edge_agent.rules.RuleMachine`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edge_agent.excursion import SensorTrack
from edge_agent.rule_types import RuleSpec
from edge_agent.rules import CLEARING, PENDING, TRIPPED, UNKNOWN, RuleMachine
from protocols.models import BreakerState


def snapshot(machine: RuleMachine) -> dict[str, Any]:
    """What the state store keeps of a machine (JSON)."""

    def iso(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "state": machine.state.value,
        "since": iso(machine.since),
        "tripped_since": iso(machine.tripped_since),
        "clearing_since": iso(machine.clearing_since),
        "episode": machine.episode,
        "sensors": {s: t.snapshot() for s, t in sorted(machine.tracks.items())},
    }


def restore(
    spec: RuleSpec,
    agent_id: str,
    data: dict[str, Any],
    *,
    saved_at: datetime,
    now: datetime,
    outage_tolerance_s: float,
) -> RuleMachine:
    """Rebuild a machine after a restart.

    Down less than ``outage_tolerance_s``: pending and tripped are rebuilt as they
    were (staleness counts again from ``now``). Longer: a trip is never forgotten, but
    everything else starts ``unknown``. A snapshot from before per-sensor tracking
    (no ``sensors``) keeps its state and trip; its excursions start again.
    """

    def dt(key: str) -> datetime | None:
        value = data.get(key)
        return None if value is None else datetime.fromisoformat(value)

    machine = RuleMachine.create(spec, agent_id, now)
    state = BreakerState(data["state"])
    within = (now - saved_at).total_seconds() <= outage_tolerance_s
    if within:
        machine.state = state
        machine.since = dt("since")
        machine.tripped_since = dt("tripped_since")
        machine.clearing_since = dt("clearing_since")
        machine.episode = data.get("episode")
        for sensor, saved in data.get("sensors", {}).items():
            if sensor in spec.max_gap_s:
                track = SensorTrack.restore(sensor, saved)
                track.silent = False  # staleness counts again from now
                machine.tracks[sensor] = track
        if state is PENDING and machine.pending_since is None:
            machine.state = UNKNOWN  # an old snapshot's excursion cannot be rebuilt
    elif state in (TRIPPED, CLEARING):
        machine.state = TRIPPED
        machine.since = dt("since")
        machine.tripped_since = dt("tripped_since")
        machine.episode = data.get("episode")
    return machine
