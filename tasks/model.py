"""The MLP and how its outputs become probabilities."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


@dataclass(frozen=True)
class MLPArgs:
    """Everything needed to rebuild the network (stored in every checkpoint)."""

    n_inputs: int
    n_outputs: int
    hidden_sizes: list[int]
    dropout: float
    activation: str

    def to_dict(self) -> dict:
        """Plain-dict form for checkpoints."""
        return asdict(self)


class MLP(nn.Module):
    """Linear → activation → dropout blocks ending in a bare linear layer: the logits get no activation."""

    def __init__(self, args: MLPArgs) -> None:
        super().__init__()
        if args.activation not in ACTIVATIONS:
            raise ValueError(f"train.activation {args.activation!r} is not one of {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        width = args.n_inputs
        for hidden in args.hidden_sizes:
            layers += [nn.Linear(width, hidden), ACTIVATIONS[args.activation](), nn.Dropout(args.dropout)]
            width = hidden
        layers.append(nn.Linear(width, args.n_outputs))
        self.net = nn.Sequential(*layers)
        self.args = args

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: shape (batch,) for a binary task, (batch, classes) otherwise."""
        logits = self.net(x)
        return logits.squeeze(-1) if self.args.n_outputs == 1 else logits


def n_outputs_for(n_classes: int) -> int:
    """One logit for a binary task (BCE-with-logits), one per class otherwise (cross-entropy)."""
    if n_classes < 2:
        raise ValueError(f"need at least two classes, got {n_classes}")
    return 1 if n_classes == 2 else n_classes


def loss_for(n_classes: int) -> nn.Module:
    """BCE-with-logits for binary labels, cross-entropy for multi-class; both take raw logits."""
    return nn.BCEWithLogitsLoss() if n_classes == 2 else nn.CrossEntropyLoss()


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Positive-class probability (binary) or the class distribution (multi-class)."""
    return torch.sigmoid(logits) if logits.dim() == 1 else torch.softmax(logits, dim=-1)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameter count."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_model(state: dict) -> MLP:
    """Rebuild a model from a checkpoint dict (read with weights_only=True)."""
    model = MLP(MLPArgs(**state["model_args"]))
    model.load_state_dict(state["state_dict"])
    model.eval()
    return model
