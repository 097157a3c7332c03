"""The promotion policy in force, and its one lookup: `policy_of(params)`.

The policy is the generic `gate:` section of params.yaml merged with the dataset profile's `policy:`, with
`fairness.*.<gap>` expanded to every sensitive feature. Its thresholds name metrics of the flat namespace
(humane.core.metric_names): quality (`test.*`), fairness gaps (`fairness.<feature>.<gap>`), privacy, compute.

It lives in the fairness layer, the lowest that reads it: the bias-mitigation sweep (humane.fairness.sweep_choice)
chooses among its candidates by the policy's fairness limits, and the gate (humane.governance.gate) judges the
candidate by all of its rules. Both take it from `policy_of`, so the two never read different policies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from humane.core.metric_names import fairness_metric, is_fairness
from humane.fairness.params import FairnessSections, GateRules, PolicyParams

WILDCARD = "fairness.*."  # fairness.*.<gap>: the gap of every sensitive feature on its own


@dataclass(frozen=True)
class Policy:
    """The promotion policy in force: the generic gate merged with the dataset's own thresholds, `*` expanded."""

    require_validation: bool
    above_baseline: dict[str, float]
    min: dict[str, float]
    max: dict[str, float]
    max_drop: dict[str, float]
    max_increase: dict[str, float]
    # The references that must not dominate the candidate, and the remedy's price limit (None: rule off).
    dominated_by: tuple[str, ...] = ()
    max_remedy_cost: float | None = None

    @classmethod
    def of(cls, gate: GateRules, dataset: PolicyParams, sensitive: list[str]) -> Policy:
        """Merge: the profile adds thresholds and, for the same metric, replaces the generic one.

        Args:
            gate: The generic `gate:` section.
            dataset: The dataset profile's `policy:` section.
            sensitive: The sensitive features a `fairness.*.<gap>` rule expands to.

        Returns:
            The merged policy.

        """

        def merged(generic: dict[str, float], own: dict[str, float]) -> dict[str, float]:
            return {**expanded(generic, sensitive), **expanded(own, sensitive)}

        return cls(
            gate.require_validation,
            dict(gate.above_baseline),
            merged(gate.min, dataset.min),
            merged(gate.max, dataset.max),
            merged(gate.max_drop, dataset.max_drop),
            merged(gate.max_increase, dataset.max_increase),
            tuple(gate.dominated_by),
            gate.max_remedy_cost,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for the decision's basis and the card)."""
        return asdict(self)

    def fairness_bounds(self) -> list[tuple[str, str, float]]:
        """Every limit on fairness figures, as (metric, "max" | "min", threshold), sorted: a min and a max both kept."""
        bounds = [(m, "max", t) for m, t in self.max.items() if is_fairness(m)]
        bounds += [(m, "min", t) for m, t in self.min.items() if is_fairness(m)]
        return sorted(bounds)

    def limited_gaps(self) -> list[str]:
        """The fairness figures the policy limits (min or max rules on fairness.<feature>.<gap>), sorted."""
        return sorted({metric for metric, _, _ in self.fairness_bounds()})


def expanded(rules: dict[str, float], sensitive: list[str]) -> dict[str, float]:
    """`rules` with each `fairness.*.<gap>` replaced by that gap of every sensitive feature (a named one wins)."""
    out: dict[str, float] = {}
    for metric, threshold in rules.items():
        if metric.startswith(WILDCARD):
            gap = metric.removeprefix(WILDCARD)
            out.update({fairness_metric(feature, gap): threshold for feature in sensitive})
    out.update({m: t for m, t in rules.items() if not m.startswith(WILDCARD)})
    return out


def policy_of(params: FairnessSections) -> Policy:
    """The policy in force for these params: the generic gate and the dataset profile's own thresholds.

    Args:
        params: The project's params (a sweep candidate's, overrides applied).

    Returns:
        The merged policy (`Policy.of`).

    """
    return Policy.of(params.gate, params.policy, params.data.sensitive_features)
