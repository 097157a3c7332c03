"""Gate stage: the promotion policy's value rules on the candidate (change rules wait for registration)."""

from __future__ import annotations

import math

from humane.core import io
from humane.core.context import RunContext, stage_main
from humane.core.params import Params
from humane.core.paths import Paths
from humane.governance.gate import DOMINANCE, REMEDY_COST, Check, Policy, decide, read_candidate


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Judge the candidate against min/max/validation rules; write reports/policy_checks.json."""
    policy = Policy.of(params.gate, params.policy, params.data.sensitive_features)
    checks = decide(policy, read_candidate(paths), None, compare=False)
    # Not a decision: the value rules only. `passed` here means "passes the value rules"; the decision, with
    # the change rules against the champion, is taken by the register stage (reports/decision.json).
    record = {
        "value_rules_passed": checks.passed,
        "reasons": checks.reasons,
        "notes": checks.notes,
        "checks": [c.__dict__ for c in checks.checks],
    }
    # Dominated or too costly, as measured, under a remedy: the sweep chooses among the remedies instead, for this
    # profile. An unmeasured figure or an unmitigated candidate is no question a sweep answers.
    bad_remedy = params.mitigation.active and [
        c for c in checks.checks if c.rule in (DOMINANCE, REMEDY_COST) and c.passed is False and measured(c)
    ]
    if bad_remedy:
        target = list(params.mitigation.target)
        record["sweep"] = {"command": "make sweep", "profile": params.data.name, "target": target}
    io.write_json(paths.policy_checks, record)
    verdict = "passes the value rules" if checks.passed else "fails: " + "; ".join(checks.reasons)
    if bad_remedy:
        verdict += (
            f" — for profile {params.data.name!r} (mitigation target {target}) run `make sweep`: it "
            "weighs the candidates of params.yaml `sweep:` and trains the choice"
        )
    return f"gate: candidate {verdict} (change rules are judged against the champion at registration)"


def measured(check: Check) -> bool:
    """Whether every figure a rule against a reference weighed is a number (else it failed as not measured)."""
    pairs = [(check.value, check.reference_value), *(check.figures or {}).values()]
    return all(isinstance(v, int | float) and math.isfinite(v) for pair in pairs for v in pair)


if __name__ == "__main__":
    stage_main(run)
