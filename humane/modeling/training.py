"""The training loop: mini-batch AdamW, early stopping on validation loss, best epoch restored.

One plain loop (`fit`: for each epoch, for each step, validate, record, checkpoint) for every setting; each
concern is a named piece it calls:

- precision, gradient accumulation and DDP's all-reduce: `Step` (bf16 `autocast`, micro-batches, `no_sync`);
- DDP: `ProcessGroup` (rank, world, collectives) and `shares` (each process's share of each global batch);
- DP-SGD: `private_engine` / `private_step` (humane.privacy.dp.PrivateSGD: clipping, noise, accountant),
  `privacy_report`;
- resume: `Checkpoints` (resume.pt and each epoch's weights, its `fingerprint`), `Trainee` (weights, optimiser
  and RNG state), `Progress` (history, best epoch, patience);
- the fairness term and sample weights: plain inputs (`penalty`, `sample_weight`, `groups`) that `batch_loss`
  adds to the BCE; the caller (humane.fairness) builds them.

`train.batch_size` is the global batch: every process draws the same seeded permutation, takes its contiguous
share of each global batch and splits it into `grad_accumulation` micro-batches; each micro-batch's mean loss is
scaled by its share of the global batch, so the summed (and, across processes, averaged) gradient is the global
batch's mean gradient, as in one process.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm import tqdm

from humane.core import io
from humane.core.errors import HumaneError
from humane.modeling.model import Network, build_model, loss_fn, parameter_groups, probabilities
from humane.modeling.params import TrainParams

if TYPE_CHECKING:
    from humane.privacy.dp import PrivateSGD

RESUME_FILE = "resume.pt"  # the last epoch's full training state (removed once training ends)
EVAL_CHUNK = 65536  # validation rows scored at once (larger sets in chunks: bounded memory)
# Params that do not change what is computed: a checkpoint written under other values still resumes.
NOT_FINGERPRINTED = ("progress", "resume", "compute")


class TrainingDiverged(HumaneError):
    """A training or validation loss stopped being a finite number."""


@dataclass(frozen=True)
class TrainResult:
    """The best model and how training went."""

    model: Network
    best_epoch: int
    history: list[dict[str, float]]
    train_seconds: float
    samples_per_second: float
    privacy: dict[str, float | str | bool] = field(default_factory=lambda: {"dp_enabled": False})
    # The epoch this attempt continued after (0: trained from the start) and why it did or did not resume.
    resumed_from: int = 0
    resume_note: str = ""
    device: str = "cpu"
    world_size: int = 1
    # Training seconds of the earlier, interrupted attempts this one resumed (included in train_seconds).
    prior_seconds: float = 0.0
    # Rows processed in training, all attempts; 0: epochs run x training rows (what `fit` does).
    samples: int = 0


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and make its kernels deterministic; return the generator that orders the batches.

    On CUDA, cuBLAS needs a fixed workspace to be deterministic (CUBLAS_WORKSPACE_CONFIG, read when cuBLAS
    starts: set here, before the first CUDA matmul, unless the user set it).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def pick_device(params: TrainParams) -> torch.device:
    """CUDA when asked for or available (`auto`), else CPU; under torchrun each process takes its LOCAL_RANK GPU."""
    if params.device == "cuda" and not torch.cuda.is_available():
        raise HumaneError("train.device is cuda but torch sees no CUDA device (set train.device: auto or cpu)")
    if params.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def autocast(device: torch.device, precision: str) -> Any:
    """bf16 autocast of the forward pass, or nothing (fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


Penalty = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def batch_loss(
    model: nn.Module,
    criterion: nn.Module,
    xb: torch.Tensor,
    yb: torch.Tensor,
    wb: torch.Tensor | None,
    gb: torch.Tensor | None,
    penalty: Penalty | None,
) -> torch.Tensor:
    """The batch's mean loss: BCE on the raw logit (weighted per row with `wb`), plus the fairness `penalty`.

    A network that trains several members at once (TabM: logits of shape (batch, k)) has each member learn every
    row, the loss averaged over members; the fairness term reads the members' mean logit.
    """
    logits = model(xb).float()
    members = logits.ndim == 2
    targets = yb.unsqueeze(-1).expand_as(logits) if members else yb
    if wb is None:
        loss = criterion(logits, targets)
    else:
        rows = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        loss = ((rows.mean(-1) if members else rows) * wb).mean()
    if penalty is not None:
        loss = loss + penalty(logits.mean(-1) if members else logits, gb, yb)
    return loss


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    xb: torch.Tensor,
    yb: torch.Tensor,
    wb: torch.Tensor | None = None,
    gb: torch.Tensor | None = None,
    penalty: Penalty | None = None,
) -> float:
    """One optimisation step on one batch (one process, no accumulation); returns the batch loss.

    With sample weights `wb` the BCE is weighted per row (reweighing); with a `penalty` its fairness term on the
    batch's groups `gb` is added (in-processing mitigation).
    """
    optimizer.zero_grad(set_to_none=True)
    loss = batch_loss(model, criterion, xb, yb, wb, gb, penalty)
    loss.backward()
    optimizer.step()
    return loss.item()


def eval_step(model: nn.Module, criterion: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Validation loss, accuracy and ROC AUC (fp32, in chunks of EVAL_CHUNK rows)."""
    model.eval()
    with torch.inference_mode():
        if len(x) <= EVAL_CHUNK:
            logits = model(x).float()
        else:
            logits = torch.cat([model(x[i : i + EVAL_CHUNK]).float() for i in range(0, len(x), EVAL_CHUNK)])
        loss = criterion(logits, y.float()).item()
        probs = probabilities(logits).cpu().numpy()
    labels = y.cpu().numpy()
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


def fingerprint(
    params: TrainParams, tensors: list[torch.Tensor | None], extra: str = "", code: Sequence[Path] = ()
) -> str:
    """What a checkpoint must match to be resumed: training params, the data's bytes, the training code.

    `extra` carries what else shapes the loss (e.g. the mitigation settings), `code` the source files outside
    this package whose code shapes it (the caller's loss terms). Params that do not change the computation
    (progress bar, resume switch, compute-bill settings) are left out.
    """
    digest = hashlib.sha256()
    settings = params.model_dump(mode="json", exclude=set(NOT_FINGERPRINTED))
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(extra.encode())
    for tensor in tensors:
        digest.update(b"none" if tensor is None else tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(b"|")
    # The training code: this package, the caller's loss terms, DP-SGD; and the libraries that compute.
    here = Path(__file__)
    for source in [*sorted(here.parent.glob("*.py")), *code, here.parents[1] / "privacy" / "dp.py"]:
        digest.update(source.read_bytes())
    from importlib.metadata import version

    for library in ("torch", "rtdl-revisiting-models", "rtdl-num-embeddings", "tabm", "fairret", "opacus"):
        digest.update(f"{library}=={version(library)};".encode())
    return digest.hexdigest()


def read_resume(checkpoint_dir: Path | None, params: TrainParams, expected: str) -> tuple[dict | None, str]:
    """The checkpoint to continue from, or None and why training starts from the first epoch."""
    if checkpoint_dir is None:
        return None, "no checkpoint folder"
    path = checkpoint_dir / RESUME_FILE
    if not path.exists():
        return None, "no checkpoint of an interrupted run"
    if not params.resume:
        return None, "train.resume is false"
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # a checkpoint cut short by the kill: start afresh, and say so
        return None, f"{path} could not be read ({type(err).__name__}); starting afresh"
    if state.get("fingerprint") != expected:
        return None, f"{path} was written for other params, data or training code; starting afresh"
    return state, f"resumed after epoch {state['epoch']} from {path}"


def clear_checkpoints(checkpoint_dir: Path, everything: bool = True) -> None:
    """Remove half-written files a kill left behind and (everything) an earlier run's checkpoints."""
    old = [*checkpoint_dir.glob(".epoch_*.pt.*"), *checkpoint_dir.glob(f".{RESUME_FILE}.*")]
    if everything:
        old += [*checkpoint_dir.glob("epoch_*.pt"), checkpoint_dir / RESUME_FILE]
    for path in old:
        path.unlink(missing_ok=True)


# --- DDP: the process group this process trains in (one process: rank 0 of 1, every collective a no-op) ---


@dataclass(frozen=True)
class ProcessGroup:
    """The rank of this process, the size of its group, and the collectives the loop needs."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> ProcessGroup:
        """The initialised torch.distributed group (torchrun), or a group of one."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return cls(torch.distributed.get_rank(), torch.distributed.get_world_size())
        return cls()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        if self.world == 1:
            return value
        box = [value if self.rank == 0 else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order."""
        if self.world == 1:
            return [value]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, value)
        return out

    def sum(self, total: float, rows: int) -> tuple[float, int]:
        """The epoch's summed row loss and row count over every rank."""
        if self.world == 1:
            return total, rows
        sums = torch.tensor([total, float(rows)], dtype=torch.float64)
        torch.distributed.all_reduce(sums)
        return float(sums[0]), int(sums[1])

    def wrap(self, base: nn.Module, device: torch.device) -> nn.Module:
        """The network as the loop calls it: DistributedDataParallel in a group of several, else itself."""
        if self.world == 1:
            return base
        return nn.parallel.DistributedDataParallel(base, device_ids=[device.index] if device.type == "cuda" else None)


def check_setup(params: TrainParams, group: ProcessGroup) -> None:
    """Refuse settings that cannot be combined, and a group other than the one train.distributed asks for."""
    if params.conflicts():
        raise HumaneError("; ".join(params.conflicts()))
    if params.distributed.world != group.world:
        raise HumaneError(
            f"train.distributed asks for {params.distributed.world} process(es) but this one runs in a "
            f"group of {group.world} (launch through tasks.train, which starts torchrun)"
        )


def check_terms(
    params: TrainParams, group: ProcessGroup, weights: torch.Tensor | None, groups: torch.Tensor | None, penalty: Any
) -> None:
    """Refuse sample weights or a loss term where DP-SGD, DDP or accumulation cannot take them."""
    if params.dp.enabled and (weights is not None or penalty is not None):
        raise HumaneError("sample weights and fairness terms are not combined with DP-SGD (train.dp.enabled)")
    if penalty is not None and groups is None:
        raise HumaneError("a fairness penalty needs the training rows' groups")
    if penalty is not None and group.world * params.grad_accumulation > 1:
        raise HumaneError(
            "a fairness loss term (mitigation.loss) is computed on whole batches: it is not combined "
            "with train.distributed or train.grad_accumulation"
        )


# --- The training rows and how each epoch cuts them into batches ---


class Batch(NamedTuple):
    """Rows of one micro-batch: features, 0/1 targets (float), their weights and group one-hots (or None)."""

    x: torch.Tensor
    y: torch.Tensor
    weight: torch.Tensor | None
    groups: torch.Tensor | None


@dataclass(frozen=True)
class Rows:
    """The training rows on the training device, with the loss's per-row inputs."""

    x: torch.Tensor
    y: torch.Tensor
    weight: torch.Tensor | None = None
    groups: torch.Tensor | None = None

    def to(self, device: torch.device) -> Rows:
        """The same rows on `device`."""
        return Rows(*(None if t is None else t.to(device) for t in (self.x, self.y, self.weight, self.groups)))

    def take(self, index: torch.Tensor) -> Batch:
        """The rows at `index`."""
        weight = None if self.weight is None else self.weight[index]
        return Batch(self.x[index], self.y[index], weight, None if self.groups is None else self.groups[index])


def shares(
    n: int, params: TrainParams, group: ProcessGroup, generator: torch.Generator, device: torch.device
) -> Iterator[tuple[list[torch.Tensor], int]]:
    """Per optimiser step: this process's micro-batches' row indices, and the global batch's row count.

    Every process draws the same seeded permutation and takes its contiguous share of each global batch, split
    into `grad_accumulation` micro-batches (an empty share of the last batch is one empty micro-batch).
    """
    order = torch.randperm(n, generator=generator).to(device)
    for start in range(0, n, params.batch_size):
        step = order[start : start + params.batch_size]
        share = -(-len(step) // group.world)  # ceil: the last global batch may not split evenly
        mine = step[group.rank * share : (group.rank + 1) * share]
        size = -(-len(mine) // params.grad_accumulation) if len(mine) else 1
        yield [mine[i : i + size] for i in range(0, max(len(mine), 1), size)], len(step)


# --- One optimiser step: plain (precision, accumulation, DDP) or DP-SGD ---


@dataclass
class Step:
    """One optimiser step of the plain loop: bf16 autocast or fp32, gradient accumulation, DDP's all-reduce.

    Each micro-batch's mean loss is scaled by its share of the global batch, so the summed (and, across
    processes, averaged) gradient is the global batch's mean gradient, as in one process.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss: Callable[[nn.Module, Batch], torch.Tensor]
    params: TrainParams
    group: ProcessGroup
    device: torch.device
    probe: torch.Tensor  # one training row: an empty share's forward pass, so that it joins the all-reduce

    def __call__(self, micro: list[Batch], global_rows: int) -> tuple[float, int]:
        """Step over the micro-batches; returns this process's summed row loss and rows."""
        self.optimizer.zero_grad(set_to_none=True)
        split = self.group.world * self.params.grad_accumulation > 1
        total, rows = 0.0, 0
        for i, batch in enumerate(micro):
            sync = nullcontext() if self.group.world == 1 or i + 1 == len(micro) else self.model.no_sync()
            with sync, autocast(self.device, self.params.precision):
                if len(batch.x):
                    loss = self.loss(self.model, batch)
                    # this micro-batch's share of the global mean (1.0 with one process and no accumulation)
                    scaled = loss * (len(batch.x) * self.group.world / global_rows) if split else loss
                    total += loss.item() * len(batch.x)
                else:  # an empty share of the last batch still joins the gradient all-reduce
                    scaled = self.model(self.probe).sum() * 0.0
                scaled.backward()
            rows += len(batch.x)
        self.optimizer.step()
        return total, rows


def epoch_steps(
    rows: Rows, params: TrainParams, group: ProcessGroup, generator: torch.Generator, engine: PrivateSGD | None
) -> Iterator[tuple[list[Batch], int]]:
    """One epoch's optimiser steps: each step's micro-batches and the global batch's row count.

    Under DP-SGD the engine draws Poisson-sampled batches (an empty batch too: its step adds noise alone).
    """
    device = rows.x.device
    if engine is not None:
        for index in engine.batches(device):
            yield [Batch(rows.x[index], rows.y[index], None, None)], len(index)
        return
    for micro, global_rows in shares(len(rows.x), params, group, generator, device):
        yield [rows.take(index) for index in micro], global_rows


def private_step(engine: PrivateSGD, optimizer: torch.optim.Optimizer) -> Callable[[list[Batch], int], tuple]:
    """One DP-SGD step (per-row clipping, noise, accountant) on the step's one batch."""
    return lambda micro, _rows: engine.step(optimizer, micro[0].x, micro[0].y)


# --- Early stopping and resume: the state that carries from epoch to epoch ---


@dataclass
class Progress:
    """What carries from one epoch to the next: history, the best epoch so far, patience used."""

    best_state: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = 0
    stale: int = 0
    stopped: bool = False
    first: int = 1  # the first epoch this attempt runs
    spent: float = 0.0  # training seconds of the earlier attempts

    def record(self, row: dict[str, float], base: nn.Module, patience: int) -> None:
        """Add an epoch's row; keep its weights when its validation loss is the best; stop after `patience`."""
        self.history.append(row)
        if row["val_loss"] < self.best_loss:
            self.best_loss, self.best_epoch, self.stale = row["val_loss"], row["epoch"], 0
            self.best_state = copy.deepcopy(base.state_dict())
        else:
            self.stale += 1
        self.stopped = self.stale >= patience

    def state(self) -> dict[str, Any]:
        """The part of resume.pt this object holds."""
        keys = ("history", "best_loss", "best_epoch", "best_state", "stale", "stopped")
        return {key: getattr(self, key) for key in keys}


@dataclass(frozen=True)
class Trainee:
    """What a checkpoint saves and restores: the network, its optimiser and the random streams."""

    base: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    device: torch.device
    group: ProcessGroup

    def restore(self, state: dict[str, Any]) -> Progress:
        """Continue exactly where `state` (resume.pt) left off: weights, optimiser, RNG, early stopping."""
        self.base.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"][self.group.rank])
        self.generator.set_state(state["generator"])
        if self.device.type == "cuda" and state.get("cuda_rng"):
            torch.cuda.set_rng_state(state["cuda_rng"][self.group.rank], self.device)
        return Progress(
            best_state=state["best_state"],
            history=[dict(row) for row in state["history"]],
            best_loss=state["best_loss"],
            best_epoch=state["best_epoch"],
            stale=state["stale"],
            stopped=state.get("stopped", False),
            first=state["epoch"] + 1,
            spent=state["seconds"],
        )

    def snapshot(self) -> dict[str, Any]:
        """Weights, optimiser and every rank's RNG states (the gathers are collective: every rank calls this)."""
        rng = self.group.gather(torch.get_rng_state())
        cuda = self.device.type == "cuda"
        return {
            "state_dict": self.base.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            "cuda_rng": self.group.gather(torch.cuda.get_rng_state(self.device)) if cuda else [],
            "generator": self.generator.get_state(),
        }


@dataclass(frozen=True)
class Checkpoints:
    """The checkpoint folder (or none): resume.pt, the full state after the last epoch, and each epoch's weights.

    Under torchrun only rank 0 reads and writes; the others learn what it read.
    """

    folder: Path | None
    expected: str
    writer: bool

    @classmethod
    def open(
        cls, folder: Path | None, params: TrainParams, group: ProcessGroup, expected: str
    ) -> tuple[Checkpoints, dict | None, str]:
        """The folder made ready, and the state to resume from (or None) with why."""
        resume, note = read_resume(folder, params, expected) if group.rank == 0 else (None, "")
        resume, note = group.broadcast((resume, note))
        writer = folder is not None and group.rank == 0
        if writer:
            folder.mkdir(parents=True, exist_ok=True)
            clear_checkpoints(folder, everything=resume is None)
        if group.rank == 0 and folder is not None:
            print(f"train: {note}", file=sys.stderr)
        return cls(folder, expected, writer), resume, note

    def save(self, trainee: Trainee, progress: Progress, row: dict[str, float], seconds: float, config: dict) -> None:
        """Write everything a rerun needs to continue after `row`'s epoch, then that epoch's weights.

        resume.pt first, each file whole or not at all: an epoch's file on disk means the state after it can be
        resumed. `seconds`: training seconds so far, all attempts.
        """
        if self.folder is None:
            return
        snapshot = trainee.snapshot()
        if not self.writer:
            return
        epoch = int(row["epoch"])
        full = {"fingerprint": self.expected, "epoch": epoch, **snapshot, **progress.state(), "seconds": seconds}
        io.write_with(self.folder / RESUME_FILE, lambda tmp: torch.save(full, tmp))
        base = trainee.base
        weights = {
            "epoch": epoch,
            "state_dict": base.state_dict(),
            "model_args": base.args.to_dict(),
            "config": config,
            "metrics": row,
        }
        io.write_with(self.folder / f"epoch_{epoch:03d}.pt", lambda tmp: torch.save(weights, tmp))

    def finish(self) -> None:
        """Training ended: nothing is left to resume."""
        if self.writer and self.folder is not None:
            (self.folder / RESUME_FILE).unlink(missing_ok=True)


# --- The loop ---


def validate(epoch: int, total: float, seen: int, base: nn.Module, val: tuple, dp: bool) -> dict[str, float]:
    """The epoch's row of the history: mean training loss and the validation metrics; finite or stop.

    Under DP-SGD the training rows' un-noised mean loss is left out: ε does not cover it, so it is never released.
    """
    row = {"epoch": epoch, "train_loss": total / max(seen, 1), **eval_step(base, loss_fn(), *val)}
    check_finite(row)
    if dp:
        del row["train_loss"]
    return row


def private_engine(
    base: nn.Module, params: TrainParams, rows: int, generator: torch.Generator, resume: dict | None
) -> PrivateSGD | None:
    """DP-SGD's engine (per-row clipping, noise, Poisson batches, accountant) when train.dp asks, else None."""
    if not params.dp.enabled:
        return None
    if resume is not None:
        raise HumaneError(
            "a DP-SGD run cannot resume (the privacy accountant's history is not checkpointed); "
            "set train.resume: false or remove models/checkpoints/resume.pt"
        )
    from humane.privacy.dp import PrivateSGD

    return PrivateSGD(base, params, rows, generator)


def privacy_report(engine: PrivateSGD | None, params: TrainParams) -> dict[str, float | str | bool]:
    """The budget spent by the epochs actually run (early stopping spends less than the target)."""
    if engine is None:
        return {"dp_enabled": False}
    return {
        "dp_enabled": True,
        "epsilon": engine.epsilon(),
        "delta": params.dp.delta,
        "noise_multiplier": engine.noise_multiplier,
        "max_grad_norm": params.dp.max_grad_norm,
        "accountant": params.dp.accountant,
    }


def training_loss(penalty: Penalty | None) -> Callable[[nn.Module, Batch], torch.Tensor]:
    """The loss a batch trains on: the (weighted) BCE plus the caller's fairness term, if any."""
    criterion = loss_fn()
    return lambda model, b: batch_loss(model, criterion, b.x, b.y, b.weight, b.groups, penalty)


def adamw(base: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    """AdamW over the network's parameter groups (the FT-Transformer's embeddings, norms and biases: no decay)."""
    return torch.optim.AdamW(
        parameter_groups(base, params.weight_decay), lr=params.lr, weight_decay=params.weight_decay
    )


def epoch_bar(progress: Progress, params: TrainParams, group: ProcessGroup) -> tqdm:
    """The epochs this attempt runs, with a progress bar on rank 0 when train.progress asks."""
    epochs = range(progress.first, params.max_epochs + 1)
    return tqdm(epochs, desc="train", unit="epoch", disable=not params.progress or group.rank != 0)


def train_epoch(model: nn.Module, step: Callable, steps: Iterator[tuple[list[Batch], int]]) -> tuple[float, int]:
    """Run one epoch's optimiser steps; returns this process's summed row loss and rows."""
    model.train()
    total, seen = 0.0, 0
    for micro, global_rows in steps:
        loss_sum, rows = step(micro, global_rows)
        total, seen = total + loss_sum, seen + rows
    return total, seen


def fit(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    params: TrainParams,
    checkpoint_dir: Path | None = None,
    *,
    sample_weight: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
    penalty: Penalty | None = None,
    layout: tuple[int, list[int]] | None = None,
    fingerprint_extra: str = "",
    code: Sequence[Path] = (),
) -> TrainResult:
    """Train with early stopping on validation loss and return the best epoch's model.

    `sample_weight` (one per training row, rescaled to mean 1) weights the training loss; `penalty` adds a
    fairness term computed on each batch's rows of `groups` (one-hot, rows x groups). The validation loss that
    early stopping reads stays the plain, unweighted BCE. `layout` (numeric columns, one-hot block widths) lets
    the FT-Transformer give each categorical column one token. With `checkpoint_dir`, each epoch's weights are
    written there, and the full training state to `resume.pt`: a rerun with the same params, data and code
    (this package's and `code`'s files, and `fingerprint_extra`) continues after the last finished epoch and ends
    exactly as an uninterrupted run (on CPU). Under torchrun (an initialised process group) only rank 0 writes.
    """
    group = ProcessGroup.current()
    check_setup(params, group)
    generator, device = seed_everything(params.seed), pick_device(params)
    check_terms(params, group, sample_weight, groups, penalty)
    weights = None if sample_weight is None else (sample_weight / sample_weight.mean()).float()
    base = build_model(params, x_train.shape[1], layout).to(device)
    tensors = [x_train, y_train, x_val, y_val, weights, groups]
    expected = "" if checkpoint_dir is None else fingerprint(params, tensors, fingerprint_extra, code)
    checkpoints, resume, note = Checkpoints.open(checkpoint_dir, params, group, expected)
    engine = private_engine(base, params, len(x_train), generator, resume)
    model = group.wrap(base, device)
    optimizer = adamw(base, params)
    rows, val = Rows(x_train, y_train.float(), weights, groups).to(device), (x_val.to(device), y_val.to(device))
    trainee = Trainee(base, optimizer, generator, device, group)
    progress = Progress(copy.deepcopy(base.state_dict())) if resume is None else trainee.restore(resume)
    step = Step(model, optimizer, training_loss(penalty), params, group, device, rows.x[:1])
    step = step if engine is None else private_step(engine, optimizer)
    config, started, processed = params.model_dump(mode="json"), time.perf_counter(), 0
    bar = epoch_bar(progress, params, group)
    for epoch in [] if progress.stopped else bar:
        epoch_start = time.perf_counter()
        total, seen = group.sum(*train_epoch(model, step, epoch_steps(rows, params, group, generator, engine)))
        processed += seen
        row = validate(epoch, total, seen, base, val, params.dp.enabled)
        row["seconds"] = time.perf_counter() - epoch_start
        progress.record(row, base, params.patience)
        bar.set_postfix(val_loss=f"{row['val_loss']:.4f}")
        checkpoints.save(trainee, progress, row, progress.spent + time.perf_counter() - started, config)
        if progress.stopped:
            break
    bar.close()
    seconds = time.perf_counter() - started
    checkpoints.finish()
    return finished(base, engine, progress, params, seconds, processed, note, device, group)


def finished(
    base: nn.Module,
    engine: PrivateSGD | None,
    progress: Progress,
    params: TrainParams,
    seconds: float,
    processed: int,
    note: str,
    device: torch.device,
    group: ProcessGroup,
) -> TrainResult:
    """The best epoch's network, plain (DP-SGD's hooks off) and in eval mode, with how training went."""
    if engine is not None:
        base = engine.close()
    base.load_state_dict(progress.best_state)
    base.eval()
    return TrainResult(
        base.cpu(),
        progress.best_epoch,
        progress.history,
        progress.spent + seconds,
        processed / max(seconds, 1e-9),
        privacy=privacy_report(engine, params),
        resumed_from=progress.first - 1,
        resume_note=note,
        device=str(device),
        world_size=group.world,
        prior_seconds=progress.spent,
    )
