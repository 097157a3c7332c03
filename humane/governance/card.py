"""The model card and the decision table, built from recorded facts only, rendered as Markdown and HTML."""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from typing import Any, TypedDict

from humane.core.metric_names import baseline_metric, fairness_metric
from humane.fairness.metrics import GROUP_METRICS, unmeasurable
from humane.fairness.policy import policy_of
from humane.governance import federation
from humane.governance.gate import RESULT_WORDS, Decision
from humane.governance.params import GovernanceSections

# The card's sign-off paragraph while a person's decision is awaited; the sign-off replaces it with the outcome.
SIGNOFF_PENDING = "Awaiting sign-off by a person (gate.require_approval): champion does not move until then."
AWAITING = "PASSED the automated checks; awaiting sign-off. "  # the decision's verdict while it waits
SIGNED = "PASSED the automated checks; a person decided (see Sign-off). "  # and once decided
# No sign-off asked: the registration made it champion (a later rollback is in the audit trail, not here).
PROMOTED = "PASSED the automated checks; PROMOTED to champion when registered. "


@dataclass
class Card:
    """A sequence of blocks: headings, paragraphs, bullet lists, tables and user-written Markdown."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        """Add a heading."""
        self.blocks.append(("heading", (level, text)))

    def para(self, text: str) -> None:
        """Add a paragraph."""
        self.blocks.append(("para", text))

    def bullets(self, items: list[str]) -> None:
        """Add a bullet list."""
        self.blocks.append(("bullets", items))

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        """Add a table."""
        self.blocks.append(("table", (headers, rows)))

    def markdown(self, text: str) -> None:
        """Add user-written Markdown (headings, paragraphs and bullets are understood for HTML)."""
        self.blocks.append(("markdown", text))

    def to_markdown(self) -> str:
        """Render as GitHub-flavoured Markdown."""
        out = []
        for kind, value in self.blocks:
            if kind == "heading":
                out.append(f"{'#' * value[0]} {value[1]}")
            elif kind == "para":
                out.append(value)
            elif kind == "bullets":
                out.append("\n".join(f"- {item}" for item in value))
            elif kind == "table":
                headers, rows = value
                lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
                lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
                out.append("\n".join(lines))
            else:
                out.append(value.strip())
        return "\n\n".join(out) + "\n"

    def to_html(self, title: str) -> str:
        """Render as a standalone HTML page (no external assets)."""
        body = []
        for kind, value in self.blocks:
            if kind == "heading":
                body.append(f"<h{value[0]}>{html.escape(value[1])}</h{value[0]}>")
            elif kind == "para":
                body.append(f"<p>{html.escape(value)}</p>")
            elif kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in value) + "</ul>")
            elif kind == "table":
                headers, rows = value
                head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
                cells = "".join("<tr>" + "".join(f"<td>{html.escape(cell(c))}</td>" for c in r) + "</tr>" for r in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
            else:
                body.append(_markdown_to_html(value))
        style = (
            "body{font-family:sans-serif;max-width:60rem;margin:2rem auto;line-height:1.4}"
            "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.2rem .5rem}"
            "th{background:#f3f3f3}"
        )
        return (
            f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
        )


def cell(value: Any) -> str:
    """A table cell: floats to 4 decimals, None and NaN as n/a."""
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _markdown_to_html(text: str) -> str:
    out: list[str] = []
    items: list[str] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append(f"<p>{html.escape(' '.join(para))}</p>")
            para.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in text.strip().splitlines():
        stripped = line.strip()
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if not stripped:
            flush()
        elif heading:
            flush()
            level = len(heading.group(1))
            out.append(f"<h{level}>{html.escape(heading.group(2))}</h{level}>")
        elif stripped.startswith(("- ", "* ")):
            if para:
                flush()
            items.append(stripped[2:])
        elif items and line.startswith(" "):
            items[-1] += " " + stripped
        else:
            if items:
                flush()
            para.append(stripped)
    flush()
    return "\n".join(out)


class _RecordedFacts(TypedDict):
    """The facts every workspace records (see ModelFacts)."""

    data_md5: str  # md5 of data/processed/train.parquet (DVC), or NOT_HERE
    test_md5: str  # md5 of data/interim/test.parquet: the rows the recorded metrics were measured on, or NOT_HERE
    n_inputs: int  # the network's input width (an ensemble's: its members')
    n_numeric: int  # numeric columns the network reads as numbers (0 for a model file from before the layout)
    n_parameters: int  # trainable parameters (reports/train_metrics.json)
    best_epoch: int  # the epoch (federated: round) whose weights were kept
    epochs_run: int  # epochs (rounds) run
    raw_md5: str  # md5 of the raw training file (data/interim/meta.json)
    files: str  # the raw data files, comma-separated
    git_commit: str  # the commit the pipeline ran at ("-dirty" when the tree was)
    run_id: str  # the MLflow run of the pipeline run
    date: str  # when the card was written, UTC "YYYY-MM-DD HH:MM"
    intended_use: str  # the intended-use Markdown (data.intended_use)
    metrics: dict[str, Any]  # reports/metrics.json: model and baselines on the test split, test_rows
    audit: dict[str, Any]  # reports/audit.json: per-group metrics and gaps with bootstrap CIs
    data_audit: dict[str, Any]  # reports/data_audit.json: group sizes and label rates of the data
    validation: dict[str, Any]  # reports/validation.json: checks, schema, leakage
    train_metrics: dict[str, Any]  # reports/train_metrics.json: epochs, DP, mitigation, compute
    privacy: dict[str, Any]  # reports/privacy.json: the policy and the re-identification risk
    membership: dict[str, Any]  # reports/membership.json: the membership-inference attack
    mitigation_data: dict[str, Any]  # reports/mitigation_data.json: reweighing and resampling
    thresholds: dict[str, Any]  # models/thresholds.json: per-group thresholds, or constraint "none"
    explanations: dict[str, Any] | None  # reports/explanations.json; None where absent (federated, older)


class ModelFacts(_RecordedFacts, total=False):
    """Everything the card states about one model, read from the stage outputs (`promotion.gather_facts`).

    Federated (reports/federation.json exists): the md5s of row files are `federation.NOT_HERE` and `federation`
    holds the run of the sites; otherwise `federation` is absent.
    """

    federation: dict[str, Any]  # reports/federation.json: sites, rounds, messages (federated only)


def model_card(
    params: GovernanceSections, decision: Decision, version: str | None, facts: ModelFacts, signed: str | None = None
) -> Card:
    """The model card from recorded facts: details, use, metrics with CIs, gaps vs policy, validation, decision."""
    card = Card()
    name = params.data.model_name
    card.heading(f"Model card: {name}" + (f" v{version}" if version else ""), 1)
    add_signoff(card, params, decision, signed)  # first: the description keeps the card's first 5000 characters
    add_details(card, params, facts)
    add_performance(card, facts)
    add_group_performance(card, facts["audit"])
    card.heading("Fairness gaps against the policy")
    thresholds = policy_of(params).max
    card.table(["feature", "gap", "value [95% CI]", "policy maximum", "result"], gap_rows(facts["audit"], thresholds))
    add_explanations(card, facts.get("explanations"))
    add_mitigation(card, params, facts)
    if facts.get("federation"):  # no row at the coordinator: its sites, and what could not be measured here
        add_federation(card, params, facts)
    else:
        add_pooled_data(card, params, facts)
    card.heading("Promotion decision")
    awaiting = params.gate.require_approval and decision.passed and not signed
    add_decision(card, decision, awaiting, signed_off=bool(signed))
    return card


def training_text(params: GovernanceSections, facts: ModelFacts) -> str:
    """How the model was trained, in one cell: optimiser, batch, and which epoch (or round, or fits) it keeps."""
    train = params.train
    if facts.get("federation"):
        kept = (
            f"federated: the weights after round {facts['best_epoch']} of {facts['epochs_run']} "
            "(no round is picked by validation loss)"
        )
    elif params.mitigation.reductions == "none":
        kept = f"best epoch {facts['best_epoch']} of {facts['epochs_run']} (early stopping on validation loss)"
    else:
        kept = f"{params.mitigation.reductions_epochs} epochs per ExponentiatedGradient fit (no early stopping)"
    return f"AdamW lr {train.lr}, weight decay {train.weight_decay}, batch {train.batch_size}, " + kept


def add_details(card: Card, params: GovernanceSections, facts: ModelFacts) -> None:
    """The model details table (network, training, data, sensitive features, lineage) and the intended use."""
    card.heading("Model details")
    data = (
        "each site's own files, never sent (see Federated training)"
        if facts.get("federation")
        else f"{params.data.source} (raw md5 {facts['raw_md5']}); processed train md5 {facts['data_md5']} (DVC)"
    )
    audited = "audited, and model inputs" if params.preprocess.include_sensitive else "audited, not model inputs"
    card.table(
        ["fact", "value"],
        [
            ["architecture", architecture(params, facts)],
            ["parameters", f"{facts['n_parameters']:,}"],
            ["training", training_text(params, facts)],
            ["training data", data],
            [f"sensitive features ({audited})", ", ".join(params.data.sensitive_features)],
            ["git commit", facts["git_commit"]],
            ["MLflow run", facts["run_id"]],
            ["date (UTC)", facts["date"]],
        ],
    )
    card.markdown(facts["intended_use"])


def add_performance(card: Card, facts: ModelFacts) -> None:
    """The model and the baselines on the test split, and the model's bootstrap intervals."""
    card.heading("Overall performance (test split)")
    metrics, overall = facts["metrics"], facts["audit"]["overall"]
    baseline = metrics["baseline"]
    card.table(
        ["metric", "model", "logistic regression", "majority class"],
        [[m, metrics["model"][m], baseline["logreg"][m], baseline["majority"][m]] for m in metrics["model"]],
    )
    intervals = "; ".join(f"{m} {_ci(v)}" for m, v in overall.items())
    card.para(
        f"Test rows: {metrics['test_rows']}. 95% bootstrap intervals "
        f"({facts['audit']['bootstrap']} resamples): {intervals}"
    )


def add_group_performance(card: Card, audit: dict[str, Any]) -> None:
    """Per sensitive feature, each group's metrics with CIs; a group too small to judge shows its size only."""
    card.heading("Per-group performance (test split, 95% bootstrap CIs)")
    headers = ["group", "rows", "selection rate", "accuracy", "TPR", "FPR", "precision", "calibration error"]
    for feature in audit["features"]:
        card.heading(feature["feature"], 3)
        # A group too small to judge shows its size only: its rates would describe a handful of people.
        card.table(
            headers,
            [
                [g["group"] + (" (too small to judge)" if g["too_small"] else ""), g["count"]]
                + (
                    ["withheld"] * len(GROUP_METRICS)
                    if g["too_small"]
                    else [_ci(g["metrics"][m]) for m in GROUP_METRICS]
                )
                for g in feature["groups"]
            ],
        )


# Where the explain stage's report and plots are in the MLflow run (the track stage logs them there).
EXPLANATIONS_ARTIFACT = "reports/explanations.json"
EXPLAIN_PLOTS_ARTIFACT = "plots/explain"
COHORTS_SHOWN = 3  # the worst error cohorts the card lists
DIFFERENCES_SHOWN = 3  # the largest group differences in attribution share per sensitive feature


def add_explanations(card: Card, report: dict[str, Any] | None) -> None:
    """Why the model decides as it does: attributions overall and per group, proxies, error cohorts, plots.

    Args:
        card: The card being built.
        report: reports/explanations.json, or None for a model without one (an older run, a federated run).

    """
    card.heading("Explanations")
    if not report:
        card.para(
            "Not recorded: this model has no explanation report (trained before the explain stage, or "
            "federated: no test row at the coordinator to explain)."
        )
        return
    attributions = report["attributions"]
    card.para(
        f"{report['method'].replace('_', ' ')} on {attributions['overall']['rows']} test rows (seed "
        f"{report['seed']}), on the logit scale, summed back to the raw input columns; a column's share is "
        "its mean |attribution| over the sum of all columns' (95% bootstrap intervals). Completeness: "
        f"largest gap {cell(float(report['completeness_gap']))} on the logit scale."
    )
    overall = attributions["overall"]
    card.heading("Top inputs overall", 3)
    rows = [[c, share_text(overall["shares"][c])] for c in overall["top"]]
    card.table(["input", "share of attribution [95% CI]"], rows)
    for feature, groups in attributions.get("groups", {}).items():
        add_group_attributions(card, feature, groups, attributions.get("differences", {}).get(feature, {}))
    add_proxies(card, report.get("proxies", {}))
    add_error_cohorts(card, report.get("error_analysis"))
    add_decision_example(card, report.get("example"))
    plots = [f"{EXPLAIN_PLOTS_ARTIFACT}/{name}" for name in report.get("plots", [])]
    if plots:
        card.para("Plots (MLflow run artifacts): " + ", ".join(plots) + ".")


def add_decision_example(card: Card, example: dict[str, Any] | None) -> None:
    """What the served model tells a refused person: one refused test row's reasons, and counterfactual coverage."""
    card.heading("Reasons and counterfactuals for a refused person", 3)
    if not example:
        card.para("Not recorded.")
        return
    reasons = ", ".join(example.get("reasons", [])) or "none in the sample"
    found = example.get("counterfactuals", {})
    text = (
        f"The served model gives each row the inputs that pushed it most towards its decision, never a masked or "
        f"sensitive one; for one refused test row: {reasons}. A counterfactual within two changes of actionable "
        f"inputs was found for {found.get('found', 0)} of {found.get('searched', 0)} refused rows searched"
    )
    shown = (found.get("example") or {}).get("changes")
    if shown:
        text += "; e.g. " + ", ".join(f"{column} → {value}" for column, value in shown.items())
    card.para(text + ".")


def share_text(share: dict[str, Any]) -> str:
    """An attribution share as a percentage with its interval (none for a group too small to judge)."""
    if share.get("lo") is None or share.get("hi") is None:
        return f"{share['value']:.1%} (no interval: too few rows)"
    return f"{share['value']:.1%} [{share['lo']:.1%}, {share['hi']:.1%}]"


def difference_text(diff: dict[str, Any]) -> str:
    """A difference in share (group minus the rest) in percentage points, with its interval."""
    if diff.get("lo") is None or diff.get("hi") is None:
        return f"{100 * diff['value']:+.1f} pp (no interval)"
    return f"{100 * diff['value']:+.1f} pp [{100 * diff['lo']:+.1f}, {100 * diff['hi']:+.1f}]"


def add_group_attributions(card: Card, feature: str, groups: dict[str, Any], differences: dict[str, Any]) -> None:
    """Per group of one sensitive feature: its top inputs, then the largest differences from the other rows.

    A group too small to judge shows its row count only, whatever the report holds for it (as the audit withholds
    its rates): no share and no difference.
    """
    card.heading(f"Top inputs by {feature}", 3)
    card.table(["group", "rows", "top inputs (share [95% CI])"], [group_row(group, g) for group, g in groups.items()])
    largest = largest_differences(differences, {group for group, g in groups.items() if g.get("too_small")})
    if largest:
        card.para(
            f"Largest differences in share (group minus the other rows of {feature}): "
            + "; ".join(f"{g}: {c} {difference_text(d)}" for g, c, d in largest)
            + "."
        )


def group_row(group: str, attribution: dict[str, Any]) -> list[Any]:
    """One group's row: its name, rows and top inputs with their shares (none for a group too small to judge)."""
    if attribution.get("too_small"):
        return [group, attribution["rows"], "too small to judge"]
    shares = attribution["shares"]
    return [group, attribution["rows"], "; ".join(f"{c} {share_text(shares[c])}" for c in attribution["top"])]


def largest_differences(differences: dict[str, Any], too_small: set[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """The largest measured differences in share (group, column, difference), skipping groups too small to judge."""
    measured = [
        (group, column, d)
        for group, by_column in differences.items()
        if group not in too_small
        for column, d in by_column.items()
        if d.get("value") is not None and d["value"] == d["value"]
    ]
    return sorted(measured, key=lambda item: -abs(item[2]["value"]))[:DIFFERENCES_SHOWN]


def add_proxies(card: Card, proxies: dict[str, Any]) -> None:
    """Per sensitive feature: how well all inputs predict it, the stand-ins with their own AUC, their share."""
    card.heading("Proxies (inputs that stand in for a sensitive feature)", 3)
    headers = ["sensitive feature", "ROC AUC of all inputs (cross-validated)", "stand-ins (own AUC)"]
    card.table([*headers, "attribution share through them"], [proxy_row(f, p) for f, p in proxies.items()])


def proxy_row(feature: str, proxy: dict[str, Any]) -> list[str]:
    """One sensitive feature's proxy figures: all inputs' AUC, the stand-ins with their own AUC, their share."""
    stand_ins = ", ".join(f"{c} ({proxy['columns'][c]:.3f})" for c in proxy.get("proxies", [])) or "none"
    share = proxy.get("attribution_share")
    return [feature, proxy_auc_text(proxy), stand_ins, "n/a" if share is None or share != share else f"{share:.1%}"]


def proxy_auc_text(proxy: dict[str, Any]) -> str:
    """The all-inputs AUC, or why it could not be measured."""
    auc = proxy.get("auc")
    if auc is None or auc != auc:
        return f"not measured: {proxy.get('why', 'no reason recorded')}"
    return f"{auc:.3f} ({proxy['folds']} folds)"


def add_error_cohorts(card: Card, analysis: dict[str, Any] | None) -> None:
    """The judged cohorts where the model errs most (highest interval lower bound first), with their overlap.

    A cohort below the audit's minimum size (`judged` false) shows no figure: the card counts them. A judged
    cohort whose interval does not lie above the measured error rate (`distinguishable` false) says so.
    """
    card.heading("Where the model errs most", 3)
    if not analysis:
        card.para("Not recorded.")
        return
    measured = analysis.get("measured_error_rate", analysis["error_rate"])
    card.para(
        f"A shallow tree on the test errors, grown on {analysis['grown_on']} rows, its cohorts measured on the "
        f"other {analysis['measured_on']} (error rate there {measured:.1%}; all test rows "
        f"{analysis['error_rate']:.1%}). Error rates with 95% Wilson intervals; lift = cohort error rate / the "
        "measured rows' error rate."
    )
    judged = sorted((c for c in analysis["cohorts"] if c.get("judged", True)), key=lambda c: -c["lo"])
    card.table(
        ["cohort", "rows", "error rate [95% CI]", "lift", "groups over-represented (share vs overall)"],
        [cohort_row(c) for c in judged[:COHORTS_SHOWN]],
    )
    small = len(analysis["cohorts"]) - len(judged)
    if small or not judged:
        card.para(
            ("No cohort was large enough to judge. " if not judged else "")
            + f"{small} cohort(s) below the audit's minimum group size: too small to judge, not shown."
        )


def cohort_row(cohort: dict[str, Any]) -> list[Any]:
    """One judged cohort: its rule, rows, error rate with interval (and whether it stands out), lift, overlap."""
    rate = f"{cohort['error_rate']:.1%} [{cohort['lo']:.1%}, {cohort['hi']:.1%}]"
    if cohort.get("distinguishable") is False:
        rate += " (not distinguishable from the overall rate)"
    return [cohort["rule"], cohort["rows"], rate, f"{cohort['lift']:.2f}", overlap_text(cohort.get("groups", {}))]


def overlap_text(groups: dict[str, dict[str, dict[str, float]]]) -> str:
    """Per sensitive feature, the group whose share in the cohort most exceeds its share overall."""
    parts = []
    for feature, shares in groups.items():
        if not shares:
            continue
        group, s = max(shares.items(), key=lambda item: item[1]["share"] - item[1]["overall_share"])
        parts.append(f"{feature}: {group} {s['share']:.0%} (overall {s['overall_share']:.0%})")
    return "; ".join(parts) or "-"


def add_federation(card: Card, params: GovernanceSections, facts: ModelFacts) -> None:
    """A federated model's sites (rows, status and why), its run, and the figures that only rows give."""
    run = facts["federation"]
    card.heading("Federated training")
    card.table(["site", "status", "reason", "train rows", "test rows", "rounds joined"], federation.site_rows(run))
    card.bullets(federation.run_lines(run))
    auc_error = facts["metrics"]["model"].get("auc_binning_error", float("nan"))
    card.para(
        "Evaluated and audited from the sites' confusion counts and score histograms, merged (per site: "
        "reports/audit.json): accuracy, rates and gaps are exact, ROC AUC is within "
        f"{auc_error:.4f} of the rows' (score bins), a group's calibration error is not sent (withheld). Baselines: "
        + federation.why_unmeasured(baseline_metric("logreg", "accuracy"))
        + "."
    )
    per_site = [
        [site, f["feature"], gap, _ci(f["gaps"][gap])]
        for site, audit in facts["audit"].get("sites", {}).items()
        for f in audit["features"]
        for gap in ("demographic_parity_difference", "equalized_odds_difference")
    ]
    if per_site:
        card.heading("Fairness gaps per site (each site's own test rows, 95% CIs)", 3)
        card.table(["site", "feature", "gap", "value [95% CI]"], per_site)
    card.heading("Data")
    card.para(
        "Each site ran load (with the column privacy policy), Great Expectations validation, the identifier check "
        "and the data audit on its own rows; a site whose data failed was excluded with its reason (table above), "
        "never silently."
    )
    rows = [
        [f, g["group"], f"{g['share']:.1%}", "not sent"] for f, groups in facts["data_audit"].items() for g in groups
    ]
    card.table(["feature", "group", "share of training rows (trained sites)", "label base rate"], rows)
    small = [f"{f['feature']}: {_sizes(f['groups'])}" for f in facts["audit"]["features"] if f["too_small"]]
    withheld = facts["audit"].get("withheld_rows", {})
    card.heading("Recorded limitations", 3)
    card.bullets(
        [f"groups with fewer than {params.audit.min_group_size} test rows were not judged — {s}" for s in small]
        + [
            f"{f}: {n} test rows in groups below {run['min_group_size']} rows at a site, not sent (withheld)"
            for f, n in withheld.items()
            if n
        ]
        or ["none"]
    )
    card.heading("Privacy")
    policy = params.privacy
    card.bullets(
        [
            f"column policy applied at each site before anything was written: dropped {policy.drop or 'none'}, "
            f"pseudonymized {policy.pseudonymize or 'none'}, binned {list(policy.bins) or 'none'}, "
            f"rare categories grouped {list(policy.group_rare) or 'none'}"
        ]
        + [f"{name}: {federation.why_unmeasured(name)}" for name in ("privacy.k_min", "privacy.mia_auc")]
    )


def add_pooled_data(card: Card, params: GovernanceSections, facts: ModelFacts) -> None:
    """Data, privacy and compute of a model trained on pooled rows."""
    card.heading("Data")
    validation = facts["validation"]
    card.para(
        f"Great Expectations validation: {'passed' if validation['passed'] else 'FAILED'} "
        f"({validation['n_checks']} checks, {validation['n_failed']} failed) on {facts['files']}."
    )
    card.para(leakage_statement(validation))
    card.table(
        ["feature", "group", "share of training rows", "label base rate"],
        [
            [feature, g["group"], f"{g['share']:.1%}", "too small to judge" if g.get("too_small") else g["base_rate"]]
            for feature, groups in facts["data_audit"].items()
            for g in groups
        ],
    )
    small = [f"{f['feature']}: {_sizes(f['groups'])}" for f in facts["audit"]["features"] if f["too_small"]]
    if small:
        card.heading("Recorded limitations", 3)
        card.bullets(
            [f"groups with fewer than {params.audit.min_group_size} test rows were not judged — {s}" for s in small]
        )

    card.heading("Privacy")
    tm, risk, mia = facts["train_metrics"], facts["privacy"], facts["membership"]
    if tm.get("dp_enabled"):
        card.para(
            f"Trained with DP-SGD (per-row clipping and Gaussian noise, Opacus' {tm['accountant']} accountant): "
            f"ε = {tm['epsilon']:.3f} spent at δ = {tm['delta']:g}, noise multiplier {tm['noise_multiplier']:.3f}, "
            f"per-sample gradient norm clipped to {tm['max_grad_norm']}."
        )
    else:
        card.para("Trained without differential privacy: no bound on what the weights reveal about a training row.")
    policy = params.privacy
    card.bullets(
        [
            f"column policy applied before anything was written: dropped {policy.drop or 'none'}, "
            f"pseudonymized (HMAC-SHA256) {policy.pseudonymize or 'none'}, binned {list(policy.bins) or 'none'}, "
            f"top-coded {list(policy.top_code) or 'none'}, rare categories grouped {list(policy.group_rare) or 'none'}",
            f"k-anonymity over {', '.join(risk['quasi_identifiers'])}: smallest class {risk['before']['k_min']} → "
            f"{risk['after']['k_min']}; rows in classes below k={risk['k']}: {risk['before']['share_below_k']:.1%} → "
            f"{risk['after']['share_below_k']:.1%}; l-diversity of {risk['l_column']}: {risk['after']['l_min']}",
            f"membership inference (loss-threshold attack, {mia['samples_per_side']} members vs as many non-members): "
            f"AUC {mia['attack_auc']:.3f}, TPR at 1% FPR {mia['attack_tpr_at_1pct_fpr']:.3f}; generalisation gap "
            f"{mia['generalization_gap_accuracy']:.3f} accuracy, {mia['generalization_gap_loss']:.3f} loss",
        ]
    )

    add_compute(card, facts.get("train_metrics", {}).get("compute"))


def gap_rows(audit: dict[str, Any], limits: dict[str, float]) -> list[list[Any]]:
    """The fairness table's rows: each gap with its CI, the policy's maximum and the result.

    A gap with no value (NaN, or None) is "unmeasurable" with the reason the gate gives
    (`humane.fairness.metrics.unmeasurable`), never "EXCEEDS" or "within".

    Args:
        audit: reports/audit.json.
        limits: The policy's maxima (`Policy.max`), by `fairness.<feature>.<gap>`.

    Returns:
        [feature, gap, value [95% CI], policy maximum, result] per gap.

    """
    figures = {
        fairness_metric(f["feature"], gap): value["value"]
        for f in audit["features"]
        for gap, value in f["gaps"].items()
    }
    rows = []
    for feature in audit["features"]:
        for gap, value in feature["gaps"].items():
            key = fairness_metric(feature["feature"], gap)
            limit, figure = limits.get(key), value["value"]
            if figure is None or math.isnan(figure):
                verdict = unmeasurable(key, figures)
            else:
                verdict = "n/a" if limit is None else ("within" if figure <= limit else "EXCEEDS")
            rows.append([feature["feature"], gap, _ci(value), "none" if limit is None else limit, verdict])
    return rows


def architecture(params: GovernanceSections, facts: ModelFacts) -> str:
    """The network in one line: the MLP's layers, or the FT-Transformer's sizes."""
    train = params.train
    e = train.numeric_embedding
    numeric = (
        ""
        if e.kind == "linear" or not facts.get("n_numeric", 1)
        else (
            f"; numeric columns through periodic embeddings (rtdl-num-embeddings, {e.n_frequencies} frequencies, init "
            f"scale {e.frequency_init_scale:g})"
        )
    )
    if train.model == "ft_transformer":
        ft = train.ft_transformer
        return (
            f"FT-Transformer (rtdl-revisiting-models) over {facts['n_inputs']} inputs: one token per feature + "
            f"[CLS], {ft.n_blocks} blocks of width {ft.d_block}, {ft.attention_n_heads} heads, ReGLU FFN "
            f"x{ft.ffn_d_hidden_multiplier:.3g}, dropout attention {ft.attention_dropout} / FFN {ft.ffn_dropout} / "
            f"residual {ft.residual_dropout}" + (", activation checkpointing" if ft.checkpointing else "") + numeric
        )
    if train.model == "tabm":
        t = train.tabm
        return (
            f"TabM ({t.arch_type}, the `tabm` package) over {facts['n_inputs']} inputs: {t.k} MLPs sharing "
            f"their weights, {t.n_blocks} blocks of width {t.d_block}, dropout {t.dropout}, each learning every "
            f"row; the probability is the members' mean" + numeric
        )
    mlp = (
        f"MLP {facts['n_inputs']} → {' → '.join(map(str, train.hidden_sizes))} → 1 logit, {train.activation}, "
        f"dropout {train.dropout}"
    )
    mlp += numeric + (f", {e.d_embedding} values each" if numeric else "")
    if params.mitigation.reductions != "none":
        mlp = f"a weighted vote of MLPs (ExponentiatedGradient), each: {mlp}"
    return mlp


def add_compute(card: Card, compute: dict[str, Any] | None) -> None:
    """What training cost: size, FLOPs, throughput, time, peak memory, energy and CO2 (codecarbon, offline)."""
    card.heading("Compute")
    if not compute:
        card.para("Not recorded: this model was trained before the compute bill was kept.")
        return
    rows = [
        ["parameters", f"{compute['n_parameters']:,}"],
        ["FLOPs per training sample (forward + backward)", f"{compute['flops_per_sample']:.4g}"],
        ["training FLOPs (all epochs)", f"{compute['train_flops']:.4g}"],
        ["throughput", f"{compute['samples_per_second']:,.0f} samples/s"],
        ["training wall time", f"{compute['train_seconds']:.1f} s"],
        ["train stage wall time", f"{compute['stage_seconds']:.1f} s"],
        ["peak memory (RSS)", f"{compute['peak_rss_gb']:.2f} GB"],
        ["device", f"{compute['world_size']} process(es) on {compute['device']}, {compute['precision']}"],
    ]
    if "peak_cuda_gb" in compute:
        rows.append(["peak GPU memory allocated", f"{compute['peak_cuda_gb']:.2f} GB"])
    if "energy_kwh" in compute:
        rows.append(["energy (codecarbon estimate)", f"{compute['energy_kwh']:.3g} kWh"])
        rows.append([f"CO2 (grid of {compute['country_iso_code']})", f"{compute['co2_kg']:.3g} kg"])
    card.table(["figure", "value"], rows)
    if compute.get("note"):
        card.para(compute["note"])


def add_signoff(card: Card, params: GovernanceSections, decision: Decision, signed: str | None = None) -> None:
    """Whether a person must sign off, and that it is awaited (the sign-off replaces it) or how it went (`signed`)."""
    card.heading("Sign-off")
    if signed:
        card.para(signed)
    elif params.gate.require_approval and decision.passed:
        card.para(
            SIGNOFF_PENDING
            + (" Two people: whoever triggered the run cannot approve it." if params.gate.four_eyes else "")
        )
    elif params.gate.require_approval:
        card.para("Not eligible: the candidate failed the automated checks, so it cannot be approved.")
    else:
        card.para("Not required by the policy (gate.require_approval is off): the automated checks decided.")


def leakage_statement(validation: dict[str, Any]) -> str:
    """What validation measured of leakage against the limits in force; a limit the profile raised is said first.

    Args:
        validation: reports/validation.json; its `leakage` entry (`humane.data.validation.leakage_summary`).

    Returns:
        One paragraph. A report without the entry (written before it existed) says the figures are unknown.

    """
    leak = validation.get("leakage")
    if not leak:
        return "Leakage: not recorded by this validation report (the figures and limits are unknown)."
    shared = leak["shared_fraction"]
    share = "not measured (no separate test split)" if shared is None else f"{shared:.2%} ({leak['shared_rows']} rows)"
    top = leak["top_feature_auc"]
    auc = "not measured" if top is None else f"{top:.3f} ({leak['top_feature']})"
    figures = (
        f"test rows equal to a training-pool row: {share}, limit {leak['max_shared_fraction']:.2%}; best "
        f"single-feature ROC AUC: {auc}, limit {leak['max_feature_auc']}"
    )
    if not leak["raised"]:
        return f"Leakage (limits not raised): {figures}."
    defaults = ", ".join(
        f"data.leakage.{name} {leak[name]} (default {leak[f'default_{name}']})" for name in leak["raised"]
    )
    return f"Leakage limits RAISED on purpose by the dataset profile: {defaults}. Measured: {figures}."


def add_mitigation(card: Card, params: GovernanceSections, facts: ModelFacts) -> None:
    """Which bias mitigation shaped this model, on which groups, and what it means for its use."""
    card.heading("Bias mitigation")
    settings = params.mitigation
    if not settings.active:
        card.para(
            "None: the model was trained on the data as it is, with the plain loss, and decides by one "
            f"threshold ({params.evaluate.threshold}) for everyone."
        )
        return
    target = " x ".join(settings.target)
    data = facts.get("mitigation_data", {})
    mitigation = facts.get("train_metrics", {}).get("mitigation", {})
    thresholds = facts.get("thresholds", {})
    post_processed = thresholds.get("constraint", "none") != "none"
    items = data_mitigation_items(target, data)
    if settings.loss != "none" and settings.loss_weight > 0:
        items.append(
            f"a {settings.loss.replace('_', ' ')} term in the loss (fairret, weight {settings.loss_weight}) "
            f"over the groups {mitigation.get('groups', [])}"
        )
    reductions = mitigation.get("reductions")
    if reductions:
        items += reductions_items(params, target, reductions, post_processed)
    if post_processed:
        items.append(
            f"per-group decision thresholds for {thresholds['constraint'].replace('_', ' ')} on {target} "
            f"(Fairlearn's ThresholdOptimizer, fitted on {thresholds['fit_rows']} validation rows, never "
            "the test rows); decisions are randomised between two thresholds where a group's mix requires "
            "it (seeded)"
        )
    small = sorted(
        {
            *data.get("too_small_to_constrain", []),
            *mitigation.get("too_small_to_constrain", []),
            *thresholds.get("excluded", []),
        }
    )
    if small:
        items.append(
            f"groups too small to constrain (fewer than {params.validate.min_group_rows} rows), left out of "
            f"the constraints: {small}"
        )
    card.bullets(items)
    if post_processed:
        card.para(
            f"**Use:** this model needs the sensitive column(s) {settings.target} in every request at "
            "prediction time (its decision threshold depends on the group); a request without them is "
            "refused. The column is never a model input."
        )


def data_mitigation_items(target: str, data: dict[str, Any]) -> list[str]:
    """Reweighing and oversampling (reports/mitigation_data.json), each as one bullet."""
    items = []
    if "reweigh" in data:
        weights = ", ".join(
            f"{c['group']}/{c['label']}: {c['weight']:.3f}"
            for c in data["reweigh"]["cells"]
            if c.get("weight") is not None
        )
        items.append(
            f"reweighing (Kamiran & Calders) on {target}: a weight per group/label cell so that label and "
            f"group are independent in the weighted training data ({weights})"
        )
    if "resample" in data:
        r = data["resample"]
        rate, before, after = r["target_positive_rate"], r["rows_before"], r["rows_after"]
        items.append(
            f"oversampling of group x label cells on {target} to one label rate ({rate:.3f}): "
            f"{before} → {after} training rows"
        )
    return items


def reductions_items(
    params: GovernanceSections, target: str, reductions: dict[str, Any], post_processed: bool
) -> list[str]:
    """Fairlearn's ExponentiatedGradient as the train stage ran it, and the groups it merged, as bullets."""
    decided = (
        "then decided by the per-group thresholds below"
        if post_processed
        else f"decided by the threshold {params.evaluate.threshold} instead of a draw"
    )
    items = [
        f"Fairlearn's ExponentiatedGradient for {reductions['constraint'].replace('_', ' ')} on "
        f"{target} (slack {reductions['eps']:g}) over the groups {reductions['groups']}: "
        f"{reductions['oracle_calls']} fits of the MLP ({reductions['epochs_per_fit']} epochs each, "
        f"on the per-row weights the reduction set); the model is the weighted vote of the "
        f"{reductions['members']} members with a positive weight, its score the weight voting "
        f"positive (the probability that Fairlearn's randomised predict says yes), {decided}"
    ]
    if reductions.get("too_small_to_constrain"):
        items.append(
            f"groups too small to constrain by the reductions (fewer than "
            f"{params.validate.min_group_rows} training rows), merged into the largest group "
            f"{reductions['merged_into']!r} and constrained with it: "
            f"{reductions['too_small_to_constrain']}"
        )
    return items


def add_decision(card: Card, decision: Decision, awaiting: bool = False, signed_off: bool = False) -> None:
    """The decision, its reasons and every check as a table: one rendering for the card and the flow's page.

    `awaiting`: the candidate passed and waits for a person's sign-off before it can become champion;
    `signed_off`: a person decided (the card's Sign-off section says how).
    """
    verdict = AWAITING if awaiting else (SIGNED if signed_off else PROMOTED)
    card.para((verdict if decision.passed else "NOT PROMOTED. ") + decision.summary())
    card.table(
        ["rule", "metric", "value", "threshold", "champion", "result"],
        [
            [
                c.rule,
                c.metric,
                cell(c.value),
                c.threshold,
                "-" if c.champion_version is None else f"v{c.champion_version}: {cell(c.champion_value)}",
                RESULT_WORDS[c.passed],
            ]
            for c in decision.checks
        ],
    )
    for c in decision.checks:
        if c.figures:  # a rule against a reference: what it weighed, the candidate's figure first
            weighed = "; ".join(f"{m} {cell(a)} vs {cell(b)}" for m, (a, b) in c.figures.items())
            card.para(
                f"{c.rule} against {c.reference}: accuracy {cell(c.value)} vs {cell(c.reference_value)}; "
                f"{weighed} (candidate vs reference, same test rows)."
            )
    for note in decision.notes:
        card.para(note)
    if decision.test_md5:
        scored = ", ".join(f"{side} {md5 or 'not recorded'}" for side, md5 in decision.test_md5.items())
        card.para(f"Test rows scored (md5 of data/interim/test.parquet): {scored}.")


def decision_page(decision: Decision, model_name: str, version: str, awaiting: bool = False) -> str:
    """The decision as Markdown for the Prefect flow run's page."""
    card = Card()
    card.heading(f"Promotion decision: {model_name} v{version}", 1)
    add_decision(card, decision, awaiting)
    return card.to_markdown()


def group_rows(audit_report: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-group table (one row per feature and group) for a Prefect table artifact."""
    return [
        {
            "feature": f["feature"],
            "group": g["group"],
            "rows": g["count"],
            "judged": not g["too_small"],
            **{m: _ci(g["metrics"][m]) for m in GROUP_METRICS},
        }
        for f in audit_report["features"]
        for g in f["groups"]
    ]


def _sizes(groups: list[dict[str, Any]]) -> str:
    """The groups too small to judge, as the audit shows them (numbered), with their row counts."""
    return ", ".join(f"{g['group']} ({g['count']} rows)" for g in groups if g["too_small"])


def _ci(value: dict[str, float | None]) -> str:
    if value["value"] is None:  # a group too small to judge: withheld
        return "withheld"
    return f"{cell(value['value'])} [{cell(value['lo'])}, {cell(value['hi'])}]"
