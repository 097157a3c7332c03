"""Track stage: one MLflow run per pipeline run with params, metrics, reports, lineage and the served model."""

from __future__ import annotations

from humane.core.context import RunContext, stage_main
from humane.core.params import Params
from humane.core.paths import Paths
from humane.governance.store import server_calls
from humane.governance.tracking import log_run
from humane.monitoring.reference import MonitoredColumns
from humane.privacy.policy import protected_columns


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Log the workspace's state as the pipeline run's MLflow run (found, not duplicated, on a retry)."""
    # Columns whose values are never shipped with the model (no ranges, no categories, no example values).
    protected = protected_columns(params.privacy, params.data).all
    monitored = MonitoredColumns.of(params)
    with server_calls(ctx.tracking_uri):  # bounded retries (HUMANE_SERVER_RETRY_S), then one clear line
        record = log_run(paths, params.data.experiment, params.evaluate.threshold, protected, ctx, monitored)
    return f"track: MLflow run {record['run_id']} in experiment {record['experiment']!r}"


if __name__ == "__main__":
    stage_main(run)
