"""Which operator commands the agent may act on: the signature check against the
gateway's key and the memory of nonces already used (a replayed command is refused).

The nonces are state like a breaker's: those new since the last save are handed to the
shell with the rest (:meth:`CommandGate.take_new`), given back if the save failed, and
loaded at start; each is remembered only until the command could no longer be accepted
anyway (its replay window)."""

from __future__ import annotations

from datetime import datetime, timedelta

from protocols import BreakerCommand
from protocols.command_auth import CommandRejected, replay_window_end, verify_command


class CommandGate:
    """``key`` None: no key configured: every command is refused as ``unsigned``, unless
    ``unsigned`` allows them unauthenticated (a test bench; see docs/edge.md)."""

    def __init__(self, key: bytes | None, agent_id: str, max_ttl_s: float, *,
                 unsigned: bool = False) -> None:
        self.key = key
        self.unsigned = unsigned
        self.agent_id = agent_id
        self.max_ttl = timedelta(seconds=max_ttl_s)
        self._nonces: dict[str, datetime] = {}
        self._new_nonces: dict[str, datetime] = {}

    def load(self, saved: dict[str, datetime], now: datetime) -> None:
        """The nonces saved by an earlier process, those still inside their window."""
        self._nonces = {n: t for n, t in saved.items() if t > now}

    def refusal(self, cmd: BreakerCommand, breaker: str, now: datetime) -> str | None:
        """None if the command, arrived on ``breaker``'s topic, may be acted on, else the
        reason it is refused."""
        if self.key is None:
            return None if self.unsigned else "unsigned"
        try:
            verify_command(cmd, self.key, agent_id=self.agent_id, breaker=breaker, now=now,
                           max_ttl=self.max_ttl)
        except CommandRejected as exc:
            return exc.reason
        assert cmd.nonce is not None
        if cmd.nonce in self._nonces:
            return "replayed"
        # remembered until the command could no longer be accepted anyway
        until = replay_window_end(cmd, self.max_ttl)
        self._nonces[cmd.nonce] = self._new_nonces[cmd.nonce] = until
        return None

    def take_new(self, now: datetime) -> dict[str, datetime]:
        """The nonces used since the last call, to save; expired ones are forgotten."""
        nonces, self._new_nonces = self._new_nonces, {}
        self._nonces = {n: t for n, t in self._nonces.items() if t > now}
        return nonces

    def keep_new(self, nonces: dict[str, datetime]) -> None:
        """Nonces a failed save did not keep: saved with the next one."""
        self._new_nonces.update(nonces)
