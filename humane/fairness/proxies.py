"""Proxy detection: how well the model's inputs stand in for a sensitive feature the model never receives.

For each sensitive feature, a logistic regression predicts the row's group from the model's inputs; its
cross-validated ROC AUC (out-of-fold probabilities of a seeded stratified k-fold split; binary: the AUC, more
groups: the one-vs-rest AUCs weighted by group size) says how much of the group the inputs carry. 0.5 is
nothing; 1.0 is the group itself. The same classifier on one raw column alone (its one-hot block, or its scaled
value) gives that column's own AUC; a column at or above `explain.proxy_threshold` is named a stand-in (proxy).
`proxy_metrics` turns the report into the policy metrics the gate judges: the all-inputs AUC and the share of the
model's attribution that flows through the proxies.

Groups smaller than the audit's minimum are left out (numbered, never named, as in the audit: `shown_names`);
a feature with fewer than two groups left cannot be measured: its AUC is NaN, which the gate fails closed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from humane.core.errors import DataError
from humane.fairness.metrics import shown_names
from humane.modeling.params import ExplainParams

# lbfgs on scaled inputs converges in well under this many iterations; the bound only stops a runaway fit.
MAX_ITER = 2000

Folds = list[tuple[np.ndarray, np.ndarray]]


def cv_auc(x: np.ndarray, y: np.ndarray, folds: Folds) -> float:
    """Cross-validated ROC AUC of a logistic regression predicting the group codes `y` from `x`.

    Args:
        x: Inputs, one row per row of `y` (float).
        y: Group codes 0..k-1, every code present in every training fold.
        folds: (train, test) row indices of a stratified split.

    Returns:
        The AUC of the out-of-fold probabilities: binary for two groups, else one-vs-rest weighted by group size.

    """
    k = int(y.max()) + 1
    proba = np.zeros((len(y), k))
    for train, test in folds:
        model = LogisticRegression(max_iter=MAX_ITER)
        model.fit(x[train], y[train])
        proba[test] = model.predict_proba(x[test])
    if k == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="weighted", labels=list(range(k))))


def judged_groups(labels: pd.Series, min_rows: int) -> tuple[list[str], list[str]]:
    """The groups with at least `min_rows` rows (name order) and the shown names of those left out."""
    sizes = {str(g): int(n) for g, n in labels.value_counts().items()}
    shown = shown_names(sizes, min_rows)
    used = sorted(g for g, n in sizes.items() if n >= min_rows)
    left_out = sorted((shown[g] for g, n in sizes.items() if n < min_rows), key=str)
    return used, left_out


def feature_proxies(
    x: np.ndarray, blocks: dict[str, np.ndarray], labels: pd.Series, settings: ExplainParams, min_rows: int
) -> dict[str, Any]:
    """One sensitive feature's entry of `proxy_report` (see there)."""
    used, left_out = judged_groups(labels, max(min_rows, 2))
    entry: dict[str, Any] = {"groups": used, "left_out": left_out}
    if len(used) < 2:
        why = f"fewer than two groups of at least {min_rows} rows (groups judged: {len(used)})"
        return {"auc": math.nan, "why": why, "folds": 0, **entry, "columns": {}, "proxies": []}
    keep = labels.isin(used).to_numpy()
    x, y = x[keep], pd.Categorical(labels[keep], categories=used).codes.astype(np.int64)
    k = min(settings.proxy_folds, int(np.bincount(y).min()))
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=settings.seed)
    folds = list(splitter.split(np.zeros(len(y)), y))
    own = {column: cv_auc(x[:, idx], y, folds) for column, idx in blocks.items()}
    ranked = dict(sorted(own.items(), key=lambda item: (-item[1], item[0])))
    proxies = [column for column, auc in ranked.items() if auc >= settings.proxy_threshold]
    return {"auc": cv_auc(x, y, folds), "folds": k, **entry, "columns": ranked, "proxies": proxies}


def column_blocks(features: pd.DataFrame, columns: list[str], owner: list[int]) -> dict[str, np.ndarray]:
    """The model-input column indices of each raw column (`owner[i]` indexes `columns`)."""
    if len(owner) != features.shape[1] or any(not 0 <= o < len(columns) for o in owner):
        raise DataError(
            f"proxies: {features.shape[1]} model-input columns but an owner map of {len(owner)} entries "
            f"over {len(columns)} raw columns; they must match (Explainer.owner)"
        )
    owned = np.asarray(owner)
    return {column: np.flatnonzero(owned == j) for j, column in enumerate(columns) if (owned == j).any()}


def proxy_report(
    features: pd.DataFrame,
    columns: list[str],
    owner: list[int],
    groups: dict[str, pd.Series],
    settings: ExplainParams,
    min_rows: int,
) -> dict[str, Any]:
    """How well the model's inputs, all together and each raw column alone, predict each sensitive feature.

    Args:
        features: The processed model-input columns of the test rows (no nulls).
        columns: The raw input columns (Explainer.columns).
        owner: Per model-input column, the index of its raw column in `columns` (Explainer.owner).
        groups: Per sensitive feature, the group label of each row (the audit's labels: never null).
        settings: The explain section (proxy_folds, proxy_threshold, seed).
        min_rows: The smallest group judged (audit.min_group_size); smaller groups are left out.

    Returns:
        Per feature: {"auc", "folds", "groups" (used), "left_out" (shown names), "columns" (raw column: own AUC,
        strongest first), "proxies" (columns whose own AUC reaches the threshold, strongest first)}; a feature
        that cannot be measured has auc NaN and a "why".

    Raises:
        DataError: Nulls in the inputs or the group labels, or lengths that do not match.

    """
    # float32, as the model reads them: half the time of float64 for the same AUC (to 1e-4 on Adult).
    x = features.to_numpy(dtype=np.float32)
    if not np.isfinite(x).all():
        bad = [c for c in features.columns if not np.isfinite(x[:, features.columns.get_loc(c)]).all()]
        raise DataError(f"proxies: model-input columns {bad} hold nulls or infinities; pass the processed inputs")
    blocks = column_blocks(features, columns, owner)
    for feature, labels in groups.items():
        if len(labels) != len(x) or labels.isna().any():
            raise DataError(
                f"proxies: sensitive feature {feature!r} needs one group label per row ({len(x)}) and no nulls "
                f"(label them with group_labels), got {len(labels)} with {int(labels.isna().sum())} null"
            )
    # Many small fits: BLAS and OpenMP threads cost more than they give on these 100-column products (Adult's
    # race, 5 folds, on 2 busy cores: 61 s with threads, 3 s with one).
    with threadpool_limits(limits=1):
        return {
            feature: feature_proxies(x, blocks, pd.Series(labels.astype(str).to_numpy()), settings, min_rows)
            for feature, labels in groups.items()
        }


def proxy_metrics(report: dict[str, Any], shares: dict[str, float]) -> dict[str, dict[str, float]]:
    """The policy metrics of a proxy report: explain.proxy_auc.<feature> and explain.proxy_attribution_share.<f>.

    Args:
        report: `proxy_report`'s output.
        shares: The overall attribution share per raw column (they sum to 1).

    Returns:
        {"proxy_auc": {feature: auc}, "proxy_attribution_share": {feature: sum of its proxies' shares}}; a
        feature that could not be measured has NaN for both (the gate fails NaN closed).

    Raises:
        DataError: A proxy with no attribution share.

    """
    auc = {feature: float(entry["auc"]) for feature, entry in report.items()}
    flowing = {}
    for feature, entry in report.items():
        missing = [c for c in entry["proxies"] if c not in shares]
        if missing:
            raise DataError(f"proxies of {feature!r} {missing} have no attribution share; shares must cover them")
        measured = not math.isnan(auc[feature])
        flowing[feature] = float(sum(shares[c] for c in entry["proxies"])) if measured else math.nan
    return {"proxy_auc": auc, "proxy_attribution_share": flowing}
