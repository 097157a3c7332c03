"""Consumers verify the champion before use: a real MLflow SQLite registry and a real audit trail file.

The registry's versions stand in for what registration writes (the decision tags); the alias moves are either
humane's (recorded in the trail first) or made with MLflow's client directly, outside humane. The serving entry
points and the monitoring edge must load only a champion whose decision and sign-off verify, by its version
number, and name what is missing otherwise. The pipeline-made version of these cases is
tests/integration/test_champion_verified.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from humane.core.errors import HumaneError
from humane.core.paths import Paths
from humane.governance import serving, signoff
from humane.governance.audit_trail import FileTrail
from humane.governance.identity import local_actor
from humane.governance.registry import CHAMPION, DECISION_JSON_TAG, DECISION_TAG, PASSED, REJECTED_BY_POLICY
from humane.governance.signoff import ChampionNotVerified
from humane.monitoring.champion import MonitoringError, load_champion
from tests.conftest import ROOT

MODEL = "humane-unit"
CHECK = {"metric": "test.accuracy", "rule": "min", "threshold": 0.8, "value": 0.85}
PASSING = {
    DECISION_TAG: PASSED,
    DECISION_JSON_TAG: json.dumps({"passed": True, "checks": [{**CHECK, "passed": True}], "reasons": []}),
    "decision.basis": "basis-1",
}
FAILING = {
    DECISION_TAG: REJECTED_BY_POLICY,
    "decision.reasons": "test.accuracy 0.70 < min 0.8",
    DECISION_JSON_TAG: json.dumps({"passed": False, "checks": [{**CHECK, "value": 0.7, "passed": False}]}),
    "decision.basis": "basis-2",
}


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, str, MlflowClient]:
    """A project folder with its own SQLite registry: v1 passing, v2 passing, v3 failing; no champion yet."""
    project = tmp_path / "project"
    project.mkdir()
    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    experiment = client.create_experiment("unit", artifact_location=(project / "mlartifacts").as_uri())
    client.create_registered_model(MODEL)
    for tags in (PASSING, PASSING, FAILING):
        run = client.create_run(experiment).info.run_id  # the run whose logged figures the decision judged
        client.log_metric(run, CHECK["metric"], json.loads(tags[DECISION_JSON_TAG])["checks"][0]["value"])
        client.create_model_version(MODEL, (project / "no-model").as_uri(), run_id=run, tags=tags)
    return project, uri, client


def promote(project: Path, client: MlflowClient, version: str) -> None:
    """What registration does without a sign-off requirement: the trail's `promoted` event, then the alias."""
    trail = FileTrail(Paths(project).audit_trail)
    before = client.get_registered_model(MODEL).aliases.get(CHAMPION)
    record = client.get_model_version(MODEL, version)
    signoff.record_promotion(trail, MODEL, record, local_actor(), "unit test", before)
    client.set_registered_model_alias(MODEL, CHAMPION, version)


def test_a_promoted_champion_is_served_by_its_version_number(store):
    project, uri, client = store
    promote(project, client, "1")
    assert serving.champion_uri(MODEL, project, uri) == f"models:/{MODEL}/1"  # never @champion
    promote(project, client, "2")
    assert serving.champion_uri(MODEL, project, uri) == f"models:/{MODEL}/2"


def test_no_champion_is_an_error_not_a_model(store):
    project, uri, _ = store
    with pytest.raises(HumaneError, match="has no champion version; there is nothing to serve"):
        serving.champion_uri(MODEL, project, uri)
    with pytest.raises(MonitoringError, match="has no 'champion' version; there is nothing to monitor"):
        load_champion(uri, MODEL, project)


@pytest.mark.parametrize(
    ("move", "missing"),
    [
        # MLflow's client moves the alias onto a version whose checks failed.
        (lambda c: c.set_registered_model_alias(MODEL, CHAMPION, "3"), "v3 failed the automated checks"),
        # ... onto a passing version, with no move in the trail.
        (lambda c: c.set_registered_model_alias(MODEL, CHAMPION, "2"), "records no move of champion to v2"),
    ],
)
def test_an_alias_moved_outside_humane_is_refused_by_serving_and_monitoring(store, move, missing):
    project, uri, client = store
    promote(project, client, "1")
    move(client)
    with pytest.raises(ChampionNotVerified, match=missing):
        serving.champion_uri(MODEL, project, uri)
    with pytest.raises(ChampionNotVerified, match=missing):
        serving.load_champion(MODEL, project, uri)
    with pytest.raises(ChampionNotVerified, match=missing):
        load_champion(uri, MODEL, project)


def test_a_champion_promoted_in_another_checkout_does_not_verify_against_this_trail(store):
    project, uri, client = store
    promote(project, client, "1")
    Paths(project).audit_trail.unlink()  # this checkout's trail does not hold the move
    with pytest.raises(ChampionNotVerified, match="records no move of champion to v1"):
        serving.champion_uri(MODEL, project, uri)


def test_the_sign_off_requirement_is_read_from_the_projects_params(store):
    project, uri, client = store
    promote(project, client, "1")  # promoted without a sign-off
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["gate"]["require_approval"] = True
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ChampionNotVerified, match=r"v1 holds no approval on its current decision \(approval: none\)"):
        serving.champion_uri(MODEL, project, uri)
    assert serving.champion_uri(MODEL, project, uri, require_signoff=False) == f"models:/{MODEL}/1"
    with pytest.raises(ChampionNotVerified, match="holds no approval"):
        load_champion(uri, MODEL, project, require_signoff=True)


def test_the_command_prints_the_verified_version_or_exits_2_naming_what_is_missing(store, monkeypatch, capsys):
    project, uri, client = store
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    promote(project, client, "1")
    assert serving.main([MODEL]) == 0
    assert capsys.readouterr().out.strip() == f"models:/{MODEL}/1"
    client.set_registered_model_alias(MODEL, CHAMPION, "3")
    assert serving.main([MODEL]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "does not verify" in err and "v3 failed the automated checks" in err
    with pytest.raises(SystemExit) as usage:  # argparse: the usage line and exit 2
        serving.main([])
    assert usage.value.code == 2 and "usage:" in capsys.readouterr().err
