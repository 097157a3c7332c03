"""The sweep's record for people: its table (`dvc plots` rows), the front's plot and the choice in Markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from humane.core.context import overrides_text
from humane.core.metric_names import fairness_metric, is_fairness, parse_fairness
from humane.core.protected import INTERSECTION
from humane.fairness.sweep import FRONT_GAPS, QUALITY_METRICS, SPLITS, CandidateResult
from humane.fairness.sweep_choice import measured, pareto_front


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
            "overrides": overrides_text(r.overrides),
            "methods": ", ".join(r.methods) or "none",
        }
        for split in SPLITS:
            values = r.figures(split)
            row.update({f"{split}_{m}": _round(values.get(m)) for m in QUALITY_METRICS})
            for name, gap in FRONT_GAPS.items():
                for metric, value in values.items():
                    if is_fairness(metric) and metric.endswith(f".{gap}"):
                        f = parse_fairness(metric)[0]
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
    return None if not measured(value) else round(float(value), 6)  # type: ignore[arg-type]


def plot_front(
    results: list[CandidateResult],
    path: Path,
    feature: str,
    quality: str = "accuracy",
    chosen: int | None = None,
    limits: list[tuple[str, str, float]] | None = None,
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
        metric = fairness_metric(feature, gap)
        points = [(i, r.test.get(metric), r.test.get(quality)) for i, r in enumerate(results)]
        points = [(i, x, y) for i, x, y in points if measured(x) and measured(y)]
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
        for threshold in [t for m, r, t in limits or [] if m == metric and r == "max"]:
            ax.axvline(threshold, linestyle="--", color="grey", label=f"policy max {threshold}")
        ax.set(xlabel=f"{gap.replace('_', ' ')} ({feature}), test", title=f"{quality} vs {name.upper()} gap")
        ax.legend(loc="best", fontsize=8)
    axes[0].set_ylabel(f"test {quality}")
    fig.suptitle("Bias-mitigation sweep: chosen on the validation split, drawn on the test split")
    io.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def choice_markdown(
    rows: list[dict[str, Any]], chosen: int | None, quality: str, feature: str, limits: list[tuple[str, str, float]]
) -> str:
    """The choice as Markdown: the rule, the chosen candidate, and why every other one was not chosen.

    `rows` are `table`'s rows (their status holds each candidate's reason).
    """
    rule = ", ".join(f"{m} {'≤' if r == 'max' else '≥'} {t}" for m, r, t in sorted(limits)) or "none"
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
