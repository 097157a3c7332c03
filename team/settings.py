"""Where a local team stack keeps everything, and the settings files it writes for the people who use it.

One folder holds the whole stack (default `<project>/.team`, `HUMANE_TEAM_DIR` overrides it):

    team.env            sourceable, no secrets: server URLs (https), the CA file clients verify them with, DVC
                        remote, ports
    tls/                the stack's CA and server certificate (team/tls.py); keys 0600
    secrets/            0700; one file per password or key (0600) and admin.env (MLflow admin, Prefect auth string,
                        the trail owner's DSN)
    accounts/           0700; <name>.env per account that bootstrap generated a password for (0600)
    pg/                 the PostgreSQL cluster and its unix socket
    artifacts/          MLflow's proxied artifact store
    prefect/            PREFECT_HOME of the Prefect server and worker
    ssh/, dvc-remote/   sshd's config and host key; the DVC remote folder it serves over SFTP
    logs/, run/         one log and one pid file per process
"""

from __future__ import annotations

import os
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path

from humane.core.errors import HumaneError

PROJECT = Path(__file__).resolve().parents[1]
DIR_ENV = "HUMANE_TEAM_DIR"
CA_ENV = "HUMANE_TEAM_CA_FILE"  # in team.env: the CA file, for tools without a setting of their own (curl --cacert)


class StackError(HumaneError):
    """A team stack step failed; the message names the step, file or port."""


def team_dir(explicit: str | Path | None = None) -> Path:
    """The stack's folder: `explicit`, else $HUMANE_TEAM_DIR, else `<project>/.team`."""
    return Path(explicit or os.environ.get(DIR_ENV) or PROJECT / ".team").resolve()


@dataclass(frozen=True)
class Layout:
    """The paths inside one stack folder."""

    root: Path

    @property
    def pg(self) -> Path:
        """The PostgreSQL cluster (and its unix socket)."""
        return self.root / "pg"

    @property
    def logs(self) -> Path:
        """One log per process."""
        return self.root / "logs"

    @property
    def run(self) -> Path:
        """One pid file per process."""
        return self.root / "run"

    @property
    def secrets(self) -> Path:
        """Passwords and keys, 0600 each."""
        return self.root / "secrets"

    @property
    def accounts(self) -> Path:
        """Generated account credentials, <name>.env."""
        return self.root / "accounts"

    @property
    def artifacts(self) -> Path:
        """MLflow's proxied artifact store."""
        return self.root / "artifacts"

    @property
    def prefect(self) -> Path:
        """PREFECT_HOME of the Prefect server and worker."""
        return self.root / "prefect"

    @property
    def ssh(self) -> Path:
        """The OpenSSH server's config, host key and authorized_keys."""
        return self.root / "ssh"

    @property
    def tls(self) -> Path:
        """The CA and the server certificate (team.tls)."""
        return self.root / "tls"

    @property
    def dvc_remote(self) -> Path:
        """The DVC remote served over SFTP."""
        return self.root / "dvc-remote"

    @property
    def team_env(self) -> Path:
        """The sourceable settings without secrets."""
        return self.root / "team.env"

    @property
    def admin_env(self) -> Path:
        """The administrators' secrets: MLflow admin, Prefect auth string, trail owner DSN."""
        return self.root / "secrets" / "admin.env"

    def secret(self, name: str) -> Path:
        """One secret's file."""
        return self.root / "secrets" / name

    def pidfile(self, service: str) -> Path:
        """Where a service's pid (and start time) is recorded."""
        return self.root / "run" / f"{service}.pid"

    def log(self, service: str) -> Path:
        """A service's log."""
        return self.root / "logs" / f"{service}.log"


def write_private(path: Path, text: str) -> None:
    """Write a file that only its owner may read (0600 from its creation on, replaced atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def secret(layout: Layout, name: str) -> str:
    """A random secret kept in `secrets/<name>`: made once, the same on every later `up`."""
    path = layout.secret(name)
    if not path.exists():
        write_private(path, secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def format_env(values: dict[str, str]) -> str:
    """`KEY=value` lines a POSIX shell can source (values quoted where needed)."""
    return "".join(f"{key}={shlex.quote(str(value))}\n" for key, value in values.items())


def read_env(path: Path) -> dict[str, str]:
    """Read a file written by `format_env` (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            parts = shlex.split(value)
            values[key.strip()] = parts[0] if parts else ""
    return values


@dataclass(frozen=True)
class TeamSettings:
    """What a running local stack's files say: the URLs, the DVC remote, the ports and the admin secrets."""

    dir: Path
    env: dict[str, str]
    admin: dict[str, str]

    @classmethod
    def load(cls, directory: str | Path | None = None) -> TeamSettings:
        """Read `team.env` and `secrets/admin.env` of the stack in `directory`."""
        layout = Layout(team_dir(directory))
        if not layout.team_env.exists():
            raise StackError(f"no team stack in {layout.root}: {layout.team_env} is missing (run `make team-up`)")
        return cls(layout.root, read_env(layout.team_env), read_env(layout.admin_env))

    @property
    def mlflow_uri(self) -> str:
        """The MLflow tracking server."""
        return self.env["MLFLOW_TRACKING_URI"]

    @property
    def prefect_api_url(self) -> str:
        """The Prefect server's API."""
        return self.env["PREFECT_API_URL"]

    @property
    def ca_file(self) -> Path:
        """The CA certificate the servers' certificates chain to (what clients verify them with)."""
        return Path(self.env[CA_ENV])

    @property
    def dvc_remote_url(self) -> str:
        """The DVC remote (ssh://...)."""
        return self.env["HUMANE_DVC_REMOTE_URL"]

    @property
    def dvc_keyfile(self) -> Path:
        """The private key DVC logs in with."""
        return Path(self.env["HUMANE_DVC_KEYFILE"])

    @property
    def trail_owner_dsn(self) -> str:
        """The audit trail database's owner (DDL; tests use it to try UPDATE/DELETE)."""
        return self.admin["HUMANE_TRAIL_OWNER_DSN"]

    def admin_env(self) -> dict[str, str]:
        """The environment `team.bootstrap` needs to administer this stack."""
        return {**self.env, **self.admin}
