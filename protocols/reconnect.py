"""Which broker to try next and how long to wait first: a pure rotation with full jitter.

Shared by the edge agent's uplink and the coordinator's watcher. A client holds one
:class:`BrokerRotation` for its life and feeds it what happened (``connected(now)``,
``failed(now)``); it answers with an :class:`Attempt` (the URL to try and the wait before
trying). It never sleeps, connects or reads a clock itself: ``now`` comes from the
caller's :class:`protocols.clock.Clock` and randomness from an injectable ``rng``.

Why full jitter (delay uniform in ``[0, min(cap, base * multiplier**n)]``, AWS
architecture blog "Exponential Backoff And Jitter"): after a broker restart every
gateway loses its connection in the same instant; plain exponential backoff keeps them
in lockstep (all retry at 0.2 s, 0.4 s, 0.8 s...), while full jitter spreads the fleet
uniformly over each window, so the broker sees a steady trickle instead of waves.

Each failure moves to the next URL in the list (a dead cluster node is left at once; a
single-URL list just retries it). The start position is random by default so a fleet
spreads its connections over the cluster's nodes. The failure count (hence the window)
resets only when a connection has *stayed up* for ``stable_after_s`` (a session): a
broker that accepts and then drops every connection must not pull clients into a tight
reconnect loop.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from protocols.mqtt_url import MqttUrlError, parse_mqtt_url

Random = Callable[[], float]
"""Returns a float in ``[0, 1)``, like :func:`random.random` (the default)."""


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """``base_s``: the first window after a lost session; ``cap_s``: the widest window
    (the fleet's reconnect storm after a long broker outage spreads over ``cap_s``);
    ``stable_after_s``: how long a connection must stay up to count as a session."""

    base_s: float = 0.2
    cap_s: float = 10.0
    multiplier: float = 2.0
    stable_after_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.base_s > 0:
            raise ValueError(f"base_s: must be > 0, got {self.base_s!r}")
        if not self.cap_s >= self.base_s:
            raise ValueError(f"cap_s: must be >= base_s ({self.base_s}), got {self.cap_s!r}")
        if not self.multiplier >= 1:
            raise ValueError(f"multiplier: must be >= 1, got {self.multiplier!r}")
        if not self.stable_after_s >= 0:
            raise ValueError(f"stable_after_s: must be >= 0, got {self.stable_after_s!r}")

    def window(self, failures: int) -> float:
        """The jitter window after ``failures`` failures in a row (1 = the first)."""
        if failures <= 0:
            return 0.0
        window = self.base_s
        # multiply step by step and stop at the cap: base * multiplier**n overflows a
        # float for a client that has failed for days
        for _ in range(failures - 1):
            window *= self.multiplier
            if window >= self.cap_s:
                return self.cap_s
        return min(window, self.cap_s)


@dataclass(frozen=True, slots=True)
class Attempt:
    """Connect to ``url`` after waiting ``delay_s``; ``failures``: in a row so far."""

    url: str
    delay_s: float
    failures: int


class BrokerRotation:
    """The broker list of one client and its backoff state (not thread-safe: one per
    connection loop)."""

    def __init__(
        self,
        urls: Sequence[str],
        policy: BackoffPolicy | None = None,
        *,
        rng: Random | None = None,
        start: int | None = None,
    ) -> None:
        """``urls``: at least one ``mqtt(s)://host:port``, each validated here (the error
        names its position). ``start``: index tried first; None picks one at random."""
        if isinstance(urls, str):
            raise TypeError("urls: a sequence of URLs, not one string")
        if not urls:
            raise MqttUrlError("urls: at least one broker URL is needed")
        for index, url in enumerate(urls):
            try:
                parse_mqtt_url(url)
            except MqttUrlError as exc:
                raise MqttUrlError(f"urls[{index}]: {exc}") from exc
        self.urls: tuple[str, ...] = tuple(urls)
        self.policy = policy or BackoffPolicy()
        self._rng: Random = rng or random.random
        if start is None:
            start = int(self._rng() * len(self.urls))
        self._index = start % len(self.urls)
        self._failures = 0
        self._up_since: datetime | None = None

    @property
    def failures(self) -> int:
        """Failures in a row since the last session that stayed up."""
        return self._failures

    @property
    def current(self) -> str:
        """The URL being tried or connected to."""
        return self.urls[self._index]

    def first(self) -> Attempt:
        """The first attempt of the loop: no wait."""
        return Attempt(self.current, 0.0, self._failures)

    def connected(self, now: datetime) -> None:
        """The connection to :attr:`current` is up (CONNACK accepted) at ``now``."""
        self._up_since = now

    def failed(self, now: datetime) -> Attempt:
        """A connect attempt failed, or the connection was lost, at ``now``: move to the
        next broker and wait a jittered, growing delay first."""
        if self._up_since is not None:
            lasted = (now - self._up_since).total_seconds()
            if lasted >= self.policy.stable_after_s:
                self._failures = 0  # that was a session: start small again
            self._up_since = None
        self._failures += 1
        self._index = (self._index + 1) % len(self.urls)
        delay = self._rng() * self.policy.window(self._failures)
        return Attempt(self.current, delay, self._failures)
