"""Who runs the ops loop: a lease with an expiry and an epoch, decided purely.

Several coordinator instances share one database; exactly one (the leader) may run the
ops loop (availability, reroute, courier silence, tickers). The lease is one row
(``holder``, ``epoch``, ``expires_at``). Every instance calls :meth:`LeaseKeeper.tick`
with the row it just read inside a write transaction (so no other instance can change
it before the answer is written) and writes what the keeper answers:

- nobody holds it, or the holder let it expire: :class:`Take` it with ``epoch + 1``;
- we hold it and half the time is gone: :class:`Renew` it (same epoch, later expiry);
- someone else holds a live lease: :class:`Follow` (and stop leading if we were).

The epoch is what makes a paused or cut-off leader harmless: every ops transaction
checks, inside the transaction, that the row still names this instance with this epoch
and an unexpired lease (``lease_store.check``); a leader that lost the lease while it
was stopped fails that check and writes nothing, whatever its local belief.
Instances compare ``expires_at`` with their own clocks: the TTL must exceed the clock
skew between instances by a wide margin (NTP keeps it to milliseconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class LeaseRow:
    holder: str
    epoch: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Take:
    epoch: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Renew:
    epoch: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Follow:
    holder: str | None  # None: we hold it and it needs nothing yet


LeaseAction = Take | Renew | Follow


class LeaseKeeper:
    """One instance's view of the lease. Not thread-safe: the ops runner's one task."""

    def __init__(self, instance: str, ttl_s: float) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s: must be > 0, got {ttl_s!r}")
        self.instance = instance
        self.ttl = timedelta(seconds=ttl_s)
        self.epoch: int | None = None  # the epoch we lead with, None while following
        self._valid_until: datetime | None = None

    def tick(self, now: datetime, row: LeaseRow | None) -> LeaseAction:
        """What to write, given the row as read at ``now`` in the write transaction."""
        if row is None:
            return Take(1, now + self.ttl)
        if row.holder == self.instance and row.epoch == self.epoch and row.expires_at > now:
            if row.expires_at - now <= self.ttl / 2:
                return Renew(row.epoch, now + self.ttl)
            return Follow(None)
        if row.expires_at <= now:
            # expired (ours too: after a pause we take it again under a new epoch, so
            # whatever the old epoch still had in flight is refused)
            return Take(row.epoch + 1, now + self.ttl)
        self.step_down()
        return Follow(row.holder)

    def written(self, action: LeaseAction) -> None:
        """The action's write committed: lead (or keep leading) with its epoch."""
        if isinstance(action, Take | Renew):
            self.epoch = action.epoch
            self._valid_until = action.expires_at

    def step_down(self) -> None:
        self.epoch = None
        self._valid_until = None

    def leading(self, now: datetime) -> bool:
        """We hold an unexpired lease as far as we know (the database has the last word:
        every ops transaction checks the epoch)."""
        return self._valid_until is not None and now < self._valid_until
