"""The MLflow dataset inputs the track stage logs: the schema MLflow infers, without its per-value loop."""

import mlflow
import numpy as np
import pandas as pd
import pytest

from humane.governance.tracking import distinct_values, summarized_dataset


def processed_like(rows: int = 2000) -> pd.DataFrame:
    """A frame shaped like data/processed/*.parquet, with a null in a feature and in a sensitive column."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "num__age": rng.integers(17, 91, rows).astype(np.float32),
            "cat__sex_Male": rng.integers(0, 2, rows).astype(np.float32),
            "__label__": rng.integers(0, 2, rows),
            "__sensitive__sex": rng.choice(["Female", "Male"], rows).astype(object),
            "__sensitive__race": pd.Series(rng.choice(["White", "Black", "Other"], rows), dtype="string"),
            "flag": rng.integers(0, 2, rows).astype(bool),
        }
    )
    frame.loc[7, "num__age"] = np.nan
    frame.loc[11, "__sensitive__sex"] = None
    return frame


@pytest.mark.filterwarnings("ignore::UserWarning")  # MLflow's hints on integer columns and local sources
@pytest.mark.parametrize("nulls", [True, False])
def test_summarized_dataset_logs_what_mlflow_would(nulls):
    frame = processed_like()
    if not nulls:
        frame = frame.dropna().reset_index(drop=True)
    expected = mlflow.data.from_pandas(frame, source="data/processed/train.parquet", name="train", digest="abc")
    got = summarized_dataset(frame, "data/processed/train.parquet", "train", "abc")
    assert got.to_dict() == expected.to_dict()  # schema (types, required), profile (all rows), source, digest
    assert got.profile == {"num_rows": len(frame), "num_elements": int(frame.size)}
    required = {spec.name: spec.required for spec in got.schema.inputs}
    assert required["num__age"] is not nulls and required["__sensitive__sex"] is not nulls
    assert required["__label__"] and required["__sensitive__race"]


def test_distinct_values_keeps_each_value_once_with_its_dtype():
    frame = processed_like()
    out = distinct_values(frame)
    assert len(out) == frame["num__age"].nunique(dropna=False) < len(frame)  # the most varied column sets the length
    assert list(out.dtypes) == list(frame.dtypes)
    for column in frame.columns:
        assert set(out[column].dropna()) == set(frame[column].dropna())
        assert out[column].isna().any() == frame[column].isna().any()
    assert distinct_values(frame.head(0)).empty


@pytest.mark.filterwarnings("ignore::UserWarning")  # MLflow's hints on integer columns and local sources
def test_the_logged_dataset_numbers_the_one_hot_features_of_a_protected_column():
    from humane.governance.tracking import numbered_features

    frame = processed_like(10).assign(
        **{"cat__email_ann@ZZKEPT.example": 1.0, "cat__email_bob@ZZKEPT.example": 0.0, "cat__email_x_y": 0.0}
    )
    out = numbered_features(frame, {"email", "email_x", "sex"})
    numbered = ["cat__email_<category 1>", "cat__email_<category 2>", "cat__email_x_<category 1>"]
    assert [c for c in out.columns if c.startswith("cat__email")] == numbered
    assert "cat__sex_Male" not in out and "cat__sex_<category 1>" in out  # a sensitive input too
    assert "num__age" in out and "__sensitive__sex" in out  # other columns keep their names
    assert out.set_axis(frame.columns, axis=1).equals(frame)  # rows, types and order unchanged
    summary = summarized_dataset(out, "data/processed/train.parquet", "train", "abc")
    assert "ZZKEPT" not in str(summary.to_dict())
