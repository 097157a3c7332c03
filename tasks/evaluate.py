"""Evaluate stage: test metrics of the model and its references, plots, and the membership-inference audit.

The references are scored on the candidate's own test rows, for the gate's dominance and remedy-cost rules: the
majority class, the logistic regression and the unmitigated model (the same network before its per-group
thresholds, or its twin trained with mitigation off), the last two with their gaps as the audit computes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from humane.core import io
from humane.core.context import RunContext
from humane.core.errors import HumaneError
from humane.core.paths import LABEL_COLUMN, Paths
from humane.core.protected import sensitive_group_labels
from humane.fairness.metrics import gaps_from, group_table
from humane.fairness.thresholds import served_decisions
from humane.modeling.decision import plain_decisions
from humane.modeling.evaluation import (
    SAME_NETWORK,
    baselines,
    binary_metrics,
    calibration_bins,
    logreg_scores,
    predict_proba,
    roc_points,
    save_plots,
)
from humane.modeling.features import split_xy
from humane.modeling.model import load_model
from humane.pipeline.entry import stage_main
from humane.pipeline.params import Params
from humane.privacy.membership import membership_audit


def reference_gaps(
    frame: pd.DataFrame, y_pred: np.ndarray, p: np.ndarray, features: list[str], min_group_size: int
) -> dict[str, dict[str, float]]:
    """Each sensitive feature's (and their intersection's) gaps for one set of decisions, as the audit states them.

    The audit's group table and gap definitions over the groups with at least `min_group_size` rows: the point
    values of reports/fairness.json (humane.fairness.metrics.audit_feature), without the bootstrap.
    """
    y = frame[LABEL_COLUMN].to_numpy().astype(float)
    decided = np.asarray(y_pred, dtype=float)
    out = {}
    for feature, groups in sensitive_group_labels(frame, features).items():
        table = group_table(y, decided, p, groups)
        out[feature] = gaps_from(table[table["count"] >= min_group_size])
    return out


def unmitigated_scores(params: Params, paths: Paths, x_test: torch.Tensor, p: np.ndarray) -> tuple[np.ndarray, str]:
    """The unmitigated model's test scores and how it was obtained (models/unmitigated.pt, from the train stage)."""
    twin = torch.load(paths.unmitigated_model, weights_only=True)
    remedy = ",".join(params.mitigation.active)
    made_for = {"remedy": remedy, "model_md5": io.md5_of(paths.model)}
    if any(twin.get(k) != v for k, v in made_for.items()) or (SAME_NETWORK in twin) == params.mitigation.in_training:
        raise HumaneError(
            f"{paths.unmitigated_model} was not written with {paths.model} for the remedy [{remedy}]; "
            "rerun the train stage (dvc repro train)"
        )
    if SAME_NETWORK in twin:
        return p, "the candidate's network deciding by p >= evaluate.threshold (no in-training remedy)"
    return predict_proba(twin, x_test), "its twin trained with mitigation off (models/unmitigated.pt)"


def references(
    params: Params, paths: Paths, test: pd.DataFrame, x_test: torch.Tensor, p: np.ndarray, p_logreg: np.ndarray
) -> dict[str, Any]:
    """The logistic regression's and the unmitigated model's accuracy and gaps on the test rows, and the remedy."""
    settings, y = params.evaluate, test[LABEL_COLUMN].to_numpy()
    p_plain, how = unmitigated_scores(params, paths, x_test, p)

    def scored(scores: np.ndarray) -> dict[str, Any]:
        decided = plain_decisions(scores, settings.threshold)
        return {
            **binary_metrics(y, scores, settings.threshold, settings.calibration_bins),
            "fairness": reference_gaps(
                test, decided, scores, params.data.sensitive_features, params.audit.min_group_size
            ),
        }

    remedy = {"methods": params.mitigation.active, "target": list(params.mitigation.target), "unmitigated": how}
    return {"logreg": scored(p_logreg), "unmitigated": scored(p_plain), "remedy": remedy}


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Score the model and the references on the test split; write metrics, plots and the membership report."""
    settings = params.evaluate
    x_train, y_train, _ = split_xy(pd.read_parquet(paths.processed_train))
    test = pd.read_parquet(paths.processed_test)
    x_test, y_test, _ = split_xy(test)
    state = torch.load(paths.model, weights_only=True)
    y = y_test.numpy()
    p = predict_proba(state, x_test)
    # A post-processed model decides by per-group thresholds (fitted on validation rows), not p >= threshold.
    decided = served_decisions(p, test, io.read_json(paths.thresholds), x_test.numpy(), settings.threshold)
    p_logreg = logreg_scores(x_train.numpy(), y_train.numpy(), x_test.numpy())
    refs = references(params, paths, test, x_test, p, p_logreg)
    baseline = baselines(y_train.numpy(), y, p_logreg, settings)
    metrics = {
        "model": binary_metrics(y, p, settings.threshold, settings.calibration_bins, decided),
        "baseline": {**baseline, "logreg": refs["logreg"], "unmitigated": refs["unmitigated"]},
        "remedy": refs["remedy"],
        "test_rows": len(y),
    }
    membership = membership_audit(
        load_model(state), (x_train, y_train), (x_test, y_test), settings.mia_samples, settings.seed
    )
    roc = roc_points(y, p)
    bins = calibration_bins(y, p, settings.calibration_bins)
    io.write_json(paths.membership_report, membership)
    io.write_json(paths.metrics, metrics)
    io.write_json(paths.roc_data, roc)
    io.write_json(paths.calibration_data, [b.__dict__ for b in bins])
    save_plots(roc, bins, metrics["model"]["roc_auc"], paths.roc_png, paths.calibration_png)
    return "evaluate: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics["model"].items())


if __name__ == "__main__":
    stage_main(run)
