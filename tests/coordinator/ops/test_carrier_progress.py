"""What a carrier's scan implies for the order's timeline (pure)."""

from __future__ import annotations

import pytest

from coordinator.ops.carrier_progress import steps


@pytest.mark.parametrize(("order", "carrier", "expected"), [
    ("allocated", "picked_up", ["shipped"]),
    ("allocated", "in_transit", ["shipped", "in_transit"]),
    ("allocated", "delivered", ["shipped", "delivered"]),
    ("shipped", "out_for_delivery", ["in_transit"]),
    ("in_transit", "in_transit", []),
    ("in_transit", "delivered", ["delivered"]),
    ("delivered", "in_transit", []),
    ("shipped", "exception", []),
    ("cancelled", "delivered", []),
    ("unallocated", "picked_up", []),
])
def test_scans_add_only_the_missing_entries_in_order(order: str, carrier: str,
                                                     expected: list[str]) -> None:
    assert steps(order, carrier) == expected
