"""Track stage: one MLflow run per pipeline execution with params, metrics, artifacts, lineage and the model."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from tasks import io
from tasks.errors import cli
from tasks.gate import privacy_metrics
from tasks.lineage import git_commit, output_md5
from tasks.model import load_model
from tasks.params import TrackParams, flatten, load_params, read_raw
from tasks.paths import (
    AUDIT_GROUPS_DATA,
    AUDIT_PLOTS_DIR,
    AUDIT_REPORT,
    CALIBRATION_DATA,
    CALIBRATION_PNG,
    DATA_AUDIT,
    FAIRNESS,
    INTERIM_META,
    INTERIM_TEST,
    MEMBERSHIP_REPORT,
    METRICS,
    MLFLOW_ARTIFACTS,
    MLFLOW_RUN,
    MODEL,
    PARAMS,
    PREPROCESSOR,
    PRIVACY_POLICY,
    PRIVACY_REPORT,
    PROCESSED_TEST,
    PROCESSED_TRAIN,
    ROC_DATA,
    ROC_PNG,
    TRAIN_HISTORY,
    TRAIN_METRICS,
    VALIDATION_DOCS,
    VALIDATION_REPORT,
)  # fmt: skip
from tasks.store import default_tracking_uri, tracking_uri, using_tracking_uri

MODEL_ARTIFACT = "model"
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
SERVING_PACKAGES = ("mlflow", "torch", "scikit-learn", "pandas", "numpy", "joblib")


def ensure_experiment(client: Any, name: str, root: Path = Path(".")) -> str:
    """The experiment's id, creating it with the project's artifact folder when the store is the default one."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # On the project's own store, artifacts go to the project's folder (MLflow's default is ./mlruns of
    # whatever the working directory is); a tracking server decides for itself.
    own_store = client.tracking_uri == default_tracking_uri(root)
    location = (root / MLFLOW_ARTIFACTS).resolve().as_uri() if own_store else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another run created it first; the lookup below raises if that is not the reason
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested numeric metrics → dotted names (NaN dropped: MLflow cannot plot it)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_metrics(value, f"{name}."))
        elif isinstance(value, (int, float)) and math.isfinite(value):
            out[name] = float(value)
    return out


def lineage_tags(flow_run_id: str | None, overrides: dict[str, Any] | None) -> dict[str, str]:
    """Git commit, DVC md5s of the data and model outputs, and where the run came from."""
    meta = io.read_json(INTERIM_META)
    tags = {
        "git_commit": git_commit(),
        "data.source": str(meta["source"]),
        "data.raw_md5.train": meta["md5"]["train"],
        "data.raw_md5.test": meta["md5"]["test"],
        "data.md5.train": output_md5(PROCESSED_TRAIN),
        "data.md5.test": output_md5(PROCESSED_TEST),
        "model.md5": output_md5(MODEL),
        "preprocessor.md5": output_md5(PREPROCESSOR),
        "entry_point": "prefect" if flow_run_id else "dvc",
    }
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
    if overrides:
        tags["overrides"] = ", ".join(f"{k}={v!r}" for k, v in sorted(overrides.items()))
    return tags


def requirements() -> list[str]:
    """Exact pins of what the served model imports, from this environment (inferring them costs seconds)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in SERVING_PACKAGES]


def log_serving_model(threshold: float) -> Any:
    """Log the pyfunc (preprocessor + weights) with a raw-column signature and an input example."""
    import joblib
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    from tasks.privacy import FittedPolicy
    from tasks.serving import ARTIFACT_MODEL, ARTIFACT_POLICY, ARTIFACT_PREPROCESSOR, HumaneModel

    preprocessor = joblib.load(PREPROCESSOR)
    example = pd.read_parquet(INTERIM_TEST).head(5)[preprocessor.inputs]
    model = HumaneModel(threshold)
    model.preprocessor = preprocessor
    model.policy = FittedPolicy.from_dict(io.read_json(PRIVACY_POLICY))
    model.model = load_model(torch.load(MODEL, weights_only=True))
    signature = infer_signature(example, model.predict(None, example))
    return mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=HumaneModel(threshold),
        artifacts={
            ARTIFACT_MODEL: str(MODEL),
            ARTIFACT_PREPROCESSOR: str(PREPROCESSOR),
            ARTIFACT_POLICY: str(PRIVACY_POLICY),
        },
        code_paths=[str(Path(__file__).parent)],
        signature=signature,
        input_example=example,
        pip_requirements=requirements(),
    )


def log_run(
    params: TrackParams,
    threshold: float,
    flow_run_id: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Log the current pipeline state as one MLflow run and return its ids."""
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(client, params.experiment)
    raw_params = {k: str(v)[:MAX_PARAM_CHARS] for k, v in flatten(read_raw(PARAMS)).items()}
    metrics = io.read_json(METRICS)
    train_metrics = io.read_json(TRAIN_METRICS)
    history = io.read_json(TRAIN_HISTORY)
    validation = io.read_json(VALIDATION_REPORT)
    train_frame, test_frame = pd.read_parquet(PROCESSED_TRAIN), pd.read_parquet(PROCESSED_TEST)
    fairness = io.read_json(FAIRNESS)
    privacy, membership = io.read_json(PRIVACY_REPORT), io.read_json(MEMBERSHIP_REPORT)

    with using_tracking_uri(uri), mlflow.start_run(experiment_id=experiment_id) as run, warnings.catch_warnings():
        # MLflow's hints about integer columns and ambiguous local sources do not apply to these inputs.
        warnings.simplefilter("ignore", UserWarning)
        run_id = run.info.run_id
        mlflow.set_tags(lineage_tags(flow_run_id, overrides))
        mlflow.log_params(raw_params)
        summary = {
            **flat_metrics(metrics["model"], "test."),
            **flat_metrics(metrics["baseline"], "baseline."),
            **flat_metrics(train_metrics, "train."),
            **flat_metrics(fairness, "fairness."),
            **flat_metrics(privacy_metrics(privacy, membership, train_metrics)),
            "validation.n_checks": validation["n_checks"],
            "validation.n_failed": validation["n_failed"],
        }
        mlflow.log_metrics(summary)
        per_epoch = [
            Metric(f"epoch.{name}", float(row[name]), 0, int(row["epoch"]))
            for row in history
            for name in ("train_loss", "val_loss", "val_accuracy", "val_auc")
            if row[name] == row[name]  # NaN AUC (one-class validation split) is not logged
        ]
        client.log_batch(run_id, metrics=per_epoch)
        reports = (VALIDATION_REPORT, METRICS, TRAIN_METRICS, TRAIN_HISTORY, ROC_DATA, CALIBRATION_DATA, PARAMS,
                   DATA_AUDIT, AUDIT_REPORT, FAIRNESS, AUDIT_GROUPS_DATA, PRIVACY_REPORT,
                   MEMBERSHIP_REPORT)  # fmt: skip
        for path in reports:
            mlflow.log_artifact(str(path), artifact_path="reports")
        for path in (ROC_PNG, CALIBRATION_PNG, *sorted(AUDIT_PLOTS_DIR.glob("*.png"))):
            mlflow.log_artifact(str(path), artifact_path="plots")
        mlflow.log_artifacts(str(VALIDATION_DOCS), artifact_path="reports/validation_docs")
        # Dataset inputs: schema and row count only (no rows), with DVC's md5 as the digest.
        for frame, path, context in ((train_frame, PROCESSED_TRAIN, "training"), (test_frame, PROCESSED_TEST, "test")):
            dataset = mlflow.data.from_pandas(frame, source=str(path), name=path.stem, digest=output_md5(path))
            mlflow.log_input(dataset, context=context)
        info = log_serving_model(threshold)
    record = {
        "run_id": run_id,
        "experiment_id": experiment_id,
        "experiment": params.experiment,
        "model_uri": info.model_uri,
    }
    io.write_json(MLFLOW_RUN, record)
    return record


def main() -> None:
    """DVC entry point."""
    params = load_params()
    record = log_run(params.track, params.evaluate.threshold)
    print(f"track: MLflow run {record['run_id']} in experiment {record['experiment']!r}")


if __name__ == "__main__":
    cli(main)
