import pytest
import torch
from torch import nn

from tasks.model import MLP, MLPArgs, count_parameters, loss_for, n_outputs_for
from tasks.params import DPParams, TrainParams
from tasks.train import fit


def _params(**kw):
    base = dict(seed=1, hidden_sizes=[16], dropout=0.0, activation="relu", lr=0.01, weight_decay=0.0,
                batch_size=32, max_epochs=30, patience=3, progress=False,
                dp=DPParams(enabled=False, target_epsilon=1.0, delta=1e-5, max_grad_norm=1.0, accountant="prv",
                            max_physical_batch_size=32))  # fmt: skip
    base.update(kw)
    return TrainParams(**base)


def _data(n=400, classes=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    score = x[:, 0] + 0.5 * x[:, 1]
    y = (score > 0).long() if classes == 2 else torch.bucketize(score, torch.tensor([-0.5, 0.5]))
    return x[: n // 2], y[: n // 2], x[n // 2 :], y[n // 2 :]


def test_loss_matches_the_task():
    assert isinstance(loss_for(2), nn.BCEWithLogitsLoss) and n_outputs_for(2) == 1
    assert isinstance(loss_for(3), nn.CrossEntropyLoss) and n_outputs_for(3) == 3
    with pytest.raises(ValueError):
        n_outputs_for(1)


def test_seed_network_shape_is_expressible_and_logits_are_unbounded():
    model = MLP(MLPArgs(n_inputs=20, n_outputs=10, hidden_sizes=[1000, 500, 100], dropout=0.1, activation="relu"))
    assert isinstance(model.net[-1], nn.Linear)  # no activation on the logits
    assert count_parameters(model) == 20 * 1000 + 1000 + 1000 * 500 + 500 + 500 * 100 + 100 + 100 * 10 + 10
    model.eval()
    out = model(torch.full((2, 20), 1000.0))
    assert out.shape == (2, 10) and out.abs().max() > 1


def test_unknown_activation_is_rejected():
    with pytest.raises(ValueError, match="activation"):
        MLP(MLPArgs(3, 1, [4], 0.0, "sigmoidish"))


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


def test_multiclass_uses_cross_entropy_and_learns():
    result = fit(*_data(600, classes=3), _params(max_epochs=40))
    assert result.model.args.n_outputs == 3
    assert max(r["val_accuracy"] for r in result.history) > 0.8
