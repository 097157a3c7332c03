"""Real: a throwaway PostgreSQL 15 cluster started for this module, psycopg.

The team's audit trail against a real PostgreSQL 15: the database chains, the readers verify, nobody edits.

A throwaway cluster is started once for this module (127.0.0.1, a free port, a temporary folder); each test gets
a fresh database with the schema installed by an owner role, and writes as a plain writer role, as the MLflow
server does.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg (v3) is a team-mode dependency: pip install -e .")

from humane.governance import trail_db  # noqa: E402
from humane.governance.audit_trail import GENESIS, AuditTrailError  # noqa: E402
from humane.governance.trail_db import DbTrail, LockBusy, verify_rows  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUPER_PW, OWNER_PW, WRITER_PW = "super-pw", "owner-pw", "writer-pw"


@dataclass(frozen=True)
class Cluster:
    port: int

    def dsn(self, user: str, password: str, dbname: str = "postgres") -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{dbname}"

    @property
    def superuser(self) -> str:
        return self.dsn("postgres", SUPER_PW)


@dataclass(frozen=True)
class TrailDb:
    owner: str  # DSN of the schema's owner (the bootstrap)
    writer: str  # DSN of the server's login: INSERT, SELECT only
    superuser: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(cmd: list[str], folder: Path) -> list[str]:
    """initdb refuses root: run the server tools as the `postgres` account then."""
    if os.geteuid() != 0:
        return cmd
    account = pwd.getpwnam("postgres")
    os.chown(folder, account.pw_uid, account.pw_gid)
    for path in folder.rglob("*"):
        os.chown(path, account.pw_uid, account.pw_gid)
    return ["runuser", "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if not (PG_BIN / "initdb").exists():
        why = f"PostgreSQL 15 is not installed ({PG_BIN / 'initdb'} is missing): apt-get install postgresql-15"
        if os.environ.get("HUMANE_REQUIRE_TEAM_STACK"):  # CI installs it: a miss there is a failure
            pytest.fail(why)
        pytest.skip(why)
    folder = Path(tempfile.mkdtemp(prefix="humane-pg-"))
    data, port = folder / "data", _free_port()
    (folder / "pw").write_text(SUPER_PW + "\n")
    folder.chmod(0o700)
    initdb = [
        str(PG_BIN / "initdb"),
        "-D",
        str(data),
        "-U",
        "postgres",
        "--auth=scram-sha-256",
        f"--pwfile={folder / 'pw'}",
        "-E",
        "UTF8",
        "--locale=C.UTF-8",
    ]
    subprocess.run(_as_postgres(initdb, folder), check=True, capture_output=True, timeout=120)
    pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w"]
    start = [*pg_ctl, "-o", f"-k {folder} -h 127.0.0.1 -p {port}", "start"]
    subprocess.run(_as_postgres(start, folder), check=True, capture_output=True, timeout=120)
    try:
        yield Cluster(port)
    finally:
        subprocess.run(_as_postgres([*pg_ctl, "-m", "immediate", "stop"], folder), capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def _sql(dsn: str, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(statement, params or None)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="module")
def roles(cluster: Cluster) -> Cluster:
    _sql(cluster.superuser, f"CREATE ROLE trail_owner LOGIN PASSWORD '{OWNER_PW}'")
    _sql(cluster.superuser, f"CREATE ROLE trail_writer LOGIN PASSWORD '{WRITER_PW}'")
    return cluster


@pytest.fixture
def db(roles: Cluster) -> TrailDb:
    """A fresh database owned by trail_owner, the schema installed, trail_writer the writer."""
    name = f"trail_{uuid.uuid4().hex[:10]}"
    _sql(roles.superuser, f"CREATE DATABASE {name} OWNER trail_owner")
    owner = roles.dsn("trail_owner", OWNER_PW, name)
    trail_db.install_schema(owner, "trail_writer")
    return TrailDb(owner, roles.dsn("trail_writer", WRITER_PW, name), roles.dsn("postgres", SUPER_PW, name))


def _entry(event: str = "pending", by: str = "alice", **fields: object) -> dict:
    return {"event": event, "model": "humane-adult", "version": "1", "by": by, **fields}


def test_install_is_idempotent_and_grants_only_insert_select(db: TrailDb) -> None:
    trail_db.install_schema(db.owner, "trail_writer")
    trail_db.install_schema(db.owner, "trail_writer")
    grants = _sql(
        db.owner,
        "SELECT privilege_type FROM information_schema.role_table_grants "
        "WHERE table_schema = 'humane_audit' AND grantee = 'trail_writer' ORDER BY 1",
    )
    assert [g[0] for g in grants] == ["INSERT", "SELECT"]


def test_install_refuses_a_writer_that_could_disable_the_triggers(db: TrailDb) -> None:
    with pytest.raises(AuditTrailError, match="superuser"):
        trail_db.install_schema(db.owner, "postgres")
    with pytest.raises(AuditTrailError, match="the owner"):
        trail_db.install_schema(db.owner, "trail_owner")
    with pytest.raises(AuditTrailError, match="does not exist"):
        trail_db.install_schema(db.owner, "nobody_here")


def test_append_chains_and_the_database_fills_the_evidence(db: TrailDb) -> None:
    trail = DbTrail(db.writer)
    forged = {"seq": 41, "prev": "f" * 64, "hash": "e" * 64, "db_user": "root", "recorded_at": "1999-01-01"}
    first = trail.append(_entry(**forged))
    second = trail.append(_entry("approved", by="bob", comment="ok"))
    assert (first["seq"], first["prev"]) == (0, GENESIS)
    assert (second["seq"], second["prev"]) == (1, first["hash"])
    assert first["db_user"] == second["db_user"] == "trail_writer"  # the login, not what the client sent
    assert first["recorded_at"] != "1999-01-01" and first["recorded_at"].endswith("Z")
    assert trail.read() == [first, second]
    stored = _sql(db.owner, "SELECT seq, actor, db_user FROM humane_audit.trail ORDER BY seq")
    assert stored == [(0, "alice", "trail_writer"), (1, "bob", "trail_writer")]


def test_rows_verify_client_side_exactly_as_printed(db: TrailDb) -> None:
    trail = DbTrail(db.writer)
    trail.append(_entry(comment='ünïcode — and "quotes"', numbers=[1.0, 2.50, 10], nested={"b": 1, "a": None}))
    rows = trail.rows()
    entries = verify_rows(json.loads(json.dumps(rows)), where="test")  # as the /trail endpoint ships them
    assert entries[0]["comment"] == 'ünïcode — and "quotes"' and entries[0]["numbers"] == [1.0, 2.5, 10]
    assert rows[0]["hash"] == trail_db.row_hash(GENESIS, 0, rows[0]["body"])


def test_entries_without_an_actor_or_with_an_unknown_event_are_refused(db: TrailDb) -> None:
    with pytest.raises(AuditTrailError, match="names its actor"):
        DbTrail(db.writer).append(_entry(by="  "))
    with pytest.raises(psycopg.errors.CheckViolation):
        _sql(db.writer, "INSERT INTO humane_audit.trail (body) VALUES (%s::jsonb)", ('{"event": "x", "by": "a"}',))
    with pytest.raises(ValueError, match="unknown audit event"):
        DbTrail(db.writer).append(_entry("teleported"))


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE humane_audit.trail SET actor = 'mallory'",
        "DELETE FROM humane_audit.trail",
        "TRUNCATE humane_audit.trail",
    ],
)
def test_the_writer_cannot_change_or_remove_entries(db: TrailDb, statement: str) -> None:
    DbTrail(db.writer).append(_entry())
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        _sql(db.writer, statement)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE humane_audit.trail SET actor = 'mallory'",
        "DELETE FROM humane_audit.trail",
        "TRUNCATE humane_audit.trail",
    ],
)
def test_even_the_owner_is_stopped_by_the_trigger(db: TrailDb, statement: str) -> None:
    DbTrail(db.writer).append(_entry())
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        _sql(db.owner, statement)
    assert len(DbTrail(db.writer).read()) == 1


def test_a_tampered_row_fails_verification(db: TrailDb) -> None:
    trail = DbTrail(db.writer)
    for by in ("alice", "bob", "carol"):
        trail.append(_entry(by=by))
    # What the triggers cannot stop (a superuser, or the owner, disabling them) the chain still shows.
    _sql(db.superuser, "ALTER TABLE humane_audit.trail DISABLE TRIGGER trail_append_only")
    _sql(db.superuser, "UPDATE humane_audit.trail SET body = jsonb_set(body, '{by}', '\"bOb\"') WHERE seq = 1")
    with pytest.raises(AuditTrailError, match="seq 1: the hash does not match"):
        trail.read()
    with pytest.raises(AuditTrailError, match="seq 1"):
        trail.append(_entry(by="dave"))  # nothing is appended on top of a broken chain
    _sql(db.superuser, "DELETE FROM humane_audit.trail WHERE seq = 1")
    with pytest.raises(AuditTrailError, match="expected seq 1"):
        trail.read()


def test_verify_rows_names_what_is_broken() -> None:
    body = json.dumps(_entry())
    good = {"seq": 0, "prev": GENESIS, "hash": trail_db.row_hash(GENESIS, 0, body), "body": body}
    assert verify_rows([good], "t")[0]["by"] == "alice"
    with pytest.raises(AuditTrailError, match="seq 0: its prev"):
        verify_rows([{**good, "prev": "1" * 64}], "t")
    with pytest.raises(AuditTrailError, match="the hash does not match"):
        verify_rows([{**good, "body": body.replace("alice", "alicf")}], "t")
    with pytest.raises(AuditTrailError, match="expected seq 0"):
        verify_rows([{**good, "seq": True}], "t")
    odd = json.dumps({"event": "teleported", "by": "a"})
    with pytest.raises(AuditTrailError, match="unknown event"):
        verify_rows([{**good, "body": odd, "hash": trail_db.row_hash(GENESIS, 0, odd)}], "t")


def test_concurrent_appends_make_one_chain(db: TrailDb) -> None:
    trail, errors = DbTrail(db.writer), []

    def append_five(who: str) -> None:
        try:
            for _ in range(5):
                trail.append(_entry(by=who))
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=append_five, args=(f"user{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    entries = trail.read()
    assert [e["seq"] for e in entries] == list(range(40))


def test_a_multi_row_insert_still_chains(db: TrailDb) -> None:
    rows = [json.dumps(_entry(by=f"u{i}")) for i in range(3)]
    _sql(db.writer, "INSERT INTO humane_audit.trail (body) VALUES (%s::jsonb), (%s::jsonb), (%s::jsonb)", tuple(rows))
    assert [e["by"] for e in DbTrail(db.writer).read()] == ["u0", "u1", "u2"]


def test_the_promotion_lock_waits_bounded_and_dies_with_its_holder(db: TrailDb) -> None:
    key = trail_db.PROMOTION_LOCK_KEY
    busy = "another sign-off is in progress"
    with (
        trail_db.advisory_lock(db.writer, key, 5, "first"),
        pytest.raises(LockBusy, match=busy),
        trail_db.advisory_lock(db.writer, key, 0.5, busy),
    ):
        pass
    holder = psycopg.connect(db.writer, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (key,))
    pid = holder.info.backend_pid
    _sql(db.superuser, "SELECT pg_terminate_backend(%s)", (pid,))  # the holder's process dies
    with trail_db.advisory_lock(db.writer, key, 5, "after the crash"):
        pass
    holder.close()
