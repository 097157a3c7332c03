"""The Prefect flow runs the same stages as `dvc repro`, records them in dvc.lock and skips what is current."""

import json
import os
import subprocess

import joblib
import numpy as np
import pandas as pd
import yaml

from flows.training import training
from tests.conftest import BIN, md5s, mlflow_client, run, tracked_runs

# Byte-identical outputs. The pickled preprocessor is compared by behaviour instead: pickle's memo layout
# depends on which equal strings happen to be the same object in the writing process.
SAME = ["data/interim/train.parquet", "data/processed/train.parquet", "data/processed/val.parquet",
        "data/processed/test.parquet", "models/model.pt", "reports/metrics.json", "reports/train_metrics.json",
        "reports/plots/roc.json", "reports/fairness.json", "reports/audit.json"]  # fmt: skip


def test_flow_equals_dvc_repro_and_leaves_dvc_clean(project, repro_project, prefect_server, monkeypatch):
    monkeypatch.chdir(project)
    state = training(return_state=True)
    assert state.is_completed(), state.message
    assert md5s(project, SAME) == md5s(repro_project, SAME)
    test = pd.read_parquet(project / "data/interim/test.parquet")
    ours, theirs = (joblib.load(p / "models/preprocessor.joblib") for p in (project, repro_project))
    assert ours.feature_names == theirs.feature_names
    assert np.array_equal(ours.transform(test), theirs.transform(test))
    assert "Data and pipelines are up to date" in run(["dvc", "status"], project).stdout
    (tracked,) = tracked_runs(project)
    assert tracked.data.tags["entry_point"] == "prefect"
    assert tracked.data.tags["prefect.flow_run_id"] == str(state.state_details.flow_run_id)

    # A second run finds every stage current: nothing recomputed, nothing new tracked.
    versions = len(mlflow_client(project).search_model_versions("name = 'humane-sample'"))
    second = training(return_state=True)
    assert second.is_completed()
    assert len(tracked_runs(project)) == 1
    assert len(mlflow_client(project).search_model_versions("name = 'humane-sample'")) == versions

    # Overrides are written to params.yaml and saved as a DVC experiment, as `dvc exp run -S` does.
    third = training(overrides={"train.lr": 0.003}, return_state=True)
    assert third.name in {"Completed", "Rejected"}, third.message  # the gate may refuse it; the run still ends clean
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["lr"] == 0.003
    assert run(["dvc", "exp", "list", "--name-only"], project).stdout.strip().startswith("prefect-")
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
        result = subprocess.run(
            [prefect, "deployment", "run", "training/adult", "-p", 'overrides={"audit.bootstrap": 20}', "--watch",
             "--watch-timeout", "300"],
            cwd=project, env=env, capture_output=True, text=True, timeout=400,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert "Completed" in result.stdout
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
    assert json.loads((project / "reports/audit.json").read_text())["bootstrap"] == 20
    (tracked,) = tracked_runs(project)
    assert tracked.data.tags["overrides"] == "audit.bootstrap=20"
    assert "prefect.flow_run_id" in tracked.data.tags
