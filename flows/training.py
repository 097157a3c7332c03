"""The training flow: the same stage implementations as `dvc repro`, run as Prefect tasks.

Each task skips its stage when DVC says it is up to date, and records its outputs in dvc.lock when it runs,
so a flow run and `dvc repro` leave the same workspace behind.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from tasks import evaluate, load, pipeline, preprocess, track, train, validate
from tasks.errors import HumaneError
from tasks.params import Params, load_params


def _stage(name: str, body: Callable[[], Any]) -> str:
    """Run one DVC stage's implementation unless it is up to date, then record it in dvc.lock."""
    logger = get_run_logger()
    if not pipeline.is_stale(name):
        logger.info("stage %s is up to date; skipped", name)
        return "skipped"
    body()
    pipeline.record(name)
    logger.info("stage %s ran and was recorded in dvc.lock", name)
    return "ran"


@task(name="apply-params", cache_policy=NO_CACHE)
def apply_params(overrides: dict[str, Any] | None) -> Params:
    """Write overrides into params.yaml (as `dvc exp run -S` does) and parse the result."""
    if overrides:
        pipeline.set_params(overrides)
    return load_params()


@task(name="load", cache_policy=NO_CACHE)
def load_data(params: Params) -> str:
    """Read the configured source into interim frames."""
    return _stage("load", lambda: load.run(params.data))


@task(name="validate", cache_policy=NO_CACHE)
def validate_data(params: Params) -> str:
    """Great Expectations validation; a failure stops the flow here."""
    return _stage("validate", lambda: validate.run(params.data, params.validate))


@task(name="preprocess", cache_policy=NO_CACHE)
def preprocess_data(params: Params) -> str:
    """Split and fit the feature transformer."""
    return _stage("preprocess", lambda: preprocess.run(params.data, params.preprocess))


@task(name="train", cache_policy=NO_CACHE)
def train_model(params: Params) -> str:
    """Train the MLP (never retried: a failure here is not transient)."""
    return _stage("train", lambda: train.run(params.train))


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_model(params: Params) -> str:
    """Test-split metrics, baselines and plots."""
    return _stage("evaluate", lambda: evaluate.run(params.evaluate))


@task(name="track", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def log_to_mlflow(params: Params, overrides: dict[str, Any] | None) -> str:
    """One MLflow run for this execution, tagged with the flow-run id and the overrides."""
    return _stage("track", lambda: track.log_run(params.track, flow_run_id=flow_run.id, overrides=overrides))


@task(name="record-experiment", cache_policy=NO_CACHE)
def record_experiment(overrides: dict[str, Any] | None) -> str | None:
    """Save an overridden run as a DVC experiment, as `dvc exp run -S` would."""
    if not overrides:
        return None
    return pipeline.save_experiment(f"prefect-{flow_run.name or flow_run.id}")


@flow(name="training", log_prints=True)
def training(overrides: dict[str, Any] | None = None) -> dict[str, str | None]:
    """Load → validate → preprocess → train → evaluate → track, each stage skipped when DVC says it is current.

    Args:
        overrides: params.yaml keys to change for this run, e.g. ``{"train.lr": 0.003}``.

    """
    params = apply_params(overrides)
    # Data
    load_data(params)
    validate_data(params)
    preprocess_data(params)
    # Model
    train_model(params)
    evaluate_model(params)
    # Record
    tracked = log_to_mlflow(params, overrides)
    experiment = record_experiment(overrides)
    return {"track": tracked, "experiment": experiment}


def main(argv: list[str]) -> int:
    """`python -m flows.training [key=value ...]`: run the flow locally; values are YAML (train.lr=0.003)."""
    import yaml

    overrides = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            print(f"error: expected key=value, got {arg!r}", file=sys.stderr)
            return 2
        overrides[key] = yaml.safe_load(value)
    try:
        training(overrides=overrides or None)
    except HumaneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
