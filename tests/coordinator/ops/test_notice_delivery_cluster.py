"""Who delivers notices with two coordinator processes on one database. On PostgreSQL
every instance does (each claims due notices with ``FOR UPDATE SKIP LOCKED`` and a claim
lease): while the leader is stopped, still holding its lease, the standby delivers them
all, and with both running each notice goes out exactly once. On SQLite (no such claim)
only the leader delivers, so the standby sends nothing even then."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest

from coordinator.db import open_database
from coordinator.ops.notify import outbox
from coordinator.ops.notify.outbox import OutgoingNotice
from protocols import Topics
from simulators.brokers import Broker
from simulators.coordinators import coordinators
from simulators.pg_server import PostgresServer
from tests.coordinator.ops.helpers import read

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(180)]
NOTICES = 30
# long enough that the paused leader keeps its lease throughout: the standby must not
# become the leader, or it would deliver as the leader does
TTL_S = 20.0


def queue(target: str, batch: str) -> None:
    db = open_database(target, migrate=False)
    try:
        with db.atomic():
            outbox.queue(db, [OutgoingNotice("franchisee", f"franchisee:{batch}:o-{i}",
                                             {"order_id": f"{batch}-{i}"}, batch)
                              for i in range(NOTICES)], datetime.now(UTC))
    finally:
        db.conn.close()


def keys(sink: Path) -> list[str]:
    lines = sink.read_text(encoding="utf-8").splitlines() if sink.exists() else []
    return [json.loads(line)["notice_key"] for line in lines]


def holder(target: str) -> str:
    return str(read(target, "SELECT holder FROM ops_lease WHERE name = 'ops'")[0][0])


def wait(check: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"waited {within:g} s for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_the_standby_delivers_on_postgresql_each_notice_once_and_never_on_sqlite(
        backend: str, broker: Broker, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if backend == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        target = server.create_database()
    else:
        target = str(tmp_path / "coordinator.sqlite")
    open_database(target).conn.close()  # migrated before either instance starts
    topics = Topics(f"bwnotice{backend[:2]}{int(time.time()) % 100000}")
    dirs = {name: tmp_path / name for name in ("a", "b")}
    sinks = {name: d / "franchisee.jsonl" for name, d in dirs.items()}
    with ExitStack() as stack:
        running = {}
        for name, workdir in dirs.items():  # a config and a file sink each
            workdir.mkdir()
            started = stack.enter_context(coordinators(
                target, [broker.url], topics.root, workdir, names=(name,),
                lease_ttl_s=TTL_S))
            running[name] = started[name]
            if name == "a":
                wait(lambda: bool(read(target, "SELECT 1 FROM ops_lease")), 30, "a leader")
        leader = running["a"]
        assert holder(target) == leader.instance

        leader.pause()  # SIGSTOP: alive, holding its lease, delivering nothing
        try:
            queue(target, "first")
            if backend == "postgresql":
                wait(lambda: len(keys(sinks["b"])) == NOTICES, 10, "the standby's delivery")
            else:
                time.sleep(2.0)  # ten of the dispatcher's polls
                assert keys(sinks["b"]) == []
            assert holder(target) == leader.instance  # b delivered as a standby
        finally:
            leader.resume()

        queue(target, "second")  # both running: they split the outbox between them
        pending = ("SELECT count(*) FROM ops_notifications WHERE status <> 'sent'")
        wait(lambda: read(target, pending) == [(0,)], 30, "every notice sent")
        delivered = keys(sinks["a"]) + keys(sinks["b"])
        expected = [f"franchisee:{batch}:o-{i}" for batch in ("first", "second")
                    for i in range(NOTICES)]
        assert sorted(delivered) == sorted(expected)  # each notice, exactly once
        if backend == "sqlite":
            assert keys(sinks["b"]) == []  # the leader delivered every one
