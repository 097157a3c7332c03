"""Bias mitigation by the data (reweighing, oversampling) and by the loss (a fairness term), and their groups.

Every method works on a *mitigation target*: one sensitive feature or the intersection of several
(`group_keys`), built with the audit's own group labels (`humane.core.protected`), so a null sensitive value
is the group "missing" here too. Groups with fewer than `min_rows` rows are too small to constrain
(`constrained`): their key becomes None and each method treats those rows the same way:

- reweighing: weight 1 (their label rate is left as observed);
- oversampling: never resampled;
- fairness penalty: no group of their own (an all-zero one-hot row), so they add no penalty term;
- thresholds (`humane.fairness.thresholds`): no threshold of their own; their rows get the plain threshold.

The sensitive feature is never a model input: it travels beside the features (a key per row) and is only read
by these functions. The reductions estimator that Fairlearn's ExponentiatedGradient fits lives in
`humane.fairness.reductions`; post-processing (per-group thresholds, the decision rule of a post-processed
model) in `humane.fairness.thresholds`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from fairret.loss import NormLoss
from fairret.statistic import FalsePositiveRate, PositiveRate, TruePositiveRate

from humane.core.errors import ConfigError, DataError
from humane.core.paths import LABEL_COLUMN, WEIGHT_COLUMN
from humane.core.protected import INTERSECTION, sensitive_group_labels, sensitive_name, sensitive_names
from humane.fairness.metrics import shown_names
from humane.fairness.params import MitigationParams

PenaltyConstraint = Literal["demographic_parity", "equalized_odds"]
PENALTY_CONSTRAINTS: tuple[str, ...] = ("demographic_parity", "equalized_odds")


# ---------------------------------------------------------------------------------------------------------------
# The mitigation target's groups
# ---------------------------------------------------------------------------------------------------------------


def group_keys(frame: pd.DataFrame, target: list[str]) -> pd.Series:
    """Each row's group for the mitigation target: one feature's group label, or the intersection of several.

    Args:
        frame: A processed frame holding `sensitive_name(feature)` for each feature of the target.
        target: Sensitive feature names; two or more mean their intersection (e.g. "Female x Black").

    Returns:
        The group label per row (`humane.core.protected.group_labels`: a null is "missing"), indexed like frame.

    Raises:
        ConfigError: The target names no feature, or a feature twice.
        DataError: A target feature has no sensitive column in the frame.

    """
    if not target:
        raise ConfigError("the mitigation target names no sensitive feature")
    if len(set(target)) != len(target):
        raise ConfigError(f"the mitigation target {target} names a sensitive feature twice")
    absent = [f for f in target if sensitive_name(f) not in frame.columns]
    if absent:
        raise DataError(
            f"the mitigation target needs the sensitive column(s) {sensitive_names(absent)}, "
            "which the processed frame does not hold (mitigate only on features listed in data.sensitive_features)"
        )
    columns = sensitive_group_labels(frame, target)
    return columns[INTERSECTION.join(target)].rename(INTERSECTION.join(target))


def constrained(keys: pd.Series, min_rows: int) -> tuple[pd.Series, list[str]]:
    """Exclude the groups too small to constrain: their rows' key becomes None.

    Args:
        keys: Group label per row (`group_keys`).
        min_rows: Smallest group constrained (the audit's `min_group_size`: a smaller group's rates describe a
            handful of people, so equalising them would fit noise).

    Returns:
        The keys with too-small groups set to None, and those groups as reports show them: numbered, never named
        (`humane.fairness.metrics.shown_names`: a rare value can single out a person), with their row counts.

    Raises:
        DataError: The keys contain nulls, or fewer than two groups are large enough (nothing to equalise).

    """
    if keys.isna().any():
        raise DataError("group keys contain nulls; build them with group_keys (a null sensitive value is 'missing')")
    counts = keys.value_counts()
    sizes = {str(g): int(n) for g, n in counts.items()}
    shown = shown_names(sizes, min_rows)  # numbered, never named
    small = sorted((g for g, n in sizes.items() if n < min_rows), key=lambda g: (-sizes[g], g))
    too_small = [f"{shown[g]} ({sizes[g]} rows)" for g in small]
    kept = counts.index[counts >= min_rows]
    if len(kept) < 2:
        raise DataError(
            f"the mitigation target {keys.name!r} has {len(counts)} group(s), {len(kept)} with at least {min_rows} "
            "rows; at least two are needed to constrain anything (choose another target or a smaller min_rows)"
        )
    out = keys.astype(object).where(keys.isin(kept), None)
    return out, too_small


def binary_labels(y: np.ndarray | pd.Series, n: int) -> np.ndarray:
    """The 0/1 labels of n rows as ints (the processed label column).

    Raises:
        DataError: Not n labels, or a label other than 0 and 1.

    """
    values = np.asarray(y)
    if len(values) != n:
        raise DataError(f"{len(values)} labels for {n} group keys; they must describe the same rows")
    if not np.isin(values, (0, 1)).all():
        raise DataError("mitigation needs 0/1 labels (the processed label column)")
    return values.astype(int)


# ---------------------------------------------------------------------------------------------------------------
# Pre-processing: reweighing and oversampling
# ---------------------------------------------------------------------------------------------------------------


def reweighing(keys: pd.Series, y: np.ndarray | pd.Series) -> tuple[np.ndarray, dict[str, Any]]:
    """Kamiran & Calders (2012) reweighing: w(g, y) = P(g)·P(y) / P(g, y), so label and group are independent.

    The probabilities are row shares among the constrained rows (key not None); the excluded rows of too-small
    groups keep weight 1. The weights of the constrained rows sum to their count (their mean is 1), so a weighted
    mean loss stays on the scale of the unweighted one.

    Args:
        keys: Group per row, None for rows excluded from constraints (`constrained`).
        y: 0/1 labels, same rows.

    Returns:
        The weight per row, and a report: per group × label cell the row count and weight (no rows), the
        number of excluded rows.

    """
    labels = binary_labels(y, len(keys))
    active = keys.notna().to_numpy()
    cells = pd.DataFrame({"group": keys[active].astype(str).to_numpy(), "label": labels[active]})
    n = len(cells)
    n_group = cells["group"].value_counts()
    n_label = cells["label"].value_counts()
    n_cell = cells.value_counts(["group", "label"])
    weights = np.ones(len(keys))
    weight_of = {(g, lab): float(n_group[g] * n_label.get(lab, 0) / (n * n_cell[(g, lab)])) for g, lab in n_cell.index}
    weights[active] = [weight_of[(g, lab)] for g, lab in zip(cells["group"], cells["label"], strict=True)]
    report_cells = []
    for g in sorted(n_group.index):
        for lab in (0, 1):
            count = int(n_cell.get((g, lab), 0))
            # An empty cell gets no weight: its group has one label only, which no weight can change.
            report_cells.append({"group": g, "label": lab, "count": count, "weight": weight_of.get((g, lab))})
    return weights, {"method": "reweighing", "cells": report_cells, "excluded_rows": int((~active).sum())}


def oversample(
    frame: pd.DataFrame, keys: pd.Series, y: np.ndarray | pd.Series, seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Oversample group × label cells until every constrained group has the same label rate.

    The rule: the target rate is the positive rate of the constrained rows. A group below it gets copies of its
    positive rows, a group above it copies of its negative rows, until its rate equals the target (rounded to
    whole rows); no row is ever dropped. Afterwards label and group are independent in the row counts (the same
    goal as reweighing, reached with duplicates instead of weights) and the overall rate is unchanged.
    Balancing each group to 50/50 instead (each cell up to its group's largest) would also equalise the rates,
    but shifts the base rate the model learns and duplicates far more rows. Rows of too-small groups (key None)
    are never resampled; a group with one label only cannot be balanced and is left as is (reported).

    Copies are drawn by imbalanced-learn's RandomOverSampler (seeded) with the cell as its class.

    Args:
        frame: The rows to resample (features, label, sensitive columns).
        keys: Group per row (positionally aligned with frame), None for excluded rows.
        y: 0/1 labels, same rows.
        seed: Seed of the sampler.

    Returns:
        The original rows followed by the copies (fresh RangeIndex), and a report: the target rate and per cell
        the row counts before and after.

    """
    labels = binary_labels(y, len(keys))
    if len(frame) != len(keys):
        raise DataError(f"{len(frame)} rows but {len(keys)} group keys; they must describe the same rows")
    active = keys.notna().to_numpy()
    if not active.any():
        raise DataError("no row belongs to a constrained group; nothing to oversample")
    rate = float(labels[active].mean())
    cell = _cells(keys, labels, active)
    groups = sorted({str(k) for k in keys[active]})
    before = pd.Series(cell).value_counts()
    targets, unbalanced = _cell_targets(before, groups, rate)
    indices = _with_copies(cell, targets, seed)
    out = frame.iloc[indices].reset_index(drop=True)
    after = pd.Series(cell[indices]).value_counts()
    report = {
        "method": "oversample",
        "rule": "equal label rate per group (the constrained rows' rate), copies only",
        "target_positive_rate": rate,
        "seed": seed,
        "rows_before": len(frame),
        "rows_after": len(out),
        "excluded_rows": int((~active).sum()),
        "cells": _cell_counts(groups, before, after),
        "unbalanceable": unbalanced,
    }
    return out, report


def _cells(keys: pd.Series, labels: np.ndarray, active: np.ndarray) -> np.ndarray:
    """The cell of each row, "<label>|<group>"; the excluded rows share the cell "excluded" (never resampled)."""
    group = np.array([str(k) if a else "" for k, a in zip(keys, active, strict=True)], dtype=object)
    return np.array([f"{lab}|{g}" if a else "excluded" for lab, g, a in zip(labels, group, active, strict=True)])


def _cell_targets(before: pd.Series, groups: list[str], rate: float) -> tuple[dict[str, int], list[str]]:
    """The rows each cell must reach for its group's label rate to equal `rate`, and the groups with one label.

    A group below the rate grows its positive cell, a group above it its negative cell (rounded to whole rows,
    never below the cell's count); a group with one label only cannot be balanced.
    """
    targets: dict[str, int] = {}
    unbalanced: list[str] = []
    for g in groups:
        n0, n1 = int(before.get(f"0|{g}", 0)), int(before.get(f"1|{g}", 0))
        if n0 == 0 or n1 == 0:
            unbalanced.append(g)
        elif n1 / (n0 + n1) < rate:
            targets[f"1|{g}"] = max(n1, round(rate * n0 / (1 - rate)))
        else:
            targets[f"0|{g}"] = max(n0, round((1 - rate) * n1 / rate))
    return targets, unbalanced


def _with_copies(cell: np.ndarray, targets: dict[str, int], seed: int) -> np.ndarray:
    """Every row's position, then the copies RandomOverSampler (seeded, the cell as its class) draws."""
    from imblearn.over_sampling import RandomOverSampler  # here: ~0.6 s to import, only the resample remedy needs it

    indices = np.arange(len(cell))
    if targets:
        sampler = RandomOverSampler(sampling_strategy=targets, random_state=seed)
        sampler.fit_resample(indices.reshape(-1, 1), cell)
        indices = sampler.sample_indices_
    return indices


def _cell_counts(groups: list[str], before: pd.Series, after: pd.Series) -> list[dict[str, Any]]:
    """Per group × label the row counts before and after oversampling (for the report; no rows)."""
    return [
        {"group": g, "label": lab, "before": int(before.get(f"{lab}|{g}", 0)), "after": int(after.get(f"{lab}|{g}", 0))}
        for g in groups
        for lab in (0, 1)
    ]


# ---------------------------------------------------------------------------------------------------------------
# In-processing: a fairness term for the torch loss (fairret)
# ---------------------------------------------------------------------------------------------------------------


def group_onehot(keys: pd.Series, groups: list[str]) -> torch.Tensor:
    """The per-row group tensor the penalty reads: one-hot (rows × groups), all zeros for an excluded row.

    Args:
        keys: Group per row, None for rows excluded from constraints (`constrained`).
        groups: The constrained groups, in a fixed order (e.g. sorted names seen in training).

    Raises:
        DataError: A row's group is neither excluded nor one of `groups`.

    """
    index = {g: i for i, g in enumerate(groups)}
    active = keys.notna().to_numpy()
    unknown = ~keys[active].astype(str).isin(list(index)).to_numpy()
    if unknown.any():
        raise DataError(f"{int(unknown.sum())} row(s) belong to a group outside the {len(groups)} constrained groups")
    codes = np.full(len(keys), -1)
    codes[active] = [index[str(k)] for k in keys[active]]
    out = torch.zeros(len(keys), len(groups), dtype=torch.float32)
    rows = np.flatnonzero(active)
    out[torch.as_tensor(rows), torch.as_tensor(codes[active])] = 1.0
    return out


def fairness_penalty(
    constraint: PenaltyConstraint, weight: float
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """A differentiable fairness term to add to the BCE loss: λ · fairret's NormLoss on the named statistic.

    fairret (Buyl et al. 2024) measures each group's statistic on the batch's sigmoid scores and penalises the
    L1 norm of its relative deviation from the overall statistic, sum over groups of |stat_g / stat_all − 1|:
    zero exactly when every group's rate equals the overall rate.

    - demographic_parity: the positive rate (mean score).
    - equalized_odds: the true-positive rate plus the false-positive rate term. A batch without positives (or
      without negatives) has no overall TPR (or FPR) to compare with, so that part contributes 0 for the batch
      (fairret raises on a zero target otherwise).

    Args:
        constraint: "demographic_parity" or "equalized_odds".
        weight: λ ≥ 0, the weight of the term beside the BCE (0 gives a zero term).

    Returns:
        penalty(logits (B,), groups (B, S) one-hot from `group_onehot`, y (B,) 0/1) -> scalar tensor.

    Raises:
        ConfigError: Unknown constraint or negative weight.

    """
    if constraint not in PENALTY_CONSTRAINTS:
        raise ConfigError(f"fairness penalty constraint {constraint!r} is not one of {list(PENALTY_CONSTRAINTS)}")
    if not (weight >= 0 and math.isfinite(weight)):
        raise ConfigError(f"fairness penalty weight must be a finite number >= 0, got {weight}")
    rate, tpr, fpr = NormLoss(PositiveRate()), NormLoss(TruePositiveRate()), NormLoss(FalsePositiveRate())

    def penalty(logits: torch.Tensor, groups: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pred = logits.reshape(-1, 1)
        sens = groups.to(pred.dtype)
        if constraint == "demographic_parity":
            return weight * rate(pred, sens)
        label = y.reshape(-1, 1).to(pred.dtype)
        term = pred.sum() * 0.0  # keeps the graph and dtype when a part is skipped
        if (label > 0).any():
            term = term + tpr(pred, sens, label)
        if (label < 1).any():
            term = term + fpr(pred, sens, label)
        return weight * term

    return penalty


# ---------------------------------------------------------------------------------------------------------------
# The stages' use of the methods, from the `mitigation:` params
# ---------------------------------------------------------------------------------------------------------------


def mitigate_data(train: pd.DataFrame, settings: MitigationParams, min_rows: int) -> tuple[pd.DataFrame, dict]:
    """The preprocess stage's part: oversample, then reweigh (weights in WEIGHT_COLUMN) the processed train rows.

    Returns the frame to train on and a report (cells, counts and weights; groups named, no rows).
    """
    methods = ["reweigh"] * settings.reweigh + ["resample"] * settings.resample  # this stage's methods only
    report: dict[str, Any] = {"target": list(settings.target), "methods": methods, "min_rows": min_rows}
    if not (settings.reweigh or settings.resample):
        return train, report
    keys, too_small = constrained(group_keys(train, settings.target), min_rows)
    report["too_small_to_constrain"] = too_small
    labels = train[LABEL_COLUMN].to_numpy()
    if settings.resample:
        train, report["resample"] = oversample(train, keys.reset_index(drop=True), labels, settings.seed)
        keys, _ = constrained(group_keys(train, settings.target), min_rows)
        labels = train[LABEL_COLUMN].to_numpy()
    if settings.reweigh:
        weights, report["reweigh"] = reweighing(keys.reset_index(drop=True), labels)
        train = train.assign(**{WEIGHT_COLUMN: weights})
    return train, report


def training_terms(
    train: pd.DataFrame, settings: MitigationParams, min_rows: int
) -> tuple[torch.Tensor | None, torch.Tensor | None, Callable | None, dict[str, Any]]:
    """The train stage's part: sample weights (if the preprocess stage wrote them) and the fairness term."""
    weights = torch.from_numpy(train[WEIGHT_COLUMN].to_numpy(dtype=np.float32)) if WEIGHT_COLUMN in train else None
    info: dict[str, Any] = {
        "sample_weights": weights is not None,
        "loss": settings.loss,
        "loss_weight": settings.loss_weight,
    }
    if settings.loss == "none" or settings.loss_weight == 0:
        return weights, None, None, info
    keys, too_small = constrained(group_keys(train, settings.target), min_rows)
    groups = sorted(str(g) for g in keys.dropna().unique())
    info.update(groups=groups, too_small_to_constrain=too_small)
    onehot = group_onehot(keys.reset_index(drop=True), groups)
    return weights, onehot, fairness_penalty(settings.loss, settings.loss_weight), info


def unmitigated_train(train: pd.DataFrame, report: dict[str, Any]) -> pd.DataFrame:
    """The processed training rows before the project's own mitigation by data (so a candidate applies its own).

    The preprocess stage appends oversampled copies after the original rows and adds a weight column
    (humane.fairness.mitigation.mitigate_data); `report` is its reports/mitigation_data.json.

    Raises:
        DataError: The report and the frame do not describe each other.

    """
    out = train.drop(columns=[WEIGHT_COLUMN], errors="ignore")
    if "reweigh" in report and WEIGHT_COLUMN not in train:
        raise DataError(
            f"the mitigation report records reweighing but the processed train frame has no "
            f"{WEIGHT_COLUMN} column; re-run `dvc repro preprocess`"
        )
    if "resample" in report:
        before, after = int(report["resample"]["rows_before"]), int(report["resample"]["rows_after"])
        if after != len(train):
            raise DataError(
                f"the mitigation report records {after} oversampled training rows but the processed "
                f"train frame has {len(train)}; re-run `dvc repro preprocess`"
            )
        out = out.iloc[:before].reset_index(drop=True)
    return out
