"""The team stack for tests: started once per pytest session, bootstrapped with four accounts, always stopped.

Under pytest-xdist the first worker that needs the stack starts it (the others wait on a file lock in the session's
shared temp root); each worker using it registers itself there, and the last one to finish stops it and deletes its
folder. A watcher process started with the stack stops it too if the pytest process is killed before that.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from team.settings import TeamSettings, read_env
from team.stack import SERVICES, Layout, missing_binaries, running

ROOT = Path(__file__).resolve().parents[2]
# trainer, reviewer, an account that is both, a reader; alice (trainer) and bob (reviewer), the accounts
# docs/tutorial/team-mode.md uses; the model the sample project registers.
ACCOUNTS = {
    "tina": "trainer",
    "rita": "reviewer",
    "dora": ["trainer", "reviewer"],
    "remy": "reader",
    "alice": "trainer",
    "bob": "reviewer",
}
MODELS = ["humane-sample"]
TEAM_FILE = {"models": MODELS, "accounts": ACCOUNTS}
# The stack is started, bootstrapped and stopped with team-mode.md's own commands (its first and last blocks), with
# `-o .venv/.installed` as the suite runs `make` everywhere: the venv is the suite's own, `setup` is not remade.
UP, BOOTSTRAP, DOWN = "make team-up", "make team-bootstrap", "make team-down"


@dataclass(frozen=True)
class TeamStack:
    """A running, bootstrapped team stack: its settings and each account's environment."""

    settings: TeamSettings
    accounts: dict[str, dict[str, str]]
    team_file: dict = field(default_factory=lambda: TEAM_FILE)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        """The stack's folder."""
        return self.settings.dir

    @property
    def mlflow_uri(self) -> str:
        """The tracking server."""
        return self.settings.mlflow_uri

    @property
    def prefect_api_url(self) -> str:
        """The Prefect API."""
        return self.settings.prefect_api_url

    @property
    def trail_owner_dsn(self) -> str:
        """The trail database's owner (may try UPDATE/DELETE; the trigger refuses them)."""
        return self.settings.trail_owner_dsn

    @property
    def dvc_remote_url(self) -> str:
        """ssh://humane-dvc@127.0.0.1:PORT/.../dvc-remote."""
        return self.settings.dvc_remote_url

    @property
    def dvc_keyfile(self) -> Path:
        """The key DVC logs in with."""
        return self.settings.dvc_keyfile

    def env(self, account: str) -> dict[str, str]:
        """team.env plus one account's credentials: MLFLOW_TRACKING_*, PREFECT_API_URL, PREFECT_API_AUTH_STRING."""
        return {**self.settings.env, **self.accounts[account]}

    def admin_env(self) -> dict[str, str]:
        """team.env plus the administrators' credentials (MLflow admin, Prefect auth string, trail owner DSN)."""
        return self.settings.admin_env()


def _run(cmd: list[str], env: dict[str, str], timeout: float = 300) -> float:
    """Run a stack command; its wall time. A failure shows what it printed."""
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.monotonic() - started


def _make(command: str, root: Path) -> list[str]:
    """A documented `make team-*` command as the suite runs it; `root` is the stack's folder (HUMANE_TEAM_DIR)."""
    make, target = command.split()
    return [make, "-o", ".venv/.installed", target]


def _make_env(root: Path, **extra: str) -> dict[str, str]:
    """This environment for `make team-*` on the stack in `root`: this interpreter's venv first on PATH (`python`
    in the recipes), and no tracking server named (team-bootstrap then sources the stack's own team.env and
    secrets/admin.env)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    path = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, "PATH": path, "HUMANE_TEAM_DIR": str(root), **extra}


def _start(root: Path, shared: Path) -> dict[str, float]:
    """`make team-up` and `make team-bootstrap` on `root` (team-mode.md's first block), the watcher; their wall
    times."""
    timings = {"up": _run(_make(UP, root), _make_env(root))}
    _watch(root, shared)
    spec = shared / "team-accounts.yaml"
    spec.write_text(yaml.safe_dump(TEAM_FILE))
    timings["bootstrap"] = _run(_make(BOOTSTRAP, root), _make_env(root, TEAM_ACCOUNTS=str(spec)))
    _cheap_password_hashes(root)
    return timings


def _cheap_password_hashes(root: Path) -> None:
    """Store the test accounts' MLflow passwords under a one-round PBKDF2 hash instead of werkzeug's scrypt.

    basic-auth checks the password on every request (scrypt: 0.4 s of server CPU each on this 2-core machine under
    load) and a pipeline run in team mode sends hundreds. Every check still runs against the stored hash: a wrong
    password is refused as before; only the work factor of these throwaway test accounts (and the stack's admin)
    changes, in this test stack only. Before each change the stored hash is checked: scrypt, as `team.bootstrap`
    stores it (and the server, for its admin).
    """
    from werkzeug.security import generate_password_hash

    from team.stack import PORT_ENV, _connect

    settings = TeamSettings.load(root)
    envs = [settings.admin_env(), *(read_env(root / "accounts" / f"{name}.env") for name in ACCOUNTS)]
    ports = {"postgres": int(settings.env[PORT_ENV["postgres"]])}
    with _connect(Layout(root), ports, "mlflow_auth") as conn:
        for env in envs:
            hashed = generate_password_hash(env["MLFLOW_TRACKING_PASSWORD"], method="pbkdf2:sha256:1")
            user = env["MLFLOW_TRACKING_USERNAME"]
            row = conn.execute("SELECT password_hash FROM users WHERE username = %s", (user,)).fetchone()
            method = row[0].split("$")[0] if row else "no MLflow user"  # the method only, never the hash
            assert method.startswith("scrypt:"), f"{user}: {method}, not the scrypt hash team.bootstrap stores"
            done = conn.execute("UPDATE users SET password_hash = %s WHERE username = %s", (hashed, user))
            assert done.rowcount == 1, f"no MLflow user {user} in the auth database"


def _watch(root: Path, shared: Path) -> None:
    """A detached `team.stack down --when-gone PID`: stops the stack if pytest (its main process) dies first."""
    main_pid = os.getppid() if os.environ.get("PYTEST_XDIST_WORKER") else os.getpid()
    with open(shared / "team-stack-watch.log", "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "team.stack", "down", "--dir", str(root), "--when-gone", str(main_pid)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(root: Path) -> None:
    """`make team-down` on `root` (team-mode.md's last block), then its folder deleted (as `down --purge` does)."""
    subprocess.run(_make(DOWN, root), cwd=ROOT, env=_make_env(root), capture_output=True, timeout=120)
    shutil.rmtree(root, ignore_errors=True)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if the holder dies
        yield


def _load(root: Path, timings: dict[str, float]) -> TeamStack:
    settings = TeamSettings.load(root)
    accounts = {name: read_env(root / "accounts" / f"{name}.env") for name in ACCOUNTS}
    return TeamStack(settings, accounts, timings=timings)


@pytest.fixture(scope="session")
def team_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamStack]:
    """The session's team stack (see the module's docstring); skipped only where the Debian binaries are absent."""
    if missing := missing_binaries():
        why = f"team stack needs Debian's postgresql-15, postgresql-15-pgaudit, openssh-server: no {missing}"
        if os.environ.get("HUMANE_REQUIRE_TEAM_STACK"):  # CI: installed by .ci/run, so a miss is a failure
            pytest.fail(why)
        pytest.skip(why)
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    state, users = shared / "team-stack.dir", shared / "team-stack.users"
    users.mkdir(exist_ok=True)
    with _locked(shared / "team-stack.lock"):
        root = Path(state.read_text()) if state.exists() else None
        if root is None or len(running(Layout(root))) != len(SERVICES):
            # Not under the pytest temp root: that folder is private to root, the stack's service accounts
            # (humane-pg, humane-dvc) must reach theirs.
            root = Path(tempfile.mkdtemp(prefix="humane-team-"))
            try:
                timings = _start(root, shared)
            except BaseException:
                _stop(root)  # nothing half-started stays behind
                raise
            state.write_text(str(root))
            (shared / "team-stack.timings").write_text(yaml.safe_dump(timings))
        (users / str(os.getpid())).touch()
    try:
        stack = _load(root, yaml.safe_load((shared / "team-stack.timings").read_text()))
        with pytest.MonkeyPatch.context() as patch:
            # This process's MLflow client and raw requests verify the servers with the stack's CA, as a checkout that
            # sourced team.env does (subprocesses get it from TeamStack.env).
            for name in ("MLFLOW_TRACKING_SERVER_CERT_PATH", "REQUESTS_CA_BUNDLE"):
                patch.setenv(name, str(stack.settings.ca_file))
            yield stack
    finally:
        with _locked(shared / "team-stack.lock"):
            (users / str(os.getpid())).unlink(missing_ok=True)
            if not any(users.iterdir()):
                _stop(root)
                state.unlink(missing_ok=True)
