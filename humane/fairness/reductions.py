"""The MLP as a sample-weight-aware scikit-learn classifier, and a short loop training it with weights and a penalty.

Fairlearn's reductions (ExponentiatedGradient, GridSearch) fit a plain estimator many times with a different
sample weight per row; reweighing feeds weights and the fairness term needs the group of each row beside x.
`humane.modeling.training.fit` takes none of these (it has early stopping, checkpoints and DP-SGD, which the
reductions do not need and which would make each of their inner fits slow), so `train_mlp` is a separate, short
loop over the same network (`humane.modeling.model.MLP`), seeding (`seed_everything`) and optimiser (AdamW):
fixed epochs, weighted BCE (`reduction="none"` times the row weight, averaged over the batch), plus the
optional penalty.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn

from humane.core.errors import ConfigError, DataError
from humane.core.params import TrainParams
from humane.modeling.model import MLP, MLPArgs, probabilities
from humane.modeling.training import seed_everything

Penalty = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def train_mlp(
    x: torch.Tensor, y: torch.Tensor, *, hidden_sizes: Sequence[int], dropout: float, activation: str, lr: float,
    weight_decay: float, batch_size: int, epochs: int, seed: int, sample_weight: torch.Tensor | None = None,
    groups: torch.Tensor | None = None, penalty: Penalty | None = None,
) -> MLP:  # fmt: skip
    """Train the MLP for a fixed number of epochs on weighted BCE (+ an optional fairness term).

    Args:
        x: Features (rows × inputs), float32.
        y: 0/1 labels (rows,).
        hidden_sizes: Widths of the hidden layers (`train.hidden_sizes`).
        dropout: Dropout after each hidden layer (`train.dropout`).
        activation: Activation name (`train.activation`).
        lr: AdamW learning rate (`train.lr`).
        weight_decay: AdamW weight decay (`train.weight_decay`).
        batch_size: Rows per step (`train.batch_size`).
        epochs: Passes over the data (no early stopping).
        seed: Seeds the weights and the batch order (same inputs, same model).
        sample_weight: Weight per row (≥ 0; rescaled to mean 1 so the learning rate keeps its meaning).
        groups: Per-row group tensor the penalty reads (`mitigation.group_onehot`), beside x, never in it.
        penalty: `mitigation.fairness_penalty(...)`; needs `groups`.

    Returns:
        The trained model in eval mode.

    """
    n = x.shape[0]
    if (penalty is None) != (groups is None):
        raise ConfigError("a fairness penalty needs the per-row groups, and groups are only read by a penalty")
    if groups is not None and groups.shape[0] != n:
        raise DataError(f"{groups.shape[0]} group rows for {n} feature rows")
    weights = torch.ones(n) if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float32)
    if weights.shape != (n,) or not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise DataError(f"sample weights must be {n} finite numbers >= 0, not all zero")
    weights = weights * (n / weights.sum())
    generator = seed_everything(seed)
    model = MLP(MLPArgs(x.shape[1], list(hidden_sizes), dropout, activation))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    bce = nn.BCEWithLogitsLoss(reduction="none")
    targets = y.float()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            logits = model(x[idx])
            loss = (bce(logits, targets[idx]) * weights[idx]).mean()
            if penalty is not None and groups is not None:
                loss = loss + penalty(logits, groups[idx], targets[idx])
            loss.backward()
            optimizer.step()
    model.eval()
    return model


def predict_scores(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Positive-class probability per row, as float64 (what Fairlearn and the metrics expect)."""
    model.eval()
    with torch.inference_mode():
        return probabilities(model(x)).numpy().astype(np.float64)


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """Our torch MLP behind scikit-learn's fit / predict / predict_proba, honouring sample_weight.

    Usable by Fairlearn's ExponentiatedGradient / GridSearch (they clone it and call fit with sample_weight).
    Every hyperparameter is a constructor argument (scikit-learn's clone copies them); `from_params` fills them
    from params.yaml's `train:` section.
    """

    def __init__(
        self, *, hidden_sizes: tuple[int, ...], dropout: float, activation: str, lr: float, weight_decay: float,
        batch_size: int, epochs: int, seed: int, threshold: float,
    ) -> None:  # fmt: skip
        self.hidden_sizes = hidden_sizes
        self.dropout = dropout
        self.activation = activation
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.seed = seed
        self.threshold = threshold

    @classmethod
    def from_params(cls, train: TrainParams, *, epochs: int, threshold: float) -> MLPClassifier:
        """The classifier with params.yaml's model shape and optimiser settings.

        Args:
            train: The `train:` section (DP-SGD is not supported here: a ConfigError if enabled).
            epochs: Epochs per fit (the reductions fit many times; fewer than train.max_epochs is usual).
            threshold: Score at or above which `predict` says 1 (evaluate.threshold).

        """
        if train.dp.enabled:
            raise ConfigError("the reductions estimator does not support train.dp.enabled (DP-SGD)")
        return cls(hidden_sizes=tuple(train.hidden_sizes), dropout=train.dropout, activation=train.activation,
                   lr=train.lr, weight_decay=train.weight_decay, batch_size=train.batch_size, epochs=epochs,
                   seed=train.seed, threshold=threshold)  # fmt: skip

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> MLPClassifier:
        """Train on X (rows × features) and 0/1 y, each row's loss times its weight."""
        x = torch.as_tensor(np.asarray(X, dtype=np.float32))
        labels = np.asarray(y)
        if not np.isin(labels, (0, 1)).all():
            raise DataError("MLPClassifier needs 0/1 labels")
        weights = None if sample_weight is None else torch.as_tensor(np.asarray(sample_weight, dtype=np.float32))
        self.model_ = train_mlp(
            x, torch.as_tensor(labels.astype(np.float32)), hidden_sizes=self.hidden_sizes, dropout=self.dropout,
            activation=self.activation, lr=self.lr, weight_decay=self.weight_decay, batch_size=self.batch_size,
            epochs=self.epochs, seed=self.seed, sample_weight=weights,
        )  # fmt: skip
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = x.shape[1]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """[P(0), P(1)] per row."""
        p = predict_scores(self.model_, torch.as_tensor(np.asarray(X, dtype=np.float32)))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """1 where the positive probability is at least `threshold`."""
        return (self.predict_proba(X)[:, 1] >= self.threshold).astype(int)
