"""Real: `dvc repro` of the federation workspace and the training flow against the session's federation; MLflow SQLite.

The coordinator's pipeline end to end on real nodes: `dvc repro` of the federation workspace, and the Prefect flow.

A project copy's federation/ workspace (its own DVC project) runs federate -> track -> gate -> register against a
real SuperLink and SuperNodes on 127.0.0.1 (the session's `federation` fixture, tests/federated/conftest.py:
three sites split non-IID by workclass, and site_d whose files lack the label column). The registered version in
the workspace's MLflow store is judged by the gate, and its card names the sites, their rows and the rounds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import SAMPLE_DIR, make_project, mlflow_client, run
from tests.federated.conftest import Federation
from tests.federated.sites import SITE_ENV

SITES = ["site_a", "site_b", "site_c", "site_d"]
MODEL = "humane-federated-sample"


@pytest.fixture(scope="module")
def workspace(federation: Federation, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project copy's federation/ workspace, pointed at the local SuperLink with a short run's settings."""
    project = make_project(tmp_path_factory.mktemp("coordinator"))
    folder = project / "federation"
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["data"]["name"] = "federated-sample"
    params["federated"].update(
        site_env=str(SITE_ENV),
        sites=SITES,
        rounds=2,
        min_sites=2,
        min_group_size=10,
        round_timeout_s=120.0,
        run_timeout_s=600.0,
        superlink={
            "connection": "humane",
            "address": federation.info["address"],
            "insecure": True,
            "root_certificates": None,
        },
    )
    params["train"].update(hidden_sizes=[64, 32], lr=0.002)
    params["audit"].update(bootstrap=50, min_group_size=30)
    params["gate"].update(require_approval=False, four_eyes=False)
    params["policy"]["min"] = {"test.accuracy": 0.7, "test.roc_auc": 0.75, "federated.sites_trained": 2}
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "commit", "-qam", "federation settings for the local nodes"], project)
    assert not (folder / SAMPLE_DIR).exists()  # the coordinator's workspace holds no data file
    return folder


def test_dvc_repro_of_the_federation_workspace_registers_a_judged_version(workspace):
    result = run(["dvc", "repro"], workspace, timeout=900)  # README: cd federation && dvc repro
    for stage in ("federate", "track", "gate", "register"):
        assert f"Running stage '{stage}'" in result.stdout
    registration = json.loads((workspace / "reports/registration.json").read_text())
    decision = json.loads((workspace / "reports/decision.json").read_text())
    assert registration["model_name"] == MODEL and registration["version"] == "1"
    by_metric = {c["metric"]: c for c in decision["checks"]}
    assert by_metric["federated.sites_trained"]["value"] == 3.0 and by_metric["federated.sites_trained"]["passed"]
    assert by_metric["fairness.sex.demographic_parity_difference"]["passed"] is not None
    run_of_sites = json.loads((workspace / "reports/federation.json").read_text())
    status = {s["site"]: s for s in run_of_sites["sites"]}
    assert [status[s]["status"] for s in SITES] == ["trained", "trained", "trained", "excluded"]
    assert status["site_d"]["reason"]
    card = (workspace / "reports/model_card.md").read_text()
    for site in SITES:
        assert f"| {site} | {status[site]['status']} |" in card
    assert f"| {status['site_a']['rows']['train']} |" in card and "2 rounds of fedavg" in card
    version = mlflow_client(workspace).get_model_version(MODEL, "1")
    assert version.tags["decision"] == ("passed" if decision["passed"] else "rejected_by_policy")
    assert not list(workspace.glob("data/raw/*"))  # no row reached the coordinator's workspace


def test_the_prefect_flow_runs_the_federation_workspace(workspace, prefect_server):
    """The flow reads the workspace's dvc.yaml: federate is current (no second Flower run), the rest runs again."""
    model = (workspace / "models/model.pt").read_bytes()
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["policy"]["min"]["test.accuracy"] = 0.69  # a policy change: track, gate and register run again
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # README: cd federation && python -m flows.training
    result = run(["python", "-m", "flows.training"], workspace, check=False, timeout=900)
    assert result.returncode in (0, 3), result.stderr[-3000:]
    assert (workspace / "models/model.pt").read_bytes() == model  # federate was Skipped: DVC says it is current
    registration = json.loads((workspace / "reports/registration.json").read_text())
    assert registration["model_name"] == MODEL and registration["version"] == "2"
    tags = mlflow_client(workspace).get_run(registration["run_id"]).data.tags
    assert tags["entry_point"] == "prefect" and "site_a:trained" in tags["federated.sites"]
    decision = json.loads((workspace / "reports/decision.json").read_text())
    assert any(c["metric"] == "test.accuracy" and c["threshold"] == 0.69 for c in decision["checks"])


def test_a_run_past_its_time_is_stopped_on_the_superlink(workspace):
    """federated.run_timeout_s: the stage gives up, and the run it started is stopped, not left training."""
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["federated"]["run_timeout_s"] = 15.0  # the sites' own load and validation alone take longer
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    model = workspace / "models/model.pt"
    before = model.read_bytes() if model.exists() else None
    result = run(["python", "-m", "tasks.federate"], workspace, check=False, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "did not finish within federated.run_timeout_s (15 s)" in result.stderr
    assert "was stopped on the SuperLink" in result.stderr, result.stderr[-3000:]
    assert (model.read_bytes() if model.exists() else None) == before  # nothing written
    assert not list(workspace.glob(".federate-*"))
