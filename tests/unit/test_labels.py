"""The schema: labels of any type, compared in the column's own type; role inference skips what it cannot encode."""

import json

import pandas as pd
import pytest
from ruamel.yaml import YAML

from humane.core.errors import DataError
from humane.data.params import DataParams
from humane.data.schema import match_label, resolve_labels, resolve_schema, same_label


def _spec(**kw):
    base = dict(
        name="t",
        intended_use="use.md",
        source="data/raw/t.csv",
        target="y",
        positive_label=1,
        sensitive_features=["sex"],
    )
    base.update(kw)
    return DataParams(**base)


def _frame(labels):
    return pd.DataFrame({"x": range(len(labels)), "sex": ["F", "M"] * (len(labels) // 2), "y": labels})


@pytest.mark.parametrize(
    ("labels", "written", "positive", "label_set"),
    [
        ([0, 1, 1, 0], "1", 1, [0, 1]),
        ([1, 2, 2, 1], "2", 2, [1, 2]),
        ([True, False, True, False], "true", True, [False, True]),
        (["yes", "no", "no", "yes"], "yes", "yes", ["no", "yes"]),
        (["1", "0", "0", "1"], '"1"', "1", ["0", "1"]),
        ([0.0, 1.0, 1.0, 0.0], "1", 1.0, [0.0, 1.0]),
    ],
)
def test_positive_label_is_compared_in_the_columns_own_type(labels, written, positive, label_set):
    # As params.yaml types it (YAML 1.2, as read_raw and DVC read it): scalars are not forced to text.
    spec = _spec(positive_label=YAML(typ="safe", pure=True).load(f"v: {written}")["v"])
    got, got_set = resolve_labels(spec, _frame(labels))
    assert got == positive and type(got) is type(positive)
    assert got_set == label_set and [type(v) for v in got_set] == [type(v) for v in label_set]
    schema = resolve_schema(spec, _frame(labels))
    assert schema.positive_label == positive and schema.labels == label_set
    # JSON round trip keeps the type (what meta files and the model's metadata hold).
    assert json.loads(json.dumps(schema.positive_label)) == positive
    assert type(json.loads(json.dumps(schema.positive_label))) is type(positive)


def test_a_positive_label_that_matches_only_as_text_says_how_to_write_it():
    with pytest.raises(DataError) as err:
        resolve_labels(_spec(positive_label="1"), _frame([0, 1, 1, 0]))
    assert str(err.value) == (
        "params.yaml data.positive_label \"1\" is not one of the labels observed in column 'y': [0, 1]; it matches 1 "
        "only as text (the column holds int values): write data.positive_label: 1 without quotes"
    )
    with pytest.raises(
        DataError,
        match=r'it matches "1" only as text \(the column holds str values\): write '
        r'data.positive_label: "1"$',
    ):
        resolve_labels(_spec(positive_label=1), _frame(["0", "1", "1", "0"]))
    with pytest.raises(DataError, match=r"\[false, true\]; it matches true only as text"):
        resolve_labels(_spec(positive_label="True"), _frame([True, False, True, False]))


def test_a_positive_label_not_observed_lists_the_observed_labels():
    with pytest.raises(
        DataError,
        match=r"data.positive_label \"yes\" is not one of the labels observed in column 'y': "
        r"\[\"<=50K\", \">50K\"\]$",
    ):
        resolve_labels(_spec(positive_label="yes"), _frame(["<=50K", ">50K", ">50K", "<=50K"]))
    # True == 1 in Python, but a boolean is not an integer label.
    with pytest.raises(
        DataError,
        match=r"data.positive_label true is not one of the labels observed in column 'y': "
        r"\[0, 1\]$",
    ):
        resolve_labels(_spec(positive_label=True), _frame([0, 1, 1, 0]))
    assert not same_label(True, 1) and not same_label("1", 1) and same_label(1, 1.0) and same_label(False, False)


def test_a_target_that_is_no_label_column_gives_a_count_and_quotes_no_value():
    emails = [f"person.{i}@example.org" for i in range(12)]
    with pytest.raises(DataError) as err:
        resolve_labels(_spec(target="y", positive_label=1), _frame(emails))
    assert str(err.value) == (
        "params.yaml data.positive_label 1 is not one of the labels observed in column 'y': 12 distinct values (not "
        "shown); a binary label has 2 — is data.target the label column?"
    )
    assert "@" not in str(err.value)
    with pytest.raises(DataError, match="12 distinct values") as err:  # not even the value it matches as text
        match_label("PERSON.3@EXAMPLE.ORG", emails, "data.positive_label", "email")
    assert not any(e in str(err.value) for e in emails)
    # Ten values are still listed: a multi-class label is shown as it is.
    with pytest.raises(DataError, match=r": \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\]$"):
        match_label(10, list(range(10)), "data.positive_label", "y")


def test_declared_labels_are_typed_too():
    spec = _spec(positive_label=2, labels=[1, 2])
    assert resolve_labels(spec, _frame([1, 2, 2, 1])) == (2, [1, 2])
    with pytest.raises(DataError, match=r"data.labels \"1\" is not one of the labels .* write data.labels: 1"):
        resolve_labels(_spec(positive_label=2, labels=["1", "2"]), _frame([1, 2, 2, 1]))
    with pytest.raises(
        DataError, match=r"data.positive_label 3 is not one of the labels observed in column 'y': \[1, 2\]"
    ):
        match_label(3, [1, 2], "data.positive_label", "y")


def test_more_than_two_labels_stay_for_validation_to_refuse():
    schema = resolve_schema(_spec(), _frame([0, 1, 2, 1]))
    assert schema.labels == [0, 1, 2]  # validation's binary_label check fails on this (a binary task)


def test_role_inference_skips_categoricals_with_too_many_values_and_says_why():
    frame = pd.DataFrame(
        {
            "city": [f"c{i}" for i in range(60)],
            "job": ["a", "b", "c"] * 20,
            "sex": [f"s{i}" for i in range(60)],
            "age": range(60),
            "y": [0, 1] * 30,
        }
    )
    schema = resolve_schema(_spec(max_categories=50), frame)
    assert schema.categorical == ["job", "sex"] and schema.numeric == ["age"]  # sex: sensitive, audited regardless
    assert list(schema.skipped) == ["city"]
    assert schema.skipped["city"].startswith(
        "60 distinct values, more than data.max_categories (50): not one-hot encoded"
    )
    assert "city" not in schema.features(include_sensitive=True) and "city" not in schema.categories
    declared = resolve_schema(_spec(max_categories=50, categorical=["city", "job"]), frame)
    assert "city" in declared.categorical and declared.skipped == {}  # declared columns are never skipped
    assert resolve_schema(_spec(max_categories=60), frame).skipped == {}
