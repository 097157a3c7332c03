"""The pipeline's stages as dvc.yaml defines them, DVC bookkeeping for runs outside `dvc repro`, and workspaces.

dvc.yaml is the one definition of the stages, their order and what each depends on; the Prefect flow reads
it from here. A flow run with overrides runs in an isolated workspace: a git worktree of the project at
HEAD, with the workspace's uncommitted changes and the overrides applied, sharing the project's DVC cache. It
is saved as a DVC experiment in the project's repository and removed; the project's params.yaml, outputs and
dvc.lock are not touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from humane.core.errors import ConfigError, HumaneError
from humane.core.io import file_lock
from humane.core.params import read_raw
from humane.core.paths import Paths
from humane.pipeline.params import apply_overrides

# Folders whose new (not yet committed) files an experiment keeps: code and docs, never data or secrets.
COMMITTED_NEW = ("tasks/", "humane/", "flows/", "docs/")


@dataclass(frozen=True)
class Stage:
    """One dvc.yaml stage: its name, the module its command runs, and the stages whose outputs it reads."""

    name: str
    module: str
    upstream: tuple[str, ...]


def _out_paths(outs: list[Any]) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in outs]


def stages(dvc_yaml: Path) -> list[Stage]:
    """The stages of dvc.yaml in dependency order, each with its direct upstream stages."""
    spec = yaml.safe_load(dvc_yaml.read_text())["stages"]
    producer: dict[str, str] = {}
    for name, stage in spec.items():
        for out in (
            _out_paths(stage.get("outs", []))
            + _out_paths(stage.get("metrics", []))
            + _out_paths(stage.get("plots", []))
        ):
            producer[out] = name
    out: list[Stage] = []
    for name, stage in spec.items():
        words = stage["cmd"].split()
        if words[:2] != ["python", "-m"] or len(words) != 3:
            raise ConfigError(f"{dvc_yaml}: stage {name!r} must run `python -m tasks.<module>`, got {stage['cmd']!r}")
        upstream = sorted({producer[d] for d in stage.get("deps", []) if d in producer and producer[d] != name})
        out.append(Stage(name, words[2], tuple(upstream)))
    done: set[str] = set()
    for stage in out:  # dvc.yaml lists stages after what they read: the flow relies on that order
        missing = [u for u in stage.upstream if u not in done]
        if missing:
            raise ConfigError(f"{dvc_yaml}: stage {stage.name!r} is listed before {missing}, whose outputs it reads")
        done.add(stage.name)
    return out


@contextmanager
def _repo(root: Path) -> Iterator[Any]:
    """DVC's Repo for the workspace at `root`, with the process inside it.

    DVC resolves a stage's paths against the working directory, not against the repository it was opened on,
    so every DVC call runs from inside its workspace (as DVC's own experiment executors do).
    """
    from contextlib import chdir

    from dvc.repo import Repo

    with chdir(root), Repo(str(root)) as repo:
        yield repo


def is_stale(stage: str, root: Path) -> bool:
    """True when the stage's deps, params or outs differ from what dvc.lock records (or it never ran)."""
    with _repo(root) as repo:
        return bool(repo.status(targets=[stage]))


def record(stage: str, root: Path) -> None:
    """Record the stage's current deps, params and outs in dvc.lock and the DVC cache (`dvc commit`)."""
    with _repo(root) as repo:
        repo.commit(stage, force=True)


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        raise HumaneError(f"git {' '.join(args)} failed in {root}: {result.stderr.strip()}")
    return result.stdout


def workspace_lock(project: Path) -> Any:
    """One writer at a time in the project folder (in-place runs), and no copy taken half-way through one."""
    return file_lock(project / ".dvc" / "tmp" / "humane-workspace.lock")


def experiments_lock(project: Path) -> Any:
    """DVC keeps scratch refs of experiments in the shared git repository: one save at a time."""
    return file_lock(project / ".dvc" / "tmp" / "humane-experiments.lock")


def _set_params(path: Path, overrides: dict[str, Any]) -> None:
    """Write overrides into a params.yaml the way `dvc exp run -S` does, keeping its comments and layout."""
    from dvc.utils.serialize import modify_yaml

    apply_overrides(read_raw(path), overrides)  # checks keys, allow-list and types before touching the file
    with modify_yaml(str(path)) as data:
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = value


def _changed_files(project: Path) -> list[str]:
    """Tracked files that differ from HEAD, and new files git does not ignore: the workspace's own edits."""
    changed = _git(project, "diff", "--name-only", "--no-renames", "-z", "HEAD").split("\0")
    untracked = _git(project, "ls-files", "--others", "--exclude-standard", "-z").split("\0")
    return sorted({f for f in changed + untracked if f})


@contextmanager
def isolated(project: Path, overrides: dict[str, Any], name: str) -> Iterator[Paths]:
    """A temporary workspace of the project with `overrides` applied; saved as DVC experiment `name` on success.

    The worktree starts at HEAD plus the project's uncommitted edits and restores the outputs dvc.lock records
    from the shared cache, so only the stages the overrides touch run again.
    """
    project = project.resolve()
    # Outside the project: DVC would otherwise see the worktree's files as part of the project's own tree.
    root = Path(tempfile.mkdtemp(prefix=f"humane-{name}-"))
    root.rmdir()
    with workspace_lock(project):  # a consistent copy: no in-place run is half-way through writing
        _git(project, "worktree", "add", "--detach", str(root), "HEAD")
        try:
            for relative in _changed_files(project):
                source, target = project / relative, root / relative
                if source.is_symlink() and (
                    Path(os.readlink(source)).is_absolute() or not source.resolve().is_relative_to(project)
                ):
                    raise ConfigError(
                        f"{relative}: a symlink to {os.readlink(source)}; a run copies the project's "
                        "own files, and only relative links that stay inside it"
                    )
                if source.is_file() or source.is_symlink():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.unlink(missing_ok=True)
                    shutil.copy2(source, target, follow_symlinks=False)
                elif target.exists():
                    target.unlink()  # deleted in the workspace
            untracked = _git(project, "ls-files", "--others", "--exclude-standard", "-z").split("\0")
            with _repo(project) as repo:
                cache = Path(repo.cache.local_cache_dir)  # the cache root (DVC 3 keeps files under files/md5)
            with open(root / ".dvc" / "config.local", "w") as handle:
                handle.write(f"[cache]\n    dir = {cache}\n")
            with _repo(root) as repo:
                repo.checkout(force=True, allow_missing=True)
        except BaseException:
            _remove_worktree(project, root)
            raise
    try:
        _set_params(Paths(root).params, overrides)
        yield Paths(root)
        with experiments_lock(project):
            # New code and docs are part of what ran; new data files and dotfiles (keys, .env) never go into git.
            save_experiment(name, root, [f for f in untracked if f.startswith(COMMITTED_NEW) and "/." not in f])
    finally:
        _remove_worktree(project, root)


def _remove_worktree(project: Path, root: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(root)], cwd=project, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(["git", "worktree", "prune"], cwd=project, capture_output=True)


def save_experiment(name: str, root: Path, untracked: list[str] | None = None) -> str:
    """Save the workspace at `root` as a DVC experiment (as `dvc exp run` leaves one); returns its name.

    `untracked` names new files (not yet in git) the run used: the experiment keeps them too.
    """
    from dvc.exceptions import DvcException

    with _repo(root) as repo:
        try:
            # force: a retry of the same flow run (the name holds its id) replaces its own earlier attempt.
            repo.experiments.save(name=name, force=True, include_untracked=untracked or None)
        except DvcException as err:
            raise ConfigError(f"could not save DVC experiment {name!r}: {err}") from None
    return name
