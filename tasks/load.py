"""Load stage: read the configured source, check it, mask it by the privacy policy, write the interim frames."""

from __future__ import annotations

import sys
from typing import Any

import pandas as pd

from humane.core import io
from humane.core.context import RunContext
from humane.core.errors import DataError
from humane.core.paths import Paths
from humane.data.identifiers import Finding, check_identifiers, find_identifiers, identifier_report
from humane.data.schema import resolve_labels
from humane.data.sources import Loaded, convert_dates, load
from humane.pipeline.entry import stage_main
from humane.pipeline.params import Params
from humane.privacy.anonymity import risk_report
from humane.privacy.policy import (
    FittedPolicy,
    absent_columns,
    apply_policy,
    bins_clipped,
    check_policy,
    fit_policy,
    pseudonym_key,
)


def _masked(policy: FittedPolicy, frame: pd.DataFrame, key: bytes | None, file: str) -> pd.DataFrame:
    try:
        return apply_policy(policy, frame, key)
    except DataError as err:
        raise DataError(f"{file}: {err}") from None


def _identifiers(params: Params, loaded: Loaded) -> list[Finding]:
    """Identifier findings of the training file and of a separate test file; an unhandled one stops the load.

    The test file is checked on its own: a column that is a category in the training file can hold e-mail
    addresses in the test file. A column flagged in both is reported once, as the training file shows it.
    """
    spec, privacy = params.data, params.privacy
    if not privacy.identifiers.check:
        return []
    findings = find_identifiers(loaded.train, privacy.identifiers, spec.max_categories, skip=(spec.target,))
    check_identifiers(findings, privacy, spec, loaded.files["train"])
    if loaded.files["test"] == loaded.files["train"]:  # split from the training file: already checked
        return findings
    in_test = find_identifiers(loaded.test, privacy.identifiers, spec.max_categories, skip=(spec.target,))
    check_identifiers(in_test, privacy, spec, loaded.files["test"])
    seen = {f.column for f in findings}
    return findings + [f for f in in_test if f.column not in seen]


def _storable(frame: pd.DataFrame, file: str) -> None:
    """Every column converts to one Parquet column type before anything is written (values withheld).

    A CSV column of integers beyond the 64-bit range is read as Python integers, which Parquet cannot hold.
    """
    import pyarrow as pa

    for column in frame.columns:
        try:
            pa.array(frame[column], from_pandas=True)
        except OverflowError:
            why = "integers beyond the 64-bit range"
        except (pa.ArrowException, ValueError, TypeError):
            why = "values of more than one type"
        else:
            continue
        raise DataError(
            f"{file}: column {column!r} holds {why} (values withheld) and cannot be stored as one column; write it "
            f"as text in the file, or name it in privacy.drop or privacy.pseudonymize (nothing was written)"
        )


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Load the source, check it, apply the privacy policy, and write the masked frames plus their provenance.

    Nothing is written until every check has passed: the label column (present, typed as the profile says),
    no test-file column the training file lacks, no column of either file that looks like a direct identifier
    unless a rule names it, dates turned into numbers by data.dates, then the privacy policy: no raw value of a
    dropped, pseudonymized or generalized column reaches a file. A missing pseudonymization key fails here,
    before any read or write.
    """
    spec, privacy = params.data, params.privacy
    check_policy(privacy)
    key = pseudonym_key(privacy)
    loaded = load(spec, paths.root)
    resolve_labels(spec, loaded.train)  # data.positive_label / data.labels name observed labels, in their type
    findings = _identifiers(params, loaded)
    raw_train = convert_dates(loaded.train, spec.dates, loaded.files["train"])
    raw_test = convert_dates(loaded.test, spec.dates, loaded.files["test"])
    policy = fit_policy(privacy, raw_train)
    absent = absent_columns(privacy, raw_train)
    if absent:
        print(f"load: privacy rules name columns this data lacks, skipped: {absent}", file=sys.stderr)
    train = _masked(policy, raw_train, key, loaded.files["train"])
    test = _masked(policy, raw_test, key, loaded.files["test"])
    _storable(train, loaded.files["train"])
    _storable(test, loaded.files["test"])
    clipped = {"train": bins_clipped(policy, raw_train), "test": bins_clipped(policy, raw_test)}
    report = {
        **risk_report(loaded.train, train, privacy, spec.target),
        # Values beyond the outermost bin edges, per column, that fell into the outermost bin (open bins).
        "bins_clipped": clipped,
        "identifiers": identifier_report(findings, privacy, spec, privacy.identifiers.check),
    }
    meta: dict[str, Any] = {
        "source": spec.source,
        "files": loaded.files,
        "md5": loaded.md5,
        "rows": {"train": len(train), "test": len(test)},
        "missing_labels": {"rule": spec.missing_labels, "dropped": loaded.missing_labels_dropped},
        "dates": dict(spec.dates),
    }
    io.write_parquet(paths.interim_train, train)
    io.write_parquet(paths.interim_test, test)
    io.write_json(paths.privacy_policy, policy.to_dict())
    io.write_json(paths.privacy_report, report)
    io.write_json(paths.interim_meta, meta)
    notes = [f"{n} rows without a label dropped from {f}" for f, n in loaded.missing_labels_dropped.items()]
    notes += [
        f"{n} values of {c!r} beyond its bins ({split})" for split, cs in clipped.items() for c, n in cs.items() if n
    ]
    suffix = f" ({'; '.join(notes)})" if notes else ""
    return f"load: {len(train)} train-pool rows, {len(test)} test rows from {loaded.files}{suffix}"


if __name__ == "__main__":
    stage_main(run)
