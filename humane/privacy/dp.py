"""Differentially private training: Opacus DP-SGD wrappers for the model, optimizer, loss and data loader."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from humane.core.params import TrainParams


class BatchRows(TensorDataset):
    """Rows fetched a batch at a time by one index operation (the default fetches and stacks row by row)."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[idx] for t in self.tensors)


def as_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Collate for BatchRows: the batch is already stacked."""
    return batch


def make_private(
    model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, params: TrainParams,
    generator: torch.Generator, noise_multiplier: float | None = None,
) -> tuple[Any, nn.Module, Any, nn.Module, Any]:  # fmt: skip
    """Wrap model, optimizer and loss for DP-SGD with noise calibrated to the target epsilon over max_epochs.

    With `noise_multiplier` (a federated site's, calibrated once for all the rounds it may join) that noise is used.

    Ghost clipping computes per-sample gradient norms without materialising per-sample gradients (the periodic
    embeddings' frequencies, used directly in their forward, get functorch per-sample gradients): on full Adult
    with the default model an epoch takes about 2.5x the non-private time (bench/privacy.py --eps 3, one
    thread); Opacus' default hooks took about 5x in a probe.
    """
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator

    model = ModuleValidator.fix(model)  # replaces layers DP-SGD cannot handle (e.g. BatchNorm); a copy
    ModuleValidator.validate(model, strict=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    loader = DataLoader(BatchRows(x, y), batch_size=params.batch_size, generator=generator, collate_fn=as_batch)
    engine = PrivacyEngine(accountant=params.dp.accountant)
    if noise_multiplier is not None:
        model, optimizer, loss_fn, loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            criterion=loss_fn,
            data_loader=loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=params.dp.max_grad_norm,
            grad_sample_mode="ghost",
        )
        return engine, model, optimizer, loss_fn, loader
    model, optimizer, loss_fn, loader = engine.make_private_with_epsilon(
        module=model, optimizer=optimizer, criterion=loss_fn, data_loader=loader,
        target_epsilon=params.dp.target_epsilon, target_delta=params.dp.delta, epochs=params.max_epochs,
        max_grad_norm=params.dp.max_grad_norm, grad_sample_mode="ghost",
    )  # fmt: skip
    return engine, model, optimizer, loss_fn, loader


def release(wrapped: Any) -> nn.Module:
    """The plain network inside Opacus' wrapper, with Opacus' hooks and per-parameter attributes taken off.

    The wrapper registers its per-sample-gradient hooks on the network's own layers, so they outlive training in
    the network it wraps. A later forward pass with gradients on that network, or on a copy of it (the compute
    bill's FLOP probe deep-copies it, and a copied parameter loses Opacus' `_forward_counter`), would run them:
    `AttributeError: 'Parameter' object has no attribute '_forward_counter'`. What leaves training is plain.
    """
    wrapped.cleanup()  # removes the hooks, then grad_sample, _forward_counter, _norm_sample from every parameter
    network = wrapped._module
    for module in network.modules():
        for leftover in ("activations", "max_batch_len"):
            if leftover in vars(module):
                delattr(module, leftover)
    return network
