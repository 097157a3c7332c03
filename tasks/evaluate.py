"""Evaluate stage: test metrics of the model and two baselines, plots, and the membership-inference audit."""

from __future__ import annotations

import pandas as pd
import torch

from humane.core import io
from humane.core.context import RunContext, stage_main
from humane.core.params import Params
from humane.core.paths import Paths
from humane.fairness.mitigation import decisions
from humane.modeling.evaluation import (
    baselines,
    binary_metrics,
    calibration_bins,
    predict_proba,
    roc_points,
    save_plots,
)
from humane.modeling.features import split_xy
from humane.modeling.model import load_model
from humane.privacy.membership import membership_audit


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Score the model and the baselines on the test split; write metrics, plots and the membership report."""
    settings = params.evaluate
    x_train, y_train, _ = split_xy(pd.read_parquet(paths.processed_train))
    test = pd.read_parquet(paths.processed_test)
    x_test, y_test, _ = split_xy(test)
    state = torch.load(paths.model, weights_only=True)
    y = y_test.numpy()
    p = predict_proba(state, x_test)
    # A post-processed model decides by per-group thresholds (fitted on validation rows), not p >= threshold.
    decided = decisions(p, test, io.read_json(paths.thresholds), x_test.numpy())
    metrics = {
        "model": binary_metrics(y, p, settings.threshold, settings.calibration_bins, decided),
        "baseline": baselines(x_train.numpy(), y_train.numpy(), x_test.numpy(), y, settings),
        "test_rows": len(y),
    }
    membership = membership_audit(load_model(state), (x_train, y_train), (x_test, y_test), settings.mia_samples,
                                  settings.seed)  # fmt: skip
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
