"""One batch judged against the champion: score it, put it in the reference's shape, compute, judge.

Plain functions: the champion and the batch come in, a result (JSON-ready) and its breaches come out. Nothing
here writes a file or talks to a server (flows/monitoring.py does, after every check has passed).
"""

from __future__ import annotations

import re
import warnings
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from humane.core.errors import DataError
from humane.core.paths import LABEL_COLUMN
from humane.core.protected import sensitive_group_labels
from humane.governance.domain import SEPARATOR
from humane.governance.serving import as_request
from humane.monitoring import attribution_drift, checks
from humane.monitoring.batch import Batch
from humane.monitoring.champion import ChampionModel
from humane.monitoring.params import MonitoringSections
from humane.monitoring.reference import (
    DECISION_COLUMN,
    PROBABILITY_COLUMN,
    MonitoredColumns,
    domain_shares,
    monitored_frame,
)


def request(champion: ChampionModel, batch: Batch) -> pd.DataFrame:
    """The batch's rows as the served model reads them: its input schema's columns and types."""
    schema = champion.model.metadata.get_input_schema()
    return as_request(batch.frame[[spec.name for spec in schema.inputs]], schema)


def score(champion: ChampionModel, batch: Batch) -> pd.DataFrame:
    """The champion's pyfunc output for the batch (probability, label, decision, out_of_domain, domain_rules)."""
    from mlflow.exceptions import MlflowException

    rows = request(champion, batch)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return champion.model.predict(rows).reset_index(drop=True)
    except MlflowException as err:  # the signature refused a column: name the file (the message names the column)
        raise DataError(f"{batch.path}: the served model refused the batch: {err.message}") from None
    except DataError as err:
        raise DataError(f"{batch.path}: {err}") from None


def monitored(champion: ChampionModel, batch: Batch, scores: pd.DataFrame, params: MonitoringSections) -> pd.DataFrame:
    """The batch in the reference's shape: inputs after the model's privacy policy, groups, label, scores."""
    served = champion.served
    columns = MonitoredColumns.of(params)
    return monitored_frame(
        batch.frame,
        scores,
        served.policy,
        list(served.preprocessor.inputs),
        columns,
        served.preprocessor.positive_label,
        list(served.preprocessor.labels),
        str(batch.path),
    )


def evaluate(
    champion: ChampionModel,
    batch: Batch,
    scores: pd.DataFrame,
    params: MonitoringSections,
    when: datetime,
    explanations: dict[str, Any],
) -> dict[str, Any]:
    """Every figure of the batch against the champion's reference, the breached thresholds and the unmeasured.

    `breaches` lists the thresholds the batch breached; `incomplete` each figure a rule needs that could not be
    computed (checks.unmeasured), which ends the run MonitoringIncomplete when nothing was breached.
    `explanations`: the champion's recorded attribution shares (attribution_drift.load_reference).
    """
    sensitive = list(params.data.sensitive_features)
    frame = monitored(champion, batch, scores, params)
    reference = champion.reference
    withheld = MonitoredColumns.of(params).withheld
    inputs = [c for c in champion.served.preprocessor.inputs if c not in withheld]
    recorded = checks.recorded_figures(
        champion.audit, champion.metrics, reference, sensitive, params.audit.min_group_size
    )
    labeled_rows = int(frame[LABEL_COLUMN].notna().sum()) if batch.labeled else 0
    groups = checks.groups(frame, sensitive, batch.labeled, params.audit)
    performance = _performance(frame, reference, recorded, groups, sensitive, batch.labeled, params)
    result: dict[str, Any] = {
        "batch": batch.name,
        "file": str(batch.path),
        "batch_time": when.isoformat(),
        "rows": len(frame),
        "labeled": batch.labeled,
        "labeled_rows": labeled_rows,
        "notes": notes(champion, batch, params, recorded.calibration),
        "model": {"name": champion.name, "version": champion.version, "run_id": champion.run_id},
        "reference_rows": len(reference),
        "selection_rate": {
            "batch": float(frame[DECISION_COLUMN].mean()),
            "reference": float(reference[DECISION_COLUMN].mean()),
        },
        "drift": checks.drift(reference, frame, inputs, params.monitor),
        "attribution_drift": attribution(champion, batch, params, explanations),
        "out_of_domain": domain_shares(scores, SEPARATOR),
        "performance": performance,
        "groups": groups,
        "test_time": {"groups": recorded.groups, "gaps": recorded.gaps},
        "min_group_size": params.audit.min_group_size,
        "thresholds": params.monitor.model_dump(),
    }
    result["breaches"] = checks.breaches(result, recorded, params.monitor, sensitive)
    result["incomplete"] = checks.unmeasured(result, recorded, params.monitor, sensitive)
    return result


def _performance(
    frame: pd.DataFrame,
    reference: pd.DataFrame,
    recorded: checks.Recorded,
    groups: dict[str, Any],
    sensitive: list[str],
    labeled: bool,
    params: MonitoringSections,
) -> dict[str, Any]:
    """The batch's performance: test-time figures, CBPE's estimates, and the realised ones when it is labelled."""
    performance: dict[str, Any] = {
        "test_time": {m: recorded.overall[m] for m in ("accuracy", "roc_auc")},
        "calibration": recorded.calibration,
        "estimated": checks.estimate(reference, frame),
        "estimated_groups": checks.group_estimates(reference, frame, sensitive, params.audit.min_group_size),
        "realised": None,
    }
    if labeled:
        rows = frame[frame[LABEL_COLUMN].notna()].reset_index(drop=True)
        performance["realised"] = checks.realised(rows, params.audit)
        performance["realised_groups"] = realised_groups(rows, groups, sensitive)
    return performance


def attribution(
    champion: ChampionModel, batch: Batch, params: MonitoringSections, explanations: dict[str, Any]
) -> dict[str, Any]:
    """The batch's attribution drift against the champion's recorded shares (attribution_drift.measure's entry)."""
    rows = request(champion, batch)
    threshold = params.monitor.attribution_drift_threshold
    return attribution_drift.measure(champion.served, rows, explanations, params.explain, threshold)


def notes(
    champion: ChampionModel, batch: Batch, params: MonitoringSections, calibration: dict[str, float]
) -> list[str]:
    """The report's notes: the batch's own, CBPE's assumption, and the inputs the reference does not store."""
    withheld = MonitoredColumns.of(params).withheld
    unwatched = [c for c in champion.served.preprocessor.inputs if c in withheld]
    out = [*batch.notes, calibration_note(calibration)]
    if unwatched:
        out.append(
            f"no drift measured for {unwatched}: inputs kept although they look identifying (privacy.keep) or "
            "derived from dates (data.dates) are not stored row by row in the reference"
        )
    return out


def realised_groups(labeled: pd.DataFrame, groups: dict[str, Any], sensitive: list[str]) -> dict[str, Any]:
    """Per group of each sensitive feature: realised accuracy (with the audit's CI) and ROC AUC."""
    labels = sensitive_group_labels(labeled, sensitive)
    y, p = labeled[LABEL_COLUMN].to_numpy(dtype=float), labeled[PROBABILITY_COLUMN].to_numpy()
    out: dict[str, Any] = {}
    for feature in sensitive:
        out[feature] = {}
        for group, row in groups[feature]["groups"].items():
            rows = (labels[feature] == group).to_numpy()
            withheld = row["too_small"] or row.get("labels_too_small", False)
            metrics = (
                {}
                if withheld
                else {"accuracy": row["metrics"]["accuracy"], "roc_auc": checks._figure(checks.auc(y[rows], p[rows]))}
            )
            # A group too small to judge is numbered, not named (nothing matches its label): keep its own count.
            count = row.get("count", 0) if withheld and not rows.any() else int(rows.sum())
            out[feature][group] = {"count": int(count), "too_small": withheld, "metrics": metrics}
    return out


def calibration_note(calibration: dict[str, float]) -> str:
    """CBPE's assumption, with the champion's measured calibration."""
    ece = calibration.get("ece")
    measured = f"its test-time expected calibration error is {ece:.3f}" if ece is not None else "not measured"
    return (
        f"estimated performance (CBPE) assumes calibrated probabilities; {measured} (reports/metrics.json of "
        "the champion's run), and CBPE recalibrates on the reference rows where needed"
    )


def breach_name(breaches: list[dict[str, str]]) -> str | None:
    """The name of the run's end state: the first breached kind in humane.monitoring.params.BREACHES order."""
    from humane.monitoring.params import BREACHES

    kinds = {b["breach"] for b in breaches}
    return next((k for k in BREACHES if k in kinds), None)


def state_name(result: dict[str, Any]) -> str | None:
    """The run's end state: a breach kind, else MonitoringIncomplete, else None (Completed).

    The first breach kind in BREACHES order (breach_name); else MonitoringIncomplete when a figure a rule needs
    could not be computed (result["incomplete"]). A breach outranks an incomplete batch: what was measured already
    breached; the unmeasured figures are named beside it.
    """
    return breach_name(result["breaches"]) or (checks.INCOMPLETE if result.get("incomplete") else None)


def passed(result: dict[str, Any]) -> str:
    """What a Completed batch reads as (nothing breached, every required figure computed), without a full stop.

    An unlabeled batch was judged only on what needs no label (drift, the out-of-domain share, attribution drift,
    CBPE's estimates, the demographic-parity gaps): it never reads "no threshold breached", but names what waits
    for its labels.
    """
    if result.get("labeled"):
        return "no threshold breached"
    return (
        "no label-free threshold breached; realised performance and the label gaps are not judged: the batch has "
        "no labels"
    )


def _metric_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)


def flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The figures MLflow plots over batches: drift distances, domain share, performance, group rates and gaps."""
    out: dict[str, float] = {
        "rows": result["rows"],
        "labeled_rows": result["labeled_rows"],
        "selection_rate": result["selection_rate"]["batch"],
        "out_of_domain.share": result["out_of_domain"]["share"],
        "breaches": len(result["breaches"]),
        "incomplete": len(result.get("incomplete", [])),
    }
    for feature, entry in result["drift"].items():
        out[f"drift.{feature}"] = entry["distance"]
    for column, row in (result.get("attribution_drift") or {}).get("columns", {}).items():
        out[f"attribution_share.{column}"] = row["batch"]
    performance = result["performance"]
    for kind in ("estimated", "realised"):
        for metric, figure in (performance.get(kind) or {}).items():
            out[f"{kind}.{metric}"] = figure["value"]
    for feature, entry in result["groups"].items():
        for gap, figure in entry["gaps"].items():
            out[f"gap.{feature}.{gap}"] = figure["value"]
        for group, row in entry["groups"].items():
            for metric, figure in row["metrics"].items():
                out[f"group.{feature}.{group}.{metric}"] = figure["value"]
    return {_metric_name(k): float(v) for k, v in out.items() if v is not None and np.isfinite(float(v))}
