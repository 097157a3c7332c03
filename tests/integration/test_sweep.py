"""Real: the sweep flow on a Prefect server, candidates via `dvc queue`, parent/child MLflow runs; a shared-run copy.

The sweep flow on a real project: parallel candidates, parent/child runs, the choice, one registration."""

import json
import subprocess
from itertools import pairwise
from pathlib import Path

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowFilter, FlowFilterName
from prefect.client.schemas.sorting import FlowRunSort

from humane.core.context import RunContext
from humane.fairness.policy import policy_of
from humane.pipeline.params import load_params
from tests.conftest import mlflow_client, run

MODEL = "humane-sample"
CANDIDATES = [
    {},
    {"mitigation.thresholds": "demographic_parity"},  # shares candidate 0's model
    {"mitigation.reweigh": True},
    {"mitigation.loss": "demographic_parity", "mitigation.loss_weight": 0.3},
]


def with_sweep(project: Path, candidates: list[dict], **policy_max: float) -> None:
    """Set the sweep's candidates (and tighter fairness limits) in the project's params.yaml."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["sweep"].update(candidates=candidates, workers=2, dask_address=None)
    params["policy"]["max"].update(policy_max)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def sweep(project: Path, *args: str) -> subprocess.CompletedProcess:
    return run(["python", "-m", "flows.sweep", *args], project, check=False, timeout=600)


def sweep_runs(project: Path) -> tuple:
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name(MODEL)
    runs = client.search_runs([experiment.experiment_id], "tags.`sweep.flow_run_id` != ''")
    parents = [r for r in runs if r.data.tags.get("humane.sweep") == "true"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_sweep_runs_candidates_in_parallel_chooses_by_policy_and_registers_only_the_choice(ran_project, prefect_server):
    with_sweep(ran_project, CANDIDATES)
    # The chosen candidate then waits for a sign-off that does not come (3 s): pending is never "promoted". With no
    # champion (withdrawn), it is judged on the value rules alone and nothing has to verify against the trail.
    path = ran_project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["gate"].update(require_approval=True, approval_timeout_s=3)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    client = mlflow_client(ran_project)
    client.delete_registered_model_alias(MODEL, "champion")
    versions_before = {v.version for v in client.search_model_versions(f"name = '{MODEL}'")}

    done = sweep(ran_project)
    # Registered: awaiting a sign-off (7; here none came in time) or refused by the gate (3).
    assert done.returncode in (7, 3), done.stderr[-3000:]

    # One parent run tagged as the sweep, a child per candidate under it.
    (parent,), children = sweep_runs(ran_project)
    assert sorted(int(c.data.tags["sweep.candidate"]) for c in children) == [0, 1, 2, 3]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    by_index = {int(c.data.tags["sweep.candidate"]): c for c in children}
    assert by_index[2].data.params == {"mitigation.reweigh": "True"}
    figures = {
        "val.accuracy",
        "test.accuracy",
        "val.fairness.sex.demographic_parity_difference",
        "test.fairness.sex.equalized_odds_difference",
        "train.seconds",
    }
    assert figures <= set(by_index[3].data.metrics)
    assert by_index[1].data.tags["sweep.model_of"] == "0"  # thresholds only: candidate 0's model, not retrained

    # The models were trained at the same time: the trained candidates' runs overlap in time.
    trained = sorted((c.info.start_time, c.info.end_time) for i, c in by_index.items() if i != 1)
    assert any(later[0] < earlier[1] for earlier, later in pairwise(trained)), trained

    # The selection, with a reason for every candidate not chosen, in MLflow and in reports/sweep/.
    selection = json.loads((ran_project / "reports/sweep/selection.json").read_text())
    chosen = selection["chosen"]
    # Every fairness limit the choice judged is recorded, a min and a max on one gap both (the policy's bounds).
    bounds = policy_of(load_params(ran_project / "params.yaml")).fairness_bounds()
    assert [(x["metric"], x["rule"], x["threshold"]) for x in selection["limits"]] == bounds and bounds
    assert parent.data.tags["sweep.chosen"] == str(chosen) and chosen is not None
    assert set(selection["rejected"]) == {str(i) for i in range(4)} - {str(chosen)}
    for i, child in by_index.items():
        status = child.data.tags["sweep.status"]
        # Not chosen: over a fairness limit, under a quality floor, or less accurate (or tied) on validation rows.
        reasons = ("> max", "< min", "validation accuracy")
        assert status == "chosen" if i == chosen else any(r in status for r in reasons), status
    rows = json.loads((ran_project / "reports/sweep/front.json").read_text())
    assert [r["candidate"] for r in rows] == [0, 1, 2, 3] and [r["chosen"] for r in rows].count(True) == 1
    assert (ran_project / "reports/sweep/front.png").stat().st_size > 10_000
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert {"sweep/front.png", "sweep/front.json", "sweep/selection.json", "sweep/choice.md"} <= artifacts
    with get_client(sync_client=True) as prefect:
        keys = {
            a.key
            for a in prefect.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["mitigation-sweep", "mitigation-sweep-choice"])
                )
            )
        }
    assert keys == {"mitigation-sweep", "mitigation-sweep-choice"}

    # Exactly one new registered version: the chosen candidate's, trained by the pipeline and judged by the gate.
    new = [v for v in client.search_model_versions(f"name = '{MODEL}'") if v.version not in versions_before]
    assert len(new) == 1, [v.version for v in new]
    (version,) = new
    tracked = client.get_run(version.run_id)
    assert tracked.data.tags["overrides"] == RunContext(ran_project, overrides=CANDIDATES[chosen]).describe_overrides()
    assert (tracked.data.tags["gate.decision"] == "rejected") == (done.returncode == 3)
    if done.returncode == 7:  # the sweep's state is the training run's own: pending, champion unchanged
        with get_client(sync_client=True) as prefect:
            (last, *_) = prefect.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["sweep"])), sort=FlowRunSort.START_TIME_DESC, limit=1
            )
        assert (last.state.type.value, last.state.name) == ("FAILED", "NotApproved"), last.state
        assert version.tags["approval"] == "pending" and "champion" not in client.get_registered_model(MODEL).aliases
        assert "the version stays pending" in done.stderr and "promoted to champion" not in done.stdout + done.stderr
    assert version.tags["sweep.parent_run"] == parent.info.run_id
    assert version.tags["sweep.candidate"] == str(chosen) and version.tags["sweep.position"]
    assert all(f"{i}: " in version.tags["sweep.rejected"] for i in range(4) if i != chosen)
    assert parent.data.tags["sweep.registered_version"] == str(version.version)
    assert "model_card/sweep.md" in {a.path for a in client.list_artifacts(version.run_id, "model_card")}
    # The chosen candidate's figures in the sweep are the pipeline's own (same frames, same seed, same code).
    assert by_index[chosen].data.metrics["test.accuracy"] == tracked.data.metrics["test.accuracy"]


def test_sweep_fails_closed_when_no_candidate_meets_the_limits(ran_project, prefect_server):
    with_sweep(ran_project, [CANDIDATES[0], CANDIDATES[2]], **{"fairness.sex.demographic_parity_difference": 0.0})
    client = mlflow_client(ran_project)
    versions_before = len(client.search_model_versions(f"name = '{MODEL}'"))
    done = sweep(ran_project)
    assert done.returncode == 4, done.stderr[-3000:]
    assert "no sweep candidate is within the policy's fairness limits" in done.stderr
    (parent,), children = sweep_runs(ran_project)
    assert parent.data.tags["sweep.chosen"] == "None" and len(children) == 2
    assert all("> max 0.0" in c.data.tags["sweep.status"] for c in children)
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == versions_before


def test_dvc_queue_queues_every_candidate_as_an_experiment(ran_project):
    with_sweep(ran_project, CANDIDATES)
    done = sweep(ran_project, "--dvc-queue")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dvc exp run --queue -S mitigation.reweigh=true audit" in done.stdout
    assert "dvc queue start -j 2" in done.stdout
    status = run(["dvc", "queue", "status"], ran_project).stdout
    assert status.count("Queued") == len(CANDIDATES), status
