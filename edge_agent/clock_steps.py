"""Finding a step of the gateway's wall clock: NTP setting right a clock that booted on a
bad real-time clock, or a person changing it. Between two looks, wall time and a
monotonic clock move alike; when they part by more than ``tolerance_s`` the wall clock
was stepped (a process stopped or starved moves both alike, so it is no step). Pure:
the shell hands in both readings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(slots=True)
class StepWatch:
    tolerance_s: float
    # Looks closer together than this are not taken (the shell looks at every reading,
    # tens of thousands a second) unless the wall clock left the band it can reach in
    # that time without a step: a step is found at the first look after it either way
    # (a reading or tick with the stepped time must never reach the core untold).
    every_s: float = 0.5
    _wall: datetime | None = None
    _steady: float = 0.0
    _low: datetime | None = None
    _high: datetime | None = None

    def observe(self, wall: datetime, steady: float) -> float | None:
        """The step in seconds (forward positive) since the last look, or ``None``."""
        last_wall, last_steady = self._wall, self._steady
        if last_wall is not None and 0 <= steady - last_steady < self.every_s and \
                self._low is not None and self._high is not None and \
                self._low <= wall <= self._high:
            return None
        self._wall, self._steady = wall, steady
        self._low = wall - timedelta(seconds=self.tolerance_s)
        self._high = wall + timedelta(seconds=self.every_s + self.tolerance_s)
        if last_wall is None:
            return None
        step = (wall - last_wall).total_seconds() - (steady - last_steady)
        return step if abs(step) > self.tolerance_s else None
