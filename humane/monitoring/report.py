"""The monitoring report a person reads: JSON, an HTML page with plots, a Markdown summary and a group table.

Plots (matplotlib, embedded in the page and saved beside it): drift distance per feature against its threshold,
selection rate per group against the champion's test-time rate (95% intervals), and performance (test-time,
estimated, realised) overall and per group. Beside the data drift, the attribution drift table: each judged input's
share of the model's attribution on the champion's test rows and in the batch, the change and whether it drifted
(or "not measured" and why). Nothing here quotes a row: only column names, group names, counts, rates and shares.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from humane.core import io
from humane.monitoring import monitor

PLOTS = ("drift.png", "selection_rates.png", "performance.png")


def _fmt(figure: dict[str, Any] | None) -> str:
    if not figure or figure.get("value") is None:
        return "—"
    lo, hi = figure.get("lo"), figure.get("hi")
    return f"{figure['value']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")


def plot_drift(result: dict[str, Any], path: Path) -> None:
    """Horizontal bars: each feature's (and the prediction's) drift distance, the threshold as a line."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["drift"])
    # An unmeasured distance (None: MonitoringIncomplete names it) is drawn as no bar.
    values = [result["drift"][n]["distance"] if result["drift"][n]["distance"] is not None else np.nan for n in names]
    method = next((d["method"] for d in result["drift"].values() if d["method"]), "no method")
    colors = ["#c44e52" if result["drift"][n]["drifted"] else "#4c72b0" for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(names) + 1.4))
    ax.barh(names, values, color=colors)
    ax.axvline(result["thresholds"]["drift_threshold"], color="black", linestyle="--", linewidth=1, label="threshold")
    ax.invert_yaxis()
    ax.set(
        xlabel=f"distance to the reference ({method}, ...)",
        title=f"{result['batch']}: drift per feature (red: drifted)",
    )
    ax.legend(loc="lower right")
    fig.savefig(path, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)


def plot_selection(result: dict[str, Any], path: Path) -> None:
    """Per sensitive feature: each judged group's selection rate in the batch and at test time, with 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    features = list(result["groups"])
    fig, axes = plt.subplots(
        len(features),
        1,
        figsize=(7, sum(0.5 * len(result["groups"][f]["groups"]) + 1.2 for f in features)),
        squeeze=False,
    )
    for ax, feature in zip(axes[:, 0], features, strict=True):
        rows = {g: r for g, r in result["groups"][feature]["groups"].items() if not r["too_small"]}
        before = result["test_time"]["groups"].get(feature, {})
        y = np.arange(len(rows))
        for offset, (label, source, color) in enumerate((("batch", rows, "#c44e52"), ("test time", before, "#8c8c8c"))):
            values, err = [], []
            for group in rows:
                figure = (source.get(group) or {}).get("metrics", {}).get("selection_rate") or {}
                v, lo, hi = figure.get("value"), figure.get("lo"), figure.get("hi")
                values.append(v if v is not None else np.nan)
                err.append([v - lo, hi - v] if None not in (v, lo, hi) else [0, 0])
            ax.barh(
                y + 0.38 * offset,
                values,
                height=0.38,
                xerr=np.array(err).T.clip(min=0) if err else None,
                capsize=3,
                color=color,
                label=label,
            )
        ax.set_yticks(y + 0.19, list(rows))
        ax.invert_yaxis()
        ax.set(xlim=(0, 1), title=f"{feature}: selection rate per group (95% CI)")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)


def plot_performance(result: dict[str, Any], path: Path) -> None:
    """Accuracy and ROC AUC: test-time, estimated (CBPE) and realised, overall and per group, with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    performance = result["performance"]
    rows: list[tuple[str, dict[str, Any]]] = [
        (
            "overall",
            {
                "test time": performance["test_time"],
                "estimated": performance["estimated"],
                "realised": performance.get("realised") or {},
            },
        )
    ]
    for feature, table in performance["estimated_groups"].items():
        for group, row in table.items():
            if row["too_small"]:
                continue
            before = result["test_time"]["groups"].get(feature, {}).get(group, {}).get("metrics", {})
            after = (performance.get("realised_groups") or {}).get(feature, {}).get(group, {}).get("metrics", {})
            rows.append((f"{feature}={group}", {"test time": before, "estimated": row["metrics"], "realised": after}))
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 1.5), sharey=True)
    y = np.arange(len(rows))
    for ax, metric in zip(axes, ("accuracy", "roc_auc"), strict=True):
        for offset, (kind, color) in enumerate(
            (("test time", "#8c8c8c"), ("estimated", "#4c72b0"), ("realised", "#c44e52"))
        ):
            values, err = [], []
            for _, figures in rows:
                figure = figures[kind].get(metric) or {}
                v, lo, hi = figure.get("value"), figure.get("lo"), figure.get("hi")
                values.append(v if v is not None else np.nan)
                err.append([v - lo, hi - v] if None not in (v, lo, hi) else [0, 0])
            ax.barh(
                y + 0.27 * offset,
                values,
                height=0.27,
                xerr=np.array(err).T.clip(min=0),
                capsize=2,
                color=color,
                label=kind,
            )
        ax.set(xlim=(0.4, 1), title=metric.replace("_", " "))
        ax.set_yticks(y + 0.27, [name for name, _ in rows])
    axes[0].invert_yaxis()
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{result['batch']}: performance vs the champion's test time (95% intervals)")
    fig.savefig(path, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)


def group_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per group: count, selection rate (and, with labels, accuracy and TPR) in the batch and at test time."""
    rows = []
    for feature, entry in result["groups"].items():
        for group, row in entry["groups"].items():
            before = result["test_time"]["groups"].get(feature, {}).get(group, {}).get("metrics", {})
            cells = {
                "feature": feature,
                "group": group,
                "rows": row["count"],
                "judged": "no (too small)" if row["too_small"] else "yes",
            }
            for metric in ("selection_rate", "accuracy", "tpr"):
                if metric in row["metrics"] or metric == "selection_rate":
                    cells[metric] = _fmt(row["metrics"].get(metric))
                    cells[f"{metric} (test)"] = _fmt(before.get(metric))
            rows.append(cells)
    return rows


def attribution_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """One row per judged input: its attribution share at test time and in the batch, the change, drifted."""
    entry = result.get("attribution_drift") or {}
    rows = []
    for column, row in entry.get("columns", {}).items():
        cells = {key: _fmt({"value": row[key]}) for key in ("reference", "batch", "change")}
        drifted = {True: "yes", False: "no", None: "not measured"}[row["drifted"]]
        rows.append(
            {
                "input": column,
                "share (test)": cells["reference"],
                "share (batch)": cells["batch"],
                "change": cells["change"],
                "drifted": drifted,
            }
        )
    return rows


def attribution_status(result: dict[str, Any]) -> str:
    """The attribution drift in a line: the drifted inputs, none, or "not measured: <why>"."""
    entry = result.get("attribution_drift")
    if entry is None:
        return "not measured: not computed for this batch"
    if not entry.get("measured"):
        return f"not measured: {entry.get('reason')}"
    drifted = [c for c, row in entry["columns"].items() if row["drifted"]]
    return (", ".join(drifted) or "none") + f" (share moved > {entry['threshold']}; {entry['rows']} rows attributed)"


def summary(result: dict[str, Any]) -> str:
    """The Markdown summary shown on the flow run's page."""
    model = result["model"]
    breached = "\n".join(f"- `{b['breach']}` {b['message']}" for b in result["breaches"])
    verdict = f"**Breached:**\n\n{breached}" if breached else f"**{monitor.passed(result).capitalize()}.**"
    if result.get("incomplete"):
        unmeasured = "\n".join(f"- `{i['figure']}`: {i['reason']}" for i in result["incomplete"])
        verdict += f"\n\n**Could not be computed (MonitoringIncomplete), so not judged:**\n\n{unmeasured}"
    drifted = [f for f, d in result["drift"].items() if d["drifted"]]
    performance = result["performance"]
    lines = [
        f"# Monitoring `{result['batch']}` — {model['name']} v{model['version']}",
        "",
        f"{result['rows']} rows ({result['labeled_rows']} labeled), batch time {result['batch_time']}.",
        "",
        verdict,
        "",
        "| figure | batch | champion at test time |",
        "| --- | --- | --- |",
        f"| drifted features | {', '.join(drifted) or 'none'} | — |",
        f"| attribution drift | {attribution_status(result)} | — |",
        f"| out of domain | {result['out_of_domain']['share']:.1%} | — |",
        f"| selection rate | {result['selection_rate']['batch']:.3f} | {result['selection_rate']['reference']:.3f} |",
    ]
    for metric in ("accuracy", "roc_auc"):
        lines.append(
            f"| {metric} (estimated, CBPE) | {_fmt(performance['estimated'][metric])} | "
            f"{_fmt(performance['test_time'][metric])} |"
        )
        if performance.get("realised"):
            lines.append(
                f"| {metric} (realised) | {_fmt(performance['realised'][metric])} | "
                f"{_fmt(performance['test_time'][metric])} |"
            )
    for feature, entry in result["groups"].items():
        for gap, figure in entry["gaps"].items():
            if gap.endswith("_difference"):
                before = result["test_time"]["gaps"].get(feature, {}).get(gap)
                lines.append(f"| {feature} {gap} | {_fmt(figure)} | {_fmt(before)} |")
    lines += ["", *[f"_{note}_" for note in result["notes"]]]
    return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], folder: Path) -> Path:
    """reports/monitoring/<batch>/: report.json, report.html (plots embedded) and the plots; replaced whole."""
    with io.atomic_dir(folder) as tmp:
        plot_drift(result, tmp / PLOTS[0])
        plot_selection(result, tmp / PLOTS[1])
        plot_performance(result, tmp / PLOTS[2])
        io.write_json(tmp / "report.json", result)
        io.write_text(tmp / "report.html", page(result, tmp))
    return folder


def _table(rows: list[dict[str, Any]]) -> str:
    """An HTML table of rows sharing their keys (empty text for no rows)."""
    if not rows:
        return ""
    esc = html.escape
    head = "".join(f"<th>{esc(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{esc(str(r.get(k, '')))}</td>" for k in rows[0]) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(result: dict[str, Any], folder: Path) -> str:
    """A self-contained HTML page: verdict, headline figures, the plots (embedded), the group table, the notes."""
    esc = html.escape
    model = result["model"]
    parts = [
        f"<h1>Monitoring {esc(result['batch'])} — {esc(model['name'])} v{esc(model['version'])}</h1>",
        f"<p>{result['rows']} rows ({result['labeled_rows']} labeled), batch time {esc(result['batch_time'])}; "
        f"reference: the champion's {result['reference_rows']} test rows.</p>",
    ]
    if result["breaches"]:
        items = "".join(f"<li><b>{esc(b['breach'])}</b> {esc(b['message'])}</li>" for b in result["breaches"])
        parts.append(f"<div class='alert'><h2>Breached</h2><ul>{items}</ul></div>")
    elif not result.get("incomplete"):
        parts.append(f"<p class='ok'><b>{esc(monitor.passed(result).capitalize())}.</b></p>")
    if result.get("incomplete"):
        items = "".join(f"<li><b>{esc(i['figure'])}</b>: {esc(i['reason'])}</li>" for i in result["incomplete"])
        parts.append(f"<div class='alert'><h2>Could not be computed (MonitoringIncomplete)</h2><ul>{items}</ul></div>")
    for name in PLOTS:
        data = base64.b64encode((folder / name).read_bytes()).decode()
        parts.append(f"<img alt='{esc(name)}' src='data:image/png;base64,{data}'>")
    parts.append(f"<h2>Attribution drift</h2><p>{esc(attribution_status(result))}</p>")
    parts.append(_table(attribution_rows(result)))
    rows = group_rows(result)
    if rows:
        head = "".join(f"<th>{esc(k)}</th>" for k in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{esc(str(r.get(k, '')))}</td>" for k in rows[0]) + "</tr>" for r in rows)
        parts.append(f"<h2>Groups</h2><table><tr>{head}</tr>{body}</table>")
    domain = result["out_of_domain"]
    rules = "".join(f"<li>{esc(rule)}: {share:.1%}</li>" for rule, share in domain["per_rule"].items())
    parts.append(
        f"<h2>Out of domain</h2><p>{domain['share']:.1%} of rows break a training-domain rule.</p><ul>{rules}</ul>"
    )
    parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in result["notes"]) + "</ul>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%;display:block;"
        "margin:1em 0}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px}"
        ".alert{border:2px solid #c44e52;padding:0 1em}.ok{color:#2a7a2a}"
    )
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{esc(result['batch'])}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
