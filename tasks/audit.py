"""Bias-audit stage: per-group test metrics with bootstrap CIs and disparity gaps, headline gaps, plots."""

from __future__ import annotations

import pandas as pd
import torch

from humane.core import io
from humane.core.context import RunContext
from humane.core.paths import LABEL_COLUMN, Paths
from humane.fairness.metrics import audit_predictions, headline, overall_with_ci
from humane.fairness.plots import save_plots
from humane.fairness.thresholds import served_decisions
from humane.modeling.evaluation import predict_proba
from humane.modeling.features import split_xy
from humane.pipeline.entry import stage_main
from humane.pipeline.params import Params


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Audit the model on the test split; write the report, the headline gaps and the plots."""
    threshold, settings = params.evaluate.threshold, params.audit
    frame = pd.read_parquet(paths.processed_test)
    x, _, _ = split_xy(frame)
    p = predict_proba(torch.load(paths.model, weights_only=True), x)
    thresholds = io.read_json(paths.thresholds)
    # The served model's decisions: a post-processed model's per-group thresholds, else p >= threshold.
    y_pred = served_decisions(p, frame, thresholds, x.numpy(), threshold).astype(float)
    audits = audit_predictions(frame, p, params.data.sensitive_features, threshold, settings, y_pred)
    y = frame[LABEL_COLUMN].to_numpy().astype(float)
    report = {
        "threshold": threshold,
        "thresholds": thresholds.get("constraint", "none"),
        "min_group_size": settings.min_group_size,
        "bootstrap": settings.bootstrap,
        "overall": overall_with_ci(y, y_pred, p, settings),
        "features": [a.__dict__ for a in audits],
    }
    io.write_json(paths.audit_report, report)
    io.write_json(paths.fairness, headline(audits))
    with io.atomic_dir(paths.audit_plots_dir) as out_dir:
        rows = save_plots(audits, out_dir)
    io.write_json(paths.audit_groups_data, rows)
    lines = []
    for audit in audits:
        gaps = ", ".join(f"{k} {v['value']:.3f} [{v['lo']:.3f}, {v['hi']:.3f}]" for k, v in audit.gaps.items())
        small = ", ".join(f"{g['group']} ({g['count']} rows)" for g in audit.groups if g["too_small"])
        lines.append(f"audit {audit.feature}: {gaps}" + (f"; too small to judge: {small}" if small else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    stage_main(run)
