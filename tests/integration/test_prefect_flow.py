"""Real: the training flow on a Prefect server (fresh copy, process worker) against the shared run; `dvc exp`.

The Prefect flow runs the stages of dvc.yaml as a graph, skips what is current, and isolates overridden runs."""

import json
import os
import re
import subprocess

import numpy as np
import pandas as pd
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.training import training
from humane.governance.registry import PASSED, REJECTED_BY_POLICY
from humane.modeling.features import load_preprocessor
from humane.pipeline.workspace import stages
from tests.conftest import BIN, md5s, mlflow_client, run, tracked_runs

# Byte-identical outputs of the flow and of `dvc repro` (the skops preprocessor is compared by behaviour).
SAME = [
    "data/interim/train.parquet",
    "data/processed/train.parquet",
    "data/processed/val.parquet",
    "data/processed/test.parquet",
    "models/model.pt",
    "reports/metrics.json",
    "reports/plots/roc.json",
    "reports/fairness.json",
    "reports/audit.json",
]


def _task_runs(flow_run_id):
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name.rsplit("-", 1)[0]: r for r in runs}


def test_flow_is_the_dvc_graph_equals_dvc_repro_and_skips_what_is_current(
    project, repro_project, prefect_server, monkeypatch
):
    monkeypatch.chdir(project)
    state = training(return_state=True)
    assert state.name == "Completed", state.message  # the sample's policy promotes the first model
    assert md5s(project, SAME) == md5s(repro_project, SAME)
    # The training figures alike too; its compute bill (wall times, energy) is measured, not reproduced.
    ours, theirs = (
        {k: v for k, v in json.loads((p / "reports/train_metrics.json").read_text()).items() if k != "compute"}
        for p in (project, repro_project)
    )
    assert ours == theirs
    test = pd.read_parquet(project / "data/interim/test.parquet")
    ours, theirs = (load_preprocessor(p / "models/preprocessor.skops") for p in (project, repro_project))
    assert ours.feature_names == theirs.feature_names
    assert np.array_equal(ours.transform(test), theirs.transform(test))
    assert "Data and pipelines are up to date" in run(["dvc", "status"], project).stdout
    (tracked,) = tracked_runs(project)
    assert tracked.data.tags["entry_point"] == "prefect"
    assert tracked.data.tags["mlflow.source.name"] == "prefect flow training"
    assert tracked.data.tags["prefect.flow_run_id"] == str(state.state_details.flow_run_id)

    # The run's graph is dvc.yaml's: each stage's task waited for the tasks of the stages whose outputs it reads.
    task_runs = _task_runs(state.state_details.flow_run_id)
    ids = {name: str(r.id) for name, r in task_runs.items()}
    for stage in stages(project / "dvc.yaml"):
        waited = {str(i.id) for i in task_runs[stage.name].task_inputs.get("wait_for", [])}
        assert waited == {ids[u] for u in stage.upstream}, stage.name
        assert task_runs[stage.name].state.name == "Completed"
    assert task_runs["train"].task_inputs["wait_for"] and not task_runs["load"].task_inputs.get("wait_for")

    # A second run finds every stage current: each ends Skipped, nothing new is tracked or registered.
    versions = len(mlflow_client(project).search_model_versions("name = 'humane-sample'"))
    second = training(return_state=True)
    assert second.name == "Completed", second.message
    states = {name: r.state.name for name, r in _task_runs(second.state_details.flow_run_id).items()}
    assert {states[s.name] for s in stages(project / "dvc.yaml")} == {"Skipped"}
    assert len(tracked_runs(project)) == 1
    assert len(mlflow_client(project).search_model_versions("name = 'humane-sample'")) == versions


def test_overridden_runs_are_isolated_and_saved_as_experiments(ran_project, prefect_server):
    """Two runs with different overrides at once: neither touches the workspace nor reads the other's files."""
    params_before = (ran_project / "params.yaml").read_bytes()
    lock_before = (ran_project / "dvc.lock").read_bytes()
    outputs_before = md5s(ran_project, ["models/model.pt", "reports/metrics.json", "reports/train_metrics.json"])
    procs = [
        subprocess.Popen(
            ["python", "-m", "flows.training", f"train.max_epochs={n}"],
            cwd=ran_project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (2, 3)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    # Each ran whole (0: promoted, 3: refused by the policy; not 1 or 2: a crash or an error), and its exit
    # status is the decision its MLflow run and registry version record.
    assert [p.returncode in (0, 3) for p in procs] == [True, True], [o[1][-3000:] for o in outputs]
    decided = {r.data.params["train.max_epochs"]: r.data.tags["gate.decision"] for r in tracked_runs(ran_project)[:2]}
    assert decided == {
        str(n): PASSED if p.returncode == 0 else REJECTED_BY_POLICY for n, p in zip((2, 3), procs, strict=True)
    }

    # The workspace is as it was: params, lock and outputs.
    assert (ran_project / "params.yaml").read_bytes() == params_before
    assert (ran_project / "dvc.lock").read_bytes() == lock_before
    assert md5s(ran_project, list(outputs_before)) == outputs_before
    assert "Data and pipelines are up to date" in run(["dvc", "status"], ran_project).stdout
    assert run(["git", "worktree", "list"], ran_project).stdout.count("\n") == 1  # temporary worktrees removed

    # Each run is a DVC experiment with its own params and outputs, and an MLflow run with its own params.
    experiments = run(["dvc", "exp", "list", "--name-only"], ran_project).stdout.split()
    assert len([e for e in experiments if e.startswith("prefect-")]) == 2
    shown = json.loads(run(["dvc", "exp", "show", "--json"], ran_project).stdout)
    epochs_by_exp = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            rev = exp["revs"][0]
            data = rev["data"]
            epochs_by_exp[exp["name"]] = (
                data["params"]["params.yaml"]["data"]["train"]["max_epochs"],
                data["metrics"]["reports/train_metrics.json"]["data"]["epochs_run"],
            )
    assert sorted(epochs_by_exp.values()) == [(2, 2), (3, 3)]
    runs = tracked_runs(ran_project)
    assert sorted(r.data.params["train.max_epochs"] for r in runs[:2]) == ["2", "3"]
    for tracked in runs[:2]:
        assert tracked.data.tags["overrides"] == f"train.max_epochs={tracked.data.params['train.max_epochs']}"
        assert tracked.info.run_name.startswith(f"prefect · train.max_epochs={tracked.data.params['train.max_epochs']}")

    # A user gets a run's outputs back with `dvc exp apply`.
    name = next(n for n, v in epochs_by_exp.items() if v == (2, 2))
    run(["dvc", "exp", "apply", name], ran_project)
    assert yaml.safe_load((ran_project / "params.yaml").read_text())["train"]["max_epochs"] == 2
    assert json.loads((ran_project / "reports/train_metrics.json").read_text())["epochs_run"] == 2


def test_a_policy_override_is_refused_before_anything_runs(ran_project, prefect_server, monkeypatch):
    monkeypatch.chdir(ran_project)
    runs_before = len(tracked_runs(ran_project))
    result = subprocess.run(
        ["python", "-m", "flows.training", "gate.min.test.accuracy=0"],
        cwd=ran_project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "override 'gate.min.test.accuracy' refused: a flow run may change only" in result.stderr
    assert len(tracked_runs(ran_project)) == runs_before
    assert run(["git", "worktree", "list"], ran_project).stdout.count("\n") == 1


def test_deployment_runs_on_a_process_worker(ran_project, prefect_server):
    """README's commands: work pool, `prefect deploy --all`, a worker, `prefect deployment run` with overrides."""
    project = ran_project  # the deployed run restores the shared run's stages up to preprocess, then trains
    # Its champion withdrawn, the registry has none: the deployed run is judged on the value rules alone, as the first
    # run of a fresh checkout is (a model of another seed is not compared with the shared run's).
    mlflow_client(project).delete_registered_model_alias("humane-sample", "champion")
    runs_before = len(tracked_runs(project))
    kept = md5s(project, ["params.yaml", "dvc.lock", "models/model.pt", "reports/metrics.json"])
    env = {**os.environ, "PWD": str(project)}
    prefect = str(BIN / "prefect")
    run([prefect, "work-pool", "create", "humane-local", "--type", "process", "--overwrite"], project)
    subprocess.run([prefect, "--no-prompt", "deploy", "--all"], cwd=project, env=env, check=True, capture_output=True)
    # --all also deployed the daily monitoring schedule (06:00 UTC): removed, so that a scheduled run cannot reach
    # this worker (or the session's server) during the suite.
    run([prefect, "deployment", "delete", "monitoring/adult-monitoring"], project)
    log = open(project / "worker.log", "w")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [prefect, "worker", "start", "--pool", "humane-local"],
        cwd=project,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        refused = subprocess.run(
            [
                prefect,
                "deployment",
                "run",
                "training/adult",
                "-p",
                'overrides={"gate.min.test.accuracy": 0}',
                "--watch",
                "--watch-timeout",
                "300",
            ],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        result = subprocess.run(
            [
                prefect,
                "deployment",
                "run",
                "training/adult",
                "-p",
                'overrides={"train.seed": 7}',
                "--watch",
                "--watch-timeout",
                "300",
            ],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a worker still winding down its runs (a busy machine): stopped by PID
            worker.kill()
            worker.wait(timeout=30)
        log.close()
    assert refused.returncode != 0
    assert "Failed" in refused.stdout
    with get_client(sync_client=True) as client:
        flows = client.read_flow_runs()
    refused_run = next(f for f in flows if f.parameters.get("overrides") == {"gate.min.test.accuracy": 0})
    assert "override 'gate.min.test.accuracy' refused" in refused_run.state.message
    # The seed-7 candidate is judged like any other: promoted, or refused by the policy (whose verdict on another
    # seed's model is not this test's subject). Either way every stage ran to register.
    rejected = "Flow run finished in state 'Rejected'" in result.stdout
    assert result.returncode == (1 if rejected else 0), result.stdout[-2000:] + result.stderr[-2000:]
    assert rejected or "Flow run finished successfully" in result.stdout or "Completed" in result.stdout
    assert re.search(r"prefect\.task-run\.Completed \* register-", result.stdout), result.stdout[-2000:]
    runs = tracked_runs(project)
    assert len(runs) == runs_before + 1  # the deployed run; the refused one tracked nothing
    tracked = runs[0]
    assert tracked.data.tags["overrides"] == "train.seed=7" and tracked.data.params["train.seed"] == "7"
    assert "prefect.flow_run_id" in tracked.data.tags
    assert md5s(project, list(kept)) == kept  # the isolated run left the project's workspace untouched
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["seed"] == 42
