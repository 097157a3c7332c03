"""MLflow Model Registry access: the champion, new versions, aliases, and a lock around promotion."""

from __future__ import annotations

import fcntl
import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.store import tracking_uri, using_tracking_uri

CHAMPION = "champion"
CHALLENGER = "challenger"
METRIC_TAG = "metric."  # version tags holding the metrics the gate compares against
DESCRIPTION_LIMIT = 5000  # MLflow's column size for a version description


@dataclass(frozen=True)
class Champion:
    """The version that holds the champion alias, and the metrics recorded on it."""

    version: str
    metrics: dict[str, float]
    run_id: str | None


def client() -> Any:
    """An MLflow client on the pipeline's store."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())


def current_champion(name: str) -> Champion | None:
    """The version behind the champion alias, or None when there is none yet."""
    from mlflow.exceptions import MlflowException

    try:
        version = client().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None  # no such model, or no champion alias on it yet
    metrics = {k[len(METRIC_TAG) :]: float(v) for k, v in version.tags.items() if k.startswith(METRIC_TAG)}
    return Champion(str(version.version), metrics, version.run_id)


@contextmanager
def promotion_lock() -> Iterator[None]:
    """Serialise decide → register → move aliases between pipeline runs sharing a store on this machine."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///") + ".lock")
    else:
        digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"humane-registry-{digest}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def register_version(name: str, model_uri: str, tags: dict[str, str]) -> str:
    """Register a new version of `name` from a logged model; returns the version number."""
    import mlflow

    with using_tracking_uri(tracking_uri()):
        version = mlflow.register_model(model_uri, name, tags=tags)
    return str(version.version)


def set_description(name: str, version: str, description: str) -> None:
    """Set a version's description, cut to what every store accepts."""
    if len(description) > DESCRIPTION_LIMIT:
        tail = "\n\n(truncated: the full model card is the run's artifact model_card/model_card.md)"
        description = description[: DESCRIPTION_LIMIT - len(tail)] + tail
    client().update_model_version(name, version, description=description)


def set_alias(name: str, alias: str, version: str) -> None:
    """Point `alias` at `version`."""
    client().set_registered_model_alias(name, alias, version)
