"""Real: `mlflow server` processes stopped by PID, a killed register process, a full tmpfs; copies of the shared run.

Faults at track and register, against real processes: an MLflow server down, a crash mid-registration, a full disk.

Each fault ends in one clear line and an exit code read from the error's type; nothing half-written survives, and
the rerun registers the run exactly once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from humane.core.errors import UNAVAILABLE_EXIT
from humane.governance.registry import MANIFEST_TAG
from humane.governance.signoff import CARD_MD5_TAG, REGISTERED_CARD
from tests.conftest import _free_port, _relocate_store, mlflow_client, run

MODEL = "humane-sample"
BUDGET_S = 6  # HUMANE_SERVER_RETRY_S in these tests; the default (30) is bounded in tests/unit/test_serving.py


class MlflowServer:
    """`mlflow server` on a fixed port with a SQLite backend and served artifacts; stopped and restarted by PID."""

    def __init__(self, root: Path) -> None:
        self.root, self.port, self.process = root, _free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        (self.root / "artifacts").mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root}/mlflow.db",
            "--serve-artifacts",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                assert self.process.poll() is None, (self.root / "server.log").read_text()[-2000:]
                time.sleep(0.5)
        raise AssertionError(f"mlflow server did not start: {(self.root / 'server.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the server and its workers, by PID
            self.process.wait(timeout=60)
        self.process = None


@pytest.fixture
def server(tmp_path):
    started = MlflowServer(tmp_path / "server")
    yield started
    started.stop()


def _env(uri: str) -> dict[str, str]:
    """The server as the store, the short retry budget, and local mode (a plain server has no humane plugin)."""
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "HUMANE_SERVER_RETRY_S": str(BUDGET_S), "HUMANE_MODE": "local"}


def _stage(project: Path, stage: str, uri: str) -> tuple[subprocess.CompletedProcess, float]:
    env = _env(uri)
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", f"tasks.{stage}"], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )
    return done, time.monotonic() - began


def _one_clear_line(done: subprocess.CompletedProcess, uri: str) -> None:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: MLflow server {uri} did not answer"), done.stderr
    assert "HUMANE_SERVER_RETRY_S" in lines[0] and "Traceback" not in done.stdout + done.stderr


def _versions(uri: str) -> list:
    from humane.governance.store import client

    return client(uri).search_model_versions(f"name = '{MODEL}'")


def _card_matches(uri: str, version) -> bool:
    from mlflow.artifacts import download_artifacts

    path = download_artifacts(run_id=version.run_id, artifact_path=f"model_card/{REGISTERED_CARD}", tracking_uri=uri)
    return hashlib.md5(Path(path).read_bytes()).hexdigest() == version.tags[CARD_MD5_TAG]


def test_server_down_at_track_and_register_fails_in_bounded_time_and_the_rerun_registers_once(ran_project, server):
    record = ran_project / "reports/mlflow_run.json"
    env = _env(server.uri)
    began = time.monotonic()
    repro = subprocess.run(
        ["dvc", "repro", "--force", "--single-item", "track"],
        cwd=ran_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    took = time.monotonic() - began
    assert repro.returncode != 0 and f"exited with {UNAVAILABLE_EXIT}" in repro.stdout + repro.stderr, repro.stderr
    assert f"error: MLflow server {server.uri} did not answer" in repro.stderr and "Traceback" not in repro.stderr
    assert not record.exists() and took < BUDGET_S + 60  # no stage output; seconds, not the 248 s of MLflow's default

    server.start()
    done, _ = _stage(ran_project, "track", server.uri)
    assert done.returncode == 0, done.stderr
    server.stop()
    registration = (ran_project / "reports/registration.json").read_bytes()
    done, took = _stage(ran_project, "register", server.uri)
    assert done.returncode == UNAVAILABLE_EXIT and took < BUDGET_S + 40, (took, done.stderr)
    _one_clear_line(done, server.uri)
    assert (ran_project / "reports/registration.json").read_bytes() == registration  # not rewritten

    server.start()  # the same port, the same store
    assert _versions(server.uri) == []  # nothing half-made while the server was away
    for _ in range(2):
        done, _ = _stage(ran_project, "register", server.uri)
        assert done.returncode == 0, done.stderr
    (version,) = _versions(server.uri)
    assert version.tags[MANIFEST_TAG] and _card_matches(server.uri, version)


KILLER = """
import os, signal, sys
from pathlib import Path
from humane.core.context import RunContext
from humane.pipeline.params import load_params
from humane.core.paths import Paths
from humane.governance import promotion

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # a real crash: no finally, no cleanup

setattr(promotion, sys.argv[1], die)
project = Path.cwd()
promotion.register(load_params(Paths(project).params), Paths(project), RunContext(project=project))
"""


@pytest.mark.parametrize("boundary", ["log_registered_card", "set_description"])
def test_a_registration_killed_mid_way_is_completed_once_by_the_rerun(ran_project, boundary):
    """Killed after the version was created (before its card), or after its tags (where card.md5 once named a
    card never logged): the rerun completes the one version, and card.md5 names the logged card."""
    uri = f"sqlite:///{ran_project / 'mlflow.db'}"
    mlflow_client(ran_project).delete_registered_model(MODEL)  # register the shared run afresh
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, boundary], cwd=ran_project, capture_output=True, text=True, timeout=600
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (half,) = _versions(uri)  # the crash left the version it created, without an alias
    assert not mlflow_client(ran_project).get_registered_model(MODEL).aliases

    run([sys.executable, "-m", "tasks.register"], ran_project)
    (version,) = _versions(uri)
    assert version.version == half.version and version.tags[MANIFEST_TAG] and _card_matches(uri, version)
    assert mlflow_client(ran_project).get_registered_model(MODEL).aliases.get("challenger") == version.version


def test_a_full_artifact_store_at_registration_leaves_no_version_and_the_rerun_registers_once(ran_project, tmp_path):
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    artifacts = ran_project / "mlartifacts"
    size = sum(p.stat().st_size for p in artifacts.rglob("*") if p.is_file())
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size + (4 << 20)}", "tmpfs", str(mount)], check=True)
    try:
        shutil.copytree(artifacts, mount / "mlartifacts")
        _relocate_store(ran_project / "mlflow.db", str(artifacts), str(mount / "mlartifacts"))
        shutil.rmtree(artifacts)
        uri = f"sqlite:///{ran_project / 'mlflow.db'}"
        mlflow_client(ran_project).delete_registered_model(MODEL)
        filler = mount / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)  # until ENOSPC

        full = run([sys.executable, "-m", "tasks.register"], ran_project, check=False)
        lines = [line for line in full.stderr.splitlines() if line.strip()]
        assert full.returncode == 2 and len(lines) == 1 and "no space left" in lines[0], full.stderr
        assert _versions(uri) == []  # the version it created went with the card it could not write

        filler.unlink()
        run([sys.executable, "-m", "tasks.register"], ran_project)
        run([sys.executable, "-m", "tasks.register"], ran_project)
        (version,) = _versions(uri)
        assert version.tags[MANIFEST_TAG] and _card_matches(uri, version)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
