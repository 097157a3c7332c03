"""Attribution drift: whether the inputs that drive the champion's decisions moved since its test rows.

A raw input's share of the model's attribution is the mean |attribution| of the input over the attributed rows,
divided by the sum of that over all inputs (shares sum to 1; humane.modeling.attribution.importance's definition).
The reference shares are the champion's overall shares on its test rows, as its run logged them in
`reports/explanations.json`; the batch's come from attributing a seeded sample of the batch's rows (at most
`explain.sample_rows`, seed `explain.seed`) with the champion's served model and its explainer
(`HumaneModel.attribute`). Judged: each of the reference's top inputs, and any input that enters the batch's own
top `explain.top_k`; one whose share moved more than `monitor.attribution_drift_threshold` (either way) drifted,
and a drifted input is a DriftDetected breach naming it.

Only shares are kept (the report, the MLflow metrics): never a row, nor a row's attributions. Nor an error's text
from outside humane: a pandas, scikit-learn or PyTorch message can quote a cell's value, so such an error is named
by its type alone (failure_reason); a HumaneError's message, written never to quote a value, is kept.

Fails closed, as the other checks do (humane.monitoring.checks.unmeasured): attribution drift that cannot be
measured is a figure the rule needs and did not get, so it ends the run MonitoringIncomplete (exit 6) unless a
breach outranks it, and the report says "not measured: <why>". That is the case for a champion whose run holds no
`reports/explanations.json` (tracked before explanations existed), whose served model carries no explainer,
whose explainer's inputs differ from the recorded ones, or whose batch attributions could not be computed or are
all zero. A recorded file that does not parse or lacks its fields is corrupt: IntegrityFailed (exit 12), like
the champion's other artifacts; a store that does not answer is ServerUnavailable (exit 10).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from humane.core import io
from humane.core.errors import HumaneError, IntegrityFailed
from humane.governance.store import client
from humane.modeling.params import ExplainParams
from humane.monitoring.champion import ChampionModel, MonitoringError, _artifact_location, _download

EXPLANATIONS_ARTIFACT = "reports/explanations.json"  # as the track stage logs it
FIGURE = "attribution_drift"  # the name an unmeasured attribution drift goes by (checks.unmeasured)


def not_measured(reason: str, threshold: float) -> dict[str, Any]:
    """The report's entry for attribution drift that could not be measured, and why."""
    return {"measured": False, "reason": reason, "threshold": threshold, "rows": 0, "columns": {}}


def recorded_shares(explanations: Any, where: str) -> dict[str, Any]:
    """The reference's overall shares and top inputs from a parsed explanations.json.

    Returns:
        {"shares": {input: share or None}, "top": [input, ...]}; a share that is not a finite number is None
        (judged as unmeasured, never as unchanged).

    Raises:
        IntegrityFailed: The file lacks attributions.overall.shares or .top (names `where`).

    """
    try:
        overall = explanations["attributions"]["overall"]
        shares = {str(col): _finite(entry["value"]) for col, entry in overall["shares"].items()}
        top = [str(col) for col in overall["top"]]
    except (KeyError, TypeError, AttributeError):
        raise IntegrityFailed(f"{where} is corrupt: it lacks attributions.overall.shares or .top") from None
    return {"shares": shares, "top": top}


def load_reference(uri: str, champion: ChampionModel) -> dict[str, Any]:
    """The champion's recorded shares (recorded_shares), or {"reason": why} when its run holds no explanations.

    Raises:
        ServerUnavailable: The store did not answer (names the server and the artifact).
        IntegrityFailed: The file does not parse or lacks its fields.

    """
    label = f"{champion.name} v{champion.version}"
    mlflow_client = client(uri)
    location = _artifact_location(mlflow_client, uri, champion.run_id, label)
    with tempfile.TemporaryDirectory(prefix="humane-explanations-") as tmp:
        try:
            path = _download(mlflow_client, uri, location, champion.run_id, EXPLANATIONS_ARTIFACT, Path(tmp), label)
        except MonitoringError:
            return {
                "reason": f"{label}'s run {champion.run_id} holds no {EXPLANATIONS_ARTIFACT} (tracked before "
                "explanations existed): there are no reference shares"
            }
        where = f"{label}: {EXPLANATIONS_ARTIFACT} of run {champion.run_id}"
        try:
            explanations = io.read_json(path)
        except Exception as err:
            raise IntegrityFailed(f"{where} is corrupt: not a JSON object ({type(err).__name__})") from None
    return recorded_shares(explanations, where)


def shares(attributions: pd.DataFrame) -> dict[str, float]:
    """Each column's share of the mean |attribution| (sums to 1).

    Raises:
        MonitoringError: No rows, a non-finite attribution, or all attributions zero (no share can be given).

    """
    values = attributions.to_numpy(dtype=np.float64)
    if len(values) == 0 or not np.isfinite(values).all():
        raise MonitoringError(f"the {len(values)} rows' attributions are empty or not all finite")
    mean_abs = np.abs(values).mean(axis=0)
    total = float(mean_abs.sum())
    if total <= 0:
        raise MonitoringError(f"the {len(values)} rows' attributions are all zero")
    return {str(col): float(v / total) for col, v in zip(attributions.columns, mean_abs, strict=True)}


def compare(reference: dict[str, Any], batch: dict[str, float], threshold: float, top_k: int) -> dict[str, Any]:
    """The judged inputs' reference and batch shares, their change, and whether each drifted.

    Args:
        reference: recorded_shares' output ({"shares", "top"}).
        batch: The batch's share per input (shares()).
        threshold: monitor.attribution_drift_threshold: a change beyond it (either way) is drift.
        top_k: How many of the batch's largest shares are judged beside the reference's top inputs.

    Returns:
        The report's entry: {"measured": True, "threshold", "top_k", "rows" (filled by the caller), "columns":
        {input: {"reference", "batch", "change", "drifted"}}}, reference top inputs first. A share that is not
        a finite number gives change and drifted None (checks.unmeasured names it).

    """
    ranked = sorted(batch, key=lambda col: -batch[col])[:top_k]
    columns: dict[str, dict[str, Any]] = {}
    for col in dict.fromkeys([*reference["top"], *ranked]):
        before, after = reference["shares"].get(col), _finite(batch.get(col))
        change = None if before is None or after is None else after - before
        columns[col] = {
            "reference": before,
            "batch": after,
            "change": change,
            "drifted": None if change is None else bool(abs(change) > threshold),
        }
    return {"measured": True, "threshold": threshold, "top_k": top_k, "rows": 0, "columns": columns}


def measure(
    served: Any, request: pd.DataFrame, reference: dict[str, Any], settings: ExplainParams, threshold: float
) -> dict[str, Any]:
    """Attribute a seeded sample of the batch with the served model and compare its shares with the reference.

    Args:
        served: The champion's HumaneModel (its `attribute(frame)` gives rows x the explainer's input columns).
        request: The batch's rows as the served model reads them (its input schema).
        reference: load_reference's output (shares and top inputs, or {"reason"}).
        settings: params.explain (sample_rows, seed, top_k).
        threshold: monitor.attribution_drift_threshold.

    Returns:
        compare's entry, or not_measured's with the reason (never a pass).

    """
    if "reason" in reference:
        return not_measured(reference["reason"], threshold)
    if getattr(served, "explanation", None) is None or not hasattr(served, "attribute"):
        return not_measured(
            "the champion's served model carries no explainer (models/explainer.json was not "
            "logged with it), so the batch cannot be attributed",
            threshold,
        )
    sample = request.sample(n=min(len(request), settings.sample_rows), random_state=settings.seed)
    try:
        attributions = served.attribute(sample.reset_index(drop=True))
        batch = shares(attributions)
    except Exception as err:  # named in the report and as unmeasured: the batch then never passes on it
        return not_measured(failure_reason(err), threshold)
    if set(batch) != set(reference["shares"]):
        return not_measured(
            f"the served explainer's inputs {sorted(batch)} differ from the recorded ones "
            f"{sorted(reference['shares'])}",
            threshold,
        )
    entry = compare(reference, batch, threshold, settings.top_k)
    entry["rows"] = len(sample)
    return entry


def failure_reason(err: Exception) -> str:
    """Why the batch's attributions could not be computed, never quoting a value.

    A HumaneError's message is kept (humane writes them never to quote a value); any other error is named by its
    type alone, as its message (pandas, scikit-learn, PyTorch) can quote a cell of the batch.
    """
    if isinstance(err, HumaneError):
        return f"the batch's attributions could not be computed ({type(err).__name__}: {str(err)[:300]})"
    return f"the batch's attributions could not be computed ({type(err).__name__})"


def breaches(entry: dict[str, Any] | None, kind: str) -> list[dict[str, str]]:
    """One `kind` (DriftDetected) breach naming every drifted input with its shares; [] when none drifted."""
    if not entry or not entry.get("measured"):
        return []
    drifted = {col: row for col, row in entry["columns"].items() if row["drifted"]}
    if not drifted:
        return []
    details = ", ".join(
        f"{col} {row['reference']:.3f} -> {row['batch']:.3f} ({row['change']:+.3f})" for col, row in drifted.items()
    )
    return [
        {
            "breach": kind,
            "subject": "attribution:" + ",".join(drifted),
            "message": f"attribution drifted: {len(drifted)} input(s)' share of the model's attribution moved more "
            f"than {entry['threshold']} from the test rows': {details}",
        }
    ]


def unmeasured(entry: dict[str, Any] | None) -> list[dict[str, str]]:
    """[{"figure", "reason"}] for attribution drift not measured, or a judged input without both shares."""
    if entry is None:  # a result from before attribution drift was judged (monitor.evaluate always sets it)
        return []
    if not entry.get("measured"):
        return [{"figure": FIGURE, "reason": entry.get("reason") or "not measured"}]
    missing = []
    for col, row in entry["columns"].items():
        if row["drifted"] is None:
            side = "reference" if row["reference"] is None else "batch"
            missing.append({"figure": f"{FIGURE}.{col}", "reason": f"no finite {side} share"})
    return missing


def _finite(value: Any) -> float | None:
    """A finite float, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        return None
    return float(value)
