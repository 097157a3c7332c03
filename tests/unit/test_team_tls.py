"""The team stack's certificates (team/tls.py): made once and kept, renewed by the same CA, certificates from
elsewhere used as given, and anything a client would refuse refused at `up`; checked with a real TLS handshake."""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
from pathlib import Path

import pytest

from team import tls
from team.settings import StackError


def _serve_once(files: tls.TlsFiles) -> int:
    """A TLS server on 127.0.0.1 with `files`' certificate for one handshake; its port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        with context.wrap_socket(listener, server_side=True) as server:
            try:
                conn, _ = server.accept()
                conn.close()
            except (ssl.SSLError, OSError):
                pass

    threading.Thread(target=accept, daemon=True).start()
    return port


def _handshake(files: tls.TlsFiles, ca: Path, name: str) -> str | None:
    context = ssl.create_default_context(cafile=ca)
    port = _serve_once(files)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=name) as conn,
    ):
        return conn.version()


def test_ensure_makes_a_ca_and_a_server_certificate_once(tmp_path):
    files = tls.ensure(tmp_path / "tls")
    modes = {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "tls").iterdir()}
    assert modes == {"ca.crt": 0o644, "ca.key": 0o600, "server.crt": 0o644, "server.key": 0o600}
    for name in tls.HOSTS:
        assert _handshake(files, files.ca, name) == "TLSv1.3"
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(files, files.ca, "humane.example")
    before = {path: path.read_bytes() for path in (files.ca, files.ca_key, files.cert, files.key)}
    tls.ensure(tmp_path / "tls")
    assert {path: path.read_bytes() for path in before} == before


def test_a_server_certificate_near_expiry_is_renewed_by_the_same_ca(tmp_path):
    files = tls.ensure(tmp_path)
    ca = files.ca.read_bytes()
    tls.make_server_cert(files, days=tls.RENEW_DAYS - 1)
    tls.ensure(tmp_path)
    assert files.ca.read_bytes() == ca and tls.days_left(files.cert) > tls.SERVER_DAYS - 1
    assert _handshake(files, files.ca, "127.0.0.1") == "TLSv1.3"


def test_certificates_from_elsewhere_are_used_as_given_and_checked(tmp_path):
    ours = tls.ensure(tmp_path / "ours")
    given = tls.TlsFiles.at(tmp_path / "given")
    given.ca.parent.mkdir()
    for source, target in ((ours.ca, given.ca), (ours.cert, given.cert), (ours.key, given.key)):
        shutil.copy2(source, target)
    tls.make_server_cert(ours, days=1)  # near expiry, but not ours to renew: kept as given
    shutil.copy2(ours.cert, given.cert)
    shutil.copy2(ours.key, given.key)
    cert = given.cert.read_bytes()
    assert tls.ensure(given.ca.parent) == given and given.cert.read_bytes() == cert and not given.ca_key.exists()
    other = tls.ensure(tmp_path / "other")
    shutil.copy2(other.key, given.key)
    with pytest.raises(StackError, match="is not the key of"):
        tls.ensure(given.ca.parent)
    shutil.copy2(ours.key, given.key)
    shutil.copy2(other.ca, given.ca)
    with pytest.raises(StackError, match="does not verify against"):
        tls.ensure(given.ca.parent)
    given.key.chmod(0o644)
    with pytest.raises(StackError, match="readable by others"):
        tls.check(given)
    given.cert.unlink()
    with pytest.raises(StackError, match=r"server\.crt missing"):
        tls.ensure(given.ca.parent)


def test_an_mlflow_server_whose_certificate_does_not_verify_is_one_line_naming_the_ca_setting(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from humane.core.errors import IntegrityFailed, exit_code
    from humane.governance import store

    files = tls.ensure(tmp_path / "tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    listener = context.wrap_socket(socket.create_server(("127.0.0.1", 0)), server_side=True)
    port = listener.getsockname()[1]

    def accept() -> None:  # every attempt's handshake, until the client gives up
        while True:
            try:
                listener.accept()[0].close()
            except (ssl.SSLError, OSError):
                if listener.fileno() == -1:
                    return

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setenv("HUMANE_SERVER_RETRY_S", "4")
    monkeypatch.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH", raising=False)
    uri = f"https://127.0.0.1:{port}"
    try:
        with (
            pytest.raises(IntegrityFailed, match="certificate could not be verified") as caught,
            store.server_calls(uri),
        ):
            MlflowClient(tracking_uri=uri).search_experiments()
    finally:
        listener.close()
    assert "MLFLOW_TRACKING_SERVER_CERT_PATH" in str(caught.value)
    assert exit_code(caught.value) == 12
