"""MLflow store access at the edges: a client on a given URI, the fluent API pointed at it, the experiment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from humane.core.errors import HumaneError

# MLflow 3's UI opens an experiment on its GenAI overview unless the experiment says it is model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


class StoreError(HumaneError):
    """The MLflow tracking store or registry could not be read or written: nothing is assumed from silence."""


def client(uri: str) -> Any:
    """An MLflow client whose tracking and registry are both `uri`."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at `uri` for the block only.

    `mlflow.set_tracking_uri` and `mlflow.set_registry_uri` also export MLFLOW_TRACKING_URI and
    MLFLOW_REGISTRY_URI to the process environment (and unsetting does not remove them); left in place, a
    long-lived process (a Prefect worker, a test session) and its children would use this store from then on.
    """
    import mlflow

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {name: os.environ.get(name) for name in names}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def ensure_experiment(mlflow_client: Any, name: str, artifact_root: Path | None) -> str:
    """The experiment's id, created (with `artifact_root` when given) and marked as model training.

    An experiment created by someone else is marked too, so the UI opens on its runs table.
    """
    from mlflow.exceptions import MlflowException

    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is None:
        location = artifact_root.resolve().as_uri() if artifact_root is not None else None
        try:
            experiment_id = mlflow_client.create_experiment(
                name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING}
            )
        except MlflowException:  # another run created it first; the lookup below raises if that is not why
            experiment = mlflow_client.get_experiment_by_name(name)
            if experiment is None:
                raise
            experiment_id = experiment.experiment_id
    else:
        experiment_id = experiment.experiment_id
    if experiment is None or experiment.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
        mlflow_client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return experiment_id
