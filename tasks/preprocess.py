"""Preprocess stage: seeded stratified train/validation split and a feature transformer fitted on train only."""

from __future__ import annotations

import pandas as pd

from humane.core import io
from humane.core.context import RunContext
from humane.core.errors import ValidationFailed
from humane.core.paths import Paths
from humane.data.schema import resolve_schema
from humane.fairness.mitigation import mitigate_data
from humane.modeling.counterfactual import check_immutable, never_inputs
from humane.modeling.features import fit_preprocessor, save_preprocessor, split_train_val, to_model_frame
from humane.pipeline.entry import stage_main
from humane.pipeline.params import Params


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Split, fit on train, transform all three splits, write them and the fitted preprocessor."""
    if not io.read_json(paths.validation_report)["passed"]:
        raise ValidationFailed(f"{Paths.validation_report} records a failed validation; fix the data and rerun")
    pool, test = pd.read_parquet(paths.interim_train), pd.read_parquet(paths.interim_test)
    schema = resolve_schema(params.data, pool, io.read_json(paths.privacy_policy))
    train, val = split_train_val(pool, schema.target, params.preprocess.val_fraction, params.preprocess.seed)
    pre = fit_preprocessor(train, schema, params.preprocess)
    check_immutable(params.data.immutable, pre.inputs, never_inputs(params))
    # Mitigation by data acts on the training rows only: validation and test keep the population as it is.
    model_train, report = mitigate_data(to_model_frame(pre, train), params.mitigation, params.validate.min_group_rows)
    io.write_parquet(paths.processed_train, model_train)
    io.write_parquet(paths.processed_val, to_model_frame(pre, val))
    io.write_parquet(paths.processed_test, to_model_frame(pre, test))
    io.write_with(paths.preprocessor, lambda tmp: save_preprocessor(pre, tmp))
    io.write_json(paths.mitigation_data, report)
    sizes = {"train": len(model_train), "val": len(val), "test": len(test), "features": len(pre.feature_names)}
    return f"preprocess: {sizes}" + (f"; mitigation by data: {report['methods']}" if report["methods"] else "")


if __name__ == "__main__":
    stage_main(run)
