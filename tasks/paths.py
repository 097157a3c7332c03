"""Every file the pipeline reads or writes, named once (dvc.yaml lists the same paths)."""

from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")
RAW_DIR = Path("data/raw")

INTERIM_DIR = Path("data/interim")
INTERIM_TRAIN = INTERIM_DIR / "train.parquet"
INTERIM_TEST = INTERIM_DIR / "test.parquet"
INTERIM_META = INTERIM_DIR / "meta.json"
PRIVACY_POLICY = INTERIM_DIR / "privacy_policy.json"

PROCESSED_DIR = Path("data/processed")
PROCESSED_TRAIN = PROCESSED_DIR / "train.parquet"
PROCESSED_VAL = PROCESSED_DIR / "val.parquet"
PROCESSED_TEST = PROCESSED_DIR / "test.parquet"

MODELS_DIR = Path("models")
PREPROCESSOR = MODELS_DIR / "preprocessor.joblib"
MODEL = MODELS_DIR / "model.pt"
CHECKPOINTS_DIR = MODELS_DIR / "checkpoints"

REPORTS_DIR = Path("reports")
VALIDATION_REPORT = REPORTS_DIR / "validation.json"
VALIDATION_DOCS = REPORTS_DIR / "validation_docs"
TRAIN_HISTORY = REPORTS_DIR / "train_history.json"
TRAIN_METRICS = REPORTS_DIR / "train_metrics.json"
METRICS = REPORTS_DIR / "metrics.json"
PLOTS_DIR = REPORTS_DIR / "plots"
ROC_DATA = PLOTS_DIR / "roc.json"
CALIBRATION_DATA = PLOTS_DIR / "calibration.json"
ROC_PNG = PLOTS_DIR / "roc.png"
CALIBRATION_PNG = PLOTS_DIR / "calibration.png"
MLFLOW_RUN = REPORTS_DIR / "mlflow_run.json"
DATA_AUDIT = REPORTS_DIR / "data_audit.json"
PRIVACY_REPORT = REPORTS_DIR / "privacy.json"
MEMBERSHIP_REPORT = REPORTS_DIR / "membership.json"
AUDIT_REPORT = REPORTS_DIR / "audit.json"
FAIRNESS = REPORTS_DIR / "fairness.json"
AUDIT_GROUPS_DATA = PLOTS_DIR / "audit_groups.json"
AUDIT_PLOTS_DIR = PLOTS_DIR / "audit"
DECISION = REPORTS_DIR / "decision.json"
MODEL_CARD_MD = REPORTS_DIR / "model_card.md"
MODEL_CARD_HTML = REPORTS_DIR / "model_card.html"
REGISTRATION = REPORTS_DIR / "registration.json"

# Default MLflow store when MLFLOW_TRACKING_URI is unset: a SQLite file plus a local artifact folder.
MLFLOW_DB = Path("mlflow.db")
MLFLOW_ARTIFACTS = Path("mlartifacts")

# Columns added beside the features in processed frames.
LABEL_COLUMN = "__label__"
SENSITIVE_PREFIX = "__sensitive__"
