"""Order simulator: a day of orders with the seed's shape, from a region and a seed.

About 14,000 orders a day across the WeChat mini-program, Meituan and Douyin, each in its
channel's own payload (:mod:`protocols.orders`); most destinations within 5 km of a
store; Meituan orders reach Breakwater late (its push arrives seconds to minutes after
the user paid); client timestamps carry a little clock skew, a few a lot. Deterministic
from the seed. Post them to the coordinator's ``POST /orders`` (a JSON list is a batch)
or write JSONL for bulk load.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from protocols.geo import great_circle_km, offset_km
from protocols.orders import (
    Channel,
    ChannelOrder,
    DouyinAddress,
    DouyinOrder,
    DouyinSku,
    MeituanFood,
    MeituanOrder,
    WechatGoods,
    WechatLocation,
    WechatMiniOrder,
)
from simulators.random_streams import rng_for
from simulators.region import Region, Sku, Store, Warehouse

ORDERS_PER_DAY = 14_000
CHANNEL_MIX: tuple[tuple[Channel, float], ...] = (
    (Channel.WECHAT_MINI, 0.45),
    (Channel.MEITUAN, 0.35),
    (Channel.DOUYIN, 0.20),
)
# Relative order volume by local hour: lunch and dinner peaks, a quiet night.
HOURLY_PROFILE: tuple[float, ...] = (
    0.6, 0.4, 0.3, 0.2, 0.2, 0.3, 0.7, 1.4, 2.2, 2.6, 3.2, 4.4,
    4.8, 3.6, 2.6, 2.4, 2.8, 3.8, 4.6, 4.2, 3.2, 2.4, 1.6, 1.0,
)  # fmt: skip
NEAR_SHARE = 0.88  # destinations within 5 km of the ordering store
NEAR_KM = 5.0


class OrderPostError(RuntimeError):
    """The coordinator could not be reached at all (HTTP errors are counted, not raised)."""


@dataclass(frozen=True, slots=True)
class GeneratedOrder:
    """One order as the simulator made it, with the facts tests check."""

    enter_at: datetime  # when it reaches Breakwater (Meituan: late)
    submitted_at: datetime  # when the user really pressed submit
    client_at: datetime  # what the client's clock said (submitted_at + skew)
    channel: Channel
    store_id: str
    lat: float
    lon: float
    distance_km: float  # destination to the store
    cold_chain: bool
    payload: ChannelOrder

    @property
    def channel_order_id(self) -> str:
        match self.payload:
            case WechatMiniOrder():
                return self.payload.out_trade_no
            case MeituanOrder():
                return self.payload.wm_order_id_view
            case DouyinOrder():
                return self.payload.shop_order_id
        raise TypeError(type(self.payload).__name__)

    @property
    def skew_s(self) -> float:
        return (self.client_at - self.submitted_at).total_seconds()

    def body(self) -> dict[str, Any]:
        """The JSON body the channel would send."""
        return self.payload.model_dump(mode="json", exclude_none=True)


def _pick_time(rng: random.Random, start: datetime, days: float) -> datetime:
    """A time in ``[start, start + days)`` following the hourly profile (rejection sampling)."""
    peak = max(HOURLY_PROFILE)
    span = days * 86400
    while True:
        offset = rng.uniform(0, span)
        when = start + timedelta(seconds=offset)
        if rng.uniform(0, peak) <= HOURLY_PROFILE[when.hour]:
            return when


def _skew_s(rng: random.Random) -> float:
    roll = rng.random()
    if roll < 0.85:
        return rng.gauss(0, 0.4)
    if roll < 0.97:
        return rng.choice((-1, 1)) * rng.uniform(1.0, 3.0)
    return rng.choice((-1, 1)) * rng.uniform(5.0, 120.0)


def _entry_delay_s(rng: random.Random, channel: Channel) -> float:
    if channel is Channel.MEITUAN:
        # Meituan's push reaches the merchant late: median ~45 s, a tail of minutes.
        return min(600.0, max(5.0, rng.lognormvariate(math.log(45), 0.8)))
    return rng.uniform(0.05, 1.5)


Mix = Sequence[tuple[Channel, float]]


def _channel(rng: random.Random, mix: Mix) -> Channel:
    roll, total = rng.random() * sum(share for _, share in mix), 0.0
    for channel, share in mix:
        total += share
        if roll < total:
            return channel
    return mix[-1][0]


def _lines(
    rng: random.Random, skus: Sequence[Sku], cold: Sequence[Sku], need_cold: bool, cold_share: float
) -> list[tuple[str, int]]:
    count = rng.choices((1, 2, 3, 4), weights=(50, 30, 15, 5))[0]
    chosen: dict[str, int] = {}
    for index in range(count):
        wants_cold = (need_cold and index == 0) or rng.random() < cold_share
        pool = cold if wants_cold and cold else skus
        sku = rng.choice(pool)
        chosen[sku.id] = chosen.get(sku.id, 0) + rng.randint(1, 4)
    return list(chosen.items())


def _payload(
    channel: Channel,
    serial: str,
    store: Store,
    customer: str,
    lines: list[tuple[str, int]],
    lat: float,
    lon: float,
    client_at: datetime,
) -> ChannelOrder:
    ms = int(client_at.timestamp() * 1000)
    match channel:
        case Channel.WECHAT_MINI:
            return WechatMiniOrder(
                out_trade_no=f"wx{serial}",
                openid=f"o{customer}",
                store_code=store.id,
                goods=[WechatGoods(sku_id=s, num=q) for s, q in lines],
                address=WechatLocation(latitude=lat, longitude=lon),
                submit_time_ms=ms,
            )
        case Channel.MEITUAN:
            return MeituanOrder(
                wm_order_id_view=f"mt{serial}",
                app_poi_code=store.id,
                recipient_phone=f"1{customer[:2]}****{customer[-4:]}",
                detail=[MeituanFood(app_food_code=s, quantity=q) for s, q in lines],
                latitude=lat,
                longitude=lon,
                ctime=ms // 1000,
            )
        case _:
            return DouyinOrder(
                shop_order_id=f"dy{serial}",
                shop_id=store.id,
                buyer_id=f"dy-{customer}",
                sku_order_list=[DouyinSku(out_sku_id=s, item_num=q) for s, q in lines],
                post_addr=DouyinAddress(lat=lat, lng=lon),
                create_time=ms // 1000,
                submit_ms=ms,
            )


def _make(
    rng: random.Random,
    serial: str,
    submitted: datetime,
    store: Store,
    centre: tuple[float, float],
    distance_km: float,
    region: Region,
    need_cold: bool,
    cold: Sequence[Sku],
    mix: Mix = CHANNEL_MIX,
) -> GeneratedOrder:
    channel = _channel(rng, mix)
    bearing = rng.uniform(0, 2 * math.pi)
    lat, lon = offset_km(*centre, distance_km * math.cos(bearing), distance_km * math.sin(bearing))
    lat, lon = round(lat, 6), round(lon, 6)
    cold_share = 0.45 if channel is Channel.MEITUAN else 0.25
    lines = _lines(rng, region.skus, cold, need_cold, cold_share)
    client_at = submitted + timedelta(seconds=_skew_s(rng))
    enter_at = submitted + timedelta(seconds=_entry_delay_s(rng, channel))
    customer = f"{rng.getrandbits(40):010x}"
    cold_ids = {s.id for s in cold}
    return GeneratedOrder(
        enter_at=enter_at,
        submitted_at=submitted,
        client_at=client_at,
        channel=channel,
        store_id=store.id,
        lat=lat,
        lon=lon,
        distance_km=great_circle_km(store.lat, store.lon, lat, lon),
        cold_chain=any(s in cold_ids for s, _ in lines),
        payload=_payload(channel, serial, store, customer, lines, lat, lon, client_at),
    )


def order_stream(
    region: Region,
    count: int,
    *,
    seed: int,
    start: datetime,
    per_day: int = ORDERS_PER_DAY,
) -> list[GeneratedOrder]:
    """``count`` orders at ``per_day`` from ``start``, sorted by when they reach us."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    rng = rng_for(seed, "orders", start.isoformat())
    cold = [s for s in region.skus if s.cold_chain]
    days = max(count / per_day, 1 / 1440) if per_day > 0 else 1.0
    orders = []
    for n in range(count):
        submitted = _pick_time(rng, start, days)
        store = rng.choice(region.stores)
        near = rng.random() < NEAR_SHARE
        # sqrt: destinations spread evenly over the disc's area, not bunched at the centre
        km = NEAR_KM * math.sqrt(rng.uniform(0.004, 0.98)) if near else rng.uniform(5.2, 15.0)
        serial = f"{start:%Y%m%d}{seed % 1000:03d}{n:07d}"
        orders.append(
            _make(rng, serial, submitted, store, (store.lat, store.lon), km, region, False, cold)
        )
    orders.sort(key=lambda o: (o.enter_at, o.channel_order_id))
    return orders


def nearest_store(region: Region, warehouse: Warehouse) -> Store:
    return min(
        region.stores, key=lambda s: great_circle_km(s.lat, s.lon, warehouse.lat, warehouse.lon)
    )


def targeted_orders(
    region: Region,
    warehouse_id: str,
    count: int,
    *,
    seed: int,
    start: datetime,
    within_km: float = 0.8,
) -> list[GeneratedOrder]:
    """``count`` orders whose destinations lie within ``within_km`` of one warehouse.

    With the allocation engine's geofence (nearest feasible warehouse first) they land
    at that warehouse; for a cold-chain warehouse every order has a cold-chain item, so
    only cold-chain backups can take them over. When the region has inventory, orders
    ask only for SKUs the warehouse stocks deeply (at least 100 promisable units), so
    the inventory-depth ranking keeps them there. A dry warehouse's orders carry no
    cold-chain item and never come from Meituan (its channel rule forces cold chain). The scenario's
    ``orders.waiting`` uses this to put e.g. 287 orders at WH-02 before the night.
    """
    warehouse = region.warehouse(warehouse_id)
    if warehouse is None:
        raise ValueError(f"warehouse {warehouse_id!r} is not in the region")
    rng = rng_for(seed, "targeted", warehouse_id)
    store = nearest_store(region, warehouse)
    stocked = region.stocked(warehouse_id, at_least=100) if region.inventory else None
    # A dry warehouse cannot take cold-chain items: its orders carry none.
    pool = [
        s
        for s in region.skus
        if (stocked is None or s.id in stocked) and (warehouse.cold_chain or not s.cold_chain)
    ]
    if not pool:
        raise ValueError(f"warehouse {warehouse_id!r} stocks no SKU in the region's inventory")
    cold = [s for s in pool if s.cold_chain]
    local = region.model_copy(update={"skus": pool})
    mix = (
        CHANNEL_MIX if warehouse.cold_chain else [m for m in CHANNEL_MIX if m[0] != Channel.MEITUAN]
    )
    orders = []
    for n in range(count):
        submitted = start - timedelta(seconds=rng.uniform(60, 3 * 3600))
        km = within_km * math.sqrt(rng.uniform(0.01, 1.0))
        serial = f"{warehouse_id.replace('-', '')}{seed % 1000:03d}{n:06d}"
        orders.append(
            _make(
                rng, serial, submitted, store, (warehouse.lat, warehouse.lon), km, local,
                warehouse.cold_chain, cold, mix,
            )
        )  # fmt: skip
    orders.sort(key=lambda o: (o.enter_at, o.channel_order_id))
    return orders


def write_jsonl(orders: Iterable[GeneratedOrder], path: str | Path) -> int:
    """One channel payload per line, in arrival order; returns the count."""
    written = 0
    with Path(path).open("w", encoding="utf-8") as handle:
        for order in orders:
            handle.write(json.dumps(order.body(), ensure_ascii=False, separators=(",", ":")))
            handle.write("\n")
            written += 1
    return written


@dataclass(slots=True)
class PostStats:
    sent: int = 0
    batches: int = 0
    status_counts: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # first few error bodies
    results: list[dict[str, Any]] = field(default_factory=list)  # the coordinator's answers
    wall_s: float = 0.0

    @property
    def accepted(self) -> int:
        return sum(n for code, n in self.status_counts.items() if 200 <= code < 300)


def _results(response: httpx.Response) -> list[dict[str, Any]]:
    """Per-order answers: ``{"results": [...]}`` for a batch, one object for a single."""
    try:
        body = response.json()
    except ValueError:
        return []
    if isinstance(body, dict) and isinstance(body.get("results"), list):
        return [r for r in body["results"] if isinstance(r, dict)]
    if isinstance(body, list):
        return [r for r in body if isinstance(r, dict)]
    return [body] if isinstance(body, dict) else []


async def post_orders(
    orders: Sequence[GeneratedOrder],
    base_url: str,
    *,
    batch: int = 100,
    rate: float | None = None,
    client: httpx.AsyncClient | None = None,
    timeout_s: float = 30.0,
    headers: dict[str, str] | None = None,
) -> PostStats:
    """POST orders to ``{base_url}/orders`` in batches (a JSON list), ``rate`` orders/s.

    HTTP error statuses are counted in the stats (the coordinator names the bad field);
    only an unreachable coordinator raises :class:`OrderPostError`. ``headers`` carry the
    credential (``Authorization: Bearer <integration token>``).
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    stats = PostStats()
    own = client is None
    http = client or httpx.AsyncClient(timeout=timeout_s)
    url = base_url.rstrip("/") + "/orders"
    started = time.perf_counter()
    try:
        for first in range(0, len(orders), batch):
            chunk = orders[first : first + batch]
            if rate:
                due = started + first / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            body: Any = chunk[0].body() if batch == 1 else [o.body() for o in chunk]
            try:
                response = await http.post(url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                message = f"cannot POST {url}: {exc}"
                raise OrderPostError(message) from exc
            stats.batches += 1
            stats.sent += len(chunk)
            code = response.status_code
            stats.status_counts[code] = stats.status_counts.get(code, 0) + 1
            if code >= 400 and len(stats.errors) < 5:
                stats.errors.append(f"{code}: {response.text[:300]}")
            if code < 300:
                stats.results += _results(response)
    finally:
        if own:
            await http.aclose()
    stats.wall_s = time.perf_counter() - started
    return stats
