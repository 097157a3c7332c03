"""Real: `dvc repro`, the paused training flow, sign-off CLIs, OS accounts, the file trail; copies of the shared run.

Sign-off in local mode: pending candidates, the CLI and the paused Prefect run, four eyes between
operating-system accounts, rollback, re-registration, the audit trail.

Each scenario makes a new candidate cheaply from the shared pipeline run: a new `audit.seed` reruns only the
audit and everything after it (track, gate, register), so each is a new MLflow run and registry version. The
pipeline runs as this test's account; the reviewer is a second operating-system account (`humane-reviewer`,
created when missing: the tests run as root in CI), because locally an identity is an account, not a typed name.
"""

import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run

from humane.governance import audit_trail
from humane.governance.card import SIGNOFF_PENDING
from humane.governance.identity import os_account
from tests.conftest import _relocate_store, mlflow_client, run

MODEL = "humane-sample"
REVIEWER = "humane-reviewer"


@pytest.fixture(scope="module")
def reviewer():
    """A second operating-system account (created when missing; needs root, as CI has)."""
    try:
        pwd.getpwnam(REVIEWER)
    except KeyError:
        if os.geteuid() != 0:
            pytest.skip(f"needs the operating-system account {REVIEWER} (or root to create it)")
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", REVIEWER], check=True
        )
    _let_run_python(REVIEWER)
    return REVIEWER


def _as(account):
    """subprocess arguments that run as `account`, its group and no other (root's groups would stay otherwise)."""
    if account is None:
        return {}
    entry = pwd.getpwnam(account)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _let_run_python(account):
    """Let `account` start this interpreter: a Python installed under a private home (pyenv in /root) needs the
    folders above it traversable (execute only: nothing there becomes listable or readable)."""
    python = Path(os.path.realpath(sys.executable))
    probe = [sys.executable, "-c", "import mlflow"]
    try:
        if subprocess.run(probe, capture_output=True, **_as(account)).returncode == 0:
            return
    except PermissionError:
        pass
    if os.geteuid() != 0:
        pytest.skip(f"the account {account} cannot run {python}")
    for folder in python.parents:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)
    result = subprocess.run(probe, capture_output=True, text=True, **_as(account))
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def signoff_project(repro_project, reviewer):
    """A copy of the shared run (v1 champion, promoted without sign-off), now with sign-off and four eyes on,
    in a folder both accounts can reach."""
    base = tempfile.mkdtemp(prefix="humane-signoff-")
    os.chmod(base, 0o755)
    dest = Path(base) / "project"
    shutil.copytree(repro_project, dest, symlinks=True)
    _relocate_store(dest / "mlflow.db", str(repro_project), str(dest))
    _set(dest, gate={"require_approval": True, "four_eyes": True})
    yield dest
    shutil.rmtree(base, ignore_errors=True)


def _set(project, **sections):
    params = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _new_candidate(project):
    """Change the audit's seed: the next run registers a new version."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    _set(project, audit={"seed": params["audit"]["seed"] + 1})


def _env(display):
    return {**os.environ, "HUMANE_USER": display}


def _shared(project):
    """Let the reviewer's account write the store, artifacts and trail (as a shared group folder would)."""
    subprocess.run(["chmod", "-R", "a+rwX", str(project)], check=True)


def _cli(project, module, *args, account=None, display="someone"):
    """`python -m tasks.<module> ...` as `account` (default: this test's own account)."""
    if account is not None:
        _shared(project)
    home = tempfile.mkdtemp(prefix="humane-home-")
    os.chmod(home, 0o777)
    env = {**_env(display), "HOME": home, "PREFECT_HOME": os.path.join(home, ".prefect")}
    return subprocess.run(
        [sys.executable, "-m", f"tasks.{module}", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        **_as(account),
    )


def _approve(project, version, *args, account=None, display="someone"):
    return _cli(project, "approve", MODEL, str(version), *args, account=account, display=display)


def _aliases(project):
    return {alias: str(v) for alias, v in mlflow_client(project).get_registered_model(MODEL).aliases.items()}


def _tags(project, version):
    return mlflow_client(project).get_model_version(MODEL, str(version)).tags


def _trail(project):
    return audit_trail.read(project / "audit/signoff.jsonl")


def _card(project, version, name="model_card.md"):
    """The run's card artifact (Markdown) of a version, and the version's description."""
    from mlflow.artifacts import download_artifacts

    record = mlflow_client(project).get_model_version(MODEL, str(version))
    local = download_artifacts(
        run_id=record.run_id, artifact_path=f"model_card/{name}", tracking_uri=f"sqlite:///{project / 'mlflow.db'}"
    )
    return open(local).read(), record.description


def _repro(project, display="alice"):
    result = subprocess.run(
        ["dvc", "repro"], cwd=project, capture_output=True, text=True, env=_env(display), timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((project / "reports/registration.json").read_text())


def test_dvc_repro_leaves_a_pending_challenger_and_another_account_signs_it_off(signoff_project, reviewer):
    project = signoff_project
    me = os_account()
    champion = _aliases(project)["champion"]
    before = len(_trail(project))
    _new_candidate(project)
    registration = _repro(project)
    version = registration["version"]
    assert registration["pending"] and registration["passed_checks"] and not registration["promoted"]
    assert _aliases(project) == {"champion": champion, "challenger": version}
    tags = _tags(project, version)
    # The trigger is the account that ran the pipeline, not the display name it was given.
    assert (tags["approval"], tags["triggered_by"], tags["approval.four_eyes"]) == ("pending", me, "true")
    (pending,) = [e for e in _trail(project) if e["version"] == version]
    assert pending["event"] == "pending" and pending["hash"] == tags["approval.pending_entry"]
    assert (pending["by"], pending["authority"], pending["display"]) == (me, "os", "alice")
    assert pending["evidence"]["card.md5"] == tags["card.md5"] and pending["evidence"]["data.md5"] == tags["data.md5"]
    assert SIGNOFF_PENDING in _card(project, version)[1]

    # Four eyes binds the account: typing another name does not make the trigger someone else.
    for name in ("alice", "Someone Else"):
        refused = _approve(project, version, "--approve", "--by", name, "--comment", "looks fine")
        assert refused.returncode == 2 and "four eyes" in refused.stderr, refused.stderr
    assert _aliases(project)["champion"] == champion and len(_trail(project)) == before + 1
    # A decision needs a reason.
    assert "comment is empty" in _approve(project, version, "--approve", account=reviewer).stderr
    # Nothing is signed off on a trail that lacks the version's pending entry (deleted, cut back, another checkout's).
    trail = project / "audit/signoff.jsonl"
    kept = trail.read_text()
    trail.write_text("".join(kept.splitlines(keepends=True)[:before]))
    cut = _approve(project, version, "--approve", "--comment", "fine", account=reviewer)
    assert cut.returncode == 2 and "does not hold" in cut.stderr and _aliases(project)["champion"] == champion
    trail.write_text(kept)

    done = _approve(
        project, version, "--approve", "--by", "Bob", "--comment", "gaps within policy; checked CIs", account=reviewer
    )
    assert done.returncode == 0, done.stderr
    assert _aliases(project) == {"champion": version, "challenger": version}
    tags = _tags(project, version)
    assert (tags["approval"], tags["approval.by"]) == ("approved", reviewer)
    entries = _trail(project)[before:]
    assert [e["event"] for e in entries] == ["pending", "approved"]
    assert (entries[1]["by"], entries[1]["authority"], entries[1]["display"]) == (reviewer, "os", "Bob")
    assert entries[1]["hash"] == tags["approval.entry"] and entries[1]["pending_entry"] == pending["hash"]
    assert entries[1]["champion_before"] == champion and entries[1]["champion_after"] == version
    card, description = _card(project, version)
    for text in (card, description):
        assert f"APPROVED by Bob (account {reviewer})" in text and SIGNOFF_PENDING not in text
    # The card the approver saw is kept as registered: the hash the trail holds is its hash.
    registered = _card(project, version, "registered_card.md")[0]
    assert hashlib.md5(registered.encode()).hexdigest() == tags["card.md5"] and SIGNOFF_PENDING in registered

    # One decision per candidate: a second one is refused and changes nothing.
    again = _approve(project, version, "--reject", "--comment", "changed my mind", account=reviewer)
    assert again.returncode == 2 and "already approved" in again.stderr
    assert _aliases(project)["champion"] == version and len(_trail(project)) == before + 2

    # The auditor's document: the checks, the evidence hashes, both events, the verified chain.
    exported = _approve(project, version, "--export", str(project / "out/record"))
    assert exported.returncode == 0, exported.stderr
    document = (project / "out/record.md").read_text()
    for expected in (
        "hash chain verified",
        "approved",
        reviewer,
        tags["card.md5"],
        tags["data.md5"],
        entries[1]["hash"],
        "test.accuracy",
        "gaps within policy",
    ):
        assert expected in document
    assert (project / "out/record.html").read_text().startswith("<!doctype html>")


def test_rollback_is_recorded_and_a_rerun_approval_never_repromotes(signoff_project, reviewer):
    project = signoff_project
    version = _aliases(project)["champion"]
    assert _tags(project, version).get("approval") == "approved", "runs after the sign-off test"
    before = len(_trail(project))
    # Rolling back needs a reason; then champion is off every version, and the trail says who and why.
    rolled = _cli(project, "rollback", MODEL, "--none", "--comment", "incident 42: wrong scores", account=reviewer)
    assert rolled.returncode == 0, rolled.stderr
    assert "champion" not in _aliases(project)
    entry = _trail(project)[-1]
    assert (entry["event"], entry["by"], entry["champion_before"], entry["champion_after"]) == (
        "rolled_back",
        reviewer,
        version,
        None,
    )
    # Running the approval again re-promotes nothing, for anyone: a decision is not taken twice.
    for account in (None, reviewer):
        again = _approve(project, version, "--approve", "--comment", "again", account=account)
        assert again.returncode == 2 and "already approved" in again.stderr
    assert "champion" not in _aliases(project) and len(_trail(project)) == before + 1
    # Back on the approved version: a new recorded event, with four eyes (the trigger's account cannot).
    mine = _cli(project, "rollback", MODEL, "--to", version, "--comment", "restore")
    assert mine.returncode == 2 and "four eyes" in mine.stderr and "champion" not in _aliases(project)
    back = _cli(project, "rollback", MODEL, "--to", version, "--comment", "incident closed", account=reviewer)
    assert back.returncode == 0, back.stderr
    assert _aliases(project)["champion"] == version
    assert [e["event"] for e in _trail(project)[before:]] == ["rolled_back", "rolled_back"]


def test_reregistration_never_hands_champion_to_an_unjudged_version(signoff_project, reviewer):
    project = signoff_project
    version = _aliases(project)["champion"]
    params = yaml.safe_load((project / "params.yaml").read_text())
    # A policy change re-decides the champion's own registration: it loses the alias (recorded), and the alias
    # goes to no other version, since none was judged against this policy and signed off.
    _set(project, policy={"min": {**params["policy"]["min"], "test.roc_auc": 0.5}})
    try:
        run(["dvc", "repro", "--force", "--single-item", "register"], project)
    finally:
        _set(project, policy=params["policy"])
    assert "champion" not in _aliases(project)
    withdrawn, pending = _trail(project)[-2:]
    assert (withdrawn["event"], withdrawn["version"], withdrawn["champion_after"]) == ("withdrawn", version, None)
    assert (pending["event"], pending["version"]) == ("pending", version)
    assert _tags(project, version)["approval"] == "pending"
    # Signed off again on the new basis, by another account, it is champion again.
    done = _approve(project, version, "--approve", "--comment", "re-judged under the new policy", account=reviewer)
    assert done.returncode == 0, done.stderr
    assert _aliases(project)["champion"] == version


def test_a_candidate_that_failed_the_checks_cannot_be_approved(signoff_project, reviewer):
    project = signoff_project
    champion = _aliases(project)["champion"]
    before = len(_trail(project))
    params = yaml.safe_load((project / "params.yaml").read_text())
    _set(project, policy={"min": {**params["policy"]["min"], "test.accuracy": 0.99}})
    _new_candidate(project)
    try:
        run(["dvc", "repro"], project)
    finally:
        _set(project, policy=params["policy"])
    registration = json.loads((project / "reports/registration.json").read_text())
    assert not registration["passed_checks"] and not registration["pending"]
    assert "approval" not in _tags(project, registration["version"])
    refused = _approve(project, registration["version"], "--approve", "--comment", "override", account=reviewer)
    assert refused.returncode == 2 and "failed the automated checks" in refused.stderr
    # Nor can it be made champion by rolling "back" onto it.
    forced = _cli(project, "rollback", MODEL, "--to", registration["version"], "--comment", "x", account=reviewer)
    assert forced.returncode == 2 and "failed the automated checks" in forced.stderr
    assert _aliases(project)["champion"] == champion and len(_trail(project)) == before


def _paused_run(proc, timeout=240):
    """The training flow run the subprocess paused (the session's Prefect server runs one flow at a time)."""
    deadline = time.time() + timeout
    with get_client(sync_client=True) as client:
        while time.time() < deadline:
            paused = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
            if paused:
                return paused[0]
            if proc.poll() is not None:
                raise AssertionError(f"the flow ended without pausing:\n{proc.stdout.read()[-3000:]}")
            time.sleep(1)
    raise AssertionError("the flow never paused")


def _flow(project, user="alice"):
    return subprocess.Popen(
        [sys.executable, "-m", "flows.training"],
        cwd=project,
        env=_env(user),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _final_state(flow_run_id):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state


@pytest.mark.parametrize("answer", ["approve", "reject"])
def test_a_paused_prefect_run_shows_the_evidence_and_waits_for_a_valid_decision(
    signoff_project, prefect_server, reviewer, answer
):
    project = signoff_project
    champion = _aliases(project)["champion"]
    _new_candidate(project)
    proc = _flow(project)
    paused = _paused_run(proc)
    version = json.loads((project / "reports/registration.json").read_text())["version"]
    assert _tags(project, version)["approval"] == "pending" and _aliases(project)["champion"] == champion
    with get_client(sync_client=True) as client:  # the evidence sits beside the form
        keys = {a.key for a in client.read_artifacts() if a.flow_run_id == paused.id}
    assert {"promotion-decision", "bias-audit-groups", "model-card", "model-card-link"} <= keys
    events = len(_trail(project))
    resume_flow_run(paused.id, run_input={"decision": answer, "approver": "bob", "comment": f"{answer}: reviewed"})
    if answer == "approve":
        # The form decides as the flow's own account, the one that registered the candidate: four eyes refuses
        # it, and the run waits on (paused again) instead of failing.
        _paused_again(paused.id)
        assert len(_trail(project)) == events and _aliases(project)["champion"] == champion
        done = _approve(project, version, "--approve", "--comment", "reviewed the CIs", account=reviewer)
        assert done.returncode == 0, done.stderr
        assert "resumed the paused Prefect flow run" in done.stdout
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0 and _final_state(paused.id).name == "Completed", output[-2000:]
        assert "four eyes" in output
        assert _aliases(project)["champion"] == version and _trail(project)[-1]["by"] == reviewer
    else:
        output, _ = proc.communicate(timeout=120)
        entry = _trail(project)[-1]
        assert (entry["event"], entry["by"], entry["display"], entry["version"]) == (
            "rejected",
            os_account(),
            "bob",
            version,
        )
        assert entry["channel"] == f"prefect flow run {paused.id}"
        assert proc.returncode == 3 and _final_state(paused.id).name == "Rejected", output[-2000:]
        assert _aliases(project)["champion"] == champion
        assert _tags(project, version)["approval"] == "rejected"
        # A rerun of the registration does not reopen a person's rejection.
        events = len(_trail(project))
        run(["dvc", "repro", "--force", "--single-item", "register"], project)
        assert _tags(project, version)["approval"] == "rejected" and len(_trail(project)) == events
        assert _aliases(project)["champion"] == champion


def _paused_again(flow_run_id, timeout=60):
    """Wait until the run, resumed, is paused once more (its second pause)."""
    deadline = time.time() + timeout
    seen_running = False
    with get_client(sync_client=True) as client:
        while time.time() < deadline:
            state = client.read_flow_run(flow_run_id).state
            seen_running = seen_running or not state.is_paused()
            if seen_running and state.is_paused():
                return
            assert not state.is_final(), (state.name, state.message)
            time.sleep(0.5)
    raise AssertionError("the run did not pause again")


def test_a_run_nobody_answers_times_out_pending_and_the_cli_can_decide_later(signoff_project, prefect_server, reviewer):
    project = signoff_project
    champion = _aliases(project)["champion"]
    _set(project, gate={"approval_timeout_s": 3})
    _new_candidate(project)
    try:
        proc = _flow(project)
        paused = _paused_run(proc)
        output, _ = proc.communicate(timeout=120)
    finally:
        _set(project, gate={"approval_timeout_s": 86400})
    # The flow's own NotApproved state (set on the server before Prefect's pause expiry could replace it); exit 7:
    # the version waits for a sign-off, as docs/reference/exit-codes.md says.
    final = _final_state(paused.id)
    assert proc.returncode == 7 and final.is_failed(), output[-2000:]
    assert final.name == "NotApproved", (final.name, final.message)
    assert "the version stays pending" in output
    version = json.loads((project / "reports/registration.json").read_text())["version"]
    assert _aliases(project)["champion"] == champion and _tags(project, version)["approval"] == "pending"
    assert _trail(project)[-1]["event"] == "timed_out"
    # The same command decides a version a Prefect run left pending.
    assert _approve(project, version, "--approve", "--comment", "mine").returncode == 2  # four eyes
    # Not while the champion differs from the one the candidate was judged against.
    client = mlflow_client(project)
    client.delete_registered_model_alias(MODEL, "champion")  # e.g. withdrawn by an operator meanwhile
    moved = _approve(project, version, "--approve", "--comment", "late review", account=reviewer)
    assert moved.returncode == 2 and "rerun the pipeline" in moved.stderr
    client.set_registered_model_alias(MODEL, "champion", champion)
    done = _approve(project, version, "--approve", "--comment", "late review", account=reviewer)
    assert done.returncode == 0, done.stderr
    assert _aliases(project)["champion"] == version
