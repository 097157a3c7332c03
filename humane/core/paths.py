"""Every file the pipeline reads or writes, named once (dvc.yaml lists the same paths), under one workspace root.

`Paths.model` is the relative name (as dvc.yaml writes it); `Paths(root).model` is that file in the
workspace at `root`. Stages take a `Paths` so that the same code runs in the project folder (`dvc repro`)
and in an isolated workspace (a flow run with overrides).
"""

from __future__ import annotations

from pathlib import Path
from typing import overload


class _At:
    """A path relative to the workspace root: relative on the class, rooted on an instance."""

    def __init__(self, relative: str) -> None:
        self.relative = Path(relative)

    @overload
    def __get__(self, obj: None, owner: type) -> Path: ...
    @overload
    def __get__(self, obj: Paths, owner: type) -> Path: ...
    def __get__(self, obj: Paths | None, owner: type) -> Path:
        return self.relative if obj is None else obj.root / self.relative


class Paths:
    """The files of one workspace."""

    params = _At("params.yaml")
    dvc_yaml = _At("dvc.yaml")
    dvc_lock = _At("dvc.lock")
    raw_dir = _At("data/raw")

    interim_train = _At("data/interim/train.parquet")
    interim_test = _At("data/interim/test.parquet")
    interim_meta = _At("data/interim/meta.json")
    privacy_policy = _At("data/interim/privacy_policy.json")

    processed_train = _At("data/processed/train.parquet")
    processed_val = _At("data/processed/val.parquet")
    processed_test = _At("data/processed/test.parquet")

    preprocessor = _At("models/preprocessor.skops")
    model = _At("models/model.pt")
    # The network trained with mitigation off, beside an in-training remedy (else a note: the model is its own).
    unmitigated_model = _At("models/unmitigated.pt")
    checkpoints_dir = _At("models/checkpoints")
    thresholds = _At("models/thresholds.json")

    mitigation_data = _At("reports/mitigation_data.json")
    mitigation_thresholds = _At("reports/mitigation_thresholds.json")
    validation_report = _At("reports/validation.json")
    validation_docs = _At("reports/validation_docs")
    train_history = _At("reports/train_history.json")
    train_metrics = _At("reports/train_metrics.json")
    metrics = _At("reports/metrics.json")
    roc_data = _At("reports/plots/roc.json")
    calibration_data = _At("reports/plots/calibration.json")
    roc_png = _At("reports/plots/roc.png")
    calibration_png = _At("reports/plots/calibration.png")
    mlflow_run = _At("reports/mlflow_run.json")
    data_audit = _At("reports/data_audit.json")
    privacy_report = _At("reports/privacy.json")
    membership_report = _At("reports/membership.json")
    audit_report = _At("reports/audit.json")
    fairness = _At("reports/fairness.json")
    audit_groups_data = _At("reports/plots/audit_groups.json")
    audit_plots_dir = _At("reports/plots/audit")
    # The explain stage: explain.* policy metrics, the full explanation report, its plots, and what serving and
    # monitoring need to explain a row (reference row, column map, counterfactual space).
    explain_metrics = _At("reports/explain.json")
    explanations = _At("reports/explanations.json")
    explain_plots_dir = _At("reports/plots/explain")
    explainer = _At("models/explainer.json")
    policy_checks = _At("reports/policy_checks.json")
    decision = _At("reports/decision.json")
    model_card_md = _At("reports/model_card.md")
    model_card_html = _At("reports/model_card.html")
    registration = _At("reports/registration.json")
    # A federated coordinator's workspace (federation/): the run's sites, rounds and messages, and the sites'
    # evaluation counts (tasks/federate.py). Its presence marks the workspace's model as federated.
    federation = _At("reports/federation.json")
    federated_evaluation = _At("reports/federated_evaluation.json")
    # One folder per monitored batch (flows/monitoring.py): report.json, report.html and its plots.
    monitoring_dir = _At("reports/monitoring")

    # Default MLflow store when MLFLOW_TRACKING_URI is unset: a SQLite file plus a local artifact folder,
    # always in the project folder (an isolated workspace records into its project's store).
    mlflow_db = _At("mlflow.db")
    # The sign-off audit trail (humane.governance.audit_trail): append-only, hash-chained; commit it with git.
    audit_trail = _At("audit/signoff.jsonl")
    mlflow_artifacts = _At("mlartifacts")

    def __init__(self, root: Path = Path(".")) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Paths({str(self.root)!r})"


# Columns added beside the features in processed frames.
LABEL_COLUMN = "__label__"
SENSITIVE_PREFIX = "__sensitive__"
WEIGHT_COLUMN = "__weight__"  # a training row's sample weight (reweighing), in the processed train frame only
