"""Real: the monitoring flow on a Prefect server against the shared run's registered champion (MLflow SQLite store).

The monitoring flow on a real registered champion (the session's sample run), a real Prefect server and MLflow.

One flow run per scenario, on 600-row batches drawn from Adult's held-out file by the demo generator.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flows.monitoring import exit_status, monitoring, run_error
from humane.core.errors import IntegrityFailed, ServerUnavailable
from humane.core.io import read_json
from humane.core.paths import LABEL_COLUMN, SENSITIVE_PREFIX
from humane.data.datasets import read_adult
from humane.monitoring import demo
from humane.monitoring.champion import MonitoringError
from humane.monitoring.reference import DECISION_COLUMN, PROBABILITY_COLUMN, REFERENCE_ARTIFACT
from tests.conftest import ROOT, _free_port, _relocate_store, mlflow_client

MODEL, EXPERIMENT = "humane-sample", "humane-sample-monitoring"
ROWS = 600
WHEN = "2026-05-01T06:00:00+00:00"


@pytest.fixture(scope="module")
def monitored(repro_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's sample project (champion v1 registered), with the demo batches written."""
    dest = tmp_path_factory.mktemp("monitoring") / "project"
    shutil.copytree(repro_project, dest, symlinks=True)
    _relocate_store(dest / "mlflow.db", str(repro_project), str(dest))
    params = yaml.safe_load((dest / "params.yaml").read_text())
    # The sample's model knows the countries of 3,000 training rows only: a few percent of any Adult batch holds
    # one it never saw. The domain share is judged in tests/unit; here it must not mask the other alerts.
    params["monitor"]["max_out_of_domain_share"] = 0.2
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    batches = dest / "data/batches"
    batches.mkdir(parents=True)
    for name, frame in demo.make_batches(read_adult(ROOT / demo.TEST_FILE), ROWS, 0).items():
        frame.to_csv(batches / f"{name}.csv", index=False)
    return dest


def _champion(project: Path) -> str:
    return str(mlflow_client(project).get_model_version_by_alias(MODEL, "champion").version)


def _monitoring_runs(project: Path) -> list:
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def _run(project: Path, batch: str, monkeypatch: pytest.MonkeyPatch, when: str | None = WHEN):
    monkeypatch.chdir(project)
    before = _champion(project)
    state = monitoring(batch=batch, batch_time=when, return_state=True)
    assert _champion(project) == before  # a monitoring run never moves an alias
    return state


def test_the_champion_s_reference_holds_masked_inputs_groups_label_and_scores_only(monitored):
    client = mlflow_client(monitored)
    version = client.get_model_version_by_alias(MODEL, "champion")
    path = client.download_artifacts(version.run_id, REFERENCE_ARTIFACT, str(monitored / "tmp-reference"))
    reference = pd.read_parquet(path)
    test = pd.read_parquet(monitored / "data/interim/test.parquet")
    inputs = [
        "age",
        "education-num",
        "capital-gain",
        "capital-loss",
        "hours-per-week",
        "workclass",
        "education",
        "marital-status",
        "occupation",
        "relationship",
        "native-country",
    ]
    assert sorted(reference.columns) == sorted(
        [
            *inputs,
            f"{SENSITIVE_PREFIX}sex",
            f"{SENSITIVE_PREFIX}race",
            LABEL_COLUMN,
            PROBABILITY_COLUMN,
            DECISION_COLUMN,
        ]
    )
    assert len(reference) == len(test) and "fnlwgt" not in reference and "income" not in reference
    edges = read_json(monitored / "data/interim/privacy_policy.json")["bins"]["age"]
    assert set(reference["age"]) <= set(edges)  # ages as the policy binned them, never the raw ones
    assert reference[PROBABILITY_COLUMN].between(0, 1).all() and set(reference[DECISION_COLUMN]) <= {0, 1}


def test_an_in_distribution_batch_completes_with_no_alert_and_is_recorded(monitored, prefect_server, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    state = _run(monitored, "data/batches/in_distribution.csv", monkeypatch)
    assert state.name == "Completed", state.message
    report = read_json(monitored / "reports/monitoring/in_distribution/report.json")
    assert report["breaches"] == [] and report["labeled_rows"] == ROWS
    assert not any(d["drifted"] for d in report["drift"].values())
    attribution = report["attribution_drift"]  # measured on the batch's rows, no input's share moved
    assert attribution["measured"] and attribution["rows"] == ROWS and attribution["columns"]
    assert not any(row["drifted"] for row in attribution["columns"].values())
    assert report["performance"]["realised"]["accuracy"]["lo"] is not None  # the audit's bootstrap interval
    assert "equalized_odds_difference" in report["groups"]["sex"]["gaps"]
    assert (monitored / "reports/monitoring/in_distribution/report.html").read_text().count("<img") == 3
    (run,) = _monitoring_runs(monitored)
    assert run.data.tags["humane.model"] == MODEL and run.data.tags["humane.model_version"] == _champion(monitored)
    (point,) = mlflow_client(monitored).get_metric_history(run.info.run_id, "drift.age")
    assert point.step == int(pd.Timestamp(WHEN).timestamp())  # plotted over batches by their time
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    assert {a.type for a in artifacts} == {"markdown", "table"}


def test_a_shifted_unlabeled_batch_flags_the_shifted_features_only(monitored, prefect_server, monkeypatch):
    state = _run(monitored, "data/batches/shifted.csv", monkeypatch)
    assert state.name == "DriftDetected", state.message
    report = read_json(monitored / "reports/monitoring/shifted/report.json")
    drifted = {f for f, d in report["drift"].items() if d["drifted"] and f != "prediction"}
    assert drifted == {"age", "hours-per-week"}
    assert "age jensen_shannon" in state.message and "hours-per-week jensen_shannon" in state.message
    assert "occupation" not in state.message
    # Unlabeled: the DP gap is measured, the label metrics are skipped and said so; performance is estimated.
    assert set(report["groups"]["sex"]["gaps"]) == {"demographic_parity_difference", "demographic_parity_ratio"}
    assert report["performance"]["realised"] is None and report["performance"]["estimated"]["accuracy"]["value"]
    assert any("has no label column" in note for note in report["notes"])


def test_the_bias_batch_raises_bias_degraded_naming_the_group(monitored, prefect_server):
    before = _champion(monitored)
    result = subprocess.run(
        [sys.executable, "-m", "flows.monitoring", "data/batches/bias.csv", WHEN],
        cwd=monitored,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(monitored)},
    )
    assert result.returncode == 3, result.stderr[-3000:]
    assert "BiasDegraded" in result.stderr and "sex equalized_odds_difference" in result.stderr
    assert "tpr: Female" in result.stderr
    assert _champion(monitored) == before


def test_a_batch_whose_top_input_holds_one_value_shows_attribution_drift_naming_it(
    monitored, prefect_server, monkeypatch, tmp_path
):
    """The champion's top input set, in every row, to its reference value: no row's decision owes anything to it.

    The value is the training rows' median (numeric) or commonest value (categorical), where the explainer's
    reference row sits, so the input's attribution, and its share, fall to zero.
    """
    client = mlflow_client(monitored)
    run_id = client.get_model_version_by_alias(MODEL, "champion").run_id
    explanations = read_json(Path(client.download_artifacts(run_id, "reports/explanations.json", str(tmp_path))))
    top = explanations["attributions"]["overall"]["top"][0]
    before = explanations["attributions"]["overall"]["shares"][top]["value"]
    train = pd.read_parquet(monitored / "data/interim/train.parquet")[top]
    value = train.median() if pd.api.types.is_numeric_dtype(train) else train.mode().iloc[0]
    frame = pd.read_csv(monitored / "data/batches/in_distribution.csv").assign(**{top: value})
    frame.to_csv(monitored / "data/batches/top_input_fixed.csv", index=False)
    state = _run(monitored, "data/batches/top_input_fixed.csv", monkeypatch)
    assert state.name == "DriftDetected", state.message
    row = read_json(monitored / "reports/monitoring/top_input_fixed/report.json")["attribution_drift"]["columns"][top]
    assert row["drifted"] and row["batch"] < 0.01 and row["reference"] == pytest.approx(before)
    assert "attribution drifted: " in state.message and f"{top} {before:.3f} -> 0.0" in state.message
    html = (monitored / "reports/monitoring/top_input_fixed/report.html").read_text()
    assert "<h2>Attribution drift</h2>" in html and f"<td>{top}</td>" in html


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda f: f.drop(columns=["occupation"]), "columns ['occupation'] are missing"),
        (lambda f: f.assign(age="old"), "column 'age': the model reads numbers"),
        (lambda f: f.iloc[:0], "file has a header but no rows"),
    ],
)
def test_a_malformed_batch_fails_clearly_and_changes_nothing(monitored, prefect_server, monkeypatch, change, expected):
    frame = pd.read_csv(monitored / "data/batches/in_distribution.csv")
    path = monitored / "data/batches/malformed.csv"
    change(frame).to_csv(path, index=False)
    runs = len(_monitoring_runs(monitored))
    state = _run(monitored, str(path), monkeypatch)
    assert state.is_failed() and state.name == "Failed"
    assert str(path) in state.message and expected in state.message, state.message
    assert not (monitored / "reports/monitoring/malformed").exists()
    assert len(_monitoring_runs(monitored)) == runs


def test_a_champion_without_its_reference_is_a_clear_error(monitored, prefect_server, monkeypatch):
    version = mlflow_client(monitored).get_model_version_by_alias(MODEL, "champion")
    (stored,) = (monitored / "mlartifacts").rglob(f"{version.run_id}/artifacts/{REFERENCE_ARTIFACT}")
    moved = stored.with_name("moved.parquet")
    stored.rename(moved)
    try:
        runs = len(_monitoring_runs(monitored))
        state = _run(monitored, "data/batches/in_distribution.csv", monkeypatch)
        assert state.is_failed() and f"holds no {REFERENCE_ARTIFACT}" in state.message, state.message
        assert isinstance(run_error(state), MonitoringError) and exit_status(state) == 2
        assert len(_monitoring_runs(monitored)) == runs
    finally:
        moved.rename(stored)


def test_a_champion_artifact_store_that_does_not_answer_is_server_unavailable(monitored, prefect_server, monkeypatch):
    """The champion's run keeps its artifacts on a server that is down (a closed port): exit 10, never "holds no"."""
    run_id = mlflow_client(monitored).get_model_version_by_alias(MODEL, "champion").run_id
    port = _free_port()  # nothing listens there
    monkeypatch.setenv("HUMANE_SERVER_RETRY_S", "4")  # the smallest retry budget: the test waits seconds, not 30
    with sqlite3.connect(monitored / "mlflow.db") as db:
        (saved,) = db.execute("SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        db.execute("UPDATE runs SET artifact_uri = ? WHERE run_uuid = ?", (f"http://127.0.0.1:{port}/a", run_id))
    try:
        runs = len(_monitoring_runs(monitored))
        state = _run(monitored, "data/batches/in_distribution.csv", monkeypatch)
    finally:
        with sqlite3.connect(monitored / "mlflow.db") as db:
            db.execute("UPDATE runs SET artifact_uri = ? WHERE run_uuid = ?", (saved, run_id))
    err = run_error(state)
    assert isinstance(err, ServerUnavailable) and exit_status(state) == 10, state.message
    assert f"http://127.0.0.1:{port}" in str(err) and REFERENCE_ARTIFACT in str(err), str(err)
    assert "holds no" not in str(err) and "tracked before monitoring" not in str(err)
    assert len(_monitoring_runs(monitored)) == runs
    assert not (monitored / "reports/monitoring/in_distribution.tmp").exists()


def test_a_champion_whose_registered_files_changed_is_refused_before_it_is_loaded(
    monitored, prefect_server, monkeypatch
):
    """The served code changed in the artifact store after registration: exit 12 naming it; nothing of it runs."""
    version = mlflow_client(monitored).get_model_version_by_alias(MODEL, "champion")
    model_id = version.source.removeprefix("models:/")
    (stored,) = (monitored / "mlartifacts").rglob(f"{model_id}/artifacts/served_model.py")
    saved = stored.read_text()
    stored.write_text(saved + "\nraise SystemExit('the tampered code ran')\n")
    try:
        runs = len(_monitoring_runs(monitored))
        state = _run(monitored, "data/batches/in_distribution.csv", monkeypatch)
    finally:
        stored.write_text(saved)
    err = run_error(state)
    assert isinstance(err, IntegrityFailed) and exit_status(state) == 12, state.message
    assert "served_model.py changed after registration" in str(err), str(err)
    assert len(_monitoring_runs(monitored)) == runs


def test_a_breach_listed_in_retrain_on_starts_the_training_deployment(monitored, prefect_server, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:  # a training deployment on the session's server (no worker needed)
        flow_id = client.create_flow_from_name("training")
        deployment = client.create_deployment(
            flow_id=flow_id, name="retrain-test", entrypoint="flows/training.py:training"
        )
    saved = (monitored / "params.yaml").read_text()
    params = yaml.safe_load(saved)
    params["monitor"].update(retrain_on=["DriftDetected"], training_deployment="training/retrain-test")
    (monitored / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        state = _run(monitored, "data/batches/shifted.csv", monkeypatch)
    finally:
        (monitored / "params.yaml").write_text(saved)
    assert state.name == "DriftDetected" and "training deployment 'training/retrain-test' started" in state.message
    with get_client(sync_client=True) as client:
        (started,) = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment])))
    assert set(started.tags) >= {"monitoring", "DriftDetected"}
    # The monitoring run only asked for training: the new candidate faces the gate, the champion did not move.
    assert started.state.is_scheduled()
