"""Real: the session's team stack (PostgreSQL 15, MLflow server + basic-auth + plugin, Prefect on PG, sshd), DVC SFTP.

The local team stack answers as team mode needs: every server authenticates, the bootstrap's permissions and
promotion mutex are in place, and the DVC remote moves files between checkouts over SFTP."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests
import yaml

from team.settings import read_env
from team.stack import PORT_ENV

ROOT = Path(__file__).resolve().parents[2]
MODEL = "humane-sample"


def _creds(env: dict[str, str]) -> tuple[str, str]:
    return env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]


def _prefect_auth(env: dict[str, str]) -> tuple[str, str]:
    user, _, password = env["PREFECT_API_AUTH_STRING"].partition(":")
    return user, password


def _python(args: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run Python in a fresh interpreter (Prefect and MLflow read their settings from the environment at import)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_startup_times(team_stack):
    print(f"\nteam stack: up {team_stack.timings['up']:.1f} s, bootstrap {team_stack.timings['bootstrap']:.1f} s")
    assert team_stack.timings["up"] < 180


def test_status_reports_every_service_healthy(team_stack):
    result = _python(["-m", "team.stack", "status", "--dir", str(team_stack.dir)])
    assert result.returncode == 0, result.stdout + result.stderr
    for service in ("postgres", "sshd", "mlflow", "prefect", "worker"):
        assert any(line.split()[0] == service and line.endswith("healthy") for line in result.stdout.splitlines()[2:])


def test_mlflow_answers_401_without_valid_credentials(team_stack):
    url = f"{team_stack.mlflow_uri}/api/2.0/mlflow/experiments/get-by-name"
    params = {"experiment_name": MODEL}
    assert requests.get(url, params=params, timeout=30).status_code == 401
    user, _ = _creds(team_stack.env("tina"))
    assert requests.get(url, params=params, auth=(user, "not-her-password"), timeout=30).status_code == 401
    answer = requests.get(url, params=params, auth=_creds(team_stack.env("tina")), timeout=30)
    assert answer.status_code == 200
    assert answer.json()["experiment"]["artifact_location"].startswith("mlflow-artifacts:")


def test_prefect_answers_401_without_the_auth_string(team_stack):
    url = f"{team_stack.prefect_api_url}/work_pools/humane-process"
    assert requests.get(url, timeout=30).status_code == 401
    assert requests.get(url, auth=("humane", "wrong"), timeout=30).status_code == 401
    answer = requests.get(url, auth=_prefect_auth(team_stack.env("tina")), timeout=30)
    assert answer.status_code == 200
    assert answer.json()["type"] == "process"


def test_each_role_gets_its_permissions(team_stack, monkeypatch):
    from mlflow.server import get_app_client

    admin = team_stack.admin_env()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin["MLFLOW_TRACKING_USERNAME"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin["MLFLOW_TRACKING_PASSWORD"])
    auth = get_app_client("basic-auth", tracking_uri=team_stack.mlflow_uri)
    experiment = requests.get(
        f"{team_stack.mlflow_uri}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": MODEL},
        auth=_creds(admin),
        timeout=30,
    ).json()["experiment"]
    expected = {
        "tina": ("EDIT", "EDIT"),
        "rita": ("MANAGE", "EDIT"),
        "dora": ("MANAGE", "EDIT"),
        "remy": ("READ", "READ"),
    }
    for user, (on_model, on_experiment) in expected.items():
        assert auth.get_user_permission(user, "registered_model", MODEL).permission == on_model, user
        assert auth.get_user_permission(user, "experiment", experiment["experiment_id"]).permission == on_experiment


def test_a_reader_cannot_write(team_stack):
    remy = _creds(team_stack.env("remy"))
    base = f"{team_stack.mlflow_uri}/api/2.0/mlflow"
    experiment = requests.get(
        f"{base}/experiments/get-by-name", params={"experiment_name": MODEL}, auth=remy, timeout=30
    ).json()["experiment"]
    run = requests.post(
        f"{base}/runs/create", json={"experiment_id": experiment["experiment_id"]}, auth=remy, timeout=30
    )
    assert run.status_code == 403
    alias = {"name": MODEL, "alias": "champion", "version": "1"}
    assert requests.post(f"{base}/registered-models/alias", json=alias, auth=remy, timeout=30).status_code == 403


def test_promotion_mutex_admits_one_holder(team_stack):
    limit = requests.get(
        f"{team_stack.prefect_api_url}/v2/concurrency_limits/humane-promotion",
        auth=_prefect_auth(team_stack.env("tina")),
        timeout=30,
    ).json()
    assert (limit["limit"], limit["active"]) == (1, True)
    result = _python(
        [
            "-c",
            textwrap.dedent("""
        from humane.governance.team_client import TeamError, promotion_mutex

        with promotion_mutex(timeout_s=60):
            print("HELD")
            try:
                with promotion_mutex(timeout_s=2):
                    print("SECOND HOLDER")
            except TeamError as err:
                print("REFUSED:", err)
        with promotion_mutex(timeout_s=60):
            print("HELD AGAIN")
        """),
        ],
        team_stack.env("tina"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SECOND HOLDER" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0] == "HELD" and lines[-1] == "HELD AGAIN"
    assert "REFUSED: the promotion mutex 'humane-promotion' stayed held" in result.stdout


def test_bootstrap_is_idempotent_and_follows_role_changes(team_stack, tmp_path):
    """A second bootstrap with the session's team file changes nothing; an account whose role changed is updated."""

    def bootstrap(accounts: dict) -> str:
        spec = tmp_path / "team.yaml"
        spec.write_text(yaml.safe_dump({"models": [MODEL], "accounts": accounts}))
        result = _python(["-m", "team.bootstrap", "--settings", str(spec)], team_stack.admin_env())
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert "user zed: created" in bootstrap({"zed": "trainer"})
    again = bootstrap({**team_stack.team_file["accounts"], "zed": "reader"})
    assert "created" not in again and "restored" not in again and "password" not in again, again
    assert "automation crash-zombie-flow-runs: present" in again  # a killed run ends Crashed on the team server too
    account = team_stack.dir / "accounts" / "zed.env"
    assert account.stat().st_mode & 0o777 == 0o600
    zed = _creds(read_env(account))
    assert zed[1] not in again
    base = f"{team_stack.mlflow_uri}/api/2.0/mlflow"
    experiment = requests.get(
        f"{base}/experiments/get-by-name", params={"experiment_name": MODEL}, auth=zed, timeout=30
    ).json()["experiment"]
    run = requests.post(
        f"{base}/runs/create", json={"experiment_id": experiment["experiment_id"]}, auth=zed, timeout=30
    )
    assert run.status_code == 403  # a reader now


def test_ddl_on_the_trail_database_is_audited(team_stack):
    import psycopg

    with psycopg.connect(team_stack.trail_owner_dsn, connect_timeout=10, autocommit=True) as conn:
        assert conn.execute("SHOW pgaudit.log").fetchone()[0] == "write, ddl"
        conn.execute("CREATE TABLE pgaudit_probe (x int)")
        conn.execute("DROP TABLE pgaudit_probe")
    log = (team_stack.dir / "logs" / "postgres.log").read_text()
    assert "AUDIT: SESSION" in log and "CREATE TABLE pgaudit_probe" in log


def _dvc_repo(path: Path, team_stack, env: dict[str, str]) -> None:
    path.mkdir()
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["dvc", "remote", "add", "-d", "team", team_stack.dvc_remote_url],
        ["dvc", "remote", "modify", "--local", "team", "keyfile", str(team_stack.dvc_keyfile)],
    ):
        subprocess.run(cmd, cwd=path, env=env, check=True, capture_output=True, timeout=60)


def test_dvc_push_and_pull_over_sftp(team_stack, tmp_path):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site")}
    first, second = tmp_path / "first", tmp_path / "second"
    _dvc_repo(first, team_stack, env)
    _dvc_repo(second, team_stack, env)
    payload = os.urandom(4096)
    (first / "model.bin").write_bytes(payload)
    subprocess.run(["dvc", "add", "-q", "model.bin"], cwd=first, env=env, check=True, timeout=60)
    push = subprocess.run(["dvc", "push"], cwd=first, env=env, capture_output=True, text=True, timeout=120)
    assert push.returncode == 0 and "1 file pushed" in push.stdout, push.stdout + push.stderr
    (second / "model.bin.dvc").write_text((first / "model.bin.dvc").read_text())
    pull = subprocess.run(["dvc", "pull"], cwd=second, env=env, capture_output=True, text=True, timeout=120)
    assert pull.returncode == 0, pull.stdout + pull.stderr
    assert (second / "model.bin").read_bytes() == payload
    stored = [p for p in (team_stack.dir / "dvc-remote").rglob("*") if p.is_file()]
    assert len(stored) == 1
    if os.geteuid() == 0:
        assert stored[0].owner() == "humane-dvc"  # written by the remote's own account, not by the checkout's user


def _listening(port: int) -> list[str]:
    """The local addresses of the TCP sockets listening on `port` (from /proc/net/tcp and tcp6)."""
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                addresses.append(address)
    return addresses


@pytest.mark.parametrize("service", ["postgres", "mlflow", "prefect", "sshd"])
def test_listens_on_loopback_only(team_stack, service):
    addresses = _listening(int(team_stack.settings.env[PORT_ENV[service]]))
    assert addresses and set(addresses) == {"0100007F"}, addresses  # 127.0.0.1 only
