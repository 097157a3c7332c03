"""The bias-mitigation sweep's candidates: each trained and scored in-process, as the pipeline would score it.

A candidate is a set of allow-listed overrides (`sweep.candidates` in params.yaml) applied to the project's
params. It is scored the way the pipeline's stages would score it, without files: mitigation by data on the
processed training rows (preprocess), the MLP with its fairness term (train), per-group thresholds fitted on
the validation split (postprocess), then quality and the audit's gaps on the validation and test splits
(evaluate, audit; one bootstrap draw, so the point values are the audit's own definitions).

Candidates that differ only in what comes after training (decision thresholds, evaluation settings) share one
trained model: `training_key` says which settings shape the model. The candidate is then chosen on the
validation split only (humane.fairness.sweep_choice.select): the best validation quality among the candidates
whose validation gaps meet every fairness limit of the promotion policy, or none (fail closed). A candidate's
validation figures are out-of-fold where it fits thresholds on those rows (`cross_fitted`). The test figures draw
the front (humane.fairness.sweep_choice.pareto_front); humane.fairness.sweep_report writes the table, the plot
and the choice in Markdown.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from humane.core.errors import ConfigError, DataError
from humane.core.metric_names import fairness_metric
from humane.core.paths import LABEL_COLUMN
from humane.core.protected import INTERSECTION
from humane.fairness.metrics import audit_predictions, headline
from humane.fairness.mitigation import mitigate_data, training_terms
from humane.fairness.params import FairnessSections
from humane.fairness.reductions import fit_mitigated
from humane.fairness.thresholds import fit_thresholds, group_decisions
from humane.modeling.compute import FLOP_PROBE_ROWS, ComputeMeter, bill, flops_per_sample
from humane.modeling.evaluation import binary_metrics
from humane.modeling.features import split_xy
from humane.modeling.model import count_parameters
from humane.modeling.params import TrainParams

QUALITY_METRICS = ("accuracy", "balanced_accuracy", "roc_auc")
FRONT_GAPS = {"dp": "demographic_parity_difference", "eo": "equalized_odds_difference"}
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


def training_key(params: FairnessSections) -> str:
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
    params: FairnessSections, frames: dict[str, pd.DataFrame], layout: tuple[int, list[int]] | None = None
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
    x_train, y_train, x_val, y_val, x_test = aligned_tensors(train, frames["val"], frames["test"])
    weights, groups, penalty, _ = training_terms(train, params.mitigation, min_rows)
    settings = candidate_settings(params, layout)
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
    compute = training_bill(meter, result, x_train, settings.precision)
    p_val, p_test = candidate_probabilities(result.model, x_val), candidate_probabilities(result.model, x_test)
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


def aligned_tensors(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame) -> tuple[torch.Tensor, ...]:
    """x_train, y_train, x_val, y_val, x_test: the three frames' features, which must be the same columns.

    Raises:
        DataError: The frames' feature columns differ (the processed frames are stale).

    """
    x_train, y_train, features = split_xy(train)
    x_val, y_val, val_features = split_xy(val)
    x_test, _, test_features = split_xy(test)
    if not features == val_features == test_features:
        raise DataError(
            "the processed train, val and test frames do not have the same feature columns; re-run "
            "`dvc repro preprocess`"
        )
    return x_train, y_train, x_val, y_val, x_test


def candidate_settings(params: FairnessSections, layout: tuple[int, list[int]] | None) -> TrainParams:
    """The candidate's training settings: one process (never itself launched over torchrun), no progress bar.

    Raises:
        ConfigError: An FT-Transformer or numeric-embedding candidate without the preprocessor's token layout.

    """
    # Candidates run side by side, one process each: a candidate is never itself launched over torchrun.
    one_process = params.train.distributed.model_copy(update={"nproc_per_node": 1, "nnodes": 1})
    settings = params.train.model_copy(update={"progress": False, "distributed": one_process})
    if layout is None and (settings.model != "mlp" or settings.numeric_embedding.kind != "linear"):
        raise ConfigError(
            "an FT-Transformer or numeric-embedding candidate needs the preprocessor's token layout "
            "(the sweep passes it)"
        )
    return settings


def training_bill(meter: ComputeMeter, result: Any, x_train: torch.Tensor, precision: str) -> dict[str, Any]:
    """The compute bill of one candidate's training (`result`: `fit_mitigated`'s fit result), in one process."""
    return bill(
        meter,
        n_parameters=count_parameters(result.model),
        flops=flops_per_sample(result.model, x_train[:FLOP_PROBE_ROWS]),
        samples=result.samples or len(result.history) * len(x_train),
        train_seconds=result.train_seconds,
        device=result.device,
        world_size=1,
        precision=precision,
    )


def candidate_probabilities(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """The model's positive-class probabilities for the rows `x`, as float64."""
    with torch.inference_mode():
        return torch.sigmoid(model(x)).numpy().astype(np.float64)


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


def gap_features(params: FairnessSections) -> list[str]:
    """The features whose gaps are measured: each sensitive one, their intersection, and the mitigation target."""
    features = list(params.data.sensitive_features)
    if len(features) > 1:
        features.append(INTERSECTION.join(features))
    target = front_feature(params)
    return features + ([target] if target not in features else [])


def front_feature(params: FairnessSections) -> str:
    """The feature the front is drawn for: the mitigation target (an intersection for two or more features).

    With no target configured, the first sensitive feature.
    """
    target = params.mitigation.target or params.data.sensitive_features[:1]
    return INTERSECTION.join(target)


def figures(
    params: FairnessSections,
    frame: pd.DataFrame,
    p: np.ndarray,
    thresholds: dict[str, Any],
    decided: np.ndarray | None = None,
) -> dict[str, float]:
    """Quality and the audit's gaps of one split's scores, deciding as the served model would.

    `decided`: the rows' decisions when they were not taken by `thresholds` (out-of-fold, `cross_fitted`).
    """
    if decided is None:
        decided = group_decisions(p, frame, thresholds, split_xy(frame)[0].numpy())
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
            out[fairness_metric(feature, gap)] = float(value)
    return out


def score_candidate(
    params: FairnessSections,
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


def cross_fitted(params: FairnessSections, val: pd.DataFrame, p_val: np.ndarray, folds: int = 2) -> np.ndarray | None:
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
        decided[apply_rows] = group_decisions(p_val[apply_rows], applied, state, split_xy(applied)[0].numpy())
    return decided


def run_candidate(
    params: FairnessSections,
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
