"""Every project file a dvc.yaml stage executes must be among that stage's deps.

For each stage whose `cmd` is `python -m <module>`, the source files the stage runs are its entry module plus
every project module it imports, followed transitively with `ast` (nothing is imported): top-level and
function-level (lazy) imports, `from a.b import c` where `c` is a submodule, relative imports resolved
against the importing module's package, literal `importlib.import_module("...")` calls, and every package
`__init__.py` on the way. A file is covered when it is a dep or lies under a dep folder. The one exemption:
an `__init__.py` whose body is nothing but a docstring (or empty) executes no code, so no dep is needed.

Conservative on purpose: imports under `if TYPE_CHECKING:` or in `try/except ImportError` count too.
"""

from __future__ import annotations

import ast
import functools
import posixpath
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------- the checker


def _parse(path: Path) -> ast.Module:
    stat = path.stat()
    return _parse_cached(path, stat.st_mtime_ns, stat.st_size)


@functools.cache
def _parse_cached(path: Path, _mtime_ns: int, _size: int) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def project_tops(root: Path) -> frozenset[str]:
    """Top-level names of project modules: packages (folders with `__init__.py`) and top-level .py files."""
    tops = set()
    for p in root.iterdir():
        if p.is_dir() and (p / "__init__.py").is_file():
            tops.add(p.name)
        elif p.is_file() and p.suffix == ".py":
            tops.add(p.stem)
    return frozenset(tops)


def module_file(root: Path, name: str) -> Path | None:
    """The source file of dotted module `name` under `root` (`a/b.py` or `a/b/__init__.py`), else None."""
    parts = name.split(".")
    if not all(parts):
        return None
    top_is_project = (root / parts[0] / "__init__.py").is_file() or (root / f"{parts[0]}.py").is_file()
    if not top_is_project:  # what `project_tops` says, without listing the root on every call
        return None
    for cand in (root.joinpath(*parts[:-1], parts[-1] + ".py"), root.joinpath(*parts, "__init__.py")):
        if cand.is_file():
            return cand
    return None


def module_name(path: Path, root: Path) -> str:
    """The dotted name of the module whose file is `path` (a package's `__init__.py` names the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(path: Path, root: Path) -> str:
    """The package a module's relative imports resolve against: the package itself for an `__init__.py`."""
    name = module_name(path, root)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _resolve_relative(path: Path, root: Path, level: int, module: str | None) -> str | None:
    """`from <level dots><module> import ...` in `path`, as an absolute dotted name (None if it escapes)."""
    pkg = package_of(path, root).split(".") if package_of(path, root) else []
    if level - 1 > len(pkg) or (level - 1 == len(pkg) and not module):
        return None
    base = pkg[: len(pkg) - (level - 1)]
    return ".".join([*base, *([module] if module else [])]) or None


def _star_names(root: Path, pkg: str) -> list[str]:
    """The literal `__all__` of package `pkg` (what `from pkg import *` imports), else nothing."""
    f = module_file(root, pkg)
    if f is None:
        return []
    for node in _parse(f).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError):
                return []
            return [v for v in value if isinstance(v, str)] if isinstance(value, list | tuple) else []
    return []


def imported_names(path: Path, root: Path) -> set[str]:
    """Every absolute dotted module name `path` may import, anywhere in its body (lazy imports included).

    `from a.b import c` yields `a.b` and `a.b.c` (the latter only matters when `c` is a submodule).
    """
    out: set[str] = set()
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module if node.level == 0 else _resolve_relative(path, root, node.level, node.module)
            if base is None:
                continue
            out.add(base)
            for alias in node.names:
                if alias.name == "*":
                    out.update(f"{base}.{n}" for n in _star_names(root, base))
                else:
                    out.add(f"{base}.{alias.name}")
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in {"import_module", "__import__"})
            )
        ):
            out.add(node.args[0].value)
    return out


def files_executed_by_import(root: Path, name: str) -> set[Path]:
    """The project files importing `name` executes: each package `__init__.py` on the way, then the module."""
    parts = name.split(".")
    files = set()
    for i in range(1, len(parts) + 1):
        f = module_file(root, ".".join(parts[:i]))
        if f is None:
            break  # `from a.b import c` where c is a function: a and a.b are already in
        files.add(f)
    return files


def imports_of(path: Path, root: Path) -> set[Path]:
    """The project source files that `path`'s import statements execute directly (not transitively)."""
    tops = project_tops(root)
    files: set[Path] = set()
    for name in imported_names(path, root):
        if name.split(".")[0] in tops:
            files |= files_executed_by_import(root, name)
    return files


def closure(entry: Path, root: Path) -> set[Path]:
    """`entry` and every project file it executes through imports, transitively."""
    entry_name = module_name(entry, root)
    seen: set[Path] = set()
    todo = [entry, *files_executed_by_import(root, entry_name)]  # `-m a.b` runs a/__init__.py first
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo.extend(imports_of(f, root) - seen)
    return seen


def executes_code(path: Path) -> bool:
    """False only for an `__init__.py` that is empty or holds nothing but a docstring."""
    if path.name != "__init__.py":
        return True
    body = _parse(path).body
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        body = body[1:]
    return bool(body)


def stage_entry(stage: dict) -> str | None:
    """The module of a `python -m <module> ...` cmd, else None."""
    cmd = stage.get("cmd")
    if isinstance(cmd, list):
        if len(cmd) != 1:
            return None
        cmd = cmd[0]
    if not isinstance(cmd, str):
        return None
    words = cmd.split()
    if len(words) >= 3 and Path(words[0]).name.startswith("python") and words[1] == "-m":
        return words[2]
    return None


def _dep_path(dep) -> str:
    name = dep if isinstance(dep, str) else next(iter(dep))
    return posixpath.normpath(name.strip().rstrip("/"))


def is_covered(rel: str, deps: list[str]) -> bool:
    """True when the root-relative posix path `rel` is a dep or lies under a dep folder."""
    return any(rel == d or rel.startswith(d + "/") or d == "." for d in deps)


def uncovered(dvc_spec: dict, root: Path) -> dict[str, list[str]]:
    """For each `python -m` stage, the files it executes (code-holding) that its deps do not cover.

    Every such stage appears in the result, with an empty list when it is fully covered.
    """
    result: dict[str, list[str]] = {}
    for name, stage in (dvc_spec.get("stages") or {}).items():
        module = stage_entry(stage)
        if module is None:
            continue
        entry = module_file(root, module)
        if entry is None:
            raise AssertionError(f"stage {name!r} runs module {module!r}, which has no source file under {root}")
        deps = [_dep_path(d) for d in stage.get("deps") or []]
        result[name] = sorted(
            rel
            for rel in (f.relative_to(root).as_posix() for f in closure(entry, root))
            if executes_code(root / rel) and not is_covered(rel, deps)
        )
    return result


def stage_cross_imports(root: Path, package: str = "tasks") -> list[str]:
    """`a imports b` for each stage module of `package` that executes another one (the package itself is fine)."""
    pkg_dir = root / package
    found = []
    for f in sorted(pkg_dir.glob("*.py")):
        if f.name == "__init__.py":
            continue
        others = sorted(
            g.relative_to(root).as_posix()
            for g in closure(f, root)
            if g.parent == pkg_dir and g.name != "__init__.py" and g != f
        )
        found += [f"{f.relative_to(root).as_posix()} imports {o}" for o in others]
    return found


def describe(stage: str, files: list[str]) -> str:
    """One actionable line per uncovered file."""
    return "\n".join(
        f"stage {stage!r} runs {f} but dvc.yaml does not depend on it (or on {posixpath.dirname(f) or '.'})"
        for f in files
    )


def load_dvc(root: Path = ROOT) -> dict:
    return yaml.safe_load((root / "dvc.yaml").read_text())


# ------------------------------------------------------------------------------------ the real dvc.yaml

REAL = load_dvc()
STAGES = [name for name, stage in REAL["stages"].items() if stage_entry(stage) is not None]


def test_dvc_yaml_has_python_module_stages():
    assert STAGES, "no `python -m <module>` stage found in dvc.yaml: the dependency check would check nothing"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_depends_on_every_file_it_executes(stage):
    missing = uncovered({"stages": {stage: REAL["stages"][stage]}}, ROOT)[stage]
    assert not missing, "\n" + describe(stage, missing)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_closure_is_plausible(stage):
    """The walker finds the entry module and at least one library module (guards against a silent no-op)."""
    module = stage_entry(REAL["stages"][stage])
    entry = module_file(ROOT, module)
    files = {f.relative_to(ROOT).as_posix() for f in closure(entry, ROOT)}
    assert entry.relative_to(ROOT).as_posix() in files
    assert any(f.startswith("humane/") and not f.endswith("__init__.py") for f in files), files


def test_exempt_init_files_hold_only_a_docstring():
    """Every uncovered `__init__.py` a stage executes is exempt only because it executes no code."""
    for name in STAGES:
        stage = REAL["stages"][name]
        deps = [_dep_path(d) for d in stage.get("deps") or []]
        for f in closure(module_file(ROOT, stage_entry(stage)), ROOT):
            rel = f.relative_to(ROOT).as_posix()
            if f.name == "__init__.py" and not is_covered(rel, deps):
                body = ast.parse(f.read_text()).body
                assert len(body) <= 1, f"{rel} executes code: stage {name!r} must depend on it"
                if body:
                    node = body[0]
                    assert isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant), rel
                    assert isinstance(node.value.value, str), rel


def test_stage_modules_never_import_each_other():
    offenders = stage_cross_imports(ROOT)
    assert not offenders, "stage modules must not import each other:\n" + "\n".join(offenders)


# ------------------------------------------------------------------------------------ the check bites


def test_dropping_a_dep_reports_exactly_the_uncovered_files():
    spec = load_dvc()  # a fresh copy, changed in memory only
    before = uncovered(spec, ROOT)
    assert "humane/modeling" in spec["stages"]["train"]["deps"]
    spec["stages"]["train"]["deps"].remove("humane/modeling")
    after = uncovered(spec, ROOT)

    entry = module_file(ROOT, stage_entry(spec["stages"]["train"]))
    now_uncovered = {
        f.relative_to(ROOT).as_posix()
        for f in closure(entry, ROOT)
        if is_covered(f.relative_to(ROOT).as_posix(), ["humane/modeling"]) and executes_code(f)
    }
    # tasks/train.py imports these three directly
    assert {"humane/modeling/features.py", "humane/modeling/model.py", "humane/modeling/training.py"} <= now_uncovered
    assert "humane/modeling/__init__.py" not in now_uncovered  # docstring only
    assert set(after["train"]) == set(before["train"]) | now_uncovered
    assert set(after["train"]) - set(before["train"]) == now_uncovered
    assert {k: v for k, v in after.items() if k != "train"} == {k: v for k, v in before.items() if k != "train"}
    assert "stage 'train' runs humane/modeling/model.py but dvc.yaml does not depend on it (or on humane/modeling)" in (
        describe("train", after["train"])
    )


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def fake(tmp_path):
    """A tiny project: every import style the walker must follow, plus files nothing imports."""
    files = {
        "pkg/__init__.py": '"""Docstring only: executes no code."""\n',
        "pkg/sub/__init__.py": "from . import helper\n",  # executes code
        "pkg/sub/helper.py": "from ..leaf import x\n",  # relative, two levels up
        "pkg/sub/sibling.py": "X = 1\n",
        "pkg/leaf.py": "x = 1\n",
        "pkg/lazy.py": "def f():\n    from pkg.deep import mod\n    return mod\n",
        "pkg/deep/__init__.py": "",
        "pkg/deep/mod.py": "from .other import y\n",  # relative, same package
        "pkg/deep/other.py": "y = 2\n",
        "pkg/unused.py": "z = 3\n",
        "stages/__init__.py": '"""Stages."""\n',
        "stages/run.py": (
            "import json\n"
            "from pkg.sub import sibling\n"  # `c` is a submodule
            "def main():\n"
            "    import pkg.lazy\n"  # lazy
            "    return pkg.lazy.f()\n"
        ),
        "notapkg/thing.py": "q = 1\n",  # no __init__: not a project package
    }
    for rel, text in files.items():
        _write(tmp_path, rel, text)
    return tmp_path


def test_walker_follows_lazy_relative_and_submodule_imports(fake):
    files = {f.relative_to(fake).as_posix() for f in closure(fake / "stages/run.py", fake)}
    assert files == {
        "stages/__init__.py",
        "stages/run.py",
        "pkg/__init__.py",
        "pkg/sub/__init__.py",
        "pkg/sub/helper.py",
        "pkg/sub/sibling.py",
        "pkg/leaf.py",
        "pkg/lazy.py",
        "pkg/deep/__init__.py",
        "pkg/deep/mod.py",
        "pkg/deep/other.py",
    }


def test_lazy_import_alone_is_followed(tmp_path):
    _write(tmp_path, "app/__init__.py", "")
    _write(tmp_path, "app/main.py", "def run():\n    from app.heavy import go\n    return go()\n")
    _write(tmp_path, "app/heavy.py", "def go():\n    return 1\n")
    assert tmp_path / "app/heavy.py" in closure(tmp_path / "app/main.py", tmp_path)
    spec = {"stages": {"s": {"cmd": "python -m app.main", "deps": ["app/main.py"]}}}
    assert uncovered(spec, tmp_path) == {"s": ["app/heavy.py"]}


def test_uncovered_on_fake_project(fake):
    stage = {"cmd": "python -m stages.run", "deps": ["stages/run.py", "pkg/deep", "pkg/leaf.py"]}
    result = uncovered({"stages": {"run": stage, "other": {"cmd": "echo hi"}}}, fake)
    # pkg/__init__.py, stages/__init__.py (docstring only) and pkg/deep/__init__.py (empty) need no dep;
    # pkg/sub/__init__.py holds an import, so it does.
    assert result == {"run": ["pkg/lazy.py", "pkg/sub/__init__.py", "pkg/sub/helper.py", "pkg/sub/sibling.py"]}
    stage["deps"] += ["pkg/sub", "pkg/lazy.py/"]
    assert uncovered({"stages": {"run": stage}}, fake) == {"run": []}


def test_docstring_only_rule(tmp_path):
    cases = {
        "": False,
        '"""Doc."""\n': False,
        "# a comment\n'''Doc.'''\n\n# another\n": False,
        '"""Doc."""\nfrom __future__ import annotations\n': True,
        '"""Doc."""\n__all__ = []\n': True,
        "import os\n": True,
        '"""Doc."""\n"""A second string is an expression statement, not a docstring."""\n': True,
        "42\n": True,
    }
    for i, (text, expected) in enumerate(cases.items()):
        _write(tmp_path, f"p{i}/__init__.py", text)
        assert executes_code(tmp_path / f"p{i}/__init__.py") is expected, repr(text)
    _write(tmp_path, "p/mod.py", "")
    assert executes_code(tmp_path / "p/mod.py")  # only __init__ files are ever exempt


def test_relative_import_resolution(tmp_path):
    _write(tmp_path, "a/__init__.py", "")
    _write(tmp_path, "a/b/__init__.py", "from .c import d\n")  # in an __init__, `.` is the package itself
    _write(tmp_path, "a/b/c.py", "from ... import nothing\n")  # escapes the project: ignored
    _write(tmp_path, "a/b/e.py", "from . import c\nfrom .. import f\n")
    _write(tmp_path, "a/f.py", "")
    rel = {f.relative_to(tmp_path).as_posix() for f in imports_of(tmp_path / "a/b/__init__.py", tmp_path)}
    assert rel == {"a/__init__.py", "a/b/__init__.py", "a/b/c.py"}
    rel = {f.relative_to(tmp_path).as_posix() for f in imports_of(tmp_path / "a/b/e.py", tmp_path)}
    assert rel == {"a/__init__.py", "a/b/__init__.py", "a/b/c.py", "a/f.py"}
    assert imports_of(tmp_path / "a/b/c.py", tmp_path) == set()


def test_stricter_than_shared_walker(tmp_path):
    """The shared tool skips `__init__.py` files under 200 bytes and relative imports; this checker does not."""
    _write(tmp_path, "lib/__init__.py", "from .core import setup\nsetup()\n")  # small, but runs code
    _write(tmp_path, "lib/core.py", "def setup():\n    pass\n")
    _write(tmp_path, "job.py", "import lib\n")
    spec = {"stages": {"job": {"cmd": "python -m job", "deps": ["job.py"]}}}
    assert uncovered(spec, tmp_path) == {"job": ["lib/__init__.py", "lib/core.py"]}


def test_stage_modules_rule_bites(tmp_path):
    _write(tmp_path, "tasks/__init__.py", '"""Stages."""\n')
    _write(tmp_path, "tasks/a.py", "def run():\n    from tasks import b\n")  # lazy, via the package
    _write(tmp_path, "tasks/b.py", "import tasks\n")  # the package itself is fine
    _write(tmp_path, "tasks/c.py", "from . import d\n")  # relative
    _write(tmp_path, "tasks/d.py", "")
    assert stage_cross_imports(tmp_path) == ["tasks/a.py imports tasks/b.py", "tasks/c.py imports tasks/d.py"]


# ------------------------------------------------------------------------------ federation/dvc.yaml

FEDERATION = "federation"  # the coordinator's workspace: its deps are relative to it (../humane, ../tasks/...)
FED = load_dvc(ROOT / FEDERATION)
FED_STAGES = [name for name, stage in FED["stages"].items() if stage_entry(stage) is not None]
# The federate stage also runs the Flower App's ServerApp (a process the SuperLink starts, from federated/).
FED_ALSO_RUNS = {"federate": ["federated/humane_fl/server_app.py"]}


def test_federation_dvc_yaml_has_python_module_stages():
    assert {"federate", "track", "gate", "register"} <= set(FED_STAGES)


@pytest.mark.parametrize("stage", FED_STAGES)
def test_federation_stage_depends_on_every_file_it_executes(stage):
    spec = FED["stages"][stage]
    deps = [posixpath.normpath(posixpath.join(FEDERATION, _dep_path(d))) for d in spec.get("deps") or []]
    missing = uncovered({"stages": {stage: {**spec, "deps": deps}}}, ROOT)[stage]
    for extra in FED_ALSO_RUNS.get(stage, []):
        files = {f.relative_to(ROOT).as_posix() for f in closure(ROOT / extra, ROOT)}
        assert "humane/modeling/federated.py" in files  # the walker followed the ServerApp's imports
        missing += sorted(f for f in files if executes_code(ROOT / f) and not is_covered(f, deps))
    assert not missing, "\n" + describe(f"{FEDERATION}/{stage}", sorted(set(missing)))
