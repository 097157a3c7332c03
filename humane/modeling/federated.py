"""Federated learning as plain functions: the global preprocessor from site aggregates, and a site's training round.

No Flower, Prefect or MLflow here: a site's node (federated/, in the site environment) and the in-process bench
(bench/federated.py) both call these.

- `preprocessor_from_summary`: the fitted ColumnTransformer of humane.modeling.features.fit_preprocessor, built from
  merged site summaries (humane.data.site_stats) instead of pooled rows. One documented difference: numeric nulls are
  imputed with the pooled MEAN, not the median (a median needs the rows or a histogram; the mean is exact from
  the sums, and the scaler's statistics stay exact too). Rows without a numeric null transform identically (up to
  float rounding). A category withheld at every site (fewer than min_group_size rows at each) is not in the
  encoder: its rows encode as all zeros, as any unseen category does; a numeric column's values at a site that
  has fewer than min_group_size of them count as missing (imputed) in the statistics.
- `weights` / `load_weights`: the network's state as a list of numpy arrays in state_dict order (the periodic
  embeddings' frequencies included).
- `local_round`: a few local epochs from the global weights, with FedProx's proximal term and optionally DP-SGD
  (Opacus) whose budget is accounted over every round the site joins.
- `site_frames` / `site_data`: a site workspace's interim files, split as the preprocess stage splits them, and
  turned into tensors with the global preprocessor; `site_eval`: the probabilities a site scores.

A site's node, in order: after its own load, validate and data_audit stages, `site_frames(Paths(workspace), its
params.data, the coordinator's preprocess params)`; its reply to "stats" is humane.data.site_stats.site_summary of
`frames.train` with `frames.schema`. The coordinator merges the replies (merge_summaries) and sends the merged
summary back: `preprocessor_from_summary(merged, preprocess)` builds the same transformer at every site (it is
deterministic), so no fitted object travels. Each round: `site_data(pre, frames.train)`, `build_network(train
params, pre)`, `local_round(...)`. Evaluation: `site_eval(model, site_data(pre, frames.test).x)` into
humane.fairness.counts.site_counts, with humane.core.protected.sensitive_group_labels(data.sensitive, pre.sensitive) as
its groups.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from humane.core import io
from humane.core.errors import DataError, HumaneError
from humane.core.paths import Paths
from humane.core.protected import sensitive_names
from humane.data.params import DataParams
from humane.data.schema import Schema, resolve_schema
from humane.data.site_stats import check_summary
from humane.modeling.features import (
    MISSING,
    Preprocessor,
    build_transformer,
    split_train_val,
    split_xy,
    to_model_frame,
    token_layout,
)
from humane.modeling.model import Network, build_model, loss_fn, parameter_groups, probabilities
from humane.modeling.params import PreprocessParams, TrainParams
from humane.modeling.training import EVAL_CHUNK, TrainingDiverged, seed_everything, train_step
from humane.privacy.params import DPParams

Arrays = list[np.ndarray]


# --- the global preprocessor from aggregates ---------------------------------------------------------------------


def _schema(summary: dict[str, Any]) -> Schema:
    return Schema(
        target=summary["target"],
        positive_label=summary["positive_label"],
        labels=summary["labels"],
        numeric=summary["numeric"],
        categorical=summary["categorical"],
        sensitive=summary["sensitive"],
        categories={},
        ranges={},
    )


def _levels(summary: dict[str, Any], column: str) -> list[Any]:
    """The encoder's categories of a column: the values sent, and the missing level when nulls were sent."""
    stats = summary["columns"][column]
    levels = [value for value, _ in stats["categories"]] + ([MISSING] if stats["missing"] else [])
    if not levels:
        raise DataError(
            f"column {column!r}: no category reaches min_group_size ({summary['min_group_size']}) rows "
            "at any site, so the global encoder has nothing to encode (lower min_group_size, or leave "
            "the column out of the inputs)"
        )
    return levels


def _moments(summary: dict[str, Any], column: str, logged: bool) -> tuple[float, float]:
    """Mean and variance the scaler sees: mean-imputed values over all rows (imputed ones add no variance)."""
    stats = summary["columns"][column]
    count = stats["count"]
    if count == 0:
        raise DataError(
            f"column {column!r}: no site sent a value of this numeric column (none has min_group_size "
            f"({summary['min_group_size']}) values)"
        )
    total, squares = (stats["log_sum"], stats["log_sum_sq"]) if logged else (stats["sum"], stats["sum_sq"])
    mean = total / count
    rows = max(summary["rows"], count)  # noisy counts may disagree; the scaler saw at least the values
    var = (squares - count * mean**2) / rows
    # A constant column's variance, computed from sums, is off zero by rounding (about eps x the mean square):
    # zero it, so that the scaler leaves the column unscaled as on the pooled rows (not divided by ~1e-8).
    return mean, 0.0 if var <= 16 * np.finfo(np.float64).eps * squares / rows else var


def _stand_in(summary: dict[str, Any], inputs: list[str]) -> pd.DataFrame:
    """A few made-up rows holding every category to learn (the statistics are replaced after fitting)."""
    levels = {c: _levels(summary, c) for c in inputs if c in summary["categorical"]}
    n = max([2, *(len(v) for v in levels.values())])
    columns = {
        c: pd.Series([levels[c][i % len(levels[c])] for i in range(n)], dtype="object")
        if c in levels
        else pd.Series(np.arange(n, dtype=np.float64))
        for c in inputs
    }
    return pd.DataFrame(columns)


def _set_numeric(pipeline: Any, summary: dict[str, Any], columns: list[str], logged: bool) -> None:
    imputer, scaler = pipeline.named_steps["simpleimputer"], pipeline.named_steps["standardscaler"]
    moments = np.array([_moments(summary, c, logged) for c in columns], dtype=np.float64)
    mean, var = moments[:, 0], moments[:, 1]
    imputer.statistics_ = mean.copy()
    scaler.mean_, scaler.var_ = mean, var
    # StandardScaler leaves a constant column unscaled (scale 1), as sklearn's _handle_zeros_in_scale does.
    scaler.scale_ = np.where(var == 0.0, 1.0, np.sqrt(var))
    scaler.n_samples_seen_ = np.int64(summary["rows"])


def preprocessor_from_summary(summary: dict[str, Any], params: PreprocessParams) -> Preprocessor:
    """The global preprocessor, fitted from merged site summaries (humane.data.site_stats.merge_summaries).

    The transformer is built exactly as humane.modeling.features.fit_preprocessor builds it (build_transformer),
    fitted on made-up rows that hold every category the sites sent, then given the pooled statistics: the imputers'
    means and the scalers' means and variances. See the module docstring for the differences from fitting on the
    pooled rows (mean instead of median imputation; withheld categories).

    Raises:
        DataError: the summary is not a site summary, a numeric input has no value at any site, or a
            categorical input has no category that reached min_group_size anywhere.

    """
    check_summary(summary, "merged summary")
    schema = _schema(summary)
    inputs = schema.features(params.include_sensitive)
    transformer = build_transformer(schema, inputs, params.log_transform)
    parts = {name: columns for name, _, columns in transformer.transformers}
    for name in ("num", "log"):
        if name in parts:
            transformer.set_params(**{f"{name}__simpleimputer__strategy": "mean"})
    transformer.fit(_stand_in(summary, inputs))
    for name in ("num", "log"):
        if name in parts:
            _set_numeric(transformer.named_transformers_[name], summary, parts[name], logged=name == "log")
    return Preprocessor(transformer, inputs, schema.target, schema.labels, schema.positive_label, schema.sensitive)


# --- weights <-> arrays ------------------------------------------------------------------------------------------


def build_network(params: TrainParams, pre: Preprocessor) -> Network:
    """The untrained global network for the preprocessor's features (the same as the train stage builds)."""
    return build_model(params, len(pre.feature_names), token_layout(pre))


def weights(model: nn.Module) -> Arrays:
    """The network's state (parameters and buffers) as numpy arrays, in state_dict order."""
    return [t.detach().cpu().numpy().copy() for t in model.state_dict().values()]


def load_weights(model: nn.Module, arrays: Arrays) -> None:
    """Set the network's state from arrays in state_dict order (as `weights` gives them).

    Raises:
        HumaneError: the number of arrays or a shape does not match the network.

    """
    state = model.state_dict()
    if len(arrays) != len(state):
        raise HumaneError(f"the global weights hold {len(arrays)} arrays; the network has {len(state)} tensors")
    loaded = {}
    for (name, current), array in zip(state.items(), arrays, strict=True):
        if tuple(np.shape(array)) != tuple(current.shape):
            raise HumaneError(
                f"global weights: {name} has shape {tuple(np.shape(array))}, the network's is {tuple(current.shape)}"
            )
        loaded[name] = torch.as_tensor(np.asarray(array), dtype=current.dtype)
    model.load_state_dict(loaded)


def fedavg(updates: list[tuple[Arrays, int]]) -> Arrays:
    """Federated averaging: each array averaged over the sites, weighted by their training rows."""
    total = sum(n for _, n in updates)
    if not updates or total <= 0:
        raise HumaneError("federated averaging needs at least one site update with training rows")
    return [
        (sum(arrays[i].astype(np.float64) * (n / total) for arrays, n in updates)).astype(updates[0][0][i].dtype)
        for i in range(len(updates[0][0]))
    ]


# --- a site's training round -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteDP:
    """DP-SGD at a site (Opacus): the site's whole budget, spread over the rounds it may join.

    The noise is calibrated once for `rounds` x local epochs of Poisson-sampled batches; every round spends its
    share, and the epsilon reported after a round is accounted over all the rounds the site has joined. A site
    asked to train beyond `rounds` refuses (its budget is spent).
    """

    epsilon: float
    delta: float
    clip: float
    rounds: int
    accountant: Literal["prv", "rdp", "gdp"] = "prv"
    max_physical_batch_size: int = 512

    def params(self, epochs: int, batch_size: int, lr: float, weight_decay: float) -> TrainParams:
        """The settings humane.privacy.dp.make_private reads (optimiser, batch, DP; the noise is given to it).

        Built without validation of the network fields make_private never reads.
        """
        dp = DPParams(
            enabled=True,
            target_epsilon=self.epsilon,
            delta=self.delta,
            max_grad_norm=self.clip,
            accountant=self.accountant,
            max_physical_batch_size=self.max_physical_batch_size,
        )
        return TrainParams.model_construct(
            lr=lr, weight_decay=weight_decay, batch_size=batch_size, max_epochs=self.rounds * epochs, dp=dp
        )


def _proximal(params: list[nn.Parameter], anchor: list[torch.Tensor], step: float) -> None:
    """FedProx: a gradient step on mu/2 ||w - w_global||^2, i.e. w -= lr * mu * (w - w_global).

    Applied after the optimiser's step, decoupled from Adam's scaling (as AdamW decouples weight decay), so it
    is the same term with and without DP-SGD: it involves no data, so Opacus need neither clip nor noise it.
    """
    with torch.no_grad():
        for p, g in zip(params, anchor, strict=True):
            p.sub_(step * (p - g))


def _plain_epochs(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    mu: float,
    generator: torch.Generator,
) -> tuple[float, int]:
    params = list(model.parameters())
    anchor = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, weight_decay=weight_decay)
    criterion, targets, total, steps = loss_fn(), y.float(), 0.0, 0
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size]
            total += train_step(model, optimizer, criterion, x[rows], targets[rows]) * len(rows)
            steps += 1
            if mu:
                _proximal(params, anchor, lr * mu)
    return total / max(epochs * len(x), 1), steps


def _dp_epochs(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    settings: TrainParams,
    mu: float,
    noise: float,
    generator: torch.Generator,
) -> tuple[nn.Module, float, int]:
    from opacus.utils.batch_memory_manager import BatchMemoryManager

    from humane.privacy.dp import make_private, release

    # Ghost clipping's double backward trips torch's notice about hooks on inputs without gradients.
    warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
    model.train()  # Opacus validates a network in training mode
    engine, wrapped, optimizer, criterion, loader = make_private(
        model, loss_fn(), x, y.float(), settings, generator, noise_multiplier=noise
    )
    params = list(wrapped._module.parameters())
    anchor = [p.detach().clone() for p in params]
    total, rows = 0.0, 0
    wrapped.train()
    for _ in range(epochs):
        with BatchMemoryManager(
            data_loader=loader, max_physical_batch_size=settings.dp.max_physical_batch_size, optimizer=optimizer
        ) as batches:
            for xb, yb in batches:
                if not len(xb):
                    continue
                total += train_step(wrapped, optimizer, criterion, xb, yb) * len(xb)
                rows += len(xb)
                if mu and not getattr(optimizer, "_is_last_step_skipped", False):
                    _proximal(params, anchor, settings.lr * mu)
    steps = sum(s for _, _, s in engine.accountant.history)
    return release(wrapped), total / max(rows, 1), steps


def dp_schedule(dp: SiteDP, rows: int, batch_size: int, epochs: int) -> tuple[float, float, int]:
    """Sample rate, DP-SGD steps per round and the noise multiplier that spends dp.epsilon over dp.rounds rounds.

    Opacus samples each row with probability 1 / (batches per epoch) and takes that many steps an epoch.
    """
    per_epoch = max(1, math.ceil(rows / batch_size))
    steps = epochs * per_epoch
    return 1 / per_epoch, steps, _noise(dp, 1 / per_epoch, steps * dp.rounds)


@functools.lru_cache(maxsize=64)
def _noise(dp: SiteDP, sample_rate: float, steps: int) -> float:
    # The same calibration as Opacus' make_private_with_epsilon; cached: a site's rounds share it (PRV: seconds).
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=dp.epsilon,
            target_delta=dp.delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=dp.accountant,
        )
    )


@functools.lru_cache(maxsize=256)
def spent_epsilon(dp: SiteDP, noise_multiplier: float, sample_rate: float, steps: int) -> float:
    """The epsilon (at dp.delta) spent by `steps` DP-SGD steps at this noise and sample rate (all rounds joined)."""
    from opacus.accountants import create_accountant

    accountant = create_accountant(dp.accountant)
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    return float(accountant.get_epsilon(dp.delta))


def local_round(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    global_arrays: Arrays,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.0,
    proximal_mu: float = 0.0,
    dp: SiteDP | None = None,
    rounds_joined: int = 0,
    seed: int = 0,
) -> tuple[Arrays, int, dict[str, float]]:
    """One site's part of a round: load the global weights, train `epochs` local epochs, return the new weights.

    Args:
        model: the global network's shape (humane's MLP or FT-Transformer); it ends holding the new weights.
        x: the site's training features (the global preprocessor's output).
        y: their 0/1 labels.
        global_arrays: the global weights (`weights` order).
        epochs: local epochs.
        batch_size: rows per step (with DP: the expected size of a Poisson-sampled batch).
        lr: AdamW's learning rate (a fresh optimiser each round).
        weight_decay: AdamW's weight decay.
        proximal_mu: FedProx's mu (0: plain FedAvg).
        dp: DP-SGD settings, or None.
        rounds_joined: rounds this site trained in before this one (DP accounting; also reported).
        seed: seeds batch order, dropout and DP noise (give each round and site its own).

    Returns:
        The new weights, the number of training rows (FedAvg's weight) and metrics: train_loss, rows, steps,
        seconds; with DP also epsilon (spent over all rounds joined, this one included), delta, noise_multiplier,
        clip, dp_rounds.

    Raises:
        TrainingDiverged: the local loss is not finite (nothing is returned to be averaged).
        HumaneError: the DP budget is spent (rounds_joined >= dp.rounds), or the weights do not fit the network.

    """
    _refuse_spent_budget(dp, rounds_joined)
    started = time.perf_counter()
    generator = seed_everything(seed)
    load_weights(model, global_arrays)
    metrics: dict[str, float] = {"rows": len(x)}
    if dp is None:
        loss, steps = _plain_epochs(model, x, y, epochs, batch_size, lr, weight_decay, proximal_mu, generator)
    else:
        optimiser = (epochs, batch_size, lr, weight_decay)
        loss, steps, spent = _dp_round(model, x, y, dp, optimiser, proximal_mu, rounds_joined, generator)
        metrics.update(spent)
    if not math.isfinite(loss):
        raise TrainingDiverged(f"local training diverged: train_loss = {loss}; no update is sent")
    model.eval()
    metrics.update(train_loss=loss, steps=steps, seconds=time.perf_counter() - started)
    return weights(model), len(x), metrics


def _refuse_spent_budget(dp: SiteDP | None, rounds_joined: int) -> None:
    """Raise HumaneError when this site's DP budget is spent: it was spread over dp.rounds rounds."""
    if dp is not None and rounds_joined >= dp.rounds:
        raise HumaneError(
            f"this site's DP budget (epsilon {dp.epsilon}) was spread over {dp.rounds} rounds and is "
            "spent: it takes no further part"
        )


def _dp_round(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    dp: SiteDP,
    optimiser: tuple[int, int, float, float],
    proximal_mu: float,
    rounds_joined: int,
    generator: torch.Generator,
) -> tuple[float, int, dict[str, float]]:
    """local_round's DP-SGD epochs (`optimiser`: epochs, batch size, lr, weight decay): loss, steps, the DP figures.

    The model ends holding the trained weights. Epsilon is accounted as planned, over every round joined: a step
    Opacus skipped (an empty Poisson batch) only makes the figure an upper bound.
    """
    epochs, batch_size, lr, weight_decay = optimiser
    sample_rate, planned, noise = dp_schedule(dp, len(x), batch_size, epochs)
    settings = dp.params(epochs, batch_size, lr, weight_decay)
    trained, loss, steps = _dp_epochs(model, x, y, epochs, settings, proximal_mu, noise, generator)
    if steps > planned:
        raise HumaneError(f"DP-SGD took {steps} steps where {planned} were accounted for; no update is sent")
    load_weights(model, weights(trained))
    eps = spent_epsilon(dp, noise, sample_rate, planned * (rounds_joined + 1))
    figures = {"epsilon": eps, "delta": dp.delta, "noise_multiplier": noise, "clip": dp.clip}
    return loss, steps, {**figures, "dp_rounds": rounds_joined + 1}


def site_eval(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Positive-class probabilities of the rows (fp32, in chunks; the model left in eval mode)."""
    model.eval()
    with torch.inference_mode():
        logits = [model(x[i : i + EVAL_CHUNK]).float() for i in range(0, len(x), EVAL_CHUNK)]
    return probabilities(torch.cat(logits)).cpu().numpy() if logits else np.zeros(0, dtype=np.float32)


# --- a site's rows -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteFrames:
    """A site's schema and its rows, split as the preprocess stage splits them (they never leave the site)."""

    schema: Schema
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame


@dataclass(frozen=True)
class SiteData:
    """Rows as the network reads them: features, 0/1 labels, and the sensitive columns beside them.

    `sensitive` holds the model frame's sensitive copies (`humane.core.protected.sensitive_name`, as the audit reads
    them): humane.core.protected.sensitive_group_labels(data.sensitive, pre.sensitive) gives each feature's group labels
    (and their intersection), the `groups` humane.fairness.counts.site_counts takes.
    """

    x: torch.Tensor
    y: torch.Tensor
    sensitive: pd.DataFrame


def site_frames(paths: Paths, data: DataParams, preprocess: PreprocessParams) -> SiteFrames:
    """A site workspace's interim files (written by its own load stage), split into train / validation / test.

    The schema is the site's own (its profile and its rows, as the preprocess stage resolves it); the split uses
    the coordinator's preprocess seed and val_fraction, so every site splits alike.
    """
    pool, test = pd.read_parquet(paths.interim_train), pd.read_parquet(paths.interim_test)
    schema = resolve_schema(data, pool, io.read_json(paths.privacy_policy))
    train, val = split_train_val(pool, schema.target, preprocess.val_fraction, preprocess.seed)
    return SiteFrames(schema, train, val, test)


def site_data(pre: Preprocessor, frame: pd.DataFrame) -> SiteData:
    """Rows through the global preprocessor (humane.modeling.features.to_model_frame, as the preprocess stage)."""
    model_frame = to_model_frame(pre, frame)
    x, y, _ = split_xy(model_frame)
    return SiteData(x, y, model_frame[sensitive_names(pre.sensitive)])
