"""Team mode, client side: the MLflow tracking server running humane's plugin is the authority.

A checkout is in team mode when its tracking URI is an MLflow server that answers humane's plugin API
(`/api/humane/v1/whoami`, see humane.governance.server_app). Then the server authenticates every identity
(the MLflow user whose credentials made the request), keeps the audit trail in PostgreSQL, and is the only one
that records sign-off events and moves `champion`; this module sends it requests and reads its trail.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from humane.core.errors import AccessRefused, HumaneError, IntegrityFailed, ServerUnavailable
from humane.governance.store import RETRY_ENV, StoreError, retry_budget, retry_plan, safe_uri

API = "/api/humane/v1"
INTEGRITY_CODE = "INTEGRITY_FAILED"  # the server's answer when its trail or a recorded hash does not verify
POST_TIMEOUT_S = 120  # above the server's promotion-lock wait (server_app: HUMANE_LOCK_TIMEOUT_S, 60 s by default)


class TeamError(HumaneError):
    """The team server refused a request (the message is the server's reason)."""


class TeamUnavailable(StoreError, ServerUnavailable):
    """The team server (or the trail database behind it) could not be reached or failed: exit 10, nothing moved."""


def _user() -> str:
    return os.environ.get("MLFLOW_TRACKING_USERNAME") or "(no MLFLOW_TRACKING_USERNAME)"


def is_http(uri: str) -> bool:
    """True for a tracking server URI."""
    return uri.startswith(("http://", "https://"))


def call(uri: str, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request to the plugin API with this checkout's MLflow credentials; the JSON answer.

    A refusal (4xx) raises TeamError with the server's message (AccessRefused for credentials it does not
    accept); a server that cannot be reached or answers 5xx raises TeamUnavailable: nothing is assumed from silence.
    """
    kwargs: dict[str, Any] = {"json": payload} if method != "GET" else {"params": payload or {}}
    response = _request(uri, method, path, **kwargs)
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text[:500]}
    if response.status_code >= 500:
        raise TeamUnavailable(
            f"team server {safe_uri(uri)}: {API}/{path} answered {response.status_code}: {body.get('message')}"
        )
    if response.status_code == 401:
        raise _refused(uri, response.status_code)
    if response.status_code == 403:  # a permission the account lacks: the server's words name it
        raise AccessRefused(
            f"refused by the team server (403) for MLflow user {_user()!r}: {body.get('message', body)}"
        )
    if body.get("error_code") == INTEGRITY_CODE:
        raise IntegrityFailed(f"team server {safe_uri(uri)}: {body.get('message')}")
    if response.status_code >= 400:
        raise TeamError(f"refused by the team server ({response.status_code}): {body.get('message', body)}")
    return body


def _request(uri: str, method: str, path: str, **kwargs: Any) -> Any:
    """One HTTP request to the plugin API with this checkout's MLflow credentials; unreachable: TeamUnavailable.

    A GET retries within HUMANE_SERVER_RETRY_S (store.retry_budget). A POST (a sign-off, a rollback) is sent
    once: its answer may take up to POST_TIMEOUT_S (it may wait on the server's promotion lock), and a retry after
    a lost answer could act twice; one that failed is TeamUnavailable, to be rerun by the person (the state
    machine refuses a second decision, so a rerun after a lost answer says it was decided).
    """
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    plan = retry_plan(retry_budget())
    get = method == "GET"
    try:
        return http_request(
            get_default_host_creds(uri),
            f"{API}/{path}",
            method,
            max_retries=plan.retries if get else 0,
            backoff_factor=plan.backoff_factor,
            backoff_jitter=0,
            timeout=plan.timeout_s if get else POST_TIMEOUT_S,
            raise_on_status=False,
            **kwargs,
        )
    except Exception as err:
        raise TeamUnavailable(
            f"team server {safe_uri(uri)}: {method} {API}/{path} failed"
            + (f" after retrying within {RETRY_ENV}={plan.budget_s} s" if get else " (sent once; rerun it)")
            + f": {type(err).__name__}: {str(err).replace(uri, safe_uri(uri))}"
        ) from err


def _refused(uri: str, status: int) -> AccessRefused:
    return AccessRefused(
        f"tracking server {safe_uri(uri)} refused the credentials of MLflow user {_user()!r} (HTTP {status}): check "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (see docs/tutorial/team-mode.md)"
    )


@functools.lru_cache(maxsize=8)
def _probe(uri: str) -> bool:
    response = _request(uri, "GET", "whoami")
    if response.status_code == 404:
        return False
    if response.status_code in (401, 403):
        raise _refused(uri, response.status_code)
    if response.status_code != 200:
        raise TeamUnavailable(f"tracking server {safe_uri(uri)}: {API}/whoami answered {response.status_code}")
    try:
        return bool(response.json().get("humane"))
    except ValueError:
        return False


MODE_ENV = "HUMANE_MODE"  # team | local: what the checkout expects (team.env sets team)


def is_team(uri: str) -> bool:
    """True when `uri` is a tracking server running humane's plugin (team mode).

    Never decided by silence: with HUMANE_MODE=team a store without the plugin is an error; a tracking server
    without the plugin is used as a plain store only when HUMANE_MODE=local says so (nothing server-enforced).
    """
    mode = os.environ.get(MODE_ENV, "").strip().lower()
    if mode not in ("", "team", "local"):
        raise TeamError(f"{MODE_ENV}={mode!r}: expected team or local")
    team = is_http(uri) and _probe(uri)
    if mode == "team" and not team:
        raise TeamError(
            f"{MODE_ENV}=team but {uri} is not a tracking server running humane's plugin (mlflow server "
            "--app-name humane): refusing to fall back to local mode"
        )
    if is_http(uri) and not team and mode != "local":
        raise TeamError(
            f"{uri} is a tracking server without humane's plugin, so nothing there enforces the sign-off: start it "
            f"with --app-name humane (docs/explanation/threat-model.md), or set {MODE_ENV}=local to use it as a plain "
            "store"
        )
    return team


def whoami(uri: str) -> dict[str, Any]:
    """The identity the team server authenticated for this checkout's credentials."""
    return call(uri, "GET", "whoami")


@dataclass(frozen=True)
class ServerTrail:
    """The team's audit trail, kept by the server in PostgreSQL; read and verified here, appended only there."""

    uri: str

    @property
    def where(self) -> str:
        """The server."""
        return f"the team server's trail ({self.uri})"

    def read(self) -> list[dict[str, Any]]:
        """Every entry, after verifying the server's hash chain here."""
        from humane.governance.trail_db import verify_rows

        rows = call(self.uri, "GET", "trail")["rows"]
        return verify_rows(rows, where=self.where)

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Refused: in team mode only the server appends, with the identity it authenticated."""
        raise TeamError(
            f"team mode: a checkout does not write the trail; the server records {entry.get('event')} events itself"
        )


def trail_for(uri: str, local_path: Any) -> Any:
    """The trail in force: the server's in team mode, else the project's JSON Lines file at `local_path`."""
    from humane.governance.audit_trail import FileTrail

    return ServerTrail(uri) if is_team(uri) else FileTrail(local_path)


def dumps(payload: Any) -> str:
    """Canonical JSON (sorted keys, no spaces) as the trail hashes it."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)


PROMOTION_LIMIT = "humane-promotion"  # the Prefect global concurrency limit (limit 1) the bootstrap creates
LOCK_TIMEOUT_ENV = "HUMANE_LOCK_TIMEOUT_S"
# How long a registration waits for the promotion mutex by default: registrations queue behind each other, and under
# load one holds it for a minute or more (bench/load.py: 8 runs at once on 2 cores queued past 300 s).
MUTEX_WAIT_S = 1800
LEASE_S = 60  # renewed while held; a crashed holder's slot is freed by the server when the lease runs out


def check_mutex() -> None:
    """The limit must exist, be active and hold one slot: Prefect lets an inactive or wider limit lock nothing."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as prefect:
            limit = prefect.read_global_concurrency_limit_by_name(PROMOTION_LIMIT)
    except Exception as err:
        raise TeamError(
            f"the promotion mutex {PROMOTION_LIMIT!r} cannot be read from the Prefect server: {type(err).__name__}: "
            f"{err} (does it exist? run python -m team.bootstrap)"
        ) from err
    if not limit.active or limit.limit != 1:
        raise TeamError(
            f"the promotion mutex {PROMOTION_LIMIT!r} is {'inactive' if not limit.active else f'limit {limit.limit}'}"
            ": it would not serialise registrations; an administrator must set it active with limit 1"
        )


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextmanager
def promotion_mutex(timeout_s: float | None = None) -> Iterator[None]:
    """Serialise registrations across machines: one slot of the Prefect server's `humane-promotion` limit.

    Strict: a missing limit is an error, never "nothing to lock". A bounded wait (HUMANE_LOCK_TIMEOUT_S,
    default MUTEX_WAIT_S) ends in a clear error; a holder that dies loses the slot when its lease runs out.
    """
    from prefect.concurrency._asyncio import AcquireConcurrencySlotTimeoutError, ConcurrencySlotAcquisitionError
    from prefect.concurrency.sync import concurrency
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise TeamError(
            f"team mode: the promotion mutex is the Prefect server's global concurrency limit "
            f"{PROMOTION_LIMIT!r}; set PREFECT_API_URL and PREFECT_API_AUTH_STRING (docs/tutorial/team-mode.md)"
        )
    wait = timeout_s if timeout_s is not None else float(os.environ.get(LOCK_TIMEOUT_ENV, MUTEX_WAIT_S))
    check_mutex()
    # Said on stderr (the stage's log): a registration queued behind another one shows why it waits, and when it
    # held the slot (tests/team read these lines to check that two registrations never held it at once).
    _say(f"asking for the promotion mutex {PROMOTION_LIMIT!r} (one registration at a time; waits up to {wait:g} s)")
    try:
        with concurrency(PROMOTION_LIMIT, occupy=1, timeout_seconds=wait, lease_duration=LEASE_S, strict=True):
            _say(f"took the promotion mutex at {datetime.now(UTC).isoformat()}")
            try:
                yield
            finally:
                _say(f"releasing the promotion mutex at {datetime.now(UTC).isoformat()}")
    except AcquireConcurrencySlotTimeoutError as err:
        raise TeamError(
            f"the promotion mutex {PROMOTION_LIMIT!r} stayed held by another registration for {wait:g} "
            f"s; try again later (or raise {LOCK_TIMEOUT_ENV})"
        ) from err
    except ConcurrencySlotAcquisitionError as err:
        raise TeamError(
            f"the promotion mutex {PROMOTION_LIMIT!r} cannot be taken on {PREFECT_API_URL.value()}: "
            f"{err} (does the limit exist? run python -m team.bootstrap)"
        ) from err
