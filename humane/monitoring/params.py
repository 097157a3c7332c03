"""The `monitor:` section of params.yaml: the champion's monitoring rules."""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import Field, model_validator

from humane.core.params import Section
from humane.governance.params import GovernanceSections

# The breaches a monitoring run can end in (flows/monitoring.py), in the order the run's state is named by.
BREACHES = ("BiasDegraded", "PerformanceDegraded", "DriftDetected")
# Gaps whose growth the monitoring judges (a ratio shrinks as it worsens: it is judged by its difference).
MONITORED_GAPS = ("demographic_parity_difference", "equalized_odds_difference", "equal_opportunity_difference")


class MonitorParams(Section):
    """Monitoring the champion on production batches (flows/monitoring.py): drift, performance and group gaps.

    Every figure is compared with the champion's own reference, fixed when it was tracked: its test rows as the
    model read them (drift), and its test-time figures with their bootstrap intervals (performance, gaps).
    """

    drift_method_continuous: Literal["jensen_shannon", "hellinger", "wasserstein", "kolmogorov_smirnov"] = Field(
        "jensen_shannon",
        description=(
            "NannyML's univariate drift distance per feature kind (jensen_shannon and hellinger lie in [0, 1])."
        ),
    )
    drift_method_categorical: Literal["jensen_shannon", "hellinger", "l_infinity"] = Field(
        "jensen_shannon", description="NannyML's univariate drift distance for categorical features."
    )
    drift_threshold: float = Field(
        0.1,
        gt=0,
        description=(
            "An input feature drifted when its distance to the reference exceeds this; the predicted probability too."
        ),
    )
    prediction_drift_threshold: float = Field(
        0.1, gt=0, description="The predicted probability drifted when its distance to the reference exceeds this."
    )
    max_drifted_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="DriftDetected when more than this share of the input features drifted (0: any one).",
    )
    max_out_of_domain_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description=(
            "DriftDetected when more than this share of the rows break a training-domain rule (out_of_domain)."
        ),
    )
    max_drop: dict[Literal["accuracy", "roc_auc"], float] = Field(
        {"accuracy": 0.05, "roc_auc": 0.05},
        description=(
            "PerformanceDegraded when accuracy or roc_auc (estimated by CBPE without labels, realised with "
            "them) falls more than this below the test-time figure, overall or (accuracy, which the audit "
            "gives an interval) for a group large enough to judge, and the two 95% intervals do not overlap "
            "where both exist."
        ),
    )
    max_increase: dict[str, float] = Field(
        {"*.demographic_parity_difference": 0.05, "*.equalized_odds_difference": 0.05},
        description=(
            'BiasDegraded when a gap ("<feature>.<gap>", "*" for every sensitive feature; the named feature '
            "wins) grows more than this above its test-time value and its 95% interval lies above the "
            "test-time interval."
        ),
    )
    min_rows: int = Field(100, ge=1, description="A batch with fewer rows is refused: too few to judge anything.")
    retrain_on: list[Literal["BiasDegraded", "PerformanceDegraded", "DriftDetected"]] = Field(
        [],
        description=(
            "Breaches that start the training deployment (Prefect) by themselves; a monitoring run never "
            "moves an alias."
        ),
    )
    training_deployment: str = Field(
        "training/adult",
        pattern=r"^[^/]+/[^/]+$",
        description="The Prefect deployment (flow/deployment) that retrain_on starts.",
    )
    attribution_drift_threshold: float = Field(
        0.1,
        gt=0,
        le=1,
        description=(
            "DriftDetected when a raw input's share of the model's attribution (mean |attribution| share) "
            "moves more than this from its share on the test rows (reports/explanations.json), among the "
            "reference's top inputs."
        ),
    )

    @model_validator(mode="after")
    def _known_gaps(self) -> MonitorParams:
        for key in self.max_increase:
            feature, _, gap = key.rpartition(".")
            if not feature or gap not in MONITORED_GAPS:
                raise ValueError(
                    f"monitor.max_increase: key {key!r} must be '<feature or *>.<gap>' with a gap in "
                    f"{list(MONITORED_GAPS)}"
                )
        return self


class MonitoringSections(GovernanceSections, Protocol):
    """The sections of params.yaml that monitoring code reads from the whole (`humane.pipeline.params.Params`)."""

    @property
    def monitor(self) -> MonitorParams:
        """The `monitor:` section."""
