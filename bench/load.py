"""Load on the team stack: 8 deployment runs of training/adult submitted at once, two process workers.

    python bench/load.py                 # 8 runs on the sample data (3,000 + 1,000 Adult rows)
    python bench/load.py --runs 4        # fewer runs

Starts a fresh team stack in a temporary folder (`python -m team.stack up`, as tests/team/conftest.py does),
bootstraps it with one trainer, makes a project copy on the sample data (sign-off required), deploys its flows to
a process pool of its own on the stack's Prefect server and starts two process workers on it, both with the
trainer's credentials (the stack's own worker holds none). Submits the runs at once, each with different allowed
overrides (train.seed, train.lr, train.max_epochs, ...), waits until every run is final or paused, then checks:

- each run ends Completed, Failed with a rejection reason (the gate or a refused override), or Paused awaiting a
  sign-off (the run's state message says why); Crashed, or a run still running, is a failure;
- the registry holds exactly one version per tracked MLflow run (none twice, none without its run);
- `python -m tasks.trail verify` passes: the trail's hash chain, and the aliases against it.

Prints one line per run, wall time, the peak resident memory of the workers' process trees (sampled each second),
and a JSON line; exits 1 when a check fails. Stops the stack and deletes the folder. Nothing here is a test.
On 2 CPU cores, 8 team-mode runs take about 8 x 3 min of CPU: expect 15-25 min of wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from team.settings import TeamSettings, read_env  # noqa: E402
from team.stack import QUIET as STACK_QUIET  # noqa: E402
from tests.conftest import make_project  # noqa: E402

BIN = Path(sys.executable).parent
POOL = "bench-load"  # its own process pool: both workers hold the trainer's credentials
MODEL = "humane-sample"
QUIET = {**STACK_QUIET, "NML_DISABLE_USAGE_LOGGING": "1"}  # the stack's, and NannyML's
# Allowed overrides (humane.pipeline.params.OVERRIDABLE), one set per run: different seeds, rates and lengths.
OVERRIDES = [
    {"train.seed": 1},
    {"train.seed": 2},
    {"train.seed": 3, "train.lr": 0.001},
    {"train.seed": 4, "train.max_epochs": 4},
    {"train.seed": 5, "train.lr": 0.003},
    {"train.seed": 6, "train.max_epochs": 6},
    {"train.seed": 7, "train.batch_size": 128},
    {"train.seed": 8, "train.dropout": 0.1},
]
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def sh(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command; a failure stops the bench with what it printed."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"{cmd} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


class PeakMemory(threading.Thread):
    """Samples the summed RSS of some processes and all their descendants, once a second; keeps the peak."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.peak, self.done = pids, 0, threading.Event()

    def run(self) -> None:
        """Sample until stopped."""
        while not self.done.wait(1.0):
            total = 0
            for pid in self.pids:
                try:
                    root = psutil.Process(pid)
                    for proc in [root, *root.children(recursive=True)]:
                        total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)


def stack_up(base: Path, env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """A fresh stack with one trainer account; (stack folder, the trainer's environment)."""
    stack = base / "stack"
    sh([sys.executable, "-m", "team.stack", "up", "--dir", str(stack)], ROOT, env)
    spec = base / "accounts.yaml"
    spec.write_text(yaml.safe_dump({"models": [MODEL], "accounts": {"tina": "trainer"}}))
    admin = TeamSettings.load(stack).admin_env()
    sh([sys.executable, "-m", "team.bootstrap", "--settings", str(spec)], ROOT, {**env, **admin})
    trainer = {**env, **TeamSettings.load(stack).env, **read_env(stack / "accounts" / "tina.env")}
    return stack, trainer


def project_copy(dest: Path) -> Path:
    """The sample project, deployed to the team pool (prefect.yaml names the local pool)."""
    project = make_project(dest)
    deploy = yaml.safe_load((project / "prefect.yaml").read_text())
    for deployment in deploy["deployments"]:
        deployment["work_pool"]["name"] = POOL
    (project / "prefect.yaml").write_text(yaml.safe_dump(deploy, sort_keys=False))
    sh(["git", "commit", "-q", "-am", "deploy to the team pool"], project, os.environ.copy())
    return project


def start_worker(project: Path, env: dict[str, str], log: Path, name: str) -> subprocess.Popen:
    """A process worker on the bench's pool, in the project folder, with the trainer's credentials."""
    argv = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process", "--name", name]
    with open(log, "w") as out:  # the child keeps its own descriptor
        return subprocess.Popen(  # its own process group: the flow runs it started go with it
            argv,
            cwd=project,
            env={**env, "PWD": str(project)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def submit(project: Path, env: dict[str, str]) -> list[str]:
    """Deploy, then submit every run at once (no --watch); the flow run ids, in OVERRIDES order."""
    prefect = str(BIN / "prefect")
    sh([prefect, "--no-prompt", "deploy", "--all"], project, {**env, "PWD": str(project)})
    sh([prefect, "deployment", "delete", "monitoring/adult-monitoring"], project, env)
    from prefect.deployments import run_deployment

    ids = []
    with stack_prefect(env):
        for overrides in OVERRIDES:
            flow_run = run_deployment("training/adult", parameters={"overrides": overrides}, timeout=0)
            ids.append(str(flow_run.id))
    return ids


def stack_prefect(env: dict[str, str]) -> Any:
    """This process's Prefect client settings pointed at the stack's server (settings are read at import)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_SSL_CERT_FILE, PREFECT_API_URL, temporary_settings

    updates = {PREFECT_API_URL: env["PREFECT_API_URL"], PREFECT_API_AUTH_STRING: env["PREFECT_API_AUTH_STRING"]}
    updates[PREFECT_API_SSL_CERT_FILE] = env["PREFECT_API_SSL_CERT_FILE"]  # the stack's CA (team.env)
    return temporary_settings(updates=updates)


def wait(ids: list[str], limit_s: float, env: dict[str, str]) -> dict[str, Any]:
    """Poll until every run is final or paused (or the limit passes); {id: flow run}."""
    from prefect import get_client

    deadline = time.monotonic() + limit_s
    while True:
        with stack_prefect(env), get_client(sync_client=True) as client:
            runs = {i: client.read_flow_run(i) for i in ids}
        if all(r.state.type.value in FINAL or r.state.name == "Paused" for r in runs.values()):
            return runs
        if time.monotonic() > deadline:
            return runs
        time.sleep(5)


def registry_check(env: dict[str, str], paused: int) -> list[str]:
    """Problems: a tracked run registered twice, a version whose run is not in the experiment, or a number of
    pending versions other than the number of runs paused for a sign-off."""
    from mlflow.tracking import MlflowClient

    os.environ.update({k: v for k, v in env.items() if k.startswith("MLFLOW_")})
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(MODEL)
    runs = {r.info.run_id for r in client.search_runs([experiment.experiment_id])} if experiment else set()
    versions = client.search_model_versions(f"name = '{MODEL}'")
    per_run: dict[str, int] = {}
    for version in versions:
        per_run[version.run_id] = per_run.get(version.run_id, 0) + 1
    problems = [f"run {r} has {n} versions" for r, n in per_run.items() if n != 1]
    problems += [f"version of run {r} is not a tracked run" for r in per_run if r not in runs]
    pending = sum(v.tags.get("approval") == "pending" for v in versions)
    if pending != paused:
        problems.append(f"{pending} pending versions for {paused} runs paused for a sign-off")
    return problems


def main() -> None:
    """Stack up, two workers, submit, wait, check, stack down."""
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--runs", type=int, default=len(OVERRIDES), choices=range(1, len(OVERRIDES) + 1))
    args.add_argument("--limit", type=float, default=3600, help="seconds to wait for the runs")
    options = args.parse_args()
    del OVERRIDES[options.runs :]
    base = Path(tempfile.mkdtemp(prefix="humane-bench-load-"))
    base.chmod(0o755)  # the stack's service accounts (humane-pg, humane-dvc) must reach their folders
    env = {**os.environ, **QUIET}
    env.pop("MLFLOW_TRACKING_URI", None)
    stack, workers = None, []
    failures: list[str] = []
    try:
        stack, trainer = stack_up(base, env)
        project = project_copy(base / "project")
        sh([str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process", "--overwrite"], project, trainer)
        workers = [start_worker(project, trainer, base / f"worker-{n}.log", f"bench-{n}") for n in (1, 2)]
        pids = [w.pid for w in workers]
        sampler = PeakMemory(pids)
        sampler.start()
        started = time.monotonic()
        ids = submit(project, trainer)
        runs = wait(ids, options.limit, trainer)
        wall = time.monotonic() - started
        sampler.done.set()
        outcomes = {}
        for overrides, flow_run_id in zip(OVERRIDES, ids, strict=True):
            state = runs[flow_run_id].state
            outcomes[flow_run_id] = {"overrides": overrides, "state": state.name, "message": state.message or ""}
            print(f"{json.dumps(overrides):<45} {state.name:<12} {state.message or ''}")
            if state.type.value not in FINAL and state.name != "Paused":
                failures.append(f"{flow_run_id}: still {state.name} after {options.limit:.0f} s")
            elif state.name == "Paused":  # waits for a reviewer: its version must be pending (registry_check)
                continue
            elif state.name not in ("Completed", "Failed") or not (state.message or state.is_completed()):
                failures.append(f"{flow_run_id}: ended {state.name} without a reason")
        failures += registry_check(trainer, sum(o["state"] == "Paused" for o in outcomes.values()))
        verify = [sys.executable, "-m", "tasks.trail", "verify"]
        trail = subprocess.run(verify, cwd=project, env=trainer, capture_output=True, text=True)
        print(trail.stdout.strip() or trail.stderr.strip())
        if trail.returncode != 0:
            failures.append(f"tasks.trail verify exited {trail.returncode}")
        print(f"wall time {wall:.1f} s; peak RSS of the workers' process trees {sampler.peak / 2**20:.0f} MiB")
        states = [o["state"] for o in outcomes.values()]
        peak = round(sampler.peak / 2**20)
        print(json.dumps({"runs": len(ids), "wall_s": round(wall, 1), "peak_rss_mib": peak, "states": states}))
    finally:
        for worker in workers:  # the workers and the paused flow runs they started
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=60)
        if stack is not None:
            subprocess.run([sys.executable, "-m", "team.stack", "down", "--dir", str(stack), "--purge"], cwd=ROOT)
        shutil.rmtree(base, ignore_errors=True)
    if failures:
        raise SystemExit("failed: " + "; ".join(failures))


if __name__ == "__main__":
    main()
