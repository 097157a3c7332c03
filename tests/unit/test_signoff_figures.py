"""Sign-off checks every figure a passed decision judged against the run's logged metrics, the references' gaps too."""

import pytest

from humane.governance.gate import decide
from humane.governance.signoff import SignOffError, check_figures
from tests.unit.test_dominance import EO, candidate, policy


def _passed_checks(flat):
    decision = decide(policy(), flat, None)
    assert decision.passed, decision.reasons
    return [c for c in decision.to_dict()["checks"] if c["rule"] in ("not_dominated", "max_remedy_cost")]


def test_the_references_gaps_a_decision_judged_must_be_the_runs():
    # A cheap remedy: 1 point of accuracy for 10 points of race EO closed; the logistic regression is worse.
    flat = candidate(0.650, 0.124, unmitigated=(0.660, 0.224, 0.12), logreg=(0.640, 0.25, 0.15))
    checks = _passed_checks(flat)
    assert checks and all(c.get("figures") for c in checks)
    logged = {k: v + 1e-6 if "fairness" in k else v for k, v in flat.items()}  # rounding to 4 digits absorbs it
    check_figures("m", "1", checks, logged)
    forged = dict(logged, **{f"baseline.unmitigated.{EO}": 0.124})  # the run's twin was as fair as the candidate
    with pytest.raises(SignOffError, match=rf"baseline\.unmitigated\.{EO} judged 0\.224, logged 0\.124"):
        check_figures("m", "1", checks, forged)
    missing = {k: v for k, v in logged.items() if k != f"baseline.logreg.{EO}"}
    with pytest.raises(SignOffError, match=rf"baseline\.logreg\.{EO} judged 0\.25, never logged"):
        check_figures("m", "1", checks, missing)
    no_reference = [{**checks[0], "reference": None}]
    with pytest.raises(SignOffError, match="never logged"):
        check_figures("m", "1", no_reference, logged)


def test_the_card_shows_what_a_rule_against_a_reference_weighed():
    from humane.governance.card import Card, add_decision

    flat = candidate(0.650, 0.124, unmitigated=(0.660, 0.224, 0.12), logreg=(0.640, 0.25, 0.15))
    card = Card()
    add_decision(card, decide(policy(), flat, None))
    text = card.to_markdown()
    assert "not_dominated against baseline.logreg.accuracy: accuracy 0.6500 vs 0.6400" in text
    assert "max_remedy_cost against baseline.unmitigated.accuracy: accuracy 0.6500 vs 0.6600;" in text
    assert f"{EO} 0.1240 vs 0.2240 (candidate vs reference, same test rows)" in text
