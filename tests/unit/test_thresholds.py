"""The decision rule of a post-processed model (humane.fairness.thresholds): per-group thresholds, else p >= threshold.

Fitted on the validation rows of data with a known injected bias (`tests.unit.test_mitigation.biased_split`).
"""

import json

import numpy as np
import pandas as pd
import pytest

from humane.core.errors import DataError
from humane.core.paths import LABEL_COLUMN
from humane.fairness.mitigation import constrained, group_keys
from humane.fairness.reductions import predict_scores
from humane.fairness.thresholds import (
    GroupThresholds,
    fit_thresholds,
    group_decisions,
    group_features,
    served_decisions,
)
from humane.modeling.decision import plain_decisions
from humane.pipeline.params import load_params
from tests.conftest import ROOT
from tests.unit.test_mitigation import (  # one_thread: autouse, the networks are tiny
    SEX,
    assert_fairer,
    biased_split,
    judge,
    one_thread,  # noqa: F401
    with_a_small_cell,
    x_of,
)


@pytest.fixture(scope="module")
def split():
    return biased_split()


# ---------------------------------------------------------------------------------------------------------------
# GroupThresholds: the fit cuts its gap; JSON, agreement with Fairlearn, unseen and too-small groups
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("constraint", "gap"), [("demographic_parity", "dp"), ("equalized_odds", "eo")])
def test_group_thresholds_fitted_on_validation_reduce_their_gap(split, constraint, gap):
    val, test = split["val"], split["test"]
    thresholds = GroupThresholds().fit(
        predict_scores(split["model"], x_of(val)),
        val[LABEL_COLUMN],
        group_keys(val, ["sex"]),
        constraint,
        seed=0,
        min_rows=50,
    )
    y_pred, probability = thresholds.predict(predict_scores(split["model"], x_of(test)), group_keys(test, ["sex"]))
    assert ((probability >= 0) & (probability <= 1)).all()
    assert_fairer(split, judge(test, y_pred), gap)


@pytest.mark.parametrize("constraint", ["demographic_parity", "equalized_odds", "true_positive_rate_parity"])
def test_group_thresholds_json_round_trip_and_fairlearn_agree(split, constraint):
    val, test = split["val"], split["test"]
    fitted = GroupThresholds().fit(
        predict_scores(split["model"], x_of(val)),
        val[LABEL_COLUMN],
        group_keys(val, ["sex"]),
        constraint,
        seed=7,
        min_rows=50,
    )
    text = json.dumps(fitted.to_dict(), allow_nan=False)  # plain JSON, no pickle
    loaded = GroupThresholds.from_dict(json.loads(text))
    scores, keys = predict_scores(split["model"], x_of(test)), group_keys(test, ["sex"])
    y_fitted, p_fitted = fitted.predict(scores, keys)
    y_loaded, p_loaded = loaded.predict(scores, keys)
    np.testing.assert_array_equal(y_fitted, y_loaded)
    np.testing.assert_array_equal(p_fitted, p_loaded)
    # The same decisions as Fairlearn's own randomised prediction with the same seed.
    fairlearn = fitted.optimizer_.predict(scores.reshape(-1, 1), sensitive_features=keys.to_numpy(), random_state=7)
    np.testing.assert_array_equal(y_fitted, fairlearn)


def test_unseen_groups_get_the_plain_threshold_and_draws_do_not_depend_on_the_batch(split):
    val, test = split["val"], split["test"]
    thresholds = GroupThresholds().fit(
        predict_scores(split["model"], x_of(val)),
        val[LABEL_COLUMN],
        group_keys(val, ["sex"]),
        "demographic_parity",
        seed=0,
        min_rows=50,
        fallback_threshold=0.5,
    )
    keys = pd.Series(["a", "secret-value", "missing"])
    _, probability = thresholds.predict(np.array([0.2, 0.7, 0.3]), keys)
    assert probability[1:].tolist() == [1.0, 0.0]  # unseen groups: p >= 0.5, no threshold of their own
    # Each row's draw hashes its features: alone or in a batch, at any position, the same decision.
    x = x_of(test)
    scores, keys = predict_scores(split["model"], x), group_keys(test, ["sex"])
    batch, _ = thresholds.predict(scores, keys, x.numpy())
    alone = [thresholds.predict(scores[i : i + 1], keys.iloc[i : i + 1], x.numpy()[i : i + 1])[0][0] for i in range(40)]
    np.testing.assert_array_equal(batch[:40], alone)
    order = np.arange(len(scores))[::-1]
    reversed_, _ = thresholds.predict(scores[order], keys.iloc[order], x.numpy()[order])
    np.testing.assert_array_equal(reversed_[::-1], batch)


def test_a_constrained_group_with_one_label_is_a_clear_error(split):
    val = split["val"]
    y = val[LABEL_COLUMN].to_numpy().copy()
    keys = group_keys(val, ["sex"])
    y[(keys == "b").to_numpy()] = 0
    with pytest.raises(DataError, match=r"group\(s\) \['b'\] hold one label only"):
        GroupThresholds().fit(predict_scores(split["model"], x_of(val)), y, keys, "equalized_odds", seed=0, min_rows=50)


def test_a_too_small_intersection_cell_gets_no_threshold_and_the_plain_rule(split):
    val = with_a_small_cell(split["val"])
    keys = group_keys(val, ["sex", "race"])
    assert constrained(keys, min_rows=50)[1] == ["<withheld group #1> (12 rows)"]
    scores = predict_scores(split["model"], x_of(val))
    thresholds = GroupThresholds().fit(scores, val[LABEL_COLUMN], keys, "demographic_parity", seed=0, min_rows=50)
    state = thresholds.to_dict()
    assert state["excluded"] == ["<withheld group #1> (12 rows)"]
    assert set(state["groups"]) == {"a x r1", "a x r2", "b x r1", "b x r2"}  # no threshold for the small cell
    _, probability = thresholds.predict(scores, keys)  # its rows are decided by the plain threshold
    small = (keys == "b x r3").to_numpy()
    np.testing.assert_array_equal(probability[small], (scores[small] >= 0.5).astype(float))


# ---------------------------------------------------------------------------------------------------------------
# The rule as evaluation, the audit, the explain stage and serving apply it (models/thresholds.json's state)
# ---------------------------------------------------------------------------------------------------------------


def test_a_model_without_thresholds_decides_by_p_at_least_its_threshold():
    p = np.array([0.2, 0.5, 0.5000001, 0.9])
    frame = pd.DataFrame({SEX: ["a", "b", "a", "b"]})
    none = {"constraint": "none"}
    assert group_decisions(p, frame, none, np.ones((4, 1))) is None
    assert group_features(none) == []  # a request need not carry a group
    assert served_decisions(p, frame, none, np.ones((4, 1)), 0.5).tolist() == [False, True, True, True]
    assert plain_decisions(p, 0.5).tolist() == [False, True, True, True]  # exactly at the threshold decides yes
    settings = load_params(ROOT / "params.yaml").mitigation.model_copy(update={"thresholds": "none"})
    assert fit_thresholds(p, frame, settings, 5, 0.5) == none


def test_a_thresholds_state_that_names_no_constraint_or_no_feature_fails_closed():
    p, frame = np.array([0.7]), pd.DataFrame({SEX: ["a"]})
    with pytest.raises(DataError, match="names no constraint"):
        served_decisions(p, frame, {}, np.ones((1, 1)), 0.5)
    with pytest.raises(DataError, match="names no constraint"):
        group_features({"target": ["sex"]})  # as group_decisions: never "decides by p >= threshold"
    with pytest.raises(DataError, match="name no sensitive column"):
        group_features({"constraint": "equalized_odds", "groups": {}})


def test_the_served_rule_is_the_fitted_thresholds_for_every_row_alone_or_in_a_batch(split):
    val, test = split["val"], split["test"]
    settings = load_params(ROOT / "params.yaml").mitigation.model_copy(
        update={"thresholds": "demographic_parity", "target": ["sex"], "seed": 3}
    )
    state = json.loads(json.dumps(fit_thresholds(predict_scores(split["model"], x_of(val)), val, settings, 50, 0.5)))
    assert state["target"] == ["sex"] and group_features(state) == ["sex"]
    x = x_of(test).numpy()
    p = predict_scores(split["model"], x_of(test))
    served = served_decisions(p, test, state, x, 0.5)
    expected, _ = GroupThresholds.from_dict(state).predict(p, group_keys(test, ["sex"]), x)
    np.testing.assert_array_equal(served, expected.astype(bool))
    np.testing.assert_array_equal(group_decisions(p, test, state, x), expected)
    assert (served != plain_decisions(p, 0.5)).any()  # the check can tell the two rules apart
    # As serving asks: one row at a time, its group as sent, the same decision as in the batch.
    alone = [served_decisions(p[i : i + 1], test.iloc[[i]][[SEX]], state, x[i : i + 1], 0.5)[0] for i in range(30)]
    np.testing.assert_array_equal(alone, served[:30])
