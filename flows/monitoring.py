"""The monitoring flow: one production batch scored by the champion and judged against its reference.

First the champion is verified: its recorded decision passed, its sign-off holds (where params.yaml's
gate.require_approval asks for one; always in team mode) and the audit trail's last move of the alias names it;
else the run stops (exit 2) naming what is missing. Its reference, audit and metrics are then downloaded from its
MLflow run: an artifact the run does not hold is an error (exit 2; its explanations excepted: attribution drift is
then unmeasured, below), a store that does not answer is ServerUnavailable (exit 10, naming the server and the
artifact), a file that does not parse is IntegrityFailed (exit 12). Then read and check the batch (nothing is
written for a bad one), score it with that exact version (`models:/humane-<name>/<version>`, never the alias,
which could move), compute drift (of the inputs, the prediction and the attribution), estimated and realised
performance and group gaps (humane.monitoring), then write the report, record an MLflow run and show Prefect
artifacts. A breached threshold ends the run in a Failed state named BiasDegraded, PerformanceDegraded or
DriftDetected whose message names the features, groups and figures; `monitor.retrain_on` starts the training
deployment for the breaches it lists. The run never moves an alias.

Fails closed: every figure a rule needs must be computed (humane.monitoring.checks.unmeasured); one that cannot
be (NaN, infinite, missing, or its computation failed) ends the run in a Failed state named MonitoringIncomplete
whose message names each such figure and why, after the report and the MLflow run are written. Required:

- drift: the distance of every monitored input feature and of the predicted probability;
- the share of rows outside the training domain;
- attribution drift (humane.monitoring.attribution_drift): the share of the model's attribution of each of the
  reference's top inputs (and of any input entering the batch's top `explain.top_k`) on a seeded sample of the
  batch, against its share on the champion's test rows (`reports/explanations.json` of its run). A champion
  whose run holds no explanations, or whose served model carries no explainer, cannot give it: the report says
  "not measured" and why, and the run ends MonitoringIncomplete (never passes on it);
- performance, for each metric in `monitor.max_drop`: the champion's test-time figure, CBPE's estimate, and on a
  labeled batch the realised figure; per sensitive group, for each group large enough in the batch and at test
  time, the judged figure and the test-time figure with its 95% interval (a group's ROC AUC has no test-time
  interval: reported only);
- group gaps: each gap with a limit in `monitor.max_increase`, per sensitive feature (the intersection only when
  named): the demographic-parity gaps on every batch, the label gaps (equalized odds, equal opportunity) on a
  labeled batch, at test time and in the batch. A batch whose feature has fewer than two groups of
  `audit.min_group_size` rows (labeled rows for a label gap) cannot give the gap: that is MonitoringIncomplete
  too; lower `audit.min_group_size` or drop the feature's key from `max_increase` to monitor it no more.

Not required (said in the report's notes): the label metrics of an unlabeled batch; per-group figures of a group
withheld as too small; the drift of inputs kept on purpose (privacy.keep) or derived from dates. An unlabeled
batch that breaches nothing still ends Completed (exit 0), but its message never reads "no threshold breached":
"no label-free threshold breached; realised performance and the label gaps are not judged: the batch has no
labels" (humane.monitoring.monitor.passed).

Exit codes of `python -m flows.monitoring` and the end states they come from (read from the state's name, or
from the type of the error a Failed state holds, never from message text):

| exit | end state | when |
| --- | --- | --- |
| 0 | Completed | every required figure computed, no threshold breached |
| 3 | Failed, named BiasDegraded | a group gap grew beyond `monitor.max_increase` |
| 4 | Failed, named PerformanceDegraded | accuracy or ROC AUC fell beyond `monitor.max_drop` |
| 5 | Failed, named DriftDetected | inputs, the prediction, the out-of-domain share or the attribution drifted |
| 6 | Failed, named MonitoringIncomplete | a figure a rule needs could not be computed, and nothing breached |
| 2 | Failed (HumaneError) | an unusable batch or argument; no verified champion; an artifact its run lacks |
| 10 | Failed (ServerUnavailable) | the MLflow store did not answer; the message names the server and the artifact |
| 11 | Failed (AccessRefused) | the MLflow store refused the credentials; the message names the user |
| 12 | Failed (IntegrityFailed) | an artifact of the champion's run is corrupt (does not parse, lacks its fields) |
| 1 | Failed or Crashed (other error) | an unexpected error; its traceback is in the flow run's logs |

When several breaches fire, the state is the first of BiasDegraded, PerformanceDegraded, DriftDetected; a breach
outranks MonitoringIncomplete (its message then names the unmeasured figures too).
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

from flows.retries import SERVER_TASK
from humane.core.context import RunContext
from humane.core.errors import ConfigError, exit_code
from humane.core.io import md5_of
from humane.core.paths import Paths
from humane.monitoring import attribution_drift, monitor, report
from humane.monitoring.batch import Batch, input_columns, read_batch
from humane.monitoring.champion import ChampionModel, load_champion, log_monitoring_run
from humane.monitoring.checks import INCOMPLETE
from humane.monitoring.params import MonitorParams
from humane.pipeline.params import Params, load_params

# Exit status of `python -m flows.monitoring` per named end state; a Failed state holding an error exits with
# the error's code (humane.core.errors.exit_code: 2 input, 10 server unavailable, 11 access, 12 integrity, 1 other).
EXIT = {"Completed": 0, "BiasDegraded": 3, "PerformanceDegraded": 4, "DriftDetected": 5, INCOMPLETE: 6}
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


@task(name="load-explanations", cache_policy=NO_CACHE)
def explanations_task(uri: str, champion: ChampionModel) -> dict[str, Any]:
    """The champion's recorded attribution shares, or why there are none (attribution drift is then unmeasured)."""
    return attribution_drift.load_reference(uri, champion)


@task(name="read-batch", cache_policy=NO_CACHE)
def batch_task(path: Path, champion: ChampionModel, params: Params) -> Batch:
    """Read the batch and check it against the champion's input schema (missing, mistyped, empty: an error)."""
    kinds = input_columns(champion.model.metadata.get_input_schema())
    return read_batch(
        path, kinds, list(params.data.sensitive_features), params.data.target, params.monitor.min_rows, params.data.read
    )


@task(name="judge", cache_policy=NO_CACHE)
def judge_task(
    champion: ChampionModel, batch: Batch, explanations: dict[str, Any], params: Params, when: datetime
) -> dict[str, Any]:
    """Score the batch with the champion and compute every figure against its reference."""
    scores = monitor.score(champion, batch)
    return monitor.evaluate(champion, batch, scores, params, when, explanations)


@task(name="write-report", cache_policy=NO_CACHE)
def report_task(result: dict[str, Any], folder: Path) -> Path:
    """reports/monitoring/<batch>/ (replaced whole)."""
    return report.write_report(result, folder)


@task(
    name="log-mlflow",
    cache_policy=NO_CACHE,
    **SERVER_TASK,
)
def mlflow_task(
    ctx: RunContext, champion: ChampionModel, batch: Batch, result: dict[str, Any], when: datetime, folder: Path
) -> str:
    """The batch's MLflow run in humane-<name>-monitoring, tagged with the model version and the verdict."""
    tags = {
        "humane.breaches": ",".join(sorted({b["breach"] for b in result["breaches"]})) or "none",
        "humane.state": monitor.state_name(result) or "Completed",
        "humane.incomplete": ",".join(i["figure"] for i in result["incomplete"])[:4000] or "none",
    }
    artifacts = Paths(ctx.project).mlflow_artifacts if ctx.default_store else None
    return log_monitoring_run(
        ctx.tracking_uri,
        champion,
        batch.name,
        md5_of(batch.path),
        when,
        monitor.flat_metrics(result),
        tags,
        folder,
        artifacts,
    )


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(result: dict[str, Any]) -> None:
    """The summary and the group table on the flow run's page."""
    key = re.sub(r"[^a-z0-9-]", "-", result["batch"].lower())[:60]
    create_markdown_artifact(key=f"monitoring-{key}", markdown=report.summary(result), description="Monitoring")
    description = "Selection rate (and accuracy, TPR with labels) per group vs test time"
    create_table_artifact(key=f"monitoring-groups-{key}", table=report.group_rows(result), description=description)


@task(
    name="trigger-training",
    cache_policy=NO_CACHE,
    **SERVER_TASK,
)
def retrain_task(settings: MonitorParams, breach: str, batch: str) -> str:
    """Start the training deployment (without waiting); the new candidate faces the gate like any other."""
    from prefect.deployments import run_deployment
    from prefect.runtime import flow_run

    # One training run per monitoring run and breach, however often this task is retried.
    run = run_deployment(
        name=settings.training_deployment,
        timeout=0,
        tags=["monitoring", breach],
        parameters={"requested_by": f"monitoring flow run {flow_run.id} ({breach})"},
        idempotency_key=f"monitoring-{flow_run.id}-{breach}",
    )
    return f"training deployment {settings.training_deployment!r} started (flow run {run.name}, {run.id}) for {batch}"


def outcome(result: dict[str, Any], folder: Path, retrained: str | None) -> State:
    """Completed with the headline figures, or Failed named after the breach (or MonitoringIncomplete).

    The message names every breached threshold, then every figure that could not be computed and why.
    """
    name = monitor.state_name(result)
    where = f"report: {folder / 'report.html'}"
    if name is None:
        drifted = [f for f, d in result["drift"].items() if d["drifted"]]
        return Completed(
            message=f"{result['batch']}: {monitor.passed(result)} ({result['rows']} rows; drifted: "
            f"{', '.join(drifted) or 'none'}); {where}"
        )
    parts = [f"{b['breach']}: {b['message']}" for b in result["breaches"]]
    if result.get("incomplete"):
        unmeasured = "; ".join(f"{i['figure']} ({i['reason']})" for i in result["incomplete"])
        parts.append(f"{INCOMPLETE}: {len(result['incomplete'])} figure(s) could not be computed: {unmeasured}")
    message = f"{result['batch']}: " + "; ".join(parts)
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
    explanations = explanations_task(ctx.tracking_uri, champion)
    checked = batch_task(path, champion, params)
    result = judge_task(champion, checked, explanations, params, when)
    # Records: the report folder, the MLflow run, the flow run's artifacts.
    folder = report_task(result, paths.monitoring_dir / checked.name)
    mlflow_task(ctx, champion, checked, result, when, folder)
    publish_task(result)
    # Response: the named state, and the training deployment for the breaches monitor.retrain_on lists.
    name = monitor.state_name(result)
    wanted = [b for b in params.monitor.retrain_on if b in {x["breach"] for x in result["breaches"]}]
    retrained = None
    if wanted:  # a failure to start training is said beside the alert, never instead of it
        started = retrain_task(params.monitor, wanted[0], checked.name, return_state=True)
        failed = f"the training deployment {params.monitor.training_deployment!r} could NOT be started: "
        retrained = started.result() if started.is_completed() else failed + str(started.message)
    if name is not None:
        said = [b["message"] for b in result["breaches"]]
        said += [f"{i['figure']}: {i['reason']}" for i in result["incomplete"]]
        get_run_logger().warning("%s: %s", name, "; ".join(said))
    return outcome(result, folder, retrained)


def run_error(state: State) -> BaseException | None:
    """The error a Failed (or Crashed, Cancelled) run holds; None for one that returned its state."""
    try:
        state.result()
    except BaseException as err:  # the error the run failed with (Prefect's own for a crashed or cancelled run)
        return err
    return None


def exit_status(state: State) -> int:
    """The exit code of a finished run: its state's type and name (EXIT), else the type of the error it holds."""
    if state.is_completed():
        return EXIT["Completed"]
    if state.is_failed() and state.name in EXIT:
        return EXIT[state.name]
    err = run_error(state)
    return exit_code(err) if err is not None else 1  # a failure without an error: not ours, never a success


def main(argv: list[str]) -> int:
    """`python -m flows.monitoring BATCH [BATCH_TIME]`: the exit codes of the module's docstring."""
    if not 1 <= len(argv) <= 2:
        print("usage: python -m flows.monitoring BATCH [BATCH_TIME]", file=sys.stderr)
        return ERROR_EXIT
    state = monitoring(batch=argv[0], batch_time=argv[1] if len(argv) > 1 else None, return_state=True)
    code = exit_status(state)
    if code == 0:
        print(state.message)
    elif state.name in EXIT:
        print(f"{state.name}: {state.message}", file=sys.stderr)
    else:
        err = run_error(state)
        print(f"error: {err if err is not None else state.message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
