"""Bias mitigation: by the data (reweighing, oversampling), by the loss (a fairness term) and by thresholds.

Every method works on a *mitigation target*: one sensitive feature or the intersection of several
(`group_keys`), built with the audit's own group labels (`humane.fairness.metrics`), so a null sensitive value
is the group "missing" here too. Groups with fewer than `min_rows` rows are too small to constrain
(`constrained`): their key becomes None and each method treats those rows the same way:

- reweighing: weight 1 (their label rate is left as observed);
- oversampling: never resampled;
- fairness penalty: no group of their own (an all-zero one-hot row), so they add no penalty term;
- thresholds (`GroupThresholds`): no threshold of their own; their rows are decided by the plain threshold.

The sensitive feature is never a model input: it travels beside the features (a key per row) and is only read
by these functions. The reductions estimator that Fairlearn's ExponentiatedGradient fits lives in
`humane.fairness.reductions`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from fairlearn.postprocessing import ThresholdOptimizer
from fairret.loss import NormLoss
from fairret.statistic import FalsePositiveRate, PositiveRate, TruePositiveRate
from imblearn.over_sampling import RandomOverSampler
from sklearn.base import BaseEstimator, ClassifierMixin

from humane.core.errors import ConfigError, DataError
from humane.core.params import MitigationParams
from humane.core.paths import LABEL_COLUMN, SENSITIVE_PREFIX, WEIGHT_COLUMN
from humane.fairness.metrics import INTERSECTION, sensitive_columns, shown_names

PenaltyConstraint = Literal["demographic_parity", "equalized_odds"]
ThresholdConstraint = Literal["demographic_parity", "equalized_odds", "true_positive_rate_parity"]
THRESHOLD_CONSTRAINTS: tuple[str, ...] = ("demographic_parity", "equalized_odds", "true_positive_rate_parity")
PENALTY_CONSTRAINTS: tuple[str, ...] = ("demographic_parity", "equalized_odds")
# The group that `GroupThresholds` gives the rows of all too-small groups (one shared threshold for them).
THRESHOLD_OBJECTIVE = "accuracy_score"


# ---------------------------------------------------------------------------------------------------------------
# The mitigation target's groups
# ---------------------------------------------------------------------------------------------------------------


def group_keys(frame: pd.DataFrame, target: list[str]) -> pd.Series:
    """Each row's group for the mitigation target: one feature's group label, or the intersection of several.

    Args:
        frame: A processed frame holding `f"{SENSITIVE_PREFIX}{feature}"` for each feature of the target.
        target: Sensitive feature names; two or more mean their intersection (e.g. "Female x Black").

    Returns:
        The group label per row (`humane.fairness.metrics.group_labels`: a null is "missing"), indexed like frame.

    Raises:
        ConfigError: The target names no feature, or a feature twice.
        DataError: A target feature has no sensitive column in the frame.

    """
    if not target:
        raise ConfigError("the mitigation target names no sensitive feature")
    if len(set(target)) != len(target):
        raise ConfigError(f"the mitigation target {target} names a sensitive feature twice")
    absent = [f for f in target if f"{SENSITIVE_PREFIX}{f}" not in frame.columns]
    if absent:
        raise DataError(
            f"the mitigation target needs the sensitive column(s) {[f'{SENSITIVE_PREFIX}{f}' for f in absent]}, "
            "which the processed frame does not hold (mitigate only on features listed in data.sensitive_features)"
        )
    columns = sensitive_columns(frame, target)
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


def _labels(y: np.ndarray | pd.Series, n: int) -> np.ndarray:
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
    labels = _labels(y, len(keys))
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
    labels = _labels(y, len(keys))
    if len(frame) != len(keys):
        raise DataError(f"{len(frame)} rows but {len(keys)} group keys; they must describe the same rows")
    active = keys.notna().to_numpy()
    if not active.any():
        raise DataError("no row belongs to a constrained group; nothing to oversample")
    rate = float(labels[active].mean())
    # The cell of a row: "<label>|<group>"; the excluded rows share one cell that is never resampled.
    group = np.array([str(k) if a else "" for k, a in zip(keys, active, strict=True)], dtype=object)
    cell = np.array([f"{lab}|{g}" if a else "excluded" for lab, g, a in zip(labels, group, active, strict=True)])
    before = pd.Series(cell).value_counts()
    targets: dict[str, int] = {}
    unbalanced: list[str] = []
    for g in sorted(set(group[active])):
        n0, n1 = int(before.get(f"0|{g}", 0)), int(before.get(f"1|{g}", 0))
        if n0 == 0 or n1 == 0:
            unbalanced.append(g)
        elif n1 / (n0 + n1) < rate:
            targets[f"1|{g}"] = max(n1, round(rate * n0 / (1 - rate)))
        else:
            targets[f"0|{g}"] = max(n0, round((1 - rate) * n1 / rate))
    indices = np.arange(len(frame))
    if targets:
        sampler = RandomOverSampler(sampling_strategy=targets, random_state=seed)
        sampler.fit_resample(indices.reshape(-1, 1), cell)
        indices = sampler.sample_indices_
    out = frame.iloc[indices].reset_index(drop=True)
    after = pd.Series(cell[indices]).value_counts()
    report_cells = [
        {"group": g, "label": lab, "before": int(before.get(f"{lab}|{g}", 0)), "after": int(after.get(f"{lab}|{g}", 0))}
        for g in sorted(set(group[active]))
        for lab in (0, 1)
    ]
    report = {
        "method": "oversample",
        "rule": "equal label rate per group (the constrained rows' rate), copies only",
        "target_positive_rate": rate,
        "seed": seed,
        "rows_before": len(frame),
        "rows_after": len(out),
        "excluded_rows": int((~active).sum()),
        "cells": report_cells,
        "unbalanceable": unbalanced,
    }
    return out, report


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
# Post-processing: group thresholds (Fairlearn's ThresholdOptimizer), stored as plain JSON
# ---------------------------------------------------------------------------------------------------------------


class _Scores(ClassifierMixin, BaseEstimator):
    """A prefit 'estimator' whose input is the model's positive probability (one column) and returns it."""

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> _Scores:
        """Nothing to learn."""
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """[1 − p, p] per row."""
        p = np.asarray(X, dtype=np.float64)[:, 0]
        return np.column_stack([1.0 - p, p])


def _number(value: float) -> float | str:
    """A threshold as JSON: ±inf (Fairlearn's always/never thresholds) become the strings "inf" / "-inf"."""
    value = float(value)
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def _operation(op: Any) -> dict[str, Any]:
    return {"operator": str(op.operator), "threshold": _number(op.threshold)}


def _apply(op: dict[str, Any], scores: np.ndarray) -> np.ndarray:
    """Fairlearn's ThresholdOperation: score > t or score < t (strict, as Fairlearn compares)."""
    threshold = float(op["threshold"])
    return scores > threshold if op["operator"] == ">" else scores < threshold


class GroupThresholds:
    """Per-group randomised thresholds on the model's scores (Hardt et al. 2016, via Fairlearn's ThresholdOptimizer).

    Fitted on the validation split only (never the test split). Each group gets a mix of two thresholds
    (p0 · [score op0 t0] + p1 · [score op1 t1], and for equalized odds a share p_ignore of a constant) so that the
    chosen rate is equal across groups while accuracy is maximised. The state is plain JSON (`to_dict`), read back
    by `from_dict` without pickle; prediction uses only that state, so a fitted and a loaded object agree.

    Groups too small to constrain (fewer than `min_rows` validation rows) and groups unseen at fit time have
    no threshold of their own: their rows are decided by the plain threshold (`fallback_threshold`, the
    pipeline's evaluate.threshold), and the excluded groups are named in the state. A null sensitive value is
    the group "missing" (`group_keys`), like any other group.

    Decisions are randomised where a group's mix is: row i of a call is positive when its positive probability
    is ≥ the i-th draw of numpy's RandomState(seed), the same draws as ThresholdOptimizer.predict(random_state=
    seed), so the same rows in the same order always get the same decisions.
    """

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None
        self.optimizer_: ThresholdOptimizer | None = None  # the fitted Fairlearn object (not serialised)

    def fit(
        self,
        scores: np.ndarray,
        y: np.ndarray | pd.Series,
        keys: pd.Series,
        constraint: ThresholdConstraint,
        seed: int,
        *,
        min_rows: int,
        fallback_threshold: float = 0.5,
    ) -> GroupThresholds:
        """Fit the thresholds on validation scores.

        Args:
            scores: The model's positive probability per validation row.
            y: 0/1 validation labels.
            keys: Group per validation row (`group_keys`; no None).
            constraint: "demographic_parity", "equalized_odds" or "true_positive_rate_parity" (equal opportunity).
            seed: Seed of the randomised decisions at prediction time (the fit itself is deterministic).
            min_rows: Groups with fewer validation rows are left out of the constraints (see `constrained`): their
                rows, and rows of groups unseen here, are decided by `fallback_threshold` (evaluate.threshold).
            fallback_threshold: The plain threshold for rows of excluded or unseen groups.

        Returns:
            self.

        """
        if constraint not in THRESHOLD_CONSTRAINTS:
            raise ConfigError(f"threshold constraint {constraint!r} is not one of {list(THRESHOLD_CONSTRAINTS)}")
        labels = _labels(y, len(keys))
        p = self._scores(scores, len(keys))
        kept, too_small = constrained(keys, min_rows)
        rows = kept.notna().to_numpy()
        groups = kept[rows].astype(str)
        one_label = sorted(g for g in set(groups) if len(set(labels[rows][groups.to_numpy() == g])) < 2)
        if one_label:
            raise DataError(
                f"per-group thresholds: the validation rows of group(s) {one_label} hold one label "
                "only, so no threshold can be fitted for them (more data, or another target)"
            )
        optimizer = ThresholdOptimizer(
            estimator=_Scores(),
            constraints=constraint,
            objective=THRESHOLD_OBJECTIVE,
            prefit=True,
            predict_method="predict_proba",
        )
        optimizer.fit(p[rows].reshape(-1, 1), labels[rows], sensitive_features=groups.to_numpy())
        table = {}
        for group, bunch in optimizer.interpolated_thresholder_.interpolation_dict.items():
            entry = {
                "p0": float(bunch.p0),
                "operation0": _operation(bunch.operation0),
                "p1": float(bunch.p1),
                "operation1": _operation(bunch.operation1),
            }
            if "p_ignore" in bunch:
                entry |= {"p_ignore": float(bunch.p_ignore), "prediction_constant": float(bunch.prediction_constant)}
            table[str(group)] = entry
        self.optimizer_ = optimizer
        self.state = {
            "constraint": constraint,
            "objective": THRESHOLD_OBJECTIVE,
            "seed": int(seed),
            "min_rows": int(min_rows),
            "excluded": too_small,
            "fallback_threshold": float(fallback_threshold),
            "fit_rows": int(rows.sum()),
            "groups": table,
        }
        return self

    @staticmethod
    def _scores(scores: np.ndarray, n: int) -> np.ndarray:
        # float64: Fairlearn's ThresholdOptimizer fails on float32 arrays under pandas 3.
        p = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(p) != n:
            raise DataError(f"{len(p)} scores for {n} group keys; they must describe the same rows")
        if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
            raise DataError("scores must be probabilities in [0, 1]")
        return p

    def _groups(self, keys: pd.Series) -> pd.Series:
        state = self._fitted()
        if keys.isna().any():
            raise DataError(
                "group keys contain nulls; build them with group_keys (a null sensitive value is 'missing')"
            )
        groups = keys.astype(str)
        # Rows of groups left out of the constraints (too small) or unseen at fit time get the plain threshold.
        return groups.where(groups.isin(list(state["groups"])), None)

    def positive_probability(self, scores: np.ndarray, keys: pd.Series) -> np.ndarray:
        """Each row's probability of a positive decision (Fairlearn's InterpolatedThresholder._pmf_predict)."""
        p = self._scores(scores, len(keys))
        groups = self._groups(keys).to_numpy()
        out = (p >= self._fitted()["fallback_threshold"]).astype(float)
        for group, g in self._fitted()["groups"].items():
            rows = groups == group
            q = g["p0"] * _apply(g["operation0"], p[rows]) + g["p1"] * _apply(g["operation1"], p[rows])
            if "p_ignore" in g:
                q = g["p_ignore"] * g["prediction_constant"] + (1 - g["p_ignore"]) * q
            out[rows] = q
        return out

    def predict(
        self, scores: np.ndarray, keys: pd.Series, features: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decisions and their positive probability.

        Args:
            scores: The model's positive probability per row.
            keys: Group per row (`group_keys`).
            features: The rows' model features (float32, as the model reads them). Each row's draw is then a
                keyed hash of its features and the seed: the same row gets the same decision alone, in any batch
                and at any position, so what the audit measures is what serving does. Without features the
                draws are numpy's RandomState(seed) in row order (Fairlearn's own `predict(random_state=seed)`).

        Returns:
            (y_pred 0/1 ints, positive_probability): y_pred is 1 where positive_probability ≥ the row's draw.

        """
        probability = self.positive_probability(scores, keys)
        seed = self._fitted()["seed"]
        in_order = features is None
        draws = np.random.RandomState(seed).rand(len(probability)) if in_order else row_draws(features, seed)
        return (probability >= draws).astype(int), probability

    def to_dict(self) -> dict[str, Any]:
        """The fitted state as plain JSON types (no numpy, no ±inf floats)."""
        return json.loads(json.dumps(self._fitted(), allow_nan=False))

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> GroupThresholds:
        """Rebuild from `to_dict`'s output (e.g. read from a model artifact's JSON file).

        Raises:
            DataError: The dict is not a GroupThresholds state.

        """
        needed = {"constraint", "seed", "excluded", "fallback_threshold", "groups"}
        if not isinstance(state, dict) or not needed <= set(state) or not state["groups"]:
            raise DataError(f"group thresholds state must hold the keys {sorted(needed)} and at least one group")
        for g in state["groups"].values():
            for op in (g["operation0"], g["operation1"]):
                if op["operator"] not in (">", "<"):
                    raise DataError("group thresholds state has an operator other than '>' or '<'")
        out = cls()
        out.state = json.loads(json.dumps(state, allow_nan=False))
        return out

    def _fitted(self) -> dict[str, Any]:
        if self.state is None:
            raise RuntimeError("GroupThresholds is not fitted; call fit or from_dict first")
        return self.state


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


def row_draws(features: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) number per row from a keyed BLAKE2 hash of its float32 features: stable across batches."""
    x = np.ascontiguousarray(np.asarray(features, dtype=np.float32))
    if x.ndim != 2 or x.shape[1] == 0:  # no features: every row would get the same draw
        raise DataError("per-row draws need the rows' model features; none were given")
    key = int(seed).to_bytes(8, "little", signed=True)
    out = np.empty(len(x))
    for i, row in enumerate(x):
        digest = hashlib.blake2b(row.tobytes(), digest_size=8, key=key).digest()
        out[i] = int.from_bytes(digest, "little") / 2.0**64
    return out


def fit_thresholds(
    p_val: np.ndarray, val: pd.DataFrame, settings: MitigationParams, min_rows: int, fallback_threshold: float
) -> dict:
    """The postprocess stage's part: per-group thresholds fitted on the validation split, as plain JSON.

    Returns {"constraint": "none"} when post-processing is off.
    """
    if settings.thresholds == "none":
        return {"constraint": "none"}
    keys = group_keys(val, settings.target)
    fitted = GroupThresholds().fit(
        p_val,
        val[LABEL_COLUMN].to_numpy(),
        keys,
        settings.thresholds,
        settings.seed,
        min_rows=min_rows,
        fallback_threshold=fallback_threshold,
    )
    return {**fitted.to_dict(), "target": list(settings.target)}


def decisions(p: np.ndarray, frame: pd.DataFrame, state: dict[str, Any], features: np.ndarray) -> np.ndarray | None:
    """0/1 decisions by the fitted per-group thresholds, or None when the model decides by `p >= threshold`.

    `frame` holds the rows' sensitive columns (processed frames: SENSITIVE_PREFIX + feature); `features` the
    rows' model features (each row's draw hashes them, so evaluation, audit and serving decide alike).
    """
    if "constraint" not in state:
        raise DataError("the thresholds file names no constraint; it is not one the postprocess stage wrote")
    if state["constraint"] == "none":
        return None
    y_pred, _ = GroupThresholds.from_dict(state).predict(p, group_keys(frame, state["target"]), features)
    return y_pred


def served_decisions(
    p: np.ndarray, frame: pd.DataFrame, state: dict[str, Any], features: np.ndarray, threshold: float
) -> np.ndarray:
    """The decision the served model gives each row (bool): its per-group thresholds, else p >= threshold.

    The one rule that evaluation's audit, the explain stage and serving decide by (`decisions` for the arguments).
    """
    decided = decisions(p, frame, state, features)
    return (p >= threshold) if decided is None else decided.astype(bool)


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
