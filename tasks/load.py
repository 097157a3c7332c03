"""Load stage: read the configured source, mask it by the privacy policy, write the interim frames."""

from __future__ import annotations

import sys

import pandas as pd

from humane.core import io
from humane.core.context import RunContext, stage_main
from humane.core.errors import DataError
from humane.core.params import Params
from humane.core.paths import Paths
from humane.data.sources import load
from humane.privacy.anonymity import risk_report
from humane.privacy.policy import FittedPolicy, absent_columns, apply_policy, check_policy, fit_policy, pseudonym_key


def _masked(policy: FittedPolicy, frame: pd.DataFrame, key: bytes | None, file: str) -> pd.DataFrame:
    try:
        return apply_policy(policy, frame, key)
    except DataError as err:
        raise DataError(f"{file}: {err}") from None


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Load the source, apply the privacy policy, and write the masked frames plus their provenance.

    The policy runs before anything is written: no raw value of a dropped, pseudonymized or generalized
    column reaches a file. A missing pseudonymization key fails here, before any read or write.
    """
    spec, privacy = params.data, params.privacy
    check_policy(privacy)
    key = pseudonym_key(privacy)
    loaded = load(spec, paths.root)
    policy = fit_policy(privacy, loaded.train)
    absent = absent_columns(privacy, loaded.train)
    if absent:
        print(f"load: privacy rules name columns this data lacks, skipped: {absent}", file=sys.stderr)
    train = _masked(policy, loaded.train, key, loaded.files["train"])
    test = _masked(policy, loaded.test, key, loaded.files["test"])
    report = risk_report(loaded.train, train, privacy, spec.target)
    io.write_parquet(paths.interim_train, train)
    io.write_parquet(paths.interim_test, test)
    io.write_json(paths.privacy_policy, policy.to_dict())
    io.write_json(paths.privacy_report, report)
    io.write_json(paths.interim_meta, {"source": spec.source, "files": loaded.files, "md5": loaded.md5,
                                       "rows": {"train": len(train), "test": len(test)}})  # fmt: skip
    return f"load: {len(train)} train-pool rows, {len(test)} test rows from {loaded.files}"


if __name__ == "__main__":
    stage_main(run)
