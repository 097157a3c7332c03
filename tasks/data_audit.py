"""Data-audit stage: each sensitive group's share of the training rows and its label base rate."""

from __future__ import annotations

import pandas as pd

from humane.core import io
from humane.core.context import RunContext
from humane.core.paths import Paths
from humane.fairness.metrics import data_audit
from humane.pipeline.entry import stage_main
from humane.pipeline.params import Params


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Audit the train pool's groups before any model is trained."""
    report = data_audit(pd.read_parquet(paths.interim_train), params.data, params.validate.min_group_rows)
    io.write_json(paths.data_audit, report)
    return "\n".join(
        f"data audit {feature}: "
        + ", ".join(
            f"{g['group']} {g['share']:.1%} "
            + ("(too small to judge)" if g["too_small"] else f"(base rate {g['base_rate']:.2f})")
            for g in groups[:6]
        )
        for feature, groups in report.items()
    )


if __name__ == "__main__":
    stage_main(run)
