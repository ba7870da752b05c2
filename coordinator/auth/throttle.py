"""Login rate limiting: too many failed logins lock the username, or the source address,
out for a while. Time is an input (the app's clock), so tests need no sleeping.

Per username: stops guessing one person's password from many addresses. Per address:
stops trying many usernames from one place. A locked login is refused (429, with
``Retry-After``) before its password is checked, so nothing more is learnt while locked;
a success clears that username's failures (not the address's: the address may be guessing
others). The state is per process, in memory and bounded (the oldest keys are forgotten
first); each coordinator instance counts its own (docs/security.md).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

By = Literal["user", "address"]
MAX_KEYS = 10_000  # per kind: a flood of made-up usernames cannot grow memory beyond it


@dataclass(frozen=True, slots=True)
class Lockout:
    by: By
    until: datetime

    def retry_after_s(self, now: datetime) -> int:
        return max(1, math.ceil((self.until - now).total_seconds()))

    def message(self, now: datetime) -> str:
        what = "this username" if self.by == "user" else "this address"
        return (f"too many failed logins for {what}; try again in "
                f"{self.retry_after_s(now)} s")


@dataclass(slots=True)
class _Key:
    failures: deque[datetime]
    locked_until: datetime | None = None


class LoginThrottle:
    def __init__(self, *, max_per_user: int, max_per_address: int, window: timedelta,
                 lockout: timedelta) -> None:
        self._limits: dict[By, int] = {"user": max_per_user, "address": max_per_address}
        self._window = window
        self._lockout = lockout
        self._keys: dict[By, OrderedDict[str, _Key]] = {"user": OrderedDict(),
                                                        "address": OrderedDict()}
        self._lock = threading.Lock()

    def locked(self, username: str, address: str, now: datetime) -> Lockout | None:
        """The lockout in force for this login, if any (the username's first)."""
        with self._lock:
            for by, key in self._both(username, address):
                entry = self._keys[by].get(key)
                if entry is not None and entry.locked_until is not None:
                    if now < entry.locked_until:
                        return Lockout(by, entry.locked_until)
                    entry.locked_until = None
                    entry.failures.clear()
        return None

    def failed(self, username: str, address: str, now: datetime) -> list[By]:
        """Count a failure; returns the kinds of lockout it started (for the counters)."""
        started: list[By] = []
        with self._lock:
            for by, key in self._both(username, address):
                keys = self._keys[by]
                entry = keys.get(key)
                if entry is None:
                    entry = keys[key] = _Key(deque())
                    if len(keys) > MAX_KEYS:
                        keys.popitem(last=False)
                else:
                    keys.move_to_end(key)
                failures = entry.failures
                failures.append(now)
                while failures and failures[0] <= now - self._window:
                    failures.popleft()
                if len(failures) >= self._limits[by] and entry.locked_until is None:
                    entry.locked_until = now + self._lockout
                    started.append(by)
        return started

    @staticmethod
    def _both(username: str, address: str) -> tuple[tuple[By, str], tuple[By, str]]:
        return ("user", username), ("address", address)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._keys["user"].pop(username, None)
