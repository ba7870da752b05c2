"""Names beside ids in decision explanations."""

from __future__ import annotations

from coordinator.trace_names import Names

NAMES = Names({"WH-1": "城西仓", "WH-10": "滨江仓", "WH-2": ""}, {"SKU-1": "酸奶1"})


def test_ids_get_their_names_and_longer_ids_are_not_split() -> None:
    assert NAMES.named("short of SKU-1: 0 sellable; lower score than WH-10") == (
        "short of SKU-1 (酸奶1): 0 sellable; lower score than WH-10 滨江仓")
    assert NAMES.named("WH-1 (2.0 km) was chosen") == "WH-1 城西仓 (2.0 km) was chosen"


def test_unknown_or_nameless_ids_and_lookalikes_stay_as_they_are() -> None:
    assert NAMES.named("WH-2 and WH-3 and SKU-11 and XWH-1") == "WH-2 and WH-3 and SKU-11 and XWH-1"
    assert Names({}, {}).named("WH-1") == "WH-1"
