"""Per-group bar charts of the bias audit with their 95% intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from humane.core.protected import INTERSECTION
from humane.fairness.metrics import FeatureAudit


def save_plots(audits: list[FeatureAudit], out_dir: Path) -> list[dict[str, Any]]:
    """Per-group bar charts of selection rate and TPR with 95% CI error bars; returns the plotted rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[dict[str, Any]] = []
    for audit in audits:
        # Groups too small to judge are left out: their rates are withheld (see audit_feature).
        groups = [g for g in audit.groups if not g["too_small"]]
        fig, axes = plt.subplots(1, 2, figsize=(10, 0.35 * max(len(groups), 1) + 1.5), sharey=True)
        labels = [g["group"] for g in groups]
        for ax, metric in zip(axes, ("selection_rate", "tpr"), strict=True):
            values = np.array([g["metrics"][metric]["value"] for g in groups], dtype=float)
            lo = np.array([g["metrics"][metric]["lo"] for g in groups], dtype=float)
            hi = np.array([g["metrics"][metric]["hi"] for g in groups], dtype=float)
            err = np.nan_to_num(np.vstack([values - lo, hi - values]).clip(min=0))
            ax.barh(labels, np.nan_to_num(values), xerr=err, capsize=3, color="#4c72b0")
            ax.set(title=metric.replace("_", " "), xlim=(0, 1))
            rows += [
                {
                    "feature": audit.feature,
                    "group": g["group"],
                    "metric": metric,
                    "value": g["metrics"][metric]["value"],
                    "lo": g["metrics"][metric]["lo"],
                    "hi": g["metrics"][metric]["hi"],
                }
                for g in groups
            ]
        fig.suptitle(f"{audit.feature}: per-group rates, 95% bootstrap CI")
        name = audit.feature.replace(INTERSECTION, "_x_").replace(" ", "_")
        fig.savefig(out_dir / f"{name}.png", format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
    return rows
