"""Typed, frozen configuration parsed once from params.yaml (pydantic v2); unknown keys are an error.

Also the one place that says which keys a flow run may override (`OVERRIDABLE`) and which params name
files (`PATH_KEYS`: data files confined to data/raw/ or a declared data.root, the rest to the project).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, StrictBool, StrictInt, ValidationError, model_validator

from humane.core.errors import ConfigError


class _Section(BaseModel):
    # strict: a YAML string is not a number and a bool is not an int (an int is still a valid float).
    # A number must be finite: `.inf` or `.nan` in params.yaml or an override is an error, not a setting.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


# A label value as YAML types it: 1, true and "yes" are three different labels, compared in the column's own type.
Label = StrictBool | StrictInt | str

# A dataset's name: the registered model and the MLflow experiment are called humane-<name>.
DATASET_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"


class ReadParams(_Section):
    """How to parse a CSV file (Parquet needs none of this)."""

    delimiter: str | None = Field(None, min_length=1, max_length=1, description="Column separator; null: a comma.")
    decimal: str = Field(".", min_length=1, max_length=1, description="Decimal mark of numbers in the CSV file.")
    thousands: str | None = Field(
        None, min_length=1, max_length=1, description="Thousands separator in the CSV file; null: none."
    )
    encoding: str = Field("utf-8", description="Text encoding of the CSV file.")


class LeakageParams(_Section):
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


class DataParams(_Section):
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


class IdentifierParams(_Section):
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


class PrivacyParams(_Section):
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


class PolicyParams(_Section):
    """A dataset's own promotion thresholds, added to (and for the same metric replacing) the gate's generic ones."""

    min: dict[str, float] = Field(
        {},
        description=(
            "This dataset's lower bounds {metric: value}, on top of gate.min (the same metric: this one wins)."
        ),
    )
    max: dict[str, float] = Field(
        {},
        description=(
            "This dataset's upper bounds {metric: value} (e.g. fairness.sex.equalized_odds_difference), on "
            "top of gate.max."
        ),
    )
    max_drop: dict[str, float] = Field(
        {},
        description=(
            "This dataset's largest allowed fall of a metric against the champion {metric: value}, on top of "
            "gate.max_drop."
        ),
    )
    max_increase: dict[str, float] = Field(
        {},
        description=(
            "This dataset's largest allowed rise of a metric against the champion {metric: value}, on top of "
            "gate.max_increase."
        ),
    )


class MitigationParams(_Section):
    """Bias mitigation (part of the dataset profile): by data, by training and by thresholds.

    `target` names the sensitive feature(s) the methods act on (two or more: their intersection); groups
    with fewer training rows than validate.min_group_rows are left out of the constraints, and named.
    """

    target: list[str] = Field(
        [],
        description=(
            "The sensitive feature(s) the methods act on (two or more: their intersection); must be in "
            "data.sensitive_features."
        ),
    )
    reweigh: bool = Field(
        False, description="Pre-processing: Kamiran & Calders weights per group x label cell (preprocess stage)."
    )
    resample: bool = Field(
        False, description="Pre-processing: oversample the group x label cells to balance them (preprocess stage)."
    )
    loss: Literal["none", "demographic_parity", "equalized_odds"] = Field(
        "none",
        description="In-processing: a fairness term in the loss (fairret), weighted by loss_weight (train stage).",
    )
    loss_weight: float = Field(
        0.0, ge=0, le=100, description="Weight of the fairness loss term (mitigation.loss); 0 switches it off."
    )
    reductions: Literal["none", "demographic_parity", "equalized_odds"] = Field(
        "none",
        description=(
            "In-processing by reductions: Fairlearn's ExponentiatedGradient around the MLP; the model is the "
            "weighted vote of its fits (train stage)."
        ),
    )
    reductions_eps: float = Field(
        0.01, gt=0, le=1, description="Constraint slack of the reductions (ExponentiatedGradient's eps)."
    )
    reductions_epochs: int = Field(
        5, ge=1, le=1000, description="Epochs of each inner fit (oracle call) of the reductions."
    )
    reductions_max_iter: int = Field(
        50, ge=1, le=1000, description="Largest number of ExponentiatedGradient iterations."
    )
    thresholds: Literal["none", "demographic_parity", "equalized_odds", "true_positive_rate_parity"] = Field(
        "none",
        description=(
            "Post-processing: Fairlearn's ThresholdOptimizer fitted on the validation split (postprocess "
            "stage); the served model then needs the target's sensitive columns."
        ),
    )
    seed: int = Field(0, description="Seed of the mitigation methods (resampling, threshold randomisation).")

    @property
    def in_training(self) -> bool:
        """Whether a method acts before or during training (then the unmitigated model is a separate fit)."""
        return any(not m.startswith("thresholds:") for m in self.active)

    @property
    def active(self) -> list[str]:
        """The methods switched on, by name."""
        on = ["reweigh"] * self.reweigh + ["resample"] * self.resample
        on += [f"loss:{self.loss}"] if self.loss != "none" and self.loss_weight > 0 else []
        on += [f"reductions:{self.reductions}"] if self.reductions != "none" else []
        return on + ([f"thresholds:{self.thresholds}"] if self.thresholds != "none" else [])


class ValidateParams(_Section):
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


class PreprocessParams(_Section):
    """Split and feature-transformation settings."""

    seed: int = Field(description="Seed of the train/validation split.")
    val_fraction: float = Field(
        gt=0,
        lt=1,
        description=(
            "Share of the training pool held out as the validation split (early stopping, thresholds, sweep scores)."
        ),
    )
    include_sensitive: bool = Field(
        description=(
            "Feed the sensitive attributes to the model (they are always kept beside the features for auditing)."
        )
    )
    log_transform: list[str] = Field(
        [], description="Heavy-tailed numeric columns passed through a signed log1p before scaling."
    )


class DPParams(_Section):
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


class NumericEmbeddingParams(_Section):
    """How numeric columns enter the network (rtdl-num-embeddings; Gorishniy et al., 2022).

    linear: as scaled values (the MLP) or one linear token each (the FT-Transformer). periodic: each value becomes
    sin/cos of `n_frequencies` trained frequencies (initialised from N(0, frequency_init_scale^2)), then a linear
    layer and ReLU to `d_embedding` values ("PLR", lite: that layer shared by the columns); the FT-Transformer uses
    its token width instead of `d_embedding`.
    """

    kind: Literal["linear", "periodic"] = Field(
        "linear",
        description="How numeric columns enter the network: linear (scaled values) or periodic (PLR embeddings).",
    )
    d_embedding: int = Field(
        16,
        ge=1,
        description="Width of each numeric column's periodic embedding (the FT-Transformer uses its token width).",
    )
    n_frequencies: int = Field(48, ge=1, description="Trained frequencies per numeric column (periodic).")
    frequency_init_scale: float = Field(
        1.0, gt=0, description="SD of the normal distribution the frequencies are initialised from (periodic)."
    )


class FTTransformerParams(_Section):
    """FT-Transformer sizes (Gorishniy et al., 2021; rtdl-revisiting-models): one token per feature + [CLS].

    The defaults are the paper's default 3-block configuration (about 0.9M parameters on Adult). 12 blocks of
    width 1024 reach 10^8 parameters; `checkpointing` recomputes each block's activations in the backward pass
    (torch.utils.checkpoint) to trade compute for memory.
    """

    d_block: int = Field(192, ge=8, description="Token width; a multiple of attention_n_heads.")
    n_blocks: int = Field(3, ge=1, description="Number of pre-norm transformer blocks.")
    attention_n_heads: int = Field(8, ge=1, description="Attention heads per block.")
    attention_dropout: float = Field(0.2, ge=0, lt=1, description="Dropout on the attention weights.")
    ffn_d_hidden_multiplier: float = Field(
        4 / 3,
        gt=0,
        description=(
            "ReGLU feed-forward width as a multiple of d_block (4/3 keeps about the parameters of a 2x ReLU block)."
        ),
    )
    ffn_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout inside the feed-forward part of each block.")
    residual_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on each block's residual branches.")
    checkpointing: bool = Field(
        False,
        description=(
            "Recompute each block's activations in the backward pass (torch.utils.checkpoint): less memory, "
            "more compute."
        ),
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> FTTransformerParams:
        if self.d_block % self.attention_n_heads:
            raise ValueError(
                f"train.ft_transformer.d_block ({self.d_block}) must be a multiple of "
                f"attention_n_heads ({self.attention_n_heads})"
            )
        return self


class TabMParams(_Section):
    """TabM (Gorishniy et al., ICLR 2025; the `tabm` package): k MLPs trained at once, sharing their weights.

    Each member is an MLP of n_blocks blocks of width d_block whose inputs and outputs are scaled per member
    (arch_type tabm: BatchEnsemble layers; tabm-mini: only the first layer's input scaled per member). Each member
    learns every training row; the served probability is the members' mean. Numeric columns go through the
    periodic embeddings of train.numeric_embedding (shared by the members), categorical ones one-hot.
    """

    k: int = Field(32, ge=1, le=256, description="Number of ensemble members trained at once.")
    d_block: int = Field(256, ge=8, description="Width of each member's MLP blocks.")
    n_blocks: int = Field(2, ge=1, description="Number of MLP blocks per member.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout in each block.")
    arch_type: Literal["tabm", "tabm-mini"] = Field(
        "tabm",
        description=(
            "tabm: every layer's input and output scaled per member (BatchEnsemble); tabm-mini: only the "
            "first layer's input."
        ),
    )


class DistributedParams(_Section):
    """Multi-process training (DDP) launched with torchrun; 1 process on 1 node trains in-process."""

    nproc_per_node: int = Field(
        1,
        ge=1,
        le=256,
        description="Training processes per machine; more than one relaunches the train stage through torchrun (DDP).",
    )
    nnodes: int = Field(
        1,
        ge=1,
        description=(
            "Machines taking part; each machine's own rank comes from its environment (PET_NODE_RANK, "
            "torchrun's variable; 0 on the machine at master_addr), so every machine runs the same params."
        ),
    )
    master_addr: str = Field(
        "127.0.0.1", description="host:port of node 0 that every node reaches (torchrun's --master_addr/--master_port)."
    )
    master_port: int = Field(
        29500, ge=1, le=65535, description="Port of node 0 that every node reaches (torchrun's --master_port)."
    )
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="torch.distributed backend; auto: nccl on CUDA, gloo on CPU."
    )

    @property
    def world(self) -> int:
        """Total number of processes."""
        return self.nproc_per_node * self.nnodes


class ComputeParams(_Section):
    """How the compute bill is measured: codecarbon offline (no network), for this country's grid."""

    country_iso_code: str = Field(
        "USA",
        pattern=r"^[A-Z]{3}$",
        description=(
            "ISO 3166-1 alpha-3 country code of the machine's grid (carbon intensity); region: e.g. a US state."
        ),
    )
    region: str | None = Field(
        None, description="Region within the country for the carbon intensity (e.g. a US state); null: the country's."
    )
    energy: bool = Field(True, description="Measure energy and CO2 with codecarbon (offline).")


class TrainParams(_Section):
    """Model shape and optimisation settings."""

    seed: int = Field(description="Seed of weight initialisation and batch order.")
    model: Literal["mlp", "ft_transformer", "tabm"] = Field(
        "mlp", description="mlp: hidden_sizes, dropout, activation below; ft_transformer and tabm: their sections."
    )
    hidden_sizes: list[PositiveInt] = Field(min_length=1, description="Widths of the MLP's hidden layers.")
    dropout: float = Field(ge=0, lt=1, description="Dropout after each hidden layer of the MLP.")
    activation: Literal["relu", "gelu", "tanh", "silu"] = Field(description="Activation of the MLP's hidden layers.")
    ft_transformer: FTTransformerParams = FTTransformerParams()
    tabm: TabMParams = TabMParams()
    numeric_embedding: NumericEmbeddingParams = NumericEmbeddingParams()
    lr: float = Field(gt=0, description="Learning rate (AdamW).")
    weight_decay: float = Field(ge=0, description="Weight decay (AdamW).")
    batch_size: int = Field(
        ge=1, description="The global batch: split over processes (distributed) and accumulation steps."
    )
    max_epochs: int = Field(ge=1, description="Largest number of epochs.")
    patience: int = Field(
        ge=1,
        description=(
            "Early stopping: epochs without a better validation loss before training stops (the best epoch is kept)."
        ),
    )
    dp: DPParams
    progress: bool = Field(True, description="Show a progress bar while training.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else the CPU.")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="fp32, or bf16 autocast of the forward pass (CUDA, or a CPU with bf16 support)."
    )
    grad_accumulation: int = Field(
        1, ge=1, description="Micro-batches accumulated per optimiser step (batch_size is split over them)."
    )
    resume: bool = Field(
        True, description="Continue a killed run from its last checkpoint when params and data are unchanged."
    )
    distributed: DistributedParams = DistributedParams()
    compute: ComputeParams = ComputeParams()

    def conflicts(self) -> list[str]:
        """Settings that cannot be combined (DP-SGD with what its per-row clipping or its accounting cannot take)."""
        if not self.dp.enabled:
            return []
        refused = [
            what
            for what, on in [
                (
                    "train.model ft_transformer (no per-row clipping rule for rtdl's [CLS] token and feature-embedding "
                    "parameters is tested)",
                    self.model == "ft_transformer",
                ),
                (
                    "train.model tabm (no per-row clipping rule for its per-member scaling parameters is tested)",
                    self.model == "tabm",
                ),
                ("train.distributed (more than one process)", self.distributed.world > 1),
                (
                    "train.grad_accumulation > 1 (DP-SGD forms its own Poisson-sampled batches)",
                    self.grad_accumulation > 1,
                ),
                ("train.precision bf16", self.precision != "fp32"),
            ]
            if on
        ]
        return [f"DP-SGD (train.dp.enabled) is not combined with {'; '.join(refused)}"] if refused else []


class EvaluateParams(_Section):
    """Evaluation settings."""

    threshold: float = Field(gt=0, lt=1, description="Probability at or above which a row is predicted positive.")
    calibration_bins: int = Field(ge=2, le=1000, description="Bins of the calibration curve.")
    mia_samples: int = Field(
        ge=1, description="Membership-inference audit: this many training rows against as many held-out test rows."
    )
    seed: int = Field(description="Seed of the evaluation's samples (membership-inference rows).")


class AuditParams(_Section):
    """Bias-audit settings."""

    seed: int = Field(description="Seed of the bootstrap.")
    bootstrap: int = Field(ge=1, description="Bootstrap resamples of the test rows for the 95% confidence intervals.")
    min_group_size: int = Field(
        ge=1,
        description='Groups with fewer test rows are flagged "too small to judge" and left out of the headline gaps.',
    )


class ExplainParams(_Section):
    """Explanations (the explain stage, tasks/explain.py): attributions, proxies, error cohorts, reasons.

    Attributions are computed on a seeded sample of the test rows against one reference row (numeric inputs at
    the training median, categorical inputs at the commonest category), on the logit scale, and summed back to
    the user's raw columns.
    """

    seed: int = Field(13, description="Seed of the attributed sample, the bootstrap and the error tree's halves.")
    sample_rows: int = Field(2000, ge=10, description="Test rows attributed (a seeded sample; all rows when fewer).")
    method: Literal["auto", "integrated_gradients", "shapley_sampling"] = Field(
        "auto",
        description=(
            "auto: Shapley value sampling (exact sums) for every network. integrated_gradients only for an "
            "MLP: periodic embeddings and ReLU kinks bend its path (the FT-Transformer looks its categories "
            "up, the ensemble votes)."
        ),
    )
    n_steps: int = Field(
        32, ge=4, le=1024, description="Integrated Gradients: steps of the path integral (Gauss-Legendre)."
    )
    n_samples: int = Field(16, ge=1, le=1024, description="Shapley value sampling: permutations per row.")
    max_completeness_gap: float = Field(
        0.01,
        gt=0,
        description=(
            "The attributions must add up: each row's sum within this of its logit minus the reference row's "
            "(else the stage stops: raise n_steps or use shapley_sampling, whose sums are exact)."
        ),
    )
    bootstrap: int = Field(
        200, ge=10, description="Bootstrap resamples of the attributed rows for the intervals of the shares."
    )
    top_k: int = Field(5, ge=1, description='Features listed as "top" overall and per group (the card, the plots).')
    proxy_threshold: float = Field(
        0.7,
        gt=0.5,
        le=1,
        description=(
            "A raw input whose own cross-validated ROC AUC for a sensitive feature's groups reaches this is "
            "named a stand-in (proxy) for it; the all-inputs classifier's AUC is explain.proxy_auc.<feature>."
        ),
    )
    proxy_folds: int = Field(5, ge=2, le=20, description="Cross-validation folds of the proxy classifiers.")
    error_tree_depth: int = Field(
        3,
        ge=1,
        le=8,
        description=(
            "Depth of the error tree (a decision tree on the test errors, grown on one half of the test rows, "
            "its cohorts' error rates measured on the other)."
        ),
    )
    error_min_leaf_share: float = Field(
        0.02, gt=0, lt=0.5, description="Smallest leaf of the error tree, as a share of the rows."
    )
    reasons: int = Field(
        3,
        ge=1,
        le=20,
        description=(
            "Reasons listed in the report's example of a refused row (a request to the served model says its "
            "own number)."
        ),
    )


class GateParams(_Section):
    """The generic promotion policy; a dataset's profile adds its own thresholds (`policy:`).

    Metric names: test.<metric>, fairness.<feature>.<gap> (`fairness.*.<gap>`: every sensitive feature on its
    own), privacy.<metric>, compared against a fixed threshold (`min`, `max`), against a baseline model scored
    on the same test rows (`above_baseline`), or against the champion scored on the same test rows
    (`max_drop`, `max_increase`).
    """

    require_validation: bool = Field(description="Data validation must have passed (a hard rule).")
    above_baseline: dict[str, float] = Field(
        description=(
            "{<baseline>.<metric>: margin}: the model's test metric must exceed the baseline's minus the margin."
        )
    )
    min: dict[str, float] = Field(description="Lower bounds {metric: value} a candidate must reach.")
    max: dict[str, float] = Field(
        description=(
            "Upper bounds {metric: value} a candidate must stay under (e.g. fairness.*.demographic_parity_difference)."
        )
    )
    max_drop: dict[str, float] = Field(
        description=(
            "Largest allowed fall of a metric against the current champion, both scored on the candidate's "
            "test rows (skipped while there is none)."
        )
    )
    max_increase: dict[str, float] = Field(
        description=(
            "Largest allowed rise of a metric (e.g. a fairness gap) against the current champion on the same test rows."
        )
    )
    dominated_by: list[Literal["unmitigated", "logreg"]] = Field(
        description=(
            "Dominance: refused when one of these references, scored on the same test rows, is at least as "
            "accurate and at least as fair on every fairness figure the policy limits (strictly better on "
            "one). [] switches it off."
        )
    )
    max_remedy_cost: float | None = Field(
        ge=0,
        description=(
            "Remedy cost: accuracy points a mitigated candidate gives up against its unmitigated twin, per "
            "point of the gap it closed most among those the policy limits on the mitigation target. null "
            "switches it off."
        ),
    )
    require_approval: bool = Field(
        False,
        description=(
            "Sign-off: a candidate that passes the rules waits, registered as challenger with `approval: "
            "pending`, for a named person's decision (`python -m tasks.approve`, or the paused Prefect run) "
            "before `champion` moves."
        ),
    )
    four_eyes: bool = Field(False, description="Two people: whoever triggered the run cannot approve its candidate.")
    approval_timeout_s: int = Field(
        86400,
        ge=1,
        description=(
            "How long a paused Prefect run waits for the decision; it then ends NotApproved (the version "
            "stays pending)."
        ),
    )


class SweepParams(_Section):
    """A sweep of candidates (flows/sweep.py): overrides of allow-listed keys, one mapping per candidate."""

    candidates: list[dict[str, Any]] = Field(
        min_length=1,
        description=(
            "One mapping of allow-listed overrides per candidate (e.g. {mitigation.reweigh: true}), on top of "
            "the profile's mitigation."
        ),
    )
    select: Literal["accuracy", "balanced_accuracy", "roc_auc"] = Field(
        description=(
            "The chosen candidate maximises this validation metric among those within the policy's fairness limits."
        )
    )
    workers: int = Field(
        ge=1,
        le=64,
        description=(
            "Candidates run in parallel (processes, one torch thread each), or on a Dask cluster at "
            "dask_address (workers started with --nthreads 1: torch's random generator is per process)."
        ),
    )
    dask_address: str | None = Field(
        None, description="A Dask scheduler (e.g. tcp://10.0.0.5:8786) to run the candidates on; null: local processes."
    )


# The breaches a monitoring run can end in (flows/monitoring.py), in the order the run's state is named by.
BREACHES = ("BiasDegraded", "PerformanceDegraded", "DriftDetected")
# Gaps whose growth the monitoring judges (a ratio shrinks as it worsens: it is judged by its difference).
MONITORED_GAPS = ("demographic_parity_difference", "equalized_odds_difference", "equal_opportunity_difference")


class MonitorParams(_Section):
    """Monitoring the champion on production batches (flows/monitoring.py): drift, performance and group gaps.

    Every figure is compared with the champion's own reference, fixed when it was tracked: its test rows as the
    model read them (drift), and its test-time figures with their bootstrap intervals (performance, gaps).
    """

    drift_method_continuous: Literal["jensen_shannon", "hellinger", "wasserstein", "kolmogorov_smirnov"] = Field(
        "jensen_shannon",
        description=(
            "NannyML's univariate drift distance per feature kind (jensen_shannon and hellinger lie in [0, 1])."
        ),
    )
    drift_method_categorical: Literal["jensen_shannon", "hellinger", "l_infinity"] = Field(
        "jensen_shannon", description="NannyML's univariate drift distance for categorical features."
    )
    drift_threshold: float = Field(
        0.1,
        gt=0,
        description=(
            "An input feature drifted when its distance to the reference exceeds this; the predicted probability too."
        ),
    )
    prediction_drift_threshold: float = Field(
        0.1, gt=0, description="The predicted probability drifted when its distance to the reference exceeds this."
    )
    max_drifted_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="DriftDetected when more than this share of the input features drifted (0: any one).",
    )
    max_out_of_domain_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description=(
            "DriftDetected when more than this share of the rows break a training-domain rule (out_of_domain)."
        ),
    )
    max_drop: dict[Literal["accuracy", "roc_auc"], float] = Field(
        {"accuracy": 0.05, "roc_auc": 0.05},
        description=(
            "PerformanceDegraded when accuracy or roc_auc (estimated by CBPE without labels, realised with "
            "them) falls more than this below the test-time figure, overall or (accuracy, which the audit "
            "gives an interval) for a group large enough to judge, and the two 95% intervals do not overlap "
            "where both exist."
        ),
    )
    max_increase: dict[str, float] = Field(
        {"*.demographic_parity_difference": 0.05, "*.equalized_odds_difference": 0.05},
        description=(
            'BiasDegraded when a gap ("<feature>.<gap>", "*" for every sensitive feature; the named feature '
            "wins) grows more than this above its test-time value and its 95% interval lies above the "
            "test-time interval."
        ),
    )
    min_rows: int = Field(100, ge=1, description="A batch with fewer rows is refused: too few to judge anything.")
    retrain_on: list[Literal["BiasDegraded", "PerformanceDegraded", "DriftDetected"]] = Field(
        [],
        description=(
            "Breaches that start the training deployment (Prefect) by themselves; a monitoring run never "
            "moves an alias."
        ),
    )
    training_deployment: str = Field(
        "training/adult",
        pattern=r"^[^/]+/[^/]+$",
        description="The Prefect deployment (flow/deployment) that retrain_on starts.",
    )
    attribution_drift_threshold: float = Field(
        0.1,
        gt=0,
        le=1,
        description=(
            "DriftDetected when a raw input's share of the model's attribution (mean |attribution| share) "
            "moves more than this from its share on the test rows (reports/explanations.json), among the "
            "reference's top inputs."
        ),
    )

    @model_validator(mode="after")
    def _known_gaps(self) -> MonitorParams:
        for key in self.max_increase:
            feature, _, gap = key.rpartition(".")
            if not feature or gap not in MONITORED_GAPS:
                raise ValueError(
                    f"monitor.max_increase: key {key!r} must be '<feature or *>.<gap>' with a gap in "
                    f"{list(MONITORED_GAPS)}"
                )
        return self


# The hosts a SuperLink may be reached on without TLS (federated.superlink.insecure: tests, trying it out).
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class SuperLinkParams(_Section):
    """How the coordinator reaches the Flower SuperLink's control API (written to the run's own FLWR_HOME)."""

    connection: str = Field(
        "humane",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The connection's name in the Flower configuration the federate stage writes (not ~/.flwr).",
    )
    address: str = Field(
        "127.0.0.1:9093",
        description=(
            "host:port of the SuperLink's control API (flower-superlink --control-api-address; 9093 by default)."
        ),
    )
    insecure: bool = Field(
        False,
        description=(
            "Plain gRPC: only for a SuperLink on 127.0.0.1 (tests, trying it out); otherwise TLS with "
            "root_certificates."
        ),
    )
    root_certificates: str | None = Field(
        None,
        description=(
            "PEM file of the CA that signed the SuperLink's certificate (relative to the workspace); null: system CAs."
        ),
    )

    @model_validator(mode="after")
    def _insecure_only_on_loopback(self) -> SuperLinkParams:
        host = self.address.rpartition(":")[0].strip("[]") if ":" in self.address else self.address
        if self.insecure and host not in LOOPBACK:
            where = " or ".join(LOOPBACK)
            raise ValueError(
                f"insecure: true (plain gRPC, no TLS) is refused for {self.address!r}: only a SuperLink on {where} "
                "may be reached without TLS; set insecure: false and root_certificates"
            )
        return self


class FederatedParams(_Section):
    """Federated training with Flower (federation/params.yaml): the run's settings, passed as its run config.

    Every site trains on its own rows; what leaves a site is aggregates (with min_group_size, optionally noise)
    and model updates. The keys below rounds are the ServerApp's run-config keys (federated/pyproject.toml).
    """

    app: str = Field("../federated", description="The Flower App folder, relative to the workspace.")
    site_env: str = Field(
        "../.site-env", description="The site environment holding flwr (make site-env), relative to the workspace."
    )
    superlink: SuperLinkParams = SuperLinkParams()
    sites: list[str] = Field(
        min_length=1,
        description=(
            "The sites expected to take part (their SuperNodes' `site` node config); the card names each one's fate."
        ),
    )
    rounds: int = Field(ge=1, description="Federated rounds.")
    local_epochs: int = Field(1, ge=1, description="Epochs each site trains per round.")
    fraction_train: float = Field(
        1.0, gt=0, le=1, description="Share of the available sites asked to train each round."
    )
    min_sites: int = Field(
        ge=1, description="Fewer usable sites (answering, not excluded) and the run fails with a clear error."
    )
    strategy: Literal["fedavg", "fedprox"] = Field(
        "fedavg", description="Aggregation: FedAvg, or FedProx (a proximal term, proximal_mu)."
    )
    proximal_mu: float = Field(0.0, ge=0, description="FedProx's proximal term weight (0 with fedavg).")
    min_group_size: int = Field(
        ge=1, description="No group or category with fewer rows at a site is sent (its rows are counted as withheld)."
    )
    noise: float = Field(
        0.0, ge=0, description="SD of the Gaussian noise on the counts a site sends (0: exact counts)."
    )
    dp_epsilon: float = Field(
        0.0, ge=0, description="Client-side DP (Opacus at each site): the ε each site spends; 0 = off."
    )
    dp_delta: float = Field(1e-5, gt=0, lt=1, description="Client-side DP: the δ at which each site's ε is accounted.")
    dp_clip: float = Field(1.0, gt=0, description="Client-side DP: the per-row gradient clipping norm.")
    secagg: bool = Field(
        False,
        description="Secure aggregation (Flower's SecAgg+): the coordinator sees only the sum of the sites' updates.",
    )
    seed: int = Field(0, description="Seed of the federated run.")
    round_timeout_s: float = Field(
        300.0,
        gt=0,
        description="A site that does not answer a round in time is dropped for that round (and said so on the card).",
    )
    run_timeout_s: float = Field(3600.0, gt=0, description="The whole `flwr run`, after which the stage gives up.")


class Params(_Section):
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
                    "keys (humane.core.params.OVERRIDABLE)"
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

# Params that name files the pipeline reads: data files inside data/raw/ (or data.root), others in the project.
PATH_KEYS = ("data.source", "data.test_source", "data.intended_use")
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


def validation_error_text(err: ValidationError) -> str:
    """One line per bad key, named by its dotted path, as params.yaml spells it."""
    lines: dict[str, str] = {}
    for item in err.errors():
        loc = [str(p) for p in item["loc"]]
        # Union members (str | None) add their type name to the location; the key is what the user wrote.
        loc = [p for p in loc if p not in ("str", "float", "int", "bool", "list[str]", "list[float]", "none")]
        key = ".".join(loc)
        if not loc:  # a rule across sections (a model validator): its message names the keys
            message = str(item["msg"]).removeprefix("Value error, ")
        elif item["type"] == "extra_forbidden":
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
        raise ConfigError(validation_error_text(err)) from None


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


def check_intended_use(value: str, root: Path) -> Path:
    """The model card's intended-use text: an existing Markdown file inside the project."""
    path = confine(value, "data.intended_use", root)
    if path.suffix.lower() != ".md" or not path.is_file():
        raise ConfigError(
            f"data.intended_use: {value!r} must be an existing Markdown (.md) file of the project "
            "(the model card's intended-use text)"
        )
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
