"""The docs site stays true to the code: it builds strictly and offline, every param is documented, the layout
page names what exists, the nav holds every page, and every exit code of humane/core/errors.py is on its page.

Real components: MkDocs with the Material theme (a real `make docs`, i.e. `mkdocs build --strict`), the hooks of
docs/hooks.py, the pydantic models composed in humane/pipeline/params.py. No servers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from humane.core.params import section_of

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# Markdown files under docs/ deliberately left out of the nav (none today): path relative to docs/ -> why.
NOT_IN_NAV: dict[str, str] = {}


def _load_hooks() -> Any:
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _load_hooks()


class _MkDocsLoader(yaml.SafeLoader):
    """Reads mkdocs.yml, whose `!!python/name:` tags a safe loader refuses, as plain data."""


_MkDocsLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def _nav_pages(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    return []


def _table_rows(markdown: str) -> dict[str, list[str]]:
    """The rows of every table, by their first cell's backticked key: {key: the other cells, unescaped |}."""
    rows = {}
    for line in markdown.splitlines():
        match = re.match(r"^\| `([^`]+)` \|(.*)\|$", line)
        if match:
            rows[match.group(1)] = [c.strip() for c in re.split(r"(?<!\\)\|", match.group(2))]
    return rows


# ---------------------------------------------------------------------------------------------- (a) the build


def _copy_tracked(dest: Path) -> Path:
    """The tracked files (not the raw data) in `dest`, with `.venv` pointing at the running environment."""
    for name in _tracked():
        if not name.startswith("data/raw/") and (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    (dest / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    return dest


# The one docs build of CI (.ci/run has no `make docs` of its own): the documented command, `make docs`, run in a
# copy of the project so that its site/ lands there; `-o .venv/.installed`: the environment is the running one.
@pytest.mark.slow  # a whole MkDocs build (4-6 s): in `make test`, not in `make test-fast`
def test_make_docs_builds_the_site_strict_and_offline(tmp_path: Path) -> None:
    project = _copy_tracked(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    # `make docs` runs `mkdocs build --strict`, not --quiet: --quiet hides the warnings that --strict counts.
    result = subprocess.run(
        ["make", "-o", ".venv/.installed", "docs"],
        cwd=project,
        capture_output=True,
        text=True,
        env={**env, "NO_MKDOCS_2_WARNING": "1"},
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "mkdocs build --strict" in result.stdout
    site = project / "site"
    pages = list(site.rglob("*.html"))
    assert len(pages) >= len(_nav_pages(yaml.load((ROOT / "mkdocs.yml").read_text(), _MkDocsLoader)["nav"]))
    # Offline: nothing the browser loads comes from another host (links to other sites are fine).
    remote = {
        p.name: re.findall(r'<(?:script|img|link)[^>]+(?:src|href)="(https?://[^"]+)"', p.read_text()) for p in pages
    }
    assert not {k: v for k, v in remote.items() if v}
    index = (site / "index.html").read_text()
    assert "mermaid-11.17.2.min.js" in index and 'class="mermaid"' in index
    # The generated parts were generated: no marker is left, and their content is there.
    assert not [p for p in pages if "<!-- generated:" in p.read_text()]
    assert "train.dp.target_epsilon" in (site / "reference" / "params" / "index.html").read_text()
    assert "python -m tasks.approve" in (site / "reference" / "cli" / "index.html").read_text()


# ---------------------------------------------------------------------------------------------- (b) params


def _documented_keys(raw: dict[str, Any], model: type, prefix: str = "") -> list[str]:
    """The reference's key for every leaf of a params file: the deepest pydantic field the leaf sits in."""
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    keys = []
    for key, value in raw.items():
        assert key in fields, f"{prefix}{key}: not a field of {model.__name__}"
        section = section_of(fields[key].annotation)
        if section is not None and isinstance(value, dict):
            keys += _documented_keys(value, section, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


PARAM_FILES = [
    "params.yaml",
    "federation/params.yaml",
    *sorted(f"profiles/{p.name}" for p in (ROOT / "profiles").glob("*.yaml")),
]


@pytest.mark.parametrize("name", PARAM_FILES)
def test_every_param_is_in_the_reference_with_a_description(name: str) -> None:
    from humane.pipeline.params import Params

    rows = _table_rows(hooks.params_reference())
    keys = _documented_keys(yaml.safe_load((ROOT / name).read_text()), Params)
    assert len(keys) > 10
    missing = [k for k in keys if k not in rows]
    undescribed = [k for k in keys if k in rows and not rows[k][-1]]
    assert not missing and not undescribed, f"{name}: not in the reference {missing}; no description {undescribed}"


def test_every_model_field_has_a_description_type_and_default() -> None:
    rows = _table_rows(hooks.params_reference())
    leaves = [key for key, _, section in hooks.param_rows() if section is None]
    assert len(leaves) > 150 and set(leaves) <= set(rows)
    assert not [k for k in leaves if not all(rows[k][i] for i in (0, 1, 2, 5))], "a row lacks type, value or text"
    assert rows["train.dp.accountant"][3] == "`prv` \\| `rdp` \\| `gdp`"
    assert rows["train.lr"][4] == "yes" and rows["data.source"][4] == ""
    assert (DOCS / "reference" / "params.md").read_text().count("<!-- generated: params -->") == 1


def test_the_reference_shows_the_value_params_yaml_ships_beside_the_default() -> None:
    from humane.core.params import flatten

    rows = _table_rows(hooks.params_reference())
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    # Sign-off ships on, while the models default it off: the page must say what a checkout runs with.
    assert shipped["gate"]["four_eyes"] is True and shipped["gate"]["require_approval"] is True
    assert rows["gate.four_eyes"][1:3] == ["`true`", "`false`"]
    assert rows["gate.require_approval"][1:3] == ["`true`", "`false`"]
    assert rows["federated.rounds"][1:3] == ["—", "required"]  # only in federation/params.yaml
    flat = flatten(shipped)
    for key in ("train.lr", "data.name", "train.dp.target_epsilon"):
        assert rows[key][1] == f"`{json.dumps(flat[key])}`", key


# Backticked dotted names that start with a params section but are MLflow metrics or tags, not params: a name, or
# a family when it ends in "." or "_" (`explain.proxy_auc.<feature>`, `privacy.mia_*`). Keep this list short: each
# entry is a name the code logs (humane/governance/federation.py, flows/sweep.py, humane/fairness/proxies.py).
NOT_PARAMS = (
    "privacy.epsilon",  # the privacy stage's metrics (reports/privacy.json, logged as privacy.*)
    "privacy.k_min",
    "privacy.l_min",
    "privacy.share_below_k",
    "privacy.mia_",
    "explain.proxy_auc.",  # the proxy report's per-feature policy metrics
    "explain.proxy_attribution_share.",
    "federated.sites_trained",  # a federated run's metric
    "sweep.position",  # the sweep's tags and summed compute metrics
    "sweep.rejected",
    "sweep.compute.",
    "train.compute.",  # a run's compute metrics
)
# A span's leading dotted name: `gate.four_eyes`, `gate.four_eyes: true`, `train.lr=0.01`, `train.dp.*`.
DOTTED = re.compile(r"`([a-z_]+\.[a-z_.]+)(?=[`\s:=\[<*])[^`\n]*`")
FILE_SUFFIXES = {"json", "md", "py", "yaml", "yml", "csv", "pt", "txt", "html", "lock"}  # `audit.json`: a file


def _undocumented_params(text: str, keys: set[str]) -> list[str]:
    """Backticked `section.key` names of `text` that start with a params section and are no params key."""
    sections = {k.split(".")[0] for k in keys}
    names = {m.group(1).rstrip(".") for m in DOTTED.finditer(text)}
    return sorted(
        n
        for n in names
        if n.split(".")[0] in sections
        and n not in keys
        and n.rsplit(".", 1)[1] not in FILE_SUFFIXES
        and not any(n == a.rstrip(".") or n.startswith(a) for a in NOT_PARAMS)
    )


def test_every_backticked_param_name_in_the_prose_is_a_documented_param() -> None:
    keys = {key for key, _, _ in hooks.param_rows()}  # the reference's rows and section headings
    assert "gate.four_eyes" in keys and "train.dp" in keys
    # The check itself: a misspelt key is caught, a metric of the allow-list and a file name are not.
    sample = "`gate.four_eye` `gate.four_eyes: true` `train.dp.*` `privacy.k_min` `privacy.mia_auc` `audit.json`"
    assert _undocumented_params(sample, keys) == ["gate.four_eye"]
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    checked = sum(len(DOTTED.findall(page.read_text())) for page in pages)
    assert checked > 100
    wrong = {str(p.relative_to(ROOT)): bad for p in pages if (bad := _undocumented_params(p.read_text(), keys))}
    assert not wrong, f"backticked names that are no params key (nor in NOT_PARAMS): {wrong}"


def test_the_adult_policy_on_the_mitigation_page_is_generated_from_the_profile() -> None:
    page = (DOCS / "how-to" / "bias-mitigation.md").read_text()
    assert "<!-- generated: policy profiles/adult.yaml -->" in page
    policy = yaml.safe_load((ROOT / "profiles" / "adult.yaml").read_text())["policy"]
    rows = [line for line in hooks.render_markers(page).splitlines() if line.startswith("| `")]
    expected = [(metric, limit) for rule in hooks.POLICY_RULES for metric, limit in (policy.get(rule) or {}).items()]
    assert len(expected) >= 9 and ("explain.proxy_attribution_share.sex", 0.6) in expected
    assert [(r.split("`")[1], float(r.split("`")[3])) for r in rows if r.count("`") == 4] == expected
    with pytest.raises(Exception, match="no policy section"):
        hooks.policy_reference("dvc.yaml")


# ---------------------------------------------------------------------------------------------- (c) layout


def _tracked() -> list[str]:
    return subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()


def test_layout_lists_every_top_level_path_and_no_other() -> None:
    text = (DOCS / "reference" / "layout.md").read_text()
    project = text.split("## The project")[1].split("\n## ")[0]
    listed = {
        p
        for line in project.splitlines()
        if line.startswith("| `")
        for p in re.findall(r"`([^`]+)`", line.split(" | ")[0])
    }
    tracked = {p.split("/")[0] + ("/" if "/" in p else "") for p in _tracked()}
    tracked -= {".gitignore", ".dvcignore"}
    assert listed == tracked, (
        f"listed, not in git: {sorted(listed - tracked)}; in git, not listed: {sorted(tracked - listed)}"
    )


def test_layout_has_a_module_table_for_every_code_folder() -> None:
    text = (DOCS / "reference" / "layout.md").read_text()
    tables = set(re.findall(r"<!-- generated: modules ([\w./-]+) -->", text))
    code = {str(Path(p).parent) for p in _tracked() if p.endswith(".py") and not p.endswith("__init__.py")}
    code = {c for c in code if c.split("/")[0] not in ("tests", "docs") and c != "."}
    assert tables == code, (
        f"tables for missing folders: {sorted(tables - code)}; folders without: {sorted(code - tables)}"
    )
    for folder in tables:
        assert "(no module docstring)" not in hooks.modules_reference(folder), f"{folder}: a module has no docstring"


def test_layout_names_only_paths_that_exist() -> None:
    text = (DOCS / "reference" / "layout.md").read_text()
    named = {p for p in re.findall(r"`([\w.-]+/[\w./-]*)`", text)}
    assert len(named) > 15
    assert not [p for p in named if not (ROOT / p).exists()]


# ---------------------------------------------------------------------------------------------- (d) nav


def test_nav_and_pages_agree() -> None:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), _MkDocsLoader)
    nav = _nav_pages(config["nav"])
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert not [p for p in nav if p not in pages], "nav names a page that does not exist"
    assert len(nav) == len(set(nav)), "a page is twice in the nav"
    assert not sorted(pages - set(nav) - set(NOT_IN_NAV)), "a page under docs/ is in no nav entry"


# ---------------------------------------------------------------------------------------------- (e) exit codes


def test_every_exit_code_of_errors_py_is_on_the_exit_codes_page() -> None:
    page = (DOCS / "reference" / "exit-codes.md").read_text()
    codes = hooks.error_codes()
    assert {2, 10, 11, 12} <= set(codes.values())
    for code in set(codes.values()):
        names = [n for n, c in codes.items() if c == code]
        rows = [line for line in page.splitlines() if line.startswith(f"| {code} |")]
        assert any(f"`{n}`" in row for row in rows for n in names), f"exit {code} ({names}): no row on the page"
    generated = hooks.render_markers(page)
    assert all(f"| {c} | `{n}` |" in generated for n, c in codes.items())


# ---------------------------------------------------------------------------------------------- figures, commands


def test_every_bench_result_has_its_table_and_command() -> None:
    figures = hooks.figures_reference()
    results = sorted((ROOT / "bench" / "results").glob("*.json"))
    assert results
    for path in results:
        section = figures.split(f"## `bench/results/{path.name}`")[1].split("\n## ")[0]
        command = re.search(r"Written by `python (bench/\w+\.py)", section)
        assert command and (ROOT / command.group(1)).is_file(), f"{path.name}: no bench command"
        assert section.count("\n| ") >= 3, f"{path.name}: no table"
    assert "<!-- generated: figures -->" in (DOCS / "figures.md").read_text()


def test_unknown_generated_part_fails_the_page() -> None:
    with pytest.raises(Exception, match="unknown generated part 'parms'"):
        hooks.render_markers("x\n<!-- generated: parms -->\n", "reference/params.md")
