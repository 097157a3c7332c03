"""The metric namespace (humane/core/metric_names.py): the keys stores already hold, built and read in one place."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from humane.core import metric_names as names
from humane.core.params import flatten

ROOT = Path(__file__).resolve().parents[2]


def test_builders_give_the_keys_runs_already_hold() -> None:
    assert names.model_test_metric("accuracy") == "test.accuracy"
    assert names.baseline_metric("logreg", "roc_auc") == "baseline.logreg.roc_auc"
    assert names.fairness_metric("sex", "demographic_parity_difference") == "fairness.sex.demographic_parity_difference"
    assert names.fairness_metric("sex x race", "equalized_odds_difference") == (
        "fairness.sex x race.equalized_odds_difference"
    )
    assert names.fairness_feature_prefix("sex") == "fairness.sex."
    assert names.epoch_metric("val_loss") == "epoch.val_loss"
    assert names.train_metric("seconds") == "train.seconds" and names.val_metric("accuracy") == "val.accuracy"
    assert names.compute_metric("flops") == "compute.flops"
    assert names.train_metric(names.compute_metric("flops")) == "train.compute.flops"
    assert names.TRAIN_COMPUTE_PREFIX == "train.compute." and names.COMPUTE_PREFIX == "compute."
    assert names.validation_metric("n_failed") == "validation.n_failed"
    assert names.reference_test_metric("logreg.roc_auc") == "test.roc_auc"


@pytest.mark.parametrize(
    ("feature", "gap"),
    [("sex", "demographic_parity_ratio"), ("sex x race", "equal_opportunity_difference"), ("a.b", "gap")],
)
def test_parse_fairness_inverts_the_builder(feature: str, gap: str) -> None:
    metric = names.fairness_metric(feature, gap)
    assert names.is_fairness(metric) and not names.is_test(metric) and not names.is_privacy(metric)
    assert names.parse_fairness(metric) == (feature, gap)


def test_parsers_read_the_other_roots() -> None:
    assert names.strip_test("test.roc_auc") == "roc_auc" and names.strip_test("privacy.epsilon") == "privacy.epsilon"
    assert names.is_test("test.accuracy") and not names.is_test("testing.accuracy")
    assert names.is_privacy("privacy.epsilon") and not names.is_fairness("privacy.epsilon")
    assert names.baseline_model(names.baseline_metric("majority", "accuracy")) == "majority"


def test_namespaced_flattens_to_the_logged_keys() -> None:
    flat = flatten(names.namespaced({"accuracy": 0.8}, {"sex": {"demographic_parity_difference": 0.1}}))
    assert flat == {"test.accuracy": 0.8, "fairness.sex.demographic_parity_difference": 0.1}
    with_baseline = flatten(names.namespaced({"accuracy": 0.8}, {}, {"logreg": {"accuracy": 0.7}}))
    assert with_baseline == {"test.accuracy": 0.8, "fairness": {}, "baseline.logreg.accuracy": 0.7}


# A metric name built by hand: an f-string starting a key with a root of the namespace, the bare prefix as a
# literal (handed to a flattener or joined), a prefix constant other than the namespace's own, or a whole name
# under a root no params.yaml key shares (train.* literals are also params keys: "train.seed" is an override).
ROOTS = "test|fairness|baseline|train|val|compute|validation"
HAND_BUILT = re.compile(
    rf"""f["']({ROOTS})\.\{{|["']({ROOTS})\.["']|\{{(names\.)?(FAIRNESS|TRAIN|VAL|COMPUTE|VALIDATION)_PREFIX\}}"""
    r"""|["'](val|compute|validation)\.[a-z_]+["']"""
)


def test_no_module_builds_a_metric_name_by_hand() -> None:
    sources = [p for folder in ("humane", "tasks", "flows") for p in sorted((ROOT / folder).rglob("*.py"))]
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sources
        if path.name != "metric_names.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if HAND_BUILT.search(line.partition("#")[0])  # a comment may name a prefix
    ]
    assert sources and not offenders, offenders
