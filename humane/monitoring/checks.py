"""What a batch is judged on against the champion's reference, and the thresholds it breaches.

NannyML for drift and estimated performance, humane.fairness.metrics (the audit's one definition, with its
bootstrap) for group rates and gaps.

Every comparison is with the champion's own reference: its test rows as the model read them (drift, CBPE's
calibration, per-group ROC AUC) and its test-time audit with 95% bootstrap intervals (group rates and gaps).
NannyML is imported lazily (its import takes seconds and reads NML_DISABLE_USAGE_LOGGING, set here first).

Fails closed: a figure a rule needs that cannot be computed (NaN, infinite, missing, or its computation raised) is
never read as "within the threshold". `unmeasured` names each such figure and why; the flow then ends in
MonitoringIncomplete (flows/monitoring.py lists the figures each batch must give).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from humane.core.paths import LABEL_COLUMN
from humane.core.protected import sensitive_group_labels
from humane.fairness.metrics import audit_feature, overall_with_ci, shown_names
from humane.fairness.params import AuditParams
from humane.monitoring import attribution_drift
from humane.monitoring.params import MONITORED_GAPS, MonitorParams
from humane.monitoring.reference import DECISION_COLUMN, PROBABILITY_COLUMN

Z95 = 1.959964  # a 95% interval from NannyML's sampling error (its own boundaries are ±3 sampling errors)
DRIFT, PERFORMANCE, BIAS = "DriftDetected", "PerformanceDegraded", "BiasDegraded"
INCOMPLETE = "MonitoringIncomplete"  # a required figure could not be computed: the batch is not judged as passing
# The gap each group metric makes: which per-group rates a gap is the spread of.
GAP_RATES = {
    "demographic_parity_difference": ("selection_rate",),
    "equalized_odds_difference": ("tpr", "fpr"),
    "equal_opportunity_difference": ("tpr",),
}
LABEL_GAPS = ("equalized_odds_difference", "equal_opportunity_difference")
# Per group, the test-time ROC AUC has no interval by design (recorded_figures computes it on the reference rows,
# without the audit's bootstrap): reported beside the batch's, never judged. Every other group metric is judged.
GROUP_REPORTED_ONLY = ("roc_auc",)


def nannyml() -> Any:
    """NannyML, imported with its usage logging off."""
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
    import nannyml as nml

    return nml


def _figure(value: float | None, lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    """A figure with its interval; a non-finite value becomes None, with the reason it was not computed."""

    def clean(x: float | None) -> float | None:
        return None if x is None or not math.isfinite(float(x)) else float(x)

    out: dict[str, Any] = {"value": clean(value), "lo": clean(lo), "hi": clean(hi)}
    if value is not None and out["value"] is None:
        out["reason"] = f"the computation gave {float(value)}"
    return out


def _missing(reason: str) -> dict[str, Any]:
    """A figure that could not be computed, and why."""
    return {"value": None, "lo": None, "hi": None, "reason": reason}


def _failure(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err)[:300]}"


def drift(reference: pd.DataFrame, batch: pd.DataFrame, features: list[str], params: MonitorParams) -> dict[str, Any]:
    """Univariate drift of each input feature and of the predicted probability (NannyML), the batch as one chunk.

    A distance NannyML cannot give (NaN for a column empty in the batch, or a failed calculation) is None, with
    `drifted` None and the reason: unmeasured, never "not drifted".
    """
    nml = nannyml()
    columns = [*features, PROBABILITY_COLUMN]
    calculator = nml.UnivariateDriftCalculator(
        column_names=columns,
        continuous_methods=[params.drift_method_continuous],
        categorical_methods=[params.drift_method_categorical],
        chunk_number=1,
    )
    failed = ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NannyML warns that one reference chunk gives no spread for thresholds
            calculator.fit(reference[columns])
            result = calculator.calculate(batch[columns]).filter(period="analysis").to_df()
    except Exception as err:  # named per feature below: the batch then ends MonitoringIncomplete, never passes
        result, failed = None, f"NannyML's drift calculation failed ({_failure(err)})"
    out = {}
    for column in columns:
        limit = params.prediction_drift_threshold if column == PROBABILITY_COLUMN else params.drift_threshold
        entry: dict[str, Any] = {"method": None, "distance": None, "threshold": limit, "drifted": None}
        methods = [] if result is None else [m for c, m, k in result.columns if c == column and k == "value"]
        if len(methods) == 1:
            entry["method"] = methods[0]
            entry["distance"] = _figure(float(result[(column, methods[0], "value")].iloc[0]))["value"]
        if entry["distance"] is None:
            entry["reason"] = (
                failed
                if result is None
                else f"NannyML gave no finite {entry['method'] or 'drift'} distance (e.g. the column is empty in "
                "the batch)"
            )
        else:
            entry["drifted"] = bool(entry["distance"] > limit)
        out["prediction" if column == PROBABILITY_COLUMN else column] = entry
    return out


def estimate(reference: pd.DataFrame, batch: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """CBPE's estimated accuracy and ROC AUC (NannyML), with a 95% interval from its sampling error.

    CBPE assumes the probabilities are calibrated (it recalibrates on the reference when they are not); the
    champion's test-time calibration is reported beside the estimates. A failed estimation gives figures without
    values, each with the reason.
    """
    nml = nannyml()
    estimator = nml.CBPE(
        y_pred_proba=PROBABILITY_COLUMN,
        y_pred=DECISION_COLUMN,
        y_true=LABEL_COLUMN,
        problem_type="classification_binary",
        metrics=["accuracy", "roc_auc"],
        chunk_number=1,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator.fit(reference[[PROBABILITY_COLUMN, DECISION_COLUMN, LABEL_COLUMN]])
            batch_rows = batch[[PROBABILITY_COLUMN, DECISION_COLUMN]]
            result = estimator.estimate(batch_rows).filter(period="analysis").to_df()
    except Exception as err:  # each metric is then a named unmeasured figure, never a pass
        reason = f"NannyML's CBPE failed ({_failure(err)})"
        return {metric: _missing(reason) for metric in ("accuracy", "roc_auc")}
    out = {}
    for metric in ("accuracy", "roc_auc"):
        value, error = float(result[(metric, "value")].iloc[0]), float(result[(metric, "sampling_error")].iloc[0])
        out[metric] = _figure(value, value - Z95 * error, value + Z95 * error)
    return out


def auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC (scikit-learn); None where one label is absent."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


@dataclass(frozen=True)
class Recorded:
    """The champion's test-time figures: overall and per-group metrics with 95% CIs, gaps with CIs."""

    overall: dict[str, dict[str, float | None]]
    groups: dict[str, dict[str, dict[str, Any]]]  # feature -> group -> {count, too_small, metrics}
    gaps: dict[str, dict[str, dict[str, float | None]]]  # feature -> gap -> {value, lo, hi}
    calibration: dict[str, float]
    notes: list[str] = field(default_factory=list)


def recorded_figures(
    audit: dict[str, Any], metrics: dict[str, Any], reference: pd.DataFrame, features: list[str], min_group_size: int
) -> Recorded:
    """The champion's recorded audit and metrics, with ROC AUC (overall, per group) from its reference rows."""
    y, p = reference[LABEL_COLUMN].to_numpy(), reference[PROBABILITY_COLUMN].to_numpy()
    overall = {m: _figure(v["value"], v["lo"], v["hi"]) for m, v in audit["overall"].items()}
    overall["roc_auc"] = _figure(metrics["model"].get("roc_auc"))
    labels = sensitive_group_labels(reference, features)
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in audit["features"]:
        feature = entry["feature"]
        groups[feature] = {}
        for g in entry["groups"]:
            rows = (labels[feature] == g["group"]).to_numpy() if feature in labels else np.zeros(len(y), bool)
            m = {k: _figure(v["value"], v["lo"], v["hi"]) for k, v in g["metrics"].items()}
            m["roc_auc"] = _figure(auc(y[rows], p[rows]) if not g["too_small"] and rows.any() else None)
            groups[feature][g["group"]] = {"count": g["count"], "too_small": g["too_small"], "metrics": m}
    gaps = {
        e["feature"]: {k: _figure(v["value"], v["lo"], v["hi"]) for k, v in e["gaps"].items()}
        for e in audit["features"]
    }
    calibration = {k: float(metrics["model"][k]) for k in ("ece", "brier") if k in metrics["model"]}
    return Recorded(overall, groups, gaps, calibration)


def groups(frame: pd.DataFrame, features: list[str], labeled: bool, audit: AuditParams) -> dict[str, Any]:
    """Per sensitive feature (and their intersection): group counts and rates with bootstrap CIs, and the gaps.

    The audit's own functions and settings (humane.fairness.metrics.audit_feature: same bootstrap, same
    min_group_size: smaller groups are withheld and left out of the gaps). The selection rate and the
    demographic-parity gaps need no label: they are measured on every row. With labels, the label metrics and
    gaps (accuracy, TPR, FPR, equalized odds ...) are measured on the labeled rows and added; a group with too
    few labeled rows gets `labels_too_small` and no label metrics.
    """
    out = _groups(frame, features, None, audit, ("selection_rate",))
    if not labeled:
        return out
    rows = frame[frame[LABEL_COLUMN].notna()].reset_index(drop=True)
    with_labels = _groups(rows, features, rows[LABEL_COLUMN].to_numpy(dtype=float), audit, None)
    for feature, entry in out.items():
        measured = with_labels[feature]
        for group, row in entry["groups"].items():
            extra = measured["groups"].get(group)
            row["labels_too_small"] = extra is None or extra["too_small"]
            if not row["labels_too_small"]:
                row["metrics"].update({k: v for k, v in extra["metrics"].items() if k != "selection_rate"})
        entry["gaps"].update({k: v for k, v in measured["gaps"].items() if not k.startswith("demographic_parity")})
    return out


def _groups(
    rows: pd.DataFrame, features: list[str], y: np.ndarray | None, audit: AuditParams, kept: tuple[str, ...] | None
) -> dict[str, Any]:
    """audit_feature per feature on `rows`; without labels (`y` None) only `kept` metrics and the DP gaps."""
    y_pred, p = rows[DECISION_COLUMN].to_numpy(dtype=float), rows[PROBABILITY_COLUMN].to_numpy()
    labels_given = y is not None
    y = y if labels_given else np.zeros(len(rows))
    out = {}
    for feature, labels in sensitive_group_labels(rows, features).items():
        result = audit_feature(feature, y, y_pred, p, labels, audit)
        table = {
            g["group"]: {
                "count": g["count"],
                "too_small": g["too_small"],
                "metrics": {k: v for k, v in g["metrics"].items() if kept is None or k in kept},
            }
            for g in result.groups
        }
        gaps = {
            k: _figure(v["value"], v["lo"], v["hi"])
            for k, v in result.gaps.items()
            if labels_given or k.startswith("demographic_parity")
        }
        out[feature] = {"groups": table, "gaps": gaps, "too_small": result.too_small}
    return out


def realised(frame: pd.DataFrame, audit: AuditParams) -> dict[str, dict[str, Any]]:
    """Accuracy (with the audit's bootstrap CI) and ROC AUC on the batch's labeled rows."""
    rows = frame[frame[LABEL_COLUMN].notna()]
    y, y_pred = rows[LABEL_COLUMN].to_numpy(dtype=float), rows[DECISION_COLUMN].to_numpy(dtype=float)
    p = rows[PROBABILITY_COLUMN].to_numpy()
    accuracy = overall_with_ci(y, y_pred, p, audit)["accuracy"]
    roc_auc = auc(y, p)
    return {
        "accuracy": _figure(accuracy["value"], accuracy["lo"], accuracy["hi"]),
        "roc_auc": _figure(roc_auc)
        if roc_auc is not None
        else _missing(f"the {len(rows)} labeled rows hold one label class only"),
    }


def group_estimates(
    reference: pd.DataFrame, batch: pd.DataFrame, features: list[str], min_group_size: int
) -> dict[str, dict[str, dict[str, Any]]]:
    """CBPE per sensitive group: fitted on the group's reference rows, estimated on its batch rows.

    A group with fewer than `min_group_size` rows on either side is withheld; one with fewer batch rows is
    numbered, never named (`humane.fairness.metrics.shown_names`). A group large enough on both sides whose
    reference rows hold one label only cannot be estimated: its figures are unmeasured, with the reason.
    """
    ref_labels, batch_labels = sensitive_group_labels(reference, features), sensitive_group_labels(batch, features)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for feature in features:
        out[feature] = {}
        shown = shown_names(batch_labels[feature].value_counts().to_dict(), min_group_size)
        for group in sorted(set(batch_labels[feature])):
            ref_rows = reference[(ref_labels[feature] == group).to_numpy()]
            rows = batch[(batch_labels[feature] == group).to_numpy()]
            if min(len(ref_rows), len(rows)) < min_group_size:
                out[feature][shown[group]] = {"count": len(rows), "too_small": True, "metrics": {}}
                continue
            metrics = estimate(ref_rows, rows) if ref_rows[LABEL_COLUMN].nunique() >= 2 else _one_class(ref_rows)
            out[feature][group] = {"count": len(rows), "too_small": False, "metrics": metrics}
    return out


def _one_class(reference: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """CBPE's figures for a group whose reference rows hold one label class: unmeasured, with the reason."""
    reason = f"the group's {len(reference)} reference rows hold one label class: CBPE cannot be fitted on them"
    return {metric: _missing(reason) for metric in ("accuracy", "roc_auc")}


def _dropped(reference: dict[str, float | None], batch: dict[str, float | None], limit: float) -> float | None:
    """How far the batch's figure fell below the reference's when it is a breach, else None.

    None too when either figure has no value: never a pass on its own, as `unmeasured` names that figure and the
    run then ends MonitoringIncomplete. A missing interval cannot keep a drop beyond the margin from breaching.
    """
    if reference["value"] is None or batch["value"] is None:
        return None
    drop = reference["value"] - batch["value"]
    separate = reference["lo"] is None or batch["hi"] is None or batch["hi"] < reference["lo"]
    return drop if drop > limit and separate else None


def _grown(reference: dict[str, float | None], batch: dict[str, float | None], limit: float) -> float | None:
    """How far the batch's gap grew above the reference's when it is a breach, else None.

    None too when either gap has no value: `unmeasured` names it (MonitoringIncomplete), as for `_dropped`.
    """
    if reference["value"] is None or batch["value"] is None:
        return None
    rise = batch["value"] - reference["value"]
    separate = reference["hi"] is None or batch["lo"] is None or batch["lo"] > reference["hi"]
    return rise if rise > limit and separate else None


def _fmt(figure: dict[str, float | None]) -> str:
    if figure["value"] is None:
        return "n/a"
    ci = f" [{figure['lo']:.3f}, {figure['hi']:.3f}]" if figure["lo"] is not None and figure["hi"] is not None else ""
    return f"{figure['value']:.3f}{ci}"


def gap_limit(max_increase: dict[str, float], feature: str, gap: str, sensitive: list[str]) -> float | None:
    """The allowed increase of a gap: the feature's own key, else "*" (each sensitive feature on its own)."""
    if f"{feature}.{gap}" in max_increase:
        return max_increase[f"{feature}.{gap}"]
    return max_increase.get(f"*.{gap}") if feature in sensitive else None


def breaches(result: dict[str, Any], reference: Recorded, params: MonitorParams, sensitive: list[str]) -> list[dict]:
    """The breached thresholds, each {"breach", "subject", "message"}; an empty list when the batch passes.

    In order: drift (inputs, prediction, out-of-domain rows, attributions), performance (overall, then per
    group), bias (each monitored gap of each feature).
    """
    return [
        *_drift_breaches(result, params),
        *attribution_drift.breaches(result.get("attribution_drift"), DRIFT),
        *_performance_breaches(result["performance"], reference, params),
        *_bias_breaches(result.get("groups") or {}, reference, params, sensitive),
    ]


def _breach(kind: str, subject: str, message: str) -> dict[str, str]:
    return {"breach": kind, "subject": subject, "message": message}


def _drift_breaches(result: dict[str, Any], params: MonitorParams) -> list[dict[str, str]]:
    """Too many inputs drifted, the predicted probability drifted, too many rows outside the training domain."""
    found: list[dict[str, str]] = []
    drift_ = result["drift"]
    features = [f for f in drift_ if f != "prediction"]
    drifted = [f for f in features if drift_[f]["drifted"]]
    if features and len(drifted) / len(features) > params.max_drifted_share:
        details = ", ".join(f"{f} {drift_[f]['method']} {drift_[f]['distance']:.3f}" for f in drifted)
        message = (
            f"{len(drifted)} of {len(features)} input features drifted (distance > {params.drift_threshold}): {details}"
        )
        found.append(_breach(DRIFT, ",".join(drifted), message))
    if drift_["prediction"]["drifted"]:
        d = drift_["prediction"]
        message = f"predicted probability drifted: {d['method']} {d['distance']:.3f} > {d['threshold']}"
        found.append(_breach(DRIFT, "prediction", message))
    domain = result["out_of_domain"]
    if domain["share"] > params.max_out_of_domain_share:
        top = sorted(domain["per_rule"].items(), key=lambda kv: -kv[1])[:3]
        message = (
            f"{domain['share']:.1%} of rows are outside the training domain (> "
            f"{params.max_out_of_domain_share:.1%}): " + ", ".join(f"{r} {s:.1%}" for r, s in top)
        )
        found.append(_breach(DRIFT, "out_of_domain", message))
    return found


def _performance_breaches(
    performance: dict[str, Any], reference: Recorded, params: MonitorParams
) -> list[dict[str, str]]:
    """Each metric of params.max_drop that fell further below its test-time figure, overall then per group.

    Realised figures when the batch is labelled, else CBPE's estimates.
    """
    found: list[dict[str, str]] = []
    kind = "realised" if performance.get("realised") else "estimated"
    measured = performance.get("realised") or performance.get("estimated") or {}
    for metric, limit in params.max_drop.items():
        if metric in measured:
            drop = _dropped(reference.overall[metric], measured[metric], limit)
            if drop is not None:
                message = (
                    f"{kind} {metric} {_fmt(measured[metric])} is {drop:.3f} below the test-time "
                    f"{_fmt(reference.overall[metric])} (> {limit})"
                )
                found.append(_breach(PERFORMANCE, f"overall.{metric}", message))
        for feature, table in performance.get(f"{kind}_groups", {}).items():
            found += _group_drops(kind, metric, limit, feature, table, reference.groups.get(feature, {}))
    return found


def _group_drops(
    kind: str, metric: str, limit: float, feature: str, table: dict[str, Any], recorded: dict[str, Any]
) -> list[dict[str, str]]:
    """The groups of one feature whose `metric` fell more than `limit` below their test-time interval."""
    found: list[dict[str, str]] = []
    for group, row in table.items():
        ref = recorded.get(group)
        if row["too_small"] or ref is None or ref["too_small"] or metric in GROUP_REPORTED_ONLY:
            continue  # withheld (too few rows, here or at test time) or reported only: not judged
        if metric not in row["metrics"] or metric not in ref["metrics"]:
            continue  # unmeasured: named by `unmeasured` (MonitoringIncomplete)
        drop = _dropped(ref["metrics"][metric], row["metrics"][metric], limit)
        if drop is not None:
            message = (
                f"{kind} {metric} of {feature}={group} {_fmt(row['metrics'][metric])} is "
                f"{drop:.3f} below its test-time {_fmt(ref['metrics'][metric])} "
                f"(> {limit})"
            )
            found.append(_breach(PERFORMANCE, f"{feature}={group}.{metric}", message))
    return found


def _bias_breaches(
    groups: dict[str, Any], reference: Recorded, params: MonitorParams, sensitive: list[str]
) -> list[dict[str, str]]:
    """Each monitored gap that grew more than its allowed increase above the test-time gap (intervals apart)."""
    found: list[dict[str, str]] = []
    for feature, entry in groups.items():
        for gap in MONITORED_GAPS:
            limit = gap_limit(params.max_increase, feature, gap, sensitive)
            if limit is None or gap not in entry["gaps"] or feature not in reference.gaps:
                continue
            rise = _grown(reference.gaps[feature][gap], entry["gaps"][gap], limit)
            if rise is None:
                continue
            message = (
                f"{feature} {gap} {_fmt(entry['gaps'][gap])} grew {rise:.3f} above the test-time "
                f"{_fmt(reference.gaps[feature][gap])} (> {limit}); "
                + _group_rates(entry, reference.groups.get(feature, {}), gap)
            )
            found.append(_breach(BIAS, f"{feature}.{gap}", message))
    return found


def unmeasured(result: dict[str, Any], reference: Recorded, params: MonitorParams, sensitive: list[str]) -> list[dict]:
    """Each figure a rule needs that could not be computed, as {"figure", "reason"}; empty when every one was.

    Required (a missing, NaN or infinite value is named, never read as within the threshold):
    the drift distance of every monitored input and of the predicted probability; the out-of-domain share; the
    attribution shares of the judged inputs (humane.monitoring.attribution_drift; "attribution_drift" when the
    champion's attributions could not be compared at all, e.g. its run holds no explanations); for
    each metric in `max_drop`, its test-time figure, CBPE's estimate and, on a labeled batch, the realised figure,
    overall and for each group judged at test time that is large enough in the batch (its test-time figure with
    its 95% interval; a group's ROC AUC has none and is reported only, GROUP_REPORTED_ONLY); each gap with a limit in
    `max_increase` (the label gaps on a labeled batch only), at test time and in the batch. A gap cannot be
    computed when the batch holds fewer than two groups of `audit.min_group_size` rows: that is named too.
    """
    missing = [
        {"figure": f"drift.{feature}", "reason": entry.get("reason") or "no drift distance"}
        for feature, entry in result["drift"].items()
        if entry.get("distance") is None
    ]
    share = result["out_of_domain"].get("share")
    if share is None or not math.isfinite(share):
        missing.append({"figure": "out_of_domain.share", "reason": f"the share of rows is {share}"})
    return [
        *missing,
        *attribution_drift.unmeasured(result.get("attribution_drift")),
        *_unmeasured_performance(result, reference, params),
        *_unmeasured_gaps(result, reference, params, sensitive),
    ]


def _absent(name: str, figure: dict[str, Any] | None, otherwise: str) -> list[dict[str, str]]:
    """[{"figure", "reason"}] when `figure` has no value, else []."""
    if figure is not None and figure.get("value") is not None:
        return []
    return [{"figure": name, "reason": (figure or {}).get("reason") or otherwise}]


def _no_interval(name: str, figure: dict[str, Any] | None) -> list[dict[str, str]]:
    """[{"figure", "reason"}] when a judged test-time group figure lacks its value or its 95% interval, else []."""
    absent = _absent(name, figure, "not in the champion's recorded audit")
    if absent or (figure["lo"] is not None and figure["hi"] is not None):
        return absent
    return [{"figure": name, "reason": "the champion's recorded audit gives it no 95% interval"}]


def _unmeasured_performance(result: dict[str, Any], reference: Recorded, params: MonitorParams) -> list[dict]:
    performance = result.get("performance") or {}
    labeled = bool(result.get("labeled"))
    kinds = ("estimated", "realised") if labeled else ("estimated",)
    judged = "realised" if labeled else "estimated"
    missing = []
    for metric in params.max_drop:
        recorded = reference.overall.get(metric)
        missing += _absent(f"test_time.{metric}", recorded, "not in the champion's recorded audit or metrics")
        for kind in kinds:
            missing += _absent(f"{kind}.{metric}", (performance.get(kind) or {}).get(metric), f"no {kind} figure")
        by_group = performance.get(f"{judged}_groups")
        if by_group is None:
            missing.append({"figure": f"{judged}_groups.{metric}", "reason": "no per-group figures"})
            continue
        for feature, table in by_group.items():
            for group, row in table.items():
                ref = reference.groups.get(feature, {}).get(group)
                if row["too_small"] or ref is None or ref["too_small"] or metric in GROUP_REPORTED_ONLY:
                    continue  # withheld (too few rows, here or at test time) or reported only: not judged
                missing += _no_interval(f"test_time.{feature}={group}.{metric}", ref["metrics"].get(metric))
                name = f"{judged}.{feature}={group}.{metric}"
                missing += _absent(name, row["metrics"].get(metric), f"no {judged} figure for the group")
    return missing


def _unmeasured_gaps(
    result: dict[str, Any], reference: Recorded, params: MonitorParams, sensitive: list[str]
) -> list[dict]:
    labeled = bool(result.get("labeled"))
    missing = []
    groups = result.get("groups") or {}
    for feature in dict.fromkeys([*sensitive, *groups]):
        entry = groups.get(feature)
        for gap in MONITORED_GAPS:
            limit = gap_limit(params.max_increase, feature, gap, sensitive)
            if limit is None or (gap in LABEL_GAPS and not labeled):
                continue  # not monitored, or a label gap on a batch without labels (the report's notes say so)
            recorded = reference.gaps.get(feature, {}).get(gap)
            missing += _absent(f"test_time.{feature}.{gap}", recorded, "not in the champion's recorded audit")
            if entry is None:
                missing.append({"figure": f"{feature}.{gap}", "reason": "no group rates computed for the feature"})
                continue
            why = _too_few(entry, gap in LABEL_GAPS, result.get("min_group_size"))
            missing += _absent(f"{feature}.{gap}", entry["gaps"].get(gap), why)
    return missing


def _too_few(entry: dict[str, Any], labels: bool, min_group_size: int | None) -> str:
    """Why a gap has no value: the groups large enough to judge (labeled rows for a label gap), with counts."""
    judged = [
        g for g, r in entry["groups"].items() if not r["too_small"] and not (labels and r.get("labels_too_small"))
    ]
    if len(judged) >= 2:
        return "the gap was not computed"
    counts = ", ".join(f"{g} {r['count']}" for g, r in entry["groups"].items())
    rows = "labeled rows" if labels else "rows"
    return (
        f"fewer than two groups with at least audit.min_group_size = {min_group_size} {rows} (rows per group: {counts})"
    )


def _group_rates(entry: dict[str, Any], reference: dict[str, dict[str, Any]], gap: str) -> str:
    """The rates behind a gap, per judged group, batch vs test time (e.g. "tpr Female 0.18 (test 0.47)")."""
    parts = []
    for rate in GAP_RATES[gap]:
        cells = []
        for group, row in entry["groups"].items():
            value = row["metrics"].get(rate, {}).get("value")
            if row["too_small"] or value is None:
                continue
            before = reference.get(group, {}).get("metrics", {}).get(rate, {}).get("value")
            cells.append(f"{group} {value:.3f}" + (f" (test {before:.3f})" if before is not None else ""))
        parts.append(f"{rate}: " + ", ".join(cells))
    return "; ".join(parts)
