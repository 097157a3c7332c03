"""Serving latency of the registered model against a bare torch forward of its network (issue 21, item 6).

    python bench/serving.py --project DIR                 # a project after `dvc repro` (a registered model)
    python bench/serving.py --project DIR --single 300 --batch-repeats 100 --out reports/bench/serving.json

The project's registered model (`humane-<data.name>`, its latest version unless --version) is downloaded from a
copy of the project's mlflow.db and checked against the manifest recorded at registration
(humane.governance.registry.verified_model_files). It is served twice by `mlflow models serve --env-manager local
--workers 1` on loopback: once exactly as registered (`http_registered`: the serving code logged with it) and
once with this checkout's humane package in place of the logged code (`http`: the same files, the code under
test). In this process, side by side, interleaved round by round (a slow moment of the machine hits every peer
alike), for one row and for a 1,000-row batch of test rows:

- `http`, `http_registered`: one POST /invocations each (client-side wall time; the JSON body is encoded once
  beforehand, the answer is read but not decoded inside the timer), plain requests carrying the sensitive
  columns the per-group thresholds read,
- `pyfunc`: `mlflow.pyfunc.load_model(...).predict(rows)` in process (MLflow's schema enforcement, then the
  pyfunc: input checks, domain flags, privacy policy, preprocessing, forward, per-group thresholds, output),
- `python_model`: the pyfunc's own `predict` without MLflow's schema enforcement,
- `forward`: the network loaded from the model's artifact (model.pt, weights_only) on the same rows already
  preprocessed: `net(x)` under torch.inference_mode.

Before timing, every peer's answer is checked against the others (same probabilities, decisions, labels and
domain flags, the forward's sigmoid equal to the served probability): a peer that answers differently fails
the run. Reports p50/p99 (ms) per peer and size and the ratios to the forward; the 5x target of the issue is
judged on `pyfunc / forward` for 1,000 rows (the pyfunc's own cost in process, HTTP and JSON excluded), and
`http / forward` (end to end) is reported beside it. A per-phase split of one 1,000-row predict follows (median
over the same repeats). Writes JSON (default reports/bench/serving.json); load averages before and after are in
it. Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.explain_serving import serve as start_server  # noqa: E402

BATCH_ROWS = 1000
TARGET = 5.0  # issue 21, item 6: the pyfunc at most 5x the bare forward for 1,000 rows
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # torch's intra-op threads in the servers


def registered_model(project: Path, scratch: Path, version: str | None) -> tuple[Path, str, str]:
    """The project's registered model files, checked against their manifest; (folder, name, version).

    The project's mlflow.db is copied first (SQLite's online backup), so that the project is only read.
    """
    import yaml

    from humane.governance.registry import verified_model_files

    # data.name only: the project's params.yaml may predate keys this checkout requires.
    name = f"humane-{yaml.safe_load((project / 'params.yaml').read_text())['data']['name']}"
    source = sqlite3.connect(f"file:{project / 'mlflow.db'}?mode=ro", uri=True)
    copy = sqlite3.connect(scratch / "mlflow.db")
    with copy:
        source.backup(copy)
    versions = [int(v) for (v,) in copy.execute("SELECT version FROM model_versions WHERE name = ?", (name,))]
    source.close()
    copy.close()
    if not versions:
        raise SystemExit(f"{project}: no registered version of {name} in mlflow.db; run `dvc repro` in it first")
    version = version or str(max(versions))
    folder = verified_model_files(f"sqlite:///{scratch / 'mlflow.db'}", name, version, scratch / "registered")
    return folder, name, version


def with_checkout_code(registered: Path, dest: Path) -> Path:
    """A copy of the registered model's folder whose logged code is this checkout's humane package."""
    shutil.copytree(registered, dest)
    shutil.rmtree(dest / "code" / "humane")
    shutil.copytree(ROOT / "humane", dest / "code" / "humane", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def serve(model: Path, log: Path, threads: int) -> tuple[subprocess.Popen, str]:
    """`mlflow models serve` of `model` (explain_serving's launcher) with `threads` threads and its logged code only."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the model's logged code, nothing else
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # uvicorn, from this venv
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    return start_server(model, log, env, log.parent)


def poster(url: str, rows: pd.DataFrame) -> Callable[[], bytes]:
    """A call that POSTs `rows` (JSON encoded once, here) to /invocations and returns the raw answer."""
    body = json.dumps({"dataframe_records": json.loads(rows.to_json(orient="records"))}).encode()

    def post() -> bytes:
        request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=600) as answer:
                return answer.read()
        except urllib.error.HTTPError as err:
            raise SystemExit(f"POST {url}/invocations: {err.code} {err.read()[:2000]!r}") from None

    return post


def decoded(payload: bytes) -> pd.DataFrame:
    """The scoring server's answer as a frame."""
    return pd.DataFrame(json.loads(payload)["predictions"])


def requests(project: Path, pyfunc: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """1,000 test rows (seeded sample) and the first of them, typed as the model's input schema declares."""
    from humane.governance.serving import as_request

    schema = pyfunc.metadata.get_input_schema()
    raw = pd.read_parquet(project / "data/interim/test.parquet")
    rows = as_request(raw[[spec.name for spec in schema.inputs]], schema)
    batch = rows.sample(n=min(BATCH_ROWS, len(rows)), random_state=0).reset_index(drop=True)
    return batch, batch.head(1)


def bare_network(folder: Path) -> Any:
    """The network rebuilt from the model's artifact (state dict read with weights_only=True), in eval mode."""
    import torch

    from humane.modeling.model import load_model

    return load_model(torch.load(folder / "artifacts" / "model.pt", weights_only=True)).eval()


def peers(urls: dict[str, str], pyfunc: Any, net: Any, rows: pd.DataFrame) -> dict[str, Callable[[], Any]]:
    """Each peer as a call scoring `rows` (the forward's rows preprocessed once, here)."""
    import torch

    model = pyfunc.unwrap_python_model()
    _, x = model._features(model._inputs(rows)[0])

    def forward() -> Any:
        with torch.inference_mode():
            return net(x)

    calls: dict[str, Callable[[], Any]] = {kind: poster(url, rows) for kind, url in urls.items()}
    calls["pyfunc"] = lambda: pyfunc.predict(rows)
    calls["python_model"] = lambda: model.predict(None, rows)
    calls["forward"] = forward
    return calls


def check_alike(calls: dict[str, Callable[[], Any]]) -> None:
    """Every peer gives the same answer (the forward: the same probability); any difference fails the run."""
    import torch

    reference = calls["pyfunc"]()
    columns = list(reference.columns)
    for kind in ("http", "http_registered", "python_model"):
        answer = calls[kind]()
        answer = decoded(answer) if isinstance(answer, bytes) else answer
        pd.testing.assert_frame_equal(answer[columns].reset_index(drop=True), reference, check_dtype=False)
    probability = torch.sigmoid(calls["forward"]()).numpy().astype(np.float64)
    np.testing.assert_array_equal(probability, reference["probability"].to_numpy())


def timed(call: Callable[[], Any]) -> float:
    """Wall time of one call (s)."""
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def measure(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, Any]]:
    """Per peer: p50/p99 (ms) over `repeats` calls after two warm-ups, the peers interleaved; ratios to forward."""
    times: dict[str, list[float]] = {kind: [] for kind in calls}
    for _ in range(2):
        for call in calls.values():
            call()
    for _ in range(repeats):
        for kind, call in calls.items():
            times[kind].append(timed(call))
    forward = float(np.median(times["forward"]))
    out = {}
    for kind, values in times.items():
        ms = np.asarray(values) * 1000
        out[kind] = {
            "p50_ms": round(float(np.median(ms)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "x_forward_p50": round(float(np.median(values)) / forward, 2),
            "repeats": repeats,
        }
    return out


def phases(pyfunc: Any, rows: pd.DataFrame, repeats: int) -> dict[str, float]:
    """Median time (ms) of each step of the pyfunc's predict on `rows`, the steps run in its order."""
    import torch
    from mlflow.models.utils import _enforce_schema

    from humane.fairness.thresholds import row_draws
    from humane.governance.domain import as_model_input, broken_rules
    from humane.governance.serving import single_values
    from humane.modeling.model import probabilities
    from humane.privacy.policy import apply_policy

    model = pyfunc.unwrap_python_model()
    schema, policy, seed = pyfunc.metadata.get_input_schema(), model.policy, model.thresholds.get("seed", 0)
    steps: dict[str, list[float]] = {}

    def step(name: str, call: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        value = call(*args)
        steps.setdefault(name, []).append(time.perf_counter() - started)
        return value

    def forward(x: Any) -> np.ndarray:
        with torch.inference_mode():
            return probabilities(model.model(x)).numpy().astype(np.float64)

    for _ in range(repeats):
        step("mlflow schema enforcement", _enforce_schema, rows, schema)
        step("params and cell checks", lambda: (model._explain_params(None), single_values(pd.DataFrame(rows))))
        raw = step("domain typing (as_model_input)", as_model_input, model.domain, rows)
        rules = step("domain flags (broken_rules)", broken_rules, model.domain, raw)
        masked = step("privacy policy", apply_policy, policy, raw.drop(columns=policy.pseudonymize), None)
        x = torch.from_numpy(step("preprocessor (ColumnTransformer)", model.preprocessor.transform, masked))
        p = step("forward", forward, x)
        positive = step("per-group thresholds (all)", _thresholds, model, masked, p, x)
        step("  of which per-row draws (row_draws)", row_draws, x.numpy(), seed)
        step("output frame", model._output, p, positive, rules)
    return {name: round(float(np.median(values)) * 1000, 3) for name, values in steps.items()}


def _thresholds(model: Any, masked: pd.DataFrame, p: np.ndarray, x: Any) -> np.ndarray:
    """The per-group decision step of HumaneModel._decide, on its own (the same calls)."""
    from humane.core.protected import sensitive_name
    from humane.fairness.thresholds import served_decisions

    groups = pd.DataFrame({sensitive_name(c): masked[c].to_numpy() for c in model.needs_sensitive})
    return served_decisions(p, groups, model.thresholds, x.numpy(), model.threshold)


def verdict(batch: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's target on 1,000 rows: the pyfunc in process at most 5x the bare forward (p50); HTTP beside it."""
    pyfunc, http = batch["pyfunc"]["x_forward_p50"], batch["http"]["x_forward_p50"]
    return {
        "limit_x_forward": TARGET,
        "pyfunc_x_forward": pyfunc,
        "met": pyfunc <= TARGET,
        "http_x_forward": http,
        "http_met": http <= TARGET,
    }


def table(figures: dict[str, Any]) -> str:
    lines = [f"{'rows':<12}{'peer':<17}{'p50 ms':>10}{'p99 ms':>10}{'x forward':>11}"]
    for size in ("single_row", "batch_1000"):
        for kind, entry in figures[size].items():
            lines.append(
                f"{size:<12}{kind:<17}{entry['p50_ms']:>10.2f}{entry['p99_ms']:>10.2f}{entry['x_forward_p50']:>11.2f}"
            )
    lines.append("phases of one 1,000-row predict (median ms): " + json.dumps(figures["phases_batch_1000_ms"]))
    lines.append("target (1,000 rows, p50): " + json.dumps(figures["target"]))
    return "\n".join(lines)


def setting(pyfunc: Any, model: str) -> dict[str, Any]:
    """What was measured, and how."""
    import torch

    served = pyfunc.unwrap_python_model()
    return {
        "command": " ".join(["python", "bench/serving.py", *sys.argv[1:]]),
        "model": f"{model} (files checked against the registration manifest)",
        "thresholds": served.thresholds.get("constraint"),
        "sensitive_columns_sent": served.needs_sensitive,
        "domain_flags": served.domain is not None,
        "server": "mlflow models serve --env-manager local --workers 1 (loopback), one client",
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "target": "pyfunc / forward <= 5 for 1,000 rows (in process); http / forward reported beside it",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, required=True, help="a project after `dvc repro` (only read)")
    parser.add_argument("--version", help="the registered version to serve (default: the latest)")
    parser.add_argument("--single", type=int, default=300, help="single-row rounds (default 300)")
    parser.add_argument("--batch-repeats", type=int, default=100, help="1,000-row rounds (default 100)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, here and in each server (default 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports/bench/serving.json")
    args = parser.parse_args()
    import mlflow.pyfunc
    import torch

    torch.set_num_threads(args.threads)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    load_before = os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="humane-bench-serving-"))
    processes: list[subprocess.Popen] = []
    try:
        registered, name, version = registered_model(args.project.resolve(), scratch, args.version)
        checkout = with_checkout_code(registered, scratch / "checkout")
        urls = {}
        for kind, folder in (("http", checkout), ("http_registered", registered)):
            process, urls[kind] = serve(folder, scratch / f"serve-{kind}.log", args.threads)
            processes.append(process)
        pyfunc = mlflow.pyfunc.load_model(str(checkout))  # this checkout's humane (imported above) runs it
        net = bare_network(checkout)
        batch, single = requests(args.project.resolve(), pyfunc)
        figures: dict[str, Any] = {"setting": setting(pyfunc, f"{name} v{version}")}
        for size, rows, repeats in (("single_row", single, args.single), ("batch_1000", batch, args.batch_repeats)):
            calls = peers(urls, pyfunc, net, rows)
            check_alike(calls)
            figures[size] = measure(calls, repeats)
        figures["phases_batch_1000_ms"] = phases(pyfunc, batch, args.batch_repeats)
        figures["target"] = verdict(figures["batch_1000"])
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)
    figures["setting"]["load_average_before_after"] = [list(load_before), list(os.getloadavg())]
    print(table(figures))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
