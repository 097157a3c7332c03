"""One MLflow run per pipeline run: params, metrics, reports, plots, lineage and the served model.

A run is keyed by the pipeline run's identity (`run_key`): a retried or repeated track stage of the same
pipeline run finds the run an earlier attempt completed instead of recording a second one.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from humane.core import io
from humane.core import metric_names as names
from humane.core.context import RunContext
from humane.core.errors import HumaneError
from humane.core.params import flatten, read_raw
from humane.core.paths import Paths
from humane.governance import federation
from humane.governance.domain import Domain, fit_domain
from humane.governance.gate import privacy_and_federation
from humane.governance.lineage import git_commit, md5_of
from humane.governance.serving import (
    ARTIFACT_DOMAIN,
    ARTIFACT_EXPLAINER,
    ARTIFACT_MODEL,
    ARTIFACT_POLICY,
    ARTIFACT_PREPROCESSOR,
    ARTIFACT_THRESHOLDS,
    EXPLAIN_PARAMS,
    SERVED_MODEL_FILE,
    HumaneModel,
    input_example,
)
from humane.governance.store import StoreError, client, ensure_experiment, using_tracking_uri
from humane.privacy.policy import OTHER, FittedPolicy

MODEL_ARTIFACT = "model"
DOMAIN_FILE = "domain.json"  # the served model's training-time domain, logged beside its other files
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
SERVING_PACKAGES = ("mlflow", "torch", "scikit-learn", "pandas", "numpy", "skops", "pydantic")
RUN_KEY_TAG = "humane.run_key"
EPOCH_FIGURES = ("train_loss", "val_loss", "val_accuracy", "val_auc")  # logged per epoch as epoch.<figure>
COMPLETE_TAG = "humane.complete"  # set last: a run without it is an interrupted attempt
# The files a run records; their bytes (with the params and the run's origin) make the run's identity.
RECORDED = (
    "params",
    "metrics",
    "train_metrics",
    "train_history",
    "validation_report",
    "fairness",
    "audit_report",
    "data_audit",
    "privacy_report",
    "membership_report",
    "model",
    "preprocessor",
    "privacy_policy",
    "processed_train",
    "processed_test",
    "interim_meta",
    "explain_metrics",
    "explanations",
    "explainer",
)


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested numeric metrics → dotted names (NaN and non-numbers dropped: MLflow cannot plot them)."""
    flat = flatten(metrics, prefix)
    return {k: float(v) for k, v in flat.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def run_key(paths: Paths, ctx: RunContext) -> str:
    """The pipeline run's identity: a Prefect flow run, or (for `dvc repro`) the exact inputs it records."""
    if ctx.flow_run_id:
        return f"prefect:{ctx.flow_run_id}"
    digest = hashlib.sha256()
    for name in federation.RECORDED if federation.is_federated(paths) else RECORDED:
        digest.update(f"{name}={md5_of(getattr(paths, name))};".encode())
    digest.update(git_commit(ctx.project).encode())
    return f"dvc:{digest.hexdigest()[:32]}"


def run_name(ctx: RunContext) -> str:
    """A name that reads on its own in a list of runs: entry point, overrides or "defaults", short commit."""
    entry = "prefect" if ctx.flow_run_id else "dvc"
    commit = git_commit(ctx.project)
    short = commit[:7] + ("-dirty" if commit.endswith("-dirty") else "")
    return f"{entry} · {ctx.describe_overrides()} · {short}"


def lineage_tags(paths: Paths, ctx: RunContext) -> dict[str, str]:
    """Git commit, md5s of the data and model files, and which entry point ran the pipeline."""
    if federation.is_federated(paths):  # the sites that trained, no file md5: the rows stay at the sites
        data = federation.lineage(paths, federation.read(paths))
    else:
        meta = io.read_json(paths.interim_meta)
        data = {
            "data.source": str(meta["source"]),
            "data.raw_md5.train": meta["md5"]["train"],
            "data.raw_md5.test": meta["md5"]["test"],
            "data.md5.train": md5_of(paths.processed_train),
            "data.md5.test": md5_of(paths.processed_test),
        }
    tags = {
        "git_commit": git_commit(ctx.project),
        **data,
        "model.md5": md5_of(paths.model),
        "preprocessor.md5": md5_of(paths.preprocessor),
        "entry_point": "prefect" if ctx.flow_run_id else "dvc",
        "overrides": ctx.describe_overrides(),
        # What the MLflow UI shows as the run's source: the entry point, not the module that happened to log.
        "mlflow.source.name": ctx.entry_point,
        "mlflow.source.type": "JOB",
    }
    if ctx.flow_run_id:
        tags["prefect.flow_run_id"] = ctx.flow_run_id
    return tags


def requirements() -> list[str]:
    """Exact pins of what the served model imports, from this environment (inferring them costs seconds)."""
    return [f"{name}=={version(name)}" for name in SERVING_PACKAGES]


def serving_domain(paths: Paths, inputs: list[str], protected: set[str]) -> Domain:
    """The model inputs' training-time domain: the validated schema (reports/validation.json) over the train pool.

    Ranges and category sets are the ones validation checked; what the schema does not state comes from the
    train pool as the load stage wrote it (data/interim/train.parquet), except for `protected` columns
    (`humane.privacy.policy.protected_columns`), whose values are never shipped: the report holds no value set
    learned from their data, so a protected column has none, but for a column whose rare categories the policy
    groups: its known categories are the policy's kept ones and "Other" (the policy ships them already).
    """
    schema = io.read_json(paths.validation_report)["schema"]
    policy = FittedPolicy.from_dict(io.read_json(paths.privacy_policy))
    grouped = {c: [*kept, OTHER] for c, kept in policy.kept_categories.items() if c not in schema["categories"]}
    train = pd.read_parquet(paths.interim_train, columns=inputs)
    return fit_domain(
        train,
        numeric=[c for c in inputs if c in schema["numeric"]],
        categorical=[c for c in inputs if c in schema["categorical"]],
        ranges={c: (lo, hi) for c, (lo, hi) in schema["ranges"].items()},
        categories={**schema["categories"], **grouped},
        grouped=list(policy.kept_categories),
        protected=protected,
    )


def log_serving_model(paths: Paths, threshold: float, masked: set[str]) -> Any:
    """Log the pyfunc as code with its files and domain, a raw-column signature and a synthetic input example.

    The explainer (models/explainer.json) ships when the explain stage wrote one (log_run requires it of every
    workspace but a federated one); the signature declares the explain params (`reasons`, `counterfactual`)
    either way.
    """
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    import humane
    from humane.modeling.features import load_preprocessor

    pre = load_preprocessor(paths.preprocessor)
    inputs, federated = pre.inputs, federation.is_federated(paths)
    with tempfile.TemporaryDirectory(prefix="humane-domain-") as tmp:
        domain = Path(tmp) / DOMAIN_FILE
        if federated:  # no training row here: the preprocessor's categories and the stated ranges
            fitted = federation.serving_domain(pre, io.read_json(paths.validation_report)["schema"]["ranges"], masked)
        else:
            fitted = serving_domain(paths, inputs, masked)
        io.write_json(domain, fitted.to_dict())
        model = HumaneModel().load_files(
            threshold, paths.privacy_policy, paths.preprocessor, paths.model, domain, paths.thresholds
        )
        lowest_bin = {column: edges[0] for column, edges in model.policy.bins.items()}  # a value the policy admits
        # A post-processed model also takes its target's sensitive columns; the example shows the largest group
        # (a group's name, not a person's value) so that it passes the thresholds.
        needs = [c for c in model.needs_sensitive if c not in inputs]
        rows = federation.example_frame(fitted) if federated else pd.read_parquet(paths.interim_test)
        example = input_example(rows, inputs + needs, masked - set(needs), lowest_bin)
        # The explain params (reasons, counterfactual) are declared with their defaults: a request without them is
        # answered as before; a model without an explainer refuses a request that asks for them.
        signature = infer_signature(example, model.predict(None, example), params=EXPLAIN_PARAMS)
        explainer = {ARTIFACT_EXPLAINER: str(paths.explainer)} if paths.explainer.exists() else {}
        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=str(SERVED_MODEL_FILE),
            artifacts={
                ARTIFACT_MODEL: str(paths.model),
                ARTIFACT_PREPROCESSOR: str(paths.preprocessor),
                ARTIFACT_POLICY: str(paths.privacy_policy),
                ARTIFACT_DOMAIN: str(domain),
                ARTIFACT_THRESHOLDS: str(paths.thresholds),
                **explainer,
            },
            model_config={"threshold": threshold},
            code_paths=[str(next(iter(humane.__path__)))],
            signature=signature,
            input_example=example,
            pip_requirements=requirements(),
        )


def distinct_values(frame: pd.DataFrame) -> pd.DataFrame:
    """Each column's distinct values (a null kept once, dtypes kept), cycled to the longest column's count.

    MLflow infers a column's type and whether it is required (holds no null) from the set of its values, not
    from how often each occurs, so this frame has the schema of `frame`; its length is the largest number of
    distinct values in a column instead of the row count.
    """
    if frame.empty:
        return frame
    uniques = {column: frame[column].drop_duplicates().reset_index(drop=True) for column in frame.columns}
    rows = max(len(values) for values in uniques.values())
    return pd.DataFrame(
        {
            column: values.take(np.arange(rows) % len(values)).reset_index(drop=True)
            for column, values in uniques.items()
        }
    )


def numbered_features(frame: pd.DataFrame, protected: set[str]) -> pd.DataFrame:
    """The processed frame with the one-hot features of a protected column numbered, not named by their value.

    A one-hot feature is named `cat__<column>_<value>` (humane.modeling.features): the dataset schema MLflow
    records would otherwise list the values of a protected categorical input. The numbers follow the columns'
    order; the rows and types are unchanged.
    """
    names: dict[str, str] = {}
    for column in sorted(protected, key=len, reverse=True):  # "a_b" before "a": the longer prefix wins
        prefix = f"cat__{column}_"
        features = [c for c in frame.columns if str(c).startswith(prefix) and c not in names]
        names.update({c: f"{prefix}<category {i + 1}>" for i, c in enumerate(features)})
    return frame.rename(columns=names)


def summarized_dataset(frame: pd.DataFrame, source: str, name: str, digest: str) -> Any:
    """An MLflow dataset input for `frame`: its schema, row and element counts, and `digest`; no rows are logged.

    `mlflow.data.from_pandas` infers the schema with a Python loop over every value (about 90 s for 280k rows
    of 100 columns); the same schema is inferred here from each column's distinct values (`distinct_values`).
    """
    import mlflow
    from mlflow.data.pandas_dataset import PandasDataset

    summary = mlflow.data.from_pandas(distinct_values(frame), source=source, name=name, digest=digest)

    class Summarized(PandasDataset):
        schema = summary.schema  # the class attribute replaces PandasDataset's inferring property

    return Summarized(frame, source=summary.source, name=name, digest=digest)


def find_run(mlflow_client: Any, experiment_id: str, key: str) -> tuple[Any | None, list[Any]]:
    """The completed run with this key, and any interrupted attempts of it."""
    from mlflow.exceptions import MlflowException

    try:
        runs = mlflow_client.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'")
    except MlflowException as err:
        raise StoreError(f"MLflow: cannot search runs of experiment {experiment_id}: {err}") from err
    complete = [r for r in runs if r.data.tags.get(COMPLETE_TAG) == "true" and r.info.status == "FINISHED"]
    return (complete[0] if complete else None), [r for r in runs if r not in complete]


def log_data_evidence(paths: Paths, masked: set[str], federated: bool) -> None:
    """The data behind the run, in the active run.

    Dataset inputs: schema and row count only (no rows), the DVC md5 as digest. Federated, where the rows stay at the
    sites: the sites, rounds and messages, and the counts the sites sent.
    """
    import mlflow

    if federated:
        for path in (paths.federation, paths.federated_evaluation):
            mlflow.log_artifact(str(path), artifact_path="reports")
        return
    for path, context in ((paths.processed_train, "training"), (paths.processed_test, "test")):
        frame = numbered_features(pd.read_parquet(path), masked)
        dataset = summarized_dataset(frame, str(path.relative_to(paths.root)), path.stem, md5_of(path))
        mlflow.log_input(dataset, context=context)


def log_explanations(paths: Paths, federated: bool) -> None:
    """The explain stage's figures (explain.* metrics), report and plots, in the active run; none when federated."""
    import mlflow

    if federated:
        mlflow.set_tag("humane.explanations", "none: a federated model's test rows stay at its sites")
        return
    mlflow.log_metrics(flat_metrics(io.read_json(paths.explain_metrics), names.EXPLAIN_PREFIX))
    for path in (paths.explain_metrics, paths.explanations):
        mlflow.log_artifact(str(path), artifact_path="reports")
    mlflow.log_artifacts(str(paths.explain_plots_dir), artifact_path="plots/explain")


def require_explanations(paths: Paths) -> None:
    """Refuse to record a model without its explanations: it would serve no reasons and hide its proxy figures."""
    outputs = (paths.explain_metrics, paths.explanations, paths.explainer)
    missing = [str(p.relative_to(paths.root)) for p in outputs if not p.exists()]
    if missing:
        raise HumaneError(f"tracking: the explain stage's outputs {missing} are missing; run `dvc repro explain`")


@dataclass(frozen=True)
class RunArtifact:
    """A file the caller makes for the run (the edge: e.g. monitoring's reference), logged at `artifact`.

    Attributes:
        artifact: Its path among the run's artifacts, e.g. "monitoring/reference.parquet".
        write: Writes the file at the path it is given (a temporary one, named as `artifact`'s last part).

    """

    artifact: str
    write: Callable[[Path], object]


@dataclass(frozen=True)
class RecordedInputs:
    """The stage outputs the run's params and metrics are made of, read before the run starts."""

    params: dict[str, str]  # params.yaml flattened, `*` spelt `each`, values cut to MAX_PARAM_CHARS
    metrics: dict[str, Any]  # reports/metrics.json: "model" and "baseline" on the test split
    train_metrics: dict[str, Any]  # reports/train_metrics.json
    history: list[dict[str, Any]]  # reports/train_history.json: one row per epoch
    validation: dict[str, Any]  # reports/validation.json
    fairness: dict[str, Any]  # reports/fairness.json: the gaps by feature
    federated: bool  # a federated workspace (reports/federation.json): no row here


def read_inputs(paths: Paths) -> RecordedInputs:
    """Read what the run records; a missing or unreadable file stops here, before any run is started."""
    # MLflow's param names allow no `*`: the policy's `fairness.*.<gap>` is logged as `fairness.each.<gap>`.
    raw_params = {k.replace("*", "each"): str(v)[:MAX_PARAM_CHARS] for k, v in flatten(read_raw(paths.params)).items()}
    metrics = io.read_json(paths.metrics)
    train_metrics = io.read_json(paths.train_metrics)
    history = io.read_json(paths.train_history)
    validation = io.read_json(paths.validation_report)
    fairness = io.read_json(paths.fairness)
    run_of_sites = federation.read(paths) if federation.is_federated(paths) else None
    return RecordedInputs(raw_params, metrics, train_metrics, history, validation, fairness, run_of_sites is not None)


def summary_metrics(inputs: RecordedInputs, privacy: dict[str, Any]) -> dict[str, float]:
    """The run's metrics: test.*, baseline.*, train.*, fairness.*, privacy/federation figures, validation counts.

    Args:
        inputs: The stage outputs (`read_inputs`).
        privacy: `humane.governance.gate.privacy_and_federation` of the workspace (flat names).

    Returns:
        Flat metric names (humane.core.metric_names) to finite values.

    """
    return {
        **flat_metrics(inputs.metrics["model"], names.TEST_PREFIX),
        **flat_metrics(inputs.metrics["baseline"], names.BASELINE_PREFIX),
        **flat_metrics(inputs.train_metrics, names.TRAIN_PREFIX),
        **flat_metrics(inputs.fairness, names.FAIRNESS_PREFIX),
        **flat_metrics(privacy),
        names.validation_metric("n_checks"): inputs.validation["n_checks"],
        names.validation_metric("n_failed"): inputs.validation["n_failed"],
    }


def epoch_metrics(history: list[dict[str, Any]]) -> list[Any]:
    """The training history as MLflow metrics `epoch.<figure>`, stepped by epoch."""
    from mlflow.entities import Metric

    return [
        Metric(names.epoch_metric(name), float(row[name]), 0, int(row["epoch"]))
        for row in history
        for name in EPOCH_FIGURES
        # NaN AUC (one-class validation split) is not logged; DP-SGD's history holds no training loss
        if name in row and row[name] == row[name]
    ]


def report_files(paths: Paths) -> tuple[Path, ...]:
    """The stage reports the run keeps under `reports/`."""
    return (
        paths.validation_report,
        paths.metrics,
        paths.train_metrics,
        paths.train_history,
        paths.roc_data,
        paths.calibration_data,
        paths.params,
        paths.data_audit,
        paths.audit_report,
        paths.fairness,
        paths.audit_groups_data,
        paths.privacy_report,
        paths.membership_report,
    )


def log_reports(paths: Paths) -> None:
    """The reports, the plots and validation's data docs, in the active run."""
    import mlflow

    for path in report_files(paths):
        mlflow.log_artifact(str(path), artifact_path="reports")
    for path in (paths.roc_png, paths.calibration_png, *sorted(paths.audit_plots_dir.glob("*.png"))):
        mlflow.log_artifact(str(path), artifact_path="plots")
    mlflow.log_artifacts(str(paths.validation_docs), artifact_path="reports/validation_docs")


def log_reference(reference: RunArtifact | None, federated: bool) -> None:
    """Monitoring's reference, in the active run; none for a federated model (its test rows stay at its sites)."""
    import mlflow

    if federated:
        mlflow.set_tag("humane.monitoring", "no reference: a federated model's test rows stay at its sites")
        return
    if reference is None:
        return
    with tempfile.TemporaryDirectory(prefix="humane-reference-") as tmp:
        path = Path(tmp) / Path(reference.artifact).name
        reference.write(path)
        mlflow.log_artifact(str(path), artifact_path=str(Path(reference.artifact).parent))


def run_record(
    paths: Paths, run_id: str, experiment_id: str, experiment: str, model_uri: str, key: str
) -> dict[str, str]:
    """Write the run's ids (reports/mlflow_run.json) and return them."""
    record = {
        "run_id": run_id,
        "experiment_id": experiment_id,
        "experiment": experiment,
        "model_uri": model_uri,
        "run_key": key,
    }
    io.write_json(paths.mlflow_run, record)
    return record


def record_run(
    paths: Paths,
    ctx: RunContext,
    target: tuple[Any, str, str],
    threshold: float,
    protected: Iterable[str],
    reference: RunArtifact | None,
) -> tuple[str, str]:
    """Log one new, complete run: params, metrics, reports, data evidence, explanations, model, reference.

    Args:
        paths: The workspace.
        ctx: The pipeline run (tracking URI, entry point, overrides).
        target: The MLflow client, the experiment's id and the run key.
        threshold: The served model's decision threshold.
        protected: Columns whose values never leave the load stage (the policy's masked ones are added).
        reference: Monitoring's reference, written by the caller, or None.

    Returns:
        The run's id and its served model's URI. The run is marked complete last.

    """
    import mlflow

    mlflow_client, experiment_id, key = target
    inputs = read_inputs(paths)
    if not inputs.federated:
        require_explanations(paths)
    masked = {*FittedPolicy.from_dict(io.read_json(paths.privacy_policy)).masked_columns, *map(str, protected)}
    with (
        using_tracking_uri(ctx.tracking_uri),
        mlflow.start_run(experiment_id=experiment_id, run_name=run_name(ctx), tags={RUN_KEY_TAG: key}) as run,
        warnings.catch_warnings(),
    ):
        # MLflow's hints about integer columns and ambiguous local sources do not apply to these inputs.
        warnings.simplefilter("ignore", UserWarning)
        mlflow.set_tags(lineage_tags(paths, ctx))
        mlflow.log_params(inputs.params)
        mlflow.log_metrics(summary_metrics(inputs, privacy_and_federation(paths, inputs.train_metrics)))
        mlflow_client.log_batch(run.info.run_id, metrics=epoch_metrics(inputs.history))
        log_reports(paths)
        log_data_evidence(paths, masked, federated=inputs.federated)
        log_explanations(paths, federated=inputs.federated)
        info = log_serving_model(paths, threshold, masked)
        log_reference(reference, federated=inputs.federated)
        mlflow.set_tags({"humane.model_uri": info.model_uri, COMPLETE_TAG: "true"})
    return run.info.run_id, info.model_uri


def log_run(
    paths: Paths,
    experiment: str,
    threshold: float,
    protected: Iterable[str],
    ctx: RunContext,
    reference: RunArtifact | None = None,
) -> dict[str, str]:
    """Log the workspace's pipeline state as one MLflow run (or find the one already logged); its ids.

    `protected` are the columns whose raw values never leave the load stage (`protected_columns(...).all` of
    humane.privacy.policy; the fitted policy's masked columns are added): the served model's domain and input
    example hold no value of them, and the dataset inputs name their one-hot features by number.

    With `reference`, the run also holds the model's monitoring reference, which the caller writes (the track
    stage: humane.monitoring.reference, the test rows as the model read them, with their sensitive columns,
    label and scores). The track stage always passes it; a champion without one cannot be monitored (the
    monitoring says so and stops).
    """
    mlflow_client = client(ctx.tracking_uri)
    experiment_id = ensure_experiment(
        mlflow_client, experiment, Paths(ctx.project).mlflow_artifacts if ctx.default_store else None
    )
    key = run_key(paths, ctx)
    done, interrupted = find_run(mlflow_client, experiment_id, key)
    if done is not None:
        model_uri = done.data.tags["humane.model_uri"]
        return run_record(paths, done.info.run_id, experiment_id, experiment, model_uri, key)
    for attempt in interrupted:  # an earlier attempt of this pipeline run died half-way: it is not a record
        mlflow_client.delete_run(attempt.info.run_id)
    target = (mlflow_client, experiment_id, key)
    run_id, model_uri = record_run(paths, ctx, target, threshold, protected, reference)
    return run_record(paths, run_id, experiment_id, experiment, model_uri, key)
