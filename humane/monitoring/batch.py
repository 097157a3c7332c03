"""Reading a production batch and checking it against the served model's input schema, before anything is written.

Every way a batch can be unusable ends in a DataError naming the file, the column and the rule; no error
quotes a value of an input column (any of them may be masked by the privacy policy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from humane.core.errors import DataError
from humane.data.params import ReadParams
from humane.data.sources import read_table

NUMERIC_TYPES = ("double", "float", "long", "integer")
BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class Batch:
    """A checked batch: its name (the file's stem), the columns the monitoring reads, and whether it has labels."""

    name: str
    path: Path
    frame: pd.DataFrame
    labeled: bool
    notes: list[str]


def batch_name(path: Path) -> str:
    """The batch's name, used for its report folder: the file name without its suffixes (shifted.csv.gz: shifted)."""
    name = path.name.split(".")[0]
    if not BATCH_NAME.match(name):
        raise DataError(
            f"{path}: the batch's name {name!r} must be letters, digits, '_', '-' or '.' (it names the report folder)"
        )
    return name


def input_columns(schema: Any) -> dict[str, str]:
    """The served model's input columns and the kind each must be: 'numeric', 'boolean' or 'text'."""
    kinds = {}
    for spec in schema.inputs:
        kind = spec.type.name
        kinds[spec.name] = "numeric" if kind in NUMERIC_TYPES else "boolean" if kind == "boolean" else "text"
    return kinds


def check_columns(frame: pd.DataFrame, kinds: dict[str, str], sensitive: list[str], name: str) -> pd.DataFrame:
    """Every input and sensitive column present, with the kind the model reads; numbers held as text converted.

    Raises:
        DataError: naming the file, the column and the rule (values withheld).

    """
    needed = list(dict.fromkeys([*kinds, *sensitive]))
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(
            f"{name}: columns {missing} are missing; rule: a batch holds every input column of the "
            f"served model and the sensitive columns {sensitive} (the group gaps need them)"
        )
    out = frame.copy()
    for column, kind in kinds.items():
        values = out[column]
        if values.isna().all():
            continue  # an all-null column: the served model's domain flags nulls, per rule
        if kind == "numeric" and not pd.api.types.is_numeric_dtype(values):
            parsed = pd.to_numeric(values, errors="coerce")
            bad = int((values.notna() & parsed.isna()).sum())
            if bad:
                raise DataError(
                    f"{name}: column {column!r}: the model reads numbers; {bad} of {len(values)} values are not "
                    "numbers (values withheld); rule: numeric input columns hold numbers"
                )
            out[column] = parsed
        elif kind == "text" and pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            raise DataError(
                f"{name}: column {column!r}: the model reads text (categories) but the column holds "
                "numbers only; rule: categorical input columns hold their category names"
            )
    return out


def read_batch(
    path: Path, kinds: dict[str, str], sensitive: list[str], target: str, min_rows: int, read: ReadParams | None = None
) -> Batch:
    """Read a CSV or Parquet batch (humane.data.sources.read_table) and check it; only the needed columns kept.

    A batch without the label column, or whose labels are all empty, is unlabeled: the label metrics are skipped,
    with a note. Columns the model does not read (identifiers, free text) are dropped here, never stored.
    """
    name = str(path)
    frame = read_table(Path(path), name, read)
    if len(frame) < min_rows:
        raise DataError(
            f"{name}: {len(frame)} rows; rule: a batch needs at least monitor.min_rows = {min_rows} rows to be judged"
        )
    checked = check_columns(frame, kinds, sensitive, name)
    keep = list(dict.fromkeys([*kinds, *sensitive, *([target] if target in frame else [])]))
    notes = []
    labeled = target in frame and bool(frame[target].notna().any())
    if not labeled:
        why = "has no label column" if target not in frame else "has an empty label column"
        notes.append(
            f"the batch {why} ({target!r}): accuracy, ROC AUC and the equalized-odds gaps are estimated "
            "(CBPE) or skipped, not measured"
        )
        keep = [c for c in keep if c != target]
    elif frame[target].isna().any():
        notes.append(
            f"{int(frame[target].isna().sum())} of {len(frame)} rows have no label yet: the label metrics "
            "use the labeled rows only"
        )
    return Batch(batch_name(Path(path)), Path(path), checked[keep].reset_index(drop=True), labeled, notes)
