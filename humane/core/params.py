"""Reading params.yaml, whatever its sections: YAML 1.2, dotted keys, the section base, error wording.

The sections themselves live beside the concern they configure (`humane/<concern>/params.py`) and are composed
into the whole `Params`, with its one loader, in `humane.pipeline.params`.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, create_model

from humane.core.errors import ConfigError


class Section(BaseModel):
    """A params.yaml section: frozen, unknown keys refused, strict types, finite numbers."""

    # strict: a YAML string is not a number and a bool is not an int (an int is still a valid float).
    # A number must be finite: `.inf` or `.nan` in params.yaml or an override is an error, not a setting.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


S = TypeVar("S", bound=BaseModel)

# A label value as YAML types it: 1, true and "yes" are three different labels, compared in the column's own type.
Label = StrictBool | StrictInt | str


def get_dotted(raw: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key, or KeyError."""
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def read_raw(path: Path) -> dict[str, Any]:
    """Read params.yaml as a plain mapping."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        # YAML 1.2, as DVC reads and writes params.yaml (PyYAML's YAML 1.1 reads 1e-05 as text).
        raw = YAML(typ="safe", pure=True).load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the project root)") from None
    except YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys, as MLflow and `dvc exp run -S` name them."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def read_section(path: Path, key: str, model: type[S]) -> S:
    """One section of a params file checked by its own model, for code that needs that section only.

    Only that section is checked: the rest of the file is the whole `Params`' to check (`humane.pipeline.params`).
    The section is read as the whole file's loader reads it (missing, empty, mistyped), and its errors are worded
    the same way.

    Raises:
        ConfigError: naming the file and each bad key of the section.

    """
    wrapper = create_model(
        f"{model.__name__}Of{key.title()}",
        __config__=ConfigDict(extra="ignore"),
        section=(model, Field(alias=key)),
    )
    try:
        return wrapper.model_validate(read_raw(path)).section
    except ValidationError as err:
        raise ConfigError(f"{path}: {validation_error_text(err, wrapper)}") from None


def section_of(annotation: Any) -> type[BaseModel] | None:
    """The section model a field holds (also through `X | None`, as `federated:` is), else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _sections(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every nested section of `root` by its dotted key ("" for `root` itself), as params.yaml spells it."""
    out: dict[str, type[BaseModel]] = {"": root}

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = f"{prefix}{field.alias or name}"
            section = section_of(field.annotation)
            if section is not None:
                out[key] = section
                walk(section, f"{key}.")

    walk(root, "")
    return out


def validation_error_text(err: ValidationError, root: type[BaseModel], prefix: str = "") -> str:
    """One line per bad key, named by its dotted path as params.yaml spells it (`prefix`: the section's key + ".").

    Args:
        err: What pydantic refused.
        root: The model that was validated: the whole `Params`, or one section (`read_section`).
        prefix: Where `root` sits in params.yaml ("" for the whole file).

    """
    sections = _sections(root)
    lines: dict[str, str] = {}
    for item in err.errors():
        loc = [str(p) for p in item["loc"]]
        # Union members (str | None) add their type name to the location; the key is what the user wrote.
        loc = [p for p in loc if p not in ("str", "float", "int", "bool", "list[str]", "list[float]", "none")]
        key = prefix + ".".join(loc)
        if not loc:  # a rule across sections (a model validator): its message names the keys
            message = str(item["msg"]).removeprefix("Value error, ")
        elif item["type"] == "extra_forbidden":
            parent = ".".join(loc[:-1])
            model = sections.get(parent)
            allowed = sorted(f.alias or n for n, f in model.model_fields.items()) if model else []
            where = prefix + parent if parent or prefix else "params.yaml"
            message = f"{key}: unknown key; allowed in {where.removesuffix('.')}: {allowed}"
        elif item["type"] == "missing":
            message = f"{key}: required key is missing"
        else:
            message = f"{key}: {item['msg'].lower()}, got {item['input']!r}"
        lines.setdefault(key, message)
    return "; ".join(lines.values())
