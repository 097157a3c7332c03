import math

import numpy as np
import pandas as pd
import pytest

from humane.core.paths import LABEL_COLUMN, SENSITIVE_PREFIX
from humane.fairness.metrics import audit_predictions, headline
from humane.fairness.params import AuditParams, PolicyParams
from humane.fairness.policy import Policy
from humane.governance.gate import REMEDY_COST, RuleOutcome, candidate_metrics, decide, rejudge
from humane.governance.params import GateParams
from humane.governance.registry import Champion

CANDIDATE = {
    "validation.passed": 1.0,
    "test.accuracy": 0.85,
    "test.roc_auc": 0.90,
    "fairness.sex.demographic_parity_difference": 0.12,
}


def policy(**kw):
    base = dict(require_validation=True, above_baseline={}, min={}, max={}, max_drop={}, max_increase={})
    base.update(kw)
    return Policy(**base)


def test_no_thresholds_promotes_nothing():
    decision = decide(policy(), CANDIDATE, None)
    assert not decision.passed
    assert decision.reasons == ["the policy sets no thresholds, so nothing is promoted"]


def test_value_thresholds_pass_and_fail():
    ok = decide(
        policy(min={"test.accuracy": 0.84}, max={"fairness.sex.demographic_parity_difference": 0.2}), CANDIDATE, None
    )
    assert ok.passed and ok.reasons == []
    low = decide(policy(min={"test.accuracy": 0.86}), CANDIDATE, None)
    assert not low.passed and low.reasons == ["test.accuracy = 0.8500: below the minimum (0.86)"]
    gap = decide(policy(max={"fairness.sex.demographic_parity_difference": 0.1}), CANDIDATE, None)
    assert not gap.passed and "above the maximum (0.1)" in gap.reasons[0]


def test_unmeasured_metric_fails():
    decision = decide(policy(max={"fairness.race.equalized_odds_difference": 0.1}), CANDIDATE, None)
    assert not decision.passed
    assert decision.reasons == [
        "fairness.race.equalized_odds_difference: unmeasurable (the audit measured nothing of 'race': not one of "
        "data.sensitive_features?)"
    ]
    absent = decide(policy(min={"test.f1": 0.5}), CANDIDATE, None)
    assert absent.reasons == ["test.f1 was not measured for this model, and the policy's min rule needs it"]


DP = "fairness.sex.demographic_parity_difference"
EO = "fairness.sex.equalized_odds_difference"
RATIO = "fairness.sex.demographic_parity_ratio"
FEW_GROUPS = (
    "unmeasurable (fewer than two groups of 'sex' with at least audit.min_group_size rows, so no gap between groups "
    "exists)"
)


def _audited(sex: list[str], y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The gate's figures after a real audit (30 rows judge a group) of the given rows."""
    frame = pd.DataFrame({LABEL_COLUMN: y, f"{SENSITIVE_PREFIX}sex": sex})
    audits = audit_predictions(frame, p, ["sex"], 0.5, AuditParams(seed=0, bootstrap=5, min_group_size=30))
    return candidate_metrics({"model": {"accuracy": 0.85}}, headline(audits), True)


def test_an_unauditable_feature_fails_as_unmeasurable_and_says_why():
    """The issue's case: a sex column with one value. Its gaps are NaN; the rules fail, naming why, never 'nan'."""
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 200), rng.random(200)
    one_group = _audited(["Male"] * 195 + ["Female"] * 5, y, p)  # Female: too small to judge
    assert np.isnan(one_group[DP])
    rules = policy(min={"test.accuracy": 0.8}, max={DP: 0.12}, max_increase={EO: 0.02})
    decision = decide(rules, one_group, Champion("1", {EO: 0.05}, None))
    assert not decision.passed
    assert decision.reasons == [f"{DP}: {FEW_GROUPS}", f"{EO}: {FEW_GROUPS}"]
    assert not any("nan" in reason for reason in decision.reasons)
    assert [rejudge(c) for c in decision.to_dict()["checks"]] == [c.passed for c in decision.checks]

    # Two groups large enough, but no positive decision / no positive label in them: the ratio / the rates are 0/0.
    sex = ["Male"] * 100 + ["Female"] * 100
    no_decision = decide(policy(min={RATIO: 0.8}), _audited(sex, y, np.zeros(200)), None)
    why = "no group of 'sex' large enough to judge received a positive decision: 0/0"
    assert no_decision.reasons == [f"{RATIO}: unmeasurable ({why})"]
    no_positive = decide(policy(max={EO: 0.1}), _audited(sex, np.zeros(200, dtype=int), p), None)
    why = "no group of 'sex' large enough to judge holds a positive label: its rates are 0/0"
    assert no_positive.reasons == [f"{EO}: unmeasurable ({why})"]
    nan_quality = decide(policy(min={"test.accuracy": 0.8}), {**CANDIDATE, "test.accuracy": float("nan")}, None)
    assert nan_quality.reasons == ["test.accuracy: unmeasurable (its recorded value is NaN)"]


def test_validation_is_a_hard_rule():
    failed = {**CANDIDATE, "validation.passed": 0.0}
    decision = decide(policy(min={"test.accuracy": 0.5}), failed, None)
    assert not decision.passed and decision.reasons == ["data validation did not pass"]


def test_first_run_skips_change_thresholds_and_says_so():
    decision = decide(policy(min={"test.accuracy": 0.8}, max_drop={"test.accuracy": 0.01}), CANDIDATE, None)
    assert decision.passed and decision.champion_version is None
    assert decision.notes == ["no champion yet: change thresholds against the champion were skipped"]
    (skipped,) = [c for c in decision.checks if c.rule == "max_drop"]
    assert skipped.passed is None and "no champion" in skipped.note


def test_only_change_thresholds_with_no_champion_promotes_nothing():
    decision = decide(policy(max_drop={"test.accuracy": 0.01}), CANDIDATE, None)
    assert not decision.passed
    assert decision.reasons == ["no threshold of the policy could be evaluated, so nothing is promoted"]


@pytest.mark.parametrize(("champion_accuracy", "passes"), [(0.855, True), (0.87, False)])
def test_accuracy_drop_against_champion(champion_accuracy, passes):
    champion = Champion("3", {"test.accuracy": champion_accuracy}, "run")
    decision = decide(policy(max_drop={"test.accuracy": 0.01}), CANDIDATE, champion)
    assert decision.passed is passes and decision.champion_version == "3"
    (check,) = decision.checks[1:]
    assert check.champion_value == champion_accuracy and check.champion_version == "3"
    if not passes:
        assert "dropped more than allowed vs champion v3" in decision.reasons[0]


def test_a_change_rule_that_cannot_be_measured_fails_it_is_never_skipped():
    """A federated candidate: the champion cannot be re-scored on its test rows, so a change rule fails."""
    champion = Champion("3", {"test.accuracy": 0.80}, "run")  # worse than the candidate: would pass if measured
    rules = policy(min={"test.accuracy": 0.8}, max_drop={"test.accuracy": 0.01})
    decision = decide(rules, CANDIDATE, champion, change_unmeasured="federated: the test rows stay at the sites")
    assert not decision.passed
    (check,) = [c for c in decision.checks if c.rule == "max_drop"]
    assert check.passed is False and check.note == "unmeasurable (federated: the test rows stay at the sites)"
    assert any("unmeasurable (federated" in r for r in decision.reasons)
    assert decide(rules, CANDIDATE, None, change_unmeasured="federated").passed  # no champion: nothing to compare


def test_disparity_increase_against_champion():
    champion = Champion("1", {"fairness.sex.demographic_parity_difference": 0.05}, "run")
    decision = decide(policy(max_increase={"fairness.sex.demographic_parity_difference": 0.02}), CANDIDATE, champion)
    assert not decision.passed and "rose more than allowed vs champion v1" in decision.reasons[0]


def test_champion_without_the_metric_fails_that_rule_closed():
    decision = decide(
        policy(min={"test.accuracy": 0.8}, max_drop={"test.roc_auc": 0.01}), CANDIDATE, Champion("2", {}, None)
    )
    assert not decision.passed
    assert [c.passed for c in decision.checks] == [True, True, False]
    assert decision.reasons == ["test.roc_auc: champion v2 has no recorded value, so the change cannot be judged"]


def test_the_gate_stage_leaves_change_rules_pending():
    decision = decide(
        policy(min={"test.accuracy": 0.8}, max_drop={"test.roc_auc": 0.01}),
        CANDIDATE,
        Champion("2", {"test.roc_auc": 0.99}, None),
        compare=False,
    )
    assert decision.passed and decision.champion_version == "2"
    assert [c.passed for c in decision.checks] == [True, True, None]
    assert decision.checks[-1].note == "pending: judged at registration"


def test_candidate_metrics_namespace():
    flat = candidate_metrics({"model": {"accuracy": 0.8}}, {"sex": {"equalized_odds_difference": 0.1}}, True)
    assert flat == {"test.accuracy": 0.8, "fairness.sex.equalized_odds_difference": 0.1, "validation.passed": 1.0}


def test_generic_policy_expands_per_feature_and_the_profile_overrides():
    gate = GateParams(
        require_validation=True,
        above_baseline={"logreg.roc_auc": 0.02},
        min={},
        max={"fairness.*.demographic_parity_difference": 0.2},
        max_drop={"test.accuracy": 0.01},
        max_increase={},
        dominated_by=["logreg"],
        max_remedy_cost=0.5,
    )
    own = PolicyParams(min={"test.accuracy": 0.84}, max={"fairness.race.demographic_parity_difference": 0.3})
    merged = Policy.of(gate, own, ["sex", "race"])
    assert merged.max == {
        "fairness.sex.demographic_parity_difference": 0.2,
        "fairness.race.demographic_parity_difference": 0.3,
    }
    assert merged.min == {"test.accuracy": 0.84} and merged.max_drop == {"test.accuracy": 0.01}
    assert merged.dominated_by == ("logreg",) and merged.max_remedy_cost == 0.5
    assert Policy.of(gate, PolicyParams(), ["age_band"]).max == {"fairness.age_band.demographic_parity_difference": 0.2}
    # A profile may use the wildcard too; a feature it names explicitly keeps its own threshold.
    own = PolicyParams(
        max={"fairness.*.demographic_parity_difference": 0.1, "fairness.race.demographic_parity_difference": 0.3}
    )
    expected = {"fairness.sex.demographic_parity_difference": 0.1, "fairness.race.demographic_parity_difference": 0.3}
    assert Policy.of(gate, own, ["sex", "race"]).max == expected


@pytest.mark.parametrize(("auc", "passes"), [(0.89, True), (0.87, False)])
def test_quality_is_judged_against_the_baselines_on_the_same_rows(auc, passes):
    metrics = {
        "model": {"roc_auc": auc, "accuracy": 0.80},
        "baseline": {"logreg": {"roc_auc": 0.90}, "majority": {"accuracy": 0.76}},
    }
    flat = candidate_metrics(metrics, {}, True)
    decision = decide(policy(above_baseline={"logreg.roc_auc": 0.02, "majority.accuracy": 0.0}), flat, None)
    assert decision.passed is passes
    if not passes:
        assert decision.reasons == [
            "test.roc_auc = 0.8700: not above the logistic regression baseline's 0.9000 "
            "minus the margin 0.02 on the same test rows"
        ]
    worse = candidate_metrics({**metrics, "model": {"roc_auc": 0.95, "accuracy": 0.76}}, {}, True)
    refused = decide(policy(above_baseline={"majority.accuracy": 0.0}), worse, None)
    assert not refused.passed and "majority class baseline's 0.7600" in refused.reasons[0]


def test_schema_mismatch_skips_change_rules_but_not_value_rules():
    champion = Champion("4", {"test.accuracy": 0.99}, "run")
    decision = decide(
        policy(min={"test.accuracy": 0.8}, max_drop={"test.accuracy": 0.01}),
        CANDIDATE,
        champion,
        change_skipped="champion v4 takes different inputs",
    )
    assert decision.passed and decision.champion_version == "4"
    assert decision.checks[-1].passed is None and "different inputs" in decision.checks[-1].note
    failing = decide(
        policy(min={"test.accuracy": 0.9}, max_drop={"test.accuracy": 0.01}),
        CANDIDATE,
        champion,
        change_skipped="champion v4 takes different inputs",
    )
    assert not failing.passed and failing.reasons == ["test.accuracy = 0.8500: below the minimum (0.9)"]


@pytest.mark.parametrize("seed", range(20))
def test_a_recorded_checks_verdict_is_recomputed_from_its_own_figures(seed):
    """What the sign-off server re-checks: every verdict `decide` records follows from the check's figures, and a
    figure edited after the fact no longer does."""
    import random

    from humane.governance.gate import rejudge

    rng = random.Random(seed)
    rules = policy(
        above_baseline={"logreg.roc_auc": 0.02},
        min={"test.accuracy": 0.8},
        max={"fairness.sex.demographic_parity_difference": 0.2},
        max_drop={"test.accuracy": 0.01},
        max_increase={"fairness.sex.equalized_odds_difference": 0.02},
    )
    candidate = {
        "test.accuracy": rng.uniform(0.7, 0.9),
        "test.roc_auc": rng.uniform(0.8, 0.95),
        "baseline.logreg.roc_auc": rng.uniform(0.8, 0.95),
        "validation.passed": rng.choice([0.0, 1.0]),
        "fairness.sex.demographic_parity_difference": rng.uniform(0.0, 0.4),
        "fairness.sex.equalized_odds_difference": rng.uniform(0.0, 0.2),
    }
    champion = (
        Champion("1", {"test.accuracy": rng.uniform(0.7, 0.9), "fairness.sex.equalized_odds_difference": 0.1}, None)
        if seed % 3
        else None
    )
    checks = decide(rules, candidate, champion).to_dict()["checks"]
    assert [rejudge(c) for c in checks] == [c["passed"] for c in checks]
    for check in checks:
        if check["passed"] is True and check["rule"] in ("min", "max"):
            forged = {**check, "value": check["threshold"] + (-1 if check["rule"] == "min" else 1)}
            assert rejudge(forged) is False


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, None])
def test_a_figure_that_is_not_a_finite_number_is_not_measured(bad):
    """A rule's outcome counts as measured only when every figure it weighed is finite (±inf fails closed)."""
    gap = "fairness.sex.demographic_parity_difference"
    outcome = RuleOutcome(
        REMEDY_COST, "test.accuracy", True, 0.85, False, reference_value=0.86, figures={gap: [0.1, 0.2]}
    )
    assert outcome.all_measured()
    for figures, value in (({gap: [bad, 0.2]}, 0.85), ({gap: [0.1, bad]}, 0.85), ({gap: [0.1, 0.2]}, bad)):
        odd = RuleOutcome(REMEDY_COST, "test.accuracy", True, value, False, reference_value=0.86, figures=figures)
        assert not odd.all_measured(), (figures, value)


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_an_infinite_figure_fails_its_rule_as_unmeasurable(value):
    """A min or a max rule never passes on ±inf: what cannot be measured never passes."""
    at_min = decide(policy(min={"test.accuracy": 0.5}), {**CANDIDATE, "test.accuracy": value}, None)
    at_max = decide(policy(max={"test.accuracy": 0.99}), {**CANDIDATE, "test.accuracy": value}, None)
    for decision in (at_min, at_max):
        assert not decision.passed
        assert decision.reasons == [f"test.accuracy: unmeasurable (its recorded value is {value})"]
