"""Accuracy peers on one split: humane's networks (MLP, FT-Transformer, TabM) beside scikit-learn and boosting.

Reads the processed train / val / test splits of a project that has run `dvc repro` (full Adult: a copy of the
project with the dataset, see README "Measured figures"); nothing is written there. Every model sees the same
processed features (the privacy policy's binned age, one-hot categories, scaled numbers), the same training rows
and the same test rows, in this one process. The networks stop early on validation loss (params.yaml's train
section, the model switched); the peers run with their libraries' defaults. Decisions at probability 0.5.

    python bench/quality.py --project /tmp/adult_full --out bench/results/quality.json
    python bench/quality.py --project DIR --models tabm hgb --tabm '{"k": 32}' --out q.json

Writes one JSON document (the README's accuracy table is taken from it); nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from humane.core.paths import Paths  # noqa: E402
from humane.modeling.features import load_preprocessor, split_xy, token_layout  # noqa: E402
from humane.modeling.model import count_parameters  # noqa: E402
from humane.modeling.params import TrainParams  # noqa: E402
from humane.modeling.training import fit  # noqa: E402
from humane.pipeline.params import load_params  # noqa: E402

NETWORKS = ("mlp", "ft", "tabm")
PEERS = ("logreg", "hgb", "lightgbm", "xgboost")
# The bar on full Adult (official split): HistGradientBoosting's own figures rounded up.
TARGET = {"accuracy": 0.872, "roc_auc": 0.928}
# TabM's optimiser in the package authors' defaults (AdamW 2e-3, weight decay 3e-4).
TABM_OPTIMISER = {"lr": 2e-3, "weight_decay": 3e-4}

Split = tuple[np.ndarray, np.ndarray]


def splits(project: Path) -> dict[str, Split]:
    """Processed train / val / test of the project's last run, as float32 features and 0/1 labels."""
    paths = Paths(project)
    out = {}
    for name in ("train", "val", "test"):
        x, y = split_xy(pd.read_parquet(getattr(paths, f"processed_{name}")))[:2]
        out[name] = (x.numpy(), y.numpy())
    return out


def network_settings(name: str, overrides: dict[str, Any]) -> TrainParams:
    """params.yaml's train section with `name`'s network; the FT-Transformer with the paper's optimiser."""
    train = load_params(ROOT / "params.yaml").train
    update: dict[str, Any] = {"progress": False, "model": {"ft": "ft_transformer"}.get(name, name)}
    if name == "ft":
        update.update(lr=1e-4, weight_decay=1e-5)
    if name == "tabm":
        update.update(TABM_OPTIMISER)
    settings = train.model_copy(update=update)
    if not overrides:
        return settings
    raw = settings.model_dump(mode="json")
    for key, value in overrides.items():
        section = raw["tabm"] if key in raw["tabm"] else raw
        section[key] = value if not isinstance(value, dict) else {**section[key], **value}
    return TrainParams.model_validate(raw)


def train_network(name: str, data: dict[str, Split], layout: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """Fit one of humane's networks (early stopping on validation loss); its probabilities and facts."""
    params = network_settings(name, overrides)
    tensors = {k: (torch.from_numpy(x), torch.from_numpy(y)) for k, (x, y) in data.items()}
    result = fit(*tensors["train"], *tensors["val"], params, layout=layout)
    with torch.inference_mode():
        scores = {k: torch.sigmoid(result.model(x)).numpy() for k, (x, _) in tensors.items() if k != "train"}
    facts = {
        "parameters": count_parameters(result.model),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "settings": params.model_dump(
            mode="json", include={"model", "lr", "weight_decay", "batch_size", "patience", "tabm", "numeric_embedding"}
        ),
    }
    return {"scores": scores, **facts}


class LightGBM:
    """LightGBM's defaults (LGBMClassifier's: 100 rounds, learning rate 0.1, 31 leaves) through its own API.

    LightGBM 4.5's scikit-learn wrapper calls `check_X_y(force_all_finite=...)`, which scikit-learn 1.9 removed.
    """

    def __init__(self, threads: int) -> None:
        self.settings = {"objective": "binary", "verbose": -1, "seed": 0, "num_threads": threads}

    def fit(self, x: np.ndarray, y: np.ndarray) -> LightGBM:
        """Train 100 rounds on the rows."""
        import lightgbm

        self.booster = lightgbm.train(self.settings, lightgbm.Dataset(x, label=y), num_boost_round=100)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(rows, 2) class probabilities."""
        p = self.booster.predict(x)
        return np.column_stack([1 - p, p])


def peer(name: str) -> Callable[[], Any]:
    """A factory of the peer's classifier with its library's defaults (seeded)."""
    threads = os.cpu_count() or 1
    if name == "logreg":
        from sklearn.linear_model import LogisticRegression

        return lambda: LogisticRegression(max_iter=5000)
    if name == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return lambda: HistGradientBoostingClassifier(random_state=0)
    if name == "lightgbm":
        return lambda: LightGBM(threads)
    from xgboost import XGBClassifier

    return lambda: XGBClassifier(random_state=0, n_jobs=threads)


def train_peer(name: str, data: dict[str, Split]) -> dict[str, Any]:
    """Fit a peer on the training rows; its probabilities on validation and test."""
    model = peer(name)()
    model.fit(*data["train"])
    return {"scores": {k: model.predict_proba(x)[:, 1] for k, (x, _) in data.items() if k != "train"}}


def scored(entry: dict[str, Any], data: dict[str, Split]) -> dict[str, Any]:
    """Accuracy at 0.5 and ROC AUC on validation and test, in place of the raw scores."""
    scores = entry.pop("scores")
    for split in ("val", "test"):
        y, p = data[split][1], scores[split]
        entry[f"{split}_accuracy"] = round(float(accuracy_score(y, p >= 0.5)), 4)
        entry[f"{split}_roc_auc"] = round(float(roc_auc_score(y, p)), 4)
    return entry


def run(project: Path, models: list[str], overrides: dict[str, Any]) -> dict[str, Any]:
    """Every model on the same rows, one after another in this process."""
    data = splits(project)
    layout = token_layout(load_preprocessor(Paths(project).preprocessor))
    results = []
    for name in models:
        started = time.perf_counter()
        if name in NETWORKS:
            entry = train_network(name, data, layout, overrides if name == "tabm" else {})
        else:
            entry = train_peer(name, data)
        entry = {"model": name, **scored(entry, data), "train_seconds": round(time.perf_counter() - started, 1)}
        print(json.dumps(entry), flush=True)
        results.append(entry)
    rows = {k: len(v[1]) for k, v in data.items()}
    machine = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "machine": platform.machine()}
    return {
        "bench": "quality",
        "project": str(project),
        "rows": rows,
        "target": TARGET,
        "machine": machine,
        "load_average": os.getloadavg(),
        "results": results,
    }


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, required=True, help="a project whose `dvc repro` made the splits")
    parser.add_argument("--models", nargs="+", default=[*PEERS, *NETWORKS], choices=[*PEERS, *NETWORKS])
    parser.add_argument("--tabm", default="{}", help="JSON overrides of TabM's settings (train keys or tabm keys)")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON document goes")
    args = parser.parse_args()
    document = run(args.project, args.models, json.loads(args.tabm))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
