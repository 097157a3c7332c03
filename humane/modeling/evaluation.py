"""Evaluation: test-split metrics of the model and two baselines, ROC points, calibration bins, plots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
    roc_curve,
)

from humane.core import io
from humane.modeling.decision import plain_decisions
from humane.modeling.model import load_model, probabilities
from humane.modeling.params import EvaluateParams

PROB_EPS = 1e-7  # keeps log loss finite for a constant 0/1 prediction
# models/unmitigated.pt's one key when training had no remedy (the train stage's twin): the model is its own twin.
SAME_NETWORK = "same_as"


@dataclass(frozen=True)
class CalibrationBin:
    """Mean predicted probability against observed positive rate in one probability bin."""

    lower: float
    upper: float
    count: int
    mean_predicted: float
    fraction_positive: float


def calibration_bins(y: np.ndarray, p: np.ndarray, n_bins: int) -> list[CalibrationBin]:
    """Equal-width probability bins (the last one closed); empty bins are omitted."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        mask = which == b
        if mask.any():
            bins.append(
                CalibrationBin(
                    float(edges[b]), float(edges[b + 1]), int(mask.sum()), float(p[mask].mean()), float(y[mask].mean())
                )
            )
    return bins


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int) -> float:
    """Count-weighted mean |observed rate − mean prediction| over equal-width bins."""
    bins = calibration_bins(y, p, n_bins)
    return float(sum(b.count * abs(b.fraction_positive - b.mean_predicted) for b in bins) / len(y))


def binary_metrics(
    y: np.ndarray, p: np.ndarray, threshold: float, n_bins: int, decisions: np.ndarray | None = None
) -> dict[str, float]:
    """Threshold, ranking and probability-quality metrics of positive-class probabilities.

    `decisions` (0/1) replaces `p >= threshold` for the threshold metrics when the decisions come from
    elsewhere (per-group thresholds of a post-processed model); the ranking and probability metrics are the
    model's scores' either way.
    """
    predicted = (
        plain_decisions(p, threshold).astype(np.int64) if decisions is None else np.asarray(decisions, dtype=np.int64)
    )
    two_classes = len(np.unique(y)) == 2
    clipped = np.clip(p, PROB_EPS, 1 - PROB_EPS)
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(y, predicted)),
        "roc_auc": float(roc_auc_score(y, p)) if two_classes else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if two_classes else float("nan"),
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p, n_bins),
    }


def predict_proba(state: dict[str, Any], x: torch.Tensor) -> np.ndarray:
    """Positive-class probabilities of the saved model."""
    model = load_model(state)
    with torch.inference_mode():
        return probabilities(model(x)).numpy().astype(np.float64)


def logreg_scores(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """The logistic-regression baseline's positive-class probabilities: an L2 fit on the same features."""
    return LogisticRegression(max_iter=2000).fit(x_train, y_train).predict_proba(x_test)[:, 1]


def baselines(
    y_train: np.ndarray, y_test: np.ndarray, p_logreg: np.ndarray, params: EvaluateParams
) -> dict[str, dict[str, float]]:
    """A majority-class predictor (the training prior) and the logistic regression (`logreg_scores`), scored.

    The majority class always predicts the commoner training label, whatever evaluate.threshold says: its
    scores are the prior (for the probability metrics), its decisions that label.
    """
    prior = np.full(len(y_test), y_train.mean())
    majority = np.full(len(y_test), int(y_train.mean() >= 0.5))
    return {
        "majority": binary_metrics(y_test, prior, params.threshold, params.calibration_bins, majority),
        "logreg": binary_metrics(y_test, p_logreg, params.threshold, params.calibration_bins),
    }


def roc_points(y: np.ndarray, p: np.ndarray, max_points: int = 200) -> list[dict[str, float]]:
    """The ROC curve thinned to at most `max_points` for `dvc plots`."""
    fpr, tpr, _ = roc_curve(y, p)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(max_points, len(fpr))).round().astype(int))
    return [{"fpr": round(float(fpr[i]), 6), "tpr": round(float(tpr[i]), 6)} for i in keep]


def save_plots(
    roc: list[dict[str, float]], bins: list[CalibrationBin], auc: float, roc_png: Path, calibration_png: Path
) -> None:
    """ROC and reliability diagrams as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([r["fpr"] for r in roc], [r["tpr"] for r in roc], label=f"model (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test split")
    ax.legend(loc="lower right")
    io.write_with(roc_png, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([b.mean_predicted for b in bins], [b.fraction_positive for b in bins], marker="o", label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.set(xlabel="mean predicted probability", ylabel="observed positive rate", title="Calibration, test split")
    ax.legend(loc="upper left")
    io.write_with(calibration_png, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
