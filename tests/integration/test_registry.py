"""Promotion, registry aliases, concurrent registration, the served model, and a biased dataset refused."""

import json
import os
import socket
import subprocess
import time
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.training import training
from tests.conftest import BIN, ROOT, SAMPLE_DIR, mlflow_client, run

MODEL = "humane-sample"


def _set(project, section, **values):
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _aliases(project, name=MODEL):
    return {alias: str(version) for alias, version in mlflow_client(project).get_registered_model(name).aliases.items()}


def test_first_run_promotes_and_failed_candidate_keeps_champion(ran_project):
    registration = json.loads((ran_project / "reports/registration.json").read_text())
    assert registration["promoted"] and registration["version"] == "1"
    assert _aliases(ran_project) == {"champion": "1", "challenger": "1"}
    first = json.loads((ran_project / "reports/decision.json").read_text())
    assert first["champion_version"] is None and "no champion yet" in first["notes"][0]

    _set(ran_project, "gate", min={"test.accuracy": 0.99, "test.roc_auc": 0.85})
    out = run(["dvc", "repro"], ran_project).stdout
    assert "not promoted: test.accuracy" in out
    assert _aliases(ran_project) == {"champion": "1", "challenger": "2"}
    version = mlflow_client(ran_project).get_model_version(MODEL, "2")
    assert version.tags["decision"] == "rejected" and "test.accuracy" in version.tags["decision.reasons"]
    assert version.tags["metric.test.accuracy"] and version.tags["data.md5"] and version.tags["git_commit"]
    assert version.description.startswith(f"# Model card: {MODEL} v2")
    decision = json.loads((ran_project / "reports/decision.json").read_text())
    assert {c["champion_version"] for c in decision["checks"] if c["rule"] in ("max_drop", "max_increase")} == {"1"}

    _set(ran_project, "gate", min={"test.accuracy": 0.8, "test.roc_auc": 0.85})
    run(["dvc", "repro"], ran_project)
    assert _aliases(ran_project) == {"champion": "3", "challenger": "3"}
    card = (ran_project / "reports/model_card.md").read_text()
    assert "PROMOTED to champion" in card and "| max_drop | test.accuracy |" in card
    assert "<table>" in (ran_project / "reports/model_card.html").read_text()


def test_concurrent_registrations_leave_the_registry_consistent(ran_project):
    env = {**os.environ, "PYTHONPATH": str(ran_project)}
    procs = [subprocess.Popen(["python", "-m", "tasks.register"], cwd=ran_project, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]  # fmt: skip
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    client = mlflow_client(ran_project)
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))
    assert versions == [1, 2, 3, 4]
    aliases = _aliases(ran_project)
    assert aliases["challenger"] == "4"
    assert client.get_model_version(MODEL, aliases["champion"]).tags["decision"] == "promoted"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_champion_is_a_serving_ready_pyfunc(ran_project, monkeypatch):
    uri = f"sqlite:///{ran_project / 'mlflow.db'}"
    raw = pd.read_csv(ran_project / SAMPLE_DIR / "test.csv").head(4).drop(columns=["income"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    inputs = [s.name for s in model.metadata.get_input_schema().inputs]
    assert "income" not in inputs and "age" in inputs
    local = model.predict(raw)
    assert local["probability"].between(0, 1).all() and set(local["label"]) <= {"<=50K", ">50K"}

    port = _free_port()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@champion", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=ran_project, env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise AssertionError("mlflow models serve did not come up") from None
                time.sleep(0.5)
        body = json.dumps({"dataframe_split": json.loads(raw.to_json(orient="split", index=False))}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            served = json.loads(response.read())["predictions"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert [round(r["probability"], 6) for r in served] == [round(p, 6) for p in local["probability"]]
    assert [r["label"] for r in served] == local["label"].tolist()


def _biased_frame(n, seed):
    """Income driven by sex; `role` is a near-perfect proxy for sex that the model may use."""
    rng = np.random.default_rng(seed)
    male = rng.random(n) < 0.5
    age = rng.integers(18, 80, n)
    role = np.where(rng.random(n) < 0.97, np.where(male, "field", "office"), np.where(male, "office", "field"))
    label = np.where(male, age > 30, age > 65)
    label = np.where(rng.random(n) < 0.03, ~label, label)
    return pd.DataFrame({"age": age, "hours": rng.integers(20, 60, n), "role": role,
                         "sex": np.where(male, "Male", "Female"), "race": rng.choice(["White", "Black"], n),
                         "income": np.where(label, ">50K", "<=50K")})  # fmt: skip


def test_default_policy_refuses_a_biased_model(project, prefect_server, monkeypatch):
    _biased_frame(3000, 1).to_csv(project / SAMPLE_DIR / "train.csv", index=False)
    _biased_frame(1000, 2).to_csv(project / SAMPLE_DIR / "test.csv", index=False)
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"].update(numeric=["age", "hours"], categorical=["role", "sex", "race"], ranges={})
    params["gate"] = defaults["gate"]  # the repository's default policy
    params["audit"]["min_group_size"] = defaults["audit"]["min_group_size"]
    params["register"]["model_name"] = "humane-biased"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    monkeypatch.chdir(project)
    state = training(return_state=True)
    assert state.name == "Rejected" and state.is_failed()
    assert "fairness.sex.demographic_parity_difference" in state.message
    assert "test.accuracy" not in state.message and "test.roc_auc" not in state.message
    fairness = json.loads((project / "reports/fairness.json").read_text())
    assert fairness["sex"]["demographic_parity_difference"] > 0.3
    assert "champion" not in _aliases(project, "humane-biased")
    assert _aliases(project, "humane-biased") == {"challenger": "1"}

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    by_key = {a.key: a for a in artifacts}
    assert "not promoted" in by_key["promotion-decision"].data
    assert by_key["bias-audit-groups"].type == "table"


@pytest.fixture(autouse=True)
def _no_tracking_uri_leak(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
