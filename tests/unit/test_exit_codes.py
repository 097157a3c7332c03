"""Each entry point's exit status is read from end-state names and error types, never text.

The table: docs/reference/exit-codes.md.
"""

import shutil
from pathlib import Path

import pytest
from prefect.exceptions import FailedRun
from prefect.states import Completed, Failed

from flows import sweep, training
from humane.core.errors import AccessRefused, HumaneError, IntegrityFailed, ServerUnavailable
from humane.pipeline.entry import stage_main
from tasks.trail import TrailMismatch

ROOT = Path(__file__).resolve().parents[2]
REGISTERED = {"model_name": "humane-x", "version": "4", "run_id": "r1", "reasons": ["test.accuracy = 0.7 < 0.8"]}


def registration(**fields: object) -> dict:
    return {**REGISTERED, "promoted": False, "pending": False, "passed_checks": False, "approval": None, **fields}


@pytest.mark.parametrize(
    ("fields", "fresh", "name", "kind", "code"),
    [
        ({"promoted": True, "passed_checks": True}, True, "Completed", "COMPLETED", 0),
        ({"promoted": True, "passed_checks": True}, False, "Completed", "COMPLETED", 0),
        ({"pending": True, "passed_checks": True, "approval": "pending"}, True, "AwaitingSignOff", "COMPLETED", 7),
        ({"pending": True, "passed_checks": True, "approval": "pending"}, False, "AwaitingSignOff", "COMPLETED", 7),
        ({"passed_checks": True, "approval": "rejected"}, False, "Rejected", "FAILED", 3),
        ({"passed_checks": True, "approval": "approved"}, False, "NotPromoted", "FAILED", 3),  # rolled back since
        ({}, True, "Rejected", "FAILED", 3),
        ({}, False, "Rejected", "FAILED", 3),  # nothing changed: the gate's refusal still stands (never exit 0)
    ],
)
def test_the_training_flows_end_state_and_exit_status_follow_the_registry(fields, fresh, name, kind, code, capsys):
    state = training.outcome(registration(**fields), fresh)
    assert (state.name, state.type.value) == (name, kind)
    assert training.exit_status(state, training.EXIT) == code
    printed = capsys.readouterr()
    assert state.message in (printed.err if code else printed.out)
    if code:  # only a champion is reported as one
        assert "promoted to champion" not in state.message and "is champion" not in state.message
    assert ("nothing changed" in state.message) is not fresh


def test_a_timed_out_sign_off_is_read_from_the_state_name_not_its_message(capsys):
    own = Failed(name="NotApproved", message="anything at all")
    assert training.exit_status(own, training.EXIT) == 7
    # A Failed state whose message reads like Prefect's pause timeout, but that follows no expired pause, is an error.
    lookalike = Failed(message="The flow was paused and never resumed.", data=HumaneError("a stage's own error"))
    assert training.exit_status(lookalike, training.EXIT) == 2
    assert "error: a stage's own error" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "code"),
    [(HumaneError, 2), (ServerUnavailable, 10), (AccessRefused, 11), (IntegrityFailed, 12), (TrailMismatch, 12)],
)
def test_a_flow_and_a_stage_exit_with_their_errors_code(error, code, tmp_path, monkeypatch, capsys):
    failed = Failed(message="stage track failed", data=error("MLflow at http://127.0.0.1:9 did not answer"))
    assert training.exit_status(failed, training.EXIT) == code
    assert sweep.EXIT.get(training.end_state(failed)) is None and training.exit_status(failed, sweep.EXIT) == code
    assert capsys.readouterr().err.startswith("error: MLflow at http://127.0.0.1:9")

    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")  # what `python -m tasks.<stage>` reads
    monkeypatch.chdir(tmp_path)

    def stage(params, paths, ctx):
        raise error("MLflow at http://127.0.0.1:9 did not answer")

    with pytest.raises(SystemExit) as stopped:
        stage_main(stage)
    assert stopped.value.code == code
    assert capsys.readouterr().err == "error: MLflow at http://127.0.0.1:9 did not answer\n"


def test_an_unexpected_error_is_not_given_a_users_exit_code():
    with pytest.raises(KeyError):  # a traceback and exit 1, never a code that names a known cause
        training.exit_status(Failed(data=KeyError("model_name")), training.EXIT)


def test_the_sweep_never_exits_as_promoted_while_its_candidate_waits_for_a_sign_off():
    assert sweep.EXIT["Completed"] == 0
    waiting = [training.AWAITING, training.NOT_APPROVED]
    assert {sweep.EXIT[name] for name in waiting} == {7}
    assert sweep.EXIT[training.REJECTED] == sweep.EXIT[training.NOT_PROMOTED] == 3
    no_candidate = Failed(name=sweep.NO_CANDIDATE, message="no sweep candidate is within the policy's limits")
    assert training.exit_status(no_candidate, sweep.EXIT) == 4
    with pytest.raises(FailedRun):  # NoCandidate is the sweep's own state: the training flow has no status for it
        training.exit_status(no_candidate, training.EXIT)
    # A waiting candidate's Completed-type state keeps its name through the sweep, so its status is not 0.
    awaiting = Completed(name=training.AWAITING, message="sweep candidate 1 (...): humane-x v4 awaits sign-off")
    assert training.exit_status(awaiting, sweep.EXIT) == 7


def test_prefect_retries_an_unexpected_error_never_a_humane_error():
    """A server that did not answer was retried within HUMANE_SERVER_RETRY_S already: no second round of retries."""
    from prefect.states import Completed, Failed

    from flows.retries import retry_unexpected
    from humane.core.errors import ServerUnavailable, ValidationFailed

    assert retry_unexpected(None, None, Failed(data=RuntimeError("database is locked")))
    assert not retry_unexpected(None, None, Failed(data=ServerUnavailable("tracking server did not answer")))
    assert not retry_unexpected(None, None, Failed(data=ValidationFailed("bad column")))
    assert not retry_unexpected(None, None, Completed())


def test_the_register_line_never_claims_more_than_the_registry_says():
    from tasks.register import verdict

    assert verdict({"promoted": True, "passed_checks": True, "reasons": []}) == "promoted to champion"
    rejected = verdict({"promoted": False, "passed_checks": True, "approval": "rejected", "reasons": []})
    assert rejected == "passed the automated checks, not champion (sign-off: rejected)"
    refused = verdict({"promoted": False, "passed_checks": False, "reasons": ["test.accuracy = 0.5: below 0.8"]})
    assert refused == "not promoted: test.accuracy = 0.5: below 0.8"


def test_no_error_message_carries_a_urls_credentials():
    from humane.core.errors import ServerUnavailable
    from humane.governance.store import StoreError

    errors = (
        StoreError("cannot read http://alice:s3cret@127.0.0.1:5000/x: 'http://bob:pw2@h/'"),
        ServerUnavailable("trail at postgresql://writer:pw3@127.0.0.1:5432/humane did not answer"),
    )
    for err in errors:
        assert not any(secret in str(err) for secret in ("s3cret", "pw2", "pw3", "alice", "bob", "writer")), err
        assert "127.0.0.1" in str(err)
