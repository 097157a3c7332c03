"""The gate's rules against the references: no dominated candidate, no remedy that costs too much (issue 21, 3).

The references' figures sit in the candidate's flat namespace as the evaluate stage writes them
(reports/metrics.json `baseline`): baseline.<reference>.accuracy and baseline.<reference>.fairness.<feature>.<gap>.
"""

import math

import numpy as np
import pandas as pd
import pytest

from humane.core.paths import LABEL_COLUMN, SENSITIVE_PREFIX
from humane.fairness.metrics import audit_predictions, headline
from humane.fairness.params import AuditParams
from humane.fairness.policy import Policy, policy_of
from humane.governance.gate import Decision, candidate_metrics, decide, rejudge, remedy_cost
from humane.pipeline.params import load_params
from tasks.evaluate import reference_gaps
from tests.conftest import ROOT

EO, DP = "fairness.race.equalized_odds_difference", "fairness.race.demographic_parity_difference"
SWEEP = "`make sweep`"


def policy(dominated_by=("unmitigated", "logreg"), max_remedy_cost=1.0, **max_):
    limits = max_ or {EO: 0.3, DP: 0.3}
    return Policy(
        require_validation=False,
        above_baseline={},
        min={},
        max=limits,
        max_drop={},
        max_increase={},
        dominated_by=tuple(dominated_by),
        max_remedy_cost=max_remedy_cost,
    )


def candidate(accuracy, eo, dp=0.10, unmitigated=(0.660, 0.224, 0.12), logreg=(0.650, 0.25, 0.15), methods=1):
    """A candidate, its unmitigated twin and the logistic regression: (accuracy, race EO, race DP) each."""
    flat = {"test.accuracy": accuracy, EO: eo, DP: dp, "remedy.methods": float(methods), "remedy.target.race": 1.0}
    for name, (acc, ref_eo, ref_dp) in {"unmitigated": unmitigated, "logreg": logreg}.items():
        flat.update(
            {f"baseline.{name}.accuracy": acc, f"baseline.{name}.{EO}": ref_eo, f"baseline.{name}.{DP}": ref_dp}
        )
    return flat


def checks_of(decision, rule):
    return [c for c in decision.checks if c.rule == rule]


def test_the_issue_case_a_costly_remedy_is_refused_with_its_figures_and_the_sweep():
    # From the issue: accuracy 0.660 -> 0.582 for race EO 0.224 -> 0.187 under per-group thresholds.
    decision = decide(policy(), candidate(0.582, 0.187), None)
    assert not decision.passed
    (check,) = checks_of(decision, "max_remedy_cost")
    assert check.passed is False
    reason = next(r for r in decision.reasons if "per point of gap closed" in r)
    assert "costs 2.11 accuracy points per point of gap closed (limit 1)" in reason, reason
    assert "-7.8 points" in reason and "3.7 points closed" in reason and EO in reason, reason
    assert SWEEP in reason and "sweep:" in reason
    assert remedy_cost(check.weighed()) == (pytest.approx(0.078 / 0.037), EO)


def test_the_adult_default_remedy_passes():
    # README: 1.1 points of accuracy for sex gaps DP 0.150 -> 0.101 and EO 0.053 -> 0.017 (full Adult test split).
    sex_eo, sex_dp = "fairness.sex.equalized_odds_difference", "fairness.sex.demographic_parity_difference"
    flat = {
        "test.accuracy": 0.851,
        sex_eo: 0.017,
        sex_dp: 0.101,
        "remedy.methods": 1.0,
        "remedy.target.sex": 1.0,
        "baseline.unmitigated.accuracy": 0.862,
        f"baseline.unmitigated.{sex_eo}": 0.053,
        f"baseline.unmitigated.{sex_dp}": 0.150,
    }
    decision = decide(policy(dominated_by=("unmitigated",), **{sex_eo: 0.08, sex_dp: 0.12}), flat, None)
    assert decision.passed, decision.reasons
    (check,) = checks_of(decision, "max_remedy_cost")
    cost, gap = remedy_cost(check.weighed())
    assert gap == sex_dp and cost == pytest.approx(0.011 / 0.049)  # the gap closed most: DP, 4.9 points
    assert 0.011 / 0.036 < 1.0  # and EO's own price (0.31) is within the limit too


def test_a_remedy_that_closes_no_gap_while_costing_accuracy_is_refused():
    decision = decide(policy(), candidate(0.64, 0.23, dp=0.13), None)
    reason = next(r for r in decision.reasons if "closes no gap" in r)
    assert "2.0 accuracy points" in reason and SWEEP in reason
    assert remedy_cost(checks_of(decision, "max_remedy_cost")[0].weighed())[0] == math.inf


def test_a_free_remedy_passes_whatever_it_closed():
    decision = decide(policy(dominated_by=()), candidate(0.665, 0.20), None)
    assert decision.passed, decision.reasons
    assert remedy_cost(checks_of(decision, "max_remedy_cost")[0].weighed()) == (0.0, EO)


def test_dominated_by_the_logistic_regression_is_refused_naming_it_and_its_figures():
    # Unmitigated and as accurate as the logistic regression, with larger gaps on both limited gaps.
    flat = candidate(0.65, 0.30, dp=0.18, unmitigated=(0.65, 0.30, 0.18), logreg=(0.66, 0.25, 0.15), methods=0)
    decision = decide(policy(), flat, None)
    assert not decision.passed
    (reason,) = decision.reasons
    assert reason.startswith("dominated by the logistic regression on the same test rows"), reason
    assert "test.accuracy 0.6600 vs 0.6500" in reason and f"{EO} 0.2500 vs 0.3000" in reason and SWEEP in reason
    skipped = [c for c in decision.checks if c.passed is None]  # no remedy: no unmitigated twin, no price
    assert {c.rule for c in skipped} == {"not_dominated", "max_remedy_cost"}


def test_dominated_by_the_unmitigated_model():
    # The remedy widened a gap and cost accuracy: the plain network is better on every count.
    decision = decide(policy(max_remedy_cost=None), candidate(0.64, 0.25, dp=0.12), None)
    assert [r for r in decision.reasons if r.startswith("dominated by the unmitigated model")]


@pytest.mark.parametrize(
    ("reference", "dominated"),
    [
        ((0.70, 0.10, 0.10), True),
        ((0.70, 0.10, 0.11), False),
        ((0.60, 0.0, 0.0), False),
        ((0.65, 0.20, 0.10), False),
    ],  # the last: the same figures, nowhere strictly better
)
def test_dominance_needs_every_figure_at_least_as_good_and_one_better(reference, dominated):
    flat = candidate(0.65, 0.20, dp=0.10, logreg=reference)
    decision = decide(policy(dominated_by=("logreg",), max_remedy_cost=None), flat, None)
    assert checks_of(decision, "not_dominated")[0].passed is (not dominated)


def test_a_ratio_is_fairer_when_larger():
    ratio = "fairness.race.demographic_parity_ratio"
    flat = {"test.accuracy": 0.8, ratio: 0.7, "baseline.logreg.accuracy": 0.8, f"baseline.logreg.{ratio}": 0.9}
    limits = Policy(False, {}, {ratio: 0.6}, {}, {}, {}, ("logreg",), None)
    assert not decide(limits, flat, None).passed
    flat[f"baseline.logreg.{ratio}"] = 0.5
    assert decide(limits, flat, None).passed


@pytest.mark.parametrize(
    ("missing", "rule"),
    [
        ("baseline.logreg.fairness.race.equalized_odds_difference", ["not_dominated"]),
        ("baseline.unmitigated.accuracy", ["not_dominated", "max_remedy_cost"]),
        ("remedy.methods", ["max_remedy_cost"]),
        ("remedy.target.race", ["max_remedy_cost"]),
    ],
)
def test_what_cannot_be_measured_fails_closed(missing, rule):
    flat = candidate(0.66, 0.20, unmitigated=(0.66, 0.25, 0.12))  # passes both rules when measured
    assert decide(policy(), flat, None).passed
    for value in (None, float("nan")):
        broken = {**flat, missing: value} if value is not None else {k: v for k, v in flat.items() if k != missing}
        decision = decide(policy(), broken, None)
        failed = [c for c in decision.checks if c.passed is False]
        assert [c.rule for c in failed] == rule, decision.reasons
        assert all("not measured" in c.reason() for c in failed), decision.reasons


def test_the_policy_switches_the_rules_off_explicitly():
    decision = decide(policy(dominated_by=(), max_remedy_cost=None), candidate(0.582, 0.187), None)
    assert decision.passed and not checks_of(decision, "not_dominated") + checks_of(decision, "max_remedy_cost")


def test_recorded_checks_rejudge_to_their_verdicts():
    unmeasured = {**candidate(0.66, 0.2), "baseline.logreg.accuracy": float("nan")}
    cases = [
        candidate(0.582, 0.187),
        candidate(0.66, 0.20, unmitigated=(0.66, 0.25, 0.12)),
        candidate(0.64, 0.23, dp=0.13),
        unmeasured,
    ]
    for flat in cases:
        recorded = Decision.from_dict(decide(policy(), flat, None).to_dict())
        for check in recorded.checks:
            assert rejudge(check.__dict__) == check.passed, check


def test_the_shipped_policy_turns_both_rules_on():
    params = load_params(ROOT / "params.yaml")
    shipped = policy_of(params)
    assert shipped.dominated_by == ("unmitigated", "logreg") and shipped.max_remedy_cost == 1.0


def test_candidate_metrics_carry_the_references_and_the_remedy():
    gaps = {"sex x race": {"equalized_odds_difference": 0.2}}
    remedy = {"methods": ["thresholds:equalized_odds"], "target": ["sex", "race"], "unmitigated": "its network"}
    metrics = {
        "model": {"accuracy": 0.8},
        "baseline": {"logreg": {"accuracy": 0.79, "fairness": gaps}},
        "remedy": remedy,
    }
    flat = candidate_metrics(metrics, {}, True)
    assert flat["baseline.logreg.fairness.sex x race.equalized_odds_difference"] == 0.2
    assert flat["remedy.methods"] == 1.0
    assert {k for k in flat if k.startswith("remedy.target.")} == {
        "remedy.target.sex",
        "remedy.target.race",
        "remedy.target.sex x race",
    }


def test_reference_gaps_are_the_audits_own_point_values():
    rng = np.random.default_rng(0)
    n = 600
    race = rng.choice(["a", "b", "c", "d"], n, p=[0.5, 0.3, 0.17, 0.03])  # "d": below min_group_size, not judged
    frame = pd.DataFrame(
        {
            LABEL_COLUMN: rng.integers(0, 2, n),
            f"{SENSITIVE_PREFIX}sex": rng.choice(["f", "m"], n),
            f"{SENSITIVE_PREFIX}race": race,
        }
    )
    p = rng.uniform(size=n)
    decided = p >= 0.5
    audit = AuditParams(seed=0, bootstrap=5, min_group_size=30)
    expected = headline(audit_predictions(frame, p, ["sex", "race"], 0.5, audit))
    got = reference_gaps(frame, decided, p, ["sex", "race"], 30)
    assert set(got) == {"sex", "race", "sex x race"}
    for feature, gaps in expected.items():
        for gap, value in gaps.items():
            assert got[feature][gap] == pytest.approx(value, nan_ok=True), (feature, gap)


def test_a_remedy_that_widens_every_gap_it_targets_is_refused_even_when_it_gains_accuracy():
    # Accuracy 0.660 -> 0.670, race EO 0.224 -> 0.250 and DP 0.12 -> 0.13: less fair, not a remedy.
    decision = decide(policy(), candidate(0.670, 0.250, dp=0.13), None)
    (check,) = checks_of(decision, "max_remedy_cost")
    assert check.passed is False and rejudge(check.__dict__) is False
    assert "widens every gap the policy limits on its target" in check.note and SWEEP in check.note
    assert remedy_cost({"test.accuracy": [0.670, 0.660], EO: [0.25, 0.224]}) == (math.inf, None)
    # Nothing changed at all: no cost, nothing to refuse on this rule.
    assert remedy_cost({"test.accuracy": [0.660, 0.660], EO: [0.224, 0.224]}) == (0.0, None)
