"""Federated sites for the tests: each a humane workspace of its own (params.yaml + its data files).

The sample's Adult rows are split non-IID by workclass: site_a the private sector (about 70% of the rows),
site_b government, site_c the self-employed and the rest; rows without a workclass are dealt out in turn, about
by size (one site holding all of them would fail its own null-share check). A broken site has no label column.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from humane.pipeline.params import load_params
from tests.conftest import SAMPLE_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
SITE_ENV = ROOT / ".site-env"
GOVERNMENT = {"Federal-gov", "State-gov", "Local-gov"}
# A value planted in one training row of site_a: it must never reach the coordinator.
MARKER = "Zq7MarkerOccupation"


def workclass_sites(frame: pd.DataFrame) -> pd.Series:
    """Which site each row belongs to."""
    site = frame["workclass"].map(lambda w: "site_a" if w == "Private" else "site_b" if w in GOVERNMENT else "site_c")
    unknown = frame["workclass"].isna().to_numpy()
    turns = ["site_a"] * 4 + ["site_b", "site_c"]  # about each site's share, so that none passes 10% nulls
    site[unknown] = [turns[i % len(turns)] for i in range(int(unknown.sum()))]
    return site


def site_params(source: str, test_source: str) -> dict:
    """The project's params with the test suite's sample settings, pointed at one site's files."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(name="sample", source=source, test_source=test_source, **SAMPLE_COLUMNS)
    # A site's own profile: small sites, so small groups are judged from 5 test rows and a few more unseen
    # categories in a site's test rows are tolerated.
    params["validate"].update(min_group_rows=5, min_rows=100, max_unseen_fraction=0.05)
    params["audit"].update(min_group_size=5)
    return params


def write_site(folder: Path, train: pd.DataFrame, test: pd.DataFrame) -> Path:
    """A site workspace: params.yaml and data/raw/site/{train,test}.csv."""
    data = folder / "data/raw/site"
    data.mkdir(parents=True, exist_ok=True)
    train.to_csv(data / "train.csv", index=False)
    test.to_csv(data / "test.csv", index=False)
    params = site_params("data/raw/site/train.csv", "data/raw/site/test.csv")
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


def make_sites(root: Path, train: pd.DataFrame, test: pd.DataFrame, broken: bool = True) -> dict[str, Path]:
    """site_a, site_b, site_c (non-IID by workclass; the marker planted in site_a) and, with `broken`, site_d
    whose files lack the label column."""
    sites = {}
    for name in ("site_a", "site_b", "site_c"):
        tr = train[workclass_sites(train) == name].copy()
        te = test[workclass_sites(test) == name].copy()
        if name == "site_a":
            tr.iloc[0, tr.columns.get_loc("occupation")] = MARKER
        sites[name] = write_site(root / name, tr, te)
    if broken:
        part = train.sample(n=300, random_state=1).drop(columns=["income"])
        sites["site_d"] = write_site(root / "site_d", part, test.sample(n=100, random_state=1).drop(columns=["income"]))
    return sites


def toml_value(value: object) -> str:
    """A TOML scalar (JSON's string escapes are TOML's; bools lower-case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def run_config(out_dir: Path, path: Path, **overrides: object) -> list[str]:
    """`--run-config <file.toml>` for `flwr run` (a file: params_json holds quotes and spaces): a short run."""
    params = {
        "preprocess": {"seed": 42, "val_fraction": 0.15, "include_sensitive": False, "log_transform": []},
        "train": {
            **yaml.safe_load((ROOT / "params.yaml").read_text())["train"],
            "hidden_sizes": [64, 32],
            "lr": 0.002,
            "max_epochs": 8,
            "patience": 2,
            "progress": False,
        },
        "evaluate": {"threshold": 0.5},
        "privacy": load_params(ROOT / "params.yaml").privacy.model_dump(mode="json"),  # the sites' own rules
    }
    config = {
        "out_dir": str(out_dir),
        "rounds": 2,
        "local_epochs": 1,
        "min_sites": 2,
        "min_group_size": 10,
        "round_timeout_s": 120.0,
        "seed": 3,
        "params_json": json.dumps(params),
        **overrides,
    }
    path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in config.items()))
    return ["--run-config", str(path)]
