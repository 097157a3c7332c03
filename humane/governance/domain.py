"""The model's training-time domain, shipped with the served model, and the rules a scored row breaks.

A row outside the domain is still scored: the flag informs the client and the monitoring that counts flags.
Per input column the domain holds whether nulls were seen in training and, for a numeric column, the
validated range (the schema's stated range: a built-in dataset's documented one, the profile's
`data.ranges`, or a binned column's bin span; else the training rows' min and max), for a categorical one
the known categories. Columns whose raw values must not leave the load stage (`protected_columns` of
humane.privacy.policy: masked, sensitive, kept or date-derived) get no range and no category set taken from the
data: their training min and max, or their values, would be values of such a column (the validation report
holds no value set learned from their data either). A rule names the column and the rule, never a value.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from humane.core.errors import DataError

NUMERIC, CATEGORICAL = "numeric", "categorical"
BELOW, ABOVE = "below the validated range", "above the validated range"
UNSEEN = "unseen category"
NULL = "null where none was seen"
SEPARATOR = "; "  # between the rules a row breaks, in the served `domain_rules` text


@dataclass(frozen=True)
class ColumnDomain:
    """What one input column held in training.

    Attributes:
        kind: "numeric" or "categorical" (the column's role in the model).
        nulls: Whether the training rows held nulls in this column.
        min: Lowest valid value of a numeric column (None: no lower bound known).
        max: Highest valid value of a numeric column (None: no upper bound known).
        categories: Known values of a categorical column (None: no category rule).

    """

    kind: Literal["numeric", "categorical"]
    nulls: bool
    min: float | None = None
    max: float | None = None
    categories: list[Any] | None = None


@dataclass(frozen=True)
class Domain:
    """The domain of every model input column, by name."""

    columns: dict[str, ColumnDomain]

    @property
    def numeric(self) -> list[str]:
        """Input columns the model reads as numbers."""
        return [c for c, d in self.columns.items() if d.kind == NUMERIC]

    @property
    def categorical(self) -> list[str]:
        """Input columns the model reads as categories."""
        return [c for c, d in self.columns.items() if d.kind == CATEGORICAL]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"columns": {c: asdict(d) for c, d in self.columns.items()}}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Domain:
        """Inverse of to_dict."""
        return cls({c: ColumnDomain(**d) for c, d in payload["columns"].items()})


def fit_domain(
    train: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    ranges: dict[str, tuple[float, float] | list[float]],
    categories: dict[str, list[Any]],
    grouped: list[str],
    protected: set[str],
) -> Domain:
    """The domain of the model's inputs, from the training rows (as written by the load stage) and the schema.

    Args:
        train: The training pool after the privacy policy (data/interim/train.parquet).
        numeric: The model's numeric input columns.
        categorical: The model's categorical input columns.
        ranges: The schema's stated (validated) ranges {column: (min, max)}.
        categories: The schema's value sets {column: values}.
        grouped: Columns whose rare categories the privacy policy groups into "Other": any value the schema
            lists is known (the policy maps it to a group the model saw); values the schema does not list
            (rare in training, or never seen) are unseen.
        protected: Columns whose raw values never leave the load stage (humane.privacy.policy's
            `protected_columns`): no range and no category set from the training rows.

    Returns:
        The domain; the known categories of an ungrouped column are the schema's values that the training
        rows hold (a documented value no training row had is unseen by the model).

    """
    columns: dict[str, ColumnDomain] = {}
    for column in numeric:
        values = pd.to_numeric(train[column], errors="coerce") if column in train else pd.Series(dtype=float)
        nulls = bool(values.isna().any())
        if column in ranges:
            low, high = ranges[column]
            columns[column] = ColumnDomain(NUMERIC, nulls, float(low), float(high))
        elif column not in protected and values.notna().any():
            # Rounded outward to two significant figures: the exact extremes are two people's values.
            low, high = _outward(float(values.min()), math.floor), _outward(float(values.max()), math.ceil)
            columns[column] = ColumnDomain(NUMERIC, nulls, low, high)
        else:
            columns[column] = ColumnDomain(NUMERIC, nulls)
    for column in categorical:
        values = train[column] if column in train else pd.Series(dtype=object)
        nulls = bool(values.isna().any())
        observed = values.dropna().unique().tolist()
        seen = set(observed)
        if column in grouped and column in categories:
            known: list[Any] | None = list(categories[column])
        elif column in categories:
            known = [v for v in categories[column] if v in seen]
        elif column not in protected:
            known = sorted(observed, key=str)
        else:
            known = None
        columns[column] = ColumnDomain(CATEGORICAL, nulls, categories=known)
    return Domain(columns)


def _outward(value: float, direction: Any) -> float:
    """`value` rounded to two significant figures, away from the inside of the range (floor for a minimum)."""
    if value == 0 or not math.isfinite(value):
        return value
    step = 10.0 ** (math.floor(math.log10(abs(value))) - 1)
    return round(float(direction(value / step) * step), 12)


def broken_rules(domain: Domain, frame: pd.DataFrame) -> list[list[str]]:
    """Per row, the rules of the domain it breaks, as "<column>: <rule>" (column and rule only, no value).

    Numeric columns are compared as numbers (`as_model_input` has already made them so); a column the frame
    lacks is not checked here (the model's input schema requires it).
    """
    rules: list[list[str]] = [[] for _ in range(len(frame))]
    for column, spec in domain.columns.items():
        if column not in frame:
            continue
        values = frame[column]
        missing = values.isna().to_numpy()
        checks: list[tuple[np.ndarray, str]] = []
        if not spec.nulls:
            checks.append((missing, NULL))
        if spec.kind == NUMERIC:
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            if spec.min is not None:
                checks.append((numbers < spec.min, BELOW))
            if spec.max is not None:
                checks.append((numbers > spec.max, ABOVE))
        elif spec.categories is not None:
            checks.append((~missing & ~values.isin(spec.categories).to_numpy(), UNSEEN))
        for mask, rule in checks:
            for row in np.flatnonzero(mask):
                rules[row].append(f"{column}: {rule}")
    return rules


def as_model_input(domain: Domain, frame: pd.DataFrame) -> pd.DataFrame:
    """The request with numeric inputs as float64 and categorical ones as objects, as the model was fitted.

    Clients send 40, 40.0 or 1e6 for the same column (JSON does not tell integers from floats), and a
    categorical code may arrive as 1 or 1.0 (equal to the trained category either way).

    Raises:
        DataError: A numeric input holds text that is not a number (counted, not quoted: the column may be
            protected).

    """
    out = frame.copy()
    for column in domain.numeric:
        if column in out:
            values = out[column]
            parsed = pd.to_numeric(values, errors="coerce")
            bad = int((values.notna() & parsed.isna()).sum())
            if bad:
                raise DataError(f"request column {column!r}: the model reads numbers; {bad} values are not numbers")
            out[column] = parsed.astype(np.float64)
    for column in domain.categorical:
        if column in out:
            out[column] = out[column].astype("object")
    return out
