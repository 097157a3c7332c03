import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from humane.core.context import RunContext
from humane.core.errors import DataError
from humane.core.io import md5_of
from humane.core.paths import Paths
from humane.data.datasets import BUILTINS, RawFile, read_adult, read_german, verify
from humane.data.params import ReadParams
from humane.data.sources import load, read_table, split_test
from humane.pipeline.params import load_params
from tasks import load as load_stage

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
    [
        (None, "missing.csv", "not found"),
        ("", "empty.csv", "file is empty"),
        ("a,b\n", "header.csv", "no rows"),
        ("a,b\n1,2\n", "data.xlsx", "unsupported file type"),
    ],
)
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


def _users_file(path: Path, n: int = 300, **columns) -> None:
    """A user's `;`-separated file with a 0/1 label (two missing), ages over 91, an id, e-mails, dates and notes.

    `columns`: columns to add or replace, as `DataFrame.assign` takes them.
    """
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "customer id": rng.permutation(np.arange(500_000, 500_000 + n)),
            "email": [f"person.{i}@example.org" for i in range(n)],
            "born": (pd.Timestamp("1925-01-01") + pd.to_timedelta(rng.integers(0, 30_000, n), unit="D")).strftime("%F"),
            "notes": [" ".join(rng.choice(["late", "paid", "called", "the", "office", "twice"], 6)) for _ in range(n)],
            "age": np.r_[[40, 41, 97, 99, 12], rng.integers(18, 90, n - 5)],  # the first two rows lack a label
            "income": rng.normal(3000, 500, n).round(2),
            "sex": rng.choice(["F", "M"], n),
            "y": np.r_[[None, None], rng.integers(0, 2, n - 2)],
        }
    ).assign(**columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, sep=";", decimal=",", index=False)


def _users_params(test_source=None, **privacy):
    params = load_params(ROOT / "params.yaml")
    data = params.data.model_copy(
        update=dict(
            name="users",
            source="data/raw/users.csv",
            target="y",
            positive_label=1,
            sensitive_features=["sex"],
            drop=[],
            read=ReadParams(delimiter=";", decimal=","),
            missing_labels="drop",
            dates={"born": "year"},
            test_source=test_source,
        )
    )
    rules = params.privacy.model_copy(
        update={
            "drop": ["email", "notes"],
            "pseudonymize": [],
            "keep": [],
            "group_rare": {},
            "top_code": {},
            "bins": {"age": [17.0, 30.0, 50.0, 70.0, 91.0]},
            "quasi_identifiers": ["age", "sex"],
            **privacy,
        }
    )
    return params.model_copy(update={"data": data, "privacy": rules})


def test_load_stage_on_a_users_file_checks_before_writing_and_records_what_it_did(tmp_path):
    _users_file(tmp_path / "data/raw/users.csv")
    paths, ctx = Paths(tmp_path), RunContext(tmp_path)
    with pytest.raises(
        DataError,
        match=r"data/raw/users.csv: 1 columns look like direct identifiers .*'customer id': "
        r"unique per row \(id\) .*add privacy.drop: \[\"customer id\"\]",
    ):
        load_stage.run(_users_params(), paths, ctx)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"] and not (tmp_path / "data/interim").exists()

    load_stage.run(_users_params(keep=["customer id"]), paths, ctx)
    train, test = pd.read_parquet(paths.interim_train), pd.read_parquet(paths.interim_test)
    assert len(train) + len(test) == 298 and train["y"].dtype == "int64"
    assert "email" not in train and "notes" not in train  # dropped before anything was written
    assert train["born"].between(1925, 2010).all() and train["born"].dtype == "int64"  # data.dates: year
    assert set(pd.concat([train, test])["age"]) <= {17, 30, 50, 70}  # 97, 99 and 12 fell into the outermost bins
    privacy = json.loads(paths.privacy_report.read_text())
    clipped = privacy["bins_clipped"]
    assert clipped["train"]["age"] + clipped["test"]["age"] == 3
    found = privacy["identifiers"]["findings"]
    assert privacy["identifiers"]["checked"] is True
    assert {c: (f["kind"], f["handled_by"]) for c, f in found.items()} == {
        "customer id": ("id", "privacy.keep"),
        "email": ("EMAIL_ADDRESS", "privacy.drop"),
        "born": ("date", "data.dates"),
        "notes": ("free_text", "privacy.drop"),
    }
    meta = json.loads(paths.interim_meta.read_text())
    assert meta["missing_labels"] == {"rule": "drop", "dropped": {"data/raw/users.csv": 2}}
    assert "person.0@example.org" not in paths.privacy_report.read_text() + paths.interim_meta.read_text()


def test_load_stage_refuses_a_positive_label_of_the_wrong_type_before_writing(tmp_path):
    _users_file(tmp_path / "data/raw/users.csv")
    params = _users_params(keep=["customer id"])
    params = params.model_copy(update={"data": params.data.model_copy(update={"positive_label": "1"})})
    with pytest.raises(DataError, match=r"write data.positive_label: 1 without quotes"):
        load_stage.run(params, Paths(tmp_path), RunContext(tmp_path))
    assert not (tmp_path / "data/interim").exists()


def test_identifier_check_can_be_turned_off(tmp_path):
    _users_file(tmp_path / "data/raw/users.csv")
    params = _users_params()
    off = params.privacy.identifiers.model_copy(update={"check": False})
    params = params.model_copy(update={"privacy": params.privacy.model_copy(update={"identifiers": off})})
    load_stage.run(params, Paths(tmp_path), RunContext(tmp_path))
    assert json.loads(Paths(tmp_path).privacy_report.read_text())["identifiers"] == {"checked": False, "findings": {}}


def test_a_test_file_is_checked_too_and_may_not_add_columns(tmp_path):
    _users_file(tmp_path / "data/raw/users.csv")
    work = [f"worker.{i}@example.com" for i in range(80)]
    _users_file(tmp_path / "data/raw/users_test.csv", n=80, **{"work email": work})
    paths, ctx = Paths(tmp_path), RunContext(tmp_path)
    params = _users_params(test_source="data/raw/users_test.csv", keep=["customer id"])
    with pytest.raises(DataError) as err:
        load_stage.run(params, paths, ctx)
    assert str(err.value).startswith(
        "data/raw/users_test.csv: 1 columns are not in the training file data/raw/users.csv: ['work email']; a test "
        "file may only hold the training file's columns (nothing was written)"
    )
    assert "@" not in str(err.value)
    assert not (tmp_path / "data/interim").exists() and not (tmp_path / "reports").exists()

    # A column the training file holds as a category, and the test file as e-mail addresses.
    _users_file(tmp_path / "data/raw/users.csv", contact=lambda f: ["phone", "mail"] * (len(f) // 2))
    _users_file(tmp_path / "data/raw/users_test.csv", n=80, contact=work)
    with pytest.raises(
        DataError,
        match=r"^data/raw/users_test.csv: 1 columns look like direct identifiers .*"
        r"'contact': e-mail addresses \(pattern\)",
    ) as err:
        load_stage.run(params, paths, ctx)
    assert "@" not in str(err.value) and not (tmp_path / "data/interim").exists()

    load_stage.run(_users_params(test_source="data/raw/users_test.csv", keep=["customer id", "contact"]), paths, ctx)
    assert "worker.5@example.com" in set(pd.read_parquet(paths.interim_test)["contact"])  # kept on purpose
    found = json.loads(paths.privacy_report.read_text())["identifiers"]["findings"]
    assert (found["contact"]["kind"], found["contact"]["handled_by"]) == ("EMAIL_ADDRESS", "privacy.keep")


def test_a_stray_text_value_in_a_numeric_column_is_left_to_validation(tmp_path):
    stray = lambda f: f["income"].astype(object).where(f.index != 7, "unknown")  # noqa: E731
    _users_file(tmp_path / "data/raw/users.csv", income=stray)
    paths = Paths(tmp_path)
    load_stage.run(_users_params(keep=["customer id"]), paths, RunContext(tmp_path))  # no "unique per row (id)"
    frames = pd.concat([pd.read_parquet(paths.interim_train), pd.read_parquet(paths.interim_test)])
    assert (frames["income"] == "unknown").sum() == 1 and len(frames) == 298
    assert "income" not in json.loads(paths.privacy_report.read_text())["identifiers"]["findings"]


def test_integers_beyond_64_bits_are_refused_before_anything_is_written(tmp_path):
    # Found by tests/unit/test_hostile.py: pandas reads such a column as Python integers, which Parquet cannot hold.
    _users_file(tmp_path / "data/raw/users.csv", code=lambda f: [str(2**70 + i) for i in range(len(f))])
    with pytest.raises(DataError, match=r"^data/raw/users.csv: column 'code' holds integers beyond the 64-bit range"):
        load_stage.run(_users_params(keep=["customer id", "code"]), Paths(tmp_path), RunContext(tmp_path))
    assert not (tmp_path / "data/interim").exists()
    load_stage.run(
        _users_params(keep=["customer id"], drop=["email", "notes", "code"]), Paths(tmp_path), RunContext(tmp_path)
    )
