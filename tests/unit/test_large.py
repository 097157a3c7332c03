"""Large models: the FT-Transformer beside the MLP, its 10^8-parameter size, accumulation, resume, compute bill."""

import math

import mlflow
import numpy as np
import pytest
import torch

from humane.core import io
from humane.core.errors import ConfigError, HumaneError
from humane.core.paths import Paths
from humane.data.schema import resolve_schema
from humane.fairness.policy import Policy
from humane.governance.card import Card, add_compute
from humane.governance.gate import compute_metrics, decide
from humane.governance.serving import PROBABILITY
from humane.governance.tracking import log_serving_model
from humane.modeling.compute import ComputeMeter, bill, flops_per_sample
from humane.modeling.features import fit_preprocessor, token_layout
from humane.modeling.model import (
    FTTransformer,
    architecture_text,
    build_model,
    count_parameters,
    load_model,
    model_state,
)
from humane.modeling.params import ComputeParams, FTTransformerParams, NumericEmbeddingParams, TrainParams
from humane.modeling.training import RESUME_FILE, fit
from humane.pipeline.params import load_params, parse_params
from humane.privacy.params import DPParams
from humane.privacy.policy import apply_policy, fit_policy
from tests.conftest import ROOT
from tests.unit.test_serving import _adult_rows, write_stage_inputs

DP_OFF = DPParams(
    enabled=False, target_epsilon=1.0, delta=1e-5, max_grad_norm=1.0, accountant="prv", max_physical_batch_size=32
)
TINY = FTTransformerParams(d_block=16, n_blocks=2, attention_n_heads=2, attention_dropout=0.0, ffn_dropout=0.0)


def _params(**kw) -> TrainParams:
    base = dict(
        seed=1,
        model="ft_transformer",
        hidden_sizes=[16],
        dropout=0.0,
        activation="relu",
        lr=0.003,
        weight_decay=0.0,
        batch_size=32,
        max_epochs=4,
        patience=10,
        progress=False,
        dp=DP_OFF,
        ft_transformer=TINY,
        compute=ComputeParams(energy=False),
    )
    base.update(kw)
    return TrainParams(**base)


def _data(n=320, seed=0):
    """Two numeric columns and two one-hot blocks (widths 3 and 2); the label depends on both kinds."""
    g = torch.Generator().manual_seed(seed)
    num = torch.randn(n, 2, generator=g)
    a, b = torch.randint(0, 3, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)
    x = torch.cat([num, torch.nn.functional.one_hot(a, 3), torch.nn.functional.one_hot(b, 2)], dim=1).float()
    y = ((num[:, 0] + (a == 2).float() * 1.5 - (b == 1).float()) > 0).long()
    half = n // 2
    return x[:half], y[:half], x[half:], y[half:]


LAYOUT = (2, [3, 2])


def test_one_hot_blocks_become_category_tokens_and_an_unseen_category_its_own():
    model = build_model(_params(), 7, LAYOUT)
    assert isinstance(model, FTTransformer)
    x = _data()[0][:3].clone()
    x[2, 2:5] = 0.0  # a category the encoder never saw: an all-zero block
    tokens = model.tokens(x)
    assert tokens.shape == (3, 1 + 2 + 2, 16)  # [CLS], two numeric, two categorical
    table = model.net.cat_embeddings.embeddings[0].weight
    assert table.shape[0] == 4  # three categories + unseen
    bias = model.net.cat_embeddings.bias[0]
    assert torch.allclose(tokens[2, 3], table[3] + bias)
    chosen = int(x[0, 2:5].argmax())
    assert torch.allclose(tokens[0, 3], table[chosen] + bias)


def test_a_layout_that_does_not_cover_the_inputs_is_refused():
    with pytest.raises(ValueError, match="do not add up"):
        build_model(_params(), 8, LAYOUT)


def test_transformer_trains_and_its_file_round_trips_with_weights_only(tmp_path):
    result = fit(*_data(), _params(max_epochs=6), layout=LAYOUT)
    assert result.history[result.best_epoch - 1]["val_accuracy"] > 0.8
    path = tmp_path / "model.pt"
    torch.save(model_state(result.model), path)
    loaded = load_model(torch.load(path, weights_only=True))
    x = _data()[2]
    assert torch.equal(loaded(x), result.model(x))


@pytest.mark.slow  # a 10^8-parameter step: 3 s (on an idle two-core machine)
def test_the_1e8_parameter_configuration_builds_and_steps_once():
    big = FTTransformerParams(d_block=1024, n_blocks=12, attention_n_heads=16, checkpointing=True)
    model = build_model(_params(ft_transformer=big), 7, LAYOUT)
    assert count_parameters(model) >= 1e8
    model.train()
    x, y = _data(8)[:2]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    before = model.net.backbone.blocks[0]["ffn"].linear1.weight.detach().clone()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y.float())
    loss.backward()
    optimizer.step()
    assert math.isfinite(loss.item())
    assert not torch.equal(before, model.net.backbone.blocks[0]["ffn"].linear1.weight)


def test_activation_checkpointing_gives_the_same_gradients():
    grads = []
    for on in (False, True):
        torch.manual_seed(0)
        ft = TINY.model_copy(update={"checkpointing": on, "attention_dropout": 0.2, "ffn_dropout": 0.1})
        model = build_model(_params(ft_transformer=ft), 7, LAYOUT).train()
        torch.manual_seed(1)  # the same dropout masks: checkpoint replays the RNG state in the recomputation
        model(_data()[0]).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_gradient_accumulation_matches_one_batch():
    one = fit(*_data(), _params(model="mlp", max_epochs=3, batch_size=30))
    two = fit(*_data(), _params(model="mlp", max_epochs=3, batch_size=30, grad_accumulation=4))  # 8+8+8+6 rows
    for a, b in zip(one.history, two.history, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


def test_dp_with_the_transformer_is_refused_naming_why():
    raw = load_params(ROOT / "params.yaml").model_dump(mode="json", by_alias=True)
    raw["train"].update(model="ft_transformer")
    raw["train"]["dp"]["enabled"] = True
    raw["mitigation"].update(thresholds="none")
    with pytest.raises(ConfigError, match=r"DP-SGD.*ft_transformer.*per-row clipping rule"):
        parse_params(raw)


def test_fit_refuses_dp_with_the_transformer_too():
    with pytest.raises(HumaneError, match="per-row clipping rule"):
        fit(*_data(), _params(dp=DP_OFF.model_copy(update={"enabled": True})), layout=LAYOUT)


class Crash(Exception):
    pass


def _crash_after(batches: int):
    """A no-op fairness term that raises after some batches: a run that dies mid-training."""
    calls = {"n": 0}

    def penalty(logits, groups, labels):
        calls["n"] += 1
        if calls["n"] > batches:
            raise Crash
        return logits.sum() * 0.0

    return penalty


def test_a_crashed_run_resumes_to_the_same_result_and_other_params_start_afresh(tmp_path, capsys):
    x, y, xv, yv = _data()
    groups = torch.ones(len(x), 1)
    params = _params(model="mlp", max_epochs=5, dropout=0.3)  # dropout: the RNG state must be restored too
    whole = fit(x, y, xv, yv, params, tmp_path / "a", groups=groups, penalty=_crash_after(10**9))
    with pytest.raises(Crash):  # 5 batches per epoch: dies in epoch 3
        fit(x, y, xv, yv, params, tmp_path / "b", groups=groups, penalty=_crash_after(12))
    assert torch.load(tmp_path / "b" / RESUME_FILE, weights_only=True)["epoch"] == 2
    resumed = fit(x, y, xv, yv, params, tmp_path / "b", groups=groups, penalty=_crash_after(10**9))
    assert resumed.resumed_from == 2 and "resumed after epoch 2" in resumed.resume_note
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in whole.history]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history] == strip
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not (tmp_path / "b" / RESUME_FILE).exists()  # finished: nothing left to resume

    with pytest.raises(Crash):
        fit(x, y, xv, yv, params, tmp_path / "c", groups=groups, penalty=_crash_after(12))
    other = fit(
        x, y, xv, yv, params.model_copy(update={"lr": 0.01}), tmp_path / "c", groups=groups, penalty=_crash_after(10**9)
    )
    assert other.resumed_from == 0 and "other params, data or training code" in other.resume_note
    assert "starting afresh" in capsys.readouterr().err


def test_flops_are_counted_per_sample_and_leave_the_model_untouched():
    model = build_model(_params(model="mlp", hidden_sizes=[10]), 7)
    x = _data()[0][:4]
    before = [p.detach().clone() for p in model.parameters()]
    flops = flops_per_sample(model, x)
    # forward 2*(7*10 + 10*1) per row; backward twice that for weights and inputs (minus the first layer's input)
    assert 3 * 2 * (7 * 10 + 10) - 2 * 7 * 10 <= flops <= 3 * 2 * (7 * 10 + 10)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_the_bill_measures_energy_offline_and_feeds_the_card_and_the_gate():
    with ComputeMeter(ComputeParams(country_iso_code="FRA")) as meter:
        sum(i * i for i in range(3_000_000))
    figures = bill(
        meter,
        n_parameters=10,
        flops=100.0,
        samples=1000,
        train_seconds=0.5,
        device="cpu",
        world_size=1,
        precision="fp32",
    )
    assert figures["energy_kwh"] > 0 and figures["co2_kg"] > 0 and figures["peak_rss_gb"] > 0
    assert figures["samples_per_second"] == 2000 and figures["stage_seconds"] > 0
    card = Card()
    add_compute(card, figures)
    text = card.to_markdown()
    assert "## Compute" in text and "kWh" in text and "grid of FRA" in text
    metrics = compute_metrics({"compute": figures})
    assert metrics["compute.n_parameters"] == 10.0 and "compute.device" not in metrics
    policy = Policy(False, {}, {}, {"compute.energy_kwh": figures["energy_kwh"] / 2}, {}, {})
    decision = decide(policy, metrics, None)
    assert not decision.passed and "compute.energy_kwh" in decision.reasons[0]
    unmeasured = decide(policy, compute_metrics({"compute": {"n_parameters": 10}}), None)
    assert not unmeasured.passed and "not measured" in unmeasured.reasons[0]


def test_a_resumed_runs_energy_adds_the_earlier_attempts_at_this_attempts_power():
    with ComputeMeter(ComputeParams(country_iso_code="FRA")) as meter:
        sum(i * i for i in range(3_000_000))
    common = dict(n_parameters=10, flops=100.0, samples=1000, device="cpu", world_size=1, precision="fp32")
    fresh = bill(meter, train_seconds=meter.seconds, **common)
    assert "energy_earlier_attempts_kwh" not in fresh and "note" not in fresh
    # Earlier attempts trained three times as long as this one: four times this attempt's energy in all.
    resumed = bill(meter, train_seconds=4 * meter.seconds, prior_train_seconds=3 * meter.seconds, **common)
    assert resumed["energy_kwh"] == pytest.approx(4 * fresh["energy_kwh"])
    assert resumed["co2_kg"] == pytest.approx(4 * fresh["co2_kg"])
    assert resumed["energy_earlier_attempts_kwh"] == pytest.approx(3 * fresh["energy_kwh"])
    assert "estimated for the earlier, interrupted attempts" in resumed["note"]
    card = Card()
    add_compute(card, resumed)
    assert "earlier, interrupted attempts" in card.to_markdown()


def test_the_served_transformer_scores_raw_rows_like_the_network(tmp_path):
    paths = Paths(tmp_path)
    params = load_params(ROOT / "params.yaml")
    raw_train, raw_test = _adult_rows(60, 0), _adult_rows(20, 1)
    policy = fit_policy(params.privacy, raw_train)
    train, test = apply_policy(policy, raw_train, key=None), apply_policy(policy, raw_test, key=None)
    schema = resolve_schema(params.data, train, policy.to_dict(), params.validate_.min_group_rows)
    pre = fit_preprocessor(train, schema, params.preprocess)
    layout = token_layout(pre)
    assert layout[0] + sum(layout[1]) == len(pre.feature_names) and layout[1]
    torch.manual_seed(0)
    network = build_model(_params(), len(pre.feature_names), layout).eval()
    write_stage_inputs(paths, train, test, policy, schema, pre)
    torch.save(model_state(network), paths.model)
    io.write_json(paths.thresholds, {"constraint": "none"})
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        experiment = mlflow.create_experiment("serving", artifact_location=(tmp_path / "mlartifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = log_serving_model(paths, 0.5, {*policy.masked_columns, *schema.sensitive})
        served = mlflow.pyfunc.load_model(info.model_uri)
    finally:
        mlflow.set_tracking_uri(None)
    rows = raw_test.drop(columns=["income"]).astype(
        {c: "float64" for c in ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]}
    )
    rows.loc[0, "occupation"] = "Astronaut"  # unseen: an all-zero one-hot block, its own token
    answer = served.predict(rows)
    masked = apply_policy(policy, rows, key=None)
    with torch.inference_mode():
        expected = torch.sigmoid(network(torch.from_numpy(pre.transform(masked)))).numpy()
    assert np.allclose(answer[PROBABILITY].to_numpy(), expected, atol=1e-6)


def test_a_missing_gpu_is_a_clear_error_when_cuda_is_demanded():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(HumaneError, match="no CUDA device"):
        fit(*_data(), _params(device="cuda"))


def test_bf16_autocast_learns_like_fp32():
    """Under bf16 the loss falls below chance (ln 2 = 0.69) and ends near where fp32 ends, by its own arithmetic."""
    bf16, fp32 = (fit(*_data(), _params(precision=p, max_epochs=4)).history for p in ("bf16", "fp32"))
    losses = [row["val_loss"] for row in bf16]
    assert all(math.isfinite(loss) for loss in losses)
    # Over 30 seeds bf16 ended at 0.28-0.61, at most 0.885 of its first epoch's loss, and up to 0.045 from fp32
    # (this seed: 0.0016); the bounds of seeds 1-4 (0.8 of the first, 0.6, 0.03 apart) failed 5 of the 30.
    assert losses[-1] < 0.95 * losses[0] and losses[-1] < 0.65, losses
    assert abs(losses[-1] - fp32[-1]["val_loss"]) < 0.06, (losses, fp32)
    assert losses != [row["val_loss"] for row in fp32]  # autocast ran: bf16 rounding moves the figures


PERIODIC = NumericEmbeddingParams(kind="periodic", d_embedding=4, n_frequencies=3, frequency_init_scale=0.5)


@pytest.mark.parametrize("model", ["mlp", "ft_transformer"])
def test_periodic_numeric_embeddings_train_and_survive_the_model_file(model):
    params = _params(model=model, numeric_embedding=PERIODIC, max_epochs=3)
    with pytest.raises(ValueError, match="numeric_embedding periodic needs the preprocessor's layout"):
        build_model(params, 7)
    result = fit(*_data(), params, layout=LAYOUT)
    network = result.model
    trained = {name for name, p in network.named_parameters() if "embedding" in name}
    # MLP: its own periodic block; FT-Transformer: rtdl's numeric token embeddings replaced by periodic ones.
    assert any(".periodic." in name or name.startswith("embedding.periodic") for name in trained), trained
    assert "periodic embeddings (3 frequencies, init scale 0.5)" in architecture_text(network)
    x = _data()[2]
    rebuilt = load_model(model_state(network))
    with torch.no_grad():
        assert torch.equal(network.eval()(x), rebuilt(x))
        # The numeric columns go through the embedding: a changed numeric value changes the logit.
        moved = x.clone()
        moved[:, 0] += 1.0
        assert not torch.allclose(rebuilt(x), rebuilt(moved))


def test_an_mlp_model_file_from_before_numeric_embeddings_still_loads():
    old = build_model(_params(model="mlp"), 7)
    state = model_state(old)
    for key in ("n_numeric", "embedding"):
        state["model_args"].pop(key)
    x = _data()[0]
    with torch.no_grad():
        assert torch.equal(old.eval()(x), load_model(state)(x))


@pytest.mark.slow  # DP-SGD training: 3 s (on an idle two-core machine)
def test_dp_sgd_trains_an_mlp_with_periodic_embeddings():
    dp = DP_OFF.model_copy(update={"enabled": True, "target_epsilon": 3.0})
    params = _params(model="mlp", numeric_embedding=PERIODIC, dp=dp, max_epochs=2, resume=False)
    result = fit(*_data(), params, layout=LAYOUT)
    assert result.privacy["dp_enabled"] is True
    assert 0 < result.privacy["epsilon"] <= 3.0
    assert any(name.startswith("embedding.") for name in result.model.state_dict())
    # The training rows' un-noised loss is not covered by ε: the history keeps only the validation figures.
    assert result.history and all("train_loss" not in row and "val_loss" in row for row in result.history)
