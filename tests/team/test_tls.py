"""Real: the team stack's TLS endpoints (PostgreSQL 15, MLflow server, Prefect server) and its CA, real clients of each.

In transit: PostgreSQL, the MLflow server and the Prefect server of the team stack speak TLS only, with a
certificate from the stack's CA (team/tls.py), and every client verifies it; a client without that CA and a plain
connection are refused."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import certifi
import psycopg
import pytest
import requests
from psycopg.conninfo import conninfo_to_dict

from team import tls

ROOT = Path(__file__).resolve().parents[2]
# The clients a checkout uses, each against its server, with whatever TLS settings the environment gives them.
PROBE = """
import json, os
answers = {}
uri = os.environ["MLFLOW_TRACKING_URI"]
try:
    from mlflow import MlflowClient
    MlflowClient(uri, uri).search_registered_models(max_results=1)
    answers["mlflow"] = "ok"
except Exception as err:
    answers["mlflow"] = f"{type(err).__name__}: {err}"
try:
    from humane.governance.team_client import is_team
    answers["humane"] = "ok" if is_team(uri) else "not team"
except Exception as err:
    answers["humane"] = f"{type(err).__name__}: {err}"
try:
    from prefect.client.orchestration import get_client
    with get_client(sync_client=True) as client:
        client.read_work_pool("humane-process")
    answers["prefect"] = "ok"
except Exception as err:
    answers["prefect"] = f"{type(err).__name__}: {err}"
print(json.dumps(answers))
"""
CA_SETTINGS = ("MLFLOW_TRACKING_SERVER_CERT_PATH", "PREFECT_API_SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


def _probe(env: dict[str, str]) -> dict[str, str]:
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "HUMANE_SERVER_RETRY_S": "4"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env={**env, **quick}, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ports(team_stack) -> dict[str, int]:
    env = team_stack.settings.env
    return {name: int(env[f"HUMANE_TEAM_{name.upper()}_PORT"]) for name in ("mlflow", "prefect", "pg")}


def _handshake(port: int, context: ssl.SSLContext, name: str) -> tuple[str | None, dict]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=name) as conn,
    ):
        return conn.version(), conn.getpeercert()


def _pg(team_stack, **options: str) -> psycopg.Connection:
    """The trail owner's login with other TLS options."""
    info = conninfo_to_dict(team_stack.trail_owner_dsn)
    return psycopg.connect(**{**info, **options}, connect_timeout=10, autocommit=True)


@pytest.mark.parametrize("service", ["mlflow", "prefect"])
def test_the_http_servers_present_the_stacks_certificate_over_tls_1_3(team_stack, service):
    port = _ports(team_stack)[service]
    trusting = ssl.create_default_context(cafile=team_stack.settings.ca_file)
    for name in ("127.0.0.1", "localhost"):
        version, cert = _handshake(port, trusting, name)
        assert version == "TLSv1.3" and ("IP Address", "127.0.0.1") in cert["subjectAltName"]
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):  # the name is checked, not only the chain
        _handshake(port, trusting, "humane.example")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        _handshake(port, ssl.create_default_context(cafile=certifi.where()), "127.0.0.1")


@pytest.mark.parametrize("service", ["mlflow", "prefect"])
def test_plain_http_and_clients_without_the_ca_are_refused(team_stack, service):
    base = team_stack.mlflow_uri if service == "mlflow" else team_stack.prefect_api_url
    path = f"{base}/health"
    assert path.startswith("https://127.0.0.1:")
    assert requests.get(path, timeout=30).status_code == 200  # REQUESTS_CA_BUNDLE: the stack's CA
    with pytest.raises(requests.exceptions.SSLError, match="certificate verify failed"):
        requests.get(path, timeout=30, verify=certifi.where())
    with pytest.raises(requests.ConnectionError):  # no plain listener: no HTTP answer at all
        requests.get(path.replace("https://", "http://"), timeout=30)


def test_the_checkouts_clients_verify_and_refuse_without_the_ca(team_stack):
    env = {**os.environ, **team_stack.env("tina")}
    assert _probe(env) == {"mlflow": "ok", "humane": "ok", "prefect": "ok"}
    without = _probe({k: v for k, v in env.items() if k not in CA_SETTINGS})
    assert all("CERTIFICATE_VERIFY_FAILED" in answer or "SSLError" in answer for answer in without.values()), without


def test_postgresql_takes_only_verified_tls_connections(team_stack, tmp_path):
    assert "sslmode=verify-full" in team_stack.trail_owner_dsn
    superuser = {"user": "postgres", "password": (team_stack.dir / "secrets" / "postgres").read_text().strip()}
    with _pg(team_stack, **superuser, dbname="postgres") as conn:
        # Every client backend, the MLflow and Prefect servers' own pools included, is on TLS 1.3.
        rows = conn.execute(
            "SELECT a.usename, s.ssl, s.version FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
            "WHERE a.backend_type = 'client backend'"
        ).fetchall()
    assert {"mlflow_srv", "prefect_srv", "postgres"} <= {user for user, *_ in rows}
    assert all(encrypted and version == "TLSv1.3" for _, encrypted, version in rows), rows
    with pytest.raises(psycopg.OperationalError, match="no encryption"):  # the right password, without TLS
        _pg(team_stack, sslmode="disable")
    other = tls.TlsFiles.at(tmp_path)
    tls.make_ca(other)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        _pg(team_stack, sslrootcert=str(other.ca))


def test_openssl_verifies_each_servers_chain(team_stack):
    """docs/tutorial/team-mode.md's check: `openssl s_client ... -CAfile "$HUMANE_TEAM_CA_FILE"
    -verify_return_error`."""
    ports, env = _ports(team_stack), team_stack.settings.env
    for port, starttls in ((ports["mlflow"], []), (ports["prefect"], []), (ports["pg"], ["-starttls", "postgres"])):
        argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *starttls, "-CAfile"]
        argv += [env["HUMANE_TEAM_CA_FILE"], "-verify_ip", "127.0.0.1", "-verify_return_error"]
        done = subprocess.run(argv, input="", capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and "Verify return code: 0 (ok)" in done.stdout, done.stdout[-2000:] + done.stderr
        assert "TLSv1.3" in done.stdout
