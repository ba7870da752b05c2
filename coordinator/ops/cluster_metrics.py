"""Prometheus figures of the broker connection, the ops lease and the notice sweeps of one
instance, read
from the live objects at scrape time (no database query): with one instance it simply
always leads. Documented in docs/metrics.md ("Brokers and instances")."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coordinator.ops.leadership import Leadership
from coordinator.ops.watcher import WatcherStats


class _Instance(Protocol):
    leadership: Leadership | None

    def leading(self) -> bool: ...

    @property
    def sweep_failures(self) -> int: ...

    @property
    def watcher_stats(self) -> WatcherStats: ...


class ClusterCollector(Collector):
    def __init__(self, ops: _Instance) -> None:
        self.ops = ops

    def describe(self) -> Iterable[Metric]:
        return []  # collected from live objects; nothing to describe ahead

    def collect(self) -> Iterator[Metric]:
        stats = self.ops.watcher_stats
        yield GaugeMetricFamily(
            "breakwater_mqtt_connected",
            "1 while the ops watcher holds a broker connection (any of mqtt_url).",
            value=1.0 if stats.broker is not None else 0.0)
        yield CounterMetricFamily(
            "breakwater_notice_sweep_failures",
            "Notice sweeps (owed store notices, late placements) that failed; retried.",
            value=float(self.ops.sweep_failures))
        yield CounterMetricFamily(
            "breakwater_mqtt_connects",
            "Broker connections the ops watcher established (more than one: reconnects).",
            value=float(stats.connects))
        leadership = self.ops.leadership
        yield GaugeMetricFamily(
            "breakwater_ops_leader",
            "1 while this instance runs the ops loop (always, with one instance).",
            value=1.0 if self.ops.leading() else 0.0)
        epoch = leadership.keeper.epoch if leadership is not None else None
        yield GaugeMetricFamily(
            "breakwater_ops_lease_epoch",
            "The ops lease epoch this instance leads with (0: not leading, or one instance).",
            value=float(epoch or 0))
        yield CounterMetricFamily(
            "breakwater_ops_lease_terms", "Times this instance was elected ops leader.",
            value=float(leadership.terms if leadership is not None else 0))
        rows = CounterMetricFamily(
            "breakwater_inbox_rows",
            "Shared-inbox rows this instance applied as leader, by outcome.",
            labels=["outcome"])
        rows.add_metric(["applied"], float(leadership.applied if leadership else 0))
        rows.add_metric(["dropped"], float(leadership.dropped if leadership else 0))
        yield rows
