"""The team client against a server that does not answer: exit 10 within the retry budget, no secret shown."""

from __future__ import annotations

import importlib
import time

import pytest

from humane.core.errors import UNAVAILABLE_EXIT, exit_code
from humane.governance.team_client import TeamUnavailable, call
from tests.conftest import _free_port


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_an_unreachable_team_server_is_unavailable_within_the_budget(monkeypatch, method):
    monkeypatch.setenv("HUMANE_SERVER_RETRY_S", "4")
    uri = f"http://someone:not-a-real-password@127.0.0.1:{_free_port()}"  # nothing listens there
    # The client imports MLflow's HTTP code on its first call: 1 s idle, over 5 s on a loaded two-core machine.
    # Load it before the clock starts, so that only the retries are timed.
    importlib.import_module("mlflow.utils.credentials")
    importlib.import_module("mlflow.utils.rest_utils")
    started = time.monotonic()
    with pytest.raises(TeamUnavailable) as refused:
        call(uri, method, "whoami", {})
    assert time.monotonic() - started < 4 + 2  # the budget, plus the client's own start-up
    assert exit_code(refused.value) == UNAVAILABLE_EXIT
    message = str(refused.value)
    said = "HUMANE_SERVER_RETRY_S=4" if method == "GET" else "sent once"  # a POST is never sent twice
    assert said in message and "not-a-real-password" not in message
