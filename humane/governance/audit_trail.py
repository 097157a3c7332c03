"""The sign-off audit trail: an append-only, hash-chained JSON Lines file.

Each line is one event (a candidate awaiting sign-off, an approval, a rejection, a sign-off that timed out) with
its sequence number, the hash of the line before it and its own hash (SHA-256 of its canonical JSON). Editing,
reordering or deleting any line breaks the chain, and every read verifies the whole chain first: a broken trail
is an error, never "no entries". Cutting lines off the end leaves a valid shorter chain; that is caught against
the registry, whose version tags hold the hash of the entry that decided them (`missing_entries`).

Why our own: no maintained library for an append-only, verifiable log of this size fits the stack (MLflow runs
can be deleted and edited; a database is a server to run). The file is plain text: commit it with the project.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from humane.core.errors import HumaneError, IntegrityFailed
from humane.core.io import file_lock

GENESIS = "0" * 64
EVENTS = ("pending", "approved", "rejected", "timed_out", "promoted", "rolled_back", "withdrawn")


class AuditTrailError(HumaneError):
    """The audit trail cannot be read, or its chain does not verify: nothing is signed off on top of it."""


class ChainBroken(AuditTrailError, IntegrityFailed):
    """The trail's hash chain does not verify (an entry edited, removed, reordered or forged): exit 12."""


def entry_hash(record: dict[str, Any]) -> str:
    """SHA-256 of the record's canonical JSON, without its own `hash`."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read(path: Path) -> list[dict[str, Any]]:
    """Every entry, after verifying the chain; [] only when the file does not exist yet."""
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise AuditTrailError(f"{path}: cannot read the audit trail: {err}") from err
    entries: list[dict[str, Any]] = []
    previous = GENESIS
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError as err:
            raise ChainBroken(f"{path}, line {number}: not a JSON object ({err}); the trail was edited") from err
        if not isinstance(record, dict):
            raise ChainBroken(f"{path}, line {number}: not a JSON object; the trail was edited")
        if record.get("seq") != number - 1 or record.get("prev") != previous:
            raise ChainBroken(
                f"{path}, line {number}: the chain is broken (sequence or previous hash does not "
                f"follow line {number - 1}); lines were removed, reordered or edited"
            )
        if record.get("hash") != entry_hash(record):
            raise ChainBroken(f"{path}, line {number}: the entry's hash does not match its content; it was edited")
        if record.get("event") not in EVENTS:
            raise ChainBroken(f"{path}, line {number}: unknown event {record.get('event')!r}")
        previous = record["hash"]
        entries.append(record)
    return entries


def append(path: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Add one event at the end of a verified chain (under a lock); the record as written, with its hash."""
    if entry.get("event") not in EVENTS:
        raise ValueError(f"unknown audit event {entry.get('event')!r}; expected one of {EVENTS}")
    with file_lock(path.with_name(path.name + ".lock")):
        entries = read(path)
        record = {**entry, "seq": len(entries), "prev": entries[-1]["hash"] if entries else GENESIS}
        record["hash"] = entry_hash(record)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    return record


def entries_for(path: Path, model: str, version: str, run_id: str | None = None) -> list[dict[str, Any]]:
    """The verified trail's events for one model version (and, given, the run it was registered from), oldest first.

    The run id tells apart two versions with the same number in different stores (e.g. after a fresh store).
    """
    return [
        e
        for e in read(path)
        if e.get("model") == model
        and str(e.get("version")) == str(version)
        and (run_id is None or e.get("run_id") == run_id)
    ]


def missing_entries(path: Path, expected: dict[str, str]) -> list[str]:
    """Of `expected` ({what: entry hash}, from registry tags), those the verified trail does not hold."""
    held = {e["hash"] for e in read(path)}
    return sorted(what for what, digest in expected.items() if digest not in held)


class Trail(Protocol):
    """Where sign-off events are kept: the local JSON Lines file, or the team's server-side table."""

    where: str  # for messages: the file, or the server

    def read(self) -> list[dict[str, Any]]:
        """Every entry, oldest first, after verifying the chain (an error when it does not verify)."""
        ...

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Add one event at the end of the verified chain; the record as stored, with `seq`, `prev`, `hash`."""
        ...


@dataclass(frozen=True)
class FileTrail:
    """The local trail: a hash-chained JSON Lines file (local mode)."""

    path: Path

    @property
    def where(self) -> str:
        """The file."""
        return str(self.path)

    def read(self) -> list[dict[str, Any]]:
        """Every verified entry."""
        return read(self.path)

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Append under the file lock."""
        return append(self.path, entry)


def entries_of(trail: Trail, model: str, version: str, run_id: str | None = None) -> list[dict[str, Any]]:
    """The verified trail's events for one model version (and, given, its run), oldest first."""
    return [
        e
        for e in trail.read()
        if e.get("model") == model
        and str(e.get("version")) == str(version)
        and (run_id is None or e.get("run_id") == run_id)
    ]
