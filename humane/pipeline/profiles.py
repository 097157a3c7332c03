"""Dataset profiles: everything about one dataset (data, privacy, policy, mitigation) in one file.

A profile (profiles/<name>.yaml) holds the `data:`, `privacy:`, `policy:` and `mitigation:` sections. `use`
copies them into params.yaml, replacing those sections whole, so nothing of the previous dataset's profile
survives the switch, and leaves every other section (and its comments) as it was. params.yaml stays the one
params file DVC reads: `dvc params diff` and `dvc exp run -S data.target=...` keep working.

    python -m humane.pipeline.profiles use profiles/german.yaml
"""

from __future__ import annotations

import argparse
import io as _io
import re
from pathlib import Path
from typing import Any

from humane.core import io
from humane.core.errors import ConfigError, cli
from humane.core.params import read_raw
from humane.fairness.params import MitigationParams, PolicyParams
from humane.pipeline.params import PROFILE_SECTIONS, parse_params

TOP_LEVEL = re.compile(r"^([A-Za-z_][\w.-]*)\s*:")


def read_profile(path: Path) -> dict[str, Any]:
    """A profile file's sections; anything but the profile sections (PROFILE_SECTIONS) is an error."""
    raw = read_raw(path)
    extra = sorted(set(raw) - set(PROFILE_SECTIONS))
    if extra:
        raise ConfigError(f"{path}: a profile holds only {list(PROFILE_SECTIONS)}; move {extra} to params.yaml")
    if "data" not in raw or "privacy" not in raw:
        raise ConfigError(f"{path}: a profile needs a data: and a privacy: section")
    return raw


def sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Split YAML text into its header and top-level sections, each with the comment lines right above it."""
    lines = text.splitlines()
    starts = []
    for i, line in enumerate(lines):
        match = TOP_LEVEL.match(line)
        if match:
            begin = i
            while begin > 0 and lines[begin - 1].startswith("#"):
                begin -= 1
            starts.append((begin, match.group(1)))
    if not starts:
        return text, []
    header = "\n".join(lines[: starts[0][0]]).strip("\n")
    out = []
    for n, (begin, key) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
        out.append((key, "\n".join(lines[begin:end]).strip("\n")))
    return header, out


def use(profile: Path, params_path: Path) -> str:
    """Replace params.yaml's profile sections with the profile's, text and comments; checked before written.

    The profile's sections take the place of params.yaml's first profile section, in the profile's order; a
    section the profile leaves out, or leaves partly out, is written whole with its defaults. Every other section
    keeps its text, comments and place.
    """
    from ruamel.yaml import YAML

    raw = read_profile(profile)
    header, current = sections(params_path.read_text())
    _, incoming = sections(profile.read_text())
    own = {key: text for key, text in incoming if key in PROFILE_SECTIONS}
    # DVC needs every key a stage lists in params.yaml: a section the profile leaves out (or leaves partly
    # out) is written whole, with its defaults, and says so.
    for name, model in (("policy", PolicyParams), ("mitigation", MitigationParams)):
        given = raw.get(name) or {}
        full = model.model_validate(given).model_dump()
        if set(given) != set(full):
            note = f"# {name}: not all set in {profile.name}; the defaults fill in the rest.\n"
            own[name] = note + _block(name, full)
    kept: list[str] = []
    placed = False
    for key, text in current:
        if key not in PROFILE_SECTIONS:
            kept.append(text)
            continue
        if not placed:  # the profile's sections, in its order, where params.yaml's first one stood
            kept.extend(own.values())
            placed = True
    if not placed:
        kept = list(own.values()) + kept
    text = "\n\n".join([header, *kept] if header else kept) + "\n"
    try:
        parse_params(YAML(typ="safe", pure=True).load(text))
    except ConfigError as err:
        raise ConfigError(f"{profile}: {err}") from None
    io.write_text(params_path, text)
    name = YAML(typ="safe", pure=True).load(profile.read_text())["data"].get("name")
    return f"params.yaml now uses the {name!r} profile from {profile}"


def _block(name: str, values: dict[str, Any]) -> str:
    """A top-level YAML section, flow style for short mappings and lists."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.default_flow_style = None
    yaml.width = 120
    buffer = _io.StringIO()
    yaml.dump({name: values}, buffer)
    return buffer.getvalue().rstrip("\n")


def main(argv: list[str] | None = None) -> str:
    """The command line: `use PROFILE [--params params.yaml]`."""
    parser = argparse.ArgumentParser(prog="python -m humane.pipeline.profiles", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = sub.add_parser("use", help="copy a profile's sections into params.yaml")
    chosen.add_argument("profile", type=Path)
    chosen.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    return use(args.profile, args.params)


if __name__ == "__main__":
    cli(lambda: print(main()))
