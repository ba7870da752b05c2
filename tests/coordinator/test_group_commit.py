"""Group commit: many waiting requests share commits; a bad one never fails the others."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlite_utils import Database

from coordinator.db import open_database, write_transaction
from coordinator.errors import NotFound
from coordinator.group_commit import GroupCommitter
from coordinator.settings import Settings
from protocols.clock import ManualClock
from protocols.orders import Channel, OrderIn, OrderLine

from .conftest import NOW


def _order(coid: str, sku: str = "SKU-0001") -> OrderIn:
    return OrderIn(channel=Channel.DOUYIN, channel_order_id=coid, store_id="HZ-S002",
                   lines=[OrderLine(sku_id=sku, qty=1)], lat=30.27, lon=120.15)


def test_burst_is_committed_in_groups_and_a_bad_request_fails_alone(
    sample_db: Database, db_path: Path
) -> None:
    committer = GroupCommitter(lambda: open_database(db_path, migrate=False),
                               Settings(db_path=str(db_path)), ManualClock(NOW))
    results: dict[int, object] = {}
    start = threading.Barrier(24)

    def request(n: int) -> None:
        start.wait()
        sku = "SKU-NOPE" if n == 7 else "SKU-0001"
        try:
            results[n] = committer.submit([_order(f"G{n}", sku)])
        except NotFound as exc:
            results[n] = exc

    committer.start()
    try:
        threads = [threading.Thread(target=request, args=(n,)) for n in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        committer.stop()
    assert isinstance(results[7], NotFound) and results[7].ident == "SKU-NOPE"
    good = [r for n, r in results.items() if n != 7]
    assert all(isinstance(r, list) and r[0].status == "allocated" for r in good)
    assert sample_db.execute("SELECT count(*) FROM orders").fetchone()[0] == 23
    assert committer.orders == 24 and committer.groups <= 24


def test_stopped_intake_refuses_instead_of_hanging(db_path: Path, sample_db: Database) -> None:
    committer = GroupCommitter(lambda: open_database(db_path, migrate=False),
                               Settings(db_path=str(db_path)), ManualClock(NOW))
    with pytest.raises(Exception, match="not running"):
        committer.submit([_order("X1")])


def test_requests_queued_while_the_write_lock_is_awaited_join_that_batch(
    sample_db: Database, db_path: Path
) -> None:
    """Another writer holds the lock: the writer takes the first request and waits; the
    three that queue meanwhile are stored in the same transaction once it gets the lock."""
    committer = GroupCommitter(lambda: open_database(db_path, migrate=False),
                               Settings(db_path=str(db_path)), ManualClock(NOW))
    other = open_database(db_path, migrate=False)
    results: dict[int, object] = {}

    def request(n: int) -> None:
        results[n] = committer.submit([_order(f"J{n}")])

    committer.start()
    try:
        with write_transaction(other):
            first = threading.Thread(target=request, args=(0,))
            first.start()
            deadline = time.monotonic() + 10
            while committer.groups == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert committer.groups == 1  # taken, now waiting for the lock
            later = [threading.Thread(target=request, args=(n,)) for n in (1, 2, 3)]
            for t in later:
                t.start()
            while committer.queued < 3 and time.monotonic() < deadline:
                time.sleep(0.01)  # until all three are queued behind the waiting writer
            assert committer.queued == 3
        for t in (first, *later):
            t.join()
    finally:
        committer.stop()
        other.conn.close()
    assert all(isinstance(r, list) and r[0].status == "allocated" for r in results.values())
    assert (committer.groups, committer.orders, len(results)) == (1, 4, 4)
