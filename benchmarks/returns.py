"""Return-reason classifier accuracy on the frozen labelled set's ``test`` part.

``accuracy_before``: the model trained on the shipped texts, the ``train`` part plus
``returns_extra.csv`` (what ships).
``accuracy_after_corrections``: every ``corrections`` text is classified through the
store against a real order, then labelled by an operator through the correction call
(changed where the model was wrong, confirmed where it was right: customer service sets
the label of every return it reviews), and the classifier retrained; then the ``test``
part is scored again.
The ``test`` part is never trained on. The confusion table (true reason -> predicted ->
count) after corrections comes in ``details``. Target: >= 0.89 after corrections.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.runner import Result
from coordinator.catalog import import_file
from coordinator.db import open_database
from coordinator.intake import submit_orders
from coordinator.intel import returns
from coordinator.intel.classifier import REASONS, Example, Model
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from coordinator.settings import AllocationConfig
from protocols.orders import OrderIn, OrderLine

NOW = datetime(2026, 11, 24, 2, 17, tzinfo=UTC)


def _accuracy(model: Model, test: list[Example]) -> tuple[float, Counter[tuple[str, str]]]:
    confusion: Counter[tuple[str, str]] = Counter()
    for ex in test:
        confusion[(ex.reason, model.predict(ex.text)[0])] += 1
    right = sum(n for (truth, guess), n in confusion.items() if truth == guess)
    return right / len(test), confusion


def run(quick: bool) -> Result:
    # the set is small: quick and full runs are the same run
    result = Result("returns")
    test = returns.dataset("test")
    corrections = returns.dataset("corrections")
    with tempfile.TemporaryDirectory() as tmp:
        db = open_database(Path(tmp) / "returns.sqlite")
        for name in SAMPLE_FILES:
            import_file(db, SAMPLE_DIR / f"{name}.csv", NOW)
        order = OrderIn(channel="wechat_mini", channel_order_id="BENCH-RETURNS",
                        store_id="HZ-S001", lines=[OrderLine(sku_id="SKU-0001", qty=1)],
                        lat=30.26, lon=120.16)
        order_id = submit_orders(db, [order], now=NOW, config=AllocationConfig())[0].order_id
        before = returns.current_model(db, NOW)
        accuracy_before, _ = _accuracy(before.model, test)
        started = time.perf_counter()
        agreed = 0
        for ex in corrections:
            stored = returns.classify(db, order_id=order_id, kind="return", text=ex.text,
                                      sku_id=None, carrier=None, now=NOW)
            agreed += stored["reason"] == ex.reason
            # customer service sets the label of every reviewed return: a changed one
            # is a correction, an unchanged one a confirmation; both are labels to learn
            returns.correct(db, stored["id"], reason=ex.reason, actor="benchmark", now=NOW)
        classify_ms = (time.perf_counter() - started) * 1000 / len(corrections)
        started = time.perf_counter()
        after = returns.retrain(db, NOW, trigger="benchmark")
        retrain_ms = (time.perf_counter() - started) * 1000
        accuracy_after, confusion = _accuracy(after.model, test)
        db.conn.close()
    result.add("accuracy_before", accuracy_before, "",
               f"train + extra ({before.examples} texts)", ">= 0.51 (seed)")
    result.add("accuracy_after_corrections", accuracy_after, "",
               f"train + extra + {len(corrections)} reviewed labels "
               f"({len(corrections) - agreed} changed)", ">= 0.89")
    result.add("corrections_part_agreement", agreed / len(corrections), "",
               "the corrections part as first classified")
    result.add("mean_confidence_after", sum(after.model.predict(ex.text)[1] for ex in test)
               / len(test), "", "calibration: compare with accuracy_after_corrections")
    result.add("test_texts", float(len(test)), "texts")
    result.add("classify_store_ms", classify_ms, "ms", "classify + store one request")
    result.add("retrain_ms", retrain_ms, "ms", "retrain on train + extra + corrections")
    result.details["confusion_after"] = {
        truth: {guess: confusion[(truth, guess)] for guess in REASONS
                if confusion[(truth, guess)]} for truth in REASONS}
    return result
