"""Great Expectations validation: a suite built from the schema, run on the train pool and the test frame.

Besides the GX suite: the label's type against the schema's labels, a minimum size per sensitive group, and two
leakage checks (rows shared by the training pool and the test split; a feature that alone predicts the label).
A small group is a warning recorded in the report unless `validate.strict` makes it a failure; a sensitive feature
without two groups large enough to judge cannot be audited, and fails. Leakage beyond the dataset's limits
(`data.leakage`) fails; a profile may raise a limit on purpose, and the report says so (`leakage_summary`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from humane.core import io
from humane.core.paths import Paths
from humane.core.protected import MISSING_GROUP, WITHHELD_GROUP
from humane.data.leakage import feature_aucs, shared_rows
from humane.data.params import LeakageParams, ValidateParams
from humane.data.schema import Schema

# The dtypes of a numeric column; True/False counts as numeric (0/1), as the schema's inference reads it.
NUMERIC_TYPES = [
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "Float32",
    "Float64",
    "bool",
    "boolean",
]
EXAMPLES = 5  # offending values quoted per failed check (never for a protected column)
# GX result formats: public columns quote a few offending values; protected columns get counts only (BASIC with no
# partial list: GX 1.24 then returns unexpected_count / unexpected_percent and renders no value into Data Docs).
PUBLIC_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 20}
PROTECTED_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 0}
# Rules whose GX observed_value describes the column, not its values (a type name): kept for protected columns.
SCHEMA_LEVEL_OBSERVED = {"expect_column_values_to_be_in_type_list"}
WITHHELD = "values withheld: protected column"
# Rules that are warnings unless validate.strict: they describe the data's fitness, not its integrity.
SMALL_GROUPS = "min_rows_per_sensitive_group"
# The documented leakage limits (`data.leakage` when a profile leaves them out); a higher one is raised on purpose.
DEFAULT_LEAKAGE = LeakageParams()
# Always a failure: a sensitive feature with fewer than two groups large enough to judge has no gap to audit.
AUDITABLE = "two_sensitive_groups_to_audit"
# Failures beyond the dataset's leakage limits (data.leakage).
SHARED_ROWS = "rows_shared_with_training_pool"
FEATURE_AUC = "single_feature_auc"
LEAKED = "predicts the label almost perfectly on its own: a leaked outcome column? (data.leakage.max_feature_auc)"
LABEL_TYPE = "label_type_matches_column"
LABEL_SET = "expect_column_values_to_be_in_set"
# Label types as pandas infers a column's values (`infer_dtype`), by the Python type of a schema label.
LABEL_KINDS: dict[type, set[str]] = {
    bool: {"boolean"},
    int: {"integer", "floating", "mixed-integer-float"},  # an integer column may be read as float
    float: {"floating", "integer", "mixed-integer-float"},  # labels of a float column, compared by value
    str: {"string"},
}


@dataclass(frozen=True)
class DataCheck:
    """The outcome of one data rule (a GX expectation, a group size, the label's type, leakage) on one frame."""

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
    # "warning": recorded in the report, does not fail validation (small groups and leakage, unless strict).
    severity: Literal["error", "warning"] = "error"

    def summary(self) -> str:
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
    """All checks and the overall verdict: passed unless a check of severity "error" failed."""

    checks: list[DataCheck]

    @property
    def failures(self) -> list[DataCheck]:
        """The checks that failed and fail validation."""
        return [c for c in self.checks if not c.passed and c.severity == "error"]

    @property
    def warnings(self) -> list[DataCheck]:
        """The checks that failed but only warn (small groups, leakage; not in strict mode)."""
        return [c for c in self.checks if not c.passed and c.severity == "warning"]

    @property
    def passed(self) -> bool:
        """Whether no check failed validation."""
        return not self.failures

    def message(self) -> str:
        """A human summary of what failed, then of the warnings."""
        if self.passed:
            lines = [f"data validation passed ({len(self.checks)} checks, {len(self.warnings)} warnings)"]
        else:
            lines = [f"data validation failed ({len(self.failures)} of {len(self.checks)} checks):"]
            lines += [f"  - {c.summary()}" for c in self.failures]
        if self.warnings:
            lines.append("warnings (not failures; validate.strict makes them failures):")
            lines += [f"  - {c.summary()}" for c in self.warnings]
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


def group_checks(
    frame: pd.DataFrame,
    schema: Schema,
    params: ValidateParams,
    split: str,
    file: str,
    protected: set[str] | frozenset[str] = frozenset(),
    audit_rows: int = 0,
) -> list[DataCheck]:
    """Minimum rows per sensitive group (GX has no grouped row-count expectation), plus a binary label.

    Group sizes are aggregates and are reported by group name; for a protected column only groups in the
    schema's value set and at least `min_group_rows` large are named, any other one is numbered instead.
    A group below the minimum is too small to judge: a warning, or a failure when `params.strict`. A feature
    with fewer than two groups of the minimum cannot be audited at all: always a failure (`auditable`). On the
    test split, which the bias audit judges, "large enough" also means at least `audit_rows` rows (the audit's
    audit.min_group_size), else every gap of the feature would be unmeasurable after training.
    """
    checks = []
    severity = _soft(params)
    for column in schema.sensitive:
        if column not in frame:
            continue  # reported by expect_column_to_exist
        sizes = _group_sizes(frame[column], schema.categories.get(column, []), column in protected, params)
        small = {name: n for name, n in sizes.items() if n < params.min_group_rows}
        rows = sum(small.values())
        checks.append(
            DataCheck(
                split,
                file,
                column,
                SMALL_GROUPS,
                {"min_rows": params.min_group_rows},
                passed=not small,
                observed=sizes,
                unexpected_count=rows,
                unexpected_fraction=rows / max(len(frame), 1),
                note=f"groups below the minimum (too small to judge): {small}" if small else None,
                protected=column in protected,
                severity=severity,
            )
        )
        judged = max(params.min_group_rows, audit_rows if split == "test" else 0)
        checks.append(auditable(sizes, judged, split, file, column, column in protected))
    if split == "train":
        n_labels = len(schema.labels)
        checks.append(
            DataCheck(
                split,
                file,
                schema.target,
                "binary_label",
                {"labels": schema.labels},
                passed=n_labels == 2,
                observed=n_labels,
                note=None if n_labels == 2 else "a binary task needs exactly two label values",
            )
        )
    return checks


def auditable(sizes: dict[str, int], min_rows: int, split: str, file: str, column: str, protected: bool) -> DataCheck:
    """Whether a sensitive feature has two groups of at least `min_rows` rows, so that a gap between groups exists.

    With fewer (one value for every row, or every other group below the minimum) each fairness figure of the
    feature would be unmeasurable after training: validation fails at once instead, naming the feature. The
    observed value is the number of groups large enough, never a group's name.
    """
    judged = sum(n >= min_rows for n in sizes.values())
    note = None
    if judged < 2:
        note = (
            f"cannot be audited: {judged} of its {len(sizes)} group(s) hold at least {min_rows} rows, so no "
            "fairness gap can be measured (does the column hold one value for every row? validate.min_group_rows "
            "and, on the test split, audit.min_group_size set the minimum)"
        )
    kwargs = {"min_groups": 2, "min_rows": min_rows}
    return DataCheck(split, file, column, AUDITABLE, kwargs, judged >= 2, judged, note=note, protected=protected)


def once_per_feature(checks: list[DataCheck]) -> list[DataCheck]:
    """Drop a later split's failed `auditable` check of a feature whose training pool already failed it.

    One cause, one line: a file whose column holds one value fails in the training pool and, split from the
    same file, in the test split too.
    """
    failed = {c.column for c in checks if c.rule == AUDITABLE and c.split == "train" and not c.passed}
    return [c for c in checks if not (c.rule == AUDITABLE and c.split != "train" and c.column in failed)]


def _soft(params: ValidateParams) -> Literal["error", "warning"]:
    """The severity of the rules that only warn unless strict."""
    return "error" if params.strict else "warning"


def _label_type(value: Any) -> type:
    if isinstance(value, bool | np.bool_):
        return bool
    if isinstance(value, int | np.integer):
        return int
    if isinstance(value, float | np.floating):
        return float
    return str if isinstance(value, str) else type(value)


def _value_kind(values: pd.Series) -> str:
    """What the column's non-null values are, as pandas infers it (categorical: its categories)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return pd.api.types.infer_dtype(values.cat.categories, skipna=True)
    return pd.api.types.infer_dtype(values, skipna=True)


def label_type_check(frame: pd.DataFrame, schema: Schema, split: str, file: str) -> DataCheck | None:
    """The schema's labels are compared with the target in the column's own type: their types must agree.

    A label column of 0/1 integers matches labels [0, 1]; against ["0", "1"] every row would look like an
    unknown label, so the mismatch is reported once, by type, instead. None when the target is absent or empty
    (reported by other checks).
    """
    if schema.target not in frame:
        return None
    kind = _value_kind(frame[schema.target])
    if kind == "empty":
        return None
    types = sorted({_label_type(v).__name__ for v in [*schema.labels, schema.positive_label]})
    allowed = set.union(*(LABEL_KINDS.get(_label_type(v), set()) for v in [*schema.labels, schema.positive_label]))
    passed = len(types) == 1 and kind in allowed
    note = None
    if not passed:
        note = (
            f"the column holds {kind} values but the labels are of type {' and '.join(types)}: write "
            f"data.positive_label and data.labels as the column holds them (e.g. 1 or true without quotes, "
            f"text in quotes)"
        )
    return DataCheck(
        split, file, schema.target, LABEL_TYPE, {"labels": list(schema.labels)}, passed=passed, observed=kind, note=note
    )


def leakage_checks(
    frames: dict[str, pd.DataFrame],
    files: dict[str, str],
    schema: Schema,
    leakage: LeakageParams,
    protected: set[str] | frozenset[str] = frozenset(),
) -> list[DataCheck]:
    """Rows of the test split that also sit in the training pool, and features that alone predict the label.

    Shared rows are compared on every column the frames hold (after the privacy policy); feature AUCs are
    computed on the training pool (see `humane.data.leakage`). Both are counts or AUCs by column name, never a
    row's values. Beyond the dataset's limits (`data.leakage`) they fail validation.
    """
    checks = []
    train, test = frames.get("train"), frames.get("test")
    if train is not None and test is not None:
        # Every column of the record as loaded (ids, weights and columns kept out of the model included): two
        # people with equal coarsened features are common and not a leak; the same record on both sides is.
        columns = [c for c in train.columns if c in test]
        count = shared_rows(train, test, columns)
        share, limit = count / max(len(test), 1), leakage.max_shared_fraction
        note = (
            f"test rows equal to a training row on all {len(columns)} columns of the loaded record: the same "
            f"record in both splits inflates the test figures (limit {limit:.2%}; where different people can "
            "share every value, raise data.leakage.max_shared_fraction on purpose)"
        )
        checks.append(
            DataCheck(
                "test",
                files["test"],
                None,
                SHARED_ROWS,
                {"max_fraction": limit},
                passed=share <= limit,
                unexpected_count=count,
                unexpected_fraction=share,
                note=note if count else None,
            )
        )
    if train is not None:
        aucs = feature_aucs(train, schema.target, schema.positive_label, schema.numeric, schema.categorical)
        for column, auc in aucs.items():
            passed = auc <= leakage.max_feature_auc
            note = None if passed else LEAKED
            checks.append(
                DataCheck(
                    "train",
                    files["train"],
                    column,
                    FEATURE_AUC,
                    {"max_auc": leakage.max_feature_auc},
                    passed=passed,
                    observed=round(auc, 4),
                    note=note,
                    protected=column in protected,
                )
            )
    return checks


def _group_sizes(values: pd.Series, known: list[Any], masked: bool, params: ValidateParams) -> dict[str, int]:
    """Rows per group of a sensitive column, by the group's name as reported (`_group_names`); nulls are a group."""
    counts = values.value_counts(dropna=False)
    counts.index = [MISSING_GROUP if pd.isna(v) else v for v in counts.index]
    names = _group_names(counts, known, masked, params.min_group_rows)
    return {name: int(n) for name, n in zip(names, counts.to_numpy(), strict=True)}


def _group_names(counts: pd.Series, known: list[Any], masked: bool, min_rows: int) -> list[str]:
    """Each group's name as reported: quoted, or numbered when it could describe a few people.

    Numbered: the column is protected and the group is outside the declared value set or smaller than the
    minimum (a few people, or an inferred value set).
    """
    listed = {str(v) for v in known}
    names, unlisted = [], 0
    for value, n in counts.items():
        if masked and value != MISSING_GROUP and (str(value) not in listed or n < min_rows):
            unlisted += 1
            names.append(WITHHELD_GROUP.format(unlisted))
        else:
            names.append(str(value))
    return names


def _to_check(
    result: dict[str, Any], split: str, file: str, missing: set[str], protected: set[str]
) -> DataCheck | None:
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
    return DataCheck(
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


def _explain_types(frame: pd.DataFrame, checks: list[DataCheck]) -> list[DataCheck]:
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
            check = replace(
                check, examples=examples, unexpected_count=len(bad), unexpected_fraction=len(bad) / max(len(values), 1)
            )
        out.append(check)
    return out


def coded_values(
    frames: dict[str, pd.DataFrame], schema: Schema, protected: set[str] | frozenset[str]
) -> tuple[dict[str, pd.DataFrame], Schema]:
    """Frames and schema in which a protected column's value set learned from the data is replaced by codes.

    GX writes an expectation's value set into its results and renders it in the Data Docs: for a protected
    column whose categories were inferred from the data (not documented by a built-in dataset), the known values
    become "<category 1>", "<category 2>", ..., any other present value "<unseen>" (nulls stay null), so the
    suite checks the same membership without holding a value.
    """
    columns = [c for c in schema.categories if c in protected and c not in schema.documented]
    if not columns:
        return frames, schema
    codes = {c: {v: f"<category {i + 1}>" for i, v in enumerate(schema.categories[c])} for c in columns}
    coded = {}
    for split, frame in frames.items():
        frame = frame.copy()
        for column in (c for c in columns if c in frame):
            values = frame[column].astype("object")
            frame[column] = values.map(codes[column]).where(values.isna() | values.isin(codes[column]), "<unseen>")
        coded[split] = frame
    return coded, replace(schema, categories={**schema.categories, **{c: list(codes[c].values()) for c in columns}})


def validate_frames(
    frames: dict[str, pd.DataFrame],
    files: dict[str, str],
    schema: Schema,
    params: ValidateParams,
    docs_dir: Path | None = None,
    protected: set[str] | frozenset[str] = frozenset(),
    leakage: LeakageParams = DEFAULT_LEAKAGE,
    audit_rows: int = 0,
) -> ValidationResult:
    """Run the suite on each frame with GX; optionally build GX Data Docs into `docs_dir`.

    `leakage` holds the dataset's leakage limits (`data.leakage`; the documented defaults when not given).
    `audit_rows` is the bias audit's minimum group size (audit.min_group_size): the test split, which the audit
    judges, must hold two groups of at least that many rows per sensitive feature (see `group_checks`).

    Expectations on `protected` columns (`humane.privacy.policy.protected_columns`) run in a suite of their own
    per frame, with a result format that returns counts but no values, and a value set learned from their data
    is coded (`coded_values`), so that neither the checks, the JSON report nor the Data Docs hold a raw value of
    them; the other columns' failures quote a few offending values.
    """
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    coded, coded_schema = coded_values(frames, schema, protected)  # what GX sees: no learned value set quoted
    root = Path(tempfile.mkdtemp(prefix="humane-gx-"))
    try:
        context = gx.get_context(mode="file", project_root_dir=root)
        context.variables.progress_bars = {"globally": False}
        runs, order = _suites(context, list(frames), coded_schema, params, protected)
        checks: list[DataCheck] = []
        for split, frame in frames.items():
            results = _run_suites(runs[split], coded[split], order)
            checks.extend(_frame_checks(frame, results, schema, params, split, files[split], protected, audit_rows))
        checks = once_per_feature(checks)
        checks.extend(leakage_checks(frames, files, schema, leakage, protected))
        if docs_dir is not None:
            context.build_data_docs()
            site = root / "gx" / "uncommitted" / "data_docs" / "local_site"
            with io.atomic_dir(docs_dir) as tmp:
                shutil.copytree(site, tmp, dirs_exist_ok=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return ValidationResult(checks=checks)


# GX validation definitions of one split, each with its result format (public, or counts-only for protected).
SplitRuns = list[tuple[Any, dict[str, Any]]]


def _suites(
    context: Any, splits: list[str], schema: Schema, params: ValidateParams, protected: set[str] | frozenset[str]
) -> tuple[dict[str, SplitRuns], dict[str, int]]:
    """Each split's GX validation definitions: its public expectations, and those on protected columns apart.

    Returns the definitions per split and each expectation id's place in `build_expectations`, to report the
    results in suite order.
    """
    import great_expectations as gx

    source = context.data_sources.add_pandas("humane")
    runs: dict[str, SplitRuns] = {}
    order: dict[str, int] = {}
    for split in splits:
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
    return runs, order


def _run_suites(runs: SplitRuns, frame: pd.DataFrame, order: dict[str, int]) -> list[dict[str, Any]]:
    """The GX results of one split's suites on its (coded) frame, in suite order."""
    results = []
    for definition, result_format in runs:
        run = definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)
        results.extend(run.to_json_dict()["results"])
    results.sort(key=lambda item: order[str(item["expectation_config"]["id"])])
    return results


def _frame_checks(
    frame: pd.DataFrame,
    results: list[dict[str, Any]],
    schema: Schema,
    params: ValidateParams,
    split: str,
    file: str,
    protected: set[str] | frozenset[str],
    audit_rows: int,
) -> list[DataCheck]:
    """One split's checks: its GX results, the label's type, and the minimum rows per sensitive group."""
    missing = {c for c in schema.required if c not in frame}
    frame_checks = [_to_check(item, split, file, missing, set(protected)) for item in results]
    label_type = label_type_check(frame, schema, split, file)
    if label_type is not None and not label_type.passed:  # every row would be "not a label": say why once
        label_set = (schema.target, LABEL_SET)
        frame_checks = [c for c in frame_checks if c is None or (c.column, c.rule) != label_set]
    checks = _explain_types(frame, [c for c in frame_checks if c is not None])
    checks.extend([label_type] if label_type is not None else [])
    checks.extend(group_checks(frame, schema, params, split, file, protected, audit_rows))
    return checks


def _warning(check: DataCheck) -> dict[str, Any]:
    """A warning's entry in the report: where, which rule, how many rows (AUC: the observed AUC), no row values."""
    return {
        "split": check.split,
        "file": check.file,
        "rule": check.rule,
        "column": check.column,
        "count": check.unexpected_count,
        "fraction": check.unexpected_fraction,
        "observed": check.observed,
        "message": check.summary(),
    }


def written_schema(schema: Schema, protected: set[str] | frozenset[str]) -> dict[str, Any]:
    """The schema as reports hold it: a protected column's value set learned from the data is left out.

    Its name is listed in `withheld_categories` instead; documented value sets (a built-in dataset's) stay.
    """
    withheld = sorted(c for c in schema.categories if c in protected and c not in schema.documented)
    out = asdict(schema)
    out["categories"] = {c: v for c, v in schema.categories.items() if c not in withheld}
    out["withheld_categories"] = withheld
    return out


def report(result: ValidationResult, schema: Schema) -> dict[str, Any]:
    """The JSON form of a validation result (`passed` is the verdict the later stages read)."""
    return {
        "passed": result.passed,
        "n_checks": len(result.checks),
        "n_failed": len(result.failures),
        "n_warnings": len(result.warnings),
        "warnings": [_warning(c) for c in result.warnings],
        "schema": written_schema(schema, {c.column for c in result.checks if c.protected and c.column}),
        "checks": [asdict(c) for c in result.checks],
    }


def leakage_summary(result: ValidationResult, leakage: LeakageParams) -> dict[str, Any]:
    """The leakage limits in force beside their documented defaults, what was measured, and which are raised.

    A limit above its default was raised on purpose by the profile (`data.leakage`): the model card states it
    with the measured figure. Aggregates only: a share of rows, an AUC and the column it belongs to.
    """
    default = DEFAULT_LEAKAGE
    shared = next((c for c in result.checks if c.rule == SHARED_ROWS), None)
    aucs = [c for c in result.checks if c.rule == FEATURE_AUC and c.observed is not None]
    top = max(aucs, key=lambda c: c.observed, default=None)
    limits = ("max_shared_fraction", "max_feature_auc")
    raised = [name for name in limits if getattr(leakage, name) > getattr(default, name)]
    return {
        "max_shared_fraction": leakage.max_shared_fraction,
        "default_max_shared_fraction": default.max_shared_fraction,
        "shared_rows": None if shared is None else shared.unexpected_count,
        "shared_fraction": None if shared is None else shared.unexpected_fraction,
        "max_feature_auc": leakage.max_feature_auc,
        "default_max_feature_auc": default.max_feature_auc,
        "top_feature_auc": None if top is None else top.observed,
        "top_feature": None if top is None else top.column,
        "raised": raised,
    }
