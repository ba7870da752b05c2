"""Breakers (ack, overrides) and the SQLite store (seq, session, outbox budget)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_agent.breakers import Breaker
from edge_agent.messages import OutgoingMessage
from edge_agent.rule_types import Transition
from edge_agent.store import Store
from protocols.models import BreakerCommand, BreakerState, CommandKind, Override

T0 = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)
RULE = "cold_room_2/temp_high"


def transition(state: BreakerState, seconds: float = 0, episode: str | None = "ep-1") -> Transition:
    return Transition(
        rule="temp_high",
        zone="cold_room_2",
        breaker="cold_chain",
        previous=BreakerState.OK,
        state=state,
        reason="test",
        event_time=T0 + timedelta(seconds=seconds),
        since=T0 + timedelta(seconds=seconds),
        episode_id=episode if state in (BreakerState.TRIPPED, BreakerState.CLEARING) else None,
    )


def command(kind: CommandKind, cid: str, minutes: float | None = 30) -> BreakerCommand:
    expires = None if minutes is None else T0 + timedelta(minutes=minutes)
    if kind in (CommandKind.ACK, CommandKind.RELEASE):
        expires = None
    return BreakerCommand(
        command_id=cid,
        command=kind,
        actor="ops-li",
        reason="drill",
        issued_at=T0,
        expires_at=expires,
    )


def breaker() -> Breaker:
    b = Breaker.create("cold_chain", "gw-1", [RULE], T0)
    b.apply(transition(BreakerState.OK))
    return b


def test_breaker_opens_on_trip_and_closes_on_clear() -> None:
    b = breaker()
    change = b.apply(transition(BreakerState.TRIPPED, 300))
    assert change is not None and change.open and change.episode_id == "ep-1"
    assert b.apply(transition(BreakerState.CLEARING, 400)) is not None and b.open
    closed = b.apply(transition(BreakerState.OK, 600))
    assert closed is not None and not closed.open and closed.episode_id is None


def test_ack_is_separate_from_clear_and_lasts_until_the_episode_ends() -> None:
    b = breaker()
    assert b.command(command(CommandKind.ACK, "c0"), T0).outcome == "refused"  # nothing open
    b.apply(transition(BreakerState.TRIPPED, 300))
    acked = b.command(command(CommandKind.ACK, "c1"), T0)
    assert acked.outcome == "applied" and acked.change is not None
    assert acked.change.acknowledged and acked.change.open  # ack does not close
    b.apply(transition(BreakerState.CLEARING, 400))
    assert b.acknowledged_by == "ops-li"
    b.apply(transition(BreakerState.OK, 600))
    assert b.acknowledged_by is None


def test_force_tripped_and_inhibit_overrides_expire() -> None:
    b = breaker()
    forced = b.command(command(CommandKind.FORCE_TRIPPED, "c1", minutes=10), T0)
    assert forced.change is not None and forced.change.open
    assert forced.change.override is Override.FORCE_TRIPPED and forced.change.episode_id
    assert b.tick(T0 + timedelta(minutes=9)) is None
    expired = b.tick(T0 + timedelta(minutes=10))
    assert expired is not None and not expired.open and expired.reason == "override_expired"

    b.apply(transition(BreakerState.TRIPPED, 300))
    inhibited = b.command(command(CommandKind.INHIBIT, "c2"), T0)
    assert inhibited.change is not None and not inhibited.change.open
    assert inhibited.change.state is BreakerState.TRIPPED
    released = b.command(command(CommandKind.RELEASE, "c3"), T0)
    assert released.change is not None and released.change.open


def test_commands_are_refused_when_duplicate_expired_or_pointless() -> None:
    b = breaker()
    assert b.command(command(CommandKind.RELEASE, "c1"), T0).outcome == "refused"
    late = b.command(command(CommandKind.INHIBIT, "c2", minutes=1), T0 + timedelta(minutes=2))
    assert late.outcome == "refused"
    assert b.command(command(CommandKind.FORCE_TRIPPED, "c3"), T0).outcome == "applied"
    assert b.command(command(CommandKind.FORCE_TRIPPED, "c3"), T0).detail.startswith("duplicate")


def test_breaker_snapshot_round_trip_keeps_override_and_ack() -> None:
    b = breaker()
    b.apply(transition(BreakerState.TRIPPED, 300))
    b.command(command(CommandKind.ACK, "c1"), T0)
    b.command(command(CommandKind.FORCE_TRIPPED, "c2"), T0)
    again = Breaker.create("cold_chain", "gw-1", [RULE], T0)
    again.restore(b.snapshot(), {RULE: BreakerState.TRIPPED}, {RULE: "ep-1"})
    assert again.override is Override.FORCE_TRIPPED and again.acknowledged_by == "ops-li"
    assert again.episode_id == "ep-1"


def msg(kind: str, seq: int, size: int = 1000) -> OutgoingMessage:
    return OutgoingMessage(
        kind,
        f"t/{kind}",
        "x" * size,
        1,
        kind == "breaker",
        seq,
        "cold_chain" if kind == "breaker" else None,
    )


def test_seq_and_session_survive_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite", outbox_max_bytes=100_000, readings_keep=10)
    assert store.bump_session() == 1
    for _ in range(5):
        store.next_seq()
    store.commit(T0, rules={"z/r": {"state": "ok"}})
    store.close()
    again = Store(tmp_path / "s.sqlite", outbox_max_bytes=100_000, readings_keep=10)
    assert again.seq == 5 and again.session_seq == 1 and again.bump_session() == 2
    assert again.load_rules() == {"z/r": {"state": "ok"}} and again.saved_at == T0


def test_outbox_budget_drops_telemetry_first_and_never_breaker_events(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite", outbox_max_bytes=10_000, readings_keep=10)
    store.commit(T0, outgoing=[msg("telemetry", i) for i in range(1, 6)])
    store.commit(T0, outgoing=[msg("audit", 6), msg("breaker", 7)])
    store.commit(T0, outgoing=[msg("breaker", i, 2000) for i in range(8, 12)])
    kinds = [r.kind for r in store.outbox_rows(limit=100)]
    assert kinds.count("breaker") == 5
    assert "telemetry" not in kinds
    assert store.dropped["telemetry"] == 5
    refused = store.commit(T0, outgoing=[msg("telemetry", 12)])
    assert [m.seq for m in refused] == [12]
    # even past the budget a breaker event is kept
    store.commit(T0, outgoing=[msg("breaker", 13, 5000)])
    assert store.outbox_rows(limit=100)[-1].seq == 13
    assert [r.seq for r in store.latest_breaker_rows(store.outbox_max_seq())] == [13]
    assert store.outbox_count == store.outbox_depth() == 6  # the audit record went too
    store.delete_outbox(store.outbox_rows(limit=1)[0].id)
    assert store.outbox_count == store.outbox_depth() == 5


def test_a_state_database_from_before_the_resend_and_nonces_opens_and_gains_them(
    tmp_path: Path,
) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, seq INTEGER, kind TEXT, "
                 "breaker TEXT, topic TEXT, payload TEXT, qos INTEGER, retain INTEGER, "
                 "size INTEGER)")
    conn.execute("INSERT INTO outbox (seq, kind, breaker, topic, payload, qos, retain, size) "
                 "VALUES (1, 'breaker', 'cold_chain', 't', '{}', 1, 1, 2)")
    conn.commit()
    conn.close()
    store = Store(path, outbox_max_bytes=100_000, readings_keep=10)
    try:
        assert store.outbox_count == 1 and store.oldest_queued_at() is None
        store.commit(T0, outgoing=[msg("breaker", 2)], nonces={"ab" * 8: T0})
        assert [r.seq for r in store.current_rows()] == [2]
        assert store.oldest_queued_at() == T0
        # kept (rounded up to the millisecond) until the command expires, then forgotten
        kept_until = T0 + timedelta(milliseconds=1)
        assert store.load_nonces(T0) == {"ab" * 8: kept_until}
        assert store.load_nonces(kept_until) == {}
    finally:
        store.close()
