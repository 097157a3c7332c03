"""Typed, frozen configuration parsed once from params.yaml; unknown keys are an error."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tasks.errors import ConfigError
from tasks.paths import PARAMS


@dataclass(frozen=True)
class DataParams:
    """What the data is: where it lives and which columns play which role."""

    source: str
    target: str
    positive_label: str
    sensitive_features: list[str]
    test_source: str | None = None
    test_fraction: float = 0.2
    categorical: list[str] | None = None
    numeric: list[str] | None = None
    drop: list[str] = field(default_factory=list)
    labels: list[str] | None = None
    ranges: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class PrivacyParams:
    """Column privacy policy (applied when data is loaded, before anything is written) and risk settings."""

    drop: list[str]
    pseudonymize: list[str]
    bins: dict[str, list[float]]
    top_code: dict[str, float]
    group_rare: dict[str, int]
    key_env: str
    key_block: str | None
    quasi_identifiers: list[str]
    k: int


@dataclass(frozen=True)
class ValidateParams:
    """Tolerances of the data-validation suite."""

    min_rows: int
    min_group_rows: int
    max_null_fraction: float
    max_unseen_fraction: float
    null_tolerance: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PreprocessParams:
    """Split and feature-transformation settings."""

    seed: int
    val_fraction: float
    include_sensitive: bool
    log_transform: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DPParams:
    """Differentially private training (Opacus DP-SGD)."""

    enabled: bool
    target_epsilon: float
    delta: float
    max_grad_norm: float
    accountant: str
    max_physical_batch_size: int


@dataclass(frozen=True)
class TrainParams:
    """Model shape and optimisation settings."""

    seed: int
    hidden_sizes: list[int]
    dropout: float
    activation: str
    lr: float
    weight_decay: float
    batch_size: int
    max_epochs: int
    patience: int
    dp: DPParams
    progress: bool = True


@dataclass(frozen=True)
class EvaluateParams:
    """Evaluation settings."""

    threshold: float
    calibration_bins: int
    mia_samples: int
    seed: int


@dataclass(frozen=True)
class AuditParams:
    """Bias-audit settings."""

    seed: int
    bootstrap: int
    min_group_size: int


@dataclass(frozen=True)
class TrackParams:
    """MLflow tracking settings."""

    experiment: str


@dataclass(frozen=True)
class GateParams:
    """The promotion policy. Metric names: test.<metric>, fairness.<feature>.<gap>, validation.passed."""

    require_validation: bool
    min: dict[str, float]
    max: dict[str, float]
    max_drop: dict[str, float]
    max_increase: dict[str, float]


@dataclass(frozen=True)
class RegisterParams:
    """Model Registry settings."""

    model_name: str
    intended_use: str


@dataclass(frozen=True)
class Params:
    """The whole params.yaml."""

    data: DataParams
    privacy: PrivacyParams
    validate: ValidateParams
    preprocess: PreprocessParams
    train: TrainParams
    evaluate: EvaluateParams
    audit: AuditParams
    track: TrackParams
    gate: GateParams
    register: RegisterParams


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            try:
                return _check_type(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[-1])
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint in (int, str, bool):
        ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
        if not ok:
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_t, val_t = typing.get_args(hint)
        return {_check_type(k, key_t, where): _check_type(v, val_t, f"{where}.{k}") for k, v in value.items()}
    raise ConfigError(f"{where}: unsupported type {hint}")  # pragma: no cover - a bug in this module


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}" if where else f.name
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: required key is missing")
            continue
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _build(hint, raw[f.name], key)
        else:
            kwargs[f.name] = _check_type(raw[f.name], hint, key)
    return cls(**kwargs)


def parse_params(raw: dict[str, Any]) -> Params:
    """Turn a params mapping into typed config, naming the first bad key."""
    return _build(Params, raw, "")


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `raw` with dotted keys (e.g. ``train.lr``) replaced; the key must exist."""
    out = yaml.safe_load(yaml.safe_dump(raw))
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"override {dotted!r}: no such section {part!r} in params.yaml")
            node = node[part]
        if not isinstance(node, dict) or leaf not in node:
            raise ConfigError(f"override {dotted!r}: no such key in params.yaml")
        node[leaf] = value
    parse_params(out)  # fail before anything runs if the override has the wrong type
    return out


def read_raw(path: Path = PARAMS) -> dict[str, Any]:
    """Read params.yaml as a plain mapping."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the project root)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def load_params(path: Path = PARAMS) -> Params:
    """Read and check params.yaml."""
    try:
        return parse_params(read_raw(path))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested params to dotted keys, as MLflow and `dvc exp run -S` name them."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
