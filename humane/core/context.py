"""Who is running a stage, and for which project: what MLflow records as the run's origin."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from humane.core.paths import Paths

DVC_ENTRY = "dvc repro"
PREFECT_ENTRY = "prefect flow training"


@dataclass(frozen=True)
class RunContext:
    """The run a stage belongs to.

    `project` is the project folder: its MLflow store is the default one even when the stage runs in an
    isolated workspace. `run_key` identifies one pipeline run, so that a retried stage finds what an
    earlier attempt of the same run recorded instead of recording it twice.
    """

    project: Path
    entry_point: str = DVC_ENTRY
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    # Who triggered the run (the flow's `requested_by`); None: $HUMANE_USER, else the login name.
    user: str | None = None

    @property
    def tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI when set, else the project's SQLite store."""
        return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(self.project)

    @property
    def default_store(self) -> bool:
        """True when runs go to the project's own SQLite store."""
        return self.tracking_uri == default_tracking_uri(self.project)

    def describe_overrides(self) -> str:
        """`key=value, ...` or "defaults" (`overrides_text`)."""
        return overrides_text(self.overrides)


def overrides_text(overrides: dict[str, Any]) -> str:
    """`key=value, ...` sorted, or "defaults": overrides as the runs' MLflow `overrides` tag and the sweep show them."""
    if not overrides:
        return "defaults"
    return ", ".join(f"{k}={v!r}" for k, v in sorted(overrides.items()))


def default_tracking_uri(project: Path) -> str:
    """The project's own store: a SQLite file in the project folder."""
    return f"sqlite:///{Paths(project.resolve()).mlflow_db}"
