"""Train stage: fit the network on the processed splits; write the model, checkpoints, history and compute bill.

One way through: read the processed splits, build the remedy's training terms (humane.fairness: sample weights,
the fairness loss term, or the reductions that wrap the loop), train (humane.modeling.training.fit, the plain
loop), write.

With `train.distributed` asking for more than one process, the stage relaunches itself through torchrun
(`python -m torch.distributed.run ... -m tasks.train`), whether `dvc repro` or the Prefect flow called it; each
worker reads the caller's exact params and workspace from a spec file, joins the process group (gloo on CPU, nccl
on CUDA) and trains its share of every batch; only rank 0 writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from humane.core import io
from humane.core.context import RunContext
from humane.core.errors import HumaneError, cli
from humane.core.paths import Paths
from humane.fairness.mitigation import training_terms, unmitigated_train
from humane.fairness.reductions import fit_mitigated
from humane.modeling.compute import FLOP_PROBE_ROWS, ComputeMeter, bill, flops_per_sample
from humane.modeling.evaluation import SAME_NETWORK
from humane.modeling.features import load_preprocessor, split_xy, token_layout
from humane.modeling.model import count_parameters, model_state
from humane.modeling.training import TrainResult
from humane.pipeline.entry import stage_main
from humane.pipeline.params import Params, parse_params

TWIN_CHECKPOINTS = "unmitigated"  # the twin's checkpoints, in their own folder under models/checkpoints
SPEC_ENV = "HUMANE_TRAIN_SPEC"  # a torchrun worker's params and workspace, written by the launching process


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Train with early stopping; the best epoch's weights become the model (through torchrun when distributed)."""
    if params.train.distributed.world > 1 and "LOCAL_RANK" not in os.environ:
        return launch(params, paths)
    if "LOCAL_RANK" in os.environ:
        return _in_group(params, paths)
    return train(params, paths)


def launch(params: Params, paths: Paths) -> str:
    """Run this stage under torchrun with the caller's params and workspace; rank 0's summary is the result."""
    dist = params.train.distributed
    with tempfile.TemporaryDirectory(prefix="humane-torchrun-") as tmp:
        spec = Path(tmp) / "spec.json"
        summary = Path(tmp) / "summary.txt"
        spec.write_text(
            json.dumps(
                {
                    "params": params.model_dump(mode="json", by_alias=True),
                    "root": str(paths.root.resolve()),
                    "summary": str(summary),
                }
            )
        )
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={dist.nproc_per_node}",
            f"--nnodes={dist.nnodes}",
            f"--master_addr={dist.master_addr}",
            f"--master_port={dist.master_port}",
            "-m",
            "tasks.train",
        ]
        if dist.nnodes > 1:
            cmd.insert(3, f"--node_rank={os.environ.get('PET_NODE_RANK', '0')}")
        env = {**os.environ, SPEC_ENV: str(spec), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        result = subprocess.run(cmd, env=env, cwd=Path(__file__).resolve().parents[1], check=False)
        if result.returncode != 0:
            raise HumaneError(
                f"distributed training (torchrun, {dist.world} processes) failed with exit code "
                f"{result.returncode}; see the workers' output above"
            )
        return summary.read_text() if summary.exists() else "train: distributed run finished (this node has no rank 0)"


def _in_group(params: Params, paths: Paths) -> str:
    """A torchrun worker: join the process group, train, leave."""
    backend = params.train.distributed.backend
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() and params.train.device != "cpu" else "gloo"
    torch.distributed.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    try:
        return train(params, paths)
    finally:
        torch.distributed.destroy_process_group()


@dataclass
class Fitted:
    """The trained network and what the stage writes beside it."""

    result: TrainResult
    mitigation: dict[str, Any]  # what the in-training remedy did (train_metrics.json's `mitigation`)
    features: list[str]
    layout: tuple[int, list[int]]
    probe: torch.Tensor  # the training rows whose forward + backward FLOPs are counted
    rows: int  # training rows


def train(params: Params, paths: Paths) -> str:
    """Fit, measure the compute bill, and (rank 0) write the model, history and metrics."""
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    settings = params.train
    with ComputeMeter(settings.compute, machine=settings.distributed.world > 1, active=rank == 0) as meter:
        fitted = fit_model(params, paths)
    twin = unmitigated_twin(params, paths, fitted.layout)  # every rank: a distributed fit needs them all
    if rank != 0:
        return "train: worker finished"
    result = fitted.result
    compute = bill(
        meter,
        n_parameters=count_parameters(result.model),
        flops=flops_per_sample(result.model, fitted.probe),
        samples=result.samples or len(result.history) * fitted.rows,
        train_seconds=result.train_seconds,
        device=result.device,
        world_size=result.world_size,
        precision=settings.precision,
        prior_train_seconds=result.prior_seconds,
    )
    write_models(params, paths, fitted, twin)
    write_metrics(params, paths, fitted, compute)
    summary = (
        f"train: {settings.model}, best epoch {result.best_epoch} of {len(result.history)}, "
        f"{compute['samples_per_second']:,.0f} samples/s on {result.world_size} x {result.device}"
        + (f" (resumed after epoch {result.resumed_from})" if result.resumed_from else "")
    )
    spec = os.environ.get(SPEC_ENV)
    if spec:
        Path(json.loads(Path(spec).read_text())["summary"]).write_text(summary)
    return summary


def fit_model(params: Params, paths: Paths) -> Fitted:
    """Read the processed splits, build the remedy's loss terms and sample weights, and train on them."""
    train_frame = pd.read_parquet(paths.processed_train)
    x_train, y_train, features = split_xy(train_frame)
    x_val, y_val, _ = split_xy(pd.read_parquet(paths.processed_val))
    weights, groups, penalty, mitigation = training_terms(
        train_frame, params.mitigation, params.validate.min_group_rows
    )
    # Which inputs are numeric and which one-hot blocks belong together (numeric embeddings, FT tokens).
    layout = token_layout(load_preprocessor(paths.preprocessor))
    result, reductions = fit_mitigated(
        x_train,
        y_train,
        x_val,
        y_val,
        train_frame,
        params,
        params.train,
        paths.checkpoints_dir,
        sample_weight=weights,
        groups=groups,
        penalty=penalty,
        layout=layout,
    )
    if reductions is not None:
        mitigation["reductions"] = reductions
    return Fitted(result, mitigation, features, layout, x_train[:FLOP_PROBE_ROWS], len(x_train))


def write_models(params: Params, paths: Paths, fitted: Fitted, twin: TrainResult | None) -> None:
    """models/model.pt (the best epoch's weights, config and feature names) and models/unmitigated.pt."""
    result = fitted.result
    state = {
        **model_state(result.model),
        "config": params.train.model_dump(mode="json"),
        "feature_names": fitted.features,
        "best_epoch": result.best_epoch,
    }
    io.write_with(paths.model, lambda tmp: torch.save(state, tmp))
    made_for = {"remedy": ",".join(params.mitigation.active), "model_md5": io.md5_of(paths.model)}
    twin_state = twin_record(twin, state["config"], fitted.features, made_for)
    io.write_with(paths.unmitigated_model, lambda tmp: torch.save(twin_state, tmp))
    if twin is not None:
        fitted.mitigation["unmitigated_twin"] = {
            "best_epoch": twin.best_epoch,
            "epochs_run": len(twin.history),
            "train_seconds": twin.train_seconds,
        }


def write_metrics(params: Params, paths: Paths, fitted: Fitted, compute: dict[str, Any]) -> None:
    """The training history and train_metrics.json (best epoch, mitigation, privacy, compute bill)."""
    result = fitted.result
    io.write_json(paths.train_history, result.history)
    best = result.history[result.best_epoch - 1]
    io.write_json(
        paths.train_metrics,
        {
            "model": params.train.model,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "best_val_loss": best["val_loss"],
            "best_val_accuracy": best["val_accuracy"],
            "best_val_auc": best["val_auc"],
            "n_parameters": count_parameters(result.model),
            "resumed_from_epoch": result.resumed_from,
            "mitigation": fitted.mitigation,
            **result.privacy,
            "compute": compute,
        },
    )


def unmitigated_twin(params: Params, paths: Paths, layout: tuple[int, list[int]]) -> TrainResult | None:
    """The same network trained with mitigation off, when the remedy acts in training (else None: no cost).

    The gate weighs the remedy against it on the same test rows (its dominance and remedy-cost rules). It trains
    on the rows as they were before the preprocess stage's remedy (its weights dropped, its oversampled copies,
    appended after the original rows, left out), with the same params; its checkpoints live apart. Its compute
    is not in the model's bill: its seconds are reported beside the mitigation.
    """
    if not params.mitigation.in_training:
        return None
    frame = unmitigated_train(pd.read_parquet(paths.processed_train), io.read_json(paths.mitigation_data))
    x_train, y_train, _ = split_xy(frame)
    x_val, y_val, _ = split_xy(pd.read_parquet(paths.processed_val))
    off = params.mitigation.model_copy(
        update={"reweigh": False, "resample": False, "loss": "none", "loss_weight": 0.0, "reductions": "none"}
    )
    plain, folder = params.model_copy(update={"mitigation": off}), paths.checkpoints_dir / TWIN_CHECKPOINTS
    result, _ = fit_mitigated(x_train, y_train, x_val, y_val, frame, plain, params.train, folder, layout=layout)
    return result


def twin_record(twin: TrainResult | None, config: dict, features: list[str], made_for: dict[str, str]) -> dict:
    """models/unmitigated.pt: the twin's weights as the model's are saved, or a note that the model is its own.

    `made_for` (the remedy's methods and models/model.pt's md5) lets the evaluate stage refuse a twin left
    from another run.
    """
    if twin is None:
        return {SAME_NETWORK: "models/model.pt", **made_for}
    state = {**model_state(twin.model), "config": config, "feature_names": features, "best_epoch": twin.best_epoch}
    return {**state, **made_for}


def worker_main() -> None:
    """A torchrun worker's entry point: the launching process's params and workspace, from its spec file."""
    spec = json.loads(Path(os.environ[SPEC_ENV]).read_text())
    print(run(parse_params(spec["params"]), Paths(Path(spec["root"])), RunContext(project=Path(spec["root"]))))


if __name__ == "__main__":
    if SPEC_ENV in os.environ:
        cli(worker_main)
    else:
        stage_main(run)
