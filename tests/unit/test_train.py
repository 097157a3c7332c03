import copy
import re

import pytest
import torch
import yaml
from torch import nn

from humane.core.params import read_raw
from humane.modeling.compute import FLOP_PROBE_ROWS, flops_per_sample
from humane.modeling.model import MLP, MLPArgs, count_parameters, loss_fn
from humane.modeling.params import TrainParams
from humane.modeling.training import TrainingDiverged, fit
from humane.pipeline.params import parse_params
from humane.privacy.params import DPParams
from tests.conftest import ROOT

PRIVACY_PAGE = ROOT / "docs" / "how-to" / "privacy.md"


def _params(**kw):
    base = dict(
        seed=1,
        hidden_sizes=[16],
        dropout=0.0,
        activation="relu",
        lr=0.01,
        weight_decay=0.0,
        batch_size=32,
        max_epochs=30,
        patience=3,
        progress=False,
        dp=DPParams(
            enabled=False,
            target_epsilon=1.0,
            delta=1e-5,
            max_grad_norm=1.0,
            accountant="prv",
            max_physical_batch_size=32,
        ),
    )
    base.update(kw)
    return TrainParams(**base)


def _data(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x[: n // 2], y[: n // 2], x[n // 2 :], y[n // 2 :]


def test_loss_takes_the_raw_logit():
    assert isinstance(loss_fn(), nn.BCEWithLogitsLoss)


def test_network_shape_and_unbounded_logit():
    model = MLP(MLPArgs(n_inputs=20, hidden_sizes=[1000, 500, 100], dropout=0.1, activation="relu"))
    assert isinstance(model.net[-1], nn.Linear) and model.net[-1].out_features == 1  # no activation on the logit
    assert count_parameters(model) == 20 * 1000 + 1000 + 1000 * 500 + 500 + 500 * 100 + 100 + 100 * 1 + 1
    model.eval()
    with torch.no_grad():  # a logit of exactly -7.5 and 12.0: no squashing activation after the last layer
        model.net[-1].weight.zero_()
        model.net[-1].bias.fill_(-7.5)
        low = model(torch.randn(2, 20))
        model.net[-1].bias.fill_(12.0)
        high = model(torch.randn(2, 20))
    assert low.shape == (2,)
    assert low.tolist() == [-7.5, -7.5] and high.tolist() == [12.0, 12.0]


def test_unknown_activation_is_rejected():
    with pytest.raises(ValueError, match="activation"):
        MLP(MLPArgs(3, [4], 0.0, "sigmoidish"))


def test_training_is_deterministic():
    a = fit(*_data(), _params(max_epochs=5))
    b = fit(*_data(), _params(max_epochs=5))
    assert [r["val_loss"] for r in a.history] == [r["val_loss"] for r in b.history]
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_learns_and_restores_the_best_epoch(tmp_path):
    result = fit(*_data(), _params(), checkpoint_dir=tmp_path)
    losses = [r["val_loss"] for r in result.history]
    assert result.best_epoch == losses.index(min(losses)) + 1
    assert result.history[result.best_epoch - 1]["val_accuracy"] > 0.9
    assert len(list(tmp_path.glob("epoch_*.pt"))) == len(result.history)
    # the returned weights are the best epoch's, not the last one's
    best = torch.load(tmp_path / f"epoch_{result.best_epoch:03d}.pt", weights_only=True)
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(tensor, best["state_dict"][name])


def test_early_stopping_stops_after_patience():
    x, y, xv, yv = _data()
    result = fit(x, y, xv, 1 - yv, _params(patience=2, max_epochs=50))  # validation labels flipped: loss rises
    assert len(result.history) == result.best_epoch + 2


def test_a_non_finite_loss_stops_training_with_a_clear_error(tmp_path):
    x, y, xv, yv = _data()
    x[3, 0] = float("nan")  # one bad feature value poisons every weight after the first step
    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch 1: train_loss = nan"):
        fit(x, y, xv, yv, _params(), checkpoint_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing saved as a "best" model


def test_an_exploding_validation_loss_is_caught():
    x, y, xv, yv = _data()
    xv[0, :] = float("inf")  # one unbounded validation row: its loss is not a number
    with pytest.raises(TrainingDiverged, match=r"val_loss = (nan|inf)"):
        fit(x, y, xv, yv, _params(max_epochs=3))


# Adult's processed layout: 5 scaled numeric columns, then one one-hot block per categorical column.
ADULT_LAYOUT = (5, [8, 16, 7, 14, 6, 5, 2, 41])


def _adult_shaped(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n_numeric, widths = ADULT_LAYOUT
    blocks = [nn.functional.one_hot(torch.randint(0, w, (n,), generator=g), w).float() for w in widths]
    x = torch.cat([torch.randn(n, n_numeric, generator=g), *blocks], dim=1)
    return x, (x[:, 0] + x[:, 1] - x[:, 7] > 0).long()


def readme_dp_settings() -> dict[str, object]:
    """The `-S key=value` settings of README's DP-SGD example (`dvc exp run -S train.dp.enabled=true ...`)."""
    (line,) = [m for m in re.findall(r"dvc exp run [^`\n]*", PRIVACY_PAGE.read_text()) if "train.dp." in m]
    return {key: yaml.safe_load(value) for key, value in re.findall(r"-S (\S+?)=(\S+)", line)}


def test_dp_sgd_trains_the_default_model_with_the_readme_settings():
    """params.yaml's model (MLP, periodic numeric embeddings) under README's DP example (ε = 3: batch 4096, lr 0.003).

    The network that leaves training must be plain: the train stage's FLOP probe trains a deep copy of it, which
    ran Opacus' leftover hooks and failed with "'Parameter' object has no attribute '_forward_counter'".
    """
    settings = readme_dp_settings()
    assert settings["train.batch_size"] == 4096 and settings["train.dp.enabled"] is True, settings
    raw = read_raw(ROOT / "params.yaml")
    for key, value in settings.items():
        section = raw
        *parents, leaf = key.split(".")
        for part in parents:
            section = section[part]
        section[leaf] = value
    raw["train"].update(max_epochs=1, progress=False)  # one epoch: the same code path, the same batch settings
    params = parse_params(raw).train
    assert params.model == "mlp" and params.numeric_embedding.kind == "periodic"
    x, y = _adult_shaped(3000, 0)
    result = fit(x[:2400], y[:2400], x[2400:], y[2400:], params, layout=ADULT_LAYOUT)
    assert 0 < result.privacy["epsilon"] <= settings["train.dp.target_epsilon"] + 1e-3
    network = result.model
    assert flops_per_sample(network, x[:FLOP_PROBE_ROWS]) > 0  # what the train stage does next
    assert not any(hasattr(p, a) for p in network.parameters() for a in ("_forward_counter", "grad_sample"))
    assert not any(m._forward_hooks or m._backward_hooks for m in network.modules())
    copy.deepcopy(network).train()(x[:8]).sum().backward()
