"""Real: a Flower SuperLink and SuperNodes as processes in the site environment (one SIGKILLed), Opacus at each site.

A site's node killed mid-training (SIGKILL of its SuperNode after round 1): the round completes with the others,
the run ends, and federation.json says the site was dropped and when. Its own federation: the node stays dead.
The run is FedAvg through Flower's Message API strategy, with client-side DP (Opacus at each site, epsilon 3)."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator

import pytest

from tests.federated.conftest import Federation, nodes_cmd, require_site_env, start, stop
from tests.federated.sites import ROOT, make_sites

# Above a round's time on a loaded CI machine (a ClientApp process per message; the data checks take longest).
TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def three_sites(tmp_path_factory: pytest.TempPathFactory, sample_frames: tuple) -> Iterator[Federation]:
    require_site_env()
    root = tmp_path_factory.mktemp("dropout")
    running = start(root, make_sites(root / "sites", *sample_frames, broken=False))
    try:
        yield running
    finally:
        stop(running)


def test_a_node_killed_after_round_one_is_dropped_and_the_run_completes(three_sites, tmp_path):
    out = tmp_path / "out"
    cmd = three_sites.run_cmd(out, rounds=2, round_timeout_s=TIMEOUT_S, dp_epsilon=3.0)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=three_sites.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    watchdog = threading.Timer(900, proc.kill)
    watchdog.start()
    lines, killed = [], False
    try:
        for line in proc.stdout:
            lines.append(line)
            if not killed and "round 1/2 done" in line:
                kill = nodes_cmd("kill", "--dir", str(three_sites.state), "--site", "site_c")
                subprocess.run(kill, cwd=ROOT, check=True, capture_output=True, timeout=60)
                killed = True
        proc.wait(timeout=60)
    finally:
        watchdog.cancel()
    log = "".join(lines)
    assert killed, log[-4000:]
    run = json.loads((out / "federation.json").read_text())
    status = {s["site"]: s for s in run["sites"]}
    assert status["site_c"]["status"] == "dropped" and status["site_c"]["rounds_joined"] == 1
    # No answer before round_timeout_s, or the SuperLink saw the node go first (Flower's NODE_UNAVAILABLE).
    reason = status["site_c"]["reason"]
    assert "in round 2; left out of the later rounds" in reason
    assert f"round_timeout_s = {TIMEOUT_S:g} s" in reason or reason.startswith("node unavailable"), reason
    assert [status[s]["status"] for s in ("site_a", "site_b")] == ["trained", "trained"]
    assert [status[s]["rounds_joined"] for s in ("site_a", "site_b")] == [2, 2]
    assert [h["sites"] for h in run["history"]] == [3, 2] and run["round_timeout_s"] == TIMEOUT_S
    sent = {(m["round"], m["kind"], m["direction"]) for m in run["messages"] if m["site"] == "site_c"}
    # asked in round 2, no answer, then left out (not asked to evaluate)
    assert sent == {
        (0, "stats", "to_site"),
        (0, "stats", "from_site"),
        (1, "train", "to_site"),
        (1, "train", "from_site"),
        (2, "train", "to_site"),
    }
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert sorted(evaluation["sites"]) == ["site_a", "site_b"]
    dp = run["dp"]  # each site's epsilon over the rounds it joined; the run's is the largest
    assert sorted(dp["per_site"]) == ["site_a", "site_b", "site_c"] and dp["per_site"]["site_c"]["rounds"] == 1
    assert 0 < dp["epsilon"] <= 3.0 + 1e-6 and dp["epsilon"] == max(d["epsilon"] for d in dp["per_site"].values())
    assert dp["delta"] == 1e-5 and dp["clip"] == 1.0 and dp["noise_multiplier"] > 0
