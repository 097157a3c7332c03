"""Attributions: how much each raw input column moved a network's logit away from a reference row (Captum 0.9).

Integrated Gradients (Gauss-Legendre path integral) for the MLP, which is differentiable in its inputs, periodic
embeddings included; Shapley value sampling for the FT-Transformer (its one-hot blocks are read back with argmax),
the reductions' ensemble (a weighted vote: piecewise constant) and a constant member. Both work on the logit
scale against one reference row (numeric inputs at the training median, one-hot blocks at the commonest category)
and are summed back from the model-input columns (scaled numerics, one-hot columns) to the user's raw columns, so
each row's attributions add up to f(row) - f(reference).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from humane.core.errors import ConfigError, DataError
from humane.core.io import atomic_path
from humane.modeling.features import Preprocessor
from humane.modeling.model import MLP, Constant, Ensemble, FTTransformer
from humane.modeling.params import ExplainParams

METHODS = ("integrated_gradients", "shapley_sampling")
# Rows x path steps (IG) or rows x perturbations (Shapley) per forward pass: large enough to keep the matrix
# multiplications efficient on a few CPU cores, small enough to bound memory.
EVAL_ROWS = 8192
# Rows handed to Captum in one call; every call reuses the same seed, so a row's attributions do not depend on
# which other rows are explained with it (a served single row gets the reasons it gets in a batch).
CHUNK_ROWS = 1024
# Bootstrap interval: the 2.5th and 97.5th percentiles of the resampled shares.
INTERVAL = (2.5, 97.5)


@dataclass(frozen=True)
class Explainer:
    """Everything needed to attribute a network's decisions to raw columns (stored in models/explainer.json).

    Attributes:
        columns: The raw input columns attributions are summed to, in the order of the model-input blocks.
        owner: Per model-input column, its index into `columns`.
        baseline: The reference row in model-input space (numeric: training median, scaled; one-hot: the
            commonest category's one-hot).
        method: One of METHODS (resolved, never "auto").
        n_steps: Integrated Gradients' path-integral steps.
        n_samples: Shapley value sampling's permutations.
        seed: Seeds the permutations.

    """

    columns: list[str]
    owner: list[int]
    baseline: list[float]
    method: str
    n_steps: int
    n_samples: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Explainer:
        """Rebuild from `to_dict`'s form; a payload of another shape raises DataError naming the rule broken."""
        if not isinstance(payload, dict):
            raise DataError(f"explainer: expected an object of attribution settings, got {type(payload).__name__}")
        names = [f.name for f in fields(cls)]
        missing, unknown = [n for n in names if n not in payload], [k for k in payload if k not in names]
        if missing or unknown:
            raise DataError(f"explainer: attribution settings lack keys {missing} / have unknown keys {unknown}")
        _check_payload(payload)
        return cls(
            columns=[str(c) for c in payload["columns"]],
            owner=[int(i) for i in payload["owner"]],
            baseline=[float(v) for v in payload["baseline"]],
            method=str(payload["method"]),
            n_steps=int(payload["n_steps"]),
            n_samples=int(payload["n_samples"]),
            seed=int(payload["seed"]),
        )


def _check_payload(payload: dict[str, Any]) -> None:
    """Raise DataError when a stored explainer's fields are of the wrong type or inconsistent."""
    columns, owner, baseline = payload["columns"], payload["owner"], payload["baseline"]
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
        raise DataError("explainer: 'columns' must be a non-empty list of column names")
    if not isinstance(owner, list) or not all(type(i) is int and 0 <= i < len(columns) for i in owner):
        raise DataError(f"explainer: 'owner' must list, per model input, an index into the {len(columns)} columns")
    if sorted(set(owner)) != list(range(len(columns))):
        raise DataError("explainer: every column in 'columns' must own at least one model input ('owner')")
    numbers = isinstance(baseline, list) and all(type(v) in (int, float) for v in baseline)
    if not numbers or len(baseline) != len(owner) or not np.all(np.isfinite(np.asarray(baseline, dtype=float))):
        raise DataError(f"explainer: 'baseline' must hold {len(owner)} finite numbers, one per model input")
    if payload["method"] not in METHODS:
        raise DataError(f"explainer: 'method' must be one of {list(METHODS)}, got {payload['method']!r}")
    for key in ("n_steps", "n_samples"):
        if type(payload[key]) is not int or payload[key] < 1:
            raise DataError(f"explainer: {key!r} must be a positive integer, got {payload[key]!r}")
    if type(payload["seed"]) is not int:
        raise DataError(f"explainer: 'seed' must be an integer, got {payload['seed']!r}")


def input_columns(pre: Preprocessor) -> tuple[list[str], list[int]]:
    """Map each model-input column to the raw column it was made from.

    Args:
        pre: The fitted preprocessor (its ColumnTransformer's parts "num", "log", "cat").

    Returns:
        The raw columns in the order of the model-input blocks, and per model-input column its index into them.

    """
    transformer, slices = pre.transformer, pre.transformer.output_indices_
    columns: list[str] = []
    owner = np.full(sum(s.stop - s.start for s in slices.values()), -1)
    for name, _, raw in transformer.transformers_:
        part = slices.get(name, slice(0, 0))
        if name not in ("num", "log", "cat") or part.stop == part.start:
            continue
        widths = [1] * len(raw)
        if name == "cat":
            widths = [len(c) for c in transformer.named_transformers_["cat"][-1].categories_]
        if sum(widths) != part.stop - part.start:
            raise DataError(f"preprocessor part {name!r}: its columns {list(raw)} do not fill its output columns")
        start = part.start
        for column, width in zip(raw, widths, strict=True):
            owner[start : start + width] = len(columns)
            columns.append(str(column))
            start += width
    if (owner < 0).any():
        raise DataError("the preprocessor writes model-input columns that come from none of its parts num/log/cat")
    return columns, owner.tolist()


def reference_row(pre: Preprocessor, x_train: np.ndarray) -> np.ndarray:
    """The reference row: numeric inputs at the training rows' median, each one-hot block at its commonest category.

    Args:
        pre: The fitted preprocessor.
        x_train: The training rows' model inputs (rows, model-input columns).

    Returns:
        One row in model-input space (float64).

    """
    _, owner = input_columns(pre)
    x_train = np.asarray(x_train, dtype=np.float64)
    if x_train.ndim != 2 or x_train.shape[1] != len(owner) or not len(x_train):
        raise DataError(f"reference row: expected training rows of {len(owner)} model inputs, got {x_train.shape}")
    row = np.median(x_train, axis=0)
    slices = pre.transformer.output_indices_
    if "cat" in slices and slices["cat"].stop > slices["cat"].start:
        cat_owner = np.asarray(owner)[slices["cat"]]
        for index in np.unique(cat_owner):
            block = np.flatnonzero(np.asarray(owner) == index)
            row[block] = 0.0
            row[block[np.argmax(x_train[:, block].sum(axis=0))]] = 1.0
    return row


def resolve_method(model: nn.Module, requested: str) -> str:
    """The attribution method for a network: `auto` is Shapley value sampling; IG only for a differentiable one.

    Args:
        model: The network (MLP, FTTransformer, Ensemble, Constant).
        requested: "auto" or one of METHODS (params explain.method).

    Returns:
        One of METHODS.

    Raises:
        ConfigError: An unknown method, or Integrated Gradients for a network it cannot explain.

    """
    if requested not in ("auto", *METHODS):
        raise ConfigError(f"explain.method must be auto or one of {list(METHODS)}, got {requested!r}")
    differentiable = isinstance(model, MLP)
    if requested == "auto":
        # Shapley value sampling adds up exactly for every network, and was as fast on an MLP. Integrated Gradients
        # misses where the path bends: periodic embeddings (32 steps missed a row's logit difference by up to 47 on
        # full Adult, 128 steps by 4) and ReLU kinks (0.2-0.5 logits); only smooth MLPs meet a 0.01 tolerance.
        return "shapley_sampling"
    if requested == "integrated_gradients" and not differentiable:
        why = {
            FTTransformer: "it reads each one-hot block back as a category index (argmax), which has no gradient",
            Ensemble: "its output is a weighted vote of thresholded members, piecewise constant in its inputs",
            Constant: "its output does not depend on its inputs",
        }.get(type(model), "it is not a network known to be differentiable in its inputs")
        raise ConfigError(
            f"explain.method integrated_gradients cannot explain a {type(model).__name__}: {why}; "
            "use shapley_sampling or auto"
        )
    return requested


def fit_explainer(pre: Preprocessor, model: nn.Module, x_train: np.ndarray, settings: ExplainParams) -> Explainer:
    """The explainer of a trained network: raw-column map, reference row, resolved method and its settings.

    Args:
        pre: The fitted preprocessor.
        model: The trained network.
        x_train: The training rows' model inputs.
        settings: params.explain.

    Returns:
        The Explainer.

    """
    columns, owner = input_columns(pre)
    n_inputs = getattr(getattr(model, "args", None), "n_inputs", len(owner))
    if n_inputs != len(owner):
        raise DataError(f"the network takes {n_inputs} inputs but the preprocessor writes {len(owner)}")
    baseline = reference_row(pre, x_train)
    method = resolve_method(model, settings.method)
    return Explainer(
        columns, owner, [float(v) for v in baseline], method, settings.n_steps, settings.n_samples, settings.seed
    )


def _device(model: nn.Module) -> torch.device:
    """Where the network's weights live (CPU for a network without weights)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _owner_matrix(explainer: Explainer) -> np.ndarray:
    """(model inputs, raw columns) 0/1 matrix: multiplying by it sums model-input attributions per raw column."""
    matrix = np.zeros((len(explainer.owner), len(explainer.columns)))
    matrix[np.arange(len(explainer.owner)), explainer.owner] = 1.0
    return matrix


def _integrated_gradients(model: nn.Module, explainer: Explainer, x: torch.Tensor, base: torch.Tensor) -> np.ndarray:
    """Integrated Gradients per model-input column (rows, model inputs), float64."""
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(model)
    per_pass = max(2, EVAL_ROWS // max(1, len(x))) * len(x)
    attributions = ig.attribute(
        x, baselines=base.expand_as(x), n_steps=explainer.n_steps, method="gausslegendre", internal_batch_size=per_pass
    )
    return attributions.detach().double().cpu().numpy() @ _owner_matrix(explainer)


class _Memo:
    """The network as a function that evaluates each distinct row once per Captum call, remembering its logit.

    Adding a column whose value equals the reference row's leaves a perturbed row unchanged, the reference row
    and the row itself recur in every permutation, and so do the small and large coalitions of the columns a
    row differs in: on Adult about one perturbed row in eight is new, so only those go through the network.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.logits: dict[bytes, float] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the rows of `x`, shape (rows,), computing only rows not seen before."""
        rows = x.detach().cpu().numpy()
        keys = [row.tobytes() for row in rows]
        new = list({k: i for i, k in enumerate(keys) if k not in self.logits}.values())
        for start in range(0, len(new), EVAL_ROWS):
            index = new[start : start + EVAL_ROWS]
            values = self.model(x[index]).double().cpu().numpy()
            self.logits.update((keys[i], float(v)) for i, v in zip(index, values, strict=True))
        return torch.tensor([self.logits[k] for k in keys], dtype=torch.float32, device=x.device)


def _shapley_sampling(model: nn.Module, explainer: Explainer, x: torch.Tensor, base: torch.Tensor) -> np.ndarray:
    """Shapley value sampling per raw column (rows, raw columns), float64; each raw column is one player."""
    from captum.attr import ShapleyValueSampling

    mask = torch.tensor(explainer.owner, device=x.device).unsqueeze(0)
    # A permutation's perturbations in one call (repeats found at once), bounded for inputs of many columns.
    per_eval = max(1, min(len(explainer.columns), 4 * EVAL_ROWS // max(1, len(x))))
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(explainer.seed)
        attributions = ShapleyValueSampling(_Memo(model)).attribute(
            x,
            baselines=base.expand_as(x),
            feature_mask=mask,
            n_samples=explainer.n_samples,
            perturbations_per_eval=per_eval,
        )
    # Captum writes a player's value into each of its model-input columns: read it from the first one.
    first = [explainer.owner.index(i) for i in range(len(explainer.columns))]
    return attributions.detach().double().cpu().numpy()[:, first]


def attribute(model: nn.Module, explainer: Explainer, x: torch.Tensor) -> np.ndarray:
    """Attributions of each row's logit to the raw columns, against the explainer's reference row.

    Args:
        model: The network the explainer was fitted for.
        explainer: The fitted Explainer.
        x: Model-input rows (rows, model inputs).

    Returns:
        (rows, len(explainer.columns)) float64 on the logit scale; each row sums to f(x) - f(reference)
        (Integrated Gradients: up to the path integral's error; Shapley sampling: exactly, per permutation).

    """
    if x.ndim != 2 or x.shape[1] != len(explainer.owner):
        raise DataError(f"attribute: expected rows of {len(explainer.owner)} model inputs, got {tuple(x.shape)}")
    device = _device(model)
    x = x.detach().to(device=device, dtype=torch.float32)
    base = torch.tensor(explainer.baseline, dtype=torch.float32, device=device).unsqueeze(0)
    run = _integrated_gradients if explainer.method == "integrated_gradients" else _shapley_sampling
    if run is _integrated_gradients:
        resolve_method(model, "integrated_gradients")
    was_training = model.training
    model.eval()
    try:
        parts = [run(model, explainer, x[i : i + CHUNK_ROWS], base) for i in range(0, len(x), CHUNK_ROWS)]
    finally:
        model.train(was_training)
    return np.concatenate(parts) if parts else np.zeros((0, len(explainer.columns)))


def _logits(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The network's logits in eval mode, float64, without touching gradients."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return model(x.to(_device(model), dtype=torch.float32)).double().cpu().numpy()
    finally:
        model.train(was_training)


def completeness_gap(model: nn.Module, explainer: Explainer, x: torch.Tensor, attributions: np.ndarray) -> float:
    """The largest |sum of a row's attributions - (f(row) - f(reference))|, on the logit scale.

    Args:
        model: The network.
        explainer: The Explainer that produced `attributions`.
        x: The attributed rows.
        attributions: attribute()'s output for `x`.

    Returns:
        The largest gap (0.0 for no rows).

    """
    if len(attributions) != len(x):
        raise DataError(f"completeness: {len(attributions)} attribution rows for {len(x)} input rows")
    if not len(x):
        return 0.0
    base = torch.tensor([explainer.baseline], dtype=torch.float32)
    difference = _logits(model, x) - _logits(model, base)[0]
    return float(np.max(np.abs(attributions.sum(axis=1) - difference)))


def _shares(mean_abs: np.ndarray) -> np.ndarray:
    """Mean |attribution| per column → shares summing to 1 along the last axis.

    All zero (a network whose output does not move from the reference row's): NaN, not equal shares, so that a
    share nothing measured can never pass a policy rule.
    """
    total = mean_abs.sum(axis=-1, keepdims=True)
    return np.where(total > 0, mean_abs / np.where(total > 0, total, 1.0), np.nan)


def _boot_shares(magnitude: np.ndarray, bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """(bootstrap, columns) shares of row-resampled copies of `magnitude` (rows, columns), vectorised."""
    n = len(magnitude)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=bootstrap)
    return _shares(counts @ magnitude / n)


def _figures(columns: list[str], value: np.ndarray, boot: np.ndarray | None) -> dict[str, dict[str, Any]]:
    """{column: {"value", "lo", "hi"}}; lo/hi None without a bootstrap."""
    lo, hi = np.percentile(boot, INTERVAL, axis=0) if boot is not None else (None, None)
    return {
        c: {
            "value": float(value[j]),
            "lo": None if lo is None else float(lo[j]),
            "hi": None if hi is None else float(hi[j]),
        }
        for j, c in enumerate(columns)
    }


def _top(columns: list[str], value: np.ndarray, k: int) -> list[str]:
    """The k columns of largest share, largest first (ties: column order); none where the shares are NaN."""
    return [columns[j] for j in np.argsort(-value, kind="stable")[:k] if np.isfinite(value[j])]


def _group_entry(
    magnitude: np.ndarray, columns: list[str], small: bool, boot: int, rng: np.random.Generator, top_k: int
) -> tuple[dict[str, Any], np.ndarray | None]:
    """One group's shares (intervals unless too small) and its bootstrap draws."""
    value = _shares(magnitude.mean(axis=0)) if len(magnitude) else np.full(len(columns), np.nan)
    draws = None if small else _boot_shares(magnitude, boot, rng)
    entry = {
        "rows": len(magnitude),
        "too_small": small,
        "shares": _figures(columns, value, draws),
        "top": [] if not len(magnitude) else _top(columns, value, top_k),
    }
    return entry, draws


def _feature_report(
    magnitude: np.ndarray, columns: list[str], labels: np.ndarray, settings: dict[str, int], rng: np.random.Generator
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per group of one sensitive feature: shares, and differences from the other judged groups' rows.

    A group below min_rows gets its size only, and its rows are left out of every other group's "rest": a
    difference computed against them would give their shares back. A group without min_rows judged rows beside it
    gets no difference.
    """
    names = sorted(set(labels.tolist()), key=str)
    judged = [g for g in names if (labels == g).sum() >= settings["min_rows"]]
    groups, differences = {}, {}
    for group in names:
        inside = labels == group
        if group not in judged:  # too small to judge: its size only, no figure of its rows
            groups[str(group)] = {"rows": int(inside.sum()), "too_small": True, "shares": {}, "top": []}
            continue
        entry, draws = _group_entry(magnitude[inside], columns, False, settings["bootstrap"], rng, settings["top_k"])
        groups[str(group)] = entry
        rest = magnitude[np.isin(labels, [g for g in judged if g != group])]
        if len(rest) < settings["min_rows"]:
            continue
        value = np.array([entry["shares"][c]["value"] for c in columns])
        boot = draws - _boot_shares(rest, settings["bootstrap"], rng)
        differences[str(group)] = _figures(columns, value - _shares(rest.mean(axis=0)), boot)
    return groups, differences


def importance(
    attributions: np.ndarray,
    columns: list[str],
    groups: dict[str, pd.Series],
    *,
    bootstrap: int,
    seed: int,
    top_k: int,
    min_rows: int,
) -> dict[str, Any]:
    """Each column's share of the attribution, overall and per group, with 95% percentile bootstrap intervals.

    A column's share is its mean |attribution| over the sum across columns of mean |attribution| (shares sum to
    1; NaN where every attribution is zero). A group smaller than `min_rows` is too_small: its size only. A judged
    group's difference is its share minus the other judged groups' rows' share.

    Args:
        attributions: (rows, columns) from attribute().
        columns: The raw columns (Explainer.columns).
        groups: {sensitive feature: group label per attributed row}.
        bootstrap: Resamples of the rows.
        seed: Seeds the resampling.
        top_k: Columns listed as "top".
        min_rows: A group with fewer rows is too_small.

    Returns:
        {"columns", "overall": {"rows", "shares", "top"}, "groups": {feature: {group: {...}}}, "differences"}.

    """
    magnitude = np.abs(np.asarray(attributions, dtype=np.float64))
    if magnitude.ndim != 2 or magnitude.shape[1] != len(columns) or not len(magnitude):
        raise DataError(f"importance: expected attributions of shape (rows > 0, {len(columns)}), got {magnitude.shape}")
    rng = np.random.default_rng(seed)
    overall, _ = _group_entry(magnitude, columns, False, bootstrap, rng, top_k)
    settings = {"min_rows": min_rows, "bootstrap": bootstrap, "top_k": top_k}
    report = {
        "columns": list(columns),
        "overall": {k: overall[k] for k in ("rows", "shares", "top")},
        "groups": {},
        "differences": {},
    }
    for feature, labels in groups.items():
        if len(labels) != len(magnitude):
            raise DataError(f"importance: {len(labels)} group labels of {feature!r} for {len(magnitude)} rows")
        report["groups"][feature], report["differences"][feature] = _feature_report(
            magnitude, columns, labels.astype(str).to_numpy(), settings, rng
        )
    return report


def reason_codes(
    attributions: np.ndarray, positive: np.ndarray, columns: list[str], excluded: Collection[str], k: int
) -> list[list[str]]:
    """Per row, the columns that pushed its score most towards its decision, strongest first.

    Args:
        attributions: (rows, columns) from attribute().
        positive: Per row, whether the decision is the positive label.
        columns: The raw columns (Explainer.columns).
        excluded: Columns never given as a reason (masked or sensitive).
        k: At most this many reasons per row.

    Returns:
        Per row up to k column names, each with an attribution of the decision's sign (positive decision: > 0;
        negative: < 0), never one in `excluded`.

    """
    attributions = np.asarray(attributions, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if attributions.ndim != 2 or attributions.shape[1] != len(columns) or len(positive) != len(attributions):
        raise DataError(
            f"reason codes: attributions {attributions.shape} do not match {len(positive)} decisions "
            f"over {len(columns)} columns"
        )
    towards = attributions * np.where(positive, 1.0, -1.0)[:, None]
    towards[:, [j for j, c in enumerate(columns) if c in set(excluded)]] = -np.inf
    order = np.argsort(-towards, axis=1, kind="stable")[:, : max(0, k)]
    return [[columns[j] for j in row if towards[i, j] > 0] for i, row in enumerate(order)]


def _slug(text: str) -> str:
    """A file-name-safe form of a feature name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "feature"


def _save(fig: Any, path: Path) -> Path:
    """Write a figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _whiskers(figures: list[dict[str, Any]]) -> np.ndarray | None:
    """Matplotlib xerr (2, n) from {"value", "lo", "hi"} figures; None when none has an interval."""
    if all(f["lo"] is None for f in figures):
        return None
    lo = [f["value"] - f["lo"] if f["lo"] is not None else 0.0 for f in figures]
    hi = [f["hi"] - f["value"] if f["hi"] is not None else 0.0 for f in figures]
    return np.clip(np.array([lo, hi]), 0, None)


def _legend_below(ax: Any) -> None:
    """The groups' legend under the axes, where it hides no bar."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize="small", frameon=False)


def _plot_overall(report: dict[str, Any], path: Path) -> Path:
    """Horizontal bars of the top columns' shares with their 95% intervals."""
    import matplotlib.pyplot as plt

    overall = report["overall"]
    top = overall["top"]
    figures = [overall["shares"][c] for c in top]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(top) + 1.5))
    ax.barh(top, [f["value"] for f in figures], xerr=_whiskers(figures), color="#4c72b0", capsize=3)
    ax.invert_yaxis()
    ax.set(
        xlabel="share of the model's attribution (mean |attribution|; whiskers: 95% bootstrap interval)",
        title=f"Inputs that drive the decisions most ({overall['rows']} test rows)",
    )
    return _save(fig, path)


def _grouped_bars(top: list[str], series: dict[str, list[dict[str, Any]]], labels: dict[str, str], path: Path) -> Path:
    """One bar per series (a group) for each top column, side by side, with interval whiskers; x = 0 marked."""
    import matplotlib.pyplot as plt

    height = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(7.5, (0.35 + 0.2 * len(series)) * len(top) + 1.5))
    for i, (label, figures) in enumerate(series.items()):
        values = [f["value"] if f["value"] is not None else np.nan for f in figures]
        ax.barh(
            np.arange(len(top)) + i * height, values, height=height, xerr=_whiskers(figures), capsize=2, label=label
        )
    ax.axvline(0.0, color="black", linewidth=1)
    ax.set_yticks(np.arange(len(top)) + height * (len(series) - 1) / 2, top)
    ax.invert_yaxis()
    ax.set(**labels)
    _legend_below(ax)
    return _save(fig, path)


def _plot_groups(report: dict[str, Any], feature: str, path: Path) -> Path:
    """Per judged group of one sensitive feature, the top columns' shares side by side (no figure of a small one)."""
    top = report["overall"]["top"]
    series = {
        f"{group} ({entry['rows']} rows)": [entry["shares"][c] for c in top]
        for group, entry in report["groups"][feature].items()
        if not entry["too_small"]
    }
    labels = {
        "xlabel": "share of the model's attribution (whiskers: 95% bootstrap interval)",
        "title": f"Top inputs' attribution share per {feature} group",
    }
    return _grouped_bars(top, series, labels, path)


def _plot_differences(report: dict[str, Any], feature: str, path: Path) -> Path:
    """Per judged group of one sensitive feature, its share minus the other judged groups' rows' share."""
    top = report["overall"]["top"]
    series = {
        f"{group} vs the rest": [by_column[c] for c in top]
        for group, by_column in report["differences"][feature].items()
    }
    labels = {
        "xlabel": "group's share minus the other rows' share (whiskers: 95% bootstrap interval)",
        "title": f"How the inputs' attribution shares differ between {feature} groups",
    }
    return _grouped_bars(top, series, labels, path)


def save_plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write the attribution plots of an importance() report as PNGs.

    Args:
        report: importance()'s output.
        out_dir: The folder to write into (created when missing).

    Returns:
        The written files: the overall shares, then per sensitive feature its groups' shares and differences.

    """
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [_plot_overall(report, out_dir / "attribution_overall.png")]
    for feature in report["groups"]:
        paths.append(_plot_groups(report, feature, out_dir / f"attribution_groups_{_slug(feature)}.png"))
        paths.append(_plot_differences(report, feature, out_dir / f"attribution_differences_{_slug(feature)}.png"))
    return paths
