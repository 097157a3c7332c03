"""Track stage: one MLflow run per pipeline run with params, metrics, reports, lineage and the served model."""

from __future__ import annotations

from functools import partial

from humane.core.context import RunContext
from humane.core.paths import Paths
from humane.governance.store import server_calls
from humane.governance.tracking import RunArtifact, log_run
from humane.monitoring.reference import REFERENCE_ARTIFACT, MonitoredColumns, write_reference
from humane.pipeline.entry import stage_main
from humane.pipeline.params import Params
from humane.privacy.policy import protected_columns


def monitoring_reference(params: Params, paths: Paths) -> RunArtifact:
    """Monitoring's reference for the run: the test rows scored by the model as served (humane.monitoring)."""
    columns = MonitoredColumns.of(params)
    return RunArtifact(REFERENCE_ARTIFACT, partial(write_reference, paths, params.evaluate.threshold, columns))


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Log the workspace's state as the pipeline run's MLflow run (found, not duplicated, on a retry)."""
    # Columns whose values are never shipped with the model (no ranges, no categories, no example values).
    protected = protected_columns(params.privacy, params.data).all
    reference = monitoring_reference(params, paths)
    with server_calls(ctx.tracking_uri):  # bounded retries (HUMANE_SERVER_RETRY_S), then one clear line
        record = log_run(paths, params.data.experiment, params.evaluate.threshold, protected, ctx, reference)
    return f"track: MLflow run {record['run_id']} in experiment {record['experiment']!r}"


if __name__ == "__main__":
    stage_main(run)
