"""Geography: the one great-circle distance, a flat offset for generators, and the
spatial index that yields places nearest-first.

Shared by the coordinator (allocation, retry, the order views) and the simulators. The
index's inner loops repeat the haversine of :func:`great_circle_km` on precomputed
radians and cosines (a function call per candidate would cost a third of the geofence);
tests check they agree with it to the metre.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Iterable, Iterator

EARTH_RADIUS_KM = 6371.0088
_SCAN_ALL = 24  # up to this many places, sort them all instead of walking the index
_RANKED_MEMO = 8192
_PREFIX = 16  # nearest places remembered per spot in a big region


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance in kilometres."""
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def offset_km(lat: float, lon: float, north_km: float, east_km: float) -> tuple[float, float]:
    """A point ``north_km``/``east_km`` away (flat-earth; fine within a city)."""
    dlat = north_km / 111.32
    dlon = east_km / (111.32 * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


class SpatialIndex:
    """A spatial index; :meth:`nearest` yields warehouses in exact great-circle order.

    Up to ``_SCAN_ALL`` warehouses it measures them all and sorts. Beyond that it searches a
    lat/lon grid ring by ring: every warehouse outside the rings searched so far is at
    least ``bound`` away (a latitude gap of d is at least ``R*d``; a longitude gap is at
    least the haversine of it at the largest latitude present), so anything nearer than
    ``bound`` can be yielded before looking further. Regions spanning more than 180 degrees
    of longitude fall back to a latitude-sorted walk with the latitude bound alone.
    """

    def __init__(self, positions: Iterable[tuple[str, float, float]]) -> None:
        rows = sorted(positions, key=lambda p: (p[1], p[0]))
        self._ids = [r[0] for r in rows]
        self._lats = [r[1] for r in rows]
        self._lons = [r[2] for r in rows]
        self._ranked: dict[tuple[float, float], list[tuple[float, str]]] = {}
        self._trig = [
            (r[0], math.radians(r[1]), math.radians(r[2]), math.cos(math.radians(r[1])))
            for r in rows
        ]
        self._grid: dict[tuple[int, int], list[tuple[str, float, float, float]]] = {}
        self._cell = 1.0
        self._cos_floor = 1.0
        self._box = (0, 0, 0, 0)
        if len(rows) > _SCAN_ALL and max(self._lons) - min(self._lons) < 180:
            lat_span = max(self._lats) - min(self._lats)
            lon_span = max(self._lons) - min(self._lons)
            # About three warehouses a cell; but never so small that a thin region (all
            # warehouses along one road) needs more than ~2*sqrt(n) rings to cross, or the
            # ring walk turns quadratic in the region's length.
            self._cell = max(
                1e-4,
                math.sqrt(max(lat_span * lon_span, 1e-8) * 3 / len(rows)),
                max(lat_span, lon_span) / (2 * math.sqrt(len(rows)) + 1),
            )
            for item in self._trig:
                key = self._key(math.degrees(item[1]), math.degrees(item[2]))
                self._grid.setdefault(key, []).append(item)
            keys = list(self._grid)
            self._box = (min(k[0] for k in keys), max(k[0] for k in keys),
                         min(k[1] for k in keys), max(k[1] for k in keys))
            self._cos_floor = math.cos(math.radians(max(abs(x) for x in self._lats)))

    def __len__(self) -> int:
        return len(self._ids)

    def nearest(self, lat: float, lon: float) -> Iterator[tuple[float, str]]:
        if len(self._ids) <= _SCAN_ALL:
            # orders come from a few thousand stores: remember each spot's ranking
            key = (lat, lon)
            ranked = self._ranked.get(key)
            if ranked is None:
                if len(self._ranked) >= _RANKED_MEMO:
                    self._ranked.clear()
                ranked = self._ranked[key] = self._scan(lat, lon)
            return iter(ranked)
        # Many orders share a spot (a store): remember the nearest few of each spot and
        # continue with a fresh search only when a caller reads past them.
        key = (lat, lon)
        prefix = self._ranked.get(key)
        if prefix is None:
            if len(self._ranked) >= _RANKED_MEMO:
                self._ranked.clear()
            prefix = list(itertools.islice(self._search(lat, lon), _PREFIX))
            self._ranked[key] = prefix
        if len(prefix) >= len(self._ids):
            return iter(prefix)
        return itertools.chain(prefix, itertools.islice(self._search(lat, lon), len(prefix),
                                                        None))

    def _search(self, lat: float, lon: float) -> Iterator[tuple[float, str]]:
        if self._grid:
            i, j = self._key(lat, lon)
            i_lo, i_hi, j_lo, j_hi = self._box
            if i_lo - 2 <= i <= i_hi + 2 and j_lo - 2 <= j <= j_hi + 2:
                return self._rings(lat, lon)
            return iter(self._scan(lat, lon))
        return self._walk(lat, lon)

    def _key(self, lat: float, lon: float) -> tuple[int, int]:
        return math.floor(lat / self._cell), math.floor(lon / self._cell)

    def _rings(self, lat: float, lon: float) -> Iterator[tuple[float, str]]:
        lat_r = math.radians(lat)
        lon_r = math.radians(lon)
        cos_lat = math.cos(lat_r)
        sin, asin, sqrt = math.sin, math.asin, math.sqrt
        diameter = 2 * EARTH_RADIUS_KM
        cell = self._cell
        lon_factor = sqrt(max(0.0, cos_lat * self._cos_floor))
        grid = self._grid
        i0, j0 = self._key(lat, lon)
        i_lo, i_hi, j_lo, j_hi = self._box
        last_ring = max(i0 - i_lo, i_hi - i0, j0 - j_lo, j_hi - j0)
        heap: list[tuple[float, str]] = []
        push = heapq.heappush
        pop = heapq.heappop
        for r in range(last_ring + 1):
            for di in range(-r, r + 1):
                edge = di in (-r, r)
                for dj in range(-r, r + 1) if edge else (-r, r):
                    members = grid.get((i0 + di, j0 + dj))
                    if members is None:
                        continue
                    for wid, p2, l2, cos2 in members:
                        a = sin((p2 - lat_r) * 0.5)
                        b = sin((l2 - lon_r) * 0.5)
                        h = a * a + cos_lat * cos2 * b * b
                        push(heap, (round(diameter * asin(sqrt(h if h < 1.0 else 1.0)), 3),
                                    wid))
            # every warehouse not yet pushed lies outside the searched block of cells, so
            # at least this far (see the class doc)
            gap_lat = min(lat - (i0 - r) * cell, (i0 + r + 1) * cell - lat)
            gap_lon = min(lon - (j0 - r) * cell, (j0 + r + 1) * cell - lon)
            by_lat = EARTH_RADIUS_KM * math.radians(gap_lat)
            half = min(math.pi / 2, math.radians(gap_lon) / 2)
            by_lon = diameter * asin(min(1.0, lon_factor * sin(half)))
            bound = min(by_lat, by_lon) * 0.999999 - 0.001  # distances are rounded to 1 m
            while heap and heap[0][0] < bound:
                yield pop(heap)
        while heap:
            yield pop(heap)

    def _scan(self, lat: float, lon: float) -> list[tuple[float, str]]:
        """Few warehouses: measuring all and sorting beats the incremental walk."""
        lat_r = math.radians(lat)
        lon_r = math.radians(lon)
        cos_lat = math.cos(lat_r)
        sin, asin, sqrt = math.sin, math.asin, math.sqrt
        diameter = 2 * EARTH_RADIUS_KM
        out = []
        for wid, p2, l2, cos2 in self._trig:
            a = sin((p2 - lat_r) * 0.5)
            b = sin((l2 - lon_r) * 0.5)
            h = a * a + cos_lat * cos2 * b * b
            out.append((round(diameter * asin(sqrt(h if h < 1.0 else 1.0)), 3), wid))
        out.sort()
        return out

    def _walk(self, lat: float, lon: float) -> Iterator[tuple[float, str]]:
        lats, lons, ids = self._lats, self._lons, self._ids
        km_per_rad = EARTH_RADIUS_KM
        lat_r = math.radians(lat)
        cos_lat = math.cos(lat_r)
        hi = bisect.bisect_left(lats, lat)
        lo = hi - 1
        n = len(ids)
        heap: list[tuple[float, str]] = []
        radians = math.radians
        sin = math.sin
        cos = math.cos
        asin = math.asin
        sqrt = math.sqrt
        while lo >= 0 or hi < n:
            gap_lo = (lat - lats[lo]) if lo >= 0 else math.inf
            gap_hi = (lats[hi] - lat) if hi < n else math.inf
            if gap_lo <= gap_hi:
                i, gap = lo, gap_lo
                lo -= 1
            else:
                i, gap = hi, gap_hi
                hi += 1
            bound = radians(gap) * km_per_rad * 0.999999 - 0.001  # distances rounded to 1 m
            while heap and heap[0][0] < bound:
                yield heapq.heappop(heap)
            p2 = radians(lats[i])
            dl = radians(lons[i] - lon)
            h = sin((p2 - lat_r) / 2) ** 2 + cos_lat * cos(p2) * sin(dl / 2) ** 2
            heapq.heappush(heap, (round(2 * km_per_rad * asin(min(1.0, sqrt(h))), 3), ids[i]))
        while heap:
            yield heapq.heappop(heap)
