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
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from humane.core.params import Params, TrainParams, load_params  # noqa: E402
from humane.data.schema import resolve_schema  # noqa: E402
from humane.data.sources import load  # noqa: E402
from humane.modeling.evaluation import binary_metrics  # noqa: E402
from humane.modeling.features import fit as fit_preprocessor  # noqa: E402
from humane.modeling.features import split_train_val, split_xy, to_model_frame, token_layout  # noqa: E402
from humane.modeling.model import probabilities  # noqa: E402
from humane.modeling.training import TrainResult, fit  # noqa: E402
from humane.privacy.anonymity import risk_report  # noqa: E402
from humane.privacy.membership import membership_audit  # noqa: E402
from humane.privacy.policy import apply_policy, fit_policy, pseudonym_key  # noqa: E402

# README's DP-SGD example (`dvc exp run -S train.batch_size=1024 -S train.lr=0.002 -S train.max_epochs=10`); the
# patience of 10 lets all ten epochs run, so that ε spent is the budget of the ten.
DP_SETTINGS = {"batch_size": 1024, "lr": 0.002, "max_epochs": 10, "patience": 10}

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
    parser.add_argument("--eps", type=float, nargs="+", default=[1.0, 3.0, 8.0], help="target ε of the DP rows")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
        dp = base.dp.model_copy(update={"enabled": True, "target_epsilon": eps})
        rows.append(
            run(f"DP-SGD target ε={eps:g}, DP settings", base.model_copy(update={"dp": dp}), splits, layout, params)
        )
    table(rows)
    plain = rows[1]["s_per_epoch"]
    print(
        "DP-SGD time per epoch / non-private (same model, data, batch 1024, 10 epochs): "
        + ", ".join(f"ε={eps:g}: {r['s_per_epoch'] / plain:.2f}x" for eps, r in zip(args.eps, rows[2:], strict=True))
    )
    print(
        f"k-anonymity over {risk['quasi_identifiers']} (k={risk['k']}): smallest class {risk['before']['k_min']} → "
        f"{risk['after']['k_min']}; rows in classes below k {risk['before']['share_below_k']:.2%} → "
        f"{risk['after']['share_below_k']:.2%}; classes {risk['before']['n_classes']} → "
        f"{risk['after']['n_classes']}"
    )


if __name__ == "__main__":
    main()
