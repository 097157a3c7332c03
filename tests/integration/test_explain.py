"""Real: Captum, scikit-learn, DVC, MLflow SQLite store and the gate in the shared session run (a copy reruns gate).

The explain stage in the shared `dvc repro` of the sample (real Captum, scikit-learn, MLflow store, DVC, gate).

What a reviewer reads: attributions that add up, overall and per group with intervals; proxies and their share;
error cohorts; an example's reasons and counterfactual coverage; and a gate that judges explain.* figures.
"""

import json
import math

import mlflow
import yaml

from humane.governance.serving import ARTIFACT_EXPLAINER
from humane.pipeline.params import load_params
from humane.privacy.policy import protected_columns
from tests.conftest import SAMPLE_COLUMNS, mlflow_client, run, tracked_runs

PNG = b"\x89PNG\r\n\x1a\n"


def _read(project, name):
    return json.loads((project / name).read_text())


def test_the_explanations_add_up_and_name_groups_proxies_and_cohorts(repro_project):
    explanations = _read(repro_project, "reports/explanations.json")
    params = load_params(repro_project / "params.yaml")
    assert explanations["method"] == "shapley_sampling"  # the sample's MLP reads periodic embeddings
    assert explanations["completeness_gap"] <= params.explain.max_completeness_gap
    attributions = explanations["attributions"]
    inputs = {*SAMPLE_COLUMNS["numeric"], *SAMPLE_COLUMNS["categorical"]} - {"sex", "race"}
    assert sorted(attributions["columns"]) == sorted(inputs)  # one-hot and embedded columns summed back
    shares = attributions["overall"]["shares"]
    assert math.isclose(sum(v["value"] for v in shares.values()), 1.0, abs_tol=1e-9)
    for column in attributions["overall"]["top"]:
        assert shares[column]["lo"] <= shares[column]["value"] <= shares[column]["hi"], column
    assert set(attributions["groups"]) == {"sex", "race"}
    assert {"Female", "Male"} <= set(attributions["groups"]["sex"])
    proxies = explanations["proxies"]
    assert 0.5 < proxies["sex"]["auc"] <= 1 and "relationship" in proxies["sex"]["proxies"], proxies["sex"]
    cohorts = [c for c in explanations["error_analysis"]["cohorts"] if c["judged"]]  # the others: rule and size
    assert cohorts and cohorts == sorted(cohorts, key=lambda c: -c["lo"])
    assert all(c["lo"] <= c["error_rate"] <= c["hi"] and c["rows"] >= params.audit.min_group_size for c in cohorts)
    figures = _read(repro_project, "reports/explain.json")
    assert figures["proxy_auc"]["sex"] == proxies["sex"]["auc"]
    assert figures["proxy_attribution_share"]["sex"] == proxies["sex"]["attribution_share"]
    for name in explanations["plots"]:
        assert (repro_project / "reports/plots/explain" / name).read_bytes().startswith(PNG), name


def test_no_protected_column_is_a_reason_or_changes_in_a_counterfactual(repro_project):
    params = load_params(repro_project / "params.yaml")
    policy = _read(repro_project, "data/interim/privacy_policy.json")
    protected = protected_columns(params.privacy, params.data, policy).all
    assert {"age", "native-country", "sex", "race"} <= protected  # binned, rare-grouped, sensitive
    explainer = _read(repro_project, "models/explainer.json")
    assert protected <= set(explainer["excluded"])
    changeable = set(explainer["counterfactual"]["candidates"])
    assert changeable and not changeable & (protected | set(params.data.immutable))
    example = _read(repro_project, "reports/explanations.json")["example"]
    assert example["reasons"] and not set(example["reasons"]) & protected
    found = example["counterfactuals"]
    assert found["searched"] > 0 and 0 <= found["found"] <= found["searched"]
    assert found["found"] > 0 and set(found["example"]["changes"]) <= changeable


def test_the_run_records_the_figures_report_and_plots(repro_project, monkeypatch):
    (tracked,) = tracked_runs(repro_project)
    figures = _read(repro_project, "reports/explain.json")
    assert tracked.data.metrics["explain.proxy_auc.sex"] == figures["proxy_auc"]["sex"]
    assert "explain.proxy_attribution_share.race" in tracked.data.metrics
    client = mlflow_client(repro_project)
    reports = {a.path for a in client.list_artifacts(tracked.info.run_id, "reports")}
    assert {"reports/explain.json", "reports/explanations.json"} <= reports
    plots = {a.path for a in client.list_artifacts(tracked.info.run_id, "plots/explain")}
    assert "plots/explain/attribution_overall.png" in plots
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repro_project / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model(tracked.data.tags["humane.model_uri"])
    assert ARTIFACT_EXPLAINER in served.metadata.to_dict()["flavors"]["python_function"]["artifacts"]


def test_the_gate_refuses_on_a_proxy_threshold(ran_project):
    params = yaml.safe_load((ran_project / "params.yaml").read_text())
    auc = _read(ran_project, "reports/explain.json")["proxy_auc"]["sex"]
    params["policy"]["max"]["explain.proxy_auc.sex"] = round(auc - 0.01, 4)
    (ran_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro", "gate"], ran_project)
    checks = {c["metric"]: c for c in _read(ran_project, "reports/policy_checks.json")["checks"]}
    refused = checks["explain.proxy_auc.sex"]
    assert refused["passed"] is False and refused["value"] == auc, refused
    assert not _read(ran_project, "reports/policy_checks.json")["value_rules_passed"]
