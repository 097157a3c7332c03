"""The champion's monitoring reference: its test rows as the model read them, with its scores, fixed at tracking.

Reference and batch share one shape (`monitored_frame`): the served model's input columns after the privacy
policy (binned, capped, rare categories grouped; never a pseudonymized or dropped column, nor one kept although
it looks identifying (privacy.keep) or derived from a date (data.dates): the unmasked columns of
`humane.privacy.policy.protected_columns`), the sensitive columns as `__sensitive__<feature>`
(`humane.core.protected.sensitive_name`; after the policy too; in the reference a group too small to judge is not
named, see `reference_frame`), the label as 0/1 in `__label__` when known, and the model's probability and
decision. Drift then compares like with like, and the group metrics of humane.fairness.metrics read both directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from humane.core.errors import DataError
from humane.core.paths import LABEL_COLUMN
from humane.core.protected import sensitive_name
from humane.governance.serving import DECISION, DOMAIN_RULES, OUT_OF_DOMAIN, PROBABILITY
from humane.monitoring.params import MonitoringSections
from humane.privacy.policy import FittedPolicy, apply_policy, protected_columns

# Where the reference lives among the champion's run artifacts (logged by the track stage).
# The reference's name for a sensitive group too small to judge: its own name would describe a few people.
SMALL_GROUP = "<withheld group>"
REFERENCE_ARTIFACT = "monitoring/reference.parquet"
PROBABILITY_COLUMN, DECISION_COLUMN = "__probability__", "__decision__"


@dataclass(frozen=True)
class MonitoredColumns:
    """The columns the monitoring needs beside the model's inputs: the sensitive features and the label."""

    sensitive: list[str]
    target: str
    # Inputs never stored row by row (kept although they look identifying, date-derived): the reference and the
    # batch frame leave them out, and their drift is not measured (the report says so).
    withheld: tuple[str, ...] = ()
    # A sensitive group with fewer reference rows than this is not named in the reference (audit.min_group_size:
    # the audit judges no smaller group, so the monitoring compares none).
    min_group_rows: int = 0

    @staticmethod
    def of(params: MonitoringSections) -> MonitoredColumns:
        """From params: the sensitive features, the label, the unmasked protected columns withheld, the group size."""
        withheld = tuple(sorted(protected_columns(params.privacy, params.data).unmasked))
        sensitive, size = list(params.data.sensitive_features), params.audit.min_group_size
        return MonitoredColumns(sensitive, params.data.target, withheld, size)


def positive_indicator(labels: pd.Series, positive: Any, known: list[Any], name: str) -> pd.Series:
    """Labels as 1.0 (positive) / 0.0, null where unknown; a value outside the model's labels is a DataError.

    Labels are not personal data: the unexpected values are listed (a few) so the sender can fix them.
    """
    text = labels.astype("object").where(labels.notna(), None)
    known_text = {str(k) for k in known}
    present = text.notna()
    bad = sorted({str(v) for v in text[present] if str(v) not in known_text})
    if bad:
        raise DataError(
            f"{name}: column {labels.name!r} (the label) holds values {bad[:5]} outside the model's labels "
            f"{sorted(known_text)}; rule: labels must be one of the model's labels or empty"
        )
    out = pd.Series(np.nan, index=labels.index, dtype=np.float64)
    out[present] = (text[present].astype(str) == str(positive)).astype(np.float64)
    return out


def monitored_frame(
    raw: pd.DataFrame,
    scores: pd.DataFrame,
    policy: FittedPolicy,
    inputs: list[str],
    columns: MonitoredColumns,
    positive: Any,
    labels: list[Any],
    name: str,
) -> pd.DataFrame:
    """Raw rows and the served model's output for them → the monitored shape (see the module docstring).

    The same privacy transform the model applies to requests is applied here, so a batch is compared with the
    reference as the model read both; a row whose inputs were already masked (the reference's test rows) is
    unchanged by it.
    """
    wanted = list(dict.fromkeys([*inputs, *(c for c in columns.sensitive if c in raw)]))
    masked = apply_policy(policy, raw[[c for c in wanted if c not in policy.pseudonymize]], key=None)
    out = masked[[c for c in inputs if c in masked and c not in columns.withheld]].reset_index(drop=True)
    for feature in columns.sensitive:
        out[sensitive_name(feature)] = masked[feature].reset_index(drop=True)
    if columns.target in raw:
        out[LABEL_COLUMN] = positive_indicator(raw[columns.target], positive, labels, name).reset_index(drop=True)
    out[PROBABILITY_COLUMN] = scores[PROBABILITY].to_numpy(dtype=np.float64)
    out[DECISION_COLUMN] = scores[DECISION].to_numpy(dtype=np.int64)
    return out


def reference_frame(model: Any, test: pd.DataFrame, inputs: list[str], columns: MonitoredColumns) -> pd.DataFrame:
    """The champion's test rows (data/interim/test.parquet, already masked by the policy) scored by the model.

    Args:
        model: The served HumaneModel (policy, preprocessor, thresholds loaded).
        test: The load stage's test rows.
        inputs: The model's raw input columns.
        columns: The sensitive features and the label column.

    Returns:
        The monitored frame; a sensitive group with fewer rows than `columns.min_group_rows` is named
        SMALL_GROUP (too small to judge, so the monitoring compares no figure of it).

    """
    missing = [c for c in [*inputs, *columns.sensitive, columns.target] if c not in test]
    if missing:
        raise DataError(f"test rows: columns {missing} are missing; the monitoring reference cannot be built")
    request = test[list(dict.fromkeys([*inputs, *model.needs_sensitive]))]
    scores = model.predict(None, request)
    labels = list(model.preprocessor.labels)
    positive = model.preprocessor.positive_label
    frame = monitored_frame(test, scores, model.policy, inputs, columns, positive, labels, "test rows")
    for feature in columns.sensitive:
        groups = frame[sensitive_name(feature)]
        counts = groups.value_counts()
        small = groups.isin(counts[counts < columns.min_group_rows].index)
        frame[sensitive_name(feature)] = groups.astype("object").where(~small, SMALL_GROUP)
    return frame


def domain_shares(scores: pd.DataFrame, separator: str) -> dict[str, Any]:
    """Share of rows the served model flags as outside its training domain, overall and per rule."""
    n = len(scores)
    rules: dict[str, int] = {}
    for text in scores[DOMAIN_RULES]:
        for rule in filter(None, str(text).split(separator)):
            rules[rule] = rules.get(rule, 0) + 1
    share = float(scores[OUT_OF_DOMAIN].astype(bool).mean()) if n else 0.0
    return {
        "share": share,
        "rows": int(scores[OUT_OF_DOMAIN].astype(bool).sum()),
        "per_rule": {rule: count / n for rule, count in sorted(rules.items())},
    }


def write_reference(paths: Any, threshold: float, columns: MonitoredColumns, dest: Path) -> int:
    """Score the workspace's test rows with the model as it is served and write the reference Parquet; its rows.

    Args:
        paths: The workspace's `Paths` (model, preprocessor, policy, thresholds, interim test rows).
        threshold: The decision threshold the served model uses.
        columns: The sensitive features and the label column.
        dest: The Parquet file to write.

    """
    from humane.core.io import write_parquet
    from humane.governance.serving import HumaneModel

    model = HumaneModel().load_files(
        threshold, paths.privacy_policy, paths.preprocessor, paths.model, None, paths.thresholds
    )
    frame = reference_frame(model, pd.read_parquet(paths.interim_test), list(model.preprocessor.inputs), columns)
    write_parquet(dest, frame)
    return len(frame)
