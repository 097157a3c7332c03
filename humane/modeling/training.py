"""The training loop: mini-batch AdamW, early stopping on validation loss, best epoch restored.

One loop for every setting: either network (train.model), CPU or CUDA, fp32 or bf16 autocast, gradient accumulation,
DistributedDataParallel when a process group is initialised (torchrun), DP-SGD (humane.privacy.dp), and resume from
the last epoch's checkpoint. `train.batch_size` is the global batch: every process draws the same seeded
permutation, takes its contiguous share of each global batch and splits it into `grad_accumulation` micro-batches;
each micro-batch's mean loss is scaled by its share of the global batch, so the summed (and, across processes,
averaged) gradient is the global batch's mean gradient, as in one process.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm import tqdm

from humane.core import io
from humane.core.errors import HumaneError
from humane.core.params import TrainParams
from humane.modeling.model import Network, build_model, loss_fn, parameter_groups, probabilities

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


def fingerprint(params: TrainParams, tensors: list[torch.Tensor | None], extra: str = "") -> str:
    """What a checkpoint must match to be resumed: training params, the data's bytes, the training code.

    `extra` carries what else shapes the loss (e.g. the mitigation settings). Params that do not change the
    computation (progress bar, resume switch, compute-bill settings) are left out.
    """
    digest = hashlib.sha256()
    settings = params.model_dump(mode="json", exclude=set(NOT_FINGERPRINTED))
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(extra.encode())
    for tensor in tensors:
        digest.update(b"none" if tensor is None else tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(b"|")
    package = Path(__file__).parents[1]
    # The training code: this package, the fairness loss terms, DP-SGD; and the libraries that compute.
    for source in [
        *sorted(Path(__file__).parent.glob("*.py")),
        package / "fairness" / "mitigation.py",
        package / "privacy" / "dp.py",
    ]:
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


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _broadcast(value: Any, rank: int, world: int) -> Any:
    if world == 1:
        return value
    box = [value if rank == 0 else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _gather(value: Any, world: int) -> list[Any]:
    if world == 1:
        return [value]
    out: list[Any] = [None] * world
    torch.distributed.all_gather_object(out, value)
    return out


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
) -> TrainResult:
    """Train with early stopping on validation loss and return the best epoch's model.

    `sample_weight` (one per training row, rescaled to mean 1) weights the training loss; `penalty` adds a
    fairness term computed on each batch's rows of `groups` (one-hot, rows x groups). The validation loss that
    early stopping reads stays the plain, unweighted BCE. `layout` (numeric columns, one-hot block widths) lets
    the FT-Transformer give each categorical column one token. With `checkpoint_dir`, each epoch's weights are
    written there, and the full training state to `resume.pt`: a rerun with the same params, data and code
    continues after the last finished epoch and ends exactly as an uninterrupted run (on CPU).
    Under torchrun (an initialised process group) only rank 0 writes.
    """
    if params.conflicts():
        raise HumaneError("; ".join(params.conflicts()))
    rank, world = _world()
    accumulation = params.grad_accumulation
    if params.distributed.world != world:
        raise HumaneError(
            f"train.distributed asks for {params.distributed.world} process(es) but this one runs in a "
            f"group of {world} (launch through tasks.train, which starts torchrun)"
        )
    generator = seed_everything(params.seed)
    device = pick_device(params)
    if params.dp.enabled and (sample_weight is not None or penalty is not None):
        raise HumaneError("sample weights and fairness terms are not combined with DP-SGD (train.dp.enabled)")
    if penalty is not None and groups is None:
        raise HumaneError("a fairness penalty needs the training rows' groups")
    if penalty is not None and world * accumulation > 1:
        raise HumaneError(
            "a fairness loss term (mitigation.loss) is computed on whole batches: it is not combined "
            "with train.distributed or train.grad_accumulation"
        )
    weights = None if sample_weight is None else (sample_weight / sample_weight.mean()).float()
    model: nn.Module = build_model(params, x_train.shape[1], layout)
    criterion = eval_criterion = loss_fn()
    targets = y_train.float()
    n = x_train.shape[0]
    writer = checkpoint_dir is not None and rank == 0
    expected = fingerprint(params, [x_train, y_train, x_val, y_val, weights, groups], fingerprint_extra)
    resume, note = read_resume(checkpoint_dir, params, expected) if rank == 0 else (None, "")
    resume, note = _broadcast((resume, note), rank, world)
    if writer:
        assert checkpoint_dir is not None
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        clear_checkpoints(checkpoint_dir, everything=resume is None)
    if rank == 0 and checkpoint_dir is not None:
        print(f"train: {note}", file=sys.stderr)

    engine = None
    base = model.to(device)
    if params.dp.enabled:
        from humane.privacy.dp import PrivateSGD

        engine = PrivateSGD(base, params, n, generator)  # per-row clipping, noise, Poisson batches, accountant
    elif world > 1:
        model = nn.parallel.DistributedDataParallel(base, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(
        parameter_groups(base, params.weight_decay), lr=params.lr, weight_decay=params.weight_decay
    )
    x_train, targets = x_train.to(device), targets.to(device)
    weights = None if weights is None else weights.to(device)
    groups = None if groups is None else groups.to(device)
    x_val, y_val = x_val.to(device), y_val.to(device)

    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state, stale, first, spent = math.inf, 0, copy.deepcopy(base.state_dict()), 0, 1, 0.0
    if resume is not None:
        base.load_state_dict(resume["state_dict"])
        optimizer.load_state_dict(resume["optimizer"])
        torch.set_rng_state(resume["rng"][rank])
        generator.set_state(resume["generator"])
        if device.type == "cuda" and resume.get("cuda_rng"):
            torch.cuda.set_rng_state(resume["cuda_rng"][rank], device)
        history = [dict(row) for row in resume["history"]]
        best_loss, best_epoch, stale = resume["best_loss"], resume["best_epoch"], resume["stale"]
        best_state, first, spent = resume["best_state"], resume["epoch"] + 1, resume["seconds"]
    if engine is not None and resume is not None:
        raise HumaneError(
            "a DP-SGD run cannot resume (the privacy accountant's history is not checkpointed); "
            "set train.resume: false or remove models/checkpoints/resume.pt"
        )

    Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, int]

    def batches() -> Iterator[list[Batch]]:
        """Per optimiser step: this process's micro-batches, each with the global batch's row count."""
        if engine is None:
            order = torch.randperm(n, generator=generator).to(device)
            for start in range(0, n, params.batch_size):
                step = order[start : start + params.batch_size]
                share = -(-len(step) // world)  # ceil: the last global batch may not split evenly
                mine = step[rank * share : (rank + 1) * share]
                size = -(-len(mine) // accumulation) if len(mine) else 1
                micro = [mine[i : i + size] for i in range(0, max(len(mine), 1), size)]
                yield [
                    (
                        x_train[i],
                        targets[i],
                        None if weights is None else weights[i],
                        None if groups is None else groups[i],
                        len(step),
                    )
                    for i in micro
                ]
            return
        for rows in engine.batches(device):  # Poisson-sampled (an empty batch too: its step adds noise alone)
            yield [(x_train[rows], targets[rows], None, None, len(rows))]

    def step(micro: list[Batch]) -> tuple[float, int]:
        """One optimiser step over the micro-batches; returns this process's summed row loss and rows."""
        if engine is not None:
            return engine.step(optimizer, micro[0][0], micro[0][1])
        optimizer.zero_grad(set_to_none=True)
        total, rows = 0.0, 0
        for i, (xb, yb, wb, gb, global_rows) in enumerate(micro):
            sync = nullcontext() if world == 1 or i + 1 == len(micro) else model.no_sync()
            with sync, autocast(device, params.precision):
                if len(xb):
                    loss = batch_loss(model, criterion, xb, yb, wb, gb, penalty)
                    # this micro-batch's share of the global mean (1.0 with one process and no accumulation)
                    scaled = loss * (len(xb) * world / global_rows) if world * accumulation > 1 else loss
                    total += loss.item() * len(xb)
                else:  # an empty share of the last batch still joins the gradient all-reduce
                    scaled = model(x_train[:1]).sum() * 0.0
                scaled.backward()
            rows += len(xb)
        optimizer.step()
        return total, rows

    started = time.perf_counter()
    processed = 0
    bar = tqdm(
        range(first, params.max_epochs + 1), desc="train", unit="epoch", disable=not params.progress or rank != 0
    )
    stopped = resume is not None and resume.get("stopped", False)
    for epoch in [] if stopped else bar:
        epoch_start = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        for micro in batches():
            loss_sum, rows = step(micro)
            total, seen = total + loss_sum, seen + rows
        if world > 1:
            sums = torch.tensor([total, float(seen)], dtype=torch.float64)
            torch.distributed.all_reduce(sums)
            total, seen = float(sums[0]), int(sums[1])
        processed += seen
        row = {"epoch": epoch, "train_loss": total / max(seen, 1), **eval_step(base, eval_criterion, x_val, y_val)}
        check_finite(row)
        if params.dp.enabled:  # the training rows' un-noised mean loss is not covered by ε: it is never released
            del row["train_loss"]
        row["seconds"] = time.perf_counter() - epoch_start
        history.append(row)
        bar.set_postfix(val_loss=f"{row['val_loss']:.4f}")
        if row["val_loss"] < best_loss:
            best_loss, best_epoch, best_state, stale = row["val_loss"], epoch, copy.deepcopy(base.state_dict()), 0
        else:
            stale += 1
        stopped = stale >= params.patience
        rng = _gather(torch.get_rng_state(), world)
        cuda_rng = _gather(torch.cuda.get_rng_state(device), world) if device.type == "cuda" else []
        if writer and checkpoint_dir is not None:
            # Everything a rerun needs to continue exactly here, written whole or not at all;
            # first, so that an epoch's file on disk means the state after it can be resumed.
            full = {
                "fingerprint": expected,
                "epoch": epoch,
                "state_dict": base.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": rng,
                "cuda_rng": cuda_rng,
                "generator": generator.get_state(),
                "history": history,
                "best_loss": best_loss,
                "best_epoch": best_epoch,
                "best_state": best_state,
                "stale": stale,
                "stopped": stopped,
                "seconds": spent + time.perf_counter() - started,
            }
            io.write_with(checkpoint_dir / RESUME_FILE, lambda tmp, s=full: torch.save(s, tmp))
            # Weights, model args and metrics of every epoch, for inspection.
            epoch_state = {
                "epoch": epoch,
                "state_dict": base.state_dict(),
                "model_args": base.args.to_dict(),
                "config": params.model_dump(mode="json"),
                "metrics": row,
            }
            io.write_with(checkpoint_dir / f"epoch_{epoch:03d}.pt", lambda tmp, s=epoch_state: torch.save(s, tmp))
        if stopped:
            break
    bar.close()
    seconds = time.perf_counter() - started
    if engine is not None:
        base = engine.close()  # the clipping's hooks come off: the network leaves training plain
    base.load_state_dict(best_state)
    base.eval()
    if writer and checkpoint_dir is not None:
        (checkpoint_dir / RESUME_FILE).unlink(missing_ok=True)  # training ended: nothing left to resume
    resumed_from = first - 1
    result = TrainResult(
        base.cpu(),
        best_epoch,
        history,
        spent + seconds,
        processed / max(seconds, 1e-9),
        resumed_from=resumed_from,
        resume_note=note,
        device=str(device),
        world_size=world,
        prior_seconds=spent,
    )
    if engine is not None:
        # The budget spent by the epochs actually run (early stopping spends less than the target).
        result.privacy.update(
            dp_enabled=True,
            epsilon=engine.epsilon(),
            delta=params.dp.delta,
            noise_multiplier=engine.noise_multiplier,
            max_grad_norm=params.dp.max_grad_norm,
            accountant=params.dp.accountant,
        )
    return result
