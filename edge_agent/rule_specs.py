"""The rule machines' specs from an agent's configuration: per rule, its thresholds and
timers, the clear threshold its hysteresis defaults to, and the longest silence allowed to
each sensor of its zone that can feed it."""

from __future__ import annotations

from edge_agent.config import AgentConfig
from edge_agent.rule_types import RuleSpec


def rule_specs(config: AgentConfig) -> list[RuleSpec]:
    specs = []
    for r in config.rules:
        gaps = {
            s.id: s.max_gap_s
            for s in config.sensors
            if s.zone == r.zone and (s.format != "plain" or s.metric == r.metric)
        }
        specs.append(
            RuleSpec(
                id=r.id, zone=r.zone, breaker=r.breaker, metric=r.metric,
                above=r.above, below=r.below, for_s=r.for_s, min_readings=r.min_readings,
                dip_grace_s=r.dip_grace_s,
                clear_threshold=_clear_threshold(r.above, r.below, r.clear_below, r.clear_above),
                clear_for_s=r.clear_for_s, min_tripped_s=r.min_tripped_s,
                silence_trips_after_s=r.silence_trips_after_s, max_gap_s=gaps,
                combine=r.combine, at_least=r.at_least or 1,
            )
        )
    return specs


def _clear_threshold(
    above: float | None, below: float | None, clear_below: float | None,
    clear_above: float | None,
) -> float:
    if above is not None:
        return above if clear_below is None else clear_below
    assert below is not None
    return below if clear_above is None else clear_above
