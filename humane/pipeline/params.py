"""The whole params.yaml: every concern's section composed into one typed, frozen `Params`, and its one loader.

Also the one place that says which keys a flow run may override (`OVERRIDABLE`), the dataset profile's sections
(`PROFILE_SECTIONS`) and the rules across sections. Each section is defined beside the concern it configures
(`humane/<concern>/params.py`); the generic reading (YAML, dotted keys, error wording) is `humane.core.params`,
and the confinement of the data paths `humane.data.params`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError, model_validator

from humane.core.errors import ConfigError
from humane.core.params import Section, get_dotted, read_raw, validation_error_text
from humane.data.params import PATH_KEYS, DataParams, ValidateParams, check_intended_use, confine
from humane.fairness.params import AuditParams, MitigationParams, PolicyParams, SweepParams
from humane.governance.params import GateParams
from humane.modeling.params import EvaluateParams, ExplainParams, FederatedParams, PreprocessParams, TrainParams
from humane.monitoring.params import MonitorParams
from humane.privacy.params import PrivacyParams


class Params(Section):
    """The whole params.yaml: a dataset profile (data, privacy, policy), then one section per stage."""

    data: DataParams
    privacy: PrivacyParams
    policy: PolicyParams = PolicyParams()
    mitigation: MitigationParams = MitigationParams()
    validate_: ValidateParams = Field(alias="validate")
    preprocess: PreprocessParams
    train: TrainParams
    evaluate: EvaluateParams
    audit: AuditParams
    explain: ExplainParams = ExplainParams()
    gate: GateParams
    sweep: SweepParams
    monitor: MonitorParams = MonitorParams()
    federated: FederatedParams | None = Field(
        None, description="Only in a federated coordinator's workspace (federation/params.yaml)."
    )

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=True)

    @model_validator(mode="after")
    def _mitigation_fits_the_data(self) -> Params:
        target, active = self.mitigation.target, self.mitigation.active
        unknown = [f for f in target if f not in self.data.sensitive_features]
        if unknown:
            raise ValueError(
                f"mitigation.target names {unknown}, which are not in data.sensitive_features "
                f"{self.data.sensitive_features}"
            )
        if active and not target:
            raise ValueError(f"mitigation {active} is on but mitigation.target names no sensitive feature")
        for n, candidate in enumerate(self.sweep.candidates):
            refused = sorted(k for k in candidate if k not in OVERRIDABLE)
            if refused:
                raise ValueError(
                    f"sweep.candidates[{n}] sets {refused}: a candidate may change only allow-listed "
                    "keys (humane.pipeline.params.OVERRIDABLE)"
                )
        if self.train.dp.enabled and [m for m in active if not m.startswith("thresholds")]:
            raise ValueError(
                "mitigation by weights, resampling, a loss term or reductions is not combined with "
                "DP-SGD (train.dp.enabled): its privacy accounting assumes the plain loss on uniform "
                "samples"
            )
        if self.mitigation.reductions != "none":
            refused = [
                what
                for what, on in [
                    (
                        "mitigation.reweigh or mitigation.resample (the reductions set their own per-row weights)",
                        self.mitigation.reweigh or self.mitigation.resample,
                    ),
                    ("a fairness loss term (mitigation.loss)", any(m.startswith("loss:") for m in active)),
                    (f"train.model {self.train.model} (the reductions wrap the MLP)", self.train.model != "mlp"),
                    (
                        "train.distributed, train.grad_accumulation, bf16 or train.device cuda "
                        "(each inner fit is one plain fp32 process on the CPU)",
                        self.train.distributed.world > 1
                        or self.train.grad_accumulation > 1
                        or self.train.precision != "fp32"
                        or self.train.device == "cuda",
                    ),
                ]
                if on
            ]
            if refused:
                raise ValueError(
                    f"mitigation.reductions {self.mitigation.reductions} is not combined with {'; '.join(refused)}"
                )
        return self

    @model_validator(mode="after")
    def _training_combinations(self) -> Params:
        conflicts = self.train.conflicts()
        if conflicts:
            raise ValueError("; ".join(conflicts))
        return self

    @property
    def validate(self) -> ValidateParams:  # type: ignore[override]
        """The `validate:` section (a name BaseModel reserves, hence the alias)."""
        return self.validate_


# The sections of a dataset profile (profiles/<name>.yaml): everything that is about one dataset.
PROFILE_SECTIONS = ("data", "privacy", "policy", "mitigation")


# The keys a flow run (`overrides`, `python -m flows.training key=value`) may change: experiment settings of
# preprocessing, training and evaluation. Everything else — the data, the privacy policy (train.dp included:
# it sets the privacy guarantee), validation, the audit, tracking, the promotion policy and the registry — is
# policy: change it in params.yaml and commit it.
OVERRIDABLE = (
    "preprocess.seed",
    "preprocess.val_fraction",
    "preprocess.log_transform",
    "train.seed",
    "train.model",
    "train.ft_transformer",
    "train.tabm",
    "train.numeric_embedding",
    "train.precision",
    "train.grad_accumulation",
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
    # Mitigation strengthens fairness and never weakens the policy (the gate still judges): a sweep varies it.
    "mitigation.reweigh",
    "mitigation.resample",
    "mitigation.loss",
    "mitigation.loss_weight",
    "mitigation.reductions",
    "mitigation.reductions_eps",
    "mitigation.reductions_epochs",
    "mitigation.reductions_max_iter",
    "mitigation.thresholds",
    "mitigation.seed",
)


def parse_params(raw: dict[str, Any]) -> Params:
    """Turn a params mapping into typed config, naming every bad key."""
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(validation_error_text(err, Params)) from None


def check_overridable(overrides: dict[str, Any]) -> None:
    """Refuse, before anything runs, any override outside the allow-list, naming the key."""
    refused = sorted(k for k in overrides if k not in OVERRIDABLE)
    if refused:
        raise ConfigError(
            f"override {', '.join(map(repr, refused))} refused: a flow run may change only {list(OVERRIDABLE)}; "
            "the dataset profile (data, privacy, policy), validation, the audit and the gate are policy "
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


def check_paths(params: Params, root: Path, builtins: frozenset[str] = frozenset()) -> None:
    """Every path param resolves where it may: data files in data/raw/ (or data.root), the rest in the project."""
    values = {
        "data.source": params.data.source,
        "data.test_source": params.data.test_source,
        "data.intended_use": params.data.intended_use,
    }
    for key in PATH_KEYS:
        value = values[key]
        if value is None or (key == "data.source" and value in builtins):
            continue
        confine(value, key, root, params.data.root)
    check_intended_use(params.data.intended_use, root)


def load_params(path: Path = Path("params.yaml")) -> Params:
    """Read and check params.yaml. Its paths are confined where they are read (and by the flow, up front)."""
    try:
        return parse_params(read_raw(path))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
