"""Counterfactuals: the cheapest change of actionable inputs that flips a refused row, judged by the real model."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from humane.core.errors import DataError
from humane.modeling.counterfactual import CounterfactualSpace, fit_space, search
from humane.modeling.model import MLP, MLPArgs, probabilities

NUMERIC, CATEGORICAL = ["income", "hours", "age"], ["job", "sex"]
ACTIONABLE = ["income", "hours", "job"]  # age immutable, sex sensitive: never in the space
FROZEN = {"age", "sex"}


def _rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "income": rng.normal(40, 15, n).round(),
            "hours": rng.integers(10, 70, n).astype(np.float64),
            "age": rng.integers(18, 80, n).astype(np.float64),
            "job": rng.choice(["clerk", "manager", "crafts"], n),
            "sex": rng.choice(["F", "M"], n),
        }
    )


def _label(frame: pd.DataFrame) -> np.ndarray:
    score = 0.08 * (frame["income"] - 45) + 0.05 * (frame["hours"] - 40) + 1.5 * (frame["job"] == "manager")
    return (score + 0.03 * (frame["age"] - 45) > 0).to_numpy()


@pytest.fixture(scope="module")
def served():
    """A real torch MLP on a real sklearn preprocessor, deciding with a per-group threshold on sex."""
    train = _rows(800, 0)
    pre = ColumnTransformer([("num", StandardScaler(), NUMERIC), ("cat", OneHotEncoder(), CATEGORICAL)])
    x = torch.from_numpy(pre.fit_transform(train).astype(np.float32))
    y = torch.from_numpy(_label(train).astype(np.float32))
    torch.manual_seed(0)
    network = MLP(MLPArgs(x.shape[1], [16], 0.0, "relu"))
    optimizer = torch.optim.Adam(network.parameters(), lr=0.03)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(network(x), y).backward()
        optimizer.step()
    network.eval()
    thresholds = {"F": 0.45, "M": 0.55}  # a post-processed model's thresholds: the group decides the cut

    def decide(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            p = probabilities(network(torch.from_numpy(pre.transform(frame).astype(np.float32)))).numpy()
        return p >= frame["sex"].map(thresholds).to_numpy(), p.astype(np.float64)

    return train, decide


def _apply(row: pd.DataFrame, found: dict) -> pd.DataFrame:
    """The one-row frame with the counterfactual's changes made."""
    changed = row.reset_index(drop=True).copy()
    for column, change in found["changes"].items():
        assert change["from"] == changed.at[0, column]
        changed.at[0, column] = change["to"]
    return changed


def test_each_counterfactual_flips_the_served_decision_and_changes_only_actionable_columns(served):
    train, decide = served
    space = fit_space(train, ACTIONABLE, NUMERIC)
    assert set(space.columns) == set(ACTIONABLE)
    test = _rows(600, 1)  # 600 rows: some refused row needs a pair for every seed tried (300 rows: none for 2 of 40)
    decision, _ = decide(test)
    refused = test[~decision].reset_index(drop=True)
    assert len(refused) > 50
    found = search(refused, decide, space, frozen=FROZEN)
    assert len(found) == len(refused)
    flipped = [i for i, f in enumerate(found) if f is not None]
    assert len(flipped) > 0.5 * len(refused)  # most refused rows are one or two changes away here
    for i in flipped:
        assert set(found[i]["changes"]) <= set(ACTIONABLE) and 1 <= len(found[i]["changes"]) <= 2
        changed = _apply(refused.iloc[[i]], found[i])
        kept = refused.columns.difference(list(found[i]["changes"]))  # age and sex among them, always
        assert changed[kept].equals(refused.iloc[[i]][kept].reset_index(drop=True))
        again, p = decide(changed)  # re-scored through the same path: accepted, with the reported probability
        assert again[0] and p[0] == pytest.approx(found[i]["probability"], abs=1e-6)
    assert any(len(found[i]["changes"]) == 2 for i in flipped)  # pairs are searched too
    json.dumps(found)  # JSON-ready as the server returns it


def test_a_space_holding_a_frozen_column_is_refused(served):
    train, decide = served
    space = fit_space(train, ["income", "age"], NUMERIC)
    with pytest.raises(DataError, match=r"columns \['age'\] must never change"):
        search(_rows(3, 2), decide, space, frozen=FROZEN)
    with pytest.raises(DataError, match=r"the rows lack the space's columns \['income'\]"):
        search(_rows(3, 2).drop(columns=["income"]), decide, fit_space(train, ["income"], NUMERIC))


def _rule(frame: pd.DataFrame, *, pair: bool = False, triple: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A planted decision: high income or a manager (pair: both; triple: both and long hours)."""
    rich, manager, long = frame["income"] >= 50, frame["job"] == "manager", frame["hours"] >= 60
    yes = (rich & manager & long) if triple else (rich & manager) if pair else (rich | manager)
    return yes.to_numpy(), np.where(yes, 0.9, 0.1 + 0.001 * frame["income"].to_numpy())


def test_the_cheaper_change_wins():
    train = pd.DataFrame(
        {"income": np.arange(0.0, 101.0), "hours": 40.0, "job": ["clerk", "manager"] * 50 + ["crafts"]}
    )
    space = fit_space(train, ["income", "hours", "job"], ["income", "hours"])
    assert space.scales["income"] == pytest.approx(50.0) and "hours" not in space.columns  # constant: nothing to try
    assert space.candidates["income"] == pytest.approx([5, 15, 25, 35, 45, 55, 65, 75, 85, 95])
    assert space.candidates["job"] == ["clerk", "crafts", "manager"]
    rows = pd.DataFrame({"income": [44.0, 0.0], "hours": 40.0, "job": "clerk"})
    near, far = search(rows, _rule, space)
    assert near["changes"] == {"income": {"from": 44.0, "to": 55.0}} and near["cost"] == pytest.approx(11 / 50)
    assert far["changes"] == {"job": {"from": "clerk", "to": "manager"}} and far["cost"] == 1.0  # 55/50 > 1
    assert CounterfactualSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space


def test_two_changes_when_one_is_not_enough_else_none():
    train = pd.DataFrame(
        {
            "income": np.arange(0.0, 101.0),
            "hours": np.arange(0.0, 101.0) % 70,
            "job": ["clerk", "manager"] * 50 + ["crafts"],
        }
    )
    space = fit_space(train, ["income", "hours", "job"], ["income", "hours"])
    rows = pd.DataFrame({"income": [30.0], "hours": [40.0], "job": ["clerk"]})
    (pair,) = search(rows, lambda f: _rule(f, pair=True), space)
    # The cheapest of the pairs: the smallest income that, with a manager's job, is accepted (55, not 95).
    assert pair["changes"] == {"income": {"from": 30.0, "to": 55.0}, "job": {"from": "clerk", "to": "manager"}}
    assert pair["cost"] == pytest.approx(25 / 50 + 1.0)
    assert search(rows, lambda f: _rule(f, pair=True), space, max_changes=1) == [None]
    assert search(rows, lambda f: _rule(f, triple=True), space) == [None]  # three changes needed: none found


def test_a_space_that_is_not_one_is_refused():
    with pytest.raises(DataError, match="expected the keys candidates and scales"):
        CounterfactualSpace.from_dict({"candidates": {}})
    with pytest.raises(DataError, match=r"not positive \['x'\]"):
        CounterfactualSpace.from_dict({"candidates": {"x": [1.0]}, "scales": {"x": 0}})


def test_an_immutable_column_that_is_not_an_input_is_refused_by_name():
    from humane.core.errors import ConfigError
    from humane.modeling.counterfactual import check_immutable

    check_immutable(["age", "sex"], ["age", "hours"], ["sex"])  # an input, and a sensitive feature: fine
    with pytest.raises(ConfigError, match=r"data\.immutable names \['relationship'\].*\['age', 'hours'\]"):
        check_immutable(["age", "relationship"], ["age", "hours"], ["sex"])
