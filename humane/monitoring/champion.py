"""The MLflow edge of the monitoring: the champion, its reference and test-time figures, and the monitoring run.

Fails closed: no champion, a run without its reference, or a store that cannot be read is a clear error,
never "nothing to compare with". A monitoring run only reads the registry: it never moves an alias.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from humane.core import io
from humane.core.errors import HumaneError
from humane.governance.registry import CHAMPION
from humane.governance.store import StoreError, client, ensure_experiment, using_tracking_uri
from humane.monitoring.reference import REFERENCE_ARTIFACT

AUDIT_ARTIFACT, METRICS_ARTIFACT = "reports/audit.json", "reports/metrics.json"  # as the track stage logs them
MODEL_TAG, VERSION_TAG, BATCH_TAG = "humane.model", "humane.model_version", "humane.batch"


class MonitoringError(HumaneError):
    """The champion cannot be monitored (none, or its run lacks what the monitoring compares with)."""


@dataclass(frozen=True)
class ChampionModel:
    """The served champion and what it is compared with."""

    name: str
    version: str
    run_id: str
    model: Any  # the MLflow PyFuncModel
    reference: pd.DataFrame
    audit: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def served(self) -> Any:
        """The HumaneModel inside the pyfunc (its policy, preprocessor and thresholds)."""
        return self.model.unwrap_python_model()


def monitoring_experiment(model_name: str) -> str:
    """The MLflow experiment holding a model's monitoring runs."""
    return f"{model_name}-monitoring"


def load_champion(uri: str, name: str) -> ChampionModel:
    """The version behind `champion`, its pyfunc, and its run's reference, audit and metrics."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    mlflow_client = client(uri)
    try:
        version = mlflow_client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as err:
        if getattr(err, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise MonitoringError(f"registry: model {name!r} has no {CHAMPION!r} version; there is nothing to monitor "
                                  "(promote a model first)") from None  # fmt: skip
        raise StoreError(f"registry: cannot read {name}@{CHAMPION}: {err}") from err
    except Exception as err:  # the store itself failed: never "no champion"
        raise StoreError(f"registry: cannot read {name}@{CHAMPION}: {type(err).__name__}: {err}") from err
    with tempfile.TemporaryDirectory(prefix="humane-champion-") as tmp:
        files = {}
        for artifact in (REFERENCE_ARTIFACT, AUDIT_ARTIFACT, METRICS_ARTIFACT):
            try:
                files[artifact] = Path(mlflow_client.download_artifacts(version.run_id, artifact, tmp))
            except Exception as err:
                raise MonitoringError(
                    f"{name} v{version.version}: its run {version.run_id} holds no {artifact} ({type(err).__name__}); "
                    "it was tracked before monitoring existed or its artifacts are gone: track it again, or "
                    "promote a version tracked by this code"
                ) from None
        reference = pd.read_parquet(files[REFERENCE_ARTIFACT])
        audit, metrics = io.read_json(files[AUDIT_ARTIFACT]), io.read_json(files[METRICS_ARTIFACT])
    with using_tracking_uri(uri), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
    return ChampionModel(name, str(version.version), version.run_id, model, reference, audit, metrics)


def champion_version(uri: str, name: str) -> str | None:
    """The version behind `champion` now (None when there is none), to show that monitoring left it alone."""
    from humane.governance.registry import current_champion

    champion = current_champion(client(uri), name)
    return champion.version if champion else None


def log_monitoring_run(uri: str, champion: ChampionModel, batch: str, batch_md5: str, when: datetime,
                       metrics: dict[str, float], tags: dict[str, str], folder: Path,
                       artifact_root: Path | None) -> str:  # fmt: skip
    """One MLflow run per monitored batch, tagged with the model version; metrics at step = the batch's time.

    The step is the batch time in whole seconds since 1970 and the timestamp is the batch time, so the MLflow UI
    plots each metric over batches (chart view, x-axis "Step" or "Time").
    """
    import mlflow
    from mlflow.entities import Metric

    mlflow_client = client(uri)
    experiment_id = ensure_experiment(mlflow_client, monitoring_experiment(champion.name), artifact_root)
    step, stamp = int(when.timestamp()), int(when.timestamp() * 1000)
    with using_tracking_uri(uri), mlflow.start_run(experiment_id=experiment_id,
                                                   run_name=f"{batch} · v{champion.version}") as run:  # fmt: skip
        mlflow.set_tags({MODEL_TAG: champion.name, VERSION_TAG: champion.version, BATCH_TAG: batch,
                         "humane.batch_md5": batch_md5, "humane.batch_time": when.isoformat(),
                         "humane.champion_run_id": champion.run_id, **tags})  # fmt: skip
        batch_metrics = [Metric(k, float(v), stamp, step) for k, v in sorted(metrics.items())]
        for start in range(0, len(batch_metrics), 1000):
            mlflow_client.log_batch(run.info.run_id, metrics=batch_metrics[start : start + 1000])
        mlflow.log_artifacts(str(folder), artifact_path="monitoring")
    return run.info.run_id
