"""Return reasons: classify a request, correct a label, retrain (SQL in
:mod:`coordinator.intel.returns_store`).

The first classification trains version 1 from the shipped training texts: the ``train``
part of the labelled set plus ``returns_extra.csv`` (:func:`shipped`). Every retrain (on a
schedule, on demand) trains a new version on those plus the latest label of every
corrected return (weighted ``correction_weight``); each
classification records the version that made it, each correction who made it and which
version first learned from it.
"""

from __future__ import annotations

import csv
import json
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from coordinator.db import Database, write_transaction
from coordinator.errors import NotFound
from coordinator.intel import returns_store
from coordinator.intel.classifier import (
    CORRECTION_WEIGHT,
    FEATURES_VERSION,
    REASONS,
    Example,
    Model,
)
from coordinator.queries import get_order

DATASET = Path(__file__).parent / "data" / "returns_labelled.csv"
# more training texts, written apart from the labelled set's test part (see the README)
EXTRA = Path(__file__).parent / "data" / "returns_extra.csv"
Split = Literal["train", "corrections", "test"]
RootCauseBy = Literal["warehouse", "sku", "carrier"]


class UnknownReason(ValueError):
    """A reason that is not in the pool; ``field`` names where it came from."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        super().__init__(f"{reason!r} is not one of {', '.join(REASONS)}")


def dataset(split: Split) -> list[Example]:
    with DATASET.open(encoding="utf-8", newline="") as f:
        return [Example(r["text"], r["label"]) for r in csv.DictReader(f)
                if r["split"] == split]


def extra() -> list[Example]:
    with EXTRA.open(encoding="utf-8", newline="") as f:
        return [Example(r["text"], r["label"]) for r in csv.DictReader(f)]


def shipped() -> list[Example]:
    """What every version learns from before corrections: the ``train`` part and the
    extra texts (never the ``test`` part)."""
    return dataset("train") + extra()


@dataclass(frozen=True, slots=True)
class TrainedModel:
    version: int
    model: Model
    examples: int
    corrections: int
    trained_at: str


# parsed models by model_id: a stored model never changes (ids are random, so two
# databases never share one)
_cache: dict[str, TrainedModel] = {}
_cache_lock = threading.Lock()


def _load(db: Database, version: int, key: str) -> TrainedModel:
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    row = returns_store.model_row(db, version)
    trained = TrainedModel(row[0], Model.from_params(json.loads(row[1])), row[2], row[3],
                           row[4])
    with _cache_lock:
        _cache[key] = trained
    return trained


def current_model(db: Database, now: datetime) -> TrainedModel:
    """The latest version; trains version 1 from the shipped set the first time, and a
    new version when the latest one counted another release's features."""
    latest = returns_store.latest_model(db)
    if latest is None:
        return retrain(db, now, trigger="seed")
    trained = _load(db, *latest)
    if trained.model.features_version != FEATURES_VERSION:
        return retrain(db, now, trigger="features")
    return trained


def retrain(db: Database, now: datetime, *, trigger: str) -> TrainedModel:
    """Train a new version on the shipped texts plus every correction."""
    with write_transaction(db):
        if trigger in ("seed", "features"):  # another thread may have done it meanwhile
            latest = returns_store.latest_model(db)
            if latest is not None:
                current = _load(db, *latest)
                if current.model.features_version == FEATURES_VERSION:
                    return current
        weight = CORRECTION_WEIGHT
        corrections = returns_store.latest_corrections(db)
        examples = shipped() + [Example(text, reason, weight)
                                       for text, reason in corrections]
        model = Model.train(examples)
        version, model_id = returns_store.add_model(
            db, at=now, examples=len(examples), corrections=len(corrections),
            trigger=trigger, params=model.to_params())
    return _load(db, version, model_id)


def classify(db: Database, *, order_id: str, kind: str, text: str, sku_id: str | None,
             carrier: str | None, now: datetime) -> dict[str, Any]:
    """Classify and store a return request; an unknown order (or a SKU not on it) raises
    :class:`NotFound` before anything is written."""
    order = get_order(db, order_id)
    skus = [str(item.get("sku_id")) for item in order["items"] if isinstance(item, dict)]
    if sku_id is not None and sku_id not in skus:
        raise NotFound("sku on this order", sku_id)
    trained = current_model(db, now)
    reason, confidence = trained.model.predict(text)
    with write_transaction(db):
        return_id = returns_store.add_request(db, {
            "order_id": order_id, "kind": kind, "text": text, "predicted": reason,
            "confidence": confidence, "model_version": trained.version, "reason": reason,
            "warehouse_id": order["warehouse_id"],
            "sku_id": sku_id or (skus[0] if skus else None), "carrier": carrier}, now)
    return returns_store.get(db, return_id)


def correct(db: Database, return_id: int, *, reason: str, actor: str,
            now: datetime) -> dict[str, Any]:
    if reason not in REASONS:
        raise UnknownReason("reason", reason)
    with write_transaction(db):
        old = returns_store.current_reason(db, return_id)
        if old is None:
            raise NotFound("return", str(return_id))
        returns_store.add_correction(db, return_id, old=old, new=reason, actor=actor, at=now)
    return returns_store.get(db, return_id)
