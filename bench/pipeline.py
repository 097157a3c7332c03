"""Full-Adult benchmark: model quality, trainer throughput against a bare PyTorch loop, and wall times.

Run with `make bench` (or `python bench/pipeline.py` in the activated venv). Works in temporary git copies of
the project, so the workspace is untouched. Prints one table; nothing here is a test.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from humane.core.paths import Paths  # noqa: E402
from humane.modeling.features import load_preprocessor, split_xy, token_layout  # noqa: E402
from humane.modeling.model import MLP, MLPArgs, build_model, loss_fn  # noqa: E402
from humane.modeling.training import fit, seed_everything  # noqa: E402
from humane.pipeline.params import load_params  # noqa: E402
from humane.pipeline.workspace import stages  # noqa: E402

ENV = {
    **os.environ,
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
}
ENV.pop("MLFLOW_TRACKING_URI", None)
ENV.pop("PREFECT_API_URL", None)


def sh(cmd: list[str], cwd: Path) -> float:
    """Run a command and return its wall time in seconds."""
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def copy_project(dest: Path) -> Path:
    """A fresh git copy of the tracked files (no dvc.lock, no outputs)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, names.split("\0")):
        if name == "dvc.lock":
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "bench"]):
        subprocess.run(cmd, cwd=dest, env=ENV, check=True, capture_output=True)
    (dest / ".prefect").mkdir()
    return dest


def bare_loop(x: torch.Tensor, y: torch.Tensor, args: MLPArgs, lr: float, wd: float, bs: int, epochs: int) -> float:
    """The plainest correct loop on the same model, data and batch size; returns samples per second."""
    seed_everything(0)
    model = MLP(args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    criterion = loss_fn()
    target = y.float()
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x), bs):
            idx = order[i : i + bs]
            optimizer.zero_grad()
            criterion(model(x[idx]), target[idx]).backward()
            optimizer.step()
    return len(x) * epochs / (time.perf_counter() - started)


def throughput(project: Path, epochs: int = 6, repeats: int = 3) -> dict[str, float]:
    """Trainer samples/s (with validation, checkpoints and progress bar) over the bare loop's, interleaved."""
    paths = Paths(project)
    params = load_params(paths.params).train.model_copy(
        update={"max_epochs": epochs, "patience": epochs, "progress": True}
    )
    x, y, _ = split_xy(pd.read_parquet(paths.processed_train))
    xv, yv, _ = split_xy(pd.read_parquet(paths.processed_val))
    # The same network as the trainer's (numeric embeddings need the preprocessor's layout).
    layout = token_layout(load_preprocessor(paths.preprocessor))
    args = build_model(params, x.shape[1], layout).args
    ours, bare = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as ckpt:
            ours.append(fit(x, y, xv, yv, params, Path(ckpt), layout=layout).samples_per_second)
        bare.append(bare_loop(x, y, args, params.lr, params.weight_decay, params.batch_size, epochs))
    return {
        "trainer": statistics.median(ours),
        "bare": statistics.median(bare),
        "ratio": statistics.median(o / b for o, b in zip(ours, bare, strict=True)),
    }


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="humane-bench-"))
    try:
        scratch = copy_project(work / "repro")
        repro_s = sh(["dvc", "repro"], scratch)
        noop = [sh(["dvc", "repro"], scratch) for _ in range(3)]
        paths = Paths(scratch)
        metrics = json.loads(paths.metrics.read_text())
        audit = json.loads(paths.audit_report.read_text())
        registration = json.loads(paths.registration.read_text())
        stages_dir = copy_project(work / "stages")
        names = [stage.name for stage in stages(Paths(stages_dir).dvc_yaml)]  # dvc.yaml order
        stage_s = {name: sh(["dvc", "repro", "--single-item", name], stages_dir) for name in names}
        flow_dir = copy_project(work / "flow")
        flow_s = sh(["python", "-m", "flows.training"], flow_dir)
        speed = throughput(scratch)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    model, logreg, majority = metrics["model"], metrics["baseline"]["logreg"], metrics["baseline"]["majority"]
    print("\n## Quality on the Adult test split (16,281 rows)")
    print(
        "| model | accuracy | ROC AUC | PR AUC | log loss | Brier | ECE |\n| --- | --- | --- | --- | --- | --- | --- |"
    )
    for name, m in (("MLP (params.yaml)", model), ("logistic regression", logreg), ("majority class", majority)):
        print(
            f"| {name} | {m['accuracy']:.4f} | {m['roc_auc']:.4f} | {m['pr_auc']:.4f} | {m['log_loss']:.4f} "
            f"| {m['brier']:.4f} | {m['ece']:.4f} |"
        )
    print("\n## Fairness on the test split (95% bootstrap CI) and the default policy's decision")
    print("| feature | gap | value | 95% CI |\n| --- | --- | --- | --- |")
    for feature in audit["features"]:
        for gap in ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference"):
            v = feature["gaps"][gap]
            print(f"| {feature['feature']} | {gap} | {v['value']:.3f} | [{v['lo']:.3f}, {v['hi']:.3f}] |")
    verdict = "promoted to champion" if registration["promoted"] else "not promoted"
    print(f"decision: v{registration['version']} {verdict}; reasons: {registration['reasons'] or 'none'}")
    print("\n## Trainer throughput (same model, data, batch size; median of 3 interleaved pairs)")
    print(
        f"trainer {speed['trainer']:,.0f} samples/s, bare loop {speed['bare']:,.0f} samples/s, "
        f"ratio {speed['ratio']:.3f} (target >= 0.9)"
    )
    print("\n## Wall times (s)")
    print("| what | seconds |\n| --- | --- |")
    for stage, seconds in stage_s.items():
        print(f"| stage `{stage}` (`dvc repro --single-item {stage}`) | {seconds:.1f} |")
    governance = sum(stage_s[s] for s in ("data_audit", "audit", "gate", "register"))
    print(f"| of which data audit + bias audit + gate + registration/card | {governance:.1f} |")
    print(f"| `dvc repro` from scratch | {repro_s:.1f} |")
    print(f"| `dvc repro` no-op (median of 3) | {statistics.median(noop):.2f} |")
    print(f"| `python -m flows.training` from scratch (incl. temporary Prefect API start) | {flow_s:.1f} |")


if __name__ == "__main__":
    main()
