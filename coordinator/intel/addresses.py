"""Address self-healing: an order's delivery address that cannot be placed confidently as
given is corrected through the geocoders; only a failed correction reaches a person.

:func:`judge` is pure. :func:`check_address` asks the geocoders (outside any
transaction: a slow map service never holds the write lock), then in one transaction
records the check, the timeline event (original and corrected address both kept) and
the alert a person works from (through the ledger), and the self-healing event.

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

from coordinator.db import Database, write_transaction
from coordinator.errors import NotFound
from coordinator.intel import heal_store
from coordinator.intel.geocode import Geocoder, Place, chain
from coordinator.ledger import Ledger
from coordinator.queries import order_exists

Outcome = Literal["as_given", "corrected", "failed"]


def judge(address: str, place: Place | None) -> Outcome:
    if place is None or not place.district:
        return "failed"
    names_district = place.district in address
    if place.precise:
        return "as_given" if names_district else "corrected"
    return "failed" if names_district else "corrected"


def check_address(db: Database, geocoders: Sequence[Geocoder], *, order_id: str,
                  address: str, city: str, now: datetime) -> dict[str, Any]:
    if not order_exists(db, order_id):
        raise NotFound("order", order_id)
    place, failures = chain(geocoders, address, city)
    outcome = judge(address, place)
    check: dict[str, Any] = {
        "original": address,
        "corrected": place.formatted if place is not None and outcome == "corrected" else None,
        "lat": place.lat if place else None, "lon": place.lon if place else None,
        "level": place.level if place else None, "source": place.source if place else None,
        "outcome": outcome}
    detail = {**check, "geocoder_failures": failures}
    with write_transaction(db):
        check_id = heal_store.add_address_check(db, order_id, check, now)
        if outcome != "as_given":
            ledger = Ledger(now)
            ledger.event(order_id, "address_corrected" if outcome == "corrected"
                         else "address_needs_person", detail)
            if outcome == "failed":
                ledger.alert("address_unplaced",
                             f"order {order_id}: delivery address could not be placed, "
                             f"correct it by hand: {address[:200]}", order_id=order_id)
            ledger.flush(db)
            heal_store.record_heal(db, "address", order_id, healed=outcome == "corrected",
                                   at=now, detail=detail)
    return {"id": check_id, "order_id": order_id, **detail}


def current_address(db: Database, order_id: str) -> dict[str, Any]:
    """The latest check of an order's address: what to print on the label."""
    if not order_exists(db, order_id):
        raise NotFound("order", order_id)
    out = heal_store.latest_address_check(db, order_id)
    if out is None:
        raise NotFound("address check of order", order_id)
    out["deliver_to"] = out["corrected"] or out["original"]
    return out
