"""Choosing the return-reason classifier's settings by k-fold cross-validation on the
labelled set's ``train`` and ``corrections`` parts only: the ``test`` part is never read
here (``python -m benchmarks returns`` scores it once the design is fixed).

Each fold is held out in turn; the model is trained on the rest as the benchmark trains
it: ``train``-part texts with weight 1 (``cv_before``: those only), ``corrections``-part
texts with the correction weight (``cv_after``). Folds are stratified by reason and
drawn with fixed seeds, so a run is reproducible. Steps:

1. alpha x lexicon weight x negation, at the shipped correction weight;
2. the correction weight, at the best of step 1;
3. the confidence temperature, by the log loss of the held-out texts.

The chosen values are printed beside the ones the classifier ships
(:mod:`coordinator.intel.classifier`), and ``shipped_is_best`` says whether they agree
(1) or the shipped ones are within 0.005 of the best after corrections (0.5).
"""

from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.runner import Result
from coordinator.intel import classifier, returns
from coordinator.intel.classifier import Example, Model

Tagged = tuple[Example, bool]  # (example, from the corrections part)


def folds(k: int, seed: int) -> list[list[Tagged]]:
    """The train and corrections parts in ``k`` folds, stratified by reason."""
    tagged = ([(e, False) for e in returns.dataset("train")]
              + [(e, True) for e in returns.dataset("corrections")])
    by_reason: defaultdict[str, list[Tagged]] = defaultdict(list)
    for item in tagged:
        by_reason[item[0].reason].append(item)
    rng = random.Random(seed)
    out: list[list[Tagged]] = [[] for _ in range(k)]
    i = 0
    for reason in sorted(by_reason):
        items = by_reason[reason]
        rng.shuffle(items)
        for item in items:
            out[i % k].append(item)
            i += 1
    return out


@dataclass(frozen=True, slots=True)
class Score:
    before: float  # trained on the train part of the other folds
    after: float  # plus their corrections part, weighted
    log_loss: dict[float, float]  # temperature -> mean log loss (after)


def cross_validate(settings: dict[str, Any], *, k: int, repeats: int,
                   temperatures: tuple[float, ...] = ()) -> Score:
    correction_weight = float(settings.get("correction_weight", classifier.CORRECTION_WEIGHT))
    train: Callable[[list[Example]], Model] = lambda ex: Model.train(ex, **settings)  # noqa: E731
    right_before = right_after = n = 0
    losses: defaultdict[float, float] = defaultdict(float)
    for seed in range(repeats):
        parts = folds(k, seed)
        for i, held in enumerate(parts):
            rest = [item for j, part in enumerate(parts) if j != i for item in part]
            before = train([e for e, corrected in rest if not corrected])
            after = train([Example(e.text, e.reason, correction_weight) if corrected else e
                           for e, corrected in rest])
            for e, _ in held:
                right_before += before.predict(e.text)[0] == e.reason
                right_after += after.predict(e.text)[0] == e.reason
                for t in temperatures:
                    p = after.scores(e.text, temperature=t).get(e.reason, 0.0)
                    losses[t] -= math.log(max(p, 1e-12))
                n += 1
    return Score(right_before / n, right_after / n, {t: v / n for t, v in losses.items()})


def run(quick: bool) -> Result:
    result = Result("returns_cv")
    k, repeats = (5, 1) if quick else (5, 4)
    shipped = {"alpha": classifier.ALPHA, "lexicon_weight": classifier.LEXICON_WEIGHT,
               "negation": True}
    grid = ([shipped, {**shipped, "lexicon_weight": 0}] if quick else
            [{"alpha": a, "lexicon_weight": w, "negation": neg} for a, w, neg in
             itertools.product((0.5, 1.0, 2.0, 3.0), (0, 2, 4, 6), (True, False))])
    table: dict[str, list[float]] = {}
    scored: list[tuple[float, float, dict[str, Any]]] = []
    for settings in grid:
        score = cross_validate(settings, k=k, repeats=repeats)
        key = (f"alpha={settings['alpha']} lexicon_weight={settings['lexicon_weight']} "
               f"negation={settings['negation']}")
        table[key] = [round(score.before, 4), round(score.after, 4)]
        scored.append((score.after, score.before, settings))
    # the best after corrections; ties go to the better before, then the earlier
    best = max(scored, key=lambda s: (round(s[0], 6), round(s[1], 6)))[2]
    weights: dict[str, float] = {}
    for cw in (1.0, 2.0) if quick else (1.0, 2.0, 3.0, 5.0):
        weights[str(cw)] = cross_validate({**best, "correction_weight": cw}, k=k,
                                          repeats=repeats).after
    best_cw = float(max(weights, key=lambda w: (round(weights[w], 6), -float(w))))
    temperatures = (1.0, 2.0, 3.0) if quick else (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
    chosen = cross_validate({**best, "correction_weight": best_cw}, k=k, repeats=repeats,
                            temperatures=temperatures)
    best_t = min(chosen.log_loss, key=lambda t: chosen.log_loss[t])
    at_shipped = cross_validate({**shipped, "correction_weight": classifier.CORRECTION_WEIGHT},
                                k=k, repeats=repeats)
    agree = (best == shipped and best_cw == classifier.CORRECTION_WEIGHT
             and best_t == classifier.TEMPERATURE)
    near = chosen.after - at_shipped.after <= 0.005
    result.add("folds", float(k), "", f"{repeats} repeat(s), stratified, fixed seeds")
    result.add("cv_before", chosen.before, "", "chosen settings, train part of the rest")
    result.add("cv_after", chosen.after, "", "chosen settings, + corrections part")
    result.add("cv_after_shipped", at_shipped.after, "", "the settings the classifier ships")
    result.add("cv_before_shipped", at_shipped.before, "")
    result.add("no_lexicon_after", cross_validate(
        {**shipped, "lexicon_weight": 0}, k=k, repeats=repeats).after, "",
        "shipped settings without the lexicon's concept features")
    result.add("chosen_alpha", float(best["alpha"]))
    result.add("chosen_lexicon_weight", float(best["lexicon_weight"]))
    result.add("chosen_negation", float(best["negation"]))
    result.add("chosen_correction_weight", best_cw)
    result.add("chosen_temperature", best_t, "", "lowest held-out log loss")
    result.add("shipped_is_best", 1.0 if agree else 0.5 if near else 0.0)
    result.details["grid_before_after"] = table
    result.details["correction_weight_after"] = weights
    result.details["temperature_log_loss"] = {str(t): round(v, 4)
                                              for t, v in chosen.log_loss.items()}
    return result
