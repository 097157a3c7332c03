"""Promotion gate: a declarative policy over quality, fairness, privacy and validation.

The policy is the generic `gate:` section merged with the dataset profile's `policy:` (humane.fairness.policy). Value
rules (`min`, `max`, `above_baseline`, validation) judge the candidate alone, baselines being scored on the
same test rows; change rules (`max_drop`, `max_increase`) compare it with the champion re-scored on the
candidate's test rows (governance.rescoring). Two rules weigh it against its references on the same test rows
(reports/metrics.json `baseline`): it must not be dominated (`dominated_by`), and its remedy must not cost more
accuracy per point of gap closed than `max_remedy_cost`; a refusal by either names the sweep to run instead.
The final decision is taken once, under the registry lock, when the candidate is registered
(governance.promotion); the gate stage records the value rules before that.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from humane.core import io
from humane.core.metric_names import (
    BASELINE_PREFIX,
    baseline_model,
    compute_metric,
    is_fairness,
    model_test_metric,
    namespaced,
    parse_fairness,
    reference_test_metric,
    validation_metric,
)
from humane.core.params import flatten
from humane.core.paths import Paths
from humane.core.protected import INTERSECTION
from humane.fairness.metrics import unmeasurable
from humane.fairness.policy import Policy
from humane.governance import federation
from humane.governance.registry import Champion

VALIDATION_METRIC = validation_metric("passed")
BASELINE_NAMES = {"logreg": "logistic regression", "majority": "majority class", "unmitigated": "unmitigated model"}
RESULT_WORDS = {True: "pass", False: "FAIL", None: "skipped"}  # a RuleOutcome's `passed`, as tables show it
ACCURACY = model_test_metric("accuracy")
DOMINANCE, REMEDY_COST = "not_dominated", "max_remedy_cost"  # the rules against the references
HIGHER_IS_FAIRER = ("demographic_parity_ratio",)  # every other gap the audit measures is fairer when smaller
GAP_DIGITS = 4  # the rules against the references judge gaps rounded so (the decision records what was judged)
REMEDY_PREFIX = "remedy."  # remedy.methods: how many mitigation methods are on; remedy.target.<feature>: 1.0
SWEEP_ADVICE = (
    "run the mitigation sweep instead (`make sweep`: the candidates in params.yaml `sweep:`, on this "
    "profile's mitigation target) and ship its choice, or change the profile's `mitigation:`"
)


@dataclass(frozen=True)
class RuleOutcome:
    """One rule of the policy applied to one metric; `passed` is None when the rule was skipped."""

    rule: str
    metric: str
    threshold: float | bool
    value: float | None
    passed: bool | None
    champion_version: str | None = None
    champion_value: float | None = None
    note: str | None = None
    # above_baseline: the baseline metric compared with, its value and the margin allowed below it.
    reference: str | None = None
    reference_value: float | None = None
    # not_dominated, max_remedy_cost: {gap: [candidate's value, reference's value]} for every gap weighed, beside
    # the accuracies in value and reference_value (None when the rule was skipped).
    figures: dict[str, list[float | None]] | None = None

    def weighed(self) -> dict[str, list[float | None]]:
        """Every figure the rule weighed, the accuracy first: {metric: [candidate's, reference's]}."""
        return weighed(self.value, self.reference_value, self.figures)

    def all_measured(self) -> bool:
        """Whether every figure it weighed (`weighed`) is measured, as every rule reads it (`_measured`)."""
        return all(_measured(v) for pair in self.weighed().values() for v in pair)

    def reason(self) -> str:
        """Why this check failed (or was skipped), in one line."""
        if self.note and self.rule in (DOMINANCE, REMEDY_COST):
            return self.note
        if self.note:
            return f"{self.metric}: {self.note}"
        if self.rule == "validation_passed":
            return "data validation did not pass"
        if self.value is None:
            return f"{self.metric} was not measured for this model, and the policy's {self.rule} rule needs it"
        shown = f"{self.value:.4f}"
        if self.rule == "above_baseline":
            name = BASELINE_NAMES.get(baseline_model(str(self.reference)), self.reference)
            margin = (self.reference_value or 0.0) - float(self.threshold)
            return (
                f"{self.metric} = {shown}: not above the {name} baseline's {self.reference_value:.4f}"
                f" minus the margin {margin:.4g} on the same test rows"
            )
        relation = {
            "min": "below the minimum",
            "max": "above the maximum",
            "max_drop": f"dropped more than allowed vs champion v{self.champion_version}",
            "max_increase": f"rose more than allowed vs champion v{self.champion_version}",
        }[self.rule]
        champion = f" (champion {self.champion_value:.4f})" if self.champion_value is not None else ""
        return f"{self.metric} = {shown}{champion}: {relation} ({self.threshold})"


@dataclass(frozen=True)
class Decision:
    """The gate's verdict, every check behind it, and the champion it was compared with."""

    passed: bool
    reasons: list[str]
    checks: list[RuleOutcome]
    champion_version: str | None
    notes: list[str] = field(default_factory=list)
    # md5 of the test rows each side was scored on ({"candidate": ..., "champion": ...}).
    test_md5: dict[str, str | None] = field(default_factory=dict)

    def summary(self) -> str:
        """One paragraph for logs and states."""
        if self.passed:
            return "every check of the policy passed" + (f" ({'; '.join(self.notes)})" if self.notes else "")
        return "not promoted: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """JSON form of the decision artifact (a check without figures leaves the key out: the tag has a size)."""
        out = asdict(self)
        out["checks"] = [{k: v for k, v in c.items() if k != "figures" or v is not None} for c in out["checks"]]
        return out

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Decision:
        """Inverse of to_dict."""
        return cls(
            payload["passed"],
            payload["reasons"],
            [RuleOutcome(**c) for c in payload["checks"]],
            payload["champion_version"],
            payload.get("notes", []),
            payload.get("test_md5", {}),
        )


def candidate_metrics(
    metrics: dict[str, Any],
    fairness: dict[str, dict[str, float]],
    validation_passed: bool,
    privacy: dict[str, float] | None = None,
) -> dict[str, float]:
    """The flat namespace the policy refers to: test.*, fairness.<feature>.<gap>, privacy.*, validation.passed.

    Also baseline.<reference>.* (the references' figures on the same test rows, their gaps under
    baseline.<reference>.fairness.*) and remedy.* (how many mitigation methods are on, and the target's features).
    """
    nested = namespaced(metrics["model"], fairness, metrics.get("baseline", {}))
    flat = {k: float(v) for k, v in flatten(nested).items() if isinstance(v, int | float)}
    flat.update(remedy_metrics(metrics.get("remedy")))
    flat.update(privacy or {})
    flat[VALIDATION_METRIC] = 1.0 if validation_passed else 0.0
    return flat


def remedy_metrics(remedy: dict[str, Any] | None) -> dict[str, float]:
    """remedy.methods and remedy.target.<feature> (each target feature, and their intersection) from metrics.json.

    Nothing when the evaluate stage recorded no remedy: the remedy-cost rule then fails as not measured.
    """
    if remedy is None:
        return {}
    target = list(remedy["target"])
    features = target + ([INTERSECTION.join(target)] if len(target) > 1 else [])
    return {
        f"{REMEDY_PREFIX}methods": float(len(remedy["methods"])),
        **{f"{REMEDY_PREFIX}target.{f}": 1.0 for f in features},
    }


def privacy_metrics(risk: dict[str, Any], membership: dict[str, Any], train: dict[str, Any]) -> dict[str, float]:
    """privacy.*: re-identification risk after the policy, membership-inference attack, and ε spent.

    A model trained without DP has spent an unbounded budget: privacy.epsilon is infinite, so a policy
    such as "privacy.epsilon <= 3" refuses it.
    """
    return {
        "privacy.k_min": float(risk["after"]["k_min"]),
        "privacy.share_below_k": float(risk["after"]["share_below_k"]),
        "privacy.l_min": float(risk["after"]["l_min"]),
        "privacy.mia_auc": float(membership["attack_auc"]),
        "privacy.mia_tpr_at_1pct_fpr": float(membership["attack_tpr_at_1pct_fpr"]),
        "privacy.epsilon": float(train["epsilon"]) if train.get("dp_enabled") else math.inf,
    }


def _measured(value: float | None) -> bool:
    """A figure is measured when it is a finite number: absent, NaN and ±inf fail every rule."""
    return value is not None and math.isfinite(value)


def _unmeasured(metric: str, value: float | None, candidate: dict[str, float]) -> str | None:
    """Why a rule's figure cannot be judged (the check's note), or None when it was measured.

    A fairness figure says why it is unmeasurable (`humane.fairness.metrics.unmeasurable`), a NaN of another
    kind that it is NaN: never "nan: above the maximum". An absent figure of another kind keeps the plain
    "was not measured" reason.
    """
    if _measured(value):
        return None
    if federation.MARK in candidate and federation.why_unmeasured(metric):
        return federation.why_unmeasured(metric)
    if is_fairness(metric):
        return unmeasurable(metric, candidate)
    return None if value is None else f"unmeasurable (its recorded value is {'NaN' if math.isnan(value) else value})"


def fairer_by(metric: str, than: float, value: float) -> float:
    """How much fairer `value` is than `than` on a gap (positive: fairer; a ratio is fairer when larger)."""
    return (value - than) if metric.rpartition(".")[2] in HIGHER_IS_FAIRER else (than - value)


def dominates(figures: dict[str, list[float]]) -> bool:
    """Whether the reference (second of each pair) dominates the candidate (first).

    At least as accurate and at least as fair on every gap, and strictly better on one of them.
    """
    edges = [fairer_by(m, c, r) if m != ACCURACY else r - c for m, (c, r) in figures.items()]
    return all(e >= 0 for e in edges) and any(e > 0 for e in edges)


def remedy_cost(figures: dict[str, list[float]]) -> tuple[float, str | None]:
    """Accuracy points given up per point of gap closed, against the unmitigated model (second of each pair).

    Judged on the gap the remedy closed most: 0 when it gave up no accuracy, infinite when it gave some up and
    closed no gap, or widened every gap it is judged on (a remedy that makes the target less fair is none, even
    when it gains accuracy). Returns the cost and that gap (None when none was closed).
    """
    accuracy, reference = figures[ACCURACY]
    closed = {m: fairer_by(m, u, c) for m, (c, u) in figures.items() if m != ACCURACY}
    best = max(closed, key=lambda m: closed[m]) if closed else None
    given_up = reference - accuracy
    if best is None or closed[best] <= 0:
        widened = best is not None and closed[best] < 0
        return (math.inf if given_up > 0 or widened else 0.0), None
    return max(given_up, 0.0) / closed[best], best


def weighed(value: float | None, reference_value: float | None, figures: dict[str, list] | None) -> dict[str, list]:
    """{metric: [candidate's, reference's]}: the accuracies, then the gaps of a check's `figures`."""
    return {ACCURACY: [value, reference_value], **(figures or {})}


def _figures(candidate: dict[str, float], reference: str, gaps: list[str]) -> dict[str, list]:
    """{metric: [candidate's value, the reference's]} for the accuracy and `gaps` (None where absent).

    The gaps are rounded to GAP_DIGITS decimals, and judged so rounded: what the decision records is what it judged.
    """
    prefix = f"{BASELINE_PREFIX}{reference}."

    def shown(v: float | None) -> float | None:
        return round(v, GAP_DIGITS) if _measured(v) else v

    pairs = {g: [shown(candidate.get(g)), shown(candidate.get(f"{prefix}{g}"))] for g in gaps}
    return {ACCURACY: [candidate.get(ACCURACY), candidate.get(f"{prefix}accuracy")], **pairs}


def _stored(figures: dict[str, list]) -> dict[str, list]:
    return {m: pair for m, pair in figures.items() if m != ACCURACY}


def _unmeasured_figures(figures: dict[str, list], reference: str = "reference") -> list[str]:
    """The figures of {metric: [candidate's, reference's]} that are absent or NaN, by their flat names."""
    prefix = f"{BASELINE_PREFIX}{reference}."
    out = [m for m, (c, _) in figures.items() if not _measured(c)]
    return out + [prefix + m.replace(ACCURACY, "accuracy") for m, (_, r) in figures.items() if not _measured(r)]


def dominance_checks(policy: Policy, candidate: dict[str, float]) -> list[RuleOutcome]:
    """One not_dominated check per reference in `dominated_by`, on accuracy and every gap the policy limits."""
    checks = []
    for reference in policy.dominated_by:
        name = BASELINE_NAMES[reference]
        figures = _figures(candidate, reference, policy.limited_gaps())
        ref_metric = f"{BASELINE_PREFIX}{reference}.accuracy"
        common = dict(reference=ref_metric, reference_value=figures[ACCURACY][1], figures=_stored(figures))
        value = figures[ACCURACY][0]
        if reference == "unmitigated" and candidate.get(f"{REMEDY_PREFIX}methods") == 0.0:
            checks.append(
                RuleOutcome(
                    DOMINANCE,
                    ACCURACY,
                    True,
                    value,
                    None,
                    **{**common, "figures": None},
                    note="skipped: no mitigation, the candidate is its own unmitigated model",
                )
            )
            continue
        missing = _unmeasured_figures(figures, reference)
        if missing:
            note = (
                f"cannot be shown not to be dominated by the {name}: {', '.join(missing)} not measured on the "
                "same test rows"
            )
            checks.append(RuleOutcome(DOMINANCE, ACCURACY, True, value, False, **common, note=note))
            continue
        if not dominates(figures):
            checks.append(RuleOutcome(DOMINANCE, ACCURACY, True, value, True, **common))
            continue
        shown = ", ".join(f"{m} {r:.4f} vs {c:.4f}" for m, (c, r) in figures.items())
        note = f"dominated by the {name} on the same test rows ({name} vs candidate: {shown}); {SWEEP_ADVICE}"
        checks.append(RuleOutcome(DOMINANCE, ACCURACY, True, value, False, **common, note=note))
    return checks


def remedy_check(policy: Policy, candidate: dict[str, float]) -> RuleOutcome | None:
    """The remedy's price against the unmitigated model, on the gaps the policy limits on the mitigation target."""
    limit = policy.max_remedy_cost
    if limit is None:
        return None
    methods = candidate.get(f"{REMEDY_PREFIX}methods")
    marked = f"{REMEDY_PREFIX}target."
    target = {k.removeprefix(marked) for k, v in candidate.items() if k.startswith(marked) and v == 1.0}
    gaps = [g for g in policy.limited_gaps() if parse_fairness(g)[0] in target]
    figures = _figures(candidate, "unmitigated", gaps)
    common = dict(
        reference=f"{BASELINE_PREFIX}unmitigated.accuracy",
        reference_value=figures[ACCURACY][1],
        figures=_stored(figures),
    )
    value = figures[ACCURACY][0]
    if methods == 0.0:
        common["figures"] = None
        return RuleOutcome(
            REMEDY_COST, ACCURACY, limit, value, None, **common, note="skipped: no mitigation, no remedy"
        )
    missing = _unmeasured_figures(figures, "unmitigated")
    missing += [] if _measured(methods) else [f"the remedy ({REMEDY_PREFIX}methods)"]
    if not gaps:
        missing.append(f"a gap the policy limits on the mitigation target {sorted(target) or '(none recorded)'}")
    if missing:
        note = f"the remedy's cost cannot be judged: {', '.join(missing)} not measured"
        return RuleOutcome(REMEDY_COST, ACCURACY, limit, value, False, **common, note=note)
    cost, best = remedy_cost(figures)
    if cost <= limit:
        return RuleOutcome(REMEDY_COST, ACCURACY, limit, value, True, **common)
    given_up = figures[ACCURACY][1] - figures[ACCURACY][0]
    if best is None and given_up <= 0:
        note = f"the remedy widens every gap the policy limits on its target ({', '.join(gaps)}); {SWEEP_ADVICE}"
    elif best is None:
        note = (
            f"the remedy closes no gap the policy limits on its target ({', '.join(gaps)}) while costing "
            f"{100 * given_up:.1f} accuracy points against the unmitigated model; {SWEEP_ADVICE}"
        )
    else:
        closed = fairer_by(best, figures[best][1], figures[best][0])
        note = (
            f"the remedy costs {cost:.2f} accuracy points per point of gap closed (limit {limit:g}): accuracy "
            f"{figures[ACCURACY][0]:.4f} vs {figures[ACCURACY][1]:.4f} unmitigated (-{100 * given_up:.1f} "
            f"points) for {best} {figures[best][0]:.4f} vs {figures[best][1]:.4f} ({100 * closed:.1f} points "
            f"closed, the most of {', '.join(gaps)}); {SWEEP_ADVICE}"
        )
    return RuleOutcome(REMEDY_COST, ACCURACY, limit, value, False, **common, note=note)


def decide(
    policy: Policy,
    candidate: dict[str, float],
    champion: Champion | None,
    compare: bool = True,
    notes: list[str] | None = None,
    test_md5: dict[str, str | None] | None = None,
    change_skipped: str | None = None,
    change_unmeasured: str | None = None,
) -> Decision:
    """Apply the policy. No thresholds at all promotes nothing.

    With `compare=False` the change rules are left pending (the gate stage: the champion is read only when
    registering). With no champion yet they are skipped, and said so. A change rule whose metric the
    champion lacks fails: the candidate cannot be shown not to be worse. `champion` carries the champion's
    figures on the candidate's test rows (governance.rescoring); `notes` say how they were obtained. With
    `change_skipped` (why the two cannot be compared, e.g. different input schemas) the change rules are
    skipped and the value rules still apply. With `change_unmeasured` (why the candidate's change against a
    champion cannot be measured at all, e.g. a federated candidate's test rows stay at its sites) each change rule
    fails as unmeasurable: the candidate cannot be shown not to be worse.
    """
    outcomes = [*value_outcomes(policy, candidate), *dominance_checks(policy, candidate)]
    outcomes += [c for c in [remedy_check(policy, candidate)] if c is not None]
    outcomes += change_outcomes(policy, candidate, champion, compare, change_skipped, change_unmeasured)
    notes = [*(notes or []), *change_notes(policy, champion, compare, change_skipped)]
    reasons = refusals(policy, outcomes)
    champion_version = champion.version if champion else None
    return Decision(not reasons, reasons, outcomes, champion_version, notes, dict(test_md5 or {}))


def value_outcomes(policy: Policy, candidate: dict[str, float]) -> list[RuleOutcome]:
    """The rules that judge the candidate alone, in this order: validation, above_baseline, min, max."""
    outcomes = []
    if policy.require_validation:
        ok = candidate.get(VALIDATION_METRIC) == 1.0
        outcomes.append(RuleOutcome("validation_passed", VALIDATION_METRIC, True, candidate.get(VALIDATION_METRIC), ok))
    outcomes += [baseline_outcome(reference, margin, candidate) for reference, margin in policy.above_baseline.items()]
    for rule, rules in (("min", policy.min), ("max", policy.max)):
        for metric, threshold in rules.items():
            value, note = candidate.get(metric), _unmeasured(metric, candidate.get(metric), candidate)
            within = _measured(value) and (value >= threshold if rule == "min" else value <= threshold)
            outcomes.append(RuleOutcome(rule, metric, threshold, value, within, note=note))
    return outcomes


def baseline_outcome(reference: str, margin: float, candidate: dict[str, float]) -> RuleOutcome:
    """above_baseline: the candidate's test figure above the baseline's (`reference`, on the same rows) less `margin`.

    A baseline that was not measured fails the rule: the model cannot be shown to beat it.
    """
    metric = reference_test_metric(reference)
    value, base = candidate.get(metric), candidate.get(f"{BASELINE_PREFIX}{reference}")
    if not _measured(base):
        why = _unmeasured(f"{BASELINE_PREFIX}{reference}", base, candidate) or "not measured"
        note = f"the baseline {reference} is {why}, so the model cannot be shown to beat it"
        return RuleOutcome("above_baseline", metric, margin, value, False, note=note)
    bar = base - margin
    return RuleOutcome(
        "above_baseline",
        metric,
        bar,
        value,
        _measured(value) and value > bar,
        reference=f"{BASELINE_PREFIX}{reference}",
        reference_value=base,
    )


def change_rules(policy: Policy) -> list[tuple[str, str, float]]:
    """The rules against the champion: (rule, metric, threshold) for every max_drop, then every max_increase."""
    rules = [("max_drop", m, t) for m, t in policy.max_drop.items()]
    return rules + [("max_increase", m, t) for m, t in policy.max_increase.items()]


def change_notes(policy: Policy, champion: Champion | None, compare: bool, skipped: str | None) -> list[str]:
    """Why the change rules were not judged against a champion (nothing when they were, or when there are none)."""
    if not change_rules(policy):
        return []
    if not compare:
        return ["change thresholds are judged against the champion when the candidate is registered"]
    if skipped:
        return [f"change thresholds against the champion were skipped: {skipped}"]
    if champion is None:
        return ["no champion yet: change thresholds against the champion were skipped"]
    return []


def change_outcomes(
    policy: Policy,
    candidate: dict[str, float],
    champion: Champion | None,
    compare: bool,
    skipped: str | None,
    unmeasured: str | None,
) -> list[RuleOutcome]:
    """One outcome per change rule: pending (`compare` off), unmeasurable, skipped, or judged against the champion.

    `skipped` and `unmeasured` are `decide`'s `change_skipped` and `change_unmeasured`.
    """
    outcomes = []
    for rule, metric, threshold in change_rules(policy):
        value = candidate.get(metric)
        if not compare:
            outcomes.append(RuleOutcome(rule, metric, threshold, value, None, note="pending: judged at registration"))
        elif champion is not None and unmeasured:
            note = f"unmeasurable ({unmeasured})"
            outcomes.append(RuleOutcome(rule, metric, threshold, value, False, champion.version, note=note))
        elif champion is None or skipped:
            note = f"skipped: {skipped or 'no champion yet'}"
            outcomes.append(RuleOutcome(rule, metric, threshold, value, None, note=note))
        else:
            outcomes.append(against_champion(rule, metric, threshold, candidate, champion))
    return outcomes


def against_champion(
    rule: str, metric: str, threshold: float, candidate: dict[str, float], champion: Champion
) -> RuleOutcome:
    """A change rule judged on the champion's figure (on the candidate's test rows); either side unmeasured fails."""
    value, reference = candidate.get(metric), champion.metrics.get(metric)
    if not _measured(reference):
        note = f"champion v{champion.version} has no recorded value, so the change cannot be judged"
        return RuleOutcome(rule, metric, threshold, value, False, champion.version, None, note=note)
    if not _measured(value):
        note = _unmeasured(metric, value, candidate)
        return RuleOutcome(rule, metric, threshold, value, False, champion.version, reference, note=note)
    change = (reference - value) if rule == "max_drop" else (value - reference)
    return RuleOutcome(rule, metric, threshold, value, change <= threshold, champion.version, reference)


def refusals(policy: Policy, outcomes: list[RuleOutcome]) -> list[str]:
    """Why the candidate is not promoted (nothing: it passed); a policy that judged nothing promotes nothing."""
    reasons = [c.reason() for c in outcomes if c.passed is False]
    evaluated = [c for c in outcomes if c.rule != "validation_passed" and c.passed is not None]
    if not (policy.min or policy.max or policy.above_baseline or change_rules(policy)):
        reasons.insert(0, "the policy sets no thresholds, so nothing is promoted")
    elif not evaluated:
        reasons.insert(0, "no threshold of the policy could be evaluated, so nothing is promoted")
    return reasons


def rejudge(check: dict[str, Any]) -> bool | None:
    """A recorded check's verdict recomputed from its own figures, as `decide` computes it (None: skipped)."""
    if check.get("passed") is None:
        return None
    value, threshold, rule = check.get("value"), check.get("threshold"), check.get("rule")
    if rule in (DOMINANCE, REMEDY_COST):
        figures = weighed(value, check.get("reference_value"), check.get("figures"))
        if _unmeasured_figures(figures) or (rule == REMEDY_COST and len(figures) < 2):
            return False
        if rule == DOMINANCE:
            return not dominates(figures)
        return isinstance(threshold, int | float) and remedy_cost(figures)[0] <= threshold
    if rule == "validation_passed":
        return value == 1.0
    if check.get("note") and rule not in ("max_drop", "max_increase"):
        return False  # a baseline that was not measured
    if not _measured(value) or isinstance(threshold, bool) or threshold is None:
        return False
    if rule == "above_baseline":
        return value > threshold
    if rule == "min":
        return value >= threshold
    if rule == "max":
        return value <= threshold
    reference = check.get("champion_value")
    if rule in ("max_drop", "max_increase") and _measured(reference):
        return ((reference - value) if rule == "max_drop" else (value - reference)) <= threshold
    return False


def compute_metrics(train: dict[str, Any]) -> dict[str, float]:
    """compute.*: the training run's compute bill (parameters, FLOPs, throughput, time, memory, energy, CO2).

    Only numbers are metrics; a figure that was not measured (e.g. energy when codecarbon could not start) is
    absent, so a rule on it fails as "not measured" rather than passing.
    """
    bill = train.get("compute", {})
    return {
        compute_metric(k): float(v) for k, v in bill.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def privacy_and_federation(paths: Paths, train: dict[str, Any]) -> dict[str, float]:
    """privacy.* from the stage outputs.

    A federated run's: ε and its federated.* figures (no row here: the figures only the rows give are unmeasurable,
    and say why).
    """
    if federation.is_federated(paths):
        return {**federation.privacy_figures(train), **federation.figures(federation.read(paths))}
    return privacy_metrics(io.read_json(paths.privacy_report), io.read_json(paths.membership_report), train)


def explain_metrics(paths: Paths) -> dict[str, float]:
    """explain.*: the proxy figures and the attributions' completeness gap (reports/explain.json; NaN stays NaN)."""
    flat = flatten({"explain": io.read_json(paths.explain_metrics)})
    return {k: float(v) for k, v in flat.items() if isinstance(v, (int, float))}


def read_candidate(paths: Paths) -> dict[str, float]:
    """The candidate's metrics, read from the stage outputs (a federated run has no compute bill or explanations)."""
    train = io.read_json(paths.train_metrics)
    validation = io.read_json(paths.validation_report)["passed"]
    privacy = privacy_and_federation(paths, train)
    flat = candidate_metrics(io.read_json(paths.metrics), io.read_json(paths.fairness), validation, privacy)
    if federation.is_federated(paths):
        return flat
    return {**flat, **compute_metrics(train), **explain_metrics(paths)}
