"""Reading real files, and the bad ones: each ends in a DataError naming the file and the rule, never a traceback."""

import gzip
import importlib.util
import zipfile

import pandas as pd
import pytest

from humane.core.errors import ConfigError, DataError
from humane.data.params import DataParams, ReadParams
from humane.data.sources import check_numbers, clean_labels, convert_dates, load, read_table

SECRET = "Zelda Quackenbush"  # a personal value that no message may quote


def _spec(**kw):
    base = dict(
        name="t",
        intended_use="use.md",
        source="data/raw/t.csv",
        target="y",
        positive_label=1,
        sensitive_features=["sex"],
    )
    base.update(kw)
    return DataParams(**base)


def _write(tmp_path, name, content, encoding="utf-8"):
    path = tmp_path / "data" / "raw" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode(encoding) if isinstance(content, str) else content)
    return path


ROWS = "age,sex,y\n30,F,1\n40,M,0\n50,F,0\n60,M,1\n"


# ------------------------------------------------------------------------------------------ files that read


def test_delimiter_decimal_thousands_and_encoding_are_honoured(tmp_path):
    text = "Gehalt (€);Größe;y\n1.234,5;1,80;1\n2.000,0;1,65;0\n"
    path = _write(tmp_path, "de.csv", text, encoding="cp1252")
    frame = read_table(path, read=ReadParams(delimiter=";", decimal=",", thousands=".", encoding="cp1252"))
    assert list(frame.columns) == ["Gehalt (€)", "Größe", "y"]
    assert frame["Gehalt (€)"].tolist() == [1234.5, 2000.0] and frame["Größe"].tolist() == [1.80, 1.65]


def test_compressed_csv_parquet_and_odd_header_names_read(tmp_path):
    frame = pd.DataFrame({" first name ": ["a", "b"], "income ($)": [1, 2], "y": [0, 1]})
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(frame.to_csv(index=False).encode()))
    parquet = tmp_path / "t.parquet"
    frame.to_parquet(parquet)
    for path in (gz, parquet):
        read = read_table(path)
        assert list(read.columns) == ["first name", "income ($)", "y"]  # kept as written, surrounding spaces stripped
        assert read["income ($)"].tolist() == [1, 2]
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffage,y\n1,0\n2,1\n".encode())
    assert list(read_table(bom).columns) == ["age", "y"]  # a UTF-8 byte-order mark is not part of the first name


def test_tab_separated_file(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("a b\tc\n1\t2\n")
    assert list(read_table(path).columns) == ["a b", "c"]


# ---------------------------------------------------------------------------------------------- broken files


@pytest.mark.parametrize(
    ("name", "content", "read", "message"),
    [
        (
            "latin.csv",
            "name,y\nJosé,1\nAnn,0\n".encode("latin-1"),
            ReadParams(),
            r"cannot be decoded as utf-8 \(byte 0xe9 is not valid utf-8\); set data.read.encoding",
        ),
        ("header.csv", "age,sex,y\n", ReadParams(), "file has a header but no rows"),
        ("empty.csv", "\n\n", ReadParams(), "file is empty"),
        (
            "semi.csv",
            "age;sex;y\n30;F;1\n40;M;0\n",
            ReadParams(),
            'parses into a single column with data.read.delimiter ",", but a dataset needs a label column and at '
            'least one feature; the first line is \'age;sex;y\', which holds 2 ";": set data.read.delimiter: ";"',
        ),
        (
            "dup.csv",
            "a,b,a,y\n1,2,3,1\n",
            ReadParams(),
            r"duplicate column names \['a'\] in the header \(pandas would silently rename the second 'a' to 'a.1'\)",
        ),
        ("dup_spaces.csv", "a, a ,y\n1,2,1\n", ReadParams(), r"duplicate column names \['a'\]"),
        ("ragged.csv", "a,y\n1,2,3\n4,5,6\n", ReadParams(), "rows have more fields than the header"),
        ("short.csv", "a,y\n1,2\n3,4,5\n", ReadParams(), "cannot be parsed as CSV with data.read.delimiter"),
        ("bad.csv.gz", b"not gzip at all", ReadParams(), "cannot be read or decompressed"),
        (
            "bad.csv.zip",
            b"not a zip at all",
            ReadParams(),
            r"cannot be read or decompressed: not a valid \.zip archive \(BadZipFile\)",
        ),
        ("bad.csv.xz", b"not xz at all", ReadParams(), r"cannot be read or decompressed: not a valid \.xz file"),
        ("bad.csv.bz2", b"not bz2 at all", ReadParams(), "cannot be read or decompressed"),
        ("bad.csv.tar", b"not a tar at all", ReadParams(), r"cannot be read or decompressed: not a valid \.tar file"),
        ("bad.parquet", b"PAR1 definitely not parquet", ReadParams(), "not a readable Parquet file"),
        ("t.xlsx", "a,b\n", ReadParams(), "unsupported file type '.xlsx'"),
    ],
)
def test_broken_files_fail_with_the_file_and_the_rule(tmp_path, name, content, read, message):
    path = _write(tmp_path, name, content)
    with pytest.raises(DataError, match=message) as err:
        read_table(path, f"data/raw/{name}", read)
    assert str(err.value).startswith(f"data/raw/{name}: ")


def test_a_zip_must_hold_one_file_and_zstd_needs_its_package(tmp_path):
    path = tmp_path / "data/raw/two.csv.zip"
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.csv", ROWS)
        archive.writestr("b.csv", ROWS)
    with pytest.raises(
        DataError,
        match=r"^data/raw/two.csv.zip: a \.zip data source must hold exactly one CSV file; "
        r"this archive holds 2 files$",
    ):
        read_table(path, "data/raw/two.csv.zip")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.csv", ROWS)
    assert read_table(path)["y"].tolist() == [1, 0, 0, 1]
    zst = _write(tmp_path, "t.csv.zst", b"\x28\xb5\x2f\xfd not really zstd")
    unsupported = _write(tmp_path, "t.xlsx", ROWS)
    if importlib.util.find_spec("zstandard") is None:
        expected = r"^data/raw/t.csv.zst: zstd needs the zstandard package, which is not installed; decompress the file"
        with pytest.raises(DataError, match=expected + r" or compress it as one of \.csv\.gz"):
            read_table(zst, "data/raw/t.csv.zst")
        with pytest.raises(DataError, match=r"optionally compressed: \.csv\.gz, \.csv\.bz2, \.csv\.zip, \.csv\.xz\)"):
            read_table(unsupported)  # .csv.zst is not advertised while it cannot be read
    else:
        with pytest.raises(DataError, match=r"\.csv\.xz, \.csv\.zst\)"):
            read_table(unsupported)
        with pytest.raises(DataError, match="cannot be read or decompressed"):
            read_table(zst)


def test_a_first_line_that_may_be_data_is_described_never_quoted(tmp_path):
    # No header: the first line is a person's row. Wrong delimiter, so the file parses into a single column.
    _write(tmp_path, "noheader.csv", f"{SECRET};41;F;1\nAnn Smith;30;M;0\n")
    with pytest.raises(DataError) as err:
        read_table(tmp_path / "data/raw/noheader.csv", "data/raw/noheader.csv")
    message = str(err.value)
    assert SECRET not in message and "Quackenbush" not in message and "41" not in message
    assert message.endswith(
        "the first line is not shown (it does not look like a header: a number among its fields, or no number in the "
        'next line, so it may be a row of data; the first line must name the columns): 24 characters holding 0 ",", '
        '3 ";", 0 "\\t", 0 "|": set data.read.delimiter: ";"'
    )
    # All text, as the next line: may be data too (a file of names and categories without a header).
    _write(tmp_path, "text.csv", f"{SECRET};F;yes\nAnn Smith;M;no\n")
    with pytest.raises(DataError, match="the first line is not shown") as err:
        read_table(tmp_path / "data/raw/text.csv")
    assert SECRET not in str(err.value)
    # A header (text over a row with numbers) is still quoted, so a user sees what went wrong.
    _write(tmp_path, "semi.csv", "age;sex;y\n30;F;1\n")
    with pytest.raises(DataError, match=r"the first line is 'age;sex;y', which holds 2 \";\""):
        read_table(tmp_path / "data/raw/semi.csv")
    # A missing label column lists the columns only when they look like a header.
    _write(tmp_path, "t.csv", f"{SECRET},41,F,1\nAnn Smith,30,M,0\n")
    with pytest.raises(
        DataError,
        match=r"the file has 4 columns, whose names are not shown \(the first line does not "
        r"look like a header",
    ) as err:
        load(_spec(), tmp_path)
    assert SECRET not in str(err.value) and "41" not in str(err.value)


def test_duplicate_columns_in_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "dup.parquet"
    pq.write_table(pa.table([pa.array([1, 2]), pa.array([3, 4]), pa.array([0, 1])], names=["a", "a", "y"]), path)
    with pytest.raises(DataError, match=r"duplicate column names \['a'\]"):
        read_table(path)


def test_unknown_encoding_is_a_config_error(tmp_path):
    path = _write(tmp_path, "t.csv", ROWS)
    with pytest.raises(ConfigError, match=r"data\.read\.encoding: unknown encoding 'utf-42'"):
        read_table(path, read=ReadParams(encoding="utf-42"))


def test_numbers_with_the_other_decimal_mark_point_at_data_read_decimal(tmp_path):
    _write(tmp_path, "t.csv", "income;sex;y\n1200,5;F;1\n3,25;M;0\n7;F;0\n")
    for numeric in (None, ["income"]):  # declared or inferred: a numeric column is not silently read as text
        with pytest.raises(DataError) as err:
            load(_spec(read=ReadParams(delimiter=";"), numeric=numeric), tmp_path)
        message = str(err.value)
        assert message.startswith("data/raw/t.csv: column 'income' holds numbers written with \",\" (all 3 values; ")
        assert 'set data.read.decimal: ","' in message and "1200" not in message
    assert load(_spec(read=ReadParams(delimiter=";", decimal=",")), tmp_path).train["income"].dtype == "float64"


def test_text_in_a_declared_numeric_column_is_left_for_validation_to_count(tmp_path):
    frame = pd.DataFrame({"income": ["1200", SECRET, None, " ", "7"], "y": [0, 1, 0, 1, 0]})
    assert check_numbers(frame, ["income"], "f", ReadParams()).equals(frame)  # validation counts it, per column
    converted = check_numbers(frame.drop(index=1), ["income"], "f", ReadParams())  # numbers written as text
    assert converted["income"].tolist()[0] == 1200.0 and pd.api.types.is_numeric_dtype(converted["income"])
    assert pd.isna(converted["income"]).sum() == 2  # null and blank are missing


def test_a_missing_target_lists_the_columns_and_hints_at_the_delimiter(tmp_path):
    _write(tmp_path, "t.csv", ROWS)
    expected = r"data/raw/t.csv: the label column 'income' \(data.target\) is not in the data; the file has 3 columns: "
    with pytest.raises(DataError, match=expected + r"\['age', 'sex', 'y'\]$"):
        load(_spec(target="income"), tmp_path)
    frame = pd.DataFrame({"a;b": [1], "y;z": [2]})
    with pytest.raises(DataError, match=r"check data\.read\.delimiter"):
        clean_labels(frame, _spec(target="y"), "f.csv")


def test_missing_labels_are_an_error_or_dropped_and_counted(tmp_path):
    path = _write(tmp_path, "t.csv", ROWS + "70,F,\n80,M,\n")
    expected = r"data/raw/t.csv: column 'y' \(the label\) is missing in 2 of 6 rows; fill them in, or set "
    with pytest.raises(DataError, match=expected + r"data.missing_labels: drop"):
        load(_spec(test_fraction=0.5), tmp_path)
    assert path.exists()
    loaded = load(_spec(test_fraction=0.5, missing_labels="drop"), tmp_path)
    assert loaded.missing_labels_dropped == {"data/raw/t.csv": 2}
    assert len(loaded.train) + len(loaded.test) == 4
    assert loaded.train["y"].dtype == "int64"  # integer again once the nulls are gone (read as float with them)
    frame = pd.DataFrame({"y": ["yes", " ", None, "no"], "x": [1, 2, 3, 4]})
    cleaned, dropped = clean_labels(frame, _spec(missing_labels="drop"), "f")
    assert dropped == 2 and cleaned["y"].tolist() == ["yes", "no"]  # blank text is a missing label too


def test_a_single_label_value_lists_it(tmp_path):
    _write(tmp_path, "t.csv", "age,sex,y\n30,F,1\n40,M,1\n50,F,1\n60,M,1\n")
    with pytest.raises(DataError, match=r"data/raw/t.csv: column 'y' \(the label\) holds a single value \[1\]"):
        load(_spec(), tmp_path)


def test_a_test_file_is_read_with_the_same_rules(tmp_path):
    _write(tmp_path, "t.csv", ROWS)
    _write(tmp_path, "test.csv", "age;sex;y\n30;F;1\n")
    with pytest.raises(DataError, match=r"data/raw/test\.csv: parses into a single column"):
        load(_spec(test_source="data/raw/test.csv"), tmp_path)
    _write(tmp_path, "test.csv", "age,sex,y\n30,F,1\n31,M,\n")
    loaded = load(_spec(test_source="data/raw/test.csv", missing_labels="drop"), tmp_path)
    assert loaded.missing_labels_dropped == {"data/raw/test.csv": 1} and len(loaded.test) == 1


def test_dates_become_years_or_days_or_are_dropped():
    frame = pd.DataFrame(
        {"dob": ["1970-01-02", "31/12/1999", None], "seen": ["2024-02-29", "2024-03-01", "2024-03-02"], "y": [0, 1, 0]}
    )
    out = convert_dates(frame, {"dob": "year", "seen": "days"}, "f.csv")
    assert out["dob"].tolist()[:2] == [1970.0, 1999.0] and pd.isna(out["dob"].iloc[2])
    assert out["seen"].tolist() == [19782, 19783, 19784] and out["seen"].dtype == "int64"
    assert "dob" not in convert_dates(frame, {"dob": "drop"}, "f.csv")
    with pytest.raises(
        DataError,
        match=r"f.csv: column 'dob' \(data.dates: year\): 1 values are not dates \(values "
        r"withheld\)",
    ) as err:
        convert_dates(frame.assign(dob=["1970-01-02", SECRET, None]), {"dob": "year"}, "f.csv")
    assert SECRET not in str(err.value)
    with pytest.raises(DataError, match=r"data\.dates names column 'born', which is not in the data"):
        convert_dates(frame, {"born": "year"}, "f.csv")


# ---- found by the generated battery (tests/unit/test_hostile.py) ----


def test_a_utf16_file_read_as_utf16_without_a_bom_is_a_data_error(tmp_path):
    path = _write(tmp_path, "t.csv", "a,y\n1,0\n2,1\n", encoding="utf-8")
    with pytest.raises(
        DataError, match=r"t.csv: cannot be decoded as utf-16 \(UTF-16 stream does not start with BOM\)"
    ):
        read_table(path, read=ReadParams(encoding="utf-16"))


def test_a_column_name_of_control_characters_is_unnamed_like_a_blank_one(tmp_path):
    path = _write(tmp_path, "t.csv", "a,\x1f,\u2003,y\n1,2,3,0\n4,5,6,1\n")
    assert list(read_table(path).columns) == ["a", "Unnamed: 1", "Unnamed: 2", "y"]


def test_a_file_too_small_to_stratify_is_split_unstratified():
    from humane.data.sources import split_test

    train, test = split_test(pd.DataFrame({"x": range(4), "y": [0, 0, 1, 1]}), "y", 0.2)
    assert (len(train), len(test)) == (3, 1)
