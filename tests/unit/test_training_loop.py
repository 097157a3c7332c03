"""The training loop's named pieces: batch shares, early stopping, DP-SGD's refusals, the checkpoint fingerprint."""

from pathlib import Path

import pytest
import torch

from humane.core.errors import HumaneError
from humane.modeling import training
from humane.modeling.model import build_model
from humane.modeling.params import TrainParams
from humane.modeling.training import (
    RESUME_FILE,
    ProcessGroup,
    Progress,
    fingerprint,
    fit,
    private_engine,
    shares,
)
from humane.privacy.params import DPParams
from tests.conftest import ROOT

DP = DPParams(
    enabled=False, target_epsilon=1.0, delta=1e-5, max_grad_norm=1.0, accountant="prv", max_physical_batch_size=8
)


def _params(**kw) -> TrainParams:
    base = dict(
        seed=3,
        hidden_sizes=[8],
        dropout=0.2,
        activation="relu",
        lr=0.01,
        weight_decay=0.0,
        batch_size=16,
        max_epochs=4,
        patience=10,
        progress=False,
        device="cpu",
        dp=DP,
    )
    return TrainParams(**{**base, **kw})


def _data(n: int = 96):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return x[: n // 2], y[: n // 2], x[n // 2 :], y[n // 2 :]


@pytest.mark.parametrize(("world", "accumulation"), [(1, 1), (1, 3), (3, 1), (2, 4)])
def test_every_row_is_drawn_once_per_epoch_across_processes_and_micro_batches(world, accumulation):
    n, params = 50, _params(batch_size=16, grad_accumulation=accumulation)
    per_rank = [
        list(shares(n, params, ProcessGroup(rank, world), torch.Generator().manual_seed(1), torch.device("cpu")))
        for rank in range(world)
    ]
    steps = {len(steps) for steps in per_rank}
    assert steps == {4}  # ceil(50 / 16) optimiser steps on every process: the all-reduces pair up
    drawn = []
    for step in range(4):
        global_rows = {per_rank[rank][step][1] for rank in range(world)}
        assert global_rows == {16 if step < 3 else 2}  # the global batch's rows, known to every process
        micro = [m for rank in range(world) for m in per_rank[rank][step][0]]
        assert all(len(per_rank[rank][step][0]) <= accumulation for rank in range(world))
        drawn += [int(i) for m in micro for i in m]
    assert sorted(drawn) == list(range(n))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1)).tolist()
    assert drawn == order  # rank r's share is the r-th contiguous slice of the seeded permutation


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience():
    net = torch.nn.Linear(2, 1)
    progress = Progress(best_state={})
    for epoch, loss in enumerate([0.5, 0.4, 0.45, 0.41], start=1):
        with torch.no_grad():
            net.weight.fill_(epoch)
        progress.record({"epoch": epoch, "val_loss": loss}, net, patience=2)
    assert (progress.best_epoch, progress.best_loss, progress.stale, progress.stopped) == (2, 0.4, 2, True)
    assert torch.equal(progress.best_state["weight"], torch.full((1, 2), 2.0))  # a copy, not the live weights
    assert [row["epoch"] for row in progress.history] == [1, 2, 3, 4]


def test_a_dp_sgd_run_refuses_to_resume_and_says_how_to_go_on():
    params = _params(dropout=0.0, dp=DP.model_copy(update={"enabled": True, "accountant": "rdp"}))
    base = build_model(params, 4)
    assert private_engine(base, _params(), 48, torch.Generator(), resume={"epoch": 1}) is None  # DP off: no engine
    with pytest.raises(HumaneError, match=r"DP-SGD run cannot resume.*train\.resume: false"):
        private_engine(base, params, 48, torch.Generator(), resume={"epoch": 1})
    engine = private_engine(base, params, 48, torch.Generator(), resume=None)
    assert engine is not None and engine.close() is base


def test_the_fingerprint_covers_the_callers_code_files_and_modeling_names_no_fairness_file(tmp_path):
    term = tmp_path / "terms.py"
    term.write_text("WEIGHT = 1\n")
    tensors = [torch.arange(4.0), None]
    before = fingerprint(_params(), tensors, "extra", [term])
    assert before == fingerprint(_params(), tensors, "extra", [term])
    assert before != fingerprint(_params(), tensors, "extra")  # the code files are part of it
    assert before != fingerprint(_params(progress=True, lr=0.02), tensors, "extra", [term])
    assert fingerprint(_params(progress=True), tensors, "extra", [term]) == before  # the bar computes nothing
    term.write_text("WEIGHT = 2\n")
    assert fingerprint(_params(), tensors, "extra", [term]) != before
    for source in (ROOT / "humane" / "modeling").glob("*.py"):  # the lower layer reaches up to no fairness file
        assert "mitigation.py" not in source.read_text(), source


def test_a_checkpoint_written_under_other_loss_term_code_starts_afresh(tmp_path, monkeypatch, capsys):
    term = tmp_path / "terms.py"
    term.write_text("A = 1\n")
    x, y, xv, yv = _data()
    real, epochs = training.check_finite, []

    def dies_in_epoch_3(row):
        epochs.append(row["epoch"])
        if len(epochs) == 3:
            raise KeyboardInterrupt
        real(row)

    monkeypatch.setattr(training, "check_finite", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        fit(x, y, xv, yv, _params(), tmp_path / "ckpt", code=[term])
    monkeypatch.setattr(training, "check_finite", real)
    assert torch.load(tmp_path / "ckpt" / RESUME_FILE, weights_only=True)["epoch"] == 2
    term.write_text("A = 2\n")
    afresh = fit(x, y, xv, yv, _params(), tmp_path / "ckpt", code=[term])
    assert afresh.resumed_from == 0 and "other params, data or training code" in afresh.resume_note
    assert sorted(p.name for p in Path(tmp_path / "ckpt").iterdir()) == [f"epoch_00{i}.pt" for i in range(1, 5)]
    assert "starting afresh" in capsys.readouterr().err
