"""Signing and verifying breaker commands (pure; the agent side is tested through the
real broker in tests/edge_agent/test_agent_signed_commands.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import BreakerCommand, CommandKind, decode, encode
from protocols.command_auth import (
    CommandKeyError,
    CommandRejected,
    canonical_bytes,
    load_command_key,
    new_command_key,
    replay_window_end,
    sign_command,
    verify_command,
)

KEY = b"0123456789abcdef0123456789abcdef"
T0 = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)
TTL = timedelta(hours=12)


def inhibit(agent_id: str | None = "agent-a", minutes: float = 30) -> BreakerCommand:
    return BreakerCommand(
        command_id="c-1",
        command=CommandKind.INHIBIT,
        actor="ops:li",
        reason="defrost",
        issued_at=T0,
        expires_at=T0 + timedelta(minutes=minutes),
        agent_id=agent_id,
        breaker="cold_chain",
    )


def reason_of(cmd: BreakerCommand, *, agent_id: str = "agent-a", now: datetime = T0,
              breaker: str = "cold_chain") -> str:
    with pytest.raises(CommandRejected) as info:
        verify_command(cmd, KEY, agent_id=agent_id, breaker=breaker, now=now, max_ttl=TTL)
    return info.value.reason


def test_a_signed_command_verifies_after_the_wire_round_trip() -> None:
    signed = sign_command(inhibit(), KEY)
    received = decode(BreakerCommand, encode(signed))
    verify_command(received, KEY, agent_id="agent-a", breaker="cold_chain", now=T0, max_ttl=TTL)


def test_the_same_instant_in_another_offset_signs_the_same_bytes() -> None:
    # the coordinator may build times in UTC, a technician's CLI in local time
    local = timezone(timedelta(hours=8))
    a = inhibit()
    b = a.model_copy(
        update={"issued_at": T0.astimezone(local), "expires_at": a.expires_at.astimezone(local)}  # type: ignore[union-attr]
    )
    assert canonical_bytes(a) == canonical_bytes(b)
    signed = sign_command(b, KEY)
    verify_command(
        a.model_copy(update={"nonce": signed.nonce, "signature": signed.signature,
                             "breaker_signature": signed.breaker_signature}),
        KEY,
        agent_id="agent-a",
        breaker="cold_chain",
        now=T0,
        max_ttl=TTL,
    )


def test_canonical_json_is_sorted_compact_and_in_the_contract_time_format() -> None:
    text = canonical_bytes(sign_command(inhibit(), KEY, nonce="ab" * 8)).decode()
    body = json.loads(text)
    assert list(body) == sorted(body)
    assert ", " not in text and ": " not in text
    assert body["issued_at"] == "2026-01-15T02:00:00Z"
    assert "signature" not in body and body["nonce"] == "ab" * 8


def test_an_unsigned_command_is_refused() -> None:
    assert reason_of(inhibit()) == "unsigned"


def test_a_command_signed_with_another_key_is_refused() -> None:
    signed = sign_command(inhibit(), b"another-key-of-enough-length")
    assert reason_of(signed) == "bad_signature"


@given(
    field=st.sampled_from(["actor", "reason", "command_id"]), text=st.text(min_size=1, max_size=20)
)
def test_any_change_after_signing_breaks_the_signature(field: str, text: str) -> None:
    signed = sign_command(inhibit(), KEY)
    if getattr(signed, field) == text:
        return
    tampered = signed.model_copy(update={field: text})
    assert reason_of(tampered) == "bad_signature"


def test_a_longer_expiry_after_signing_breaks_the_signature() -> None:
    signed = sign_command(inhibit(), KEY)
    tampered = signed.model_copy(update={"expires_at": T0 + timedelta(hours=1)})
    assert reason_of(tampered) == "bad_signature"


def test_a_command_for_another_agent_is_refused() -> None:
    assert reason_of(sign_command(inhibit("agent-b"), KEY)) == "wrong_agent"


def test_a_command_republished_on_another_breakers_topic_is_refused() -> None:
    # captured on cmd/cold_chain, sent again on cmd/dock: the topic is not signed
    signed = sign_command(inhibit(), KEY)
    assert reason_of(signed, breaker="dock") == "wrong_breaker"
    # naming another breaker in the body breaks the signature
    moved = signed.model_copy(update={"breaker": "dock"})
    assert reason_of(moved, breaker="dock") == "bad_signature"


def test_a_command_signed_without_a_breaker_is_refused() -> None:
    # a sender from before breakers were signed: its signature verifies, its breaker none
    unbound = inhibit().model_copy(update={"breaker": None, "nonce": "ab" * 8})
    mac = hmac.new(KEY, canonical_bytes(unbound), hashlib.sha256).hexdigest()
    old = unbound.model_copy(update={"signature": mac})
    assert reason_of(old) == "wrong_breaker"
    with pytest.raises(ValueError, match="breaker"):
        sign_command(unbound, KEY)


def test_an_agent_from_before_signed_breakers_still_verifies_a_new_command() -> None:
    # such an agent parses the command without the fields it does not know (breaker,
    # breaker_signature) and checks signature over what it parsed: a fleet upgraded in
    # waves keeps taking commands from upgraded coordinators
    signed = sign_command(inhibit(), KEY)
    as_old = {k: v for k, v in json.loads(encode(signed)).items()
              if k not in ("breaker", "breaker_signature", "signature")}
    old_bytes = json.dumps(as_old, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False).encode()
    assert hmac.new(KEY, old_bytes, hashlib.sha256).hexdigest() == signed.signature
    # and the legacy signature alone does not satisfy this version's agents
    assert reason_of(signed.model_copy(update={"breaker_signature": None})) == "wrong_breaker"


def test_an_expired_command_is_refused() -> None:
    signed = sign_command(inhibit(minutes=5), KEY)
    assert reason_of(signed, now=T0 + timedelta(minutes=5)) == "expired"


def test_a_command_without_expiry_lives_max_ttl_from_issue() -> None:
    ack = BreakerCommand(
        command_id="a-1",
        command=CommandKind.ACK,
        actor="ops",
        reason="seen",
        issued_at=T0,
        agent_id="agent-a",
        breaker="cold_chain",
    )
    signed = sign_command(ack, KEY)
    verify_command(signed, KEY, agent_id="agent-a", breaker="cold_chain", now=T0 + TTL / 2,
                   max_ttl=TTL)
    assert replay_window_end(signed, TTL) == T0 + TTL
    assert reason_of(signed, now=T0 + TTL) == "expired"


def test_an_over_long_command_is_refused() -> None:
    assert reason_of(sign_command(inhibit(minutes=13 * 60), KEY)) == "ttl_too_long"


def test_a_far_future_issue_time_cannot_stretch_the_validity() -> None:
    cmd = inhibit().model_copy(
        update={
            "issued_at": T0 + timedelta(days=30),
            "expires_at": T0 + timedelta(days=30, hours=1),
        }
    )
    assert reason_of(sign_command(cmd, KEY)) == "ttl_too_long"


def test_signing_needs_an_agent_and_a_real_key() -> None:
    with pytest.raises(ValueError, match="agent_id"):
        sign_command(inhibit(agent_id=None), KEY)
    with pytest.raises(CommandKeyError):
        sign_command(inhibit(), b"short")


def test_keys_load_from_a_file_or_the_environment_and_errors_never_show_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_command_key()
    path = tmp_path / "agent.key"
    path.write_text(key + "\n")
    assert load_command_key(path) == key.encode()
    monkeypatch.setenv("BW_TEST_KEY", key)
    assert load_command_key(env_var="BW_TEST_KEY") == key.encode()
    path.write_text("tiny-secret")
    with pytest.raises(CommandKeyError) as info:
        load_command_key(path)
    assert "tiny-secret" not in str(info.value) and "command_key_file" in str(info.value)
    with pytest.raises(CommandKeyError, match="BW_MISSING"):
        load_command_key(env_var="BW_MISSING")
