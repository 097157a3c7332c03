"""A stage's `python -m tasks.<stage>` entry point, as dvc.yaml runs it: the whole params.yaml, then the stage."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from humane.core.context import RunContext
from humane.core.errors import cli
from humane.core.paths import Paths
from humane.pipeline.params import Params, load_params

StageRun = Callable[[Params, Paths, RunContext], str]


def stage_main(run: StageRun) -> None:
    """A stage's `python -m tasks.<stage>` entry point (what dvc.yaml runs): params from ./params.yaml."""

    def main() -> None:
        paths = Paths(Path("."))
        print(run(load_params(paths.params), paths, RunContext(project=Path.cwd())))

    cli(main)
