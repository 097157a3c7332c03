"""Re-identification risk of a table: k-anonymity and l-diversity over its quasi-identifiers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from humane.core.errors import DataError
from humane.core.params import PrivacyParams
from humane.privacy.policy import absent_columns


@dataclass(frozen=True)
class Anonymity:
    """k-anonymity and l-diversity of a table over its quasi-identifiers."""

    k_min: int
    share_below_k: float
    n_classes: int
    l_min: int


def anonymity(frame: pd.DataFrame, quasi_identifiers: list[str], k: int, sensitive: str) -> Anonymity:
    """Smallest equivalence class, share of rows in classes below k, fewest distinct sensitive values in a class.

    Missing values count as a value of their own.
    """
    if sensitive not in frame:
        raise DataError(f"column {sensitive!r} (the l-diversity column) is not in the data")
    if not quasi_identifiers:  # nothing links a row to a person: one class holding every row
        return Anonymity(len(frame), 0.0, 1, int(frame[sensitive].nunique()))
    keys = frame[quasi_identifiers].astype(str)
    grouped = frame.assign(_sensitive=frame[sensitive].astype(str)).groupby([keys[c] for c in quasi_identifiers])
    sizes = grouped.size()
    diversity = grouped["_sensitive"].nunique()
    below = sizes[sizes < k].sum()
    return Anonymity(int(sizes.min()), float(below / len(frame)), len(sizes), int(diversity.min()))


def risk_report(raw: pd.DataFrame, masked: pd.DataFrame, params: PrivacyParams, sensitive: str) -> dict[str, Any]:
    """k-anonymity and l-diversity before and after the policy."""
    qi = [c for c in params.quasi_identifiers if c in raw]
    before = anonymity(raw, qi, params.k, sensitive)
    after = anonymity(masked, [c for c in qi if c in masked], params.k, sensitive)
    return {"quasi_identifiers": qi, "k": params.k, "l_column": sensitive, "before": before.__dict__,
            "after": after.__dict__, "not_in_data": absent_columns(params, raw)}  # fmt: skip
