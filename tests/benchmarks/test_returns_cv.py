"""Cross-validation of the return classifier: the restricted-lexicon estimate keeps only
the cues its training texts use, and the folds hold the extra texts but never a
test-part text."""

from __future__ import annotations

from benchmarks.returns_cv import folds, restricted_lexicon
from coordinator.intel import returns
from coordinator.intel.classifier import features


def test_a_restricted_lexicon_keeps_only_the_cues_its_texts_use() -> None:
    lexicon = restricted_lexicon(["快过期了", "送太慢了！"])
    assert "过期" in lexicon["near_expiry"] and "临期" not in lexicon["near_expiry"]
    assert "太慢" in lexicon["late_delivery"] and lexicon["wrong_item"] == ()
    assert "@near_expiry" not in features("临期", lexicon=lexicon)


def test_the_folds_hold_the_train_corrections_and_extra_texts_and_no_test_text() -> None:
    parts = folds(5, seed=0)
    texts = [e.text for part in parts for e, _ in part]
    allowed = {e.text for e in returns.shipped() + returns.dataset("corrections")}
    assert len(returns.extra()) >= 500 and set(returns.extra()) <= set(returns.shipped())
    assert len(texts) == len(allowed) and set(texts) == allowed
    assert not set(texts) & {e.text for e in returns.dataset("test")}
