"""The MLP and how its output becomes a probability (binary tasks: the pipeline validates two label values)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


@dataclass(frozen=True)
class MLPArgs:
    """Everything needed to rebuild the network (stored in every checkpoint)."""

    n_inputs: int
    hidden_sizes: list[int]
    dropout: float
    activation: str

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
        for hidden in args.hidden_sizes:
            layers += [nn.Linear(width, hidden), ACTIVATIONS[args.activation](), nn.Dropout(args.dropout)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.args = args

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape (batch,)."""
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


def load_model(state: dict) -> MLP:
    """Rebuild a model from a checkpoint dict (read with weights_only=True)."""
    model = MLP(MLPArgs(**state["model_args"]))
    model.load_state_dict(state["state_dict"])
    model.eval()
    return model
