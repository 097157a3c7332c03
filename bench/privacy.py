"""Full-Adult privacy benchmark: accuracy and membership-inference AUC at ε = 1, 3, 8 beside the non-private
model, DP-SGD time as a ratio of non-private time (same model, data, batch size and epochs), and k-anonymity
before and after the default column policy.

Run with `python bench/privacy.py` in the activated venv after `make run` (it reads data/processed and
reports/privacy.json of the workspace; it writes nothing).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from humane.core.params import load_params  # noqa: E402
from humane.core.paths import Paths  # noqa: E402
from humane.modeling.evaluation import binary_metrics  # noqa: E402
from humane.modeling.features import load_preprocessor, split_xy, token_layout  # noqa: E402
from humane.modeling.model import probabilities  # noqa: E402
from humane.modeling.training import fit  # noqa: E402
from humane.privacy.membership import membership_audit  # noqa: E402

# DP-SGD wants large batches and few epochs (less noise per step for the same budget).
DP_SETTINGS = {"batch_size": 1024, "lr": 0.002, "max_epochs": 10, "patience": 10}


def main() -> None:
    paths = Paths(ROOT)
    params = load_params(paths.params)
    (xt, yt, _), (xv, yv, _), (xs, ys, _) = (
        split_xy(pd.read_parquet(path)) for path in (paths.processed_train, paths.processed_val, paths.processed_test)
    )

    def score(result):
        with torch.inference_mode():
            p = probabilities(result.model(xs)).numpy()
        quality = binary_metrics(ys.numpy(), p, params.evaluate.threshold, params.evaluate.calibration_bins)
        mia = membership_audit(result.model, (xt, yt), (xs, ys), params.evaluate.mia_samples, params.evaluate.seed)
        return quality, mia

    rows = []
    layout = token_layout(load_preprocessor(paths.preprocessor))  # which inputs the numeric embeddings read
    default = fit(xt, yt, xv, yv, params.train.model_copy(update={"progress": False}), layout=layout)
    rows.append(("non-private, params.yaml (batch 256, early stopping)", default, *score(default)))
    base = params.train.model_copy(update={"progress": False, **DP_SETTINGS})
    plain = fit(xt, yt, xv, yv, base, layout=layout)
    rows.append(("non-private, DP settings (batch 1024, 10 epochs)", plain, *score(plain)))
    timed = {}
    for eps in (1.0, 3.0, 8.0):
        dp = base.dp.model_copy(update={"enabled": True, "target_epsilon": eps})
        result = fit(xt, yt, xv, yv, base.model_copy(update={"dp": dp}), layout=layout)
        rows.append((f"DP-SGD target ε={eps:g}", result, *score(result)))
        timed[eps] = result
    # Time per epoch, same model/data/batch size: DP (ghost clipping) over non-private.
    per_epoch = lambda r: r.train_seconds / len(r.history)  # noqa: E731
    ratio = {eps: per_epoch(r) / per_epoch(plain) for eps, r in timed.items()}

    print("| model | ε spent (δ=1e-5) | test accuracy | ROC AUC | MIA AUC | MIA TPR@1%FPR | gen. gap (acc) | s/epoch |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, result, quality, mia in rows:
        eps = f"{result.privacy['epsilon']:.3f}" if result.privacy.get("dp_enabled") else "∞"
        print(f"| {name} | {eps} | {quality['accuracy']:.4f} | {quality['roc_auc']:.4f} | {mia['attack_auc']:.4f} "
              f"| {mia['attack_tpr_at_1pct_fpr']:.4f} | {mia['generalization_gap_accuracy']:.4f} "
              f"| {per_epoch(result):.2f} |")  # fmt: skip
    print("DP-SGD time per epoch / non-private (same model, data, batch 1024): "
          + ", ".join(f"ε={e:g}: {r:.2f}x" for e, r in ratio.items()) + " (target <= 2x)")  # fmt: skip
    risk = json.loads(paths.privacy_report.read_text())
    print(f"k-anonymity over {risk['quasi_identifiers']} (k={risk['k']}): smallest class {risk['before']['k_min']} → "
          f"{risk['after']['k_min']}; rows in classes below k {risk['before']['share_below_k']:.2%} → "
          f"{risk['after']['share_below_k']:.2%}; classes {risk['before']['n_classes']} → "
          f"{risk['after']['n_classes']}")  # fmt: skip


if __name__ == "__main__":
    main()
