"""The train stage's unmitigated twin: the same network with mitigation off, on the rows before the data remedy."""

import numpy as np
import pandas as pd
import pytest
import torch

from humane.core import io
from humane.core.errors import HumaneError
from humane.core.paths import LABEL_COLUMN, SENSITIVE_PREFIX, WEIGHT_COLUMN, Paths
from humane.fairness.reductions import fit_mitigated
from humane.modeling.features import split_xy
from humane.pipeline.params import load_params
from tasks.evaluate import unmitigated_scores
from tasks.train import twin_record, unmitigated_twin
from tests.conftest import ROOT


def _frame(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    x = rng.normal(size=(rows, 3)).astype(np.float32)
    y = (x[:, 0] + rng.normal(scale=0.5, size=rows) > 0).astype(int)
    return pd.DataFrame(
        {
            "a": x[:, 0],
            "b": x[:, 1],
            "c": x[:, 2],
            LABEL_COLUMN: y,
            f"{SENSITIVE_PREFIX}sex": rng.choice(["f", "m"], rows),
        }
    )


def test_the_twin_trains_on_the_plain_rows_with_mitigation_off(tmp_path):
    rng = np.random.default_rng(0)
    plain, val = _frame(rng, 120), _frame(rng, 40)
    # What the preprocess stage writes with reweigh and resample on: the original rows, then the copies, weighted.
    copies = plain[plain[LABEL_COLUMN] == 1].head(30)
    mitigated = pd.concat([plain, copies], ignore_index=True).assign(**{WEIGHT_COLUMN: rng.uniform(0.5, 2, 150)})
    paths = Paths(tmp_path)
    io.write_parquet(paths.processed_train, mitigated)
    io.write_parquet(paths.processed_val, val)
    report = {"reweigh": {}, "resample": {"rows_before": len(plain), "rows_after": len(mitigated)}}
    io.write_json(paths.mitigation_data, report)
    params = load_params(ROOT / "params.yaml")
    train = params.train.model_copy(update={"max_epochs": 2, "hidden_sizes": [8], "progress": False})
    remedy = params.mitigation.model_copy(
        update={"target": ["sex"], "reweigh": True, "resample": True, "loss": "demographic_parity", "loss_weight": 1.0}
    )
    on = params.model_copy(update={"train": train, "mitigation": remedy})

    layout = (3, [])  # three numeric inputs, no one-hot block
    twin = unmitigated_twin(on, paths, layout)

    off = remedy.model_copy(update={"reweigh": False, "resample": False, "loss": "none", "loss_weight": 0.0})
    x, y, _ = split_xy(plain)
    xv, yv, _ = split_xy(val)
    direct, _ = fit_mitigated(
        x, y, xv, yv, plain, on.model_copy(update={"mitigation": off}), train, tmp_path / "direct", layout=layout
    )
    assert twin is not None and twin.best_epoch == direct.best_epoch
    for name, tensor in direct.model.state_dict().items():
        assert torch.equal(tensor, twin.model.state_dict()[name]), name
    assert (paths.checkpoints_dir / "unmitigated").is_dir()  # apart from the model's own checkpoints
    # Saved as the train stage saves it, the evaluate stage scores it (and the model, were there no twin).
    paths.model.write_bytes(b"the model file the twin was written with")
    made_for = {"remedy": ",".join(remedy.active), "model_md5": io.md5_of(paths.model)}
    torch.save(twin_record(twin, train.model_dump(mode="json"), ["a", "b", "c"], made_for), paths.unmitigated_model)
    scores, how = unmitigated_scores(on, paths, xv, np.zeros(len(xv)))
    with torch.inference_mode():
        expected = torch.sigmoid(direct.model(xv).reshape(-1)).numpy()
    assert np.allclose(scores, expected, atol=1e-6) and "twin" in how
    # A twin left from another model file, or a "same network" note under an in-training remedy, is refused.
    paths.model.write_bytes(b"another model")
    with pytest.raises(HumaneError, match=r"was not written with .*model\.pt for the remedy"):
        unmitigated_scores(on, paths, xv, np.zeros(len(xv)))
    made_for["model_md5"] = io.md5_of(paths.model)
    torch.save(twin_record(None, {}, [], made_for), paths.unmitigated_model)
    with pytest.raises(HumaneError, match="rerun the train stage"):
        unmitigated_scores(on, paths, xv, np.zeros(len(xv)))
    thresholds_only = params.mitigation.model_copy(update={"target": ["sex"], "thresholds": "equalized_odds"})
    post = on.model_copy(update={"mitigation": thresholds_only})
    made_for["remedy"] = ",".join(thresholds_only.active)
    torch.save(twin_record(None, {}, [], made_for), paths.unmitigated_model)
    assert unmitigated_scores(post, paths, xv, np.full(len(xv), 0.3))[0].tolist() == [0.3] * len(xv)
    # Thresholds alone act after training: the model is its own unmitigated network, nothing is trained twice.
    assert unmitigated_twin(post, paths, layout) is None
