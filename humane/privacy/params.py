"""The `privacy:` section of params.yaml (column policy, k-anonymity, identifier scan) and `train.dp:` (DP-SGD)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

from pydantic import Field

from humane.core.params import Section


class IdentifierParams(Section):
    """When a column looks like a direct identifier or personal free text (it must then be named in a rule)."""

    check: bool = Field(
        description=(
            "Look for columns that look like direct identifiers or personal free text; each must then be "
            "named in privacy.drop, pseudonymize or keep, or the load stage stops."
        )
    )
    unique_share: float = Field(
        gt=0, le=1, description="Distinct values per non-null row at or above which a text or integer column is an id."
    )
    text_unique_share: float = Field(
        gt=0,
        le=1,
        description="Distinct values per non-null row at or above which a text column is a name-like identifier.",
    )
    free_text_words: float = Field(
        gt=0, description="Mean words per value at or above which a text column is free text."
    )
    pattern_share: float = Field(
        gt=0,
        le=1,
        description=(
            "Share of sampled values matching an e-mail, phone, national-id, card or IBAN pattern that flags a column."
        ),
    )
    sample_rows: int = Field(ge=10, description="Rows sampled per column for the pattern and date checks.")


class PrivacyParams(Section):
    """Column privacy policy (applied when data is loaded, before anything is written) and risk settings."""

    drop: list[str] = Field(description="Columns removed at load, before anything is written.")
    pseudonymize: list[str] = Field(
        description=(
            "Columns replaced by a keyed HMAC-SHA256 (key from key_env, else key_block; never logged or "
            "stored); never model inputs."
        )
    )
    bins: dict[str, list[float]] = Field(
        description=(
            "Numeric binning {column: edges}: a value becomes its bin's lower edge (values beyond the edges "
            "fall into the outermost bin, unless strict_bins)."
        )
    )
    top_code: dict[str, float] = Field(description="Cap a numeric column at a value {column: cap}.")
    group_rare: dict[str, int] = Field(
        description='Categories seen fewer times than this in the training rows become "Other" {column: count}.'
    )
    key_env: str = Field(description="Environment variable holding the pseudonymisation key.")
    key_block: str | None = Field(
        description="Prefect Secret block holding the pseudonymisation key, used when key_env is unset; null: none."
    )
    quasi_identifiers: list[str] = Field(
        description=(
            "Columns over which k-anonymity and l-diversity (of the label) are measured, before and after the policy."
        )
    )
    k: int = Field(ge=1, description="The k of k-anonymity reported for the quasi-identifiers.")
    keep: list[str] = Field(
        [], description="Columns that look identifying but are kept on purpose (a reviewed decision)."
    )
    strict_bins: bool = Field(
        False,
        description=(
            "Bins are open at the ends (a value outside them falls into the outermost bin, and is counted); "
            "strict: such a value is an error."
        ),
    )
    identifiers: IdentifierParams


class DPParams(Section):
    """Differentially private training: DP-SGD (humane.privacy.dp.PrivateSGD; Opacus' accountant calibrates it).

    Each row's whole gradient is clipped to `max_grad_norm`, Gaussian noise is added, batches are Poisson-sampled;
    the noise spends at most `target_epsilon` at `delta` over train.max_epochs. Settings per budget (batch, lr,
    epochs, clipping norm), chosen on full Adult's validation split, are in params.yaml's comment on `train.dp`.
    """

    enabled: bool = Field(description="Train with DP-SGD.")
    target_epsilon: float = Field(gt=0, description="Privacy budget ε spent at most over train.max_epochs.")
    delta: float = Field(gt=0, lt=1, description="The δ at which ε is accounted.")
    max_grad_norm: float = Field(gt=0, description="Each row's whole gradient is clipped to this L2 norm.")
    accountant: Literal["prv", "rdp", "gdp"] = Field(
        description="Opacus' privacy accountant that calibrates the noise and accounts the steps run."
    )
    max_physical_batch_size: int = Field(
        ge=1,
        description=(
            "Physical batches of at most this many rows make up each Poisson-sampled logical batch (a memory bound)."
        ),
    )


class DPTraining(Protocol):
    """What DP-SGD reads of the `train:` section (`humane.modeling.params.TrainParams`)."""

    @property
    def dp(self) -> DPParams:
        """`train.dp`."""

    @property
    def lr(self) -> float:
        """`train.lr`."""

    @property
    def weight_decay(self) -> float:
        """`train.weight_decay`."""

    @property
    def batch_size(self) -> int:
        """`train.batch_size`."""

    @property
    def max_epochs(self) -> int:
        """`train.max_epochs`."""


class EncryptedSource(Protocol):
    """What decryption reads of the `data:` section (`humane.data.params.DataParams`)."""

    @property
    def source(self) -> str:
        """`data.source`."""

    @property
    def encryption(self) -> Literal["none", "age"]:
        """`data.encryption`."""

    @property
    def encryption_key_env(self) -> str:
        """`data.encryption_key_env`."""

    @property
    def encryption_key_block(self) -> str | None:
        """`data.encryption_key_block`."""


class DatasetColumns(Protocol):
    """What the protected-columns rule reads of the `data:` section (`humane.data.params.DataParams`)."""

    @property
    def sensitive_features(self) -> Sequence[str]:
        """`data.sensitive_features`."""

    @property
    def dates(self) -> Mapping[str, str]:
        """`data.dates`."""
