import numpy as np
import pytest

from humane.core.params import DataParams, ValidateParams
from humane.data.schema import resolve_schema
from humane.data.validation import validate_frames

SPEC = DataParams(
    source="tiny.csv", target="income", positive_label=">50K", sensitive_features=["sex"], labels=["<=50K", ">50K"],
    numeric=["age", "capital-gain", "hours-per-week"], drop=["fnlwgt"], ranges={"age": [17, 90]},
    categorical=["workclass", "education", "occupation", "race", "sex", "native-country"],
)  # fmt: skip
PARAMS = ValidateParams(min_rows=10, min_group_rows=3, max_null_fraction=0.4, max_unseen_fraction=0.0)


def _validate(frame):
    schema = resolve_schema(SPEC, frame)
    return validate_frames({"train": frame}, {"train": "data/raw/tiny.csv"}, schema, PARAMS)


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
        return validate_frames({"train": tiny_adult.assign(age=ages)}, {"train": "t"}, schema, PARAMS)

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
    spec = DataParams(source="u.csv", target="income", positive_label=">50K", sensitive_features=["sex"])
    schema = resolve_schema(spec, tiny_adult)
    frames = {"train": tiny_adult, "test": tiny_adult.drop(columns=["occupation"])}
    result = validate_frames(frames, {"train": "u.csv", "test": "t.csv"}, schema, PARAMS)
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


def test_too_few_rows_and_small_groups(tiny_adult):
    frame = tiny_adult.head(5)
    failed = _failed(_validate(frame))
    assert (None, "expect_table_row_count_to_be_between") in failed
    assert ("sex", "min_rows_per_sensitive_group") in failed


@pytest.mark.parametrize("tolerance", [0.0, 0.5])
def test_unseen_category_tolerance(tiny_adult, tolerance):
    schema = resolve_schema(SPEC, tiny_adult)
    test = tiny_adult.copy()
    test.loc[0, "occupation"] = "Astronaut"
    params = ValidateParams(min_rows=10, min_group_rows=3, max_null_fraction=0.4, max_unseen_fraction=tolerance)
    result = validate_frames({"train": tiny_adult, "test": test}, {"train": "a", "test": "b"}, schema, params)
    assert result.passed is (tolerance > 0)
