"""The MLflow edge of the monitoring: the champion, its reference and test-time figures, and the monitoring run.

Fails closed: no champion, a champion whose decision and sign-off do not verify against the audit trail, a run
without its reference, or a store that cannot be read is a clear error, never "nothing to compare with". A
monitoring run only reads the registry: it never moves an alias.
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
from humane.governance.store import client, ensure_experiment, using_tracking_uri
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


def load_champion(uri: str, name: str, project: Path, require_signoff: bool = False) -> ChampionModel:
    """The verified champion's version, its pyfunc, and its run's reference, audit and metrics.

    The version behind `champion` is used only once its decision and sign-off verify against the project's audit
    trail (humane.governance.approvals.verified_champion; `require_signoff`: params' gate.require_approval, always
    in team mode); else ChampionNotVerified names what is missing. The model is then loaded by that version's
    number, never by the alias, so that the alias cannot move between the check and the load.
    """
    import mlflow.pyfunc

    from humane.governance.approvals import verified_champion

    mlflow_client = client(uri)
    champion = verified_champion(uri, project, name, require_signoff)  # StoreError when the store fails
    if champion is None:
        raise MonitoringError(
            f"registry: model {name!r} has no {CHAMPION!r} version; there is nothing to monitor (promote a model first)"
        )
    if not champion.run_id:
        raise MonitoringError(f"{name} v{champion.version} names no MLflow run: it has no reference to compare with")
    version, run_id = champion.version, champion.run_id
    with tempfile.TemporaryDirectory(prefix="humane-champion-") as tmp:
        files = {}
        for artifact in (REFERENCE_ARTIFACT, AUDIT_ARTIFACT, METRICS_ARTIFACT):
            try:
                files[artifact] = Path(mlflow_client.download_artifacts(run_id, artifact, tmp))
            except Exception as err:
                raise MonitoringError(
                    f"{name} v{version}: its run {run_id} holds no {artifact} ({type(err).__name__}); "
                    "it was tracked before monitoring existed or its artifacts are gone: track it again, or "
                    "promote a version tracked by this code"
                ) from None
        reference = pd.read_parquet(files[REFERENCE_ARTIFACT])
        audit, metrics = io.read_json(files[AUDIT_ARTIFACT]), io.read_json(files[METRICS_ARTIFACT])
    with using_tracking_uri(uri), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    return ChampionModel(name, version, run_id, model, reference, audit, metrics)


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
