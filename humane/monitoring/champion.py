"""The MLflow edge of the monitoring: the champion, its reference and test-time figures, and the monitoring run.

Fails closed: no champion, a champion whose decision and sign-off do not verify against the audit trail, a run
without its reference, or a store that cannot be read is a clear error, never "nothing to compare with". The
three ways a run's artifact can fail are told apart: absent from the run (MonitoringError, exit 2: tracked before
monitoring existed, or deleted), not downloadable (ServerUnavailable, exit 10, naming the server and the artifact;
AccessRefused, exit 11, for refused credentials), or downloaded but corrupt (IntegrityFailed, exit 12). A
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
from humane.core.errors import AccessRefused, HumaneError, IntegrityFailed, ServerUnavailable
from humane.core.paths import LABEL_COLUMN
from humane.governance.registry import CHAMPION, load_verified
from humane.governance.store import client, ensure_experiment, is_remote, safe_uri, server_calls, using_tracking_uri
from humane.monitoring.reference import DECISION_COLUMN, PROBABILITY_COLUMN, REFERENCE_ARTIFACT

AUDIT_ARTIFACT, METRICS_ARTIFACT = "reports/audit.json", "reports/metrics.json"  # as the track stage logs them
ARTIFACTS = (REFERENCE_ARTIFACT, AUDIT_ARTIFACT, METRICS_ARTIFACT)
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
    number, never by the alias, so that the alias cannot move between the check and the load, and only once its
    files match the manifest recorded at registration (registry.load_verified; IntegrityFailed names a file that
    does not).
    """
    from humane.governance.approvals import verified_champion

    mlflow_client = client(uri)
    with server_calls(uri):  # a store that does not answer: ServerUnavailable within HUMANE_SERVER_RETRY_S
        champion = verified_champion(uri, project, name, require_signoff)
    if champion is None:
        raise MonitoringError(
            f"registry: model {name!r} has no {CHAMPION!r} version; there is nothing to monitor (promote a model first)"
        )
    if not champion.run_id:
        raise MonitoringError(f"{name} v{champion.version} names no MLflow run: it has no reference to compare with")
    version, run_id = champion.version, champion.run_id
    label = f"{name} v{version}"
    location = _artifact_location(mlflow_client, uri, run_id, label)
    with tempfile.TemporaryDirectory(prefix="humane-champion-") as tmp:
        files = {a: _download(mlflow_client, uri, location, run_id, a, Path(tmp), label) for a in ARTIFACTS}
        reference, audit, metrics = _parse(files, run_id, label)
    with server_calls(uri), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_verified(uri, name, version)
    return ChampionModel(name, version, run_id, model, reference, audit, metrics)


def _artifact_location(mlflow_client: Any, uri: str, run_id: str, label: str) -> str:
    """Where the champion's run keeps its artifacts; MonitoringError when the store holds no such run."""
    from mlflow.exceptions import MlflowException

    try:
        with server_calls(uri):
            return mlflow_client.get_run(run_id).info.artifact_uri
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise MonitoringError(f"{label} names MLflow run {run_id}, which the store does not hold") from None


def _download(mlflow_client: Any, uri: str, location: str, run_id: str, artifact: str, dest: Path, label: str) -> Path:
    """One artifact of the champion's run, downloaded to `dest`.

    Raises:
        MonitoringError: the run does not hold the artifact (listed by the store, so an absent file is told
            apart from a store that did not answer).
        ServerUnavailable: the store (the run's artifact location, or the tracking server proxying it) did not
            answer within the bounded retries, or the download failed; names the server and the artifact.
        AccessRefused: the server refused the credentials (names the user).

    """
    server = location if is_remote(location) else uri
    where = f"{label}'s {artifact} (run {run_id}, artifacts at {safe_uri(location)})"
    try:
        with server_calls(server):
            listed = {f.path for f in mlflow_client.list_artifacts(run_id, artifact.rpartition("/")[0])}
            path = Path(mlflow_client.download_artifacts(run_id, artifact, str(dest))) if artifact in listed else None
    except ServerUnavailable as err:
        raise ServerUnavailable(f"cannot download {where}: {err}") from None
    except AccessRefused as err:
        raise AccessRefused(f"cannot download {where}: {err}") from None
    except Exception as err:  # a local store or a failed transfer: the artifact is listed, so not absent
        raise ServerUnavailable(
            f"cannot download {where} from {safe_uri(server)}: {type(err).__name__}; rerun once the store answers"
        ) from None
    if path is None:
        raise MonitoringError(
            f"{label}: its run {run_id} holds no {artifact}; it was tracked before monitoring existed or its "
            "artifacts are gone: track it again, or promote a version tracked by this code"
        )
    return path


def _parse(files: dict[str, Path], run_id: str, label: str) -> tuple[pd.DataFrame, dict, dict]:
    """The reference rows, the audit and the metrics; IntegrityFailed naming a file that does not parse."""
    what = {REFERENCE_ARTIFACT: "a Parquet table", AUDIT_ARTIFACT: "a JSON object", METRICS_ARTIFACT: "a JSON object"}
    parsed: dict[str, Any] = {}
    for artifact, path in files.items():
        try:
            parsed[artifact] = pd.read_parquet(path) if artifact == REFERENCE_ARTIFACT else io.read_json(path)
        except Exception as err:
            raise IntegrityFailed(
                f"{label}: {artifact} of run {run_id} is corrupt: not {what[artifact]} ({type(err).__name__})"
            ) from None
    reference, audit, metrics = (parsed[a] for a in ARTIFACTS)
    lacking = {
        REFERENCE_ARTIFACT: [c for c in (LABEL_COLUMN, PROBABILITY_COLUMN, DECISION_COLUMN) if c not in reference],
        AUDIT_ARTIFACT: [k for k in ("overall", "features") if not isinstance(audit, dict) or k not in audit],
        METRICS_ARTIFACT: [k for k in ("model",) if not isinstance(metrics, dict) or k not in metrics],
    }
    for artifact, missing in lacking.items():
        if missing:
            raise IntegrityFailed(f"{label}: {artifact} of run {run_id} is corrupt: it lacks {missing}")
    return reference, audit, metrics


def champion_version(uri: str, name: str) -> str | None:
    """The version behind `champion` now (None when there is none), to show that monitoring left it alone."""
    from humane.governance.registry import current_champion

    champion = current_champion(client(uri), name)
    return champion.version if champion else None


def log_monitoring_run(
    uri: str,
    champion: ChampionModel,
    batch: str,
    batch_md5: str,
    when: datetime,
    metrics: dict[str, float],
    tags: dict[str, str],
    folder: Path,
    artifact_root: Path | None,
) -> str:
    """One MLflow run per monitored batch, tagged with the model version; metrics at step = the batch's time.

    The step is the batch time in whole seconds since 1970 and the timestamp is the batch time, so the MLflow UI
    plots each metric over batches (chart view, x-axis "Step" or "Time"). A server that does not answer within
    the bounded retries is ServerUnavailable (humane.governance.store.server_calls).
    """
    import mlflow
    from mlflow.entities import Metric

    with server_calls(uri):
        mlflow_client = client(uri)
        experiment_id = ensure_experiment(mlflow_client, monitoring_experiment(champion.name), artifact_root)
        step, stamp = int(when.timestamp()), int(when.timestamp() * 1000)
        with (
            using_tracking_uri(uri),
            mlflow.start_run(experiment_id=experiment_id, run_name=f"{batch} · v{champion.version}") as run,
        ):
            mlflow.set_tags(
                {
                    MODEL_TAG: champion.name,
                    VERSION_TAG: champion.version,
                    BATCH_TAG: batch,
                    "humane.batch_md5": batch_md5,
                    "humane.batch_time": when.isoformat(),
                    "humane.champion_run_id": champion.run_id,
                    **tags,
                }
            )
            batch_metrics = [Metric(k, float(v), stamp, step) for k, v in sorted(metrics.items())]
            for start in range(0, len(batch_metrics), 1000):
                mlflow_client.log_batch(run.info.run_id, metrics=batch_metrics[start : start + 1000])
            mlflow.log_artifacts(str(folder), artifact_path="monitoring")
        return run.info.run_id
