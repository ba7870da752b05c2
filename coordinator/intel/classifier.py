"""The return-reason classifier: character n-grams, a cue lexicon and multinomial naive
Bayes, pure Python.

Why this and not a library: the set is a few hundred short Chinese texts, retraining
must take milliseconds inside a request on a head-office box without a GPU, and the
whole model must fit in one JSON row with its version. Character n-grams need no word
segmenter (Chinese has no spaces) and tolerate typos and new product names; naive Bayes
learns from a few examples per reason and retrains by counting. scikit-learn would add
~40 MB of wheels (numpy, scipy) for the same counting; a softmax regression written
here did no better in cross-validation (0.87 against 0.88 then) and trained over
10x slower (an experiment during the design, not kept).

Features (:func:`features`): character 1- to 3-grams of the text with punctuation and
spaces removed, counted once per text (a repeated word is not more evidence), digits
folded to ``0``; plus, per reason of :data:`coordinator.intel.lexicon.LEXICON` with a
cue in the text, the concept feature ``@reason`` counted ``lexicon_weight`` times, or
``!reason`` once when every cue found is negated (没坏, 不是质量问题, 没有过期).
Alpha, the lexicon weight, negation and the correction weight were chosen by k-fold
cross-validation on the train and corrections parts only (``python -m benchmarks
returns_cv``); the test part chose nothing.
Corrections carry ``correction_weight`` (an operator's label is recent and
deliberate). Confidence is the posterior probability of the chosen reason, tempered (see
``temperature``).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from coordinator.intel.lexicon import LEXICON

REASONS: dict[str, str] = {
    "packaging_damaged": "包装破损",
    "damaged_in_transit": "物流损毁",
    "quality_defect": "质量问题",
    "taste_mismatch": "口味不符",
    "wrong_item": "发错货",
    "missing_item": "少件漏发",
    "near_expiry": "临期过期",
    "late_delivery": "送达超时",
    "changed_mind": "不想要",
    "other": "其他",
}
_DROP = re.compile(r"[\s\W_]+", re.UNICODE)
_DIGITS = re.compile(r"\d")


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    reason: str
    weight: float = 1.0


# a cue right after one of these is negated; cues that are themselves negative phrases
# (不想要, 没收到, 不新鲜) keep their meaning after a single 没/不 is taken as theirs
_NEGATORS = "没未无非别"
_NEGATING_PAIRS = ("没有", "不是", "并不", "没什", "并没", "也没", "都没", "从没")
# chosen by cross-validation on the train and corrections parts (``returns_cv``)
ALPHA = 3.0
LEXICON_WEIGHT = 6
CORRECTION_WEIGHT = 2.0
TEMPERATURE = 3.0
# bumped whenever :func:`features` changes: a stored model counted other features, so
# :func:`coordinator.intel.returns.current_model` retrains instead of using it
FEATURES_VERSION = 2


def _negated(clean: str, at: int, cue: str) -> bool:
    if clean[max(0, at - 2):at] in _NEGATING_PAIRS:
        return True
    return at > 0 and clean[at - 1] in _NEGATORS and cue[0] not in _NEGATORS + "不"


def features(text: str, *, lexicon_weight: int = LEXICON_WEIGHT, negation: bool = True,
             orders: Sequence[int] = (1, 2, 3)) -> dict[str, int]:
    """Feature -> count (see the module docstring)."""
    clean = _DIGITS.sub("0", _DROP.sub("", text.lower()))
    out: dict[str, int] = {}
    for n in orders:
        for i in range(len(clean) - n + 1):
            out[clean[i:i + n]] = 1
    for reason, cues in LEXICON.items():
        plain = negated = False
        for cue in cues:
            at = clean.find(cue)
            while at >= 0 and not plain:
                if negation and _negated(clean, at, cue):
                    negated = True
                else:
                    plain = True
                at = clean.find(cue, at + 1)
            if plain:
                break
        if plain:
            out[f"@{reason}"] = lexicon_weight
        elif negated:
            out[f"!{reason}"] = 1
    return out


@dataclass(slots=True)
class Model:
    """Counts per reason; ``predict`` is pure, ``train`` builds a new model. The feature
    settings travel with the counts, so a stored version classifies as it was trained."""

    alpha: float = ALPHA
    correction_weight: float = CORRECTION_WEIGHT
    lexicon_weight: int = LEXICON_WEIGHT
    negation: bool = True
    # naive Bayes multiplies dozens of n-gram likelihoods as if independent, so its raw
    # posteriors say 100 % for nearly everything; dividing the log scores by the
    # temperature (chosen by cross-validated log loss, ``returns_cv``) makes the
    # confidence mean what it says. The ranking is unchanged.
    temperature: float = TEMPERATURE
    features_version: int = FEATURES_VERSION
    doc_counts: dict[str, float] = field(default_factory=dict)
    gram_counts: dict[str, dict[str, float]] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)
    vocabulary: int = 0

    @classmethod
    def train(cls, examples: Iterable[Example], *, alpha: float = ALPHA,
              correction_weight: float = CORRECTION_WEIGHT,
              lexicon_weight: int = LEXICON_WEIGHT, negation: bool = True,
              temperature: float = TEMPERATURE) -> Model:
        docs: defaultdict[str, float] = defaultdict(float)
        grams: defaultdict[str, defaultdict[str, float]] = defaultdict(
            lambda: defaultdict(float))
        vocab: set[str] = set()
        for ex in examples:
            if ex.reason not in REASONS:
                raise ValueError(f"reason {ex.reason!r} is not in the pool")
            docs[ex.reason] += ex.weight
            seen = features(ex.text, lexicon_weight=lexicon_weight, negation=negation)
            for g, n in seen.items():
                grams[ex.reason][g] += ex.weight * n
                vocab.add(g)
        return cls(alpha=alpha, correction_weight=correction_weight,
                   lexicon_weight=lexicon_weight, negation=negation,
                   temperature=temperature, doc_counts=dict(docs),
                   gram_counts={r: dict(c) for r, c in grams.items()},
                   totals={r: sum(c.values()) for r, c in grams.items()},
                   vocabulary=len(vocab))

    def log_scores(self, text: str) -> dict[str, float]:
        """Unnormalised log posterior per reason (before tempering)."""
        grams = features(text, lexicon_weight=self.lexicon_weight, negation=self.negation)
        all_docs = sum(self.doc_counts.values())
        v = self.vocabulary + 1
        logs: dict[str, float] = {}
        for reason, docs in self.doc_counts.items():
            counts = self.gram_counts.get(reason, {})
            denominator = math.log(self.totals.get(reason, 0.0) + self.alpha * v)
            total = math.log(docs / all_docs)
            for g, n in grams.items():
                total += n * (math.log(counts.get(g, 0.0) + self.alpha) - denominator)
            logs[reason] = total
        return logs

    def scores(self, text: str, *, temperature: float | None = None) -> dict[str, float]:
        """Posterior probability per reason (sums to 1)."""
        if not sum(self.doc_counts.values()):
            return {"other": 1.0}
        logs = self.log_scores(text)
        t = self.temperature if temperature is None else temperature
        top = max(logs.values())
        exp = {r: math.exp((s - top) / t) for r, s in logs.items()}
        norm = sum(exp.values())
        return {r: e / norm for r, e in exp.items()}

    def predict(self, text: str) -> tuple[str, float]:
        scores = self.scores(text)
        reason = max(scores, key=lambda r: (scores[r], r == "other"))
        return reason, scores[reason]

    def to_params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "correction_weight": self.correction_weight,
                "lexicon_weight": self.lexicon_weight, "negation": self.negation,
                "temperature": self.temperature, "features_version": self.features_version,
                "doc_counts": self.doc_counts, "gram_counts": self.gram_counts,
                "totals": self.totals, "vocabulary": self.vocabulary}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Model:
        # versions stored before features_version existed counted version 1's features
        return cls(alpha=float(params["alpha"]),
                   correction_weight=float(params["correction_weight"]),
                   lexicon_weight=int(params.get("lexicon_weight", 3)),
                   negation=bool(params.get("negation", False)),
                   temperature=float(params.get("temperature", 2.0)),
                   features_version=int(params.get("features_version", 1)),
                   doc_counts=params["doc_counts"], gram_counts=params["gram_counts"],
                   totals=params["totals"], vocabulary=int(params["vocabulary"]))
