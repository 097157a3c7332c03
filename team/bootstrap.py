"""Set a team stack up for its people: `python -m team.bootstrap [--settings team.yaml]`, on any stack.

From a YAML of models and accounts (see team/accounts.example.yaml) it creates, idempotently:
- MLflow users; a password comes from $HUMANE_PASSWORD_<NAME> if set, else it is generated once and written to
  `<accounts dir>/<name>.env` (0600), never printed;
- the registered models and their experiments (model `humane-X` -> experiment `humane-X`, artifacts proxied by the
  server) and each account's permissions on them (see PERMISSIONS);
- the Prefect work pool `humane-process`, the promotion mutex (global concurrency limit, limit 1) and the
  automation that marks a killed flow run Crashed (automations/crash_zombie_flow_runs.yaml);
- the audit trail's schema (humane.governance.trail_db.install_schema, as the trail database's owner).

The stack and its administrators' credentials come from the environment: MLFLOW_TRACKING_URI with
MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD of an MLflow admin, PREFECT_API_URL with PREFECT_API_AUTH_STRING,
HUMANE_TRAIL_OWNER_DSN. For the local stack: `set -a; . .team/team.env; . .team/secrets/admin.env; set +a`
(what `make team-bootstrap` does). `--only trail|mlflow|prefect` runs one part: on a new real stack the trail's
schema must exist before the MLflow server with humane's plugin starts (the local stack's `up` installs it).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from humane.core.errors import ConfigError, HumaneError, cli
from team.settings import PROJECT, StackError, format_env, read_env, team_dir, write_private

POOL = "humane-process"
ZOMBIE_AUTOMATION = Path(__file__).resolve().parents[1] / "automations" / "crash_zombie_flow_runs.yaml"
TRAIL_WRITER = "humane_trail_writer"
# What each part needs from the environment. The trail comes first: humane's MLflow server plugin checks it at
# start-up, so on a new stack `--only trail` runs before the MLflow server is started, the rest after.
PARTS = {
    "trail": ("HUMANE_TRAIL_OWNER_DSN",),
    # The Prefect auth string goes into the account files bootstrap writes.
    "mlflow": (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "PREFECT_API_AUTH_STRING",
    ),
    "prefect": ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING"),
}
Role = Literal["trainer", "reviewer", "reader"]
# What each role may do. Registered model: a trainer registers versions and moves `challenger` (EDIT); a reviewer
# decides, which moves or removes `champion` (MANAGE; deleting an alias needs it). Experiment: both write runs (a
# reviewer updates the card's artifacts); a reader only reads. A person with several roles gets the highest.
PERMISSIONS: dict[str, dict[str, str]] = {
    "registered_model": {"trainer": "EDIT", "reviewer": "MANAGE", "reader": "READ"},
    "experiment": {"trainer": "EDIT", "reviewer": "EDIT", "reader": "READ"},
}
RANK = ("READ", "USE", "EDIT", "MANAGE")


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class TeamSpec(BaseModel):
    """The team file: the registered models and each account's roles."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[Annotated[str, Field(pattern=r"^humane-[A-Za-z0-9_.-]+$")]]
    accounts: dict[
        Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")],
        Annotated[list[Role], BeforeValidator(_as_list), Field(min_length=1)],
    ]


def load_spec(path: Path) -> TeamSpec:
    """Read and check the team file."""
    try:
        return TeamSpec.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ValidationError) as err:
        raise ConfigError(f"{path}: {err}") from err


def permission(resource: str, roles: list[str]) -> str:
    """The highest permission `roles` give on a resource type."""
    return max((PERMISSIONS[resource][role] for role in roles), key=RANK.index)


def required_env(parts: list[str]) -> dict[str, str]:
    """The URLs and administrators' credentials `parts` need, from the environment; all of them, or a clear error."""
    names = list(dict.fromkeys(name for part in parts for name in PARTS[part]))
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        raise StackError(
            f"set {', '.join(missing)} (for the local stack: set -a; . .team/team.env; "
            ". .team/secrets/admin.env; set +a)"
        )
    return {name: os.environ[name] for name in names}


# ---------------------------------------------------------------- MLflow


def _not_found(err: Exception) -> bool:
    return getattr(err, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def ensure_model(client: Any, name: str) -> None:
    """The registered model `name` (created by the admin)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if not _not_found(err):
            raise
        client.create_registered_model(name, description="humane: promoted only after its checks and a sign-off")
        print(f"registered model {name}: created")


def ensure_experiment(client: Any, name: str) -> str:
    """The experiment `name` (restored if deleted; artifacts where the server puts them); its id."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        print(f"experiment {name}: created")
        return client.create_experiment(name)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
        print(f"experiment {name}: restored")
    return experiment.experiment_id


def _password_var(name: str) -> str:
    return "HUMANE_PASSWORD_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def ensure_user(auth: Any, name: str, accounts: Path, env: dict[str, str]) -> None:
    """The MLflow user `name`: password from $HUMANE_PASSWORD_<NAME>, else from/into `accounts/<name>.env`."""
    from mlflow.exceptions import MlflowException

    try:
        auth.get_user(name)
        exists = True
    except MlflowException as err:
        if not _not_found(err):
            raise
        exists = False
    given = os.environ.get(_password_var(name))
    if given and exists:
        auth.update_user_password(name, given)
        print(f"user {name}: password set from ${_password_var(name)}")
        return
    if given:
        auth.create_user(name, given)
        print(f"user {name}: created with the password in ${_password_var(name)}")
        return
    path = accounts / f"{name}.env"
    if path.exists():
        if not exists:
            auth.create_user(name, read_env(path)["MLFLOW_TRACKING_PASSWORD"])
            print(f"user {name}: created with the password in {path}")
        return
    if exists:
        print(f"user {name}: exists; its password is not in {path} nor ${_password_var(name)}: left unchanged")
        return
    password = secrets.token_urlsafe(18)
    auth.create_user(name, password)
    _write_account(path, name, password, env)
    print(f"user {name}: created; credentials in {path}")


def _write_account(path: Path, name: str, password: str, env: dict[str, str]) -> None:
    """The account's secrets only: the server URLs are in team.env (they may change; these do not)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    credentials = {"MLFLOW_TRACKING_USERNAME": name, "MLFLOW_TRACKING_PASSWORD": password}
    write_private(path, format_env({**credentials, "PREFECT_API_AUTH_STRING": env["PREFECT_API_AUTH_STRING"]}))


def ensure_permission(auth: Any, user: str, resource_type: str, resource_id: str, wanted: str) -> None:
    """Give `user` exactly `wanted` on one resource (a changed role replaces the old grant)."""
    from mlflow.exceptions import MlflowException

    if auth.get_user_permission(user, resource_type, resource_id).permission == wanted:
        return
    try:
        auth.revoke_user_permission(user, resource_type, resource_id)
    except MlflowException as err:
        if not _not_found(err):
            raise
    auth.grant_user_permission(user, resource_type, resource_id, wanted)


def bootstrap_mlflow(spec: TeamSpec, env: dict[str, str], accounts: Path) -> None:
    """Models, experiments, users and their permissions on the MLflow server (as its admin)."""
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    uri = env["MLFLOW_TRACKING_URI"]
    tracking, auth = MlflowClient(uri, uri), get_app_client("basic-auth", tracking_uri=uri)
    experiments = {}
    for model in spec.models:
        ensure_model(tracking, model)
        experiments[model] = ensure_experiment(tracking, model)
    for name, roles in spec.accounts.items():
        ensure_user(auth, name, accounts, env)
        for model, experiment_id in experiments.items():
            ensure_permission(auth, name, "registered_model", model, permission("registered_model", roles))
            ensure_permission(auth, name, "experiment", experiment_id, permission("experiment", roles))
        print(f"user {name}: {'+'.join(roles)} on {', '.join(spec.models)}")


# ---------------------------------------------------------------- Prefect and the trail


def bootstrap_prefect() -> None:
    """The process work pool and the promotion mutex (a global concurrency limit of 1) on the Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    from humane.governance.team_client import PROMOTION_LIMIT

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(POOL)
            if pool.type != "process":
                raise StackError(f"work pool {POOL} exists with type {pool.type!r}; humane needs a process pool")
        except ObjectNotFound:
            template = ProcessWorker.get_default_base_job_template()
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process", base_job_template=template))
            print(f"work pool {POOL}: created")
        client.upsert_global_concurrency_limit_by_name(PROMOTION_LIMIT, limit=1)
        limit = client.read_global_concurrency_limit_by_name(PROMOTION_LIMIT)
        if not limit.active:
            raise StackError(f"global concurrency limit {PROMOTION_LIMIT} is inactive: activate it in the Prefect UI")
        print(f"global concurrency limit {PROMOTION_LIMIT}: limit {limit.limit}")
        ensure_zombie_automation(client)


def ensure_zombie_automation(client: Any) -> None:
    """automations/crash_zombie_flow_runs.yaml on the server (once, by name): a killed run ends Crashed."""
    from prefect.events.schemas.automations import AutomationCore

    spec = yaml.safe_load(ZOMBIE_AUTOMATION.read_text())
    if client.read_automations_by_name(spec["name"]):
        print(f"automation {spec['name']}: present")
        return
    client.create_automation(AutomationCore.model_validate(spec))
    print(f"automation {spec['name']}: created (flow runs without heartbeats end Crashed)")


def bootstrap_trail(owner_dsn: str) -> None:
    """The audit trail's schema, with INSERT and SELECT only for the server's login."""
    from humane.governance.trail_db import install_schema

    install_schema(owner_dsn, TRAIL_WRITER)
    print(f"audit trail: schema installed, {TRAIL_WRITER} may INSERT and SELECT")


def bootstrap(spec: TeamSpec, accounts: Path, parts: list[str]) -> None:
    """The chosen parts, in order: trail, MLflow, Prefect."""
    from humane.governance.trail_db import dsn_text

    env = required_env(parts)
    if "trail" in parts:
        dsn = env["HUMANE_TRAIL_OWNER_DSN"]
        _step(f"audit trail ({dsn_text(dsn)})", bootstrap_trail, dsn)
    if "mlflow" in parts:
        _step(f"MLflow ({env['MLFLOW_TRACKING_URI']})", bootstrap_mlflow, spec, env, accounts)
    if "prefect" in parts:
        _step(f"Prefect ({env['PREFECT_API_URL']})", bootstrap_prefect)


def _step(what: str, func: Callable[..., None], *args: Any) -> None:
    """Run one part; a server's error becomes one line naming the part and the server."""
    try:
        func(*args)
    except HumaneError:
        raise
    except Exception as err:  # the servers' clients raise many types; all of them are reported, none swallowed
        raise StackError(f"{what}: {type(err).__name__}: {err}") from err


def main(argv: list[str] | None = None) -> None:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m team.bootstrap", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--settings",
        type=Path,
        default=PROJECT / "team" / "accounts.example.yaml",
        help="the team file: models and accounts (default: team/accounts.example.yaml)",
    )
    parser.add_argument(
        "--accounts-dir", type=Path, help="where generated credentials go (default: $HUMANE_TEAM_DIR/accounts)"
    )
    parser.add_argument("--only", choices=list(PARTS), action="append", help="only this part (repeatable)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    bootstrap(load_spec(args.settings), args.accounts_dir or team_dir() / "accounts", args.only or list(PARTS))
    print(f"bootstrap done in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    cli(main)
