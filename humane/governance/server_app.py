"""humane's MLflow server plugin: basic-auth, plus the sign-off's rules enforced for every client (team mode).

`mlflow server --app-name humane` (entry point group `mlflow.app`) builds basic-auth's app (`mlflow.server.auth`)
and adds, on the same Flask app, after basic-auth has authenticated the request:

1. `champion` moves only through the sign-off: SetRegisteredModelAlias and DeleteRegisteredModelAlias naming it
   are refused for everyone, administrators included. Deleting or renaming a registered model, deleting a model
   version and creating a registered model are refused for non-administrators (they would erase the record, or
   make a trainer the MANAGE owner of a governed model); creating one that exists gets MLflow's own
   RESOURCE_ALREADY_EXISTS, so `mlflow.register_model` keeps working for trainers.
2. Server-owned tags: on model versions `approval`, `approval.*`, `triggered_by` and `humane.*`; on runs,
   experiments and registered models `humane.*`. No client sets or deletes them, administrators included.
3. Identities stamped by the server: after CreateRun the run tag `humane.created_by`, after CreateModelVersion
   the version tag `humane.registered_by`, both the authenticated MLflow user (a client's `user_id` is ignored).
4. The sign-off API under /api/humane/v1/ (basic-auth authenticates it like every other route): `whoami`,
   `trail` (the rows, for the client to verify), and `signoff/request` (EDIT or MANAGE on the model),
   `signoff/decide` and `champion/rollback` (MANAGE, or an administrator). The server runs
   humane.governance.signoff itself, straight on its backend store, under a PostgreSQL advisory lock, with the
   PostgreSQL trail (humane.governance.trail_db) and the identity basic-auth authenticated.

Requests are recognised the way MLflow routes them: every (route, method) that `handlers.get_endpoints()`
registers for a guarded protobuf request class (both /api/ and /ajax-api/ prefixes, every API version), matched on
Flask's `request.url_rule`; the body is parsed with the handler's own parser, so the rule sees what the handler
will act on. GraphQL exposes no registry mutation (its mutations are searches) and is left to basic-auth.

Environment: HUMANE_TRAIL_DB_URI (the writer's PostgreSQL URI, required), HUMANE_LOCK_TIMEOUT_S (default 60),
besides basic-auth's own (MLFLOW_FLASK_SERVER_SECRET_KEY, MLFLOW_AUTH_CONFIG_PATH,
MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD); the backend store URI comes from `mlflow server` itself.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from humane.core.errors import HumaneError, IntegrityFailed, ServerUnavailable
from humane.governance import registry, signoff, trail_db
from humane.governance.identity import MLFLOW_SERVER, Actor
from humane.governance.registry import CHAMPION
from humane.governance.team_client import INTEGRITY_CODE
from humane.governance.trail_db import DbTrail, LockBusy

_log = logging.getLogger(__name__)

API = "/api/humane/v1"
CREATED_BY_TAG = "humane.created_by"  # run tag: the MLflow user who created the run
REGISTERED_BY_TAG = "humane.registered_by"  # version tag: the MLflow user who registered the version
RESERVED_PREFIX = "humane."
RESERVED_VERSION_KEYS = ("approval", "triggered_by")  # and approval.*, humane.*: written by the sign-off only
TRAIL_DB_ENV, LOCK_TIMEOUT_ENV = "HUMANE_TRAIL_DB_URI", "HUMANE_LOCK_TIMEOUT_S"
CHAMPION_REFUSAL = (
    "champion moves only through humane's sign-off: python -m tasks.approve ... (see docs/explanation/threat-model.md)"
)
REFUSED, DENIED = "HUMANE_REFUSED", "PERMISSION_DENIED"


class ServerConfigError(HumaneError):
    """The server's environment is missing what humane's plugin needs; the message names it."""


@dataclass(frozen=True)
class Settings:
    """What the plugin reads from its environment, checked once at start-up."""

    trail_dsn: str
    tracking_uri: str
    registry_uri: str
    lock_timeout_s: float


def check_environment(env: Mapping[str, str] | None = None) -> Settings:
    """The plugin's settings, or ServerConfigError naming what is missing (a launcher may call it first)."""
    from mlflow.server.constants import BACKEND_STORE_URI_ENV_VAR, REGISTRY_STORE_URI_ENV_VAR

    env = os.environ if env is None else env
    dsn = env.get(TRAIL_DB_ENV, "").strip()
    if not dsn:
        raise ServerConfigError(
            f"{TRAIL_DB_ENV} is not set: humane's server plugin keeps the audit trail in "
            "PostgreSQL; set it to the trail writer's URI (see docs/tutorial/team-mode.md)"
        )
    tracking = env.get(BACKEND_STORE_URI_ENV_VAR, "").strip()
    if not tracking or tracking.startswith(("http://", "https://")):
        raise ServerConfigError(
            f"the backend store URI ({BACKEND_STORE_URI_ENV_VAR}, set by `mlflow server "
            f"--backend-store-uri`) is {tracking or 'unset'}: the sign-off writes straight "
            "to the server's database, so it must be a database URI"
        )
    try:
        timeout = float(env.get(LOCK_TIMEOUT_ENV, "60"))
    except ValueError as err:
        raise ServerConfigError(f"{LOCK_TIMEOUT_ENV}={env.get(LOCK_TIMEOUT_ENV)!r} is not a number of seconds") from err
    registry = env.get(REGISTRY_STORE_URI_ENV_VAR, "").strip() or tracking
    return Settings(dsn, tracking, registry, timeout)


def create_app(app: Any = None) -> Any:
    """The `mlflow.app` factory: basic-auth's app (Flask, or FastAPI around it under uvicorn) with humane's rules.

    With `--app-name humane` the `mlflow server` command does not bootstrap basic-auth's database before forking
    the workers (it does so only for `basic-auth`), so each worker runs that bootstrap (migrations, the admin
    user) here, one worker at a time under a PostgreSQL advisory lock; basic-auth's create_app then finds it done.
    """
    from mlflow.server import app as mlflow_app
    from mlflow.server.auth import bootstrap_admin_user
    from mlflow.server.auth import create_app as basic_auth_app

    settings = check_environment()
    flask_app = mlflow_app if app is None else app
    busy = "another MLflow server worker is still setting up basic-auth's database"
    with trail_db.advisory_lock(settings.trail_dsn, trail_db.BOOTSTRAP_LOCK_KEY, 300, busy):
        bootstrap_admin_user()
    served = basic_auth_app(flask_app)
    DbTrail(settings.trail_dsn).rows()  # fail at start-up when the trail is unreachable or not granted
    install(flask_app, settings)
    if hasattr(served, "middleware"):  # FastAPI (uvicorn): its own artifact routes bypass Flask
        add_artifact_guard(served)
    return served


# --- the rules on MLflow's own endpoints ------------------------------------------------------------------------


def _is_admin(user: str) -> bool:
    from mlflow.server.auth import store as auth_store

    return bool(auth_store.get_user(user).is_admin)


def _is_reviewer(user: str, name: str) -> bool:
    """An administrator, or MANAGE on the model (and no DENY)."""
    if _is_admin(user):
        return True
    permission = model_permission(user, name)
    return bool(permission.can_manage and not permission.denied)


def _champion_alias(message: Any, user: str) -> str | None:
    return CHAMPION_REFUSAL if message.alias.strip().lower() == CHAMPION else None


def _admin_only(what: str) -> Callable[[Any, str], str | None]:
    def rule(message: Any, user: str) -> str | None:
        if _is_admin(user):
            return None
        return (
            f"{what} is reserved to administrators in team mode (it would erase or take over the sign-off "
            f"record); {user} is not one"
        )

    return rule


# What a registration rewrites in its run: the card (it shows the sign-off) and the decision (bound to the trail by
# its sha256). Everything else, monitoring's baseline (reports/audit.json, reports/metrics.json, the reference)
# included, is written once.
WRITABLE_AGAIN = ("model_card",)
WRITABLE_FILES = ("reports/decision.json",)


def overwrite_refusal(artifact_path: str) -> str | None:
    """Artifacts are written once: a file that exists is never replaced.

    That keeps a registered model's weights and code the files that were checked and signed off, and a run's
    reports the ones monitoring compares with. The card and the decision are the exception (a registration
    rewrites them); what cannot be checked is refused.
    """
    from mlflow.server.handlers import _get_artifact_repo_mlflow_artifacts

    head, tail = posixpath.split(artifact_path.strip("/"))
    if posixpath.basename(head) in WRITABLE_AGAIN or f"{posixpath.basename(head)}/{tail}" in WRITABLE_FILES:
        return None
    try:
        listed = {posixpath.basename(f.path) for f in _get_artifact_repo_mlflow_artifacts().list_artifacts(head)}
    except Exception as err:
        return f"humane: cannot tell whether artifact {artifact_path!r} exists ({type(err).__name__}); refused"
    if tail in listed:
        return (
            f"humane: artifact {artifact_path!r} exists and artifacts are written once in team mode (a registered "
            "model's files must stay the files that were checked and signed off)"
        )
    return None


def _write_once(message: Any, user: str) -> str | None:
    from flask import request

    return overwrite_refusal(str((request.view_args or {}).get("artifact_path", "")))


ARTIFACT_PUT_PREFIXES = ("/api/2.0/mlflow-artifacts/artifacts/", "/ajax-api/2.0/mlflow-artifacts/artifacts/")


def add_artifact_guard(fastapi_app: Any) -> None:
    """Under uvicorn the artifact upload route is FastAPI's, not Flask's: the same write-once rule there."""
    from urllib.parse import unquote

    from mlflow.server.handlers import _add_static_prefix
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse

    prefixes = tuple(_add_static_prefix(p) for p in ARTIFACT_PUT_PREFIXES)

    @fastapi_app.middleware("http")
    async def humane_write_once(request: Any, call_next: Any) -> Any:
        path = request.url.path
        if request.method == "PUT" and path.startswith(prefixes):
            prefix = next(p for p in prefixes if path.startswith(p))
            refusal = await run_in_threadpool(overwrite_refusal, unquote(path[len(prefix) :]))
            if refusal is not None:
                return JSONResponse({"error_code": DENIED, "message": refusal}, status_code=403)
        return await call_next(request)


def _create_model(message: Any, user: str) -> str | None:
    """Administrators only; for a model that exists, MLflow's own answer, so `mlflow.register_model` still works."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS
    from mlflow.server.handlers import _get_model_registry_store

    if _is_admin(user):
        return None
    try:
        _get_model_registry_store().get_registered_model(message.name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return _admin_only("creating a registered model")(message, user)
    raise MlflowException(f"Registered Model (name={message.name}) already exists.", RESOURCE_ALREADY_EXISTS)


def reserved_key(key: str, on_version: bool) -> bool:
    """True for a tag only humane's server writes (compared without case or surrounding blanks)."""
    key = key.strip().lower()
    if not on_version:  # the pipeline keeps its own humane.* run tags (run key, completion); the stamp is ours
        return key == CREATED_BY_TAG
    return key.startswith(RESERVED_PREFIX) or key in RESERVED_VERSION_KEYS or key.startswith("approval.")


def _reserved_refusal(keys: list[str], on_version: bool, user: str) -> str | None:
    held = [k for k in keys if reserved_key(k, on_version)]
    if not held:
        return None
    return (
        f"tag {held[0]!r} is reserved: humane's server writes it (identities, sign-off state); no client may "
        f"set or delete it, {user} included"
    )


def _key_rule(on_version: bool) -> Callable[[Any, str], str | None]:
    return lambda message, user: _reserved_refusal([message.key], on_version, user)


def _tags_rule(on_version: bool) -> Callable[[Any, str], str | None]:
    return lambda message, user: _reserved_refusal([t.key for t in message.tags], on_version, user)


def _both(*checks: Callable[[Any, str], str | None]) -> Callable[[Any, str], str | None]:
    return lambda message, user: next((r for r in (check(message, user) for check in checks) if r), None)


def rules() -> dict[type, Callable[[Any, str], str | None]]:
    """Request class -> rule(parsed message, user) returning the refusal's text, or None to let it through."""
    from mlflow.protos import mlflow_artifacts_pb2 as art
    from mlflow.protos import model_registry_pb2 as reg
    from mlflow.protos import service_pb2 as svc

    return {
        art.UploadArtifact: _write_once,
        art.DeleteArtifact: _admin_only("deleting an artifact"),
        art.CreateMultipartUpload: _admin_only("a multipart artifact upload"),
        art.CompleteMultipartUpload: _admin_only("a multipart artifact upload"),
        reg.SetRegisteredModelAlias: _champion_alias,
        reg.DeleteRegisteredModelAlias: _champion_alias,
        reg.DeleteModelVersion: _admin_only("deleting a model version"),
        reg.DeleteRegisteredModel: _admin_only("deleting a registered model"),
        reg.RenameRegisteredModel: _admin_only("renaming a registered model"),
        reg.CreateRegisteredModel: _both(_tags_rule(False), _create_model),
        reg.SetModelVersionTag: _key_rule(True),
        reg.DeleteModelVersionTag: _key_rule(True),
        reg.CreateModelVersion: _tags_rule(True),
        reg.SetRegisteredModelTag: _key_rule(False),
        reg.DeleteRegisteredModelTag: _key_rule(False),
        svc.SetTag: _key_rule(False),
        svc.DeleteTag: _key_rule(False),
        svc.SetExperimentTag: _key_rule(False),
        svc.DeleteExperimentTag: _key_rule(False),
        svc.LogBatch: _tags_rule(False),
        svc.CreateRun: _tags_rule(False),
        svc.CreateExperiment: _tags_rule(False),
    }


@dataclass
class _Plugin:
    """The plugin's state on the Flask app (`app.extensions["humane"]`)."""

    settings: Settings
    routes: dict[tuple[str, str], type]  # (Flask rule, method) -> guarded request class
    rules: dict[type, Callable[[Any, str], str | None]]
    promptlab_endpoint: str | None  # the UI's create-promptlab-run route: a CreateRun in another shape
    _client: Any = field(default=None, repr=False)

    @property
    def trail(self) -> DbTrail:
        """The PostgreSQL trail, as the server's writer role."""
        return DbTrail(self.settings.trail_dsn)

    def client(self) -> Any:
        """An MlflowClient on the server's own database (no HTTP: the rules above do not apply to the server)."""
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(
                tracking_uri=self.settings.tracking_uri, registry_uri=self.settings.registry_uri
            )
        return self._client


def _route_map(guarded: dict[type, Any]) -> dict[tuple[str, str], type]:
    """Every route MLflow registers for a guarded request class, from the same table the server is built from."""
    from mlflow.server.handlers import get_endpoints

    return {
        (path, method): kind
        for path, kind, methods in get_endpoints(lambda kind: kind)
        if isinstance(kind, type) and kind in guarded
        for method in methods
    }


def install(flask_app: Any, settings: Settings) -> None:
    """Add humane's rules, stamps and API to MLflow's Flask app (after basic-auth's create_app)."""
    import mlflow.server as mlflow_server

    guarded = rules()
    promptlab = getattr(mlflow_server, "serve_create_promptlab_run", None)
    flask_app.extensions["humane"] = _Plugin(
        settings, _route_map(guarded), guarded, promptlab.__name__ if promptlab else None
    )
    flask_app.before_request(_guard)
    flask_app.before_request(_guard_grants)
    flask_app.after_request(_stamp)
    _add_api(flask_app)


def _plugin() -> _Plugin:
    from flask import current_app

    return current_app.extensions["humane"]


def _error(status: int, code: str, message: str) -> Any:
    from flask import jsonify

    response = jsonify({"error_code": code, "message": message})
    response.status_code = status
    return response


def _user() -> str | None:
    from flask import g

    return g.get("mlflow_authenticated_user")


def _guarded_class(plugin: _Plugin) -> type | None:
    from flask import request

    rule = request.url_rule
    return None if rule is None else plugin.routes.get((rule.rule, request.method))


def _guard() -> Any:
    """before_request, after basic-auth's: refuse what breaks humane's rules, whoever asks."""
    from flask import request
    from mlflow.exceptions import MlflowException
    from mlflow.server.handlers import _get_request_message

    plugin = _plugin()
    kind = _guarded_class(plugin)
    promptlab = plugin.promptlab_endpoint is not None and request.endpoint == plugin.promptlab_endpoint
    if kind is None and not promptlab:
        return None
    user = _user()
    if not user:  # basic-auth answers 401 before this; never let an unauthenticated write through
        return _error(401, "UNAUTHENTICATED", "humane: this request carries no authenticated MLflow user")
    try:
        refusal = _promptlab_refusal(user) if promptlab else plugin.rules[kind](_get_request_message(kind()), user)
    except MlflowException as err:  # the handler would refuse the same body the same way
        return _error(err.get_http_status_code(), err.error_code, err.message)
    return None if refusal is None else _error(403, DENIED, refusal)


GRANT_ROUTES = (
    "GRANT_USER_PERMISSION",
    "REVOKE_USER_PERMISSION",
    "CREATE_ROLE",
    "UPDATE_ROLE",
    "DELETE_ROLE",
    "ADD_ROLE_PERMISSION",
    "REMOVE_ROLE_PERMISSION",
    "UPDATE_ROLE_PERMISSION",
    "ASSIGN_ROLE",
    "UNASSIGN_ROLE",
)


def grant_rules() -> set[str]:
    """The rules of basic-auth's routes that hand out or take away permissions and roles (and their UI twins)."""
    from mlflow.server.auth import routes
    from mlflow.server.handlers import _add_static_prefix

    names = [n for base in GRANT_ROUTES for n in (base, f"AJAX_{base}") if hasattr(routes, n)]
    return {_add_static_prefix(getattr(routes, n)) for n in names}


def _guard_grants() -> Any:
    """Only an administrator grants or revokes permissions and roles.

    MANAGE on a model would otherwise let a reviewer make anyone a reviewer (e.g. an account whose password they
    know, to approve their own run).
    """
    from flask import request

    rule = request.url_rule
    if rule is None or rule.rule not in _grant_rules():
        return None
    user = _user()
    if user and _is_admin(user):
        return None
    return _error(403, DENIED, f"humane: only an administrator grants or revokes permissions and roles ({user})")


_GRANTS: set[str] = set()


def _grant_rules() -> set[str]:
    if not _GRANTS:
        _GRANTS.update(grant_rules())
    return _GRANTS


def _promptlab_refusal(user: str) -> str | None:
    from flask import request

    body = request.get_json(silent=True)
    tags = body.get("tags") if isinstance(body, dict) else None
    keys = [str(t.get("key", "")) for t in tags if isinstance(t, dict)] if isinstance(tags, list) else []
    return _reserved_refusal(keys, False, user)


# --- identities stamped after creation ---------------------------------------------------------------------------


def _stamp(response: Any) -> Any:
    """after_request: record the authenticated user on a run or model version just created."""
    from flask import request
    from mlflow.protos import model_registry_pb2 as reg
    from mlflow.protos import service_pb2 as svc

    plugin = _plugin()
    if response.status_code != 200:
        return response
    kind = _guarded_class(plugin)
    promptlab = plugin.promptlab_endpoint is not None and request.endpoint == plugin.promptlab_endpoint
    if kind is not svc.CreateRun and kind is not reg.CreateModelVersion and not promptlab:
        return response
    user, data = _user(), response.get_json(silent=True)
    try:
        if kind is reg.CreateModelVersion:
            _stamp_version(data["model_version"], user)
        else:
            _stamp_run(data["run"], user)
    except Exception as err:  # never answer 200 for an entity without its stamps
        _log.exception("humane: could not stamp the new entity")
        if kind is reg.CreateModelVersion and _take_back(data["model_version"]):
            what = "the version was not created: its creator or its files' manifest could not be recorded"
        else:
            what = f"created, but its stamps (creator {user}, files' manifest) could not be recorded; ask an admin"
        return _error(500, "INTERNAL_ERROR", f"humane: {what} ({type(err).__name__}: {err})")
    response.set_data(json.dumps(data))
    return response


def _take_back(version: dict[str, Any]) -> bool:
    """Delete a version whose stamps could not be written, so that a retried registration makes it afresh."""
    from mlflow.server.handlers import _get_model_registry_store

    try:
        _get_model_registry_store().delete_model_version(version["name"], version["version"])
    except Exception:
        _log.exception("humane: could not delete the unstamped version %s v%s", version["name"], version["version"])
        return False
    return True


def _stamp_run(run: dict[str, Any], user: str) -> None:
    from mlflow.entities import RunTag
    from mlflow.server.handlers import _get_tracking_store

    _get_tracking_store().set_tag(run["info"]["run_id"], RunTag(CREATED_BY_TAG, user))
    _put_tag(run.setdefault("data", {}).setdefault("tags", []), CREATED_BY_TAG, user)


def _stamp_version(version: dict[str, Any], user: str) -> None:
    from mlflow.entities.model_registry import ModelVersionTag
    from mlflow.server.handlers import _get_model_registry_store

    _get_model_registry_store().set_model_version_tag(
        version["name"], version["version"], ModelVersionTag(REGISTERED_BY_TAG, user)
    )
    _put_tag(version.setdefault("tags", []), REGISTERED_BY_TAG, user)
    manifest = _files_manifest(version)  # what registration recorded, out of every client's reach (humane.*)
    if manifest is None:  # not registered from a logged model: nothing to hash, and it never verifies
        return
    _get_model_registry_store().set_model_version_tag(
        version["name"], version["version"], ModelVersionTag(registry.MANIFEST_TAG, manifest)
    )
    _put_tag(version["tags"], registry.MANIFEST_TAG, manifest)


def _files_manifest(version: dict[str, Any]) -> str | None:
    """The manifest (humane.governance.registry) of the logged model a new version is registered from, if any."""
    import tempfile
    from pathlib import Path
    from urllib.parse import urlsplit

    from mlflow.server.handlers import _get_artifact_repo_mlflow_artifacts, _get_tracking_store
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    source = str(version.get("source", ""))
    model_id = version.get("model_id") or (source.removeprefix("models:/") if source.startswith("models:/m-") else "")
    if not model_id:
        return None
    location = _get_tracking_store().get_logged_model(model_id).artifact_location
    if location.startswith("mlflow-artifacts:"):
        repo, path = _get_artifact_repo_mlflow_artifacts(), urlsplit(location).path.lstrip("/")
    else:
        repo, path = get_artifact_repository(location), ""
    with tempfile.TemporaryDirectory(prefix="humane-manifest-") as tmp:
        return registry.manifest_tag(Path(repo.download_artifacts(path, tmp)))


def _put_tag(tags: list[dict[str, str]], key: str, value: str) -> None:
    """Show the stamp in the response too (the entity returned is the one stored)."""
    tags[:] = [t for t in tags if t.get("key") != key] + [{"key": key, "value": value}]


# --- the sign-off API --------------------------------------------------------------------------------------------


class _Refused(Exception):
    """An API call refused before the sign-off runs (bad input, missing role)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _api(view: Callable[[], Any]) -> Callable[[], Any]:
    """Turn refusals and errors into MLflow-style JSON answers naming what was refused and why."""
    from mlflow.exceptions import MlflowException

    @functools.wraps(view)
    def answer() -> Any:
        try:
            return view()
        except _Refused as err:
            return _error(err.status, err.code, err.message)
        except (LockBusy, signoff.SignOffError) as err:
            return _error(409, REFUSED, str(err))
        except IntegrityFailed as err:  # e.g. the trail's chain does not verify: the client exits 12
            _log.error("humane: %s failed: %s", view.__name__, err)
            return _error(409, INTEGRITY_CODE, str(err))
        except ServerUnavailable as err:  # the trail's database: the client reports it as unavailable (exit 10)
            _log.error("humane: %s failed: %s", view.__name__, err)
            return _error(503, "TEMPORARILY_UNAVAILABLE", str(err))
        except HumaneError as err:
            _log.error("humane: %s failed: %s", view.__name__, err)
            return _error(500, "INTERNAL_ERROR", str(err))
        except MlflowException as err:
            return _error(err.get_http_status_code(), err.error_code, err.message)

    return answer


def _add_api(flask_app: Any) -> None:
    """The routes under /api/humane/v1/, declared to basic-auth as open to any authenticated user.

    basic-auth authenticates them in its before_request like any route; registering a validator also keeps them
    reachable when MLFLOW_BASIC_AUTH_FAIL_CLOSED is on. The sign-off calls check the role themselves.
    """
    from mlflow.server import auth
    from mlflow.server.handlers import _add_static_prefix

    for path, view, method in (
        ("whoami", _whoami, "GET"),
        ("trail", _trail, "GET"),
        ("signoff/request", _request_signoff, "POST"),
        ("signoff/decide", _decide, "POST"),
        ("champion/rollback", _rollback, "POST"),
    ):
        rule = _add_static_prefix(f"{API}/{path}")
        flask_app.add_url_rule(rule, f"humane_{view.__name__.lstrip('_')}", _api(view), methods=[method])
        auth.BEFORE_REQUEST_VALIDATORS[(rule, method)] = _any_authenticated_user


def _any_authenticated_user() -> bool:
    """basic-auth validator: authenticated is enough (the view checks roles where they matter)."""
    return True


def _caller() -> str:
    user = _user()
    if not user:
        raise _Refused(401, "UNAUTHENTICATED", "humane: no authenticated MLflow user on this request")
    return user


def _body() -> dict[str, Any]:
    from flask import request

    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise _Refused(400, "INVALID_PARAMETER_VALUE", "humane: the request body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str, required: bool = True) -> str:
    value = body.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise _Refused(400, "INVALID_PARAMETER_VALUE", f"humane: {key!r} must be a non-empty string")
    return value.strip()


def model_permission(user: str, name: str) -> Any:
    """The user's permission on a registered model, resolved as basic-auth resolves it for its own endpoints.

    Direct and role grants, DENY and default_permission, for the user basic-auth already authenticated (its own
    `_get_registered_model_permission` would authenticate the request a second time).
    """
    from mlflow.server.auth import _get_role_permission_or_default, _role_permission_for
    from mlflow.server.handlers import _get_model_registry_store

    return _get_role_permission_or_default(
        _role_permission_for(
            username=user,
            resource_type="registered_model",
            resource_key=name,
            workspace_lookup_id=name,
            workspace_fetcher=_get_model_registry_store().get_registered_model,
            workspace_label="registered model",
        )
    )


def _require(user: str, name: str, manage: bool, action: str) -> None:
    """Refuse (403) unless the user is an administrator or holds EDIT (trainer) / MANAGE (reviewer) on the model."""
    if _is_admin(user):
        return
    permission = model_permission(user, name)
    allowed = permission.can_manage if manage else (permission.can_update or permission.can_manage)
    if not allowed or permission.denied:
        needed = "MANAGE (the reviewer role)" if manage else "EDIT (the trainer role) or MANAGE"
        raise _Refused(
            403,
            DENIED,
            f"{user} may not {action} {name}: that needs {needed} on the registered "
            f"model, and {user} holds {permission.name}",
        )


def _actor(user: str, body: dict[str, Any]) -> Actor:
    display = _text(body, "display_name", required=False) or user
    return Actor(account=user, authority=MLFLOW_SERVER, display=display)


def _locked(plugin: _Plugin) -> Any:
    return trail_db.advisory_lock(
        plugin.settings.trail_dsn,
        trail_db.PROMOTION_LOCK_KEY,
        plugin.settings.lock_timeout_s,
        "another sign-off is in progress",
    )


def _whoami() -> Any:
    from flask import jsonify

    user = _caller()
    return jsonify({"humane": True, "user": user, "is_admin": _is_admin(user)})


def _trail() -> Any:
    from flask import jsonify

    _caller()
    return jsonify({"rows": _plugin().trail.rows()})


def triggers(mlflow_client: Any, name: str, version: str, user: str) -> list[str]:
    """Who triggered the version, from the server's own stamps: its registrant, its run's creator, and the caller."""
    record = mlflow_client.get_model_version(name, version)
    run_creator = mlflow_client.get_run(record.run_id).data.tags.get(CREATED_BY_TAG, "") if record.run_id else ""
    return sorted({record.tags.get(REGISTERED_BY_TAG, ""), run_creator, user} - {""})


def _request_signoff() -> Any:
    from flask import jsonify

    user, body, plugin = _caller(), _body(), _plugin()
    name, version = _text(body, "model"), _text(body, "version")
    _require(user, name, manage=False, action="ask a sign-off for")
    client = plugin.client()
    with _locked(plugin):
        accounts = triggers(client, name, version, user)
        result = signoff.request_signoff(
            client,
            plugin.trail,
            name,
            version,
            _actor(user, body),
            accounts,
            True,  # four eyes, always, in team mode
            _text(body, "channel", required=False),
            may_withdraw=_is_reviewer(user, name),
        )
    return jsonify(result)


def _decide() -> Any:
    from flask import jsonify

    user, body, plugin = _caller(), _body(), _plugin()
    name, version = _text(body, "model"), _text(body, "version")
    if not isinstance(body.get("approve"), bool):
        raise _Refused(400, "INVALID_PARAMETER_VALUE", "humane: 'approve' must be true or false")
    _require(user, name, manage=True, action="decide a sign-off of")
    with _locked(plugin):
        entry = signoff.decide(
            plugin.client(),
            plugin.trail,
            name,
            version,
            body["approve"],
            _actor(user, body),
            _text(body, "comment", required=False),
            _text(body, "channel", required=False),
        )
    return jsonify({"entry": entry})


def _rollback() -> Any:
    from flask import jsonify

    user, body, plugin = _caller(), _body(), _plugin()
    name = _text(body, "model")
    to_version = _text(body, "to_version") if body.get("to_version") is not None else None
    _require(user, name, manage=True, action="roll back the champion of")
    with _locked(plugin):
        entry = signoff.rollback(
            plugin.client(),
            plugin.trail,
            name,
            to_version,
            _actor(user, body),
            _text(body, "comment", required=False),
            _text(body, "channel", required=False),
        )
    return jsonify({"entry": entry})
