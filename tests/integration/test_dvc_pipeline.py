"""Real: the shared session run (`dvc repro` of the sample: GX, PyTorch, MLflow SQLite), `dvc repro`/`exp` on copies.

The whole pipeline through `dvc repro` in a temporary git copy of the project, on a few thousand rows."""

import json

import mlflow
import pandas as pd
import yaml

from humane.core.io import md5_of
from humane.pipeline.workspace import stages
from tests.conftest import mlflow_client, run, tracked_runs

OUTPUTS = [
    "data/processed/train.parquet",
    "data/processed/test.parquet",
    "models/model.pt",
    "models/preprocessor.skops",
    "reports/metrics.json",
]


def test_repro_writes_every_artifact_and_is_clean(repro_project):
    for path in [
        *OUTPUTS,
        "reports/validation.json",
        "reports/validation_docs/index.html",
        "reports/plots/roc.png",
        "reports/plots/calibration.json",
        "reports/train_history.json",
        "models/checkpoints/epoch_001.pt",
    ]:
        assert (repro_project / path).exists(), path
    assert json.loads((repro_project / "reports/validation.json").read_text())["passed"] is True
    metrics = json.loads((repro_project / "reports/metrics.json").read_text())
    assert set(metrics["model"]) == {"accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "log_loss", "brier", "ece"}
    # A model worth shipping is at least as good as the logistic regression on the same features.
    model, logreg = metrics["model"], metrics["baseline"]["logreg"]
    assert model["roc_auc"] >= logreg["roc_auc"] - 0.01 and model["accuracy"] >= logreg["accuracy"] - 0.01, metrics
    assert metrics["test_rows"] == 1000
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repro_project).stdout
    shown = run(["dvc", "metrics", "show"], repro_project).stdout
    assert "model.accuracy" in shown and "model.roc_auc" in shown
    assert "roc.json" in run(["dvc", "plots", "show", "--json"], repro_project).stdout


def test_one_mlflow_run_with_params_metrics_lineage_and_model(repro_project, monkeypatch):
    (tracked,) = tracked_runs(repro_project)
    experiment = mlflow_client(repro_project).get_experiment(tracked.info.experiment_id)
    assert experiment.artifact_location == (repro_project / "mlartifacts").as_uri()
    assert not (repro_project / "mlruns").exists()
    data = tracked.data
    assert data.params["train.lr"] == "0.002" and data.params["data.target"] == "income"
    assert (
        data.metrics["test.accuracy"]
        == json.loads((repro_project / "reports/metrics.json").read_text())["model"]["accuracy"]
    )
    assert "baseline.logreg.roc_auc" in data.metrics
    history = mlflow_client(repro_project).get_metric_history(tracked.info.run_id, "epoch.val_loss")
    epochs = json.loads((repro_project / "reports/train_history.json").read_text())
    assert [m.step for m in history] == [e["epoch"] for e in epochs]
    # Lineage names the bytes that were trained on and shipped (the same digests DVC records).
    assert data.tags["data.md5.train"] == md5_of(repro_project / "data/processed/train.parquet")
    assert data.tags["model.md5"] == md5_of(repro_project / "models/model.pt")
    assert data.tags["preprocessor.md5"] == md5_of(repro_project / "models/preprocessor.skops")
    assert data.tags["git_commit"] == run(["git", "rev-parse", "HEAD"], repro_project).stdout.strip()
    assert data.tags["entry_point"] == "dvc" and data.tags["mlflow.source.name"] == "dvc repro"
    assert tracked.info.run_name == f"dvc · defaults · {data.tags['git_commit'][:7]}"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on its runs
    inputs = {d.dataset.name: d for d in tracked.inputs.dataset_inputs}
    assert inputs["train"].dataset.digest == md5_of(repro_project / "data/processed/train.parquet")
    assert inputs["test"].dataset.digest == md5_of(repro_project / "data/processed/test.parquet")
    artifacts = {a.path for a in mlflow_client(repro_project).list_artifacts(tracked.info.run_id, "reports")}
    assert {"reports/validation.json", "reports/metrics.json", "reports/validation_docs"} <= artifacts
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repro_project / 'mlflow.db'}")  # restored after the test
    model = mlflow.pyfunc.load_model(f"runs:/{tracked.info.run_id}/model")
    raw = pd.read_csv(repro_project / "data/raw/sample/test.csv").head(7)
    from humane.governance.serving import as_request

    predicted = model.predict(as_request(raw.drop(columns=["income"]), model.metadata.get_input_schema()))
    assert list(predicted.columns)[:2] == ["probability", "label"] and len(predicted) == 7
    assert set(predicted["label"]) <= {"<=50K", ">50K"}


def test_second_repro_does_nothing(ran_project):
    out = run(["dvc", "repro"], ran_project).stdout
    assert "Running stage" not in out and "Data and pipelines are up to date" in out


def test_train_param_change_reruns_only_training_onward(ran_project):
    params = yaml.safe_load((ran_project / "params.yaml").read_text())
    params["train"]["lr"] = 0.003
    (ran_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], ran_project).stdout
    ran = {s.name for s in stages(ran_project / "dvc.yaml") if f"Running stage '{s.name}'" in out}
    assert ran == {"train", "postprocess", "evaluate", "audit", "explain", "track", "gate", "register"}
    runs = tracked_runs(ran_project)
    assert len(runs) == 2 and runs[0].data.params["train.lr"] == "0.003"


def test_same_params_and_data_give_the_same_metrics(ran_project):
    before = (ran_project / "reports/metrics.json").read_text()
    model_before = (ran_project / "models/model.pt").read_bytes()
    run(["dvc", "repro", "--force", "train"], ran_project)
    assert (ran_project / "reports/metrics.json").read_text() == before
    assert (ran_project / "models/model.pt").read_bytes() == model_before


def test_dvc_exp_run_with_set_param(ran_project):
    run(["dvc", "exp", "run", "-S", "train.max_epochs=2", "--name", "short"], ran_project)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], ran_project).stdout)
    assert "short" in json.dumps(shown)
    assert json.loads((ran_project / "reports/train_metrics.json").read_text())["epochs_run"] == 2
    assert tracked_runs(ran_project)[0].data.params["train.max_epochs"] == "2"
