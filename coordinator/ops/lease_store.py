"""SQL of the ops lease (see :mod:`coordinator.ops.lease` for the rules).

``step`` reads the row and writes the keeper's answer in one write transaction, so two
instances can never both take the same epoch. ``check`` runs first inside every ops
transaction of a leader: the transaction aborts (:class:`LeaseLost`) unless the row still
names this instance, with this epoch, unexpired at ``now``.

On PostgreSQL the write transaction holds the one advisory write lock, so a leader
stopped (SIGSTOP, a VM freeze) in the middle of a transaction would hold every other
writer, the standby's lease round included, until it resumed. :func:`fence_session`
makes the server end such a session once it has been idle inside a transaction for the
lease TTL: its transaction rolls back, the lock is free, the standby takes the lease, and
the resumed leader finds its connection gone (it reconnects and follows). A session
stopped in the middle of the protocol (a COPY) counts as active and is not ended so;
the standby's waits for a lock are bounded by the TTL instead, and its next round, once
the holder's lease has expired, ends every session of the holder (:func:`step`).
"""

from __future__ import annotations

from datetime import datetime

from coordinator.db import Database, dialect, write_transaction
from coordinator.errors import StoreError
from coordinator.ops.lease import LeaseAction, LeaseKeeper, LeaseRow, Renew, Take
from protocols.timestamps import parse_stamp, stamp

OPS_LEASE = "ops"


class LeaseLost(StoreError):
    """This instance no longer holds the ops lease: the transaction must not commit."""


def session_name(instance: str) -> str:
    """The ``application_name`` of an instance's ops connections on PostgreSQL."""
    return f"breakwater-ops-{instance}"[:63]


def fence_session(db: Database, ttl_s: float, instance: str | None = None) -> None:
    """Let the server end this connection's session when it sits idle inside a
    transaction for ``ttl_s``, and give up any lock wait after ``ttl_s``
    (:class:`~coordinator.errors.WriteLockBusy` for the write lock; PostgreSQL; nothing
    to do on SQLite, where the instances
    share one host and a stopped writer holds the file lock until it resumes). With
    ``instance``, the session is named after it, so whoever takes the lease over can end
    the sessions a stopped holder left (:func:`step`)."""
    if dialect(db) != "postgresql":
        return
    if not ttl_s > 0:
        raise ValueError(f"ttl_s: must be > 0, got {ttl_s!r}")
    ms = max(1, round(ttl_s * 1000))
    # SET takes no parameters; the value is a number we computed
    db.execute(f"SET idle_in_transaction_session_timeout = {ms}")
    # No lock wait of the ops loop outlasts the TTL either: a holder stopped with a lock
    # before its lease expired would otherwise hold this thread, the lease round behind
    # it included, for as long as it stayed stopped (its sessions are ended only once
    # its lease has expired, by a round that must get to run). A leader that waited
    # that long has lost its lease anyway.
    db.execute(f"SET lock_timeout = {ms}")
    if instance is not None:
        db.execute("SELECT set_config('application_name', ?, false)", [session_name(instance)])


def instance_session_name(instance: str) -> str:
    """The ``application_name`` of every other PostgreSQL session of an instance run by
    ``python -m coordinator serve`` (request threads, intake, the customer tick: it sets
    ``PGAPPNAME``), so a standby taking its expired lease can end those too."""
    return f"breakwater-{instance}"[:63]


def _end_sessions_of(db: Database, holder: str) -> None:
    """End the previous holder's sessions, its ops sessions and every other one. The
    idle-in-transaction timeout does not cover a session stopped in the middle of the
    protocol (a COPY, a pipeline without its Sync): the server counts it active and it
    kept its locks (the shared inbox's, or the write lock every instance needs) for as
    long as the process stayed stopped. Its lease has expired: it must not write again,
    and on resuming it reconnects and finds that out."""
    db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
               "WHERE application_name IN (?, ?) AND pid <> pg_backend_pid()",
               [session_name(holder), instance_session_name(holder)])


def read(db: Database, name: str = OPS_LEASE) -> LeaseRow | None:
    row = db.execute("SELECT holder, epoch, expires_at FROM ops_lease WHERE name = ?",
                     [name]).fetchone()
    if row is None:
        return None
    return LeaseRow(str(row[0]), int(row[1]), parse_stamp(str(row[2])))


def step(db: Database, keeper: LeaseKeeper, now: datetime,
         name: str = OPS_LEASE) -> LeaseAction:
    """Read, decide, write; the keeper learns the outcome only after the commit."""
    if dialect(db) == "postgresql" and not db.conn.in_transaction:
        seen = read(db, name)
        if seen is not None and seen.holder != keeper.instance and seen.expires_at <= now:
            # Before this round waits for the write lock: a holder stopped inside any
            # transaction of any of its sessions may hold it (seen once in 50 CI runs:
            # the standby never led), and only ending that session frees it.
            _end_sessions_of(db, seen.holder)
    # The wait for the write lock is bounded by the TTL: a holder that stopped inside a
    # transaction before its lease expired holds the lock, and an unbounded wait would
    # never come back to the check above, which ends its sessions once the lease has
    # expired (seen in CI: the standby waited for good). Past the TTL what this round
    # would write is stale anyway.
    with write_transaction(db, lock_wait_s=keeper.ttl.total_seconds()):
        before = read(db, name)
        action = keeper.tick(now, before)
        if isinstance(action, Take):
            if (before is not None and before.holder != keeper.instance
                    and dialect(db) == "postgresql"):
                _end_sessions_of(db, before.holder)
            db.execute(
                "INSERT INTO ops_lease (name, holder, epoch, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                "epoch = excluded.epoch, expires_at = excluded.expires_at",
                [name, keeper.instance, action.epoch, stamp(action.expires_at)])
        elif isinstance(action, Renew):
            db.execute("UPDATE ops_lease SET expires_at = ? WHERE name = ? AND holder = ? "
                       "AND epoch = ?",
                       [stamp(action.expires_at), name, keeper.instance, action.epoch])
    keeper.written(action)
    return action


def check(db: Database, instance: str, epoch: int | None, now: datetime,
          name: str = OPS_LEASE) -> None:
    """Raise :class:`LeaseLost` unless ``instance`` holds the lease with ``epoch`` at
    ``now``. Call it inside the write transaction it guards."""
    row = read(db, name)
    if epoch is None or row is None or row.holder != instance or row.epoch != epoch \
            or row.expires_at <= now:
        held = "nobody" if row is None else f"{row.holder} (epoch {row.epoch})"
        message = f"ops lease lost: {instance} (epoch {epoch}) is not the holder; {held} is"
        raise LeaseLost(message)


def release(db: Database, instance: str, epoch: int | None, now: datetime,
            name: str = OPS_LEASE) -> None:
    """End our lease at ``now`` (a clean shutdown): a standby takes it at its next round
    instead of waiting for the expiry. Nothing happens if it is no longer ours."""
    if epoch is None:
        return
    with write_transaction(db):
        db.execute("UPDATE ops_lease SET expires_at = ? WHERE name = ? AND holder = ? "
                   "AND epoch = ?", [stamp(now), name, instance, epoch])
