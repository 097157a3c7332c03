"""Leakage checks that need no Great Expectations.

Rows shared by the training pool and the test split, and features that predict the label almost perfectly on
their own (the usual sign of a leaked outcome column). Both return aggregates only (counts, ROC AUCs per column
name), never a value of a row.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import TargetEncoder

# Folds of the out-of-fold target encoding of categorical features (fewer when the minority label is rarer).
FOLDS = 5
# The encoding's fold shuffle: fixed, so that the same data gives the same report (the check is a diagnostic;
# it does not depend on the run's seeds).
FOLD_SEED = 0


def _comparable(train: pd.Series, test: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Both columns in one dtype, so that equal values hash equally: float when both are numeric, else text."""
    if pd.api.types.is_numeric_dtype(train) and pd.api.types.is_numeric_dtype(test):
        return train.astype("float64"), test.astype("float64")
    return train.astype("string"), test.astype("string")


def shared_rows(train: pd.DataFrame, test: pd.DataFrame, columns: Sequence[Hashable]) -> int:
    """How many test rows equal some training row on `columns` (nulls equal nulls).

    Args:
        train: The training pool.
        test: The test split.
        columns: The columns compared (e.g. the model's input columns and the target); each must be in both frames.

    Returns:
        The number of test rows (duplicates within the test split each count) found in the training pool.

    """
    if not len(columns) or train.empty or test.empty:
        return 0
    pairs = [_comparable(train[c], test[c]) for c in columns]
    left = pd.DataFrame({i: a.reset_index(drop=True) for i, (a, _) in enumerate(pairs)})
    right = pd.DataFrame({i: b.reset_index(drop=True) for i, (_, b) in enumerate(pairs)})
    seen = pd.util.hash_pandas_object(left, index=False)
    return int(pd.util.hash_pandas_object(right, index=False).isin(seen).sum())


def _numeric_score(values: pd.Series) -> np.ndarray:
    # ROC AUC depends on the order of the scores only: ranks keep it (and order ±inf), nulls take the median rank.
    ranks = pd.to_numeric(values, errors="coerce").rank()
    return ranks.fillna(ranks.median() if ranks.notna().any() else 0.0).to_numpy(dtype="float64")


def _categorical_score(values: pd.Series, y: np.ndarray, folds: int) -> np.ndarray:
    """Out-of-fold target encoding of a categorical column.

    Each row is scored by its category's label rate in the other folds, so a category seen once (an id) gets
    the prior and cannot look predictive the way it does in-sample.
    """
    # One type per column (text); nulls are a category of their own.
    text = values.map(str, na_action="ignore").astype(object).where(values.notna(), np.nan)
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=FOLD_SEED)
    encoder = TargetEncoder(target_type="binary", cv=splits)
    return encoder.fit_transform(text.to_frame(), y)[:, 0]


def feature_aucs(
    frame: pd.DataFrame, target: str, positive_label: Any, numeric: Sequence[str], categorical: Sequence[str]
) -> dict[str, float]:
    """Each feature's ROC AUC as the only predictor of the label.

    Numeric features score by their value (nulls imputed with the median), in the better direction
    (max(auc, 1 - auc)); categorical ones by an out-of-fold target encoding (scikit-learn's `TargetEncoder`
    with its internal cross fitting), which is oriented towards the positive label by construction (below
    chance counts as chance).

    Args:
        frame: The training pool.
        target: The label column.
        positive_label: The positive label, in the column's own type.
        numeric: Numeric feature columns (those absent from `frame` are skipped).
        categorical: Categorical feature columns (those absent from `frame` are skipped).

    Returns:
        {column: AUC} in the order given; empty when the label is missing or has fewer than two classes among
        the labelled rows (an AUC is then undefined).

    """
    if target not in frame:
        return {}
    labelled = frame[frame[target].notna()]
    y = (labelled[target] == positive_label).to_numpy(dtype="int64")
    minority = int(min(y.sum(), len(y) - y.sum()))
    if minority < 2:
        return {}
    folds = min(FOLDS, minority)
    out: dict[str, float] = {}
    for column in [*numeric, *categorical]:
        if column not in labelled or column == target or column in out:
            continue
        values = labelled[column]
        if column in numeric:  # a value may rank the label either way
            auc = float(roc_auc_score(y, _numeric_score(values)))
            out[column] = max(auc, 1.0 - auc)
        else:
            # The encoding is already oriented towards the positive label; an AUC below 0.5 is the known bias of
            # out-of-fold means on small categories (a row's own label is missing from its fold), not a signal:
            # reported as chance.
            out[column] = max(float(roc_auc_score(y, _categorical_score(values, y, folds))), 0.5)
    return out
