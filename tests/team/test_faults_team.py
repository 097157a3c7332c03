"""Real: the session's team stack (PostgreSQL 15, MLflow server + basic-auth + plugin, Prefect on PG, sshd).

Faults against the team stack: wrong credentials are refused in one line naming the user, never the password."""

from __future__ import annotations

import os
import subprocess
import sys

from humane.core.errors import ACCESS_EXIT
from tests.team.conftest import ROOT

PROBE = """
from humane.core.errors import cli
from humane.governance.store import client, server_calls
import os

def main():
    uri = os.environ["MLFLOW_TRACKING_URI"]
    with server_calls(uri):
        client(uri).search_registered_models(max_results=1)

cli(main)
"""


def test_wrong_credentials_are_refused_naming_the_user_never_the_password(team_stack):
    wrong = "not-tinas-password-7Qx"
    env = {**os.environ, **team_stack.env("tina"), "MLFLOW_TRACKING_PASSWORD": wrong}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == ACCESS_EXIT, done.stderr
    assert len(lines) == 1 and "'tina'" in lines[0] and "HTTP 401" in lines[0], lines
    assert wrong not in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert team_stack.mlflow_uri.split("://")[1].split("@")[-1] in lines[0]  # the server, named without credentials
