"""The return-reason classifier on the fresh-wording check
(``coordinator/intel/data/returns_fresh.csv``): 100 texts that are not part of the
frozen labelled set, written from the reason definitions with products and wording of
their own (see the README beside them).

The model is trained as the ``returns`` benchmark trains it: the shipped texts, the
``train`` part and ``returns_extra.csv`` (``fresh_before``), then plus the ``corrections``
part at the correction weight
(``fresh_after``). The previous design (naive Bayes alone) is scored beside it on the
same texts. This file chooses nothing: settings come from ``returns_cv`` only.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from benchmarks.runner import Result
from coordinator.intel import classifier, returns
from coordinator.intel.classifier import REASONS, Example, Model

FRESH = Path(returns.__file__).parent / "data" / "returns_fresh.csv"


def fresh() -> list[Example]:
    with FRESH.open(encoding="utf-8", newline="") as f:
        return [Example(r["text"], r["label"]) for r in csv.DictReader(f)]


def _score(model: Model, texts: list[Example]) -> tuple[float, float, Counter[tuple[str, str]]]:
    confusion: Counter[tuple[str, str]] = Counter()
    confidence = 0.0
    for ex in texts:
        reason, p = model.predict(ex.text)
        confusion[(ex.reason, reason)] += 1
        confidence += p
    right = sum(n for (truth, guess), n in confusion.items() if truth == guess)
    return right / len(texts), confidence / len(texts), confusion


def run(quick: bool) -> Result:
    # 100 texts: quick and full runs are the same run
    result = Result("returns_fresh")
    texts = fresh()
    train = returns.shipped()
    after = train + [Example(e.text, e.reason, classifier.CORRECTION_WEIGHT)
                     for e in returns.dataset("corrections")]
    before, _, _ = _score(Model.train(train), texts)
    accuracy, confidence, confusion = _score(Model.train(after), texts)
    # naive Bayes alone, as shipped before the average (its confidence was tempered by 3)
    previous = Model.train(after, mix=1.0, temperature=1.0)
    previous_accuracy, _, _ = _score(previous, texts)
    result.add("fresh_texts", float(len(texts)), "texts")
    result.add("fresh_before", before, "", "train + extra")
    result.add("fresh_after", accuracy, "", "train + extra + corrections part", ">= 0.89")
    result.add("fresh_mean_confidence", confidence, "", "compare with fresh_after")
    result.add("fresh_after_nb_alone", previous_accuracy, "",
               "previous design (naive Bayes alone), same training")
    result.details["confusion_after"] = {
        truth: {guess: confusion[(truth, guess)] for guess in REASONS
                if confusion[(truth, guess)]} for truth in REASONS}
    return result
