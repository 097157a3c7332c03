"""Team mode's cost: `make team-up`, the bootstrap, and one pipeline run in local mode and in team mode, back to back.

    python bench/team_mode.py              # the sample data (3,000 + 1,000 Adult rows), as the tests use
    python bench/team_mode.py --full       # Adult as shipped

Starts a fresh local stack in a temporary folder (`python -m team.stack up`), bootstraps it with one trainer
(`python -m team.bootstrap`), then makes two identical project copies and runs `dvc repro` in each: first local
(MLflow on SQLite, no servers), then team mode (the trainer's credentials against the stack), and stops the stack.
Both runs train the same model with the same params; team mode adds the authenticated tracking server (every
request checks a password), proxied artifacts, the Prefect promotion mutex and the server-side sign-off request.
Prints a table and a JSON line; nothing here is a test.
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from team.settings import TeamSettings, read_env  # noqa: E402
from tests.conftest import make_project  # noqa: E402

QUIET = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "NML_DISABLE_USAGE_LOGGING": "1",
}


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Run a command; its wall time (an error shows what it printed)."""
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{cmd} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.monotonic() - started


def project_copy(dest: Path, full: bool) -> Path:
    """A project copy on the sample data (or on Adult as shipped), sign-off required."""
    project = make_project(dest)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["gate"]["require_approval"] = True
    if full:
        shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["data"] = shipped["data"]
        shutil.copytree(ROOT / "data/raw/adult", project / "data/raw/adult", dirs_exist_ok=True)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def main() -> None:
    """Stack up, bootstrap, local run, team run, stack down; print the times."""
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--full", action="store_true", help="Adult as shipped instead of the sample")
    full = args.parse_args().full
    base = Path(tempfile.mkdtemp(prefix="humane-bench-team-"))
    base.chmod(0o755)  # the stack's service accounts (humane-pg, humane-dvc) must reach their folders
    stack = base / "stack"
    env = {**os.environ, **QUIET, "HUMANE_TEAM_DIR": str(stack)}
    env.pop("MLFLOW_TRACKING_URI", None)
    times: dict[str, float] = {}
    try:
        times["team-up"] = timed([sys.executable, "-m", "team.stack", "up", "--dir", str(stack)], ROOT, env)
        spec = base / "accounts.yaml"
        spec.write_text(yaml.safe_dump({"models": ["humane-sample", "humane-adult"], "accounts": {"tina": "trainer"}}))
        admin = TeamSettings.load(stack).admin_env()
        times["bootstrap"] = timed(
            [sys.executable, "-m", "team.bootstrap", "--settings", str(spec)], ROOT, {**env, **admin}
        )
        local, team = project_copy(base / "local", full), project_copy(base / "team", full)
        times["dvc repro, local"] = timed(["dvc", "repro"], local, env)
        trainer = {**env, **TeamSettings.load(stack).env, **read_env(stack / "accounts" / "tina.env")}
        times["dvc repro, team"] = timed(["dvc", "repro"], team, trainer)
    finally:
        subprocess.run([sys.executable, "-m", "team.stack", "down", "--dir", str(stack), "--purge"], cwd=ROOT, env=env)
        shutil.rmtree(base, ignore_errors=True)
    print(f"{'what':<22} wall (s)")
    for what, seconds in times.items():
        print(f"{what:<22} {seconds:8.1f}")
    ratio = times["dvc repro, team"] / times["dvc repro, local"]
    print(f"team / local: {ratio:.2f}x")
    print(json.dumps({"data": "adult" if full else "sample", **{k: round(v, 1) for k, v in times.items()}}))


if __name__ == "__main__":
    main()
