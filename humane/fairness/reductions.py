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

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn

from humane.core.errors import ConfigError, DataError
from humane.fairness.mitigation import constrained, group_keys
from humane.fairness.params import FairnessSections, MitigationParams
from humane.modeling.decision import plain_decisions
from humane.modeling.model import (
    MLP,
    Constant,
    ConstantArgs,
    Ensemble,
    EnsembleArgs,
    MLPArgs,
    embedding_spec,
    loss_fn,
    probabilities,
)
from humane.modeling.params import TrainParams
from humane.modeling.training import TrainResult, clear_checkpoints, eval_step, fit, seed_everything

if TYPE_CHECKING:
    from fairlearn.reductions import ExponentiatedGradient

Penalty = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def train_mlp(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    hidden_sizes: Sequence[int],
    dropout: float,
    activation: str,
    lr: float,
    weight_decay: float,
    batch_size: int,
    epochs: int,
    seed: int,
    sample_weight: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
    penalty: Penalty | None = None,
    n_numeric: int = 0,
    embedding: dict[str, Any] | None = None,
) -> MLP:
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
        n_numeric: How many leading columns are numeric (the preprocessor's layout), for `embedding`.
        embedding: `humane.modeling.model.embedding_spec(train)`: periodic embeddings of the numeric columns.

    Returns:
        The trained model in eval mode.

    """
    n = x.shape[0]
    weights = _row_weights(sample_weight, n, groups, penalty)
    generator = seed_everything(seed)
    model = MLP(MLPArgs(x.shape[1], list(hidden_sizes), dropout, activation, n_numeric, embedding))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    targets = y.float()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            batch_groups = None if groups is None else groups[idx]
            _step(model, optimizer, (x[idx], targets[idx], weights[idx], batch_groups), penalty)
    model.eval()
    return model


def _row_weights(
    sample_weight: torch.Tensor | None, n: int, groups: torch.Tensor | None, penalty: Penalty | None
) -> torch.Tensor:
    """Each row's loss weight, rescaled to mean 1 (all 1 without sample weights), after checking the inputs.

    Raises:
        ConfigError: A penalty without groups, or groups without a penalty.
        DataError: Groups or weights that do not describe the n rows, or weights not finite, negative or all 0.

    """
    if (penalty is None) != (groups is None):
        raise ConfigError("a fairness penalty needs the per-row groups, and groups are only read by a penalty")
    if groups is not None and groups.shape[0] != n:
        raise DataError(f"{groups.shape[0]} group rows for {n} feature rows")
    weights = torch.ones(n) if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float32)
    if weights.shape != (n,) or not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise DataError(f"sample weights must be {n} finite numbers >= 0, not all zero")
    return weights * (n / weights.sum())


def _step(
    model: MLP,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None],
    penalty: Penalty | None,
) -> None:
    """One optimiser step on a batch (x, y, weights, groups): the weighted mean BCE plus the penalty, if any."""
    x, targets, weights, groups = batch
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)
    loss = (nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weights).mean()
    if penalty is not None and groups is not None:
        loss = loss + penalty(logits, groups, targets)
    loss.backward()
    optimizer.step()


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
        self,
        *,
        hidden_sizes: tuple[int, ...],
        dropout: float,
        activation: str,
        lr: float,
        weight_decay: float,
        batch_size: int,
        epochs: int,
        seed: int,
        threshold: float,
        n_numeric: int = 0,
        embedding: dict[str, Any] | None = None,
    ) -> None:
        self.hidden_sizes = hidden_sizes
        self.dropout = dropout
        self.activation = activation
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.seed = seed
        self.threshold = threshold
        self.n_numeric = n_numeric
        self.embedding = embedding

    @classmethod
    def from_params(
        cls, train: TrainParams, *, epochs: int, threshold: float, layout: tuple[int, list[int]] | None = None
    ) -> MLPClassifier:
        """The classifier with params.yaml's model shape and optimiser settings.

        Args:
            train: The `train:` section (DP-SGD is not supported here: a ConfigError if enabled).
            epochs: Epochs per fit (the reductions fit many times; fewer than train.max_epochs is usual).
            threshold: Score at or above which `predict` says 1.
            layout: The preprocessor's layout (numeric columns first), needed by periodic numeric embeddings.

        """
        if train.dp.enabled:
            raise ConfigError("the reductions estimator does not support train.dp.enabled (DP-SGD)")
        embedding = embedding_spec(train)
        if embedding is not None and layout is None:
            raise ConfigError("train.numeric_embedding periodic needs the preprocessor's layout (numeric columns)")
        return cls(
            hidden_sizes=tuple(train.hidden_sizes),
            dropout=train.dropout,
            activation=train.activation,
            lr=train.lr,
            weight_decay=train.weight_decay,
            batch_size=train.batch_size,
            epochs=epochs,
            seed=train.seed,
            threshold=threshold,
            n_numeric=layout[0] if layout else 0,
            embedding=embedding,
        )

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> MLPClassifier:
        """Train on X (rows × features) and 0/1 y, each row's loss times its weight."""
        x = torch.as_tensor(np.asarray(X, dtype=np.float32))
        labels = np.asarray(y)
        if not np.isin(labels, (0, 1)).all():
            raise DataError("MLPClassifier needs 0/1 labels")
        weights = None if sample_weight is None else torch.as_tensor(np.asarray(sample_weight, dtype=np.float32))
        self.model_ = train_mlp(
            x,
            torch.as_tensor(labels.astype(np.float32)),
            hidden_sizes=self.hidden_sizes,
            dropout=self.dropout,
            activation=self.activation,
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            epochs=self.epochs,
            seed=self.seed,
            sample_weight=weights,
            n_numeric=self.n_numeric,
            embedding=self.embedding,
        )
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = x.shape[1]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """[P(0), P(1)] per row."""
        p = predict_scores(self.model_, torch.as_tensor(np.asarray(X, dtype=np.float32)))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """1 where the positive probability is at least `threshold`."""
        return plain_decisions(self.predict_proba(X)[:, 1], self.threshold).astype(int)


# An inner network votes positive at this probability: its own decision, as the reductions judged it.
VOTE_THRESHOLD = 0.5


def fit_reductions(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    keys: pd.Series,
    train: TrainParams,
    settings: MitigationParams,
    min_rows: int,
    layout: tuple[int, list[int]] | None,
) -> tuple[TrainResult, dict[str, Any]]:
    """Fairlearn's ExponentiatedGradient around the MLP; the result is the weighted vote of its networks.

    Each oracle call trains the MLP (params.yaml's shape and optimiser) for `reductions_epochs` epochs on the
    per-row weights the reduction asks for (Fairlearn makes about 2-5 calls per iteration, and answers a call
    whose reduced labels have one class with a constant classifier, which joins the vote as such). The
    constraint (demographic parity or equalized odds, slack `reductions_eps`) is on the groups of `keys` (the
    mitigation target). Groups too small to constrain (`min_rows`) are not constrained on their own: their rows
    join the largest group, and are named.

    Returns:
        The train stage's result (one history row: the ensemble on the training and validation rows; no early
        stopping) and what the card and the record say about the reduction.

    """
    if settings.reductions == "none":
        raise ConfigError("fit_reductions needs mitigation.reductions demographic_parity or equalized_odds")
    limited, too_small = constrained(keys.reset_index(drop=True), min_rows)
    largest = limited.value_counts().idxmax()
    sensitive = limited.fillna(largest).astype(str).to_numpy()
    reduction = _exponentiated_gradient(train, settings, layout)
    started = time.perf_counter()
    # Fairlearn's reductions fail on float32 arrays under pandas 3: float64 here, float32 inside the MLP.
    reduction.fit(x_train.numpy().astype(np.float64), y_train.numpy().astype(np.int64), sensitive_features=sensitive)
    seconds = time.perf_counter() - started
    members, weights = _vote(reduction, x_train.shape[1])
    model = Ensemble(EnsembleArgs([m.args.to_dict() for m in members], weights, VOTE_THRESHOLD), members=members).eval()
    # Fairlearn answers some oracle calls with a constant classifier instead of fitting: those trained nothing.
    calls = int(reduction.n_oracle_calls_) - int(getattr(reduction, "n_oracle_calls_dummy_returned_", 0))
    samples = calls * settings.reductions_epochs * len(x_train)
    info = {
        "method": "ExponentiatedGradient",
        "constraint": settings.reductions,
        "eps": settings.reductions_eps,
        "epochs_per_fit": settings.reductions_epochs,
        "max_iter": settings.reductions_max_iter,
        "oracle_calls": calls,
        "iterations": int(reduction.last_iter_),
        "members": len(members),
        "constant_members": sum(isinstance(m, Constant) for m in members),
        "weights": [round(w, 6) for w in weights],
        "groups": sorted(str(g) for g in limited.dropna().unique()),
        "too_small_to_constrain": too_small,
        "merged_into": str(largest) if too_small else None,
        "vote_threshold": VOTE_THRESHOLD,
    }
    row = _history_row(model, (x_train, y_train), (x_val, y_val), seconds)
    result = TrainResult(model, 1, [row], seconds, samples / max(seconds, 1e-9), samples=samples)
    return result, info


def _exponentiated_gradient(
    train: TrainParams, settings: MitigationParams, layout: tuple[int, list[int]] | None
) -> ExponentiatedGradient:
    """Fairlearn's ExponentiatedGradient (not fitted) around the MLP, for the constraint and slack of `settings`."""
    from fairlearn.reductions import DemographicParity, EqualizedOdds, ExponentiatedGradient

    moment = {"demographic_parity": DemographicParity, "equalized_odds": EqualizedOdds}[settings.reductions]
    estimator = MLPClassifier.from_params(
        train, epochs=settings.reductions_epochs, threshold=VOTE_THRESHOLD, layout=layout
    )
    return ExponentiatedGradient(
        estimator,
        moment(difference_bound=settings.reductions_eps),
        eps=settings.reductions_eps,
        max_iter=settings.reductions_max_iter,
    )


def _vote(reduction: ExponentiatedGradient, n_features: int) -> tuple[list[nn.Module], list[float]]:
    """The networks (and constant classifiers) of the reduction's solution with a positive weight, and the weights.

    Raises:
        DataError: A predictor the ensemble cannot serve, or a solution without any trained network.

    """
    members: list[nn.Module] = []
    weights: list[float] = []
    for index, weight in reduction.weights_.items():
        if weight <= 0:
            continue
        predictor = reduction.predictors_[index]
        if isinstance(predictor, MLPClassifier):
            members.append(predictor.model_)
        elif hasattr(predictor, "constant"):  # Fairlearn's DummyClassifier: the reduced labels had one class
            members.append(Constant(ConstantArgs(n_features, int(predictor.constant))))
        else:
            raise DataError(
                f"ExponentiatedGradient returned a {type(predictor).__name__}, which the ensemble cannot serve"
            )
        weights.append(float(weight))
    if not any(isinstance(m, MLP) for m in members):
        raise DataError(
            "ExponentiatedGradient's solution holds no trained network, only constant classifiers: "
            "the MLP cannot meet the constraint here (try a larger mitigation.reductions_eps)"
        )
    return members, weights


def _history_row(
    model: nn.Module,
    train_rows: tuple[torch.Tensor, torch.Tensor],
    val_rows: tuple[torch.Tensor, torch.Tensor],
    seconds: float,
) -> dict[str, Any]:
    """The one history row of a reduction: the ensemble's loss on the training rows and its figures on validation."""
    criterion = loss_fn()
    on_train = eval_step(model, criterion, *train_rows)
    on_val = eval_step(model, criterion, *val_rows)
    return {"epoch": 1, "train_loss": on_train["val_loss"], **on_val, "seconds": seconds}


def fit_mitigated(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    train_frame: pd.DataFrame,
    params: FairnessSections,
    settings: TrainParams,
    checkpoint_dir: Path | None = None,
    *,
    sample_weight: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
    penalty: Penalty | None = None,
    layout: tuple[int, list[int]] | None = None,
) -> tuple[TrainResult, dict[str, Any] | None]:
    """The train stage's training, also the sweep's: the reductions when mitigation.reductions asks, else `fit`.

    Returns the result and, for the reductions, what they did (None otherwise).
    """
    mitigation = params.mitigation
    if mitigation.reductions != "none":
        if checkpoint_dir is not None:  # nothing to resume: no epochs; an earlier run's checkpoints go
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            clear_checkpoints(checkpoint_dir)
        keys = group_keys(train_frame, mitigation.target)
        return fit_reductions(
            x_train, y_train, x_val, y_val, keys, settings, mitigation, params.validate.min_group_rows, layout
        )
    result = fit(
        x_train,
        y_train,
        x_val,
        y_val,
        settings,
        checkpoint_dir,
        sample_weight=sample_weight,
        groups=groups,
        penalty=penalty,
        layout=layout,
        fingerprint_extra=mitigation.model_dump_json(),
        code=[Path(__file__).with_name("mitigation.py")],  # the loss terms' code: a resumable checkpoint matches it
    )
    return result, None
