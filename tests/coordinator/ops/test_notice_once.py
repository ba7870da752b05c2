"""Each franchisee notice lands in the file sink exactly once, however the dispatcher dies:
a real process is SIGKILLed after a chosen number of lines (between writing a batch and
marking it sent, or anywhere else it happens to be), a new one finishes the outbox."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator.db import open_database
from coordinator.errors import NotificationError
from coordinator.ops.notify import outbox
from coordinator.ops.notify.channels import JsonlSink
from coordinator.ops.notify.outbox import Notification, OutgoingNotice
from protocols.timestamps import parse_stamp

NOTICES = 120
T0 = "2026-11-24T02:17:00.000Z"

# one dispatcher process: delivers the whole outbox (batches of 10) to the file sink, and
# waits out the claim lease of a batch a killed one had claimed (PostgreSQL) until
# nothing is pending
_DISPATCHER = r"""
import asyncio, sys
from pathlib import Path
from coordinator.db import open_database
from coordinator.ops.config import DispatcherConfig, FranchiseeConfig, NotifyConfig
from coordinator.ops.notify import outbox
from coordinator.ops.notify.dispatcher import Dispatcher
from protocols.clock import SystemClock
db_path, sink, lease = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
config = NotifyConfig(franchisee=FranchiseeConfig(sink="jsonl", jsonl_path=sink),
                      dispatcher=DispatcherConfig(batch_size=10, claim_lease_s=lease))
async def main():
    d = Dispatcher(lambda: open_database(db_path, migrate=False), config, SystemClock())
    while await d.run_once() or outbox.counts(d.db).get(("franchisee", "pending")):
        await asyncio.sleep(0.01)
    await d.aclose()
asyncio.run(main())
"""


def _queue(target: str) -> None:
    db = open_database(target)
    with db.atomic():
        outbox.queue(db, [OutgoingNotice("franchisee", f"franchisee:inc-1:o-{i}",
                                         {"order_id": f"o-{i}", "coupon": f"C{i}"}, "inc-1")
                          for i in range(NOTICES)], parse_stamp(T0))
    db.conn.close()


@pytest.fixture(scope="module")
def queued(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("outbox") / "queued.sqlite"
    _queue(str(path))
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def outbox_db(request: pytest.FixtureRequest, queued: Path, tmp_path: Path) -> str:
    """The queued outbox on each backend: a copy of the SQLite file, or a fresh
    PostgreSQL database queued the same way."""
    if request.param == "sqlite":
        shutil.copy(queued, tmp_path / "coordinator.sqlite")
        return str(tmp_path / "coordinator.sqlite")
    target: str = request.getfixturevalue("postgres_url")
    _queue(target)
    return target


def _lines(sink: Path) -> list[str]:
    return sink.read_text(encoding="utf-8").splitlines() if sink.exists() else []


def _dispatcher(db: str, sink: Path, lease_s: float = 0.5) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _DISPATCHER, db, str(sink), str(lease_s)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# every kill point on SQLite; on PostgreSQL (one claim path whatever the point) the
# first line, one inside a batch and the last
@pytest.mark.parametrize(("outbox_db", "kill_after"),
                         [*(("sqlite", k) for k in (1, 9, 10, 37, 81, 119)),
                          *(("postgresql", k) for k in (1, 37, 119))],
                         indirect=["outbox_db"])
def test_a_dispatcher_killed_mid_delivery_writes_no_notice_twice(
        outbox_db: str, tmp_path: Path, kill_after: int) -> None:
    db, sink = outbox_db, tmp_path / "franchisee.jsonl"
    first = _dispatcher(db, sink)
    deadline = time.monotonic() + 60
    while len(_lines(sink)) < kill_after and first.poll() is None:
        assert time.monotonic() < deadline, "the first dispatcher wrote too little"
        time.sleep(0.002)
    if first.poll() is None:
        os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=10)

    second = _dispatcher(db, sink)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err.decode()[-2000:]

    written = [json.loads(line) for line in _lines(sink)]
    assert sorted(w["notice_key"] for w in written) == sorted(
        f"franchisee:inc-1:o-{i}" for i in range(NOTICES))  # every notice, once
    check = open_database(db, migrate=False)
    try:
        assert [n.status for n in outbox.listing(check, limit=1000)] == ["sent"] * NOTICES
    finally:
        check.conn.close()


def test_a_line_cut_short_by_a_crash_is_replaced_not_glued_to(
        outbox_db: str, tmp_path: Path) -> None:
    db, sink = outbox_db, tmp_path / "franchisee.jsonl"
    sink.write_text('{"order_id":"o-0","coupon":"C0","notice_key":"franchisee:inc-1:o-0"}\n'
                    '{"order_id":"o-1","cou', encoding="utf-8")
    done = _dispatcher(db, sink)
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err.decode()[-2000:]
    written = [json.loads(line) for line in _lines(sink)]  # every line parses
    assert len(written) == NOTICES
    assert [w["order_id"] for w in written].count("o-1") == 1


def test_two_dispatchers_sharing_a_sink_file_write_each_notice_once(
        outbox_db: str, tmp_path: Path) -> None:
    # a paused SQLite leader that resumes mid-batch delivers what its successor already
    # sent (SQLite reads due rows, it does not claim them): both processes deliver the
    # whole outbox into one file at once, and the file still holds each notice once
    sink = tmp_path / "franchisee.jsonl"
    running = [_dispatcher(outbox_db, sink, lease_s=0.01) for _ in range(2)]
    for process in running:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()[-2000:]
    keys = [json.loads(line)["notice_key"] for line in _lines(sink)]
    assert sorted(keys) == sorted(f"franchisee:inc-1:o-{i}" for i in range(NOTICES))


def test_two_dispatchers_on_postgresql_split_the_outbox_and_send_each_notice_once(
        postgres_url: str, tmp_path: Path) -> None:
    # two instances at once, each with a sink of its own: a notice both claimed would
    # be in both files (the lease is long: neither dies, nothing is taken back)
    _queue(postgres_url)
    sinks = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    running = [_dispatcher(postgres_url, sink, lease_s=60) for sink in sinks]
    for process in running:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()[-2000:]
    keys = [json.loads(line)["notice_key"] for sink in sinks for line in _lines(sink)]
    assert sorted(keys) == sorted(f"franchisee:inc-1:o-{i}" for i in range(NOTICES))
    check = open_database(postgres_url, migrate=False)
    try:
        assert outbox.counts(check) == {("franchisee", "sent"): NOTICES}
    finally:
        check.conn.close()


def _notice(key: str, filler: str = "") -> Notification:
    return Notification(id=0, kind="franchisee", dedupe_key=key, incident_id="inc-1",
                        payload={"order_id": key, "note": filler}, status="pending",
                        attempts=0, next_attempt_at=T0, last_error=None, created_at=T0,
                        sent_at=None)


def _keys(sink: Path) -> list[str]:
    return [json.loads(line)["notice_key"] for line in _lines(sink)]


def test_a_sink_file_another_process_keeps_locked_fails_the_delivery_in_bounded_time(
        tmp_path: Path) -> None:
    # a process stopped (or its VM frozen) while it holds the lock must not hold this
    # one's worker thread for good: the delivery fails, is retried later, then succeeds
    path = tmp_path / "franchisee.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time\n"
         "f = open(sys.argv[1], 'ab'); fcntl.flock(f, fcntl.LOCK_EX)\n"
         "print('held', flush=True); time.sleep(60)", str(path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        sink = JsonlSink(path, lock_wait_s=0.2)
        started = time.monotonic()
        with pytest.raises(NotificationError, match="file lock"):
            asyncio.run(sink.deliver(_notice("k-1")))
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.communicate(timeout=10)  # reaped, and its pipe closed
    asyncio.run(sink.deliver(_notice("k-1")))  # the lock is free again
    assert _keys(path) == ["k-1"]


def test_a_sink_file_deleted_and_made_again_is_read_from_its_start(tmp_path: Path) -> None:
    # the new file may get the old one's inode number (ext4 reuses it at once): another
    # process writes a key and more than the old file's length before this one looks
    path = tmp_path / "franchisee.jsonl"
    first, second = JsonlSink(path), JsonlSink(path)
    asyncio.run(first.deliver(_notice("k-1")))
    path.unlink()
    asyncio.run(second.deliver(_notice("k-2")))
    asyncio.run(second.deliver(_notice("k-3", filler="x" * 200)))
    asyncio.run(first.deliver(_notice("k-2")))  # already in the new file: not again
    assert _keys(path) == ["k-2", "k-3"]
