"""The decision rule of a model without per-group thresholds: `p >= threshold` (numpy only: no torch to import).

A post-processed model decides by its group's threshold instead (`humane.fairness.thresholds`), which falls back
to this rule where it fits no threshold.
"""

from __future__ import annotations

import numpy as np


def plain_decisions(p: np.ndarray, threshold: float) -> np.ndarray:
    """Positive where p >= threshold (bool per row): a score exactly at the threshold decides yes."""
    return np.asarray(p) >= threshold
