"""Real: the session's federation (a Flower SuperLink, four SuperNodes as processes, site environment), SecAgg+.

One federated run on real processes (a SuperLink and four SuperNodes): FedProx through Flower's SecAgg+, the
contract's files, the excluded site, and what reaches the coordinator (aggregates only: every message's keys and
size, masked updates, and no row value anywhere). The plain Message API path runs in test_dropout.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from humane.fairness.counts import merge_counts
from humane.modeling.features import load_preprocessor
from humane.modeling.model import load_model
from tests.federated.conftest import nodes_cmd
from tests.federated.sites import MARKER, ROOT

TRAINED = ["site_a", "site_b", "site_c"]
# What a site may send, by message kind: names of records and keys (federated/humane_fl/records.py `keys`).
ALLOWED = {
    "stats": {"stats.site", "stats.status", "stats.reason", "stats.summary"},
    # SecAgg+'s stages: public keys, encrypted shares, the masked update (no weights in clear), shares to unmask.
    "train": {
        "secaggplus_configs.pk1",
        "secaggplus_configs.pk2",
        "secaggplus_configs.ctxts",
        "secaggplus_configs.dsts",
        "secaggplus_configs.masked_params",
        "secaggplus_configs.nids",
        "secaggplus_configs.shares",
        "fitres.parameters",
        "fitres.status",
        "fitres.num_examples",
        "fitres.metrics",
    },
    "evaluate": {
        "evaluation.site",
        "evaluation.counts",
        "evaluation.rows",
        "evaluation.val_loss",
        "evaluation.val_rows",
    },
}
SUMMARY_KEYS = {
    "format",
    "sites",
    "rows",
    "label_counts",
    "target",
    "labels",
    "positive_label",
    "numeric",
    "categorical",
    "sensitive",
    "min_group_size",
    "noise",
    "columns",
}
COUNTS_KEYS = {"rows", "confusion", "scores", "loss_sum", "groups", "withheld"}


@pytest.fixture(scope="module")
def federated_run(federation, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Two rounds of FedProx through SecAgg+ over the four sites (site_d is excluded at its data checks)."""
    out = tmp_path_factory.mktemp("coordinator") / "out"
    log = federation.run(out, strategy="fedprox", proximal_mu=0.1, secagg=True, expected_sites=4)
    assert (out / "federation.json").exists(), log[-4000:]
    return out, log


def _federation(out: Path) -> dict:
    return json.loads((out / "federation.json").read_text())


def test_a_run_writes_the_contract_files(federated_run):
    out, _ = federated_run
    pre = load_preprocessor(out / "preprocessor.skops")
    state = torch.load(out / "model.pt", weights_only=True)
    assert state["feature_names"] == pre.feature_names and state["best_epoch"] == 2
    assert state["config"]["hidden_sizes"] == [64, 32]
    model = load_model(state)
    assert model(torch.zeros(1, len(pre.feature_names))).shape == (1,)
    run = _federation(out)
    assert run["rounds"] == 2 and run["strategy"] == "fedprox" and run["proximal_mu"] == 0.1
    assert run["dp"] is None and run["secagg"] is True
    status = {s["site"]: s for s in run["sites"]}
    assert sorted(status) == [*TRAINED, "site_d"]
    for site in TRAINED:
        assert status[site]["status"] == "trained" and status[site]["rounds_joined"] == 2
        assert status[site]["rows"]["train"] > 0 and status[site]["rows"]["test"] > 0
        assert set(status[site]["group_mix"]) == {"sex", "race"}
    assert status["site_a"]["rows"]["train"] > 4 * status["site_b"]["rows"]["train"]  # non-IID, unequal sizes
    assert [h["round"] for h in run["history"]] == [1, 2] and all(h["sites"] == 3 for h in run["history"])
    assert all(h["train_loss"] > 0 and h["val_loss"] > 0 for h in run["history"])
    assert [b["phase"] for b in run["bytes"]] == ["stats", "train", "train", "evaluate"]
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert sorted(evaluation["sites"]) == TRAINED and evaluation["threshold"] == 0.5
    merged = merge_counts(list(evaluation["sites"].values()))
    assert evaluation["global"].pop("loss_sum") == pytest.approx(merged.pop("loss_sum"))
    assert evaluation["global"] == merged
    assert evaluation["global"]["rows"] == sum(status[s]["rows"]["test"] for s in TRAINED)


def test_a_site_whose_data_fails_validation_is_excluded_with_its_reason(federated_run):
    out, log = federated_run
    run = _federation(out)
    site_d = next(s for s in run["sites"] if s["site"] == "site_d")
    assert site_d["status"] == "excluded" and site_d["rounds_joined"] == 0
    assert "data/raw/site/train.csv" in site_d["reason"] and "'income'" in site_d["reason"]
    assert "site site_d excluded" in log  # said while it runs, too
    kinds = {m["kind"] for m in run["messages"] if m["site"] == "site_d"}
    assert kinds == {"stats"}  # never asked to train or evaluate


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [*value.keys(), *(s for v in value.values() for s in _strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_every_message_from_a_site_holds_only_aggregates_of_bounded_size(federated_run, federation):
    out, _ = federated_run
    run = _federation(out)
    received = [m for m in run["messages"] if m["direction"] == "from_site"]
    assert {m["kind"] for m in received} == {"stats", "train", "evaluate"}
    for m in received:
        top = {re.sub(r"\[\d+ arrays\]$", "", ".".join(k.split(".")[:2])) for k in m["keys"]}
        if m["kind"] != "train":
            top = {k for k in m["keys"] if k.count(".") <= 1}
        assert top <= ALLOWED[m["kind"]], (m["kind"], top - ALLOWED[m["kind"]])
        if m["kind"] != "train":
            nested = {k.split(".", 2)[2] for k in m["keys"] if k.count(".") >= 2}
            assert nested <= (SUMMARY_KEYS if m["kind"] == "stats" else COUNTS_KEYS), nested
        # Under SecAgg+ no weight leaves a site in clear: its update travels only as masked_params.
        assert not [k for k in m["keys"] if "arrays]" in k and not k.endswith("[0 arrays]")], m["keys"]
    rows = {s["site"]: s["rows"]["train"] for s in run["sites"]}
    size: dict[tuple, int] = {}
    for m in received:
        if m["round"] in (0, 1, 3):
            size[(m["kind"], m["site"])] = size.get((m["kind"], m["site"]), 0) + m["bytes"]
    # site_a holds about five times site_b's rows; nothing it sends grows with them.
    assert rows["site_a"] > 4 * rows["site_b"]
    assert size[("train", "site_a")] == pytest.approx(size[("train", "site_b")], rel=0.05)  # masked weights
    for kind in ("stats", "evaluate"):
        assert size[(kind, "site_a")] < 2 * size[(kind, "site_b")], kind
        assert size[(kind, "site_a")] < 8000, kind  # a summary / counts, never rows
    # The raw training file is far larger than anything a site sent.
    raw = (federation.sites["site_a"] / "data/raw/site/train.csv").stat().st_size
    assert max(m["bytes"] for m in received if m["kind"] != "train") * 20 < raw


def test_the_categories_sent_are_those_of_enough_rows_at_a_site(federated_run, federation):
    """The global encoder knows a category only if some site holds at least min_group_size (10) rows of it."""
    out, _ = federated_run
    pre = load_preprocessor(out / "preprocessor.skops")
    pipeline = pre.transformer.named_transformers_["cat"]
    encoder = pipeline.named_steps["onehotencoder"]
    learned = dict(zip(pipeline.feature_names_in_, encoder.categories_, strict=True))
    pools = [pd.read_csv(federation.sites[s] / "data/raw/site/train.csv") for s in TRAINED]
    for column in ("workclass", "education", "marital-status", "occupation", "relationship"):  # not masked at load
        most = pd.concat([p[column].value_counts() for p in pools], axis=1).max(axis=1)
        known = {c for c in learned[column] if isinstance(c, str) and c in most.index}
        assert known <= set(most[most >= 10].index), column
        assert not set(most[most < 8].index) & set(learned[column]), column  # below 10 in every site's split
    assert MARKER not in {c for block in encoder.categories_ for c in block}


def test_no_row_value_reaches_the_coordinator(federated_run, federation):
    """A value planted in one training row of site_a is in no message, no coordinator file and no log there."""
    out, log = federated_run
    marker = MARKER.encode()
    assert marker in (federation.sites["site_a"] / "data/raw/site/train.csv").read_bytes()  # it is at the site
    assert MARKER not in log
    coordinator = [
        *out.parent.rglob("*"),
        *(federation.state / "superlink").rglob("*"),
        *Path(federation.info["flwr_home"]).rglob("*"),
    ]
    files = [p for p in coordinator if p.is_file()]
    assert any(p.name == "state.db" for p in files) and any(p.name == "federation.json" for p in files)
    for path in files:
        assert marker not in path.read_bytes(), path


def test_nodes_status_names_the_connection_and_every_running_process(federation):
    # README: .site-env/bin/python -m federated.humane_fl.nodes status --dir <state folder>
    result = subprocess.run(
        nodes_cmd("status", "--dir", str(federation.state)), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert f"FLWR_HOME={federation.info['flwr_home']}" in result.stdout and "flwr run federated humane" in result.stdout
    for key in ["superlink", *(f"site:{s}" for s in federation.sites)]:
        assert re.search(rf"^{key}: pid \d+ running$", result.stdout, re.M), key
    assert "online SuperNodes: 4" in result.stdout


def test_too_few_usable_sites_fail_the_run_with_one_line_and_no_files(federation, tmp_path):
    out = tmp_path / "out"
    log = federation.run(out, min_sites=4, rounds=1)
    error = (out / "federation_error.txt").read_text()
    assert error.startswith("FederationFailed: 3 usable sites after the sites' data checks, fewer than min_sites = 4")
    assert "site_d: excluded (data/raw/site/train.csv: the label column 'income'" in error
    assert len(error.strip().splitlines()) == 1 and "FederationFailed" in log
    assert sorted(p.name for p in out.iterdir()) == ["federation_error.txt"]  # none of the contract's files
