"""The `policy:`, `mitigation:`, `audit:` and `sweep:` sections of params.yaml."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from pydantic import Field

from humane.core.params import Section
from humane.modeling.params import ModelingSections


class PolicyParams(Section):
    """A dataset's own promotion thresholds, added to (and for the same metric replacing) the gate's generic ones."""

    min: dict[str, float] = Field(
        {},
        description=(
            "This dataset's lower bounds {metric: value}, on top of gate.min (the same metric: this one wins)."
        ),
    )
    max: dict[str, float] = Field(
        {},
        description=(
            "This dataset's upper bounds {metric: value} (e.g. fairness.sex.equalized_odds_difference), on "
            "top of gate.max."
        ),
    )
    max_drop: dict[str, float] = Field(
        {},
        description=(
            "This dataset's largest allowed fall of a metric against the champion {metric: value}, on top of "
            "gate.max_drop."
        ),
    )
    max_increase: dict[str, float] = Field(
        {},
        description=(
            "This dataset's largest allowed rise of a metric against the champion {metric: value}, on top of "
            "gate.max_increase."
        ),
    )


class MitigationParams(Section):
    """Bias mitigation (part of the dataset profile): by data, by training and by thresholds.

    `target` names the sensitive feature(s) the methods act on (two or more: their intersection); groups
    with fewer training rows than validate.min_group_rows are left out of the constraints, and named.
    """

    target: list[str] = Field(
        [],
        description=(
            "The sensitive feature(s) the methods act on (two or more: their intersection); must be in "
            "data.sensitive_features."
        ),
    )
    reweigh: bool = Field(
        False, description="Pre-processing: Kamiran & Calders weights per group x label cell (preprocess stage)."
    )
    resample: bool = Field(
        False, description="Pre-processing: oversample the group x label cells to balance them (preprocess stage)."
    )
    loss: Literal["none", "demographic_parity", "equalized_odds"] = Field(
        "none",
        description="In-processing: a fairness term in the loss (fairret), weighted by loss_weight (train stage).",
    )
    loss_weight: float = Field(
        0.0, ge=0, le=100, description="Weight of the fairness loss term (mitigation.loss); 0 switches it off."
    )
    reductions: Literal["none", "demographic_parity", "equalized_odds"] = Field(
        "none",
        description=(
            "In-processing by reductions: Fairlearn's ExponentiatedGradient around the MLP; the model is the "
            "weighted vote of its fits (train stage)."
        ),
    )
    reductions_eps: float = Field(
        0.01, gt=0, le=1, description="Constraint slack of the reductions (ExponentiatedGradient's eps)."
    )
    reductions_epochs: int = Field(
        5, ge=1, le=1000, description="Epochs of each inner fit (oracle call) of the reductions."
    )
    reductions_max_iter: int = Field(
        50, ge=1, le=1000, description="Largest number of ExponentiatedGradient iterations."
    )
    thresholds: Literal["none", "demographic_parity", "equalized_odds", "true_positive_rate_parity"] = Field(
        "none",
        description=(
            "Post-processing: Fairlearn's ThresholdOptimizer fitted on the validation split (postprocess "
            "stage); the served model then needs the target's sensitive columns."
        ),
    )
    seed: int = Field(0, description="Seed of the mitigation methods (resampling, threshold randomisation).")

    @property
    def in_training(self) -> bool:
        """Whether a method acts before or during training (then the unmitigated model is a separate fit)."""
        return any(not m.startswith("thresholds:") for m in self.active)

    @property
    def active(self) -> list[str]:
        """The methods switched on, by name."""
        on = ["reweigh"] * self.reweigh + ["resample"] * self.resample
        on += [f"loss:{self.loss}"] if self.loss != "none" and self.loss_weight > 0 else []
        on += [f"reductions:{self.reductions}"] if self.reductions != "none" else []
        return on + ([f"thresholds:{self.thresholds}"] if self.thresholds != "none" else [])


class AuditParams(Section):
    """Bias-audit settings."""

    seed: int = Field(description="Seed of the bootstrap.")
    bootstrap: int = Field(ge=1, description="Bootstrap resamples of the test rows for the 95% confidence intervals.")
    min_group_size: int = Field(
        ge=1,
        description='Groups with fewer test rows are flagged "too small to judge" and left out of the headline gaps.',
    )


class SweepParams(Section):
    """A sweep of candidates (flows/sweep.py): overrides of allow-listed keys, one mapping per candidate."""

    candidates: list[dict[str, Any]] = Field(
        min_length=1,
        description=(
            "One mapping of allow-listed overrides per candidate (e.g. {mitigation.reweigh: true}), on top of "
            "the profile's mitigation."
        ),
    )
    select: Literal["accuracy", "balanced_accuracy", "roc_auc"] = Field(
        description=(
            "The chosen candidate maximises this validation metric among those within the policy's fairness limits."
        )
    )
    workers: int = Field(
        ge=1,
        le=64,
        description=(
            "Candidates run in parallel (processes, one torch thread each), or on a Dask cluster at "
            "dask_address (workers started with --nthreads 1: torch's random generator is per process)."
        ),
    )
    dask_address: str | None = Field(
        None, description="A Dask scheduler (e.g. tcp://10.0.0.5:8786) to run the candidates on; null: local processes."
    )


class GateRules(Protocol):
    """What the policy takes from the generic `gate:` section (`humane.governance.params.GateParams`)."""

    @property
    def require_validation(self) -> bool:
        """`gate.require_validation`."""

    @property
    def above_baseline(self) -> Mapping[str, float]:
        """`gate.above_baseline`."""

    @property
    def min(self) -> Mapping[str, float]:
        """`gate.min`."""

    @property
    def max(self) -> Mapping[str, float]:
        """`gate.max`."""

    @property
    def max_drop(self) -> Mapping[str, float]:
        """`gate.max_drop`."""

    @property
    def max_increase(self) -> Mapping[str, float]:
        """`gate.max_increase`."""

    @property
    def dominated_by(self) -> Sequence[str]:
        """`gate.dominated_by`."""

    @property
    def max_remedy_cost(self) -> float | None:
        """`gate.max_remedy_cost`."""


class FairnessSections(ModelingSections, Protocol):
    """The sections of params.yaml that fairness code reads from the whole (`humane.pipeline.params.Params`)."""

    @property
    def policy(self) -> PolicyParams:
        """The `policy:` section."""

    @property
    def mitigation(self) -> MitigationParams:
        """The `mitigation:` section."""

    @property
    def audit(self) -> AuditParams:
        """The `audit:` section."""

    @property
    def sweep(self) -> SweepParams:
        """The `sweep:` section."""

    @property
    def gate(self) -> GateRules:
        """The `gate:` section."""
