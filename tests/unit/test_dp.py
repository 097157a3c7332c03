"""DP-SGD's per-row clipping (humane.privacy.dp.PrivateSGD) against plain autograd, one row at a time."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from humane.core.errors import HumaneError
from humane.modeling.model import build_model
from humane.modeling.params import TrainParams
from humane.pipeline.params import load_params
from humane.privacy.dp import PrivateSGD

ROOT = Path(__file__).resolve().parents[2]
CLIP = 0.93  # between the rows' gradient norms of the networks here: some rows are clipped, some not


def _params(**update: object) -> TrainParams:
    train = load_params(ROOT / "params.yaml").train
    dp = train.dp.model_copy(update={"enabled": True, "max_grad_norm": CLIP, "accountant": "rdp"})  # rdp: fast
    return train.model_copy(update={"dropout": 0.0, "dp": dp, "batch_size": 16, "max_epochs": 1, **update})


def _rows(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    blocks = [nn.functional.one_hot(torch.randint(0, w, (n,), generator=g), w).float() for w in (3, 4)]
    x = torch.cat([torch.randn(n, 3, generator=g), *blocks], dim=1)
    return x, (x[:, 0] > 0).float()


def _expected(network: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's whole gradient norm, and the sum of the rows' gradients clipped to `clip`, by plain autograd."""
    grads = []
    for i in range(len(x)):
        network.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(network(x[i : i + 1]), y[i : i + 1]).backward()
        grads.append(torch.cat([p.grad.flatten() for p in network.parameters()]))
    rows = torch.stack(grads)
    norms = rows.norm(dim=1)
    return norms, (rows * (clip / (norms + 1e-6)).clamp(max=1.0).unsqueeze(1)).sum(0)


def _clipped(network: nn.Module, params: TrainParams, x: torch.Tensor, y: torch.Tensor) -> PrivateSGD:
    engine = PrivateSGD(network, params, 64, torch.Generator().manual_seed(0))
    sums: dict[nn.Parameter, torch.Tensor] = {}
    engine._clipped_sum(x, y, sums)
    engine.sums = torch.cat([sums[p].flatten() for p in network.parameters()])
    return engine


def test_each_row_is_clipped_by_its_whole_gradient_on_the_default_model():
    """params.yaml's network (MLP with periodic embeddings): the ghost norms of its linear layers, the Gram-matrix
    norms of the embeddings' shared layer and the closed-form gradients of the frequencies give each row's whole
    gradient norm, and the clipped sum is the sum of the rows' own clipped gradients."""
    params = _params()
    assert params.model == "mlp" and params.numeric_embedding.kind == "periodic"
    x, y = _rows()
    torch.manual_seed(0)
    network = build_model(params, x.shape[1], (3, [3, 4])).train()
    # The clipping norm between the 8th and 9th row's gradient norm: 8 rows clipped, 8 not, whatever the init
    # (a fixed norm left every row on one side for about 1 init in 40).
    norms, _ = _expected(copy.deepcopy(network), x[:16], y[:16], CLIP)
    clip = norms.sort().values[7:9].mean().item()
    params = params.model_copy(update={"dp": params.dp.model_copy(update={"max_grad_norm": clip})})
    _, clipped = _expected(copy.deepcopy(network), x[:16], y[:16], clip)
    assert any("periodic" in name for name, _ in network.named_parameters())
    engine = _clipped(network, params, x[:16], y[:16])
    assert torch.allclose(engine.last_norms, norms, rtol=1e-4, atol=1e-6)
    assert (norms > clip).sum() == 8 and (norms < clip).sum() == 8  # some rows clipped, some not
    assert torch.allclose(engine.sums, clipped, rtol=1e-4, atol=1e-6)
    engine.close()
    assert not any(m._forward_hooks for m in network.modules())


def test_any_other_layer_gets_its_per_row_gradients_from_torch_func():
    """A layer with no rule of its own (LayerNorm here) is differentiated row by row with vmap."""
    x, y = _rows()
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(10, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 1), nn.Flatten(0))
    norms, clipped = _expected(copy.deepcopy(network), x[:16], y[:16], CLIP)
    engine = _clipped(network, _params(), x[:16], y[:16])
    assert torch.allclose(engine.last_norms, norms, rtol=1e-4, atol=1e-6)
    assert torch.allclose(engine.sums, clipped, rtol=1e-4, atol=1e-6)


class _Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(10, 10)
        self.out = nn.Linear(10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.layer(self.layer(x))).squeeze(-1)


def test_a_layer_run_twice_or_batch_statistics_stop_training():
    """Rows' gradients that the rules would clip wrongly stop training (fail closed), naming why."""
    x, y = _rows()
    with pytest.raises(HumaneError, match="other than once"):
        _clipped(_Twice(), _params(), x[:16], y[:16])
    with pytest.raises(HumaneError, match="BatchNorm1d mixes the rows"):
        PrivateSGD(nn.Sequential(nn.Linear(10, 4), nn.BatchNorm1d(4)), _params(), 64, torch.Generator())


def test_every_step_is_accounted_and_noised_even_when_no_row_is_drawn():
    """Poisson sampling draws each row with probability 1 / batches per epoch; an empty draw still takes a step
    (the noise alone moves the weights), and the accountant records every step at the calibrated noise."""
    params = _params(batch_size=32)
    x, y = _rows()
    network = build_model(params, x.shape[1], (3, [3, 4])).train()
    engine = PrivateSGD(network, params, 64, torch.Generator().manual_seed(0))
    assert engine.sample_rate == 0.5 and engine.per_epoch == 2 and engine.expected_batch == 32
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    before = [p.detach().clone() for p in network.parameters()]
    assert engine.step(optimizer, x[:0], y[:0]) == (0.0, 0)
    assert all(not torch.equal(a, p) for a, p in zip(before, network.parameters(), strict=True))
    sizes = [len(rows) for rows in engine.batches(torch.device("cpu"))]
    assert len(sizes) == 2 and sizes != [32, 32]  # drawn, not fixed
    engine.step(optimizer, x[:20], y[:20])
    assert len(engine.accountant.history) == 1 and engine.accountant.history[0][2] == 2  # (sigma, q, steps)
    assert 0 < engine.epsilon() <= params.dp.target_epsilon


@pytest.mark.slow  # many noised steps: 5 s (prv), 2 s (rdp) (on an idle two-core machine)
@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_the_noise_is_sigma_times_the_clipping_norm_over_the_expected_batch(accountant):
    """An empty draw's gradient is the noise alone: its spread is σ·C / expected batch, σ calibrated to the target ε
    over the planned steps by the configured accountant (prv is the default)."""
    params = _params(batch_size=32, max_epochs=3)
    params = params.model_copy(update={"dp": params.dp.model_copy(update={"accountant": accountant})})
    x, y = _rows()
    network = build_model(params, x.shape[1], (3, [3, 4])).train()
    torch.manual_seed(1)
    engine = PrivateSGD(network, params, 64, torch.Generator().manual_seed(0))
    engine.step(torch.optim.SGD(network.parameters(), lr=0.0), x[:0], y[:0])
    noise = torch.cat([p.grad.flatten() for p in network.parameters()])
    expected = engine.noise_multiplier * CLIP / engine.expected_batch
    assert noise.numel() > 10_000 and abs(noise.mean().item()) < 0.05 * expected
    assert noise.std().item() == pytest.approx(expected, rel=0.03)
    assert engine.noise_multiplier > 0.5
    for _ in range(engine.per_epoch * params.max_epochs - 1):
        engine.accountant.step(noise_multiplier=engine.noise_multiplier, sample_rate=engine.sample_rate)
    # All the planned steps spend the target, within the accountant's calibration tolerance.
    assert engine.epsilon() == pytest.approx(params.dp.target_epsilon, rel=0.02)
