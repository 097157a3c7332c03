"""Real: nothing external: the ledger's plain Python on hand-made messages (no Flower process).

The coordinator's record of a run (federated/humane_fl/ledger.py, plain Python): fates, messages, bytes."""

from __future__ import annotations

from federated.humane_fl.ledger import DROPPED, EXCLUDED, TRAINED, Ledger, SiteRecord

SETTINGS = {"strategy": "fedavg", "proximal_mu": 0.0, "min_group_size": 10, "noise": 0.0, "secagg": False}


def test_a_sites_first_fate_and_reason_stay():
    ledger = Ledger(SETTINGS)
    ledger.sites[1] = SiteRecord("site_a")
    ledger.set_status(1, DROPPED, "no answer in round 2")
    ledger.set_status(1, EXCLUDED, "later error")
    assert (ledger.sites[1].status, ledger.sites[1].reason) == (DROPPED, "no answer in round 2")
    assert ledger.usable() == []


def test_an_error_reply_drops_a_gone_node_and_excludes_a_site_that_raised():
    ledger = Ledger(SETTINGS)
    ledger.sites.update({1: SiteRecord("site_a"), 2: SiteRecord("site_b"), 3: SiteRecord("site_c")})
    ledger.failed(1, 5, "node unavailable", "in round 1")  # Flower's NODE_UNAVAILABLE
    ledger.failed(2, 2, "Traceback ...\nExcluded: data/raw/x.csv: column 'age' out of range", "in round 1")
    assert ledger.sites[1].status == DROPPED and ledger.sites[1].reason.startswith("node unavailable in round 1")
    assert ledger.sites[2].status == EXCLUDED
    assert ledger.sites[2].reason == "in round 1: Excluded: data/raw/x.csv: column 'age' out of range"
    assert ledger.usable() == [3] and ledger.sites[3].status == TRAINED


def test_messages_are_named_by_site_once_known_and_summed_per_round():
    ledger = Ledger(SETTINGS)
    ledger.message(0, 7, "stats", "to_site", ["config.seed"], 100)  # before the node named its site
    ledger.sites[7] = SiteRecord("site_a", rows={"train": 5, "test": 2})
    ledger.message(0, 7, "stats", "from_site", ["stats.summary"], 900)
    ledger.message(1, 7, "train", "to_site", ["arrays[9 arrays]"], 5000)
    ledger.history.append({"round": 1, "train_loss": 0.5, "val_loss": 0.4, "sites": 1})
    out = ledger.to_dict(1.5, None)
    assert [m["site"] for m in out["messages"]] == ["site_a"] * 3 and "node" not in out["messages"][0]
    assert out["bytes"] == [
        {"round": 0, "phase": "stats", "to_sites": 100, "from_sites": 900},
        {"round": 1, "phase": "train", "to_sites": 5000, "from_sites": 0},
    ]
    assert out["rounds"] == 1 and out["sites"][0]["rows"] == {"train": 5, "test": 2} and out["dp"] is None
