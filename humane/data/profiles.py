"""Dataset profiles: everything about one dataset (data, privacy, policy) in one file, copied into params.yaml.

A profile (profiles/<name>.yaml) holds the `data:`, `privacy:` and `policy:` sections. `use` replaces those
three sections of params.yaml whole, so nothing of the previous dataset's profile survives the switch, and
leaves every other section (and its comments) as it was. params.yaml stays the one params file DVC reads:
`dvc params diff` and `dvc exp run -S data.target=...` keep working.

    python -m humane.data.profiles use profiles/german.yaml
"""

from __future__ import annotations

import argparse
import io as _io
from pathlib import Path
from typing import Any

from humane.core import io
from humane.core.errors import ConfigError, cli
from humane.core.params import PROFILE_SECTIONS, parse_params, read_raw


def read_profile(path: Path) -> dict[str, Any]:
    """A profile file's sections; anything but data, privacy and policy is an error."""
    raw = read_raw(path)
    extra = sorted(set(raw) - set(PROFILE_SECTIONS))
    if extra:
        raise ConfigError(f"{path}: a profile holds only {list(PROFILE_SECTIONS)}; move {extra} to params.yaml")
    if "data" not in raw or "privacy" not in raw:
        raise ConfigError(f"{path}: a profile needs a data: and a privacy: section")
    return raw


def use(profile: Path, params_path: Path) -> str:
    """Replace params.yaml's profile sections with the profile's; the result is checked before it is written."""
    from ruamel.yaml import YAML

    sections = read_profile(profile)
    yaml = YAML()  # round trip: the other sections keep their comments and order
    yaml.preserve_quotes = True
    yaml.width = 120
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    document = yaml.load(params_path.read_text())
    incoming = yaml.load(profile.read_text())
    for name in PROFILE_SECTIONS:
        if name in incoming:
            document[name] = incoming[name]
        elif name in document:
            del document[name]
    buffer = _io.StringIO()
    yaml.dump(document, buffer)
    # A replaced section loses the blank line ruamel kept as its trailing comment: one blank line before each
    # top-level section (or its leading comment block), as params.yaml is laid out.
    lines: list[str] = []
    for line in buffer.getvalue().splitlines():
        top_level = bool(line) and not line[0].isspace()
        if top_level and lines and lines[-1].strip() and not lines[-1].startswith("#"):
            lines.append("")
        lines.append(line)
    text = "\n".join(lines) + "\n"
    try:
        parse_params(YAML(typ="safe", pure=True).load(text))
    except ConfigError as err:
        raise ConfigError(f"{profile}: {err}") from None
    io.write_text(params_path, text)
    return f"params.yaml now uses the {sections['data'].get('name')!r} profile from {profile}"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m humane.data.profiles", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = sub.add_parser("use", help="copy a profile's data, privacy and policy sections into params.yaml")
    chosen.add_argument("profile", type=Path)
    chosen.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    return use(args.profile, args.params)


if __name__ == "__main__":
    cli(lambda: print(main()))
