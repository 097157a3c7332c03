"""The monitoring flow: one production batch scored by the champion and judged against its reference.

First the champion is verified: its recorded decision passed, its sign-off holds (where params.yaml's
gate.require_approval asks for one; always in team mode) and the audit trail's last move of the alias names it;
else the run stops (exit 2) naming what is missing. Then read and check the batch (nothing is written for a bad
one), score it with that exact version (`models:/humane-<name>/<version>`, never the alias, which could move),
compute drift, estimated and realised performance and group gaps (humane.monitoring), then write the report,
record an MLflow run and show Prefect artifacts. A breached threshold ends the run in a Failed state named
BiasDegraded, PerformanceDegraded or DriftDetected whose message names the features, groups and figures;
`monitor.retrain_on` starts the training deployment for the breaches it lists. The run never moves an alias.
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State

from humane.core.context import RunContext
from humane.core.errors import ConfigError, HumaneError
from humane.core.io import md5_of
from humane.core.params import MonitorParams, Params, load_params
from humane.core.paths import Paths
from humane.monitoring import monitor, report
from humane.monitoring.batch import Batch, input_columns, read_batch
from humane.monitoring.champion import ChampionModel, load_champion, log_monitoring_run

# Exit status of `python -m flows.monitoring` per end state (2: the batch or the champion could not be used).
EXIT = {"Completed": 0, "BiasDegraded": 3, "PerformanceDegraded": 4, "DriftDetected": 5}
ERROR_EXIT = 2


def batch_moment(value: str | None) -> datetime:
    """The batch's time (ISO 8601; a time without a zone is UTC), or now."""
    if value is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"batch_time: {value!r} is not an ISO 8601 time (e.g. 2026-05-01T00:00:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@task(name="load-champion", cache_policy=NO_CACHE)
def champion_task(uri: str, name: str, project: Path, require_signoff: bool) -> ChampionModel:
    """The verified champion's pyfunc, reference rows and test-time figures (a clear error when any is missing)."""
    return load_champion(uri, name, project, require_signoff)


@task(name="read-batch", cache_policy=NO_CACHE)
def batch_task(path: Path, champion: ChampionModel, params: Params) -> Batch:
    """Read the batch and check it against the champion's input schema (missing, mistyped, empty: an error)."""
    kinds = input_columns(champion.model.metadata.get_input_schema())
    return read_batch(path, kinds, list(params.data.sensitive_features), params.data.target, params.monitor.min_rows,
                      params.data.read)  # fmt: skip


@task(name="judge", cache_policy=NO_CACHE)
def judge_task(champion: ChampionModel, batch: Batch, params: Params, when: datetime) -> dict[str, Any]:
    """Score the batch with the champion and compute every figure against its reference."""
    scores = monitor.score(champion, batch)
    return monitor.evaluate(champion, batch, scores, params, when)


@task(name="write-report", cache_policy=NO_CACHE)
def report_task(result: dict[str, Any], folder: Path) -> Path:
    """reports/monitoring/<batch>/ (replaced whole)."""
    return report.write_report(result, folder)


@task(name="log-mlflow", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def mlflow_task(ctx: RunContext, champion: ChampionModel, batch: Batch, result: dict[str, Any], when: datetime,
                folder: Path) -> str:  # fmt: skip
    """The batch's MLflow run in humane-<name>-monitoring, tagged with the model version and the verdict."""
    tags = {"humane.breaches": ",".join(sorted({b["breach"] for b in result["breaches"]})) or "none"}
    artifacts = Paths(ctx.project).mlflow_artifacts if ctx.default_store else None
    return log_monitoring_run(ctx.tracking_uri, champion, batch.name, md5_of(batch.path), when,
                              monitor.flat_metrics(result), tags, folder, artifacts)  # fmt: skip


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(result: dict[str, Any]) -> None:
    """The summary and the group table on the flow run's page."""
    key = re.sub(r"[^a-z0-9-]", "-", result["batch"].lower())[:60]
    create_markdown_artifact(key=f"monitoring-{key}", markdown=report.summary(result), description="Monitoring")
    description = "Selection rate (and accuracy, TPR with labels) per group vs test time"
    create_table_artifact(key=f"monitoring-groups-{key}", table=report.group_rows(result), description=description)


@task(name="trigger-training", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def retrain_task(settings: MonitorParams, breach: str, batch: str) -> str:
    """Start the training deployment (without waiting); the new candidate faces the gate like any other."""
    from prefect.deployments import run_deployment
    from prefect.runtime import flow_run

    # One training run per monitoring run and breach, however often this task is retried.
    run = run_deployment(name=settings.training_deployment, timeout=0, tags=["monitoring", breach],
                         parameters={"requested_by": f"monitoring flow run {flow_run.id} ({breach})"},
                         idempotency_key=f"monitoring-{flow_run.id}-{breach}")  # fmt: skip
    return f"training deployment {settings.training_deployment!r} started (flow run {run.name}, {run.id}) for {batch}"


def outcome(result: dict[str, Any], folder: Path, retrained: str | None) -> State:
    """Completed with the headline figures, or Failed named after the breach with every breached threshold."""
    name = monitor.breach_name(result["breaches"])
    where = f"report: {folder / 'report.html'}"
    if name is None:
        drifted = [f for f, d in result["drift"].items() if d["drifted"]]
        return Completed(message=f"{result['batch']}: no threshold breached ({result['rows']} rows; drifted: "
                                 f"{', '.join(drifted) or 'none'}); {where}")  # fmt: skip
    message = f"{result['batch']}: " + "; ".join(f"{b['breach']}: {b['message']}" for b in result["breaches"])
    if retrained:
        message += f"; {retrained}"
    return Failed(name=name, message=f"{message}; {where}")


@flow(name="monitoring", log_prints=True)
def monitoring(batch: str, batch_time: str | None = None) -> State:
    """Score one production batch with the champion and judge its drift, performance and group gaps.

    Args:
        batch: A CSV or Parquet file of raw input rows (the model's input columns and the sensitive columns; the
            label column when labels have arrived), relative to the project folder or absolute.
        batch_time: When the batch was collected (ISO 8601), the step its metrics are plotted at; default: now.

    """
    project = Path.cwd()
    paths = Paths(project)
    params = load_params(paths.params)
    ctx = RunContext(project)
    when = batch_moment(batch_time)
    path = Path(batch) if Path(batch).is_absolute() else project / batch
    # Checks first: a missing or unverified champion or a bad batch stops here, before anything is written.
    champion = champion_task(ctx.tracking_uri, params.data.model_name, project, params.gate.require_approval)
    checked = batch_task(path, champion, params)
    result = judge_task(champion, checked, params, when)
    # Records: the report folder, the MLflow run, the flow run's artifacts.
    folder = report_task(result, paths.monitoring_dir / checked.name)
    mlflow_task(ctx, champion, checked, result, when, folder)
    publish_task(result)
    # Response: the named state, and the training deployment for the breaches monitor.retrain_on lists.
    name = monitor.breach_name(result["breaches"])
    wanted = [b for b in params.monitor.retrain_on if b in {x["breach"] for x in result["breaches"]}]
    retrained = None
    if wanted:  # a failure to start training is said beside the alert, never instead of it
        started = retrain_task(params.monitor, wanted[0], checked.name, return_state=True)
        failed = f"the training deployment {params.monitor.training_deployment!r} could NOT be started: "
        retrained = started.result() if started.is_completed() else failed + str(started.message)
    if name is not None:
        get_run_logger().warning("%s: %s", name, "; ".join(b["message"] for b in result["breaches"]))
    return outcome(result, folder, retrained)


def main(argv: list[str]) -> int:
    """`python -m flows.monitoring BATCH [BATCH_TIME]`: 0 no breach, 3/4/5 a breach (EXIT), 2 an unusable input."""
    if not 1 <= len(argv) <= 2:
        print("usage: python -m flows.monitoring BATCH [BATCH_TIME]", file=sys.stderr)
        return ERROR_EXIT
    state = monitoring(batch=argv[0], batch_time=argv[1] if len(argv) > 1 else None, return_state=True)
    if state.name in EXIT and state.name != "Completed":
        print(f"{state.name}: {state.message}", file=sys.stderr)
        return EXIT[state.name]
    try:
        state.result()
    except HumaneError as err:
        print(f"error: {err}", file=sys.stderr)
        return ERROR_EXIT
    print(state.message)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
