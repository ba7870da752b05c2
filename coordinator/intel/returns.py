"""Return reasons: classify a request, correct a label, retrain, root causes (the store of
``return_requests``, ``return_corrections`` and ``return_models``).

The first classification trains version 1 from the shipped ``train`` part of the
labelled set. Every retrain (on a schedule, on demand) trains a new version on that part
plus every correction so far (a corrected text counts ``correction_weight`` times); each
classification records the version that made it, each correction who made it and which
version first learned from it.
"""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlite_utils import Database

from coordinator.errors import NotFound
from coordinator.intel.classifier import REASONS, Example, Model
from coordinator.store import iso, to_json, write_transaction

DATASET = Path(__file__).parent / "data" / "returns_labelled.csv"
Split = Literal["train", "corrections", "test"]
RootCauseBy = Literal["warehouse", "sku", "carrier"]
_BY_COLUMN: dict[str, str] = {"warehouse": "warehouse_id", "sku": "sku_id",
                              "carrier": "carrier"}


class UnknownReason(ValueError):
    """A reason that is not in the pool; ``field`` names where it came from."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        super().__init__(f"{reason!r} is not one of {', '.join(REASONS)}")


def dataset(split: Split) -> list[Example]:
    with DATASET.open(encoding="utf-8", newline="") as f:
        return [Example(r["text"], r["label"]) for r in csv.DictReader(f)
                if r["split"] == split]


@dataclass(frozen=True, slots=True)
class TrainedModel:
    version: int
    model: Model
    examples: int
    corrections: int
    trained_at: str


_cache: dict[tuple[str, int], TrainedModel] = {}
_cache_lock = threading.Lock()


def _db_key(db: Database) -> str:
    row = db.execute("PRAGMA database_list").fetchone()
    return str(row[2])


def _load(db: Database, version: int) -> TrainedModel:
    key = (_db_key(db), version)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    row = db.execute("SELECT version, params, examples, corrections, trained_at "
                     "FROM return_models WHERE version = :v", {"v": version}).fetchone()
    trained = TrainedModel(row[0], Model.from_params(json.loads(row[1])), row[2], row[3],
                           row[4])
    with _cache_lock:
        _cache[key] = trained
    return trained


def current_model(db: Database, now: datetime) -> TrainedModel:
    """The latest version; trains version 1 from the shipped set the first time."""
    row = db.execute("SELECT max(version) FROM return_models").fetchone()
    if row[0] is None:
        return retrain(db, now, trigger="seed")
    return _load(db, int(row[0]))


def retrain(db: Database, now: datetime, *, trigger: str) -> TrainedModel:
    """Train a new version on the shipped train part plus every correction."""
    with write_transaction(db):
        if trigger == "seed":  # another thread may have seeded while this one waited
            row = db.execute("SELECT max(version) FROM return_models").fetchone()
            if row[0] is not None:
                return _load(db, int(row[0]))
        base = Model()
        corrections = db.execute(
            "SELECT r.text, c.new_reason FROM return_corrections c JOIN return_requests r "
            "ON r.id = c.return_id WHERE c.id IN (SELECT max(id) FROM return_corrections "
            "GROUP BY return_id)").fetchall()
        examples = dataset("train") + [Example(text, reason, base.correction_weight)
                                       for text, reason in corrections]
        model = Model.train(examples)
        version = int(db.execute(
            "SELECT coalesce(max(version), 0) + 1 FROM return_models").fetchone()[0])
        db.conn.execute(
            "INSERT INTO return_models (version, trained_at, examples, corrections, trigger, "
            "params) VALUES (:version, :at, :examples, :corrections, :trigger, :params)",
            {"version": version, "at": iso(now), "examples": len(examples),
             "corrections": len(corrections), "trigger": trigger,
             "params": to_json(model.to_params())})
        db.conn.execute("UPDATE return_corrections SET used_in_version = :v "
                        "WHERE used_in_version IS NULL", {"v": version})
    return _load(db, version)


def pending_corrections(db: Database) -> int:
    row = db.execute(
        "SELECT count(*) FROM return_corrections WHERE used_in_version IS NULL").fetchone()
    return int(row[0])


def last_trained_at(db: Database) -> datetime | None:
    row = db.execute("SELECT max(trained_at) FROM return_models").fetchone()
    return None if row[0] is None else datetime.fromisoformat(row[0])


def _order(db: Database, order_id: str) -> tuple[str | None, list[str]]:
    row = db.execute("SELECT warehouse_id, items FROM orders WHERE id = :id",
                     {"id": order_id}).fetchone()
    if row is None:
        raise NotFound("order", order_id)
    skus = [str(item.get("sku_id")) for item in json.loads(row[1] or "[]")
            if isinstance(item, dict)]
    return row[0], skus


def classify(db: Database, *, order_id: str, kind: str, text: str, sku_id: str | None,
             carrier: str | None, now: datetime) -> dict[str, Any]:
    """Classify and store a return request; an unknown order raises :class:`NotFound`
    before anything is written."""
    warehouse_id, skus = _order(db, order_id)
    if sku_id is not None and sku_id not in skus:
        raise NotFound("sku on this order", sku_id)
    trained = current_model(db, now)
    reason, confidence = trained.model.predict(text)
    with write_transaction(db):
        cursor = db.conn.execute(
            "INSERT INTO return_requests (order_id, kind, text, predicted, confidence, "
            "model_version, reason, warehouse_id, sku_id, carrier, created_at) VALUES "
            "(:order_id, :kind, :text, :reason, :confidence, :version, :reason, "
            ":warehouse_id, :sku_id, :carrier, :at)",
            {"order_id": order_id, "kind": kind, "text": text, "reason": reason,
             "confidence": confidence, "version": trained.version,
             "warehouse_id": warehouse_id, "sku_id": sku_id or (skus[0] if skus else None),
             "carrier": carrier, "at": iso(now)})
        return_id = int(cursor.lastrowid or 0)
    return get(db, return_id)


def correct(db: Database, return_id: int, *, reason: str, actor: str,
            now: datetime) -> dict[str, Any]:
    if reason not in REASONS:
        raise UnknownReason("reason", reason)
    with write_transaction(db):
        row = db.execute("SELECT reason FROM return_requests WHERE id = :id",
                         {"id": return_id}).fetchone()
        if row is None:
            raise NotFound("return", str(return_id))
        db.conn.execute(
            "INSERT INTO return_corrections (return_id, old_reason, new_reason, actor, at) "
            "VALUES (:id, :old, :new, :actor, :at)",
            {"id": return_id, "old": row[0], "new": reason, "actor": actor, "at": iso(now)})
        db.conn.execute("UPDATE return_requests SET reason = :r WHERE id = :id",
                        {"r": reason, "id": return_id})
    return get(db, return_id)


_COLUMNS = ("id", "order_id", "kind", "text", "predicted", "confidence", "model_version",
            "reason", "warehouse_id", "sku_id", "carrier", "created_at")


def _view(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(_COLUMNS, row, strict=True))
    out["reason_zh"] = REASONS[out["reason"]]
    return out


def get(db: Database, return_id: int) -> dict[str, Any]:
    row = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM return_requests WHERE id = :id",
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
        f"SELECT {', '.join(_COLUMNS)} FROM return_requests ORDER BY id DESC LIMIT :n",
        {"n": limit})]


def root_causes(db: Database, by: RootCauseBy) -> list[dict[str, Any]]:
    """Returns per warehouse, SKU or carrier and reason (current labels), most first."""
    column = _BY_COLUMN[by]
    rows: Iterator[tuple[Any, ...]] = db.execute(
        f"SELECT coalesce({column}, '') AS k, reason, count(*) AS n FROM return_requests "
        "GROUP BY k, reason ORDER BY k, n DESC, reason")
    grouped: dict[str, dict[str, int]] = {}
    for key, reason, n in rows:
        grouped.setdefault(key, {})[reason] = int(n)
    out = [{by: key, "returns": sum(reasons.values()),
            "top_reason": next(iter(reasons)), "reasons": reasons}
           for key, reasons in grouped.items()]
    return sorted(out, key=lambda r: (-r["returns"], r[by]))
