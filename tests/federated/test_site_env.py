"""Real: the .site-env virtual environment `make site-env` builds: its installed pins and imports.

The site environment `make site-env` builds: requirements-site.txt's pins, flwr's own pins, and humane's site
modules importing without Prefect or MLflow (installed with --no-deps: neither is in it)."""

from __future__ import annotations

import re
import subprocess

from tests.federated.conftest import require_site_env
from tests.federated.sites import ROOT, SITE_ENV

# What a site's node imports: its stages, the federated ML, the counts, the Flower App.
SITE_MODULES = [
    "tasks.load",
    "tasks.validate",
    "tasks.data_audit",
    "humane.data.site_stats",
    "humane.modeling.federated",
    "humane.fairness.counts",
    "humane.privacy.dp",
    "great_expectations",
    "opacus",
    "flwr.serverapp",
    "flwr.clientapp",
]


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def test_the_site_env_holds_the_pinned_versions():
    require_site_env()
    freeze = subprocess.run([str(SITE_ENV / "bin/pip"), "freeze"], capture_output=True, text=True, check=True).stdout
    installed = {_name(n): v for n, _, v in (line.partition("==") for line in freeze.splitlines()) if v}
    pins = [line.split("#")[0].strip() for line in (ROOT / "requirements-site.txt").read_text().splitlines()]
    for pin in filter(None, pins):
        name, _, version = pin.partition("==")
        assert installed.get(_name(name)) == version, f"{pin}: the site env has {installed.get(_name(name))}"
    assert installed["torch"].startswith("2.13.0")  # installed first, the CPU build
    # flwr 1.42's own pins, the reason this is a venv of its own
    for name, below in (("typer", (0, 21)), ("rich", (15,)), ("packaging", (26,)), ("protobuf", (7,))):
        assert tuple(int(p) for p in installed[name].split(".")[: len(below)]) < below, name
    # humane itself: editable, without its dependencies (`pip install --no-deps -e .`)
    assert "prefect" not in installed and "mlflow" not in installed and "dvc" not in installed


def test_a_site_imports_without_prefect_or_mlflow():
    require_site_env()
    code = (
        f"import sys, importlib\nfor m in {SITE_MODULES!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in ('prefect', 'mlflow', 'dvc') if m in sys.modules))"
    )
    result = subprocess.run(
        [str(SITE_ENV / "bin/python"), "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
