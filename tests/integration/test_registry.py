"""Real: `dvc repro`, the training flow, three registering processes, `mlflow models serve`; copies of the shared run.

Promotion, registry aliases, concurrent registration, the served model, and a biased dataset refused."""

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.training import training
from humane.governance.serving import as_request, load_champion
from tests.conftest import BIN, ROOT, SAMPLE_DIR, mlflow_client, run, tracked_runs

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

    _set(ran_project, "policy", min={"test.accuracy": 0.99, "test.roc_auc": 0.85})
    out = run(["dvc", "repro"], ran_project).stdout
    assert "not promoted: test.accuracy" in out
    assert json.loads((ran_project / "reports/policy_checks.json").read_text())["value_rules_passed"] is False
    assert _aliases(ran_project) == {"champion": "1", "challenger": "2"}
    version = mlflow_client(ran_project).get_model_version(MODEL, "2")
    assert version.tags["decision"] == "rejected" and "test.accuracy" in version.tags["decision.reasons"]
    assert version.tags["metric.test.accuracy"] and version.tags["data.md5"] and version.tags["git_commit"]
    assert version.description.startswith(f"# Model card: {MODEL} v2")
    decision = json.loads((ran_project / "reports/decision.json").read_text())
    assert {c["champion_version"] for c in decision["checks"] if c["rule"] in ("max_drop", "max_increase")} == {"1"}

    _set(ran_project, "policy", min={"test.accuracy": 0.79, "test.roc_auc": 0.85})  # a new run (not the first's params)
    run(["dvc", "repro"], ran_project)
    assert _aliases(ran_project) == {"champion": "3", "challenger": "3"}
    card = (ran_project / "reports/model_card.md").read_text()
    assert "PROMOTED to champion" in card and "| max_drop | test.accuracy |" in card
    assert "<table>" in (ran_project / "reports/model_card.html").read_text()


RACER = """
import sys, time
from pathlib import Path
from contextlib import nullcontext
from humane.core.context import RunContext
from humane.pipeline.params import load_params
from humane.core.paths import Paths
from humane.governance import promotion
from humane.governance.tracking import log_run

project, workspace, barrier = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[4])
key, locked = sys.argv[3], sys.argv[5]
if locked == "unlocked":  # what registration would be without the lock: the proof that the test below bites
    promotion.promotion_lock = lambda uri: nullcontext()
    read_champion, waited = promotion.current_champion, []

    def read_then_wait(*args, **kwargs):
        # The interleaving the lock forbids, forced rather than hoped for: all three read the champion first.
        champion = read_champion(*args, **kwargs)
        if not waited:
            waited.append(barrier.with_name(barrier.name.replace("ready-", "read-")))
            waited[0].touch()
            while len(list(barrier.parent.glob("read-*"))) < 3:
                time.sleep(0.01)
        return champion

    promotion.current_champion = read_then_wait
params, paths = load_params(Paths(workspace).params), Paths(workspace)
ctx = RunContext(project, flow_run_id=key)  # a distinct pipeline run: its own MLflow run and registry version
log_run(paths, params.data.experiment, params.evaluate.threshold, params.data.sensitive_features, ctx)
barrier.touch()
while len(list(barrier.parent.glob("ready-*"))) < 3:  # all three enter registration together
    time.sleep(0.01)
promotion.register(params, paths, ctx)
"""


def _race(project, tmp_path, locked):
    """Three pipeline runs registering at the same moment; the decisions each version recorded."""
    procs = []
    for i in range(3):
        workspace = tmp_path / f"ws{i}"
        shutil.copytree(project, workspace, symlinks=True, ignore=shutil.ignore_patterns("mlflow.db*", "mlartifacts"))
        procs.append(
            subprocess.Popen(
                [
                    "python",
                    "-c",
                    RACER,
                    str(project),
                    str(workspace),
                    f"race-{locked}-{i}",
                    str(tmp_path / f"ready-{i}"),
                    locked,
                ],
                cwd=project,
                env={**os.environ, "PYTHONPATH": str(project)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    client = mlflow_client(project)
    versions = sorted(client.search_model_versions(f"name = '{MODEL}'"), key=lambda v: int(v.version))
    return {v.version: json.loads(v.tags["decision.json"]) for v in versions[1:]}, _aliases(project)


def _is_a_chain(decisions, aliases):
    """Each promotion was judged against the champion it replaced: v1 → a → b → c, never two against one."""
    promoted = {v: d["champion_version"] for v, d in decisions.items() if d["passed"]}
    compared = sorted(promoted.values())
    return len(set(compared)) == len(compared) and aliases["champion"] not in promoted.values()


def test_concurrent_registrations_judge_each_candidate_against_the_champion_it_replaces(ran_project, tmp_path):
    decisions, aliases = _race(ran_project, tmp_path, "locked")
    assert len(decisions) == 3 and all(d["passed"] for d in decisions.values())  # same model: each promotes
    assert _is_a_chain(decisions, aliases), decisions
    assert {d["champion_version"] for d in decisions.values()} | {aliases["champion"]} == {"1", "2", "3", "4"}


def test_without_the_lock_the_race_check_fails(ran_project, tmp_path):
    decisions, aliases = _race(ran_project, tmp_path, "unlocked")
    assert not _is_a_chain(decisions, aliases), decisions  # several candidates judged against the same champion
    assert {d["champion_version"] for d in decisions.values()} == {"1"}  # all three read v1 before any moved it


def test_a_registry_error_fails_closed(ran_project):
    """A store that cannot answer is not "no champion": nothing is registered and no alias moves."""
    versions_before = len(mlflow_client(ran_project).search_model_versions(f"name = '{MODEL}'"))
    aliases_before = _aliases(ran_project)
    _set(ran_project, "policy", min={"test.accuracy": 0.5, "test.roc_auc": 0.5})  # a policy that would promote
    db = sqlite3.connect(ran_project / "mlflow.db")
    db.execute("ALTER TABLE registered_model_aliases RENAME TO broken_aliases")  # the registry breaks
    db.commit()
    result = run(["dvc", "repro"], ran_project, check=False)
    db.execute("ALTER TABLE broken_aliases RENAME TO registered_model_aliases")
    db.commit()
    db.close()
    assert result.returncode != 0
    assert f"error: registry: cannot read model '{MODEL}'" in result.stderr
    assert "python -m tasks.register, exited with 2" in result.stderr  # a user-facing error, not a crash
    assert len(mlflow_client(ran_project).search_model_versions(f"name = '{MODEL}'")) == versions_before
    assert _aliases(ran_project) == aliases_before


def test_a_champion_re_registered_under_a_stricter_policy_gives_the_alias_back(ran_project):
    """Registering the same run again after the policy changed: judged again (never against itself), and refused."""
    assert _aliases(ran_project) == {"champion": "1", "challenger": "1"}
    _set(ran_project, "policy", min={"test.accuracy": 0.99, "test.roc_auc": 0.85})
    run(["python", "-m", "tasks.register"], ran_project)  # as `dvc repro -s register` after editing the policy
    decision = json.loads((ran_project / "reports/decision.json").read_text())
    assert not decision["passed"] and decision["champion_version"] is None  # not compared with v1 itself
    assert any("test.accuracy" in r for r in decision["reasons"])
    assert _aliases(ran_project) == {"challenger": "1"}  # no champion rather than a refused one
    version = mlflow_client(ran_project).get_model_version(MODEL, "1")
    assert version.tags["decision"] == "rejected" and json.loads(version.tags["decision.json"]) == decision


def test_retried_track_and_register_do_not_record_twice(ran_project):
    client = mlflow_client(ran_project)
    (first,) = tracked_runs(ran_project)
    before = json.loads((ran_project / "reports/registration.json").read_text())
    # A retry of the same pipeline run (same inputs): the run and the version are found, not made again.
    run(["python", "-m", "tasks.track"], ran_project)
    run(["python", "-m", "tasks.register"], ran_project)
    assert [r.info.run_id for r in tracked_runs(ran_project)] == [first.info.run_id]
    assert json.loads((ran_project / "reports/registration.json").read_text()) == before
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1
    # An attempt that died half-way (no completion tag) is replaced, not kept beside the new run.
    client.delete_tag(first.info.run_id, "humane.complete")
    run(["python", "-m", "tasks.track"], ran_project)
    (again,) = tracked_runs(ran_project)
    assert again.info.run_id != first.info.run_id
    assert again.data.tags["humane.run_key"] == first.data.tags["humane.run_key"]
    assert client.get_run(first.info.run_id).info.lifecycle_stage == "deleted"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_champion_is_a_serving_ready_pyfunc(ran_project, monkeypatch, tmp_path):
    uri = f"sqlite:///{ran_project / 'mlflow.db'}"
    raw = pd.read_csv(ran_project / SAMPLE_DIR / "test.csv").head(12).drop(columns=["income"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(ran_project)
    # docs/how-to/serving.md: the champion verified against the audit trail, loaded and served by its version number.
    model = load_champion(MODEL)
    inputs = [s.name for s in model.metadata.get_input_schema().inputs]
    assert "income" not in inputs and "age" in inputs
    # A Python client casts integer columns to the signature's doubles (MLflow refuses int64 there; JSON is cast).
    local = model.predict(as_request(raw, model.metadata.get_input_schema()))
    assert local["probability"].between(0, 1).all() and set(local["label"]) <= {"<=50K", ">50K"}
    assert local["out_of_domain"].dtype == bool and local["domain_rules"].map(type).eq(str).all()

    assert run(["python", "-m", "humane.governance.serving", MODEL], ran_project).stdout.strip() == f"models:/{MODEL}/1"
    files = tmp_path / "served"  # the champion's files, checked against the manifest recorded at registration
    verified = run(["python", "-m", "humane.governance.serving", MODEL, "--files", str(files)], ran_project)
    assert verified.stdout.strip() == str(files) and (files / "MLmodel").exists()
    verified = str(files)
    port = _free_port()
    server = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            verified,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ran_project,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            served = json.loads(response.read())["predictions"]
        # docs/how-to/serving.md's request with reasons and counterfactuals.
        asked = json.loads(body) | {"params": {"reasons": 3, "counterfactual": True}}
        request = urllib.request.Request(request.full_url, json.dumps(asked).encode(), request.headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            explained = json.loads(response.read())["predictions"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert [round(r["probability"], 6) for r in served] == [round(p, 6) for p in local["probability"]]
    assert [r["label"] for r in served] == local["label"].tolist()
    assert [r["domain_rules"] for r in served] == local["domain_rules"].tolist()
    # With reasons and counterfactuals asked for: the same decisions, at most three reasons per row and never a
    # protected input (age is binned, native-country rare-grouped, sex and race sensitive); a refused row's
    # counterfactual changes only inputs that may change (not protected, not in data.immutable).
    assert [r["label"] for r in explained] == local["label"].tolist()
    protected = {"age", "native-country", "sex", "race"}
    immutable = protected | {"marital-status", "relationship", "education"}
    for row in explained:
        reasons = [r for r in row["reasons"].split("; ") if r]
        assert len(reasons) <= 3 and not set(reasons) & protected, row
        if row["counterfactual"]:
            assert row["decision"] == 0 and not set(json.loads(row["counterfactual"])["changes"]) & immutable, row
    assert any(row["reasons"] for row in explained) and any(row["counterfactual"] for row in explained)


NO_PICKLE = """
import pickle, sys
def refuse(*args, **kwargs):
    raise RuntimeError("pickle used")
pickle.load = pickle.loads = refuse
pickle.Unpickler = refuse  # torch.load(weights_only=True) has its own restricted unpickler; plain torch.load fails
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
import json
rows = pd.read_csv(sys.argv[2]).head(3).drop(columns=["income"])
rows = rows.astype({c: float for c in rows.select_dtypes("integer").columns})  # the signature's doubles
print(json.dumps(model.predict(rows)["label"].tolist()))
"""


def test_the_registered_model_loads_without_unpickling_anything(ran_project, tmp_path, monkeypatch):
    uri = f"sqlite:///{ran_project / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    local = mlflow.artifacts.download_artifacts(f"models:/{MODEL}/1", dst_path=str(tmp_path))
    files = {p.name for p in Path(local).rglob("*") if p.is_file()}
    assert "python_model.pkl" not in files and not any(f.endswith((".pkl", ".joblib")) for f in files), files
    assert {"served_model.py", "preprocessor.skops", "model.pt", "privacy_policy.json", "domain.json"} <= files
    result = subprocess.run(
        ["python", "-c", NO_PICKLE, f"models:/{MODEL}@champion", str(ran_project / SAMPLE_DIR / "test.csv")],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(json.loads(result.stdout.strip().splitlines()[-1])) <= {"<=50K", ">50K"}


def _biased_frame(n, seed):
    """Income driven by sex; `role` is a near-perfect proxy for sex that the model may use."""
    rng = np.random.default_rng(seed)
    male = rng.random(n) < 0.5
    age = rng.integers(18, 80, n)
    role = np.where(rng.random(n) < 0.97, np.where(male, "field", "office"), np.where(male, "office", "field"))
    label = np.where(male, age > 30, age > 65)
    label = np.where(rng.random(n) < 0.03, ~label, label)
    return pd.DataFrame(
        {
            "age": age,
            "hours": rng.integers(20, 60, n),
            "role": role,
            "sex": np.where(male, "Male", "Female"),
            "race": rng.choice(["White", "Black"], n),
            "income": np.where(label, ">50K", "<=50K"),
        }
    )


def test_default_policy_refuses_a_biased_model(project, prefect_server, monkeypatch):
    _biased_frame(3000, 1).to_csv(project / SAMPLE_DIR / "train.csv", index=False)
    _biased_frame(1000, 2).to_csv(project / SAMPLE_DIR / "test.csv", index=False)
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = yaml.safe_load((project / "params.yaml").read_text())
    # Five coarse columns, age binned by the privacy policy: different people share every value (71% of the test
    # rows equal a training row), so the shared-rows limit is raised on purpose, as a profile would for such data.
    leakage = {"max_shared_fraction": 0.9, "max_feature_auc": 0.95}
    params["data"].update(numeric=["age", "hours"], categorical=["role", "sex", "race"], ranges={}, leakage=leakage)
    params["data"]["immutable"] = ["age"]  # the profile's own (Adult's columns are not in this data)
    params["gate"], params["policy"] = defaults["gate"], defaults["policy"]  # the repository's default policy
    params["audit"]["min_group_size"] = defaults["audit"]["min_group_size"]
    params["data"]["name"] = "biased"
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
    explanations = json.loads((project / "reports/explanations.json").read_text())
    assert explanations["proxies"]["sex"]["proxies"] == ["role"]  # the planted stand-in, named

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
