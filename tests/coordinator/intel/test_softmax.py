"""The softmax regression behind the return classifier: it learns, weighs examples, and
a stored model scores as the trained one."""

from __future__ import annotations

import json

from coordinator.intel.softmax import BIAS, Softmax, unit_vector

ROWS = [(unit_vector(["送", "慢"]), "late", 1.0), (unit_vector(["太", "慢"]), "late", 1.0),
        (unit_vector(["少", "发"]), "missing", 1.0), (unit_vector(["少", "件"]), "missing", 1.0)]


def test_it_learns_which_features_tell_the_classes_apart() -> None:
    model = Softmax.train(ROWS, ["late", "missing"])
    assert model.probabilities(unit_vector(["慢"]))["late"] > 0.8
    assert model.probabilities(unit_vector(["少"]))["missing"] > 0.8
    # an unseen feature is no evidence: the bias alone decides, and the classes are even
    unseen = model.probabilities(unit_vector(["猫"]))
    assert abs(unseen["late"] - unseen["missing"]) < 0.05


def test_an_example_weighted_higher_pulls_harder() -> None:
    contested = [(unit_vector(["口味"]), "taste", 1.0), (unit_vector(["口味"]), "wrong", 1.0)]
    even = Softmax.train(contested, ["taste", "wrong"]).probabilities(unit_vector(["口味"]))
    heavy = Softmax.train([contested[0], (contested[1][0], "wrong", 3.0)],
                          ["taste", "wrong"]).probabilities(unit_vector(["口味"]))
    assert abs(even["taste"] - even["wrong"]) < 0.05
    assert heavy["wrong"] > 0.65


def test_the_same_examples_give_the_same_model_and_it_round_trips_through_json() -> None:
    one = Softmax.train(ROWS, ["late", "missing"])
    assert Softmax.train(ROWS, ["late", "missing"]) == one
    again = Softmax.from_params(json.loads(json.dumps(one.to_params())))
    x = unit_vector(["送", "少", "猫"])
    assert again.probabilities(x) == one.probabilities(x)


def test_a_vector_has_unit_length_and_a_bias() -> None:
    x = unit_vector(["a", "b", "c", "d"])
    assert x.pop(BIAS) == 1.0
    assert abs(sum(v * v for v in x.values()) - 1.0) < 1e-12
    assert unit_vector([]) == {BIAS: 1.0}
