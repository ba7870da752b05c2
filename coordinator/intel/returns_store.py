"""The store of return reasons: ``return_requests``, ``return_corrections`` and
``return_models`` (one JSON row of parameters per classifier version)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from coordinator.db import Database
from coordinator.errors import NotFound
from coordinator.intel.classifier import REASONS
from coordinator.ledger import to_json
from protocols.timestamps import parse_stamp_or_none, stamp

COLUMNS = ("id", "order_id", "kind", "text", "predicted", "confidence", "model_version",
           "reason", "warehouse_id", "sku_id", "carrier", "created_at")
BY_COLUMN = {"warehouse": "warehouse_id", "sku": "sku_id", "carrier": "carrier"}


def latest_model(db: Database) -> tuple[int, str] | None:
    """(version, model_id) of the newest model."""
    row = db.execute("SELECT version, model_id FROM return_models "
                     "ORDER BY version DESC LIMIT 1").fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def model_row(db: Database, version: int) -> tuple[Any, ...]:
    """version, params (JSON), examples, corrections, trained_at."""
    row: tuple[Any, ...] = db.execute(
        "SELECT version, params, examples, corrections, trained_at FROM return_models "
        "WHERE version = :v", {"v": version}).fetchone()
    return row


def latest_corrections(db: Database) -> list[tuple[str, str]]:
    """(text, reason) of every corrected return, its latest label."""
    return [(r[0], r[1]) for r in db.execute(
        "SELECT r.text, c.new_reason FROM return_corrections c JOIN return_requests r "
        "ON r.id = c.return_id WHERE c.id IN (SELECT max(id) FROM return_corrections "
        "GROUP BY return_id)")]


def add_model(db: Database, *, at: datetime, examples: int, corrections: int, trigger: str,
              params: dict[str, Any]) -> tuple[int, str]:
    """Store a new version (in the caller's transaction) and mark the corrections it used;
    returns (version, model_id)."""
    version = int(db.execute(
        "SELECT coalesce(max(version), 0) + 1 FROM return_models").fetchone()[0])
    model_id = uuid.uuid4().hex
    db.conn.execute(
        "INSERT INTO return_models (version, model_id, trained_at, examples, corrections, "
        "trigger, params) VALUES (:version, :model_id, :at, :examples, :corrections, "
        ":trigger, :params)",
        {"version": version, "model_id": model_id, "at": stamp(at), "examples": examples,
         "corrections": corrections, "trigger": trigger, "params": to_json(params)})
    db.conn.execute("UPDATE return_corrections SET used_in_version = :v "
                    "WHERE used_in_version IS NULL", {"v": version})
    return version, model_id


def pending_corrections(db: Database) -> int:
    row = db.execute(
        "SELECT count(*) FROM return_corrections WHERE used_in_version IS NULL").fetchone()
    return int(row[0])


def last_trained_at(db: Database) -> datetime | None:
    row = db.execute("SELECT max(trained_at) FROM return_models").fetchone()
    return parse_stamp_or_none(row[0])


def add_request(db: Database, row: dict[str, Any], at: datetime) -> int:
    """``row``: every column of :data:`COLUMNS` but id and created_at."""
    cursor = db.conn.execute(
        "INSERT INTO return_requests (order_id, kind, text, predicted, confidence, "
        "model_version, reason, warehouse_id, sku_id, carrier, created_at) VALUES "
        "(:order_id, :kind, :text, :predicted, :confidence, :model_version, :reason, "
        ":warehouse_id, :sku_id, :carrier, :created_at) RETURNING id",
        {**row, "created_at": stamp(at)})
    return int(cursor.fetchone()[0])


def current_reason(db: Database, return_id: int) -> str | None:
    row = db.execute("SELECT reason FROM return_requests WHERE id = :id",
                     {"id": return_id}).fetchone()
    return None if row is None else str(row[0])


def add_correction(db: Database, return_id: int, *, old: str, new: str, actor: str,
                   at: datetime) -> None:
    db.conn.execute(
        "INSERT INTO return_corrections (return_id, old_reason, new_reason, actor, at) "
        "VALUES (:id, :old, :new, :actor, :at)",
        {"id": return_id, "old": old, "new": new, "actor": actor, "at": stamp(at)})
    db.conn.execute("UPDATE return_requests SET reason = :r WHERE id = :id",
                    {"r": new, "id": return_id})


def _view(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(COLUMNS, row, strict=True))
    out["reason_zh"] = REASONS[out["reason"]]
    return out


def get(db: Database, return_id: int) -> dict[str, Any]:
    row = db.execute(f"SELECT {', '.join(COLUMNS)} FROM return_requests WHERE id = :id",
                     {"id": return_id}).fetchone()
    if row is None:
        raise NotFound("return", str(return_id))
    out = _view(row)
    out["corrections"] = [
        dict(zip(("old_reason", "new_reason", "actor", "at", "used_in_version"), c,
                 strict=True))
        for c in db.execute("SELECT old_reason, new_reason, actor, at, used_in_version "
                            "FROM return_corrections WHERE return_id = :id ORDER BY id",
                            {"id": return_id})]
    return out


def recent(db: Database, limit: int) -> list[dict[str, Any]]:
    return [_view(r) for r in db.execute(
        f"SELECT {', '.join(COLUMNS)} FROM return_requests ORDER BY id DESC LIMIT :n",
        {"n": limit})]


def root_causes(db: Database, by: str) -> list[dict[str, Any]]:
    """Returns per warehouse, SKU or carrier and reason (current labels), most first."""
    column = BY_COLUMN[by]
    rows: list[tuple[Any, ...]] = db.execute(
        f"SELECT coalesce({column}, '') AS k, reason, count(*) AS n FROM return_requests "
        "GROUP BY k, reason ORDER BY k, n DESC, reason").fetchall()
    grouped: dict[str, dict[str, int]] = {}
    for key, reason, n in rows:
        grouped.setdefault(key, {})[reason] = int(n)
    out = [{by: key, "returns": sum(reasons.values()),
            "top_reason": next(iter(reasons)), "reasons": reasons}
           for key, reasons in grouped.items()]
    return sorted(out, key=lambda r: (-r["returns"], r[by]))
