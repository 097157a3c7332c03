"""The training flow: the same stage implementations as `dvc repro`, run as Prefect tasks.

Each task skips its stage when DVC says it is up to date, and records its outputs in dvc.lock when it runs,
so a flow run and `dvc repro` leave the same workspace behind.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from tasks import audit, evaluate, gate, io, load, pipeline, preprocess, register, track, train, validate
from tasks.errors import HumaneError
from tasks.params import Params, load_params
from tasks.paths import AUDIT_REPORT, DECISION, REGISTRATION


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
    """Read the configured source, mask it by the privacy policy, and write the interim frames."""
    return _stage("load", lambda: load.run(params.data, params.privacy))


@task(name="validate", cache_policy=NO_CACHE)
def validate_data(params: Params) -> str:
    """Great Expectations validation; a failure stops the flow here."""
    return _stage("validate", lambda: validate.run(params.data, params.validate))


@task(name="data-audit", cache_policy=NO_CACHE)
def audit_data(params: Params) -> str:
    """Each sensitive group's share of the rows and label base rate, before training."""
    return _stage("data_audit", lambda: audit.run_data_audit(params.data))


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


@task(name="bias-audit", cache_policy=NO_CACHE)
def audit_model(params: Params) -> str:
    """Per-group metrics with CIs and disparity gaps on the test split."""
    return _stage("audit", lambda: audit.run(params.data, params.audit, params.evaluate.threshold))


@task(name="track", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def log_to_mlflow(params: Params, overrides: dict[str, Any] | None) -> str:
    """One MLflow run for this execution, tagged with the flow-run id and the overrides."""
    return _stage(
        "track",
        lambda: track.log_run(params.track, params.evaluate.threshold, flow_run_id=flow_run.id, overrides=overrides),
    )


@task(name="promotion-gate", cache_policy=NO_CACHE)
def decide_promotion(params: Params) -> str:
    """Apply the promotion policy against the current champion."""
    return _stage("gate", lambda: gate.run(params.gate, params.register))


@task(name="register", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def register_model(params: Params) -> str:
    """Register the candidate, write the model card, move the aliases the decision allows."""
    return _stage("register", lambda: register.run(params))


@task(name="publish", cache_policy=NO_CACHE)
def publish(params: Params) -> dict[str, Any]:
    """Show the decision and the per-group table on the flow run's page."""
    decision = io.read_json(DECISION)
    registration = io.read_json(REGISTRATION)
    create_markdown_artifact(
        key="promotion-decision", markdown=register.decision_markdown(decision, registration), description="Gate"
    )
    create_table_artifact(key="bias-audit-groups", table=register.group_rows(io.read_json(AUDIT_REPORT)),
                          description="Per-group test metrics with 95% bootstrap CIs")  # fmt: skip
    return registration


def outcome(registration: dict[str, Any]) -> State:
    """Completed when the candidate became champion; a Failed state named Rejected, with the reasons, when not."""
    version = f"{registration['model_name']} v{registration['version']}"
    if registration["promoted"]:
        return Completed(message=f"{version} promoted to champion")
    return Failed(name="Rejected", message=f"{version} not promoted: " + "; ".join(registration["reasons"]))


@task(name="record-experiment", cache_policy=NO_CACHE)
def record_experiment(overrides: dict[str, Any] | None) -> str | None:
    """Save an overridden run as a DVC experiment, as `dvc exp run -S` would."""
    if not overrides:
        return None
    return pipeline.save_experiment(f"prefect-{flow_run.name or flow_run.id}")


@flow(name="training", log_prints=True)
def training(overrides: dict[str, Any] | None = None) -> State:
    """Load → validate → audit data → preprocess → train → evaluate → audit → track → gate → register.

    Each stage is skipped when DVC says it is current. The run ends Completed when the candidate became
    champion, and in a Failed state named Rejected, whose message lists the reasons, when the gate refused it.

    Args:
        overrides: params.yaml keys to change for this run, e.g. ``{"train.lr": 0.003}``.

    """
    params = apply_params(overrides)
    # Data
    load_data(params)
    validate_data(params)
    audit_data(params)
    preprocess_data(params)
    # Model
    train_model(params)
    evaluate_model(params)
    audit_model(params)
    # Record and decide
    log_to_mlflow(params, overrides)
    decide_promotion(params)
    register_model(params)
    record_experiment(overrides)
    return outcome(publish(params))


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
