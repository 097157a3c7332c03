"""Like with like: the champion re-scored on the candidate's test rows, so that change rules compare equals.

A champion's recorded metrics come from its own test split; after a data change they describe other rows.
As TFX's Evaluator does with its baseline model, the champion (a pyfunc taking raw rows) is scored on the
candidate's test rows when the two take the same inputs, and the change rules use those figures. When the
input schemas differ the champion cannot be scored on these rows: the change rules are skipped, and said why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from humane.core.metric_names import is_privacy, namespaced
from humane.core.params import flatten
from humane.core.paths import LABEL_COLUMN
from humane.core.protected import sensitive_name
from humane.fairness.metrics import audit_predictions, headline
from humane.fairness.params import AuditParams
from humane.governance.registry import Champion
from humane.governance.store import StoreError
from humane.modeling.evaluation import binary_metrics


@dataclass(frozen=True)
class Rescored:
    """The champion's figures on the candidate's test rows, or why the change rules cannot use any."""

    champion: Champion | None
    skipped: str | None
    notes: list[str]


def input_schema(model_uri: str) -> dict[str, str]:
    """The logged model's input columns and their types, from its MLflow signature."""
    from mlflow.models import get_model_info

    try:
        signature = get_model_info(model_uri).signature
    except Exception as err:  # the store or the artifact could not be read: never "no schema"
        raise StoreError(f"registry: cannot read the signature of {model_uri}: {type(err).__name__}: {err}") from err
    if signature is None or signature.inputs is None:
        raise StoreError(f"registry: {model_uri} was logged without an input signature")
    return {spec.name: getattr(spec.type, "name", str(spec.type)) for spec in signature.inputs.inputs}


# Numeric input types that requests may carry interchangeably (`serving.as_request` casts integers to doubles).
NUMERIC_TYPES = {"integer": "number", "long": "number", "float": "number", "double": "number"}


def schema_difference(champion: dict[str, str], candidate: dict[str, str]) -> str | None:
    """None when the champion can be scored on the candidate's rows; else what stands in the way, in one line.

    It can when every column it takes is one the candidate takes too, with a compatible type (numbers are
    numbers: `as_request` casts integers to doubles). A candidate taking more columns (e.g. the sensitive column a
    post-processed model needs) is no obstacle: the champion reads only its own.
    """
    champion = {c: NUMERIC_TYPES.get(t, t) for c, t in champion.items()}
    candidate = {c: NUMERIC_TYPES.get(t, t) for c, t in candidate.items()}
    parts = []
    if removed := sorted(set(champion) - set(candidate)):
        parts.append(f"the candidate lacks {removed}")
    if retyped := sorted(c for c in set(champion) & set(candidate) if champion[c] != candidate[c]):
        parts.append(f"types differ for {retyped}")
    return "; ".join(parts) or None


def champion_figures(
    probability: np.ndarray,
    threshold: float,
    test: pd.DataFrame,
    sensitive: list[str],
    audit: AuditParams,
    calibration_bins: int,
    decisions: np.ndarray | None = None,
) -> dict[str, float]:
    """test.* and fairness.<feature>.<gap> of scores on the processed test frame (label and sensitive columns)."""
    y = test[LABEL_COLUMN].to_numpy().astype(float)
    metrics = binary_metrics(y, probability, threshold, calibration_bins, decisions)
    # Point estimates only: the change rules compare values, not intervals.
    audits = audit_predictions(
        test, probability, sensitive, threshold, audit.model_copy(update={"bootstrap": 1}), decisions
    )
    flat = flatten(namespaced(metrics, headline(audits)))
    return {k: float(v) for k, v in flat.items()}


def held_types(raw_test: pd.DataFrame) -> dict[str, str]:
    """What the candidate's test rows hold (all columns of the loaded record, masked), as signature types."""
    return {
        c: "boolean" if pd.api.types.is_bool_dtype(t) else "double" if pd.api.types.is_numeric_dtype(t) else "string"
        for c, t in raw_test.dtypes.items()
    }


def load_champion(champion: Champion, champion_uri: str) -> tuple[Any, dict[str, Any], tuple[list[Any], Any]]:
    """The champion's pyfunc, its privacy policy (bins not strict) and its labels (all, positive); StoreError."""
    import mlflow.pyfunc

    try:
        model = mlflow.pyfunc.load_model(champion_uri)
        served = model.unwrap_python_model()
        policy = {**served.policy.to_dict(), "strict_bins": False}
        labels = (list(served.preprocessor.labels), served.preprocessor.positive_label)
    except Exception as err:
        raise StoreError(
            f"registry: champion v{champion.version} could not be loaded to be scored on the "
            f"candidate's test rows: {type(err).__name__}: {err}"
        ) from err
    return model, policy, labels


def incomparable(
    version: str,
    served: tuple[dict[str, Any], tuple[list[Any], Any]],
    candidate_policy: dict[str, Any],
    candidate_labels: tuple[list[Any], Any],
) -> str | None:
    """Why the champion (its policy and labels, `served`) cannot be scored on the candidate's rows, or None."""
    policy, labels = served
    if policy != {**candidate_policy, "strict_bins": False}:
        return (
            f"champion v{version} masks its inputs by another privacy policy, so the candidate's "
            "masked test rows are not its inputs"
        )
    if labels != (list(candidate_labels[0]), candidate_labels[1]):
        return f"champion v{version} predicts other labels ({labels[0]}, positive {labels[1]!r})"
    return None


def score(model: Any, version: str, champion_uri: str, raw_test: pd.DataFrame) -> tuple[Any, float]:
    """The champion's answers on the rows (its own columns) and its threshold; StoreError when it cannot score."""
    from humane.governance.serving import as_request

    try:
        columns = list(input_schema(champion_uri))
        scored: Any = model.predict(as_request(raw_test[columns], model.metadata.get_input_schema()))
        threshold = float(model.model_config["threshold"])
    except Exception as err:
        raise StoreError(
            f"registry: champion v{version} could not be scored on the candidate's test "
            f"rows: {type(err).__name__}: {err}"
        ) from err
    return scored, threshold


def rescore(
    champion: Champion,
    champion_uri: str,
    raw_test: pd.DataFrame,
    test: pd.DataFrame,
    sensitive: list[str],
    audit: AuditParams,
    calibration_bins: int,
    candidate_policy: dict[str, Any],
    candidate_labels: tuple[list[Any], Any],
) -> Rescored:
    """Score the champion's pyfunc on the candidate's test rows.

    `raw_test` holds the masked input rows; `test` the same rows processed (label and sensitive columns).
    A champion that takes other inputs, masks them by another privacy policy (`candidate_policy`: the rows are
    masked by the candidate's) or predicts other labels (`candidate_labels`: labels and positive label) is not
    scored: the change rules are skipped, and said why. One that takes the same inputs but cannot be loaded or
    scored is an error: the decision cannot be taken, so nothing is registered. The champion's recorded
    privacy.* figures (which do not depend on test rows) are kept beside the re-scored ones.
    """
    from humane.governance.serving import DECISION, PROBABILITY

    difference = schema_difference(input_schema(champion_uri), held_types(raw_test))
    if difference is not None:
        why = (
            f"champion v{champion.version} takes inputs the candidate's test rows do not hold as it needs "
            f"({difference.replace('the candidate', 'the rows')})"
        )
        return Rescored(None, why, [])
    missing = [sensitive_name(f) for f in sensitive if sensitive_name(f) not in test]
    if missing or LABEL_COLUMN not in test or len(test) != len(raw_test):
        raise StoreError("rescoring: the processed test frame does not match the interim test rows")
    model, policy, labels = load_champion(champion, champion_uri)
    why = incomparable(champion.version, (policy, labels), candidate_policy, candidate_labels)
    if why is not None:
        return Rescored(None, why, [])
    scored, threshold = score(model, champion.version, champion_uri, raw_test)
    probability = np.asarray(scored[PROBABILITY], dtype=np.float64)
    # The champion's own decisions (per-group thresholds, if it was post-processed); older models lack them.
    decided = np.asarray(scored[DECISION], dtype=np.int64) if DECISION in scored else None
    figures = champion_figures(probability, threshold, test, sensitive, audit, calibration_bins, decided)
    figures.update({k: v for k, v in champion.metrics.items() if is_privacy(k)})
    note = (
        f"champion v{champion.version} re-scored on the candidate's {len(test)} test rows (its recorded "
        "figures came from its own test split)"
    )
    return Rescored(Champion(champion.version, figures, champion.run_id), None, [note])
