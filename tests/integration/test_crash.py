"""Real: SIGKILLed `dvc repro` on a fresh sample copy, a killed Prefect process worker; Prefect server, MLflow SQLite.

Processes killed with SIGKILL: `dvc repro` at its stage boundaries and in train, a Prefect worker in train.

Nothing may be left half-done: the rerun's outputs equal an uninterrupted run's, training resumes from its
checkpoint, and the registry holds one version per pipeline run. A worker's flow run whose process died ends
Crashed (flow-run heartbeats and the automation in automations/crash_zombie_flow_runs.yaml), never Running forever.
"""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from uuid import UUID

import psutil
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

from humane.governance.signoff import PROMOTED
from humane.pipeline.workspace import stages
from tests.conftest import BIN, ROOT, mlflow_client, run, tracked_runs

MODEL = "humane-sample"
# Outputs that hold what is measured or named per run, not computed from the data: the compute bill (train), the
# MLflow run's id (track), what the registry assigned (register), and GX's data docs (timestamps). Outputs that
# record wall times beside what is computed (the history, the epoch checkpoints) and the skops preprocessor (not
# byte-stable) are compared by content below. Every other out must match dvc.lock's md5 exactly.
PER_RUN = {
    "reports/train_metrics.json",
    "reports/mlflow_run.json",
    "reports/decision.json",
    "reports/registration.json",
    "reports/model_card.md",
    "reports/model_card.html",
    "reports/validation_docs",
    "reports/train_history.json",
    "models/checkpoints",
    "models/preprocessor.skops",
}


def lock_md5s(project: Path) -> dict[str, str]:
    """The md5 dvc.lock records for each stage's outs (files; a folder's own md5), minus the per-run ones."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {
        f"{stage}:{out['path']}": out["md5"]
        for stage, entry in lock.items()
        for out in entry.get("outs", [])
        if out["path"] not in PER_RUN and "md5" in out
    }


def killed_repro(project: Path, when: str) -> str:
    """Run `dvc repro` in its own process group and SIGKILL the group at `when`; what it printed.

    `when` is a stage's name (killed as DVC starts it: the boundary after the stage before it) or "in-train" (once
    train has written its first checkpoint).
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [str(BIN / "dvc"), "repro"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen = []
    checkpoint = project / "models/checkpoints/resume.pt"
    for line in proc.stdout:
        seen.append(line)
        if when == "in-train" and line.startswith("Running stage 'train'"):
            deadline = time.time() + 300
            while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            break
        if line.startswith(f"Running stage '{when}'"):
            break
    alive = proc.poll() is None
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert alive, f"dvc repro ended before the kill at {when}:\n{''.join(seen)[-3000:]}"
    return "".join(seen)


def test_dvc_repro_killed_at_every_stage_boundary_reruns_to_the_same_outputs_and_registers_once(project, repro_project):
    """One chain of kills: each rerun is killed at the next boundary, so the whole chain costs about one run."""
    names = [s.name for s in stages(project / "dvc.yaml")]
    points = [names[1], names[2], names[3], names[4], "in-train", *names[5:]]  # every boundary, and within train
    for when in points:
        killed_repro(project, when)
    done = run(["dvc", "repro"], project)
    assert "Running stage 'load'" not in done.stdout  # what finished before a kill is not run again

    assert lock_md5s(project) == lock_md5s(repro_project)
    assert_same_training(project, repro_project)
    train = json.loads((project / "reports/train_metrics.json").read_text())
    assert train["resumed_from_epoch"] >= 1, train  # the kill in train: the rerun continued from its checkpoint
    assert "Data and pipelines are up to date" in run(["dvc", "status"], project).stdout
    # One tracked run, one registered version, one promotion in the trail: nothing twice.
    assert len(tracked_runs(project)) == 1
    assert len(mlflow_client(project).search_model_versions(f"name = '{MODEL}'")) == 1
    trail = [json.loads(line) for line in (project / "audit/signoff.jsonl").read_text().splitlines()]
    assert [e["event"] for e in trail].count(PROMOTED) == 1, trail


def assert_same_training(ours: Path, theirs: Path) -> None:
    """The history, each epoch's checkpoint and the preprocessor alike, wall times aside."""
    import numpy as np
    import pandas as pd
    import torch

    from humane.modeling.features import load_preprocessor

    def history(project: Path) -> list[dict]:
        rows = json.loads((project / "reports/train_history.json").read_text())
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert history(ours) == history(theirs)
    names = sorted(p.name for p in (theirs / "models/checkpoints").iterdir())
    assert sorted(p.name for p in (ours / "models/checkpoints").iterdir()) == names
    for name in names:
        a, b = (torch.load(p / "models/checkpoints" / name, weights_only=False) for p in (ours, theirs))
        assert a["state_dict"].keys() == b["state_dict"].keys()
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"]), name
        assert {k: v for k, v in a["metrics"].items() if k != "seconds"} == {
            k: v for k, v in b["metrics"].items() if k != "seconds"
        }
    test = pd.read_parquet(ours / "data/interim/test.parquet")
    a, b = (load_preprocessor(p / "models/preprocessor.skops") for p in (ours, theirs))
    assert a.feature_names == b.feature_names and np.array_equal(a.transform(test), b.transform(test))


def _kill_tree(pid: int) -> list[int]:
    """SIGKILL a process and every process it started (the worker and its flow run), as a lost machine would."""
    family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for proc in family:
        proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(family, timeout=30)
    return [p.pid for p in family]


def _worker(project: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "a") as out:
        return subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", "humane-local"],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _state_of(flow_run_id):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state


def _wait_for(flow_run_id, done, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = _state_of(flow_run_id)
        if done(state):
            return state
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id}: not {what} after {timeout} s; {state.type.value} {state.name}")


def test_a_worker_killed_in_train_leaves_a_crashed_run_and_the_rerun_resumes_and_registers_once(
    ran_project, prefect_server
):
    project = ran_project
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    # train and what follows run again; load .. preprocess are current. No early stop (patience = max_epochs): the
    # training runs every epoch, so resume.pt exists for seconds, not for the few epochs an early stop leaves (the
    # flow run once finished before the poll below saw the file).
    params["train"].update(seed=7, patience=params["train"]["max_epochs"])
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    versions = len(mlflow_client(project).search_model_versions(f"name = '{MODEL}'"))
    runs_before = len(tracked_runs(project))
    env = {**os.environ, "PWD": str(project)}
    prefect = str(BIN / "prefect")
    run([prefect, "work-pool", "create", "humane-local", "--type", "process", "--overwrite"], project)
    subprocess.run([prefect, "--no-prompt", "deploy", "--all"], cwd=project, env=env, check=True, capture_output=True)
    run([prefect, "deployment", "delete", "monitoring/adult-monitoring"], project)  # its daily schedule: not here
    # The documented automation, its window shortened from 90 s (three missed heartbeats) to 45 s for the test.
    automation = yaml.safe_load((ROOT / "automations/crash_zombie_flow_runs.yaml").read_text())
    automation["trigger"]["within"] = 45
    (project / "zombies.yaml").write_text(yaml.safe_dump(automation))
    run([prefect, "automation", "create", "--from-file", str(project / "zombies.yaml")], project)

    log = project / "worker.log"
    worker = _worker(project, env, log)
    try:
        first = run([prefect, "deployment", "run", "training/adult"], project)
        flow_run_id = UUID(re.search(r"UUID: ([0-9a-f-]{36})", first.stdout).group(1))
        checkpoint = project / "models/checkpoints/resume.pt"
        checkpoint.unlink(missing_ok=True)
        deadline = time.time() + 300
        while not checkpoint.exists():
            assert time.time() < deadline and worker.poll() is None, log.read_text()[-3000:]
            assert not _state_of(flow_run_id).is_final(), _state_of(flow_run_id)
            time.sleep(0.1)
        killed_at = time.time()
        assert len(_kill_tree(worker.pid)) >= 2  # the worker and the flow run's process
        # Nobody reports the run's end: the missing heartbeats do.
        crashed = _wait_for(flow_run_id, lambda s: s.is_final(), 45 + 30 + 30, "ended")
        assert crashed.is_crashed(), (crashed.type, crashed.name, crashed.message)
        print(f"Crashed {time.time() - killed_at:.0f} s after the kill")

        worker = _worker(project, env, log)
        again = run(
            [prefect, "deployment", "run", "training/adult", "--watch", "--watch-timeout", "400"],
            project,
            check=False,
            timeout=500,
        )
    finally:
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        with get_client(sync_client=True) as client:  # the session's server: no other test's run is judged by it
            for made in client.read_automations_by_name(automation["name"]):
                client.delete_automation(made.id)
    with get_client(sync_client=True) as client:
        (deployment,) = client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["adult"]))
        )
        (rerun,) = [r for r in client.read_flow_runs() if r.deployment_id == deployment.id and r.id != flow_run_id]
    # Promoted or refused by the policy against the champion: either way the candidate was registered.
    assert rerun.state.name in ("Completed", "Rejected"), (rerun.state.name, rerun.state.message, again.stdout[-2000:])
    train = json.loads((project / "reports/train_metrics.json").read_text())
    assert train["resumed_from_epoch"] >= 1, train
    assert len(tracked_runs(project)) == runs_before + 1
    assert len(mlflow_client(project).search_model_versions(f"name = '{MODEL}'")) == versions + 1
