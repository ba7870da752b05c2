"""Region files as operators and the coordinator export them."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.region import RegionError, builtin_region, load_region


def _write(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text, encoding="utf-8")


def test_reads_a_csv_directory_with_extra_columns_and_inventory(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "warehouses.csv",
        "id,name,address,lat,lon,cold_chain,daily_capacity\n"
        "WH-01,城西仓,路1号,30.37,120.22,0,0\n"
        "WH-02,冷链一号仓,路2号,30.11,120.22,1,0\n",
    )
    _write(tmp_path, "stores.csv", "id,name,lat,lon,contact\nHZ-S001,店,30.26,120.03,138\n")
    _write(tmp_path, "skus.csv", "id,name,cold_chain\nSKU-1,酸奶,1\nSKU-2,水,0\n")
    _write(
        tmp_path, "inventory.csv", "warehouse_id,sku_id,on_hand,safety_stock\nWH-02,SKU-1,300,10\n"
    )
    region = load_region(tmp_path)
    assert [w.cold_chain for w in region.warehouses] == [False, True]
    assert region.stocked("WH-02", at_least=100) == {"SKU-1"}
    assert region.stocked("WH-01") == set()


def test_a_bad_row_names_the_file_and_field(tmp_path: Path) -> None:
    _write(tmp_path, "warehouses.csv", "id,lat,lon,cold_chain\nWH 01,30.1,120.2,0\n")
    _write(tmp_path, "stores.csv", "id,lat,lon\nS1,30.2,120.1\n")
    _write(tmp_path, "skus.csv", "id,cold_chain\nK1,0\n")
    with pytest.raises(RegionError, match=r"warehouses\.0\.id"):
        load_region(tmp_path)
    (tmp_path / "skus.csv").unlink()
    with pytest.raises(RegionError, match=r"no skus\.csv"):
        load_region(tmp_path)


def test_builtin_region_has_the_sample_shape() -> None:
    region = builtin_region()
    assert len(region.stores) == 127
    assert [w.id for w in region.warehouses if w.cold_chain] == ["WH-02", "WH-05", "WH-07"]
    assert builtin_region() == region
