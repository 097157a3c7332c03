"""The sensitive features beside a model's inputs: their copies' names and the one definition of a group label.

A processed frame (and a monitoring reference, a served request's groups, a site's held-out rows) holds each
sensitive feature beside the model's inputs, never inside them, under `sensitive_name(feature)` (SENSITIVE_PREFIX
+ the feature). Its value is written as text (`group_text`: 1, 1.0 and "1" name the same group), a null stays a
null until `group_labels` names it "missing"; `sensitive_group_labels` gives each feature's labels and their
intersection, as every audit, mitigation, monitoring check and federated count reads them.

Which columns' raw values never leave the load stage (masked, sensitive, kept, dates) is the privacy policy's
rule: `humane.privacy.policy.protected_columns`. This module sits in core so that every layer (modeling's
features, fairness, governance's serving, monitoring) names the groups the same way without importing upward.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from humane.core.errors import DataError
from humane.core.paths import SENSITIVE_PREFIX

MISSING_GROUP = "missing"  # the group of rows whose sensitive value is null
INTERSECTION = " x "  # joins feature names and group values of the intersectional audit, e.g. "sex x race"
# A group too small to judge, or a protected column's group outside its declared values, is numbered in every
# report, never named: a rare value of a sensitive column can single out a person (validation's report, the
# audits' `humane.fairness.metrics.shown_names`).
WITHHELD_GROUP = "<withheld group #{}>"


def sensitive_name(feature: str) -> str:
    """The column that holds a sensitive feature's copy beside the model's inputs."""
    return f"{SENSITIVE_PREFIX}{feature}"


def sensitive_names(features: Iterable[str]) -> list[str]:
    """The copies' columns of the sensitive features, in their order."""
    return [sensitive_name(f) for f in features]


def is_sensitive_copy(column: str) -> bool:
    """Whether a column of a processed frame is a sensitive feature's copy (never a model input)."""
    return column.startswith(SENSITIVE_PREFIX)


def sensitive_copies(frame: pd.DataFrame, features: Iterable[str]) -> pd.DataFrame:
    """The sensitive features of a raw frame as their copies: renamed, values as text (`group_text`), nulls None.

    The copies keep the frame's index and the object dtype (pandas would otherwise infer its string dtype, whose
    null is NaN).
    """
    return pd.DataFrame({sensitive_name(f): group_text(frame[f]) for f in features}, index=frame.index)


def group_text(values: pd.Series) -> pd.Series:
    """A sensitive value as text, the same whatever type carried it; a null stays None (object dtype).

    1, 1.0 and "1" are all "1": a numeric code read as int64 in training and sent as 1.0 by a JSON client (the
    served model declares numbers as double) names the same group, so per-group thresholds and group metrics
    find it. Other values are their `str`.
    """

    def one(value: Any) -> str:
        if isinstance(value, float | np.floating) and np.isfinite(value) and float(value).is_integer():
            return str(int(value))
        return str(value)

    null = values.isna()
    return pd.Series(
        [None if n else one(v) for v, n in zip(values.to_numpy(dtype=object), null, strict=True)],
        index=values.index,
        dtype="object",
    )


def group_labels(values: pd.Series, feature: str) -> pd.Series:
    """The one definition of a sensitive value's group label: its text, and "missing" for a null.

    Rows with a null sensitive value are a group of their own, counted and audited, never dropped. A
    column whose real values include the text "missing" would merge with that group, so it raises a
    DataError naming the feature instead (rename the value upstream).
    """
    null = values.isna()
    text = group_text(values)
    if (text[~null] == MISSING_GROUP).any():
        raise DataError(
            f"sensitive feature {feature!r} has the value {MISSING_GROUP!r}, which is the label of its null "
            f"(missing) group; rename that value in the data so the two stay apart"
        )
    return text.where(~null, MISSING_GROUP)


def sensitive_group_labels(frame: pd.DataFrame, features: list[str]) -> dict[str, pd.Series]:
    """Each sensitive feature's group labels (`group_labels` of its copy) and, with two or more, their intersection.

    Args:
        frame: A frame holding each feature's copy (`sensitive_name`).
        features: The sensitive features, in the order their intersection joins them.

    Returns:
        The labels per feature, then per intersection ("sex x race": "Female x White", ...).

    """
    columns = {f: group_labels(frame[sensitive_name(f)], f) for f in features}
    if len(features) > 1:
        joined = columns[features[0]]
        for f in features[1:]:
            joined = joined + INTERSECTION + columns[f]
        columns[INTERSECTION.join(features)] = joined
    return columns
