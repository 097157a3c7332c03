"""Differentially private training: DP-SGD (PrivateSGD, the training loop's) and Opacus' wrappers (federated sites)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from humane.core.errors import HumaneError
from humane.privacy.params import DPTraining


class BatchRows(TensorDataset):
    """Rows fetched a batch at a time by one index operation (the default fetches and stacks row by row)."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[idx] for t in self.tensors)


def as_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Collate for BatchRows: the batch is already stacked."""
    return batch


def make_private(
    model: nn.Module,
    loss_fn: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    params: DPTraining,
    generator: torch.Generator,
    noise_multiplier: float | None = None,
) -> tuple[Any, nn.Module, Any, nn.Module, Any]:
    """Wrap model, optimizer and loss for DP-SGD with noise calibrated to the target epsilon over max_epochs.

    With `noise_multiplier` (a federated site's, calibrated once for all the rounds it may join) that noise is used.

    Used by a federated site's training and as the peer of `bench/privacy.py speed`; the training loop uses
    PrivateSGD below. Ghost clipping computes per-sample gradient norms without materialising per-sample
    gradients, but with a second backward pass: on full Adult with the default model an epoch takes about 1.6-1.9x
    the non-private time (bench/privacy.py speed, one thread), PrivateSGD about 1.2x.
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
        module=model,
        optimizer=optimizer,
        criterion=loss_fn,
        data_loader=loader,
        target_epsilon=params.dp.target_epsilon,
        target_delta=params.dp.delta,
        epochs=params.max_epochs,
        max_grad_norm=params.dp.max_grad_norm,
        grad_sample_mode="ghost",
    )
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


class PrivateSGD:
    """DP-SGD without Opacus' wrapper: Poisson-sampled batches, each row's whole gradient clipped, Gaussian noise.

    What the step adds to the optimiser's gradient is the DP-SGD of Abadi et al. (2016) as Opacus computes it:
    each training row joins a step independently with probability `sample_rate` (1 / batches per epoch, as
    Opacus' Poisson loader), each row's gradient over every parameter is scaled to norm at most
    `train.dp.max_grad_norm` (C), the scaled gradients are summed, N(0, sigma^2 C^2) noise is added to each
    coordinate and the sum is divided by the expected batch size. sigma is calibrated by Opacus' accountant to
    spend `train.dp.target_epsilon` (at `delta`) over `train.max_epochs` epochs, and the same accountant records
    every step taken (an empty batch too: the noise alone), so `epsilon()` is what the epochs actually run spent.

    Why it is cheap: no per-row gradient of a large layer is ever formed. Forward hooks keep each parametrised
    layer's input, one backward pass computes the gradient of the summed row losses with respect to each layer's
    output only, and for a linear layer on a row vector (the MLP's hidden layers) a row's gradient norm is
    |input| * |output gradient| (Goodfellow, 2015; "ghost" norms) and the clipped sum is one matrix product of
    the scaled output gradients with the inputs: what the non-private backward pass computes anyway. Small layers
    on a few tokens (the periodic embeddings' shared linear layer) get their norms from the rows' Gram matrices
    (Li et al., 2022), the embeddings' frequencies their per-row gradients in closed form from the layer's own
    output, and any other layer from torch.func (vmap of grad) on that layer alone.
    A layer called more than once in a forward pass, or a parameter no hooked layer owns, stops training: its
    rows' gradients would be clipped wrongly (fail closed).
    """

    def __init__(self, model: nn.Module, params: DPTraining, rows: int, generator: torch.Generator) -> None:
        from opacus.accountants import create_accountant
        from opacus.accountants.utils import get_noise_multiplier

        refuse_batch_statistics(model)
        self.model, self.rows, self.generator = model, rows, generator
        self.dp = params.dp
        self.per_epoch = max(1, math.ceil(rows / params.batch_size))
        self.sample_rate = 1 / self.per_epoch
        self.expected_batch = max(1, int(rows * self.sample_rate))  # Opacus' DPOptimizer divides by this
        self.noise_multiplier = float(
            get_noise_multiplier(
                target_epsilon=params.dp.target_epsilon,
                target_delta=params.dp.delta,
                sample_rate=self.sample_rate,
                steps=self.per_epoch * params.max_epochs,
                accountant=params.dp.accountant,
            )
        )
        self.accountant = create_accountant(params.dp.accountant)
        self.layers = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
        self.calls: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
        self.recording = False
        self.handles = [m.register_forward_hook(self._record) for m in self.layers]

    def _record(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if not self.recording:
            return
        if len(inputs) != 1 or not isinstance(output, torch.Tensor):
            raise HumaneError(
                f"DP-SGD: layer {type(module).__name__} takes or returns more than one tensor; its "
                "rows' gradients cannot be clipped by humane.privacy.dp"
            )
        self.calls.append((module, inputs[0].detach(), output))

    def batches(self, device: torch.device) -> Iterator[torch.Tensor]:
        """One epoch of logical batches: the row indices each step draws (each row with probability q)."""
        for _ in range(self.per_epoch):
            chosen = torch.rand(self.rows, generator=self.generator) < self.sample_rate
            yield chosen.nonzero().squeeze(1).to(device)

    def step(self, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One DP-SGD step on rows (x, y), in physical batches; returns the summed row loss and the row count."""
        optimizer.zero_grad(set_to_none=True)
        sums: dict[nn.Parameter, torch.Tensor] = {}
        total = 0.0
        for start in range(0, len(x), self.dp.max_physical_batch_size):
            end = start + self.dp.max_physical_batch_size
            total += self._clipped_sum(x[start:end], y[start:end], sums)
        std = self.noise_multiplier * self.dp.max_grad_norm
        for p in self.model.parameters():
            summed = sums.get(p, torch.zeros_like(p))  # an empty batch: the noise alone
            p.grad = (summed + std * torch.randn_like(summed)) / self.expected_batch
        optimizer.step()
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        return total, len(x)

    def _clipped_sum(self, x: torch.Tensor, y: torch.Tensor, sums: dict[nn.Parameter, torch.Tensor]) -> float:
        """Add the rows' clipped gradients to `sums`; returns the rows' summed loss."""
        self.calls, self.recording = [], True
        try:
            logits = self.model(x).float()
        finally:
            self.recording = False
        calls, self.calls = self.calls, []
        if len({id(m) for m, _, _ in calls}) != len(calls) or len(calls) != len(self.layers):
            raise HumaneError(
                "DP-SGD: a layer with parameters ran other than once in the forward pass; its rows' "
                "gradients cannot be clipped by humane.privacy.dp"
            )
        rows = nn.functional.binary_cross_entropy_with_logits(logits, _targets(y, logits), reduction="none")
        rows = rows.mean(-1) if rows.ndim == 2 else rows  # several members (batch, k): each row's mean
        grads = torch.autograd.grad(rows.sum(), [out for _, _, out in calls])
        parts = [_per_row(module, inp, out, g) for (module, inp, out), g in zip(calls, grads, strict=True)]
        norms = torch.stack([sq for part in parts for sq in part.squared_norms()]).sum(0).sqrt()
        scale = (self.dp.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for part in parts:
            for p, clipped in part.clipped(scale):
                sums[p] = sums[p] + clipped if p in sums else clipped
        self.last_norms = norms.detach()
        return float(rows.detach().sum())

    def epsilon(self) -> float:
        """The epsilon (at train.dp.delta) spent by the steps taken so far."""
        return float(self.accountant.get_epsilon(self.dp.delta)) if self.accountant.history else 0.0

    def close(self) -> nn.Module:
        """Take the hooks off and return the plain network."""
        for handle in self.handles:
            handle.remove()
        self.handles = []
        return self.model


def refuse_batch_statistics(model: nn.Module) -> None:
    """Batch normalisation mixes rows: a row's gradient would depend on the others (no per-row clipping)."""
    mixing = [type(m).__name__ for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if mixing:
        raise HumaneError(f"DP-SGD: {', '.join(mixing)} mixes the rows of a batch; use a network without it")


def _targets(y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    y = y.to(logits.dtype)
    return y.unsqueeze(-1).expand_as(logits) if logits.ndim == 2 else y


@dataclass
class _RowGrads:
    """One layer's per-row gradients, in the cheapest form that gives their norms and their clipped sum."""

    params: list[nn.Parameter]
    # a linear layer: its input (b, i) or (b, t, i) and its output gradient (b, o) or (b, t, o)
    inp: torch.Tensor | None = None
    out_grad: torch.Tensor | None = None
    rows: list[torch.Tensor] = field(default_factory=list)  # otherwise: each parameter's per-row gradients

    def squared_norms(self) -> list[torch.Tensor]:
        """Each row's squared gradient norm over this layer's parameters, one (b,) tensor per term."""
        if self.inp is None:
            return [r.flatten(1).pow(2).sum(1) for r in self.rows]
        a, g = self.inp, self.out_grad
        assert g is not None
        if a.ndim == 2:  # |a g^T|^2 = |a|^2 |g|^2
            g2 = g.pow(2).sum(1)
            return [a.pow(2).sum(1) * g2] + ([g2] if len(self.params) == 2 else [])
        # |sum_t g_t a_t^T|^2 = sum_{t,s} (a_t . a_s)(g_t . g_s) (Li et al., 2022, "ghost clipping")
        weight = (torch.bmm(a, a.transpose(1, 2)) * torch.bmm(g, g.transpose(1, 2))).sum((1, 2))
        return [weight] + ([g.sum(1).pow(2).sum(1)] if len(self.params) == 2 else [])

    def clipped(self, scale: torch.Tensor) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """Each parameter's sum over rows of the row's gradient times its clipping factor."""
        if self.inp is None:
            return [(p, torch.tensordot(scale, r, dims=1)) for p, r in zip(self.params, self.rows, strict=True)]
        assert self.out_grad is not None
        scaled = self.out_grad * scale.view(-1, *([1] * (self.out_grad.ndim - 1)))
        scaled, a = scaled.reshape(-1, scaled.shape[-1]), self.inp.reshape(-1, self.inp.shape[-1])
        out = [(self.params[0], scaled.t() @ a)]
        return out + ([(self.params[1], scaled.sum(0))] if len(self.params) == 2 else [])


def _per_row(module: nn.Module, inp: torch.Tensor, output: torch.Tensor, out_grad: torch.Tensor) -> _RowGrads:
    """One layer's per-row gradients from its input, its output and the summed loss's gradient at its output."""
    params = [p for p in module.parameters(recurse=False) if p.requires_grad]
    if isinstance(module, nn.Linear) and inp.ndim == 2:
        if [id(p) for p in params] != [id(p) for p in (module.weight, module.bias) if p is not None]:
            raise HumaneError("DP-SGD: a linear layer with a frozen weight is not supported")
        return _RowGrads(params, inp=inp, out_grad=out_grad)
    if isinstance(module, nn.Linear):  # on a sequence (batch, tokens, features)
        a, g = inp.flatten(1, -2), out_grad.flatten(1, -2)
        if a.shape[1] ** 2 <= a.shape[2] * g.shape[2]:  # few tokens: norms from the rows' Gram matrices
            return _RowGrads(params, inp=a, out_grad=g)
        weight = torch.einsum("bto,bti->boi", g, a)
        return _RowGrads(params, rows=[weight, g.sum(1)] if module.bias is not None else [weight])
    if _is_periodic(module):
        return _RowGrads(params, rows=[_periodic_rows(inp, output, out_grad)])
    return _RowGrads(params, rows=_functional_rows(module, inp, out_grad, params))


def _is_periodic(module: nn.Module) -> bool:
    """rtdl-num-embeddings' periodic layer: cat(cos(2 pi w x), sin(2 pi w x)) with frequencies w of shape (n, k)."""
    return type(module).__name__ == "_Periodic" and type(module).__module__ == "rtdl_num_embeddings"


def _periodic_rows(x: torch.Tensor, output: torch.Tensor, out_grad: torch.Tensor) -> torch.Tensor:
    """Per-row gradients of the periodic layer's frequencies, from its own output (no second forward pass).

    With z = 2 pi w x, the output is [cos z, sin z]; d<out, g>/dw = 2 pi x (-sin z g_cos + cos z g_sin).
    """
    k = output.shape[-1] // 2
    cos, sin = output[..., :k].detach(), output[..., k:].detach()
    return 2 * math.pi * x.unsqueeze(-1) * (cos * out_grad[..., k:] - sin * out_grad[..., :k])


def _functional_rows(
    module: nn.Module, inp: torch.Tensor, out_grad: torch.Tensor, params: list[nn.Parameter]
) -> list[torch.Tensor]:
    """Per-row gradients of any layer's own parameters: vmap over rows of the gradient of <layer(row), grad>."""
    from torch.func import functional_call, grad, vmap

    names = [name for name, p in module.named_parameters(recurse=False) if p.requires_grad]

    def dot(weights: dict[str, torch.Tensor], row: torch.Tensor, row_grad: torch.Tensor) -> torch.Tensor:
        return (functional_call(module, weights, (row.unsqueeze(0),)) * row_grad.unsqueeze(0)).sum()

    weights = {name: p.detach() for name, p in zip(names, params, strict=True)}
    per_row = vmap(grad(dot), in_dims=(None, 0, 0))(weights, inp, out_grad.detach())
    return [per_row[name] for name in names]
