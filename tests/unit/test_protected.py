"""The sensitive features' copies and group labels (humane/core/protected.py): one definition, used everywhere."""

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from humane.core.errors import DataError
from humane.core.paths import LABEL_COLUMN, WEIGHT_COLUMN
from humane.core.protected import (
    INTERSECTION,
    MISSING_GROUP,
    group_labels,
    group_text,
    is_sensitive_copy,
    sensitive_copies,
    sensitive_group_labels,
    sensitive_name,
    sensitive_names,
)
from humane.modeling.features import split_xy

ROOT = Path(__file__).resolve().parents[2]
# The values a group may arrive as: int64 in training, 1.0 from a JSON client, "1" as text, nulls of each kind.
MIXED = pd.Series([1, 1.0, "1", np.nan, None, pd.NA, True, 1.5, "F"], dtype=object)


def test_a_group_is_its_text_whatever_type_carried_it():
    assert group_text(MIXED).tolist() == ["1", "1", "1", None, None, None, "True", "1.5", "F"]
    labels = group_labels(MIXED, "g").tolist()
    assert labels == ["1", "1", "1", MISSING_GROUP, MISSING_GROUP, MISSING_GROUP, "True", "1.5", "F"]
    with pytest.raises(DataError, match="'g' has the value 'missing'"):
        group_labels(pd.Series(["missing", "F"]), "g")


def test_copies_are_named_and_written_as_every_reader_expects():
    raw = pd.DataFrame({"sex": ["F", None, "M"], "race": [1.0, 2.0, np.nan], "age": [30, 40, 50]}, index=[7, 8, 9])
    copies = sensitive_copies(raw, ["sex", "race"])
    assert list(copies) == sensitive_names(["sex", "race"]) == ["__sensitive__sex", "__sensitive__race"]
    assert copies.index.tolist() == [7, 8, 9] and all(d == np.dtype(object) for d in copies.dtypes)
    assert copies.to_numpy().tolist() == [["F", "1"], [None, "2"], ["M", None]]  # a null stays None until labelled
    groups = sensitive_group_labels(copies, ["sex", "race"])
    assert list(groups) == ["sex", "race", f"sex{INTERSECTION}race"]
    assert groups["sex x race"].tolist() == ["F x 1", "missing x 2", "M x missing"]
    assert sensitive_group_labels(copies, ["sex"]).keys() == {"sex"}  # one feature: no intersection


def test_a_copy_is_never_a_model_input():
    frame = pd.DataFrame({"age": [0.5, 1.0], LABEL_COLUMN: [0, 1], WEIGHT_COLUMN: [1.0, 2.0]})
    frame[sensitive_name("sex")] = ["F", "M"]
    _, _, features = split_xy(frame)
    assert features == ["age"]
    assert is_sensitive_copy(sensitive_name("sex")) and not is_sensitive_copy("sex")


def test_group_labels_have_one_definition():
    """No other module defines the group text, labels or copies: a second home could label a group differently."""
    owned = {"group_text", "group_labels", "sensitive_group_labels", "sensitive_copies", "sensitive_name"}
    homes = {}
    for path in [*(ROOT / "humane").rglob("*.py"), *(ROOT / "tasks").glob("*.py"), *(ROOT / "flows").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in owned:
                homes.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    assert homes == {name: ["humane/core/protected.py"] for name in owned}


def _spells_the_prefix(node: ast.AST) -> bool:
    if isinstance(node, ast.Name | ast.alias):
        return (node.id if isinstance(node, ast.Name) else node.name) == "SENSITIVE_PREFIX"
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("__sensitive__")


def test_only_the_protected_module_spells_a_copys_name():
    """Code reads the prefix through `sensitive_name` / `is_sensitive_copy`, never spells it out again."""
    spelled = set()
    for path in [*(ROOT / "humane").rglob("*.py"), *(ROOT / "tasks").glob("*.py"), *(ROOT / "flows").glob("*.py")]:
        name = path.relative_to(ROOT).as_posix()
        if name not in ("humane/core/paths.py", "humane/core/protected.py"):
            spelled |= {name for node in ast.walk(ast.parse(path.read_text())) if _spells_the_prefix(node)}
    assert spelled == set()
