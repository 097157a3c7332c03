"""Train stage: fit the MLP on the processed splits; write the model, checkpoints and training history."""

from __future__ import annotations

import pandas as pd
import torch

from humane.core import io
from humane.core.context import RunContext, stage_main
from humane.core.params import Params
from humane.core.paths import Paths
from humane.fairness.mitigation import training_terms
from humane.modeling.features import split_xy
from humane.modeling.model import count_parameters
from humane.modeling.training import fit


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Train with early stopping; the best epoch's weights become the model."""
    train = pd.read_parquet(paths.processed_train)
    x_train, y_train, features = split_xy(train)
    x_val, y_val, _ = split_xy(pd.read_parquet(paths.processed_val))
    weights, groups, penalty, mitigation = training_terms(train, params.mitigation, params.validate.min_group_rows)
    with io.atomic_dir(paths.checkpoints_dir) as checkpoints:
        result = fit(x_train, y_train, x_val, y_val, params.train, checkpoints, sample_weight=weights, groups=groups,
                     penalty=penalty)  # fmt: skip
    state = {
        "state_dict": result.model.state_dict(),
        "model_args": result.model.args.to_dict(),
        "config": params.train.model_dump(),
        "feature_names": features,
        "best_epoch": result.best_epoch,
    }
    io.write_with(paths.model, lambda tmp: torch.save(state, tmp))
    io.write_json(paths.train_history, result.history)
    best = result.history[result.best_epoch - 1]
    io.write_json(
        paths.train_metrics,
        {"best_epoch": result.best_epoch, "epochs_run": len(result.history), "best_val_loss": best["val_loss"],
         "best_val_accuracy": best["val_accuracy"], "best_val_auc": best["val_auc"],
         "n_parameters": count_parameters(result.model), "mitigation": mitigation, **result.privacy},
    )  # fmt: skip
    return f"train: best epoch {result.best_epoch} of {len(result.history)}, {result.samples_per_second:,.0f} samples/s"


if __name__ == "__main__":
    stage_main(run)
