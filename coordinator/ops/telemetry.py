"""Telemetry at head office: the agents' per-zone summaries, stored, downsampled, pruned.

Agents publish one :class:`~protocols.models.TelemetrySummary` per zone and metric per
window (a minute by default). The coordinator stores each as it arrives (a redelivered
summary is the same row: the key is warehouse, zone, metric, resolution and window
start), and a maintenance pass, run by the ops service every
``ops.telemetry.maintenance_interval_s``:

- merges summaries older than ``raw_keep_h`` into buckets of ``bucket_s`` seconds
  (min of the mins, count-weighted mean, max of the maxes, summed count, the last value
  of the latest window), so a year of charts stays small;
- deletes everything whose window ended more than ``retention_days`` ago.

The SQL is portable (named parameters, ``ON CONFLICT``) so the same statements run on
PostgreSQL once the store moves there. Times are the project's one format
(:func:`protocols.timestamps.stamp`: UTC ISO 8601 with milliseconds, sortable as text).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlite_utils import Migrations

from coordinator.db import Database, write_transaction
from coordinator.gateways import store as gateway_store
from protocols import TelemetrySummary
from protocols.timestamps import stamp

migrations = Migrations("coordinator_telemetry")

METRICS = ("temperature_c", "humidity_pct")
_COLUMNS = ("warehouse_id", "zone", "metric", "resolution_s", "window_start", "window_end",
            "count", "min", "mean", "max", "last", "agent_id")


@migrations()
def m001_telemetry(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE ops_telemetry (
            warehouse_id TEXT NOT NULL,
            zone TEXT NOT NULL,
            metric TEXT NOT NULL,
            resolution_s INTEGER NOT NULL,
            window_start TEXT NOT NULL,
            window_end TEXT NOT NULL,
            count INTEGER NOT NULL,
            min REAL NOT NULL,
            mean REAL NOT NULL,
            max REAL NOT NULL,
            last REAL NOT NULL,
            agent_id TEXT NOT NULL,
            PRIMARY KEY (warehouse_id, zone, metric, resolution_s, window_start)
        )
        """
    )
    # the maintenance pass and retention walk by age, the chart by warehouse and time
    db.execute("CREATE INDEX ops_telemetry_end ON ops_telemetry (window_end)")


@migrations()
def m002_latest(db: Database) -> None:
    """The newest window per series, kept on write: the board reads 48 rows, not a
    GROUP BY over every minute stored."""
    db.execute(
        """
        CREATE TABLE ops_telemetry_latest (
            warehouse_id TEXT NOT NULL,
            zone TEXT NOT NULL,
            metric TEXT NOT NULL,
            resolution_s INTEGER NOT NULL,
            window_start TEXT NOT NULL,
            window_end TEXT NOT NULL,
            count INTEGER NOT NULL,
            min REAL NOT NULL,
            mean REAL NOT NULL,
            max REAL NOT NULL,
            last REAL NOT NULL,
            agent_id TEXT NOT NULL,
            PRIMARY KEY (warehouse_id, zone, metric)
        )
        """
    )
    db.execute(f"INSERT INTO ops_telemetry_latest SELECT {', '.join('t.' + c for c in _COLUMNS)} "
               "FROM ops_telemetry t WHERE t.window_start = (SELECT max(n.window_start) FROM "
               "ops_telemetry n WHERE n.warehouse_id = t.warehouse_id AND n.zone = t.zone "
               "AND n.metric = t.metric) AND t.resolution_s = (SELECT min(n.resolution_s) FROM "
               "ops_telemetry n WHERE n.warehouse_id = t.warehouse_id AND n.zone = t.zone "
               "AND n.metric = t.metric AND n.window_start = t.window_start)")


@dataclass(frozen=True)
class Window:
    """One stored summary (a raw window or a merged bucket)."""

    warehouse_id: str
    zone: str
    metric: str
    resolution_s: int
    window_start: datetime
    window_end: datetime
    count: int
    min: float
    mean: float
    max: float
    last: float
    agent_id: str

    def as_json(self) -> dict[str, Any]:
        return {"warehouse_id": self.warehouse_id, "zone": self.zone, "metric": self.metric,
                "resolution_s": self.resolution_s, "window_start": stamp(self.window_start),
                "window_end": stamp(self.window_end), "count": self.count, "min": self.min,
                "mean": self.mean, "max": self.max, "last": self.last,
                "agent_id": self.agent_id}


def window_of(summary: TelemetrySummary) -> Window:
    seconds = max(1, round((summary.window_end - summary.window_start).total_seconds()))
    return Window(summary.warehouse_id, summary.zone, summary.metric, seconds,
                  summary.window_start, summary.window_end, summary.count, summary.min,
                  summary.mean, summary.max, summary.last, summary.agent_id)


def bucket_start(moment: datetime, bucket_s: int) -> datetime:
    """The start of the ``bucket_s``-long bucket holding ``moment`` (aligned to the epoch,
    so every coordinator instance cuts the same buckets)."""
    epoch = int(moment.astimezone(UTC).timestamp())
    return datetime.fromtimestamp(epoch - epoch % bucket_s, UTC)


def merge(windows: Sequence[Window], bucket_s: int) -> Window:
    """One bucket from windows of one series: pure, order-independent except ``last``,
    which is the value of the window that ended latest."""
    if not windows:
        raise ValueError("merge needs at least one window")
    first = windows[0]
    count = sum(w.count for w in windows)
    latest = max(windows, key=lambda w: (w.window_end, w.window_start))
    low = min(w.min for w in windows)
    high = max(w.max for w in windows)
    # float rounding of the weighted sum must not put the mean outside [min, max]
    mean = min(high, max(low, sum(w.mean * w.count for w in windows) / count))
    start = bucket_start(first.window_start, bucket_s)
    return Window(first.warehouse_id, first.zone, first.metric, bucket_s, start,
                  start + timedelta(seconds=bucket_s), count, low, mean, high, latest.last,
                  latest.agent_id)


_INSERT = (
    f"INSERT INTO ops_telemetry ({', '.join(_COLUMNS)}) VALUES "
    f"({', '.join(':' + c for c in _COLUMNS)}) "
    "ON CONFLICT (warehouse_id, zone, metric, resolution_s, window_start) DO NOTHING"
)
_UPSERT_LATEST = (
    f"INSERT INTO ops_telemetry_latest ({', '.join(_COLUMNS)}) VALUES "
    f"({', '.join(':' + c for c in _COLUMNS)}) "
    "ON CONFLICT (warehouse_id, zone, metric) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[3:])
    + " WHERE excluded.window_start > ops_telemetry_latest.window_start"
)


def _params(w: Window) -> dict[str, Any]:
    return {**w.as_json(), "window_start": stamp(w.window_start),
            "window_end": stamp(w.window_end)}


def record(db: Database, summaries: Iterable[TelemetrySummary]) -> int:
    """Store summaries in one transaction; return how many were new (a redelivered
    summary is skipped, not counted)."""
    rows = [_params(window_of(s)) for s in summaries]
    if not rows:
        return 0
    with write_transaction(db):
        before = db.conn.total_changes
        db.conn.executemany(_INSERT, rows)
        stored = db.conn.total_changes - before
        # only the newest window of each series in this batch can move "latest"
        newest: dict[tuple[str, str, str], dict[str, Any]] = {}
        for r in rows:
            key = (r["warehouse_id"], r["zone"], r["metric"])
            if key not in newest or r["window_start"] > newest[key]["window_start"]:
                newest[key] = r
        db.conn.executemany(_UPSERT_LATEST, list(newest.values()))
        return stored


def accept(db: Database, summary: TelemetrySummary) -> str:
    """Store a summary from a registered gateway of that warehouse: ``stored``,
    ``duplicate`` (a redelivery) or ``refused`` (an agent the registry does not know for
    that warehouse: charts show only what trusted gateways measured)."""
    gateway = gateway_store.get_gateway(db, summary.agent_id)
    if gateway is None or gateway.warehouse_id != summary.warehouse_id:
        return "refused"
    return "stored" if record(db, [summary]) else "duplicate"


def _window(row: Sequence[Any]) -> Window:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["window_start"] = datetime.fromisoformat(values["window_start"])
    values["window_end"] = datetime.fromisoformat(values["window_end"])
    return Window(**values)


@dataclass(frozen=True)
class Maintenance:
    merged: int  # raw windows folded into buckets
    buckets: int  # buckets written (new or updated)
    pruned: int  # rows past retention deleted


def maintain(db: Database, now: datetime, *, raw_keep: timedelta, bucket_s: int,
             retention: timedelta, batch: int = 20_000) -> Maintenance:
    """Downsample windows older than ``raw_keep`` and drop rows older than ``retention``.

    At most ``batch`` raw windows are folded per call, so a pass never holds the write
    lock for long; the next pass continues."""
    pruned_before = stamp(now - retention)
    cutoff = stamp(now - raw_keep)
    with write_transaction(db):
        pruned = db.conn.execute("DELETE FROM ops_telemetry WHERE window_end < :cutoff",
                                 {"cutoff": pruned_before}).rowcount
        raw = [_window(r) for r in db.conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM ops_telemetry WHERE window_end <= :cutoff "
            "AND resolution_s < :bucket ORDER BY window_start LIMIT :batch",
            {"cutoff": cutoff, "bucket": bucket_s, "batch": batch}).fetchall()]
        groups: dict[tuple[str, str, str, datetime], list[Window]] = {}
        for w in raw:
            key = (w.warehouse_id, w.zone, w.metric, bucket_start(w.window_start, bucket_s))
            groups.setdefault(key, []).append(w)
        for (warehouse, zone, metric, start), members in groups.items():
            existing = db.conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM ops_telemetry WHERE warehouse_id = :w "
                "AND zone = :z AND metric = :m AND resolution_s = :r AND window_start = :s",
                {"w": warehouse, "z": zone, "m": metric, "r": bucket_s,
                 "s": stamp(start)}).fetchone()
            merged = merge([*members, *([_window(existing)] if existing else [])], bucket_s)
            db.conn.execute(
                "DELETE FROM ops_telemetry WHERE warehouse_id = :w AND zone = :z "
                "AND metric = :m AND resolution_s = :r AND window_start = :s",
                {"w": warehouse, "z": zone, "m": metric, "r": bucket_s, "s": stamp(start)})
            db.conn.execute(_INSERT, _params(merged))
        db.conn.executemany(
            "DELETE FROM ops_telemetry WHERE warehouse_id = :warehouse_id AND zone = :zone "
            "AND metric = :metric AND resolution_s = :resolution_s "
            "AND window_start = :window_start",
            [_params(w) for w in raw])
    return Maintenance(merged=len(raw), buckets=len(groups), pruned=pruned)


def series(db: Database, warehouse_id: str, since: datetime, until: datetime,
           zone: str | None = None) -> list[Window]:
    """A warehouse's windows overlapping [since, until], by zone, metric and time
    (raw windows and merged buckets alike: a chart draws each at its own width)."""
    rows = db.conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM ops_telemetry WHERE warehouse_id = :w "
        "AND window_end >= :since AND window_start <= :until "
        # typed: PostgreSQL cannot tell the type of a parameter only tested for NULL
        "AND (CAST(:zone AS TEXT) IS NULL OR zone = :zone) ORDER BY zone, metric, window_start",
        {"w": warehouse_id, "since": stamp(since), "until": stamp(until), "zone": zone})
    return [_window(r) for r in rows.fetchall()]


def latest(db: Database) -> list[Window]:
    """The newest window of every warehouse, zone and metric (the board's readings)."""
    rows = db.conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM ops_telemetry_latest "
        "ORDER BY warehouse_id, zone, metric")
    return [_window(r) for r in rows.fetchall()]
