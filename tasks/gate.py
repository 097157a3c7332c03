"""Gate stage: the promotion policy's value rules on the candidate (change rules wait for registration)."""

from __future__ import annotations

from typing import Any

from humane.core import io
from humane.core.context import RunContext
from humane.core.paths import Paths
from humane.fairness.policy import policy_of
from humane.governance.gate import DOMINANCE, REMEDY_COST, Decision, decide, read_candidate
from humane.pipeline.entry import stage_main
from humane.pipeline.params import Params


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Judge the candidate against min/max/validation rules; write reports/policy_checks.json."""
    checks = decide(policy_of(params), read_candidate(paths), None, compare=False)
    # Not a decision: the value rules only. `passed` here means "passes the value rules"; the decision, with
    # the change rules against the champion, is taken by the register stage (reports/decision.json).
    record: dict[str, Any] = {
        "value_rules_passed": checks.passed,
        "reasons": checks.reasons,
        "notes": checks.notes,
        "checks": [c.__dict__ for c in checks.checks],
    }
    bad_remedy = sweep_advised(params, checks)
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


def sweep_advised(params: Params, checks: Decision) -> bool:
    """Whether the remedy is dominated or too costly, as measured: the sweep then chooses among the remedies.

    Only under an active remedy, and only on the figures the rule weighed (recorded on its outcome): an unmeasured
    figure or an unmitigated candidate is no question a sweep answers.
    """
    rules = (DOMINANCE, REMEDY_COST)
    failed = [c for c in checks.checks if c.rule in rules and c.passed is False and c.all_measured()]
    return bool(params.mitigation.active and failed)


if __name__ == "__main__":
    stage_main(run)
