"""Column roles and the known shape of a dataset, resolved once from the data spec."""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from humane.core.errors import DataError
from humane.data.datasets import BUILTINS, BuiltinDataset
from humane.data.params import DataParams
from humane.privacy.policy import OTHER

# The most label values an error lists: a column with more distinct values is not a label column, and its
# values (e-mail addresses, names) are not quoted.
MAX_LISTED_LABELS = 10


@dataclass(frozen=True)
class Schema:
    """Which column plays which role, and the value sets and ranges the data must respect."""

    target: str
    # Label values in the label column's own type (str, int, bool; float for a float column): compare with ==.
    positive_label: Any
    labels: list[Any]
    numeric: list[str]
    categorical: list[str]
    sensitive: list[str]
    categories: dict[str, list[str]]
    ranges: dict[str, tuple[float, float]]
    # Columns role inference left out of the model inputs, and why (e.g. too many categories to one-hot encode).
    skipped: dict[str, str] = field(default_factory=dict)
    # Categorical columns whose value set a built-in dataset documents; every other value set is learned from
    # the data, and reports leave it out for a protected column (humane.data.validation.written_schema).
    documented: list[str] = field(default_factory=list)

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


def _yaml(value: Any) -> str:
    """How to write a label in params.yaml so that YAML gives it the column's type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def same_label(a: Any, b: Any) -> bool:
    """Equal and of the same kind: 1 matches 1 and 1.0, never True or "1" (in Python True == 1; not here)."""
    if isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)):
        return isinstance(a, (bool, np.bool_)) and isinstance(b, (bool, np.bool_)) and bool(a) == bool(b)
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, numbers.Number) and isinstance(b, numbers.Number):
        return bool(a == b)
    return False


def match_label(value: Any, observed: list[Any], key: str, column: str) -> Any:
    """The observed label that `value` (as params.yaml types it) names, in the column's own type.

    Not among them is an error listing the observed labels; a value that matches one only as text says how to
    write it (e.g. `1` without quotes for an integer column). A column with more than MAX_LISTED_LABELS
    distinct values is no label column (an e-mail or name column named by mistake): the error gives only the
    count and quotes none of its values.
    """
    for label in observed:
        if same_label(value, label):
            return label
    if len(observed) > MAX_LISTED_LABELS:
        raise DataError(
            f"params.yaml {key} {_yaml(value)} is not one of the labels observed in column {column!r}: "
            f"{len(observed)} distinct values (not shown); a binary label has 2 — is data.target the label column?"
        )
    hint = ""
    as_text = [label for label in observed if str(label).lower() == str(value).lower()]
    if as_text:
        label = as_text[0]
        unquoted = " without quotes" if isinstance(value, str) and not isinstance(label, str) else ""
        hint = (
            f"; it matches {_yaml(label)} only as text (the column holds {type(label).__name__} values): write "
            f"{key}: {_yaml(label)}{unquoted}"
        )
    raise DataError(
        f"params.yaml {key} {_yaml(value)} is not one of the labels observed in column {column!r}: "
        f"[{', '.join(_yaml(v) for v in observed)}]{hint}"
    )


def resolve_labels(spec: DataParams, train: pd.DataFrame) -> tuple[Any, list[Any]]:
    """The positive label and the label set, in the label column's own type.

    The label set is `data.labels`, else a built-in dataset's documented labels, else the labels observed in
    the train pool; declared labels and `data.positive_label` are matched against the observed ones as YAML
    typed them (1, true and "yes" are different labels).
    """
    builtin = BUILTINS.get(spec.source)
    if spec.labels is not None:
        declared: list[Any] | None = list(spec.labels)
    elif builtin is not None and spec.target in builtin.categories:
        declared = list(builtin.categories[spec.target])
    else:
        declared = None
    if spec.target in train:
        observed = _observed_values(train[spec.target])
        labels = [match_label(v, observed, "data.labels", spec.target) for v in declared] if declared else observed
    else:
        labels = declared or [spec.positive_label]
    return match_label(spec.positive_label, labels, "data.positive_label", spec.target), labels


def resolve_schema(
    spec: DataParams, train: pd.DataFrame, policy: dict[str, Any] | None = None, min_category_rows: int = 1
) -> Schema:
    """Resolve roles from the spec, the built-in schema, or (for what neither states) the train pool's dtypes.

    An inferred categorical column with more than `data.max_categories` distinct values is skipped (not a
    model input) and listed in `Schema.skipped` with the reason; declared columns are never skipped.
    `policy` is the fitted privacy policy: its dropped and pseudonymized columns play no role (they are gone,
    or identifiers), and the "Other" group of a generalized categorical is a known value. A value set inferred
    from the data for a sensitive or generalized column keeps only values seen in at least `min_category_rows`
    rows: a rarer value describes a few people, so it is never written into the schema (validation then counts
    it as an unseen value, without quoting it).
    """
    builtin = BUILTINS.get(spec.source)
    policy = policy or {}
    dropped = set(spec.drop) | {spec.target} | set(policy.get("drop", [])) | set(policy.get("pseudonymize", []))
    numeric, categorical, skipped = _roles(spec, builtin, train, dropped)
    categories = _categories(spec, builtin, train, categorical, policy, min_category_rows)
    positive_label, labels = resolve_labels(spec, train)
    return Schema(
        target=spec.target,
        positive_label=positive_label,
        labels=labels,
        numeric=numeric,
        categorical=categorical,
        sensitive=list(spec.sensitive_features),
        categories=categories,
        ranges=_ranges(spec, builtin, policy, numeric),
        skipped=skipped,
        documented=[c for c in categorical if builtin is not None and c in builtin.categories],
    )


def _roles(
    spec: DataParams, builtin: BuiltinDataset | None, train: pd.DataFrame, dropped: set[str]
) -> tuple[list[str], list[str], dict[str, str]]:
    """The numeric and categorical columns, and the inferred categoricals skipped (too many values) with why.

    Declared roles win, then a built-in dataset's, then the train pool's dtypes. A sensitive feature is always
    a categorical column unless declared numeric: it is audited even when the spec leaves it out of the roles.
    """
    if spec.numeric is not None:
        numeric = list(spec.numeric)
    elif builtin is not None:
        numeric = [c for c in builtin.numeric if c not in dropped]
    else:
        numeric = [c for c in train.columns if c not in dropped and pd.api.types.is_numeric_dtype(train[c])]
    skipped: dict[str, str] = {}
    if spec.categorical is not None:
        categorical = list(spec.categorical)
    elif builtin is not None:
        categorical = [c for c in builtin.categories if c not in dropped]
    else:
        inferred = [c for c in train.columns if c not in dropped and c not in numeric]
        skipped = too_many_categories(train, inferred, spec.max_categories)
        categorical = [c for c in inferred if c not in skipped]
    # Sensitive columns are audited even when the spec leaves them out of the feature roles.
    for column in spec.sensitive_features:
        skipped.pop(column, None)
        if column not in numeric and column not in categorical:
            categorical.append(column)
    overlap = sorted(set(numeric) & set(categorical))
    if overlap:
        raise DataError(f"params.yaml data: columns {overlap} are declared both numeric and categorical")
    return numeric, categorical, skipped


def _categories(
    spec: DataParams,
    builtin: BuiltinDataset | None,
    train: pd.DataFrame,
    categorical: list[str],
    policy: dict[str, Any],
    min_category_rows: int,
) -> dict[str, list[str]]:
    """Each categorical column's value set: a built-in dataset's, else the values the train pool holds.

    For a sensitive or generalized column only values seen in at least `min_category_rows` rows are kept, and a
    generalized column's "Other" group is a known value.
    """
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
    return categories


def _ranges(
    spec: DataParams, builtin: BuiltinDataset | None, policy: dict[str, Any], numeric: list[str]
) -> dict[str, tuple[float, float]]:
    """The numeric columns' allowed ranges: a built-in dataset's, then data.ranges, then the privacy bins' span."""
    ranges = {c: (float(lo), float(hi)) for c, (lo, hi) in (builtin.ranges.items() if builtin else [])}
    for column, bounds in spec.ranges.items():
        if len(bounds) != 2:
            raise DataError(f"params.yaml data.ranges.{column}: expected [min, max], got {bounds}")
        ranges[column] = (float(bounds[0]), float(bounds[1]))
    # A binned column holds bin edges: the load stage already held its raw values to the bins' span.
    for column, edges in policy.get("bins", {}).items():
        ranges[column] = (float(edges[0]), float(edges[-1]))
    return {c: r for c, r in ranges.items() if c in numeric}


def too_many_categories(train: pd.DataFrame, columns: list[str], max_categories: int) -> dict[str, str]:
    """Inferred categorical columns with more distinct values than data.max_categories, and why they are skipped.

    One-hot encoding such a column would give the model a feature per value (often one per person: a name, a
    free-text answer, an id); declare it in data.categorical to encode it anyway.
    """
    skipped = {}
    for column in columns:
        count = int(train[column].nunique())
        if count > max_categories:
            skipped[column] = (
                f"{count} distinct values, more than data.max_categories ({max_categories}): not one-hot encoded "
                f"and not a model input (list it in data.categorical to encode it anyway)"
            )
    return skipped
