"""The bias-mitigation sweep: candidates scored in-process, their Pareto front, and a choice by the policy.

A candidate is a set of allow-listed overrides (`sweep.candidates` in params.yaml) applied to the project's
params. It is scored the way the pipeline's stages would score it, without files: mitigation by data on the
processed training rows (preprocess), the MLP with its fairness term (train), per-group thresholds fitted on
the validation split (postprocess), then quality and the audit's gaps on the validation and test splits
(evaluate, audit; one bootstrap draw, so the point values are the audit's own definitions).

Candidates that differ only in what comes after training (decision thresholds, evaluation settings) share one
trained model: `training_key` says which settings shape the model. The candidate is then chosen on the
validation split only, by `select`: the best validation quality among the candidates whose validation gaps
meet every fairness limit of the promotion policy, or none (fail closed). A candidate's validation figures
are out-of-fold where it fits thresholds on those rows (`cross_fitted`). The test figures draw the front.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from humane.core.errors import ConfigError, DataError
from humane.core.params import Params
from humane.core.paths import LABEL_COLUMN
from humane.fairness.metrics import INTERSECTION, audit_predictions, headline, unmeasurable
from humane.fairness.mitigation import decisions, fit_thresholds, mitigate_data, training_terms
from humane.fairness.reductions import fit_mitigated
from humane.governance.gate import Policy
from humane.modeling.compute import FLOP_PROBE_ROWS, ComputeMeter, bill, flops_per_sample
from humane.modeling.evaluation import binary_metrics
from humane.modeling.features import split_xy
from humane.modeling.model import count_parameters

QUALITY_METRICS = ("accuracy", "balanced_accuracy", "roc_auc")
FRONT_GAPS = {"dp": "demographic_parity_difference", "eo": "equalized_odds_difference"}
FAIRNESS_PREFIX = "fairness."
SPLITS = ("val", "test")
# A candidate changes the processed frames through these sections only by re-running the preprocess stage;
# the sweep scores every candidate on the same processed frames, so it refuses them (the training flow takes them).
PREPROCESS_PREFIX = "preprocess."


@dataclass(frozen=True)
class TrainedModel:
    """A candidate's trained model, kept as what scoring needs: its scores on the validation and test rows."""

    p_val: np.ndarray
    p_test: np.ndarray
    best_epoch: int
    epochs_run: int
    train_rows: int
    train_seconds: float
    started: float  # wall-clock time (epoch seconds) the candidate's work began, for the run's record
    finished: float
    # The training's compute bill (humane.modeling.compute.bill): FLOPs, samples/s, energy and CO2.
    compute: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CandidateResult:
    """One candidate's figures on the validation (`val`) and test (`test`) splits.

    Each split's figures are flat, as the policy names them: `accuracy`, `balanced_accuracy`, `roc_auc` and
    `fairness.<feature>.<gap>` for every sensitive feature, their intersection and the mitigation target.
    """

    overrides: dict[str, Any]
    methods: list[str]
    val: dict[str, float]
    test: dict[str, float]
    train_seconds: float
    best_epoch: int
    epochs_run: int
    train_rows: int
    started: float
    finished: float
    # The index of the candidate whose training produced the model, when it was trained for another candidate.
    model_of: int | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)
    # The compute bill of the training this candidate ran (empty when it was scored on another's model).
    compute: dict[str, Any] = field(default_factory=dict)

    def figures(self, split: str) -> dict[str, float]:
        """The figures of one split ("val" or "test")."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.val if split == "val" else self.test


# ---------------------------------------------------------------------------------------------------------------
# Candidates
# ---------------------------------------------------------------------------------------------------------------


def check_candidates(candidates: list[dict[str, Any]]) -> None:
    """Refuse candidates the sweep cannot score on the project's processed frames (naming the key).

    Raises:
        ConfigError: A candidate changes a preprocess setting, or two candidates are the same.

    """
    seen: dict[str, int] = {}
    for n, candidate in enumerate(candidates):
        refused = sorted(k for k in candidate if k.startswith(PREPROCESS_PREFIX))
        if refused:
            raise ConfigError(
                f"params.yaml: sweep.candidates[{n}] sets {refused}: the sweep scores every candidate on the "
                "project's processed frames, so a candidate may not change how they are made (run "
                "`python -m flows.training key=value` for that)"
            )
        key = json.dumps(candidate, sort_keys=True, default=str)
        if key in seen:
            raise ConfigError(f"params.yaml: sweep.candidates[{n}] repeats sweep.candidates[{seen[key]}]")
        seen[key] = n


def describe(overrides: dict[str, Any]) -> str:
    """`key=value, ...` sorted, or "defaults" (as the pipeline's MLflow runs tag their overrides)."""
    if not overrides:
        return "defaults"
    return ", ".join(f"{k}={v!r}" for k, v in sorted(overrides.items()))


def training_key(params: Params) -> str:
    """What shapes the trained model: two candidates with the same key can share one model.

    The train section (its progress bar aside), mitigation by data, by the loss and by reductions (the seed only
    when it seeds the oversampling) and the group-size floor. Thresholds and evaluation settings act after training.
    """
    m = params.mitigation
    penalty = (m.loss, m.loss_weight) if m.loss != "none" and m.loss_weight > 0 else ("none", 0.0)
    reductions = (
        (m.reductions, m.reductions_eps, m.reductions_epochs, m.reductions_max_iter)
        if m.reductions != "none"
        else ("none",)
    )
    by_target = m.reweigh or m.resample or penalty[0] != "none" or m.reductions != "none"
    parts = {
        "train": params.train.model_dump(exclude={"progress"}),
        "target": list(m.target) if by_target else [],
        "reductions": reductions,
        "reweigh": m.reweigh,
        "resample": m.resample,
        "seed": m.seed if m.resample else None,
        "penalty": penalty,
        "min_group_rows": params.validate.min_group_rows,
    }
    return json.dumps(parts, sort_keys=True)


# ---------------------------------------------------------------------------------------------------------------
# One candidate: train, then score
# ---------------------------------------------------------------------------------------------------------------


def train_candidate(
    params: Params, frames: dict[str, pd.DataFrame], layout: tuple[int, list[int]] | None = None
) -> TrainedModel:
    """Mitigate the training rows, train the network (one process, one torch thread), and score val and test rows.

    Args:
        params: The candidate's params (overrides applied).
        frames: The processed "train" (before mitigation by data: `unmitigated_train`), "val" and "test" frames.
        layout: The preprocessor's token layout (humane.modeling.features.token_layout), which an FT-Transformer
            needs to give each categorical column one token, and numeric embeddings to find the numeric columns,
            as the train stage does.

    """
    started = time.time()
    # One thread per candidate: candidates run side by side, one per core.
    torch.set_num_threads(1)
    min_rows = params.validate.min_group_rows
    train, _ = mitigate_data(frames["train"], params.mitigation, min_rows)
    x_train, y_train, features = split_xy(train)
    x_val, y_val, val_features = split_xy(frames["val"])
    x_test, _, test_features = split_xy(frames["test"])
    if not features == val_features == test_features:
        raise DataError(
            "the processed train, val and test frames do not have the same feature columns; re-run "
            "`dvc repro preprocess`"
        )
    weights, groups, penalty, _ = training_terms(train, params.mitigation, min_rows)
    # Candidates run side by side, one process each: a candidate is never itself launched over torchrun.
    one_process = params.train.distributed.model_copy(update={"nproc_per_node": 1, "nnodes": 1})
    settings = params.train.model_copy(update={"progress": False, "distributed": one_process})
    if layout is None and (settings.model != "mlp" or settings.numeric_embedding.kind != "linear"):
        raise ConfigError(
            "an FT-Transformer or numeric-embedding candidate needs the preprocessor's token layout "
            "(the sweep passes it)"
        )
    with ComputeMeter(settings.compute) as meter:
        result, _ = fit_mitigated(
            x_train,
            y_train,
            x_val,
            y_val,
            train,
            params,
            settings,
            sample_weight=weights,
            groups=groups,
            penalty=penalty,
            layout=layout,
        )
    compute = bill(
        meter,
        n_parameters=count_parameters(result.model),
        flops=flops_per_sample(result.model, x_train[:FLOP_PROBE_ROWS]),
        samples=result.samples or len(result.history) * len(x_train),
        train_seconds=result.train_seconds,
        device=result.device,
        world_size=1,
        precision=settings.precision,
    )
    with torch.inference_mode():
        p_val = torch.sigmoid(result.model(x_val)).numpy().astype(np.float64)
        p_test = torch.sigmoid(result.model(x_test)).numpy().astype(np.float64)
    return TrainedModel(
        p_val,
        p_test,
        result.best_epoch,
        len(result.history),
        len(train),
        result.train_seconds,
        started,
        time.time(),
        compute,
    )


# The figures of a sweep's compute bill that add up over its trained candidates.
SUMMED_COMPUTE = ("train_flops", "samples", "train_seconds", "stage_seconds", "energy_kwh", "co2_kg")


def compute_sum(results: list[CandidateResult]) -> dict[str, float | int | str]:
    """The sweep's compute bill: each additive figure summed over the candidates that trained a model.

    A figure that some candidate did not measure (codecarbon failed to start there) is not summed over the rest:
    a partial sum would read as the whole bill. It is left out, and `note` names it.
    """
    bills = [r.compute for r in results if r.model_of is None]
    out: dict[str, float | int | str] = {"models_trained": len(bills)}
    missing = []
    for key in SUMMED_COMPUTE:
        values = [b.get(key) for b in bills]
        if values and all(isinstance(v, int | float) for v in values):
            out[key] = sum(values)  # type: ignore[arg-type]
        else:
            missing.append(key)
    if missing:
        out["note"] = f"not measured for every trained candidate, so not summed: {', '.join(missing)}"
    return out


def compute_markdown(total: dict[str, Any]) -> str:
    """One paragraph of the sweep's compute bill (`compute_sum`'s output) for the choice's Markdown."""
    parts = [
        f"{total[key]:{fmt}} {unit}"
        for key, fmt, unit in [
            ("train_flops", ".3g", "training FLOPs"),
            ("samples", ",", "samples"),
            ("train_seconds", ",.1f", "s training"),
            ("energy_kwh", ".3g", "kWh"),
            ("co2_kg", ".3g", "kg CO2 (codecarbon estimate)"),
        ]
        if key in total
    ]
    text = f"**Compute of the sweep** ({total['models_trained']} models trained): " + ", ".join(parts) + "."
    return text + (f" {total['note'].capitalize()}." if "note" in total else "")


def gap_features(params: Params) -> list[str]:
    """The features whose gaps are measured: each sensitive one, their intersection, and the mitigation target."""
    features = list(params.data.sensitive_features)
    if len(features) > 1:
        features.append(INTERSECTION.join(features))
    target = front_feature(params)
    return features + ([target] if target not in features else [])


def front_feature(params: Params) -> str:
    """The feature the front is drawn for: the mitigation target (an intersection for two or more features).

    With no target configured, the first sensitive feature.
    """
    target = params.mitigation.target or params.data.sensitive_features[:1]
    return INTERSECTION.join(target)


def figures(
    params: Params, frame: pd.DataFrame, p: np.ndarray, thresholds: dict[str, Any], decided: np.ndarray | None = None
) -> dict[str, float]:
    """Quality and the audit's gaps of one split's scores, deciding as the served model would.

    `decided`: the rows' decisions when they were not taken by `thresholds` (out-of-fold, `cross_fitted`).
    """
    if decided is None:
        decided = decisions(p, frame, thresholds, split_xy(frame)[0].numpy())
    y = frame[LABEL_COLUMN].to_numpy()
    quality = binary_metrics(y, p, params.evaluate.threshold, params.evaluate.calibration_bins, decided)
    out = {m: quality[m] for m in QUALITY_METRICS}
    # One bootstrap draw: the point values are the audit's; the intervals are not needed to choose.
    audit = params.audit.model_copy(update={"bootstrap": 1})
    measured = headline(
        audit_predictions(frame, p, list(params.data.sensitive_features), params.evaluate.threshold, audit, decided)
    )
    target = front_feature(params)
    if target not in measured:  # a target whose features are ordered or chosen differently from the audit's
        audits = audit_predictions(frame, p, target.split(INTERSECTION), params.evaluate.threshold, audit, decided)
        measured[target] = headline(audits)[target]
    for feature in gap_features(params):
        for gap, value in measured.get(feature, {}).items():
            out[f"{FAIRNESS_PREFIX}{feature}.{gap}"] = float(value)
    return out


def score_candidate(
    params: Params,
    val: pd.DataFrame,
    test: pd.DataFrame,
    trained: TrainedModel,
    model_of: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> CandidateResult:
    """Fit the candidate's thresholds on the validation rows (never the test rows), then measure both splits.

    Args:
        params: The candidate's params (overrides applied).
        val: The processed validation rows (features too: per-row draws of thresholds hash them).
        test: The processed test rows, likewise.
        trained: The model's scores (`train_candidate`), possibly shared with other candidates.
        model_of: The index of the candidate whose training produced the model, when it was trained for another
            candidate (None: for this one). The result's `started` is then when its scoring began.
        overrides: The candidate's overrides, as recorded.

    """
    started = time.time()
    state = fit_thresholds(
        trained.p_val, val, params.mitigation, params.validate.min_group_rows, params.evaluate.threshold
    )
    # Thresholds fitted on the validation rows would score themselves in-sample there: the choice reads
    # out-of-fold figures instead. The test split is decided by `state`, as the pipeline decides it.
    val_figures = figures(params, val, trained.p_val, state, cross_fitted(params, val, trained.p_val))
    test_figures = figures(params, test, trained.p_test, state)
    return CandidateResult(
        overrides=dict(overrides or {}),
        methods=params.mitigation.active,
        val=val_figures,
        test=test_figures,
        train_seconds=trained.train_seconds,
        best_epoch=trained.best_epoch,
        epochs_run=trained.epochs_run,
        train_rows=trained.train_rows,
        started=trained.started if model_of is None else started,
        finished=time.time(),
        model_of=model_of,
        thresholds={k: state[k] for k in ("constraint", "pooled") if k in state},
        compute=trained.compute if model_of is None else {},
    )


def cross_fitted(params: Params, val: pd.DataFrame, p_val: np.ndarray, folds: int = 2) -> np.ndarray | None:
    """Out-of-fold decisions on the validation rows: each fold decided by thresholds fitted on the others.

    Folds are stratified by the mitigation target's group and the label (seeded by mitigation.seed), so each fold
    fits every group it can. None when the candidate fits no thresholds (its decisions are `p >= threshold`).
    """
    if params.mitigation.thresholds == "none":
        return None
    from sklearn.model_selection import StratifiedKFold

    from humane.fairness.mitigation import group_keys

    cells = group_keys(val, params.mitigation.target).astype(str) + "|" + val[LABEL_COLUMN].astype(str)
    counts = cells.value_counts()
    strata = cells.where(cells.map(counts) >= folds, "rare")  # cells smaller than the folds share one stratum
    decided = np.zeros(len(val), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=params.mitigation.seed)
    for fit_rows, apply_rows in splitter.split(np.zeros(len(val)), strata.to_numpy()):
        part = val.iloc[fit_rows]
        state = fit_thresholds(
            p_val[fit_rows], part, params.mitigation, params.validate.min_group_rows, params.evaluate.threshold
        )
        applied = val.iloc[apply_rows]
        decided[apply_rows] = decisions(p_val[apply_rows], applied, state, split_xy(applied)[0].numpy())
    return decided


def run_candidate(
    params: Params,
    frames: dict[str, pd.DataFrame],
    overrides: dict[str, Any] | None = None,
    layout: tuple[int, list[int]] | None = None,
) -> CandidateResult:
    """Train and score one candidate in-process: what preprocess → train → postprocess → evaluate → audit measure.

    Args:
        params: The candidate's params (overrides applied).
        frames: The processed "train" (before mitigation by data), "val" and "test" frames.
        overrides: The candidate's overrides, as recorded.
        layout: The preprocessor's token layout (see `train_candidate`).

    """
    trained = train_candidate(params, frames, layout)
    return score_candidate(params, frames["val"], frames["test"], trained, None, overrides)


# ---------------------------------------------------------------------------------------------------------------
# The front and the choice
# ---------------------------------------------------------------------------------------------------------------


def _measured(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def pareto_front(results: list[CandidateResult], quality: str, gap: str, split: str = "test") -> list[int]:
    """The candidates no other beats on both axes: quality maximised, gap minimised.

    A candidate is dominated when another has quality at least as high and a gap at least as small, and is
    strictly better on one of them. Equal points dominate neither each other (both stay on the front). A
    candidate missing either figure (or with NaN) is not on the front.

    Args:
        results: The candidates' results.
        quality: A quality figure, e.g. "accuracy".
        gap: A gap figure, e.g. "fairness.sex.demographic_parity_difference".
        split: Which split's figures ("val" or "test").

    Returns:
        The indices on the front, by ascending gap (then descending quality, then index).

    """
    points = [(i, r.figures(split).get(quality), r.figures(split).get(gap)) for i, r in enumerate(results)]
    points = [(i, q, g) for i, q, g in points if _measured(q) and _measured(g)]
    front = [
        (i, q, g) for i, q, g in points if not any(q2 >= q and g2 <= g and (q2 > q or g2 < g) for _, q2, g2 in points)
    ]
    return [i for i, _, _ in sorted(front, key=lambda p: (p[2], -p[1], p[0]))]


def fairness_limits(policy: Policy) -> dict[str, tuple[str, float]]:
    """The policy's limits on fairness figures: {metric: ("max" | "min", threshold)}."""
    limits = {m: ("max", t) for m, t in policy.max.items() if m.startswith(FAIRNESS_PREFIX)}
    limits.update({m: ("min", t) for m, t in policy.min.items() if m.startswith(FAIRNESS_PREFIX)})
    return limits


def limit_failures(figures_: dict[str, float], limits: dict[str, tuple[str, float]]) -> list[str]:
    """Why a candidate's (validation) figures break the fairness limits, one short line per broken limit."""
    reasons = []
    for metric, (rule, threshold) in sorted(limits.items()):
        value = figures_.get(metric)
        if not _measured(value):
            reasons.append(
                f"validation {metric}: {unmeasurable(metric, figures_)} (the policy's {rule} is {threshold})"
            )
        elif rule == "max" and value > threshold:
            reasons.append(f"validation {metric} = {value:.4f} > max {threshold}")
        elif rule == "min" and value < threshold:
            reasons.append(f"validation {metric} = {value:.4f} < min {threshold}")
    return reasons


def select(results: list[CandidateResult], policy: Policy, quality: str) -> tuple[int | None, dict[int, str]]:
    """The candidate with the best validation `quality` among those within every fairness limit and quality floor.

    Only validation figures are read (the test split stays for the front and the gate). Ties go to the earlier
    candidate. If no candidate is within the limits, none is chosen (fail closed).

    Args:
        results: The candidates' results.
        policy: The promotion policy in force (`Policy.of`); its fairness `max` (and `min`) rules are the limits.
        quality: The validation figure to maximise (`sweep.select`).

    Returns:
        The chosen index (or None), and for every other candidate the reason it was not chosen.

    Raises:
        ConfigError: `quality` is not a quality figure the sweep measures.

    """
    if quality not in QUALITY_METRICS:
        raise ConfigError(f"sweep.select: {quality!r} is not one of {list(QUALITY_METRICS)}")
    limits = fairness_limits(policy)
    rejected: dict[int, str] = {}
    eligible: list[tuple[int, float]] = []
    for i, result in enumerate(results):
        reasons = limit_failures(result.val, limits)
        # The policy's quality floors too (test.<metric> minimums, read on validation): a model that met the
        # fairness limits by collapsing to one answer is not a choice the gate could promote.
        for metric, floor in policy.min.items():
            name = metric.removeprefix("test.")
            got = result.val.get(name) if metric.startswith("test.") else None
            if got is not None and (not _measured(got) or got < floor):
                reasons.append(f"validation {name} = {got:.4f} < min {floor}")
        value = result.val.get(quality)
        if not _measured(value):
            reasons.append(f"validation {quality} not measured")
        if reasons:
            rejected[i] = "; ".join(reasons)
        else:
            eligible.append((i, float(value)))  # type: ignore[arg-type]
    if not eligible:
        return None, rejected
    chosen, best = max(eligible, key=lambda e: (e[1], -e[0]))
    for i, value in eligible:
        if i != chosen:
            rejected[i] = (
                f"within the fairness limits, but validation {quality} {value:.4f} < {best:.4f} of candidate {chosen}"
                if value < best
                else f"within the fairness limits, ties candidate {chosen} on validation {quality} "
                f"({value:.4f}), which comes first"
            )
    return chosen, dict(sorted(rejected.items()))


# ---------------------------------------------------------------------------------------------------------------
# The table and the plot
# ---------------------------------------------------------------------------------------------------------------


def slug(feature: str) -> str:
    """A feature's name as a plain field name (`dvc plots` fields cannot hold dots or spaces)."""
    return feature.replace(INTERSECTION, "_x_").replace(" ", "_").replace(".", "_")


def table(
    results: list[CandidateResult],
    feature: str,
    chosen: int | None,
    rejected: dict[int, str],
    fronts: dict[str, list[int]],
) -> list[dict[str, Any]]:
    """One flat row per candidate (plain field names, for `dvc plots` and a Prefect table).

    Fields: candidate, overrides, methods, {val,test}_{accuracy,balanced_accuracy,roc_auc},
    {val,test}_{dp,eo}_<feature> for every measured feature, train_seconds, best_epoch, model_of,
    front_dp / front_eo (on the test front of `feature`), chosen, status.
    """
    rows = []
    for i, r in enumerate(results):
        row: dict[str, Any] = {
            "candidate": i,
            "overrides": describe(r.overrides),
            "methods": ", ".join(r.methods) or "none",
        }
        for split in SPLITS:
            values = r.figures(split)
            row.update({f"{split}_{m}": _round(values.get(m)) for m in QUALITY_METRICS})
            for name, gap in FRONT_GAPS.items():
                for metric, value in values.items():
                    if metric.startswith(FAIRNESS_PREFIX) and metric.endswith(f".{gap}"):
                        f = metric.removeprefix(FAIRNESS_PREFIX).removesuffix(f".{gap}")
                        row[f"{split}_{name}_{slug(f)}"] = _round(value)
        row.update(
            train_seconds=round(r.train_seconds, 2),
            best_epoch=r.best_epoch,
            model_of=r.model_of if r.model_of is not None else i,
            **{f"front_{name}": i in fronts.get(name, []) for name in FRONT_GAPS},
            chosen=i == chosen,
            status="chosen" if i == chosen else rejected.get(i, ""),
        )
        rows.append(row)
    return rows


def _round(value: float | None) -> float | None:
    return None if not _measured(value) else round(float(value), 6)  # type: ignore[arg-type]


def plot_front(
    results: list[CandidateResult],
    path: Path,
    feature: str,
    quality: str = "accuracy",
    chosen: int | None = None,
    limits: dict[str, tuple[str, float]] | None = None,
) -> None:
    """Test quality against the DP gap and against the EO gap of `feature`: every candidate, the front, the choice.

    The policy's max on each gap (when `limits` holds one) is drawn as a dashed line. Written atomically as PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from humane.core import io

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, (name, gap) in zip(axes, FRONT_GAPS.items(), strict=True):
        metric = f"{FAIRNESS_PREFIX}{feature}.{gap}"
        points = [(i, r.test.get(metric), r.test.get(quality)) for i, r in enumerate(results)]
        points = [(i, x, y) for i, x, y in points if _measured(x) and _measured(y)]
        ax.scatter([x for _, x, _ in points], [y for _, _, y in points], color="#9aa5b1", label="candidate")
        for i, x, y in points:
            ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=8)
        front = pareto_front(results, quality, metric, "test")
        by_index = {i: (x, y) for i, x, y in points}
        xs, ys = [by_index[i][0] for i in front], [by_index[i][1] for i in front]
        ax.step(xs, ys, where="post", color="#c44e52", linewidth=1)
        ax.scatter(xs, ys, color="#c44e52", label="Pareto front (test)")
        if chosen is not None and chosen in by_index:
            ax.scatter(
                *by_index[chosen], marker="*", s=260, color="#2f7d32", zorder=3, label=f"chosen (candidate {chosen})"
            )
        rule = (limits or {}).get(metric)
        if rule is not None and rule[0] == "max":
            ax.axvline(rule[1], linestyle="--", color="grey", label=f"policy max {rule[1]}")
        ax.set(xlabel=f"{gap.replace('_', ' ')} ({feature}), test", title=f"{quality} vs {name.upper()} gap")
        ax.legend(loc="best", fontsize=8)
    axes[0].set_ylabel(f"test {quality}")
    fig.suptitle("Bias-mitigation sweep: chosen on the validation split, drawn on the test split")
    io.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def choice_markdown(
    rows: list[dict[str, Any]], chosen: int | None, quality: str, feature: str, limits: dict[str, tuple[str, float]]
) -> str:
    """The choice as Markdown: the rule, the chosen candidate, and why every other one was not chosen.

    `rows` are `table`'s rows (their status holds each candidate's reason).
    """
    rule = ", ".join(f"{m} {'≤' if r == 'max' else '≥'} {t}" for m, (r, t) in sorted(limits.items())) or "none"
    lines = [
        "# Bias-mitigation sweep: the choice",
        "",
        f"Rule: the highest validation {quality} among the candidates whose validation gaps meet every "
        f"fairness limit of the promotion policy ({rule}). The front is drawn on the test split for {feature}.",
        "",
    ]
    if chosen is None:
        lines.append(
            "**No candidate is within the policy's fairness limits: none is chosen, nothing is trained or registered.**"
        )
    else:
        row = rows[chosen]
        position = [f"the {name.upper()} front" for name in FRONT_GAPS if row[f"front_{name}"]]
        lines.append(
            f"**Chosen: candidate {chosen}** ({row['overrides']}; methods: {row['methods']}): validation "
            f"{quality} {row[f'val_{quality}']}, test {quality} {row[f'test_{quality}']}; "
            + (f"on {' and '.join(position)}" if position else "on neither test front")
            + "."
        )
    lines += [
        "",
        "| candidate | overrides | val " + quality + " | test " + quality + " | test DP gap | test EO gap | "
        "front | status |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    key = slug(feature)
    for row in rows:
        front = "/".join(name.upper() for name in FRONT_GAPS if row[f"front_{name}"]) or "-"
        cells = [
            row["candidate"],
            row["overrides"],
            row[f"val_{quality}"],
            row[f"test_{quality}"],
            row.get(f"test_dp_{key}"),
            row.get(f"test_eo_{key}"),
            front,
            row["status"],
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def position(index: int, fronts: dict[str, list[int]], feature: str) -> str:
    """Where a candidate sits on the test fronts, in a few words (a registry tag)."""
    on = [name.upper() for name in FRONT_GAPS if index in fronts.get(name, [])]
    off = [name.upper() for name in FRONT_GAPS if index not in fronts.get(name, [])]
    if not off:
        return f"on the front (test accuracy vs {feature} DP and EO gaps)"
    if not on:
        return f"dominated (test accuracy vs {feature} DP and EO gaps)"
    return f"on the {on[0]} front, dominated on the {off[0]} front (test accuracy vs {feature} gaps)"
