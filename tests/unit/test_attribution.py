"""Attributions on real preprocessors and networks: completeness, raw columns, a planted signal, reasons, plots."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from humane.core.errors import ConfigError, DataError
from humane.data.schema import Schema
from humane.modeling.attribution import (
    Explainer,
    attribute,
    completeness_gap,
    fit_explainer,
    importance,
    input_columns,
    reason_codes,
    reference_row,
    resolve_method,
    save_plots,
)
from humane.modeling.features import Preprocessor, fit_preprocessor, token_layout
from humane.modeling.model import Constant, ConstantArgs, Ensemble, EnsembleArgs, build_model
from humane.modeling.params import (
    ExplainParams,
    FTTransformerParams,
    NumericEmbeddingParams,
    PreprocessParams,
    TabMParams,
    TrainParams,
)
from humane.privacy.params import DPParams

SCHEMA = Schema(
    target="y",
    positive_label="yes",
    labels=["no", "yes"],
    numeric=["age", "hours", "gain"],
    categorical=["color", "city", "sex"],
    sensitive=["sex"],
    categories={},
    ranges={},
)
PREPROCESS = PreprocessParams(seed=0, val_fraction=0.2, include_sensitive=False, log_transform=["gain"])
DP_OFF = DPParams(
    enabled=False, target_epsilon=1.0, delta=1e-5, max_grad_norm=1.0, accountant="prv", max_physical_batch_size=32
)
PERIODIC = NumericEmbeddingParams(kind="periodic", d_embedding=4, n_frequencies=8)
PLAIN = NumericEmbeddingParams()
MLP_PARAMS = TrainParams(
    seed=0,
    hidden_sizes=[32, 32],
    dropout=0.1,
    activation="relu",
    lr=1e-2,
    weight_decay=0.0,
    batch_size=64,
    max_epochs=1,
    patience=1,
    dp=DP_OFF,
    numeric_embedding=PERIODIC,
)
FT_PARAMS = MLP_PARAMS.model_copy(
    update={
        "model": "ft_transformer",
        "ft_transformer": FTTransformerParams(d_block=16, n_blocks=2, attention_n_heads=2),
    }
)
TABM_PARAMS = MLP_PARAMS.model_copy(
    update={"model": "tabm", "tabm": TabMParams(k=4, d_block=16, n_blocks=2, dropout=0.0)}
)
SETTINGS = ExplainParams()
IG = ExplainParams(method="integrated_gradients")
# Integrated Gradients approximates a path integral (32 Gauss-Legendre steps): for a smooth MLP (GELU, plain numeric
# inputs) each row's attributions must add up to f(row) - f(reference) within this many logits.
IG_TOLERANCE = 1e-2
# Shapley value sampling telescopes exactly per permutation: only float32 rounding is left.
SHAPLEY_TOLERANCE = 1e-4


def _frame(n: int, seed: int) -> pd.DataFrame:
    """Rows whose label is planted in `hours` alone (every other column is noise)."""
    rng = np.random.default_rng(seed)
    hours = rng.normal(40, 10, n)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype(float),
            "hours": hours,
            "gain": rng.exponential(1000, n),
            "color": rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2]),
            "city": rng.choice(["a", "b"], n),
            "sex": rng.choice(["F", "M"], n, p=[0.8, 0.2]),
            "y": np.where(hours > 42, "yes", "no"),
        }
    )


def _train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> torch.nn.Module:
    """Full-batch Adam for a few steps, then eval mode (a briefly trained network, not a random one)."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        logits = model(x)  # TabM while training: one logit per member, each learning every row
        target = y if logits.ndim == 1 else y[:, None].expand_as(logits)
        torch.nn.functional.binary_cross_entropy_with_logits(logits, target).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def data() -> tuple[Preprocessor, pd.DataFrame, torch.Tensor, torch.Tensor]:
    """The fitted preprocessor, the raw rows, their model inputs and labels."""
    frame = _frame(400, 0)
    pre = fit_preprocessor(frame, SCHEMA, PREPROCESS)
    x = torch.from_numpy(pre.transform(frame))
    return pre, frame, x, torch.from_numpy(pre.encode_labels(frame["y"])).float()


@pytest.fixture(scope="module")
def mlp(data) -> torch.nn.Module:
    """An MLP with periodic embeddings trained briefly on the planted signal."""
    pre, _, x, y = data
    torch.manual_seed(0)
    return _train(build_model(MLP_PARAMS, x.shape[1], token_layout(pre)), x, y, 150)


def _network(data, params: TrainParams, seed: int, steps: int) -> torch.nn.Module:
    pre, _, x, y = data
    torch.manual_seed(seed)
    return _train(build_model(params, x.shape[1], token_layout(pre)), x, y, steps)


def test_input_columns_map_each_model_input_to_its_raw_column(data):
    pre, *_ = data
    columns, owner = input_columns(pre)
    assert columns == ["age", "hours", "gain", "color", "city"]  # the blocks' order: num, log, cat
    assert pre.feature_names == [
        "num__age",
        "num__hours",
        "log__gain",
        "cat__color_blue",
        "cat__color_green",
        "cat__color_red",
        "cat__city_a",
        "cat__city_b",
    ]
    assert owner == [0, 1, 2, 3, 3, 3, 4, 4]


def test_reference_row_is_the_median_and_the_commonest_category(data):
    pre, frame, x, _ = data
    row = reference_row(pre, x.numpy())
    assert row[:3] == pytest.approx(np.median(x.numpy()[:, :3], axis=0))
    assert row[3:6].tolist() == [0, 0, 1]  # red, the commonest colour
    commonest_city = frame["city"].value_counts().idxmax()
    assert row[6:].tolist() == ([1, 0] if commonest_city == "a" else [0, 1])


def test_resolve_method_is_shapley_by_default_and_refuses_integrated_gradients_where_it_cannot(data, mlp):
    ft = build_model(FT_PARAMS, data[2].shape[1], token_layout(data[0]))
    plain = build_model(MLP_PARAMS.model_copy(update={"numeric_embedding": PLAIN}), 8, (3, [3, 2]))
    assert resolve_method(plain, "integrated_gradients") == resolve_method(mlp, "integrated_gradients")
    assert resolve_method(plain, "auto") == resolve_method(mlp, "auto") == "shapley_sampling"  # exact sums
    assert resolve_method(ft, "auto") == resolve_method(Constant(ConstantArgs(8, 1)), "auto") == "shapley_sampling"
    assert resolve_method(mlp, "shapley_sampling") == "shapley_sampling"
    with pytest.raises(ConfigError, match=r"FTTransformer.*argmax"):
        resolve_method(ft, "integrated_gradients")
    with pytest.raises(ConfigError, match=r"explain\.method"):
        resolve_method(mlp, "lime")


def test_integrated_gradients_add_up_to_the_logit_difference_per_raw_column(data):
    pre, _, x, _ = data
    smooth = _network(data, MLP_PARAMS.model_copy(update={"activation": "gelu", "numeric_embedding": PLAIN}), 0, 150)
    explainer = fit_explainer(pre, smooth, x.numpy(), IG)
    attributions = attribute(smooth, explainer, x)
    assert explainer.method == "integrated_gradients" and explainer.n_steps == 32
    assert attributions.shape == (len(x), 5) and attributions.dtype == np.float64
    with torch.no_grad():
        difference = (smooth(x) - smooth(torch.tensor([explainer.baseline], dtype=torch.float32))).double().numpy()
    assert np.abs(difference).max() > 10  # a decided network, not a flat one
    assert np.abs(attributions.sum(axis=1) - difference).max() <= IG_TOLERANCE
    assert completeness_gap(smooth, explainer, x, attributions) <= IG_TOLERANCE
    shifted = attributions.copy()
    shifted[3, 0] += 0.5
    assert completeness_gap(smooth, explainer, x, shifted) >= 0.5 - IG_TOLERANCE


def test_periodic_embeddings_get_shapley_sampling_because_the_path_integral_misses(data, mlp):
    # The reason `auto` gives an MLP with periodic embeddings Shapley sampling: along the path from the reference
    # row the embeddings oscillate, and 32 Gauss-Legendre steps miss the logit difference by whole logits.
    pre, _, x, _ = data
    gradients = fit_explainer(pre, mlp, x.numpy(), IG)
    assert completeness_gap(mlp, gradients, x, attribute(mlp, gradients, x)) > 1
    sampling = fit_explainer(pre, mlp, x.numpy(), SETTINGS)
    assert sampling.method == "shapley_sampling"
    assert completeness_gap(mlp, sampling, x, attribute(mlp, sampling, x)) <= SHAPLEY_TOLERANCE


def test_attribute_leaves_the_network_and_the_rows_as_they_were(data, mlp):
    pre, _, x, _ = data
    explainer = fit_explainer(pre, mlp, x.numpy(), IG)
    mlp.zero_grad(set_to_none=True)
    mlp.train()
    try:
        attribute(mlp, explainer, x[:20])
        assert mlp.training and not x.requires_grad
        assert all(p.grad is None for p in mlp.parameters())
    finally:
        mlp.eval()


@pytest.mark.parametrize("kind", ["ft_transformer", "tabm", "ensemble"])
def test_shapley_sampling_is_exactly_complete(data, mlp, kind):
    pre, _, x, _ = data
    if kind in ("ft_transformer", "tabm"):
        model = _network(data, FT_PARAMS if kind == "ft_transformer" else TABM_PARAMS, 0, 40)
    else:
        other = _network(data, MLP_PARAMS, 1, 30)
        model = Ensemble(EnsembleArgs([mlp.args.to_dict(), other.args.to_dict()], [0.6, 0.4]), [mlp, other]).eval()
    explainer = fit_explainer(pre, model, x.numpy(), SETTINGS)
    assert explainer.method == "shapley_sampling"
    attributions = attribute(model, explainer, x)
    assert attributions.shape == (len(x), len(explainer.columns))
    assert np.abs(attributions).max() > 0.1
    assert completeness_gap(model, explainer, x, attributions) <= SHAPLEY_TOLERANCE


def test_shapley_sampling_is_seeded_and_a_row_gets_the_same_values_alone_or_in_a_batch(data, mlp):
    pre, _, x, _ = data
    explainer = fit_explainer(pre, mlp, x.numpy(), SETTINGS)
    state = torch.get_rng_state()
    first = attribute(mlp, explainer, x[:50])
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    assert np.array_equal(first, attribute(mlp, explainer, x[:50]))
    assert np.allclose(first[7], attribute(mlp, explainer, x[7:8])[0], atol=1e-5)
    other_seed = attribute(mlp, dataclasses.replace(explainer, seed=explainer.seed + 1), x[:50])
    assert not np.allclose(first, other_seed)


def test_the_planted_column_is_the_top_one_with_an_interval_above_all_others(data, mlp):
    pre, frame, x, _ = data
    explainer = fit_explainer(pre, mlp, x.numpy(), SETTINGS)
    report = importance(
        attribute(mlp, explainer, x),
        explainer.columns,
        {"sex": frame["sex"]},
        bootstrap=200,
        seed=0,
        top_k=3,
        min_rows=50,
    )
    shares = report["overall"]["shares"]
    assert report["overall"]["top"][0] == "hours" and report["overall"]["rows"] == len(x)
    assert all(shares["hours"]["lo"] > shares[c]["hi"] for c in explainer.columns if c != "hours")
    assert shares["hours"]["lo"] <= shares["hours"]["value"] <= shares["hours"]["hi"]


def test_importance_shares_sum_to_one_and_small_groups_get_no_figure():
    rng = np.random.default_rng(0)
    attributions = rng.normal(size=(300, 4)) * [3.0, 1.0, 0.5, 0.1]
    attributions[:40, 3] += 5.0  # group "b" (rows 0..39) leans on column d
    groups = {"g": pd.Series(["b"] * 40 + ["a"] * 255 + ["c"] * 5)}
    columns = ["a", "b", "c", "d"]
    report = importance(attributions, columns, groups, bootstrap=100, seed=1, top_k=2, min_rows=30)
    assert sum(s["value"] for s in report["overall"]["shares"].values()) == pytest.approx(1.0)
    assert report["overall"]["top"] == ["a", "b"]
    entries = report["groups"]["g"]
    assert {g: e["rows"] for g, e in entries.items()} == {"a": 255, "b": 40, "c": 5}
    for group in ("a", "b"):
        assert sum(s["value"] for s in entries[group]["shares"].values()) == pytest.approx(1.0)
    # Too small to judge: its size only, no figure of its rows (as the audit withholds a small group's rates).
    assert entries["c"] == {"rows": 5, "too_small": True, "shares": {}, "top": []}
    assert "c" not in report["differences"]["g"]
    assert not entries["b"]["too_small"] and entries["b"]["top"][0] == "d"
    d = report["differences"]["g"]["b"]["d"]
    rest = np.abs(attributions[40:295]).mean(axis=0)  # the other judged group's rows: never the small group's
    assert d["value"] == pytest.approx(entries["b"]["shares"]["d"]["value"] - rest[3] / rest.sum())
    assert 0 < d["lo"] <= d["value"] <= d["hi"]
    assert report == importance(attributions, columns, groups, bootstrap=100, seed=1, top_k=2, min_rows=30)
    # One judged group beside a small one: no difference, which would give the small group's shares back.
    lone = importance(
        attributions, columns, {"g": pd.Series(["a"] * 290 + ["c"] * 10)}, bootstrap=20, seed=1, top_k=2, min_rows=30
    )
    assert lone["differences"]["g"] == {} and lone["groups"]["g"]["c"]["shares"] == {}
    # Nothing moved (all attributions zero): no share is measured, so none can pass a rule.
    flat = importance(np.zeros((50, 4)), columns, {}, bootstrap=20, seed=1, top_k=2, min_rows=30)
    assert all(np.isnan(v["value"]) for v in flat["overall"]["shares"].values()) and flat["overall"]["top"] == []


def test_reason_codes_follow_the_decision_and_never_name_an_excluded_column():
    columns = ["sex_proxy", "hours", "age", "gain"]
    attributions = np.array(
        [
            [9.0, 2.0, -1.0, 0.5],  # positive decision: the excluded column is the strongest push
            [9.0, 2.0, -1.0, -3.0],  # negative decision: only columns that pushed down
            [-9.0, -0.1, 0.0, 0.0],  # negative: the excluded column, then one real reason
        ]
    )
    reasons = reason_codes(attributions, np.array([True, False, False]), columns, {"sex_proxy"}, k=3)
    assert reasons == [["hours", "gain"], ["gain", "age"], ["hours"]]
    assert reason_codes(attributions, np.array([True, False, False]), columns, set(), k=1) == [
        ["sex_proxy"],
        ["gain"],
        ["sex_proxy"],
    ]


def test_reason_codes_of_real_attributions_hold_only_allowed_columns_of_the_decision_sign(data, mlp):
    pre, _, x, _ = data
    explainer = fit_explainer(pre, mlp, x.numpy(), SETTINGS)
    attributions = attribute(mlp, explainer, x)
    with torch.no_grad():
        positive = (mlp(x) >= 0).numpy()
    reasons = reason_codes(attributions, positive, explainer.columns, {"hours"}, k=2)
    assert any(reasons) and all(len(r) <= 2 and "hours" not in r for r in reasons)
    for row, names, pos in zip(attributions, reasons, positive, strict=True):
        values = [row[explainer.columns.index(n)] for n in names]
        assert all((v > 0) == pos for v in values) and values == sorted(values, reverse=bool(pos))


def test_explainer_round_trips_and_a_bad_payload_is_refused(data, mlp):
    pre, _, x, _ = data
    explainer = fit_explainer(pre, mlp, x.numpy(), SETTINGS)
    assert Explainer.from_dict(explainer.to_dict()) == explainer
    bad = [
        {**explainer.to_dict(), "method": "auto"},
        {**explainer.to_dict(), "owner": [0, 9]},
        {k: v for k, v in explainer.to_dict().items() if k != "seed"},
        {**explainer.to_dict(), "extra": 1},
        {**explainer.to_dict(), "baseline": [0.0]},
        {**explainer.to_dict(), "n_steps": 0},
        ["not", "a", "dict"],
    ]
    for payload in bad:
        with pytest.raises(DataError, match="explainer"):
            Explainer.from_dict(payload)
    with pytest.raises(DataError, match="8 model inputs"):
        attribute(mlp, explainer, x[:, :5])


def test_save_plots_writes_readable_pngs(tmp_path):
    rng = np.random.default_rng(0)
    groups = {"sex": pd.Series(["F"] * 150 + ["M"] * 45 + ["X"] * 5), "race/ethnicity": pd.Series(["p", "q"] * 100)}
    report = importance(rng.normal(size=(200, 5)), list("abcde"), groups, bootstrap=50, seed=0, top_k=3, min_rows=20)
    paths = save_plots(report, tmp_path / "plots")
    assert [p.name for p in paths] == [
        "attribution_overall.png",
        "attribution_groups_sex.png",
        "attribution_differences_sex.png",
        "attribution_groups_race_ethnicity.png",
        "attribution_differences_race_ethnicity.png",
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.name for p in paths)  # no leftovers
