"""The Prefect flow runs the same stages as `dvc repro`, records them in dvc.lock and skips what is current."""

import json
import os
import subprocess
import time

import yaml

from flows.training import training
from tests.conftest import BIN, md5s, run, tracked_runs

SAME = ["data/interim/train.parquet", "data/processed/train.parquet", "data/processed/val.parquet",
        "data/processed/test.parquet", "models/preprocessor.joblib", "models/model.pt", "reports/metrics.json",
        "reports/train_history.json".replace("history", "metrics"), "reports/plots/roc.json"]  # fmt: skip


def test_flow_equals_dvc_repro_and_leaves_dvc_clean(project, repro_project, prefect_server, monkeypatch):
    monkeypatch.chdir(project)
    state = training(return_state=True)
    assert state.is_completed(), state.message
    assert md5s(project, SAME) == md5s(repro_project, SAME)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], project).stdout
    (tracked,) = tracked_runs(project)
    assert tracked.data.tags["entry_point"] == "prefect"
    assert tracked.data.tags["prefect.flow_run_id"] == str(state.state_details.flow_run_id)

    # A second run finds every stage current: nothing recomputed, nothing new tracked.
    second = training(return_state=True)
    assert second.is_completed()
    assert set(second.result().values()) <= {"skipped", None}
    assert len(tracked_runs(project)) == 1

    # Overrides are written to params.yaml and saved as a DVC experiment, as `dvc exp run -S` does.
    third = training(overrides={"train.lr": 0.003}, return_state=True)
    assert third.is_completed(), third.message
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["lr"] == 0.003
    experiment = third.result()["experiment"]
    assert experiment in run(["dvc", "exp", "list", "--name-only"], project).stdout
    newest = tracked_runs(project)[0]
    assert newest.data.params["train.lr"] == "0.003"
    assert newest.data.tags["overrides"] == "train.lr=0.003"
    assert "Data and pipelines are up to date" in run(["dvc", "status"], project).stdout


def test_deployment_runs_on_a_process_worker(project, prefect_server):
    """README's commands: work pool, `prefect deploy --all`, a worker, `prefect deployment run` with overrides."""
    env = {**os.environ, "PWD": str(project)}
    prefect = str(BIN / "prefect")
    run([prefect, "work-pool", "create", "humane-local", "--type", "process", "--overwrite"], project)
    subprocess.run([prefect, "--no-prompt", "deploy", "--all"], cwd=project, env=env, check=True, capture_output=True)
    log = open(project / "worker.log", "w")  # noqa: SIM115 - closed below
    worker = subprocess.Popen([prefect, "worker", "start", "--pool", "humane-local"], cwd=project, env=env,
                              stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        started = time.time()
        result = subprocess.run(
            [prefect, "deployment", "run", "training/adult", "-p", 'overrides={"train.max_epochs": 2}', "--watch",
             "--watch-timeout", "300"],
            cwd=project, env=env, capture_output=True, text=True, timeout=400,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert "Completed" in result.stdout
        assert time.time() - started < 300
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
    assert json.loads((project / "reports/train_metrics.json").read_text())["epochs_run"] == 2
    (tracked,) = tracked_runs(project)
    assert tracked.data.tags["overrides"] == "train.max_epochs=2"
    assert "prefect.flow_run_id" in tracked.data.tags
