"""Where a run's inputs came from: git commit, DVC-recorded md5s, and the files' own digests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tasks.datasets import md5_of

DVC_LOCK = Path("dvc.lock")


def git_commit(root: Path = Path(".")) -> str:
    """HEAD's commit id, with '-dirty' when tracked files differ from it; 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def locked_md5s(lock: Path = DVC_LOCK) -> dict[str, str]:
    """md5 of every stage output recorded in dvc.lock, by path."""
    if not lock.exists():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", []) if "md5" in out}


def output_md5(path: Path, lock: Path = DVC_LOCK) -> str:
    """The md5 DVC recorded for an output, or (before it is recorded) the file's own md5."""
    recorded = locked_md5s(lock).get(str(path))
    if recorded is not None:
        return recorded
    return md5_of(path)
