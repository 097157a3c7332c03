"""Preprocess stage: seeded stratified train/validation split and a feature transformer fitted on train only."""

from __future__ import annotations

import sys

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from tasks import io
from tasks.errors import DataError, ValidationFailed, cli
from tasks.features import MISSING, Preprocessor, signed_log1p
from tasks.params import DataParams, PreprocessParams, load_params
from tasks.paths import (
    INTERIM_TEST,
    INTERIM_TRAIN,
    LABEL_COLUMN,
    PREPROCESSOR,
    PRIVACY_POLICY,
    PROCESSED_TEST,
    PROCESSED_TRAIN,
    PROCESSED_VAL,
    SENSITIVE_PREFIX,
    VALIDATION_REPORT,
)  # fmt: skip
from tasks.schema import Schema, resolve_schema


def build_transformer(schema: Schema, inputs: list[str], log_columns: list[str]) -> ColumnTransformer:
    """Numeric: optional signed log1p, median imputation, scaling; categorical: one-hot with a missing level."""
    numeric = [c for c in schema.numeric if c in inputs]
    categorical = [c for c in schema.categorical if c in inputs]
    logged = [c for c in numeric if c in log_columns]
    plain = [c for c in numeric if c not in log_columns]

    def numeric_pipeline(log: bool) -> Pipeline:
        steps = [FunctionTransformer(signed_log1p, feature_names_out="one-to-one")] if log else []
        return make_pipeline(*steps, SimpleImputer(strategy="median"), StandardScaler())

    categorical_pipeline = make_pipeline(
        SimpleImputer(strategy="constant", fill_value=MISSING),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32),
    )
    parts = [("num", numeric_pipeline(False), plain), ("log", numeric_pipeline(True), logged)]
    parts.append(("cat", categorical_pipeline, categorical))
    return ColumnTransformer([p for p in parts if p[2]], verbose_feature_names_out=True)


def split_train_val(frame: pd.DataFrame, target: str, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded, label-stratified split of the train pool."""
    if not 0 < fraction < 1:
        raise DataError(f"preprocess.val_fraction must be in (0, 1), got {fraction}")
    train, val = train_test_split(frame, test_size=fraction, random_state=seed, stratify=frame[target])
    return train.reset_index(drop=True), val.reset_index(drop=True)


def fit(train: pd.DataFrame, schema: Schema, params: PreprocessParams) -> Preprocessor:
    """Fit the feature transformer on the training split only."""
    inputs = schema.features(params.include_sensitive)
    unknown = [c for c in params.log_transform if c not in schema.numeric]
    if unknown:
        print(f"preprocess: log_transform columns {unknown} are not numeric columns of this data; skipped",
              file=sys.stderr)  # fmt: skip
    transformer = build_transformer(schema, inputs, params.log_transform)
    for column in schema.categorical:
        if column in train:
            train = train.assign(**{column: train[column].astype("object")})
    transformer.fit(train[inputs])
    return Preprocessor(transformer, inputs, schema.target, schema.labels, schema.positive_label, schema.sensitive)


def to_model_frame(pre: Preprocessor, frame: pd.DataFrame) -> pd.DataFrame:
    """Features, label and (for auditing, never as inputs) the sensitive attributes, in one frame."""
    features = pd.DataFrame(pre.transform(frame), columns=pre.feature_names)
    features[LABEL_COLUMN] = pre.encode_labels(frame[pre.target])
    for column in pre.sensitive:
        features[f"{SENSITIVE_PREFIX}{column}"] = frame[column].astype("str").to_numpy()
    return features


def run(data: DataParams, params: PreprocessParams) -> dict[str, int]:
    """Split, fit on train, transform all three splits, write them and the fitted preprocessor."""
    if not io.read_json(VALIDATION_REPORT)["passed"]:
        raise ValidationFailed(f"{VALIDATION_REPORT} records a failed validation; fix the data and rerun")
    pool, test = pd.read_parquet(INTERIM_TRAIN), pd.read_parquet(INTERIM_TEST)
    schema = resolve_schema(data, pool, io.read_json(PRIVACY_POLICY))
    train, val = split_train_val(pool, schema.target, params.val_fraction, params.seed)
    pre = fit(train, schema, params)
    frames = {PROCESSED_TRAIN: train, PROCESSED_VAL: val, PROCESSED_TEST: test}
    for path, frame in frames.items():
        io.write_parquet(path, to_model_frame(pre, frame))
    io.write_with(PREPROCESSOR, lambda tmp: joblib.dump(pre, tmp))
    return {"train": len(train), "val": len(val), "test": len(test), "features": len(pre.feature_names)}


def main() -> None:
    """DVC entry point."""
    params = load_params()
    sizes = run(params.data, params.preprocess)
    print(f"preprocess: {sizes}")


if __name__ == "__main__":
    cli(main)
