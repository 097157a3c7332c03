"""Real: the shared session run's MLflow SQLite registry and audit trail; monitoring, sweep flows on a Prefect server.

Consumers verify the champion before use, on the session's real pipeline run (MLflow SQLite store, audit trail).

The pipeline promoted v1 (gate.require_approval off) and recorded the move in audit/signoff.jsonl. Moving the
alias outside humane (MLflow's own client, as the UI's edit pencil or a script would), putting it back after a
recorded rollback, or asking for a sign-off the champion never had: the monitoring flow, the serving entry points
and the sweep each refuse it (exit 2), naming what is missing, and write nothing. The normally promoted champion
is still served and monitored, by its version number.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from humane.core.io import read_json
from humane.core.paths import Paths
from humane.data.datasets import read_adult
from humane.governance import approvals, serving
from humane.governance.audit_trail import FileTrail
from humane.governance.registry import CHAMPION, DECISION_JSON_TAG, DECISION_TAG, REJECTED_BY_POLICY
from humane.governance.signoff import ChampionNotVerified
from humane.governance.store import using_tracking_uri
from humane.monitoring import demo
from tests.conftest import ROOT, mlflow_client

MODEL = "humane-sample"
BATCH = "data/batches/in_distribution.csv"
WHEN = "2026-05-01T06:00:00+00:00"
MONITORING_EXPERIMENT = f"{MODEL}-monitoring"


@pytest.fixture
def project(ran_project: Path) -> Path:
    """The private copy of the pipeline run, with a production batch written."""
    params = yaml.safe_load((ran_project / "params.yaml").read_text())
    params["monitor"]["max_out_of_domain_share"] = 0.2  # the sample model saw few countries (test_monitoring.py)
    (ran_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (ran_project / BATCH).parent.mkdir(parents=True)
    batch = demo.make_batches(read_adult(ROOT / demo.TEST_FILE), 600, 0)["in_distribution"]
    batch.to_csv(ran_project / BATCH, index=False)
    return ran_project


def _command(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(project)},
    )


def _monitoring_runs(project: Path) -> list:
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name(MONITORING_EXPERIMENT)
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def _champion(client: MlflowClient) -> str | None:
    return client.get_registered_model(MODEL).aliases.get(CHAMPION)


def _copy_of_v1(client: MlflowClient, **tags: str) -> str:
    """A second version of v1's model, with v1's tags (a passing decision) or the ones given: registered by hand."""
    v1 = client.get_model_version(MODEL, "1")
    with using_tracking_uri(client.tracking_uri):  # MLflow resolves a logged model's source with the global store
        return client.create_model_version(MODEL, v1.source, v1.run_id, tags={**v1.tags, **tags}).version


def _onto_a_failed_version(project: Path, client: MlflowClient) -> str:
    failed = '{"passed": false, "checks": [{"metric": "test.accuracy", "passed": false}]}'
    verdict = {DECISION_TAG: REJECTED_BY_POLICY, DECISION_JSON_TAG: failed, "decision.reasons": "accuracy < 0.8"}
    version = _copy_of_v1(client, **verdict)
    client.set_registered_model_alias(MODEL, CHAMPION, version)
    return f"v{version} failed the automated checks"


def _onto_a_passing_version_without_a_trail_move(project: Path, client: MlflowClient) -> str:
    version = _copy_of_v1(client)
    client.set_registered_model_alias(MODEL, CHAMPION, version)
    return f"records no move of champion to v{version}"


def _back_after_a_recorded_rollback(project: Path, client: MlflowClient) -> str:
    uri = f"sqlite:///{project / 'mlflow.db'}"
    approvals.submit_rollback(uri, project, MODEL, None, "pulled from production by the tests")
    assert _champion(client) is None
    client.set_registered_model_alias(MODEL, CHAMPION, "1")  # put back by hand
    return "records no move of champion to v1"


def _sign_off_now_required(project: Path, client: MlflowClient) -> str:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["gate"]["require_approval"] = True
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return "v1 holds no approval on its current decision (approval: none)"


UNVERIFIED: dict[str, Callable[[Path, MlflowClient], str]] = {
    "moved-onto-a-failed-version": _onto_a_failed_version,
    "moved-onto-a-passing-version-without-a-trail-move": _onto_a_passing_version_without_a_trail_move,
    "put-back-after-a-recorded-rollback": _back_after_a_recorded_rollback,
    "sign-off-required-but-never-given": _sign_off_now_required,
}


def test_the_pipelines_champion_verifies_and_is_served_and_monitored_by_its_version(project, prefect_server):
    (move,) = [e for e in FileTrail(Paths(project).audit_trail).read() if e["event"] == "promoted"]
    assert move["model"] == MODEL and move["champion_after"] == "1" and move["champion_before"] is None

    served = _command(project, "-m", "humane.governance.serving", MODEL)
    assert served.returncode == 0, served.stderr[-3000:]
    assert served.stdout.strip() == f"models:/{MODEL}/1"  # the version, never the alias
    model = serving.load_champion(MODEL, project)
    rows = pd.read_parquet(project / "data/interim/test.parquet").head(3).drop(columns=["income"])
    assert len(model.predict(serving.as_request(rows, model.metadata.get_input_schema()))) == 3

    monitored = _command(project, "-m", "flows.monitoring", BATCH, WHEN)
    assert monitored.returncode == 0, monitored.stderr[-3000:]
    (run,) = _monitoring_runs(project)
    assert run.data.tags["humane.model_version"] == "1"


@pytest.mark.parametrize("case", list(UNVERIFIED))
def test_an_unverified_champion_is_refused_by_monitoring_and_serving(project, prefect_server, case):
    client = mlflow_client(project)
    missing = UNVERIFIED[case](project, client)
    champion = _champion(client)

    monitored = _command(project, "-m", "flows.monitoring", BATCH, WHEN)
    assert monitored.returncode == 2, monitored.stderr[-3000:]
    assert f"champion {MODEL} v{champion} does not verify" in monitored.stderr and missing in monitored.stderr
    assert _monitoring_runs(project) == [] and not (project / "reports/monitoring/in_distribution").exists()

    served = _command(project, "-m", "humane.governance.serving", MODEL)
    assert served.returncode == 2 and served.stdout == "", served.stderr[-3000:]
    assert missing in served.stderr
    with pytest.raises(ChampionNotVerified, match=missing.replace("(", r"\(").replace(")", r"\)")):
        serving.load_champion(MODEL, project)
    assert _champion(client) == champion  # refusing never moves an alias


def test_the_sweep_refuses_an_unverified_champion_before_training_anything(project, prefect_server):
    client = mlflow_client(project)
    missing = _onto_a_passing_version_without_a_trail_move(project, client)
    versions = len(client.search_model_versions(f"name = '{MODEL}'"))

    swept = _command(project, "-m", "flows.sweep")
    assert swept.returncode == 2, swept.stderr[-3000:]
    assert "does not verify" in swept.stderr and missing in swept.stderr
    assert not (project / "reports/sweep").exists()  # nothing trained, nothing recorded
    experiment = client.get_experiment_by_name(read_json(project / "reports/mlflow_run.json")["experiment"])
    assert client.search_runs([experiment.experiment_id], "tags.`humane.sweep` = 'true'") == []
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == versions
