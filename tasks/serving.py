"""The registered model: an MLflow pyfunc holding the fitted preprocessor and the torch weights.

`predict(raw_frame)` takes the raw input columns (no label) and returns, per row, the positive-class
probability and the predicted label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

PROBABILITY, LABEL = "probability", "label"
ARTIFACT_MODEL, ARTIFACT_PREPROCESSOR, ARTIFACT_POLICY = "model", "preprocessor", "privacy_policy"


class HumaneModel(mlflow.pyfunc.PythonModel):
    """Preprocessing + MLP behind MLflow's pyfunc interface."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def load_context(self, context: Any) -> None:
        """Load the preprocessor and rebuild the network from a state dict (weights_only: no pickled code)."""
        import joblib
        import torch

        from tasks.io import read_json
        from tasks.model import load_model
        from tasks.privacy import FittedPolicy

        self.policy = FittedPolicy.from_dict(read_json(Path(context.artifacts[ARTIFACT_POLICY])))
        self.preprocessor = joblib.load(context.artifacts[ARTIFACT_PREPROCESSOR])
        self.model = load_model(torch.load(context.artifacts[ARTIFACT_MODEL], weights_only=True))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Probability of the positive label and the label itself for each raw row."""
        import torch

        from tasks.model import probabilities
        from tasks.privacy import apply_policy

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
