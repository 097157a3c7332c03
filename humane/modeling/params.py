"""The params.yaml sections of preprocessing, training, evaluation, explanations and federated training."""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import Field, PositiveInt, model_validator

from humane.core.params import Section
from humane.data.params import DataParams, ValidateParams
from humane.privacy.params import DPParams, PrivacyParams


class PreprocessParams(Section):
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


class NumericEmbeddingParams(Section):
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


class FTTransformerParams(Section):
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


class TabMParams(Section):
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


class DistributedParams(Section):
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


class ComputeParams(Section):
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


class TrainParams(Section):
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


class EvaluateParams(Section):
    """Evaluation settings."""

    threshold: float = Field(gt=0, lt=1, description="Probability at or above which a row is predicted positive.")
    calibration_bins: int = Field(ge=2, le=1000, description="Bins of the calibration curve.")
    mia_samples: int = Field(
        ge=1, description="Membership-inference audit: this many training rows against as many held-out test rows."
    )
    seed: int = Field(description="Seed of the evaluation's samples (membership-inference rows).")


class ExplainParams(Section):
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


# The hosts a SuperLink may be reached on without TLS (federated.superlink.insecure: tests, trying it out).
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class SuperLinkParams(Section):
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


class FederatedParams(Section):
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


class ModelingSections(Protocol):
    """The sections of params.yaml that modeling code reads from the whole (`humane.pipeline.params.Params`)."""

    @property
    def data(self) -> DataParams:
        """The `data:` section."""

    @property
    def privacy(self) -> PrivacyParams:
        """The `privacy:` section."""

    @property
    def validate(self) -> ValidateParams:
        """The `validate:` section."""

    @property
    def preprocess(self) -> PreprocessParams:
        """The `preprocess:` section."""

    @property
    def train(self) -> TrainParams:
        """The `train:` section."""

    @property
    def evaluate(self) -> EvaluateParams:
        """The `evaluate:` section."""

    @property
    def explain(self) -> ExplainParams:
        """The `explain:` section."""
