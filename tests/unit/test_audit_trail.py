"""The sign-off audit trail is append-only: every edit, removal or reordering of a line is caught on read."""

import json

import pytest

from humane.core.errors import INTEGRITY_EXIT, exit_code
from humane.governance import audit_trail
from humane.governance.audit_trail import AuditTrailError


def _trail(tmp_path, n=3):
    path = tmp_path / "audit" / "signoff.jsonl"
    for i in range(n):
        audit_trail.append(
            path,
            {"event": "pending" if i % 2 == 0 else "approved", "model": "m", "version": str(i), "by": f"person{i}"},
        )
    return path


def test_appended_entries_chain_and_read_back_in_order(tmp_path):
    path = _trail(tmp_path)
    entries = audit_trail.read(path)
    assert [e["seq"] for e in entries] == [0, 1, 2]
    assert entries[0]["prev"] == audit_trail.GENESIS
    assert [e["prev"] for e in entries[1:]] == [e["hash"] for e in entries[:-1]]
    assert audit_trail.entries_for(path, "m", "1") == [entries[1]]


def test_a_missing_trail_is_empty_but_an_unreadable_one_is_an_error(tmp_path):
    assert audit_trail.read(tmp_path / "none.jsonl") == []
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(AuditTrailError, match="cannot read"):
        audit_trail.read(broken)


@pytest.mark.parametrize("tamper", ["edit", "delete_middle", "swap", "garbage"])
def test_tampering_breaks_the_chain_and_blocks_appending(tmp_path, tamper):
    path = _trail(tmp_path)
    lines = path.read_text().splitlines()
    if tamper == "edit":  # change who approved, keep the line valid JSON
        record = json.loads(lines[1])
        record["by"] = "someone else"
        lines[1] = json.dumps(record, sort_keys=True)
    elif tamper == "delete_middle":
        del lines[1]
    elif tamper == "swap":
        lines[0], lines[1] = lines[1], lines[0]
    else:
        lines[2] = "{not json"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditTrailError, match=r"line [123]"):
        audit_trail.read(path)
    with pytest.raises(AuditTrailError):
        audit_trail.append(path, {"event": "approved", "model": "m", "version": "9", "by": "x"})


def test_an_edit_that_recomputes_its_own_hash_still_breaks_the_next_link(tmp_path):
    path = _trail(tmp_path)
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    record["by"] = "someone else"
    record["hash"] = audit_trail.entry_hash(record)
    lines[1] = json.dumps(record, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditTrailError, match="line 3: the chain is broken") as broken:
        audit_trail.read(path)
    assert exit_code(broken.value) == INTEGRITY_EXIT  # a broken chain is an integrity failure, not bad input


def test_lines_cut_from_the_end_are_found_against_the_registry_tags(tmp_path):
    path = _trail(tmp_path)
    last = audit_trail.read(path)[-1]["hash"]
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    assert len(audit_trail.read(path)) == 2  # a shorter chain is still a valid chain...
    assert audit_trail.missing_entries(path, {"tag approval.entry": last}) == ["tag approval.entry"]  # ...but not this


def test_unknown_events_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown audit event"):
        audit_trail.append(tmp_path / "t.jsonl", {"event": "deleted", "model": "m", "version": "1"})
