import pytest
import torch
from torch import nn

from humane.core.params import DPParams, TrainParams
from humane.modeling.model import MLP, MLPArgs, count_parameters, loss_fn
from humane.modeling.training import TrainingDiverged, fit


def _params(**kw):
    base = dict(seed=1, hidden_sizes=[16], dropout=0.0, activation="relu", lr=0.01, weight_decay=0.0,
                batch_size=32, max_epochs=30, patience=3, progress=False,
                dp=DPParams(enabled=False, target_epsilon=1.0, delta=1e-5, max_grad_norm=1.0, accountant="prv",
                            max_physical_batch_size=32))  # fmt: skip
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
    out = model(torch.full((2, 20), 1000.0))
    assert out.shape == (2,) and out.abs().max() > 1


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
