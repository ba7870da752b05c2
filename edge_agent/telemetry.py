"""Per-zone, per-metric summaries of each window (default one minute) of readings.

Raw readings stay on the gateway; only these summaries go upstream for charts. Windows are
aligned to event time; a window is closed by the first reading of a later window or by
``flush(now)`` once ``now`` is past its end. Late readings for a closed window are ignored.
Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from edge_agent.readings import Reading

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Summary:
    zone: str
    metric: str
    window_start: datetime
    window_end: datetime
    count: int
    min: float
    mean: float
    max: float
    last: float


class _Window:
    __slots__ = ("count", "index", "last", "max", "min", "total")

    def __init__(self, index: int, value: float) -> None:
        self.index = index
        self.count = 1
        self.min = self.max = self.last = self.total = value

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.last = value
        if value < self.min:
            self.min = value
        elif value > self.max:
            self.max = value


class TelemetryAggregator:
    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._open: dict[tuple[str, str], _Window] = {}

    def add(self, reading: Reading) -> Summary | None:
        """Account one reading; return the summary of a window it closed, if any."""
        index = int(reading.ts.timestamp() // self.window_s)
        key = (reading.zone, reading.metric)
        window = self._open.get(key)
        if window is None:
            self._open[key] = _Window(index, reading.value)
            return None
        if index == window.index:
            window.add(reading.value)
            return None
        if index < window.index:
            return None  # late for a window already being replaced; dropped from charts
        self._open[key] = _Window(index, reading.value)
        return self._summary(key, window)

    def flush(self, now: datetime) -> list[Summary]:
        """Close every window whose end is at or before ``now``."""
        index_now = int((now - EPOCH).total_seconds() // self.window_s)
        closed = [key for key, w in self._open.items() if w.index < index_now]
        return [self._summary(key, self._open.pop(key)) for key in closed]

    def _summary(self, key: tuple[str, str], window: _Window) -> Summary:
        start = EPOCH + timedelta(seconds=window.index * self.window_s)
        mean = window.total / window.count
        # Float rounding must not break min <= mean <= max.
        mean = min(max(mean, window.min), window.max)
        return Summary(
            zone=key[0],
            metric=key[1],
            window_start=start,
            window_end=start + timedelta(seconds=self.window_s),
            count=window.count,
            min=window.min,
            mean=mean,
            max=window.max,
            last=window.last,
        )
