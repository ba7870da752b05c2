"""The geofence's fixed part, kept per destination within one batch (layer 1 of
:mod:`coordinator.engine`): the warehouses nearest first, each with its verdict
(excluded, paused, unavailable, not cold-chain capable: the trace row that drops it) or
none. Stock is the engine's to check, order by order."""

from __future__ import annotations

from collections.abc import Iterator

from coordinator.allocation_model import (
    CandidateTrace,
    OrderRequest,
    Snapshot,
    WarehouseState,
    trace_row,
)
from coordinator.errors import AllocationError

_MEMO = 8192  # destinations kept; beyond, the memo starts again (orders from anywhere)
_EAGER = 32  # up to this many warehouses a route is worked out whole when first asked


class Routes:
    """Each destination's warehouses nearest first with the geofence's verdict on each
    (``None``: passes; else the trace row that drops it: excluded, paused, unavailable,
    not cold-chain), kept for the next order to the same spot within one batch (a
    reroute's 10,000 orders come from a few hundred stores). Valid only while no
    warehouse's flags change: one batch, one snapshot. Stock is never memoised here: it
    changes with every order. Not kept across intake batches: 200 orders from as many
    stores rarely share one, and a memo that lives long keeps every route it ever made
    for the garbage collector to walk (the engine alone measured slower with one)."""

    __slots__ = ("_routes",)

    def __init__(self) -> None:
        self._routes: dict[tuple[float, float, bool, frozenset[str]], Route] = {}

    def of(self, order: OrderRequest, snapshot: Snapshot, need_cold: bool,
           exclude: frozenset[str]) -> Route:
        key = (order.lat, order.lon, need_cold, exclude)
        route = self._routes.get(key)
        if route is None or route.warehouses is not snapshot.warehouses:  # another snapshot
            if len(self._routes) >= _MEMO:
                self._routes.clear()
            route = self._routes[key] = Route(order, snapshot, need_cold, exclude)
        return route


_Stop = tuple[float, str, WarehouseState, CandidateTrace | None]


class Route:
    """One destination's stops (see :class:`Routes`), nearest first: ``stops`` when
    ``source`` is None (a small region: all of them, worked out at once), else iterate
    (a large one: read from the spatial index as far as some order walks)."""

    __slots__ = ("cold", "exclude", "keep", "source", "stops", "warehouses")

    def __init__(self, order: OrderRequest, snapshot: Snapshot, need_cold: bool,
                 exclude: frozenset[str], *, keep: bool = True) -> None:
        """``keep=False``: one walk only, nothing stored (no memo to serve)."""
        index = snapshot.index
        if index is None:  # pragma: no cover - __post_init__ builds it
            raise AllocationError("snapshot has no warehouse index")
        self.stops: list[_Stop] = []
        self.source: Iterator[tuple[float, str]] | None = index.nearest(order.lat, order.lon)
        self.warehouses = snapshot.warehouses
        self.cold = need_cold
        self.exclude = exclude
        self.keep = keep
        if keep and len(index) <= _EAGER:
            for _ in self:
                pass

    def __iter__(self) -> Iterator[_Stop]:
        yield from self.stops
        source = self.source
        if source is None:
            return
        for distance, wid in source:  # the index yields distances rounded to the metre
            wh = self.warehouses[wid]
            dropped = None
            if wid in self.exclude:
                dropped = trace_row((wid, distance, None, None, None, False, "excluded",
                                  "warehouse being rerouted"))
            elif wh.paused or not wh.available:
                why = "paused by operator" if wh.paused else "unavailable"
                if wh.unavailable_reason:
                    why = f"{why}: {wh.unavailable_reason}"
                dropped = trace_row((wid, distance, None, None, None, False, "geofence", why))
            elif self.cold and not wh.cold_chain:
                dropped = trace_row((wid, distance, None, None, None, False, "geofence",
                                  "not cold-chain capable"))
            stop = (distance, wid, wh, dropped)
            if self.keep:
                self.stops.append(stop)
            yield stop
        self.source = None
