"""Reading a data source: a built-in (md5-checked) or a user CSV/Parquet file, and the held-out test split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from humane.core.errors import DataError
from humane.core.params import DataParams, confine
from humane.data.datasets import BUILTINS, md5_of, verify

# The seed of the train/test split of a single-file source; fixed so that the test rows never move.
TEST_SPLIT_SEED = 20240601


@dataclass(frozen=True)
class Loaded:
    """The train pool, the test frame and where each came from."""

    train: pd.DataFrame
    test: pd.DataFrame
    files: dict[str, str]
    md5: dict[str, str]


def read_table(path: Path, shown: str | None = None) -> pd.DataFrame:
    """Read a user CSV or Parquet file with errors that name the file (as params.yaml names it: `shown`)."""
    name = shown or str(path)
    if not path.exists():
        raise DataError(f"{name}: data source not found (data.source must be a built-in name or a file path)")
    if path.is_dir():
        raise DataError(f"{name}: data source is a directory, expected a .csv or .parquet file")
    if path.stat().st_size == 0:
        raise DataError(f"{name}: file is empty")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, skipinitialspace=True)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise DataError(f"{name}: unsupported file type {suffix!r}; use .csv or .parquet")
    except pd.errors.EmptyDataError:
        raise DataError(f"{name}: file is empty (no header and no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{name}: cannot be parsed: {err}") from None
    if frame.empty:
        raise DataError(f"{name}: file has a header but no rows")
    return frame


def split_test(frame: pd.DataFrame, target: str, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out a seeded, label-stratified test share of a single-file source."""
    if not 0 < fraction < 1:
        raise DataError(f"data.test_fraction must be in (0, 1), got {fraction}")
    labels = frame.get(target)
    stratify = labels if labels is not None and labels.value_counts().min() >= 2 else None
    train, test = train_test_split(frame, test_size=fraction, random_state=TEST_SPLIT_SEED, stratify=stratify)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def load(spec: DataParams, root: Path) -> Loaded:
    """Read the source named in the data spec; built-ins are checked against their published md5.

    A file path must resolve inside the project folder `root` (or inside a declared absolute data.root).
    """
    builtin = BUILTINS.get(spec.source)
    if builtin is not None:
        train_path = verify(builtin.train, root)
        train = builtin.reader(train_path)
        files = {"train": str(builtin.train.path)}
        md5 = {"train": builtin.train.md5}
        if builtin.test is not None:
            test_path = verify(builtin.test, root)
            test = builtin.reader(test_path)
            files["test"], md5["test"] = str(builtin.test.path), builtin.test.md5
        else:
            train, test = split_test(train, spec.target, spec.test_fraction)
            files["test"], md5["test"] = files["train"], md5["train"]
        return Loaded(train, test, files, md5)

    train_path = confine(spec.source, "data.source", root, spec.root)
    train = read_table(train_path, spec.source)
    files, md5 = {"train": spec.source}, {"train": md5_of(train_path)}
    if spec.test_source:
        test_path = confine(spec.test_source, "data.test_source", root, spec.root)
        test = read_table(test_path, spec.test_source)
        files["test"], md5["test"] = spec.test_source, md5_of(test_path)
    else:
        train, test = split_test(train, spec.target, spec.test_fraction)
        files["test"], md5["test"] = files["train"], md5["train"]
    return Loaded(train, test, files, md5)
