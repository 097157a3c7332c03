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
from humane.core.errors import DataError
from humane.core.params import ValidateParams
from humane.core.paths import Paths
from humane.data.schema import Schema
from humane.privacy.policy import FittedPolicy

NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
                 "float32", "float64", "Int8", "Int16", "Int32", "Int64", "Float32", "Float64"]  # fmt: skip
EXAMPLES = 5  # offending values quoted per failed check (never for a protected column)
# GX result formats: public columns quote a few offending values; protected columns get counts only (BASIC with no
# partial list: GX 1.24 then returns unexpected_count / unexpected_percent and renders no value into Data Docs).
PUBLIC_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 20}
PROTECTED_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 0}
# Rules whose GX observed_value describes the column, not its values (a type name): kept for protected columns.
SCHEMA_LEVEL_OBSERVED = {"expect_column_values_to_be_in_type_list"}
WITHHELD = "values withheld: protected column"


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
    protected: bool = False

    def describe(self) -> str:
        """One line naming the file, the column and the rule, with a few offending values (counts only if protected)."""
        where = f"{self.file} [{self.split}]" + (f" column {self.column!r}" if self.column else "")
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items() if k not in ("column", "value_set", "type_list"))
        line = f"{where}: {self.rule}" + (f"({args})" if args else "")
        if self.unexpected_count:
            line += f": {self.unexpected_count} rows ({self.unexpected_fraction:.1%}) violate it"
        if self.observed is not None:
            line += f"; observed {self.observed!r}"
        if self.examples:
            line += f"; e.g. {self.examples}"
        elif self.protected and self.unexpected_count:
            line += f"; {WITHHELD}"
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


def protected_columns(policy: dict[str, Any], schema: Schema) -> set[str]:
    """Columns whose raw values no validation output may quote: masked by the fitted privacy policy, or sensitive.

    Args:
        policy: The fitted privacy policy as written by the load stage (`FittedPolicy.to_dict`, keys drop,
            pseudonymize, bins, top_code, kept_categories).
        schema: The resolved schema; its sensitive features are protected too.

    Raises:
        DataError: The policy has an unknown or missing rule: a rule that cannot be read could be a column left
            unprotected, so this fails closed.

    """
    try:
        masked = FittedPolicy.from_dict(policy).masked_columns
    except TypeError as err:
        raise DataError(
            f"{Paths.privacy_policy}: not a fitted privacy policy (expected the keys drop, pseudonymize, bins, "
            f"top_code, kept_categories): {err}"
        ) from None
    return {str(c) for c in masked} | set(schema.sensitive)


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


def group_checks(
    frame: pd.DataFrame, schema: Schema, params: ValidateParams, split: str, file: str,
    protected: set[str] | frozenset[str] = frozenset(),
) -> list[Check]:  # fmt: skip
    """Minimum rows per sensitive group (GX has no grouped row-count expectation), plus a binary label.

    Group sizes are aggregates and are reported by group name; for a protected column only groups in the
    schema's value set and at least `min_group_rows` large are named, any other one is numbered instead.
    """
    checks = []
    for column in schema.sensitive:
        if column not in frame:
            continue  # reported by expect_column_to_exist
        counts = frame[column].value_counts(dropna=False)
        counts.index = ["missing" if pd.isna(v) else v for v in counts.index]  # nulls: a group of their own
        names = _group_names(counts, schema.categories.get(column, []), column in protected, params.min_group_rows)
        sizes = {name: int(n) for name, n in zip(names, counts.to_numpy(), strict=True)}
        small = {name: n for name, n in sizes.items() if n < params.min_group_rows}
        checks.append(
            Check(split, file, column, "min_rows_per_sensitive_group", {"min_rows": params.min_group_rows},
                  passed=not small, observed=sizes, note=f"groups below the minimum: {small}" if small else None,
                  protected=column in protected)
        )  # fmt: skip
    if split == "train":
        n_labels = len(schema.labels)
        checks.append(
            Check(split, file, schema.target, "binary_label", {"labels": schema.labels}, passed=n_labels == 2,
                  observed=n_labels, note=None if n_labels == 2 else "a binary task needs exactly two label values")
        )  # fmt: skip
    return checks


def _group_names(counts: pd.Series, known: list[Any], masked: bool, min_rows: int) -> list[str]:
    """Each group's name as reported: quoted, unless the column is protected and the group is outside the
    declared value set or smaller than the minimum (a few people, or an inferred value set): then numbered.
    """
    listed = {str(v) for v in known}
    names, unlisted = [], 0
    for value, n in counts.items():
        if masked and value != "missing" and (str(value) not in listed or n < min_rows):
            unlisted += 1
            names.append(f"<withheld group #{unlisted}>")
        else:
            names.append(str(value))
    return names


def _to_check(result: dict[str, Any], split: str, file: str, missing: set[str], protected: set[str]) -> Check | None:
    config = result["expectation_config"]
    kwargs = {k: v for k, v in config["kwargs"].items() if k != "batch_id"}
    column = kwargs.get("column")
    if column in missing and config["type"] != "expect_column_to_exist":
        return None  # a missing column is reported once, by expect_column_to_exist
    masked = column in protected
    raised = result.get("exception_info", {}).get("raised_exception")
    res = result.get("result", {})
    counts = res.get("partial_unexpected_counts") or []
    examples = [c["value"] for c in counts][:EXAMPLES] or (res.get("partial_unexpected_list") or [])[:EXAMPLES]
    fraction = res.get("unexpected_percent")
    note = result.get("exception_info", {}).get("exception_message") if raised else None
    observed = res.get("observed_value")
    if masked:  # fail closed: whatever GX returned, no value of a protected column is kept
        examples = []
        note = f"GX raised an error ({WITHHELD})" if raised else None
        observed = observed if config["type"] in SCHEMA_LEVEL_OBSERVED else None
    return Check(
        split=split,
        file=file,
        column=column,
        rule=config["type"],
        kwargs=kwargs,
        passed=bool(result["success"]),
        observed=observed,
        unexpected_count=res.get("unexpected_count"),
        unexpected_fraction=None if fraction is None else fraction / 100,
        examples=examples or None,
        note=note,
        protected=masked,
    )


def _explain_types(frame: pd.DataFrame, checks: list[Check]) -> list[Check]:
    """Count the values that make a numeric column non-numeric; drop range checks that cannot apply to it.

    The values are quoted too, unless the column is protected.
    """
    mistyped = {c.column for c in checks if c.rule == "expect_column_values_to_be_in_type_list" and not c.passed}
    out = []
    for check in checks:
        if check.column in mistyped and check.rule == "expect_column_values_to_be_between":
            continue  # a range means nothing on a non-numeric column; the type check says why
        if check.column in mistyped and check.rule == "expect_column_values_to_be_in_type_list":
            values = frame[check.column]
            bad = values[values.notna() & pd.to_numeric(values, errors="coerce").isna()]
            examples = None if check.protected else [str(v) for v in bad.unique()[:EXAMPLES]]
            check = replace(check, examples=examples, unexpected_count=len(bad),
                            unexpected_fraction=len(bad) / max(len(values), 1))  # fmt: skip
        out.append(check)
    return out


def validate_frames(
    frames: dict[str, pd.DataFrame], files: dict[str, str], schema: Schema, params: ValidateParams,
    docs_dir: Path | None = None, protected: set[str] | frozenset[str] = frozenset(),
) -> ValidationResult:  # fmt: skip
    """Run the suite on each frame with GX; optionally build GX Data Docs into `docs_dir`.

    Expectations on `protected` columns (see `protected_columns`) run in a suite of their own per frame, with a
    result format that returns counts but no values, so that neither the checks, the JSON report nor the Data Docs
    hold a raw value of them; the other columns' failures quote a few offending values.
    """
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    root = Path(tempfile.mkdtemp(prefix="humane-gx-"))
    try:
        context = gx.get_context(mode="file", project_root_dir=root)
        context.variables.progress_bars = {"globally": False}
        source = context.data_sources.add_pandas("humane")
        runs: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
        order: dict[str, int] = {}  # expectation id -> its place in build_expectations, to report in suite order
        for split in frames:
            batch = source.add_dataframe_asset(split).add_batch_definition_whole_dataframe("whole")
            expectations = list(enumerate(build_expectations(schema, params, split)))
            hidden = [getattr(e, "column", None) in protected for _, e in expectations]
            groups = [
                (split, PUBLIC_FORMAT, [x for x, h in zip(expectations, hidden, strict=True) if not h]),
                (f"{split}-protected", PROTECTED_FORMAT, [x for x, h in zip(expectations, hidden, strict=True) if h]),
            ]
            runs[split] = []
            for name, result_format, group in groups:
                if not group:
                    continue
                suite = context.suites.add(gx.ExpectationSuite(name=f"humane-{name}"))
                for position, expectation in group:
                    order[str(suite.add_expectation(expectation).id)] = position
                definition = gx.ValidationDefinition(name=name, data=batch, suite=suite)
                runs[split].append((context.validation_definitions.add(definition), result_format))
        checks: list[Check] = []
        for split, frame in frames.items():
            results = []
            for definition, result_format in runs[split]:
                run = definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)
                results.extend(run.to_json_dict()["results"])
            results.sort(key=lambda item: order[str(item["expectation_config"]["id"])])
            missing = {c for c in schema.required if c not in frame}
            frame_checks = [_to_check(item, split, files[split], missing, set(protected)) for item in results]
            checks.extend(_explain_types(frame, [c for c in frame_checks if c is not None]))
            checks.extend(group_checks(frame, schema, params, split, files[split], protected))
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
