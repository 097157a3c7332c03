"""Membership-inference audit: a loss-threshold attack (Yeom et al., 2018) on the trained model."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

TARGET_FPR = 0.01


def per_example_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """The loss of every row under the model (binary cross-entropy on the logit)."""
    model.eval()
    with torch.inference_mode():
        losses = nn.functional.binary_cross_entropy_with_logits(model(x), y.float(), reduction="none")
    return losses.numpy().astype(np.float64)


def attack(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> dict[str, float]:
    """Score = −loss (members tend to have lower loss): ROC AUC of telling members apart, TPR at 1% FPR."""
    truth = np.concatenate([np.ones(len(member_losses)), np.zeros(len(nonmember_losses))])
    score = -np.concatenate([member_losses, nonmember_losses])
    fpr, tpr, _ = roc_curve(truth, score)
    return {
        "attack_auc": float(roc_auc_score(truth, score)),
        "attack_tpr_at_1pct_fpr": float(np.interp(TARGET_FPR, fpr, tpr)),
    }


def membership_audit(
    model: nn.Module,
    members: tuple[torch.Tensor, torch.Tensor],
    nonmembers: tuple[torch.Tensor, torch.Tensor],
    n: int,
    seed: int,
) -> dict[str, Any]:
    """Equal-size samples of training members and held-out non-members; attack metrics and generalisation gap."""
    rng = np.random.default_rng(seed)
    size = min(n, len(members[0]), len(nonmembers[0]))
    pick_m = torch.from_numpy(rng.choice(len(members[0]), size, replace=False))
    pick_n = torch.from_numpy(rng.choice(len(nonmembers[0]), size, replace=False))
    xm, ym = members[0][pick_m], members[1][pick_m]
    xn, yn = nonmembers[0][pick_n], nonmembers[1][pick_n]
    loss_m, loss_n = per_example_loss(model, xm, ym), per_example_loss(model, xn, yn)

    def accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
        with torch.inference_mode():
            p = torch.sigmoid(model(x)).numpy()
        predicted = (p >= 0.5).astype(np.int64)
        return float((predicted == y.numpy()).mean())

    return {
        "samples_per_side": int(size),
        **attack(loss_m, loss_n),
        "member_loss": float(loss_m.mean()),
        "nonmember_loss": float(loss_n.mean()),
        "generalization_gap_loss": float(loss_n.mean() - loss_m.mean()),
        "generalization_gap_accuracy": accuracy(xm, ym) - accuracy(xn, yn),
    }
