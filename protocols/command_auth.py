"""Signed breaker commands: who may tell an agent to trip, inhibit or release a breaker.

MQTT 3.1.1 tells a subscriber nothing about who published a message, and a broker ACL
is only as good as the credentials on every gateway. So each agent holds its own key and
acts only on commands signed for it:

- ``breaker_signature`` is a hex HMAC-SHA256, with the agent's key, over the *canonical
  JSON* of the command without its signatures: keys sorted, compact separators, ``None``
  fields left out, every time in the contract's UTC form (:func:`utc_isoformat`), so
  the coordinator (pydantic) and a technician's CLI produce the same bytes. The legacy
  ``signature`` covers the same without ``breaker``: what an agent from before the
  breaker was signed checks (it drops fields it does not know), so a fleet upgraded in
  waves keeps taking commands; agents of this version check ``breaker_signature`` only;
- ``agent_id`` binds the command to one agent (a command signed for gateway A and
  replayed at gateway B is refused even if both share a key by mistake), ``breaker`` to
  one of its breakers (the topic names it too, but a topic is not signed: a command
  captured and republished on another breaker's topic is refused);
- ``nonce`` makes every command unique; the agent remembers nonces until the command's
  expiry (:func:`replay_window_end`), so a captured command cannot be replayed;
- ``expires_at`` (or ``issued_at + max_ttl`` for commands without one) bounds how long
  a captured command is worth anything, and ``max_ttl`` bounds what a sender may ask.

Pure: the clock is an argument. Key handling (files, env vars) is here too so every
side reads keys the same way; keys are never logged or echoed in errors.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from protocols.models import BreakerCommand, utc_isoformat

RejectReason = Literal["unsigned", "bad_signature", "wrong_agent", "wrong_breaker", "expired",
                       "ttl_too_long"]

# HMAC-SHA256 keys shorter than this are guessable; 32 random bytes is what
# new_command_key() produces.
MIN_KEY_BYTES = 16


class CommandRejected(Exception):
    """A command the agent must not act on; ``reason`` is one of :data:`RejectReason`."""

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: RejectReason = reason
        self.detail = detail


class CommandKeyError(ValueError):
    """A command key that cannot be used (missing, unreadable, too short)."""


def _canonical_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc_isoformat(value.astimezone(UTC))
    if isinstance(value, dict):
        return {k: _canonical_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_canonical_value(v) for v in value]
    return value


_SIGNATURES = {"signature", "breaker_signature"}


def canonical_bytes(cmd: BreakerCommand, *, with_breaker: bool = True) -> bytes:
    """The bytes a signature covers: the command without its signatures, canonical JSON;
    ``with_breaker=False``: also without ``breaker``, as an agent from before it parses
    the command (the legacy ``signature``)."""
    leave_out = _SIGNATURES if with_breaker else _SIGNATURES | {"breaker"}
    body = cmd.model_dump(mode="python", exclude=leave_out, exclude_none=True)
    body = _canonical_value(body)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _mac(cmd: BreakerCommand, key: bytes, *, with_breaker: bool = True) -> str:
    body = canonical_bytes(cmd, with_breaker=with_breaker)
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def _check_key(key: bytes) -> None:
    if len(key) < MIN_KEY_BYTES:
        raise CommandKeyError(f"command key: must be at least {MIN_KEY_BYTES} bytes")


def sign_command(cmd: BreakerCommand, key: bytes, nonce: str | None = None) -> BreakerCommand:
    """Return ``cmd`` with a fresh (or the given) nonce and its signature.

    ``cmd.agent_id`` must name the receiving agent and ``cmd.breaker`` its breaker: a
    signature binds a command to both. Raises ``ValueError`` if either is missing.
    """
    _check_key(key)
    if cmd.agent_id is None:
        raise ValueError("agent_id: a signed command must name the agent it is for")
    if cmd.breaker is None:
        raise ValueError("breaker: a signed command must name the breaker it is for")
    unsigned = cmd.model_copy(
        update={"nonce": nonce if nonce is not None else secrets.token_hex(16),
                "signature": None, "breaker_signature": None}
    )
    # model_copy skips validation: re-validate so a bad nonce fails here, not at the agent
    unsigned = BreakerCommand.model_validate(unsigned.model_dump())
    # both: this version's agents check the one with the breaker; an agent from before
    # it drops the field it does not know and checks the other, so a fleet upgraded in
    # waves keeps taking commands (such an agent is no better protected than before)
    return unsigned.model_copy(update={
        "breaker_signature": _mac(unsigned, key),
        "signature": _mac(unsigned, key, with_breaker=False)})


def replay_window_end(cmd: BreakerCommand, max_ttl: timedelta) -> datetime:
    """Until when ``cmd`` could be accepted, so until when its nonce must be remembered."""
    return cmd.expires_at if cmd.expires_at is not None else cmd.issued_at + max_ttl


def verify_command(
    cmd: BreakerCommand,
    key: bytes,
    *,
    agent_id: str,
    breaker: str,
    now: datetime,
    max_ttl: timedelta,
) -> None:
    """Raise :class:`CommandRejected` unless ``cmd`` is signed for ``agent_id`` and
    ``breaker`` (the one whose topic it came on) and valid at ``now``. Replays (a nonce
    already seen) are the caller's to check: it owns the nonce store (see
    :func:`replay_window_end`)."""
    _check_key(key)
    if cmd.signature is None or cmd.nonce is None or cmd.agent_id is None:
        raise CommandRejected("unsigned", "signature, nonce and agent_id are required")
    if cmd.breaker_signature is None or cmd.breaker is None:
        # signed by a sender from before breakers were signed: it may have been moved
        raise CommandRejected("wrong_breaker", "the signature names no breaker")
    # compare_digest: the time taken must not tell an attacker how many hex digits matched
    if not hmac.compare_digest(cmd.breaker_signature, _mac(cmd, key)):
        raise CommandRejected("bad_signature", "signature does not match the command")
    if cmd.agent_id != agent_id:
        raise CommandRejected("wrong_agent", f"signed for agent {cmd.agent_id!r}")
    if cmd.breaker != breaker:
        # a command from before breakers were signed names none: refused the same way
        raise CommandRejected("wrong_breaker", f"signed for breaker {cmd.breaker!r}, "
                              f"arrived for {breaker!r}")
    end = replay_window_end(cmd, max_ttl)
    if end <= now:
        raise CommandRejected("expired", f"expired at {utc_isoformat(end)}")
    # Both bounds: a long validity as asked, and a far-future issued_at that would keep
    # a captured command alive long after it was sent.
    if end - cmd.issued_at > max_ttl or end - now > max_ttl:
        raise CommandRejected(
            "ttl_too_long", f"valid until {utc_isoformat(end)}, longer than {max_ttl}"
        )


def new_command_key() -> str:
    """A fresh per-agent key, as written to a key file (64 hex characters)."""
    return secrets.token_hex(32)


def load_command_key(path: Path | None = None, env_var: str | None = None) -> bytes:
    """Read a key from a file (its text, surrounding whitespace stripped) or, if the
    file is not given, from the environment variable ``env_var``. The error names
    where the key was looked for, never the key."""
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandKeyError(f"command_key_file: cannot read {path}: {exc}") from None
        where = f"command_key_file {path}"
    elif env_var is not None:
        text = os.environ.get(env_var, "").strip()
        if not text:
            raise CommandKeyError(f"command key: environment variable {env_var} is not set")
        where = f"environment variable {env_var}"
    else:
        raise CommandKeyError("command key: neither a file nor an environment variable given")
    key = text.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise CommandKeyError(f"{where}: key must be at least {MIN_KEY_BYTES} bytes")
    return key
