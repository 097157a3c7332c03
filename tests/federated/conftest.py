"""Federated fixtures: site workspaces from the sample data and one real local federation for the package's tests.

The federation is Flower's deployment engine as processes on 127.0.0.1 (federated/humane_fl/nodes.py): one
SuperLink and one SuperNode per site (site_a, site_b, site_c split non-IID by workclass; site_d whose files lack the
label column), in the site environment (`make site-env`). Without .site-env these tests skip, unless
HUMANE_REQUIRE_SITE_ENV is set (CI sets it): then they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tests.federated.sites import ROOT, SITE_ENV, make_sites, run_config


def nodes_cmd(*args: str) -> list[str]:
    """`.site-env/bin/python -m federated.humane_fl.nodes <args>` (README, "Federated training")."""
    return [str(SITE_ENV / "bin/python"), "-m", "federated.humane_fl.nodes", *args]


def require_site_env() -> None:
    """Skip without the site environment, or fail when HUMANE_REQUIRE_SITE_ENV says it must be there."""
    if (SITE_ENV / "bin/flwr").exists():
        return
    why = f"the site environment {SITE_ENV} is missing (make site-env)"
    if os.environ.get("HUMANE_REQUIRE_SITE_ENV"):
        pytest.fail(f"{why}, and HUMANE_REQUIRE_SITE_ENV is set")
    pytest.skip(why)


@dataclass(frozen=True)
class Federation:
    """A running local federation: its state folder, the connection `up` wrote, and the sites' folders."""

    state: Path
    info: dict
    sites: dict[str, Path]

    def env(self) -> dict[str, str]:
        """The coordinator's environment for `flwr run`: the federation's FLWR_HOME, telemetry off."""
        return {**os.environ, "FLWR_HOME": self.info["flwr_home"], "FLWR_TELEMETRY_ENABLED": "0"}

    def run_cmd(self, out_dir: Path, **overrides: object) -> list[str]:
        """`flwr run federated <connection> --stream --run-config <file>` for a short run into out_dir."""
        config = run_config(out_dir, out_dir.parent / f"{out_dir.name}.toml", **overrides)
        return [str(SITE_ENV / "bin/flwr"), "run", "federated", self.info["connection"], "--stream", *config]

    def run(self, out_dir: Path, timeout: float = 900, **overrides: object) -> str:
        """Run the Flower App to the end; return what `flwr run --stream` printed."""
        result = subprocess.run(
            self.run_cmd(out_dir, **overrides),
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return result.stdout + result.stderr


def start(root: Path, sites: dict[str, Path]) -> Federation:
    """`nodes up` for these sites under root/state."""
    state = root / "state"
    cmd = nodes_cmd("up", "--dir", str(state), *(f"--site={n}={p}" for n, p in sites.items()))
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        subprocess.run(nodes_cmd("down", "--dir", str(state)), cwd=ROOT, capture_output=True, timeout=120)
        raise AssertionError(f"nodes up failed:\n{result.stdout}\n{result.stderr}")
    return Federation(state, json.loads((state / "federation.json").read_text()), sites)


def stop(federation: Federation) -> None:
    """`nodes down`: every process of the federation, by PID."""
    subprocess.run(nodes_cmd("down", "--dir", str(federation.state)), cwd=ROOT, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def sample_frames(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The suite's sample (train pool, test) as frames."""
    from tests.conftest import write_sample

    folder = tmp_path_factory.mktemp("federated-sample")
    write_sample(folder)
    return pd.read_csv(folder / "train.csv"), pd.read_csv(folder / "test.csv")


@pytest.fixture(scope="package")
def federation(tmp_path_factory: pytest.TempPathFactory, sample_frames: tuple) -> Iterator[Federation]:
    """One SuperLink and four SuperNodes (site_a..site_d), stopped by PID after this package's last test.

    Package-scoped, not session-scoped: an idle federation's ten processes poll each other (2.7 s of CPU a minute,
    measured), which the rest of the session on the same two cores would pay for.
    """
    require_site_env()
    root = tmp_path_factory.mktemp("federation")
    running = start(root, make_sites(root / "sites", *sample_frames))
    try:
        yield running
    finally:
        stop(running)
