"""A federated model's governance facts: which figures the coordinator cannot measure and why, its sites, its run.

A federated coordinator's workspace (federation/) holds no row: the sites ran load, validation, the identifier
check, the privacy policy and the data audit on their own data, and sent aggregates only (tasks/federate.py). So
some figures the promotion policy can name do not exist here. They are never skipped silently: each is
"unmeasurable (why)" wherever the gate, the card or MLflow would show it (`why_unmeasured`), and a rule on one
fails. The workspace is federated when reports/federation.json exists (the federate stage's output).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from humane.core import io
from humane.core import metric_names as names
from humane.core.paths import Paths
from humane.governance.domain import CATEGORICAL, NUMERIC, ColumnDomain, Domain

FEDERATED_PREFIX = "federated."  # the run's figures in the candidate, MLflow and the card: federated.<name>
MARK = "federated.rounds"  # a candidate holding it is a federated model's
NOT_HERE = "not here: the rows stay at their sites (federated training)"
_SITE_RISK = (
    "unmeasurable (federated: k-anonymity and l-diversity are measured by each site's load stage on its own rows "
    "and not sent to the coordinator)"
)
_SITE_ROWS = (
    "unmeasurable (federated: the membership-inference attack needs training and test rows, which stay at the sites)"
)
_NO_BASELINE = "unmeasurable (federated: no baseline model is trained at the sites)"
_NO_SCORES = "unmeasurable (federated: the sites send score histograms and the summed log loss, not scores)"
_NO_TEST_ROWS = "unmeasurable (federated: attributions and proxies need the test rows, which stay at the sites)"
# What a federated run cannot measure, by the candidate's metric name (a name ending in "." is a prefix).
UNMEASURED = {
    "privacy.k_min": _SITE_RISK,
    "privacy.share_below_k": _SITE_RISK,
    "privacy.l_min": _SITE_RISK,
    "privacy.mia_auc": _SITE_ROWS,
    "privacy.mia_tpr_at_1pct_fpr": _SITE_ROWS,
    names.BASELINE_PREFIX: _NO_BASELINE,
    names.COMPUTE_PREFIX: (
        "unmeasurable (federated: each site's compute is its own; the card gives the run's wall time)"
    ),
    names.model_test_metric("brier"): _NO_SCORES,
    names.model_test_metric("pr_auc"): _NO_SCORES,
    names.EXPLAIN_PREFIX: _NO_TEST_ROWS,
}
# The report files the tracking run records of a federated workspace (no row file exists here).
RECORDED = (
    "params",
    "metrics",
    "train_metrics",
    "train_history",
    "validation_report",
    "fairness",
    "audit_report",
    "data_audit",
    "privacy_report",
    "membership_report",
    "model",
    "preprocessor",
    "privacy_policy",
    "federation",
    "federated_evaluation",
)


def is_federated(paths: Paths) -> bool:
    """Whether the workspace's model was trained by federated training (its federate stage wrote the report)."""
    return paths.federation.exists()


def why_unmeasured(metric: str) -> str | None:
    """Why a federated model has no value for `metric`, or None when the federated run measures it."""
    for name, why in UNMEASURED.items():
        if metric == name or (name.endswith(".") and metric.startswith(name)):
            return why
    return None


def sites_with(federation: dict[str, Any], status: str) -> list[dict[str, Any]]:
    """The sites of the run with this status (trained, excluded, dropped)."""
    return [s for s in federation["sites"] if s["status"] == status]


def figures(federation: dict[str, Any]) -> dict[str, float]:
    """federated.*: the run's numbers, for the gate's candidate and MLflow (a policy may name them)."""
    dp = federation.get("dp")
    return {
        f"{FEDERATED_PREFIX}sites_trained": float(len(sites_with(federation, "trained"))),
        f"{FEDERATED_PREFIX}sites_excluded": float(len(sites_with(federation, "excluded"))),
        f"{FEDERATED_PREFIX}sites_dropped": float(len(sites_with(federation, "dropped"))),
        MARK: float(federation["rounds"]),
        f"{FEDERATED_PREFIX}train_rows": float(sum(s["rows"]["train"] for s in sites_with(federation, "trained"))),
        f"{FEDERATED_PREFIX}test_rows": float(sum(s["rows"]["test"] for s in sites_with(federation, "trained"))),
        f"{FEDERATED_PREFIX}bytes_to_sites": float(sum(b["to_sites"] for b in federation["bytes"])),
        f"{FEDERATED_PREFIX}bytes_from_sites": float(sum(b["from_sites"] for b in federation["bytes"])),
        f"{FEDERATED_PREFIX}wall_s": float(federation["wall_s"]),
        f"{FEDERATED_PREFIX}min_group_size": float(federation["min_group_size"]),
        f"{FEDERATED_PREFIX}noise": float(federation["noise"]),
        f"{FEDERATED_PREFIX}secagg": 1.0 if federation["secagg"] else 0.0,
        f"{FEDERATED_PREFIX}dp_epsilon": float(dp["epsilon"]) if dp else math.inf,
    }


def privacy_figures(train_metrics: dict[str, Any]) -> dict[str, float]:
    """privacy.* of a federated model: only ε (record-level DP-SGD at the sites, else inf); the rest unmeasurable."""
    return {"privacy.epsilon": float(train_metrics["epsilon"]) if train_metrics.get("dp_enabled") else math.inf}


def site_rows(federation: dict[str, Any]) -> list[list[Any]]:
    """The card's table of sites: name, status, why (excluded or dropped), train and test rows, rounds joined."""
    return [
        [s["site"], s["status"], s.get("reason") or "-", s["rows"]["train"], s["rows"]["test"], s["rounds_joined"]]
        for s in federation["sites"]
    ]


def run_lines(federation: dict[str, Any]) -> list[str]:
    """The card's bullets on the run: rounds, strategy, what left the sites, privacy options, bytes and time."""
    dp = federation.get("dp")
    sent = sum(b["from_sites"] for b in federation["bytes"])
    received = sum(b["to_sites"] for b in federation["bytes"])
    strategy = federation["strategy"] + (
        f" (proximal term mu {federation['proximal_mu']:g})" if federation["strategy"] == "fedprox" else ""
    )
    return [
        f"{federation['rounds']} rounds of {strategy} over the sites that trained; the global model is the last "
        "round's (the validation loss the sites reported is in the history, not used to pick a round)",
        f"what left a site: aggregates only (counts, sums, category sets, confusion counts per group; groups with "
        f"fewer than {federation['min_group_size']} rows withheld"
        + (f", Gaussian noise sd {federation['noise']:g} on the counts" if federation["noise"] else "")
        + ") and model updates"
        + (" (summed by secure aggregation, SecAgg+)" if federation["secagg"] else ""),
        (
            f"record-level differential privacy at each site (DP-SGD by Opacus): ε = {dp['epsilon']:.3f} at "
            f"δ = {dp['delta']:g} for one row of a site's training data (not for a site taking part), clip "
            f"{dp['clip']:g}, noise multiplier {dp['noise_multiplier']:.3f}; the summaries and counts a site sends "
            "and its validation losses are outside this ε"
        )
        if dp
        else "no differential privacy: no bound on what the updates reveal about a site's rows",
        f"bytes sent: {received:,} to the sites, {sent:,} from the sites; wall time {federation['wall_s']:.1f} s",
    ]


def lineage(paths: Paths, federation: dict[str, Any]) -> dict[str, str]:
    """The data lineage tags of a federated run: the sites that trained and their rows, no file md5s."""
    trained = sites_with(federation, "trained")
    return {
        "data.source": "federated: " + ", ".join(f"{s['site']} ({s['rows']['train']} train rows)" for s in trained),
        "data.raw_md5.train": NOT_HERE,
        "data.raw_md5.test": NOT_HERE,
        "data.md5.train": NOT_HERE,
        "data.md5.test": NOT_HERE,
        "federated.sites": ", ".join(f"{s['site']}:{s['status']}" for s in federation["sites"]),
        "federated.rounds": str(federation["rounds"]),
    }


def serving_domain(pre: Any, ranges: dict[str, list[float]], protected: set[str]) -> Domain:
    """The served model's input domain from what the coordinator holds: the preprocessor and the stated ranges.

    Categorical inputs know the categories the global preprocessor was fitted on (each sent by a site with at least
    federated.min_group_size rows); numeric inputs the profile's stated ranges (data.ranges, bins) or no bound:
    no training row is here to take extremes from. Whether a column held nulls is not known: taken as yes. A
    protected column (`humane.privacy.policy.protected_columns`) gets no category set, as in `fit_domain`.
    """
    columns: dict[str, ColumnDomain] = {}
    for name, _, inputs in pre.transformer.transformers_:
        if name in ("num", "log"):
            for column in inputs:
                low, high = ranges.get(column, (None, None))
                columns[column] = ColumnDomain(
                    NUMERIC, True, None if low is None else float(low), None if high is None else float(high)
                )
    if "cat" in pre.transformer.named_transformers_:
        encoder = pre.transformer.named_transformers_["cat"][-1]
        inputs = dict((n, c) for n, _, c in pre.transformer.transformers_)["cat"]
        for column, known in zip(inputs, encoder.categories_, strict=True):
            values = None if column in protected else [str(v) for v in known if v == v]
            columns[column] = ColumnDomain(CATEGORICAL, True, categories=values)
    return Domain({c: columns[c] for c in pre.inputs if c in columns})


def example_frame(domain: Domain) -> pd.DataFrame:
    """An empty frame typed like the model's inputs: `input_example` then fills it with placeholders, never a row."""
    return pd.DataFrame(
        {c: pd.Series(dtype=np.float64 if d.kind == NUMERIC else object) for c, d in domain.columns.items()}
    )


def read(paths: Paths) -> dict[str, Any]:
    """reports/federation.json."""
    return io.read_json(paths.federation)
