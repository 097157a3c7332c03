"""A complete local team stack on 127.0.0.1, everything under one folder: `python -m team.stack up|down|status`.

PostgreSQL 15 (Debian's packages; pgaudit on the `humane` database) holds MLflow's backend store, its basic-auth user
database, Prefect's database and the audit trail. The MLflow tracking server runs humane's plugin (`--app-name
humane`, on top of basic-auth) with proxied artifacts; the Prefect server has an auth string and one process worker;
Debian's OpenSSH server serves the DVC remote over SFTP to one key. PostgreSQL and both HTTP servers speak TLS only,
with the certificate of a CA the stack makes (team.tls, under `tls/`), and every client verifies it, the servers'
own database connections included (`sslmode=verify-full`). Ports are free ones chosen at `up` (or fixed by
HUMANE_TEAM_*_PORT), written to `team.env`; processes are stopped by the PIDs recorded in `run/`. When run as root,
PostgreSQL runs as the system account `humane-pg` (initdb refuses root) and the DVC remote belongs to `humane-dvc`.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from humane.core.errors import cli
from team import tls
from team.bootstrap import POOL, bootstrap_trail
from team.settings import CA_ENV, Layout, StackError, format_env, read_env, secret, team_dir, write_private

if TYPE_CHECKING:
    import psycopg

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SSHD = Path("/usr/sbin/sshd")
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
PG_USER, DVC_USER = "humane-pg", "humane-dvc"
ADMIN = "admin"
# The MLflow app: humane's plugin (entry point `mlflow.app: humane`); `basic-auth` runs MLflow's own without it.
APP_ENV, APP_DEFAULT = "HUMANE_TEAM_MLFLOW_APP", "humane"
# Start order; `down` stops them in reverse, PostgreSQL last.
SERVICES = ("postgres", "sshd", "mlflow", "prefect", "worker")
PORT_ENV = {
    "postgres": "HUMANE_TEAM_PG_PORT",
    "mlflow": "HUMANE_TEAM_MLFLOW_PORT",
    "prefect": "HUMANE_TEAM_PREFECT_PORT",
    "sshd": "HUMANE_TEAM_SSH_PORT",
}
# Database -> owner role. Every role logs in with its own password over TCP (scram-sha-256).
DATABASES = {
    "mlflow": "mlflow_srv",
    "mlflow_auth": "mlflow_srv",
    "prefect": "prefect_srv",
    "humane": "humane_trail_owner",
}
ROLES = ("mlflow_srv", "prefect_srv", "humane_trail_owner", "humane_trail_writer")
QUIET = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
}
START_TIMEOUT = 120.0


class Account(NamedTuple):
    """The OS account a service runs as."""

    name: str
    uid: int
    gid: int


# ---------------------------------------------------------------- processes


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _alive(pid: int, started: str | None = None) -> bool:
    """True if `pid` runs (not a zombie) and, when given, started at the recorded time (no reused pid)."""
    fields = _proc_stat(pid)
    return bool(fields) and fields[0] != "Z" and (started is None or fields[19] == started)


def _group(pgid: int) -> list[int]:
    """The live processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        fields = _proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if fields and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _record(layout: Layout, service: str, pid: int) -> None:
    fields = _proc_stat(pid)
    if not fields:
        raise StackError(f"{service}: process {pid} ended at once; see {layout.log(service)}")
    layout.pidfile(service).write_text(f"{pid} {fields[19]}\n")


def recorded(layout: Layout, service: str) -> tuple[int, str] | None:
    """The (pid, start time) recorded for a service, or None."""
    path = layout.pidfile(service)
    if not path.exists():
        return None
    pid, started = path.read_text().split()
    return int(pid), started


def running(layout: Layout) -> list[str]:
    """The services whose recorded process still runs."""
    return [name for name in SERVICES if (rec := recorded(layout, name)) and _alive(*rec)]


def _spawn(layout: Layout, service: str, argv: list[str], env: dict[str, str]) -> int:
    """Start a long-running process in its own session (it outlives `up`), output to its log; record its pid."""
    with open(layout.log(service), "ab") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=layout.root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _record(layout, service, proc.pid)
    return proc.pid


def _run(step: str, argv: list[str], user: Account | None = None, cwd: Path | None = None) -> str:
    """Run a command to completion (as `user` when root), its stdout; a failure names the step and its output."""
    if user is not None and os.geteuid() == 0 and user.uid != 0:
        argv = ["runuser", "-u", user.name, "--", *argv]
    try:
        result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise StackError(f"{step}: `{shlex.join(argv)}` failed: {err}") from err
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-1500:]
        raise StackError(f"{step}: `{shlex.join(argv)}` exited {result.returncode}: {tail}")
    return result.stdout


def _wait(what: str, check: Callable[[], bool], service: str, layout: Layout, timeout: float = START_TIMEOUT) -> None:
    """Poll `check` until it holds; fail if the service's process ended or the time ran out."""
    deadline = time.monotonic() + timeout
    while not check():
        rec = recorded(layout, service)
        if rec and not _alive(*rec):
            log = layout.log(service)
            raise StackError(f"{service} exited while waiting for {what}; see {log}:\n{_tail(layout, service)}")
        if time.monotonic() > deadline:
            raise StackError(f"{service}: no {what} after {timeout:.0f} s; see {layout.log(service)}")
        time.sleep(0.3)


def _tail(layout: Layout, service: str, chars: int = 1500) -> str:
    path = layout.log(service)
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _http(url: str, ca: Path, auth: str | None = None, body: dict | None = None) -> tuple[int, Any]:
    """The HTTP status and JSON answer (None if not JSON) of a GET, a POST when `body` is given; 0: no answer.

    An https URL's certificate must chain to `ca` and name the host (a server that fails that does not answer).
    """
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + b64encode(auth.encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    context = ssl.create_default_context(cafile=ca)
    try:
        request = urllib.request.Request(url, data, headers)
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, None
    except OSError:
        return 0, None
    try:
        return status, json.loads(text)
    except ValueError:
        return status, None  # not JSON: /health answers "OK"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the servers bind: a port whose old connections linger in TIME_WAIT is free for them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- accounts, folders, ports


def os_account(name: str) -> Account:
    """The system account `name` (created when missing) when root; otherwise the current user."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = "useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin"
        _run(f"create the OS account {name}", [*useradd.split(), name])
        # Not locked ('!'), just without a password: sshd refuses logins to locked accounts, even by key.
        _run(f"unlock {name} for key logins", ["usermod", "-p", "*", name])
        entry = pwd.getpwnam(name)
    return Account(name, entry.pw_uid, entry.pw_gid)


def _chown(path: Path, account: Account) -> None:
    os.chown(path, account.uid, account.gid)


def prepare(layout: Layout, pg: Account, dvc: Account) -> None:
    """Create the stack's folders with their owners and modes; check the service accounts can reach them."""
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.root.chmod(0o755)
    for path in (layout.logs, layout.run, layout.artifacts, layout.prefect, layout.ssh):
        path.mkdir(exist_ok=True)
    for path in (layout.secrets, layout.accounts):
        path.mkdir(mode=0o700, exist_ok=True)
    layout.dvc_remote.mkdir(exist_ok=True)
    _chown(layout.dvc_remote, dvc)
    log = layout.log("postgres")
    log.touch()
    _chown(log, pg)
    for account in {pg, dvc}:
        if os.geteuid() == 0 and account.uid != 0:
            try:
                _run("check access", ["test", "-x", str(layout.root)], user=account)
            except StackError as err:
                raise StackError(
                    f"{account.name} cannot reach {layout.root} (a parent folder is not searchable by "
                    "other users): choose another folder with --dir or HUMANE_TEAM_DIR"
                ) from err


def choose_ports(layout: Layout) -> dict[str, int]:
    """Each service's port: fixed by HUMANE_TEAM_*_PORT, else the one recorded last time if free, else a free one."""
    previous = read_env(layout.team_env) if layout.team_env.exists() else {}
    ports = {}
    for service, var in PORT_ENV.items():
        if os.environ.get(var):
            ports[service] = int(os.environ[var])
            if not _port_free(ports[service]):
                raise StackError(f"{service}: port {ports[service]} ({var}) is already in use on {HOST}")
        elif previous.get(var) and _port_free(int(previous[var])):
            ports[service] = int(previous[var])
        else:
            ports[service] = _free_port()
            if previous.get(var):
                print(
                    f"warning: {service}'s port {previous[var]} is taken now: using {ports[service]} ({var} fixes it)"
                )
    return ports


def _base_env() -> dict[str, str]:
    """The caller's environment without its MLflow/Prefect/humane settings, quiet, the venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "HUMANE_"))}
    return {**env, **QUIET, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}


def _ca(layout: Layout) -> Path:
    return tls.TlsFiles.at(layout.tls).ca


def _pg_url(layout: Layout, ports: dict[str, int], role: str, db: str, driver: str = "postgresql") -> str:
    """A role's URL; libpq's (psycopg) verifies the server's certificate and name (asyncpg: _prefect_db_tls)."""
    url = f"{driver}://{role}:{secret(layout, role)}@{HOST}:{ports['postgres']}/{db}"
    if driver.endswith("+asyncpg"):
        return url
    return f"{url}?sslmode=verify-full&sslrootcert={quote(str(_ca(layout)), safe='/')}"


# ---------------------------------------------------------------- PostgreSQL

PG_CONF = """
# --- humane team stack
listen_addresses = '127.0.0.1'
unix_socket_directories = '{socket}'
unix_socket_permissions = 0700
password_encryption = 'scram-sha-256'
shared_preload_libraries = 'pgaudit'
"""
# No trust anywhere: every login, local or TCP, proves its password (SCRAM); over TCP only inside TLS (hostssl).
PG_HBA = """local all all scram-sha-256
hostssl all all 127.0.0.1/32 scram-sha-256
hostnossl all all all reject
"""
# TLS, set at every start (so that a cluster made before it gets it too); the files are copies in the data folder.
PG_TLS = "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c ssl_min_protocol_version=TLSv1.2"


def init_postgres(layout: Layout, pg: Account) -> None:
    """Make the cluster in `pg/` once (as `pg`): superuser `postgres` with a random password, pgaudit loaded."""
    data = layout.pg
    if (data / "PG_VERSION").exists():
        return
    shutil.rmtree(data, ignore_errors=True)  # what a failed initdb left
    data.mkdir(mode=0o700)
    _chown(data, pg)
    pwfile = layout.run / "pg-initpw"
    write_private(pwfile, secret(layout, "postgres") + "\n")
    _chown(pwfile, pg)
    try:
        options = f"-U postgres --pwfile={pwfile} --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8"
        _run("initdb", [str(PG_BIN / "initdb"), "-D", str(data), *options.split()], user=pg, cwd=layout.root)
    except StackError:
        shutil.rmtree(data, ignore_errors=True)
        raise
    finally:
        pwfile.unlink(missing_ok=True)
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(PG_CONF.format(socket=data))


def _pg_tls(layout: Layout, pg: Account) -> None:
    """pg_hba.conf (TLS only over TCP) and the server's certificate and key in the data folder, owned by `pg` (0600)."""
    (layout.pg / "pg_hba.conf").write_text(PG_HBA)
    files = tls.TlsFiles.at(layout.tls)
    for source, name in ((files.cert, "server.crt"), (files.key, "server.key")):
        target = layout.pg / name
        write_private(target, source.read_text())
        _chown(target, pg)


def start_postgres(layout: Layout, pg: Account, port: int) -> None:
    """pg_ctl start on 127.0.0.1:`port` with TLS, waiting until it accepts connections; record the postmaster's pid."""
    _pg_tls(layout, pg)
    options = f"-p {port} {PG_TLS}"
    argv = [str(PG_BIN / "pg_ctl"), "-D", str(layout.pg), "-l", str(layout.log("postgres")), "-o", options]
    _run("start PostgreSQL", [*argv, "-w", "-t", "60", "start"], user=pg, cwd=layout.root)
    _record(layout, "postgres", int((layout.pg / "postmaster.pid").read_text().split()[0]))


def _connect(layout: Layout, ports: dict[str, int], db: str = "postgres") -> psycopg.Connection:
    import psycopg

    try:
        return psycopg.connect(
            host=HOST,
            port=ports["postgres"],
            dbname=db,
            user="postgres",
            password=secret(layout, "postgres"),
            sslmode="verify-full",
            sslrootcert=str(_ca(layout)),
            autocommit=True,
            connect_timeout=10,
        )
    except psycopg.Error as err:
        raise StackError(f"PostgreSQL on {HOST}:{ports['postgres']} (database {db}): {err}") from err


def provision_postgres(layout: Layout, ports: dict[str, int]) -> None:
    """Roles, databases, extensions and pgaudit's setting; idempotent (passwords re-set from `secrets/`)."""
    from psycopg import sql

    with _connect(layout, ports) as conn:
        for role in ROLES:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
            verb = sql.SQL("ALTER" if exists else "CREATE")
            conn.execute(
                sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                    verb, sql.Identifier(role), sql.Literal(secret(layout, role))
                )
            )
        for db, owner in DATABASES.items():
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db]).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(owner)))
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db)))
        conn.execute("GRANT CONNECT ON DATABASE humane TO humane_trail_writer")
        # pgaudit logs writes and DDL on the trail's database only (to the PostgreSQL log).
        conn.execute("ALTER DATABASE humane SET pgaudit.log = 'write, ddl'")
    with _connect(layout, ports, "prefect") as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")  # Prefect's migration asks for it; needs a superuser
    with _connect(layout, ports, "humane") as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgaudit")


def stop_postgres(layout: Layout, pg: Account) -> None:
    """pg_ctl stop -m fast; the recorded pid is killed only if that fails."""
    try:
        _run(
            "stop PostgreSQL",
            [str(PG_BIN / "pg_ctl"), "-D", str(layout.pg), "-m", "fast", "-w", "-t", "30", "stop"],
            user=pg,
            cwd=layout.root,
        )
    except StackError as err:
        print(f"warning: {err}; killing the postmaster", file=sys.stderr)
        _stop_groups(layout, ["postgres"])
    layout.pidfile("postgres").unlink(missing_ok=True)


# ---------------------------------------------------------------- sshd (the DVC remote)


def ssh_keys(layout: Layout) -> None:
    """The server's host key and the DVC client key (secrets/dvc_key), made once."""
    for key, comment in (
        (layout.ssh / "ssh_host_ed25519_key", "humane-team-host"),
        (layout.secret("dvc_key"), "humane-dvc"),
    ):
        if not key.exists():
            _run(
                f"make the ssh key {key}",
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
            )
    authorized = layout.ssh / "authorized_keys"
    authorized.write_text(layout.secret("dvc_key.pub").read_text())
    authorized.chmod(0o644)


SSHD_CONFIG = """# humane team stack: SFTP only, to the DVC remote's account, by key only
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {pidfile}
AuthorizedKeysFile {authorized}
AllowUsers {user}
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The key files sit in the stack's folder, possibly under /tmp: sshd's home-directory checks do not apply.
StrictModes no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTTY no
LogLevel INFO
"""


def start_sshd(layout: Layout, dvc: Account, port: int) -> None:
    """Debian's OpenSSH server in the foreground (-D), configured from the stack's folder; test the config first."""
    config = layout.ssh / "sshd_config"
    config.write_text(
        SSHD_CONFIG.format(
            port=port,
            host_key=layout.ssh / "ssh_host_ed25519_key",
            pidfile=layout.ssh / "sshd.pid",
            authorized=layout.ssh / "authorized_keys",
            user=dvc.name,
        )
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation's empty chroot
    _run("check the sshd config", [str(SSHD), "-t", "-f", str(config)])
    _spawn(layout, "sshd", [str(SSHD), "-D", "-e", "-f", str(config)], _base_env())


def _ssh_ready(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=2) as sock:
            return sock.recv(64).startswith(b"SSH-2.0")
    except OSError:
        return False


def dvc_remote_url(layout: Layout, dvc: Account, port: int) -> str:
    """The DVC remote's URL (the key goes in `keyfile`)."""
    return f"ssh://{dvc.name}@{HOST}:{port}{layout.dvc_remote}"


# ---------------------------------------------------------------- MLflow and Prefect


def _app() -> str:
    return os.environ.get(APP_ENV) or APP_DEFAULT


def write_mlflow_auth(layout: Layout, ports: dict[str, int]) -> Path:
    """basic-auth's ini (it names a password: kept in secrets/): no permission unless granted, users in PostgreSQL."""
    path = layout.secret("mlflow_auth.ini")
    write_private(
        path,
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = {_pg_url(layout, ports, 'mlflow_srv', 'mlflow_auth', 'postgresql+psycopg')}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n",
    )
    return path


def start_mlflow(layout: Layout, ports: dict[str, int]) -> None:
    """The tracking server with authentication, PostgreSQL backend store and proxied artifacts under `artifacts/`."""
    env = {
        **_base_env(),
        "MLFLOW_BACKEND_STORE_URI": _pg_url(layout, ports, "mlflow_srv", "mlflow", "postgresql+psycopg"),
        "MLFLOW_AUTH_CONFIG_PATH": str(write_mlflow_auth(layout, ports)),
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
        "MLFLOW_AUTH_ADMIN_PASSWORD": secret(layout, "mlflow_admin"),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret(layout, "flask_secret"),
        "HUMANE_TRAIL_DB_URI": _pg_url(layout, ports, "humane_trail_writer", "humane"),
        # MLflow's job runner (GenAI jobs, periodic tasks: seven huey processes) is not used by humane.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    files = tls.TlsFiles.at(layout.tls)
    argv = [str(BIN / "mlflow"), "server", "--app-name", _app(), "--artifacts-destination", str(layout.artifacts)]
    options = f"--serve-artifacts --host {HOST} --port {ports['mlflow']} --workers 2"
    # uvicorn (mlflow server's default) serves TLS only: no plain listener.
    uvicorn = shlex.join(["--ssl-keyfile", str(files.key), "--ssl-certfile", str(files.cert)])
    _spawn(layout, "mlflow", [*argv, *options.split(), "--uvicorn-opts", uvicorn], env)


def prefect_auth(layout: Layout) -> str:
    """The Prefect server's one shared `user:password` auth string."""
    return f"humane:{secret(layout, 'prefect_auth')}"


def _prefect_db_tls(layout: Layout) -> dict[str, str]:
    """Prefect's settings for its asyncpg connections: TLS, the certificate verified against the CA, its name checked.

    prefect.server.database.configurations builds the SSL context from them (asyncpg ignores libpq's sslmode).
    """
    prefix = "PREFECT_SERVER_DATABASE_SQLALCHEMY_CONNECT_ARGS_TLS_"
    return {f"{prefix}ENABLED": "true", f"{prefix}CA_FILE": str(_ca(layout)), f"{prefix}CHECK_HOSTNAME": "true"}


def start_prefect(layout: Layout, ports: dict[str, int]) -> None:
    """The Prefect server on PostgreSQL (asyncpg), with an auth string and file-backed concurrency leases, over TLS.

    `prefect server start` has no TLS options, so the server is started as that command does in the background:
    uvicorn with Prefect's app factory (prefect.cli._server_utils), plus uvicorn's --ssl-keyfile/--ssl-certfile.
    """
    files = tls.TlsFiles.at(layout.tls)
    env = {
        **_base_env(),
        "PREFECT_HOME": str(layout.prefect),
        "PREFECT_API_DATABASE_CONNECTION_URL": _pg_url(layout, ports, "prefect_srv", "prefect", "postgresql+asyncpg"),
        **_prefect_db_tls(layout),
        "PREFECT_SERVER_API_AUTH_STRING": prefect_auth(layout),
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem",
        "PREFECT_SERVER_UI_API_URL": _prefect_api(ports),  # the UI calls the API over https too
        "PREFECT__SERVER_FINAL": "1",  # what `prefect server start` sets: this is the server, not an ephemeral one
    }
    app = ["--factory", "prefect.server.api.server:create_app", "--host", HOST, "--port", str(ports["prefect"])]
    ssl_files = ["--ssl-keyfile", str(files.key), "--ssl-certfile", str(files.cert)]
    _spawn(layout, "prefect", [sys.executable, "-m", "uvicorn", *app, *ssl_files], env)


def start_worker(layout: Layout, ports: dict[str, int]) -> None:
    """One process worker polling the `humane-process` pool (created here as a process pool if missing)."""
    env = {
        **_base_env(),
        "PREFECT_HOME": str(layout.prefect),
        "PREFECT_API_URL": _prefect_api(ports),
        "PREFECT_API_SSL_CERT_FILE": str(_ca(layout)),
        "PREFECT_API_AUTH_STRING": prefect_auth(layout),
    }
    argv = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process", "--name", "humane-local"]
    _spawn(layout, "worker", argv, env)


def _mlflow_uri(ports: dict[str, int]) -> str:
    return f"https://{HOST}:{ports['mlflow']}"


def _prefect_api(ports: dict[str, int]) -> str:
    return f"https://{HOST}:{ports['prefect']}/api"


def _worker_online(layout: Layout, ports: dict[str, int]) -> bool:
    url = f"{_prefect_api(ports)}/work_pools/{POOL}/workers/filter"
    code, workers = _http(url, _ca(layout), prefect_auth(layout), {})
    return code == 200 and any(worker.get("status") == "ONLINE" for worker in workers)


# ---------------------------------------------------------------- settings files


def write_settings(layout: Layout, ports: dict[str, int], dvc: Account) -> None:
    """team.env (sourceable, no secrets) and secrets/admin.env (the administrators' credentials).

    The clients verify the servers with the stack's CA: MLflow's (MLFLOW_TRACKING_SERVER_CERT_PATH, read by
    mlflow.utils.credentials for every request, humane's plugin API included), Prefect's (PREFECT_API_SSL_CERT_FILE,
    its HTTP and websocket clients) and libpq's (sslmode=verify-full in the DSNs).
    """
    ca = str(_ca(layout))
    write_private(
        layout.team_env,
        format_env(
            {
                "HUMANE_TEAM_DIR": str(layout.root),
                "HUMANE_MODE": "team",  # a checkout refuses to run if the server lacks humane's plugin
                "MLFLOW_TRACKING_URI": _mlflow_uri(ports),
                "MLFLOW_TRACKING_SERVER_CERT_PATH": ca,
                "PREFECT_API_URL": _prefect_api(ports),
                "PREFECT_API_SSL_CERT_FILE": ca,
                CA_ENV: ca,
                "HUMANE_DVC_REMOTE_URL": dvc_remote_url(layout, dvc, ports["sshd"]),
                "HUMANE_DVC_KEYFILE": str(layout.secret("dvc_key")),
                **{PORT_ENV[service]: str(port) for service, port in ports.items()},
            }
        ),
    )
    layout.team_env.chmod(0o644)
    write_private(
        layout.admin_env,
        format_env(
            {
                "MLFLOW_TRACKING_USERNAME": ADMIN,
                "MLFLOW_TRACKING_PASSWORD": secret(layout, "mlflow_admin"),
                "PREFECT_API_AUTH_STRING": prefect_auth(layout),
                "HUMANE_TRAIL_OWNER_DSN": _pg_url(layout, ports, "humane_trail_owner", "humane"),
            }
        ),
    )


# ---------------------------------------------------------------- up, down, status


def up(root: Path) -> None:
    """Bring the whole stack up in `root`; if anything fails, stop what was started and raise."""
    layout = Layout(root)
    live = running(layout) if layout.run.exists() else []
    if len(live) == len(SERVICES):
        print(f"team stack already up in {root} (settings: {layout.team_env})")
        return
    if live:
        raise StackError(
            f"team stack in {root} is partly up ({', '.join(live)} running): "
            f"run `python -m team.stack down --dir {root}` first"
        )
    _check_binaries()
    started = time.monotonic()
    pg, dvc = os_account(PG_USER), os_account(DVC_USER)
    prepare(layout, pg, dvc)
    tls.ensure(layout.tls)
    ports = choose_ports(layout)
    try:
        _start_all(layout, ports, pg, dvc)
    except BaseException:
        stop_all(layout, pg)
        raise
    print(f"team stack up in {root} in {time.monotonic() - started:.1f} s")
    print(
        f"  MLflow  {_mlflow_uri(ports)} (app {_app()})\n  Prefect {_prefect_api(ports)}\n  CA      {_ca(layout)}\n"
        f"  DVC     {dvc_remote_url(layout, dvc, ports['sshd'])}\n  settings: {layout.team_env}, {layout.admin_env}"
    )


def _start_all(layout: Layout, ports: dict[str, int], pg: Account, dvc: Account) -> None:
    init_postgres(layout, pg)
    start_postgres(layout, pg, ports["postgres"])
    provision_postgres(layout, ports)
    # The trail's schema before the MLflow server: humane's plugin checks the trail at start-up.
    bootstrap_trail(_pg_url(layout, ports, "humane_trail_owner", "humane"))
    ssh_keys(layout)
    start_sshd(layout, dvc, ports["sshd"])
    start_mlflow(layout, ports)
    start_prefect(layout, ports)
    ca = _ca(layout)
    _wait("HTTPS 200 on /api/health", lambda: _http(f"{_prefect_api(ports)}/health", ca)[0] == 200, "prefect", layout)
    start_worker(layout, ports)
    _wait(f"SSH banner on {HOST}:{ports['sshd']}", lambda: _ssh_ready(ports["sshd"]), "sshd", layout)
    _wait("HTTPS 200 on /health", lambda: _http(f"{_mlflow_uri(ports)}/health", ca)[0] == 200, "mlflow", layout)
    _wait(f"an ONLINE worker in pool {POOL}", lambda: _worker_online(layout, ports), "worker", layout)
    write_settings(layout, ports, dvc)


def missing_binaries() -> list[str]:
    """The files from Debian's packages the stack needs that are not installed."""
    needed = (PG_BIN / "initdb", PG_BIN / "pg_ctl", PG_BIN.parent / "lib" / "pgaudit.so", SSHD)
    return [str(path) for path in needed if not path.exists()]


def _check_binaries() -> None:
    if missing := missing_binaries():
        raise StackError(
            f"missing {', '.join(missing)}: apt-get install postgresql-15 postgresql-15-pgaudit openssh-server"
        )


def _stop_groups(layout: Layout, services: list[str], timeout: float = 20.0) -> None:
    """SIGTERM each service's process group (a server and its workers), SIGKILL what is left after `timeout`."""
    groups = {}
    for service in services:
        rec = recorded(layout, service)
        if rec and _alive(*rec):
            groups[service] = rec[0]
            os.killpg(rec[0], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_group(pgid) for pgid in groups.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for service, pgid in groups.items():
        if _group(pgid):
            print(f"warning: {service} (pid {pgid}) did not stop in {timeout:.0f} s: killed", file=sys.stderr)
            os.killpg(pgid, signal.SIGKILL)
    for service in services:
        layout.pidfile(service).unlink(missing_ok=True)


def stop_all(layout: Layout, pg: Account | None = None) -> None:
    """Stop every recorded service: the HTTP servers, the worker and sshd together, then PostgreSQL."""
    _stop_groups(layout, [s for s in reversed(SERVICES) if s != "postgres"])
    if recorded(layout, "postgres") or (layout.pg / "postmaster.pid").exists():
        stop_postgres(layout, pg or _pg_account())


def _pg_account() -> Account:
    entry = pwd.getpwuid(os.geteuid()) if os.geteuid() != 0 else pwd.getpwnam(PG_USER)
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def down(root: Path, purge: bool = False) -> None:
    """Stop the stack in `root` by its recorded PIDs (`pg_ctl stop` for PostgreSQL); `purge` deletes the folder."""
    layout = Layout(root)
    if layout.run.exists():
        stop_all(layout)
        print(f"team stack in {root} stopped")
    else:
        print(f"no team stack in {root}")
    if purge:
        shutil.rmtree(root, ignore_errors=True)
        print(f"removed {root}")


def health(layout: Layout, ports: dict[str, int]) -> dict[str, bool]:
    """Whether each service answers as it should (the HTTP servers over TLS verified with the stack's CA)."""
    if not _ca(layout).exists():
        raise StackError(f"{_ca(layout)} is missing: the servers cannot be verified (`up` makes it)")
    return {
        "postgres": _pg_ready(ports["postgres"]),
        "sshd": _ssh_ready(ports["sshd"]),
        "mlflow": _http(f"{_mlflow_uri(ports)}/health", _ca(layout))[0] == 200,
        "prefect": _http(f"{_prefect_api(ports)}/health", _ca(layout))[0] == 200,
        "worker": _worker_online(layout, ports),
    }


def _pg_ready(port: int) -> bool:
    try:
        _run("pg_isready", [str(PG_BIN / "pg_isready"), "-h", HOST, "-p", str(port), "-t", "3"])
    except StackError:
        return False
    return True


def status(root: Path) -> bool:
    """Print each service's pid, port and health; True when all run and answer."""
    layout = Layout(root)
    if not layout.team_env.exists():
        print(f"no team stack in {root}")
        return False
    env = read_env(layout.team_env)
    ports = {service: int(env[var]) for service, var in PORT_ENV.items()}
    answers = health(layout, ports)
    print(f"team stack in {root}")
    print(f"  {'service':<9} {'pid':>7} {'port':>6}  state")
    for service in SERVICES:
        rec = recorded(layout, service)
        alive = bool(rec and _alive(*rec))
        state = "healthy" if alive and answers[service] else "running, not answering" if alive else "stopped"
        print(f"  {service:<9} {rec[0] if rec else '-':>7} {ports.get(service, '-'):>6}  {state}")
    return all(answers.values()) and len(running(layout)) == len(SERVICES)


def _watch(root: Path, pid: int) -> None:
    """Wait for process `pid` to end, then stop the stack (a safety net for test sessions that are killed)."""
    layout = Layout(root)
    while _alive(pid) and layout.run.exists() and running(layout):
        time.sleep(0.5)
    if layout.run.exists() and running(layout):
        down(root, purge=True)


def main(argv: list[str] | None = None) -> None:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m team.stack", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", help="the stack's folder (default $HUMANE_TEAM_DIR or <project>/.team)")
    parser.add_argument("--purge", action="store_true", help="down: also delete the folder (data, secrets)")
    parser.add_argument("--when-gone", type=int, metavar="PID", help="down: first wait for process PID to end")
    args = parser.parse_args(argv)
    root = team_dir(args.dir)
    if args.command == "up":
        up(root)
    elif args.command == "down" and args.when_gone:
        _watch(root, args.when_gone)
    elif args.command == "down":
        down(root, purge=args.purge)
    elif not status(root):
        raise SystemExit(1)


if __name__ == "__main__":
    cli(main)
