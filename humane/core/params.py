"""Typed, frozen configuration parsed once from params.yaml (pydantic v2); unknown keys are an error.

Also the one place that says which keys a flow run may override (`OVERRIDABLE`) and which params name
files (`PATH_KEYS`: data files confined to data/raw/ or a declared data.root, the rest to the project).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from humane.core.errors import ConfigError


class _Section(BaseModel):
    # strict: a YAML string is not a number and a bool is not an int (an int is still a valid float).
    # A number must be finite: `.inf` or `.nan` in params.yaml or an override is an error, not a setting.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class DataParams(_Section):
    """What the data is: where it lives and which columns play which role."""

    source: str
    target: str
    positive_label: str
    sensitive_features: list[str]
    test_source: str | None = None
    test_fraction: float = Field(0.2, gt=0, lt=1)
    categorical: list[str] | None = None
    numeric: list[str] | None = None
    drop: list[str] = []
    labels: list[str] | None = None
    ranges: dict[str, list[float]] = {}
    # An absolute folder outside the project that data files may be read from, declared on purpose.
    root: str | None = None


class PrivacyParams(_Section):
    """Column privacy policy (applied when data is loaded, before anything is written) and risk settings."""

    drop: list[str]
    pseudonymize: list[str]
    bins: dict[str, list[float]]
    top_code: dict[str, float]
    group_rare: dict[str, int]
    key_env: str
    key_block: str | None
    quasi_identifiers: list[str]
    k: int = Field(ge=1)


class ValidateParams(_Section):
    """Tolerances of the data-validation suite."""

    min_rows: int
    min_group_rows: int
    max_null_fraction: float
    max_unseen_fraction: float
    null_tolerance: dict[str, float] = {}


class PreprocessParams(_Section):
    """Split and feature-transformation settings."""

    seed: int
    val_fraction: float = Field(gt=0, lt=1)
    include_sensitive: bool
    log_transform: list[str] = []


class DPParams(_Section):
    """Differentially private training (Opacus DP-SGD)."""

    enabled: bool
    target_epsilon: float = Field(gt=0)
    delta: float = Field(gt=0, lt=1)
    max_grad_norm: float = Field(gt=0)
    accountant: Literal["prv", "rdp", "gdp"]
    max_physical_batch_size: int = Field(ge=1)


class TrainParams(_Section):
    """Model shape and optimisation settings."""

    seed: int
    hidden_sizes: list[PositiveInt] = Field(min_length=1)
    dropout: float = Field(ge=0, lt=1)
    activation: Literal["relu", "gelu", "tanh", "silu"]
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    batch_size: int = Field(ge=1)
    max_epochs: int = Field(ge=1)
    patience: int = Field(ge=1)
    dp: DPParams
    progress: bool = True


class EvaluateParams(_Section):
    """Evaluation settings."""

    threshold: float = Field(gt=0, lt=1)
    calibration_bins: int = Field(ge=2, le=1000)
    mia_samples: int = Field(ge=1)
    seed: int


class AuditParams(_Section):
    """Bias-audit settings."""

    seed: int
    bootstrap: int = Field(ge=1)
    min_group_size: int = Field(ge=1)


class TrackParams(_Section):
    """MLflow tracking settings."""

    experiment: str


class GateParams(_Section):
    """The promotion policy. Metric names: test.<metric>, fairness.<feature>.<gap>, privacy.<metric>."""

    require_validation: bool
    min: dict[str, float]
    max: dict[str, float]
    max_drop: dict[str, float]
    max_increase: dict[str, float]


class RegisterParams(_Section):
    """Model Registry settings."""

    model_name: str
    intended_use: str


class Params(_Section):
    """The whole params.yaml."""

    data: DataParams
    privacy: PrivacyParams
    validate_: ValidateParams = Field(alias="validate")
    preprocess: PreprocessParams
    train: TrainParams
    evaluate: EvaluateParams
    audit: AuditParams
    track: TrackParams
    gate: GateParams
    register_: RegisterParams = Field(alias="register")

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=True)

    @property
    def validate(self) -> ValidateParams:  # type: ignore[override]
        """The `validate:` section (a name BaseModel reserves, hence the alias)."""
        return self.validate_

    @property
    def register(self) -> RegisterParams:
        """The `register:` section (a name pydantic's base class uses, hence the alias)."""
        return self.register_


# The keys a flow run (`overrides`, `python -m flows.training key=value`) may change: experiment settings of
# preprocessing, training and evaluation. Everything else — the data, the privacy policy (train.dp included:
# it sets the privacy guarantee), validation, the audit, tracking, the promotion policy and the registry — is
# policy: change it in params.yaml and commit it.
OVERRIDABLE = (
    "preprocess.seed",
    "preprocess.val_fraction",
    "preprocess.log_transform",
    "train.seed",
    "train.hidden_sizes",
    "train.dropout",
    "train.activation",
    "train.lr",
    "train.weight_decay",
    "train.batch_size",
    "train.max_epochs",
    "train.patience",
    "train.progress",
    "evaluate.threshold",
    "evaluate.calibration_bins",
)

# Params that name files the pipeline reads: data files inside data/raw/ (or data.root), others in the project.
PATH_KEYS = ("data.source", "data.test_source", "register.intended_use")
DATA_PATH_KEYS = ("data.source", "data.test_source")


def _sections() -> dict[str, type[BaseModel]]:
    out: dict[str, type[BaseModel]] = {}

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = f"{prefix}{field.alias or name}"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                out[key] = annotation
                walk(annotation, f"{key}.")

    out[""] = Params
    walk(Params, "")
    return out


def _allowed(section: str) -> list[str]:
    model = _sections().get(section)
    return sorted(f.alias or n for n, f in model.model_fields.items()) if model else []


def describe(err: ValidationError) -> str:
    """One line per bad key, named by its dotted path, as params.yaml spells it."""
    lines: dict[str, str] = {}
    for item in err.errors():
        loc = [str(p) for p in item["loc"]]
        # Union members (str | None) add their type name to the location; the key is what the user wrote.
        loc = [p for p in loc if p not in ("str", "float", "int", "bool", "list[str]", "list[float]", "none")]
        key = ".".join(loc)
        if item["type"] == "extra_forbidden":
            parent = ".".join(loc[:-1])
            message = f"{key}: unknown key; allowed in {parent or 'params.yaml'}: {_allowed(parent)}"
        elif item["type"] == "missing":
            message = f"{key}: required key is missing"
        else:
            message = f"{key}: {item['msg'].lower()}, got {item['input']!r}"
        lines.setdefault(key, message)
    return "; ".join(lines.values())


def parse_params(raw: dict[str, Any]) -> Params:
    """Turn a params mapping into typed config, naming every bad key."""
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(describe(err)) from None


def get_dotted(raw: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key, or KeyError."""
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def check_overridable(overrides: dict[str, Any]) -> None:
    """Refuse, before anything runs, any override outside the allow-list, naming the key."""
    refused = sorted(k for k in overrides if k not in OVERRIDABLE)
    if refused:
        raise ConfigError(
            f"override {', '.join(map(repr, refused))} refused: a flow run may change only {list(OVERRIDABLE)}; "
            "the data, privacy, validation, audit, tracking, gate and register sections are policy "
            "(change them in params.yaml and commit)"
        )


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of `raw` with allow-listed dotted keys (e.g. ``train.lr``) replaced; each key must exist."""
    check_overridable(overrides)
    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        try:
            node = get_dotted(out, ".".join(parents)) if parents else out
            get_dotted(out, dotted)
        except KeyError:
            raise ConfigError(f"override {dotted!r}: no such key in params.yaml") from None
        node[leaf] = value
    parse_params(out)  # fail before anything runs if an override has the wrong type
    return out


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


def check_paths(params: Params, root: Path, builtins: frozenset[str] = frozenset()) -> None:
    """Every path param resolves where it may: data files in data/raw/ (or data.root), the rest in the project."""
    values = {"data.source": params.data.source, "data.test_source": params.data.test_source,
              "register.intended_use": params.register.intended_use}  # fmt: skip
    for key in PATH_KEYS:
        value = values[key]
        if value is None or (key == "data.source" and value in builtins):
            continue
        confine(value, key, root, params.data.root)
    check_intended_use(params.register.intended_use, root)


def check_intended_use(value: str, root: Path) -> Path:
    """The model card's intended-use text: an existing Markdown file inside the project."""
    path = confine(value, "register.intended_use", root)
    if path.suffix.lower() != ".md" or not path.is_file():
        raise ConfigError(f"register.intended_use: {value!r} must be an existing Markdown (.md) file of the project "
                          "(the model card's intended-use text)")  # fmt: skip
    return path


def read_raw(path: Path) -> dict[str, Any]:
    """Read params.yaml as a plain mapping."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        # YAML 1.2, as DVC reads and writes params.yaml (PyYAML's YAML 1.1 reads 1e-05 as text).
        raw = YAML(typ="safe", pure=True).load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the project root)") from None
    except YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def load_params(path: Path = Path("params.yaml")) -> Params:
    """Read and check params.yaml. Its paths are confined where they are read (and by the flow, up front)."""
    try:
        return parse_params(read_raw(path))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys, as MLflow and `dvc exp run -S` name them."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
