"""Sign-off: the state machine of a candidate that passed the automated checks, and of the `champion` alias.

One implementation, run by whoever is the authority: in team mode the MLflow tracking server's plugin
(humane.governance.server_app) calls it with the identity basic-auth authenticated and the PostgreSQL trail; in
local mode the command line calls it with the operating-system account and the JSON Lines trail. Callers hold
the promotion lock around each call.

- `request_signoff`: after a registration, a passing candidate waits (`pending` event, `approval: pending`);
  a version that holds `champion` but no longer carries an approved decision on its current basis loses the
  alias (`withdrawn` event): a re-decided version never keeps or regains `champion` without a new sign-off.
- `decide`: a reviewer approves or rejects a pending candidate, once. Refused: a candidate whose recorded
  checks did not pass or do not add up; a decision whose basis changed since the sign-off was asked; under four
  eyes an account that registered it (the trigger accounts recorded with the `pending` event); an approval when
  the champion is no longer the one the decision compared with. A rejection stands.
- `rollback`: moves `champion` back to an earlier approved version, or off any version, as a recorded event.
- `verified_champion`: what consumers call; the champion's decision, sign-off and the trail's last alias move
  must agree, else it is refused naming what is missing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from typing import Any

from humane.core.errors import HumaneError
from humane.core.metric_names import TRAIN_COMPUTE_PREFIX, TRAIN_PREFIX, validation_metric
from humane.governance import audit_trail
from humane.governance.audit_trail import Trail
from humane.governance.card import AWAITING, EXPLAIN_PLOTS_ARTIFACT, EXPLANATIONS_ARTIFACT, SIGNED, SIGNOFF_PENDING
from humane.governance.gate import GAP_DIGITS, RESULT_WORDS, VALIDATION_METRIC, rejudge
from humane.governance.identity import Actor
from humane.governance.registry import (
    BASIS_TAG,
    CHAMPION,
    DECISION_JSON_TAG,
    DECISION_TAG,
    TAG_LIMIT,
    Champion,
    champion_of,
    current_champion,
    decision_passed,
    set_description,
    set_tags,
)
from humane.governance.store import StoreError, safe_uri

APPROVAL_TAG = "approval"
PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
PROMOTED, ROLLED_BACK, WITHDRAWN = "promoted", "rolled_back", "withdrawn"  # trail events that move `champion`
TRIGGERED_BY_TAG = "triggered_by"  # the accounts that registered the version (comma-separated)
FOUR_EYES_TAG = "approval.four_eyes"
PENDING_ENTRY_TAG = "approval.pending_entry"  # hash of the trail's `pending` event for this decision
APPROVAL_BASIS_TAG = "approval.basis"  # the decision basis (decision.basis) the sign-off was asked on
REGISTERED_CARD = "registered_card.md"  # the run's card as registered, never changed: what card.md5 names
ENTRY_TAG = "approval.entry"  # hash of the trail's event that decided it
CARD_MD5_TAG = "card.md5"  # md5 of the card as registered: what the approver was shown
EVIDENCE_TAGS = ("data.md5", "test.md5", "data.raw_md5", CARD_MD5_TAG, "run_id", "git_commit")


class SignOffError(HumaneError):
    """The sign-off is refused: the message says why and what to do."""


class ChampionNotVerified(SignOffError):
    """The version behind `champion` does not carry a verified decision and sign-off: it must not be used."""


def now() -> str:
    """UTC time to the second, ISO 8601."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_version(mlflow_client: Any, name: str, version: str) -> Any:
    """The registry's record of one version; a missing version is a refusal, any other failure a StoreError."""
    from mlflow.exceptions import MlflowException

    if not re.fullmatch(r"[1-9][0-9]*", str(version)):
        raise SignOffError(f"{name}: {version!r} is not a version number (write it as 1, 2, ...)")
    try:
        return mlflow_client.get_model_version(name, str(version))
    except MlflowException as err:
        if getattr(err, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            raise SignOffError(f"{name} v{version} does not exist in the registry") from err
        raise StoreError(f"registry: cannot read {name} v{version}: {err}") from err
    except Exception as err:
        raise StoreError(f"registry: cannot read {name} v{version}: {type(err).__name__}: {err}") from err


def recorded_decision(tags: dict[str, str]) -> dict[str, Any]:
    """The automated decision recorded on the version (whole JSON, or its verdict when cut at the tag limit)."""
    try:
        return json.loads(tags[DECISION_JSON_TAG])
    except (KeyError, ValueError):
        return {"verdict": tags.get(DECISION_TAG), "reasons": tags.get("decision.reasons")}


def decision_digest(tags: dict[str, str]) -> str:
    """SHA-256 of the recorded decision's JSON: what the `pending` event binds a sign-off to."""
    return hashlib.sha256(tags.get(DECISION_JSON_TAG, "").encode()).hexdigest()


def check_passed(name: str, version: str, tags: dict[str, str], run_metrics: dict[str, float] | None = None) -> None:
    """Refuse a version whose recorded decision did not pass, or whose record does not add up.

    Passing means: the verdict tag says so, the whole decision JSON is there (not cut at the tag limit), says
    passed, every check's verdict follows from its own figures, none failed, and (given the run's logged
    metrics) every figure the run logged is the figure the check judged.
    """
    if not decision_passed(tags):
        raise SignOffError(
            f"{name} v{version} failed the automated checks ({tags.get('decision.reasons', '?')}); "
            "a candidate that failed them cannot be approved or become champion"
        )
    decision = recorded_decision(tags)
    checks = decision.get("checks")
    if decision.get("passed") is not True or not isinstance(checks, list) or not checks:
        raise SignOffError(
            f"{name} v{version}: its recorded decision ({DECISION_JSON_TAG}) is missing, cut or "
            "does not say passed; it cannot be approved (rerun the pipeline)"
        )
    wrong = [c.get("metric", "?") for c in checks if c.get("passed") is False or rejudge(c) != c.get("passed")]
    if wrong:
        raise SignOffError(
            f"{name} v{version}: its verdict says passed but its checks on {', '.join(wrong)} failed or do not "
            "follow from their own figures; the record does not add up and cannot be approved"
        )
    if run_metrics is not None:
        check_figures(name, version, checks, run_metrics)


def check_figures(name: str, version: str, checks: list[dict[str, Any]], run_metrics: dict[str, float]) -> None:
    """Every figure a check judged equals what the version's run logged under that name."""
    logged = dict(run_metrics)
    n_failed = validation_metric("n_failed")
    if n_failed in logged:
        logged[VALIDATION_METRIC] = 1.0 if logged[n_failed] == 0 else 0.0
    compute = {k.removeprefix(TRAIN_PREFIX): v for k, v in run_metrics.items() if k.startswith(TRAIN_COMPUTE_PREFIX)}
    logged.update(compute)
    differ = []
    for check in checks:
        for metric, value, digits in judged_figures(check):
            if metric is None or value is None:
                continue
            if metric not in logged:
                # MLflow logs finite figures only: an unbounded ε (no DP) is the one figure a run cannot log.
                if math.isfinite(float(value)) or metric != "privacy.epsilon":
                    differ.append(f"{metric} judged {value}, never logged by the run")
            elif not _same(float(value), _rounded(float(logged[metric]), digits)):
                differ.append(f"{metric} judged {value}, logged {logged[metric]}")
    if differ:
        raise SignOffError(
            f"{name} v{version}: its decision's figures are not its run's ({'; '.join(differ)}); it cannot be approved"
        )


def judged_figures(check: dict[str, Any]) -> list[tuple[str | None, Any, int | None]]:
    """(metric, value, digits) of every figure a check judged.

    Its value, its reference's, and the gap pairs of a rule against a reference (`figures`: {gap: [candidate's,
    reference's]}, judged rounded to GAP_DIGITS).
    """
    out = [(check.get("metric"), check.get("value"), None)]
    out.append((check.get("reference"), check.get("reference_value"), None))
    figures = check.get("figures") or {}
    prefix = str(check.get("reference") or "").removesuffix("accuracy")
    for gap, (candidate, reference) in figures.items():
        # A pair without a reference name is looked up under a name no run logs: it is refused, not skipped.
        out += [(gap, candidate, GAP_DIGITS), (f"{prefix or '(no reference).'}{gap}", reference, GAP_DIGITS)]
    return out


def _rounded(value: float, digits: int | None) -> float:
    return value if digits is None or not math.isfinite(value) else round(value, digits)


def _same(a: float, b: float) -> bool:
    """Equal as logged: stores keep an infinite figure (privacy.epsilon without DP) as the largest double."""
    if math.isinf(a) or math.isinf(b):
        return abs(a) >= 1e308 and abs(b) >= 1e308 and math.copysign(1, a) == math.copysign(1, b)
    return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def run_metrics_of(mlflow_client: Any, record: Any) -> dict[str, float]:
    """The metrics the version's run logged (its source of truth for the figures)."""
    if not record.run_id:
        raise SignOffError(f"{record.name} v{record.version} names no MLflow run: its figures cannot be checked")
    try:
        return dict(mlflow_client.get_run(record.run_id).data.metrics)
    except Exception as err:
        raise StoreError(f"cannot read MLflow run {record.run_id}: {type(err).__name__}: {err}") from err


def triggers_of(tags: dict[str, str]) -> list[str]:
    """The accounts recorded as having triggered (registered) the version."""
    return [t for t in tags.get(TRIGGERED_BY_TAG, "").split(",") if t]


def _entry(
    event: str, name: str, version: str | None, record: Any, actor: Actor, channel: str, **fields: Any
) -> dict[str, Any]:
    return {
        "event": event,
        "model": name,
        "version": None if version is None else str(version),
        "run_id": record.run_id if record is not None else None,
        "at": now(),
        "by": actor.account,
        "authority": actor.authority,
        "display": actor.display,
        "channel": channel,
        **fields,
    }


def withdraw(
    mlflow_client: Any, trail: Trail, name: str, record: Any, actor: Actor, channel: str, why: str
) -> dict[str, Any]:
    """Take `champion` off `record`'s version, recorded first."""
    entry = trail.append(
        _entry(
            WITHDRAWN,
            name,
            record.version,
            record,
            actor,
            channel,
            comment=why,
            champion_before=str(record.version),
            champion_after=None,
        )
    )
    mlflow_client.delete_registered_model_alias(name, CHAMPION)
    return entry


def holds_approval(tags: dict[str, str]) -> bool:
    """True when the version carries an approval on the basis of the decision it records now."""
    return (
        tags.get(APPROVAL_TAG) == APPROVED and tags.get(APPROVAL_BASIS_TAG) == tags.get(BASIS_TAG) and ENTRY_TAG in tags
    )


def withdraw_redecided(
    mlflow_client: Any,
    trail: Trail,
    name: str,
    record: Any,
    champion: Champion | None,
    actor: Actor,
    channel: str,
    may_withdraw: bool,
) -> dict[str, Any] | None:
    """Take `champion` off `record`'s version when it no longer holds an approval on its decision (recorded)."""
    if champion is None or champion.version != str(record.version) or holds_approval(record.tags):
        return None
    if not may_withdraw:
        raise SignOffError(
            f"{name} v{record.version} is champion and its decision changed: only a reviewer may register it "
            "again (which takes champion off it) or roll it back"
        )
    why = "registered again: its decision changed since its sign-off"
    return withdraw(mlflow_client, trail, name, record, actor, channel, why)


def request_signoff(
    mlflow_client: Any,
    trail: Trail,
    name: str,
    version: str,
    actor: Actor,
    triggers: list[str],
    four_eyes: bool,
    channel: str,
    may_withdraw: bool = True,
) -> dict[str, Any]:
    """After a registration: withdraw `champion` from a re-decided version, then record `pending` if it passed.

    Returns {"pending": entry or None, "withdrawn": entry or None}. A rejection stands; a version pending or
    approved on its current decision basis stays as it is.
    """
    record = read_version(mlflow_client, name, version)
    tags = record.tags
    champion = current_champion(mlflow_client, name)
    withdrawn = withdraw_redecided(mlflow_client, trail, name, record, champion, actor, channel, may_withdraw)
    if withdrawn is not None:
        champion = None
    if not decision_passed(tags) or tags.get(APPROVAL_TAG) == REJECTED:
        return {"pending": None, "withdrawn": withdrawn}
    if tags.get(APPROVAL_TAG) in (PENDING, APPROVED) and tags.get(APPROVAL_BASIS_TAG) == tags.get(BASIS_TAG):
        return {"pending": None, "withdrawn": withdrawn}
    check_passed(name, str(version), tags, run_metrics_of(mlflow_client, record))
    refuse_rejected_run(mlflow_client, name, str(version), record.run_id)
    accounts = sorted({*triggers, actor.account} - {""})
    entry = trail.append(
        _entry(
            PENDING,
            name,
            version,
            record,
            actor,
            channel,
            triggers=accounts,
            four_eyes=four_eyes,
            decision=recorded_decision(tags),
            decision_sha256=decision_digest(tags),
            basis=tags.get(BASIS_TAG),
            evidence={k: tags[k] for k in EVIDENCE_TAGS if k in tags},
            champion_before=champion.version if champion else None,
        )
    )
    set_tags(
        mlflow_client,
        name,
        str(version),
        {
            APPROVAL_TAG: PENDING,
            TRIGGERED_BY_TAG: ",".join(accounts),
            APPROVAL_BASIS_TAG: tags.get(BASIS_TAG, ""),
            FOUR_EYES_TAG: "true" if four_eyes else "false",
            PENDING_ENTRY_TAG: entry["hash"],
        },
    )
    return {"pending": entry, "withdrawn": withdrawn}


PROXY_METRIC = "explain.proxy_"  # explain.proxy_auc.<feature>, explain.proxy_attribution_share.<feature>


def explanation_evidence(mlflow_client: Any, uri: str, name: str, version: str) -> str:
    """What the reviewer's form says of the candidate's explanations: links to them, and the proxy figures.

    Args:
        mlflow_client: A client on the store.
        uri: The tracking URI (a server's links open its UI; a local store's are file URIs).
        name: Registered model name.
        version: The candidate's version.

    Returns:
        One Markdown paragraph (starting with a space, to follow the form's text).

    """
    record = read_version(mlflow_client, name, version)
    try:
        run = mlflow_client.get_run(record.run_id)
        files = [a.path for a in mlflow_client.list_artifacts(record.run_id, EXPLAIN_PLOTS_ARTIFACT) if not a.is_dir]
        reports = [a.path for a in mlflow_client.list_artifacts(record.run_id, "reports")]
    except Exception as err:
        raise StoreError(f"cannot read MLflow run {record.run_id}: {type(err).__name__}: {err}") from err
    paths = [EXPLANATIONS_ARTIFACT] * (EXPLANATIONS_ARTIFACT in reports) + sorted(files)
    links = {path: artifact_link(uri, run, path) for path in paths}
    figures = {k: v for k, v in run.data.metrics.items() if k.startswith(PROXY_METRIC)}
    return explanation_text(links, figures, recorded_decision(record.tags).get("checks", []))


def artifact_link(uri: str, run: Any, path: str) -> str:
    """Where a person opens a run artifact: the MLflow UI's artifact view on a server, else the file."""
    if uri.startswith(("http://", "https://")):
        server = safe_uri(uri).rstrip("/")
        return f"{server}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/artifacts/{path}"
    return f"{run.info.artifact_uri.rstrip('/')}/{path}"


def explanation_text(links: dict[str, str], figures: dict[str, float], checks: list[dict[str, Any]]) -> str:
    """The form's paragraph: the explanation artifacts as links, then each proxy figure beside the gate's check.

    Args:
        links: {artifact path: link}, the explanation report first.
        figures: The run's explain.proxy_* metrics.
        checks: The recorded decision's checks (`RuleOutcome` as dicts).

    """
    if EXPLANATIONS_ARTIFACT not in links:
        return (
            f" Explanations: none recorded for this run ({EXPLANATIONS_ARTIFACT} is not among its artifacts): no "
            "attribution, proxy or error-analysis evidence to review."
        )
    shown = ", ".join(f"[{path.rsplit('/', 1)[-1]}]({link})" for path, link in links.items())
    judged = {c["metric"]: c for c in checks if str(c.get("metric", "")).startswith(PROXY_METRIC)}
    metrics = sorted({*figures, *judged})
    proxies = "; ".join(proxy_figure(m, figures.get(m), judged.get(m)) for m in metrics) or "none recorded"
    return (
        f" Explanations (attributions overall and per group, proxies, error cohorts; MLflow run artifacts): {shown}."
        f" Proxy figures beside the gate's checks: {proxies}."
    )


def proxy_figure(metric: str, value: float | None, check: dict[str, Any] | None) -> str:
    """One proxy metric, its value and how the gate judged it (or that no rule judges it)."""
    shown = "not measured" if value is None or value != value else f"{value:.3f}"
    if check is None:
        return f"{metric} {shown} (no gate rule)"
    return f"{metric} {shown} (gate: {check['rule']} {check['threshold']}, {RESULT_WORDS[check.get('passed')]})"


def refuse_rejected_run(mlflow_client: Any, name: str, version: str, run_id: str | None) -> None:
    """A person's rejection stands for the run, not only its version number.

    The same run registered again under another version number waits for nobody.
    """
    try:
        others = mlflow_client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except Exception as err:
        raise StoreError(f"registry: cannot search versions of {name!r}: {type(err).__name__}: {err}") from err
    rejected = [v.version for v in others if str(v.version) != version and v.tags.get(APPROVAL_TAG) == REJECTED]
    if rejected:
        raise SignOffError(
            f"{name} v{version} is run {run_id}, whose v{rejected[0]} a person rejected; a rejection stands"
        )


def held(trail: Trail, name: str, version: str, tags: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The trail entries the version's tags name ({tag: entry}); a named entry the trail lacks is an error."""
    wanted = {k: tags[k] for k in (PENDING_ENTRY_TAG, ENTRY_TAG) if k in tags}
    entries = {e["hash"]: e for e in trail.read()}
    missing = sorted(k for k, digest in wanted.items() if digest not in entries)
    if missing:
        raise audit_trail.AuditTrailError(
            f"{trail.where}: {name} v{version}'s tag(s) {', '.join(missing)} name trail entries this trail does "
            "not hold (deleted, cut back, or another checkout's trail): restore the trail before signing off"
        )
    return {k: entries[digest] for k, digest in wanted.items()}


def _pending_entry(trail: Trail, name: str, version: str, tags: dict[str, str]) -> dict[str, Any]:
    """The `pending` event the sign-off answers, checked against what the version records now."""
    if tags.get(APPROVAL_TAG) is None or PENDING_ENTRY_TAG not in tags:
        raise SignOffError(
            f"{name} v{version} was registered without a sign-off requirement; there is nothing to approve"
        )
    pending = held(trail, name, version, tags)[PENDING_ENTRY_TAG]
    if tags.get(APPROVAL_BASIS_TAG) != tags.get(BASIS_TAG) or pending.get("basis") != tags.get(BASIS_TAG):
        raise SignOffError(
            f"{name} v{version}: its sign-off was asked on another decision than the one it now "
            "records; rerun the pipeline to register it again"
        )
    if pending.get("decision_sha256", decision_digest(tags)) != decision_digest(tags):
        raise SignOffError(
            f"{name} v{version}: its recorded decision changed after the sign-off was asked "
            f"(trail entry {pending['hash'][:12]}); rerun the pipeline"
        )
    return pending


def last_decision(trail: Trail, name: str, version: str, pending: dict[str, Any]) -> dict[str, Any] | None:
    """The approval or rejection recorded for this `pending` event, if one was."""
    found = [
        e
        for e in audit_trail.entries_of(trail, name, version)
        if e["event"] in (APPROVED, REJECTED) and e.get("pending_entry") == pending["hash"]
    ]
    return found[-1] if found else None


def check_four_eyes(name: str, version: str, tags: dict[str, str], pending: dict[str, Any], actor: Actor) -> None:
    """Under four eyes, no account that registered the version approves it."""
    if tags.get(FOUR_EYES_TAG) != "true" and not pending.get("four_eyes"):
        return
    triggers = {t.casefold() for t in [*pending.get("triggers", []), *triggers_of(tags)]}
    if actor.account.casefold() in triggers:
        raise SignOffError(
            f"four eyes: {actor.account} ({actor.authority} account) triggered the run that "
            f"produced {name} v{version} and cannot also approve it; another person must"
        )


def refuse_decided(
    trail: Trail,
    name: str,
    version: str,
    tags: dict[str, str],
    done: dict[str, Any] | None,
    event: str,
    actor: Actor,
    champion: Champion | None,
) -> None:
    """Refuse a second decision.

    The one exception: the same account completing its own interrupted decision (the entry is in the trail, but
    the tags or, for an approval, the alias never followed).
    """
    if done is None:
        if tags.get(APPROVAL_TAG) != PENDING:
            raise SignOffError(
                f"{name} v{version} is not awaiting sign-off (approval: {tags.get(APPROVAL_TAG)}); a decision is "
                "not taken twice (to move champion back use python -m tasks.rollback)"
            )
        return
    already = (
        f"{name} v{version} was already {done['event']} by {done['by']} at {done['at']} (trail entry "
        f"{done['hash'][:12]}); a decision is not taken twice (to move champion back use python -m tasks.rollback)"
    )
    if done["event"] != event or done["by"] != actor.account:
        raise SignOffError(already)
    tagged = tags.get(APPROVAL_TAG) == event and tags.get(ENTRY_TAG) == done["hash"]
    move = last_move(trail, name)
    alias_pending = event == APPROVED and move is not None and move["hash"] == done["hash"]
    alias_pending = alias_pending and (champion is None or champion.version != version)
    if tagged and not alias_pending:
        raise SignOffError(already)


def rejoins(trail: Trail, name: str, version: str, champion: Champion | None) -> bool:
    """True when `champion` was last taken off this very version by its re-registration (and nobody since)."""
    move = last_move(trail, name)
    return champion is None and move is not None and move["event"] == WITHDRAWN and move.get("version") == version


def check_champion(name: str, version: str, judged_version: str | None, champion: Champion | None) -> None:
    """The champion must still be the version the decision was judged against (as the `pending` event recorded)."""
    now_version = champion.version if champion else None
    if now_version == judged_version:
        return
    raise SignOffError(
        f"{name} v{version} was judged against champion {'v' + judged_version if judged_version else 'none'}, "
        f"but the champion is now {'v' + now_version if now_version else 'none'}: rerun the pipeline so that the "
        "candidate is judged against the current champion, then sign off"
    )


def decide(
    mlflow_client: Any, trail: Trail, name: str, version: str, approve: bool, actor: Actor, comment: str, channel: str
) -> dict[str, Any]:
    """Approve or reject a pending candidate, once; the trail entry that records it.

    An interrupted sign-off (its entry written, the tags not yet) is completed, with every check again, by the
    same decision from the same account; anything else already decided is refused.
    """
    comment = comment.strip()
    if not comment:
        raise SignOffError("the comment is empty: say why (--comment TEXT); the auditor reads it")
    event = APPROVED if approve else REJECTED
    record = read_version(mlflow_client, name, version)
    tags = record.tags
    if approve:
        check_passed(name, str(version), tags, run_metrics_of(mlflow_client, record))
    pending = _pending_entry(trail, name, str(version), tags)
    done = last_decision(trail, name, str(version), pending)
    champion = current_champion(mlflow_client, name)
    refuse_decided(trail, name, str(version), tags, done, event, actor, champion)
    if approve:
        check_four_eyes(name, str(version), tags, pending, actor)
        if not rejoins(trail, name, str(version), champion):
            check_champion(name, str(version), pending.get("decision", {}).get("champion_version"), champion)
    entry = done or trail.append(
        _entry(
            event,
            name,
            version,
            record,
            actor,
            channel,
            comment=comment,
            pending_entry=pending["hash"],
            decision_sha256=decision_digest(tags),
            evidence={k: tags[k] for k in EVIDENCE_TAGS if k in tags},
            champion_before=champion.version if champion else None,
            champion_after=str(version) if approve else (champion.version if champion else None),
        )
    )
    set_tags(
        mlflow_client,
        name,
        str(version),
        {
            APPROVAL_TAG: event,
            "approval.by": entry["by"],
            "approval.at": entry["at"],
            "approval.comment": entry["comment"][:TAG_LIMIT],
            ENTRY_TAG: entry["hash"],
        },
    )
    _describe_outcome(mlflow_client, record, entry)
    if approve:
        mlflow_client.set_registered_model_alias(name, CHAMPION, str(version))
    return entry


def rollback(
    mlflow_client: Any, trail: Trail, name: str, to_version: str | None, actor: Actor, comment: str, channel: str
) -> dict[str, Any]:
    """Move `champion` back to an earlier approved version (`to_version`), or off any version; recorded first."""
    comment = comment.strip()
    if not comment:
        raise SignOffError("the comment is empty: say why the champion is rolled back (--comment TEXT)")
    champion = current_champion(mlflow_client, name)
    before = champion.version if champion else None
    if to_version is not None and str(to_version) == before:
        raise SignOffError(f"{name} v{to_version} is already champion")
    if to_version is None and before is None:
        raise SignOffError(f"{name} has no champion to roll back")
    record = None
    if to_version is not None:
        record = read_version(mlflow_client, name, str(to_version))
        check_restorable(trail, name, str(to_version), record.tags, actor)
        check_passed(name, str(to_version), record.tags, run_metrics_of(mlflow_client, record))
    entry = trail.append(
        _entry(
            ROLLED_BACK,
            name,
            to_version,
            record,
            actor,
            channel,
            comment=comment,
            champion_before=before,
            champion_after=None if to_version is None else str(to_version),
        )
    )
    if to_version is None:
        mlflow_client.delete_registered_model_alias(name, CHAMPION)
    else:
        mlflow_client.set_registered_model_alias(name, CHAMPION, str(to_version))
    return entry


def check_restorable(trail: Trail, name: str, version: str, tags: dict[str, str], actor: Actor) -> None:
    """A version may be made champion again only with a verified approval on its current decision."""
    check_passed(name, version, tags)
    if not holds_approval(tags):
        raise SignOffError(
            f"{name} v{version} does not hold an approval on the decision it records "
            f"(approval: {tags.get(APPROVAL_TAG, 'none')}); it cannot become champion again"
        )
    entries = held(trail, name, version, tags)
    check_approval_entry(name, version, tags, entries[ENTRY_TAG])
    check_four_eyes(name, version, tags, entries.get(PENDING_ENTRY_TAG, {}), actor)


def _describe_outcome(mlflow_client: Any, record: Any, entry: dict[str, Any]) -> None:
    description = record.description or ""
    if SIGNOFF_PENDING in description:
        updated = description.replace(SIGNOFF_PENDING, outcome_text(entry)).replace(AWAITING, SIGNED)
        set_description(mlflow_client, record.name, str(record.version), updated)


def outcome_text(entry: dict[str, Any]) -> str:
    """The card's sign-off paragraph once decided."""
    shown = entry.get("display") or entry["by"]
    who = entry["by"] if shown == entry["by"] else f"{shown} (account {entry['by']})"
    authority = {"os": "operating-system account", "mlflow-server": "authenticated by the MLflow server"}.get(
        entry.get("authority", ""), "declared name"
    )
    return (
        f"{entry['event'].upper()} by {who} on {entry['at']}: {entry['comment']} "
        f"(audit trail entry {entry['hash'][:12]}; {authority})."
    )


def last_move(trail: Trail, name: str) -> dict[str, Any] | None:
    """The trail's last event that moved `name`'s champion alias."""
    moves = [
        e
        for e in trail.read()
        if e.get("model") == name
        and "champion_after" in e
        and e["event"] in (APPROVED, PROMOTED, ROLLED_BACK, WITHDRAWN)
    ]
    return moves[-1] if moves else None


def verified_champion(mlflow_client: Any, trail: Trail, name: str, require_signoff: bool) -> Champion | None:
    """The champion, after checking that its decision, its sign-off and the trail's last alias move agree.

    None when there is no champion. Refused (ChampionNotVerified, naming what is missing) when the version's
    checks did not pass, when it needs a sign-off (`require_signoff`, or one was asked) that it does not hold on
    its current decision, or when the trail's last recorded move of the alias does not name this version (the
    alias was moved outside humane).
    """
    champion = current_champion(mlflow_client, name)
    if champion is None:
        return None
    version = champion.version
    record = read_version(mlflow_client, name, version)
    tags = record.tags
    try:
        check_passed(name, version, tags, run_metrics_of(mlflow_client, record))
        if require_signoff or APPROVAL_TAG in tags:
            if not holds_approval(tags):
                raise SignOffError(
                    f"{name} v{version} holds no approval on its current decision (approval: "
                    f"{tags.get(APPROVAL_TAG, 'none')})"
                )
            check_approval_entry(name, version, tags, held(trail, name, version, tags)[ENTRY_TAG])
        move = last_move(trail, name)
        if move is None or move.get("champion_after") != version:
            after = move.get("champion_after") if move else None
            said = (
                "none" if move is None else f"{'v' + after if after else 'none'} ({move['event']} {move['hash'][:12]})"
            )
            raise SignOffError(
                f"{trail.where} records no move of champion to v{version} (its last move: {said}): "
                "the alias was moved outside humane"
            )
    except (SignOffError, audit_trail.AuditTrailError) as err:
        raise ChampionNotVerified(f"champion {name} v{version} does not verify, refusing to use it: {err}") from err
    return champion_of(mlflow_client, name, version)


def check_approval_entry(name: str, version: str, tags: dict[str, str], entry: dict[str, Any]) -> None:
    """The approval the tags name is this version's, answers its `pending` event and covers its decision as is."""
    if entry.get("event") != APPROVED or entry.get("model") != name or str(entry.get("version")) != version:
        raise SignOffError(f"the trail entry {name} v{version}'s approval tag names is not an approval of it")
    if entry.get("pending_entry") != tags.get(PENDING_ENTRY_TAG):
        raise SignOffError(f"{name} v{version}'s approval answers another sign-off request than its tags name")
    if entry.get("decision_sha256") != decision_digest(tags):
        raise SignOffError(f"{name} v{version}'s recorded decision changed after it was approved")


def record_promotion(
    trail: Trail, name: str, record: Any, actor: Actor, channel: str, champion_before: str | None
) -> dict[str, Any]:
    """Local mode without a sign-off requirement: the policy's own promotion, recorded as the alias move."""
    return trail.append(
        _entry(
            PROMOTED,
            name,
            record.version,
            record,
            actor,
            channel,
            comment="passed every check; no sign-off required (gate.require_approval off)",
            champion_before=champion_before,
            champion_after=str(record.version),
        )
    )
