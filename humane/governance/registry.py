"""MLflow Model Registry access: the champion, versions keyed by run, aliases, and a lock around promotion.

Every read fails closed: only "this model does not exist yet" or "no version holds the alias" means there
is no champion; any other error is a StoreError, never "nothing there".
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from humane.core.io import file_lock
from humane.governance.store import StoreError

CHAMPION = "champion"
CHALLENGER = "challenger"
METRIC_TAG = "metric."  # version tags holding the metrics the gate compares against
TEST_MD5_TAG = "test.md5"  # the test rows a version's recorded metrics were measured on
TAG_LIMIT = 5000  # MLflow's size for a tag value
DECISION_TAG = "decision"  # the automated decision: PASSED or REJECTED
PASSED, REJECTED_BY_POLICY = "promoted", "rejected"  # its values ("promoted": passed every check of the policy)
DECISION_JSON_TAG = "decision.json"  # the whole decision, so that a retry can reuse it verbatim
BASIS_TAG = "decision.basis"  # hash of policy, candidate metrics and gate code the decision was taken on
DESCRIPTION_LIMIT = 5000  # MLflow's column size for a version description


@dataclass(frozen=True)
class Champion:
    """The version that holds the champion alias, and the metrics recorded on it."""

    version: str
    metrics: dict[str, float]
    run_id: str | None
    # md5 of the test rows its recorded metrics were measured on (None for versions registered before it was kept)
    test_md5: str | None = None


def _not_found(err: Exception) -> bool:
    return getattr(err, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def current_champion(mlflow_client: Any, name: str) -> Champion | None:
    """The version behind the champion alias; None only when the model or the alias does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow_client.get_registered_model(name)
    except MlflowException as err:
        if _not_found(err):
            return None
        raise StoreError(f"registry: cannot read model {name!r}: {err}") from err
    except Exception as err:  # the store itself failed (database, network): never "no champion"
        raise StoreError(f"registry: cannot read model {name!r}: {type(err).__name__}: {err}") from err
    version = model.aliases.get(CHAMPION)
    if version is None:
        return None
    return champion_of(mlflow_client, name, str(version))


def champion_of(mlflow_client: Any, name: str, version: str) -> Champion:
    """A version as a reference for the change rules: its number and the metrics recorded on it."""
    try:
        record = mlflow_client.get_model_version(name, version)
    except Exception as err:
        raise StoreError(f"registry: cannot read {name} v{version}: {err}") from err
    metrics = {k[len(METRIC_TAG) :]: float(v) for k, v in record.tags.items() if k.startswith(METRIC_TAG)}
    return Champion(str(record.version), metrics, record.run_id, record.tags.get(TEST_MD5_TAG))


def version_of_run(mlflow_client: Any, name: str, run_id: str) -> Any | None:
    """The version of `name` registered from `run_id`, if an earlier attempt registered one."""
    from mlflow.exceptions import MlflowException

    try:
        found = mlflow_client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException as err:
        if _not_found(err):
            return None
        raise StoreError(f"registry: cannot search versions of {name!r}: {err}") from err
    except Exception as err:
        raise StoreError(f"registry: cannot search versions of {name!r}: {type(err).__name__}: {err}") from err
    found = [v for v in found if v.run_id == run_id and v.name == name]
    return min(found, key=lambda v: int(v.version)) if found else None


def promotion_lock(uri: str) -> Any:
    """Serialise decide → register → move aliases between pipeline runs sharing a store.

    Team mode: the Prefect server's strict global concurrency limit, across machines. Else a file lock on
    this machine (beside a SQLite store).
    """
    from humane.governance import team_client

    if team_client.is_team(uri):
        return team_client.promotion_mutex()
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///") + ".lock").resolve()
    else:
        digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"humane-registry-{digest}.lock"
    return file_lock(path)


def register_version(mlflow_client: Any, name: str, model_uri: str, run_id: str) -> str:
    """Register a new version of `name` from a logged model (creating the model first); its number."""
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(name)
    except MlflowException as err:
        if not _not_found(err):
            raise StoreError(f"registry: cannot read model {name!r}: {err}") from err
        try:
            mlflow_client.create_registered_model(name)
        except MlflowException as created:
            if getattr(created, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                raise
    # A logged model (`models:/m-<id>`) is named by its id too: a tracking server insists on it.
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    version = mlflow_client.create_model_version(name, model_uri, run_id=run_id, model_id=model_id)
    return str(version.version)


def set_tags(mlflow_client: Any, name: str, version: str, tags: dict[str, str]) -> None:
    """Set (or overwrite) a version's tags."""
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version, key, value)


def set_description(mlflow_client: Any, name: str, version: str, description: str) -> None:
    """Set a version's description, cut to what every store accepts."""
    if len(description) > DESCRIPTION_LIMIT:
        tail = "\n\n(truncated: the full model card is the run's artifact model_card/model_card.md)"
        description = description[: DESCRIPTION_LIMIT - len(tail)] + tail
    mlflow_client.update_model_version(name, version, description=description)


def set_alias(mlflow_client: Any, name: str, alias: str, version: str) -> None:
    """Point `alias` at `version`."""
    mlflow_client.set_registered_model_alias(name, alias, version)
