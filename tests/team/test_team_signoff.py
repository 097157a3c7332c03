"""Real: `dvc repro` of the sample against the session's team stack (PostgreSQL 15, MLflow, Prefect, sshd), psycopg.

Team mode end to end: the servers enforce the sign-off, whatever client asks.

One pipeline run on the sample data against the session's team stack (tests/team/conftest.py): accounts tina
(trainer), rita (reviewer), dora (both) and remy (reader). Further candidates change only the audit's seed, so
each reruns audit → track → gate → register. The tests run in file order and build on each other's registry; the
last runs docs/tutorial/team-mode.md as written, as its accounts alice (trainer) and bob (reviewer).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import make_project

MODEL = "humane-sample"
# What a registration says on stderr at the promotion mutex (humane.governance.team_client.promotion_mutex).
ASKING = "asking for the promotion mutex 'humane-promotion'"
HELD = re.compile(r"took the promotion mutex at (\S+)\n(?:.*\n)*?releasing the promotion mutex at (\S+)")


@pytest.fixture(autouse=True, scope="module")
def _environment_restored():
    """The tests below switch MLflow credentials in this process; nothing of it outlives the module."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _use(env):
    """This process's MLflow credentials (the clients below name the server explicitly)."""
    os.environ.update({k: env[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")})


def _env(stack, account):
    env = {**os.environ, **stack.env(account)}
    env.pop("HUMANE_USER", None)
    return env


def _sh(cmd, project, env, check=True, timeout=900):
    result = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _cli(stack, account, project, module, *args):
    return _sh([sys.executable, "-m", f"tasks.{module}", *args], project, _env(stack, account), check=False)


def _client(stack, account):
    from mlflow.tracking import MlflowClient

    _use(stack.admin_env() if account == "admin" else stack.env(account))
    return MlflowClient(tracking_uri=stack.mlflow_uri, registry_uri=stack.mlflow_uri)


def _auth(stack, account):
    env = stack.env(account)
    return env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]


def _aliases(stack):
    return {a: str(v) for a, v in _client(stack, "remy").get_registered_model(MODEL).aliases.items()}


def _tags(stack, version):
    return _client(stack, "remy").get_model_version(MODEL, str(version)).tags


def _trail(stack, account="remy"):
    _use(stack.env(account))
    from humane.governance.team_client import ServerTrail

    return ServerTrail(stack.mlflow_uri).read()


def _registration(project):
    return json.loads((project / "reports/registration.json").read_text())


def _new_candidate(project, **policy):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["audit"]["seed"] += 1
    params["policy"]["min"].update(policy)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _repro(stack, account, project):
    _sh(["dvc", "repro"], project, _env(stack, account))
    return _registration(project)


@pytest.fixture(scope="module")
def team_project(team_stack, tmp_path_factory):
    """The sample project, run once by the trainer against the team stack: v1, pending."""
    project = make_project(tmp_path_factory.mktemp("team") / "project")
    started = time.monotonic()
    registration = _repro(team_stack, "tina", project)
    print(f"team mode: one full pipeline run (dvc repro, sample data) took {time.monotonic() - started:.1f} s")
    assert registration["pending"] and not registration["promoted"]
    return project


def test_the_trainers_run_waits_and_only_a_reviewer_moves_champion(team_stack, team_project):
    version = _registration(team_project)["version"]
    tags = _tags(team_stack, version)
    # Identities stamped by the server from the credentials, not from anything the client said.
    assert (tags["approval"], tags["triggered_by"], tags["humane.registered_by"]) == ("pending", "tina", "tina")
    run = _client(team_stack, "remy").get_run(tags["run_id"])
    assert run.data.tags["humane.created_by"] == "tina"
    # The trainer cannot decide (no MANAGE on the model), whatever name she types.
    refused = _cli(
        team_stack, "tina", team_project, "approve", MODEL, version, "--approve", "--by", "rita", "--comment", "mine"
    )
    assert refused.returncode == 11 and "refused by the team server (403)" in refused.stderr, refused.stderr
    done = _cli(team_stack, "rita", team_project, "approve", MODEL, version, "--approve", "--comment", "CIs checked")
    assert done.returncode == 0, done.stderr
    assert _aliases(team_stack)["champion"] == version
    entry = _trail(team_stack)[-1]
    assert (entry["event"], entry["by"], entry["authority"], entry["version"]) == (
        "approved",
        "rita",
        "mlflow-server",
        version,
    )
    assert entry["db_user"] == "humane_trail_writer"
    assert _cli(team_stack, "remy", team_project, "trail", "verify").returncode == 0


@pytest.fixture(scope="module")
def dora_version(team_stack, team_project):
    """A candidate the dual account dora ran herself (judged against v1)."""
    _new_candidate(team_project)
    registration = _repro(team_stack, "dora", team_project)
    assert registration["pending"]
    return registration["version"]


def test_the_dual_account_cannot_approve_its_own_run_through_any_client(team_stack, team_project, dora_version):
    from mlflow.exceptions import MlflowException

    champion = _aliases(team_stack)["champion"]
    assert _tags(team_stack, dora_version)["triggered_by"] == "dora"
    cli = _cli(team_stack, "dora", team_project, "approve", MODEL, dora_version, "--approve", "--comment", "ok")
    assert cli.returncode == 2 and "four eyes" in cli.stderr, cli.stderr
    with pytest.raises(MlflowException, match="champion moves only through"):
        _client(team_stack, "dora").set_registered_model_alias(MODEL, "champion", dora_version)
    for prefix in ("api", "ajax-api"):  # the REST API and the UI's (its alias pencil)
        answer = requests.post(
            f"{team_stack.mlflow_uri}/{prefix}/2.0/mlflow/registered-models/alias",
            json={"name": MODEL, "alias": "champion", "version": dora_version},
            auth=_auth(team_stack, "dora"),
            timeout=30,
        )
        assert answer.status_code == 403, answer.text
    direct = requests.post(
        f"{team_stack.mlflow_uri}/api/humane/v1/signoff/decide",
        json={"model": MODEL, "version": dora_version, "approve": True, "comment": "x"},
        auth=_auth(team_stack, "dora"),
        timeout=60,
    )
    assert direct.status_code == 409 and "four eyes" in direct.json()["message"]
    assert _aliases(team_stack)["champion"] == champion


def test_trainers_cannot_move_champion_nor_forge_the_trigger(team_stack, team_project, dora_version):
    from mlflow.exceptions import MlflowException

    champion = _aliases(team_stack)["champion"]
    with pytest.raises(MlflowException):
        _client(team_stack, "tina").set_registered_model_alias(MODEL, "champion", dora_version)
    with pytest.raises(MlflowException):
        _client(team_stack, "tina").delete_registered_model_alias(MODEL, "champion")
    # Forging who triggered dora's run, so that dora could approve it: refused, and nothing changed.
    for key in ("triggered_by", "humane.registered_by", "approval", "approval.four_eyes"):
        with pytest.raises(MlflowException):
            _client(team_stack, "dora").set_model_version_tag(MODEL, dora_version, key, "tina")
    run_id = _tags(team_stack, dora_version)["run_id"]
    with pytest.raises(MlflowException):
        _client(team_stack, "dora").set_tag(run_id, "humane.created_by", "tina")
    # A run created with someone else's user id is still stamped with the credentials' account.
    experiment = _client(team_stack, "tina").get_experiment_by_name(MODEL)
    forged = _client(team_stack, "tina").create_run(experiment.experiment_id, tags={"mlflow.user": "rita"})
    assert _client(team_stack, "remy").get_run(forged.info.run_id).data.tags["humane.created_by"] == "tina"
    assert _tags(team_stack, dora_version)["triggered_by"] == "dora"
    assert _aliases(team_stack)["champion"] == champion
    # Another reviewer may approve dora's run.
    done = _cli(team_stack, "rita", team_project, "approve", MODEL, dora_version, "--approve", "--comment", "fine")
    assert done.returncode == 0, done.stderr
    assert _aliases(team_stack)["champion"] == dora_version


def test_a_version_that_failed_its_checks_cannot_become_champion(team_stack, team_project, dora_version):
    from mlflow.exceptions import MlflowException

    _new_candidate(team_project, **{"test.accuracy": 0.99})
    registration = _repro(team_stack, "tina", team_project)
    failed = registration["version"]
    assert not registration["passed_checks"] and _aliases(team_stack)["champion"] == dora_version
    approve = _cli(team_stack, "rita", team_project, "approve", MODEL, failed, "--approve", "--comment", "override")
    assert approve.returncode == 2
    rollback = _cli(team_stack, "rita", team_project, "rollback", MODEL, "--to", failed, "--comment", "override")
    assert rollback.returncode == 2 and "failed the automated checks" in rollback.stderr, rollback.stderr
    with pytest.raises(MlflowException):  # the admin account, through the Python client
        _client(team_stack, "admin").set_registered_model_alias(MODEL, "champion", failed)
    # Forging the verdict on the version's own tags, then asking for a sign-off: the server re-judges every check
    # from its figures and the run's logged metrics, and refuses.
    decision = json.loads(_tags(team_stack, failed)["decision.json"])
    forged = {**decision, "passed": True, "reasons": [], "checks": [{**c, "passed": True} for c in decision["checks"]]}
    _client(team_stack, "tina").set_model_version_tag(MODEL, failed, "decision", "promoted")
    _client(team_stack, "tina").set_model_version_tag(MODEL, failed, "decision.json", json.dumps(forged))
    asked = requests.post(
        f"{team_stack.mlflow_uri}/api/humane/v1/signoff/request",
        json={"model": MODEL, "version": failed},
        auth=_auth(team_stack, "tina"),
        timeout=60,
    )
    assert asked.status_code == 409 and "does not add up" in asked.json()["message"], asked.text
    assert "approval" not in _tags(team_stack, failed)
    assert _aliases(team_stack)["champion"] == dora_version


def test_a_registered_models_files_and_the_permissions_cannot_be_changed(team_stack, dora_version):
    record = _client(team_stack, "remy").get_model_version(MODEL, dora_version)
    model_id = record.source.removeprefix("models:/")
    location = _client(team_stack, "remy").get_logged_model(model_id).artifact_location
    path = location.removeprefix("mlflow-artifacts:").lstrip("/") + "/MLmodel"
    run = _client(team_stack, "remy").get_run(record.run_id)
    baseline = run.info.artifact_uri.removeprefix("mlflow-artifacts:").lstrip("/") + "/reports/audit.json"
    for account in ("tina", "rita", "dora"):  # swapping the approved model's files or its monitoring baseline
        for swapped in (path, baseline):
            put = requests.put(
                f"{team_stack.mlflow_uri}/api/2.0/mlflow-artifacts/artifacts/{swapped}",
                data=b"swapped",
                auth=_auth(team_stack, account),
                timeout=30,
            )
            assert put.status_code == 403 and "written once" in put.text, (account, swapped, put.text)
    # A reviewer (MANAGE on the model) cannot make another account a reviewer: only an administrator grants.
    body = {"username": "tina", "resource_type": "registered_model", "resource_id": MODEL, "permission": "MANAGE"}
    grant = requests.post(
        f"{team_stack.mlflow_uri}/api/3.0/mlflow/users/permissions/grant",
        json=body,
        auth=_auth(team_stack, "rita"),
        timeout=30,
    )
    assert grant.status_code == 403, grant.text


def test_rollback_is_a_recorded_reviewer_event_and_reapproval_never_repromotes(team_stack, team_project, dora_version):
    refused = _cli(team_stack, "tina", team_project, "rollback", MODEL, "--none", "--comment", "incident")
    assert refused.returncode == 11 and "403" in refused.stderr
    rolled = _cli(team_stack, "rita", team_project, "rollback", MODEL, "--none", "--comment", "incident 7")
    assert rolled.returncode == 0, rolled.stderr
    assert "champion" not in _aliases(team_stack)
    entry = _trail(team_stack)[-1]
    assert (entry["event"], entry["by"], entry["champion_before"], entry["comment"]) == (
        "rolled_back",
        "rita",
        dora_version,
        "incident 7",
    )
    again = _cli(team_stack, "rita", team_project, "approve", MODEL, dora_version, "--approve", "--comment", "again")
    assert again.returncode == 2 and "already approved" in again.stderr
    mine = _cli(team_stack, "dora", team_project, "rollback", MODEL, "--to", dora_version, "--comment", "back")
    assert mine.returncode == 2 and "four eyes" in mine.stderr
    back = _cli(team_stack, "rita", team_project, "rollback", MODEL, "--to", dora_version, "--comment", "closed")
    assert back.returncode == 0, back.stderr
    assert _aliases(team_stack)["champion"] == dora_version
    assert _cli(team_stack, "remy", team_project, "trail", "verify").returncode == 0


def test_the_trail_refuses_update_and_delete(team_stack, team_project):
    import psycopg

    with psycopg.connect(team_stack.trail_owner_dsn, autocommit=True) as conn:
        for statement in ("UPDATE humane_audit.trail SET actor = 'x'", "DELETE FROM humane_audit.trail"):
            with pytest.raises(psycopg.Error):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM humane_audit.trail").fetchone()[0] == len(_trail(team_stack))


def test_two_checkouts_registering_at_once_are_serialised(team_stack, team_project, tmp_path):
    from prefect.concurrency.sync import concurrency
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_SSL_CERT_FILE, PREFECT_API_URL, temporary_settings

    second = tmp_path / "second"
    shutil.copytree(team_project, second, symlinks=True)
    for project, shift in ((team_project, 10), (second, 20)):
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["audit"]["seed"] += shift
        params["policy"]["min"]["test.accuracy"] = 0.8
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = len(_trail(team_stack))
    versions_before = _versions(team_stack)
    prefect = stack_prefect(team_stack)
    server = {PREFECT_API_URL: prefect["PREFECT_API_URL"], PREFECT_API_AUTH_STRING: prefect["PREFECT_API_AUTH_STRING"]}
    server[PREFECT_API_SSL_CERT_FILE] = str(team_stack.settings.ca_file)  # the stack's CA, as team.env says
    logs = {account: tmp_path / f"{account}.log" for account in ("tina", "dora")}
    # While this test holds the promotion mutex, both checkouts reach registration and neither gets through.
    with temporary_settings(updates=server), concurrency("humane-promotion", occupy=1, timeout_seconds=30, strict=True):
        procs = {
            account: subprocess.Popen(
                ["dvc", "repro"],
                cwd=project,
                env={**_env(team_stack, account), "PYTHONUNBUFFERED": "1"},
                stdout=logs[account].open("w"),
                stderr=subprocess.STDOUT,
            )
            for account, project in (("tina", team_project), ("dora", second))
        }
        deadline = time.monotonic() + 600
        while not all(ASKING in log.read_text() for log in logs.values()):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs.values()), {
                a: log.read_text()[-2000:] for a, log in logs.items()
            }
            time.sleep(0.5)
        # Both have asked for the slot. Held 2 s more: a registration that did not wait would have taken it (and
        # said so) within milliseconds, before the release; the timestamps below tell it from one that waited.
        time.sleep(2)
        assert all(p.poll() is None for p in procs.values())
        assert _versions(team_stack) == versions_before, "a registration went through while the mutex was held"
        released = datetime.now(UTC)
    for account, proc in procs.items():
        assert proc.wait(timeout=600) == 0, logs[account].read_text()[-3000:]
    held = {a: HELD.search(log.read_text()) for a, log in logs.items()}
    assert all(held.values()), {a: log.read_text()[-3000:] for a, log in logs.items()}
    (a_in, a_out), (b_in, _) = sorted(tuple(map(datetime.fromisoformat, m.groups())) for m in held.values())
    assert a_in > released and b_in > released, (held, released)  # each waited for this test's slot
    assert a_out <= b_in, (held, "the two registrations held the mutex at once")
    new = [e for e in _trail(team_stack)[before:] if e["event"] == "pending"]
    assert sorted(e["by"] for e in new) == ["dora", "tina"]
    assert len(_versions(team_stack)) == len(versions_before) + 2
    assert _cli(team_stack, "remy", team_project, "trail", "verify").returncode == 0


def _versions(stack):
    return {v.version for v in _client(stack, "remy").search_model_versions(f"name = '{MODEL}'")}


def stack_prefect(stack):
    env = stack.env("tina")
    return {"PREFECT_API_URL": env["PREFECT_API_URL"], "PREFECT_API_AUTH_STRING": env["PREFECT_API_AUTH_STRING"]}


def test_a_second_checkout_pulls_the_champions_exact_model(team_stack, team_project, tmp_path):
    from mlflow.artifacts import download_artifacts

    env = _env(team_stack, "tina")
    _sh(["dvc", "repro"], team_project, env)  # the workspace as its last registration left it
    _sh(["dvc", "remote", "add", "-f", "-d", "team", team_stack.dvc_remote_url], team_project, env)
    _sh(["dvc", "remote", "modify", "--local", "team", "keyfile", str(team_stack.dvc_keyfile)], team_project, env)
    _sh(["dvc", "push"], team_project, env)
    _sh(["git", "add", "-A"], team_project, env)
    _sh(["git", "commit", "-q", "-m", "run"], team_project, env)
    clone = tmp_path / "clone"
    _sh(["git", "clone", "-q", str(team_project), str(clone)], tmp_path, env)
    _sh(["dvc", "remote", "modify", "--local", "team", "keyfile", str(team_stack.dvc_keyfile)], clone, env)
    _sh(["dvc", "pull"], clone, env)
    # Training checkpoints are each machine's own (not cached, not shared): nothing else differs, nothing runs.
    repro = _sh(["dvc", "repro", "--allow-missing"], clone, env)
    assert "Running stage" not in repro.stdout, repro.stdout
    pulled = hashlib.md5((clone / "models/model.pt").read_bytes()).hexdigest()
    version = _aliases(team_stack)["champion"]
    source = _client(team_stack, "remy").get_model_version(MODEL, version).source.removeprefix("models:/")
    location = _client(team_stack, "remy").get_logged_model(source).artifact_location
    served = Path(
        download_artifacts(artifact_uri=location, dst_path=str(tmp_path / "m"), tracking_uri=team_stack.mlflow_uri)
    )
    (model_file,) = list(served.rglob("model.pt"))
    assert hashlib.md5(model_file.read_bytes()).hexdigest() == pulled
    run = _client(team_stack, "remy").get_run(_tags(team_stack, version)["run_id"])
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri  # on the server


def _postgres(stack):
    """The stack's PostgreSQL: its layout, service account and port (for restarts and superuser statements)."""
    from team.stack import PORT_ENV, Layout, _pg_account

    return Layout(stack.dir), _pg_account(), int(stack.settings.env[PORT_ENV["postgres"]])


def _wait_for(log, text, proc, timeout=600):
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def test_postgres_restarted_during_a_run_then_the_rerun_registers_once(team_stack, team_project, tmp_path):
    from team.stack import start_postgres, stop_postgres

    layout, pg, port = _postgres(team_stack)
    _new_candidate(team_project)
    versions_before = _versions(team_stack)
    log = tmp_path / "repro.log"
    proc = subprocess.Popen(
        ["dvc", "repro"],
        cwd=team_project,
        env={**_env(team_stack, "tina"), "PYTHONUNBUFFERED": "1"},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    _wait_for(log, "Running stage 'track'", proc)  # the first stage that talks to the servers
    stop_postgres(layout, pg)
    time.sleep(10)  # down while the stage imports and sends its first requests (they retry, within the budget)
    start_postgres(layout, pg, port)
    code = proc.wait(timeout=900)
    output = log.read_text()
    assert "Traceback" not in output, output[-3000:]  # completed, or failed with one clear line
    if code != 0:  # dvc repro exits 255 and names the stage's own exit code: 10, a server that did not answer
        assert code == 255 and "exited with 10" in output and "error: MLflow server" in output, output[-3000:]
        _sh(["dvc", "repro"], team_project, _env(team_stack, "tina"))
    registration = _registration(team_project)
    assert _versions(team_stack) == versions_before | {registration["version"]}  # registered exactly once
    assert registration["pending"] and _tags(team_stack, registration["version"])["approval"] == "pending"
    assert _cli(team_stack, "remy", team_project, "trail", "verify").returncode == 0


def test_the_trail_unavailable_at_signoff_moves_nothing(team_stack, team_project):
    from team.stack import _connect

    layout, _, port = _postgres(team_stack)
    version = _registration(team_project)["version"]  # tina's pending candidate (the test above)
    aliases, trail = _aliases(team_stack), _trail(team_stack)
    with _connect(layout, {"postgres": port}) as admin:
        admin.execute("ALTER DATABASE humane ALLOW_CONNECTIONS false")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'humane'")
        try:
            refused = _cli(team_stack, "rita", team_project, "approve", MODEL, version, "--approve", "--comment", "ok")
            assert _aliases(team_stack) == aliases  # the tracking server is up: nothing moved
        finally:
            admin.execute("ALTER DATABASE humane ALLOW_CONNECTIONS true")
    assert refused.returncode == 10, (refused.returncode, refused.stderr)
    assert "Traceback" not in refused.stderr and refused.stderr.strip().startswith("error: "), refused.stderr
    assert _trail(team_stack) == trail and _tags(team_stack, version)["approval"] == "pending"
    done = _cli(team_stack, "rita", team_project, "approve", MODEL, version, "--approve", "--comment", "trail back")
    assert done.returncode == 0, done.stderr
    assert _aliases(team_stack)["champion"] == version
    assert _cli(team_stack, "remy", team_project, "trail", "verify").returncode == 0


# --- docs/tutorial/team-mode.md, run as written against this stack (the last test: it moves champion) ---

PAGE = "docs/tutorial/team-mode.md"


def _page_env():
    """This process's environment without the stack's settings or credentials: only what the page sources counts
    (and this interpreter's venv first on PATH, as `source .venv/bin/activate` leaves it)."""
    stack = ("MLFLOW_TRACKING_", "PREFECT_API_", "REQUESTS_CA_BUNDLE", "HUMANE_USER", "HUMANE_MODE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(stack)}
    return {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}


def _bash(script, project):
    return _sh(["bash", "-c", f"set -e\n{script}"], project, _page_env())


def _the_reviewers_block(body, version, previous):
    """The page's reviewer block for this registry: the sample's model, its pending and previous versions."""
    assert body.count("humane-adult 7 ") == 2 and body.count("humane-adult --to 6 ") == 1, body
    body = body.replace("humane-adult 7 ", f"{MODEL} {version} ").replace(
        "humane-adult --to 6 ", f"{MODEL} --to {previous} "
    )
    assert "humane-adult" not in body, body
    return body


def _page():
    """team-mode.md's six shell blocks, checked to be the commands this module runs (a changed page fails here)."""
    from tests.integration.test_documented import block_commands, blocks
    from tests.team.conftest import BOOTSTRAP, DOWN, ROOT, UP

    up, train, review, share, tls, down = blocks(ROOT / PAGE)
    # The first and last blocks start and stop the session's stack (tests/team/conftest.py runs UP, BOOTSTRAP, DOWN).
    assert block_commands(up.lang, up.body) == [UP, BOOTSTRAP] == ["make team-up", "make team-bootstrap"]
    assert block_commands(down.lang, down.body) == [DOWN] == ["make team-down"]
    sign_in, repro = block_commands(train.lang, train.body)
    assert (sign_in, repro) == ("set -a; . .team/team.env; . .team/accounts/alice.env; set +a", "dvc repro")
    approve, rollback, verify, export = block_commands(review.lang, review.body)
    assert approve.startswith("python -m tasks.approve humane-adult 7 --approve --comment")
    assert rollback.startswith("python -m tasks.rollback humane-adult --to 6 --comment")
    assert (verify, export) == ("python -m tasks.trail verify", "python -m tasks.approve humane-adult 7 --export")
    assert block_commands(share.lang, share.body)[0].startswith("dvc remote add -d team")
    assert block_commands(share.lang, share.body)[1] == "dvc push"
    assert block_commands(tls.lang, tls.body)[0].startswith("openssl s_client -connect")
    assert "-verify_return_error" in tls.body
    return sign_in, train.body, review.body, share.body, tls.body


def test_the_team_mode_page_runs_as_written(team_stack, team_project):
    """team-mode.md's blocks in order, each in bash in this module's checkout (its `.team/` the session's stack):
    alice trains (`dvc repro`), bob signs off, rolls back, verifies and exports, alice shares and checks TLS.
    Substituted: only the page's model and version numbers (humane-adult 7 / 6: this registry's pending and
    previous versions)."""
    sign_in, train, review, share, tls = _page()
    (team_project / ".team").symlink_to(team_stack.dir)
    if "champion" not in _aliases(team_stack):  # run alone: the module's first candidate becomes the previous one
        first = _registration(team_project)["version"]
        approved = _cli(team_stack, "rita", team_project, "approve", MODEL, first, "--approve", "--comment", "v1")
        assert approved.returncode == 0, approved.stderr
    previous = _aliases(team_stack)["champion"]
    _new_candidate(team_project)
    _bash(train, team_project)  # as alice
    version = _registration(team_project)["version"]
    assert _registration(team_project)["pending"] and _tags(team_stack, version)["triggered_by"] == "alice"
    as_bob = sign_in.replace("alice.env", "bob.env")
    reviewed = _bash(f"{as_bob}\n{_the_reviewers_block(review, version, previous)}", team_project)
    assert f"{MODEL} v{version} approved by account bob" in reviewed.stdout, reviewed.stdout
    assert _aliases(team_stack)["champion"] == previous
    events = [(e["event"], e["by"], e["version"]) for e in _trail(team_stack)[-2:]]
    assert events == [("approved", "bob", version), ("rolled_back", "bob", previous)], events
    assert (team_project / f"reports/signoff/{MODEL}-v{version}.md").is_file()
    _sh(["dvc", "remote", "remove", "team"], team_project, _page_env(), check=False)  # added by a test above
    _bash(f"{sign_in}\n{share}", team_project)
    synced = _sh(["dvc", "status", "--cloud"], team_project, _page_env())
    assert "in sync" in synced.stdout, synced.stdout
    shown = _bash(f"{sign_in}\n{tls}", team_project)
    assert "TLSv1.3" in shown.stdout and "Verify return code: 0 (ok)" in shown.stdout, shown.stdout[-2000:]
