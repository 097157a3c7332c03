"""Full-Adult privacy benchmark: DP-SGD beside the non-private model, and k-anonymity before and after the policy.

Rows (every model is params.yaml's, the MLP with periodic numeric embeddings by default): the non-private run of
params.yaml (batch 256, early stopping), the non-private run with README's DP settings (batch 1024, lr 0.002, 10
epochs: the same model, data, batch size and epochs as the DP rows) and DP-SGD at each target ε with those
settings. For each: ε spent (δ = train.dp.delta), test accuracy and ROC AUC (threshold evaluate.threshold), the
loss-threshold membership attack, and training seconds per epoch; then DP's time per epoch over the non-private
run's at the same settings.

The splits are built in-process by the pipeline's own code, as tasks/load.py and tasks/preprocess.py do: the
dataset loader (`humane.data.sources.load`, the built-in Adult files under data/raw/adult and their official
test split), the column policy, the seeded train/validation split and the preprocessor fitted on training rows.

Run with `python bench/privacy.py [--eps 1 3 8] [--threads N]` in the activated venv; it needs only data/raw/adult
and writes nothing. `--threads 1` (the default) keeps timings stable on a shared machine.

Two more parts read the processed splits of a project that ran `dvc repro` on full Adult (`--project`):

    python bench/privacy.py speed --project P --out speed.json   # DP-SGD vs non-private vs Opacus, same batch
    python bench/privacy.py sweep --project P --out sweep.json   # per-ε settings chosen on validation

`speed` alternates, in one process, epochs of the non-private trainer, of DP-SGD (humane.privacy.dp.PrivateSGD)
and of Opacus' ghost clipping (the peer, humane.privacy.dp.make_private), each at the same batch and model, and
reports the medians and their ratios. `sweep` trains DP-SGD at each ε over a small grid (batch with its lr,
epochs, clipping norm), picks per ε the setting with the best validation accuracy and reports that setting's
test accuracy; the test split never takes part in the choice. The choice itself is not accounted: the ε printed
covers the training rows for the chosen setting, not the selection among the grid's settings on validation
rows of the same pool (Papernot & Steinke, 2022, bound that cost for random search). Settings chosen here on
Adult, a public dataset, and reused unchanged on another dataset spend nothing of that dataset on tuning.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from humane.core.paths import Paths  # noqa: E402
from humane.data.schema import resolve_schema  # noqa: E402
from humane.data.sources import load  # noqa: E402
from humane.modeling.evaluation import binary_metrics  # noqa: E402
from humane.modeling.features import (  # noqa: E402
    fit_preprocessor,
    load_preprocessor,
    split_train_val,
    split_xy,
    to_model_frame,
    token_layout,
)
from humane.modeling.model import build_model, loss_fn, probabilities  # noqa: E402
from humane.modeling.params import TrainParams  # noqa: E402
from humane.modeling.training import TrainResult, eval_step, fit, seed_everything  # noqa: E402
from humane.pipeline.params import Params, load_params  # noqa: E402
from humane.privacy.anonymity import risk_report  # noqa: E402
from humane.privacy.membership import membership_audit  # noqa: E402
from humane.privacy.policy import apply_policy, fit_policy, pseudonym_key  # noqa: E402

# README's DP-SGD example (`dvc exp run -S train.batch_size=1024 -S train.lr=0.002 -S train.max_epochs=10`); the
# patience of 10 lets all ten epochs run, so that ε spent is the budget of the ten.
DP_SETTINGS = {"batch_size": 1024, "lr": 0.002, "max_epochs": 10, "patience": 10}
# Per target ε: the settings `sweep` chose on full Adult's validation split (`choose` over its rounds; params.yaml).
CHOSEN: dict[float, dict] = {
    1.0: {"batch_size": 8192, "lr": 0.005, "max_epochs": 15, "max_grad_norm": 1.0},
    3.0: {"batch_size": 4096, "lr": 0.003, "max_epochs": 15, "max_grad_norm": 2.0},
    8.0: {"batch_size": 4096, "lr": 0.003, "max_epochs": 30, "max_grad_norm": 1.0},
}

Tensors = tuple[torch.Tensor, torch.Tensor]


def prepare(params: Params) -> tuple[dict[str, Tensors], tuple[int, list[int]], dict]:
    """Train, validation and test tensors, the preprocessor's layout, and the k-anonymity report of the load."""
    loaded = load(params.data, ROOT)
    policy = fit_policy(params.privacy, loaded.train)
    key = pseudonym_key(params.privacy)
    pool, test = apply_policy(policy, loaded.train, key), apply_policy(policy, loaded.test, key)
    schema = resolve_schema(params.data, pool, policy.to_dict())
    train, val = split_train_val(pool, schema.target, params.preprocess.val_fraction, params.preprocess.seed)
    pre = fit_preprocessor(train, schema, params.preprocess)
    splits = {
        name: split_xy(to_model_frame(pre, frame))[:2]
        for name, frame in (("train", train), ("val", val), ("test", test))
    }
    return splits, token_layout(pre), risk_report(loaded.train, pool, params.privacy, schema.target)


def run(name: str, settings: TrainParams, splits: dict[str, Tensors], layout: tuple, params: Params) -> dict:
    """Fit one model and score it on the test split."""
    started = time.perf_counter()
    result: TrainResult = fit(*splits["train"], *splits["val"], settings, layout=layout)
    wall = time.perf_counter() - started
    xs, ys = splits["test"]
    with torch.inference_mode():
        p = probabilities(result.model(xs)).numpy()
    quality = binary_metrics(ys.numpy(), p, params.evaluate.threshold, params.evaluate.calibration_bins)
    mia = membership_audit(
        result.model, splits["train"], splits["test"], params.evaluate.mia_samples, params.evaluate.seed
    )
    epochs = len(result.history)
    return {
        "name": name,
        "epsilon": result.privacy.get("epsilon"),
        "noise": result.privacy.get("noise_multiplier"),
        "accuracy": quality["accuracy"],
        "roc_auc": quality["roc_auc"],
        "mia_auc": mia["attack_auc"],
        "mia_tpr": mia["attack_tpr_at_1pct_fpr"],
        "gap": mia["generalization_gap_accuracy"],
        "epochs": epochs,
        "s_per_epoch": result.train_seconds / epochs,
        "wall": wall,
    }


def processed(project: Path) -> tuple[dict[str, Tensors], tuple[int, list[int]]]:
    """Train, validation and test tensors of a project's last run, and its preprocessor's layout."""
    import pandas as pd

    paths = Paths(project)
    data = {
        name: split_xy(pd.read_parquet(getattr(paths, f"processed_{name}")))[:2] for name in ("train", "val", "test")
    }
    return data, token_layout(load_preprocessor(paths.preprocessor))


def dp_settings(base: TrainParams, eps: float, batch: int, lr: float, epochs: int, clip: float) -> TrainParams:
    """`base` under DP-SGD at ε with these settings; every epoch runs (the best one on validation loss is kept)."""
    physical = max(batch, base.dp.max_physical_batch_size)  # one physical batch: the fastest on CPU
    dp = base.dp.model_copy(
        update={"enabled": True, "target_epsilon": eps, "max_grad_norm": clip, "max_physical_batch_size": physical}
    )
    return base.model_copy(
        update={"dp": dp, "batch_size": batch, "lr": lr, "max_epochs": epochs, "patience": epochs, "progress": False}
    )


def opacus_epochs(settings: TrainParams, splits: dict[str, Tensors], layout: tuple) -> float:
    """Seconds per epoch of the peer: Opacus' ghost clipping (make_private) on the same model, batch and data."""
    import warnings

    from opacus.utils.batch_memory_manager import BatchMemoryManager

    from humane.privacy.dp import make_private, release

    warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
    generator = seed_everything(settings.seed)
    (x, y), (xv, yv) = splits["train"], splits["val"]
    model = build_model(settings, x.shape[1], layout)
    _, wrapped, optimizer, criterion, loader = make_private(model, loss_fn(), x, y.float(), settings, generator)
    started = time.perf_counter()
    for _ in range(settings.max_epochs):
        wrapped.train()
        with BatchMemoryManager(
            data_loader=loader, max_physical_batch_size=settings.dp.max_physical_batch_size, optimizer=optimizer
        ) as batches:
            for xb, yb in batches:
                optimizer.zero_grad(set_to_none=True)
                if len(xb):
                    criterion(wrapped(xb), yb).backward()
                optimizer.step()
        eval_step(wrapped._module, loss_fn(), xv, yv)
    seconds = (time.perf_counter() - started) / settings.max_epochs
    release(wrapped)
    return seconds


def speed(project: Path, batch: int, epochs: int, repeats: int, eps: float) -> dict:
    """Seconds per epoch, alternated in one process: non-private trainer, DP-SGD, Opacus' ghost clipping."""
    splits, layout = processed(project)
    base = load_params(ROOT / "params.yaml").train.model_copy(update={"progress": False})
    private = dp_settings(base, eps, batch, DP_SETTINGS["lr"], epochs, base.dp.max_grad_norm)
    plain = private.model_copy(update={"dp": base.dp})
    runs: dict[str, list[float]] = {"non_private": [], "humane_dp": [], "opacus_ghost": []}
    for _ in range(repeats):
        for name, settings in (("non_private", plain), ("humane_dp", private)):
            result = fit(*splits["train"], *splits["val"], settings, layout=layout)
            runs[name].append(result.train_seconds / len(result.history))
        runs["opacus_ghost"].append(opacus_epochs(private, splits, layout))
    median = {name: statistics.median(values) for name, values in runs.items()}
    return {
        "bench": "dp_speed",
        "batch_size": batch,
        "epochs_per_run": epochs,
        "repeats": repeats,
        "target_epsilon": eps,
        "threads": torch.get_num_threads(),
        "seconds_per_epoch": runs,
        "median_seconds_per_epoch": median,
        "humane_dp_over_non_private": median["humane_dp"] / median["non_private"],
        "opacus_ghost_over_non_private": median["opacus_ghost"] / median["non_private"],
        "target": 1.3,
    }


# The grid `sweep` chooses from per ε: (batch, lr) pairs (lr grows with the batch), epochs, clipping norms.
GRID = {"batch_lr": [(2048, 0.002), (8192, 0.005)], "epochs": [15, 40], "clip": [0.1, 1.0]}


def sweep(project: Path, targets: list[float], grid: dict) -> dict:
    """Per ε: every grid setting's validation accuracy; the best one's test accuracy and ROC AUC."""
    splits, layout = processed(project)
    base = load_params(ROOT / "params.yaml").train
    xs, ys = splits["test"]
    out: dict = {"bench": "dp_sweep", "grid": grid, "delta": base.dp.delta, "budgets": []}
    for eps in targets:
        tried = []
        for (batch, lr), epochs, clip in itertools.product(grid["batch_lr"], grid["epochs"], grid["clip"]):
            settings = dp_settings(base, eps, batch, lr, epochs, clip)
            result = fit(*splits["train"], *splits["val"], settings, layout=layout)
            best = result.history[result.best_epoch - 1]
            with torch.inference_mode():
                p = probabilities(result.model(xs)).numpy()
            test = binary_metrics(ys.numpy(), p, 0.5, 10)
            tried.append(
                {
                    "batch_size": batch,
                    "lr": lr,
                    "max_epochs": epochs,
                    "max_grad_norm": clip,
                    "val_accuracy": best["val_accuracy"],
                    "val_loss": best["val_loss"],
                    "epsilon_spent": result.privacy["epsilon"],
                    "noise_multiplier": result.privacy["noise_multiplier"],
                    "test_accuracy": test["accuracy"],
                    "test_roc_auc": test["roc_auc"],
                    "s_per_epoch": result.train_seconds / len(result.history),
                }
            )
            print(json.dumps({"eps": eps, **tried[-1]}), flush=True)
        chosen = max(tried, key=lambda row: row["val_accuracy"])  # on validation only
        out["budgets"].append({"target_epsilon": eps, "chosen": chosen, "tried": tried})
    return out


def choose(sweeps: list[Path]) -> dict:
    """The union of several sweeps' settings per ε (rounds of one search), and per ε the best on validation."""
    tried: dict[float, list[dict]] = {}
    for path in sweeps:
        for budget in json.loads(path.read_text())["budgets"]:
            tried.setdefault(budget["target_epsilon"], []).extend(budget["tried"])
    budgets = [
        {"target_epsilon": eps, "chosen": max(rows, key=lambda row: row["val_accuracy"]), "tried": rows}
        for eps, rows in sorted(tried.items())
    ]
    return {"bench": "dp_sweep", "rounds": [str(path) for path in sweeps], "budgets": budgets}


def table(rows: list[dict]) -> None:
    """The rows as a Markdown table."""
    print(
        "| model | ε spent (δ=1e-5) | noise σ | test accuracy | ROC AUC | MIA AUC | MIA TPR@1%FPR | gen. gap (acc) "
        "| epochs | s/epoch |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        eps = "∞" if r["epsilon"] is None else f"{r['epsilon']:.3f}"
        noise = "-" if r["noise"] is None else f"{r['noise']:.3f}"
        print(
            f"| {r['name']} | {eps} | {noise} | {r['accuracy']:.4f} | {r['roc_auc']:.4f} | {r['mia_auc']:.4f} "
            f"| {r['mia_tpr']:.4f} | {r['gap']:.4f} | {r['epochs']} | {r['s_per_epoch']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", default="table", choices=["table", "speed", "sweep", "choose"])
    parser.add_argument("--rounds", type=Path, nargs="+", help="choose: the sweeps' JSON files")
    parser.add_argument("--eps", type=float, nargs="+", default=[1.0, 3.0, 8.0], help="target ε of the DP rows")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--project", type=Path, default=ROOT, help="speed, sweep: a project that ran full Adult")
    parser.add_argument("--batch", type=int, default=1024, help="speed: the batch of all three")
    parser.add_argument("--epochs", type=int, default=3, help="speed: epochs per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="speed: alternated runs of each")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    parser.add_argument("--grid", type=json.loads, default=GRID, help="sweep: the grid as JSON (default GRID)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part != "table":
        if args.part == "speed":
            result = speed(args.project, args.batch, args.epochs, args.repeats, args.eps[0])
        else:
            result = sweep(args.project, args.eps, args.grid) if args.part == "sweep" else choose(args.rounds)
        text = json.dumps(result, indent=1)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")
        return
    params = load_params(ROOT / "params.yaml")
    splits, layout, risk = prepare(params)
    print(
        f"full Adult: {len(splits['train'][0])} training, {len(splits['val'][0])} validation, "
        f"{len(splits['test'][0])} test rows; {splits['train'][0].shape[1]} inputs; {args.threads} thread(s)"
    )
    default = params.train.model_copy(update={"progress": False})
    base = default.model_copy(update=DP_SETTINGS)
    rows = [
        run("non-private, params.yaml (batch 256, early stopping)", default, splits, layout, params),
        run("non-private, DP settings (batch 1024, lr 0.002, 10 epochs)", base, splits, layout, params),
    ]
    for eps in args.eps:
        chosen = CHOSEN.get(eps)
        if chosen is None:
            dp = base.dp.model_copy(update={"enabled": True, "target_epsilon": eps})
            settings, label = base.model_copy(update={"dp": dp}), "DP settings"
        else:
            settings = dp_settings(
                default, eps, chosen["batch_size"], chosen["lr"], chosen["max_epochs"], chosen["max_grad_norm"]
            )
            label = "settings chosen on validation"
        rows.append(run(f"DP-SGD target ε={eps:g}, {label}", settings, splits, layout, params))
    table(rows)
    print("DP-SGD's time per epoch against the non-private trainer at the same batch: `bench/privacy.py speed`")
    if args.out:
        args.out.write_text(json.dumps({"bench": "dp_table", "rows": rows, "k_anonymity": risk}, indent=1) + "\n")
    print(
        f"k-anonymity over {risk['quasi_identifiers']} (k={risk['k']}): smallest class {risk['before']['k_min']} → "
        f"{risk['after']['k_min']}; rows in classes below k {risk['before']['share_below_k']:.2%} → "
        f"{risk['after']['share_below_k']:.2%}; classes {risk['before']['n_classes']} → "
        f"{risk['after']['n_classes']}"
    )


if __name__ == "__main__":
    main()
