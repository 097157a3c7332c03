"""The policy lookup (humane.fairness.policy): one merge of params for the gate, the card and the sweep."""

import json
from pathlib import Path

from humane.core.params import read_raw
from humane.fairness.policy import Policy, policy_of
from humane.fairness.sweep_choice import select
from humane.pipeline.params import Params, parse_params
from tests.unit.test_sweep import result

ROOT = Path(__file__).resolve().parents[2]
DP = "fairness.sex.demographic_parity_difference"
EO = "fairness.sex.equalized_odds_difference"


def _params(profile_max: dict[str, float]) -> Params:
    """The project's params, the dataset profile's `policy.max` updated with `profile_max`."""
    raw = read_raw(ROOT / "params.yaml")
    raw["policy"]["max"].update(profile_max)
    return parse_params(raw)


def test_policy_of_merges_the_profile_over_the_gate_and_expands_the_wildcard():
    params = _params({"fairness.*.equalized_odds_difference": 0.3, DP: 0.05})
    policy = policy_of(params)
    features = params.data.sensitive_features
    assert policy.max[DP] == 0.05  # the profile's own threshold replaces the gate's
    assert {f"fairness.{f}.equalized_odds_difference" for f in features} <= set(policy.max)
    assert not any("*" in metric for metric in (*policy.min, *policy.max))
    assert policy == Policy.of(params.gate, params.policy, features)
    json.dumps(policy.to_dict())  # the decision's basis hashes it: it must be plain JSON


def test_the_fairness_bounds_are_every_limit_on_a_gap_a_min_and_a_max_both_kept():
    policy = Policy(True, {}, {"test.accuracy": 0.7, EO: 0.01}, {DP: 0.1, EO: 0.2, "privacy.mia_auc": 0.6}, {}, {})
    assert policy.limited_gaps() == [DP, EO]  # sorted; quality and privacy rules are no gap limits
    # The sweep's choice judges every limit: EO's min and its max are both kept.
    assert policy.fairness_bounds() == [(DP, "max", 0.1), (EO, "max", 0.2), (EO, "min", 0.01)]


def test_the_sweep_chooses_by_every_limit_the_lookup_gives_and_fails_closed():
    policy = policy_of(_params({DP: 0.05}))
    # Figures for sex only: the profile's limit on race cannot be shown to hold, so nothing is chosen.
    chosen, rejected = select([result(0.9, 0.2), result(0.8, 0.01)], policy, "accuracy")
    assert chosen is None
    assert f"validation {DP} = 0.2000 > max 0.05" in rejected[0] and DP not in rejected[1]
    assert all("validation fairness.race.equalized_odds_difference" in reason for reason in rejected.values())
