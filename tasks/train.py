"""Train stage: mini-batch AdamW on the MLP, early stopping on validation loss, best epoch restored."""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from tasks import io
from tasks.errors import cli
from tasks.model import MLP, MLPArgs, count_parameters, loss_for, n_outputs_for, probabilities
from tasks.params import TrainParams, load_params
from tasks.paths import (
    CHECKPOINTS_DIR,
    LABEL_COLUMN,
    MODEL,
    PROCESSED_TRAIN,
    PROCESSED_VAL,
    SENSITIVE_PREFIX,
    TRAIN_HISTORY,
    TRAIN_METRICS,
)


@dataclass
class History:
    """Per-epoch losses and validation metrics."""

    epochs: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class TrainResult:
    """The best model and how training went."""

    model: MLP
    best_epoch: int
    history: list[dict[str, float]]
    train_seconds: float
    samples_per_second: float
    privacy: dict[str, float | str | bool] = field(default_factory=lambda: {"dp_enabled": False})


def split_xy(frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Feature tensor, label tensor and feature names of a processed frame (sensitive columns excluded)."""
    features = [c for c in frame.columns if c != LABEL_COLUMN and not c.startswith(SENSITIVE_PREFIX)]
    x = torch.from_numpy(frame[features].to_numpy(dtype=np.float32, copy=True))
    y = torch.from_numpy(frame[LABEL_COLUMN].to_numpy(dtype=np.int64, copy=True))
    return x, y, features


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and make its kernels deterministic; return the generator that orders the batches."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)


def _targets(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    return y.float() if n_classes == 2 else y


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, xb: torch.Tensor, yb: torch.Tensor
) -> float:
    """One optimisation step; returns the batch loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
    return loss.item()


def eval_step(
    model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int
) -> dict[str, float]:
    """Validation loss, accuracy and ROC AUC (one-vs-rest for multi-class)."""
    model.eval()
    with torch.inference_mode():
        logits = model(x)
        loss = loss_fn(logits, _targets(y, n_classes)).item()
        probs = probabilities(logits).numpy()
    labels = y.numpy()
    predicted = (probs >= 0.5).astype(np.int64) if n_classes == 2 else probs.argmax(axis=1)
    auc = roc_auc_score(labels, probs, multi_class="ovr") if len(np.unique(labels)) > 1 else float("nan")
    return {"val_loss": loss, "val_accuracy": float((predicted == labels).mean()), "val_auc": float(auc)}


def fit(
    x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, params: TrainParams,
    checkpoint_dir: Path | None = None,
) -> TrainResult:  # fmt: skip
    """Train with early stopping on validation loss and return the best epoch's model."""
    generator = seed_everything(params.seed)
    n_classes = int(max(y_train.max().item(), y_val.max().item())) + 1
    args = MLPArgs(
        x_train.shape[1], n_outputs_for(n_classes), list(params.hidden_sizes), params.dropout, params.activation
    )
    model: nn.Module = MLP(args)
    loss_fn = loss_for(n_classes)
    eval_loss = loss_fn
    targets = _targets(y_train, n_classes)
    n = x_train.shape[0]
    engine = None
    if params.dp.enabled:
        # Ghost clipping's double backward trips torch's notice about hooks on inputs without gradients.
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        engine, model, optimizer, loss_fn, loader = make_private(model, loss_fn, x_train, targets, params, generator)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    base = getattr(model, "_module", model)  # the plain network inside Opacus' wrapper

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if engine is None:
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, params.batch_size):
                idx = order[start : start + params.batch_size]
                yield x_train[idx], targets[idx]
            return
        from opacus.utils.batch_memory_manager import BatchMemoryManager

        # Poisson-sampled logical batches, split into physical ones that fit in memory.
        with BatchMemoryManager(data_loader=loader, max_physical_batch_size=params.dp.max_physical_batch_size,
                                optimizer=optimizer) as memory_safe:  # fmt: skip
            for xb, yb in memory_safe:
                if len(xb):
                    yield xb, yb

    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state, stale = float("inf"), 0, copy.deepcopy(base.state_dict()), 0
    started = time.perf_counter()
    bar = tqdm(range(1, params.max_epochs + 1), desc="train", unit="epoch", disable=not params.progress)
    for epoch in bar:
        epoch_start = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        for xb, yb in batches():
            total += train_step(model, optimizer, loss_fn, xb, yb) * len(xb)
            seen += len(xb)
        row = {
            "epoch": epoch,
            "train_loss": total / max(seen, 1),
            **eval_step(base, eval_loss, x_val, y_val, n_classes),
        }
        row["seconds"] = time.perf_counter() - epoch_start
        history.append(row)
        bar.set_postfix(train_loss=f"{row['train_loss']:.4f}", val_loss=f"{row['val_loss']:.4f}")
        if checkpoint_dir is not None:
            # Weights, optimizer state, model args and config: enough to resume or to inspect any epoch.
            torch.save(
                {"epoch": epoch, "state_dict": base.state_dict(), "optimizer": optimizer.state_dict(),
                 "model_args": args.to_dict(), "config": asdict(params), "metrics": row},
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


class BatchRows(TensorDataset):
    """Rows fetched a batch at a time by one index operation (the default fetches and stacks row by row)."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[idx] for t in self.tensors)


def as_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Collate for BatchRows: the batch is already stacked."""
    return batch


def make_private(
    model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, params: TrainParams,
    generator: torch.Generator,
) -> tuple[Any, nn.Module, Any, nn.Module, Any]:  # fmt: skip
    """Wrap model, optimizer and loss for DP-SGD with noise calibrated to the target epsilon over max_epochs.

    Ghost clipping computes per-sample gradient norms without materialising per-sample gradients: on the
    Adult MLP an epoch takes about 1.9x the non-private time (bench/privacy.py); Opacus' default hooks took
    about 5x in a probe.
    """
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator

    model = ModuleValidator.fix(model)  # replaces layers DP-SGD cannot handle (e.g. BatchNorm); a copy
    ModuleValidator.validate(model, strict=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    loader = DataLoader(BatchRows(x, y), batch_size=params.batch_size, generator=generator, collate_fn=as_batch)
    engine = PrivacyEngine(accountant=params.dp.accountant)
    model, optimizer, loss_fn, loader = engine.make_private_with_epsilon(
        module=model, optimizer=optimizer, criterion=loss_fn, data_loader=loader,
        target_epsilon=params.dp.target_epsilon, target_delta=params.dp.delta, epochs=params.max_epochs,
        max_grad_norm=params.dp.max_grad_norm, grad_sample_mode="ghost",
    )  # fmt: skip
    return engine, model, optimizer, loss_fn, loader


def run(params: TrainParams) -> TrainResult:
    """Train on the processed splits and write the model, per-epoch checkpoints and the training history."""
    x_train, y_train, features = split_xy(pd.read_parquet(PROCESSED_TRAIN))
    x_val, y_val, _ = split_xy(pd.read_parquet(PROCESSED_VAL))
    with io.atomic_dir(CHECKPOINTS_DIR) as checkpoints:
        result = fit(x_train, y_train, x_val, y_val, params, checkpoints)
    state = {
        "state_dict": result.model.state_dict(),
        "model_args": result.model.args.to_dict(),
        "config": asdict(params),
        "feature_names": features,
        "best_epoch": result.best_epoch,
    }
    io.write_with(MODEL, lambda tmp: torch.save(state, tmp))
    io.write_json(TRAIN_HISTORY, result.history)
    best = result.history[result.best_epoch - 1]
    io.write_json(
        TRAIN_METRICS,
        {"best_epoch": result.best_epoch, "epochs_run": len(result.history), "best_val_loss": best["val_loss"],
         "best_val_accuracy": best["val_accuracy"], "best_val_auc": best["val_auc"],
         "n_parameters": count_parameters(result.model), **result.privacy},
    )  # fmt: skip
    return result


def main() -> None:
    """DVC entry point."""
    result = run(load_params().train)
    print(f"train: best epoch {result.best_epoch} of {len(result.history)}, {result.samples_per_second:,.0f} samples/s")


if __name__ == "__main__":
    cli(main)
