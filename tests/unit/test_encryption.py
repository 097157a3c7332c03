"""Raw data encrypted at rest with age: the load stage reads the plaintext in memory; every failure names the file,
writes nothing and never shows the identity; key rotation locks the old identity out."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from humane.core.context import RunContext
from humane.core.errors import ConfigError, DataError, IntegrityFailed, exit_code
from humane.core.io import md5_of
from humane.core.paths import Paths
from humane.data.sources import read_table
from humane.privacy.encryption import decrypt, main, parse_identity, parse_recipients
from tasks import load as load_stage
from tests.unit.test_load import _users_file, _users_params

ROOT = Path(__file__).resolve().parents[2]
ENV = "HUMANE_AGE_IDENTITY"
SOURCE = "data/raw/users.csv"
EMAIL = "person.0@example.org"  # a value of the users file's e-mail column (dropped by the privacy policy)


def _keygen(folder: Path, name: str) -> tuple[str, str]:
    """A new identity written by the CLI: (the identity file's text, its recipient)."""
    path = folder / f"{name}.txt"
    recipient = main(["keygen", "--identity", str(path)])
    return path.read_text(), recipient


@pytest.fixture
def alice(tmp_path: Path) -> tuple[str, str]:
    return _keygen(tmp_path / "keys", "alice")


def _params(source: str = SOURCE + ".age", encryption: str = "age", **data):
    params = _users_params(keep=["customer id"])
    update = {"source": source, "encryption": encryption, **data}
    return params.model_copy(update={"data": params.data.model_copy(update=update)})


def _encrypted(tmp_path: Path, recipient: str) -> Path:
    """The users file, encrypted for `recipient` with the CLI, its plaintext removed."""
    plain = tmp_path / SOURCE
    _users_file(plain)
    said = main(["encrypt", str(plain), "--recipient", recipient, "--remove-plaintext"])
    assert f"wrote {plain}.age" in said and "dvc add" in said and not plain.exists()
    return plain.with_name(plain.name + ".age")


def _load(tmp_path: Path, params) -> str:
    return load_stage.run(params, Paths(tmp_path), RunContext(tmp_path))


def test_an_encrypted_source_loads_as_its_plaintext_and_records_the_ciphertext_md5(tmp_path, alice, monkeypatch):
    plain_root, secret_root = tmp_path / "plain", tmp_path / "secret"
    _users_file(plain_root / SOURCE)
    _load(plain_root, _params(SOURCE, "none"))
    age = _encrypted(secret_root, alice[1])
    assert EMAIL.encode() not in age.read_bytes() and age.read_bytes().startswith(b"age-encryption.org/v1\n")

    monkeypatch.setenv(ENV, alice[0])  # the identity file's whole text: its comment lines are skipped
    _load(secret_root, _params())
    for name in ("train.parquet", "test.parquet"):
        expected = pd.read_parquet(plain_root / "data/interim" / name)
        pd.testing.assert_frame_equal(pd.read_parquet(secret_root / "data/interim" / name), expected)
    meta = json.loads((secret_root / "data/interim/meta.json").read_text())
    assert meta["files"]["train"] == SOURCE + ".age" and meta["md5"]["train"] == md5_of(age)


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz", "t.csv.zip", "t.tsv", "t.parquet"])
def test_every_file_kind_is_parsed_from_the_decrypted_bytes(tmp_path, alice, name):
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"], "y": [0, 1, 0]})
    plain = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(plain)
    else:
        frame.to_csv(plain, index=False, sep="\t" if name.endswith(".tsv") else ",")
    main(["encrypt", str(plain), "--recipient", alice[1], "--remove-plaintext"])
    identity = parse_identity(alice[0], "test")
    read = read_table(tmp_path / f"{name}.age", f"data/raw/{name}.age", identity=lambda _: identity)
    pd.testing.assert_frame_equal(read, frame)


def _truncate_payload(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _truncate_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:60])


def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def _not_age(path: Path) -> None:
    path.write_text("a;b;y\n1;2;0\n")


# (what is done to the file or the key, the error type, what the message says); each names the file.
FAILURES = {
    "missing key": (None, ConfigError, f"no age identity is set: put the identity .* environment variable {ENV}"),
    "wrong key": ("bob", DataError, "the age identity set is not one of this file's recipients"),
    "invalid key": ("invalid", ConfigError, f"environment variable {ENV}: does not hold one age X25519 identity"),
    "truncated payload": (_truncate_payload, IntegrityFailed, "altered, or cut short, after it was encrypted"),
    "truncated header": (_truncate_header, IntegrityFailed, "the age file is truncated"),
    "tampered": (_tamper, IntegrityFailed, "fails age's authentication"),
    "not an age file": (_not_age, DataError, "is not an age-encrypted file"),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_each_failure_names_the_file_writes_nothing_and_never_shows_the_identity(
    tmp_path, alice, monkeypatch, capsys, case
):
    change, error, message = FAILURES[case]
    age = _encrypted(tmp_path, alice[1])
    bob = _keygen(tmp_path / "keys", "bob")[0]
    monkeypatch.setenv(ENV, alice[0])
    if change is None:
        monkeypatch.delenv(ENV)
    elif change == "bob":
        monkeypatch.setenv(ENV, bob)
    elif change == "invalid":
        monkeypatch.setenv(ENV, alice[0].replace("AGE-SECRET-KEY-1", "AGE-SECRET-KEY-1Q"))
    else:
        change(age)
    with pytest.raises(error, match=message) as err:
        _load(tmp_path, _params())
    assert str(err.value).startswith(SOURCE + ".age") and "\n" not in str(err.value)
    assert exit_code(err.value) == (12 if error is IntegrityFailed else 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "keys"] and not (tmp_path / "data/interim").exists()
    shown = str(err.value) + "".join(capsys.readouterr())
    secrets = [line for text in (alice[0], bob) for line in text.splitlines() if not line.startswith("#")]
    assert all(secret not in shown and secret[16:40] not in shown for secret in secrets)


def test_encryption_and_the_file_name_must_agree(tmp_path, alice, monkeypatch):
    age = _encrypted(tmp_path, alice[1])
    monkeypatch.setenv(ENV, alice[0])
    with pytest.raises(DataError, match=r"^data/raw/users.csv.age: is an age-encrypted file, but data.encryption"):
        _load(tmp_path, _params(encryption="none"))
    age.rename(tmp_path / SOURCE)  # ciphertext under a plaintext name: found by its header
    with pytest.raises(DataError, match=r"^data/raw/users.csv: is an age-encrypted file, but data.encryption is none"):
        _load(tmp_path, _params(SOURCE, "none"))
    _users_file(tmp_path / SOURCE)
    with pytest.raises(DataError, match=r"^data/raw/users.csv: data.encryption is age, but this file is not an age"):
        _load(tmp_path, _params(SOURCE))
    with pytest.raises(ConfigError, match=r"data.encryption: age needs data.source to name an age-encrypted file"):
        _load(tmp_path, _params("adult"))
    assert not (tmp_path / "data/interim").exists()


def test_rotation_locks_the_old_identity_out(tmp_path, alice, monkeypatch, capsys):
    age = _encrypted(tmp_path, alice[1])
    plaintext = decrypt(age, parse_identity(alice[0], "alice"))
    bob, bob_recipient = _keygen(tmp_path / "keys", "bob")
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# the team, after alice left\n\n{bob_recipient}\n")
    monkeypatch.setenv(ENV, bob)
    before = age.read_bytes()
    with pytest.raises(DataError, match="not one of this file's recipients"):  # bob cannot rotate alice's file yet
        main(["rotate", str(age), "--recipients", str(recipients)])
    assert age.read_bytes() == before

    monkeypatch.setenv(ENV, alice[0])
    said = main(["rotate", str(age), "--recipients", str(recipients)])
    assert "dvc add" in said and "old identity" in said
    assert sorted(p.name for p in age.parent.iterdir()) == ["users.csv.age"]  # replaced in place, no temp left
    with pytest.raises(DataError, match="not one of this file's recipients"):
        decrypt(age, parse_identity(alice[0], "alice"))
    assert decrypt(age, parse_identity(bob, "bob")) == plaintext
    shown = said + "".join(capsys.readouterr())
    assert "AGE-SECRET-KEY" not in shown


def test_keygen_writes_a_private_identity_and_shows_only_its_recipient(tmp_path, capsys):
    identity_file = tmp_path / "keys/me.txt"
    recipient = main(["keygen", "--identity", str(identity_file)])
    text = identity_file.read_text()
    assert recipient.startswith("age1") and f"# public key: {recipient}\n" in text
    assert oct(identity_file.stat().st_mode & 0o777) == "0o600"
    assert "AGE-SECRET-KEY-1" in text and "AGE-SECRET-KEY" not in recipient + "".join(capsys.readouterr())
    with pytest.raises(ConfigError, match="exists; an identity is never overwritten"):
        main(["keygen", "--identity", str(identity_file)])
    assert identity_file.read_text() == text


def test_a_recipients_file_is_checked_line_by_line_without_quoting_it(alice):
    identity, recipient = alice
    assert len(parse_recipients(["# team", "", f"  {recipient}  "], "r.txt")) == 1
    secret = identity.splitlines()[-1]
    with pytest.raises(ConfigError, match=r"^r.txt: line 2 holds a secret identity, not a recipient") as err:
        parse_recipients([recipient, secret], "r.txt")
    assert secret not in str(err.value)
    with pytest.raises(ConfigError, match=r"^r.txt: line 1 is not an age X25519 recipient"):
        parse_recipients(["age1notakey"], "r.txt")
    with pytest.raises(ConfigError, match=r"^r.txt: names no recipient"):
        parse_recipients(["# nobody"], "r.txt")


def test_the_command_line_exits_with_the_error_code_and_one_line(tmp_path, alice):
    age = _encrypted(tmp_path, alice[1])
    env = {k: v for k, v in os.environ.items() if k != ENV}
    done = subprocess.run(
        [sys.executable, "-m", "humane.privacy.encryption", "rotate", str(age), "--recipient", alice[1]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.startswith(f"error: rotate {age}: no age identity is set")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_a_prefect_api_failure_reading_the_identity_block_is_not_reported_as_no_identity(tmp_path, alice, monkeypatch):
    import socket

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from humane.core.errors import ServerUnavailable

    _encrypted(tmp_path, alice[1])
    with socket.socket() as sock:  # a port nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.delenv(ENV, raising=False)
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}), pytest.raises(ServerUnavailable) as err:
        _load(tmp_path, _params(encryption_key_block="humane-age-identity"))
    message = str(err.value)
    assert message.startswith("data.encryption_key_block: cannot read the Prefect Secret block 'humane-age-identity'")
    assert "no age identity is set" not in message and exit_code(err.value) == 10
    assert not (tmp_path / "data/interim").exists()
