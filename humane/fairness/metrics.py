"""Group metrics with bootstrap CIs and disparity gaps (checked against Fairlearn), and the data-level audit."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from humane.core.errors import DataError
from humane.core.metric_names import fairness_feature_prefix, fairness_metric, parse_fairness
from humane.core.paths import LABEL_COLUMN
from humane.core.protected import MISSING_GROUP, WITHHELD_GROUP, sensitive_group_labels, sensitive_name
from humane.data.params import DataParams
from humane.fairness.params import AuditParams
from humane.modeling.decision import plain_decisions

GROUP_METRICS = ("selection_rate", "accuracy", "tpr", "fpr", "precision", "calibration_error")
GAP_METRICS = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equal_opportunity_difference",
)


def shown_names(sizes: Mapping[str, int], min_rows: int) -> dict[str, str]:
    """Each group's name as a report shows it: its own name at or above `min_rows` rows, else a number.

    The groups below the minimum are numbered (WITHHELD_GROUP) in order of decreasing size, ties in name order so
    the numbers are stable; only their row counts, which are aggregates, are reported beside them. The "missing"
    group keeps its name, as in validation's report: it is the label of null values, no one's value.

    Args:
        sizes: Rows per group label (`group_labels`).
        min_rows: The smallest group judged (audit.min_group_size, or validate.min_group_rows for the data audit).

    Returns:
        The shown name per group label.

    """
    small = sorted((-n, g) for g, n in sizes.items() if n < min_rows and g != MISSING_GROUP)
    numbered = {g: WITHHELD_GROUP.format(i) for i, (_, g) in enumerate(small, 1)}
    return {g: numbered.get(g, g) for g in sizes}


def group_table(y: np.ndarray, y_pred: np.ndarray, p: np.ndarray, groups: pd.Series) -> pd.DataFrame:
    """Per-group count and metrics: `weighted_metrics` with unit weights (the one definition of each metric).

    Fairlearn's MetricFrame computes the same table; tests/unit/test_audit.py holds the two side by side.
    Groups must be labels (group_labels), never null.
    """
    if groups.isna().any():
        raise DataError("group values contain nulls; label them with group_labels first")
    names = sorted(groups.astype(str).unique())
    codes = pd.Categorical(groups.astype(str), categories=names).codes
    table = pd.DataFrame({"group": names, **weighted_metrics(y, y_pred, p, codes, len(names), np.ones(len(y)))})
    table["count"] = table["count"].round().astype(int)
    return table


def gaps_from(table: pd.DataFrame) -> dict[str, float]:
    """Disparity gaps over the rows of a group table (the same definitions as Fairlearn's functions)."""
    if len(table) < 2:
        return {name: float("nan") for name in GAP_METRICS}
    sel, tpr, fpr = table["selection_rate"], table["tpr"], table["fpr"]
    return {
        "demographic_parity_difference": float(sel.max() - sel.min()),
        "demographic_parity_ratio": float(sel.min() / sel.max()) if sel.max() > 0 else float("nan"),
        "equalized_odds_difference": float(max(tpr.max() - tpr.min(), fpr.max() - fpr.min())),
        "equal_opportunity_difference": float(tpr.max() - tpr.min()),
    }


def weighted_metrics(
    y: np.ndarray, y_pred: np.ndarray, p: np.ndarray, codes: np.ndarray, n_groups: int, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """Group metrics under row weights (a bootstrap resample is a weight vector of draw counts)."""

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(codes, weights=weights * values, minlength=n_groups)

    with np.errstate(invalid="ignore", divide="ignore"):
        n = total(np.ones_like(p))
        positives, predicted = total(y), total(y_pred)
        hits = total(y * y_pred)
        return {
            "count": n,
            "selection_rate": predicted / n,
            "accuracy": total((y == y_pred).astype(float)) / n,
            "tpr": hits / positives,
            "fpr": (predicted - hits) / (n - positives),
            "precision": np.where(predicted > 0, hits / predicted, 0.0),
            "calibration_error": np.abs(total(p) / n - positives / n),
        }


@dataclass(frozen=True)
class FeatureAudit:
    """One sensitive feature (or intersection): groups with CIs, and gaps over the groups large enough to judge.

    A group too small to judge is shown numbered (`shown_names`) in `groups` and `too_small`, with its rates withheld.
    """

    feature: str
    groups: list[dict[str, Any]]
    gaps: dict[str, dict[str, float]]
    too_small: list[str]


def audit_feature(
    feature: str, y: np.ndarray, y_pred: np.ndarray, p: np.ndarray, groups: pd.Series, params: AuditParams
) -> FeatureAudit:
    """Point estimates on the rows, 95% CIs by a seeded bootstrap of the rows (both by weighted_metrics)."""
    table = group_table(y, y_pred, p, groups)
    names = table["group"].astype(str).tolist()
    codes = pd.Categorical(groups.astype(str), categories=names).codes
    judged = table["count"] >= params.min_group_size
    rng = np.random.default_rng(params.seed)
    draws: dict[str, list[np.ndarray]] = {m: [] for m in GROUP_METRICS}
    gap_draws: dict[str, list[float]] = {g: [] for g in GAP_METRICS}
    for _ in range(params.bootstrap):
        weights = np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y)).astype(float)
        sample = weighted_metrics(y, y_pred, p, codes, len(names), weights)
        for metric in GROUP_METRICS:
            draws[metric].append(sample[metric])
        resampled = pd.DataFrame({m: sample[m] for m in ("selection_rate", "tpr", "fpr")})[judged.to_numpy()]
        for gap, value in gaps_from(resampled).items():
            gap_draws[gap].append(value)

    def interval(values: np.ndarray) -> tuple[float, float]:
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            return float("nan"), float("nan")
        lo, hi = np.percentile(finite, [2.5, 97.5])
        return float(lo), float(hi)

    counts = table["count"].tolist()
    shown = shown_names(dict(zip(names, counts, strict=True)), params.min_group_size)
    # The judged groups in name order, then the numbered ones in their numbers' order (decreasing size).
    order = sorted(range(len(names)), key=lambda i: (not judged[i], 0 if judged[i] else -counts[i], names[i]))
    rows = []
    for i in order:
        name = names[i]
        metrics = {}
        for metric in GROUP_METRICS:
            if not judged[i]:  # too small to judge: its rates would describe a handful of people; withheld
                metrics[metric] = {"value": None, "lo": None, "hi": None}
                continue
            lo, hi = interval(np.array([d[i] for d in draws[metric]]))
            metrics[metric] = {"value": float(table.loc[i, metric]), "lo": lo, "hi": hi}
        rows.append(
            {
                "group": shown[name],
                "count": int(table.loc[i, "count"]),
                "too_small": not bool(judged[i]),
                "metrics": metrics,
            }
        )
    point = gaps_from(table[judged])
    gaps = {
        g: {"value": point[g], **dict(zip(("lo", "hi"), interval(np.array(gap_draws[g])), strict=True))}
        for g in GAP_METRICS
    }
    return FeatureAudit(feature, rows, gaps, [row["group"] for row in rows if row["too_small"]])


def overall_with_ci(y: np.ndarray, y_pred: np.ndarray, p: np.ndarray, params: AuditParams) -> dict[str, dict]:
    """Whole-test-set rates with the same seeded bootstrap as the groups: the audit of a single group."""
    everyone = pd.Series(["all"] * len(y))
    return audit_feature("overall", y, y_pred, p, everyone, params).groups[0]["metrics"]


def audit_predictions(
    frame: pd.DataFrame,
    p: np.ndarray,
    features: list[str],
    threshold: float,
    params: AuditParams,
    decisions: np.ndarray | None = None,
) -> list[FeatureAudit]:
    """Audit every sensitive feature and their intersection on labelled, scored rows.

    `decisions` (0/1) replaces `p >= threshold` when the model decides by per-group thresholds.
    """
    y = frame[LABEL_COLUMN].to_numpy().astype(float)
    y_pred = plain_decisions(p, threshold).astype(float) if decisions is None else np.asarray(decisions, dtype=float)
    return [audit_feature(f, y, y_pred, p, g, params) for f, g in sensitive_group_labels(frame, features).items()]


def data_audit(frame: pd.DataFrame, data: DataParams, min_group_rows: int) -> dict[str, list[dict[str, Any]]]:
    """Each group's share of the rows and its label base rate, before any model is trained.

    A group with fewer than `min_group_rows` rows is "too small to judge": its base rate would describe a
    handful of people, so it is withheld (None), the group is flagged and numbered, not named (`shown_names`).
    """
    positive = (frame[data.target] == data.positive_label).astype(float)
    out = {}
    prefixed = frame.rename(columns={c: sensitive_name(c) for c in data.sensitive_features})
    for feature, groups in sensitive_group_labels(prefixed, data.sensitive_features).items():
        stats = pd.DataFrame({"group": groups, "y": positive}).groupby("group")["y"].agg(["size", "mean"])
        stats = stats.sort_values("size", ascending=False, kind="stable")
        shown = shown_names(stats["size"].to_dict(), min_group_rows)
        out[feature] = [
            {
                "group": shown[g],
                "rows": int(r["size"]),
                "share": float(r["size"] / len(frame)),
                "base_rate": float(r["mean"]) if r["size"] >= min_group_rows else None,
                "too_small": bool(r["size"] < min_group_rows),
            }
            for g, r in stats.iterrows()
        ]
    return out


def unmeasurable(metric: str, figures: Mapping[str, float | None]) -> str:
    """Why a fairness figure (`fairness.<feature>.<gap>`) has no value, read from its feature's other gaps.

    `gaps_from` leaves a gap NaN for exactly these reasons: fewer than two groups large enough to judge (then every
    gap of the feature is NaN, the demographic parity difference included), no positive decision in any of them
    (the ratio is 0/0), or no positive label in any of them (the true-positive rates are 0/0).

    Args:
        metric: The figure's name, e.g. "fairness.sex.demographic_parity_difference".
        figures: The flat figures it was looked up in (the gate's candidate, a sweep candidate's split).

    Returns:
        "unmeasurable (why)", for a rule's reason.

    """
    feature, gap = parse_fairness(metric)
    if not any(name.startswith(fairness_feature_prefix(feature)) for name in figures):
        return f"unmeasurable (the audit measured nothing of {feature!r}: not one of data.sensitive_features?)"
    if gap not in GAP_METRICS:
        return f"unmeasurable (the audit measures no gap {gap!r}; its gaps are {', '.join(GAP_METRICS)})"
    parity = figures.get(fairness_metric(feature, "demographic_parity_difference"))
    if parity is None or math.isnan(parity):
        return (
            f"unmeasurable (fewer than two groups of {feature!r} with at least audit.min_group_size rows, so no "
            "gap between groups exists)"
        )
    if gap == "demographic_parity_ratio":
        return f"unmeasurable (no group of {feature!r} large enough to judge received a positive decision: 0/0)"
    return f"unmeasurable (no group of {feature!r} large enough to judge holds a positive label: its rates are 0/0)"


def headline(audits: list[FeatureAudit]) -> dict[str, dict[str, float]]:
    """The gaps per feature, for `dvc metrics show` and the promotion gate."""
    return {a.feature: {g: v["value"] for g, v in a.gaps.items()} for a in audits}
