"""Load stage: read the configured source into a train pool and a test frame, verified and unchanged."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from tasks import io
from tasks.datasets import BUILTINS, md5_of, verify
from tasks.errors import DataError, cli
from tasks.params import DataParams, PrivacyParams, load_params
from tasks.paths import INTERIM_META, INTERIM_TEST, INTERIM_TRAIN, PRIVACY_POLICY, PRIVACY_REPORT
from tasks.privacy import (
    FittedPolicy,
    absent_columns,
    apply_policy,
    check_policy,
    fit_policy,
    pseudonym_key,
    risk_report,
)

# The seed of the train/test split of a single-file source; fixed so that the test rows never move.
TEST_SPLIT_SEED = 20240601


@dataclass(frozen=True)
class Loaded:
    """The train pool, the test frame and where each came from."""

    train: pd.DataFrame
    test: pd.DataFrame
    files: dict[str, str]
    md5: dict[str, str]


def read_table(path: Path) -> pd.DataFrame:
    """Read a user CSV or Parquet file with errors that name the file."""
    if not path.exists():
        raise DataError(f"{path}: data source not found (data.source must be a built-in name or a file path)")
    if path.is_dir():
        raise DataError(f"{path}: data source is a directory, expected a .csv or .parquet file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, skipinitialspace=True)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty (no header and no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: cannot be parsed: {err}") from None
    if frame.empty:
        raise DataError(f"{path}: file has a header but no rows")
    return frame


def split_test(frame: pd.DataFrame, target: str, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out a seeded, label-stratified test share of a single-file source."""
    if not 0 < fraction < 1:
        raise DataError(f"data.test_fraction must be in (0, 1), got {fraction}")
    labels = frame.get(target)
    stratify = labels if labels is not None and labels.value_counts().min() >= 2 else None
    train, test = train_test_split(frame, test_size=fraction, random_state=TEST_SPLIT_SEED, stratify=stratify)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def load(spec: DataParams, root: Path = Path(".")) -> Loaded:
    """Read the source named in the data spec; built-ins are checked against their published md5."""
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

    train_path = root / spec.source
    train = read_table(train_path)
    files, md5 = {"train": spec.source}, {"train": md5_of(train_path)}
    if spec.test_source:
        test_path = root / spec.test_source
        test = read_table(test_path)
        files["test"], md5["test"] = spec.test_source, md5_of(test_path)
    else:
        train, test = split_test(train, spec.target, spec.test_fraction)
        files["test"], md5["test"] = files["train"], md5["train"]
    return Loaded(train, test, files, md5)


def _masked(policy: FittedPolicy, frame: pd.DataFrame, key: bytes | None, file: str) -> pd.DataFrame:
    try:
        return apply_policy(policy, frame, key)
    except DataError as err:
        raise DataError(f"{file}: {err}") from None


def run(spec: DataParams, privacy: PrivacyParams) -> Loaded:
    """Load the source, apply the privacy policy, and write the masked frames plus their provenance.

    The policy runs before anything is written: no raw value of a dropped, pseudonymized or generalized
    column reaches a file. A missing pseudonymization key fails here, before any read or write.
    """
    check_policy(privacy)
    key = pseudonym_key(privacy)
    loaded = load(spec)
    policy = fit_policy(privacy, loaded.train)
    absent = absent_columns(privacy, loaded.train)
    if absent:
        print(f"load: privacy rules name columns this data lacks, skipped: {absent}", file=sys.stderr)
    train, test = (_masked(policy, frame, key, loaded.files[split]) for split, frame in
                   (("train", loaded.train), ("test", loaded.test)))  # fmt: skip
    report = risk_report(loaded.train, train, privacy, spec.target)
    io.write_parquet(INTERIM_TRAIN, train)
    io.write_parquet(INTERIM_TEST, test)
    io.write_json(PRIVACY_POLICY, policy.to_dict())
    io.write_json(PRIVACY_REPORT, report)
    io.write_json(
        INTERIM_META,
        {
            "source": spec.source,
            "files": loaded.files,
            "md5": loaded.md5,
            "rows": {"train": len(loaded.train), "test": len(loaded.test)},
        },
    )
    return Loaded(train, test, loaded.files, loaded.md5)


def main() -> None:
    """DVC entry point."""
    params = load_params()
    loaded = run(params.data, params.privacy)
    print(f"load: {len(loaded.train)} train-pool rows, {len(loaded.test)} test rows from {loaded.files}")


if __name__ == "__main__":
    cli(main)
