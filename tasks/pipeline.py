"""DVC bookkeeping for runs outside `dvc repro`: which stages are stale, recording outputs, experiments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.errors import ConfigError
from tasks.params import apply_overrides, read_raw
from tasks.paths import PARAMS

# The stages in dvc.yaml, in execution order (the flow runs them in this order too).
STAGES = ("load", "validate", "data_audit", "preprocess", "train", "evaluate", "audit", "track", "gate", "register")


def _repo(root: Path) -> Any:
    from dvc.repo import Repo

    return Repo(str(root))


def is_stale(stage: str, root: Path = Path(".")) -> bool:
    """True when the stage's deps, params or outs differ from what dvc.lock records (or it never ran)."""
    with _repo(root) as repo:
        return bool(repo.status(targets=[stage]))


def record(stage: str, root: Path = Path(".")) -> None:
    """Record the stage's current deps, params and outs in dvc.lock and the DVC cache (`dvc commit`)."""
    with _repo(root) as repo:
        repo.commit(stage, force=True)


def set_params(overrides: dict[str, Any], path: Path = PARAMS) -> None:
    """Write overrides into params.yaml the way `dvc exp run -S` does, keeping its comments and layout."""
    from dvc.utils.serialize import modify_yaml

    apply_overrides(read_raw(path), overrides)  # checks keys and types before touching the file
    with modify_yaml(str(path)) as data:
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = value


def save_experiment(name: str, root: Path = Path(".")) -> str:
    """Save the workspace as a DVC experiment (as `dvc exp run -S` leaves one); returns its name."""
    from dvc.exceptions import DvcException

    with _repo(root) as repo:
        try:
            repo.experiments.save(name=name, force=True)
        except DvcException as err:
            raise ConfigError(f"could not save DVC experiment {name!r}: {err}") from None
    return name
