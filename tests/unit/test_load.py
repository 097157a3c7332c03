from pathlib import Path

import pandas as pd
import pytest

from humane.core.errors import DataError
from humane.core.io import md5_of
from humane.core.params import load_params
from humane.data.datasets import BUILTINS, RawFile, read_adult, read_german, verify
from humane.data.sources import load, read_table, split_test

ROOT = Path(__file__).resolve().parents[2]


def test_adult_test_file_parses_with_clean_labels():
    frame = read_adult(ROOT / "data/raw/adult/adult.test")
    assert len(frame) == 16281
    assert set(frame["income"]) == {"<=50K", ">50K"}
    assert frame["workclass"].isna().sum() > 0  # '?' is read as missing


def test_builtin_adult_uses_official_split_and_checksums():
    loaded = load(load_params().data, ROOT)
    assert (len(loaded.train), len(loaded.test)) == (32561, 16281)
    assert loaded.md5["train"] == md5_of(ROOT / "data/raw/adult/adult.data")


def test_german_has_readable_categories_and_derived_sex():
    frame = read_german(ROOT / "data/raw/german/german.data")
    assert len(frame) == 1000
    assert frame.loc[0, "personal_status"] == "male: single" and frame.loc[0, "sex"] == "male"
    assert set(frame["sex"]) == {"male", "female"}
    assert set(frame["credit_risk"]) == {"good", "bad"}
    assert not frame["purpose"].str.startswith("A").any()


def test_checksum_mismatch_is_reported(tmp_path):
    bad = tmp_path / "data/raw/adult/adult.data"
    bad.parent.mkdir(parents=True)
    bad.write_text("39, State-gov\n")
    with pytest.raises(DataError, match="checksum mismatch"):
        verify(BUILTINS["adult"].train, tmp_path)
    with pytest.raises(DataError, match="missing"):
        verify(RawFile(Path("nope.data"), "0"), tmp_path)


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [(None, "missing.csv", "not found"), ("", "empty.csv", "file is empty"), ("a,b\n", "header.csv", "no rows"),
     ("a,b\n1,2\n", "data.xlsx", "unsupported file type")],
)  # fmt: skip
def test_read_table_errors_name_the_file(tmp_path, content, name, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as err:
        read_table(path)
    assert str(path) in str(err.value)


def test_single_file_split_is_seeded_and_stratified():
    frame = pd.DataFrame({"x": range(100), "y": ["a"] * 80 + ["b"] * 20})
    train, test = split_test(frame, "y", 0.25)
    again, _ = split_test(frame, "y", 0.25)
    assert len(test) == 25 and (test["y"] == "b").sum() == 5
    assert train["x"].tolist() == again["x"].tolist()
