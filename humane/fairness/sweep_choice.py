"""The sweep's front and choice: the candidates no other beats, and the one the promotion policy allows.

`pareto_front` draws the test split's front (quality against one gap); `select` chooses on the validation split
only: the best validation quality among the candidates whose validation gaps meet every fairness limit of the
promotion policy (humane.fairness.policy) and whose quality meets its floors, or none (fail closed).
"""

from __future__ import annotations

import math

from humane.core.errors import ConfigError
from humane.core.metric_names import is_test, strip_test
from humane.fairness.metrics import unmeasurable
from humane.fairness.policy import Policy
from humane.fairness.sweep import FRONT_GAPS, QUALITY_METRICS, CandidateResult


def measured(value: float | None) -> bool:
    """Whether a figure was measured: present and not NaN."""
    return value is not None and not math.isnan(value)


def pareto_front(results: list[CandidateResult], quality: str, gap: str, split: str = "test") -> list[int]:
    """The candidates no other beats on both axes: quality maximised, gap minimised.

    A candidate is dominated when another has quality at least as high and a gap at least as small, and is
    strictly better on one of them. Equal points dominate neither each other (both stay on the front). A
    candidate missing either figure (or with NaN) is not on the front.

    Args:
        results: The candidates' results.
        quality: A quality figure, e.g. "accuracy".
        gap: A gap figure, e.g. "fairness.sex.demographic_parity_difference".
        split: Which split's figures ("val" or "test").

    Returns:
        The indices on the front, by ascending gap (then descending quality, then index).

    """
    points = [(i, r.figures(split).get(quality), r.figures(split).get(gap)) for i, r in enumerate(results)]
    points = [(i, q, g) for i, q, g in points if measured(q) and measured(g)]
    front = [
        (i, q, g) for i, q, g in points if not any(q2 >= q and g2 <= g and (q2 > q or g2 < g) for _, q2, g2 in points)
    ]
    return [i for i, _, _ in sorted(front, key=lambda p: (p[2], -p[1], p[0]))]


def limit_failures(figures_: dict[str, float], limits: list[tuple[str, str, float]]) -> list[str]:
    """Why a candidate's (validation) figures break the fairness limits (`Policy.fairness_bounds`), one line each."""
    reasons = []
    for metric, rule, threshold in limits:
        value = figures_.get(metric)
        if not measured(value):
            reasons.append(
                f"validation {metric}: {unmeasurable(metric, figures_)} (the policy's {rule} is {threshold})"
            )
        elif rule == "max" and value > threshold:
            reasons.append(f"validation {metric} = {value:.4f} > max {threshold}")
        elif rule == "min" and value < threshold:
            reasons.append(f"validation {metric} = {value:.4f} < min {threshold}")
    return reasons


def select(results: list[CandidateResult], policy: Policy, quality: str) -> tuple[int | None, dict[int, str]]:
    """The candidate with the best validation `quality` among those within every fairness limit and quality floor.

    Only validation figures are read (the test split stays for the front and the gate). Ties go to the earlier
    candidate. If no candidate is within the limits, none is chosen (fail closed).

    Args:
        results: The candidates' results.
        policy: The promotion policy in force (`policy_of`); its fairness `max` (and `min`) rules are the limits.
        quality: The validation figure to maximise (`sweep.select`).

    Returns:
        The chosen index (or None), and for every other candidate the reason it was not chosen.

    Raises:
        ConfigError: `quality` is not a quality figure the sweep measures.

    """
    if quality not in QUALITY_METRICS:
        raise ConfigError(f"sweep.select: {quality!r} is not one of {list(QUALITY_METRICS)}")
    rejected: dict[int, str] = {}
    eligible: list[tuple[int, float]] = []
    for i, result in enumerate(results):
        reasons = ineligible(result.val, policy, quality)
        if reasons:
            rejected[i] = "; ".join(reasons)
        else:
            eligible.append((i, float(result.val[quality])))
    if not eligible:
        return None, rejected
    chosen, best = max(eligible, key=lambda e: (e[1], -e[0]))
    for i, value in eligible:
        if i != chosen:
            rejected[i] = outranked(value, chosen, best, quality)
    return chosen, dict(sorted(rejected.items()))


def ineligible(val: dict[str, float], policy: Policy, quality: str) -> list[str]:
    """Why a candidate's validation figures cannot be chosen: a fairness limit, a quality floor, `quality` unmeasured.

    The policy's quality floors are its test.<metric> minimums, read on validation: a model that met the fairness
    limits by collapsing to one answer is not a choice the gate could promote.
    """
    reasons = limit_failures(val, policy.fairness_bounds())
    for metric, floor in policy.min.items():
        if not is_test(metric):
            continue
        name = strip_test(metric)
        got = val.get(name)
        if not measured(got):  # absent or NaN: a floor that cannot be shown to hold is not met
            reasons.append(f"validation {name} not measured (the policy's min is {floor})")
        elif got < floor:
            reasons.append(f"validation {name} = {got:.4f} < min {floor}")
    if not measured(val.get(quality)):
        reasons.append(f"validation {quality} not measured")
    return reasons


def outranked(value: float, chosen: int, best: float, quality: str) -> str:
    """Why an eligible candidate (validation `quality` = `value`) was not chosen over candidate `chosen`."""
    if value < best:
        return f"within the fairness limits, but validation {quality} {value:.4f} < {best:.4f} of candidate {chosen}"
    return (
        f"within the fairness limits, ties candidate {chosen} on validation {quality} ({value:.4f}), which comes first"
    )


def position(index: int, fronts: dict[str, list[int]], feature: str) -> str:
    """Where a candidate sits on the test fronts, in a few words (a registry tag)."""
    on = [name.upper() for name in FRONT_GAPS if index in fronts.get(name, [])]
    off = [name.upper() for name in FRONT_GAPS if index not in fronts.get(name, [])]
    if not off:
        return f"on the front (test accuracy vs {feature} DP and EO gaps)"
    if not on:
        return f"dominated (test accuracy vs {feature} DP and EO gaps)"
    return f"on the {on[0]} front, dominated on the {off[0]} front (test accuracy vs {feature} gaps)"
