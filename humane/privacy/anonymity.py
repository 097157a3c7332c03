"""Re-identification risk of a table: k-anonymity and l-diversity over its quasi-identifiers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from pandas.api.typing import SeriesGroupBy

from humane.core.errors import DataError
from humane.privacy.params import PrivacyParams
from humane.privacy.policy import absent_columns, canonical_text


@dataclass(frozen=True)
class Anonymity:
    """k-anonymity and l-diversity of a table over its quasi-identifiers."""

    k_min: int
    share_below_k: float
    n_classes: int
    l_min: int


def anonymity(frame: pd.DataFrame, quasi_identifiers: list[str], k: int, sensitive: str) -> Anonymity:
    """Smallest equivalence class, share of rows in classes below k, fewest distinct sensitive values in a class.

    Values are compared by their canonical text (`canonical_text`: 30 and 30.0 are one value). Missing values
    (null, or blank text) are a value of their own: rows with a missing quasi-identifier form their own
    "missing" classes and are counted like any other row, never dropped; a missing sensitive value is one more
    distinct value for l-diversity.
    """
    if sensitive not in frame:
        raise DataError(f"column {sensitive!r} (the l-diversity column) is not in the data")
    absent = [c for c in quasi_identifiers if c not in frame]
    if absent:
        raise DataError(f"quasi-identifier columns {absent} are not in the data")
    labels = _canonical(frame[sensitive])
    if not quasi_identifiers:  # nothing links a row to a person: one class holding every row
        return Anonymity(len(frame), 0.0, 1, int(labels.nunique(dropna=False)))
    grouped = _by_class(frame, quasi_identifiers, labels)
    sizes = grouped.size()
    if int(sizes.sum()) != len(frame):  # every row is in exactly one class; anything else would understate risk
        raise DataError(f"k-anonymity: the classes hold {int(sizes.sum())} of {len(frame)} rows")
    diversity = grouped.nunique(dropna=False)
    below = sizes[sizes < k].sum()
    return Anonymity(int(sizes.min()), float(below / len(frame)), len(sizes), int(diversity.min()))


def class_sizes(frame: pd.DataFrame, quasi_identifiers: list[str]) -> pd.Series:
    """Rows per equivalence class (one per distinct combination of quasi-identifier values, missing included)."""
    if not quasi_identifiers:
        return pd.Series([len(frame)])
    return _by_class(frame, quasi_identifiers, pd.Series(0, index=frame.index)).size()


def _by_class(frame: pd.DataFrame, quasi_identifiers: list[str], values: pd.Series) -> SeriesGroupBy:
    keys = [_canonical(frame[c]) for c in quasi_identifiers]
    return values.groupby(keys, dropna=False, sort=False)  # dropna=False: the missing classes are kept


def _canonical(values: pd.Series) -> pd.Series:
    """Each value as its canonical text, missing as null (a group of its own under groupby(dropna=False))."""
    return values.map(canonical_text).astype("object").rename(values.name)


def risk_report(raw: pd.DataFrame, masked: pd.DataFrame, params: PrivacyParams, sensitive: str) -> dict[str, Any]:
    """k-anonymity and l-diversity before and after the policy."""
    qi = [c for c in params.quasi_identifiers if c in raw]
    before = anonymity(raw, qi, params.k, sensitive)
    after = anonymity(masked, [c for c in qi if c in masked], params.k, sensitive)
    return {
        "quasi_identifiers": qi,
        "k": params.k,
        "l_column": sensitive,
        "before": before.__dict__,
        "after": after.__dict__,
        "not_in_data": absent_columns(params, raw),
    }
