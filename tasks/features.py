"""The fitted raw-frame → model-input transformation (its own module so that pickles name it stably)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer

from tasks.errors import DataError

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
    labels: list[str]
    positive_label: str
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
        return (labels.astype(str) == self.positive_label).to_numpy(dtype=np.int64)
