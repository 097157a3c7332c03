"""Error analysis: the cohorts where the model errs most, found by a shallow tree on its test errors.

The approach of the Responsible AI Toolbox's error analysis, with scikit-learn: a decision tree learns where the
errors (decision != label) concentrate from the raw input columns the caller allows (never a protected one), and
each leaf is a cohort described by the conditions on its path ("relationship = Husband and education-num > 12.5").
The tree is grown on one half of the rows and every cohort is measured on the other half, so a cohort's error
rate and its Wilson 95% interval are not flattered by the search that found it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

from humane.core.errors import DataError
from humane.modeling.params import ExplainParams

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval
MISSING_VALUE = "(missing)"  # how a null categorical value reads in a rule


@dataclass(frozen=True)
class Split:
    """What one encoded column means: a raw column's value (one-hot, 0/1) or the raw numeric column itself."""

    column: str
    value: str | None  # None: numeric


@dataclass(frozen=True)
class Condition:
    """One condition of a cohort's rule, in the user's column names."""

    column: str
    op: str  # "=", "≠", "≤", ">"
    value: str | float

    def text(self) -> str:
        """The condition as a person reads it."""
        value = self.value if isinstance(self.value, str) else np.format_float_positional(self.value, trim="-")
        return f"{self.column} {self.op} {value}"


def encode(frame: pd.DataFrame) -> tuple[np.ndarray, list[Split]]:
    """The tree's inputs: numeric columns as they are (nulls at the column's median), categorical ones one-hot.

    A numeric column with no value at all carries nothing and is left out.
    """
    parts: list[np.ndarray] = []
    splits: list[Split] = []
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
            if np.isnan(numbers).all():
                continue
            parts.append(np.where(np.isnan(numbers), np.nanmedian(numbers), numbers)[:, None])
            splits.append(Split(str(column), None))
            continue
        text = values.astype("object").where(values.notna(), MISSING_VALUE).astype(str)
        levels = sorted(text.unique())
        parts.append((text.to_numpy()[:, None] == np.asarray(levels)[None, :]).astype(np.float64))
        splits.extend(Split(str(column), level) for level in levels)
    # No column to split on: one constant column, which the tree never splits (one cohort, all rows).
    x = np.hstack(parts) if parts else np.zeros((len(frame), 1))
    return x, splits


def leaf_paths(tree: DecisionTreeClassifier, splits: list[Split]) -> dict[int, list[Condition]]:
    """Each leaf's conditions, root first (left: value ≤ threshold; a one-hot's left branch is "≠")."""
    inner = tree.tree_
    paths: dict[int, list[Condition]] = {}
    stack: list[tuple[int, list[Condition]]] = [(0, [])]
    while stack:
        node, path = stack.pop()
        left, right = int(inner.children_left[node]), int(inner.children_right[node])
        if left == right:  # a leaf
            paths[node] = path
            continue
        # The tree compares float32 values: 7 significant digits give back the threshold meant (0.3, not 0.30000001).
        split, threshold = splits[int(inner.feature[node])], float(f"{inner.threshold[node]:.7g}")
        if split.value is None:
            sides = (Condition(split.column, "≤", threshold), Condition(split.column, ">", threshold))
        else:
            sides = (Condition(split.column, "≠", split.value), Condition(split.column, "=", split.value))
        stack.append((left, [*path, sides[0]]))
        stack.append((right, [*path, sides[1]]))
    return paths


def simplify(path: list[Condition]) -> list[Condition]:
    """The path without redundant conditions, in the order they first appear.

    Per numeric column and side only the tightest bound stays; a "≠" on a column whose value the path fixes with
    "=" goes.
    """
    fixed = {c.column for c in path if c.op == "="}
    tightest: dict[tuple[str, str], Condition] = {}
    for c in path:
        if c.op in ("≤", ">"):
            best = tightest.get((c.column, c.op))
            tighter = best is None or (c.value < best.value if c.op == "≤" else c.value > best.value)
            tightest[(c.column, c.op)] = c if tighter else best
    kept: list[Condition] = []
    for c in path:
        if c.op == "≠" and c.column in fixed:
            continue
        if c.op in ("≤", ">"):
            c = tightest[(c.column, c.op)]
        if c not in kept:
            kept.append(c)
    return kept


def wilson(errors: int, rows: int) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion (sound at 0 and at small counts, unlike the normal one)."""
    p, z2 = errors / rows, Z95**2
    centre = (p + z2 / (2 * rows)) / (1 + z2 / rows)
    half = Z95 * math.sqrt(p * (1 - p) / rows + z2 / (4 * rows**2)) / (1 + z2 / rows)
    return max(0.0, centre - half), min(1.0, centre + half)


def halves(errors: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the two halves (grow, measure), stratified on the error when both outcomes occur twice."""
    rows = np.arange(len(errors))
    stratify = errors if np.bincount(errors.astype(int), minlength=2).min() >= 2 else None
    grow, measure = train_test_split(rows, test_size=0.5, random_state=seed, stratify=stratify)
    return np.sort(grow), np.sort(measure)


def overlap(members: np.ndarray, groups: dict[str, np.ndarray], judged: dict[str, list[str]]) -> dict[str, Any]:
    """Per sensitive feature and judged group: its share of the cohort's rows and of all measured rows.

    Shares are taken among the rows of judged groups only: a group too small to judge gets no figure, and its rows
    count in no denominator, so where its few rows fall cannot be read back from the others' shares.
    """
    shares = {}
    for feature, labels in groups.items():
        counted = np.isin(labels, judged[feature])
        inside = members & counted
        shares[feature] = {
            g: {
                "share": float(np.mean(labels[inside] == g)) if inside.any() else math.nan,
                "overall_share": float(np.mean(labels[counted] == g)) if counted.any() else math.nan,
            }
            for g in judged[feature]
        }
    return shares


def cohort(conditions: list[Condition], wrong: np.ndarray, members: np.ndarray, context: dict[str, Any]) -> dict:
    """One cohort measured on the measured half: rule and size; when judged, errors, rate, interval, lift, overlap.

    A cohort with fewer rows than the audit's minimum is not judged: its rule and size only. A judged cohort is
    distinguishable when its interval lies above the measured rows' error rate.
    """
    rows, errors = int(members.sum()), int(wrong[members].sum())
    rule = {
        "rule": " and ".join(c.text() for c in conditions) or "all rows",
        "conditions": [{"column": c.column, "op": c.op, "value": c.value} for c in conditions],
        "rows": rows,
    }
    if rows < context["min_rows"]:
        return {**rule, "judged": False}
    lo, hi = wilson(errors, rows)
    rate = context["rate"]
    return {
        **rule,
        "judged": True,
        "errors": errors,
        "error_rate": errors / rows,
        "lo": lo,
        "hi": hi,
        "lift": errors / rows / rate if rate > 0 else math.nan,
        "distinguishable": lo > rate,
        "groups": overlap(members, context["labels"], context["judged"]),
    }


def check_inputs(frame: pd.DataFrame, errors: np.ndarray, groups: dict[str, pd.Series]) -> None:
    """Raise a DataError unless frame, errors and every group series have one entry per row."""
    if len(frame) < 2:
        raise DataError(f"error analysis needs at least 2 test rows, got {len(frame)}")
    if len(errors) != len(frame):
        raise DataError(f"error analysis: {len(errors)} error flags for {len(frame)} rows; one per row")
    for feature, labels in groups.items():
        if len(labels) != len(frame) or labels.isna().any():
            raise DataError(
                f"error analysis: sensitive feature {feature!r} needs one group label per row ({len(frame)}) "
                f"and no nulls (label them with group_labels)"
            )


def measure_context(wrong: np.ndarray, measure: np.ndarray, groups: dict[str, pd.Series], min_rows: int) -> dict:
    """What each cohort is measured against: the measured half's error rate and group labels, the judged groups."""
    return {
        "rate": float(wrong[measure].mean()),
        "min_rows": min_rows,
        "labels": {f: g.astype(str).to_numpy()[measure] for f, g in groups.items()},
        "judged": {
            f: sorted(n for n, k in g.astype(str).value_counts().items() if k >= min_rows) for f, g in groups.items()
        },
    }


def error_cohorts(
    frame: pd.DataFrame,
    errors: np.ndarray,
    groups: dict[str, pd.Series],
    settings: ExplainParams,
    seed: int,
    *,
    min_rows: int,
) -> dict[str, Any]:
    """The cohorts where the model errs most: leaves of a shallow tree grown on half the rows, measured on the rest.

    Args:
        frame: The raw test rows, only the columns the tree may split on (model inputs minus protected columns):
            a rule quotes values of these columns and of no other.
        errors: Per row, whether the model's decision differs from the label.
        groups: Per sensitive feature, each row's group label as a report may show it (the audit's labels).
        settings: The explain section (error_tree_depth, error_min_leaf_share).
        seed: Seeds the halving and the tree.
        min_rows: The audit's smallest group judged: a cohort or a group with fewer rows gets no figure.

    Returns:
        {"rows", "error_rate" (all rows), "grown_on", "measured_on", "measured_error_rate", "cohorts": [{"rule",
        "conditions", "rows", "errors", "error_rate", "lo", "hi" (Wilson 95%), "lift" (vs the measured half's
        error rate), "distinguishable", "groups": {feature: {group: {"share", "overall_share"}}}}, ...]}: the
        judged cohorts first, by their interval's lower bound (highest first), then those too small to judge
        (rule, rows, "judged": false), largest first; a cohort with no measured row is left out.

    Raises:
        DataError: Lengths that do not match, null group labels, or fewer than 2 rows.

    """
    check_inputs(frame, errors, groups)
    wrong = np.asarray(errors, dtype=bool)
    x, splits = encode(frame.reset_index(drop=True))
    grow, measure = halves(wrong, seed)
    leaf = math.ceil(settings.error_min_leaf_share * len(grow))
    tree = DecisionTreeClassifier(max_depth=settings.error_tree_depth, min_samples_leaf=leaf, random_state=seed)
    tree.fit(x[grow], wrong[grow])
    leaves = tree.apply(x[measure])
    context = measure_context(wrong, measure, groups, min_rows)
    rate = context["rate"]
    cohorts = [
        cohort(simplify(path), wrong[measure], leaves == leaf, context)
        for leaf, path in leaf_paths(tree, splits).items()
        if (leaves == leaf).any()
    ]
    cohorts.sort(key=lambda c: (not c["judged"], -c.get("lo", 0.0), -c["rows"], c["rule"]))
    return {
        "rows": len(frame),
        "error_rate": float(wrong.mean()),
        "grown_on": len(grow),
        "measured_on": len(measure),
        "measured_error_rate": rate,
        "cohorts": cohorts,
    }
