"""The built-in German credit data through the whole pipeline, with only its data section (and policy) set."""

import json
import shutil

import yaml

from tests.conftest import ROOT, run


def test_german_runs_end_to_end(project):
    shutil.copytree(ROOT / "data/raw/german", project / "data/raw/german")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"].update(source="german", test_source=None, target="credit_risk", positive_label="good",
                          labels=None, sensitive_features=["sex"], categorical=None, numeric=None, drop=[],
                          ranges={})  # fmt: skip
    params["gate"].update(min={"test.roc_auc": 0.6}, max={"fairness.sex.equalized_odds_difference": 0.5})
    params["register"]["model_name"] = "humane-german"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    out = run(["dvc", "repro"], project)
    assert "privacy rules name columns this data lacks" in out.stderr  # Adult's policy, skipped and said so
    meta = json.loads((project / "data/interim/meta.json").read_text())
    assert meta["rows"] == {"train": 800, "test": 200}
    audit = json.loads((project / "reports/audit.json").read_text())
    assert {g["group"] for g in audit["features"][0]["groups"]} == {"female", "male"}
    registration = json.loads((project / "reports/registration.json").read_text())
    assert registration["model_name"] == "humane-german" and registration["version"] == "1"
    assert json.loads((project / "reports/metrics.json").read_text())["model"]["roc_auc"] > 0.6
