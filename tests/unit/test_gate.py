import pytest

from humane.core.params import GateParams
from humane.governance.gate import candidate_metrics, decide
from humane.governance.registry import Champion

CANDIDATE = {"validation.passed": 1.0, "test.accuracy": 0.85, "test.roc_auc": 0.90,
             "fairness.sex.demographic_parity_difference": 0.12}  # fmt: skip


def policy(**kw):
    base = dict(require_validation=True, min={}, max={}, max_drop={}, max_increase={})
    base.update(kw)
    return GateParams(**base)


def test_no_thresholds_promotes_nothing():
    decision = decide(policy(), CANDIDATE, None)
    assert not decision.passed
    assert decision.reasons == ["the policy sets no thresholds, so nothing is promoted"]


def test_value_thresholds_pass_and_fail():
    ok = decide(policy(min={"test.accuracy": 0.84}, max={"fairness.sex.demographic_parity_difference": 0.2}),
                CANDIDATE, None)  # fmt: skip
    assert ok.passed and ok.reasons == []
    low = decide(policy(min={"test.accuracy": 0.86}), CANDIDATE, None)
    assert not low.passed and low.reasons == ["test.accuracy = 0.8500: below the minimum (0.86)"]
    gap = decide(policy(max={"fairness.sex.demographic_parity_difference": 0.1}), CANDIDATE, None)
    assert not gap.passed and "above the maximum (0.1)" in gap.reasons[0]


def test_unmeasured_metric_fails():
    decision = decide(policy(max={"fairness.race.equalized_odds_difference": 0.1}), CANDIDATE, None)
    assert not decision.passed
    assert decision.reasons == [
        "fairness.race.equalized_odds_difference was not measured for this model, and the policy's max rule needs it"
    ]


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


def test_disparity_increase_against_champion():
    champion = Champion("1", {"fairness.sex.demographic_parity_difference": 0.05}, "run")
    decision = decide(policy(max_increase={"fairness.sex.demographic_parity_difference": 0.02}), CANDIDATE, champion)
    assert not decision.passed and "rose more than allowed vs champion v1" in decision.reasons[0]


def test_champion_without_the_metric_fails_that_rule_closed():
    decision = decide(policy(min={"test.accuracy": 0.8}, max_drop={"test.roc_auc": 0.01}), CANDIDATE,
                      Champion("2", {}, None))  # fmt: skip
    assert not decision.passed
    assert [c.passed for c in decision.checks] == [True, True, False]
    assert decision.reasons == ["test.roc_auc: champion v2 has no recorded value, so the change cannot be judged"]


def test_the_gate_stage_leaves_change_rules_pending():
    decision = decide(policy(min={"test.accuracy": 0.8}, max_drop={"test.roc_auc": 0.01}), CANDIDATE,
                      Champion("2", {"test.roc_auc": 0.99}, None), compare=False)  # fmt: skip
    assert decision.passed and decision.champion_version == "2"
    assert [c.passed for c in decision.checks] == [True, True, None]
    assert decision.checks[-1].note == "pending: judged at registration"


def test_candidate_metrics_namespace():
    flat = candidate_metrics({"model": {"accuracy": 0.8}}, {"sex": {"equalized_odds_difference": 0.1}}, True)
    assert flat == {"test.accuracy": 0.8, "fairness.sex.equalized_odds_difference": 0.1, "validation.passed": 1.0}
