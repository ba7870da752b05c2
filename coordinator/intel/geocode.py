"""Geocoders: the interface, the AMap (高德) web-service adapter and the offline gazetteer.

:class:`AmapGeocoder` calls AMap's geocoding API (``GET /v3/geocode/geo?address=&city=&key=``;
answer ``{"status": "1", "geocodes": [{"formatted_address", "province", "city",
"district", "location": "lng,lat", "level"}]}``). The key comes from settings and never
appears in a log or an error (httpx errors carry the URL, so they are reduced to their
class name). :class:`Gazetteer` needs no network: it knows the district centres of the
configured region and completes an address that names a district.

``level`` tells how precisely a point is placed; only :data:`PRECISE_LEVELS` put a
parcel at a door.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

PRECISE_LEVELS = frozenset({"门牌号", "单元号", "兴趣点", "道路交叉路口"})


@dataclass(frozen=True, slots=True)
class Place:
    formatted: str
    lat: float
    lon: float
    level: str
    district: str
    source: str

    @property
    def precise(self) -> bool:
        return self.level in PRECISE_LEVELS


class GeocoderError(Exception):
    """The service could not answer (network, quota, bad key); the message has no secret."""


class Geocoder(Protocol):
    name: str

    def geocode(self, address: str, city: str) -> Place | None:
        """The best place for ``address`` in ``city``; ``None`` when nothing matches."""
        ...


class AmapGeocoder:
    name = "amap"

    def __init__(self, key: str, *, url: str, client: httpx.Client) -> None:
        self._key = key
        self._url = url
        self._client = client

    def geocode(self, address: str, city: str) -> Place | None:
        try:
            response = self._client.get(self._url, params={
                "key": self._key, "address": address, "city": city, "output": "JSON"})
            response.raise_for_status()
            data = response.json()
        except httpx.HTTPError as exc:
            # the exception's text holds the request URL, key included
            raise GeocoderError(f"AMap request failed: {type(exc).__name__}") from None
        except ValueError:
            raise GeocoderError("AMap answered with something that is not JSON") from None
        if not isinstance(data, dict) or data.get("status") != "1":
            info = str(data.get("info", "?"))[:80] if isinstance(data, dict) else "?"
            raise GeocoderError(f"AMap refused the request: {info}")
        geocodes = data.get("geocodes") or []
        if not geocodes or not isinstance(geocodes[0], dict):
            return None
        first = geocodes[0]
        try:
            lon_text, lat_text = str(first["location"]).split(",")
            return Place(formatted=str(first.get("formatted_address") or address),
                         lat=float(lat_text), lon=float(lon_text),
                         level=str(first.get("level") or "未知"),
                         district=_text(first.get("district")), source=self.name)
        except (KeyError, ValueError):
            return None


def _text(value: object) -> str:
    # AMap sends [] instead of "" for an empty field
    return value if isinstance(value, str) else ""


# district (county) seats of the shipped region, WGS-84-ish; enough to complete an address
# and route it to the right district, never to find a door
_REGIONS: dict[str, tuple[str, dict[str, tuple[float, float]]]] = {
    "杭州市": ("浙江省", {
        "上城区": (30.2425, 120.1693), "拱墅区": (30.3197, 120.1422),
        "西湖区": (30.2594, 120.1300), "滨江区": (30.2083, 120.2119),
        "萧山区": (30.1850, 120.2646), "余杭区": (30.2737, 120.0218),
        "临平区": (30.4193, 120.2996), "钱塘区": (30.3227, 120.4936),
        "富阳区": (30.0489, 119.9604), "临安区": (30.2338, 119.7248),
        "桐庐县": (29.7972, 119.6913), "淳安县": (29.6049, 119.0423),
        "建德市": (29.4747, 119.2815),
    }),
}

GAZETTEER_REGIONS = tuple(_REGIONS)


class Gazetteer:
    """Offline: finds a district of ``city`` named in the address (with or without its
    suffix: 西湖 or 西湖区) and returns its centre at level ``区县``."""

    name = "gazetteer"

    def __init__(self, city: str) -> None:
        if city not in _REGIONS:
            raise ValueError(f"no gazetteer for {city!r} (have: {', '.join(_REGIONS)})")
        self.city = city
        self.province, self.districts = _REGIONS[city]

    def geocode(self, address: str, city: str) -> Place | None:
        for district, (lat, lon) in self.districts.items():
            short = district[:-1]
            if district in address or short in address:
                rest = address
                for prefix in (self.province, self.city, district, short):
                    rest = rest.replace(prefix, "", 1) if rest.startswith(prefix) else rest
                return Place(formatted=f"{self.province}{self.city}{district}{rest}",
                             lat=lat, lon=lon, level="区县", district=district,
                             source=self.name)
        return None


def chain(geocoders: Sequence[Geocoder], address: str, city: str
          ) -> tuple[Place | None, list[str]]:
    """The first precise place, else the best coarse one; and the failures met."""
    coarse: Place | None = None
    failures: list[str] = []
    for geocoder in geocoders:
        try:
            place = geocoder.geocode(address, city)
        except GeocoderError as exc:
            failures.append(f"{geocoder.name}: {exc}")
            continue
        if place is None:
            continue
        if place.precise:
            return place, failures
        coarse = coarse or place
    return coarse, failures
