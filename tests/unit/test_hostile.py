"""Hostile training files, generated (Hypothesis), through the real load and validate stages (real GX).

Every generated file either loads and validates, or ends the stage through the entry points' own `cli()` with exit
code 2 and one line on stderr naming the file or the setting to change: never a traceback, never a half-written
data/interim. Run with `--hypothesis-show-statistics` to see how many cases each property tried.
"""

from __future__ import annotations

import contextlib
import io
import string
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, assume, event, given, settings
from hypothesis import strategies as st

from humane.core.context import RunContext
from humane.core.errors import INPUT_EXIT, cli
from humane.core.paths import Paths
from humane.data.params import ReadParams
from humane.pipeline.params import Params, load_params
from tasks import load as load_stage
from tasks import validate as validate_stage

ROOT = Path(__file__).resolve().parents[2]
BASE = load_params(ROOT / "params.yaml")
SOURCE = "data/raw/hostile"
# Deterministic and bounded: the whole battery (this file and tests/integration/test_hostile_serving.py) is sized to
# about a minute of CI time; `deadline=None`: GX's first validation in a process is slow.
BATTERY = settings(
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---- values: unicode, control characters, quotes and delimiters, NaN/inf, huge integers, very long fields ----

_CHARS = st.characters(codec="utf-8", exclude_categories=["Cs"])  # every code point UTF-8 can write
_EDGY = st.sampled_from(
    ["", " ", "\x00", "\r\n", '"', "'", ",", ";", "\t", "|", "\\", "NaN", "null", "?", "é", "\u202e"]
)
_TEXT = st.one_of(st.text(_CHARS, max_size=12), _EDGY, st.text(string.ascii_letters, min_size=1, max_size=6))
_LONG = st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "🙂", "a b "]), st.integers(5_000, 200_000))
_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
_INT = st.integers(-(2**70), 2**70)  # beyond int64 too


VALUES: dict[str, st.SearchStrategy[Any]] = {
    "int": st.integers(-5, 5),
    "bigint": st.integers(-(2**63), 2**63 - 1),
    "float": _FLOAT,
    "text": _TEXT,
    "category": st.sampled_from(["a", "b", "c"]),
    "long": _LONG,
    "bool": st.booleans(),
    "date": st.dates().map(str),
    "mixed": st.one_of(st.integers(-3, 3), _FLOAT, _TEXT, st.booleans(), st.none()),
    "none": st.none(),
}
_NAME = st.one_of(st.text(_CHARS, max_size=10), _EDGY, st.text(string.ascii_lowercase, min_size=1, max_size=8))


@st.composite
def frames(draw: st.DrawFn, max_rows: int = 40, max_columns: int = 5) -> pd.DataFrame:
    """A training frame: a few columns of random kinds and names, a label `y` and a sensitive column `s`.

    The label and the sensitive column are usually well-formed (so that the case reaches the later checks) and
    sometimes as hostile as the rest.
    """
    rows = _sometimes(draw, draw(st.integers(8, max_rows)), st.integers(1, 7))
    kinds = draw(
        st.lists(st.sampled_from(sorted(VALUES)), min_size=_sometimes(draw, 1, st.just(0)), max_size=max_columns)
    )
    names = draw(st.lists(_NAME, min_size=len(kinds), max_size=len(kinds)))
    columns = {}
    for name, kind in zip(names, kinds, strict=True):
        values = _sometimes(draw, VALUES[kind], st.just(_INT)) if kind == "bigint" else VALUES[kind]
        columns[name] = draw(st.lists(values, min_size=rows, max_size=rows))
    label = _sometimes(draw, "binary", st.sampled_from(["int", "mixed", "text", "none"]))
    label_values = st.sampled_from([0, 1]) if label == "binary" else VALUES[label]
    group = _sometimes(draw, st.sampled_from(["m", "f"]), st.just(VALUES["mixed"]))
    columns["s"] = draw(st.lists(group, min_size=rows, max_size=rows))
    columns["y"] = draw(st.lists(label_values, min_size=rows, max_size=rows))
    return pd.DataFrame(columns)


def _sometimes(draw: st.DrawFn, usual: Any, other: st.SearchStrategy[Any], odds: int = 5) -> Any:
    """`usual`, or one time in `odds` a value drawn from `other`: most cases should get past the first check."""
    return draw(other) if draw(st.integers(1, odds)) == 1 else usual


@st.composite
def settings_for(draw: st.DrawFn, frame: pd.DataFrame) -> dict[str, Any]:
    """How the file is written and what params.yaml says about it (they disagree on purpose, sometimes)."""
    fmt = draw(st.sampled_from(["csv", "csv", "csv", "tsv", "parquet", "csv.gz"]))
    sep = "\t" if fmt == "tsv" else _sometimes(draw, ",", st.sampled_from([";", "\t", "|"]))
    encoding = _sometimes(draw, "utf-8", st.sampled_from(["utf-16", "latin-1", "cp1252"]))
    columns = [str(c) for c in frame.columns if c not in ("y", "s")]
    return {
        "format": fmt,
        "sep": sep,
        "read_sep": _sometimes(draw, None if sep in (",", "\t") else sep, st.sampled_from([",", ";", "|"])),
        "encoding": encoding,
        "read_encoding": _sometimes(draw, encoding, st.sampled_from(["utf-8", "latin-1", "utf-16"])),
        "decimal": _sometimes(draw, ".", st.just(",")),
        "numeric": _sometimes(draw, None, st.sampled_from(columns or [None])),
        "date": _sometimes(draw, None, st.sampled_from(columns or [None])),
        "identifiers": draw(st.booleans()),
        "missing_labels": draw(st.sampled_from(["error", "drop"])),
    }


def _write(frame: pd.DataFrame, how: dict[str, Any], root: Path) -> str:
    """Write the frame as the case says; the file's name as params.yaml gives it."""
    name = f"{SOURCE}.{how['format']}"
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if how["format"] == "parquet":
        try:
            frame.to_parquet(path, index=False)
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            assume(False)  # Arrow cannot hold this frame (mixed types in a column): no such Parquet file exists
    else:
        sep = "\t" if how["format"] == "tsv" else how["sep"]
        frame.to_csv(path, sep=sep, index=False, encoding=how["encoding"], errors="replace", decimal=how["decimal"])
    return name


def _params(name: str, how: dict[str, Any]) -> Params:
    """Params for the generated file: label y (positive 1), sensitive s, no privacy rule, small validation floors."""
    read = ReadParams(delimiter=how["read_sep"], decimal=how["decimal"], encoding=how["read_encoding"])
    data = BASE.data.model_copy(
        update={
            "name": "hostile",
            "source": name,
            "target": "y",
            "positive_label": 1,
            "sensitive_features": ["s"],
            "drop": [],
            "labels": None,
            "ranges": {},
            "read": read,
            "missing_labels": how["missing_labels"],
            "numeric": [how["numeric"]] if how["numeric"] else None,
            "dates": {how["date"]: "year"} if how["date"] else {},
        }
    )
    identifiers = BASE.privacy.identifiers.model_copy(update={"check": how["identifiers"]})
    privacy = BASE.privacy.model_copy(
        update={
            "drop": [],
            "pseudonymize": [],
            "keep": [],
            "bins": {},
            "top_code": {},
            "group_rare": {},
            "quasi_identifiers": ["s"],
            "identifiers": identifiers,
        }
    )
    checks = BASE.validate_.model_copy(update={"min_rows": 2, "min_group_rows": 1})
    return BASE.model_copy(update={"data": data, "privacy": privacy, "validate_": checks})


def _stage(run: Any, params: Params, root: Path) -> tuple[int, str]:
    """Run a stage as its entry point does (`cli`): (exit code, stderr). Anything but a HumaneError propagates."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli(lambda: run(params, Paths(root), RunContext(root)))
        except SystemExit as exit_:
            return int(exit_.code), err.getvalue()
    return 0, err.getvalue()


def _assert_refused_clearly(code: int, stderr: str, file: str) -> str:
    """Exit 2, and an `error:` line naming the file or the setting to change (stage notes may precede it).

    Returns:
        The error message (a validation failure lists one check per line after its first line).

    """
    assert code == INPUT_EXIT, stderr
    assert "Traceback" not in stderr, stderr
    assert "error: " in stderr, stderr
    message = stderr[stderr.index("error: ") :].removeprefix("error: ")
    first = message.split("\n", 1)[0]
    named = file in first or "data." in first
    assert named or (first.startswith("data validation failed") and file in message), message
    return message


def _rule(stderr: str) -> str:
    """The kind of refusal, for Hypothesis' statistics: the error line's words after the file name, shortened."""
    first = stderr[stderr.find("error: ") :].removeprefix("error: ").split("\n", 1)[0]
    return " ".join(first.split(": ", 1)[-1].split()[:4])


def check_file(frame: pd.DataFrame, how: dict[str, Any]) -> str:
    """Write a case, run load then validate on it in a fresh project folder; the outcome ("loaded", ...)."""
    with tempfile.TemporaryDirectory(prefix="hostile-") as folder:
        root = Path(folder)
        name = _write(frame, how, root)
        params = _params(name, how)
        code, stderr = _stage(load_stage.run, params, root)
        if code:
            _assert_refused_clearly(code, stderr, name)
            assert not (root / "data/interim").exists() and not (root / "reports").exists()  # nothing half-written
            return f"refused by load: {_rule(stderr)}"
        code, stderr = _stage(validate_stage.run, params, root)
        assert not (root / "mlflow.db").exists()  # the registry is never touched by these stages
        if code:
            _assert_refused_clearly(code, stderr, name)
            assert Paths(root).validation_report.exists()  # the report says why
            return f"refused by validate: {_rule(stderr)}"
        return "validated"


@pytest.mark.slow  # 30 generated files through load and validate (GX): about 30 s
@settings(BATTERY, max_examples=30)
@given(data=st.data())
def test_generated_training_files_load_validate_or_are_refused_clearly(data):
    frame = data.draw(frames(), label="frame")
    how = data.draw(settings_for(frame), label="how")
    event(check_file(frame, how))


@settings(BATTERY, max_examples=30)
@given(content=st.binary(max_size=2000), suffix=st.sampled_from(["csv", "tsv", "parquet", "csv.gz", "csv.zip"]))
def test_random_bytes_under_a_data_file_name_are_refused_clearly(content, suffix):
    with tempfile.TemporaryDirectory(prefix="hostile-") as folder:
        root = Path(folder)
        name = f"{SOURCE}.{suffix}"
        (root / "data/raw").mkdir(parents=True)
        (root / name).write_bytes(content)
        code, stderr = _stage(load_stage.run, _params(name, _plain()), root)
        if code:
            _assert_refused_clearly(code, stderr, name)
            assert not (root / "data/interim").exists()
        event(f"refused by load: {_rule(stderr)}" if code else "loaded")


def _plain() -> dict[str, Any]:
    return {
        "read_sep": None,
        "decimal": ".",
        "read_encoding": "utf-8",
        "missing_labels": "error",
        "numeric": None,
        "date": None,
        "identifiers": True,
    }


@pytest.mark.parametrize("columns", [2000])
def test_thousands_of_columns_are_loaded(columns):
    # Load only: validation's cost grows with the square of the column count (reported in issue 18's notes).
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.integers(0, 5, (20, columns)), columns=[f"c{i}" for i in range(columns)])
    frame = frame.assign(s=rng.choice(["m", "f"], 20), y=rng.integers(0, 2, 20))
    with tempfile.TemporaryDirectory(prefix="hostile-") as folder:
        root = Path(folder)
        how = {**_plain(), "format": "csv", "sep": ",", "encoding": "utf-8"}
        name = _write(frame, how, root)
        code, stderr = _stage(load_stage.run, _params(name, how), root)
        assert code == 0, stderr
        assert pd.read_parquet(Paths(root).interim_train).shape[1] == columns + 2
