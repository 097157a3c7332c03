"""Scale benchmark: the whole `dvc repro` on Adult upsampled k times, given as a user's own files.

    python bench/scale.py --k 1 10            # each k: a fresh project copy, one plain `dvc repro` from scratch
    python bench/scale.py --k 100 --epochs 1  # 3.26M training rows, 1.63M test rows

For each k, Adult's shipped training and test files (read with `humane.data.datasets.read_adult`) are each
upsampled k times by sampling rows with replacement (seeded): every value, category and range stays one that
Adult has, so the identifier check, the privacy rules and the validation see the data a larger census extract of
the same population would give (jittered numbers would make e.g. a near-unique column look like an identifier,
and change what is checked). For k = 1 the files are Adult as shipped (no resampling). Both files are upsampled,
so the test split (evaluation, membership audit, bias audit with its bootstrap) grows with k as a user's would.
The files are written as CSV under data/raw/scale/ of a temporary git copy of the project, and params.yaml
points at them as README "Using your own data" describes (Adult's column roles, labels and documented ranges
declared, Adult's privacy, policy and mitigation unchanged). Training is capped at --epochs epochs (the point is
the data handling, not accuracy); the sign-off is off in the copy (gate.require_approval: false).

Each stage's process records its own wall time (from process start to exit) and peak RSS (its own, and that of
any child it waited for, e.g. torchrun's workers) through a sitecustomize hook put on PYTHONPATH for the run only.
Orchestration overhead = 1 - (sum of stage wall times) / (wall time of the plain `dvc repro`): what DVC spends
hashing, checking and launching. Prints one table per k and a JSON line; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from humane.data.datasets import ADULT_CATEGORIES, ADULT_RANGES, read_adult  # noqa: E402

SEED = 20250101
DATA_DIR = "data/raw/scale"

# Imported by every Python process of the run; records only `python -m tasks.<stage>` processes.
HOOK = """
import atexit, json, os, resource, sys, time
_argv = list(getattr(sys, "orig_argv", sys.argv))
_module = _argv[_argv.index("-m") + 1] if "-m" in _argv and _argv.index("-m") + 1 < len(_argv) else ""
if _module.startswith("tasks.") and os.environ.get("SCALE_LOG"):
    def _record():
        import psutil
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        line = {"stage": _module.split(".", 1)[1], "pid": os.getpid(),
                "wall_s": time.time() - psutil.Process().create_time(),
                "cpu_s": own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime,
                "rss_mb": own.ru_maxrss / 1024, "children_rss_mb": kids.ru_maxrss / 1024}
        with open(os.environ["SCALE_LOG"], "a") as log:
            log.write(json.dumps(line) + "\\n")
    atexit.register(_record)
"""


def env(hook_dir: Path, log: Path) -> dict[str, str]:
    """Quiet tools, the project's own stores, and the measuring hook."""
    out = {
        **os.environ,
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "NML_DISABLE_USAGE_LOGGING": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(hook_dir),
        "SCALE_LOG": str(log),
    }
    out.pop("MLFLOW_TRACKING_URI", None)
    out.pop("PREFECT_API_URL", None)
    return out


def upsample(frame: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """k times the rows, drawn with replacement (seeded); k = 1 is the file as shipped."""
    if k == 1:
        return frame
    rows = np.random.default_rng(seed).integers(0, len(frame), size=len(frame) * k)
    return frame.iloc[rows].reset_index(drop=True)


def copy_project(dest: Path, k: int, epochs: int) -> dict[str, int]:
    """A git copy of the tracked files with the upsampled files as the user's data; returns the row counts."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, names.split("\0")):
        if name.startswith("data/raw/") or name == "dvc.lock":
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    data = dest / DATA_DIR
    data.mkdir(parents=True)
    rows = {}
    for split, file, seed in (("train", "adult.data", SEED), ("test", "adult.test", SEED + 1)):
        frame = upsample(read_adult(ROOT / "data/raw/adult" / file), k, seed)
        frame.to_csv(data / f"{split}.csv", index=False)
        rows[split] = len(frame)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["data"].update(
        name="adultscale",
        source=f"{DATA_DIR}/train.csv",
        test_source=f"{DATA_DIR}/test.csv",
        labels=list(ADULT_CATEGORIES["income"]),
        numeric=list(ADULT_RANGES),
        categorical=[c for c in ADULT_CATEGORIES if c != "income"],
        ranges={c: list(r) for c, r in ADULT_RANGES.items()},
    )
    params["train"].update(max_epochs=epochs, patience=epochs, progress=False)
    params["gate"].update(require_approval=False, four_eyes=False)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git_env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@humane.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@humane.invalid",
    }
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "scale"]):
        subprocess.run(cmd, cwd=dest, env=git_env, check=True, capture_output=True)
    return rows


def measure(k: int, epochs: int, work: Path) -> dict:
    """One plain `dvc repro` from scratch on the k-times project; per-stage wall and peak RSS, and the overhead."""
    project = work / f"k{k}"
    project.mkdir()
    started = time.perf_counter()
    rows = copy_project(project, k, epochs)
    build_s = time.perf_counter() - started
    hook = work / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    log = work / f"stages-k{k}.jsonl"
    started = time.perf_counter()
    result = subprocess.run(["dvc", "repro"], cwd=project, env=env(hook, log), capture_output=True, text=True)
    total_s = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"k={k}: dvc repro failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    stages = [json.loads(line) for line in log.read_text().splitlines()]
    compute_s = sum(s["wall_s"] for s in stages)
    raw_mb = sum(f.stat().st_size for f in (project / DATA_DIR).iterdir()) / 2**20
    return {
        "k": k,
        "rows": rows,
        "raw_csv_mb": round(raw_mb, 1),
        "epochs": epochs,
        "build_s": round(build_s, 1),
        "total_s": round(total_s, 1),
        "stages_s": round(compute_s, 1),
        "overhead": round(1 - compute_s / total_s, 4),
        "stages": stages,
    }


def table(result: dict) -> str:
    """A Markdown table of one k's run."""
    rows = result["rows"]
    head = (
        f"\n### {result['k']}x Adult: {rows['train']:,} training rows, {rows['test']:,} test rows "
        f"({result['raw_csv_mb']} MB of CSV), max_epochs {result['epochs']}\n"
        "| stage | wall s | CPU s | peak RSS MB |\n| --- | ---: | ---: | ---: |"
    )
    lines = [head]
    for s in result["stages"]:
        rss = max(s["rss_mb"], s["children_rss_mb"])
        lines.append(f"| {s['stage']} | {s['wall_s']:.1f} | {s['cpu_s']:.1f} | {rss:,.0f} |")
    lines.append(f"| **sum of stages** | {result['stages_s']:.1f} | | |")
    lines.append(f"| **`dvc repro` wall** | {result['total_s']:.1f} | | |")
    lines.append(f"orchestration overhead: {100 * result['overhead']:.1f}%")
    return "\n".join(lines)


def main() -> None:
    """Run each k and print its table and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--epochs", type=int, default=2, help="train.max_epochs (and patience) in the copy")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project copies (path printed)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="humane-scale-"))
    try:
        for k in args.k:
            result = measure(k, args.epochs, work)
            print(table(result), flush=True)
            print(json.dumps(result), flush=True)
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
