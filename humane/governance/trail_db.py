"""The team's audit trail in PostgreSQL: append-only, chained by the database, verified by every reader.

One table, `humane_audit.trail`. The database, not the client, fills every field that makes an entry evidence:
a BEFORE INSERT trigger serialises inserts (a transaction-scoped advisory lock), numbers the entry (`seq`),
links it to the previous one (`prev`), records the PostgreSQL login that wrote it (`db_user = session_user`) and
the time (`recorded_at = now()`, whatever the client sent), copies both into the body, takes the actor from the
body's `by` (an entry without one is refused) and computes

    hash = sha256(prev || '|' || seq || '|' || body::text)

UPDATE, DELETE and TRUNCATE are refused twice: the writer role is granted only INSERT and SELECT, and a trigger
raises for anyone, the owner included. What this cannot stop, and does not hide: the table's owner and any
superuser can drop the triggers and rewrite rows (the chain has no key, so a rewrite of the whole chain
verifies); the registry's version tags hold the hashes of the entries that decided them, and the export checks
both against each other. Keep the owner's credentials off the servers: the MLflow server logs in as the writer.

Readers verify the chain themselves (`verify_rows`) on the rows exactly as PostgreSQL printed them: jsonb's text
form is canonical, so the verifier hashes the string it received, then parses it.

Isolation: inserts must run at READ COMMITTED (PostgreSQL's default); at a stricter level a concurrent writer's
snapshot may miss the last entry, and the primary key on `seq` then refuses the insert instead of forking the chain.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from humane.core.errors import HumaneError, ServerUnavailable
from humane.governance.audit_trail import EVENTS, GENESIS, AuditTrailError, ChainBroken


def _lock_key(name: str) -> int:
    """A stable bigint key for pg_advisory_lock, from a name (so humane's locks don't collide with one another)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


SCHEMA = "humane_audit"
TABLE = f"{SCHEMA}.trail"
CHAIN_LOCK_KEY = _lock_key("humane.audit_trail.chain")  # held by the insert trigger until commit
PROMOTION_LOCK_KEY = _lock_key("humane.promotion")  # held by the server around a sign-off, on its own connection
BOOTSTRAP_LOCK_KEY = _lock_key("humane.server.bootstrap")  # serialises the server workers' start-up
INSTALL_LOCK_KEY = _lock_key("humane.audit_trail.install")  # serialises two bootstraps installing the schema
SERVER_FIELDS = ("seq", "prev", "hash")  # filled by the database, never part of the body
APPEND_LOCK_TIMEOUT_S = 30

assert all(re.fullmatch(r"[a-z_]+", event) for event in EVENTS)  # they are written into the CHECK below as literals
_EVENT_LIST = ", ".join(f"'{event}'" for event in EVENTS)

SCHEMA_SQL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};

CREATE TABLE IF NOT EXISTS {TABLE} (
    seq bigint PRIMARY KEY,
    prev text NOT NULL,
    hash text NOT NULL,
    actor text NOT NULL,
    db_user text NOT NULL DEFAULT session_user,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    body jsonb NOT NULL
);

ALTER TABLE {TABLE} DROP CONSTRAINT IF EXISTS trail_event_known;
ALTER TABLE {TABLE} ADD CONSTRAINT trail_event_known CHECK (body ->> 'event' IN ({_EVENT_LIST}));
ALTER TABLE {TABLE} DROP CONSTRAINT IF EXISTS trail_actor_named;
ALTER TABLE {TABLE} ADD CONSTRAINT trail_actor_named CHECK (btrim(actor) <> '');
ALTER TABLE {TABLE} DROP CONSTRAINT IF EXISTS trail_chain_fields;
ALTER TABLE {TABLE} ADD CONSTRAINT trail_chain_fields
    CHECK (seq >= 0 AND prev ~ '^[0-9a-f]{{64}}$' AND hash ~ '^[0-9a-f]{{64}}$');

-- Invoker's rights are enough (SELECT on the table, advisory locks and sha256 are open to the writer); the
-- search_path is pinned so that no role can shadow a function the chain depends on.
CREATE OR REPLACE FUNCTION {SCHEMA}.trail_chain() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    last_seq bigint;
    last_hash text;
BEGIN
    PERFORM pg_advisory_xact_lock({CHAIN_LOCK_KEY});
    IF NEW.body IS NULL OR jsonb_typeof(NEW.body) <> 'object' THEN
        RAISE EXCEPTION '{TABLE}: refused, the body must be a JSON object' USING ERRCODE = 'check_violation';
    END IF;
    NEW.actor := btrim(coalesce(NEW.body ->> 'by', ''));
    IF NEW.actor = '' THEN
        RAISE EXCEPTION '{TABLE}: refused, every entry names its actor (the body''s "by" is missing or empty)'
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT t.seq, t.hash INTO last_seq, last_hash FROM {TABLE} AS t ORDER BY t.seq DESC LIMIT 1;
    NEW.seq := coalesce(last_seq + 1, 0);
    NEW.prev := coalesce(last_hash, repeat('0', 64));
    NEW.db_user := session_user;
    NEW.recorded_at := now();
    NEW.body := (NEW.body - 'seq' - 'prev' - 'hash') || jsonb_build_object(
        'db_user', session_user::text,
        'recorded_at', to_char(NEW.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'));
    NEW.hash := encode(sha256(convert_to(NEW.prev || '|' || NEW.seq || '|' || NEW.body::text, 'UTF8')), 'hex');
    RETURN NEW;
END
$fn$;

CREATE OR REPLACE FUNCTION {SCHEMA}.trail_refuse_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RAISE EXCEPTION '{TABLE} is append-only: % refused (an entry is never changed or removed; record a new event)',
        TG_OP USING ERRCODE = 'insufficient_privilege';
END
$fn$;

CREATE OR REPLACE TRIGGER trail_chain BEFORE INSERT ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.trail_chain();
CREATE OR REPLACE TRIGGER trail_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.trail_refuse_change();

REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC;
REVOKE ALL ON {TABLE} FROM PUBLIC;
"""

_ROWS_SQL = f"SELECT seq, prev, hash, body::text AS body FROM {TABLE} ORDER BY seq"
_INSERT_SQL = f"INSERT INTO {TABLE} (body) VALUES (%s::jsonb) RETURNING seq, prev, hash, body::text AS body"


class TrailUnavailable(AuditTrailError, ServerUnavailable):
    """The trail's database cannot be reached (or went away mid-request): nothing was recorded, nothing moves."""


def _failure(err: Exception) -> type[AuditTrailError]:
    """The error class for a database error: unavailable for a lost or refused connection, else the trail's own."""
    import psycopg

    return TrailUnavailable if isinstance(err, psycopg.OperationalError) else AuditTrailError


class LockBusy(HumaneError):
    """Another holder kept a humane lock in PostgreSQL past the wait allowed."""


def plain_dsn(dsn: str) -> str:
    """A libpq connection string: SQLAlchemy's `postgresql+psycopg://` spelling is accepted and normalised."""
    return re.sub(r"^postgres(?:ql)?\+[a-z0-9_]+://", "postgresql://", dsn.strip())


def dsn_text(dsn: str) -> str:
    """`user@host:port/dbname` for messages, never the password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(plain_dsn(dsn))
    except Exception:
        return "an unparsable PostgreSQL address"
    return f"{info.get('user', '?')}@{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '?')}"


def _connect(dsn: str, **kwargs: Any) -> Any:
    import psycopg

    return psycopg.connect(plain_dsn(dsn), connect_timeout=15, application_name="humane", **kwargs)


def install_schema(owner_dsn: str, writer_role: str) -> None:
    """Create or update the trail's schema, table, triggers and grants (idempotent; run as the table's owner).

    `writer_role` (the login the MLflow server uses) gets USAGE on the schema and only INSERT, SELECT on the
    table. Refused: a writer that is the owner or a superuser (either could disable the triggers), a writer role
    that does not exist, and a database whose encoding is not UTF8 (the chain hashes UTF-8 text).
    """
    import psycopg
    from psycopg import sql

    try:
        with _connect(owner_dsn) as conn:
            _check_install(conn, writer_role)
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (INSTALL_LOCK_KEY,))
            conn.execute(SCHEMA_SQL)
            writer = sql.Identifier(writer_role)
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(SCHEMA), writer))
            conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.SQL(TABLE), writer))
            conn.execute(sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(sql.SQL(TABLE), writer))
    except psycopg.Error as err:
        raise AuditTrailError(f"cannot install the audit trail in {dsn_text(owner_dsn)}: {err}") from err


def _check_install(conn: Any, writer_role: str) -> None:
    where = dsn_text(conn.info.dsn)
    encoding = conn.execute("SELECT current_setting('server_encoding')").fetchone()[0]
    if encoding != "UTF8":
        raise AuditTrailError(f"{where}: the database's encoding is {encoding}; the audit trail needs UTF8")
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (writer_role,)).fetchone()
    if row is None:
        raise AuditTrailError(f"{where}: the writer role {writer_role!r} does not exist; create it first")
    owner = conn.execute("SELECT current_user").fetchone()[0]
    if row[0] or writer_role == owner:
        raise AuditTrailError(
            f"{where}: refused to make {writer_role!r} the trail's writer: it is "
            f"{'a superuser' if row[0] else 'the owner'} and could disable the append-only "
            "triggers; the server must log in as a plain role"
        )


def row_hash(prev: str, seq: int, body_text: str) -> str:
    """The chain's hash of one row, exactly as the insert trigger computes it."""
    return hashlib.sha256(f"{prev}|{seq}|{body_text}".encode()).hexdigest()


def verify_rows(rows: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Verify rows as the server returned them ({seq, prev, hash, body: body::text}); the entries, oldest first.

    Checks that `seq` runs 0, 1, 2, ..., that each `prev` is the hash before it (64 zeros first), that each
    hash is sha256(prev|seq|body) over the body text received, and that each body is a JSON object naming a
    known event. The first failure raises ChainBroken (exit 12) naming the seq and what is broken.
    """
    if not isinstance(rows, list):
        raise ChainBroken(f"{where}: expected a list of rows, got {type(rows).__name__}")
    entries: list[dict[str, Any]] = []
    previous = GENESIS
    for expected_seq, row in enumerate(rows):
        entries.append(_verified(row, expected_seq, previous, where))
        previous = row["hash"]
    return entries


def _verified(row: Any, expected_seq: int, previous: str, where: str) -> dict[str, Any]:
    """One row checked against its place in the chain; the entry (body + seq, prev, hash)."""
    if not isinstance(row, dict) or not all(k in row for k in ("seq", "prev", "hash", "body")):
        raise ChainBroken(f"{where}, row {expected_seq}: not a trail row (seq, prev, hash, body expected)")
    seq, prev, digest, text = row["seq"], row["prev"], row["hash"], row["body"]
    if type(seq) is not int or seq != expected_seq:
        raise ChainBroken(f"{where}, seq {seq!r}: expected seq {expected_seq}; entries were removed or reordered")
    if prev != previous:
        raise ChainBroken(f"{where}, seq {seq}: its prev does not match the hash of seq {seq - 1}; the chain is broken")
    if not isinstance(text, str) or not isinstance(digest, str) or row_hash(prev, seq, text) != digest:
        raise ChainBroken(f"{where}, seq {seq}: the hash does not match the entry's content; it was edited")
    try:
        body = json.loads(text)
    except ValueError as err:
        raise ChainBroken(f"{where}, seq {seq}: the body is not JSON ({err})") from err
    if not isinstance(body, dict):
        raise ChainBroken(f"{where}, seq {seq}: the body is not a JSON object")
    if body.get("event") not in EVENTS:
        raise ChainBroken(f"{where}, seq {seq}: unknown event {body.get('event')!r}")
    if any(k in body for k in SERVER_FIELDS):
        raise ChainBroken(f"{where}, seq {seq}: the body holds a chain field ({', '.join(SERVER_FIELDS)})")
    return {**body, "seq": seq, "prev": prev, "hash": digest}


@dataclass(frozen=True)
class DbTrail:
    """The team's trail in PostgreSQL (humane.governance.audit_trail.Trail), reached with `dsn`."""

    dsn: str

    @property
    def where(self) -> str:
        """The database, for messages (no password)."""
        return f"the team's audit trail ({TABLE} at {dsn_text(self.dsn)})"

    def rows(self) -> list[dict[str, Any]]:
        """Every row as stored, oldest first, the body as PostgreSQL prints it (not verified: see `read`)."""
        import psycopg
        from psycopg.rows import dict_row

        try:
            with _connect(self.dsn, row_factory=dict_row) as conn:
                return list(conn.execute(_ROWS_SQL).fetchall())
        except psycopg.Error as err:
            raise _failure(err)(f"{self.where}: cannot read: {err}") from err

    def read(self) -> list[dict[str, Any]]:
        """Every entry, after verifying the whole chain."""
        return verify_rows(self.rows(), self.where)

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Add one event after the verified chain; the record as the database stored it (with seq, prev, hash).

        The chain lock is taken first, so the chain verified here is exactly the one the new row extends.
        """
        if entry.get("event") not in EVENTS:
            raise ValueError(f"unknown audit event {entry.get('event')!r}; expected one of {EVENTS}")
        import psycopg
        from psycopg.rows import dict_row

        body = json.dumps({k: v for k, v in entry.items() if k not in SERVER_FIELDS}, default=str)
        try:
            with _connect(self.dsn, row_factory=dict_row) as conn:
                conn.execute(f"SET LOCAL lock_timeout = '{APPEND_LOCK_TIMEOUT_S}s'")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHAIN_LOCK_KEY,))
                rows = list(conn.execute(_ROWS_SQL).fetchall())
                verify_rows(rows, self.where)
                rows.append(conn.execute(_INSERT_SQL, (body,)).fetchone())
                return verify_rows(rows, self.where)[-1]
        except psycopg.Error as err:
            raise _failure(err)(f"{self.where}: the {entry.get('event')} event was not recorded: {err}") from err


@contextmanager
def advisory_lock(dsn: str, key: int, timeout_s: float, what: str) -> Iterator[None]:
    """Hold a PostgreSQL session advisory lock on a connection of its own, waiting at most `timeout_s`.

    Released when the block ends; if the holder's process dies, its connection closes and the lock goes with
    it. On timeout raises LockBusy: "`what` (waited N s)".
    """
    import psycopg
    from psycopg import errors, sql

    try:
        conn = _connect(dsn, autocommit=True)
    except psycopg.Error as err:
        raise TrailUnavailable(f"cannot reach {dsn_text(dsn)} to take the lock ({what}): {err}") from err
    with conn:
        try:
            conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{max(1, int(timeout_s * 1000))}ms")))
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        except errors.LockNotAvailable as err:
            raise LockBusy(f"{what} (waited {timeout_s:g} s for its lock in {dsn_text(dsn)})") from err
        try:
            yield
        finally:
            if not conn.broken:  # a broken connection's session is gone, and its lock with it
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
