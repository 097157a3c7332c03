"""MLflow Model Registry access: the champion, versions keyed by run, aliases, and a lock around promotion.

Every read fails closed: only "this model does not exist yet" or "no version holds the alias" means there
is no champion; any other error is a StoreError, never "nothing there".
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from humane.core.errors import IntegrityFailed
from humane.core.io import file_lock
from humane.governance.store import StoreError, client, scoped_environment

_log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
METRIC_TAG = "metric."  # version tags holding the metrics the gate compares against
TEST_MD5_TAG = "test.md5"  # the test rows a version's recorded metrics were measured on
# MLflow's size for a model-version tag value (mlflow.utils.validation.MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH; a Text
# column in the registry's database): the decision JSON, with the checks against the references, runs past 5,000.
TAG_LIMIT = 100_000
DECISION_TAG = "decision"  # the automated decision: PASSED or REJECTED_BY_POLICY
PASSED, REJECTED_BY_POLICY = "passed", "rejected"  # its values: passed every check of the policy, or not
LEGACY_PASSED = "promoted"  # what versions registered before the rename hold for PASSED (still read as passed)
MANIFEST_TAG = "humane.files"  # JSON {file of the logged model: sha256}, recorded at registration
DOWNLOAD_NOTE = ("registered_model_meta",)  # written by MLflow into a downloaded model's folder, not stored
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
    # Sent once: a create retried after the server acted would make a second version of the run.
    with scoped_environment({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}):
        try:
            version = mlflow_client.create_model_version(name, model_uri, run_id=run_id, model_id=model_id)
        except Exception:
            made = version_of_run(mlflow_client, name, run_id)  # the answer was lost, not the version
            if made is None:
                raise
            return str(made.version)
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


@contextmanager
def discarded_on_failure(mlflow_client: Any, name: str, version: str, discard: bool) -> Iterator[None]:
    """Delete the version `version` again if the block fails and `discard` (it was created by this attempt).

    The block's error is the one raised; a version that cannot be deleted either (the store is gone) stays, without
    tags or aliases, and the rerun finds and completes it.
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except BaseException:
        if discard:
            try:
                mlflow_client.delete_model_version(name, version)
            except (MlflowException, OSError) as err:  # the block's error says what failed; this one only adds to it
                why = type(err).__name__
                _log.warning("registry: %s v%s not taken back (%s); the rerun completes it", name, version, why)
        raise


def set_alias(mlflow_client: Any, name: str, alias: str, version: str) -> None:
    """Point `alias` at `version`."""
    mlflow_client.set_registered_model_alias(name, alias, version)


def decision_passed(tags: dict[str, str]) -> bool:
    """Whether a version's recorded automated decision passed (the value before the rename counts too)."""
    return tags.get(DECISION_TAG) in (PASSED, LEGACY_PASSED)


def file_manifest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, keyed by its POSIX path relative to it.

    MLflow's own download note (`registered_model_meta`, written when a `models:/` URI is downloaded, never
    stored) is left out, so that the manifest a server takes from its store equals the one a client checks.
    """
    manifest = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).parts != DOWNLOAD_NOTE):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        manifest[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return manifest


def download_model(uri: str, model_uri: str, dst: Path) -> Path:
    """The logged model's files (MLmodel, served code, weights, preprocessor, policy ...) in a local folder."""
    from mlflow.artifacts import download_artifacts

    from humane.governance.store import using_tracking_uri

    try:
        with using_tracking_uri(uri):  # `models:/m-<id>` is resolved on the fluent API's store
            return Path(download_artifacts(artifact_uri=model_uri, dst_path=str(dst), tracking_uri=uri))
    except Exception as err:
        raise StoreError(f"registry: cannot read the files of {model_uri}: {type(err).__name__}: {err}") from err


def manifest_tag(folder: Path) -> str:
    """The manifest of a logged model's folder as the version tag's value."""
    return json.dumps(file_manifest(folder), sort_keys=True, separators=(",", ":"))


def verify_manifest(folder: Path, recorded: str | None, what: str) -> None:
    """IntegrityFailed naming the first file of `folder` that differs from the recorded manifest, or its lack."""
    if not recorded:
        raise IntegrityFailed(
            f"{what}: no manifest of its files was recorded at registration (version tag {MANIFEST_TAG}; versions "
            "registered before humane recorded one have none); nothing of it is loaded: register a new candidate, "
            "or take a champion without one off with python -m tasks.rollback MODEL --none --comment TEXT"
        )
    try:
        expected = json.loads(recorded)
    except ValueError:
        expected = None
    if not isinstance(expected, dict):
        raise IntegrityFailed(f"{what}: its recorded manifest ({MANIFEST_TAG}) is not a JSON object; nothing is loaded")
    found = file_manifest(folder)
    for name in sorted(set(expected) | set(found)):
        if name not in found:
            problem = "is missing"
        elif name not in expected:
            problem = "was added after registration"
        elif found[name] != expected[name]:
            problem = f"changed after registration (sha256 {found[name][:12]}…, registered {expected[name][:12]}…)"
        else:
            continue
        raise IntegrityFailed(f"{what}: file {name} {problem}; nothing of it is loaded or run")


def verified_model_files(uri: str, name: str, version: str, dst: Path) -> Path:
    """The version's logged model downloaded to `dst` and checked file by file against its manifest.

    Load from the returned folder (never from the store again), so that what runs is what was checked.
    """
    try:
        record = client(uri).get_model_version(name, version)
    except Exception as err:
        raise StoreError(f"registry: cannot read {name} v{version}: {err}") from err
    folder = download_model(uri, str(record.source), dst)
    verify_manifest(folder, record.tags.get(MANIFEST_TAG), f"{name} v{version}")
    return folder


def load_verified(uri: str, name: str, version: str) -> Any:
    """The version's pyfunc, loaded from its files once they match the manifest recorded at registration.

    Loading a "models from code" pyfunc runs its served_model.py: nothing runs before every file verifies.
    """
    import mlflow.pyfunc

    from humane.governance.store import using_tracking_uri

    with tempfile.TemporaryDirectory(prefix="humane-verified-") as tmp:
        folder = verified_model_files(uri, name, version, Path(tmp))
        with using_tracking_uri(uri):
            return mlflow.pyfunc.load_model(str(folder))
