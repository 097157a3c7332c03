"""The layer order of humane/: core < privacy < data < modeling < fairness < governance < monitoring < pipeline.

A module may use its own package and the packages below it. Two ways up are refused: an import (absolute or
relative, anywhere in the module) and a higher layer's file named by path (`package / "fairness" / "mitigation.py"`),
which hides the same dependency from the import graph. Read from the source with `ast`, like
../shared/tools/layers.py; nothing is imported.
"""

from __future__ import annotations

import ast
from itertools import pairwise
from pathlib import Path

import pytest

from tests.conftest import ROOT

ORDER = ["core", "privacy", "data", "modeling", "fairness", "governance", "monitoring", "pipeline"]
PACKAGE = ROOT / "humane"


def layer_of(dotted: str) -> str | None:
    """The layer a dotted module name lies in (`humane.fairness.sweep` → `fairness`), or None outside them."""
    parts = dotted.split(".")
    return parts[1] if len(parts) >= 2 and parts[0] == "humane" and parts[1] in ORDER else None


def imported_modules(node: ast.AST, module: str) -> list[str]:
    """The dotted names an import statement brings in, relative ones resolved against `module`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = module.split(".")[: -node.level]
        base = ".".join([*anchor, base] if base else anchor)
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


# Calls that join their arguments into a path: Path("fairness", "x.py"), os.path.join(...), p.joinpath(...).
PATH_CALLS = {"Path", "PurePath", "PosixPath", "PurePosixPath", "join", "joinpath"}


def path_call(node: ast.AST) -> bool:
    """Whether `node` calls one of PATH_CALLS (by name or as an attribute: `pathlib.Path`, `os.path.join`)."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)) in PATH_CALLS


def path_segments(node: ast.AST) -> list[str]:
    """The string parts of a path expression, a path call or a path string.

    `a / "fairness" / "x.py"`, `"fairness/x.py"`, `Path("fairness", "x.py")` and `os.path.join("fairness", "x.py")`
    all give both names.
    """
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return path_segments(node.left) + path_segments(node.right)
    if path_call(node):
        return [part for arg in node.args for part in path_segments(arg)]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [part for part in node.value.split("/") if part]
    return []


def named_files(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, layer, file) for each `<layer>/<file>.py` a path expression, path call or path string names."""
    found = []
    for node in ast.walk(tree):
        path = (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)) or path_call(node)
        if not path and not (isinstance(node, ast.Constant) and isinstance(node.value, str) and "/" in node.value):
            continue
        parts = path_segments(node)
        found += [(node.lineno, a, b) for a, b in pairwise(parts) if a in ORDER and b.endswith(".py")]
    return found


def climbs(source: str, module: str) -> list[str]:
    """Each place in one module's source that reaches a layer above its own, as `module:line what`."""
    own = layer_of(module)
    if own is None:
        return []
    above = set(ORDER[ORDER.index(own) + 1 :])
    tree = ast.parse(source)
    found = set()
    for node in ast.walk(tree):
        for name in imported_modules(node, module):
            if layer_of(name) in above:
                found.add((node.lineno, f"imports humane.{layer_of(name)}"))
    for line, layer, file in named_files(tree):
        if layer in above:
            found.add((line, f"names {layer}/{file} by path"))
    return [f"{module}:{line} {what} (above humane.{own})" for line, what in sorted(found)]


def module_name(path: Path) -> str:
    """humane/fairness/sweep.py → humane.fairness.sweep (a package's __init__ is the package)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_package_of_humane_has_a_place_in_the_order():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(ORDER), f"packages outside the layer order: {sorted(packages - set(ORDER))}"


def test_no_module_imports_or_names_a_file_of_a_layer_above_its_own():
    offenders = [
        line
        for path in sorted(PACKAGE.rglob("*.py"))
        for line in climbs(path.read_text(encoding="utf-8"), module_name(path))
    ]
    assert offenders == [], "modules that reach up the layers:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    ("module", "source", "found"),
    [
        ("humane.fairness.sweep", "from humane.governance import gate", "imports humane.governance"),
        ("humane.fairness.sweep", "import humane.monitoring.batch as b", "imports humane.monitoring"),
        ("humane.fairness.sweep", "from ..governance.gate import decide", "imports humane.governance"),
        ("humane.modeling.features", "def f():\n    from humane import fairness", "imports humane.fairness"),
        ("humane.modeling.training", 'p = root / "fairness" / "mitigation.py"', "names fairness/mitigation.py"),
        ("humane.modeling.training", 'p = root / "fairness/mitigation.py"', "names fairness/mitigation.py"),
        ("humane.core.io", 'HERE = "humane/data/schema.py"', "names data/schema.py"),
        ("humane.modeling.training", 'p = Path("fairness", "mitigation.py")', "names fairness/mitigation.py"),
        ("humane.modeling.training", 'p = pathlib.Path(root, "fairness") / "x.py"', "names fairness/x.py"),
        ("humane.modeling.training", 'p = os.path.join(root, "fairness", "x.py")', "names fairness/x.py"),
        ("humane.modeling.training", 'p = root.joinpath("fairness", "x.py")', "names fairness/x.py"),
        ("humane.monitoring.monitor", "from humane.pipeline.params import Params", "imports humane.pipeline"),
        ("humane.governance.serving", "def f():\n    from humane.pipeline import params", "imports humane.pipeline"),
        ("humane.core.context", 'p = root / "pipeline" / "params.py"', "names pipeline/params.py"),
    ],
)
def test_the_check_finds_each_way_up(module, source, found):
    (place,) = climbs(source, module)
    assert found in place and place.startswith(f"{module}:")


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("humane.governance.gate", "from humane.fairness import metrics\nfrom . import card\nimport numpy"),
        ("humane.fairness.sweep", "from .metrics import audit\nfrom ..modeling import training"),
        ("humane.modeling.training", 'p = root / "privacy" / "dp.py"\nkey = "fairness"\nq = "fairness/report"'),
        ("humane.modeling.training", 'p = Path(root, "privacy", "dp.py")\nprint("fairness", "x.py")'),
        ("humane.monitoring.batch", "from humane.governance import serving"),
        ("tasks.train", "from humane.monitoring import batch"),
    ],
)
def test_the_check_lets_a_module_use_its_own_layer_and_those_below(module, source):
    assert climbs(source, module) == []
