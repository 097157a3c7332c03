"""The training flow: the stages of dvc.yaml, in its order, each run by the same `run` as `dvc repro`.

Each stage is a Prefect task that waits for the stages whose outputs it reads, so the run's graph is the
pipeline. A stage DVC reports as up to date ends in a Completed state named Skipped; a stage that runs is
recorded in dvc.lock. Without overrides the flow runs in the project folder, like `dvc repro`; with
overrides it runs in an isolated workspace saved as a DVC experiment (humane.core.workspace).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from humane.core import io, workspace
from humane.core.context import PREFECT_ENTRY, RunContext
from humane.core.errors import HumaneError
from humane.core.params import Params, apply_overrides, check_paths, parse_params, read_raw
from humane.core.paths import Paths
from humane.data.datasets import BUILTINS
from humane.governance.card import decision_page, group_rows
from humane.governance.gate import Decision

# Retries only where a stage talks to a server (the tracking store and registry); never on training.
RETRIES = {"track": 2, "register": 2}


@task(name="check-params", cache_policy=NO_CACHE)
def check_params(project: Path, overrides: dict[str, Any]) -> Params:
    """Refuse overrides outside the allow-list and paths outside the project, before anything runs."""
    params = parse_params(apply_overrides(read_raw(Paths(project).params), overrides))
    check_paths(params, project, frozenset(BUILTINS))
    return params


@task(cache_policy=NO_CACHE)
def run_stage(stage: workspace.Stage, params: Params, paths: Paths, ctx: RunContext) -> Any:
    """Run one dvc.yaml stage's implementation unless DVC says it is current, then record it in dvc.lock."""
    logger = get_run_logger()
    if not workspace.is_stale(stage.name, paths.root):
        return Completed(name="Skipped", message=f"stage {stage.name} is up to date (dvc.lock); not run")
    summary = importlib.import_module(stage.module).run(params, paths, ctx)
    workspace.record(stage.name, paths.root)
    logger.info("%s", summary)
    return summary


@task(name="publish", cache_policy=NO_CACHE)
def publish(paths: Paths, fresh: bool) -> dict[str, Any]:
    """Show the decision (as registered) and the per-group table on the flow run's page.

    `fresh` is False when nothing changed since an earlier run registered the candidate: the page then says
    the decision is the one recorded at that time.
    """
    registration = io.read_json(paths.registration)
    decision = Decision.from_dict(io.read_json(paths.decision))
    page = decision_page(decision, registration["model_name"], registration["version"])
    if not fresh:
        page = "_Nothing changed since this candidate was registered: the decision below was recorded then._\n\n" + page
    create_markdown_artifact(key="promotion-decision", markdown=page, description="Gate")
    create_table_artifact(key="bias-audit-groups", table=group_rows(io.read_json(paths.audit_report)),
                          description="Per-group test metrics with 95% bootstrap CIs")  # fmt: skip
    return registration


def outcome(registration: dict[str, Any], fresh: bool = True) -> State:
    """Completed when the candidate became champion; a Failed state named Rejected, with the reasons, when not.

    A run that changed nothing (every stage current) ends Completed, naming the decision recorded earlier.
    """
    version = f"{registration['model_name']} v{registration['version']}"
    if not fresh:
        verdict = "promoted" if registration["promoted"] else "not promoted"
        return Completed(message=f"nothing changed: {version} was registered by an earlier run ({verdict} then)")
    if registration["promoted"]:
        return Completed(message=f"{version} promoted to champion")
    return Failed(name="Rejected", message=f"{version} not promoted: " + "; ".join(registration["reasons"]))


@contextmanager
def workspace_for(project: Path, overrides: dict[str, Any]) -> Iterator[Paths]:
    """The project folder (no overrides, one run at a time) or an isolated workspace saved as an experiment."""
    if not overrides:
        with workspace.workspace_lock(project):
            yield Paths(project)
        return
    # Flow-run names repeat now and then; the id's first characters make the experiment's name unique.
    with workspace.isolated(project, overrides, f"prefect-{flow_run.name}-{str(flow_run.id)[:8]}") as paths:
        yield paths


@flow(name="training", log_prints=True)
def training(overrides: dict[str, Any] | None = None) -> State:
    """Load → validate → audit data → preprocess → train → evaluate → audit → track → gate → register.

    Args:
        overrides: allow-listed params to change for this run only (humane.core.params.OVERRIDABLE), e.g.
            ``{"train.lr": 0.003}``. The project's params.yaml is left as it is.

    """
    overrides = dict(overrides or {})
    project = Path.cwd()
    check_params(project, overrides)
    ctx = RunContext(project, PREFECT_ENTRY, str(flow_run.id), flow_run.name, overrides)
    with workspace_for(project, overrides) as paths:
        params = check_params.fn(paths.root, {})  # the run's own params.yaml, overrides applied
        states: dict[str, State] = {}
        for stage in workspace.stages(paths.dvc_yaml):
            run = run_stage.with_options(name=stage.name, retries=RETRIES.get(stage.name, 0),
                                         retry_delay_seconds=[2, 10])  # fmt: skip
            states[stage.name] = run(stage, params, paths, ctx, wait_for=[states[u] for u in stage.upstream],
                                     return_state=True)  # fmt: skip
            states[stage.name].result()  # a failed stage stops the run here, with its error
        fresh = states["register"].name != "Skipped"
        registration = publish(paths, fresh, wait_for=[states["register"]])
    return outcome(registration, fresh)


def main(argv: list[str]) -> int:
    """`python -m flows.training [key=value ...]`: run the flow locally; values are YAML 1.2, as `dvc exp run -S`."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)  # YAML 1.2: 1e-3 is a number (PyYAML's YAML 1.1 reads it as text)
    overrides = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            print(f"error: expected key=value, got {arg!r}", file=sys.stderr)
            return 2
        overrides[key] = yaml.load(value)
    state = training(overrides=overrides or None, return_state=True)
    if state.name == "Rejected":
        print(state.message, file=sys.stderr)
        return 3
    try:
        state.result()  # re-raises the error of a failed stage
    except HumaneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
