"""Real: `dvc repro` with Fairlearn's ExponentiatedGradient on a copy of the shared session run, MLflow SQLite store.

Mitigation by reductions through the pipeline: `dvc repro` trains ExponentiatedGradient's vote of MLPs, and the
served model, the card and the record take it unchanged."""

import itertools
import json

import mlflow
import pandas as pd
import torch
import yaml

from humane.governance.serving import as_request
from tests.conftest import mlflow_client, run, tracked_runs


def test_dvc_repro_trains_serves_and_records_an_exponentiated_gradient_model(ran_project, monkeypatch):
    params = yaml.safe_load((ran_project / "params.yaml").read_text())
    params["mitigation"].update(reductions="equalized_odds", reductions_epochs=6, reductions_max_iter=3)
    (ran_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], ran_project, check=False)
    assert out.returncode in (0, 3), out.stderr[-3000:]  # registered: promoted (0) or refused by the gate (3)
    assert "Running stage 'train'" in out.stdout and "Running stage 'preprocess'" not in out.stdout

    metrics = json.loads((ran_project / "reports/train_metrics.json").read_text())
    reductions = metrics["mitigation"]["reductions"]
    assert reductions["constraint"] == "equalized_odds" and 1 <= reductions["members"] <= reductions["oracle_calls"]
    rows = len(pd.read_parquet(ran_project / "data/processed/train.parquet"))
    assert metrics["compute"]["samples"] == reductions["oracle_calls"] * 6 * rows  # every inner fit is billed
    # A model, not a constant: better than the majority class and ranking the test rows.
    scored = json.loads((ran_project / "reports/metrics.json").read_text())
    assert scored["model"]["accuracy"] > scored["baseline"]["majority"]["accuracy"], scored
    assert scored["model"]["roc_auc"] > 0.7, scored
    state = torch.load(ran_project / "models/model.pt", weights_only=True)
    assert state["model_args"]["kind"] == "ensemble" and len(state["model_args"]["members"]) == reductions["members"]
    card = (ran_project / "reports/model_card.md").read_text()
    assert "Fairlearn's ExponentiatedGradient for equalized odds on sex" in card
    assert "a weighted vote of MLPs (ExponentiatedGradient)" in card

    runs = tracked_runs(ran_project)
    assert runs[0].data.params["mitigation.reductions"] == "equalized_odds"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{ran_project / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"runs:/{runs[0].info.run_id}/model")
    raw = pd.read_csv(ran_project / "data/raw/sample/test.csv").head(50)
    predicted = model.predict(as_request(raw.drop(columns=["income"]), model.metadata.get_input_schema()))
    # The score is the weight of the networks voting yes: a sum of the ensemble's weights (or 0).
    weights = reductions["weights"]
    sums = {
        round(sum(w for w, bit in zip(weights, bits, strict=True) if bit), 4)
        for bits in itertools.product([0, 1], repeat=len(weights))
    }
    assert {round(float(p), 4) for p in predicted["probability"]} <= sums
    assert set(predicted["label"]) <= {"<=50K", ">50K"}
    tracked = mlflow_client(ran_project).get_run(runs[0].info.run_id).data.metrics
    assert tracked["test.accuracy"] == scored["model"]["accuracy"]
