"""Real: `dvc repro` of a fresh project copy on the built-in German credit data (GX, PyTorch, MLflow SQLite store).

The built-in German credit data end to end, with only its profile chosen: its own names, its own policy.

Its remedy is Adult's, copied as a new user would (per-group equalized-odds thresholds, here on sex): on German's
200 test rows it only costs accuracy, and the gate refuses it for that, naming the sweep to run instead.
"""

import json
import shutil

import yaml

from tests.conftest import ROOT, mlflow_client, run


def test_german_runs_end_to_end_under_its_own_profile(project):
    shutil.copytree(ROOT / "data/raw/german", project / "data/raw/german")
    run(["python", "-m", "humane.pipeline.profiles", "use", "profiles/german.yaml"], project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["mitigation"]["thresholds"] = "equalized_odds"  # Adult's remedy, copied
    params["gate"]["dominated_by"] = ["unmitigated", "logreg"]  # params.yaml's rule (the sample's runs drop logreg)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "commit", "-qam", "german profile, with Adult's remedy"], project)

    out = run(["dvc", "repro"], project)
    meta = json.loads((project / "data/interim/meta.json").read_text())
    assert meta["rows"] == {"train": 800, "test": 200}
    audit = json.loads((project / "reports/audit.json").read_text())
    assert [f["feature"] for f in audit["features"]] == ["sex"]
    assert {g["group"] for g in audit["features"][0]["groups"]} == {"female", "male"}
    registration = json.loads((project / "reports/registration.json").read_text())
    assert registration["model_name"] == "humane-german" and registration["version"] == "1"
    assert mlflow_client(project).get_experiment_by_name("humane-german") is not None
    # Nothing registered under Adult's (or the sample's) name.
    assert [m.name for m in mlflow_client(project).search_registered_models()] == ["humane-german"]

    # The generic policy only: baselines on the same rows and absolute gaps for German's one sensitive feature.
    decision = json.loads((project / "reports/decision.json").read_text())
    judged = {(c["rule"], c["metric"]) for c in decision["checks"]}
    assert judged == {
        ("validation_passed", "validation.passed"),
        ("above_baseline", "test.roc_auc"),
        ("above_baseline", "test.accuracy"),
        ("max", "fairness.sex.demographic_parity_difference"),
        ("max", "fairness.sex.equalized_odds_difference"),
        ("max_drop", "test.accuracy"),
        ("max_drop", "test.roc_auc"),
        ("not_dominated", "test.accuracy"),  # by the unmitigated model, and by the logistic regression
        ("max_remedy_cost", "test.accuracy"),
    }
    # The copied remedy is refused for what it costs, against the same network without it on the same rows.
    weighed = {
        (c["rule"], c["reference"]): c for c in decision["checks"] if c["rule"] in ("not_dominated", "max_remedy_cost")
    }
    assert set(weighed) == {
        ("not_dominated", "baseline.unmitigated.accuracy"),
        ("not_dominated", "baseline.logreg.accuracy"),
        ("max_remedy_cost", "baseline.unmitigated.accuracy"),
    }
    remedy = weighed[("max_remedy_cost", "baseline.unmitigated.accuracy")]
    assert remedy["passed"] is False and remedy["value"] < remedy["reference_value"], remedy
    refused = [r for r in decision["reasons"] if "`make sweep`" in r]
    assert refused and any("remedy" in r or "dominated by the unmitigated model" in r for r in refused), refused
    checks = json.loads((project / "reports/policy_checks.json").read_text())
    assert checks["sweep"] == {"command": "make sweep", "profile": "german", "target": ["sex"]}
    print("german:", *decision["reasons"], sep="\n  ")
    text = json.dumps(decision) + (project / "reports/model_card.md").read_text()
    for adult in ("race", "income", "native-country", "0.84", "humane-adult", "humane-sample"):
        assert adult not in text, adult
    for reason in decision["reasons"]:  # whatever was refused is refused for German's own figures
        assert "fairness.sex" in reason or "baseline" in reason, reason
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["model"]["roc_auc"] > 0.65
    print(out.stdout[-2000:])
