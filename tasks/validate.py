"""Validate stage: the Great Expectations suite and the leakage checks on the interim frames.

A failure stops the pipeline here: a sensitive feature that cannot be audited, or leakage beyond the dataset's
limits (`data.leakage`), among the rest. Warnings (small sensitive groups, unless `validate.strict`) are recorded
in the report and printed.
"""

from __future__ import annotations

import sys

import pandas as pd

from humane.core import io
from humane.core.context import RunContext
from humane.core.errors import ValidationFailed
from humane.core.paths import Paths
from humane.data.schema import resolve_schema
from humane.data.validation import leakage_summary, report, validate_frames
from humane.pipeline.entry import stage_main
from humane.pipeline.params import Params
from humane.privacy.policy import protected_columns


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Validate the interim frames, write the JSON report and Data Docs, raise if anything failed.

    Returns:
        A summary: the number of checks, and each warning.

    Raises:
        ValidationFailed: A check failed (the report is written first).

    """
    frames = {"train": pd.read_parquet(paths.interim_train), "test": pd.read_parquet(paths.interim_test)}
    files = io.read_json(paths.interim_meta)["files"]
    policy = io.read_json(paths.privacy_policy)
    schema = resolve_schema(params.data, frames["train"], policy, params.validate.min_group_rows)
    for column, why in schema.skipped.items():
        print(f"validate: column {column!r} is not a model input: {why}", file=sys.stderr)
    # Protected columns (masked, sensitive, kept, date-derived) are validated like any other, but no value of
    # theirs is quoted and no value set learned from their data is written.
    protected = protected_columns(params.privacy, params.data, policy).all
    leakage = params.data.leakage
    result = validate_frames(
        frames,
        files,
        schema,
        params.validate,
        docs_dir=paths.validation_docs,
        protected=protected,
        leakage=leakage,
        audit_rows=params.audit.min_group_size,
    )
    summary = leakage_summary(result, leakage)
    io.write_json(paths.validation_report, {**report(result, schema), "leakage": summary})
    if not result.passed:
        raise ValidationFailed(result.message())
    raised = ", ".join(f"data.leakage.{name} = {getattr(leakage, name)}" for name in summary["raised"])
    return f"validate: {result.message()}" + (f"\nleakage limits raised on purpose: {raised}" if raised else "")


if __name__ == "__main__":
    stage_main(run)
