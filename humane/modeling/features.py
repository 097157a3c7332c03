"""Features: the train/validation split, the fitted raw-frame → model-input transformation, and its storage.

The fitted transformer is stored with skops (no pickle): loading it constructs only the types listed in
`TRUSTED`, never arbitrary code.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from humane.core.errors import DataError
from humane.core.params import Label
from humane.core.paths import LABEL_COLUMN, WEIGHT_COLUMN
from humane.core.protected import is_sensitive_copy, sensitive_copies
from humane.data.schema import Schema
from humane.modeling.params import PreprocessParams

MISSING = "__missing__"  # the category that stands for a null categorical value


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """log1p that keeps the sign, for heavy-tailed columns that may hold negatives."""
    return np.sign(values) * np.log1p(np.abs(values))


@dataclass
class Preprocessor:
    """The fitted raw-frame → model-input transformation, saved beside the model."""

    transformer: ColumnTransformer
    inputs: list[str]
    target: str
    labels: list[Label]
    positive_label: Label
    sensitive: list[str]

    @property
    def feature_names(self) -> list[str]:
        """Names of the model's input features, in order."""
        return [str(n) for n in self.transformer.get_feature_names_out()]

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw rows (label optional) → float32 feature matrix."""
        missing = [c for c in self.inputs if c not in frame]
        if missing:
            raise DataError(f"input frame lacks the model's input columns {missing}")
        frame = frame[self.inputs]
        # The encoders were fitted on object columns; pandas' string dtype would not compare equal to them.
        text = [c for c in self.inputs if not pd.api.types.is_numeric_dtype(frame[c])]
        frame = frame.assign(**{c: frame[c].astype("object") for c in text})
        return np.asarray(self.transformer.transform(frame), dtype=np.float32)

    def encode_labels(self, labels: pd.Series) -> np.ndarray:
        """1 for the positive label, 0 otherwise."""
        # Compared in the column's own type: a 0/1 integer label is matched by the integer 1, not by "1".
        return (labels == self.positive_label).to_numpy(dtype=np.int64)


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


def token_layout(pre: Preprocessor) -> tuple[int, list[int]]:
    """How the model's input row splits into features: numeric column count, then each one-hot block's width.

    The FT-Transformer gives each numeric column and each categorical column (its one-hot block, read back as a
    category index) one token. The transformer writes numeric parts first, then the one-hot part (build_transformer).
    """
    slices = pre.transformer.output_indices_
    numeric = sum(slices[name].stop - slices[name].start for name in ("num", "log") if name in slices)
    widths: list[int] = []
    if "cat" in pre.transformer.named_transformers_:
        encoder = pre.transformer.named_transformers_["cat"][-1]
        widths = [len(categories) for categories in encoder.categories_]
        if slices["cat"].start != numeric or slices["cat"].stop - slices["cat"].start != sum(widths):
            raise DataError("the preprocessor's one-hot columns do not follow its numeric columns as expected")
    return numeric, widths


def split_train_val(frame: pd.DataFrame, target: str, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded, label-stratified split of the train pool."""
    if not 0 < fraction < 1:
        raise DataError(f"preprocess.val_fraction must be in (0, 1), got {fraction}")
    train, val = train_test_split(frame, test_size=fraction, random_state=seed, stratify=frame[target])
    return train.reset_index(drop=True), val.reset_index(drop=True)


def fit_preprocessor(train: pd.DataFrame, schema: Schema, params: PreprocessParams) -> Preprocessor:
    """Fit the feature transformer on the training split only."""
    inputs = schema.features(params.include_sensitive)
    unknown = [c for c in params.log_transform if c not in schema.numeric]
    if unknown:
        print(
            f"preprocess: log_transform columns {unknown} are not numeric columns of this data; skipped",
            file=sys.stderr,
        )
    transformer = build_transformer(schema, inputs, params.log_transform)
    for column in schema.categorical:
        if column in train:
            train = train.assign(**{column: train[column].astype("object")})
    transformer.fit(train[inputs])
    return Preprocessor(transformer, inputs, schema.target, schema.labels, schema.positive_label, schema.sensitive)


def to_model_frame(pre: Preprocessor, frame: pd.DataFrame) -> pd.DataFrame:
    """Features, label and (for auditing, never as inputs) the sensitive attributes, in one frame.

    A sensitive value is written as its text (`humane.core.protected.sensitive_copies`: 1 and 1.0 alike) and a
    null stays a null (None), on every pandas version (pandas < 3 turned NaN into the text "nan"). Naming the null
    group is left to `humane.core.protected.group_labels`, the one definition of a group label.
    """
    features = pd.DataFrame(pre.transform(frame), columns=pre.feature_names)
    features[LABEL_COLUMN] = pre.encode_labels(frame[pre.target])
    for column, values in sensitive_copies(frame, pre.sensitive).items():
        features[column] = values.to_numpy()
    return features


def split_xy(frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Feature tensor, label tensor and feature names of a processed frame (sensitive columns, weights excluded)."""
    features = [c for c in frame.columns if c not in (LABEL_COLUMN, WEIGHT_COLUMN) and not is_sensitive_copy(c)]
    x = torch.from_numpy(frame[features].to_numpy(dtype=np.float32, copy=True))
    y = torch.from_numpy(frame[LABEL_COLUMN].to_numpy(dtype=np.int64, copy=True))
    return x, y, features


# Types a stored preprocessor may hold beyond what skops trusts by default (sklearn's estimators): the dtypes
# SimpleImputer records and our log transform. skops refuses to construct anything else.
TRUSTED = ("numpy.dtype", f"{__name__}.signed_log1p")


def save_preprocessor(pre: Preprocessor, path: Path) -> None:
    """Store the fitted preprocessor with skops (a zip of JSON and arrays; no pickle)."""
    import skops.io as sio

    sio.dump(
        {
            "transformer": pre.transformer,
            "inputs": pre.inputs,
            "target": pre.target,
            "labels": pre.labels,
            "positive_label": pre.positive_label,
            "sensitive": pre.sensitive,
        },
        path,
    )


def load_preprocessor(path: Path) -> Preprocessor:
    """Load a stored preprocessor, constructing only trusted types (sklearn, numpy, our log transform)."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    refused = [t for t in untrusted if t not in TRUSTED]
    if refused:
        raise DataError(f"{path}: the stored preprocessor holds types that are not trusted: {refused}")
    payload: dict[str, Any] = sio.load(path, trusted=untrusted)
    return Preprocessor(**payload)
