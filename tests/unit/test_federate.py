"""The coordinator's side of federated training, from the ServerApp's out_dir files to a registered, judged version.

The out_dir here is made the way the ServerApp makes it (a fitted preprocessor, a trained model file, the sites'
counts from humane.fairness.counts on real predictions, federation.json per the contract); the Flower run itself
is tests/federated/test_pipeline.py's. Real MLflow store (SQLite in the workspace), real stage functions.
"""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from humane.core import io
from humane.core.context import RunContext
from humane.core.errors import ConfigError, HumaneError, ServerUnavailable, exit_code
from humane.core.paths import SENSITIVE_PREFIX, Paths
from humane.core.protected import sensitive_group_labels
from humane.data.datasets import read_adult
from humane.data.schema import resolve_schema
from humane.fairness.counts import merge_counts, site_counts
from humane.fairness.policy import Policy, policy_of
from humane.governance.gate import decide, read_candidate
from humane.modeling.features import fit_preprocessor, save_preprocessor, token_layout
from humane.modeling.model import build_model, model_state, probabilities
from humane.pipeline.params import load_params
from tasks import approve, federate, gate, register, track
from tests.conftest import ROOT

SITES = ["site-a", "site-b", "site-c"]
EXCLUDED = "reports/validation.json: column 'age' rule between 17 and 90 failed on 12 rows"


def _sites_frames(test: pd.DataFrame) -> list[pd.DataFrame]:
    half = len(test) // 2
    return [test.iloc[:half].reset_index(drop=True), test.iloc[half:].reset_index(drop=True)]


def _groups(frame: pd.DataFrame) -> dict[str, pd.Series]:
    prefixed = frame.rename(columns={f: f"{SENSITIVE_PREFIX}{f}" for f in ("sex", "race")})
    return sensitive_group_labels(prefixed, ["sex", "race"])


def make_out_dir(out: Path, params) -> None:
    """What the ServerApp writes: model.pt, preprocessor.skops, federation.json, evaluation.json (the contract)."""
    train = read_adult(ROOT / "data/raw/adult/adult.data").sample(n=3000, random_state=2).drop(columns="fnlwgt")
    test = read_adult(ROOT / "data/raw/adult/adult.test").sample(n=1600, random_state=2).drop(columns="fnlwgt")
    pre = fit_preprocessor(train, resolve_schema(params.data, train), params.preprocess)
    torch.manual_seed(0)
    model = build_model(params.train, len(pre.feature_names), token_layout(pre))
    x, y = torch.from_numpy(pre.transform(train)), torch.from_numpy(pre.encode_labels(train["income"])).float()
    optimiser = torch.optim.AdamW(model.parameters(), lr=0.003)
    for step in range(120):  # a short, real fit
        batch = slice((step * 256) % 2900, (step * 256) % 2900 + 256)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[batch]).squeeze(-1), y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    state = {
        **model_state(model),
        "config": params.train.model_dump(mode="json"),
        "feature_names": pre.feature_names,
        "best_epoch": 2,
    }
    torch.save(state, out / "model.pt")
    save_preprocessor(pre, out / "preprocessor.skops")
    counts = {}
    for site, frame in zip(SITES, _sites_frames(test), strict=False):
        with torch.inference_mode():
            p = probabilities(model(torch.from_numpy(pre.transform(frame)))).numpy().astype(float)
        y_site = pre.encode_labels(frame["income"]).astype(float)
        counts[site] = site_counts(y_site, p, 0.5, _groups(frame), min_group_size=20)
    io.write_json(
        out / "evaluation.json",
        {"threshold": 0.5, "bins": 100, "global": merge_counts(list(counts.values())), "sites": counts},
    )
    mix = train["sex"].value_counts(normalize=True).to_dict()
    trained = [
        {
            "site": s,
            "status": "trained",
            "reason": None,
            "rows": {"train": 1500, "test": 800},
            "group_mix": {"sex": mix},
            "rounds_joined": 3,
        }
        for s in SITES[:2]
    ]
    excluded = {
        "site": "site-c",
        "status": "excluded",
        "reason": EXCLUDED,
        "rows": {"train": 0, "test": 0},
        "group_mix": {},
        "rounds_joined": 0,
    }
    io.write_json(
        out / "federation.json",
        {
            "sites": [*trained, excluded],
            "rounds": 3,
            "strategy": "fedavg",
            "proximal_mu": 0.0,
            "min_group_size": 20,
            "noise": 0.0,
            "dp": None,
            "secagg": False,
            "wall_s": 12.5,
            "bytes": [{"round": r, "to_sites": 2000, "from_sites": 2100} for r in (1, 2, 3)],
            "messages": [{"round": 1, "site": "site-a", "kind": "train", "keys": ["arrays"], "bytes": 2100}],
            "history": [
                {"round": r, "train_loss": 0.5 - 0.05 * r, "val_loss": 0.45 - 0.04 * r, "sites": 2} for r in (1, 2, 3)
            ],
        },
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A coordinator workspace (federation/'s params and docs) after the federate stage's reports were written."""
    root = tmp_path_factory.mktemp("federation")
    raw = yaml.safe_load((ROOT / "federation/params.yaml").read_text())
    raw["gate"]["four_eyes"] = False  # one account runs the tests: the sign-off is asked, not by a second person
    # This short fit's sex gaps are about 0.21 (the federation's limit 0.2 rejects it): a limit it passes. Its race
    # gaps (small groups) spread over 0.03-0.29 across 16 seeds and failed the 0.2 for 6 of them: 0.4 for race.
    raw["policy"]["max"].update(
        {
            "fairness.sex.demographic_parity_difference": 0.3,
            "fairness.sex.equalized_odds_difference": 0.3,
            "fairness.race.demographic_parity_difference": 0.4,
            "fairness.race.equalized_odds_difference": 0.4,
        }
    )
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    shutil.copytree(ROOT / "federation/docs", root / "docs")
    params = load_params(root / "params.yaml")
    out = root / "out"
    out.mkdir()
    make_out_dir(out, params)
    federate.write_reports(params, federate.federated_settings(params), Paths(root), out)
    return root


def test_reports_hold_global_and_per_site_figures_from_counts(workspace):
    paths = Paths(workspace)
    metrics, audit = io.read_json(paths.metrics), io.read_json(paths.audit_report)
    assert metrics["test_rows"] == 1600 and set(metrics["sites"]) == {"site-a", "site-b"}
    # The bound on the histogram AUC's error is small: this short fit crowds its scores into the lowest bins, and
    # its bound spread over 0.004-0.024 for 20 seeds (0.0064 at this seed); 0.03 keeps a margin above that spread.
    assert 0.5 < metrics["model"]["roc_auc"] <= 1 and metrics["model"]["auc_binning_error"] < 0.03
    assert [f["feature"] for f in audit["features"]] == ["sex", "race", "sex x race"]
    sex = audit["features"][0]
    assert {g["group"] for g in sex["groups"]} == {"Female", "Male"}
    assert sex["gaps"]["demographic_parity_difference"]["lo"] <= sex["gaps"]["demographic_parity_difference"]["hi"]
    assert set(audit["sites"]) == {"site-a", "site-b"}
    assert io.read_json(paths.fairness)["sex"]["equalized_odds_difference"] >= 0
    run_of_sites = io.read_json(paths.federation)
    assert [s["status"] for s in run_of_sites["sites"]] == ["trained", "trained", "excluded"]
    assert paths.roc_png.exists() and paths.calibration_png.exists() and any(paths.audit_plots_dir.glob("*.png"))


@pytest.mark.slow  # track, gate, register, card: 4 s (on an idle two-core machine)
def test_track_gate_register_judge_and_card_the_federated_model(workspace, monkeypatch):
    monkeypatch.chdir(workspace)  # as `dvc repro` runs a stage: in its workspace
    paths, params = Paths(workspace), load_params(workspace / "params.yaml")
    ctx = RunContext(project=workspace)
    track.run(params, paths, ctx)
    gate.run(params, paths, ctx)
    checks = io.read_json(paths.policy_checks)
    by_metric = {c["metric"]: c for c in checks["checks"]}
    assert by_metric["federated.sites_trained"]["value"] == 2.0 and by_metric["federated.sites_trained"]["passed"]
    assert by_metric["fairness.sex.equalized_odds_difference"]["passed"] is not None
    line = register.run(params, paths, ctx)
    registration = io.read_json(paths.registration)
    assert registration["version"] == "1" and "humane-adult-federated v1" in line
    assert registration["passed_checks"] == checks["value_rules_passed"]
    card = paths.model_card_md.read_text()
    assert "## Federated training" in card
    for text in (
        "site-a",
        "site-b",
        "| site-c | excluded |",
        EXCLUDED,
        "| 1500 |",
        "3 rounds of fedavg",
        "round 2 of 3",
        "the global model is the last round's",
        "no differential privacy",
    ):
        assert text in card, text
    assert "unmeasurable (federated: k-anonymity" in card
    assert "### Fairness gaps per site" in card and "| site-b | sex | equalized_odds_difference |" in card
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    run = client.get_run(registration["run_id"])
    assert run.data.params["federated.rounds"] == "10"  # the workspace's params (the run config's source)
    assert run.data.metrics["federated.sites_trained"] == 2.0 and "test.roc_auc" in run.data.metrics
    assert "privacy.mia_auc" not in run.data.metrics
    assert run.data.tags["data.md5.train"].startswith("not here")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    assert {"reports/federation.json", "reports/federated_evaluation.json"} <= artifacts
    assert client.get_model_version("humane-adult-federated", "1").tags["decision"]
    # The sign-off, as for any candidate: it passed the checks, and champion moves only when a person approves.
    assert registration["pending"] and "awaits sign-off" in line
    approve.main(["humane-adult-federated", "1", "--approve", "--comment", "federated: sites and gaps reviewed"])
    assert str(client.get_model_version_by_alias("humane-adult-federated", "champion").version) == "1"


def test_a_rule_on_what_only_rows_give_fails_as_unmeasurable_with_why(workspace):
    paths, params = Paths(workspace), load_params(workspace / "params.yaml")
    policy = policy_of(params)
    policy = Policy(True, {"logreg.roc_auc": 0.02}, policy.min, {**policy.max, "privacy.mia_auc": 0.6}, {}, {})
    decision = decide(policy, read_candidate(paths), None)
    assert not decision.passed
    reasons = " ".join(decision.reasons)
    assert "privacy.mia_auc: unmeasurable (federated: the membership-inference attack" in reasons
    assert "the baseline logreg.roc_auc is unmeasurable (federated: no baseline model" in reasons


def test_fewer_trained_sites_than_min_sites_is_one_clear_error(workspace, tmp_path):
    params = load_params(workspace / "params.yaml")
    settings = federate.federated_settings(params).model_copy(update={"min_sites": 3})
    out = tmp_path / "out"
    shutil.copytree(workspace / "out", out)
    with pytest.raises(
        HumaneError, match=r"only 2 sites trained, fewer than federated.min_sites 3: .*site-c: excluded"
    ):
        federate.write_reports(params, settings, Paths(tmp_path), out)
    assert not Paths(tmp_path).federation.exists()  # nothing marks a half-written workspace as federated


@pytest.mark.parametrize(
    ("rename", "match"),
    [
        ({"site-b": "site-x"}, r"trained as sites not in federated.sites: site-x"),
        ({"site-b": "site-a"}, r"answered by more than one node: site-a"),
    ],
)
def test_a_trained_site_not_listed_or_named_twice_is_refused(workspace, tmp_path, rename, match):
    params = load_params(workspace / "params.yaml")
    settings = federate.federated_settings(params)
    out = tmp_path / "out"
    shutil.copytree(workspace / "out", out)
    run = io.read_json(out / "federation.json")
    for site in run["sites"]:
        site["site"] = rename.get(site["site"], site["site"])
    io.write_json(out / "federation.json", run)
    with pytest.raises(HumaneError, match=match):
        federate.write_reports(params, settings, Paths(tmp_path), out)
    assert not Paths(tmp_path).federation.exists()


def test_plain_grpc_to_a_superlink_off_loopback_is_refused(workspace):
    from humane.pipeline.params import parse_params

    raw = json.loads(json.dumps(load_params(workspace / "params.yaml").model_dump(by_alias=True)))
    assert raw["federated"]["superlink"]["insecure"] is True  # the workspace's own setting, on 127.0.0.1
    raw["federated"]["superlink"]["address"] = "coordinator.example.org:9093"
    with pytest.raises(
        ConfigError, match=r"(?i)federated.superlink: .*insecure: true \(plain grpc, no tls\) is refused"
    ):
        parse_params(raw)
    raw["federated"]["superlink"].update(insecure=False, root_certificates="ca.pem")
    assert parse_params(raw).federated.superlink.address == "coordinator.example.org:9093"


def test_a_missing_site_env_names_make_site_env(workspace):
    raw = json.loads(json.dumps(load_params(workspace / "params.yaml").model_dump(by_alias=True)))
    raw["federated"]["site_env"] = "no-such-env"
    from humane.pipeline.params import parse_params

    params = parse_params(raw)
    with pytest.raises(ConfigError, match="make site-env"):
        federate.run(params, Paths(workspace), RunContext(project=workspace))


@pytest.mark.skipif(
    not (ROOT / ".site-env/bin/flwr").exists() or not (ROOT / "federated/pyproject.toml").exists(),
    reason="needs the site environment (make site-env) and the Flower App",
)
def test_an_unreachable_superlink_is_server_unavailable(workspace, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    raw = json.loads(json.dumps(load_params(workspace / "params.yaml").model_dump(by_alias=True)))
    raw["federated"].update(site_env=str(ROOT / ".site-env"), app=str(ROOT / "federated"), run_timeout_s=120.0)
    raw["federated"]["superlink"]["address"] = f"127.0.0.1:{port}"
    from humane.pipeline.params import parse_params

    with pytest.raises(ServerUnavailable, match=f"127.0.0.1:{port}") as err:
        federate.run(parse_params(raw), Paths(tmp_path), RunContext(project=tmp_path))
    assert exit_code(err.value) == 10
    assert not list(tmp_path.glob(".federate-*"))  # its working folder is gone
