"""Postprocess stage: per-group decision thresholds (Fairlearn's ThresholdOptimizer) fitted on the validation split.

Off (`mitigation.thresholds: none`) it writes {"constraint": "none"} and the model decides by p >= threshold.
"""

from __future__ import annotations

import pandas as pd
import torch

from humane.core import io
from humane.core.context import RunContext
from humane.core.paths import Paths
from humane.fairness.thresholds import fit_thresholds
from humane.modeling.evaluation import predict_proba
from humane.modeling.features import split_xy
from humane.pipeline.entry import stage_main
from humane.pipeline.params import Params


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Fit the thresholds on the validation rows' scores (never the test rows); write models/thresholds.json."""
    val = pd.read_parquet(paths.processed_val)
    x_val, _, _ = split_xy(val)
    p_val = predict_proba(torch.load(paths.model, weights_only=True), x_val)
    state = fit_thresholds(p_val, val, params.mitigation, params.validate.min_group_rows, params.evaluate.threshold)
    io.write_json(paths.thresholds, state)
    if state["constraint"] == "none":
        return "postprocess: no per-group thresholds (mitigation.thresholds: none)"
    excluded = f"; too small, plain threshold: {state['excluded']}" if state["excluded"] else ""
    return (
        f"postprocess: {state['constraint']} thresholds for {len(state['groups'])} groups of "
        f"{' x '.join(state['target'])}, fitted on {state['fit_rows']} validation rows{excluded}"
    )


if __name__ == "__main__":
    stage_main(run)
