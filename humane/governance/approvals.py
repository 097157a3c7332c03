"""Where a sign-off decision goes: the team server (team mode) or the local store and trail (local mode).

In team mode this checkout only asks: the MLflow server's plugin authenticates the caller, checks the role
and runs humane.governance.signoff itself, under its PostgreSQL lock, with its own trail. In local mode the
same functions run here, under the promotion lock, with the operating-system account as the identity and
the project's JSON Lines trail. Either way the run's card files are updated afterwards, with this
checkout's credentials (the decision is already recorded; the card only shows it).
"""

from __future__ import annotations

import html
import os
import tempfile
from pathlib import Path
from typing import Any

from humane.governance import audit_trail, signoff, team_client
from humane.governance.audit_trail import FileTrail, Trail
from humane.governance.card import AWAITING, SIGNED, SIGNOFF_PENDING, Card, add_decision
from humane.governance.gate import Decision
from humane.governance.identity import local_actor
from humane.governance.registry import promotion_lock
from humane.governance.store import StoreError, client


def trail_for(uri: str, project: Path) -> Trail:
    """The trail in force for this store: the team server's, else the project's file."""
    from humane.core.paths import Paths

    return team_client.ServerTrail(uri) if team_client.is_team(uri) else FileTrail(Paths(project).audit_trail)


def channel() -> str:
    """Where a command-line decision was taken."""
    return f"cli ({local_actor().account}@{os.uname().nodename})"


def submit_decision(
    uri: str, project: Path, name: str, version: str, approve: bool, display: str | None, comment: str, where: str
) -> dict[str, Any]:
    """Approve or reject; the trail entry. Team mode: the server decides who is asking."""
    if team_client.is_team(uri):
        payload = {
            "model": name,
            "version": str(version),
            "approve": approve,
            "comment": comment,
            "display_name": display or "",
            "channel": where,
        }
        entry = _entry_of(team_client.call(uri, "POST", "signoff/decide", payload))
    else:
        with promotion_lock(uri):
            entry = signoff.decide(
                client(uri), trail_for(uri, project), name, str(version), approve, local_actor(display), comment, where
            )
    update_card_files(uri, name, str(version), entry)
    return entry


def submit_rollback(
    uri: str, project: Path, name: str, to_version: str | None, comment: str, display: str | None = None
) -> dict[str, Any]:
    """Move champion back (to an earlier approved version, or off any); the trail entry."""
    if team_client.is_team(uri):
        payload = {"model": name, "to_version": to_version, "comment": comment, "channel": channel()}
        return _entry_of(team_client.call(uri, "POST", "champion/rollback", payload))
    with promotion_lock(uri):
        return signoff.rollback(
            client(uri), trail_for(uri, project), name, to_version, local_actor(display), comment, channel()
        )


FLOW_RUN_TAG = "signoff.flow_run"  # the Prefect flow run paused on this version's sign-off, to wake it


def wake_paused_run(uri: str, entry: dict[str, Any]) -> None:
    """Resume the Prefect run paused on this version, so it reads the decision (a convenience, not a control)."""
    run_id = signoff.read_version(client(uri), entry["model"], entry["version"]).tags.get(FLOW_RUN_TAG)
    if not run_id or entry["event"] not in (signoff.APPROVED, signoff.REJECTED):
        return
    try:
        from prefect.client.orchestration import get_client
        from prefect.flow_runs import resume_flow_run

        with get_client(sync_client=True) as prefect:
            state = prefect.read_flow_run(run_id).state
        if state is not None and state.is_paused():
            answer = {
                "decision": "approve" if entry["event"] == signoff.APPROVED else "reject",
                "approver": entry["by"],
                "comment": "decided through the command line",
            }
            resume_flow_run(run_id, run_input=answer)
            print(f"resumed the paused Prefect flow run {run_id}")
    except Exception as err:  # the decision is recorded; the run reads it when it wakes or times out
        print(f"note: could not resume the paused Prefect flow run {run_id} ({type(err).__name__}: {err})")


def _entry_of(answer: dict[str, Any]) -> dict[str, Any]:
    return answer.get("entry", answer)


def status(uri: str, name: str, version: str) -> str | None:
    """The version's approval tag (pending, approved, rejected), or None when no sign-off was asked for."""
    return signoff.read_version(client(uri), name, version).tags.get(signoff.APPROVAL_TAG)


def verified_champion(uri: str, project: Path, name: str, require_signoff: bool = False) -> Any:
    """The champion as consumers may use it (signoff.verified_champion); team mode always needs the sign-off."""
    team = team_client.is_team(uri)
    return signoff.verified_champion(client(uri), trail_for(uri, project), name, require_signoff or team)


def card_link(uri: str, run_id: str) -> str:
    """Where a person opens the registered card: the MLflow UI's artifact view on a server, else the file."""
    try:
        run = client(uri).get_run(run_id)
    except Exception as err:
        raise StoreError(f"cannot read MLflow run {run_id}: {type(err).__name__}: {err}") from err
    if uri.startswith(("http://", "https://")):
        return (
            f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}/artifacts/"
            "model_card/model_card.html"
        )
    return f"{run.info.artifact_uri.rstrip('/')}/model_card/model_card.html"


def record_timeout(uri: str, project: Path, name: str, version: str, where: str, waited_s: int) -> None:
    """A paused run's sign-off window closed: recorded locally (the team server records decisions only)."""
    if team_client.is_team(uri):
        return
    trail = trail_for(uri, project)
    record = signoff.read_version(client(uri), name, version)
    signoff.held(trail, name, str(version), record.tags)
    actor = local_actor()
    trail.append(
        {
            "event": "timed_out",
            "model": name,
            "version": str(version),
            "run_id": record.run_id,
            "at": signoff.now(),
            "by": actor.account,
            "authority": actor.authority,
            "display": actor.display,
            "channel": where,
            "pending_entry": record.tags.get(signoff.PENDING_ENTRY_TAG),
            "comment": f"no decision within {waited_s} s; the version stays pending",
        }
    )


def update_card_files(uri: str, name: str, version: str, entry: dict[str, Any]) -> None:
    """Replace the run's card files' pending paragraph with the outcome (registered_card.md stays as shown)."""
    from mlflow.artifacts import download_artifacts

    mlflow_client = client(uri)
    record = signoff.read_version(mlflow_client, name, version)
    if not record.run_id or entry["event"] not in (signoff.APPROVED, signoff.REJECTED):
        return
    done = signoff.outcome_text(entry)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(
                download_artifacts(run_id=record.run_id, artifact_path="model_card", dst_path=tmp, tracking_uri=uri)
            )
        except Exception as err:
            raise StoreError(f"cannot read the model card of run {record.run_id}: {type(err).__name__}: {err}") from err
        for file, escape in (("model_card.md", str), ("model_card.html", html.escape)):
            path = local / file
            if path.exists() and escape(SIGNOFF_PENDING) in path.read_text():
                text = path.read_text().replace(escape(SIGNOFF_PENDING), escape(done))
                path.write_text(text.replace(escape(AWAITING), escape(SIGNED)))
                mlflow_client.log_artifact(record.run_id, str(path), "model_card")


def audit_document(uri: str, project: Path, name: str, version: str) -> Card:
    """One version's record for an auditor: its checks, evidence hashes and every sign-off event, verified."""
    trail = trail_for(uri, project)
    record = signoff.read_version(client(uri), name, version)
    tags = record.tags
    signoff.held(trail, name, str(version), tags)  # verifies the chain, and that it holds what the tags name
    events = audit_trail.entries_of(trail, name, str(version), record.run_id)
    card = Card()
    card.heading(f"Audit record: {name} v{version}", 1)
    card.table(
        ["fact", "value"],
        [
            ["approval", tags.get(signoff.APPROVAL_TAG, "not required (registered without gate.require_approval)")],
            ["triggered by (accounts)", tags.get(signoff.TRIGGERED_BY_TAG, "-")],
            ["four eyes", tags.get(signoff.FOUR_EYES_TAG, "-")],
            ["aliases now", ", ".join(record.aliases) or "none"],
            ["MLflow run", record.run_id or "-"],
            *[[k, tags.get(k, "-")] for k in signoff.EVIDENCE_TAGS if k != "run_id"],
            ["audit trail", f"{trail.where} (hash chain verified, {len(trail.read())} entries)"],
        ],
    )
    card.heading("Automated decision")
    decision = signoff.recorded_decision(tags)
    if "checks" in decision:
        add_decision(
            card,
            Decision.from_dict(decision),
            awaiting=tags.get(signoff.APPROVAL_TAG) == signoff.PENDING,
            signed_off=tags.get(signoff.APPROVAL_TAG) in (signoff.APPROVED, signoff.REJECTED),
        )
    else:
        card.para(f"{decision.get('verdict')}: {decision.get('reasons')}")
    card.heading("Sign-off events")
    card.table(
        ["#", "event", "account", "authority", "shown as", "at (UTC)", "comment", "channel", "entry hash"],
        [
            [
                e["seq"],
                e["event"],
                e["by"],
                e.get("authority", "-"),
                e.get("display", "-"),
                e["at"],
                e.get("comment", "-"),
                e.get("channel", "registration"),
                e["hash"],
            ]
            for e in events
        ],
    )
    if not events:
        card.para("No sign-off events: this version was registered without a sign-off requirement.")
    return card


def registry_problems(uri: str, trail: Trail) -> list[str]:
    """Where the registry disagrees with the verified trail.

    Tags naming entries the trail lacks, an approval tag the trail does not back, a champion alias the trail's
    last move does not name.
    """
    entries = trail.read()
    mlflow_client = client(uri)
    problems: list[str] = []
    versions = sorted({(e["model"], str(e["version"])) for e in entries if e.get("version") is not None})
    for name, version in versions:
        try:
            tags = signoff.read_version(mlflow_client, name, version).tags
        except signoff.SignOffError:
            problems.append(f"{name} v{version}: in the trail but not in the registry")
            continue
        try:
            named = signoff.held(trail, name, version, tags)
        except audit_trail.AuditTrailError as err:
            problems.append(str(err))
            continue
        decided = named.get(signoff.ENTRY_TAG)
        approval = tags.get(signoff.APPROVAL_TAG)
        if approval in (signoff.APPROVED, signoff.REJECTED) and (decided is None or decided["event"] != approval):
            problems.append(f"{name} v{version}: tagged {approval} but the trail entry its tags name does not say so")
    for name in sorted({e["model"] for e in entries}):
        move = signoff.last_move(trail, name)
        if move is None:
            continue
        try:
            champion = signoff.current_champion(mlflow_client, name)
        except StoreError as err:
            problems.append(str(err))
            continue
        now = champion.version if champion else None
        if now != move.get("champion_after"):
            problems.append(
                f"{name}: champion is {now and 'v' + now} but the trail's last move "
                f"({move['event']} {move['hash'][:12]}) put it on {move.get('champion_after')}"
            )
    return problems
