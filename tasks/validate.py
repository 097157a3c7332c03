"""Validate stage: the Great Expectations suite on the interim frames; a failure stops the pipeline here."""

from __future__ import annotations

import pandas as pd

from humane.core import io
from humane.core.context import RunContext, stage_main
from humane.core.errors import ValidationFailed
from humane.core.params import Params
from humane.core.paths import Paths
from humane.data.schema import resolve_schema
from humane.data.validation import protected_columns, report, validate_frames


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Validate the interim frames, write the JSON report and Data Docs, raise if anything failed."""
    frames = {"train": pd.read_parquet(paths.interim_train), "test": pd.read_parquet(paths.interim_test)}
    files = io.read_json(paths.interim_meta)["files"]
    policy = io.read_json(paths.privacy_policy)
    schema = resolve_schema(params.data, frames["train"], policy, params.validate.min_group_rows)
    # Masked and sensitive columns are validated like any other, but their values are never quoted.
    protected = protected_columns(policy, schema)
    result = validate_frames(
        frames, files, schema, params.validate, docs_dir=paths.validation_docs, protected=protected
    )
    io.write_json(paths.validation_report, report(result, schema))
    if not result.passed:
        raise ValidationFailed(result.message())
    return f"validate: all {len(result.checks)} checks passed"


if __name__ == "__main__":
    stage_main(run)
