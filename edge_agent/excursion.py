"""One sensor's view of one rule: its own order, its own excursion, its own silence.

Sensors of one zone do not share a clock: one is timed on arrival, another by its own
clock a few seconds behind. Ordering, deduplication, staleness and the pending excursion
are therefore tracked per sensor (a :class:`SensorTrack`); the rule machine
(:mod:`edge_agent.rules`) only combines what the tracks say. A reading is late or a
duplicate only against the *same* sensor's previous readings, so a sensor behind its
neighbours is never silenced by them.

Pure and event-time: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from edge_agent.readings import Reading

MAX_VALUES = 64

# What :meth:`SensorTrack.observe` did to the excursion, for the zone to react to.
Step = Literal["none", "started", "counted", "restarted", "reset", "dip", "dip_tolerated"]


@dataclass(slots=True)
class SensorTrack:
    """Per-sensor state for one rule."""

    sensor_id: str
    last_ts: datetime | None = None  # newest event time processed (order and duplicates)
    value: float | None = None  # latest value
    pending_since: datetime | None = None  # first reading of the current excursion
    bad_count: int = 0
    window: list[Reading] = field(default_factory=list)
    dip_since: datetime | None = None
    dip_s: float = 0.0  # length of the last tolerated dip (for the notice)
    clear: bool = False  # latest value on the clear side of the clear threshold
    silent: bool = False
    # Latched at this sensor's own reading that completes the excursion: time passing
    # on another sensor's clock never completes it (one reading then silence never trips).
    voting: bool = False

    def order(self, ts: datetime) -> str | None:
        """``out_of_order``/``duplicate`` if ``ts`` is not newer than this sensor's last."""
        last = self.last_ts
        if last is not None:
            if ts < last:
                return "out_of_order"
            if ts == last:
                return "duplicate"
        self.last_ts = ts
        return None

    def observe(self, reading: Reading, bad: bool, clear: bool, dip_grace_s: float) -> Step:
        """Fold one in-order reading into the excursion."""
        self.value = reading.value
        self.clear = clear
        ts = reading.ts
        if bad:
            step: Step = "counted"
            if self.pending_since is None:
                self._start(ts)
                step = "started"
            elif self.dip_since is not None:
                dip = (ts - self.dip_since).total_seconds()
                self.dip_since = None
                if dip > dip_grace_s:
                    self._start(ts)
                    step = "restarted"
                else:
                    self.dip_s = dip
                    step = "dip_tolerated"
            self.bad_count += 1
            self.window.append(reading)
            if len(self.window) > MAX_VALUES:
                del self.window[0]
            return step
        if self.pending_since is None:
            return "none"
        if dip_grace_s > 0:
            if self.dip_since is None:
                self.dip_since = ts
                return "dip"
            if (ts - self.dip_since).total_seconds() <= dip_grace_s:
                return "dip"
        self.reset()
        return "reset"

    def check_vote(self, for_s: float, min_readings: int, ts: datetime) -> bool:
        """Latch the vote if this sensor's reading at ``ts`` has held the excursion
        ``for_s`` with ``min_readings`` readings; return whether it votes."""
        start = self.pending_since
        if (
            not self.voting
            and start is not None
            and self.bad_count >= min_readings
            and (ts - start).total_seconds() >= for_s
        ):
            self.voting = True
        return self.voting

    def _start(self, ts: datetime) -> None:
        self.reset()
        self.pending_since = ts

    def rebase(self) -> None:
        """The gateway clock stepped: times before it cannot be compared with times after
        it. Order, duplicates and the excursion start again from the next reading (the
        latest value, its side of the thresholds and silence are kept)."""
        self.last_ts = None
        self.reset()

    def reset(self) -> None:
        self.pending_since = None
        self.bad_count = 0
        self.window = []
        self.dip_since = None
        self.voting = False

    # -- persistence -----------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "last_ts": iso(self.last_ts),
            "value": self.value,
            "pending_since": iso(self.pending_since),
            "bad_count": self.bad_count,
            "window": [r.to_json() for r in self.window],
            "dip_since": iso(self.dip_since),
            "clear": self.clear,
            "silent": self.silent,
            "voting": self.voting,
        }

    @classmethod
    def restore(cls, sensor_id: str, data: dict[str, Any]) -> SensorTrack:
        def dt(key: str) -> datetime | None:
            value = data.get(key)
            return None if value is None else datetime.fromisoformat(value)

        value = data.get("value")
        return cls(
            sensor_id=sensor_id,
            last_ts=dt("last_ts"),
            value=None if value is None else float(value),
            pending_since=dt("pending_since"),
            bad_count=int(data.get("bad_count", 0)),
            window=[Reading.from_json(r) for r in data.get("window", [])],
            dip_since=dt("dip_since"),
            clear=bool(data.get("clear", False)),
            silent=bool(data.get("silent", False)),
            voting=bool(data.get("voting", False)),
        )
