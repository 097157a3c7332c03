"""Explain stage: why the model decides as it does, for the reviewer and for the person decided about.

Attributions of a seeded sample of test rows (overall, per sensitive group, with intervals), the inputs that
stand in for a sensitive feature (proxies), the cohorts where the model errs most, and what the served model
needs to give reasons and counterfactuals (models/explainer.json). Only aggregates, column names and candidate
values are written: no row of data, no per-row attribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from humane.core import io
from humane.core.context import RunContext
from humane.core.errors import DataError, HumaneError
from humane.core.paths import Paths
from humane.core.protected import group_labels, group_text, sensitive_name
from humane.fairness.error_analysis import error_cohorts
from humane.fairness.metrics import shown_names
from humane.fairness.proxies import proxy_metrics, proxy_report
from humane.fairness.thresholds import served_decisions
from humane.modeling.attribution import (
    Explainer,
    attribute,
    completeness_gap,
    fit_explainer,
    importance,
    reason_codes,
    save_plots,
)
from humane.modeling.counterfactual import (
    CounterfactualSpace,
    Decide,
    check_immutable,
    fit_space,
    never_inputs,
    search,
)
from humane.modeling.features import Preprocessor, load_preprocessor, split_xy
from humane.modeling.model import Network, load_model, probabilities
from humane.pipeline.entry import stage_main
from humane.pipeline.params import Params
from humane.privacy.policy import protected_columns

COUNTERFACTUAL_ROWS = 100  # refused rows of the sample whose counterfactual is searched (coverage, one example)


@dataclass(frozen=True)
class Candidate:
    """The model and the test rows as the explanations read them."""

    pre: Preprocessor
    model: Network
    thresholds: dict[str, Any]
    x_train: np.ndarray
    test: pd.DataFrame  # processed test rows: model inputs, label, sensitive columns
    raw_test: pd.DataFrame  # the same rows as the load stage wrote them
    protected: frozenset[str]


def read_candidate(params: Params, paths: Paths) -> Candidate:
    """The trained model, its preprocessor and thresholds, and the test rows in both forms."""
    test, raw_test = pd.read_parquet(paths.processed_test), pd.read_parquet(paths.interim_test)
    aligned = len(raw_test) == len(test) and all(
        (group_text(raw_test[s]).to_numpy() == test[sensitive_name(s)].to_numpy()).all()
        for s in params.data.sensitive_features
    )
    if not aligned:  # the same rows in the same order, or cohorts and counterfactuals would read other rows
        raise DataError(
            f"{paths.interim_test} and {paths.processed_test} are not the same rows in the same order: "
            "rerun the preprocess stage"
        )
    x_train, _, _ = split_xy(pd.read_parquet(paths.processed_train))
    protected = protected_columns(params.privacy, params.data, io.read_json(paths.privacy_policy)).all
    return Candidate(
        load_preprocessor(paths.preprocessor),
        load_model(torch.load(paths.model, weights_only=True)),
        io.read_json(paths.thresholds),
        x_train.numpy(),
        test,
        raw_test,
        protected,
    )


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """A seeded sample of row positions (all rows, in order, when there are no more than `size`)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def sensitive_groups(frame: pd.DataFrame, features: list[str], min_rows: int) -> dict[str, pd.Series]:
    """Each sensitive feature's group per row as the audit shows it (a group below min_rows numbered, not named)."""
    groups = {}
    for feature in features:
        labels = group_labels(frame[sensitive_name(feature)], feature).reset_index(drop=True)
        groups[feature] = labels.map(shown_names(labels.value_counts().to_dict(), min_rows))
    return groups


def scores(model: Network, x: np.ndarray, groups: pd.DataFrame, thresholds: dict, threshold: float) -> Any:
    """(decision, probability) per row: the per-group thresholds of a post-processed model, else p >= threshold."""
    with torch.inference_mode():
        p = probabilities(model(torch.from_numpy(x))).numpy().astype(np.float64)
    return served_decisions(p, groups, thresholds, x, threshold), p


def raw_decider(c: Candidate, threshold: float) -> Decide:
    """Raw rows (as the load stage wrote them) → (decision, probability), the path the served model takes."""

    def decide(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        groups = pd.DataFrame({sensitive_name(s): group_text(frame[s]).to_numpy() for s in c.pre.sensitive})
        return scores(c.model, c.pre.transform(frame), groups, c.thresholds, threshold)

    return decide


def actionable_columns(params: Params, c: Candidate) -> list[str]:
    """Inputs a counterfactual may change: not protected (masked, sensitive), not immutable by the profile."""
    check_immutable(params.data.immutable, c.pre.inputs, never_inputs(params))
    fixed = {*c.protected, *params.data.immutable, *params.data.sensitive_features}
    return [col for col in c.pre.inputs if col not in fixed]


def attributions_of(c: Candidate, explainer: Explainer, rows: np.ndarray, params: Params) -> tuple[np.ndarray, float]:
    """The sample's per-row attributions and their completeness gap; attributions that do not add up stop here."""
    x = torch.from_numpy(c.test.iloc[rows].pipe(split_xy)[0].numpy())
    attributions = attribute(c.model, explainer, x)
    gap = completeness_gap(c.model, explainer, x, attributions)
    if not gap <= params.explain.max_completeness_gap:
        raise HumaneError(
            f"explain: the {explainer.method} attributions miss a row's logit difference by {gap:.3g} "
            f"(explain.max_completeness_gap {params.explain.max_completeness_gap}); raise explain.n_steps or set "
            "explain.method shapley_sampling, whose sums are exact"
        )
    return attributions, gap


def proxies_with_shares(
    c: Candidate, explainer: Explainer, groups: dict[str, pd.Series], shares: dict[str, float], params: Params
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """The proxy report (each feature with its proxies' attribution share) and the explain.* policy metrics."""
    features = c.test[split_xy(c.test)[2]]
    report = proxy_report(
        features, explainer.columns, explainer.owner, groups, params.explain, params.audit.min_group_size
    )
    metrics = proxy_metrics(report, shares)
    for feature, entry in report.items():
        entry["attribution_share"] = metrics["proxy_attribution_share"][feature]
    return report, metrics


def counterfactuals(c: Candidate, refused: np.ndarray, decide: Decide, space: CounterfactualSpace) -> dict[str, Any]:
    """How many of up to COUNTERFACTUAL_ROWS refused rows have a counterfactual within two changes; one example.

    The example keeps the changed columns and their new values only (candidate values, never the row's own).
    """
    refused = refused[:COUNTERFACTUAL_ROWS]
    if not len(refused):
        return {"searched": 0, "found": 0, "example": None}
    frozen = set(c.pre.inputs) - set(space.columns)
    found = [r for r in search(c.raw_test.iloc[refused], decide, space, frozen=frozen) if r is not None]
    example = None
    if found:
        example = {
            "changes": {col: ch["to"] for col, ch in found[0]["changes"].items()},
            "probability": found[0]["probability"],
        }
    return {"searched": len(refused), "found": len(found), "example": example}


def attribution_report(
    c: Candidate, explainer: Explainer, groups: dict[str, pd.Series], params: Params
) -> tuple[np.ndarray, np.ndarray, dict[str, Any], float]:
    """The sampled rows, their attributions, the shares overall and per group with intervals, and the gap."""
    settings = params.explain
    rows = sample_rows(len(c.test), settings.sample_rows, settings.seed)
    attributions, gap = attributions_of(c, explainer, rows, params)
    sampled = {f: g.iloc[rows].reset_index(drop=True) for f, g in groups.items()}
    report = importance(
        attributions,
        explainer.columns,
        sampled,
        bootstrap=settings.bootstrap,
        seed=settings.seed,
        top_k=settings.top_k,
        min_rows=params.audit.min_group_size,
    )
    return rows, attributions, report, gap


def decision_example(
    c: Candidate,
    params: Params,
    paths: Paths,
    sample: tuple[np.ndarray, np.ndarray],
    positive: np.ndarray,
    explainer: Explainer,
) -> tuple[dict[str, Any], CounterfactualSpace]:
    """A refused row's reasons, the counterfactuals' coverage, and the space the served model searches."""
    rows, attributions = sample
    space = fit_space(*training_space(params, paths, c))
    refused = ~positive[rows]
    first = attributions[refused][:1]  # no row when the model refuses none of the sample
    reasons = reason_codes(
        first, np.zeros(len(first), dtype=bool), explainer.columns, c.protected, params.explain.reasons
    )
    found = counterfactuals(c, rows[refused], raw_decider(c, params.evaluate.threshold), space)
    return {"reasons": reasons[0] if reasons else [], "counterfactuals": found}, space


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Explain the model on the test split; write the report, the policy metrics, the plots and the explainer."""
    c = read_candidate(params, paths)
    explainer = fit_explainer(c.pre, c.model, c.x_train, params.explain)
    groups = sensitive_groups(c.test, params.data.sensitive_features, params.audit.min_group_size)
    x_test, y_test, _ = split_xy(c.test)
    positive, _ = scores(c.model, x_test.numpy(), c.test, c.thresholds, params.evaluate.threshold)
    rows, attributions, report, gap = attribution_report(c, explainer, groups, params)
    shares = {col: v["value"] for col, v in report["overall"]["shares"].items()}
    proxies, metrics = proxies_with_shares(c, explainer, groups, shares, params)
    splittable = [col for col in c.pre.inputs if col not in c.protected]
    errors = positive != y_test.numpy().astype(bool)
    cohorts = error_cohorts(
        c.raw_test[splittable],
        errors,
        groups,
        params.explain,
        params.explain.seed,
        min_rows=params.audit.min_group_size,
    )
    example, space = decision_example(c, params, paths, (rows, attributions), positive, explainer)
    with io.atomic_dir(paths.explain_plots_dir) as out_dir:
        plots = [path.name for path in save_plots(report, out_dir)]
    served = {"attribution": explainer.to_dict(), "excluded": sorted(c.protected), "counterfactual": space.to_dict()}
    io.write_json(paths.explainer, served)
    io.write_json(
        paths.explanations,
        {
            "method": explainer.method,
            "sample_rows": len(rows),
            "seed": params.explain.seed,
            "completeness_gap": gap,
            "baseline": "numeric inputs at the training median, categorical inputs at the commonest category",
            "attributions": report,
            "proxies": proxies,
            "error_analysis": cohorts,
            "example": example,
            "plots": plots,
        },
    )
    io.write_json(paths.explain_metrics, {**metrics, "completeness_gap": gap})
    return summary(report, proxies, cohorts, example)


def training_space(params: Params, paths: Paths, c: Candidate) -> tuple[pd.DataFrame, list[str], list[str]]:
    """fit_space's inputs: the training rows' actionable columns, those columns, and which of them are numeric."""
    actionable = actionable_columns(params, c)
    train = pd.read_parquet(paths.interim_train, columns=actionable)
    return train, actionable, [col for col in actionable if pd.api.types.is_numeric_dtype(train[col])]


def summary(report: dict[str, Any], proxies: dict[str, Any], cohorts: dict[str, Any], example: dict) -> str:
    """The stage's lines: the top inputs, each feature's proxies, the worst cohort, the counterfactuals found."""
    top = ", ".join(f"{col} {report['overall']['shares'][col]['value']:.2f}" for col in report["overall"]["top"])
    lines = [f"explain: top inputs (attribution share) {top}"]
    for feature, entry in proxies.items():
        named = ", ".join(entry["proxies"]) or "none"
        lines.append(
            f"explain {feature}: proxy AUC {entry['auc']:.3f}, stand-ins {named} "
            f"(attribution share {entry['attribution_share']:.2f})"
        )
    judged = [c for c in cohorts["cohorts"] if c["judged"]]
    if judged:
        worst = judged[0]
        lines.append(
            f"explain: worst cohort {worst['rule']}: error rate {worst['error_rate']:.3f} "
            f"[{worst['lo']:.3f}, {worst['hi']:.3f}] over {worst['rows']} rows"
        )
    found = example["counterfactuals"]
    lines.append(
        f"explain: a counterfactual within two changes for {found['found']} of {found['searched']} "
        "refused rows searched"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    stage_main(run)
