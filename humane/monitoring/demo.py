"""Demo production batches from the held-out Adult test file, so that each alert can be seen to fire.

`python -m humane.monitoring.demo` (or `make batches`) writes, under data/batches/ (generated, gitignored:
rerun to recreate; the same seed writes the same bytes):

- in_distribution.csv: rows drawn from the test file as they are, with labels: no alert expected;
- shifted.csv: a covariate shift without labels: everyone 12 years older (capped at 90) and working a quarter
  fewer hours; the other columns are untouched, so only age and hours-per-week (and the prediction) drift;
- bias.csv: rows as they are, with labels that arrived later and widen the sex gap: a quarter of the women the
  data says earn <=50K earn >50K after all, mostly women the model turned down, so their true-positive rate falls
  (BiasDegraded on sex's equalized-odds gap).

The rows are the raw columns a production request holds (identifier-free: Adult has none), the label only
where it is named above.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from humane.data.datasets import read_adult

TEST_FILE = Path("data/raw/adult/adult.test")
OUT_DIR = Path("data/batches")
TARGET, NEGATIVE, POSITIVE = "income", "<=50K", ">50K"
AGE_SHIFT, AGE_CAP, HOURS_FACTOR = 12, 90, 0.75
FLIP_SHARE, FLIPPED_GROUP = 0.25, "Female"


def in_distribution(test: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """Rows of the test file as they are (a seeded draw without replacement), with labels."""
    return test.sample(n=min(rows, len(test)), random_state=seed).reset_index(drop=True)


def shifted(test: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """An older population working fewer hours; no labels (they have not arrived)."""
    out = in_distribution(test, rows, seed + 1).drop(columns=[TARGET])
    out["age"] = (out["age"] + AGE_SHIFT).clip(upper=AGE_CAP)
    out["hours-per-week"] = (out["hours-per-week"] * HOURS_FACTOR).round().clip(lower=1).astype("int64")
    return out


def biased_labels(test: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """The same inputs, with a share of one group's negative labels turned positive (a widened outcome gap)."""
    out = in_distribution(test, rows, seed + 2)
    rng = np.random.default_rng(seed)
    candidates = out.index[(out["sex"] == FLIPPED_GROUP) & (out[TARGET] == NEGATIVE)]
    flipped = rng.choice(candidates, size=round(FLIP_SHARE * len(candidates)), replace=False)
    out.loc[flipped, TARGET] = POSITIVE
    return out


def make_batches(test: pd.DataFrame, rows: int, seed: int) -> dict[str, pd.DataFrame]:
    """The three demo batches by name."""
    return {
        "in_distribution": in_distribution(test, rows, seed),
        "shifted": shifted(test, rows, seed),
        "bias": biased_labels(test, rows, seed),
    }


def main(argv: list[str] | None = None) -> int:
    """Write the demo batches as CSV files."""
    from humane.core.io import write_with

    parser = argparse.ArgumentParser(prog="python -m humane.monitoring.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="rows per batch (at most the test file's 16,281)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", type=Path, default=TEST_FILE, help="the Adult test file")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    if not args.source.is_file():
        print(
            f"error: {args.source}: the Adult test file is not there (run from the project folder, or --source)",
            file=sys.stderr,
        )
        return 2
    test = read_adult(args.source)
    for name, frame in make_batches(test, args.rows, args.seed).items():
        path = args.out / f"{name}.csv"
        write_with(path, lambda tmp, frame=frame: frame.to_csv(tmp, index=False))
        labels = "with labels" if TARGET in frame else "no labels"
        print(f"{path}: {len(frame)} rows, {labels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
