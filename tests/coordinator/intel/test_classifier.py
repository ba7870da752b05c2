"""The return classifier's model: the naive Bayes and regression average, the lexicon as
features, the settings travelling with a stored version."""

from __future__ import annotations

import math

from coordinator.intel.classifier import REASONS, Example, Model, combine, features

EXAMPLES = [Example(text, reason) for reason, text in (
    ("late_delivery", "送太慢了"), ("late_delivery", "等了两个小时才到"),
    ("missing_item", "少发一袋"), ("missing_item", "赠品没给"),
    ("taste_mismatch", "猫不吃这个口味"), ("near_expiry", "快过期了"))]


def test_the_average_of_both_models_is_a_distribution_over_the_pool() -> None:
    model = Model.train(EXAMPLES)
    assert model.softmax is not None and 0 < model.mix < 1
    for text in ("太慢", "少了一袋还快过期", "", "!!!"):
        scores = model.scores(text)
        assert set(scores) <= set(REASONS) and math.isclose(sum(scores.values()), 1.0)
    assert model.predict("这次又送太慢")[0] == "late_delivery"


def test_naive_bayes_alone_trains_no_regression_and_mix_one_ignores_it() -> None:
    alone = Model.train(EXAMPLES, mix=1.0)
    assert alone.softmax is None
    logs = {"late_delivery": -1.0, "missing_item": -4.0}
    lr = {"late_delivery": 0.0, "missing_item": 1.0}
    assert combine(logs, lr, nb_temperature=1.0, mix=1.0, temperature=1.0) == combine(
        logs, None, nb_temperature=1.0, mix=1.0, temperature=1.0)
    # an even average of two opposite certainties is a tie; tempering keeps the order
    half = combine(logs, lr, nb_temperature=1e-3, mix=0.5, temperature=1.0)
    assert math.isclose(half["late_delivery"], half["missing_item"])
    sharp = combine(logs, None, nb_temperature=3.0, mix=1.0, temperature=0.5)
    soft = combine(logs, None, nb_temperature=3.0, mix=1.0, temperature=1.0)
    assert sharp["late_delivery"] > soft["late_delivery"] > 0.5


def test_lexicon_weight_zero_means_no_concept_features_at_all() -> None:
    assert not any(f[0] in "@!" for f in features("东西没坏也没过期，就是想退",
                                                   lexicon_weight=0))
    assert "@near_expiry" in features("快过期了")


def test_a_stored_version_scores_as_the_trained_one() -> None:
    model = Model.train(EXAMPLES, alpha=1.0, mix=0.3, temperature=0.75)
    again = Model.from_params(model.to_params())
    assert (again.alpha, again.mix, again.temperature) == (1.0, 0.3, 0.75)
    assert again.scores("太慢还少发") == model.scores("太慢还少发")


def test_a_version_stored_before_the_average_loads_as_naive_bayes_alone() -> None:
    params = Model.train(EXAMPLES, mix=1.0).to_params()
    for key in ("nb_temperature", "mix", "softmax"):
        del params[key]
    params.update(features_version=2, temperature=3.0)
    old = Model.from_params(params)
    assert (old.mix, old.nb_temperature, old.temperature, old.softmax) == (1.0, 3.0, 1.0, None)
    assert old.predict("太慢")[0] == "late_delivery"
