"""TabM (the `tabm` package) as a pipeline network: training, the model file, the served probability, refusals."""

import math

import pytest
import torch

from humane.modeling.model import TabM, architecture_text, build_model, load_model, mean_probability_logit, model_state
from humane.modeling.params import TabMParams
from humane.modeling.training import batch_loss, fit
from tests.unit.test_large import LAYOUT, PERIODIC, _data, _params

SMALL = TabMParams(k=4, d_block=32, n_blocks=2, dropout=0.0)


def _tabm(**kw):
    return _params(model="tabm", tabm=SMALL, lr=0.01, **kw)


def test_tabm_trains_every_member_and_its_file_round_trips_with_weights_only(tmp_path):
    result = fit(*_data(), _tabm(max_epochs=8, numeric_embedding=PERIODIC), layout=LAYOUT)
    network = result.model
    assert isinstance(network, TabM) and not network.training
    assert result.history[result.best_epoch - 1]["val_accuracy"] > 0.8
    x = _data()[2]
    path = tmp_path / "model.pt"
    torch.save(model_state(network), path)
    loaded = load_model(torch.load(path, weights_only=True))
    with torch.inference_mode():
        assert torch.equal(loaded(x), network(x))
        members = network.member_logits(x)
        # The served probability is the members' mean; the members differ (each its own scaling).
        assert members.shape == (len(x), SMALL.k)
        assert torch.allclose(torch.sigmoid(network(x)), torch.sigmoid(members).mean(-1), atol=1e-6)
        assert members.std(-1).mean() > 1e-3
    assert "TabM (tabm): 4 MLPs sharing weights, 2 blocks of width 32" in architecture_text(network)
    assert "periodic embeddings (3 frequencies" in architecture_text(network)


def test_each_member_learns_every_row_and_the_loss_is_their_mean():
    x, y, *_ = _data()
    torch.manual_seed(0)
    network = build_model(_tabm(), x.shape[1], LAYOUT).train()
    criterion = torch.nn.BCEWithLogitsLoss()
    loss = batch_loss(network, criterion, x, y.float(), None, None, None)
    torch.manual_seed(0)
    again = build_model(_tabm(), x.shape[1], LAYOUT).train()
    per_member = [criterion(again(x)[:, j], y.float()) for j in range(SMALL.k)]
    assert math.isclose(loss.item(), torch.stack(per_member).mean().item(), rel_tol=1e-6)
    weighted = batch_loss(again, criterion, x, y.float(), torch.ones(len(x)), None, None)
    assert math.isclose(weighted.item(), loss.item(), rel_tol=1e-5)


def test_the_mean_probability_logit_is_exact_and_finite_at_the_extremes():
    logits = torch.tensor([[40.0, 40.0], [-40.0, -40.0], [0.0, 0.0], [2.0, -2.0], [100.0, -100.0]])
    got = mean_probability_logit(logits)
    assert torch.isfinite(got).all()
    assert torch.allclose(torch.sigmoid(got), torch.sigmoid(logits).mean(-1), atol=1e-7)
    assert got[0] > 35 and got[1] < -35 and got[2] == 0 and abs(got[3]) < 1e-6 and abs(got[4]) < 1e-6


def test_tabm_with_dp_sgd_or_reductions_is_refused_naming_why():
    from humane.pipeline.params import load_params
    from tests.conftest import ROOT

    dp = _tabm().dp.model_copy(update={"enabled": True})
    assert any("train.model tabm" in c for c in _tabm(dp=dp).conflicts())
    params = load_params(ROOT / "params.yaml")
    raw = params.model_dump(mode="json", by_alias=True)
    raw["train"]["model"] = "tabm"
    raw["mitigation"].update(reductions="equalized_odds", thresholds="none")
    with pytest.raises(ValueError, match=r"train.model tabm \(the reductions wrap the MLP\)"):
        type(params).model_validate(raw)


def test_a_layout_that_does_not_cover_the_inputs_is_refused():
    with pytest.raises(ValueError, match="TabM layout"):
        build_model(_tabm(), 9, LAYOUT)


def test_the_served_tabm_scores_raw_rows_as_the_members_mean(tmp_path):
    """The registered pyfunc (MLflow's own loader) around a TabM serves the members' mean probability."""
    import mlflow
    import numpy as np

    from humane.core import io
    from humane.core.paths import Paths
    from humane.data.schema import resolve_schema
    from humane.governance.serving import PROBABILITY
    from humane.governance.tracking import log_serving_model
    from humane.modeling.features import fit_preprocessor, token_layout
    from humane.pipeline.params import load_params
    from humane.privacy.policy import apply_policy, fit_policy
    from tests.conftest import ROOT
    from tests.unit.test_serving import _adult_rows, write_stage_inputs

    paths, params = Paths(tmp_path), load_params(ROOT / "params.yaml")
    raw_train, raw_test = _adult_rows(60, 0), _adult_rows(20, 1)
    policy = fit_policy(params.privacy, raw_train)
    train = apply_policy(policy, raw_train, key=None)
    schema = resolve_schema(params.data, train, policy.to_dict(), params.validate_.min_group_rows)
    pre = fit_preprocessor(train, schema, params.preprocess)
    torch.manual_seed(0)
    network = build_model(_tabm(numeric_embedding=PERIODIC), len(pre.feature_names), token_layout(pre)).eval()
    write_stage_inputs(paths, train, apply_policy(policy, raw_test, key=None), policy, schema, pre)
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
    numeric = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
    rows = raw_test.drop(columns=["income"]).astype(dict.fromkeys(numeric, "float64"))
    answer = served.predict(rows)
    with torch.inference_mode():
        x = torch.from_numpy(pre.transform(apply_policy(policy, rows, key=None)))
        expected = torch.sigmoid(network.member_logits(x)).mean(-1).numpy()
    assert np.allclose(answer[PROBABILITY].to_numpy(), expected, atol=1e-6)
