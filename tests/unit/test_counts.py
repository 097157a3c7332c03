"""Counts-based evaluation and audit (what federated sites send) against the row-based functions."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, precision_score, recall_score

from humane.core.errors import DataError
from humane.core.paths import SENSITIVE_PREFIX
from humane.core.protected import group_labels, sensitive_group_labels
from humane.data.datasets import read_adult
from humane.fairness.counts import (
    add_noise,
    audit_from_counts,
    merge_counts,
    metrics_from_counts,
    overall_from_counts,
    site_counts,
)
from humane.fairness.metrics import GAP_METRICS, audit_feature, overall_with_ci
from humane.fairness.params import AuditParams
from humane.modeling.evaluation import binary_metrics
from tests.conftest import ROOT

THRESHOLD = 0.5
AUDIT = AuditParams(seed=3, bootstrap=300, min_group_size=30)


@pytest.fixture(scope="module")
def scored() -> pd.DataFrame:
    """Real predictions: a logistic regression fitted on 4000 Adult training rows, scoring 3000 test rows."""
    numeric = ["age", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
    train = read_adult(ROOT / "data/raw/adult/adult.data").sample(n=4000, random_state=1)
    test = read_adult(ROOT / "data/raw/adult/adult.test").sample(n=3000, random_state=1).reset_index(drop=True)
    model = LogisticRegression(max_iter=2000).fit(np.log1p(train[numeric]), train["income"] == ">50K")
    test["p"] = model.predict_proba(np.log1p(test[numeric]))[:, 1]
    test["y"] = (test["income"] == ">50K").astype(float)
    return test


def _groups(frame: pd.DataFrame) -> dict[str, pd.Series]:
    renamed = frame.rename(columns={f: f"{SENSITIVE_PREFIX}{f}" for f in ("sex", "race")}).reset_index(drop=True)
    return sensitive_group_labels(renamed, ["sex", "race"])


def _sites(frame: pd.DataFrame, n: int = 3) -> list[dict]:
    """Split the scored rows into n sites (by row order) and count each, as the sites would."""
    parts = np.array_split(np.arange(len(frame)), n)
    return [
        site_counts(
            frame["y"].to_numpy()[i], frame["p"].to_numpy()[i], THRESHOLD, _groups(frame.iloc[i]), min_group_size=5
        )
        for i in parts
    ]


def test_metrics_from_counts_equal_the_row_metrics(scored):
    y, p = scored["y"].to_numpy(), scored["p"].to_numpy()
    merged = merge_counts(_sites(scored))
    got = metrics_from_counts(merged, calibration_bins=10)
    rows = binary_metrics(y, p, THRESHOLD, 10)
    pred = p >= THRESHOLD
    for key in ("accuracy", "balanced_accuracy", "log_loss"):
        assert got[key] == pytest.approx(rows[key], rel=1e-9), key
    assert got["precision"] == pytest.approx(precision_score(y, pred))
    assert got["recall"] == pytest.approx(recall_score(y, pred))
    assert got["f1"] == pytest.approx(f1_score(y, pred))
    assert got["selection_rate"] == pytest.approx(pred.mean())
    # Approximations within their stated bounds, and the bounds small on 100 bins.
    assert abs(got["roc_auc"] - rows["roc_auc"]) <= got["auc_binning_error"] < 0.01
    assert abs(got["ece"] - rows["ece"]) <= got["ece_binning_error"] == 0.005
    json.dumps(merged)  # what a site sends is plain JSON


def test_group_audit_from_counts_equals_the_row_audit(scored):
    merged = merge_counts(_sites(scored))
    rows_audit = {
        f: audit_feature(
            f,
            scored["y"].to_numpy(),
            (scored["p"] >= THRESHOLD).to_numpy().astype(float),
            scored["p"].to_numpy(),
            g,
            AUDIT,
        )
        for f, g in _groups(scored).items()
    }
    for feature, by_group in merged["groups"].items():
        counts = audit_from_counts(feature, by_group, merged["withheld"][feature], AUDIT)
        row = rows_audit[feature]
        # Groups withheld at a site (fewer than 5 rows there) lack those rows here; sex has no such group.
        if feature == "sex":
            assert [g["group"] for g in counts.groups] == [g["group"] for g in row.groups]
        for gap in GAP_METRICS:
            assert set(counts.gaps[gap]) == {"value", "lo", "hi"}
        if feature != "sex":
            continue
        for gap in GAP_METRICS:
            assert counts.gaps[gap]["value"] == pytest.approx(row.gaps[gap]["value"], rel=1e-9), gap
            # Different draws of the same bootstrap distribution: the intervals agree to within a few points.
            assert counts.gaps[gap]["lo"] == pytest.approx(row.gaps[gap]["lo"], abs=0.03), gap
            assert counts.gaps[gap]["hi"] == pytest.approx(row.gaps[gap]["hi"], abs=0.03), gap
        for mine, theirs in zip(counts.groups, row.groups, strict=True):
            assert mine["count"] == theirs["count"]
            for metric in ("selection_rate", "accuracy", "tpr", "fpr", "precision"):
                assert mine["metrics"][metric]["value"] == pytest.approx(theirs["metrics"][metric]["value"])
            assert mine["metrics"]["calibration_error"]["value"] is None  # no site sends a group's mean score


def test_overall_from_counts_matches_overall_with_ci(scored):
    y, p = scored["y"].to_numpy(), scored["p"].to_numpy()
    merged = merge_counts(_sites(scored))
    got = overall_from_counts(merged, AUDIT)
    rows = overall_with_ci(y, (p >= THRESHOLD).astype(float), p, AUDIT)
    for metric in ("selection_rate", "accuracy", "tpr", "fpr", "precision"):
        assert got[metric]["value"] == pytest.approx(rows[metric]["value"])
        assert got[metric]["lo"] < got[metric]["value"] < got[metric]["hi"]
    assert got["calibration_error"]["value"] == pytest.approx(rows["calibration_error"]["value"], abs=0.005)


def test_a_group_below_min_group_size_never_leaves_the_site(scored):
    site = scored.iloc[:400].reset_index(drop=True)
    groups = _groups(site)
    sizes = groups["race"].value_counts()
    small = sizes[sizes < 30]
    assert len(small) > 0 and (sizes >= 30).any()  # the sample has both kinds
    counts = site_counts(site["y"].to_numpy(), site["p"].to_numpy(), THRESHOLD, groups, min_group_size=30)
    text = json.dumps(counts)
    for name in small.index:
        assert name not in counts["groups"]["race"]
        assert f'"{name}"' not in text
    # The small groups' rows, and (when they are fewer than 30) the next smallest groups' too: never fewer than 30
    # withheld rows, which the site's total minus its sent groups would otherwise give away.
    assert counts["withheld"]["race"] >= max(int(small.sum()), 30)
    assert sum(g["rows"] for g in counts["groups"]["race"].values()) + counts["withheld"]["race"] == len(site)
    assert counts["groups"]["race"]  # the large groups are still sent


def test_withheld_rows_are_none_or_at_least_min_group_size():
    y, p = np.array([1.0, 0.0] * 20 + [1.0]), np.full(41, 0.7)
    one = pd.Series(["a"] * 30 + ["b"] * 10 + ["c"])  # c alone would be read as total - a - b
    counts = site_counts(y, p, THRESHOLD, {"g": one}, min_group_size=5)
    assert set(counts["groups"]["g"]) == {"a"} and counts["withheld"]["g"] == 11
    even = pd.Series(["a"] * 30 + ["b"] * 11)
    counts = site_counts(y, p, THRESHOLD, {"g": even}, min_group_size=5)
    assert set(counts["groups"]["g"]) == {"a", "b"} and counts["withheld"]["g"] == 0
    counts = site_counts(y, p, THRESHOLD, {"g": one}, min_group_size=12)  # b (10) and c (1): 11 < 12, a goes too
    assert counts["groups"]["g"] == {} and counts["withheld"]["g"] == 41


def test_merge_sums_every_count_and_refuses_mixed_bins(scored):
    sites = _sites(scored)
    merged = merge_counts(sites)
    assert merged["rows"] == len(scored) == sum(merged["confusion"].values())
    assert sum(merged["scores"]["positive"]) + sum(merged["scores"]["negative"]) == len(scored)
    assert merged["groups"]["sex"]["Female"]["rows"] == int((scored["sex"] == "Female").sum())
    other = site_counts(np.array([1.0, 0.0]), np.array([0.9, 0.1]), THRESHOLD, {}, 1, bins=10)
    with pytest.raises(DataError, match="different bins"):
        merge_counts([sites[0], other])


def test_noise_blurs_counts_keeps_them_whole_and_consistent(scored):
    site = _sites(scored)[0]
    noisy = add_noise(site, 3.0, np.random.default_rng(0))
    assert add_noise(site, 0.0, np.random.default_rng(0)) is site
    assert noisy != site
    assert noisy["rows"] == sum(noisy["confusion"].values())
    for by_group in noisy["groups"].values():
        for cell in by_group.values():
            assert cell["rows"] == sum(cell["confusion"].values())
            assert all(isinstance(v, int) and v >= 0 for v in cell["confusion"].values())
    assert abs(noisy["rows"] - site["rows"]) < 40


def test_bad_input_is_one_clear_error():
    with pytest.raises(DataError, match="0/1"):
        site_counts(np.array([2.0]), np.array([0.5]), THRESHOLD, {}, 1)
    with pytest.raises(DataError, match="'sex'"):
        site_counts(np.array([1.0, 0.0]), np.array([0.5, 0.2]), THRESHOLD, {"sex": pd.Series(["a", None])}, 1)
    assert group_labels(pd.Series(["a", None]), "sex").tolist() == ["a", "missing"]


def test_an_intersection_group_cannot_be_read_out_of_its_marginal_group():
    """Female minus the sent "Female x race" groups would give the one Female x Other row: it goes too."""
    sex = pd.Series(["Male"] * 26 + ["Female"] * 21)
    race = pd.Series(["White"] * 20 + ["Black"] * 6 + ["White"] * 10 + ["Black"] * 10 + ["Other"])
    groups = {"sex": sex, "race": race, "sex x race": sex + " x " + race}
    y, p = np.array([1.0, 0.0] * 23 + [1.0]), np.full(47, 0.7)
    counts = site_counts(y, p, THRESHOLD, groups, min_group_size=5)
    assert set(counts["groups"]["sex"]) == {"Male", "Female"}
    # race: Other (1 row) is withheld, and with it the next smallest race group (Black, 16): 17 rows
    assert set(counts["groups"]["race"]) == {"White"} and counts["withheld"]["race"] == 17
    inter = counts["groups"]["sex x race"]
    # The intersection alone withholds Female x Other (1) and Male x Black (6): 7 rows. But Female minus the sent
    # Female groups would still be the lone row, so a Female group goes too.
    assert "Female x Other" not in inter and "Male x Black" not in inter and "Female x Black" not in inter
    for sex_group in ("Male", "Female"):
        hidden = counts["groups"]["sex"][sex_group]["rows"] - sum(
            g["rows"] for name, g in inter.items() if name.startswith(sex_group + " x ")
        )
        assert hidden == 0 or hidden >= 5, (sex_group, hidden)
    for name in ("White", "Black", "Other"):  # and within each race the same
        race_rows = int((race == name).sum())
        hidden = race_rows - sum(g["rows"] for n, g in inter.items() if n.endswith(" x " + name))
        assert name not in counts["groups"]["race"] or hidden == 0 or hidden >= 5, (name, hidden)
