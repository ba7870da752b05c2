"""Identical reads in flight share one computation (request coalescing).

32 dashboards polling ``GET /metrics`` ask the same question many times a second; each
request that arrives while the same read is being computed waits for that result
instead of running the queries again. Nothing is kept afterwards, so an answer is never
older than the read that was running when the request arrived: no cache to invalidate.
Callers must treat a shared result as read-only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class Coalescer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[Hashable, Future[Any]] = {}
        self.computed = 0
        self.shared = 0

    def run(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``, or the result of the identical one already running."""
        with self._lock:
            running = self._inflight.get(key)
            if running is None:
                mine: Future[Any] = Future()
                self._inflight[key] = mine
                self.computed += 1
            else:
                self.shared += 1
        if running is not None:
            shared: T = running.result()
            return shared
        try:
            value = compute()
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        finally:
            with self._lock:
                del self._inflight[key]
        mine.set_result(value)
        return value
