"""The training flow: the stages of dvc.yaml (load to register), in its order, each run as `dvc repro` runs it.

Each stage is a Prefect task that waits for the stages whose outputs it reads, so the run's graph is the
pipeline. A stage DVC reports as up to date ends in a Completed state named Skipped; a stage that runs is
recorded in dvc.lock. Without overrides the flow runs in the project folder, like `dvc repro`; with
overrides it runs in an isolated workspace saved as a DVC experiment (humane.pipeline.workspace).
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import deployment, flow_run
from prefect.states import Completed, Failed, State

from flows.retries import retry_unexpected
from humane.core import io
from humane.core.context import PREFECT_ENTRY, RunContext
from humane.core.errors import HumaneError, exit_code
from humane.core.params import read_raw
from humane.core.paths import Paths
from humane.data.datasets import BUILTINS
from humane.governance import approvals, signoff, team_client
from humane.governance.card import decision_page, group_rows
from humane.governance.gate import Decision
from humane.governance.registry import current_champion
from humane.governance.store import client
from humane.pipeline import workspace
from humane.pipeline.params import Params, apply_overrides, check_paths, parse_params

# Retries only where a stage talks to a server (the tracking store and registry); never on training, and never
# for a HumaneError (flows.retries).
RETRIES = {"track": 2, "register": 2}


# The flow's end states, by name, and `python -m flows.training`'s exit status for each (docs/reference/exit-codes.md).
COMPLETED = "Completed"  # the candidate is champion
AWAITING = "AwaitingSignOff"  # Completed type: passed, waits for a sign-off (no Prefect server to pause on)
NOT_APPROVED = "NotApproved"  # Failed type: paused for a sign-off that did not come in time; still pending
REJECTED = "Rejected"  # Failed type: refused by the gate or at sign-off
NOT_PROMOTED = "NotPromoted"  # Failed type: passed the checks, yet not champion (e.g. rolled back since)
# A stage's error ends the run Failed, and the command exits with the error's code (humane.core.errors).
EXIT = {COMPLETED: 0, REJECTED: 3, NOT_PROMOTED: 3, AWAITING: 7, NOT_APPROVED: 7}


@task(name="check-params", cache_policy=NO_CACHE)
def check_params(project: Path, overrides: dict[str, Any]) -> Params:
    """Refuse overrides outside the allow-list and paths outside the project, before anything runs."""
    params = parse_params(apply_overrides(read_raw(Paths(project).params), overrides))
    check_paths(params, project, frozenset(BUILTINS))
    return params


@task(cache_policy=NO_CACHE)
def run_stage(stage: workspace.Stage, params: Params, paths: Paths, ctx: RunContext) -> Any:
    """Run one dvc.yaml stage's implementation unless DVC says it is current, then record it in dvc.lock."""
    logger = get_run_logger()
    if not workspace.is_stale(stage.name, paths.root):
        return Completed(name="Skipped", message=f"stage {stage.name} is up to date (dvc.lock); not run")
    summary = importlib.import_module(stage.module).run(params, paths, ctx)
    workspace.record(stage.name, paths.root)
    logger.info("%s", summary)
    return summary


@task(name="publish", cache_policy=NO_CACHE)
def publish(paths: Paths, ctx: RunContext, fresh: bool) -> dict[str, Any]:
    """Show the decision (as registered) and the per-group table on the flow run's page; the registration now.

    `fresh` is False when nothing changed since an earlier run registered the candidate: the page then says
    the decision is the one recorded at that time. Whether the candidate is champion or awaits a sign-off is read
    from the registry as it is now (`standing`), so a pending candidate is never shown as promoted.
    """
    registration = standing(ctx, io.read_json(paths.registration))
    decision = Decision.from_dict(io.read_json(paths.decision))
    name, version = registration["model_name"], registration["version"]
    page = decision_page(decision, name, version, awaiting=registration["pending"])
    if decision.passed and not registration["promoted"] and not registration["pending"]:
        page = f"_{name} v{version} is not champion (sign-off: {registration['approval'] or 'none'})._\n\n" + page
    if not fresh:
        page = "_Nothing changed since this candidate was registered: the decision below was recorded then._\n\n" + page
    create_markdown_artifact(key="promotion-decision", markdown=page, description="Gate")
    audit = io.read_json(paths.audit_report)
    description = "Per-group test metrics with 95% bootstrap CIs"
    create_table_artifact(key="bias-audit-groups", table=group_rows(audit), description=description)
    return registration


class SignOff(RunInput):
    """The form a paused run shows: the decision, who takes it, and why."""

    decision: Literal["approve", "reject"]
    approver: str
    comment: str


# How often a paused run asks the API whether it was resumed.
SIGNOFF_POLL_S = 2


def await_signoff(params: Params, ctx: RunContext, registration: dict[str, Any]) -> State:
    """Pause for a decision on a pending candidate; resumed, read the decision from the registry.

    The form cannot authenticate who fills it (Prefect's open-source server has no users). Locally its decision
    is taken as this run's operating-system account, the one that registered the candidate, so under four eyes
    it is refused; in team mode it is never taken. A refused or ignored answer leaves the run paused for a valid
    decision, which arrives through `python -m tasks.approve` (it wakes this run). On Prefect's ephemeral API
    (no server) the run ends AwaitingSignOff. No decision within gate.approval_timeout_s: the run ends
    NotApproved and the version stays pending. The project lock is not held while the run waits.
    """
    from prefect.settings import PREFECT_API_URL

    name, version = registration["model_name"], registration["version"]
    cli_hint = f"python -m tasks.approve {name} {version} --approve (or --reject) --comment TEXT"
    if not PREFECT_API_URL.value():
        return Completed(name="AwaitingSignOff", message=f"{name} v{version} awaits sign-off: {cli_hint}")
    team = team_client.is_team(ctx.tracking_uri)
    client(ctx.tracking_uri).set_model_version_tag(name, version, approvals.FLOW_RUN_TAG, str(flow_run.id))
    deadline = time.monotonic() + params.gate.approval_timeout_s
    evidence = signoff.explanation_evidence(client(ctx.tracking_uri), ctx.tracking_uri, name, version)
    form = SignOff.with_initial_data(description=signoff_description(params, registration, team, cli_hint) + evidence)
    while (decided := finished(ctx, name, version)) is None:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise FlowPauseTimeout
            answer = pause_flow_run(wait_for_input=form, timeout=max(1, int(remaining)), poll_interval=SIGNOFF_POLL_S)
        except FlowPauseTimeout:
            return timed_out(params, ctx, name, version, cli_hint)
        if finished(ctx, name, version) is None:
            take_form_decision(ctx, answer, name, version, team)
    return decided


def signoff_description(params: Params, registration: dict[str, Any], team: bool, cli_hint: str) -> str:
    """What the paused run's form says: what is decided, where the evidence is, who may decide and how."""
    name, version = registration["model_name"], registration["version"]
    if team:
        who = (
            " Team mode: this form cannot approve (Prefect does not authenticate who fills it). A reviewer "
            f"decides with their own MLflow credentials: {cli_hint}; this run then resumes by itself."
        )
    else:
        who = (
            " This form decides as the operating-system account running the flow, which registered the candidate:"
            f" under four eyes another account decides with {cli_hint}."
            if params.gate.four_eyes
            else ""
        )
    return (
        f"**Sign-off: {name} v{version}** passed every automated check and waits for a decision before "
        f"`champion` moves. The evidence is on this flow run's Artifacts tab: `promotion-decision` (every check "
        f"against the policy), `bias-audit-groups` (per-group metrics with 95% CIs), `model-card` (the card as "
        f"registered) and `model-card-link` (the card in MLflow run {registration.get('run_id', '?')}).{who} "
        f"Without a decision within {params.gate.approval_timeout_s} s the run ends NotApproved and the version "
        "stays pending."
    )


def finished(ctx: RunContext, name: str, version: str) -> State | None:
    """The run's end once the version is decided (read from the registry), else None."""
    status = approvals.status(ctx.tracking_uri, name, version)
    if status == signoff.APPROVED:
        return Completed(message=f"{name} v{version} promoted to champion after sign-off")
    if status == signoff.REJECTED:
        return Failed(name="Rejected", message=f"{name} v{version} rejected at sign-off (the audit record says why)")
    return None


def take_form_decision(ctx: RunContext, answer: SignOff, name: str, version: str, team: bool) -> None:
    """Submit the form's decision locally; a refusal is printed and the run waits on."""
    logger = get_run_logger()
    if team:
        logger.warning("the form's answer for %s v%s is not a decision in team mode; still waiting", name, version)
        return
    try:
        approvals.submit_decision(
            ctx.tracking_uri,
            ctx.project,
            name,
            version,
            answer.decision == "approve",
            answer.approver,
            answer.comment,
            f"prefect flow run {flow_run.id}",
        )
    except HumaneError as err:
        logger.warning("sign-off refused: %s; champion unchanged, still waiting for a valid decision", err)


def timed_out(params: Params, ctx: RunContext, name: str, version: str, cli_hint: str) -> State:
    """Recorded, then the run's own NotApproved state set on the server (`end_paused_run`)."""
    waited = params.gate.approval_timeout_s
    approvals.record_timeout(ctx.tracking_uri, ctx.project, name, version, f"prefect flow run {flow_run.id}", waited)
    print(
        f"no sign-off of {name} v{version} within {waited} s: champion unchanged, the version stays pending "
        f"({cli_hint})"
    )
    message = (
        f"{name} v{version}: no sign-off within {waited} s; champion unchanged, the version stays pending ({cli_hint})"
    )
    end_paused_run(Failed(name=NOT_APPROVED, message=message))
    return Failed(name=NOT_APPROVED, message=message)


def end_paused_run(state: State) -> None:
    """Put the paused run in `state` on the server, bypassing the orchestration rules.

    Prefect's local wait for a resume outlasts the pause's deadline on the server, which then turns any state the
    run proposes from Paused into an anonymous Failed state ("... never resumed"). Set first, the run's own named
    state stands, and the state the flow then returns is accepted as a Failed to Failed transition.
    """
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        prefect.set_flow_run_state(flow_run.id, state, force=True)


def standing(ctx: RunContext, registration: dict[str, Any]) -> dict[str, Any]:
    """The registration as the registry holds it now: is the version champion, does it wait for a sign-off.

    Read again rather than taken from reports/registration.json, which a run that changed nothing inherits from
    the run that registered the candidate (the champion may have moved, or a person decided, since).
    """
    name, version = registration["model_name"], registration["version"]
    champion = current_champion(client(ctx.tracking_uri), name)
    promoted = champion is not None and str(champion.version) == str(version)
    approval = approvals.status(ctx.tracking_uri, name, version)
    pending = bool(registration.get("passed_checks")) and not promoted and approval == signoff.PENDING
    return {**registration, "promoted": promoted, "approval": approval, "pending": pending}


def outcome(registration: dict[str, Any], fresh: bool = True) -> State:
    """The run's end state, from the registration as the registry holds it now (`standing`).

    Completed only when the candidate is champion; AwaitingSignOff (a Completed state) when it waits for a
    person; Failed states named Rejected (the gate's reasons, or a person's rejection) or NotPromoted otherwise. A
    run that changed nothing (every stage current) ends the same way, its message saying so.
    """
    name, number = registration["model_name"], registration["version"]
    version = f"{name} v{number}"
    head = "" if fresh else f"nothing changed since an earlier run registered {version}: "
    if registration["promoted"]:
        return Completed(message=head + f"{version} {'promoted to' if fresh else 'is'} champion")
    if registration.get("pending"):
        return Completed(
            name=AWAITING,
            message=head + f"{version} passed the automated checks and awaits sign-off: "
            f"python -m tasks.approve {name} {number} --approve (or --reject) --comment TEXT",
        )
    if registration.get("approval") == signoff.REJECTED:
        return Failed(
            name=REJECTED,
            message=head + f"{version} was rejected at sign-off (python -m tasks.approve "
            f"{name} {number} --export shows by whom and why)",
        )
    if registration.get("passed_checks"):
        return Failed(
            name=NOT_PROMOTED,
            message=head + f"{version} passed the automated checks but is not champion "
            f"(sign-off: {registration.get('approval') or 'none asked'}); champion unchanged",
        )
    return Failed(name=REJECTED, message=head + f"{version} not promoted: " + "; ".join(registration["reasons"]))


@contextmanager
def workspace_for(project: Path, overrides: dict[str, Any]) -> Iterator[Paths]:
    """The project folder (no overrides, one run at a time) or an isolated workspace saved as an experiment."""
    if not overrides:
        with workspace.workspace_lock(project):
            yield Paths(project)
        return
    # Flow-run names repeat now and then; the id's first characters make the experiment's name unique.
    with workspace.isolated(project, overrides, f"prefect-{flow_run.name}-{str(flow_run.id)[:8]}") as paths:
        yield paths


@flow(name="training", log_prints=True)
def training(overrides: dict[str, Any] | None = None, requested_by: str | None = None) -> State:
    """Load → validate → audit data → preprocess → train → evaluate → audit → track → gate → register → sign-off.

    Args:
        overrides: allow-listed params to change for this run only (humane.pipeline.params.OVERRIDABLE), e.g.
            ``{"train.lr": 0.003}``. The project's params.yaml is left as it is.
        requested_by: the name shown for whoever asked for the run (a display name: four eyes compares the
            authenticated account that registered the candidate, i.e. the account running this flow).

    """
    overrides = dict(overrides or {})
    project = Path.cwd()
    check_params(project, overrides)
    if requested_by is None and deployment.id:  # a deployment run names no person unless it is told one
        requested_by = f"deployment training/{deployment.name}"
    ctx = RunContext(project, PREFECT_ENTRY, str(flow_run.id), flow_run.name, overrides, requested_by)
    with workspace_for(project, overrides) as paths:
        params = check_params.fn(paths.root, {})  # the run's own params.yaml, overrides applied
        states: dict[str, State] = {}
        for stage in workspace.stages(paths.dvc_yaml):
            run = run_stage.with_options(
                name=stage.name,
                retries=RETRIES.get(stage.name, 0),
                retry_delay_seconds=[2, 10],
                retry_condition_fn=retry_unexpected,
            )
            states[stage.name] = run(
                stage, params, paths, ctx, wait_for=[states[u] for u in stage.upstream], return_state=True
            )
            states[stage.name].result()  # a failed stage stops the run here, with its error
        fresh = states["register"].name != "Skipped"
        registration = publish(paths, ctx, fresh, wait_for=[states["register"]])
        card = paths.model_card_md.read_text()
    if registration["pending"] and (params.gate.require_approval or team_client.is_team(ctx.tracking_uri)):
        create_markdown_artifact(key="model-card", markdown=card, description="The model card as registered")
        create_link_artifact(
            key="model-card-link",
            link=approvals.card_link(ctx.tracking_uri, registration["run_id"]),
            link_text=f"Model card of {registration['model_name']} v{registration['version']} (MLflow)",
            description="The registered card in MLflow",
        )
        return await_signoff(params, ctx, registration)
    return outcome(registration, fresh)


def end_state(state: State) -> str:
    """The name an exit table reads for a final state: its own name, or NotApproved for Prefect's pause timeout.

    Prefect's pause-timeout state is an unnamed Failed state that directly follows a Paused state whose deadline
    had passed (the server's pause-expiry service, or its refusal of a late transition); it is read from the run's
    state history, never from the message.
    """
    from prefect.settings import PREFECT_API_URL

    unnamed_failure = state.is_failed() and state.name == "Failed" and state.state_details.flow_run_id
    if unnamed_failure and PREFECT_API_URL.value() and pause_expired(state.state_details.flow_run_id):
        return NOT_APPROVED  # only a server pauses a run
    return state.name or state.type.value


def pause_expired(flow_run_id: Any) -> bool:
    """True when the flow run's last state is Failed and the one before it a Paused state past its deadline."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        history = sorted(prefect.read_flow_run_states(flow_run_id), key=lambda s: s.timestamp)
    if len(history) < 2 or not history[-1].is_failed() or not history[-2].is_paused():
        return False
    deadline = history[-2].state_details.pause_timeout
    return deadline is not None and deadline <= history[-1].timestamp


def main(argv: list[str]) -> int:
    """`python -m flows.training [key=value ...]`: run the flow locally; values are YAML 1.2, as `dvc exp run -S`.

    The exit status is read from the end state's name (EXIT) or, for a failed stage, from its error's type.
    """
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)  # YAML 1.2: 1e-3 is a number (PyYAML's YAML 1.1 reads it as text)
    overrides = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            print(f"error: expected key=value, got {arg!r}", file=sys.stderr)
            return 2
        overrides[key] = yaml.load(value)
    return exit_status(training(overrides=overrides or None, return_state=True), EXIT)


def exit_status(state: State, table: dict[str, int]) -> int:
    """A command's exit status for a flow's final state, printing why.

    `table` maps the state's name (`end_state`) to a status; a state not in it exits with the code of the error it
    holds (humane.core.errors; an unexpected error is raised: a traceback, exit 1), else 0.
    """
    end = end_state(state)
    if end in table:
        print(state.message, file=sys.stderr if table[end] else sys.stdout)
        return table[end]
    try:
        state.result()  # re-raises the error of a failed stage
    except HumaneError as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_code(err)
    print(state.message)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
