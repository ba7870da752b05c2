"""Building the health report from the database: history window, stores, live
self-healing; :mod:`coordinator.intel.health` computes, :mod:`.report_html` renders."""

from __future__ import annotations

from datetime import datetime, timedelta

from coordinator.catalog import Kind, list_rows
from coordinator.db import Database
from coordinator.intel import history_store
from coordinator.intel.config import ReportConfig
from coordinator.intel.health import HealthReport, StorePoint, compute
from coordinator.ops.metrics import self_healing

MAX_STORES = 100_000


def build(db: Database, config: ReportConfig, *, until: datetime | None = None,
          days: int | None = None) -> HealthReport:
    """The report over ``days`` (default: the configured window) ending at ``until``
    (default: the latest imported order, so last month's export reads as last month)."""
    end = until or history_store.latest_order_time(db)
    if end is None:
        end = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
    else:
        # the window is half-open and stamps are stored to the millisecond
        end = end + timedelta(milliseconds=1) if until is None else end
    since = end - timedelta(days=days or config.days)
    stores = [StorePoint(r["id"], r["lat"], r["lon"])
              for r in list_rows(db, Kind.STORES, limit=MAX_STORES)]
    return compute(history_store.past_orders(db, since, end), stores, since=since, until=end,
                   config=config, self_healing=self_healing(db))
