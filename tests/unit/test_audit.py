import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
)  # fmt: skip

from humane.core.params import AuditParams, DataParams
from humane.fairness.metrics import (
    audit_feature,
    data_audit,
    gaps_from,
    group_table,
    overall_with_ci,
    sensitive_columns,
    weighted_metrics,
)  # fmt: skip

# Group a: 4 rows, group b: 4 rows.
Y = np.array([1, 1, 0, 0, 1, 0, 0, 0], dtype=float)
PRED = np.array([1, 0, 1, 0, 1, 1, 0, 0], dtype=float)
P = np.array([0.9, 0.4, 0.6, 0.1, 0.8, 0.7, 0.2, 0.1])
GROUPS = pd.Series(["a", "a", "a", "a", "b", "b", "b", "b"])
PARAMS = AuditParams(seed=0, bootstrap=100, min_group_size=1)


def test_group_metrics_match_hand_computation():
    table = group_table(Y, PRED, P, GROUPS).set_index("group")
    # a: selection 2/4, accuracy 2/4, TPR 1/2, FPR 1/2, precision 1/2, |mean p 0.5 - rate 0.5| = 0
    # b: selection 2/4, accuracy 3/4, TPR 1/1, FPR 1/3, precision 1/2, |0.45 - 0.25| = 0.2
    assert table.loc["a"].to_dict() == pytest.approx(
        {"count": 4, "selection_rate": 0.5, "accuracy": 0.5, "tpr": 0.5, "fpr": 0.5, "precision": 0.5,
         "calibration_error": 0.0})  # fmt: skip
    assert table.loc["b"].to_dict() == pytest.approx(
        {"count": 4, "selection_rate": 0.5, "accuracy": 0.75, "tpr": 1.0, "fpr": 1 / 3, "precision": 0.5,
         "calibration_error": 0.2})  # fmt: skip


def test_gaps_match_hand_values_and_fairlearn():
    gaps = gaps_from(group_table(Y, PRED, P, GROUPS))
    assert gaps["demographic_parity_difference"] == pytest.approx(0.0)
    assert gaps["demographic_parity_ratio"] == pytest.approx(1.0)
    assert gaps["equal_opportunity_difference"] == pytest.approx(0.5)
    assert gaps["equalized_odds_difference"] == pytest.approx(0.5)  # max(TPR gap 0.5, FPR gap 1/6)
    kw = {"sensitive_features": GROUPS}
    assert gaps["demographic_parity_difference"] == pytest.approx(demographic_parity_difference(Y, PRED, **kw))
    assert gaps["demographic_parity_ratio"] == pytest.approx(demographic_parity_ratio(Y, PRED, **kw))
    assert gaps["equalized_odds_difference"] == pytest.approx(equalized_odds_difference(Y, PRED, **kw))
    assert gaps["equal_opportunity_difference"] == pytest.approx(equal_opportunity_difference(Y, PRED, **kw))


def test_weighted_metrics_with_unit_weights_equal_metricframe():
    table = group_table(Y, PRED, P, GROUPS)
    codes = pd.Categorical(GROUPS, categories=table["group"]).codes
    weighted = weighted_metrics(Y, PRED, P, codes, 2, np.ones(len(Y)))
    for metric in ("selection_rate", "accuracy", "tpr", "fpr", "precision", "calibration_error"):
        assert weighted[metric] == pytest.approx(table[metric].to_numpy()), metric


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000).astype(float)
    p = np.clip(0.3 * y + rng.random(2000) * 0.7, 0, 1)
    pred = (p >= 0.5).astype(float)
    groups = pd.Series(np.where(rng.random(2000) < 0.3, "f", "m"))
    params = AuditParams(seed=3, bootstrap=200, min_group_size=10)
    one, two = audit_feature("sex", y, pred, p, groups, params), audit_feature("sex", y, pred, p, groups, params)
    assert one.gaps == two.gaps
    for gap in one.gaps.values():
        assert gap["lo"] <= gap["value"] <= gap["hi"] or gap["value"] == pytest.approx(gap["lo"])
    for group in one.groups:
        acc = group["metrics"]["accuracy"]
        assert acc["lo"] <= acc["value"] <= acc["hi"] and acc["hi"] - acc["lo"] < 0.1
    overall = overall_with_ci(y, pred, p, params)
    assert overall["accuracy"]["value"] == pytest.approx((y == pred).mean())


def test_small_groups_are_flagged_and_left_out_of_the_gaps():
    groups = pd.Series(["a"] * 4 + ["b"] * 3 + ["c"])
    result = audit_feature("g", Y, PRED, P, groups, AuditParams(seed=0, bootstrap=20, min_group_size=3))
    assert result.too_small == ["c"]
    flags = {g["group"]: g["too_small"] for g in result.groups}
    assert flags == {"a": False, "b": False, "c": True}
    judged = group_table(Y, PRED, P, groups).query("group != 'c'")
    assert result.gaps["equalized_odds_difference"]["value"] == pytest.approx(
        gaps_from(judged)["equalized_odds_difference"]
    )


def test_intersection_and_data_audit():
    frame = pd.DataFrame({"sex": ["F", "F", "M", "M", "M"], "race": ["x", "y", "x", "x", "y"],
                          "income": [">50K", "<=50K", ">50K", ">50K", "<=50K"]})  # fmt: skip
    spec = DataParams(source="s.csv", target="income", positive_label=">50K", sensitive_features=["sex", "race"])
    report = data_audit(frame, spec)
    sex = {g["group"]: g for g in report["sex"]}
    assert sex["M"]["share"] == pytest.approx(0.6) and sex["M"]["base_rate"] == pytest.approx(2 / 3)
    assert sex["F"]["base_rate"] == pytest.approx(0.5)
    assert {g["group"] for g in report["sex x race"]} == {"F x x", "F x y", "M x x", "M x y"}
    columns = sensitive_columns(frame.add_prefix("__sensitive__"), ["sex", "race"])
    assert list(columns) == ["sex", "race", "sex x race"]
