"""The lease and inbox tables on a real database (a SQLite file and the private
PostgreSQL): what two instances see."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.db import Database, open_database, write_transaction
from coordinator.errors import ConnectionLost, WriteLockBusy
from coordinator.ops import inbox_store, lease_store
from coordinator.ops.lease import LeaseKeeper
from tests.coordinator.ops.factories import T0, agent_status, breaker_event, tracking


@pytest.fixture
def target(db_target: str) -> str:
    """The migrated tables on each backend."""
    open_database(db_target).conn.close()
    return db_target


def test_two_instances_on_one_database_one_leads_and_the_other_is_refused(target: str) -> None:
    first, second = open_database(target), open_database(target)
    a, b = LeaseKeeper("a", 4), LeaseKeeper("b", 4)
    lease_store.step(first, a, T0)
    lease_store.step(second, b, T0 + timedelta(seconds=1))
    assert (a.epoch, b.epoch) == (1, None)
    with write_transaction(first):
        lease_store.check(first, "a", a.epoch, T0 + timedelta(seconds=2))
    with pytest.raises(lease_store.LeaseLost, match="a \\(epoch 1\\)"), \
            write_transaction(second):
        lease_store.check(second, "b", b.epoch, T0 + timedelta(seconds=2))
    # a stops renewing: b takes epoch 2, and a's next transaction is refused
    lease_store.step(second, b, T0 + timedelta(seconds=5))
    assert b.epoch == 2
    with pytest.raises(lease_store.LeaseLost), write_transaction(first):
        lease_store.check(first, "a", a.epoch, T0 + timedelta(seconds=5))
    first.conn.close()
    second.conn.close()


def test_an_expired_lease_refuses_even_its_holder_until_renewed(target: str) -> None:
    db = open_database(target)
    a = LeaseKeeper("a", 4)
    lease_store.step(db, a, T0)
    with pytest.raises(lease_store.LeaseLost), write_transaction(db):
        lease_store.check(db, "a", a.epoch, T0 + timedelta(seconds=4))
    lease_store.step(db, a, T0 + timedelta(seconds=5))  # nobody took it: a new epoch
    assert a.epoch == 2
    db.conn.close()


def test_the_first_copy_of_a_message_wins_and_rows_come_back_in_arrival_order(
    target: str,
) -> None:
    db = open_database(target)
    trip, clear = breaker_event(seq=1), breaker_event(seq=2, open=False, episode=None)
    assert inbox_store.put(db, trip, "a", T0)
    assert not inbox_store.put(db, trip, "b", T0)  # the other instance's copy
    assert inbox_store.put(db, clear, "b", T0)
    assert inbox_store.put(db, agent_status(online=True, session_seq=1), "a", T0)
    assert inbox_store.put(db, tracking("s-1", at=T0), "a", T0)
    rows = inbox_store.pending(db, 10)
    assert [r.kind for r in rows] == ["breaker", "breaker", "status", "tracking"]
    assert inbox_store.decode_row(rows[0]) == trip
    with write_transaction(db):
        inbox_store.mark_applied(db, rows[1].id)
    assert [r.id for r in inbox_store.pending(db, 10)] == [r.id for r in rows[2:]]
    assert inbox_store.backlog(db) == 2
    db.conn.close()


def test_pruning_drops_only_applied_rows_older_than_kept(target: str) -> None:
    db = open_database(target)
    for seq in range(1, 4):
        inbox_store.put(db, breaker_event(seq=seq), "a", T0)
    first = inbox_store.pending(db, 10)[0]
    with write_transaction(db):
        inbox_store.mark_applied(db, first.id)
    assert inbox_store.prune(db, T0 + timedelta(minutes=30), timedelta(hours=1)) == 0
    assert inbox_store.prune(db, T0 + timedelta(hours=2), timedelta(hours=1)) == 1
    assert inbox_store.backlog(db) == 2
    db.conn.close()


@settings(max_examples=40, deadline=None)
@given(a=st.tuples(st.integers(0, 5), st.sampled_from([None, "a" * 32, "b" * 32]),
                   st.booleans(), st.integers(0, 3)),
       b=st.tuples(st.integers(0, 5), st.sampled_from([None, "a" * 32, "b" * 32]),
                   st.booleans(), st.integers(0, 3)))
def test_dedupe_keys_are_equal_exactly_for_the_same_message(
    a: tuple[int, str | None, bool, int], b: tuple[int, str | None, bool, int]
) -> None:
    def status(seq: int, inc: str | None, online: bool, minute: int) -> str:
        return inbox_store.dedupe_key(agent_status(
            online=online, session_seq=seq, incarnation=inc,
            at=T0 + timedelta(minutes=minute)))

    def event(seq: int, inc: str | None) -> str:
        return inbox_store.dedupe_key(breaker_event(seq=seq, incarnation=inc))

    assert (status(*a) == status(*b)) == (a == b)
    assert (event(a[0], a[1]) == event(b[0], b[1])) == (a[:2] == b[:2])


def test_a_released_lease_is_taken_at_once_and_a_stale_release_changes_nothing(
    target: str,
) -> None:
    db = open_database(target)
    a, b = LeaseKeeper("a", 4), LeaseKeeper("b", 4)
    lease_store.step(db, a, T0)
    lease_store.release(db, "a", a.epoch, T0 + timedelta(seconds=1))
    lease_store.step(db, b, T0 + timedelta(seconds=1.1))  # no wait for the TTL
    assert b.epoch == 2
    lease_store.release(db, "a", 1, T0 + timedelta(seconds=2))  # a's old epoch: ignored
    with write_transaction(db):
        lease_store.check(db, "b", b.epoch, T0 + timedelta(seconds=2))
    db.conn.close()


def test_a_leader_stopped_inside_a_transaction_is_ended_by_the_server_so_the_standby_leads(
    postgres_url: str,
) -> None:
    # two instances: two processes in production; here two clients of one database (the
    # second URL differs only in its application name, so this process's own queue for
    # the write lock, which is per URL, does not stand in for the server's lock)
    leader = open_database(postgres_url)
    standby = open_database(f"{postgres_url}?application_name=standby")
    lease_store.fence_session(leader, 0.3)
    a, b = LeaseKeeper("a", 4), LeaseKeeper("b", 4)
    lease_store.step(leader, a, T0)
    waited = 0.0
    # the session ended under it: the coordinator's error (its connection is replaced)
    with pytest.raises(ConnectionLost, match="idle-in-transaction"), \
            write_transaction(leader):
        lease_store.check(leader, "a", a.epoch, T0 + timedelta(seconds=1))
        leader.execute("INSERT INTO ops_cursors (name, value) VALUES ('from-a', 1)")
        # a stops here (SIGSTOP) holding the write lock; b's round waits for the lock
        # until the server ends a's session, then takes the lease a did not renew
        started = time.monotonic()
        lease_store.step(standby, b, T0 + timedelta(seconds=5))
        waited = time.monotonic() - started
    assert b.epoch == 2
    assert 0.2 < waited < 10
    assert leader.conn.raw.closed  # type: ignore[attr-defined]
    assert standby.execute("SELECT count(*) FROM ops_cursors WHERE name = 'from-a'"
                           ).fetchone()[0] == 0
    leader.conn.close()
    standby.conn.close()


def test_a_stopped_holders_other_session_holding_the_write_lock_is_ended_so_the_standby_leads(
    postgres_url: str,
) -> None:
    # instance a's lease expired while one of its other sessions (its intake, its
    # customer tick: named by PGAPPNAME, not an ops session) holds the write lock and
    # is never ended by the server (stopped mid-protocol counts as active; here: no idle
    # timeout). b's lease round must not wait for that lock forever.
    result: list[int | None] = []
    with _holder_and_standby(postgres_url, 4) as (a_other, standby, b):
        worker = threading.Thread(target=lambda: result.append(
            (lease_store.step(standby, b, T0 + timedelta(seconds=5)), b.epoch)[1]))
        try:
            with pytest.raises(ConnectionLost), write_transaction(a_other):
                a_other.execute("INSERT INTO ops_cursors (name, value) VALUES ('from-a', 1)")
                worker.start()  # a "stops" here, holding the write lock
                worker.join(10)
                a_other.execute("SELECT 1")  # a resumes: its session was ended meanwhile
        finally:
            if worker.is_alive():  # the fix is missing: free the lock so the test ends
                with contextlib.suppress(Exception):
                    a_other.conn.close()
                worker.join(10)
        assert result == [2]  # b took the lease while a was stopped
        assert standby.execute("SELECT count(*) FROM ops_cursors WHERE name = 'from-a'"
                               ).fetchone()[0] == 0


@contextlib.contextmanager
def _holder_and_standby(postgres_url: str, ttl_s: float
                        ) -> Iterator[tuple[Database, Database, LeaseKeeper]]:
    """Instance a holds the lease from T0; its other session (named as ``serve`` names
    it; no idle timeout: stopped mid-protocol, the server never ends it) and b's."""
    name = lease_store.instance_session_name("a")
    a_ops = open_database(postgres_url)
    a_other = open_database(f"{postgres_url}?application_name={name}")
    standby = open_database(f"{postgres_url}?application_name=standby")
    try:
        lease_store.step(a_ops, LeaseKeeper("a", ttl_s), T0)
        a_other.execute("SET idle_in_transaction_session_timeout = 0")
        yield a_other, standby, LeaseKeeper("b", ttl_s)
    finally:
        for db in (a_ops, a_other, standby):
            with contextlib.suppress(Exception):
                db.conn.close()


def test_a_holder_stopped_with_the_write_lock_before_its_lease_expired_is_ended_once_it_has(
    postgres_url: str,
) -> None:
    # the race a CI run hit: b's round read a's lease while it was still valid, so it
    # ended no session, then waited for the write lock a held (stopped mid-COPY: active,
    # no server timeout applies). That wait is bounded by the TTL; b's next round finds
    # the lease expired, ends a's sessions and leads.
    with _holder_and_standby(postgres_url, 0.5) as (a_other, standby, b), \
            pytest.raises(ConnectionLost), write_transaction(a_other):
        a_other.execute("INSERT INTO ops_cursors (name, value) VALUES ('from-a', 1)")
        # a "stops" here; b's first round comes while a's lease is still valid
        started = time.monotonic()
        with pytest.raises(WriteLockBusy, match=r"not free within 0\.5 s"):
            lease_store.step(standby, b, T0 + timedelta(seconds=0.2))
        waited = time.monotonic() - started
        assert b.epoch is None and not standby.conn.in_transaction
        lease_store.step(standby, b, T0 + timedelta(seconds=0.7))  # a's lease has expired
        assert b.epoch == 2
        assert 0.4 < waited < 5
        assert standby.execute("SELECT count(*) FROM ops_cursors WHERE name = 'from-a'"
                               ).fetchone()[0] == 0
        a_other.execute("SELECT 1")  # a resumes: its session was ended meanwhile


def test_a_bounded_write_transaction_gives_up_on_a_lock_held_by_another_thread(
    target: str,
) -> None:
    # two threads, each with its own connection to one database, as in the coordinator
    db, other = open_database(target), open_database(target)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with write_transaction(other):
            held.set()
            release.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert held.wait(10)
        with pytest.raises(WriteLockBusy, match="another thread"), \
                write_transaction(db, lock_wait_s=0.1):
            pass
    finally:
        release.set()
        worker.join(10)
    with write_transaction(db, lock_wait_s=0.1):  # free again: taken at once
        db.execute("INSERT INTO ops_cursors (name, value) VALUES ('after', 1)")
    db.conn.close()
    other.conn.close()


def test_a_put_waits_for_an_earlier_uncommitted_put_so_ids_appear_in_order(
    postgres_url: str,
) -> None:
    # were the second put's higher id visible first, the applier's cursor would pass
    # the first one's id before it committed, and never apply it
    first = open_database(postgres_url)
    second = open_database(f"{postgres_url}?application_name=second")
    reader = open_database(f"{postgres_url}?application_name=reader")
    done = threading.Event()

    def put_second() -> None:
        inbox_store.put(second, breaker_event(seq=2, agent="gw-2"), "b", T0)
        done.set()

    with first.atomic():  # the first instance's put, not yet committed
        inbox_store.put(first, breaker_event(seq=1, agent="gw-1"), "a", T0)
        worker = threading.Thread(target=put_second)
        worker.start()
        assert not done.wait(0.3)  # it waits for the first put's commit
        assert inbox_store.pending(reader, 10) == []
    worker.join(10)
    assert done.is_set()
    rows = inbox_store.pending(second, 10)
    assert [inbox_store.decode_row(r).agent_id for r in rows] == ["gw-1", "gw-2"]
    assert rows[0].id < rows[1].id
    # the applier's transactions do not wait for the puts' lock (only the puts do)
    with write_transaction(first):
        inbox_store.mark_applied(first, rows[0].id)
        assert inbox_store.put(second, breaker_event(seq=3, agent="gw-3"), "b", T0)
    for db in (first, second, reader):
        db.conn.close()


def test_a_leader_stopped_mid_copy_holding_the_inbox_lock_is_ended_by_whoever_takes_over(
    postgres_url: str,
) -> None:
    # stopped in the middle of a COPY the server counts the session active, not idle in a
    # transaction: no timeout ends it, and the shared inbox's lock stayed held for as long
    # as the process stayed stopped (the standby's puts waited behind it: a failover test
    # failed that way). The instance taking the lease over ends the holder's sessions.
    leader = open_database(postgres_url)
    standby = open_database(f"{postgres_url}?application_name=standby")
    lease_store.fence_session(leader, 60, "a")
    lease_store.fence_session(standby, 60, "b")
    a, b = LeaseKeeper("a", 4), LeaseKeeper("b", 4)
    lease_store.step(leader, a, T0)
    raw = leader.conn.raw  # type: ignore[attr-defined]
    raw.execute("BEGIN")
    raw.execute("SELECT pg_advisory_xact_lock(%s)", [inbox_store.INBOX_LOCK_KEY])
    cursor = raw.cursor()
    # a resumes at the end of the block and finishes its COPY: its session is gone
    with pytest.raises(psycopg.Error), \
            cursor.copy("COPY ops_cursors (name, value) FROM STDIN") as copy:
        copy.write_row(("from-a", 1))
        # a stops here (SIGSTOP), inside the COPY, holding the inbox lock
        lease_store.step(standby, b, T0 + timedelta(seconds=5))
        assert b.epoch == 2
        put = threading.Thread(target=lambda: inbox_store.put_many(
            standby, [breaker_event(seq=7)], "b", T0 + timedelta(seconds=5)))
        put.start()
        put.join(10)
        assert not put.is_alive(), "the standby's put still waits for the stopped leader"
    assert len(inbox_store.pending(standby, 10)) == 1
    assert standby.execute("SELECT count(*) FROM ops_cursors WHERE name = 'from-a'"
                           ).fetchone()[0] == 0
    with contextlib.suppress(psycopg.Error):
        leader.conn.close()
    standby.conn.close()


def test_a_put_on_a_fenced_session_waits_past_the_ttl_for_a_live_holder_of_the_inbox_lock(
    postgres_url: str,
) -> None:
    # the ops sessions of a cluster have lock_timeout = lease TTL; a put giving up after it
    # failed each of the watcher's attempts and the message was dropped for good, while
    # the holder (a standby stopped mid-COPY of its own put: active, ended by nobody)
    # would commit or be ended later
    writer = open_database(postgres_url)
    holder = open_database(f"{postgres_url}?application_name=holder")
    lease_store.fence_session(writer, 0.3, "a")
    stored: list[bool] = []
    try:
        with holder.atomic():
            holder.execute("SELECT pg_advisory_xact_lock(?)", [inbox_store.INBOX_LOCK_KEY])
            put = threading.Thread(target=lambda: stored.append(inbox_store.put(
                writer, breaker_event(seq=1), "a", T0)))
            put.start()
            put.join(1.0)  # past the TTL
            assert put.is_alive() and not stored  # still waiting, not failed
        put.join(10)
        assert stored == [True]
        assert len(inbox_store.pending(writer, 10)) == 1
        # the session's own bound still holds for everything else
        assert writer.execute("SHOW lock_timeout").fetchone()[0] == "300ms"
    finally:
        writer.conn.close()
        holder.conn.close()
