"""Great Expectations validation: a suite built from the schema, run on the train pool and the test frame."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from humane.core import io
from humane.core.params import ValidateParams
from humane.core.paths import Paths
from humane.data.schema import Schema

NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
                 "float32", "float64", "Int8", "Int16", "Int32", "Int64", "Float32", "Float64"]  # fmt: skip
EXAMPLES = 5  # offending values quoted per failed check


@dataclass(frozen=True)
class Check:
    """The outcome of one rule on one frame."""

    split: str
    file: str
    column: str | None
    rule: str
    kwargs: dict[str, Any]
    passed: bool
    observed: Any = None
    unexpected_count: int | None = None
    unexpected_fraction: float | None = None
    examples: list[Any] | None = None
    note: str | None = None

    def describe(self) -> str:
        """One line naming the file, the column and the rule, with a few offending values."""
        where = f"{self.file} [{self.split}]" + (f" column {self.column!r}" if self.column else "")
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items() if k not in ("column", "value_set", "type_list"))
        line = f"{where}: {self.rule}" + (f"({args})" if args else "")
        if self.unexpected_count:
            line += f": {self.unexpected_count} rows ({self.unexpected_fraction:.1%}) violate it"
        if self.observed is not None:
            line += f"; observed {self.observed!r}"
        if self.examples:
            line += f"; e.g. {self.examples}"
        if self.note:
            line += f"; {self.note}"
        return line


@dataclass(frozen=True)
class ValidationResult:
    """All checks and the overall verdict."""

    passed: bool
    checks: list[Check]

    @property
    def failures(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if not c.passed]

    def message(self) -> str:
        """A human summary of what failed."""
        lines = [f"data validation failed ({len(self.failures)} of {len(self.checks)} checks):"]
        lines += [f"  - {c.describe()}" for c in self.failures]
        lines.append(f"  full report: {Paths.validation_report} and {Paths.validation_docs}/index.html")
        return "\n".join(lines)


def build_expectations(schema: Schema, params: ValidateParams, split: str) -> list[Any]:
    """The GX expectations for one frame: columns, types, nulls, ranges, category and label sets, row count."""
    import great_expectations as gx

    ex = gx.expectations
    min_rows = params.min_rows if split == "train" else params.min_group_rows
    out: list[Any] = [ex.ExpectTableRowCountToBeBetween(min_value=min_rows)]
    for column in schema.required:
        out.append(ex.ExpectColumnToExist(column=column))
    for column in [*schema.numeric, *schema.categorical]:
        tolerance = params.null_tolerance.get(column, params.max_null_fraction)
        out.append(ex.ExpectColumnValuesToNotBeNull(column=column, mostly=1 - tolerance))
    for column in schema.numeric:
        out.append(ex.ExpectColumnValuesToBeInTypeList(column=column, type_list=NUMERIC_TYPES))
        if column in schema.ranges:
            lo, hi = schema.ranges[column]
            out.append(ex.ExpectColumnValuesToBeBetween(column=column, min_value=lo, max_value=hi))
    for column, values in schema.categories.items():
        out.append(
            ex.ExpectColumnValuesToBeInSet(column=column, value_set=values, mostly=1 - params.max_unseen_fraction)
        )
    out.append(ex.ExpectColumnValuesToNotBeNull(column=schema.target))
    out.append(ex.ExpectColumnValuesToBeInSet(column=schema.target, value_set=schema.labels))
    return out


def group_checks(frame: pd.DataFrame, schema: Schema, params: ValidateParams, split: str, file: str) -> list[Check]:
    """Minimum rows per sensitive group (GX has no grouped row-count expectation), plus a binary label."""
    checks = []
    for column in schema.sensitive:
        if column not in frame:
            continue  # reported by expect_column_to_exist
        counts = frame[column].value_counts()
        small = {str(k): int(v) for k, v in counts.items() if v < params.min_group_rows}
        checks.append(
            Check(split, file, column, "min_rows_per_sensitive_group", {"min_rows": params.min_group_rows},
                  passed=not small, observed={str(k): int(v) for k, v in counts.items()},
                  note=f"groups below the minimum: {small}" if small else None)
        )  # fmt: skip
    if split == "train":
        n_labels = len(schema.labels)
        checks.append(
            Check(split, file, schema.target, "binary_label", {"labels": schema.labels}, passed=n_labels == 2,
                  observed=n_labels, note=None if n_labels == 2 else "a binary task needs exactly two label values")
        )  # fmt: skip
    return checks


def _to_check(result: dict[str, Any], split: str, file: str, missing: set[str]) -> Check | None:
    config = result["expectation_config"]
    kwargs = {k: v for k, v in config["kwargs"].items() if k != "batch_id"}
    column = kwargs.get("column")
    if column in missing and config["type"] != "expect_column_to_exist":
        return None  # a missing column is reported once, by expect_column_to_exist
    raised = result.get("exception_info", {}).get("raised_exception")
    res = result.get("result", {})
    counts = res.get("partial_unexpected_counts") or []
    examples = [c["value"] for c in counts][:EXAMPLES] or (res.get("partial_unexpected_list") or [])[:EXAMPLES]
    fraction = res.get("unexpected_percent")
    return Check(
        split=split,
        file=file,
        column=column,
        rule=config["type"],
        kwargs=kwargs,
        passed=bool(result["success"]),
        observed=res.get("observed_value"),
        unexpected_count=res.get("unexpected_count"),
        unexpected_fraction=None if fraction is None else fraction / 100,
        examples=examples or None,
        note=result.get("exception_info", {}).get("exception_message") if raised else None,
    )


def _explain_types(frame: pd.DataFrame, checks: list[Check]) -> list[Check]:
    """Quote the values that make a numeric column non-numeric; drop range checks that cannot apply to it."""
    mistyped = {c.column for c in checks if c.rule == "expect_column_values_to_be_in_type_list" and not c.passed}
    out = []
    for check in checks:
        if check.column in mistyped and check.rule == "expect_column_values_to_be_between":
            continue  # a range means nothing on a non-numeric column; the type check says why
        if check.column in mistyped and check.rule == "expect_column_values_to_be_in_type_list":
            values = frame[check.column]
            bad = values[values.notna() & pd.to_numeric(values, errors="coerce").isna()]
            check = replace(check, examples=[str(v) for v in bad.unique()[:EXAMPLES]], unexpected_count=len(bad),
                            unexpected_fraction=len(bad) / max(len(values), 1))  # fmt: skip
        out.append(check)
    return out


def validate_frames(
    frames: dict[str, pd.DataFrame], files: dict[str, str], schema: Schema, params: ValidateParams,
    docs_dir: Path | None = None,
) -> ValidationResult:  # fmt: skip
    """Run the suite on each frame with GX; optionally build GX Data Docs into `docs_dir`."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    root = Path(tempfile.mkdtemp(prefix="humane-gx-"))
    try:
        context = gx.get_context(mode="file", project_root_dir=root)
        context.variables.progress_bars = {"globally": False}
        source = context.data_sources.add_pandas("humane")
        definitions = []
        for split in frames:
            batch = source.add_dataframe_asset(split).add_batch_definition_whole_dataframe("whole")
            suite = context.suites.add(gx.ExpectationSuite(name=f"humane-{split}"))
            for expectation in build_expectations(schema, params, split):
                suite.add_expectation(expectation)
            definitions.append(
                context.validation_definitions.add(gx.ValidationDefinition(name=split, data=batch, suite=suite))
            )
        checks: list[Check] = []
        for split, definition in zip(frames, definitions, strict=True):
            frame = frames[split]
            result = definition.run(
                batch_parameters={"dataframe": frame},
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
            ).to_json_dict()
            missing = {c for c in schema.required if c not in frame}
            frame_checks = [_to_check(item, split, files[split], missing) for item in result["results"]]
            checks.extend(_explain_types(frame, [c for c in frame_checks if c is not None]))
            checks.extend(group_checks(frame, schema, params, split, files[split]))
        if docs_dir is not None:
            context.build_data_docs()
            site = root / "gx" / "uncommitted" / "data_docs" / "local_site"
            with io.atomic_dir(docs_dir) as tmp:
                shutil.copytree(site, tmp, dirs_exist_ok=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return ValidationResult(passed=all(c.passed for c in checks), checks=checks)


def report(result: ValidationResult, schema: Schema) -> dict[str, Any]:
    """The JSON form of a validation result."""
    return {
        "passed": result.passed,
        "n_checks": len(result.checks),
        "n_failed": len(result.failures),
        "schema": asdict(schema),
        "checks": [asdict(c) for c in result.checks],
    }
