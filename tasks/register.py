"""Register stage: a new registry version for every run, the model card, and the aliases the gate allows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from tasks import io
from tasks.audit import GROUP_METRICS
from tasks.card import Card, cell
from tasks.errors import ConfigError, cli
from tasks.gate import RESULT_WORDS, Decision, current_candidate, decide
from tasks.lineage import git_commit, output_md5
from tasks.params import Params, load_params
from tasks.paths import (
    AUDIT_REPORT,
    DATA_AUDIT,
    DECISION,
    INTERIM_META,
    MEMBERSHIP_REPORT,
    METRICS,
    MLFLOW_RUN,
    MODEL,
    MODEL_CARD_HTML,
    MODEL_CARD_MD,
    PRIVACY_REPORT,
    PROCESSED_TRAIN,
    REGISTRATION,
    TRAIN_METRICS,
    VALIDATION_REPORT,
)  # fmt: skip
from tasks.registry import (
    CHALLENGER,
    CHAMPION,
    METRIC_TAG,
    current_champion,
    promotion_lock,
    register_version,
    set_alias,
    set_description,
)  # fmt: skip
from tasks.store import tracking_uri, using_tracking_uri

TAG_LIMIT = 5000


def decision_from(payload: dict[str, Any]) -> Decision:
    """Rebuild a Decision from its JSON artifact."""
    from tasks.gate import Check

    return Decision(payload["passed"], payload["reasons"], [Check(**c) for c in payload["checks"]],
                    payload["champion_version"], payload.get("notes", []))  # fmt: skip


def build_card(params: Params, decision: Decision, version: str | None, facts: dict[str, Any]) -> Card:
    """The model card from recorded facts: details, use, metrics with CIs, gaps vs policy, validation, decision."""
    card = Card()
    name = params.register.model_name
    card.heading(f"Model card: {name}" + (f" v{version}" if version else ""), 1)
    card.heading("Model details")
    train = params.train
    card.table(["fact", "value"], [
        ["architecture", f"MLP {facts['n_inputs']} → {' → '.join(map(str, train.hidden_sizes))} → 1 logit, "
                         f"{train.activation}, dropout {train.dropout}"],
        ["parameters", f"{facts['n_parameters']:,}"],
        ["training", f"AdamW lr {train.lr}, weight decay {train.weight_decay}, batch {train.batch_size}, "
                     f"best epoch {facts['best_epoch']} of {facts['epochs_run']} (early stopping on validation loss)"],
        ["training data", f"{params.data.source} (raw md5 {facts['raw_md5']}); "
                          f"processed train md5 {facts['data_md5']} (DVC)"],
        ["sensitive features (audited, not model inputs)" if not params.preprocess.include_sensitive
         else "sensitive features (audited, and model inputs)", ", ".join(params.data.sensitive_features)],
        ["git commit", facts["git_commit"]],
        ["MLflow run", facts["run_id"]],
        ["date (UTC)", facts["date"]],
    ])  # fmt: skip
    card.markdown(facts["intended_use"])

    card.heading("Overall performance (test split)")
    metrics, overall = facts["metrics"], facts["audit"]["overall"]
    card.table(["metric", "model", "logistic regression", "majority class"], [
        [m, metrics["model"][m], metrics["baseline"]["logreg"][m], metrics["baseline"]["majority"][m]]
        for m in metrics["model"]
    ])  # fmt: skip
    intervals = "; ".join(f"{m} {_ci(v)}" for m, v in overall.items())
    card.para(f"Test rows: {metrics['test_rows']}. 95% bootstrap intervals "
              f"({facts['audit']['bootstrap']} resamples): {intervals}")  # fmt: skip

    card.heading("Per-group performance (test split, 95% bootstrap CIs)")
    for feature in facts["audit"]["features"]:
        card.heading(feature["feature"], 3)
        headers = ["group", "rows", "selection rate", "accuracy", "TPR", "FPR", "precision", "calibration error"]
        card.table(headers, [
            [g["group"] + (" (too small to judge)" if g["too_small"] else ""), g["count"]]
            + [_ci(g["metrics"][m]) for m in GROUP_METRICS]
            for g in feature["groups"]
        ])  # fmt: skip

    card.heading("Fairness gaps against the policy")
    thresholds = params.gate.max
    rows = []
    for feature in facts["audit"]["features"]:
        for gap, value in feature["gaps"].items():
            key = f"fairness.{feature['feature']}.{gap}"
            limit = thresholds.get(key)
            verdict = "n/a" if limit is None else ("within" if value["value"] <= limit else "EXCEEDS")
            rows.append([feature["feature"], gap, _ci(value), "none" if limit is None else limit, verdict])
    card.table(["feature", "gap", "value [95% CI]", "policy maximum", "result"], rows)

    card.heading("Data")
    validation = facts["validation"]
    card.para(f"Great Expectations validation: {'passed' if validation['passed'] else 'FAILED'} "
              f"({validation['n_checks']} checks, {validation['n_failed']} failed) on {facts['files']}.")  # fmt: skip
    card.table(["feature", "group", "share of training rows", "label base rate"], [
        [feature, g["group"], f"{g['share']:.1%}", g["base_rate"]]
        for feature, groups in facts["data_audit"].items() for g in groups
    ])  # fmt: skip
    small = [f"{f['feature']}: {', '.join(f['too_small'])}" for f in facts["audit"]["features"] if f["too_small"]]
    if small:
        card.heading("Recorded limitations", 3)
        card.bullets([f"groups with fewer than {params.audit.min_group_size} test rows were not judged — {s}"
                      for s in small])  # fmt: skip

    card.heading("Privacy")
    tm, risk, mia = facts["train_metrics"], facts["privacy"], facts["membership"]
    if tm.get("dp_enabled"):
        card.para(f"Trained with DP-SGD (Opacus, {tm['accountant']} accountant): ε = {tm['epsilon']:.3f} spent at "
                  f"δ = {tm['delta']:g}, noise multiplier {tm['noise_multiplier']:.3f}, "
                  f"per-sample gradient norm clipped to {tm['max_grad_norm']}.")  # fmt: skip
    else:
        card.para("Trained without differential privacy: no bound on what the weights reveal about a training row.")
    policy = params.privacy
    card.bullets([
        f"column policy applied before anything was written: dropped {policy.drop or 'none'}, "
        f"pseudonymized (HMAC-SHA256) {policy.pseudonymize or 'none'}, binned {list(policy.bins) or 'none'}, "
        f"top-coded {list(policy.top_code) or 'none'}, rare categories grouped {list(policy.group_rare) or 'none'}",
        f"k-anonymity over {', '.join(risk['quasi_identifiers'])}: smallest class {risk['before']['k_min']} → "
        f"{risk['after']['k_min']}; rows in classes below k={risk['k']}: {risk['before']['share_below_k']:.1%} → "
        f"{risk['after']['share_below_k']:.1%}; l-diversity of {risk['l_column']}: {risk['after']['l_min']}",
        f"membership inference (loss-threshold attack, {mia['samples_per_side']} members vs as many non-members): "
        f"AUC {mia['attack_auc']:.3f}, TPR at 1% FPR {mia['attack_tpr_at_1pct_fpr']:.3f}; generalisation gap "
        f"{mia['generalization_gap_accuracy']:.3f} accuracy, {mia['generalization_gap_loss']:.3f} loss",
    ])  # fmt: skip

    card.heading("Promotion decision")
    card.para(("PROMOTED to champion. " if decision.passed else "NOT PROMOTED. ") + decision.summary())
    card.table(["rule", "metric", "value", "threshold", "champion", "result"], [
        [c.rule, c.metric, cell(c.value), c.threshold,
         "-" if c.champion_version is None else f"v{c.champion_version}: {cell(c.champion_value)}",
         RESULT_WORDS[c.passed]]
        for c in decision.checks
    ])  # fmt: skip
    for note in decision.notes:
        card.para(note)
    return card


def _ci(value: dict[str, float]) -> str:
    return f"{cell(value['value'])} [{cell(value['lo'])}, {cell(value['hi'])}]"


def gather_facts(params: Params, run_id: str) -> dict[str, Any]:
    """Everything the card states, read from the stage outputs."""
    path = Path(params.register.intended_use)
    if not path.is_file():
        raise ConfigError(f"register.intended_use: {path} not found (the model card's intended-use text)")
    train_metrics = io.read_json(TRAIN_METRICS)
    meta = io.read_json(INTERIM_META)
    import torch

    return {
        "n_inputs": torch.load(MODEL, weights_only=True)["model_args"]["n_inputs"],
        "n_parameters": train_metrics["n_parameters"],
        "best_epoch": train_metrics["best_epoch"],
        "epochs_run": train_metrics["epochs_run"],
        "raw_md5": meta["md5"]["train"],
        "data_md5": output_md5(PROCESSED_TRAIN),
        "files": ", ".join(sorted(set(meta["files"].values()))),
        "git_commit": git_commit(),
        "run_id": run_id,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "intended_use": path.read_text(),
        "metrics": io.read_json(METRICS),
        "audit": io.read_json(AUDIT_REPORT),
        "data_audit": io.read_json(DATA_AUDIT),
        "validation": io.read_json(VALIDATION_REPORT),
        "train_metrics": train_metrics,
        "privacy": io.read_json(PRIVACY_REPORT),
        "membership": io.read_json(MEMBERSHIP_REPORT),
    }


def version_tags(decision: Decision, candidate: dict[str, float], facts: dict[str, Any]) -> dict[str, str]:
    """Decision, headline metrics and gaps, data md5, git commit and run id, as registry tags."""
    tags = {
        "decision": "promoted" if decision.passed else "rejected",
        "decision.reasons": "; ".join(decision.reasons)[:TAG_LIMIT] or "-",
        "data.md5": facts["data_md5"],
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


def decision_markdown(decision: dict[str, Any], registration: dict[str, Any]) -> str:
    """The decision as Markdown for the Prefect flow run's page."""
    version = f"{registration['model_name']} v{registration['version']}"
    verdict = "**promoted to champion**" if registration["promoted"] else "**not promoted**"
    lines = [f"# Promotion decision: {version} {verdict}", ""]
    lines += [f"- {r}" for r in registration["reasons"]] or ["Every check of the policy passed."]
    lines += [f"- {n}" for n in decision.get("notes", [])]
    lines += ["", "| rule | metric | value | threshold | champion | result |", "| --- | --- | --- | --- | --- | --- |"]
    for c in decision["checks"]:
        champion = "-" if c["champion_version"] is None else f"v{c['champion_version']}: {cell(c['champion_value'])}"
        result = RESULT_WORDS[c["passed"]]
        lines.append(f"| {c['rule']} | {c['metric']} | {cell(c['value'])} | {c['threshold']} | {champion} | {result} |")
    return "\n".join(lines)


def group_rows(audit_report: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-group table (one row per feature and group) for a Prefect table artifact."""
    return [
        {"feature": f["feature"], "group": g["group"], "rows": g["count"], "judged": not g["too_small"],
         **{m: _ci(g["metrics"][m]) for m in GROUP_METRICS}}
        for f in audit_report["features"] for g in f["groups"]
    ]  # fmt: skip


def run(params: Params) -> dict[str, Any]:
    """Register the candidate; move `challenger` to it, and `champion` only if the policy passes."""
    import mlflow

    record = io.read_json(MLFLOW_RUN)
    name = params.register.model_name
    candidate = current_candidate()
    facts = gather_facts(params, record["run_id"])
    with promotion_lock():
        decision = decision_from(io.read_json(DECISION))
        champion = current_champion(name)
        if (champion.version if champion else None) != decision.champion_version:
            decision = decide(params.gate, candidate, champion)  # another run moved the champion since the gate ran
        version = register_version(name, record["model_uri"], version_tags(decision, candidate, facts))
        card = build_card(params, decision, version, facts)
        set_description(name, version, card.to_markdown())
        set_alias(name, CHALLENGER, version)
        if decision.passed:
            set_alias(name, CHAMPION, version)
    io.write_with(MODEL_CARD_MD, lambda tmp: tmp.write_text(card.to_markdown()))
    io.write_with(MODEL_CARD_HTML, lambda tmp: tmp.write_text(card.to_html(f"Model card: {name} v{version}")))
    result = {"model_name": name, "version": version, "promoted": decision.passed, "reasons": decision.reasons,
              "aliases": [CHALLENGER, CHAMPION] if decision.passed else [CHALLENGER],
              "compared_with": decision.champion_version}  # fmt: skip
    with using_tracking_uri(tracking_uri()), mlflow.start_run(run_id=record["run_id"]):
        mlflow.log_artifact(str(MODEL_CARD_MD), "model_card")
        mlflow.log_artifact(str(MODEL_CARD_HTML), "model_card")
        mlflow.log_dict(decision.to_dict(), "reports/decision.json")
        mlflow.set_tags({"gate.decision": "promoted" if decision.passed else "rejected",
                         "registry.version": version, "registry.model": name})  # fmt: skip
    io.write_json(REGISTRATION, result)
    return result


def main() -> None:
    """DVC entry point."""
    result = run(load_params())
    verdict = "promoted to champion" if result["promoted"] else "not promoted: " + "; ".join(result["reasons"])
    print(f"register: {result['model_name']} v{result['version']} (challenger), {verdict}")


if __name__ == "__main__":
    cli(main)
