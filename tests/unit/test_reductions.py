"""Mitigation by reductions: Fairlearn's ExponentiatedGradient around the MLP, served as the networks' weighted vote."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fairlearn.reductions import DemographicParity, ExponentiatedGradient

from humane.core.errors import ConfigError
from humane.core.params import read_raw
from humane.core.paths import LABEL_COLUMN, SENSITIVE_PREFIX
from humane.fairness import mitigation
from humane.fairness.mitigation import group_keys, training_terms
from humane.fairness.reductions import VOTE_THRESHOLD, MLPClassifier, fit_mitigated, fit_reductions
from humane.fairness.sweep import run_candidate
from humane.modeling import training
from humane.modeling.compute import flops_per_sample
from humane.modeling.features import split_xy
from humane.modeling.model import (
    MLP,
    Constant,
    ConstantArgs,
    Ensemble,
    EnsembleArgs,
    MLPArgs,
    architecture_text,
    load_model,
    model_state,
)
from humane.modeling.training import RESUME_FILE, fingerprint
from humane.pipeline.params import apply_overrides, load_params, parse_params
from tests.unit.test_sweep import DP, LAYOUT, processed
from tests.unit.test_sweep import SMALL as SWEEP_SMALL

ROOT = Path(__file__).resolve().parents[2]
SMALL = {**SWEEP_SMALL, "mitigation.reductions_epochs": 3, "mitigation.reductions_max_iter": 15}


def params_with(**overrides):
    raw = apply_overrides(read_raw(ROOT / "params.yaml"), SMALL)
    return parse_params(apply_overrides(raw, {k.replace("__", "."): v for k, v in overrides.items()}))


@pytest.fixture(scope="module")
def frames():
    return {"train": processed(1500, 0), "val": processed(800, 1), "test": processed(800, 2)}


def test_exponentiated_gradient_cuts_the_dp_gap_on_held_out_rows_and_stays_above_the_majority(frames):
    threads = torch.get_num_threads()
    try:
        plain = run_candidate(params_with(), frames, layout=LAYOUT)
        reduced = run_candidate(params_with(mitigation__reductions="demographic_parity"), frames, layout=LAYOUT)
    finally:
        torch.set_num_threads(threads)
    assert plain.test[DP] > 0.1  # the injected bias is there
    # Stated fraction: the reduction at least halves the test rows' demographic-parity difference.
    assert reduced.test[DP] < 0.5 * plain.test[DP], (plain.test[DP], reduced.test[DP])
    majority = max(frames["test"][LABEL_COLUMN].mean(), 1 - frames["test"][LABEL_COLUMN].mean())
    assert reduced.test["accuracy"] > majority
    assert reduced.methods == ["reductions:demographic_parity"]
    # Its bill counts every inner fit: oracle calls x epochs x rows.
    assert reduced.compute["samples"] % (3 * 1500) == 0 and reduced.compute["samples"] > 3 * 1500


@pytest.mark.slow  # trains a vote of MLPs: 4 s (on an idle two-core machine)
def test_the_vote_is_fairlearns_probability_and_survives_the_model_file(frames):
    # The default numeric embedding (periodic) in every member.
    params = params_with(mitigation__reductions="demographic_parity", train__numeric_embedding={"kind": "periodic"})
    assert params.train.numeric_embedding.kind == "periodic"
    x, y, _ = split_xy(frames["train"])
    xv, yv, _ = split_xy(frames["val"])
    keys = group_keys(frames["train"], params.mitigation.target)
    result, info = fit_reductions(x, y, xv, yv, keys, params.train, params.mitigation, 5, LAYOUT)
    model = result.model
    assert isinstance(model, Ensemble) and len(model.members) == info["members"] >= 1
    assert all(any(n.startswith("embedding.") for n in dict(m.named_parameters())) for m in model.networks)
    assert info["oracle_calls"] >= info["members"] and info["groups"] == ["F", "M"]
    assert math.isclose(sum(info["weights"]), 1.0, rel_tol=1e-6)
    assert "ExponentiatedGradient ensemble: a weighted vote of" in architecture_text(model)
    # The served probability is the weight of the members voting positive: Fairlearn's own _pmf_predict.
    reference = ExponentiatedGradient(
        MLPClassifier.from_params(params.train, epochs=3, threshold=VOTE_THRESHOLD, layout=LAYOUT),
        DemographicParity(difference_bound=0.01),
        eps=0.01,
        max_iter=15,
    )
    reference.fit(x.numpy().astype(np.float64), y.numpy(), sensitive_features=keys.to_numpy())
    xt = split_xy(frames["test"])[0]
    with torch.no_grad():
        ours = torch.sigmoid(model(xt)).numpy()
    theirs = reference._pmf_predict(xt.numpy().astype(np.float64))[:, 1]
    np.testing.assert_allclose(ours, np.clip(theirs, 1e-6, 1 - 1e-6), atol=1e-5)
    rebuilt = load_model(model_state(model))
    with torch.no_grad():
        assert torch.equal(model(xt), rebuilt(xt))
    assert flops_per_sample(model, xt[:8]) == flops_per_sample(model.members[0], xt[:8]) > 0


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"mitigation.reweigh": True}, "mitigation.reweigh or mitigation.resample"),
        ({"mitigation.resample": True}, "mitigation.reweigh or mitigation.resample"),
        ({"mitigation.loss": "equalized_odds", "mitigation.loss_weight": 0.5}, "a fairness loss term"),
        ({"train.model": "ft_transformer"}, "train.model ft_transformer"),
        ({"train.grad_accumulation": 2}, "train.grad_accumulation"),
        ({"train.precision": "bf16"}, "bf16"),
        ({"train.device": "cuda"}, "train.device cuda"),
        ({"train.distributed.nproc_per_node": 2}, "train.distributed"),
    ],
)
def test_reductions_refuse_what_they_cannot_combine_with(overrides, named):
    raw = apply_overrides(read_raw(ROOT / "params.yaml"), {"mitigation.reductions": "equalized_odds"})
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[leaf] = value
    with pytest.raises(ConfigError, match=f"mitigation.reductions equalized_odds is not combined with .*{named}"):
        parse_params(raw)


def test_reductions_are_refused_with_dp_sgd():
    raw = apply_overrides(read_raw(ROOT / "params.yaml"), {"mitigation.reductions": "demographic_parity"})
    raw["train"]["dp"]["enabled"] = True
    with pytest.raises(ConfigError, match="a loss term or reductions is not combined with DP-SGD"):
        parse_params(raw)


def _member(bias: float) -> MLP:
    """A network whose logit is `bias` whatever the row (zero weights): it votes yes exactly when bias >= 0."""
    member = MLP(MLPArgs(2, [3], 0.0, "relu"))
    with torch.no_grad():
        for parameter in member.parameters():
            parameter.zero_()
        member.net[-1].bias.fill_(bias)
    return member.eval()


def test_a_vote_at_the_threshold_is_decided_yes_and_a_constant_member_votes_its_label():
    x = torch.zeros(4, 2)
    members = [_member(1.0), _member(-1.0), Constant(ConstantArgs(2, 1))]
    model = Ensemble(EnsembleArgs([m.args.to_dict() for m in members], [0.3, 0.5, 0.2]), members=members)
    with torch.no_grad():
        p = torch.sigmoid(model(x))
    # Members 0 and 2 vote yes: 0.3 + 0.2 = 0.5, exactly the default threshold, which a vote must reach.
    assert bool((p >= 0.5).all()) and torch.allclose(p, torch.full((4,), 0.5), atol=1e-5)
    assert "1 of them a constant classifier" in architecture_text(model)
    rebuilt = load_model(model_state(model))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    with pytest.raises(ValueError, match="at least one member and one weight >= 0"):
        Ensemble(EnsembleArgs([members[0].args.to_dict()], [-1.0]))


def test_the_train_stages_checkpoint_fingerprint_covers_the_loss_terms_code(tmp_path, monkeypatch):
    """fit_mitigated hands mitigation.py to the fingerprint: an edit of the loss terms' code never resumes."""
    rng = np.random.default_rng(0)

    def rows(n: int) -> pd.DataFrame:
        x = rng.normal(size=(n, 3)).astype(np.float32)
        y = (x[:, 0] + rng.normal(scale=0.5, size=n) > 0).astype(int)
        frame = {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], LABEL_COLUMN: y}
        return pd.DataFrame({**frame, f"{SENSITIVE_PREFIX}sex": rng.choice(["f", "m"], n)})

    plain, val = rows(120), rows(40)
    params = load_params(ROOT / "params.yaml")
    train = params.train.model_copy(update={"max_epochs": 3, "hidden_sizes": [8], "progress": False, "device": "cpu"})
    remedy = params.mitigation.model_copy(
        update={"target": ["sex"], "reductions": "none", "loss": "demographic_parity", "loss_weight": 1.0}
    )
    on = params.model_copy(update={"train": train, "mitigation": remedy})
    weights, groups, penalty, _ = training_terms(plain, remedy, 5)
    (x, y, _), (xv, yv, _) = split_xy(plain), split_xy(val)
    real = training.check_finite

    def killed_in_epoch_2(row):  # the run dies after epoch 1's checkpoint: resume.pt is left, as after a kill
        if row["epoch"] == 2:
            raise KeyboardInterrupt
        real(row)

    monkeypatch.setattr(training, "check_finite", killed_in_epoch_2)
    ckpt, terms = tmp_path / "ckpt", dict(sample_weight=weights, groups=groups, penalty=penalty, layout=(3, []))
    with pytest.raises(KeyboardInterrupt):
        fit_mitigated(x, y, xv, yv, plain, on, train, ckpt, **terms)
    monkeypatch.setattr(training, "check_finite", real)

    recorded = torch.load(ckpt / RESUME_FILE, weights_only=True)["fingerprint"]
    tensors, extra = [x, y, xv, yv, weights, groups], remedy.model_dump_json()
    assert groups is not None and penalty is not None  # a loss term, so mitigation.py's code computes the loss
    assert recorded == fingerprint(train, tensors, extra, [Path(mitigation.__file__)])
    assert recorded != fingerprint(train, tensors, extra)  # without the loss terms' code it would not match
    resumed, _ = fit_mitigated(x, y, xv, yv, plain, on, train, ckpt, **terms)
    assert resumed.resumed_from == 1  # the same code, params and data: the rerun goes on after epoch 1
