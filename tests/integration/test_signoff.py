"""Sign-off by a person: pending candidates, the CLI and the paused Prefect run, four eyes, the audit trail.

Each scenario makes a new candidate cheaply from the shared pipeline run: a new `audit.seed` reruns only the
audit and everything after it (track, gate, register), so each is a new MLflow run and registry version.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run

from humane.governance import audit_trail
from humane.governance.card import SIGNOFF_PENDING
from tests.conftest import _relocate_store, mlflow_client, run

MODEL = "humane-sample"


@pytest.fixture(scope="module")
def signoff_project(repro_project, tmp_path_factory):
    """A copy of the shared run (v1 champion, promoted without sign-off), now with sign-off and four eyes on."""
    dest = tmp_path_factory.mktemp("signoff") / "project"
    shutil.copytree(repro_project, dest, symlinks=True)
    _relocate_store(dest / "mlflow.db", str(repro_project), str(dest))
    _set(dest, gate={"require_approval": True, "four_eyes": True})
    return dest


def _set(project, **sections):
    params = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _new_candidate(project):
    """Change the audit's seed: the next run registers a new version."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    _set(project, audit={"seed": params["audit"]["seed"] + 1})


def _env(user):
    return {**os.environ, "HUMANE_USER": user}


def _approve(project, version, *args, user="someone"):
    return subprocess.run([sys.executable, "-m", "tasks.approve", MODEL, str(version), *args], cwd=project,
                          capture_output=True, text=True, timeout=120, env=_env(user))  # fmt: skip


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
    local = download_artifacts(run_id=record.run_id, artifact_path=f"model_card/{name}",
                               tracking_uri=f"sqlite:///{project / 'mlflow.db'}")  # fmt: skip
    return open(local).read(), record.description


def test_dvc_repro_leaves_a_pending_challenger_and_the_cli_signs_it_off(signoff_project):
    project = signoff_project
    champion = _aliases(project)["champion"]
    before = len(_trail(project))
    _new_candidate(project)
    result = subprocess.run(["dvc", "repro"], cwd=project, capture_output=True, text=True, env=_env("alice"),
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    registration = json.loads((project / "reports/registration.json").read_text())
    version = registration["version"]
    assert registration["pending"] and registration["passed_checks"] and not registration["promoted"]
    assert f"python -m tasks.approve {MODEL} {version} --approve" in result.stdout
    assert _aliases(project) == {"champion": champion, "challenger": version}
    tags = _tags(project, version)
    assert (tags["approval"], tags["triggered_by"], tags["approval.four_eyes"]) == ("pending", "alice", "true")
    (pending,) = [e for e in _trail(project) if e["version"] == version]
    assert pending["event"] == "pending" and pending["hash"] == tags["approval.pending_entry"]
    assert pending["evidence"]["card.md5"] == tags["card.md5"] and pending["evidence"]["data.md5"] == tags["data.md5"]
    assert SIGNOFF_PENDING in _card(project, version)[1]

    # Four eyes: the person who triggered the run cannot approve it, whatever the case of the name.
    refused = _approve(project, version, "--approve", "--by", "ALICE", "--comment", "looks fine")
    assert refused.returncode == 2 and "four eyes" in refused.stderr
    assert _aliases(project)["champion"] == champion and len(_trail(project)) == before + 1
    # A decision needs a reason.
    assert "comment is empty" in _approve(project, version, "--approve", "--by", "bob").stderr
    # Nothing is signed off on a trail that lacks the version's pending entry (deleted, cut back, another checkout's).
    trail = project / "audit/signoff.jsonl"
    kept = trail.read_text()
    trail.write_text("".join(kept.splitlines(keepends=True)[:before]))
    cut = _approve(project, version, "--approve", "--by", "bob", "--comment", "fine")
    assert cut.returncode == 2 and "does not hold" in cut.stderr and _aliases(project)["champion"] == champion
    trail.write_text(kept)

    done = _approve(project, version, "--approve", "--by", "bob", "--comment", "gaps within policy; checked CIs")
    assert done.returncode == 0, done.stderr
    assert _aliases(project) == {"champion": version, "challenger": version}
    tags = _tags(project, version)
    assert (tags["approval"], tags["approval.by"]) == ("approved", "bob")
    entries = _trail(project)[before:]
    assert [e["event"] for e in entries] == ["pending", "approved"]
    assert entries[1]["hash"] == tags["approval.entry"] and entries[1]["pending_entry"] == pending["hash"]
    assert entries[1]["champion_before"] == champion and entries[1]["decision"]["passed"] is True
    card, description = _card(project, version)
    for text in (card, description):
        assert "APPROVED by bob" in text and SIGNOFF_PENDING not in text and "awaiting sign-off" not in text
    # The card the approver saw is kept as registered: the hash the trail holds is its hash.
    registered = _card(project, version, "registered_card.md")[0]
    assert hashlib.md5(registered.encode()).hexdigest() == tags["card.md5"] and SIGNOFF_PENDING in registered

    # One decision per candidate: a second one is refused and changes nothing.
    again = _approve(project, version, "--reject", "--by", "carol", "--comment", "changed my mind")
    assert again.returncode == 2 and "already approved by bob" in again.stderr
    assert _aliases(project)["champion"] == version and len(_trail(project)) == before + 2

    # The auditor's document: the checks, the evidence hashes, both events, the verified chain.
    exported = _approve(project, version, "--export", str(project / "out/record"))
    assert exported.returncode == 0, exported.stderr
    document = (project / "out/record.md").read_text()
    for expected in ("hash chain verified", "approved", "bob", tags["card.md5"], tags["data.md5"],
                     entries[1]["hash"], "test.accuracy", "gaps within policy"):  # fmt: skip
        assert expected in document
    assert (project / "out/record.html").read_text().startswith("<!doctype html>")


def test_a_candidate_that_failed_the_checks_cannot_be_approved(signoff_project):
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
    refused = _approve(project, registration["version"], "--approve", "--by", "bob", "--comment", "override")
    assert refused.returncode == 2 and "failed the automated checks" in refused.stderr
    assert _aliases(project)["champion"] == champion and len(_trail(project)) == before


def _paused_run(proc, timeout=240):
    """The training flow run the subprocess paused (the session's Prefect server runs one flow at a time)."""
    deadline = time.time() + timeout
    with get_client(sync_client=True) as client:
        while time.time() < deadline:
            paused = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))  # fmt: skip
            if paused:
                return paused[0]
            if proc.poll() is not None:
                raise AssertionError(f"the flow ended without pausing:\n{proc.stdout.read()[-3000:]}")
            time.sleep(1)
    raise AssertionError("the flow never paused")


def _flow(project, user="alice"):
    return subprocess.Popen([sys.executable, "-m", "flows.training"], cwd=project, env=_env(user), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def _final_state(flow_run_id):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state


@pytest.mark.parametrize("answer", ["approve", "reject"])
def test_a_paused_prefect_run_waits_for_the_form_and_records_the_answer(signoff_project, prefect_server, answer):
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
    resume_flow_run(paused.id, run_input={"decision": answer, "approver": "bob", "comment": f"{answer}: reviewed"})
    output, _ = proc.communicate(timeout=120)
    state = _final_state(paused.id)
    entry = _trail(project)[-1]
    assert (entry["event"], entry["by"], entry["version"]) == (answer + "d" if answer == "approve" else "rejected",
                                                               "bob", version)  # fmt: skip
    assert entry["channel"] == f"prefect flow run {paused.id}"
    if answer == "approve":
        assert proc.returncode == 0 and state.name == "Completed", output[-2000:]
        assert _aliases(project)["champion"] == version
    else:
        assert proc.returncode == 3 and state.name == "Rejected", output[-2000:]
        assert _aliases(project)["champion"] == champion
        assert _tags(project, version)["approval"] == "rejected"
        # A rerun of the registration does not reopen a person's rejection.
        events = len(_trail(project))
        run(["dvc", "repro", "--force", "--single-item", "register"], project)
        assert _tags(project, version)["approval"] == "rejected" and len(_trail(project)) == events
        assert _aliases(project)["champion"] == champion


def test_a_run_nobody_answers_times_out_pending_and_the_cli_can_decide_later(signoff_project, prefect_server):
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
    # Failed either way, depending on who gets there first: the flow's own NotApproved state, or, once the pause has
    # expired on the server, Prefect's Failed state named after the state the flow proposed.
    final = _final_state(paused.id)
    assert proc.returncode == 3 and final.is_failed(), output[-2000:]
    assert final.name == "NotApproved" or "notapproved" in final.message, (final.name, final.message)
    assert "the version stays pending" in output
    version = json.loads((project / "reports/registration.json").read_text())["version"]
    assert _aliases(project)["champion"] == champion and _tags(project, version)["approval"] == "pending"
    assert _trail(project)[-1]["event"] == "timed_out"
    # The same command decides a version a Prefect run left pending.
    assert _approve(project, version, "--approve", "--by", "alice", "--comment", "mine").returncode == 2  # four eyes
    # Not while the champion differs from the one the candidate was judged against.
    client = mlflow_client(project)
    client.delete_registered_model_alias(MODEL, "champion")  # e.g. withdrawn by an operator meanwhile
    moved = _approve(project, version, "--approve", "--by", "bob", "--comment", "late review")
    assert moved.returncode == 2 and "rerun the pipeline" in moved.stderr
    client.set_registered_model_alias(MODEL, "champion", champion)
    done = _approve(project, version, "--approve", "--by", "bob", "--comment", "late review")
    assert done.returncode == 0, done.stderr
    assert _aliases(project)["champion"] == version
