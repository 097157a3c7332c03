"""The registered model: an MLflow pyfunc logged as code, holding the privacy policy, preprocessor and weights.

`predict(raw_frame)` takes the raw input columns (no label) and returns, per row, the positive-class
probability and the predicted label. The model is logged as code ("models from code", served_model.py),
its files are JSON, skops (explicitly trusted types only) and a torch state dict read with weights_only=True
(torch's restricted loader, which builds tensors and plain containers only): no pickle of code is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

PROBABILITY, LABEL = "probability", "label"
ARTIFACT_MODEL, ARTIFACT_PREPROCESSOR, ARTIFACT_POLICY = "model", "preprocessor", "privacy_policy"
MASKED = "<masked>"  # stands in for values of masked or sensitive columns in the logged input example
SERVED_MODEL_FILE = Path(__file__).with_name("served_model.py")


class HumaneModel(mlflow.pyfunc.PythonModel):
    """Privacy policy + preprocessing + MLP behind MLflow's pyfunc interface."""

    def load_context(self, context: Any) -> None:
        """Load the policy (JSON), the preprocessor (skops) and the network (state dict, weights_only)."""
        self.load_files(
            float(context.model_config["threshold"]),
            Path(context.artifacts[ARTIFACT_POLICY]),
            Path(context.artifacts[ARTIFACT_PREPROCESSOR]),
            Path(context.artifacts[ARTIFACT_MODEL]),
        )

    def load_files(self, threshold: float, policy: Path, preprocessor: Path, model: Path) -> HumaneModel:
        """Load from the pipeline's own files (what load_context does with the logged copies)."""
        import torch

        from humane.core.io import read_json
        from humane.modeling.features import load_preprocessor
        from humane.modeling.model import load_model
        from humane.privacy.policy import FittedPolicy

        self.threshold = threshold
        self.policy = FittedPolicy.from_dict(read_json(policy))
        self.preprocessor = load_preprocessor(preprocessor)
        self.model = load_model(torch.load(model, weights_only=True))
        return self

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Probability of the positive label and the label itself for each raw row."""
        import torch

        from humane.modeling.model import probabilities
        from humane.privacy.policy import apply_policy

        frame = pd.DataFrame(model_input)
        # The same masking as training: requests may carry raw values; identifiers are never inputs.
        frame = apply_policy(self.policy, frame.drop(columns=self.policy.pseudonymize, errors="ignore"), key=None)
        x = torch.from_numpy(self.preprocessor.transform(frame))
        with torch.inference_mode():
            p = probabilities(self.model(x)).numpy().astype(np.float64)
        labels = self.preprocessor.labels
        negative = next(label for label in labels if label != self.preprocessor.positive_label)
        predicted = np.where(p >= self.threshold, self.preprocessor.positive_label, negative)
        return pd.DataFrame({PROBABILITY: p, LABEL: predicted})


def input_example(
    frame: pd.DataFrame, inputs: list[str], masked: set[str], placeholders: dict[str, Any] | None = None
) -> pd.DataFrame:
    """One synthetic row with the model's input columns and types, quoting nobody.

    Each column takes its most common value, except masked and sensitive columns: their `placeholders` entry
    (e.g. a binned column's lowest edge, so the request passes the privacy policy) or 0 for numbers, MASKED
    (an unknown category to the model) for text.
    """
    row: dict[str, Any] = {}
    for column in inputs:
        values = frame[column].dropna()
        if pd.api.types.is_numeric_dtype(frame[column]):
            if column in masked or not len(values):
                row[column] = (placeholders or {}).get(column, 0)
            else:
                row[column] = values.mode().iloc[0]
        else:
            row[column] = MASKED if column in masked or not len(values) else values.mode().iloc[0]
    example = pd.DataFrame([row])
    for column in inputs:
        if pd.api.types.is_numeric_dtype(frame[column]):
            example[column] = example[column].astype(frame[column].dtype)
    return example
