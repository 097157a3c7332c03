"""MLflow store access at the edges: a client on a given URI, the fluent API pointed at it, the experiment."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from humane.core.errors import AccessRefused, ConfigError, HumaneError, IntegrityFailed, ServerUnavailable

# MLflow 3's UI opens an experiment on its GenAI overview unless the experiment says it is model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
# The time given to an MLflow server that does not answer, retries and waits included (seconds).
RETRY_ENV, DEFAULT_RETRY_S, MIN_RETRY_S = "HUMANE_SERVER_RETRY_S", 30, 4
RETRIES = 3  # attempts after the first; the budget sets the backoff and the per-request timeout


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


@dataclass(frozen=True)
class RetryPlan:
    """MLflow's own HTTP retry settings, derived from one budget so that retrying never outlasts it."""

    budget_s: int
    retries: int
    backoff_factor: int
    timeout_s: int

    @property
    def worst_case_s(self) -> int:
        """Every attempt timing out plus every wait between attempts (urllib3 waits 0, 2f, 4f, ...)."""
        return (self.retries + 1) * self.timeout_s + self.backoff_factor * (2**self.retries - 2)

    def environment(self) -> dict[str, str]:
        """The MLFLOW_HTTP_REQUEST_* variables MLflow reads on every request."""
        return {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.retries),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(self.backoff_factor),
            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.timeout_s),
        }


def retry_plan(budget_s: int) -> RetryPlan:
    """A fifth of the budget for the waits between attempts, the rest shared by the attempts' timeouts."""
    waits = 2**RETRIES - 2
    backoff = int(budget_s * 0.2) // waits
    timeout = max(1, (budget_s - backoff * waits) // (RETRIES + 1))
    return RetryPlan(budget_s, RETRIES, backoff, timeout)


def retry_budget(env: dict[str, str] | None = None) -> int:
    """HUMANE_SERVER_RETRY_S (default 30): whole seconds, at least 4; ConfigError naming the setting otherwise."""
    raw = (os.environ if env is None else env).get(RETRY_ENV, "").strip()
    if not raw:
        return DEFAULT_RETRY_S
    try:
        budget = int(raw)
    except ValueError:
        budget = 0
    if budget < MIN_RETRY_S:
        raise ConfigError(f"{RETRY_ENV}={raw!r}: expected whole seconds, at least {MIN_RETRY_S}")
    return budget


def is_remote(uri: str) -> bool:
    """True for a tracking server (http, https), whose requests MLflow retries."""
    return uri.startswith(("http://", "https://"))


def safe_uri(uri: str) -> str:
    """The URI without its user name and password (what may be printed or logged)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


def server_user(uri: str) -> str:
    """The user the requests authenticate as: MLFLOW_TRACKING_USERNAME, else the URI's, else none."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or urlsplit(uri).username
    return repr(user) if user else "(none: MLFLOW_TRACKING_USERNAME is not set)"


@contextmanager
def server_calls(uri: str) -> Iterator[None]:
    """The block's requests to the MLflow server at `uri` retry within HUMANE_SERVER_RETRY_S, then fail clearly.

    Sets MLflow's MLFLOW_HTTP_REQUEST_* variables for the block only (restored after, so a long-lived process
    keeps its own), keeps urllib3's per-attempt retry warnings and MLflow's progress bars quiet, and turns a server
    that did not answer into ServerUnavailable and a refused login or permission into AccessRefused: one line
    each, naming the server without credentials. A full disk under a local store is a StoreError naming it.
    """
    quiet = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    if not is_remote(uri):
        with scoped_environment(quiet), full_store_errors():
            yield
        return
    plan = retry_plan(retry_budget())
    pool_log = logging.getLogger("urllib3.connectionpool")
    level = pool_log.level
    pool_log.setLevel(logging.ERROR)
    try:
        with scoped_environment({**plan.environment(), **quiet}), full_store_errors():
            yield
    except Exception as err:  # also a HumaneError raised on a server's silence: said once, the same way
        translated = server_error(err, uri, plan)
        if translated is None:
            raise
        raise translated from None
    finally:
        pool_log.setLevel(level)


@contextmanager
def scoped_environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block only; their earlier values (or absence) come back after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def full_store_errors() -> Iterator[None]:
    """A full disk or quota under a local artifact store or database: StoreError naming the file, one line."""
    import errno

    try:
        yield
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise StoreError(
            f"MLflow store: no space left writing {err.filename or 'its files'} ({os.strerror(err.errno)}): "
            "free space and rerun (the rerun completes what this attempt began)"
        ) from None


def server_error(err: BaseException, uri: str, plan: RetryPlan) -> HumaneError | None:
    """ServerUnavailable or AccessRefused for an error caused by the server's silence or refusal; else None."""
    import requests
    from mlflow.exceptions import MlflowException

    where = safe_uri(uri)
    for cause in _chain(err):
        if isinstance(cause, requests.exceptions.RetryError):  # answered, but only with errors (5xx, 429)
            return ServerUnavailable(
                f"MLflow server {where} answered only errors for {plan.budget_s} s of retries ({RETRY_ENV}="
                f"{plan.budget_s}; {_reason(cause)}): see the server's log (a full artifact store?), then rerun"
            )
        if isinstance(cause, requests.exceptions.SSLError):  # a ConnectionError too: said before it
            return IntegrityFailed(
                f"MLflow server {where}: its TLS certificate could not be verified ({_reason(cause)}): set "
                "MLFLOW_TRACKING_SERVER_CERT_PATH to the file of the CA that signed it (team.env does), then rerun"
            )
        if isinstance(cause, (requests.ConnectionError, requests.Timeout)):
            return ServerUnavailable(
                f"MLflow server {where} did not answer within {plan.budget_s} s of retries "
                f"({RETRY_ENV}={plan.budget_s}; {type(cause).__name__}): start it or raise {RETRY_ENV}, then rerun"
            )
        status = None
        if isinstance(cause, MlflowException):
            status = cause.get_http_status_code()
        elif isinstance(cause, requests.HTTPError) and cause.response is not None:
            status = cause.response.status_code
        if status == 401:
            return AccessRefused(
                f"MLflow server {where} refused the credentials of user {server_user(uri)} (HTTP 401): check "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
            )
        if status == 403:  # the server's own words say which permission (they hold no secret)
            said = " ".join(str(getattr(cause, "message", cause)).split())[:300]
            return AccessRefused(f"MLflow server {where} refused user {server_user(uri)} (HTTP 403): {said}")
    return None


def _reason(err: BaseException) -> str:
    """urllib3's reason for giving up (e.g. "too many 500 error responses"), without the URL."""
    reason = getattr(err.args[0], "reason", None) if err.args else None
    return str(reason) if reason is not None else type(err).__name__


def _chain(err: BaseException) -> Iterator[BaseException]:
    """The error, then its causes and contexts, each once."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
