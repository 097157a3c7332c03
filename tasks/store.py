"""Which MLflow store the pipeline uses, and pointing MLflow's fluent API at it without side effects."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.paths import MLFLOW_DB


def default_tracking_uri(root: Path = Path(".")) -> str:
    """The project's own store: a SQLite file in the project folder."""
    return f"sqlite:///{(root / MLFLOW_DB).resolve()}"


def tracking_uri(root: Path = Path(".")) -> str:
    """MLFLOW_TRACKING_URI when set, else the project's SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(root)


@contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at `uri` for the block only.

    `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI to the process environment; left in place, a
    long-lived process (a Prefect worker, a test session) would send every later run to this store.
    """
    import mlflow

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
