"""Address self-healing: an order's delivery address that cannot be placed confidently as
given is corrected through the geocoders; only a failed correction reaches a person.

:func:`judge` is pure. :func:`check_address` asks the geocoders (outside any
transaction: a slow map service never holds the write lock), then in one transaction
records the check, the timeline event (original and corrected address both kept), the
self-healing event and, for a failure, the alert a person works from.

- precise place whose district the address names: placed as given (no exception);
- precise place, the address lacks its district: corrected to the formatted address;
- coarse place (a district centre), the address lacks the district: completed with
  province, city and district;
- coarse place for an address that already names its district, or nothing at all:
  failed, a person corrects it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from sqlite_utils import Database

from coordinator.errors import NotFound
from coordinator.intel import healing
from coordinator.intel.geocode import Geocoder, Place, chain
from coordinator.store import add_alert, append_order_event, iso, write_transaction

Outcome = Literal["as_given", "corrected", "failed"]


def judge(address: str, place: Place | None) -> Outcome:
    if place is None or not place.district:
        return "failed"
    names_district = place.district in address
    if place.precise:
        return "as_given" if names_district else "corrected"
    return "failed" if names_district else "corrected"


def _order_exists(db: Database, order_id: str) -> None:
    if db.execute("SELECT 1 FROM orders WHERE id = :id", {"id": order_id}).fetchone() is None:
        raise NotFound("order", order_id)


def check_address(db: Database, geocoders: Sequence[Geocoder], *, order_id: str,
                  address: str, city: str, now: datetime) -> dict[str, Any]:
    _order_exists(db, order_id)
    place, failures = chain(geocoders, address, city)
    outcome = judge(address, place)
    corrected = place.formatted if place is not None and outcome == "corrected" else None
    detail: dict[str, Any] = {"original": address, "corrected": corrected,
                              "source": place.source if place else None,
                              "level": place.level if place else None,
                              "geocoder_failures": failures}
    with write_transaction(db):
        cursor = db.conn.execute(
            "INSERT INTO address_checks (order_id, original, corrected, lat, lon, level, "
            "source, outcome, at) VALUES (:order_id, :original, :corrected, :lat, :lon, "
            ":level, :source, :outcome, :at)",
            {"order_id": order_id, "original": address, "corrected": corrected,
             "lat": place.lat if place else None, "lon": place.lon if place else None,
             "level": detail["level"], "source": detail["source"], "outcome": outcome,
             "at": iso(now)})
        if outcome != "as_given":
            kind = "address_corrected" if outcome == "corrected" else "address_needs_person"
            append_order_event(db, order_id, kind, now, detail)
            healing.record(db, "address", order_id, healed=outcome == "corrected", at=now,
                           detail=detail)
        if outcome == "failed":
            add_alert(db, "address_unplaced",
                      f"order {order_id}: delivery address could not be placed, "
                      f"correct it by hand: {address[:200]}", now, order_id=order_id)
    return {"id": cursor.lastrowid, "order_id": order_id, "outcome": outcome, **detail,
            "lat": place.lat if place else None, "lon": place.lon if place else None}


def current_address(db: Database, order_id: str) -> dict[str, Any]:
    """The latest check of an order's address: what to print on the label."""
    _order_exists(db, order_id)
    row = db.execute(
        "SELECT original, corrected, lat, lon, level, source, outcome, at FROM address_checks "
        "WHERE order_id = :id ORDER BY id DESC LIMIT 1", {"id": order_id}).fetchone()
    if row is None:
        raise NotFound("address check of order", order_id)
    out = dict(zip(("original", "corrected", "lat", "lon", "level", "source", "outcome",
                    "at"), row, strict=True))
    out["deliver_to"] = out["corrected"] or out["original"]
    return out
