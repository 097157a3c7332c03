"""Registration and promotion: one version per tracked run, the decision taken once under the lock, the card.

The decision against the champion is taken here, under the promotion lock, and written once: the registry
tags, reports/decision.json, the card and the flow's artifact all show this one decision. A retried
registration of the same run finds its version and keeps the decision recorded on it, unless the champion
it was compared with has since changed, in which case it decides again and records that.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
from pathlib import Path
from typing import Any

from humane.core import io
from humane.core.context import RunContext
from humane.core.paths import Paths
from humane.data.params import check_intended_use
from humane.fairness.policy import policy_of
from humane.governance import approvals, federation, signoff, team_client
from humane.governance.card import ModelFacts, model_card
from humane.governance.gate import Decision, decide, read_candidate
from humane.governance.identity import local_actor
from humane.governance.lineage import git_commit, md5_of
from humane.governance.params import GovernanceSections
from humane.governance.registry import (
    BASIS_TAG,
    CHALLENGER,
    CHAMPION,
    DECISION_JSON_TAG,
    DECISION_TAG,
    MANIFEST_TAG,
    METRIC_TAG,
    PASSED,
    REJECTED_BY_POLICY,
    TAG_LIMIT,
    TEST_MD5_TAG,
    Champion,
    champion_of,
    current_champion,
    discarded_on_failure,
    download_model,
    manifest_tag,
    promotion_lock,
    register_version,
    set_alias,
    set_description,
    set_tags,
    verified_model_files,
    verify_manifest,
    version_of_run,
)
from humane.governance.rescoring import Rescored, rescore
from humane.governance.signoff import (
    APPROVAL_BASIS_TAG,
    APPROVAL_TAG,
    APPROVED,
    CARD_MD5_TAG,
    ENTRY_TAG,
    PENDING,
    REGISTERED_CARD,
    REJECTED,
    outcome_text,
)
from humane.governance.store import client, using_tracking_uri
from humane.modeling.model import file_input_widths


def gather_facts(params: GovernanceSections, paths: Paths, run_id: str, project: Path) -> ModelFacts:
    """Everything the card states, read from the stage outputs."""
    intended = check_intended_use(params.data.intended_use, paths.root)
    train_metrics = io.read_json(paths.train_metrics)
    n_inputs, n_numeric = file_input_widths(paths.model)
    if federation.is_federated(paths):  # no data file here: the sites and their rows (reports/federation.json)
        run = federation.read(paths)
        meta = {"md5": {"train": federation.NOT_HERE}, "files": {"sites": "each site's own data file"}}
        rows = {"data_md5": federation.NOT_HERE, "test_md5": federation.NOT_HERE, "federation": run}
    else:
        meta = io.read_json(paths.interim_meta)
        rows = {"data_md5": md5_of(paths.processed_train), "test_md5": md5_of(paths.interim_test)}
    return {
        **rows,
        "n_inputs": n_inputs,
        "n_numeric": n_numeric,
        "n_parameters": train_metrics["n_parameters"],
        "best_epoch": train_metrics["best_epoch"],
        "epochs_run": train_metrics["epochs_run"],
        "raw_md5": meta["md5"]["train"],
        "files": ", ".join(sorted(set(meta["files"].values()))),
        "git_commit": git_commit(project),
        "run_id": run_id,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "intended_use": intended.read_text(),
        "metrics": io.read_json(paths.metrics),
        "audit": io.read_json(paths.audit_report),
        "data_audit": io.read_json(paths.data_audit),
        "validation": io.read_json(paths.validation_report),
        "train_metrics": train_metrics,
        "privacy": io.read_json(paths.privacy_report),
        "membership": io.read_json(paths.membership_report),
        "mitigation_data": io.read_json(paths.mitigation_data),
        "thresholds": io.read_json(paths.thresholds),
        # Absent in a federated workspace (no test row here to explain): the card says so.
        "explanations": io.read_json(paths.explanations) if paths.explanations.exists() else None,
    }


def version_tags(decision: Decision, candidate: dict[str, float], facts: ModelFacts) -> dict[str, str]:
    """Decision (with its reasons and the whole JSON), metrics and gaps, data md5, commit and run id."""
    import json

    tags = {
        DECISION_TAG: PASSED if decision.passed else REJECTED_BY_POLICY,
        "decision.reasons": "; ".join(decision.reasons)[:TAG_LIMIT] or "-",
        "decision.champion_version": decision.champion_version or "-",
        DECISION_JSON_TAG: json.dumps(decision.to_dict(), sort_keys=True, default=str)[:TAG_LIMIT],
        "data.md5": facts["data_md5"],
        "data.raw_md5": facts["raw_md5"],
        TEST_MD5_TAG: facts["test_md5"],
        "git_commit": facts["git_commit"],
        "run_id": facts["run_id"],
    }
    tags.update({f"{METRIC_TAG}{k}": repr(v) for k, v in candidate.items() if v == v})
    privacy = facts["train_metrics"]
    if privacy.get("dp_enabled"):
        tags.update({f"dp.{k}": str(privacy[k]) for k in ("epsilon", "delta", "noise_multiplier", "accountant")})
    else:
        tags["dp.epsilon"] = "inf (trained without differential privacy)"
    return tags


def decision_basis(params: GovernanceSections, candidate: dict[str, float], test_md5: str) -> str:
    """What a decision was taken on: the policy, the candidate's metrics and test rows, and the gate's code."""
    import hashlib
    import json

    from humane.governance import gate, rescoring

    digest = hashlib.sha256(json.dumps([policy_of(params).to_dict(), candidate, test_md5], sort_keys=True).encode())
    digest.update(Path(gate.__file__).read_bytes())
    digest.update(Path(rescoring.__file__).read_bytes())
    return digest.hexdigest()[:32]


def decide_against(
    params: GovernanceSections,
    paths: Paths,
    candidate: dict[str, float],
    reference: Any,
    name: str,
    uri: str,
    test_md5: str,
) -> Decision:
    """Decide against `reference` (a Champion or None), re-scored on the candidate's test rows where possible.

    A federated candidate's test rows stay at its sites: its change rules are unmeasurable. A champion that cannot
    be re-scored on these rows (e.g. another input schema) has its change rules skipped, and the notes say why.
    """
    policy = policy_of(params)
    warned = validation_notes(io.read_json(paths.validation_report))
    if reference is None:
        return decide(policy, candidate, None, notes=warned, test_md5={"candidate": test_md5, "champion": None})
    sides = {"candidate": test_md5, "champion": reference.test_md5}
    if federation.is_federated(paths):
        why = "federated: the champion cannot be re-scored on the candidate's test rows, which stay at the sites"
        return decide(policy, candidate, reference, notes=warned, change_unmeasured=why, test_md5=sides)
    rescored = rescore_champion(params, paths, reference, name, uri)
    notes = warned + rescored.notes
    if rescored.champion is None:
        return decide(policy, candidate, reference, notes=notes, change_skipped=rescored.skipped, test_md5=sides)
    same_rows = {"candidate": test_md5, "champion": test_md5}
    return decide(policy, candidate, rescored.champion, notes=notes, test_md5=same_rows)


def rescore_champion(params: GovernanceSections, paths: Paths, champion: Champion, name: str, uri: str) -> Rescored:
    """The champion's figures on the candidate's test rows (governance.rescoring).

    The champion is loaded (its served code run) only from its files checked against its registered manifest.
    """
    import pandas as pd

    from humane.modeling.features import load_preprocessor

    pre = load_preprocessor(paths.preprocessor)
    with tempfile.TemporaryDirectory(prefix="humane-champion-") as tmp:
        folder = verified_model_files(uri, name, champion.version, Path(tmp))
        return rescore(
            champion,
            str(folder),
            pd.read_parquet(paths.interim_test),
            pd.read_parquet(paths.processed_test),
            params.data.sensitive_features,
            params.audit,
            params.evaluate.calibration_bins,
            io.read_json(paths.privacy_policy),
            (pre.labels, pre.positive_label),
        )


def validation_notes(report: dict[str, Any]) -> list[str]:
    """Validation's warnings (small groups, shared records, suspected leaks), for the decision beside its checks.

    They did not fail validation (validate.strict is off), but whoever reads the decision should see them: a
    record in both splits or a leaked column inflates the very figures the policy judges.
    """
    warnings = report.get("warnings", [])
    if not warnings:
        return []
    listed = "; ".join(sorted({f"{w['rule']} on {w['column'] or 'the rows'} ({w['split']})" for w in warnings}))
    return [f"data validation passed with {len(warnings)} warning(s): {listed}"]


def recorded_decision(version: Any, basis: str) -> Decision | None:
    """The decision an earlier attempt recorded on this version, if it got that far and on the same basis."""
    import json

    payload = version.tags.get(DECISION_JSON_TAG)
    if payload is None or version.tags.get(BASIS_TAG, "").split(":")[0] != basis:
        return None
    try:
        return Decision.from_dict(json.loads(payload))
    except (ValueError, KeyError, TypeError):
        return None  # cut at the tag limit or hand-edited: decide again


def register(params: GovernanceSections, paths: Paths, ctx: RunContext) -> dict[str, Any]:
    """Register the tracked candidate once; move `challenger` to it; `champion` only as the policy allows.

    With a sign-off required (always in team mode) a passing candidate waits for a person
    (humane.governance.signoff); without one (local mode only) it becomes champion when every check passed.
    """
    record = io.read_json(paths.mlflow_run)
    name, run_id = params.data.model_name, record["run_id"]
    candidate = read_candidate(paths)
    facts = gather_facts(params, paths, run_id, ctx.project)
    mlflow_client = client(ctx.tracking_uri)
    team = team_client.is_team(ctx.tracking_uri)
    with promotion_lock(ctx.tracking_uri):
        champion = current_champion(mlflow_client, name)
        existing = version_of_run(mlflow_client, name, run_id)
        basis = decision_basis(params, candidate, facts["test_md5"])
        decision = decide_once(params, paths, ctx, candidate, champion, existing, basis, facts["test_md5"])
        version = (
            str(existing.version)
            if existing is not None
            else register_version(mlflow_client, name, record["model_uri"], run_id)
        )
        full_basis = f"{basis}:{decision.champion_version or '-'}"  # judged against another champion: new basis
        require = params.gate.require_approval or team
        before = existing.tags if existing is not None else {}
        waits = require and decision.passed and asks_signoff_anew(before, full_basis)
        signed = decided_entry(approvals.trail_for(ctx.tracking_uri, ctx.project), name, version, before, full_basis)
        card = model_card(params, decision, version, facts, signed=outcome_text(signed) if signed else None)
        tags = {**version_tags(decision, candidate, facts), BASIS_TAG: full_basis}
        # Until the version holds its files' manifest, its card and its tags, a failure (a full artifact store, a
        # server gone) takes back a version this attempt created (local mode; in team mode it stays, untagged and
        # without an alias, for the rerun to complete).
        with discarded_on_failure(mlflow_client, name, version, existing is None and not team):
            fresh_card = existing is None or waits
            write_version(ctx, mlflow_client, name, version, run_id, card.to_markdown(), tags, before, team, fresh_card)
        set_alias(mlflow_client, name, CHALLENGER, version)
        if require:
            request(ctx, params, name, version, team)
        else:
            champion_now = champion.version if champion else None
            promote_without_signoff(ctx, mlflow_client, name, version, decision.passed, champion_now)
        approval = signoff.read_version(mlflow_client, name, version).tags.get(APPROVAL_TAG)
        is_champion = (current_champion(mlflow_client, name) or NO_CHAMPION).version == version
    record_outputs(paths, ctx, run_id, name, version, decision, card)
    result = registration(name, version, decision, approval, is_champion, run_id)
    io.write_json(paths.registration, result)
    return result


NO_CHAMPION = Champion("", {}, None)


def asks_signoff_anew(tags: dict[str, str], basis: str) -> bool:
    """Whether a passing version must (again) wait for a sign-off.

    Not when it was rejected, nor when it was already asked for or approved on this basis (a retry of the same
    registration keeps the request or the approval it holds).
    """
    asked = tags.get(APPROVAL_TAG) in (PENDING, APPROVED) and tags.get(APPROVAL_BASIS_TAG) == basis
    return tags.get(APPROVAL_TAG) != REJECTED and not asked


def write_version(
    ctx: RunContext,
    mlflow_client: Any,
    name: str,
    version: str,
    run_id: str,
    card: str,
    tags: dict[str, str],
    before: dict[str, str],
    team: bool,
    fresh_card: bool,
) -> None:
    """The version's manifest, registered card, tags and description (`card`: the card's Markdown).

    The card a person will be shown is logged anew when `fresh_card` (a new version, or one that waits for a
    sign-off again) or when the run lacks the card that `before`'s hash names; a retry keeps the hash of the one
    already shown.
    """
    tags = {**tags, **record_manifest(mlflow_client, ctx.tracking_uri, name, version, team)}
    if fresh_card or not card_logged(ctx.tracking_uri, run_id, before):
        # Logged before the tag naming it: an attempt that dies in between leaves no hash of a missing file.
        log_registered_card(ctx.tracking_uri, run_id, card)
        tags[CARD_MD5_TAG] = hashlib.md5(card.encode()).hexdigest()
    set_tags(mlflow_client, name, version, tags)
    set_description(mlflow_client, name, version, card)


def registration(
    name: str, version: str, decision: Decision, approval: str | None, is_champion: bool, run_id: str
) -> dict[str, Any]:
    """reports/registration.json: the version, whether it is champion, its decision and its sign-off state."""
    return {
        "model_name": name,
        "version": version,
        "promoted": is_champion,
        "reasons": decision.reasons,
        "passed_checks": decision.passed,
        "approval": approval,
        "pending": decision.passed and not is_champion and approval == PENDING,
        "aliases": [CHALLENGER, CHAMPION] if is_champion else [CHALLENGER],
        "compared_with": decision.champion_version,
        "run_id": run_id,
    }


def decide_once(
    params: GovernanceSections,
    paths: Paths,
    ctx: RunContext,
    candidate: dict[str, float],
    champion: Any,
    existing: Any,
    basis: str,
    test_md5: str,
) -> Decision:
    """The decision an earlier attempt recorded, while the champion it was judged against still holds; else anew."""
    name = params.data.model_name
    decision = recorded_decision(existing, basis) if existing is not None else None
    champion_now = champion.version if champion else None
    if decision is not None and champion_now in (decision.champion_version, str(existing.version)):
        return decision
    reference = champion
    if existing is not None and champion_now == str(existing.version):
        # An earlier attempt made this version champion; judge it against the one it replaced.
        replaced = existing.tags.get("decision.champion_version", "-")
        reference = None if replaced == "-" else champion_of(client(ctx.tracking_uri), name, replaced)
    with using_tracking_uri(ctx.tracking_uri):
        return decide_against(params, paths, candidate, reference, name, ctx.tracking_uri, test_md5)


def decided_entry(trail: Any, name: str, version: str, tags: dict[str, str], basis: str) -> dict[str, Any] | None:
    """The trail event that decided the version on this basis (for the card), or None."""
    if tags.get(APPROVAL_TAG) not in (APPROVED, REJECTED) or tags.get(APPROVAL_BASIS_TAG) != basis:
        return None
    return signoff.held(trail, name, version, tags).get(ENTRY_TAG)


def request(ctx: RunContext, params: GovernanceSections, name: str, version: str, team: bool) -> dict[str, Any]:
    """Ask for the sign-off (and withdraw a re-decided champion): the team server, or the local trail."""
    where = f"registration ({ctx.entry_point}{', flow run ' + ctx.flow_run_id if ctx.flow_run_id else ''})"
    if team:
        return team_client.call(
            ctx.tracking_uri, "POST", "signoff/request", {"model": name, "version": version, "channel": where}
        )
    actor = local_actor(ctx.user)
    return signoff.request_signoff(
        client(ctx.tracking_uri),
        approvals.trail_for(ctx.tracking_uri, ctx.project),
        name,
        version,
        actor,
        [actor.account],
        params.gate.four_eyes,
        where,
    )


def promote_without_signoff(
    ctx: RunContext, mlflow_client: Any, name: str, version: str, passed: bool, champion_now: str | None
) -> None:
    """Local mode, no sign-off required: a passing version becomes champion, a failing one loses it; recorded."""
    trail = approvals.trail_for(ctx.tracking_uri, ctx.project)
    actor = local_actor(ctx.user)
    record = signoff.read_version(mlflow_client, name, version)
    if passed and champion_now != version:
        signoff.record_promotion(trail, name, record, actor, ctx.entry_point, champion_now)
        set_alias(mlflow_client, name, CHAMPION, version)
    elif not passed and champion_now == version:
        signoff.withdraw(
            mlflow_client,
            trail,
            name,
            record,
            actor,
            ctx.entry_point,
            "registered again and no longer passes the policy",
        )


def record_outputs(
    paths: Paths, ctx: RunContext, run_id: str, name: str, version: str, decision: Decision, card: Any
) -> None:
    """decision.json and the card files, here and in the run's artifacts."""
    import mlflow

    io.write_json(paths.decision, decision.to_dict())
    io.write_with(paths.model_card_md, lambda tmp: tmp.write_text(card.to_markdown()))
    io.write_with(paths.model_card_html, lambda tmp: tmp.write_text(card.to_html(f"Model card: {name} v{version}")))
    with using_tracking_uri(ctx.tracking_uri), mlflow.start_run(run_id=run_id):
        mlflow.log_artifact(str(paths.model_card_md), "model_card")
        mlflow.log_artifact(str(paths.model_card_html), "model_card")
        mlflow.log_dict(decision.to_dict(), "reports/decision.json")
        mlflow.set_tags(
            {
                "gate.decision": PASSED if decision.passed else REJECTED_BY_POLICY,
                "registry.version": version,
                "registry.model": name,
            }
        )


def record_manifest(mlflow_client: Any, uri: str, name: str, version: str, team: bool) -> dict[str, str]:
    """The version's files checked against its manifest; the manifest tag to set where it is not recorded yet.

    Local mode: the first attempt hashes the logged model's files (served code, weights, preprocessor, policy
    JSON, ...) and returns the tag. Team mode: humane's server stamps it at CreateModelVersion (clients may not
    set `humane.*` version tags), so it must be there already. A retry finds it and checks the files against it.
    """
    recorded = mlflow_client.get_model_version(name, version)
    held = recorded.tags.get(MANIFEST_TAG)
    with tempfile.TemporaryDirectory(prefix="humane-register-") as tmp:
        folder = download_model(uri, str(recorded.source), Path(tmp))
        if held is None and not team:
            return {MANIFEST_TAG: manifest_tag(folder)}
        verify_manifest(folder, held, f"{name} v{version}")
    return {}


def card_logged(uri: str, run_id: str, tags: dict[str, str]) -> bool:
    """Whether the run holds the registered card that the version's `card.md5` names (False without the tag)."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    expected = tags.get(CARD_MD5_TAG)
    if not expected:
        return False
    with tempfile.TemporaryDirectory(prefix="humane-card-") as tmp:
        try:
            path = download_artifacts(
                run_id=run_id, artifact_path=f"model_card/{REGISTERED_CARD}", dst_path=tmp, tracking_uri=uri
            )
        except (MlflowException, OSError):  # not logged (the attempt died before): log it now
            return False
        return hashlib.md5(Path(path).read_bytes()).hexdigest() == expected


def log_registered_card(uri: str, run_id: str, markdown: str) -> None:
    """The card as registered, kept unchanged in the run: what `card.md5` and the trail name."""
    import mlflow

    with using_tracking_uri(uri), mlflow.start_run(run_id=run_id):
        mlflow.log_text(markdown, f"model_card/{REGISTERED_CARD}")
