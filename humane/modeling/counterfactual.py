"""Counterfactuals: the cheapest change to a refused row's actionable inputs that the served model would accept.

The search is a batched grid search, not an optimizer: each actionable column has a few candidate values taken
from the training rows (numeric: quantiles; categorical: the categories the training rows held after the privacy
policy), a change costs |new - old| / scale for a number and 1 for a category, and the cheapest change set that
flips the decision is kept. The decision is the served one (the privacy policy, the preprocessor, the network and
the per-group thresholds of a post-processed model), passed in as a callable, so that a counterfactual is never
judged by a rule the server does not apply.

Only the columns of the space can change. The space is fitted on the actionable columns (model inputs minus the
protected columns minus `data.immutable`), and `search` refuses a space holding a column it was told to keep.
A counterfactual holds the row's own value of each changed column ("from"): fit to return to the person it is
about, not to store in a report (a report keeps only the changed columns' names, or a synthetic row's values).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from humane.core.errors import ConfigError, DataError
from humane.modeling.params import ModelingSections

# decide(rows) -> (decision, probability): per row, whether the served model decides for the positive label
# (bool) and its positive-class probability (float), through the full served path.
Decide = Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray]]

QUANTILES = np.linspace(0.05, 0.95, 10)  # numeric candidates: 5% .. 95% of the training rows
CATEGORY_COST = 1.0  # a changed category costs what a numeric move of one scale (IQR) costs
NULL_COST = 1.0  # filling a null number: no distance to measure, so the cost of one scale
PAIR_POOL = 2  # pairs are formed among each column's this many best single changes (by probability) of a row


def never_inputs(params: ModelingSections) -> list[str]:
    """Columns the profile keeps out of the model inputs: the sensitive features, the dropped and pseudonymized."""
    data, privacy = params.data, params.privacy
    return [*data.sensitive_features, *data.drop, *privacy.drop, *privacy.pseudonymize]


def check_immutable(immutable: list[str], inputs: list[str], sensitive: list[str]) -> None:
    """Refuse a `data.immutable` naming a column that is neither a model input nor in `sensitive`.

    `sensitive`: the sensitive features, and the columns the profile drops or pseudonymizes (never inputs: they
    cannot change in a counterfactual anyway).

    Checked when the preprocessor is fitted (the first stage that knows the inputs), so a profile copied from
    another dataset stops there, not after training.

    Raises:
        ConfigError: Names the unknown columns and the model's inputs.

    """
    unknown = [c for c in immutable if c not in inputs and c not in sensitive]
    if unknown:
        raise ConfigError(f"data.immutable names {unknown}, which are not model inputs {inputs}")


@dataclass(frozen=True)
class CounterfactualSpace:
    """What a counterfactual may change: candidate values per actionable column, and a scale per numeric one.

    Attributes:
        candidates: Per actionable column, the values a counterfactual may set it to.
        scales: Per numeric column, the distance that costs 1 (its IQR, else its standard deviation).

    """

    candidates: dict[str, list[Any]]
    scales: dict[str, float]

    @property
    def columns(self) -> list[str]:
        """The columns a counterfactual may change."""
        return list(self.candidates)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: {"candidates": {column: [values]}, "scales": {column: scale}}."""
        return {"candidates": {c: list(v) for c, v in self.candidates.items()}, "scales": dict(self.scales)}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> CounterfactualSpace:
        """The space `to_dict` wrote.

        Raises:
            DataError: The payload is not a counterfactual space (keys, or a numeric column without a scale).

        """
        if not isinstance(payload, dict) or set(payload) != {"candidates", "scales"}:
            raise DataError("counterfactual space: expected the keys candidates and scales")
        candidates, scales = payload["candidates"], payload["scales"]
        unknown = sorted(set(scales) - set(candidates))
        bad = [c for c, s in scales.items() if not isinstance(s, (int, float)) or not s > 0]
        if unknown or bad:
            raise DataError(f"counterfactual space: scales of unknown columns {unknown} or not positive {bad}")
        return cls({str(c): list(v) for c, v in candidates.items()}, {str(c): float(s) for c, s in scales.items()})


def fit_space(train_raw: pd.DataFrame, actionable: list[str], numeric: list[str]) -> CounterfactualSpace:
    """Candidate values and scales from the training rows (after the privacy policy), for the actionable columns.

    A numeric column gets its distinct 5%..95% quantiles and a scale (IQR, else standard deviation); one whose
    values do not vary is left out (there is nothing to change it to). A categorical column gets the categories
    the training rows hold (nulls left out).

    Args:
        train_raw: Raw training rows as the privacy policy left them (data/interim/train.parquet).
        actionable: The columns a counterfactual may change: model inputs minus protected minus immutable.
        numeric: Which of them are numeric (the others are categorical).

    Raises:
        DataError: An actionable column is not in the training rows.

    """
    missing = [c for c in actionable if c not in train_raw.columns]
    if missing:
        raise DataError(f"counterfactual space: actionable columns {missing} are not in the training rows")
    candidates: dict[str, list[Any]] = {}
    scales: dict[str, float] = {}
    for column in actionable:
        values = train_raw[column].dropna()
        if column in numeric:
            scale = _scale(values.astype(np.float64))
            if scale > 0:
                quantiles = np.quantile(values.astype(np.float64), QUANTILES)
                candidates[column] = sorted({float(f"{v:.6g}") for v in quantiles})  # 55.0, not 54.99999999999999
                scales[column] = scale
        elif len(values):
            candidates[column] = sorted({_plain(v) for v in values.unique()}, key=str)
    return CounterfactualSpace(candidates, scales)


def _scale(values: pd.Series) -> float:
    """IQR, else the standard deviation (a column mostly at one value, like capital-gain), else 0."""
    if values.empty:
        return 0.0
    q1, q3 = np.quantile(values, [0.25, 0.75])
    if q3 > q1:
        return float(q3 - q1)
    std = float(values.std(ddof=0))
    return std if math.isfinite(std) else 0.0


def _plain(value: Any) -> Any:
    """A JSON-ready scalar (numpy numbers to Python ones, NaN to None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


@dataclass(frozen=True)
class _Changes:
    """Candidate change sets, one per line: the row each belongs to, its column -> new value, and its cost."""

    row: np.ndarray
    changes: list[dict[str, Any]]
    cost: np.ndarray


def search(
    rows: pd.DataFrame,
    decide: Decide,
    space: CounterfactualSpace,
    max_changes: int = 2,
    *,
    frozen: Collection[str] = (),
) -> list[dict[str, Any] | None]:
    """Per refused row, the cheapest change of at most `max_changes` space columns that the model accepts.

    All single changes of all rows are judged in one call of `decide`; rows that no single change flips are
    tried with pairs formed among their most promising single changes (per column, the PAIR_POOL of highest
    probability; a pair changes two different columns), again in one call; where a pair flips a row, every
    combination of values of those two columns is tried (one more call) for the cheapest. Ties in cost go to the
    higher probability.

    Args:
        rows: Raw rows, each refused by the served model, with every column the model reads (and the group
            columns its thresholds read).
        decide: (decision, probability) per row through the full served path (see `Decide`).
        space: The columns and values a counterfactual may use.
        max_changes: 1 or 2.
        frozen: Columns that must never change (protected, sensitive, immutable); a space holding one is refused.

    Returns:
        Per row: {"changes": {column: {"from": own value, "to": new value}}, "probability": p, "cost": c},
        or None (no counterfactual within `max_changes` changes). "from" is the row's own value: return it to
        the person the row describes, never store it in a report.

    Raises:
        DataError: The space holds a frozen column or a column the rows lack, or max_changes is not 1 or 2.

    """
    _check(rows, space, max_changes, frozen)
    rows = rows.reset_index(drop=True)
    found: list[dict[str, Any] | None] = [None] * len(rows)
    if rows.empty or not space.columns:
        return found
    singles = _single_changes(rows, space)
    decision, probability = _judge(rows, singles, decide)
    open_rows = _keep_cheapest(rows, singles, decision, probability, found)
    if max_changes >= 2 and open_rows:
        _two_changes(rows, decide, space, _pair_changes(rows, singles, probability, open_rows), found)
    return found


def _two_changes(
    rows: pd.DataFrame, decide: Decide, space: CounterfactualSpace, pairs: _Changes, found: list[dict[str, Any] | None]
) -> None:
    """Judge the pairs; where one flips a row, every value combination of its two columns, for the cheapest."""
    if not len(pairs.row):
        return
    _keep_cheapest(rows, pairs, *_judge(rows, pairs, decide), found)
    grid = _pair_grid(rows, space, [i for i in np.unique(pairs.row) if found[i] is not None], found)
    if len(grid.row):
        _keep_cheapest(rows, grid, *_judge(rows, grid, decide), found)


def _check(rows: pd.DataFrame, space: CounterfactualSpace, max_changes: int, frozen: Collection[str]) -> None:
    forbidden = sorted(set(space.columns) & set(frozen))
    if forbidden:
        raise DataError(f"counterfactual space: columns {forbidden} must never change (protected or immutable)")
    missing = [c for c in space.columns if c not in rows.columns]
    if missing:
        raise DataError(f"counterfactual: the rows lack the space's columns {missing}")
    if max_changes not in (1, 2):
        raise DataError(f"counterfactual: max_changes must be 1 or 2, not {max_changes}")


def _single_changes(rows: pd.DataFrame, space: CounterfactualSpace) -> _Changes:
    """Every (row, column, candidate value) that differs from the row's own value, with its cost."""
    index, changes, costs = [], [], []
    for column, values in space.candidates.items():
        scale = space.scales.get(column)
        for i, own in enumerate(rows[column].tolist()):
            for value in values:
                cost = _cost(own, value, scale)
                if cost > 0:
                    index.append(i)
                    changes.append({column: value})
                    costs.append(cost)
    return _Changes(np.asarray(index, dtype=np.int64), changes, np.asarray(costs, dtype=np.float64))


def _cost(own: Any, value: Any, scale: float | None) -> float:
    """0 for no change; |Δ| / scale for a number (NULL_COST from a null); CATEGORY_COST for another category."""
    if scale is None:
        return 0.0 if _same(own, value) else CATEGORY_COST
    if own is None or (isinstance(own, float) and math.isnan(own)):
        return NULL_COST
    return abs(float(value) - float(own)) / scale


def _same(own: Any, value: Any) -> bool:
    if own is None or (isinstance(own, float) and math.isnan(own)):
        return value is None
    return own == value or str(own) == str(value)  # a code read as 1.0 is the category 1


def _pair_changes(rows: pd.DataFrame, singles: _Changes, probability: np.ndarray, open_rows: list[int]) -> _Changes:
    """Pairs on two different columns among each open row's best single changes (PAIR_POOL per column)."""
    index, changes, costs = [], [], []
    per_row = _lines_per_row(singles.row, len(rows))
    for i in open_rows:
        best = _pool(per_row[i], singles, probability)
        for a_pos, a in enumerate(best):
            for b in best[a_pos + 1 :]:
                if set(singles.changes[a]).isdisjoint(singles.changes[b]):
                    index.append(i)
                    changes.append({**singles.changes[a], **singles.changes[b]})
                    costs.append(singles.cost[a] + singles.cost[b])
    return _Changes(np.asarray(index, dtype=np.int64), changes, np.asarray(costs, dtype=np.float64))


def _judge(rows: pd.DataFrame, candidates: _Changes, decide: Decide) -> tuple[np.ndarray, np.ndarray]:
    """`decide` on every candidate at once: the rows repeated, each with its changes applied."""
    frame = rows.iloc[candidates.row].reset_index(drop=True)
    columns = {c for change in candidates.changes for c in change}
    values = {c: frame[c].astype(object).to_numpy(copy=True) for c in columns}
    for line, change in enumerate(candidates.changes):
        for column, value in change.items():
            values[column][line] = value
    for column in columns:
        numeric = pd.api.types.is_numeric_dtype(rows[column]) and not pd.api.types.is_bool_dtype(rows[column])
        frame[column] = pd.to_numeric(values[column]) if numeric else values[column]
    decision, probability = decide(frame)
    decision, probability = np.asarray(decision, dtype=bool), np.asarray(probability, dtype=np.float64)
    if decision.shape != (len(frame),) or probability.shape != (len(frame),):
        raise DataError(f"counterfactual: decide returned {decision.shape} decisions for {len(frame)} rows")
    return decision, probability


def _keep_cheapest(
    rows: pd.DataFrame,
    candidates: _Changes,
    decision: np.ndarray,
    probability: np.ndarray,
    found: list[dict[str, Any] | None],
) -> list[int]:
    """Keep in `found` each row's cheapest flipping candidate (ties: higher probability); the rows left open.

    A row already holding a counterfactual keeps it unless a candidate here is cheaper.
    """
    open_rows = []
    lines = _lines_per_row(candidates.row, len(rows))
    for i in range(len(rows)):
        flips = lines[i][decision[lines[i]]]
        if not len(flips):
            if found[i] is None:
                open_rows.append(i)
            continue
        best = flips[np.lexsort((-probability[flips], candidates.cost[flips]))[0]]
        if found[i] is not None and candidates.cost[best] >= found[i]["cost"]:
            continue
        change = candidates.changes[best]
        found[i] = {
            "changes": {c: {"from": _plain(rows.at[i, c]), "to": _plain(v)} for c, v in change.items()},
            "probability": float(probability[best]),
            "cost": float(candidates.cost[best]),
        }
    return open_rows


def _lines_per_row(row: np.ndarray, n: int) -> list[np.ndarray]:
    """Per row 0..n-1, the candidate lines that belong to it (in line order)."""
    order = np.argsort(row, kind="stable")
    return np.split(order, np.searchsorted(row[order], np.arange(1, n)))


def _pool(lines: np.ndarray, singles: _Changes, probability: np.ndarray) -> list[int]:
    """Of a row's single changes, each column's PAIR_POOL of highest probability."""
    kept: dict[str, list[int]] = {}
    for line in lines[np.argsort(-probability[lines], kind="stable")]:
        (column,) = singles.changes[line]
        if len(kept.setdefault(column, [])) < PAIR_POOL:
            kept[column].append(int(line))
    return [line for column in kept.values() for line in column]


def _pair_grid(
    rows: pd.DataFrame, space: CounterfactualSpace, pair_rows: list[int], found: list[dict[str, Any] | None]
) -> _Changes:
    """For each row a pair flipped, every combination of new values of that pair's two columns."""
    index, changes, costs = [], [], []
    for i in pair_rows:
        a, b = found[i]["changes"]
        for value_a in space.candidates[a]:
            cost_a = _cost(rows.at[i, a], value_a, space.scales.get(a))
            for value_b in space.candidates[b] if cost_a > 0 else ():
                cost_b = _cost(rows.at[i, b], value_b, space.scales.get(b))
                if cost_b > 0:
                    index.append(i)
                    changes.append({a: value_a, b: value_b})
                    costs.append(cost_a + cost_b)
    return _Changes(np.asarray(index, dtype=np.int64), changes, np.asarray(costs, dtype=np.float64))
