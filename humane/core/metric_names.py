"""The metric namespace: how every recorded figure is named, built and read back in one place.

The track stage logs, the gate judges, the registry tags and the sweep compares figures under one set of dotted
names (MLflow metric keys, policy rule names, registry tags after `metric.`). These names are a contract: runs
already in a store are read by them, so a builder here returns byte for byte what was logged before.

- `test.<metric>`: the model on the test split (`humane.modeling.evaluation.binary_metrics`).
- `baseline.<model>.<metric>`: a baseline on the same rows (`logreg`, `majority`).
- `train.<key>`: the train stage's figures (reports/train_metrics.json, nested keys dotted); a sweep candidate's
  training (`train.seconds`, its bill under `train.compute.<figure>`).
- `val.<metric>`: a sweep candidate on the validation split.
- `compute.<figure>`: the candidate's compute bill as the gate judges it (parameters, FLOPs, time, energy ...).
- `fairness.<feature>.<gap>`: a gap between the groups of a sensitive feature (an intersection's feature name
  holds " x " and may hold dots: the gap is what follows the last dot).
- `privacy.<figure>`, `explain.<figure>`, `validation.<figure>`, `epoch.<figure>` (per-epoch history).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Builders are not named test_*: a test module importing one would have pytest collect it as a test.

TEST = "test"
BASELINE = "baseline"
TRAIN = "train"
VAL = "val"
COMPUTE = "compute"
FAIRNESS = "fairness"
PRIVACY = "privacy"
EXPLAIN = "explain"
VALIDATION = "validation"
EPOCH = "epoch"

TEST_PREFIX = f"{TEST}."
BASELINE_PREFIX = f"{BASELINE}."
TRAIN_PREFIX = f"{TRAIN}."
VAL_PREFIX = f"{VAL}."
COMPUTE_PREFIX = f"{COMPUTE}."
TRAIN_COMPUTE_PREFIX = f"{TRAIN_PREFIX}{COMPUTE_PREFIX}"  # a sweep candidate's bill: "train.compute."
FAIRNESS_PREFIX = f"{FAIRNESS}."
PRIVACY_PREFIX = f"{PRIVACY}."
EXPLAIN_PREFIX = f"{EXPLAIN}."
VALIDATION_PREFIX = f"{VALIDATION}."
EPOCH_PREFIX = f"{EPOCH}."


def model_test_metric(name: str) -> str:
    """The model's figure on the test split.

    Args:
        name: A metric of `binary_metrics`, e.g. "accuracy".

    Returns:
        "test.<name>", e.g. "test.accuracy".

    """
    return f"{TEST_PREFIX}{name}"


def baseline_metric(model: str, name: str) -> str:
    """A baseline's figure on the test split.

    Args:
        model: The baseline, e.g. "logreg" or "majority".
        name: A metric of `binary_metrics`, e.g. "accuracy".

    Returns:
        "baseline.<model>.<name>", e.g. "baseline.logreg.accuracy".

    """
    return f"{BASELINE_PREFIX}{model}.{name}"


def fairness_metric(feature: str, gap: str) -> str:
    """A fairness gap as the policy and the store name it.

    Args:
        feature: A sensitive feature, or an intersection ("sex x race").
        gap: A gap metric, e.g. "demographic_parity_difference".

    Returns:
        "fairness.<feature>.<gap>".

    """
    return f"{FAIRNESS_PREFIX}{feature}.{gap}"


def fairness_feature_prefix(feature: str) -> str:
    """The prefix every gap of one feature starts with: "fairness.<feature>."."""
    return f"{FAIRNESS_PREFIX}{feature}."


def train_metric(name: str) -> str:
    """A training figure, e.g. "train.seconds" (a sweep candidate's bill nests: "train.compute.flops")."""
    return f"{TRAIN_PREFIX}{name}"


def val_metric(name: str) -> str:
    """A sweep candidate's figure on the validation split, e.g. "val.accuracy"."""
    return f"{VAL_PREFIX}{name}"


def compute_metric(name: str) -> str:
    """A compute bill's figure as the gate judges it, e.g. "compute.flops_per_sample"."""
    return f"{COMPUTE_PREFIX}{name}"


def validation_metric(name: str) -> str:
    """A data-validation figure, e.g. "validation.n_failed" (logged) or "validation.passed" (the gate's)."""
    return f"{VALIDATION_PREFIX}{name}"


def epoch_metric(name: str) -> str:
    """A per-epoch history figure, e.g. "epoch.val_loss"."""
    return f"{EPOCH_PREFIX}{name}"


def is_test(metric: str) -> bool:
    """Whether `metric` is a test-split figure of the model (`test.*`)."""
    return metric.startswith(TEST_PREFIX)


def is_fairness(metric: str) -> bool:
    """Whether `metric` is a fairness gap (`fairness.*`)."""
    return metric.startswith(FAIRNESS_PREFIX)


def is_privacy(metric: str) -> bool:
    """Whether `metric` is a privacy figure (`privacy.*`)."""
    return metric.startswith(PRIVACY_PREFIX)


def strip_test(metric: str) -> str:
    """The metric's name without its `test.` prefix (unchanged when it has none)."""
    return metric.removeprefix(TEST_PREFIX)


def parse_fairness(metric: str) -> tuple[str, str]:
    """A gap's feature and gap: "fairness.sex x race.equal_opportunity_difference" → ("sex x race", "...").

    The gap is what follows the last dot, so a feature name may hold dots; a name without the prefix is split
    the same way (the prefix is only removed when present).
    """
    feature, _, gap = metric.removeprefix(FAIRNESS_PREFIX).rpartition(".")
    return feature, gap


def baseline_model(metric: str) -> str:
    """The baseline a `baseline.<model>.<metric>` figure belongs to, e.g. "logreg"."""
    return metric.split(".")[1]


def reference_test_metric(reference: str) -> str:
    """The candidate's figure a baseline rule compares: "logreg.roc_auc" (gate.above_baseline) → "test.roc_auc"."""
    return model_test_metric(reference.split(".", 1)[-1])


def namespaced(
    model: Mapping[str, Any],
    fairness: Mapping[str, Any],
    baseline: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Nested figures under their roots, ready for `flatten`: `test`, `fairness` and (when given) `baseline`.

    Args:
        model: The model's test figures (metrics.json's "model").
        fairness: The gaps by feature (fairness.json, or `headline` of an audit).
        baseline: The baselines' figures by model (metrics.json's "baseline"), or None to leave the root out.

    Returns:
        {"test": model, "fairness": fairness[, "baseline": baseline]}.

    """
    nested: dict[str, Any] = {TEST: model, FAIRNESS: fairness}
    if baseline is not None:
        nested[BASELINE] = baseline
    return nested
