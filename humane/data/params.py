"""The `data:` and `validate:` sections of params.yaml (the dataset, how it is read, its checks) and data paths."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from humane.core.errors import ConfigError
from humane.core.params import Label, Section

# A dataset's name: the registered model and the MLflow experiment are called humane-<name>.
DATASET_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"


class ReadParams(Section):
    """How to parse a CSV file (Parquet needs none of this)."""

    delimiter: str | None = Field(None, min_length=1, max_length=1, description="Column separator; null: a comma.")
    decimal: str = Field(".", min_length=1, max_length=1, description="Decimal mark of numbers in the CSV file.")
    thousands: str | None = Field(
        None, min_length=1, max_length=1, description="Thousands separator in the CSV file; null: none."
    )
    encoding: str = Field("utf-8", description="Text encoding of the CSV file.")


class LeakageParams(Section):
    """How much leakage validation tolerates (part of the dataset profile): beyond a limit, validation fails.

    The defaults are the documented limits. A profile that sets a higher one raises it on purpose (a dataset
    whose records legitimately repeat); the run then goes on and the model card states the raised limit and
    the measured figure.
    """

    max_shared_fraction: float = Field(
        0.01,
        ge=0,
        le=1,
        description=(
            "Share of the test rows equal to a training-pool row on every loaded column (the same record on "
            "both sides inflates the test figures; the profiles' comments give the built-in datasets' "
            "measured shares)."
        ),
    )
    max_feature_auc: float = Field(
        0.95,
        gt=0.5,
        le=1,
        description=(
            "A feature whose values alone rank the label with a ROC AUC above this (either direction) is a "
            "suspected leak of the outcome."
        ),
    )


class DataParams(Section):
    """What the data is: where it lives and which columns play which role (part of the dataset profile)."""

    name: str = Field(
        pattern=DATASET_NAME,
        description="The dataset's name: the registered model and the MLflow experiment are named humane-<name>.",
    )
    source: str = Field(
        description=(
            "A built-in dataset (adult, german) or a path to a CSV/Parquet file under data/raw/ (DVC tracks it)."
        )
    )
    target: str = Field(description="The label column.")
    positive_label: Label = Field(
        description=(
            'The favourable label value, typed as YAML reads it (1, true and "yes" differ); one of the observed values.'
        )
    )
    sensitive_features: list[str] = Field(
        min_length=1,
        description=(
            "Protected attributes audited for group gaps (kept beside the features, model inputs only with "
            "preprocess.include_sensitive)."
        ),
    )
    intended_use: str = Field(
        description="The model card's intended-use, out-of-scope and limitations text, written by the model's owners."
    )
    test_source: str | None = Field(
        None,
        description=(
            "Test rows: built-ins ship their own split; for a file, a second file, or null for a seeded "
            "stratified share (test_fraction)."
        ),
    )
    test_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description=(
            "Share of the rows held out for testing when test_source is null and the source has no split of its own."
        ),
    )
    categorical: list[str] | None = Field(None, description="Categorical columns; null infers the roles from dtypes.")
    numeric: list[str] | None = Field(None, description="Numeric columns; null infers the roles from dtypes.")
    drop: list[str] = Field(
        [],
        description=(
            "Columns dropped at load (e.g. Adult's fnlwgt, a census sampling weight, not a property of the person)."
        ),
    )
    labels: list[Label] | None = Field(
        None, description="The two label values; null takes them from the built-in schema or the training rows."
    )
    ranges: dict[str, list[float]] = Field(
        {},
        description=(
            "Extra or overriding numeric ranges {column: [min, max]} checked by validation; built-ins bring "
            "their documented ones."
        ),
    )
    read: ReadParams = ReadParams()
    missing_labels: Literal["error", "drop"] = Field(
        "error",
        description="Rows whose label is missing: an error naming the column and the count, or dropped and counted.",
    )
    max_categories: int = Field(
        50,
        ge=2,
        description=(
            "Role inference never one-hot encodes a column with more distinct values than this (it is "
            "skipped, and said)."
        ),
    )
    dates: dict[str, Literal["drop", "year", "days"]] = Field(
        {}, description="Date columns: parsed, then dropped or turned into a number (year, or days since 1970-01-01)."
    )
    root: str | None = Field(
        None,
        description="An absolute folder outside the project that data files may be read from, declared on purpose.",
    )
    leakage: LeakageParams = LeakageParams()
    encryption: Literal["none", "age"] = Field(
        "none",
        description=(
            "age: source and test_source name age-encrypted files (x.csv.age), decrypted in memory at load "
            "with the identity from the environment variable encryption_key_env, else the Prefect Secret "
            "block encryption_key_block."
        ),
    )
    encryption_key_env: str = Field(
        "HUMANE_AGE_IDENTITY",
        description="Environment variable holding the age identity that decrypts encrypted data files.",
    )
    encryption_key_block: str | None = Field(
        None,
        description=(
            "Prefect Secret block holding the age identity, used when encryption_key_env is unset; null: none."
        ),
    )
    immutable: list[str] = Field(
        [],
        description=(
            "Inputs a counterfactual never changes (a person cannot or should not change them: age, origin, "
            "family); the sensitive features are immutable whatever this says."
        ),
    )

    @property
    def model_name(self) -> str:
        """The registered model's name: one per dataset, so no dataset challenges another's champion."""
        return f"humane-{self.name}"

    @property
    def experiment(self) -> str:
        """The MLflow experiment's name."""
        return f"humane-{self.name}"


class ValidateParams(Section):
    """Tolerances of the data-validation suite."""

    min_rows: int = Field(description="Fewer rows than this and validation fails.")
    min_group_rows: int = Field(
        description=(
            "Fewer rows than this in a sensitive group and it cannot be judged (a warning unless strict); a "
            "feature without two such groups fails."
        )
    )
    max_null_fraction: float = Field(
        description="Share of nulls tolerated per column (null_tolerance overrides it per column)."
    )
    max_unseen_fraction: float = Field(
        description=(
            "Share of categorical values outside the known category set tolerated (e.g. new countries in test)."
        )
    )
    null_tolerance: dict[str, float] = Field(
        {}, description="Per-column share of nulls tolerated {column: share}, overriding max_null_fraction."
    )
    strict: bool = Field(
        description=(
            "Strict: a sensitive group below min_group_rows fails validation; otherwise it is a warning "
            "recorded in the report. A sensitive feature with fewer than two groups of min_group_rows always "
            "fails (it cannot be audited), and so does leakage beyond data.leakage's limits."
        )
    )


# Params that name files the pipeline reads: data files inside data/raw/ (or data.root), others in the project.
PATH_KEYS = ("data.source", "data.test_source", "data.intended_use")


DATA_PATH_KEYS = ("data.source", "data.test_source")


def confine(value: str, key: str, root: Path, data_root: str | None = None) -> Path:
    """The file a path param names: a data file inside data/raw/ (or the declared data root), else in the project.

    `..` and symlinks are resolved first, so neither can lead outside. Built-in dataset names are not paths.
    """
    project = root.resolve()
    target = (project / value).resolve()
    # Data files live under data/raw/, which the load stage depends on: a file elsewhere would go stale unseen.
    allowed = [project / "data" / "raw"] if key in DATA_PATH_KEYS else [project]
    if data_root is not None and key in DATA_PATH_KEYS:
        declared = Path(data_root)
        if not declared.is_absolute():
            raise ConfigError(f"data.root: must be an absolute folder, got {data_root!r}")
        allowed.append(declared.resolve())
    if not any(target == place or target.is_relative_to(place) for place in allowed):
        inside = "data/raw/ of the project" if key in DATA_PATH_KEYS else "the project folder"
        where = " or data.root" if data_root is not None and key in DATA_PATH_KEYS else ""
        raise ConfigError(
            f"{key}: {value!r} resolves to {target}, outside {inside}{where}; keep data files under data/raw/ "
            "(DVC tracks that folder) or declare an absolute data.root for data read from elsewhere"
        )
    return target


def check_intended_use(value: str, root: Path) -> Path:
    """The model card's intended-use text: an existing Markdown file inside the project."""
    path = confine(value, "data.intended_use", root)
    if path.suffix.lower() != ".md" or not path.is_file():
        raise ConfigError(
            f"data.intended_use: {value!r} must be an existing Markdown (.md) file of the project "
            "(the model card's intended-use text)"
        )
    return path
