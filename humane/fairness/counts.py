"""Evaluation and bias audit from aggregated counts: what a federated site sends instead of its rows.

A site scores its own test rows and sends `site_counts`: the confusion counts overall and per group (groups
smaller than `min_group_size` are never sent, only their total rows as "withheld"), the score histograms per label
and the summed log loss. The coordinator merges the sites' counts (`merge_counts`) and computes from them the
same figures the row-based stages compute (`metrics_from_counts`, `audit_from_counts`):

- confusion-based figures (accuracy, precision, recall, F1, selection rate, every group rate and every gap) are
  exactly the row-based ones (humane.fairness.metrics, humane.modeling.evaluation);
- the log loss is exact (the sites sum the same clipped per-row loss);
- ROC AUC is the trapezoid over the histogram's bin edges: pairs of a positive and a negative row in the same bin
  count one half, so its error is at most half the share of such pairs (`auc_binning_error`, reported with it;
  on 100 bins of a well-spread model about 0.001 to 0.005);
- calibration (ECE, and the overall calibration error) uses each bin's midpoint as its rows' mean score: off by
  at most half a bin width (0.005 with 100 bins). A group's calibration error needs its scores' sum, which no
  site sends: it is withheld (None) in the audit, said in the report.

Intervals: a multinomial draw of the cells (every group's four confusion cells and the withheld rows, jointly,
with the total row count) is exactly the row bootstrap for figures that depend on the rows only through those
cells, which all the audited rates and gaps do.

`add_noise` blurs a site's counts with Gaussian noise before they leave it (federated.noise): a blur against
exact small-cell reconstruction, not a differential-privacy guarantee (no sensitivity is calibrated).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from humane.core.errors import DataError
from humane.fairness.metrics import GAP_METRICS, GROUP_METRICS, FeatureAudit, gaps_from, shown_names
from humane.fairness.params import AuditParams
from humane.modeling.decision import plain_decisions
from humane.modeling.evaluation import PROB_EPS

CELLS = ("tp", "fp", "tn", "fn")
# Figures of the row audit that the counts cannot give (a group's mean score is not sent).
NOT_FROM_COUNTS = ("calibration_error",)


def confusion(y: np.ndarray, y_pred: np.ndarray) -> dict[str, int]:
    """The four confusion counts of 0/1 labels and 0/1 decisions."""
    y, y_pred = np.asarray(y).astype(bool), np.asarray(y_pred).astype(bool)
    return {
        "tp": int((y & y_pred).sum()),
        "fp": int((~y & y_pred).sum()),
        "tn": int((~y & ~y_pred).sum()),
        "fn": int((y & ~y_pred).sum()),
    }


def histogram(p: np.ndarray, bins: int) -> list[int]:
    """Counts of scores in `bins` equal-width bins of [0, 1] (the last closed), as `calibration_bins` bins them."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    return [int(c) for c in np.bincount(which, minlength=bins)]


def site_counts(
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
    groups: Mapping[str, pd.Series],
    min_group_size: int,
    bins: int = 100,
) -> dict[str, Any]:
    """A site's evaluation as counts only: what leaves the site instead of its scored rows.

    Args:
        y: 0/1 labels of the site's test rows.
        p: The model's positive-class probabilities for those rows.
        threshold: Decision threshold (p >= threshold is a positive decision).
        groups: Group labels per sensitive feature (humane.core.protected.sensitive_group_labels; no nulls).
        min_group_size: A group with fewer rows is not sent; its rows are counted under "withheld" (with the
            smallest other groups' while the withheld rows are fewer than this: `sent_groups`).
        bins: Equal-width score bins of [0, 1] for the histograms.

    Returns:
        {"rows", "confusion", "scores": {"positive", "negative"}, "loss_sum", "groups", "withheld"}: ints and
        floats only, JSON-able.

    """
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if len(y) != len(p) or not np.isin(y, (0.0, 1.0)).all() or not np.isfinite(p).all():
        raise DataError("site_counts: labels must be 0/1 and scores finite, one of each per row")
    y_pred = plain_decisions(p, threshold)
    clipped = np.clip(p, PROB_EPS, 1 - PROB_EPS)
    loss = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))
    out: dict[str, Any] = {
        "rows": len(y),
        "confusion": confusion(y, y_pred),
        "scores": {"positive": histogram(p[y == 1], bins), "negative": histogram(p[y == 0], bins)},
        "loss_sum": float(loss.sum()),
        "groups": {},
        "withheld": {},
    }
    labels = {}
    for feature, column in groups.items():
        if len(column) != len(y) or column.isna().any():
            raise DataError(f"site_counts: the groups of {feature!r} must label every row (group_labels first)")
        labels[feature] = column.astype(str).to_numpy()
    for feature, kept in suppressed(labels, min_group_size).items():
        values = labels[feature]
        out["groups"][feature] = {
            g: {"rows": int((values == g).sum()), "confusion": confusion(y[values == g], y_pred[values == g])}
            for g in kept
        }
        out["withheld"][feature] = int((~np.isin(values, kept)).sum())
    return out


def suppressed(labels: Mapping[str, np.ndarray], min_group_size: int) -> dict[str, list[str]]:
    """The groups each feature sends (`sent_groups`), then more withheld where one feature's groups nest in another's.

    An intersection's groups (sex x race) nest in each feature's: a sent group of sex minus the sent "sex x race"
    groups inside it gives the withheld ones inside it, so those are likewise none or at least min_group_size (the
    smallest sent group inside is withheld until they are). Repeated until nothing changes.
    """
    kept = {f: sent_groups(v, min_group_size) for f, v in labels.items()}
    pairs = [(a, b) for a in labels for b in labels if a != b and _nested(labels[a], labels[b])]
    changed = True
    while changed:
        changed = False
        for fine, coarse in pairs:
            for group in kept[coarse]:
                inside = labels[coarse] == group
                sent = inside & np.isin(labels[fine], kept[fine])
                if 0 < int(inside.sum() - sent.sum()) < min_group_size:
                    names, sizes = np.unique(labels[fine][sent], return_counts=True)
                    kept[fine].remove(min(zip(sizes.tolist(), names.tolist(), strict=True))[1])
                    changed = True
    return kept


def _nested(fine: np.ndarray, coarse: np.ndarray) -> bool:
    """Whether every group of `fine` lies inside one group of `coarse`."""
    return bool(pd.DataFrame({"f": fine, "c": coarse}).groupby("f")["c"].nunique().max() <= 1)


def sent_groups(values: np.ndarray, min_group_size: int) -> list[str]:
    """The groups whose counts leave the site: each of min_group_size rows or more, and what they leave out too.

    The site's overall counts minus its sent groups' are the withheld rows' counts, so withheld rows fewer than
    min_group_size (one person of a rare group: their label and decision) would be read by subtraction. The
    smallest groups that pass are then withheld too (complementary suppression), until the withheld rows are none
    or at least min_group_size.
    """
    names, sizes = np.unique(values, return_counts=True)
    by_size = sorted(zip(sizes.tolist(), names.tolist(), strict=True))
    withheld = sum(n for n, _ in by_size if n < min_group_size)
    kept = [(n, g) for n, g in by_size if n >= min_group_size]
    while kept and 0 < withheld < min_group_size:
        withheld += kept.pop(0)[0]
    return sorted(g for _, g in kept)


def merge_counts(counts: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several sites' counts (same bins). A group withheld at one site holds only the others' rows."""
    if not counts:
        raise DataError("merge_counts: no site counts to merge")
    bins = {len(c["scores"]["positive"]) for c in counts}
    if len(bins) != 1:
        raise DataError(f"merge_counts: the sites' score histograms have different bins {sorted(bins)}")
    merged: dict[str, Any] = {
        "rows": sum(c["rows"] for c in counts),
        "confusion": {k: sum(c["confusion"][k] for c in counts) for k in CELLS},
        "scores": {
            s: [int(v) for v in np.sum([c["scores"][s] for c in counts], axis=0)] for s in ("positive", "negative")
        },
        "loss_sum": float(sum(c["loss_sum"] for c in counts)),
        "groups": {},
        "withheld": {},
    }
    for feature in sorted({f for c in counts for f in c["groups"]}):
        groups: dict[str, dict[str, Any]] = {}
        for c in counts:
            for group, cell in c["groups"].get(feature, {}).items():
                into = groups.setdefault(group, {"rows": 0, "confusion": dict.fromkeys(CELLS, 0)})
                into["rows"] += cell["rows"]
                for k in CELLS:
                    into["confusion"][k] += cell["confusion"][k]
        merged["groups"][feature] = dict(sorted(groups.items()))
        merged["withheld"][feature] = sum(c["withheld"].get(feature, 0) for c in counts)
    return merged


def add_noise(counts: dict[str, Any], sd: float, rng: np.random.Generator) -> dict[str, Any]:
    """A copy of `counts` with Gaussian noise (sd) on every count, rounded and kept >= 0; rows re-summed.

    A blur against reading single rows out of small cells, not a differential-privacy guarantee.
    """
    if sd <= 0:
        return counts

    def blur(value: int) -> int:
        return max(0, round(value + rng.normal(0.0, sd)))

    def cells(conf: Mapping[str, int]) -> dict[str, int]:
        return {k: blur(conf[k]) for k in CELLS}

    conf = cells(counts["confusion"])
    groups = {}
    for feature, by_group in counts["groups"].items():
        groups[feature] = {}
        for group, cell in by_group.items():
            noisy = cells(cell["confusion"])
            groups[feature][group] = {"rows": sum(noisy.values()), "confusion": noisy}
    return {
        "rows": sum(conf.values()),
        "confusion": conf,
        "scores": {s: [blur(v) for v in counts["scores"][s]] for s in ("positive", "negative")},
        "loss_sum": max(0.0, float(counts["loss_sum"] + rng.normal(0.0, sd))),
        "groups": groups,
        "withheld": {f: blur(n) for f, n in counts["withheld"].items()},
    }


def rates(conf: Mapping[str, float]) -> dict[str, float]:
    """Threshold metrics of confusion counts (NaN where a denominator is 0, as the row-based functions give)."""
    tp, fp, tn, fn = (float(conf[k]) for k in CELLS)
    n = tp + fp + tn + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.divide(tp, tp + fn)
        precision = tp / (tp + fp) if tp + fp > 0 else 0.0
        return {
            "accuracy": float(np.divide(tp + tn, n)),
            "balanced_accuracy": float((recall + np.divide(tn, tn + fp)) / 2),
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(2 * tp / (2 * tp + fp + fn)) if tp > 0 else 0.0,
            "selection_rate": float(np.divide(tp + fp, n)),
            "tpr": float(recall),
            "fpr": float(np.divide(fp, fp + tn)),
        }


def auc_from_histograms(positive: list[int], negative: list[int]) -> tuple[float, float]:
    """ROC AUC by the trapezoid over the bin edges, and the most it can differ from the exact (row) AUC.

    Between two edges the curve is a straight line: a positive and a negative in the same bin count 1/2, whatever
    their order. The exact AUC counts them 1 or 0 (1/2 for a tie), so the error is at most half their share.
    """
    pos, neg = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos == 0 or total_neg == 0:
        return float("nan"), float("nan")
    # Rows scored above each bin: descending thresholds over the bins.
    above_neg = np.cumsum(neg[::-1])[::-1] - neg  # negatives in higher bins
    pairs = (pos * above_neg).sum() + 0.5 * (pos * neg).sum()
    wrong = pairs / (total_pos * total_neg)  # share of pairs ranked wrong (negative above positive)
    return float(1.0 - wrong), float(0.5 * (pos * neg).sum() / (total_pos * total_neg))


def calibration_from_histograms(positive: list[int], negative: list[int], n_bins: int) -> dict[str, Any]:
    """ECE over `n_bins` equal-width bins (evaluate.calibration_bins) and the bins, from the score histograms.

    Each histogram bin's rows are taken at its midpoint: the mean score is off by at most half a histogram bin.
    `n_bins` must divide the histogram's bins, so every coarse bin holds whole histogram bins.
    """
    pos, neg = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    if len(pos) % n_bins:
        raise DataError(f"calibration bins {n_bins} must divide the score histogram's {len(pos)} bins")
    mids = (np.arange(len(pos)) + 0.5) / len(pos)
    step, total = len(pos) // n_bins, pos.sum() + neg.sum()
    bins, ece = [], 0.0
    for b in range(n_bins):
        part = slice(b * step, (b + 1) * step)
        count = pos[part].sum() + neg[part].sum()
        if count == 0:
            continue
        mean = float(((pos[part] + neg[part]) * mids[part]).sum() / count)
        fraction = float(pos[part].sum() / count)
        bins.append(
            {
                "lower": b / n_bins,
                "upper": (b + 1) / n_bins,
                "count": int(count),
                "mean_predicted": mean,
                "fraction_positive": fraction,
            }
        )
        ece += count * abs(fraction - mean) / total
    return {"ece": float(ece), "bins": bins, "error_bound": 0.5 / len(pos)}


def metrics_from_counts(counts: Mapping[str, Any], calibration_bins: int) -> dict[str, Any]:
    """The model's test figures from (merged) counts, with the bounds of the two approximated ones.

    Returns:
        The keys of `binary_metrics` that counts give (accuracy, balanced_accuracy, roc_auc, log_loss, ece), plus
        precision, recall, f1, selection_rate, and "auc_binning_error" / "ece_binning_error" (upper bounds).

    """
    pos, neg = counts["scores"]["positive"], counts["scores"]["negative"]
    auc, auc_error = auc_from_histograms(pos, neg)
    calibration = calibration_from_histograms(pos, neg, calibration_bins)
    figures = rates(counts["confusion"])
    for key in ("tpr", "fpr"):
        figures.pop(key)
    return {
        **figures,
        "roc_auc": auc,
        "log_loss": float(counts["loss_sum"] / counts["rows"]),
        "ece": calibration["ece"],
        "auc_binning_error": auc_error,
        "ece_binning_error": calibration["error_bound"],
    }


def _group_figures(conf: Mapping[str, float]) -> dict[str, float]:
    figures = rates(conf)
    return {m: figures[m] if m in figures else float("nan") for m in GROUP_METRICS}


def _sample_rates(cells: np.ndarray) -> dict[str, np.ndarray]:
    """The group rates of resampled cells shaped (draws, groups, 4) in CELLS order, as `rates` defines them."""
    tp, fp, tn, fn = np.moveaxis(cells, -1, 0)
    n = tp + fp + tn + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "selection_rate": (tp + fp) / n,
            "accuracy": (tp + tn) / n,
            "tpr": tp / (tp + fn),
            "fpr": fp / (fp + tn),
            "precision": np.where(tp + fp > 0, tp / (tp + fp), 0.0),
            "calibration_error": np.full(n.shape, np.nan),  # NOT_FROM_COUNTS
        }


def _sample_gaps(figures: dict[str, np.ndarray], judged: np.ndarray) -> dict[str, np.ndarray]:
    """`gaps_from` per draw over the judged groups (NaN rates skipped; fewer than two groups: NaN)."""
    draws = figures["selection_rate"].shape[0]
    if judged.sum() < 2:
        return {gap: np.full(draws, np.nan) for gap in GAP_METRICS}
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN draw (no positive label resampled) stays NaN
        spread = {
            m: (np.nanmax(figures[m][:, judged], axis=1), np.nanmin(figures[m][:, judged], axis=1))
            for m in ("selection_rate", "tpr", "fpr")
        }
    (sel_hi, sel_lo), (tpr_hi, tpr_lo), (fpr_hi, fpr_lo) = spread.values()
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "demographic_parity_difference": sel_hi - sel_lo,
            "demographic_parity_ratio": np.where(sel_hi > 0, sel_lo / sel_hi, np.nan),
            "equalized_odds_difference": np.fmax(tpr_hi - tpr_lo, fpr_hi - fpr_lo),
            "equal_opportunity_difference": tpr_hi - tpr_lo,
        }


def _interval(values: np.ndarray) -> tuple[float, float]:
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return float(lo), float(hi)


def _resampled(cells: np.ndarray, rng: np.random.Generator, draws: int) -> np.ndarray:
    """`draws` multinomial resamples of a flat cell vector with its own total (the row bootstrap on counts)."""
    total = int(cells.sum())
    if total == 0:
        return np.zeros((draws, len(cells)))
    return rng.multinomial(total, cells / total, size=draws).astype(float)


def audit_from_counts(
    feature: str, by_group: Mapping[str, Mapping[str, Any]], withheld: int, params: AuditParams
) -> FeatureAudit:
    """`audit_feature` on counts: per-group rates with 95% intervals, and the gaps over the groups judged.

    Groups below audit.min_group_size are numbered and their rates withheld, as in the row audit; the rows no site
    sent (groups below federated.min_group_size at a site) enter the resampling as one cell of their own. Point
    values use the row audit's own definitions (`gaps_from`); the draws the same formulas on arrays.
    """
    names = sorted(by_group)
    sizes = {g: int(by_group[g]["rows"]) for g in names}
    judged = np.array([sizes[g] >= params.min_group_size for g in names], dtype=bool)
    flat = np.array([by_group[g]["confusion"][k] for g in names for k in CELLS] + [withheld], dtype=float)
    samples = _resampled(flat, np.random.default_rng(params.seed), params.bootstrap)
    drawn = _sample_rates(samples[:, : 4 * len(names)].reshape(len(samples), len(names), 4))
    gap_draws = _sample_gaps(drawn, judged)
    point = pd.DataFrame([{"group": g, **_group_figures(by_group[g]["confusion"])} for g in names])
    shown = shown_names(sizes, params.min_group_size)
    order = sorted(range(len(names)), key=lambda i: (not judged[i], 0 if judged[i] else -sizes[names[i]], names[i]))
    rows = []
    for i in order:
        metrics = {}
        for metric in GROUP_METRICS:
            if not judged[i] or metric in NOT_FROM_COUNTS:
                metrics[metric] = {"value": None, "lo": None, "hi": None}
                continue
            lo, hi = _interval(drawn[metric][:, i])
            metrics[metric] = {"value": float(point.loc[i, metric]), "lo": lo, "hi": hi}
        rows.append(
            {"group": shown[names[i]], "count": sizes[names[i]], "too_small": not bool(judged[i]), "metrics": metrics}
        )
    gaps_point = gaps_from(point[judged] if len(point) else point)
    gaps = {
        g: {"value": gaps_point[g], **dict(zip(("lo", "hi"), _interval(gap_draws[g]), strict=True))}
        for g in GAP_METRICS
    }
    return FeatureAudit(feature, rows, gaps, [r["group"] for r in rows if r["too_small"]])


def overall_from_counts(counts: Mapping[str, Any], params: AuditParams) -> dict[str, dict]:
    """Whole-test-set rates with intervals from counts: the audit of a single group (`overall_with_ci`).

    The calibration error comes from the score histograms (midpoints: within half a bin), resampled with them.
    """
    audit = audit_from_counts(
        "overall",
        {"all": {"rows": counts["rows"], "confusion": counts["confusion"]}},
        0,
        AuditParams(seed=params.seed, bootstrap=params.bootstrap, min_group_size=1),
    )
    metrics = audit.groups[0]["metrics"]
    pos = np.asarray(counts["scores"]["positive"], dtype=float)
    neg = np.asarray(counts["scores"]["negative"], dtype=float)
    mids = (np.arange(len(pos)) + 0.5) / len(pos)

    def error(p_hist: np.ndarray, n_hist: np.ndarray) -> float:
        n = p_hist.sum() + n_hist.sum()
        return float(abs(((p_hist + n_hist) * mids).sum() / n - p_hist.sum() / n)) if n else float("nan")

    samples = _resampled(np.concatenate([pos, neg]), np.random.default_rng(params.seed), params.bootstrap)
    lo, hi = _interval([error(s[: len(pos)], s[len(pos) :]) for s in samples])
    metrics["calibration_error"] = {"value": error(pos, neg), "lo": lo, "hi": hi}
    return metrics


def roc_from_histograms(positive: list[int], negative: list[int]) -> list[dict[str, float]]:
    """ROC points at the score bins' edges, from the highest edge down (the curve `auc_from_histograms` integrates)."""
    pos, neg = np.asarray(positive, dtype=float)[::-1], np.asarray(negative, dtype=float)[::-1]
    tpr = np.concatenate([[0.0], np.cumsum(pos) / max(pos.sum(), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(neg) / max(neg.sum(), 1)])
    return [{"fpr": round(float(f), 6), "tpr": round(float(t), 6)} for f, t in zip(fpr, tpr, strict=True)]
