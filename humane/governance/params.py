"""The `gate:` section of params.yaml: the generic promotion policy and the sign-off rule."""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import Field

from humane.core.params import Section
from humane.fairness.params import FairnessSections


class GateParams(Section):
    """The generic promotion policy; a dataset's profile adds its own thresholds (`policy:`).

    Metric names: test.<metric>, fairness.<feature>.<gap> (`fairness.*.<gap>`: every sensitive feature on its
    own), privacy.<metric>, compared against a fixed threshold (`min`, `max`), against a baseline model scored
    on the same test rows (`above_baseline`), or against the champion scored on the same test rows
    (`max_drop`, `max_increase`).
    """

    require_validation: bool = Field(description="Data validation must have passed (a hard rule).")
    above_baseline: dict[str, float] = Field(
        description=(
            "{<baseline>.<metric>: margin}: the model's test metric must exceed the baseline's minus the margin."
        )
    )
    min: dict[str, float] = Field(description="Lower bounds {metric: value} a candidate must reach.")
    max: dict[str, float] = Field(
        description=(
            "Upper bounds {metric: value} a candidate must stay under (e.g. fairness.*.demographic_parity_difference)."
        )
    )
    max_drop: dict[str, float] = Field(
        description=(
            "Largest allowed fall of a metric against the current champion, both scored on the candidate's "
            "test rows (skipped while there is none)."
        )
    )
    max_increase: dict[str, float] = Field(
        description=(
            "Largest allowed rise of a metric (e.g. a fairness gap) against the current champion on the same test rows."
        )
    )
    dominated_by: list[Literal["unmitigated", "logreg"]] = Field(
        description=(
            "Dominance: refused when one of these references, scored on the same test rows, is at least as "
            "accurate and at least as fair on every fairness figure the policy limits (strictly better on "
            "one). [] switches it off."
        )
    )
    max_remedy_cost: float | None = Field(
        ge=0,
        description=(
            "Remedy cost: accuracy points a mitigated candidate gives up against its unmitigated twin, per "
            "point of the gap it closed most among those the policy limits on the mitigation target. null "
            "switches it off."
        ),
    )
    require_approval: bool = Field(
        False,
        description=(
            "Sign-off: a candidate that passes the rules waits, registered as challenger with `approval: "
            "pending`, for a named person's decision (`python -m tasks.approve`, or the paused Prefect run) "
            "before `champion` moves."
        ),
    )
    four_eyes: bool = Field(False, description="Two people: whoever triggered the run cannot approve its candidate.")
    approval_timeout_s: int = Field(
        86400,
        ge=1,
        description=(
            "How long a paused Prefect run waits for the decision; it then ends NotApproved (the version "
            "stays pending)."
        ),
    )


class GovernanceSections(FairnessSections, Protocol):
    """The sections of params.yaml that governance code reads from the whole (`humane.pipeline.params.Params`)."""

    @property
    def gate(self) -> GateParams:
        """The `gate:` section."""
