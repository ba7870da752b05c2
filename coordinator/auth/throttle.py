"""Login rate limiting: too many failed logins lock the username, or the source address,
out for a while. Time is an input (the app's clock), so tests need no sleeping.

Per username: stops guessing one person's password from many addresses. Per address:
stops trying many usernames from one place. A locked login is refused (429, with
``Retry-After``) before its password is checked, so nothing more is learnt while locked;
a success clears that username's failures (not the address's: the address may be guessing
others).

The failures and lockouts live in the database (:mod:`coordinator.auth.throttle_store`),
not in the process: several coordinator instances behind one proxy count together, so
spreading guesses over instances gains nothing, and restarting a coordinator does not
lift a lockout. Rows older than the window are deleted as failures arrive, so a flood of
made-up usernames holds at most one window's worth of rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from coordinator.auth import throttle_store
from coordinator.auth.throttle_store import By
from coordinator.db import Database


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


class LoginThrottle:
    def __init__(self, *, max_per_user: int, max_per_address: int, window: timedelta,
                 lockout: timedelta) -> None:
        self._limits: dict[By, int] = {"user": max_per_user, "address": max_per_address}
        self._window = window
        self._lockout = lockout

    def locked(self, db: Database, username: str, address: str,
               now: datetime) -> Lockout | None:
        """The lockout in force for this login, if any (the username's first)."""
        active = throttle_store.active_lockouts(db, username, address, now)
        for by in ("user", "address"):
            if by in active:
                return Lockout(by, active[by])
        return None

    def failed(self, db: Database, username: str, address: str, now: datetime) -> list[By]:
        """Count a failure; returns the kinds of lockout it started (for the counters)."""
        return throttle_store.record_failure(
            db, username, address, now, window_start=now - self._window,
            lock_until=now + self._lockout, limits=self._limits)

    def succeeded(self, db: Database, username: str) -> None:
        throttle_store.clear_user(db, username)
