"""Sign-off: a named person approves or rejects a candidate that passed the automated checks.

With `gate.require_approval`, registration leaves a passing candidate as `challenger` with the registry tag
`approval: pending` and a `pending` event in the audit trail (humane.governance.audit_trail). `sign_off` is
the one way it leaves that state, whether the decision comes from the paused Prefect run's form or from
`python -m tasks.approve`:

- a candidate that failed the automated checks cannot be approved; one that is not pending cannot be decided
  again (the trail and the tags keep the first decision);
- under `gate.four_eyes` (recorded on the version at registration), whoever triggered the run cannot approve it;
- an approval moves `champion` only while the champion is still the version the decision was judged against;
  otherwise the candidate must be judged again (rerun the pipeline) before anyone can approve it;
- the trail entry is written first, then the version's tags, the card and the alias, so an interrupted
  sign-off is completed by running the same command again, from the recorded entry, never recorded twice.

Names are as declared (`--by`, the form's approver field) beside the operating-system user that ran the
command: authenticating people is the job of the MLflow server's and Prefect's own access control.
"""

from __future__ import annotations

import datetime as dt
import getpass
import html
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from humane.core.errors import HumaneError
from humane.governance import audit_trail
from humane.governance.card import AWAITING, SIGNED, SIGNOFF_PENDING, Card, add_decision
from humane.governance.gate import Decision
from humane.governance.registry import (
    BASIS_TAG,
    CHAMPION,
    DECISION_JSON_TAG,
    DECISION_TAG,
    PASSED,
    TAG_LIMIT,
    current_champion,
    promotion_lock,
    set_alias,
    set_description,
    set_tags,
)  # fmt: skip
from humane.governance.store import StoreError, client

APPROVAL_TAG = "approval"
PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
TRIGGERED_BY_TAG = "triggered_by"
FOUR_EYES_TAG = "approval.four_eyes"
PENDING_ENTRY_TAG = "approval.pending_entry"  # hash of the trail's `pending` event for this decision
APPROVAL_BASIS_TAG = "approval.basis"  # the decision basis (decision.basis) the sign-off was asked on
REGISTERED_CARD = "registered_card.md"  # the run's card as registered, never changed: what card.md5 names
ENTRY_TAG = "approval.entry"  # hash of the trail's event that decided it
CARD_MD5_TAG = "card.md5"  # md5 of the card as registered: what the approver was shown
EVIDENCE_TAGS = ("data.md5", "test.md5", "data.raw_md5", CARD_MD5_TAG, "run_id", "git_commit")
USER_ENV = "HUMANE_USER"


class SignOffError(HumaneError):
    """The sign-off is refused: the message says why and what to do."""


def user_name(explicit: str | None = None) -> str:
    """Who is acting: an explicit name, else $HUMANE_USER, else the login name."""
    name = (explicit or os.environ.get(USER_ENV) or getpass.getuser()).strip()
    if not name:
        raise SignOffError(f"no user name: pass one, or set {USER_ENV}")
    return name


def now() -> str:
    """UTC time to the second, ISO 8601."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Pending:
    """What registration records about a candidate that waits for sign-off."""

    model: str
    version: str
    triggered_by: str
    four_eyes: bool
    decision: dict[str, Any]
    evidence: dict[str, str]
    champion_before: str | None
    basis: str
    run_id: str


def record_pending(trail: Path, pending: Pending) -> dict[str, str]:
    """Append the `pending` event; the version tags that mark it as waiting (registration sets them)."""
    entry = audit_trail.append(trail, {
        "event": PENDING, "model": pending.model, "version": pending.version, "run_id": pending.run_id,
        "at": now(), "by": pending.triggered_by, "os_user": getpass.getuser(), "four_eyes": pending.four_eyes,
        "decision": pending.decision, "evidence": pending.evidence, "champion_before": pending.champion_before,
        "basis": pending.basis,
    })  # fmt: skip
    return {APPROVAL_TAG: PENDING, TRIGGERED_BY_TAG: pending.triggered_by, APPROVAL_BASIS_TAG: pending.basis,
            FOUR_EYES_TAG: "true" if pending.four_eyes else "false", PENDING_ENTRY_TAG: entry["hash"]}  # fmt: skip


def held_entries(trail: Path, name: str, version: str, tags: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The trail entries the version's tags name ({tag: entry}); a named entry the trail lacks is an error.

    A trail that was deleted, cut back (e.g. to an older commit) or is another checkout's does not hold them:
    nothing is signed off or shown on top of it.
    """
    wanted = {k: tags[k] for k in (PENDING_ENTRY_TAG, ENTRY_TAG) if k in tags}
    held = {e["hash"]: e for e in audit_trail.read(trail)}
    missing = sorted(k for k, digest in wanted.items() if digest not in held)
    if missing:
        raise audit_trail.AuditTrailError(
            f"{trail}: {name} v{version}'s tag(s) {', '.join(missing)} name trail entries this trail does not hold "
            "(deleted, cut back, or another checkout's trail): restore the trail (git) before signing off"
        )
    return {k: held[digest] for k, digest in wanted.items()}


def decided_entry(trail: Path, name: str, version: str, tags: dict[str, str]) -> dict[str, Any] | None:
    """The trail event that decided the version (approved or rejected), or None while none did."""
    return held_entries(trail, name, version, tags).get(ENTRY_TAG)


def status(uri: str, name: str, version: str) -> str | None:
    """The version's approval tag (pending, approved, rejected), or None when no sign-off was asked for."""
    return _version(client(uri), name, version).tags.get(APPROVAL_TAG)


def _version(mlflow_client: Any, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version(name, str(version))
    except MlflowException as err:
        if getattr(err, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            raise SignOffError(f"{name} v{version} does not exist in the registry") from err
        raise StoreError(f"registry: cannot read {name} v{version}: {err}") from err
    except Exception as err:
        raise StoreError(f"registry: cannot read {name} v{version}: {type(err).__name__}: {err}") from err


def sign_off(uri: str, trail: Path, name: str, version: str, approve: bool, approver: str, comment: str,
             channel: str) -> dict[str, Any]:  # fmt: skip
    """Approve or reject a pending candidate; the trail entry that records it.

    `channel` says where the decision was taken (the CLI, a Prefect flow run's id).
    """
    approver, comment = approver.strip(), comment.strip()
    if not approver:
        raise SignOffError("the approver's name is empty: say who decides (--by NAME)")
    if not comment:
        raise SignOffError("the comment is empty: say why (--comment TEXT); the auditor reads it")
    event = APPROVED if approve else REJECTED
    mlflow_client = client(uri)
    with promotion_lock(uri):
        record = _version(mlflow_client, name, version)
        tags = record.tags
        pending_entry = tags.get(PENDING_ENTRY_TAG)
        if approve and tags.get(DECISION_TAG) != PASSED:
            raise SignOffError(f"{name} v{version} failed the automated checks ({tags.get('decision.reasons', '?')})"
                               "; a candidate that failed them cannot be approved")  # fmt: skip
        if APPROVAL_TAG not in tags or pending_entry is None:
            raise SignOffError(f"{name} v{version} was registered without a sign-off requirement "
                               "(gate.require_approval was off); there is nothing to approve")  # fmt: skip
        held_entries(trail, name, str(version), tags)  # the trail holds what the tags name, or nothing is decided
        if tags.get(APPROVAL_BASIS_TAG) != tags.get(BASIS_TAG):
            raise SignOffError(f"{name} v{version}: its sign-off was asked on another decision than the one it "
                               "now records (a registration cut short); rerun the pipeline to register it "
                               "again")  # fmt: skip
        recorded = [e for e in audit_trail.entries_for(trail, name, str(version), record.run_id)
                    if e["event"] in (APPROVED, REJECTED) and e.get("pending_entry") == pending_entry]  # fmt: skip
        champion = current_champion(mlflow_client, name)
        if recorded:  # an earlier sign-off was recorded; complete its effects, never record a second one
            entry = recorded[0]
            if entry["event"] != event:
                raise SignOffError(f"{name} v{version} was already {entry['event']} by {entry['by']} at "
                                   f"{entry['at']} (audit trail entry {entry['hash'][:12]}); a decision is not "
                                   "taken twice")  # fmt: skip
            if tags.get(APPROVAL_TAG) == event and tags.get(ENTRY_TAG) == entry["hash"] and (
                    not approve or (champion is not None and champion.version == str(version))):  # fmt: skip
                raise SignOffError(f"{name} v{version} was already {event} by {entry['by']} at {entry['at']}")
        else:
            if tags.get(APPROVAL_TAG) != PENDING:
                raise SignOffError(f"{name} v{version} is not awaiting sign-off (approval: "
                                   f"{tags.get(APPROVAL_TAG)}); a decision is not taken twice")  # fmt: skip
            if approve:
                check_approvable(name, str(version), tags, approver, champion)
            entry = audit_trail.append(trail, {
                "event": event, "model": name, "version": str(version), "run_id": record.run_id, "at": now(),
                "by": approver,
                "os_user": getpass.getuser(), "comment": comment, "channel": channel,
                "pending_entry": pending_entry, "decision": _decision(tags),
                "evidence": {k: tags[k] for k in EVIDENCE_TAGS if k in tags},
                "champion_before": champion.version if champion else None,
            })  # fmt: skip
        if approve:  # the alias moves only while the champion is the one the decision compared with
            check_champion(name, str(version), tags, champion)
        set_tags(mlflow_client, name, str(version), {
            APPROVAL_TAG: event, "approval.by": entry["by"], "approval.at": entry["at"],
            "approval.comment": entry["comment"][:TAG_LIMIT], ENTRY_TAG: entry["hash"],
        })  # fmt: skip
        update_card(uri, mlflow_client, record, entry)
        if approve:
            set_alias(mlflow_client, name, CHAMPION, str(version))
    return entry


def check_approvable(name: str, version: str, tags: dict[str, str], approver: str, champion: Any) -> None:
    """Refuse an approval the policy does not allow: four eyes, a moved champion."""
    triggered = tags.get(TRIGGERED_BY_TAG, "")
    if tags.get(FOUR_EYES_TAG) == "true" and approver.casefold() == triggered.casefold():
        raise SignOffError(f"four eyes (gate.four_eyes): {approver} triggered the run that produced {name} "
                           f"v{version} and cannot also approve it; another person must")  # fmt: skip
    check_champion(name, version, tags, champion)


def check_champion(name: str, version: str, tags: dict[str, str], champion: Any) -> None:
    """The champion must still be the version the decision was judged against (or this one, on a retry)."""
    judged = tags.get("decision.champion_version", "-")
    judged_version = None if judged == "-" else judged
    now_version = champion.version if champion else None
    if now_version in (judged_version, version):
        return
    raise SignOffError(f"{name} v{version} was judged against champion {'v' + judged if judged != '-' else 'none'}, "
                       f"but the champion is now v{now_version}: rerun the pipeline so that the candidate is judged "
                       "against the current champion, then sign off")  # fmt: skip


def card_link(uri: str, run_id: str) -> str:
    """Where a person opens the registered card: the MLflow UI's artifact view on a server, else the file."""
    mlflow_client = client(uri)
    try:
        run = mlflow_client.get_run(run_id)
    except Exception as err:
        raise StoreError(f"cannot read MLflow run {run_id}: {type(err).__name__}: {err}") from err
    if uri.startswith(("http://", "https://")):
        return (f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}/artifacts/"
                "model_card/model_card.html")  # fmt: skip
    return f"{run.info.artifact_uri.rstrip('/')}/model_card/model_card.html"


def record_timeout(trail: Path, name: str, version: str, uri: str, channel: str, waited_s: int) -> dict[str, Any]:
    """A paused run's sign-off window closed: recorded; the version stays pending (the CLI can still decide)."""
    record = _version(client(uri), name, version)
    tags = record.tags
    held_entries(trail, name, str(version), tags)
    return audit_trail.append(trail, {
        "event": "timed_out", "model": name, "version": str(version), "run_id": record.run_id, "at": now(),
        "by": "-",
        "os_user": getpass.getuser(), "channel": channel, "pending_entry": tags.get(PENDING_ENTRY_TAG),
        "comment": f"no decision within {waited_s} s; the version stays pending",
    })  # fmt: skip


def _decision(tags: dict[str, str]) -> dict[str, Any]:
    """The automated decision recorded on the version (whole JSON, or its verdict when cut at the tag limit)."""
    try:
        return json.loads(tags[DECISION_JSON_TAG])
    except (KeyError, ValueError):
        return {"verdict": tags.get(DECISION_TAG), "reasons": tags.get("decision.reasons")}


def outcome_text(entry: dict[str, Any]) -> str:
    """The card's sign-off paragraph once decided."""
    return (f"{entry['event'].upper()} by {entry['by']} on {entry['at']}: {entry['comment']} "
            f"(audit trail entry {entry['hash'][:12]}; operating-system user {entry['os_user']}).")  # fmt: skip


def update_card(uri: str, mlflow_client: Any, record: Any, entry: dict[str, Any]) -> None:
    """Replace the card's pending paragraph with the outcome: the version description and the run's card files."""
    from mlflow.artifacts import download_artifacts

    done = outcome_text(entry)
    description = record.description or ""
    if SIGNOFF_PENDING in description:
        updated = description.replace(SIGNOFF_PENDING, done).replace(AWAITING, SIGNED)
        set_description(mlflow_client, record.name, str(record.version), updated)
    if not record.run_id:
        return
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(download_artifacts(run_id=record.run_id, artifact_path="model_card", dst_path=tmp,
                                            tracking_uri=uri))  # fmt: skip
        except Exception as err:
            raise StoreError(f"cannot read the model card of run {record.run_id}: {type(err).__name__}: {err}") from err
        # The current card shows the outcome; model_card/registered_card.md stays as the approver saw it.
        for name, escape in (("model_card.md", str), ("model_card.html", html.escape)):
            path = local / name
            if path.exists() and escape(SIGNOFF_PENDING) in path.read_text():
                text = path.read_text().replace(escape(SIGNOFF_PENDING), escape(done))
                path.write_text(text.replace(escape(AWAITING), escape(SIGNED)))
                mlflow_client.log_artifact(record.run_id, str(path), "model_card")


def audit_document(uri: str, trail: Path, name: str, version: str) -> Card:
    """One version's record for an auditor: its checks, evidence hashes and every sign-off event, verified."""
    record = _version(client(uri), name, version)
    tags = record.tags
    held_entries(trail, name, str(version), tags)  # verifies the chain, and that it holds what the tags name
    events = audit_trail.entries_for(trail, name, str(version), record.run_id)
    card = Card()
    card.heading(f"Audit record: {name} v{version}", 1)
    card.table(["fact", "value"], [
        ["approval", tags.get(APPROVAL_TAG, "not required (registered without gate.require_approval)")],
        ["triggered by", tags.get(TRIGGERED_BY_TAG, "-")],
        ["four eyes", tags.get(FOUR_EYES_TAG, "-")],
        ["aliases now", ", ".join(record.aliases) or "none"],
        ["MLflow run", record.run_id or "-"],
        *[[k, tags.get(k, "-")] for k in EVIDENCE_TAGS if k != "run_id"],
        ["audit trail", f"{trail} (hash chain verified, {len(audit_trail.read(trail))} entries)"],
    ])  # fmt: skip
    card.heading("Automated decision")
    decision = _decision(tags)
    if "checks" in decision:
        add_decision(card, Decision.from_dict(decision), awaiting=tags.get(APPROVAL_TAG) == PENDING,
                     signed_off=tags.get(APPROVAL_TAG) in (APPROVED, REJECTED))  # fmt: skip
    else:
        card.para(f"{decision.get('verdict')}: {decision.get('reasons')}")
    card.heading("Sign-off events")
    card.table(["#", "event", "by", "at (UTC)", "operating-system user", "comment", "channel", "entry hash"], [
        [e["seq"], e["event"], e["by"], e["at"], e.get("os_user", "-"), e.get("comment", "-"),
         e.get("channel", "registration"), e["hash"]]
        for e in events
    ])  # fmt: skip
    if not events:
        card.para("No sign-off events: this version was registered without a sign-off requirement.")
    return card
