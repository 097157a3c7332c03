"""Real: `dvc repro` on copies of the shared session run; the champion's served code re-scores; MLflow SQLite registry.

Like with like: the champion is re-scored on the candidate's test rows before the change rules compare them."""

import json

from humane.core.io import md5_of
from humane.data.datasets import read_adult
from humane.governance.serving import as_request
from tests.conftest import ROOT, SAMPLE_DIR, SAMPLE_TEST_ROWS, mlflow_client, run

MODEL = "humane-sample"


def test_champion_is_rescored_on_the_candidates_test_rows(ran_project):
    champion = mlflow_client(ran_project).get_model_version(MODEL, "1")
    recorded = float(champion.tags["metric.test.accuracy"])
    old_md5 = champion.tags["test.md5"]
    # New test rows (other people from the official test file): the champion's recorded figures describe others.
    other = read_adult(ROOT / "data/raw/adult/adult.test").sample(n=SAMPLE_TEST_ROWS, random_state=7)
    other.to_csv(ran_project / SAMPLE_DIR / "test.csv", index=False)
    run(["dvc", "repro"], ran_project)

    decision = json.loads((ran_project / "reports/decision.json").read_text())
    new_md5 = md5_of(ran_project / "data/interim/test.parquet")
    assert new_md5 != old_md5
    assert decision["test_md5"] == {"candidate": new_md5, "champion": new_md5}
    assert decision["champion_version"] == "1"
    assert any("re-scored on the candidate's 1000 test rows" in n for n in decision["notes"])
    (drop,) = [c for c in decision["checks"] if c["rule"] == "max_drop" and c["metric"] == "test.accuracy"]
    assert drop["champion_version"] == "1" and drop["champion_value"] != recorded  # not its own-split figure
    # The champion's figure is what its pyfunc scores on these rows (checked independently through MLflow).
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{ran_project / 'mlflow.db'}")
    try:
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}/1")
        raw = pd.read_parquet(ran_project / "data/interim/test.parquet")
        scored = model.predict(as_request(raw.drop(columns=["income"]), model.metadata.get_input_schema()))
        accuracy = float((scored["label"] == raw["income"]).mean())
    finally:
        mlflow.set_tracking_uri(None)
    assert abs(drop["champion_value"] - accuracy) < 1e-9
    card = (ran_project / "reports/model_card.md").read_text()
    assert f"candidate {new_md5}, champion {new_md5}" in card


def _aliases(project):
    return {a: str(v) for a, v in mlflow_client(project).get_registered_model(MODEL).aliases.items()}


def test_other_inputs_skip_the_change_rules_and_an_unscorable_champion_stops_registration(ran_project):
    import shutil

    import yaml

    # 1. A candidate masked by another privacy policy: its test rows are not the champion's inputs, so the change
    # rules are skipped and said why; the value rules still apply.
    params = yaml.safe_load((ran_project / "params.yaml").read_text())
    params["privacy"]["bins"] = {"age": [17, 30, 45, 60, 91]}
    (ran_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro"], ran_project)
    decision = json.loads((ran_project / "reports/decision.json").read_text())
    assert decision["champion_version"] == "1"
    assert any("champion v1 masks its inputs by another privacy policy" in n for n in decision["notes"])
    changes = [c for c in decision["checks"] if c["rule"] in ("max_drop", "max_increase")]
    assert changes and all(c["passed"] is None and "skipped" in c["note"] for c in changes)
    assert any(c["rule"] == "min" and c["passed"] is not None for c in decision["checks"])
    recorded = mlflow_client(ran_project).get_model_version(MODEL, "1").tags["test.md5"]
    assert decision["test_md5"]["champion"] == recorded  # what the champion's own figures were measured on
    before = _aliases(ran_project)

    # 2. A champion that cannot be loaded: the decision cannot be taken, so nothing is registered, no alias moves.
    params["privacy"]["bins"] = {"age": [17, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 91]}
    params["train"]["seed"] = 7
    (ran_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    champion = before["champion"]
    source = mlflow_client(ran_project).get_model_version(MODEL, champion).source
    assert source  # where its files are; remove every artifact the store holds so that it cannot be loaded
    shutil.rmtree(ran_project / "mlartifacts")
    failed = run(["dvc", "repro"], ran_project, check=False)
    assert failed.returncode != 0
    # Its files are checked against the manifest recorded at registration before anything of it is loaded: the
    # missing files are named (IntegrityFailed, exit 12).
    assert f"{MODEL} v{champion}: file" in failed.stderr and "exited with 12" in failed.stderr, failed.stderr[-2000:]
    versions = mlflow_client(ran_project).search_model_versions(f"name = '{MODEL}'")
    assert len(versions) == int(max(before.values())) and _aliases(ran_project) == before
