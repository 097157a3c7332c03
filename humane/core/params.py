"""Reading params.yaml, whatever its sections: YAML 1.2, dotted keys, the section base, path confinement.

The sections themselves live beside the concern they configure (`humane/<concern>/params.py`) and are composed
into the whole `Params`, with its one loader, in `humane.pipeline.params`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, ValidationError

from humane.core.errors import ConfigError


class Section(BaseModel):
    """A params.yaml section: frozen, unknown keys refused, strict types, finite numbers."""

    # strict: a YAML string is not a number and a bool is not an int (an int is still a valid float).
    # A number must be finite: `.inf` or `.nan` in params.yaml or an override is an error, not a setting.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


S = TypeVar("S", bound=BaseModel)

# A label value as YAML types it: 1, true and "yes" are three different labels, compared in the column's own type.
Label = StrictBool | StrictInt | str


# Params that name files the pipeline reads: data files inside data/raw/ (or data.root), others in the project.
PATH_KEYS = ("data.source", "data.test_source", "data.intended_use")


DATA_PATH_KEYS = ("data.source", "data.test_source")


def get_dotted(raw: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key, or KeyError."""
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def confine(value: str, key: str, root: Path, data_root: str | None = None) -> Path:
    """The file a path param names: a data file inside data/raw/ (or the declared data root), else in the project.

    `..` and symlinks are resolved first, so neither can lead outside. Built-in dataset names are not paths.
    """
    project = root.resolve()
    target = (project / value).resolve()
    # Data files live under data/raw/, which the load stage depends on: a file elsewhere would go stale unseen.
    allowed = [project / "data" / "raw"] if key in DATA_PATH_KEYS else [project]
    if data_root is not None and key in DATA_PATH_KEYS:
        declared = Path(data_root)
        if not declared.is_absolute():
            raise ConfigError(f"data.root: must be an absolute folder, got {data_root!r}")
        allowed.append(declared.resolve())
    if not any(target == place or target.is_relative_to(place) for place in allowed):
        inside = "data/raw/ of the project" if key in DATA_PATH_KEYS else "the project folder"
        where = " or data.root" if data_root is not None and key in DATA_PATH_KEYS else ""
        raise ConfigError(
            f"{key}: {value!r} resolves to {target}, outside {inside}{where}; keep data files under data/raw/ "
            "(DVC tracks that folder) or declare an absolute data.root for data read from elsewhere"
        )
    return target


def check_intended_use(value: str, root: Path) -> Path:
    """The model card's intended-use text: an existing Markdown file inside the project."""
    path = confine(value, "data.intended_use", root)
    if path.suffix.lower() != ".md" or not path.is_file():
        raise ConfigError(
            f"data.intended_use: {value!r} must be an existing Markdown (.md) file of the project "
            "(the model card's intended-use text)"
        )
    return path


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
    """One section of a params file checked by its own model: for code that needs that section only.

    Raises:
        ConfigError: naming the file and the first bad key of the section.

    """
    try:
        return model.model_validate(read_raw(path).get(key, {}))
    except ValidationError as err:
        item = err.errors()[0]
        where = ".".join([key, *(str(p) for p in item["loc"])])
        raise ConfigError(f"{path}: {where}: {str(item['msg']).lower()}") from None
