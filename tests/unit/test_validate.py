import json
from dataclasses import replace

import numpy as np
import pytest

from humane.data.params import DataParams, LeakageParams, ValidateParams
from humane.data.schema import resolve_schema
from humane.data.validation import AUDITABLE, LABEL_TYPE, SMALL_GROUPS, report, validate_frames

SPEC = DataParams(
    name="tiny",
    source="tiny.csv",
    target="income",
    positive_label=">50K",
    sensitive_features=["sex"],
    labels=["<=50K", ">50K"],
    numeric=["age", "capital-gain", "hours-per-week"],
    drop=["fnlwgt"],
    ranges={"age": [17, 90]},
    categorical=["workclass", "education", "occupation", "race", "sex", "native-country"],
    intended_use="docs/intended_use/adult.md",
)
PARAMS = ValidateParams(min_rows=10, min_group_rows=3, max_null_fraction=0.4, max_unseen_fraction=0.0, strict=False)
# tiny_adult's capital-gain, occupation and race follow the label exactly, and some tests validate a frame against
# itself: limits of 1 keep the leakage checks quiet here (they are tested in test_leakage.py).
QUIET = LeakageParams(max_shared_fraction=1.0, max_feature_auc=1.0)
STRICT = PARAMS.model_copy(update={"strict": True})


def _validate(frame, params=PARAMS, spec=SPEC):
    schema = resolve_schema(spec, frame)
    return validate_frames({"train": frame}, {"train": "data/raw/tiny.csv"}, schema, params, leakage=QUIET)


def _failed(result):
    return {(c.column, c.rule) for c in result.failures}


def test_binned_columns_are_checked_against_the_bins_span(tiny_adult):
    policy = {
        "bins": {"age": [10.0, 20.0, 99.0]},
        "drop": [],
        "pseudonymize": [],
        "kept_categories": {},
        "top_code": {},
    }
    schema = resolve_schema(SPEC, tiny_adult, policy)
    assert schema.ranges["age"] == (10.0, 99.0)  # lower edges (here 10) may sit below the data's own range
    assert resolve_schema(SPEC, tiny_adult).ranges["age"] == (17.0, 90.0)

    def run(ages, schema):
        return validate_frames({"train": tiny_adult.assign(age=ages)}, {"train": "t"}, schema, PARAMS, leakage=QUIET)

    binned = [10, 10, 20, 20, 99] + [20] * 7  # bin edges: the first (below the documented 17) and the last included
    result = run(binned, schema)
    assert result.passed, result.message()
    assert _failed(run(binned, resolve_schema(SPEC, tiny_adult))) == {("age", "expect_column_values_to_be_between")}
    above = run([*binned[:-1], 100], schema)
    assert _failed(above) == {("age", "expect_column_values_to_be_between")}
    (check,) = above.failures
    assert check.unexpected_count == 1 and check.examples == [100]


def test_clean_frame_passes(tiny_adult):
    result = _validate(tiny_adult)
    assert result.passed, result.message()
    assert len(result.checks) > 20


def test_missing_column(tiny_adult):
    result = _validate(tiny_adult.drop(columns=["education"]))
    assert _failed(result) == {("education", "expect_column_to_exist")}
    assert "data/raw/tiny.csv [train] column 'education': expect_column_to_exist" in result.message()


def test_test_file_is_checked_against_the_train_pool_columns(tiny_adult):
    spec = DataParams(
        name="u",
        source="u.csv",
        target="income",
        positive_label=">50K",
        sensitive_features=["sex"],
        intended_use="docs/intended_use/adult.md",
    )
    schema = resolve_schema(spec, tiny_adult)
    frames = {"train": tiny_adult, "test": tiny_adult.drop(columns=["occupation"])}
    result = validate_frames(frames, {"train": "u.csv", "test": "t.csv"}, schema, PARAMS, leakage=QUIET)
    assert {(c.split, c.column, c.rule) for c in result.failures} == {("test", "occupation", "expect_column_to_exist")}


def test_wrong_dtype(tiny_adult):
    frame = tiny_adult.astype({"age": "object"})
    frame.loc[3, "age"] = "thirty"
    result = _validate(frame)
    assert ("age", "expect_column_values_to_be_in_type_list") in _failed(result)


def test_value_out_of_range_quotes_offending_values(tiny_adult):
    frame = tiny_adult.copy()
    frame.loc[[0, 1], "age"] = [150, 7]
    result = _validate(frame)
    assert _failed(result) == {("age", "expect_column_values_to_be_between")}
    (check,) = result.failures
    assert sorted(check.examples) == [7, 150] and check.unexpected_count == 2


def test_label_outside_declared_values(tiny_adult):
    frame = tiny_adult.copy()
    frame.loc[0, "income"] = "maybe"
    result = _validate(frame)
    assert _failed(result) == {("income", "expect_column_values_to_be_in_set")}
    assert "maybe" in result.message()


def test_all_null_column(tiny_adult):
    frame = tiny_adult.assign(occupation=np.nan)
    result = _validate(frame)
    assert ("occupation", "expect_column_values_to_not_be_null") in _failed(result)


def test_too_few_rows_fail_and_small_groups_warn(tiny_adult):
    frame = tiny_adult.head(5)  # sex: 3 Male, 2 Female; min_group_rows 3
    result = _validate(frame)
    # One group of sex large enough to judge: it cannot be audited, which fails whatever `strict` says.
    assert _failed(result) == {(None, "expect_table_row_count_to_be_between"), ("sex", AUDITABLE)}
    (warning,) = result.warnings
    assert (warning.column, warning.rule, warning.unexpected_count) == ("sex", SMALL_GROUPS, 2)
    assert "too small to judge" in result.message()
    entry = report(result, resolve_schema(SPEC, frame))["warnings"]
    assert [(w["rule"], w["column"], w["count"]) for w in entry] == [(SMALL_GROUPS, "sex", 2)]


def test_small_group_alone_is_a_warning_unless_strict(tiny_adult):
    frame = tiny_adult.copy()
    frame.loc[[0, 1], "sex"] = "Other"  # a group of two: below min_group_rows (3)
    relaxed, strict = _validate(frame), _validate(frame, STRICT)  # sex's value set is inferred from the data
    assert relaxed.passed, relaxed.message()
    assert [(c.column, c.rule) for c in relaxed.warnings] == [("sex", SMALL_GROUPS)]
    assert not strict.passed and _failed(strict) == {("sex", SMALL_GROUPS)}
    assert strict.warnings == []


def test_small_group_of_a_protected_column_is_numbered_in_the_warning(tiny_adult):
    frame = tiny_adult.copy()
    frame.loc[[0, 1], "sex"] = "ZZRARESEX"
    schema = resolve_schema(SPEC, tiny_adult)  # sex: Female, Male
    result = validate_frames({"train": frame}, {"train": "t"}, schema, PARAMS, protected={"sex"}, leakage=QUIET)
    (warning,) = [c for c in result.warnings if c.rule == SMALL_GROUPS]
    assert warning.observed == {"Female": 6, "Male": 4, "<withheld group #1>": 2}
    text = json.dumps(report(result, schema), default=str) + result.message()
    assert "<withheld group #1>" in text and "ZZRARESEX" not in text


@pytest.mark.parametrize(
    ("labels", "values"),
    [([0, 1], [0, 1]), ([1, 2], [1, 2]), ([False, True], [False, True]), (["no", "yes"], ["no", "yes"])],
)
def test_labels_compare_in_the_columns_own_type(tiny_adult, labels, values):
    frame = tiny_adult.assign(income=[values[i % 2] for i in range(len(tiny_adult))])
    spec = SPEC.model_copy(update={"labels": labels, "positive_label": labels[1]})
    result = _validate(frame, spec=spec)
    assert result.passed, result.message()
    (check,) = [c for c in result.checks if c.rule == LABEL_TYPE]
    assert check.passed
    if not isinstance(values[0], bool):  # the set check still applies, in the column's type (a bool has no third)
        frame.loc[0, "income"] = 3 if isinstance(values[0], int) else "maybe"
        assert _failed(_validate(frame, spec=spec)) == {("income", "expect_column_values_to_be_in_set")}


def test_labels_of_another_type_than_the_column_are_named_once(tiny_adult):
    train = tiny_adult.assign(income=[i % 2 for i in range(len(tiny_adult))])
    spec = SPEC.model_copy(update={"labels": [0, 1], "positive_label": 1})
    schema = resolve_schema(spec, train)
    test = train.astype({"income": "str"})  # e.g. a test file whose label column was read as text
    result = validate_frames(
        {"train": train, "test": test}, {"train": "a.csv", "test": "b.csv"}, schema, PARAMS, leakage=QUIET
    )
    # Once, by type: not "100% of the rows violate the label set".
    assert {(c.split, c.column, c.rule) for c in result.failures} == {("test", "income", LABEL_TYPE)}
    (check,) = result.failures
    assert check.observed == "string"
    assert "b.csv [test] column 'income'" in result.message() and "labels are of type int" in result.message()

    text_labels = replace(schema, labels=["0", "1"], positive_label="1")  # a schema not typed like its column
    result = validate_frames({"train": train}, {"train": "a.csv"}, text_labels, PARAMS, leakage=QUIET)
    assert _failed(result) == {("income", LABEL_TYPE)}
    assert result.failures[0].observed == "integer"


def test_a_sensitive_feature_with_one_group_cannot_be_audited_and_fails_once(tiny_adult):
    """One value for every row: validation fails whatever `strict` says, once per feature, naming the column."""
    male = tiny_adult.assign(sex="Male")
    schema = resolve_schema(SPEC, male)
    files = {"train": "data/raw/one.csv", "test": "data/raw/one.csv"}
    result = validate_frames({"train": male, "test": male.copy()}, files, schema, PARAMS, leakage=QUIET)
    assert {(c.split, c.column, c.rule) for c in result.failures} == {("train", "sex", AUDITABLE)}
    (check,) = result.failures
    assert check.observed == 1 and check.severity == "error"
    line = "data/raw/one.csv [train] column 'sex': two_sensitive_groups_to_audit(min_groups=2, min_rows=3); observed 1"
    assert f"{line}; cannot be audited: 1 of its 1 group(s) hold at least 3 rows" in result.message()

    # Two groups in the training pool, one in a separate test file: the test file is named.
    test = male.copy()
    frames, files = {"train": tiny_adult, "test": test}, {"train": "a.csv", "test": "b.csv"}
    mixed = validate_frames(frames, files, resolve_schema(SPEC, tiny_adult), PARAMS, leakage=QUIET)
    assert {(c.split, c.file, c.column, c.rule) for c in mixed.failures} == {("test", "b.csv", "sex", AUDITABLE)}


def test_the_test_split_needs_two_groups_of_the_audits_minimum(tiny_adult):
    """Groups large enough for validation but below audit.min_group_size in the test split: refused before training."""
    frames, files = {"train": tiny_adult, "test": tiny_adult.copy()}, {"train": "a.csv", "test": "b.csv"}
    schema = resolve_schema(SPEC, tiny_adult)
    smallest = int(tiny_adult["sex"].value_counts().min())
    assert validate_frames(frames, files, schema, PARAMS, leakage=QUIET, audit_rows=smallest).passed
    refused = validate_frames(frames, files, schema, PARAMS, leakage=QUIET, audit_rows=smallest + 1)
    assert {(c.split, c.column, c.rule) for c in refused.failures} == {("test", "sex", AUDITABLE)}
    assert f"min_rows={smallest + 1}" in refused.message() and "audit.min_group_size" in refused.message()


def test_a_true_false_column_is_a_valid_numeric_input(tiny_adult):
    """Inferred numeric (pandas counts bool as numeric), so validation accepts its dtype (found by test_hostile)."""
    flagged = tiny_adult.assign(flag=[i % 2 == 0 for i in range(len(tiny_adult))])
    schema = resolve_schema(SPEC.model_copy(update={"numeric": [*SPEC.numeric, "flag"]}), flagged)
    assert "flag" in schema.numeric
    files = {"train": "a.csv", "test": "b.csv"}
    result = validate_frames({"train": flagged, "test": flagged.copy()}, files, schema, PARAMS, leakage=QUIET)
    assert not [c for c in result.failures if c.column == "flag"], result.message()
