"""Column roles and the known shape of a dataset, resolved once from the data spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from humane.core.errors import DataError
from humane.core.params import DataParams
from humane.data.datasets import BUILTINS
from humane.privacy.policy import OTHER


@dataclass(frozen=True)
class Schema:
    """Which column plays which role, and the value sets and ranges the data must respect."""

    target: str
    positive_label: str
    labels: list[str]
    numeric: list[str]
    categorical: list[str]
    sensitive: list[str]
    categories: dict[str, list[str]]
    ranges: dict[str, tuple[float, float]]

    def features(self, include_sensitive: bool) -> list[str]:
        """Model input columns, in a stable order."""
        cols = self.numeric + self.categorical
        return cols if include_sensitive else [c for c in cols if c not in self.sensitive]

    @property
    def required(self) -> list[str]:
        """Columns that must be present in every frame."""
        return [*self.numeric, *self.categorical, self.target]


def _observed_values(column: pd.Series) -> list:
    """Distinct non-null values as plain Python objects (the types GX compares with), in a stable order."""
    return sorted(column.dropna().unique().tolist(), key=str)


def resolve_schema(
    spec: DataParams, train: pd.DataFrame, policy: dict[str, Any] | None = None, min_category_rows: int = 1
) -> Schema:
    """Resolve roles from the spec, the built-in schema, or (for what neither states) the train pool's dtypes.

    `policy` is the fitted privacy policy: its dropped and pseudonymized columns play no role (they are gone,
    or identifiers), and the "Other" group of a generalized categorical is a known value. A value set inferred
    from the data for a sensitive or generalized column keeps only values seen in at least `min_category_rows`
    rows: a rarer value describes a few people, so it is never written into the schema (validation then counts
    it as an unseen value, without quoting it).
    """
    builtin = BUILTINS.get(spec.source)
    policy = policy or {}
    dropped = set(spec.drop) | {spec.target} | set(policy.get("drop", [])) | set(policy.get("pseudonymize", []))
    if spec.numeric is not None:
        numeric = list(spec.numeric)
    elif builtin is not None:
        numeric = [c for c in builtin.numeric if c not in dropped]
    else:
        numeric = [c for c in train.columns if c not in dropped and pd.api.types.is_numeric_dtype(train[c])]
    if spec.categorical is not None:
        categorical = list(spec.categorical)
    elif builtin is not None:
        categorical = [c for c in builtin.categories if c not in dropped]
    else:
        categorical = [c for c in train.columns if c not in dropped and c not in numeric]
    # Sensitive columns are audited even when the spec leaves them out of the feature roles.
    for column in spec.sensitive_features:
        if column not in numeric and column not in categorical:
            categorical.append(column)
    overlap = sorted(set(numeric) & set(categorical))
    if overlap:
        raise DataError(f"params.yaml data: columns {overlap} are declared both numeric and categorical")

    categories: dict[str, list[str]] = {}
    for column in categorical:
        if builtin is not None and column in builtin.categories:
            categories[column] = list(builtin.categories[column])
        elif column in train:
            values = train[column]
            if column in spec.sensitive_features or column in policy.get("kept_categories", {}):
                counts = values.value_counts()
                values = values[values.isin(counts[counts >= min_category_rows].index)]
            categories[column] = _observed_values(values)
        if column in policy.get("kept_categories", {}) and OTHER not in categories.get(column, [OTHER]):
            categories[column].append(OTHER)

    if spec.labels is not None:
        labels = list(spec.labels)
    elif builtin is not None and spec.target in builtin.categories:
        labels = list(builtin.categories[spec.target])
    elif spec.target in train:
        labels = [str(v) for v in _observed_values(train[spec.target])]
    else:
        labels = [spec.positive_label]
    if spec.positive_label not in labels:
        raise DataError(f"params.yaml data.positive_label {spec.positive_label!r} is not one of the labels {labels}")

    ranges = {c: (float(lo), float(hi)) for c, (lo, hi) in (builtin.ranges.items() if builtin else [])}
    for column, bounds in spec.ranges.items():
        if len(bounds) != 2:
            raise DataError(f"params.yaml data.ranges.{column}: expected [min, max], got {bounds}")
        ranges[column] = (float(bounds[0]), float(bounds[1]))
    # A binned column holds bin edges: the load stage already held its raw values to the bins' span.
    for column, edges in policy.get("bins", {}).items():
        ranges[column] = (float(edges[0]), float(edges[-1]))
    ranges = {c: r for c, r in ranges.items() if c in numeric}

    return Schema(
        target=spec.target,
        positive_label=spec.positive_label,
        labels=labels,
        numeric=numeric,
        categorical=categorical,
        sensitive=list(spec.sensitive_features),
        categories=categories,
        ranges=ranges,
    )
