"""The networks (an MLP, an FT-Transformer, TabM) and how their output becomes a probability.

Binary tasks: the pipeline validates two label values. Both networks take the preprocessor's output, one row of
scaled numeric columns followed by one-hot blocks, and return one logit per row; the model file is a state dict
plus the args that rebuild the network (`model_state` / `load_model`, read with weights_only=True).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from humane.modeling.params import TrainParams

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


def periodic_embeddings(n_numeric: int, spec: dict[str, Any], d_embedding: int, lite: bool) -> nn.Module:
    """rtdl-num-embeddings' periodic embeddings ("PLR") of `n_numeric` columns: (batch, n) → (batch, n, d)."""
    from rtdl_num_embeddings import PeriodicEmbeddings

    scale = spec["frequency_init_scale"]
    return PeriodicEmbeddings(
        n_numeric,
        d_embedding,
        n_frequencies=spec["n_frequencies"],
        frequency_init_scale=scale,
        activation=True,
        lite=lite,
    )


def embedding_spec(params: TrainParams) -> dict[str, Any] | None:
    """`train.numeric_embedding` as the plain dict the model args store; None for plain (linear) numeric inputs."""
    spec = params.numeric_embedding
    return None if spec.kind == "linear" else spec.model_dump()


@dataclass(frozen=True)
class MLPArgs:
    """Everything needed to rebuild the network (stored in every checkpoint).

    With `embedding` (periodic), the first `n_numeric` inputs, the scaled numeric columns, each become
    `d_embedding` values before the first layer; model files written before embeddings existed load as before.
    """

    n_inputs: int
    hidden_sizes: list[int]
    dropout: float
    activation: str
    n_numeric: int = 0
    embedding: dict[str, Any] | None = None

    def to_dict(self) -> dict:
        """Plain-dict form for checkpoints."""
        return asdict(self)


class MLP(nn.Module):
    """Linear → activation → dropout blocks ending in one bare linear unit: the logit gets no activation."""

    def __init__(self, args: MLPArgs) -> None:
        super().__init__()
        if args.activation not in ACTIVATIONS:
            raise ValueError(f"train.activation {args.activation!r} is not one of {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        width = args.n_inputs
        self.embedding: nn.Module | None = None
        if args.embedding is not None and args.n_numeric:
            d = args.embedding["d_embedding"]
            self.embedding = periodic_embeddings(args.n_numeric, args.embedding, d, lite=True)
            width += args.n_numeric * (d - 1)
        for hidden in args.hidden_sizes:
            layers += [nn.Linear(width, hidden), ACTIVATIONS[args.activation](), nn.Dropout(args.dropout)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.args = args

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape (batch,)."""
        if self.embedding is not None:
            n = self.args.n_numeric
            x = torch.cat([self.embedding(x[:, :n]).flatten(1), x[:, n:]], dim=1)
        return self.net(x).squeeze(-1)


def loss_fn() -> nn.Module:
    """Binary cross-entropy on the raw logit (numerically stable: no sigmoid before the loss)."""
    return nn.BCEWithLogitsLoss()


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Positive-class probability."""
    return torch.sigmoid(logits)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameter count."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def category_indices(x: torch.Tensor, n_numeric: int, cardinalities: list[int]) -> torch.Tensor:
    """Each one-hot block after the numeric columns read back as a category index, (batch, blocks).

    An all-zero block (a category unseen in training) becomes one extra index, the block's width.
    """
    indices, start = [], n_numeric
    for width in cardinalities:
        block = x[:, start : start + width]
        unseen = torch.full_like(block[:, 0], width, dtype=torch.long)
        indices.append(torch.where(block.sum(-1) > 0, block.argmax(-1), unseen))
        start += width
    return torch.stack(indices, dim=-1)


@dataclass(frozen=True)
class FTTransformerArgs:
    """Everything needed to rebuild an FT-Transformer over the preprocessor's columns.

    The input row is `n_numeric` numeric columns, then one one-hot block per categorical column, of the widths in
    `cardinalities`. Each numeric column becomes a token by rtdl's linear embedding; each one-hot block is read
    back as a category index (its all-zero row, a category unseen in training, as one extra index) and becomes a
    token by an embedding table. With no layout known every column is a numeric token.
    """

    n_inputs: int
    n_numeric: int
    cardinalities: list[int]
    d_block: int
    n_blocks: int
    attention_n_heads: int
    attention_dropout: float
    ffn_d_hidden_multiplier: float
    ffn_dropout: float
    residual_dropout: float
    checkpointing: bool = False
    # Periodic numeric tokens (one output layer per column) instead of rtdl's linear ones; None: linear.
    embedding: dict[str, Any] | None = None
    kind: str = field(default="ft_transformer", init=False)

    def to_dict(self) -> dict:
        """Plain-dict form for checkpoints (the `kind` says which network to rebuild)."""
        return asdict(self)


class FTTransformer(nn.Module):
    """Feature tokenizer + pre-norm transformer blocks + [CLS] head (rtdl_revisiting_models.FTTransformer).

    The blocks are run here, in rtdl's own order, so that each can be checkpointed (its activations recomputed in
    the backward pass) when `checkpointing` is on.
    """

    def __init__(self, args: FTTransformerArgs) -> None:
        super().__init__()
        import rtdl_revisiting_models as rtdl

        if args.n_numeric + sum(args.cardinalities) != args.n_inputs:
            raise ValueError(
                f"FT-Transformer layout: {args.n_numeric} numeric columns and one-hot blocks "
                f"{args.cardinalities} do not add up to {args.n_inputs} inputs"
            )
        self.net = rtdl.FTTransformer(
            n_cont_features=args.n_numeric,
            cat_cardinalities=[k + 1 for k in args.cardinalities],
            d_out=1,
            n_blocks=args.n_blocks,
            d_block=args.d_block,
            attention_n_heads=args.attention_n_heads,
            attention_dropout=args.attention_dropout,
            ffn_d_hidden=None,
            ffn_d_hidden_multiplier=args.ffn_d_hidden_multiplier,
            ffn_dropout=args.ffn_dropout,
            residual_dropout=args.residual_dropout,
        )
        if args.embedding is not None and args.n_numeric:
            self.net.cont_embeddings = periodic_embeddings(args.n_numeric, args.embedding, args.d_block, lite=False)
        self.args = args

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Rows → (batch, 1 + features, d_block): [CLS], numeric tokens, categorical tokens."""
        net, n_num = self.net, self.args.n_numeric
        parts = [net.cls_embedding(x.shape[:-1])]
        if n_num:
            parts.append(net.cont_embeddings(x[:, :n_num]))
        if self.args.cardinalities:
            parts.append(net.cat_embeddings(category_indices(x, n_num, self.args.cardinalities)))
        return torch.cat(parts, dim=1)

    @staticmethod
    def _block(block: nn.ModuleDict, x: torch.Tensor, last: bool) -> torch.Tensor:
        # rtdl's FTTransformerBackbone.forward, one block: the last attends from [CLS] only.
        identity = x
        if "attention_normalization" in block:
            x = block["attention_normalization"](x)
        x = block["attention"](x[:, :1] if last else x, x)
        x = identity + block["attention_residual_dropout"](x)
        identity = x
        x = block["ffn"](block["ffn_normalization"](x))
        return block["output"](identity + block["ffn_residual_dropout"](x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape (batch,)."""
        h = self.tokens(x)
        blocks = self.net.backbone.blocks
        for i, block in enumerate(blocks):
            last = i + 1 == len(blocks)
            if self.args.checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(self._block, block, h, last, use_reentrant=False)
            else:
                h = self._block(block, h, last)
        return self.net.backbone.output(h[:, 0]).squeeze(-1)


@dataclass(frozen=True)
class TabMArgs:
    """Everything needed to rebuild a TabM over the preprocessor's columns (layout as FTTransformerArgs)."""

    n_inputs: int
    n_numeric: int
    cardinalities: list[int]
    k: int
    d_block: int
    n_blocks: int
    dropout: float
    arch_type: str
    # Periodic numeric embeddings shared by the members; None: the scaled values go in as they are.
    embedding: dict[str, Any] | None = None
    kind: str = field(default="tabm", init=False)

    def to_dict(self) -> dict:
        """Plain-dict form for checkpoints."""
        return asdict(self)


def mean_probability_logit(logits: torch.Tensor) -> torch.Tensor:
    """The logit of the members' mean probability, from their logits (batch, k) → (batch,), without overflow."""
    return torch.logsumexp(nn.functional.logsigmoid(logits), -1) - torch.logsumexp(
        nn.functional.logsigmoid(-logits), -1
    )


class TabM(nn.Module):
    """k MLPs in one (tabm.TabM), each member learning every training row.

    While training the output is one logit per member (batch, k); in eval mode it is the logit of the members' mean
    probability (batch,), which every consumer of a network reads.
    """

    def __init__(self, args: TabMArgs) -> None:
        super().__init__()
        import tabm

        if args.n_numeric + sum(args.cardinalities) != args.n_inputs:
            raise ValueError(
                f"TabM layout: {args.n_numeric} numeric columns and one-hot blocks "
                f"{args.cardinalities} do not add up to {args.n_inputs} inputs"
            )
        embedding = None
        if args.embedding is not None and args.n_numeric:
            spec = args.embedding
            embedding = periodic_embeddings(args.n_numeric, spec, spec["d_embedding"], lite=False)
        self.net = tabm.TabM.make(
            n_num_features=args.n_numeric,
            cat_cardinalities=[width + 1 for width in args.cardinalities],
            d_out=1,
            num_embeddings=embedding,
            k=args.k,
            d_block=args.d_block,
            n_blocks=args.n_blocks,
            dropout=args.dropout,
            arch_type=args.arch_type,
        )
        self.args = args

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's logit, (batch, k)."""
        n, cardinalities = self.args.n_numeric, self.args.cardinalities
        x_num = x[:, :n] if n else None
        x_cat = category_indices(x, n, cardinalities) if cardinalities else None
        return self.net(x_num, x_cat).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Members' logits (batch, k) while training; the logit of their mean probability (batch,) otherwise."""
        logits = self.member_logits(x)
        return logits if self.training else mean_probability_logit(logits)


@dataclass(frozen=True)
class EnsembleArgs:
    """A weighted vote of networks (Fairlearn's ExponentiatedGradient result): each member's args and weight."""

    members: list[dict[str, Any]]
    weights: list[float]
    # A member votes positive when its probability is at least this (its own decision, as the reductions saw it).
    vote_threshold: float = 0.5
    kind: str = field(default="ensemble", init=False)

    def to_dict(self) -> dict:
        """Plain-dict form for checkpoints."""
        return asdict(self)


# Probabilities of exactly 0 or 1 (unanimous votes) are kept this far inside (0, 1) so their logit is finite.
VOTE_CLIP = 1e-6
# A vote exactly at a decision threshold must read as reaching it (decisions are `p >= threshold`) after the
# logit → float32 → sigmoid round trip, which moves p by up to ~1e-7: every vote is nudged up by this much.
VOTE_TIE = 1e-6


@dataclass(frozen=True)
class ConstantArgs:
    """A member that always says one label (Fairlearn's stand-in when a reduced problem had one class only)."""

    n_inputs: int
    label: int
    kind: str = field(default="constant", init=False)

    def to_dict(self) -> dict:
        """Plain-dict form for checkpoints."""
        return asdict(self)


class Constant(nn.Module):
    """Always `label`: a logit of ±20 (probability within 3e-9 of 0 or 1), whatever the row."""

    def __init__(self, args: ConstantArgs) -> None:
        super().__init__()
        if args.label not in (0, 1):
            raise ValueError(f"a constant member says 0 or 1, not {args.label!r}")
        self.args = args

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The constant logit per row, shape (batch,)."""
        return torch.full(x.shape[:1], 20.0 if self.args.label else -20.0, dtype=torch.float32, device=x.device)


class Ensemble(nn.Module):
    """The deterministic form of ExponentiatedGradient's randomized classifier.

    Its probability is the weight of the members that vote positive, which is the probability that Fairlearn's
    `predict` says 1 for the row; the served decision compares it with evaluate.threshold instead of drawing.
    The output is that probability's logit, so every consumer of a network (sigmoid → probability) reads it.
    """

    def __init__(self, args: EnsembleArgs, members: list[nn.Module] | None = None) -> None:
        super().__init__()
        if not args.members or len(args.members) != len(args.weights) or min(args.weights) < 0:
            raise ValueError("an ensemble needs at least one member and one weight >= 0 per member")
        total = sum(args.weights)
        if not total > 0:
            raise ValueError("an ensemble's weights must not all be zero")
        self.members = nn.ModuleList(members if members is not None else [network(a) for a in args.members])
        self.args = args
        self._weights = torch.tensor([w / total for w in args.weights], dtype=torch.float64)

    @property
    def networks(self) -> list[nn.Module]:
        """The trained members (not the constant ones)."""
        return [m for m in self.members if not isinstance(m, Constant)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the weighted positive vote, shape (batch,); the sum and logit in float64."""
        votes = torch.stack([(probabilities(m(x)) >= self.args.vote_threshold).double() for m in self.members], -1)
        p = (votes * self._weights.to(votes.device)).sum(-1) + VOTE_TIE
        return torch.logit(p.clamp(VOTE_CLIP, 1 - VOTE_CLIP)).float()


Network = MLP | FTTransformer | TabM | Ensemble


def build_model(params: TrainParams, n_inputs: int, layout: tuple[int, list[int]] | None = None) -> Network:
    """The network `train.model` names, for `n_inputs` columns (`layout`: numeric count, one-hot block widths)."""
    n_numeric, cardinalities = layout if layout is not None else (n_inputs, [])
    embedding = embedding_spec(params)
    if embedding is not None and layout is None:
        raise ValueError("train.numeric_embedding periodic needs the preprocessor's layout (which inputs are numeric)")
    if params.model == "mlp":
        return MLP(
            MLPArgs(n_inputs, list(params.hidden_sizes), params.dropout, params.activation, n_numeric, embedding)
        )
    if params.model == "tabm":
        t = params.tabm
        return TabM(
            TabMArgs(
                n_inputs, n_numeric, list(cardinalities), t.k, t.d_block, t.n_blocks, t.dropout, t.arch_type, embedding
            )
        )
    ft = params.ft_transformer
    return FTTransformer(
        FTTransformerArgs(
            n_inputs,
            n_numeric,
            list(cardinalities),
            ft.d_block,
            ft.n_blocks,
            ft.attention_n_heads,
            ft.attention_dropout,
            ft.ffn_d_hidden_multiplier,
            ft.ffn_dropout,
            ft.residual_dropout,
            ft.checkpointing,
            embedding,
        )
    )


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: the FT-Transformer's embeddings, norms and biases get no weight decay (as in rtdl)."""
    if isinstance(model, FTTransformer):
        groups = model.net.make_parameter_groups()
        groups[0]["weight_decay"] = weight_decay
        return groups
    return [{"params": list(model.parameters()), "weight_decay": weight_decay}]


def architecture_text(model: Network) -> str:
    """One line naming the architecture and its sizes (an ensemble: its vote and one network's line)."""
    a = model.args
    if isinstance(model, Ensemble):
        weights = ", ".join(f"{w:.3f}" for w in model._weights.tolist())
        constant = len(model.members) - len(model.networks)
        return (
            f"ExponentiatedGradient ensemble: a weighted vote of {len(model.members)} members (weights "
            f"{weights}"
            + (f"; {constant} of them a constant classifier" if constant else "")
            + f"); each network: {architecture_text(model.networks[0])}"
        )
    numeric = (
        ""
        if not (a.embedding and a.n_numeric)
        else (
            f"; {a.n_numeric} numeric columns through periodic embeddings ({a.embedding['n_frequencies']} frequencies, "
            f"init scale {a.embedding['frequency_init_scale']:g})"
        )
    )
    if isinstance(a, TabMArgs):
        return (
            f"TabM ({a.arch_type}): {a.k} MLPs sharing weights, {a.n_blocks} blocks of width {a.d_block}, "
            f"dropout {a.dropout}, {a.n_numeric} numeric + {len(a.cardinalities)} one-hot categorical "
            f"columns{numeric}; the probability is the members' mean"
        )
    if isinstance(a, FTTransformerArgs):
        return (
            f"FT-Transformer: {a.n_numeric} numeric + {len(a.cardinalities)} categorical tokens and [CLS], "
            f"{a.n_blocks} blocks of width {a.d_block}, {a.attention_n_heads} heads, ReGLU FFN x"
            f"{a.ffn_d_hidden_multiplier:.3g}, dropout attention {a.attention_dropout} / FFN {a.ffn_dropout} / "
            f"residual {a.residual_dropout}{numeric}"
        )
    return (
        f"MLP {a.n_inputs} → {' → '.join(map(str, a.hidden_sizes))} → 1 logit, {a.activation}, "
        f"dropout {a.dropout}{numeric}"
    )


def model_state(model: Network) -> dict[str, Any]:
    """What the model file holds: weights and the args that rebuild the network (tensors and plain data only)."""
    return {"state_dict": model.state_dict(), "model_args": model.args.to_dict()}


def network(model_args: dict[str, Any]) -> Network:
    """An untrained network of the shape `model_args` describes (`kind` absent: an MLP)."""
    args = dict(model_args)
    kind = args.pop("kind", "mlp")
    if kind == "ft_transformer":
        return FTTransformer(FTTransformerArgs(**args))
    if kind == "mlp":
        return MLP(MLPArgs(**args))
    if kind == "tabm":
        return TabM(TabMArgs(**args))
    if kind == "ensemble":
        return Ensemble(EnsembleArgs(**args))
    if kind == "constant":
        return Constant(ConstantArgs(**args))
    raise ValueError(f"the model file names an unknown network kind {kind!r}")


def load_model(state: dict) -> Network:
    """Rebuild a model from a checkpoint dict (read with weights_only=True); `kind` absent: an MLP."""
    model = network(state["model_args"])
    model.load_state_dict(state["state_dict"])
    model.eval()
    return model


def input_widths(model_args: dict[str, Any]) -> tuple[int, int]:
    """The network's input width and how many of those inputs are numeric, from a model file's `model_args`.

    An ensemble's are its members' (the first member's width, the largest numeric count); a model file from before
    the numeric layout counts 0 numeric inputs.
    """
    if model_args.get("kind") == "ensemble":
        widths = [input_widths(member) for member in model_args["members"]]
        return widths[0][0], max(numeric for _, numeric in widths)
    return model_args["n_inputs"], int(model_args.get("n_numeric", 0))


def file_input_widths(path: str | os.PathLike[str]) -> tuple[int, int]:
    """`input_widths` of the model file at `path` (models/model.pt: the state `model_state` wrote)."""
    return input_widths(torch.load(path, weights_only=True)["model_args"])
