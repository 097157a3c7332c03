"""The training loop: mini-batch AdamW on the MLP, early stopping on validation loss, best epoch restored."""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm import tqdm

from humane.core.errors import HumaneError
from humane.core.params import TrainParams
from humane.modeling.model import MLP, MLPArgs, loss_fn, probabilities


class TrainingDiverged(HumaneError):
    """A training or validation loss stopped being a finite number."""


@dataclass(frozen=True)
class TrainResult:
    """The best model and how training went."""

    model: MLP
    best_epoch: int
    history: list[dict[str, float]]
    train_seconds: float
    samples_per_second: float
    privacy: dict[str, float | str | bool] = field(default_factory=lambda: {"dp_enabled": False})


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and make its kernels deterministic; return the generator that orders the batches."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)


Penalty = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module, xb: torch.Tensor, yb: torch.Tensor,
    wb: torch.Tensor | None = None, gb: torch.Tensor | None = None, penalty: Penalty | None = None,
) -> float:  # fmt: skip
    """One optimisation step; returns the batch loss.

    With sample weights `wb` the BCE is weighted per row (reweighing); with a `penalty` its fairness term on the
    batch's groups `gb` is added (in-processing mitigation).
    """
    optimizer.zero_grad(set_to_none=True)
    logits = model(xb)
    if wb is None:
        loss = criterion(logits, yb)
    else:
        loss = (nn.functional.binary_cross_entropy_with_logits(logits, yb, reduction="none") * wb).mean()
    if penalty is not None:
        loss = loss + penalty(logits, gb, yb)
    loss.backward()
    optimizer.step()
    return loss.item()


def eval_step(model: nn.Module, criterion: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Validation loss, accuracy and ROC AUC."""
    model.eval()
    with torch.inference_mode():
        logits = model(x)
        loss = criterion(logits, y.float()).item()
        probs = probabilities(logits).numpy()
    labels = y.numpy()
    predicted = (probs >= 0.5).astype(np.int64)
    finite = bool(np.isfinite(probs).all())
    auc = roc_auc_score(labels, probs) if finite and len(np.unique(labels)) > 1 else float("nan")
    return {"val_loss": loss, "val_accuracy": float((predicted == labels).mean()), "val_auc": float(auc)}


def check_finite(row: dict[str, float]) -> None:
    """Stop when a loss is NaN or infinite: every later comparison with it would be false, and silent."""
    bad = [k for k in ("train_loss", "val_loss") if not math.isfinite(row[k])]
    if bad:
        raise TrainingDiverged(
            f"training diverged at epoch {row['epoch']}: {', '.join(f'{k} = {row[k]}' for k in bad)}; nothing was "
            "saved (try a lower train.lr, or check the processed features for extreme values)"
        )


def fit(
    x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, params: TrainParams,
    checkpoint_dir: Path | None = None, *, sample_weight: torch.Tensor | None = None,
    groups: torch.Tensor | None = None, penalty: Penalty | None = None,
) -> TrainResult:  # fmt: skip
    """Train with early stopping on validation loss and return the best epoch's model.

    `sample_weight` (one per training row, rescaled to mean 1) weights the training loss; `penalty` adds a
    fairness term computed on each batch's rows of `groups` (one-hot, rows x groups). The validation loss that
    early stopping reads stays the plain, unweighted BCE.
    """
    generator = seed_everything(params.seed)
    if params.dp.enabled and (sample_weight is not None or penalty is not None):
        raise HumaneError("sample weights and fairness terms are not combined with DP-SGD (train.dp.enabled)")
    if penalty is not None and groups is None:
        raise HumaneError("a fairness penalty needs the training rows' groups")
    weights = None if sample_weight is None else (sample_weight / sample_weight.mean()).float()
    args = MLPArgs(x_train.shape[1], list(params.hidden_sizes), params.dropout, params.activation)
    model: nn.Module = MLP(args)
    criterion = eval_criterion = loss_fn()
    targets = y_train.float()
    n = x_train.shape[0]
    engine = None
    if params.dp.enabled:
        from humane.privacy.dp import make_private

        # Ghost clipping's double backward trips torch's notice about hooks on inputs without gradients.
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        engine, model, optimizer, criterion, loader = make_private(model, criterion, x_train, targets, params,
                                                                   generator)  # fmt: skip
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    base = getattr(model, "_module", model)  # the plain network inside Opacus' wrapper

    Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]

    def batches() -> Iterator[Batch]:
        if engine is None:
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, params.batch_size):
                idx = order[start : start + params.batch_size]
                yield (x_train[idx], targets[idx], None if weights is None else weights[idx],
                       None if groups is None else groups[idx])  # fmt: skip
            return
        from opacus.utils.batch_memory_manager import BatchMemoryManager

        # Poisson-sampled logical batches, split into physical ones that fit in memory.
        with BatchMemoryManager(data_loader=loader, max_physical_batch_size=params.dp.max_physical_batch_size,
                                optimizer=optimizer) as memory_safe:  # fmt: skip
            for xb, yb in memory_safe:
                if len(xb):
                    yield xb, yb, None, None

    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state, stale = math.inf, 0, copy.deepcopy(base.state_dict()), 0
    started = time.perf_counter()
    bar = tqdm(range(1, params.max_epochs + 1), desc="train", unit="epoch", disable=not params.progress)
    for epoch in bar:
        epoch_start = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        for xb, yb, wb, gb in batches():
            total += train_step(model, optimizer, criterion, xb, yb, wb, gb, penalty) * len(xb)
            seen += len(xb)
        row = {"epoch": epoch, "train_loss": total / max(seen, 1), **eval_step(base, eval_criterion, x_val, y_val)}
        check_finite(row)
        row["seconds"] = time.perf_counter() - epoch_start
        history.append(row)
        bar.set_postfix(train_loss=f"{row['train_loss']:.4f}", val_loss=f"{row['val_loss']:.4f}")
        if checkpoint_dir is not None:
            # Weights, optimizer state, model args and config: enough to resume or to inspect any epoch.
            torch.save(
                {"epoch": epoch, "state_dict": base.state_dict(), "optimizer": optimizer.state_dict(),
                 "model_args": args.to_dict(), "config": params.model_dump(), "metrics": row},
                checkpoint_dir / f"epoch_{epoch:03d}.pt",
            )  # fmt: skip
        if row["val_loss"] < best_loss:
            best_loss, best_epoch, best_state, stale = row["val_loss"], epoch, copy.deepcopy(base.state_dict()), 0
        else:
            stale += 1
            if stale >= params.patience:
                break
    bar.close()
    seconds = time.perf_counter() - started
    base.load_state_dict(best_state)
    base.eval()
    result = TrainResult(base, best_epoch, history, seconds, n * len(history) / seconds)
    if engine is not None:
        # The budget spent by the epochs actually run (early stopping spends less than the target).
        result.privacy.update(
            dp_enabled=True, epsilon=float(engine.get_epsilon(params.dp.delta)), delta=params.dp.delta,
            noise_multiplier=float(optimizer.noise_multiplier), max_grad_norm=params.dp.max_grad_norm,
            accountant=params.dp.accountant,
        )  # fmt: skip
    return result
