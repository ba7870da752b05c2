"""Softmax (multinomial logistic) regression over sparse binary features, pure Python:
the discriminative half of the return-reason classifier
(:mod:`coordinator.intel.classifier`).

Why beside naive Bayes: naive Bayes counts every character n-gram as independent
evidence, so a few n-grams shared with another reason's texts (快递, 袋子, 口味) can
outvote the one that decides; a regression learns how much each feature is worth given
the others. Alone it cross-validated below naive Bayes on the few hundred labelled
texts, but the average of the two did better than either on texts whose cue words the
training texts lacked (``python -m benchmarks returns_cv``, docs/intel.md).

Training: AdaGrad stochastic gradient descent on the weighted log loss with an L2
penalty, a fixed number of epochs over a shuffled order from a fixed seed (the same
examples give the same model). Each text's feature vector is scaled to unit length, so
a long complaint does not outweigh a two-word one, plus a bias feature.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BIAS = "<bias>"
L2 = 1e-4
EPOCHS = 10
LEARNING_RATE = 0.5


def unit_vector(present: Iterable[str]) -> dict[str, float]:
    """Binary features scaled to unit length, plus the bias."""
    keys = set(present)
    value = 1.0 / math.sqrt(len(keys)) if keys else 0.0
    out = dict.fromkeys(keys, value)
    out[BIAS] = 1.0
    return out


@dataclass(slots=True)
class Softmax:
    """Weights per feature, one per class in ``classes`` order."""

    classes: list[str] = field(default_factory=list)
    weights: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def train(cls, rows: Sequence[tuple[Mapping[str, float], str, float]],
              classes: Sequence[str], *, l2: float = L2, epochs: int = EPOCHS,
              learning_rate: float = LEARNING_RATE, seed: int = 0) -> Softmax:
        """``rows``: (features, class, example weight)."""
        names = list(classes)
        k = len(names)
        index = {c: i for i, c in enumerate(names)}
        w: dict[str, list[float]] = {}
        g2: dict[str, list[float]] = {}
        data = []
        for x, label, weight in rows:
            for f in x:
                if f not in w:
                    w[f] = [0.0] * k
                    g2[f] = [1e-8] * k
            data.append(([(w[f], g2[f], v) for f, v in x.items()], index[label], weight))
        order = list(range(len(data)))
        rng = random.Random(seed)
        for _ in range(epochs):
            rng.shuffle(order)
            for j in order:
                feats, y, weight = data[j]
                s = [0.0] * k
                for wf, _, v in feats:
                    for c in range(k):
                        s[c] += wf[c] * v
                top = max(s)
                e = [math.exp(a - top) for a in s]
                z = sum(e)
                err = [weight * e[c] / z for c in range(k)]
                err[y] -= weight
                for wf, gf, v in feats:
                    for c in range(k):
                        g = err[c] * v + l2 * wf[c]
                        gf[c] += g * g
                        wf[c] -= learning_rate * g / math.sqrt(gf[c])
        # rounded as stored (:meth:`to_params`), so a loaded version scores exactly as
        # the one just trained
        return cls(names, {f: [round(v, 3) for v in ws] for f, ws in w.items()})

    def probabilities(self, x: Mapping[str, float]) -> dict[str, float]:
        k = len(self.classes)
        s = [0.0] * k
        for f, v in x.items():
            wf = self.weights.get(f)
            if wf is not None:
                for c in range(k):
                    s[c] += wf[c] * v
        top = max(s, default=0.0)
        e = [math.exp(a - top) for a in s]
        z = sum(e)
        return {name: e[c] / z for c, name in enumerate(self.classes)}

    def to_params(self) -> dict[str, Any]:
        return {"classes": self.classes, "weights": self.weights}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Softmax:
        return cls([str(c) for c in params["classes"]],
                   {str(f): [float(v) for v in ws] for f, ws in params["weights"].items()})
