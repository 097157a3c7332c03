"""Where a run's inputs came from: the git commit and the md5 of each file's bytes (what DVC records)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from humane.core.io import md5_of

__all__ = ["git_commit", "md5_of"]


def git_commit(root: Path) -> str:
    """HEAD's commit id, with '-dirty' when tracked files differ from it; 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
