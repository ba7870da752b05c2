"""``migrate-db``: a SQLite database with orders, a reroute and its notices' history copied
into a private PostgreSQL, verified by row counts and reservations."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator import catalog, intake
from coordinator.__main__ import main
from coordinator.catalog import import_file
from coordinator.db import open_database
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from coordinator.reroute import reroute_warehouse
from coordinator.settings import AllocationConfig
from simulators.pg_server import PostgresServer

from .conftest import NOW
from .test_reroute import _consistent, _orders_near


def _demo_like(path: Path) -> None:
    """The sample region, orders held at WH-02, then WH-02 trips and they move."""
    db = open_database(path)
    try:
        for name in SAMPLE_FILES:
            import_file(db, SAMPLE_DIR / f"{name}.csv", NOW)
        rules = AllocationConfig()
        intake.submit_orders(db, _orders_near(db, "WH-02", 30), now=NOW, config=rules)
        catalog.set_warehouse_availability(db, "WH-02", available=False, reason="breaker",
                                           now=NOW)
        reroute_warehouse(db, "WH-02", incident_id="inc-1", reason="breaker", now=NOW,
                          config=rules)
    finally:
        db.conn.close()


def _counts(target: str) -> dict[str, int]:
    db = open_database(target, migrate=False)
    try:
        return {t: int(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                for t in ("warehouses", "skus", "inventory", "stores", "orders", "order_lines",
                          "order_events", "allocation_decisions", "reservations",
                          "incidents", "incident_orders", "alerts", "meta")}
    finally:
        db.conn.close()


def test_the_demo_database_moves_to_postgresql_with_every_row_and_reservation(
        tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "demo.sqlite"
    _demo_like(source)

    assert main(["migrate-db", str(source), postgres_url]) == 0

    assert "verified" in capsys.readouterr().out
    assert _counts(postgres_url) == _counts(str(source))
    db = open_database(postgres_url)
    try:
        _consistent(db)
        # new rows continue after the copied ids, and allocation works on the copy
        before = int(db.execute("SELECT max(id) FROM order_events").fetchone()[0])
        intake.submit_orders(db, _orders_near(db, "WH-07", 2, seed=11), now=NOW,
                             config=AllocationConfig())
        assert int(db.execute("SELECT min(id) FROM order_events WHERE id > ?",
                              [before]).fetchone()[0]) == before + 1
    finally:
        db.conn.close()


def test_a_destination_with_data_is_refused_and_left_alone(
        tmp_path: Path, postgres_server: PostgresServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "demo.sqlite"
    _demo_like(source)
    target = postgres_server.create_database()
    assert main(["migrate-db", str(source), target]) == 0
    capsys.readouterr()

    assert main(["migrate-db", str(source), target]) == 2

    assert "already holds" in capsys.readouterr().err
    assert _counts(target) == _counts(str(source))


def _meta(target: str) -> dict[str, str]:
    db = open_database(target, migrate=False)
    try:
        return {str(k): str(v) for k, v in db.execute("SELECT key, value FROM meta")}
    finally:
        db.conn.close()


def test_the_copy_is_verbatim_and_the_catalogue_triggers_work_again_after_it(
        tmp_path: Path, postgres_url: str) -> None:
    # the version triggers fired once per copied row (quadratic in one transaction: a
    # tester's 372,000 SKUs ran for over 10 minutes) and moved the versions off the source
    source = tmp_path / "demo.sqlite"
    _demo_like(source)

    assert main(["migrate-db", str(source), postgres_url]) == 0

    assert _meta(postgres_url) == _meta(str(source))
    db = open_database(postgres_url)
    try:
        before = _meta(postgres_url)["skus_version"]
        db.execute("UPDATE skus SET name = name || ' (renamed)' WHERE id = "
                   "(SELECT min(id) FROM skus)")
        assert _meta(postgres_url)["skus_version"] != before  # triggers enabled again
    finally:
        db.conn.close()


def test_a_mistyped_source_or_a_sqlite_destination_is_refused_creating_nothing(
        tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.sqlite"
    assert main(["migrate-db", str(missing), postgres_url]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not missing.exists()  # opening it would have created an empty database

    source = tmp_path / "demo.sqlite"
    _demo_like(source)
    wrong = tmp_path / "copy.sqlite"
    assert main(["migrate-db", str(source), str(wrong)]) == 2
    assert "into PostgreSQL" in capsys.readouterr().err
    assert not wrong.exists()
