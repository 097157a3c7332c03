"""The decision rule of a model: `p >= threshold`, or for a post-processed model `p >=` its group's threshold.

The postprocess stage fits per-group thresholds on the validation rows (`fit_thresholds`, Fairlearn's
ThresholdOptimizer behind `GroupThresholds`) and writes them to models/thresholds.json as plain JSON;
{"constraint": "none"} means no post-processing. Everything that decides (evaluation, the audit, the explain stage,
the sweep, serving and the monitoring's reference) reads that state through this module only:

- `group_decisions`: the per-group decisions, or None when the model decides by the plain threshold;
- `served_decisions`: the decision the served model gives each row, whichever rule applies;
- `plain_decisions` (`humane.modeling.decision`): `p >= threshold`, the rule of a model without per-group
  thresholds (and of the references);
- `group_features`: the sensitive features whose groups a state's thresholds read (what a request must carry).

A row's draw of a randomised threshold is a keyed hash of its model features (`row_draws`), so the same row gets
the same decision alone, in any batch and at any position: what the audit measures is what serving does.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

import numpy as np
import pandas as pd
from fairlearn.postprocessing import ThresholdOptimizer
from sklearn.base import BaseEstimator, ClassifierMixin

from humane.core.errors import ConfigError, DataError
from humane.core.paths import LABEL_COLUMN
from humane.fairness.mitigation import binary_labels, constrained, group_keys
from humane.fairness.params import MitigationParams
from humane.modeling.decision import plain_decisions

ThresholdConstraint = Literal["demographic_parity", "equalized_odds", "true_positive_rate_parity"]
THRESHOLD_CONSTRAINTS: tuple[str, ...] = ("demographic_parity", "equalized_odds", "true_positive_rate_parity")
# What ThresholdOptimizer maximises under the constraint.
THRESHOLD_OBJECTIVE = "accuracy_score"
NO_THRESHOLDS = "none"  # the constraint of a model that is not post-processed: it decides by p >= threshold


class _Scores(ClassifierMixin, BaseEstimator):
    """A prefit 'estimator' whose input is the model's positive probability (one column) and returns it."""

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> _Scores:
        """Nothing to learn."""
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """[1 − p, p] per row."""
        p = np.asarray(X, dtype=np.float64)[:, 0]
        return np.column_stack([1.0 - p, p])


def _number(value: float) -> float | str:
    """A threshold as JSON: ±inf (Fairlearn's always/never thresholds) become the strings "inf" / "-inf"."""
    value = float(value)
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def _operation(op: Any) -> dict[str, Any]:
    return {"operator": str(op.operator), "threshold": _number(op.threshold)}


def _apply(op: dict[str, Any], scores: np.ndarray) -> np.ndarray:
    """Fairlearn's ThresholdOperation: score > t or score < t (strict, as Fairlearn compares)."""
    threshold = float(op["threshold"])
    return scores > threshold if op["operator"] == ">" else scores < threshold


def _probabilities(scores: np.ndarray, n: int) -> np.ndarray:
    """The scores as float64 probabilities, one per group key (Fairlearn fails on float32 under pandas 3)."""
    p = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(p) != n:
        raise DataError(f"{len(p)} scores for {n} group keys; they must describe the same rows")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise DataError("scores must be probabilities in [0, 1]")
    return p


def _fit_groups(labels: np.ndarray, keys: pd.Series, min_rows: int) -> tuple[np.ndarray, pd.Series, list[str]]:
    """The rows the thresholds are fitted on (constrained groups), their groups, and the groups left out.

    Raises:
        DataError: A constrained group's rows hold one label only (no threshold can be fitted for it).

    """
    kept, too_small = constrained(keys, min_rows)
    rows = kept.notna().to_numpy()
    groups = kept[rows].astype(str)
    one_label = sorted(g for g in set(groups) if len(set(labels[rows][groups.to_numpy() == g])) < 2)
    if one_label:
        raise DataError(
            f"per-group thresholds: the validation rows of group(s) {one_label} hold one label "
            "only, so no threshold can be fitted for them (more data, or another target)"
        )
    return rows, groups, too_small


def _optimizer(constraint: ThresholdConstraint, p: np.ndarray, labels: np.ndarray, groups: pd.Series) -> Any:
    """Fairlearn's ThresholdOptimizer fitted on the scores (one column) of the constrained rows."""
    optimizer = ThresholdOptimizer(
        estimator=_Scores(),
        constraints=constraint,
        objective=THRESHOLD_OBJECTIVE,
        prefit=True,
        predict_method="predict_proba",
    )
    return optimizer.fit(p.reshape(-1, 1), labels, sensitive_features=groups.to_numpy())


def _group_table(optimizer: ThresholdOptimizer) -> dict[str, dict[str, Any]]:
    """Each group's mix of thresholds as plain JSON (Fairlearn's interpolation_dict)."""
    table = {}
    for group, bunch in optimizer.interpolated_thresholder_.interpolation_dict.items():
        entry = {
            "p0": float(bunch.p0),
            "operation0": _operation(bunch.operation0),
            "p1": float(bunch.p1),
            "operation1": _operation(bunch.operation1),
        }
        if "p_ignore" in bunch:
            entry |= {"p_ignore": float(bunch.p_ignore), "prediction_constant": float(bunch.prediction_constant)}
        table[str(group)] = entry
    return table


def row_draws(features: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) number per row from a keyed BLAKE2 hash of its float32 features: stable across batches."""
    x = np.ascontiguousarray(np.asarray(features, dtype=np.float32))
    if x.ndim != 2 or x.shape[1] == 0:  # no features: every row would get the same draw
        raise DataError("per-row draws need the rows' model features; none were given")
    key = int(seed).to_bytes(8, "little", signed=True)
    out = np.empty(len(x))
    for i, row in enumerate(x):
        digest = hashlib.blake2b(row.tobytes(), digest_size=8, key=key).digest()
        out[i] = int.from_bytes(digest, "little") / 2.0**64
    return out


class GroupThresholds:
    """Per-group randomised thresholds on the model's scores (Hardt et al. 2016, via Fairlearn's ThresholdOptimizer).

    Fitted on the validation split only (never the test split). Each group gets a mix of two thresholds
    (p0 · [score op0 t0] + p1 · [score op1 t1], and for equalized odds a share p_ignore of a constant) so that the
    chosen rate is equal across groups while accuracy is maximised. The state is plain JSON (`to_dict`), read back
    by `from_dict` without pickle; prediction uses only that state, so a fitted and a loaded object agree.

    Groups too small to constrain (fewer than `min_rows` validation rows) and groups unseen at fit time have
    no threshold of their own: their rows are decided by the plain threshold (`fallback_threshold`, the
    pipeline's evaluate.threshold), and the excluded groups are named in the state. A null sensitive value is
    the group "missing" (`group_keys`), like any other group.

    Decisions are randomised where a group's mix is: row i of a call is positive when its positive probability
    is ≥ the i-th draw of numpy's RandomState(seed), the same draws as ThresholdOptimizer.predict(random_state=
    seed), so the same rows in the same order always get the same decisions.
    """

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None
        self.optimizer_: ThresholdOptimizer | None = None  # the fitted Fairlearn object (not serialised)

    def fit(
        self,
        scores: np.ndarray,
        y: np.ndarray | pd.Series,
        keys: pd.Series,
        constraint: ThresholdConstraint,
        seed: int,
        *,
        min_rows: int,
        fallback_threshold: float = 0.5,
    ) -> GroupThresholds:
        """Fit the thresholds on validation scores.

        Args:
            scores: The model's positive probability per validation row.
            y: 0/1 validation labels.
            keys: Group per validation row (`group_keys`; no None).
            constraint: "demographic_parity", "equalized_odds" or "true_positive_rate_parity" (equal opportunity).
            seed: Seed of the randomised decisions at prediction time (the fit itself is deterministic).
            min_rows: Groups with fewer validation rows are left out of the constraints (see `constrained`): their
                rows, and rows of groups unseen here, are decided by `fallback_threshold` (evaluate.threshold).
            fallback_threshold: The plain threshold for rows of excluded or unseen groups.

        Returns:
            self.

        """
        if constraint not in THRESHOLD_CONSTRAINTS:
            raise ConfigError(f"threshold constraint {constraint!r} is not one of {list(THRESHOLD_CONSTRAINTS)}")
        labels = binary_labels(y, len(keys))
        p = _probabilities(scores, len(keys))
        rows, groups, too_small = _fit_groups(labels, keys, min_rows)
        self.optimizer_ = _optimizer(constraint, p[rows], labels[rows], groups)
        self.state = {
            "constraint": constraint,
            "objective": THRESHOLD_OBJECTIVE,
            "seed": int(seed),
            "min_rows": int(min_rows),
            "excluded": too_small,
            "fallback_threshold": float(fallback_threshold),
            "fit_rows": int(rows.sum()),
            "groups": _group_table(self.optimizer_),
        }
        return self

    def _groups(self, keys: pd.Series) -> pd.Series:
        state = self._fitted()
        if keys.isna().any():
            raise DataError(
                "group keys contain nulls; build them with group_keys (a null sensitive value is 'missing')"
            )
        groups = keys.astype(str)
        # Rows of groups left out of the constraints (too small) or unseen at fit time get the plain threshold.
        return groups.where(groups.isin(list(state["groups"])), None)

    def positive_probability(self, scores: np.ndarray, keys: pd.Series) -> np.ndarray:
        """Each row's probability of a positive decision (Fairlearn's InterpolatedThresholder._pmf_predict)."""
        p = _probabilities(scores, len(keys))
        groups = self._groups(keys).to_numpy()
        out = plain_decisions(p, self._fitted()["fallback_threshold"]).astype(float)
        for group, g in self._fitted()["groups"].items():
            rows = groups == group
            q = g["p0"] * _apply(g["operation0"], p[rows]) + g["p1"] * _apply(g["operation1"], p[rows])
            if "p_ignore" in g:
                q = g["p_ignore"] * g["prediction_constant"] + (1 - g["p_ignore"]) * q
            out[rows] = q
        return out

    def predict(
        self, scores: np.ndarray, keys: pd.Series, features: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decisions and their positive probability.

        Args:
            scores: The model's positive probability per row.
            keys: Group per row (`group_keys`).
            features: The rows' model features (float32, as the model reads them). Each row's draw is then a
                keyed hash of its features and the seed: the same row gets the same decision alone, in any batch
                and at any position, so what the audit measures is what serving does. Without features the
                draws are numpy's RandomState(seed) in row order (Fairlearn's own `predict(random_state=seed)`).

        Returns:
            (y_pred 0/1 ints, positive_probability): y_pred is 1 where positive_probability ≥ the row's draw.

        """
        probability = self.positive_probability(scores, keys)
        seed = self._fitted()["seed"]
        in_order = features is None
        draws = np.random.RandomState(seed).rand(len(probability)) if in_order else row_draws(features, seed)
        return (probability >= draws).astype(int), probability

    def to_dict(self) -> dict[str, Any]:
        """The fitted state as plain JSON types (no numpy, no ±inf floats)."""
        return json.loads(json.dumps(self._fitted(), allow_nan=False))

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> GroupThresholds:
        """Rebuild from `to_dict`'s output (e.g. read from a model artifact's JSON file).

        Raises:
            DataError: The dict is not a GroupThresholds state.

        """
        needed = {"constraint", "seed", "excluded", "fallback_threshold", "groups"}
        if not isinstance(state, dict) or not needed <= set(state) or not state["groups"]:
            raise DataError(f"group thresholds state must hold the keys {sorted(needed)} and at least one group")
        for g in state["groups"].values():
            for op in (g["operation0"], g["operation1"]):
                if op["operator"] not in (">", "<"):
                    raise DataError("group thresholds state has an operator other than '>' or '<'")
        out = cls()
        out.state = json.loads(json.dumps(state, allow_nan=False))
        return out

    def _fitted(self) -> dict[str, Any]:
        if self.state is None:
            raise RuntimeError("GroupThresholds is not fitted; call fit or from_dict first")
        return self.state


# ---------------------------------------------------------------------------------------------------------------
# The rule as the stages and serving apply it, from models/thresholds.json's state
# ---------------------------------------------------------------------------------------------------------------


def fit_thresholds(
    p_val: np.ndarray, val: pd.DataFrame, settings: MitigationParams, min_rows: int, fallback_threshold: float
) -> dict:
    """The postprocess stage's part: per-group thresholds fitted on the validation split, as plain JSON.

    Returns {"constraint": "none"} when post-processing is off.
    """
    if settings.thresholds == NO_THRESHOLDS:
        return {"constraint": NO_THRESHOLDS}
    keys = group_keys(val, settings.target)
    fitted = GroupThresholds().fit(
        p_val,
        val[LABEL_COLUMN].to_numpy(),
        keys,
        settings.thresholds,
        settings.seed,
        min_rows=min_rows,
        fallback_threshold=fallback_threshold,
    )
    return {**fitted.to_dict(), "target": list(settings.target)}


def group_features(state: dict[str, Any]) -> list[str]:
    """The sensitive features whose groups a thresholds state decides by ([] for a model deciding by p >= threshold).

    Raises:
        DataError: The state names no constraint (not one the postprocess stage wrote), or is post-processed but
            names no feature (fail closed: it cannot decide per group).

    """
    if "constraint" not in state:
        raise DataError("the thresholds file names no constraint; it is not one the postprocess stage wrote")
    if state["constraint"] == NO_THRESHOLDS:
        return []
    if not state.get("target"):
        raise DataError("the model's thresholds name no sensitive column; it cannot decide per group")
    return list(state["target"])


def group_decisions(
    p: np.ndarray, frame: pd.DataFrame, state: dict[str, Any], features: np.ndarray
) -> np.ndarray | None:
    """0/1 decisions by the fitted per-group thresholds, or None when the model decides by `p >= threshold`.

    `frame` holds the rows' sensitive columns (processed frames: SENSITIVE_PREFIX + feature); `features` the
    rows' model features (each row's draw hashes them, so evaluation, audit and serving decide alike).
    """
    target = group_features(state)
    if not target:
        return None
    y_pred, _ = GroupThresholds.from_dict(state).predict(p, group_keys(frame, target), features)
    return y_pred


def served_decisions(
    p: np.ndarray, frame: pd.DataFrame, state: dict[str, Any], features: np.ndarray, threshold: float
) -> np.ndarray:
    """The decision the served model gives each row (bool): its per-group thresholds, else p >= threshold.

    The one rule that evaluation, the audit, the explain stage and serving decide by (`group_decisions` for the
    arguments).
    """
    decided = group_decisions(p, frame, state, features)
    return plain_decisions(p, threshold) if decided is None else decided.astype(bool)
