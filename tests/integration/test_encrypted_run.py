"""Real: the age commands of docs/how-to/privacy.md, `dvc repro` of a sample copy, git, DVC, MLflow SQLite, Prefect.

Encrypted data at rest, end to end: the how-to's commands encrypt the sample files, DVC tracks the ciphertext, and
after `dvc repro track` no planted plaintext value (nor the identity) is anywhere in the workspace, git, the DVC
cache or the MLflow store; then the how-to's rotation locks the old identity out. And the identity from a Prefect
Secret block."""

import os
import subprocess
import zlib
from pathlib import Path

import pandas as pd
import pytest
import yaml

from humane.core.errors import DataError
from humane.core.io import md5_of
from humane.privacy.encryption import decrypt, parse_identity
from tests.conftest import SAMPLE_DIR, run
from tests.integration.test_documented import FENCE, block_commands
from tests.integration.test_privacy_leak import _db_texts, _texts

ROOT = Path(__file__).resolve().parents[2]
PSEUDONYM_KEY = "encrypted-run-hmac-key-51c0"
FILES = ("train.csv", "test.csv")
PRIVACY_PAGE = ROOT / "docs" / "how-to" / "privacy.md"
README_FILE = "data/raw/loans/applicants.csv"  # the file the how-to's commands name
IDENTITY_FILE = "~/.config/humane/age-identity.txt"
# Planted in the plaintext only: a name (dropped), an account number (pseudonymized; its 10-digit prefix is what is
# looked for) and a country in three rows (grouped into "Other").
NAME, ACCOUNT, COUNTRY = "ZZAGENAME", "7301946829", "ZZAGECOUNTRY"


def _plant(path: Path, offset: int) -> None:
    frame = pd.read_csv(path)
    ids = range(offset, offset + len(frame))
    frame.insert(0, "name", [f"{NAME}{i:05d}" for i in ids])
    frame.insert(1, "account", [int(f"{ACCOUNT}{i:04d}") for i in ids])
    frame.loc[frame.index[:3], "native-country"] = COUNTRY
    frame.to_csv(path, index=False)


def _readme_blocks() -> tuple[list[str], list[str]]:
    """docs/how-to/privacy.md's encryption commands: (set up and run, rotate), as `documented_commands` reads them."""
    blocks = [b for lang, b in FENCE.findall(PRIVACY_PAGE.read_text()) if "humane.privacy.encryption" in b]
    setup, rotation = (block_commands("bash", b) for b in blocks)
    return setup, rotation


def _for(command: str, name: str) -> str:
    """A documented command with the sample file `name` for the how-to's example file."""
    return command.replace(README_FILE, f"{SAMPLE_DIR}/{name}").replace("data/raw/loans/", f"{SAMPLE_DIR}/")


def _bash(lines: list[str], project: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["bash", "-c", "set -e\n" + "\n".join(lines)], cwd=project, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _files(project: Path) -> dict[str, str]:
    """Every file of the project (git's own included) and its md5."""
    return {p.relative_to(project).as_posix(): md5_of(p) for p in project.rglob("*") if p.is_file()}


def _workspace(project: Path, logs: str, before: dict[str, str]) -> list[tuple[str, str]]:
    """Every place a value could reach: the run's output, each file of the project (git's objects decompressed, the
    MLflow store by table and column, Parquet cells, zip members), the DVC cache among them; not the files of the
    project copy as they were `before` anything was planted (the repository's sources: this test names the markers)."""
    scanned = [("dvc repro output", logs)]
    for where, md5 in _files(project).items():
        path = project / where
        if before.get(where) == md5:
            continue
        if where == "mlflow.db":
            scanned += _db_texts(path, where)
        elif where.startswith(".git/objects/") and "/pack/" not in where and "/info/" not in where:
            scanned.append((where, zlib.decompress(path.read_bytes()).decode("latin-1")))
        else:
            scanned += [(where, text) for text in _texts(path)]
    return scanned


def test_an_encrypted_run_leaves_no_plaintext_and_rotation_locks_the_old_identity_out(project, tmp_path):
    setup, rotation = _readme_blocks()
    keygen, encrypt, add, git_add, export, repro = setup
    assert keygen.startswith("python -m humane.privacy.encryption keygen --identity") and IDENTITY_FILE in keygen
    assert encrypt.startswith("python -m humane.privacy.encryption encrypt") and "--remove-plaintext" in encrypt
    assert "--recipients" in encrypt and add.startswith("dvc add") and add.endswith(".age")
    assert git_add.startswith("git add") and ".age.dvc" in git_add and ".gitignore" in git_add
    assert export.startswith("export HUMANE_AGE_IDENTITY") and repro == "dvc repro"
    home = tmp_path / "home"  # the how-to's ~/.config/humane/: the identity lives outside the project
    env = {**os.environ, "HOME": str(home), "HUMANE_PSEUDONYM_KEY": PSEUDONYM_KEY}
    env.pop("HUMANE_AGE_IDENTITY", None)

    before = _files(project)  # the project copy as made: the repository's files and the sample, nothing planted
    plain_md5 = {}
    for offset, name in enumerate(FILES):
        _plant(project / SAMPLE_DIR / name, offset * 10_000)
        plain_md5[name] = md5_of(project / SAMPLE_DIR / name)
    _bash([keygen], project, env)
    identity = (home / ".config/humane/age-identity.txt").read_text()
    run(["git", "rm", "-q", "--cached", *(f"{SAMPLE_DIR}/{n}" for n in FILES)], project)
    _bash([_for(c, n) for n in FILES for c in (encrypt, add, git_add)], project, env)
    assert sorted(p.name for p in (project / SAMPLE_DIR).iterdir()) == [
        ".gitignore",
        "test.csv.age",
        "test.csv.age.dvc",
        "train.csv.age",
        "train.csv.age.dvc",
    ]
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"].update(
        source=f"{SAMPLE_DIR}/train.csv.age", test_source=f"{SAMPLE_DIR}/test.csv.age", encryption="age"
    )
    params["privacy"].update(drop=["name"], pseudonymize=["account"])
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "commit", "-q", "-am", "encrypted sample"], project)

    # Without the identity the load stage stops, naming the file and the variable, and writes nothing.
    failed = subprocess.run(["dvc", "repro", "load"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0 and "exited with 2" in failed.stderr, failed.stderr[-2000:]
    assert f"error: {SAMPLE_DIR}/train.csv.age (data.encryption: age): no age identity is set" in failed.stderr
    assert "environment variable HUMANE_AGE_IDENTITY" in failed.stderr and not (project / "data/interim").exists()

    done = _bash([export, "dvc repro track"], project, env)  # the how-to's `dvc repro`, up to the MLflow run (CI time)
    assert "Running stage 'track'" in done.stdout
    interim = pd.read_parquet(project / "data/interim/train.parquet")
    assert "name" not in interim and interim["account"].str.fullmatch(r"[0-9a-f]{64}").all()  # the run saw them

    # The DVC cache holds the ciphertext, never the plaintext.
    cache = {p.parent.name + p.name: p for p in (project / ".dvc/cache/files/md5").rglob("*") if p.is_file()}
    for name in FILES:
        age = project / SAMPLE_DIR / f"{name}.age"
        tracked = yaml.safe_load(age.with_name(f"{name}.age.dvc").read_text())["outs"][0]["md5"]
        assert tracked == md5_of(age) and cache[tracked].read_bytes() == age.read_bytes()
        assert plain_md5[name] not in cache
    assert all(not p.read_bytes().startswith(b"name,account,") for p in cache.values())

    # No planted value, nor the identity or the pseudonymization key, anywhere in the project.
    scanned = _workspace(project, done.stdout + done.stderr + failed.stdout + failed.stderr, before)
    assert len(scanned) > 50 and any(w.startswith(".dvc/cache/") for w, _ in scanned)
    assert {"params.yaml", "dvc.lock", f"{SAMPLE_DIR}/train.csv.age", "data/interim/train.parquet"} <= {
        w for w, _ in scanned
    } and any(w.startswith(".git/objects/") for w, _ in scanned)
    assert any(w.startswith("mlflow.db:") for w, _ in scanned) and any(w.startswith("mlartifacts/") for w, _ in scanned)
    secret = identity.splitlines()[-1]
    found = {(m, w) for m in (NAME, ACCOUNT, COUNTRY, secret, PSEUDONYM_KEY) for w, t in scanned if m in t}
    assert found == set()

    # Rotation (the how-to): the team's recipients become a new identity only; the old identity no longer decrypts.
    new = tmp_path / "new-identity.txt"
    recipient = run(["python", "-m", "humane.privacy.encryption", "keygen", "--identity", str(new)], project).stdout
    (project / "data/raw/recipients.txt").write_text(f"# rotated\n{recipient}")
    rotate, add_again = rotation
    assert rotate.startswith("python -m humane.privacy.encryption rotate") and "--recipients" in rotate
    _bash([export, *(_for(c, n) for n in FILES for c in (rotate, add_again))], project, env)
    for name in FILES:
        age = project / SAMPLE_DIR / f"{name}.age"
        assert md5_of(age) in {p.parent.name + p.name for p in (project / ".dvc/cache/files/md5").rglob("*")}
        with pytest.raises(DataError, match="not one of this file's recipients"):
            decrypt(age, parse_identity(identity, "old"))
        assert decrypt(age, parse_identity(new.read_text(), "new")).startswith(b"name,account,")


def test_the_identity_from_a_prefect_secret_block(prefect_server, monkeypatch, tmp_path):
    """data.encryption_key_block: the identity read from the session's real Prefect server, as privacy.key_block."""
    from prefect.blocks.system import Secret

    from humane.core.errors import ConfigError
    from humane.data.sources import read_table
    from humane.pipeline.params import load_params
    from humane.privacy.encryption import encrypt_file, keygen, parse_recipients, source_identity

    recipient = keygen(tmp_path / "identity.txt")
    plain = tmp_path / "t.csv"
    plain.write_text("a,y\n1,0\n2,1\n")
    age = encrypt_file(plain, parse_recipients([recipient], "recipients"))
    Secret(value=(tmp_path / "identity.txt").read_text()).save("humane-test-age-identity", overwrite=True)
    monkeypatch.delenv("HUMANE_AGE_IDENTITY", raising=False)
    block = {"encryption": "age", "encryption_key_block": "humane-test-age-identity"}
    spec = load_params().data.model_copy(update=block)
    frame = read_table(age, "data/raw/t.csv.age", identity=lambda name: source_identity(spec, name))
    assert frame["y"].tolist() == [0, 1]
    absent = spec.model_copy(update={"encryption_key_block": "humane-no-such-block"})  # the API answers: no such block
    with pytest.raises(ConfigError, match=r"^data/raw/t.csv.age \(data.encryption: age\): no age identity is set: put"):
        source_identity(absent, "data/raw/t.csv.age")
