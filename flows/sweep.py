"""The bias-mitigation sweep flow: candidates in parallel, their Pareto front, a choice by policy, one registration.

`sweep.candidates` in params.yaml lists the candidates (overrides of allow-listed keys; {} is the project's
params as they are). The flow brings the processed frames up to date (`dvc repro preprocess`, a no-op when
they are current), trains one model per distinct training setting and scores each candidate on it (Prefect
tasks on a process pool of `sweep.workers`, or on the Dask cluster at `sweep.dask_address`), chooses on the
validation split by the promotion policy's fairness limits (humane.fairness.sweep_choice.select), and records it
all in MLflow: one parent run tagged humane.sweep=true, a child run per candidate. Only the chosen candidate goes on:
the training flow runs it as a subflow (isolated workspace, DVC experiment, registry, gate), and its registered
version is tagged with its place on the front and the alternatives rejected.

Processes, not threads: torch's default random generator (weight initialisation, dropout) is shared by every
thread of a process, so candidates trained side by side in threads draw from one stream in an order that varies
run to run and their figures are not reproducible. One process per worker keeps each candidate's training
exactly what `fit` makes of its seed. On Dask, start workers with one thread each (`dask worker --nthreads 1`).

Before any candidate is trained, the champion the chosen candidate will be judged against is verified
(humane.governance.approvals.verified_champion: its recorded decision passed, its sign-off holds where
gate.require_approval asks for one, always in team mode, and the audit trail's last move of the alias names it);
one that does not verify stops the sweep, naming what is missing (roll it back with `python -m tasks.rollback`).

The sweep ends in the state its chosen candidate's training run ended in (flows.training's names: Completed only
when the candidate became champion, AwaitingSignOff or NotApproved while it waits for a sign-off, Rejected,
NotPromoted), or NoCandidate when none is within the policy's fairness limits. `python -m flows.sweep` exits
with the status docs/reference/exit-codes.md gives each (0 promoted, 3 refused, 4 no candidate, 7 awaiting sign-off), or
an error's own (2 for bad input, a champion that does not verify included). `python -m flows.sweep --dvc-queue`
queues every candidate as a DVC experiment instead (`dvc exp run --queue -S ...`, up to the audit stage, so
nothing is registered); `dvc queue start` runs them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner

from flows import training as training_flow
from flows.retries import SERVER_TASK
from humane.core import io
from humane.core.context import RunContext, overrides_text
from humane.core.errors import ConfigError, HumaneError, exit_code
from humane.core.metric_names import (
    compute_metric,
    fairness_metric,
    model_test_metric,
    train_metric,
    val_metric,
)
from humane.core.params import read_raw
from humane.core.paths import Paths
from humane.fairness.mitigation import unmitigated_train
from humane.fairness.params import SweepParams
from humane.fairness.policy import policy_of
from humane.fairness.sweep import (
    FRONT_GAPS,
    CandidateResult,
    TrainedModel,
    check_candidates,
    compute_sum,
    front_feature,
    score_candidate,
    train_candidate,
    training_key,
)
from humane.fairness.sweep_choice import pareto_front, position, select
from humane.fairness.sweep_report import choice_markdown, compute_markdown, plot_front, table
from humane.governance.store import client, ensure_experiment
from humane.modeling.features import load_preprocessor, token_layout
from humane.pipeline import workspace
from humane.pipeline.params import Params, apply_overrides, load_params, parse_params

# Where the sweep writes its table, plot and choice in the project; the table's rows are `dvc plots` data:
# `dvc plots show reports/sweep/front.json -x test_dp_sex -y test_accuracy`
# (fields: humane.fairness.sweep_report.table).
SWEEP_DIR = Path("reports/sweep")
FRONT_JSON, FRONT_PNG, SELECTION_JSON, CHOICE_MD = "front.json", "front.png", "selection.json", "choice.md"
# MLflow: the parent run's tag, and the artifact folder of the sweep's files.
SWEEP_TAG, ARTIFACT_DIR = "humane.sweep", "sweep"
TABLE_KEY, CHOICE_KEY = "mitigation-sweep", "mitigation-sweep-choice"
# The queued DVC experiments run the pipeline up to this stage: measured, never tracked or registered.
QUEUE_TARGET = "audit"
TAG_LIMIT = 4000  # characters of a registry tag value kept (MLflow stores up to 5000)
NO_CANDIDATE = "NoCandidate"  # a Failed state: no candidate is within the policy's fairness limits
# Exit status per end state: the training flow's (its chosen candidate's outcome), and NoCandidate.
EXIT = {**training_flow.EXIT, NO_CANDIDATE: 4}
QUEUED_EXIT, ERROR_EXIT = 0, 2


# ---------------------------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------------------------


@task(name="read-sweep", cache_policy=NO_CACHE)
def read_sweep(project: Path) -> tuple[Params, list[Params]]:
    """The project's params and each candidate's params (overrides applied), refusing bad candidates up front."""
    path = Paths(project).params
    raw = read_raw(path)
    try:
        params = parse_params(raw)
        check_candidates(params.sweep.candidates)
        candidates = [parse_params(apply_overrides(raw, c)) for c in params.sweep.candidates]
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return params, candidates


@task(name="verify-champion", cache_policy=NO_CACHE)
def verify_champion(project: Path, params: Params) -> str | None:
    """The champion's version once its decision and sign-off verify against the trail (None: no champion yet).

    Raises ChampionNotVerified, naming what is missing, before any compute is spent on candidates that would be
    judged against it.
    """
    from humane.governance.approvals import verified_champion

    uri, name = RunContext(project).tracking_uri, params.data.model_name
    champion = verified_champion(uri, project, name, params.gate.require_approval)
    version = champion.version if champion else None
    get_run_logger().info("champion: %s", f"v{version} (verified against the audit trail)" if version else "none")
    return version


@task(name="processed-frames", cache_policy=NO_CACHE)
def processed_frames(project: Path) -> dict[str, pd.DataFrame]:
    """The processed frames of the project's current pipeline, brought up to date first.

    `dvc repro preprocess` runs the stages up to preprocess that are stale (none when they are current), in the
    project folder and under its workspace lock, like an in-place pipeline run. The training rows come back as
    they were before the project's own mitigation by data, so that each candidate applies its own.
    """
    logger = get_run_logger()
    paths = Paths(project)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with workspace.workspace_lock(project):
        done = subprocess.run(
            [sys.executable, "-m", "dvc", "repro", "preprocess"], cwd=project, env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            tail = (done.stderr.strip() or done.stdout.strip())[-2000:]
            raise HumaneError(
                f"`dvc repro preprocess` failed in {project}, so there are no processed frames to "
                f"score the candidates on:\n{tail}"
            )
        ran = [line.split("'")[1] for line in done.stdout.splitlines() if line.startswith("Running stage '")]
        logger.info("processed frames: %s", f"stages run first: {ran}" if ran else "current (dvc.lock)")
        report = io.read_json(paths.mitigation_data)
        frames = {
            "train": unmitigated_train(pd.read_parquet(paths.processed_train), report),
            "val": pd.read_parquet(paths.processed_val),
            "test": pd.read_parquet(paths.processed_test),
        }
    return frames


@task(task_run_name="train-{index}", cache_policy=NO_CACHE)
def train_model(
    index: int, params: Params, frames: dict[str, pd.DataFrame], layout: tuple[int, list[int]]
) -> TrainedModel:
    """Train candidate `index`'s model (shared by the candidates with the same training settings)."""
    return train_candidate(params, frames, layout)


@task(task_run_name="candidate-{index}", cache_policy=NO_CACHE)
def score_model(
    index: int,
    params: Params,
    val: pd.DataFrame,
    test: pd.DataFrame,
    trained: TrainedModel,
    model_of: int | None,
    overrides: dict[str, Any],
) -> CandidateResult:
    """Fit candidate `index`'s thresholds on the validation rows and measure both splits."""
    return score_candidate(params, val, test, trained, model_of, overrides)


@task(
    name="record-sweep",
    **SERVER_TASK,
    cache_policy=NO_CACHE,
)
def record_sweep(
    project: Path,
    params: Params,
    results: list[CandidateResult],
    chosen: int | None,
    rejected: dict[int, str],
    timing: dict[str, Any],
) -> dict[str, Any]:
    """Record the sweep: reports/sweep/, MLflow (a parent run, a child per candidate) and the flow run's page.

    Returns what the registered version's tags need (the parent run, the fronts, the table, the choice).
    """
    feature, quality = front_feature(params), params.sweep.select
    limits = policy_of(params).fairness_bounds()  # every limit the choice judged, a min and a max both
    fronts = {
        name: pareto_front(results, quality, fairness_metric(feature, gap), "test") for name, gap in FRONT_GAPS.items()
    }
    rows = table(results, feature, chosen, rejected, fronts)
    markdown = choice_markdown(rows, chosen, quality, feature, limits)
    markdown += "\n\n" + compute_markdown(timing["compute_sum"]) + "\n"
    selection = {
        "select": quality,
        "front_feature": feature,
        "front_split": "test",
        "selection_split": "val",
        "limits": [{"metric": m, "rule": r, "threshold": t} for m, r, t in limits],
        "chosen": chosen,
        "chosen_overrides": params.sweep.candidates[chosen] if chosen is not None else None,
        "rejected": {str(i): reason for i, reason in rejected.items()},
        "fronts": fronts,
        **timing,
    }
    out = Paths(project).root / SWEEP_DIR
    io.write_json(out / FRONT_JSON, rows)
    io.write_json(out / SELECTION_JSON, selection)
    io.write_text(out / CHOICE_MD, markdown)
    plot_front(results, out / FRONT_PNG, feature, quality, chosen, limits)
    parent = log_to_mlflow(project, params, results, rows, selection, out)
    create_table_artifact(key=TABLE_KEY, table=rows, description="Bias-mitigation sweep: every candidate")
    create_markdown_artifact(key=CHOICE_KEY, markdown=markdown, description="Bias-mitigation sweep: the choice")
    return {"parent_run": parent, "fronts": fronts, "feature": feature, "rows": rows, "markdown": markdown}


@task(
    name="mark-registered",
    **SERVER_TASK,
    cache_policy=NO_CACHE,
)
def mark_registered(
    project: Path, params: Params, recorded: dict[str, Any], chosen: int, training_run_id: str | None
) -> dict[str, str] | None:
    """Tag the chosen candidate's registered version (and the parent run) with its place in the sweep.

    The version is the one the training subflow registered: found by the subflow's id on its tracked run, else
    (a run that changed nothing) the newest registered run whose overrides are the chosen candidate's.
    """
    logger = get_run_logger()
    ctx = RunContext(project)
    mlflow_client = client(ctx.tracking_uri)
    experiment = mlflow_client.get_experiment_by_name(params.data.experiment)
    overrides = overrides_text(params.sweep.candidates[chosen])
    found = []
    if experiment is not None and training_run_id:
        found = mlflow_client.search_runs(
            [experiment.experiment_id], f"tags.`prefect.flow_run_id` = '{training_run_id}'"
        )
    if experiment is not None and not [r for r in found if "registry.version" in r.data.tags]:
        # Compared here, not in the filter: the overrides' text holds quotes that MLflow's filter syntax cannot.
        newest = mlflow_client.search_runs(
            [experiment.experiment_id],
            "tags.`registry.version` != ''",
            max_results=500,
            order_by=["attributes.start_time DESC"],
        )
        found = [r for r in newest if r.data.tags.get("overrides") == overrides]
    found = [r for r in found if "registry.version" in r.data.tags]
    if not found:
        logger.warning("no registered version found for candidate %s (%s); not tagged", chosen, overrides)
        return None
    run = found[0]
    name, version = run.data.tags["registry.model"], run.data.tags["registry.version"]
    rejected = " | ".join(f"{r['candidate']}: {r['status']}" for r in recorded["rows"] if not r["chosen"])
    tags = {
        "sweep.parent_run": recorded["parent_run"],
        "sweep.candidate": str(chosen),
        "sweep.overrides": overrides,
        "sweep.position": position(chosen, recorded["fronts"], recorded["feature"]),
        "sweep.rejected": rejected[:TAG_LIMIT] or "-",
    }
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version, key, value)
    # The card's sweep section: where the model sits on the front and why the others were not chosen.
    mlflow_client.log_text(run.info.run_id, recorded["markdown"], "model_card/sweep.md")
    for key, value in {
        "sweep.registered_model": name,
        "sweep.registered_version": version,
        "sweep.training_run": run.info.run_id,
        "sweep.gate": run.data.tags.get("gate.decision", "-"),
    }.items():
        mlflow_client.set_tag(recorded["parent_run"], key, value)
    return {"model": name, "version": version, "run_id": run.info.run_id}


# ---------------------------------------------------------------------------------------------------------------
# MLflow
# ---------------------------------------------------------------------------------------------------------------


def log_to_mlflow(
    project: Path,
    params: Params,
    results: list[CandidateResult],
    rows: list[dict[str, Any]],
    selection: dict[str, Any],
    out: Path,
) -> str:
    """One parent run (the sweep) and a child run per candidate, with its real start and end; the parent's id.

    A retry of this flow run first deletes what an interrupted earlier attempt left (runs tagged with this flow
    run's id and never marked complete), so the store holds one parent per sweep.
    """
    ctx = RunContext(project)
    mlflow_client = client(ctx.tracking_uri)
    artifact_root = Paths(project).mlflow_artifacts if ctx.default_store else None
    experiment_id = ensure_experiment(mlflow_client, params.data.experiment, artifact_root)
    run_id = str(flow_run.id) if flow_run.id else "local"
    recorded = clear_earlier_attempts(mlflow_client, experiment_id, run_id)
    if recorded is not None:
        return recorded
    common = {"sweep.flow_run_id": run_id, "mlflow.source.name": "prefect flow sweep", "mlflow.source.type": "JOB"}
    parent = mlflow_client.create_run(
        experiment_id,
        start_time=int(selection["started"] * 1000),
        run_name=f"sweep · {len(results)} candidates",
        tags={
            SWEEP_TAG: "true",
            **common,
            "sweep.chosen": str(selection["chosen"]),
            "sweep.front_feature": selection["front_feature"],
            "sweep.select": selection["select"],
        },
    ).info.run_id
    now = int(time.time() * 1000)
    for i, (result, row) in enumerate(zip(results, rows, strict=True)):
        log_candidate(mlflow_client, experiment_id, {"mlflow.parentRunId": parent, **common}, i, result, row, now)
    log_parent_figures(mlflow_client, parent, params, results, selection, now)
    for name in (FRONT_JSON, FRONT_PNG, SELECTION_JSON, CHOICE_MD):
        mlflow_client.log_artifact(parent, str(out / name), ARTIFACT_DIR)
    mlflow_client.set_tag(parent, "humane.complete", "true")
    mlflow_client.set_terminated(parent, "FINISHED", end_time=int(time.time() * 1000))
    return parent


def clear_earlier_attempts(mlflow_client: Any, experiment_id: str, run_id: str) -> str | None:
    """The parent run an earlier attempt of this flow run completed, if any; else delete what earlier attempts left."""
    earlier = mlflow_client.search_runs([experiment_id], f"tags.`sweep.flow_run_id` = '{run_id}'")
    for attempt in earlier:
        if attempt.data.tags.get("humane.complete") == "true" and attempt.data.tags.get(SWEEP_TAG) == "true":
            return attempt.info.run_id
    for attempt in earlier:
        mlflow_client.delete_run(attempt.info.run_id)
    return None


def log_candidate(
    mlflow_client: Any,
    experiment_id: str,
    tags: dict[str, str],
    index: int,
    result: CandidateResult,
    row: dict[str, Any],
    now: int,
) -> None:
    """Candidate `index`'s child run (`tags`: its parent and the flow run's): its figures, overrides and status."""
    from mlflow.entities import Metric, Param, RunTag

    child = mlflow_client.create_run(
        experiment_id,
        start_time=int(result.started * 1000),
        run_name=f"sweep candidate {index} · {row['overrides']}",
        tags={
            **tags,
            "sweep.candidate": str(index),
            "sweep.overrides": row["overrides"],
            "sweep.methods": row["methods"],
            "sweep.status": row["status"][:TAG_LIMIT],
            "sweep.model_of": str(row["model_of"]),
            **{f"sweep.front_{name}": str(row[f"front_{name}"]).lower() for name in FRONT_GAPS},
        },
    ).info.run_id
    mlflow_client.log_batch(
        child,
        metrics=[Metric(k, float(v), now, 0) for k, v in candidate_figures(result).items() if v == v],  # no NaN
        params=[Param(k, str(v)[:6000]) for k, v in sorted(result.overrides.items())],
        tags=[RunTag("humane.complete", "true")],
    )
    mlflow_client.set_terminated(child, "FINISHED", end_time=int(result.finished * 1000))


def candidate_figures(result: CandidateResult) -> dict[str, float]:
    """A candidate's MLflow metrics: val.* and test.* figures, its training's and its compute bill's numbers."""
    return {
        **{val_metric(k): v for k, v in result.val.items()},
        **{model_test_metric(k): v for k, v in result.test.items()},
        train_metric("seconds"): result.train_seconds,
        train_metric("best_epoch"): result.best_epoch,
        train_metric("epochs_run"): result.epochs_run,
        train_metric("rows"): result.train_rows,
        **{
            train_metric(compute_metric(k)): v
            for k, v in result.compute.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        },
    }


def log_parent_figures(
    mlflow_client: Any,
    parent: str,
    params: Params,
    results: list[CandidateResult],
    selection: dict[str, Any],
    now: int,
) -> None:
    """The parent run's metrics (the sweep's totals, its fronts, the chosen candidate's figures) and params."""
    from mlflow.entities import Metric, Param

    chosen = selection["chosen"]
    summary = {
        "sweep.candidates": len(results),
        "sweep.wall_seconds": selection["wall_seconds"],
        "sweep.train_seconds_sum": selection["train_seconds_sum"],
        # The compute bill summed over the candidates that trained (energy left out unless every one measured it).
        **{
            f"sweep.compute.{k}" + ("" if k == "models_trained" else "_sum"): v
            for k, v in selection["compute_sum"].items()
            if not isinstance(v, str)
        },
        "sweep.on_front_dp": len(selection["fronts"]["dp"]),
        "sweep.on_front_eo": len(selection["fronts"]["eo"]),
    }
    if chosen is not None:
        summary.update({f"chosen.val.{k}": v for k, v in results[chosen].val.items() if v == v})
        summary.update({f"chosen.test.{k}": v for k, v in results[chosen].test.items() if v == v})
    mlflow_client.log_batch(
        parent,
        metrics=[Metric(k, float(v), now, 0) for k, v in summary.items()],
        params=[
            Param("sweep.select", selection["select"]),
            Param("sweep.workers", str(params.sweep.workers)),
            Param("sweep.runner", selection["runner"]),
            Param("sweep.n_candidates", str(len(results))),
        ],
    )


# ---------------------------------------------------------------------------------------------------------------
# The flow
# ---------------------------------------------------------------------------------------------------------------


def task_runner(settings: SweepParams) -> TaskRunner:
    """Processes on this machine (`sweep.workers`), or the Dask cluster at `sweep.dask_address`."""
    if settings.dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=settings.dask_address)
    return ProcessPoolTaskRunner(max_workers=settings.workers)


@flow(name="sweep", log_prints=True, task_runner=ProcessPoolTaskRunner(max_workers=2))
def sweep() -> State:
    """Read → bring the processed frames up to date → train and score the candidates → choose → register one.

    The project is the working directory. Run it with `run_sweep()` (or `python -m flows.sweep`) to get the
    task runner params.yaml asks for; called directly, it uses two local processes.
    """
    project = Path.cwd()
    started = time.time()
    params, candidates = read_sweep(project)
    verify_champion(project, params)  # an unverified champion stops the sweep here, before any training
    frames = processed_frames(project)
    # Whole frames: a post-processed candidate's per-row draws hash each row's features.
    val, test = frames["val"], frames["test"]
    layout = token_layout(load_preprocessor(Paths(project).preprocessor))  # numeric embeddings, FT-Transformer tokens

    # One model per distinct training setting, submitted first; each candidate is scored on its model.
    owner: dict[str, int] = {}
    trained = {}
    for n, candidate in enumerate(candidates):
        key = training_key(candidate)
        if key not in owner:
            owner[key] = n
            trained[key] = train_model.submit(n, candidate, frames, layout)
    scored = []
    for n, candidate in enumerate(candidates):
        key = training_key(candidate)
        model_of = None if owner[key] == n else owner[key]
        scored.append(score_model.submit(n, candidate, val, test, trained[key], model_of, params.sweep.candidates[n]))
    results = [future.result() for future in scored]
    timing = {
        "started": started,
        "wall_seconds": round(time.time() - started, 2),
        "train_seconds_sum": round(sum(r.train_seconds for r in results if r.model_of is None), 2),
        "compute_sum": compute_sum(results),
        "models_trained": len(trained),
        "runner": describe_runner(params.sweep),
    }

    # The choice: validation figures against the policy's fairness limits.
    chosen, rejected = select(results, policy_of(params), params.sweep.select)
    recorded = record_sweep(project, params, results, chosen, rejected, timing)
    print(recorded["markdown"])
    if chosen is None:
        return Failed(
            name=NO_CANDIDATE,
            message="no sweep candidate is within the policy's fairness limits on the "
            "validation split: " + "; ".join(f"{i}: {r}" for i, r in rejected.items()),
        )

    # Only the chosen candidate goes on: trained by the pipeline, registered, judged by the gate.
    state = training_flow.training(overrides=params.sweep.candidates[chosen] or None, return_state=True)
    return chosen_outcome(project, params, recorded, chosen, state)


def chosen_outcome(project: Path, params: Params, recorded: dict[str, Any], chosen: int, state: State) -> State:
    """The sweep's end: its chosen candidate's training outcome, under the same name; tagged once registered.

    Every named outcome of the training flow registered the candidate (promoted, awaiting or lacking a sign-off,
    refused); a training run that failed with an error registered nothing, and its error stands.
    """
    end = training_flow.end_state(state)
    if end not in training_flow.EXIT:
        return state
    mark_registered(project, params, recorded, chosen, str(state.state_details.flow_run_id or ""))
    message = f"sweep candidate {chosen} ({overrides_text(params.sweep.candidates[chosen])}): {state.message or end}"
    if state.is_completed():
        return Completed(name=end, message=message)
    return Failed(name=end, message=message)


def describe_runner(settings: SweepParams) -> str:
    """The task runner in words, as the parent run records it."""
    if settings.dask_address:
        return f"dask:{settings.dask_address}"
    return f"processes:{settings.workers}"


def run_sweep() -> State:
    """Run the sweep flow with the task runner params.yaml asks for; its final state."""
    settings = load_params(Paths(Path.cwd()).params).sweep
    return sweep.with_options(task_runner=task_runner(settings))(return_state=True)


# ---------------------------------------------------------------------------------------------------------------
# The same grid as DVC experiments
# ---------------------------------------------------------------------------------------------------------------


def yaml_value(value: Any) -> str:
    """A value as `dvc exp run -S key=value` reads it back (YAML 1.2): plain when that is exact, else JSON."""
    import json

    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    if isinstance(value, str):
        try:
            plain = YAML(typ="safe", pure=True).load(value) == value
        except YAMLError:  # e.g. "a: b" or "[x": not plain YAML; quoted below
            plain = False
        if plain:
            return value
    return json.dumps(value)


def queue_commands(candidates: list[dict[str, Any]]) -> list[list[str]]:
    """`dvc exp run --queue` for each candidate, up to the audit stage (measured, not tracked or registered)."""
    return [
        [
            "dvc",
            "exp",
            "run",
            "--queue",
            *[a for k, v in c.items() for a in ("-S", f"{k}={yaml_value(v)}")],
            QUEUE_TARGET,
        ]
        for c in candidates
    ]


def queue(project: Path) -> int:
    """Queue every candidate as a DVC experiment; print the commands and how to run and compare them."""
    params = load_params(Paths(project).params)
    check_candidates(params.sweep.candidates)
    for command in queue_commands(params.sweep.candidates):
        print(shlex.join(command))
        done = subprocess.run([sys.executable, "-m", *command], cwd=project, capture_output=True, text=True)
        if done.returncode != 0:
            print(
                f"error: {shlex.join(command)} failed: {(done.stderr or done.stdout).strip()[-1000:]}", file=sys.stderr
            )
            return ERROR_EXIT
    print(
        f"queued {len(params.sweep.candidates)} experiments; run them with `dvc queue start -j "
        f"{params.sweep.workers}`, follow with `dvc queue status`, compare with `dvc exp show` "
        "(the policy's choice is made by `python -m flows.sweep`)"
    )
    return QUEUED_EXIT


def main(argv: list[str]) -> int:
    """`python -m flows.sweep [--dvc-queue]`: run the sweep (or queue its grid as DVC experiments).

    The exit status is read from the end state's name (EXIT) or, for an error, from its type.
    """
    if argv not in ([], ["--dvc-queue"]):
        print(f"usage: python -m flows.sweep [--dvc-queue]; got {shlex.join(argv)}", file=sys.stderr)
        return ERROR_EXIT
    try:
        if argv:
            return queue(Path.cwd())
        return training_flow.exit_status(run_sweep(), EXIT)
    except HumaneError as err:  # an error raised before the flow ran (reading params.yaml)
        print(f"error: {err}", file=sys.stderr)
        return exit_code(err)


if __name__ == "__main__":
    # Run as the importable module (not __main__): the process pool's workers load the tasks from flows.sweep.
    from flows import sweep as module

    raise SystemExit(module.main(sys.argv[1:]))
