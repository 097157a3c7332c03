"""Serving latency with and without explanations, through `mlflow models serve` (issue 20, item 4).

    python bench/explain_serving.py                       # builds a sample project first (`dvc repro`, minutes)
    python bench/explain_serving.py --project DIR         # a project copy already built by `dvc repro`
    python bench/explain_serving.py --single 50 --batch-repeats 10 --out reports/bench/explain_serving.json

The project's model is logged as the track stage logs it (humane.governance.tracking.log_serving_model) with
models/explainer.json, the explain stage's (a run without one is refused). It goes into a store of its own,
is downloaded, and is served by one `mlflow models serve --env-manager local --workers 1` process on loopback.
One client (this process) then posts, side by side:

- plain: no params (the answer every client got before explanations),
- reasons: `{"reasons": 3}` (Integrated Gradients or Shapley sampling per row, then the top 3 reason codes),
- counterfactual: `{"counterfactual": true}` (the batched search, refused rows only),
- both: reasons and counterfactual,

each for a single row (a refused test row, so that the counterfactual search runs) and for a 1,000-row batch of
test rows, repeated; the first request of each kind is a warm-up and is not counted. Prints a table of median and
p95 latency (ms, client-side wall time of the HTTP request) and each kind's ratio to plain; writes JSON
(default reports/bench/explain_serving.json). Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import SAMPLE_DIR, make_project, run  # noqa: E402 (sets the tools' quiet, temporary state)

KINDS: dict[str, dict[str, Any] | None] = {
    "plain": None,
    "reasons": {"reasons": 3},
    "counterfactual": {"counterfactual": True},
    "both": {"reasons": 3, "counterfactual": True},
}
BATCH_ROWS = 1000


def build(dest: Path) -> Path:
    """A sample project after `dvc repro`, as the test suite makes it."""
    started = time.monotonic()
    project = make_project(dest)
    run(["dvc", "repro"], project, timeout=3600)
    print(f"project built in {time.monotonic() - started:.0f} s: {project}", flush=True)
    return project


def ensure_explainer(project: Path) -> str:
    """Say where models/explainer.json comes from; a run without one (older than the explain stage) is refused."""
    if not (project / "models/explainer.json").exists():
        raise SystemExit(f"{project}: no models/explainer.json; run `dvc repro explain` in it first")
    return "models/explainer.json found in the project"


def log_model(project: Path, scratch: Path) -> tuple[Path, str]:
    """The project's served model logged by tracking into a store in `scratch`, downloaded; its folder and method."""
    import mlflow

    from humane.core import io
    from humane.core.paths import Paths
    from humane.governance.tracking import log_serving_model
    from humane.pipeline.params import load_params
    from humane.privacy.policy import protected_columns

    paths, params = Paths(project), load_params(project / "params.yaml")
    protected = protected_columns(params.privacy, params.data, io.read_json(paths.privacy_policy)).all
    mlflow.set_tracking_uri(f"sqlite:///{scratch}/mlflow.db")
    try:
        experiment = mlflow.create_experiment("bench", artifact_location=(scratch / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = log_serving_model(paths, params.evaluate.threshold, set(protected))
        local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(scratch / "model")))
    finally:
        mlflow.set_tracking_uri(None)
    method = io.read_json(paths.explainer)["attribution"]["method"]
    return local, method


def serve(
    model: Path, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[subprocess.Popen, str]:
    """`mlflow models serve` on a free loopback port, one worker; its process and URL once /ping answers.

    `env`: the server's environment (default: this one, with this checkout on PYTHONPATH); `cwd`: its folder.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "models",
        "serve",
        "-m",
        str(model),
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)} if env is None else env
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=cwd)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"mlflow models serve exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                if answer.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise SystemExit(f"mlflow models serve did not answer /ping within 180 s:\n{log.read_text()[-3000:]}")


def post(url: str, rows: pd.DataFrame, params: dict[str, Any] | None) -> tuple[float, pd.DataFrame]:
    """One POST /invocations: its wall time (s) and the predictions."""
    body = {"dataframe_records": json.loads(rows.to_json(orient="records"))}
    if params:
        body["params"] = params
    request = urllib.request.Request(
        f"{url}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as answer:
            payload = answer.read()
    except urllib.error.HTTPError as err:
        raise SystemExit(f"POST /invocations {params}: {err.code} {err.read()[:2000]!r}") from None
    elapsed = time.perf_counter() - started
    return elapsed, pd.DataFrame(json.loads(payload)["predictions"])


def measure(url: str, rows: pd.DataFrame, repeats: int) -> dict[str, dict[str, Any]]:
    """Per kind: median and p95 latency (ms) over `repeats` requests after one warm-up, the kinds interleaved."""
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    answers: dict[str, pd.DataFrame] = {}
    for kind, params in KINDS.items():  # warm-up: imports, first-call paths
        _, answers[kind] = post(url, rows, params)
    for _ in range(repeats):
        for kind, params in KINDS.items():  # interleaved: a slow moment of the machine hits every kind alike
            times[kind].append(post(url, rows, params)[0])
    plain = float(np.median(times["plain"]))
    out = {}
    for kind, values in times.items():
        ms = np.asarray(values) * 1000
        out[kind] = {
            "median_ms": round(float(np.median(ms)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "ratio_to_plain": round(float(np.median(values)) / plain, 2),
            "repeats": repeats,
            **answered(answers[kind]),
        }
    return out


def answered(scored: pd.DataFrame) -> dict[str, Any]:
    """What the answers held: rows refused, with reasons, with a counterfactual found (counts only)."""
    out: dict[str, Any] = {"rows": len(scored), "refused": int((scored["decision"] == 0).sum())}
    if "reasons" in scored:
        out["rows_with_reasons"] = int((scored["reasons"] != "").sum())
    if "counterfactual" in scored:
        out["counterfactuals_found"] = int((scored["counterfactual"] != "").sum())
    return out


def requests(project: Path, model: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The 1,000-row batch (test rows) and one refused test row, as the model's input schema types them.

    The single row is the batch's first refused row that has a counterfactual within two changes (so that the
    whole search runs: singles, pairs, the pair's grid), else its first refused row.
    """
    import mlflow.pyfunc

    from humane.governance.serving import as_request

    pyfunc = mlflow.pyfunc.load_model(str(model))
    schema = pyfunc.metadata.get_input_schema()
    raw = pd.read_csv(project / SAMPLE_DIR / "test.csv") if (project / SAMPLE_DIR).exists() else None
    if raw is None:
        raw = pd.read_parquet(project / "data/interim/test.parquet")
    rows = as_request(raw[[spec.name for spec in schema.inputs]], schema)
    batch = rows.sample(n=min(BATCH_ROWS, len(rows)), random_state=0).reset_index(drop=True)
    decided = pyfunc.predict(batch, params={"counterfactual": True})
    refused = decided["decision"].to_numpy() == 0
    found = refused & (decided["counterfactual"] != "").to_numpy()
    single = batch[found if found.any() else refused].head(1).reset_index(drop=True)
    return batch, single


def table(figures: dict[str, Any]) -> str:
    lines = [f"{'request':<26}{'median ms':>11}{'p95 ms':>10}{'x plain':>9}"]
    for size in ("single_row", "batch_1000"):
        for kind, entry in figures[size].items():
            lines.append(
                f"{size + ' ' + kind:<26}{entry['median_ms']:>11.1f}{entry['p95_ms']:>10.1f}"
                f"{entry['ratio_to_plain']:>9.2f}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, help="a project copy after `dvc repro` (default: build one)")
    parser.add_argument("--single", type=int, default=50, help="single-row requests per kind (default 50)")
    parser.add_argument("--batch-repeats", type=int, default=10, help="1,000-row requests per kind (default 10)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports/bench/explain_serving.json")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="humane-bench-explain-"))
    process = None
    try:
        project = args.project.resolve() if args.project else build(scratch / "project")
        source = ensure_explainer(project)
        model, method = log_model(project, scratch)
        batch, single = requests(project, model)
        process, url = serve(model, scratch / "serve.log")
        figures = {
            "setting": {
                "command": " ".join(["python", "bench/explain_serving.py", *sys.argv[1:]]),
                "project": str(project),
                "explainer": source,
                "method": method,
                "batch_rows": len(batch),
                "server": "mlflow models serve --env-manager local --workers 1 (loopback)",
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "python": platform.python_version(),
            },
            "single_row": measure(url, single, args.single),
            "batch_1000": measure(url, batch, args.batch_repeats),
        }
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)
    print(table(figures))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
