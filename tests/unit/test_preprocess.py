import numpy as np
import pandas as pd

from humane.core.paths import LABEL_COLUMN, SENSITIVE_PREFIX
from humane.data.params import DataParams
from humane.data.schema import resolve_schema
from humane.modeling.features import fit_preprocessor, signed_log1p, split_train_val, to_model_frame
from humane.modeling.params import PreprocessParams

SPEC = DataParams(
    name="t",
    intended_use="use.md",
    source="adult",
    target="income",
    positive_label=">50K",
    sensitive_features=["sex", "race"],
    drop=["fnlwgt"],
)


def _params(include_sensitive=False):
    return PreprocessParams(
        seed=0, val_fraction=0.25, include_sensitive=include_sensitive, log_transform=["capital-gain"]
    )


def test_transformer_is_fitted_on_train_only(tiny_adult):
    schema = resolve_schema(SPEC, tiny_adult)
    train, other = tiny_adult.head(6), tiny_adult.tail(6).assign(age=1000)
    pre = fit_preprocessor(train, schema, _params())
    scaled_age = pre.transform(train)[:, pre.feature_names.index("num__age")]
    assert abs(scaled_age.mean()) < 1e-6  # train statistics, untouched by the other rows
    assert pre.transform(other)[:, pre.feature_names.index("num__age")].min() > 10


def test_sensitive_columns_are_kept_beside_not_inside_features(tiny_adult):
    schema = resolve_schema(SPEC, tiny_adult)
    pre = fit_preprocessor(tiny_adult, schema, _params())
    assert not any("sex" in n or "race" in n for n in pre.feature_names)
    frame = to_model_frame(pre, tiny_adult)
    assert frame[f"{SENSITIVE_PREFIX}sex"].tolist() == tiny_adult["sex"].tolist()
    assert frame[LABEL_COLUMN].tolist() == (tiny_adult["income"] == ">50K").astype(int).tolist()
    with_sensitive = fit_preprocessor(tiny_adult, schema, _params(include_sensitive=True))
    assert "cat__sex_Female" in with_sensitive.feature_names


def test_missing_and_unseen_values_are_handled(tiny_adult):
    schema = resolve_schema(SPEC, tiny_adult)
    pre = fit_preprocessor(tiny_adult, schema, _params())
    assert "cat__workclass___missing__" in pre.feature_names
    unseen = tiny_adult.head(2).assign(occupation="Astronaut", age=np.nan)
    out = pre.transform(unseen)
    assert np.isfinite(out).all()
    occupation = [i for i, n in enumerate(pre.feature_names) if n.startswith("cat__occupation_")]
    assert out[:, occupation].sum() == 0  # an unseen category encodes as all zeros


def test_log_transform_is_a_signed_log1p_before_scaling(tiny_adult):
    assert np.allclose(signed_log1p(np.array([-9.0, 0.0, 99999.0])), [-np.log(10), 0.0, np.log(100000)])
    schema = resolve_schema(SPEC, tiny_adult)
    pre = fit_preprocessor(tiny_adult, schema, _params())
    assert "log__capital-gain" in pre.feature_names and "num__capital-gain" not in pre.feature_names
    column = pre.transform(tiny_adult)[:, pre.feature_names.index("log__capital-gain")]
    logged = signed_log1p(tiny_adult["capital-gain"].to_numpy(dtype=float))
    assert np.allclose(column, (logged - logged.mean()) / logged.std(), atol=1e-5)


def test_split_is_seeded_and_stratified():
    frame = pd.DataFrame({"x": range(200), "income": ["a"] * 150 + ["b"] * 50})
    train, val = split_train_val(frame, "income", 0.2, seed=3)
    again, _ = split_train_val(frame, "income", 0.2, seed=3)
    other, _ = split_train_val(frame, "income", 0.2, seed=4)
    assert (val["income"] == "b").sum() == 10
    assert train["x"].tolist() == again["x"].tolist() != other["x"].tolist()
