"""Proof of no leak: planted personal values in dropped/pseudonymized columns appear in no output, store or log."""

import os
import subprocess
from dataclasses import replace
from pathlib import Path

import joblib
import pandas as pd
import yaml

from tests.conftest import SAMPLE_DIR, run

KEY = "test-key-never-stored-7f3a9c"
MARKERS = ("PLANTEDNAME", "SSN-ZK", "FREETEXTNOTE", KEY)


def _plant(path: Path) -> None:
    frame = pd.read_csv(path)
    ids = range(len(frame))
    frame.insert(0, "name", [f"PLANTEDNAME{i:05d}" for i in ids])
    frame.insert(1, "ssn", [f"SSN-ZK{i:06d}" for i in ids])
    frame["notes"] = [f"FREETEXTNOTE about person {i}" for i in ids]
    frame.to_csv(path, index=False)


def _texts(path: Path) -> list[str]:
    """What a file can reveal: decoded cells for Parquet (compression may hide raw bytes), else its bytes."""
    data = path.read_bytes()
    texts = [data.decode("latin-1")]
    if data[:4] == b"PAR1":
        frame = pd.read_parquet(path)
        texts.append(" ".join(map(str, frame.columns)))
        texts += [" ".join(map(str, frame[c].astype(str))) for c in frame.columns if frame[c].dtype == object
                  or pd.api.types.is_string_dtype(frame[c])]  # fmt: skip
    return texts


def test_planted_personal_values_never_leave_the_load_stage(project, prefect_server):
    for name in ("train.csv", "test.csv"):
        _plant(project / SAMPLE_DIR / name)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["privacy"].update(drop=["name", "notes"], pseudonymize=["ssn"])
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    env = {**os.environ, "HUMANE_PSEUDONYM_KEY": KEY}
    result = subprocess.run(["python", "-m", "flows.training"], cwd=project, env=env, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode in (0, 3), result.stderr[-3000:]  # promoted or refused: either way a full run
    logs = result.stdout + result.stderr

    # The pipeline saw the identifiers: the pseudonyms are in the interim data, the raw values are not.
    interim = pd.read_parquet(project / "data/interim/train.parquet")
    assert "name" not in interim and "notes" not in interim
    assert interim["ssn"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert "ssn" not in joblib.load(project / "models/preprocessor.joblib").inputs

    # Every file the run produced: all but the raw inputs, git's store and the project's own tracked sources.
    sources = set(run(["git", "ls-files"], project).stdout.splitlines())
    scanned = [("flow logs", logs)]
    for path in project.rglob("*"):
        relative = path.relative_to(project).as_posix()
        if path.is_file() and relative not in sources and not relative.startswith(("data/raw/", ".git/")):
            scanned += [(relative, text) for text in _texts(path)]
    prefect_db = Path(os.environ["PREFECT_HOME"]) / "prefect.db"
    scanned += [("prefect.db", text) for text in _texts(prefect_db)]  # run logs, parameters, artifacts
    assert len(scanned) > 50
    leaks = {(marker, where) for marker in MARKERS for where, text in scanned if marker in text}
    assert leaks == set()


def test_pseudonymization_key_from_a_prefect_secret_block(prefect_server, monkeypatch):
    from prefect.blocks.system import Secret
    from tasks.params import load_params
    from tasks.privacy import pseudonym_key

    Secret(value="key-from-block").save("humane-test-key", overwrite=True)
    monkeypatch.delenv("HUMANE_PSEUDONYM_KEY", raising=False)
    privacy = load_params().privacy
    params = replace(privacy, pseudonymize=["ssn"], key_block="humane-test-key")
    assert pseudonym_key(params) == b"key-from-block"
