"""MkDocs hooks: the site's generated parts, written from the code and the bench JSON at build time, never by hand.

A page asks for a part with a marker on a line of its own, `<!-- generated: NAME -->` or
`<!-- generated: NAME ARGUMENT -->`; `on_page_markdown` replaces it. The parts (GENERATORS):

    params        every params.yaml key from the pydantic models composed in humane/pipeline/params.py, with the value
                  params.yaml ships
    make          every Makefile target, with its `## ` comment
    entry-points  every `python -m ...` entry point: its module's summary and its --help (argparse)
    errors        the exit code of each error class in humane/core/errors.py
    modules DIR   each module of DIR (e.g. humane/core) with the first line of its docstring
    figures       one table per bench/results/*.json, naming its file and the bench command that wrote it
    policy FILE   a profile's policy section (e.g. profiles/adult.yaml): one row per metric limit

An unknown part, or a part that cannot be produced, fails the build (MkDocs' PluginError), never a page with a
hole in it. The functions are importable without MkDocs running (tests/unit/test_docs_site.py calls them).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import io
import json
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!-- generated: ([a-z-]+)(?: ([\w./-]+))? -->$", re.M)
# Folders whose `if __name__ == "__main__"` modules are entry points (`python -m folder.module`).
ENTRY_FOLDERS = ("tasks", "flows", "humane", "team")


def on_config(config: Any) -> Any:
    """Let the generators import the project's packages (humane, tasks, flows, team) from the checkout."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace each `<!-- generated: NAME [ARG] -->` marker of a page with its generated Markdown."""
    return render_markers(markdown, page.file.src_path)


def render_markers(markdown: str, where: str = "a page") -> str:
    """`markdown` with every generated-part marker replaced; an unknown part or a failing generator is an error."""

    def one(match: re.Match[str]) -> str:
        name, arg = match.group(1), match.group(2)
        if name not in GENERATORS:
            raise _error(f"{where}: unknown generated part {name!r}; known: {sorted(GENERATORS)}")
        return GENERATORS[name](arg) if arg else GENERATORS[name]()

    return MARKER.sub(one, markdown)


def _error(message: str) -> Exception:
    try:
        from mkdocs.exceptions import PluginError
    except ImportError:  # imported by a test without MkDocs: a plain error says the same
        return RuntimeError(message)
    return PluginError(message)


def cell(text: object) -> str:
    """Text safe inside a Markdown table cell: newlines folded; outside code spans, `|`, `<`, `*`, `_` escaped.

    Inside a code span nothing is escaped (it would show): the tables extension does not split on a `|` there.
    """
    parts = re.split(r"(`[^`]*`)", " ".join(str(text).split()))
    return "".join(part if part.startswith("`") else _escape(part) for part in parts)


def _escape(text: str) -> str:
    for char in ("\\", "|", "*", "_"):
        text = text.replace(char, "\\" + char)
    return text.replace("<", "&lt;")


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; the cells are already escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def docstring_summary(path: Path) -> str:
    """The first paragraph of a module's docstring, on one line ("" when it has none)."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split())


# --- params.yaml ---------------------------------------------------------------------------------------------


def type_name(annotation: Any) -> str:
    """A params type as a reader says it: `list of str`, `mapping str → float`, `one of the values`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return "choice"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"mapping {type_name(args[0])} → {type_name(args[1])}"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation)).replace("Any", "any")


def _literals(annotation: Any) -> list[Any]:
    """Every value a Literal inside the annotation allows (through unions, lists and mappings)."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [v for a in typing.get_args(annotation) for v in _literals(a)]


BOUNDS = {"ge": "≥ {}", "gt": "> {}", "le": "≤ {}", "lt": "< {}", "min_length": "at least {} item(s)"}


def allowed(field: Any) -> str:
    """A field's allowed values and bounds, from its Literal choices and its pydantic constraints."""
    parts = [" \\| ".join(f"`{v}`" for v in _literals(field.annotation))]
    for meta in field.metadata:
        for attr, form in BOUNDS.items():
            if getattr(meta, attr, None) is not None:
                parts.append(form.format(getattr(meta, attr)))
        if attr_max := getattr(meta, "max_length", None):
            parts.append(f"at most {attr_max} characters")
        if pattern := getattr(meta, "pattern", None):
            parts.append(f"matches `{pattern}`")
    return ", ".join(p for p in parts if p)


def default_text(field: Any) -> str:
    """A field's pydantic default, used when params.yaml leaves the key out (JSON-like: null, true), or "required"."""
    if field.is_required():
        return "required"
    return f"`{json.dumps(field.default, ensure_ascii=False, default=str)}`"


# A shipped value longer than this (a mapping or list) is summarised: the table cell would not read.
LONGEST_SHIPPED = 120
ABSENT = object()


@functools.cache
def shipped_params() -> dict[str, Any]:
    """The params.yaml the project ships, as loaded (yaml.safe_load)."""
    import yaml

    return yaml.safe_load((ROOT / "params.yaml").read_text())


def shipped_text(key: str) -> str:
    """The value params.yaml ships for a dotted key (JSON-like), or "—" where params.yaml leaves it out."""
    value: Any = shipped_params()
    for part in key.split("."):
        value = value.get(part, ABSENT) if isinstance(value, dict) else ABSENT
    if value is ABSENT:
        return "—"
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > LONGEST_SHIPPED and isinstance(value, (dict, list)):
        return f"{len(value)} entries (see `params.yaml`)"
    return f"`{text}`"


def param_rows(model: type | None = None, prefix: str = "") -> Iterator[tuple[str, Any, type | None]]:
    """Every key of params.yaml, depth first: (dotted key, pydantic field, the section model it holds or None)."""
    from humane.core.params import section_of
    from humane.pipeline.params import Params

    for name, field in (model or Params).model_fields.items():
        key = f"{prefix}{field.alias or name}"
        section = section_of(field.annotation)
        yield key, field, section
        if section is not None:
            yield from param_rows(section, f"{key}.")


def _overridable(key: str) -> bool:
    from humane.pipeline.params import OVERRIDABLE

    return any(key == k or key.startswith(f"{k}.") for k in OVERRIDABLE)


def section_doc(key: str, section: type) -> str:
    """A section's heading (one level deeper per dot) and its docstring."""
    from humane.pipeline.params import PROFILE_SECTIONS

    doc = (section.__doc__ or "").strip()
    if key.split(".")[0] in PROFILE_SECTIONS and "profile" not in doc:
        doc += " Part of the dataset profile (profiles/*.yaml)."
    return f"{'#' * (2 + key.count('.'))} `{key}`\n\n{doc}\n"


def param_row(key: str, field: Any) -> list[str]:
    """One setting's table row: key, type, shipped value, default when absent, allowed, flow override, description."""
    return [
        f"`{key}`",
        cell(type_name(field.annotation)),
        cell(shipped_text(key)),
        cell(default_text(field)),
        allowed(field),
        "yes" if _overridable(key) else "",
        cell(field.description or ""),
    ]


def params_reference() -> str:
    """One heading per section (its docstring), one row per setting: key, type, shipped, default, allowed, meaning."""
    sections: dict[str, tuple[str, list[list[str]]]] = {}
    for key, field, section in param_rows():
        if section is not None:
            sections[key] = (section_doc(key, section), [])
        else:
            sections[key.rpartition(".")[0]][1].append(param_row(key, field))
    header = ["Key", "Type", "params.yaml ships", "Default when absent", "Allowed", "Flow override", "Description"]
    return "\n".join(doc + ("\n" + table(header, rows) + "\n" if rows else "") for doc, rows in sections.values())


# What each rule of a policy section means for its metric (PolicyParams in humane/fairness/params.py).
POLICY_RULES = {
    "min": "at least",
    "max": "at most",
    "max_drop": "falls by at most (against the champion)",
    "max_increase": "rises by at most (against the champion)",
}


def policy_reference(profile: str) -> str:
    """A profile's `policy:` section as a table, one row per limit: metric, rule, limit (read from the file)."""
    import yaml

    path = ROOT / profile
    if not path.is_file():
        raise _error(f"policy: {profile} does not exist")
    policy = (yaml.safe_load(path.read_text()) or {}).get("policy")
    if not policy:
        raise _error(f"policy: {profile} has no policy section")
    unknown = sorted(set(policy) - set(POLICY_RULES))
    if unknown:
        raise _error(f"policy: {profile}: rules {unknown} have no wording in POLICY_RULES")
    rows = [
        [f"`{metric}`", POLICY_RULES[rule], f"`{limit}`"]
        for rule in POLICY_RULES
        for metric, limit in (policy.get(rule) or {}).items()
    ]
    return table(["Metric", "Rule", "Limit"], rows)


# --- commands --------------------------------------------------------------------------------------------------

MAKE_TARGET = re.compile(r"^([a-z][\w-]*):[^=#]*?(?:##\s*(.*))?$")


def make_targets() -> dict[str, str]:
    """Every Makefile target (the .PHONY ones and those with a `## ` comment) → its comment ("" without one)."""
    text = (ROOT / "Makefile").read_text()
    phony = {t for line in re.findall(r"^\.PHONY:(.*)$", text, re.M) for t in line.split()}
    targets: dict[str, str] = {}
    for line in text.splitlines():
        match = MAKE_TARGET.match(line)
        if match and (match.group(1) in phony or match.group(2)):
            targets[match.group(1)] = (match.group(2) or "").strip()
    return targets


def make_reference() -> str:
    """The Makefile's targets as a table: `make TARGET` and what its `## ` comment says."""
    rows = [[f"`make {t}`", cell(doc) or "(no description in the Makefile)"] for t, doc in make_targets().items()]
    return table(["Command", "What it does"], rows)


def entry_points() -> dict[str, Path]:
    """Every module run as `python -m X` (it has an `if __name__ == "__main__":` block) → its file."""
    found: dict[str, Path] = {}
    for folder in ENTRY_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if 'if __name__ == "__main__":' in path.read_text():
                found[".".join(path.relative_to(ROOT).with_suffix("").parts)] = path
    return found


def stage_commands() -> dict[str, list[str]]:
    """`python -m tasks.X` → the dvc.yaml stages (root and federation/) whose command it is."""
    import yaml

    out: dict[str, list[str]] = {}
    for dvc_file in (ROOT / "dvc.yaml", ROOT / "federation" / "dvc.yaml"):
        for stage, spec in yaml.safe_load(dvc_file.read_text())["stages"].items():
            where = "" if dvc_file.parent == ROOT else f" ({dvc_file.parent.name}/)"
            out.setdefault(spec["cmd"].strip(), []).append(f"`{stage}`{where}")
    return out


def help_text(module: str, argv: tuple[str, ...] = ("--help",)) -> str:
    """A module's argparse help, captured in-process (`main([..., "--help"])`), 100 columns wide."""
    target = importlib.import_module(module)
    out = io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            target.main(list(argv))
    finally:
        os.environ.pop("COLUMNS") if old is None else os.environ.__setitem__("COLUMNS", old)
    if "usage:" not in out.getvalue():
        raise _error(f"{module}: `main({list(argv)})` printed no argparse usage")
    return out.getvalue().rstrip()


def full_help(module: str) -> str:
    """A module's --help, then each subcommand's (`{a,b} ...` in the usage line) --help."""
    text = help_text(module)
    subcommands = re.search(r"\{([\w,-]+)\} \.\.\.", text.split("\n\n")[0])
    for sub in subcommands.group(1).split(",") if subcommands else []:
        text += "\n\n" + help_text(module, (sub, "--help"))
    return text


def main_summary(path: Path) -> str:
    """The first line of a module's `main` docstring (the usage line of a hand-parsed command), or ""."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            return (ast.get_docstring(node) or "").split("\n")[0]
    return ""


def entry_point_section(module: str, path: Path, stages: dict[str, list[str]]) -> str:
    """One entry point: heading, its module's summary, then its --help, its stage, or its usage line."""
    source, command = path.read_text(), f"python -m {module}"
    parts = [f"#### `{command}`", "", docstring_summary(path), ""]
    if "ArgumentParser" in source:
        parts += ["```text", full_help(module), "```"]
    elif "stage_main(" in source:
        names = ", ".join(stages.get(command, ["(none)"]))
        parts.append(f"A pipeline stage: no arguments; reads `./params.yaml`. dvc.yaml stage {names}.")
    else:
        parts.append(main_summary(path) or "No arguments.")
    return "\n".join(parts) + "\n"


def entry_points_reference() -> str:
    """Every `python -m` entry point, grouped by folder, each with its summary and its --help or usage."""
    stages = stage_commands()
    out: list[str] = []
    group = ""
    for module, path in entry_points().items():
        if module.split(".")[0] != group:
            group = module.split(".")[0]
            out.append(f"### `{group}`\n")
        out.append(entry_point_section(module, path, stages))
    return "\n".join(out)


# --- exit codes ----------------------------------------------------------------------------------------------


def error_codes() -> dict[str, int]:
    """Each error class of humane/core/errors.py → its exit code."""
    from humane.core import errors

    return {
        name: obj.exit_code
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, errors.HumaneError)
    }


def errors_reference() -> str:
    """The error classes of humane/core/errors.py with their exit codes and docstrings, read from the code."""
    from humane.core import errors

    rows = [
        [str(code), f"`{name}`", cell((getattr(errors, name).__doc__ or "").strip().split("\n")[0])]
        for name, code in sorted(error_codes().items(), key=lambda item: (item[1], item[0]))
    ]
    return table(["Exit", "Error class (humane/core/errors.py)", "Meaning"], rows)


# --- code layout ---------------------------------------------------------------------------------------------


def modules_reference(folder: str) -> str:
    """Each module of `folder` (a package, or a folder of scripts) with the first line of its docstring."""
    base = ROOT / folder
    if not base.is_dir():
        raise _error(f"layout: {folder}/ does not exist")
    rows = []
    for path in sorted(p for p in base.glob("*.py") if p.name != "__init__.py"):
        rows.append([f"`{path.name}`", cell(docstring_summary(path)) or "(no module docstring)"])
    package = base / "__init__.py"
    summary = docstring_summary(package) + "\n\n" if package.is_file() and docstring_summary(package) else ""
    return summary + table(["Module", "Purpose (its docstring)"], rows)


# --- measured figures ----------------------------------------------------------------------------------------

# The bench command that wrote each results file (by file stem; a file may name its own in setting.command).
COMMANDS = {
    "quality": "python bench/quality.py --project DIR --out bench/results/quality.json",
    "mitigation_front_tabm": (
        'python bench/mitigation.py --model tabm --units pipeline LR "LR DP" "LR EO" HGB "HGB EO" '
        "--out bench/results/mitigation_front_tabm.json"
    ),
    "privacy_table": "python bench/privacy.py table --out bench/results/privacy_table.json",
    "privacy_chosen": (
        "python bench/privacy.py sweep --project DIR --out ROUND.json (one per grid round), then "
        "python bench/privacy.py choose --rounds ROUND.json ... --out bench/results/privacy_chosen.json"
    ),
    "privacy_speed": "python bench/privacy.py speed --project DIR --batch {batch_size} --out bench/results/{stem}.json",
}


def num(value: Any, digits: int = 4) -> str:
    """A measured number as the figures print it: `digits` decimals, "—" for a missing one."""
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else cell(value)


def pairs(mapping: dict[str, Any]) -> str:
    """A small mapping as prose: `accuracy 0.872, roc_auc 0.928`."""
    return ", ".join(f"`{k}` {v}" for k, v in mapping.items())


def with_ci(value: float, interval: list[float] | None) -> str:
    """A figure with its 95% bootstrap interval, `0.8503 [0.8445, 0.8562]`."""
    return num(value) + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")


def quality_tables(data: dict[str, Any]) -> str:
    """bench/quality.py: every model's validation and test accuracy / ROC AUC and its fit time."""
    rows = [
        [cell(r["model"]), num(r.get("parameters")), f"{r.get('best_epoch', '—')} of {r.get('epochs_run', '—')}"]
        + [num(r[k]) for k in ("val_accuracy", "val_roc_auc", "test_accuracy", "test_roc_auc")]
        + [num(r["train_seconds"], 1)]
        for r in data["results"]
    ]
    header = ["model", "parameters", "best epoch", "val accuracy", "val ROC AUC", "test accuracy", "test ROC AUC"]
    rows_note = ", ".join(f"{k} {v:,}" for k, v in data["rows"].items())
    return f"Rows: {rows_note}; aimed for: {pairs(data['target'])}.\n\n" + table([*header, "fit s"], rows)


def front_tables(data: dict[str, Any]) -> str:
    """bench/mitigation.py: every candidate and peer on the test split, then the goals' verdicts."""
    rows = [
        [cell(r["name"]), cell(r["family"]), with_ci(r["accuracy"], r["ci"].get("accuracy"))]
        + [with_ci(r[g], r["ci"].get(g)) for g in ("dp", "eo")]
        + ["yes" if r["front_dp"] else "", "yes" if r["front_eo"] else "", num(r["seconds"], 1)]
        for r in data["torch"] + data["peers"]
    ]
    header = ["candidate", "family", "accuracy", "DP difference", "EO difference", "DP front", "EO front", "fit s"]
    verdicts = [
        [
            f"`{gap}`",
            cell(v["goal"]),
            "yes" if v["goal_met"] else "no",
            cell((v["best_within_gap"] or {}).get("name")),
            cell(", ".join(v["peers_not_dominated"])),
        ]
        for gap, v in data["verdicts"].items()
    ]
    verdict_header = ["gap", "goal", "met", "best within the gap", "peers not dominated"]
    return table(header, rows) + "\n\n" + table(verdict_header, verdicts)


def dp_table(data: dict[str, Any]) -> str:
    """bench/privacy.py table: each model's ε, accuracy, ROC AUC and membership attack, then k-anonymity."""
    keys = ("epsilon", "noise", "accuracy", "roc_auc", "mia_auc", "mia_tpr", "gap", "epochs", "s_per_epoch")
    rows = [[cell(r["name"])] + [num(r.get(k), 3) for k in keys] for r in data["rows"]]
    anonymity = data["k_anonymity"]
    k_rows = [
        [w] + [num(anonymity[w][k], 4) for k in ("k_min", "share_below_k", "n_classes", "l_min")]
        for w in ("before", "after")
    ]
    k_head = f"k-anonymity (k = {anonymity['k']}) over {cell(', '.join(anonymity['quasi_identifiers']))}:"
    return (
        table(["model", "ε", "noise", "accuracy", "ROC AUC", "MIA AUC", "MIA TPR", "gap", "epochs", "s/epoch"], rows)
        + f"\n\n{k_head}\n\n"
        + table(["policy", "smallest class", "share below k", "classes", "smallest l"], k_rows)
    )


def dp_speed(data: dict[str, Any]) -> str:
    """bench/privacy.py speed: the median seconds per epoch of each trainer at one batch, and the ratios."""
    medians = data["median_seconds_per_epoch"]
    base = medians["non_private"]
    rows = [[f"`{name}`", num(s, 3), f"{s / base:.2f}x"] for name, s in medians.items()]
    note = f"Batch {data['batch_size']}, {data['repeats']} alternated runs of {data['epochs_per_run']} epochs, medians."
    return note + "\n\n" + table(["trainer", "s per epoch (median)", "over non-private"], rows)


def dp_chosen(data: dict[str, Any]) -> str:
    """bench/privacy.py choose: per ε, the setting chosen on validation and its test figures."""
    keys = ("batch_size", "lr", "max_epochs", "max_grad_norm", "noise_multiplier", "epsilon_spent")
    rows = [
        [num(b["target_epsilon"], 1)]
        + [num(b["chosen"][k], 3) for k in keys]
        + [num(b["chosen"][k]) for k in ("val_accuracy", "test_accuracy", "test_roc_auc")]
        + [str(len(b["tried"]))]
        for b in data["budgets"]
    ]
    header = ["target ε", "batch", "lr", "epochs", "clipping", "noise", "ε spent", "val accuracy"]
    return table([*header, "test accuracy", "test ROC AUC", "settings tried"], rows)


def serving_tables(data: dict[str, Any]) -> str:
    """bench/serving.py: latency of each serving path against a bare forward pass, and the batch's phases."""
    rows = [
        [size, f"`{path}`", num(v["p50_ms"], 1), num(v["p99_ms"], 1), f"{v['x_forward_p50']:.1f}x", str(v["repeats"])]
        for size, key in (("1 row", "single_row"), ("1,000 rows", "batch_1000"))
        for path, v in data[key].items()
    ]
    phases = [[cell(k.strip()), num(v, 2)] for k, v in data["phases_batch_1000_ms"].items()]
    return (
        table(["request", "path", "p50 ms", "p99 ms", "p50 over forward", "repeats"], rows)
        + f"\n\nTarget: {pairs(data['target'])}.\n\n"
        + table(["phase of a 1,000-row batch", "ms"], phases)
    )


def generic_table(data: dict[str, Any]) -> str:
    """Any other results file: its scalar figures, flattened to dotted keys."""
    from humane.core.params import flatten

    return table(["figure", "value"], [[f"`{k}`", num(v)] for k, v in flatten(data).items()])


def figure_kind(stem: str, data: dict[str, Any]) -> Callable[[dict[str, Any]], str]:
    """The renderer of one results file, by what wrote it."""
    kinds = {"quality": quality_tables, "dp_table": dp_table, "dp_speed": dp_speed, "dp_sweep": dp_chosen}
    if data.get("bench") in kinds:
        return kinds[data["bench"]]
    if stem.startswith("mitigation_front"):
        return front_tables
    return serving_tables if "single_row" in data else generic_table


def figure_command(stem: str, data: dict[str, Any]) -> str:
    """The bench command that wrote a results file: its own record, else COMMANDS; "" when unknown."""
    if command := data.get("setting", {}).get("command"):
        return command
    template = COMMANDS.get(stem) or COMMANDS.get(stem.rsplit("_", 1)[0], "")
    return template.format(stem=stem, **{k: v for k, v in data.items() if not isinstance(v, (dict, list))})


def render_figure(path: Path) -> str:
    """One results file's section: its name, the command that wrote it, its table(s)."""
    data = json.loads(path.read_text())
    command = figure_command(path.stem, data)
    if not command:
        raise _error(f"figures: {path.relative_to(ROOT)} names no command and COMMANDS has none for it")
    rel = path.relative_to(ROOT)
    head = f"## `{rel}`\n\nWritten by `{command}`.\n\n"
    return head + figure_kind(path.stem, data)(data) + "\n"


def figures_reference() -> str:
    """One section per bench/results/*.json: its file, the command that wrote it, and its table(s)."""
    return "\n".join(render_figure(path) for path in sorted((ROOT / "bench" / "results").glob("*.json")))


GENERATORS: dict[str, Callable[..., str]] = {
    "params": params_reference,
    "make": make_reference,
    "entry-points": entry_points_reference,
    "errors": errors_reference,
    "modules": modules_reference,
    "figures": figures_reference,
    "policy": policy_reference,
}
