"""Reading a data source: a built-in (md5-checked) or a user CSV/Parquet file, and the held-out test split.

Every way a user's file can be malformed ends in a `DataError` naming the file, the column and the rule to
change, never a traceback; no error quotes a data value. A header line and column names are shown only
when the first line looks like a header (a file without one has a row of data there); label values are
listed only for a column with few of them (see `humane.data.schema.match_label`).
"""

from __future__ import annotations

import codecs
import gzip
import importlib.util
import io
import json
import lzma
import math
import re
import tarfile
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from sklearn.model_selection import train_test_split

from humane.core.errors import ConfigError, DataError
from humane.data.datasets import BUILTINS, md5_of, verify
from humane.data.params import DataParams, ReadParams, confine

if TYPE_CHECKING:
    from pyrage import x25519

# The seed of the train/test split of a single-file source; fixed so that the test rows never move.
TEST_SPLIT_SEED = 20240601

CSV_SUFFIXES = (".csv", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
# Compressions pandas infers from the file name: data.csv.gz is read as CSV (.zst only with the zstandard package).
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zip", ".xz", ".zst", ".tar")
# What a damaged archive, or a file not compressed as its name says, raises while pandas decompresses it.
CORRUPT_ARCHIVE = (gzip.BadGzipFile, zipfile.BadZipFile, lzma.LZMAError, tarfile.TarError, zlib.error, EOFError)
# Separators suggested when a CSV file parses into a single column.
LIKELY_DELIMITERS = (",", ";", "\t", "|")
# How much of a file's first line an error shows (only a line that looks like a header is shown).
SHOWN_LINE_CHARS = 120
# Any candidate delimiter: a line is split on all of them to judge whether its fields are numbers.
_ANY_DELIMITER = re.compile("|".join(re.escape(d) for d in LIKELY_DELIMITERS))
# Date columns turned into a number count from this day (data.dates: days).
EPOCH = pd.Timestamp("1970-01-01")
# The compression of a decrypted CSV by the inner file's last suffix (pandas infers it only from a path).
_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".zip": "zip", ".xz": "xz", ".zst": "zstd", ".tar": "tar"}


@dataclass(frozen=True)
class Decrypted:
    """An age file's plaintext, in memory only, and the name of the file inside the encryption (x.csv for x.csv.age)."""

    data: bytes
    path: Path

    @property
    def suffix(self) -> str:
        """The inner file's last suffix (what its compression is judged by)."""
        return self.path.suffix


# A file to parse: its path, or the plaintext of an age file (data.encryption: age).
Source = Path | Decrypted


def _input(source: Source) -> Path | io.BytesIO:
    """What pandas and pyarrow read: the path, or a fresh in-memory buffer over the plaintext."""
    return source if isinstance(source, Path) else io.BytesIO(source.data)


def _compression(source: Source) -> str | None:
    """The compression option of pandas: inferred from a path's name; for a plaintext, from the inner name."""
    return "infer" if isinstance(source, Path) else _COMPRESSION.get(source.suffix.lower())


@dataclass(frozen=True)
class Loaded:
    """The train pool, the test frame, where each came from, and the rows dropped for a missing label."""

    train: pd.DataFrame
    test: pd.DataFrame
    files: dict[str, str]
    md5: dict[str, str]
    # {file as params.yaml names it: rows dropped because their label was missing} (data.missing_labels: drop)
    missing_labels_dropped: dict[str, int] = field(default_factory=dict)


def _kind(path: Path, name: str) -> str:
    """'csv', 'tsv' or 'parquet' from the file name; a compressed CSV (data.csv.gz) is a CSV."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in CSV_SUFFIXES:
        return last.lstrip(".")
    if last in PARQUET_SUFFIXES and path.suffix.lower() in PARQUET_SUFFIXES:
        return "parquet"
    raise DataError(
        f"{name}: unsupported file type {''.join(path.suffixes) or 'without an extension'!r}; use .csv "
        f"(optionally compressed: {', '.join(_compressions())}), .tsv or .parquet"
    )


def _zstd_available() -> bool:
    return importlib.util.find_spec("zstandard") is not None


def _compressions() -> list[str]:
    """The compressed CSV names a user is told about: .csv.zst only where it can be read."""
    return [".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz"] + ([".csv.zst"] if _zstd_available() else [])


def _check_archive(path: Source, name: str) -> None:
    """What pandas would fail on with a bare exception: zstd without its package, a .zip not holding one file."""
    suffix = path.suffix.lower()
    if suffix == ".zst" and not _zstd_available():
        raise DataError(
            f"{name}: zstd needs the zstandard package, which is not installed; decompress the file or compress it "
            f"as one of {', '.join(_compressions())}"
        )
    if suffix == ".zip":
        try:
            with zipfile.ZipFile(_input(path)) as archive:
                count = len(archive.namelist())
        except (zipfile.BadZipFile, OSError) as err:
            raise DataError(
                f"{name}: cannot be read or decompressed: not a valid .zip archive ({type(err).__name__}); the file "
                f"is damaged or not compressed as its name says"
            ) from None
        if count != 1:
            raise DataError(
                f"{name}: a .zip data source must hold exactly one CSV file; this archive holds {count} files"
            )


def _encoding(read: ReadParams) -> str:
    """The codec to read with; UTF-8 also accepts (and drops) a byte-order mark."""
    try:
        codec = codecs.lookup(read.encoding).name
    except LookupError:
        raise ConfigError(
            f"data.read.encoding: unknown encoding {read.encoding!r} (e.g. utf-8, latin-1, cp1252)"
        ) from None
    return "utf-8-sig" if codec == "utf-8" else read.encoding


def _read_csv(path: Source, name: str, read: ReadParams, tab: bool) -> pd.DataFrame:
    sep = read.delimiter or ("\t" if tab else ",")
    options: dict[str, Any] = {
        "sep": sep,
        "decimal": read.decimal,
        "thousands": read.thousands,
        "encoding": _encoding(read),
        "skipinitialspace": True,
        "compression": _compression(path),
    }
    names: list[str] = []
    try:
        # The header as written: pandas renames a repeated name (a, a.1), so duplicates are found here.
        header = pd.read_csv(_input(path), header=None, nrows=1, dtype=str, keep_default_na=False, **options)
        names = [str(v).strip() for v in header.iloc[0].tolist()] if len(header) else []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            # index_col=False: rows with more fields than the header are reported, not turned into an index.
            frame = pd.read_csv(_input(path), index_col=False, **options)
    except UnicodeError as err:  # a byte the codec rejects, or a stream it cannot start (UTF-16 without a BOM)
        raise DataError(
            f"{name}: cannot be decoded as {read.encoding} ({_decode_failure(err)}); set data.read.encoding to the "
            f"file's encoding (e.g. latin-1, cp1252 or utf-16)"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{name}: file is empty (no header and no rows)") from None
    except pd.errors.ParserError as err:
        raise DataError(
            f"{name}: cannot be parsed as CSV with data.read.delimiter {json.dumps(sep)} ({err}); every row needs "
            f"as many fields as the header; {_header_hint(names, sep, path, options)}"
        ) from None
    except CORRUPT_ARCHIVE as err:  # before OSError: gzip's error is one
        raise DataError(
            f"{name}: cannot be read or decompressed: not a valid {path.suffix.lower()} file "
            f"({type(err).__name__}); the file is damaged or not compressed as its name says"
        ) from None
    except OSError as err:
        raise DataError(f"{name}: cannot be read or decompressed ({type(err).__name__}: {err})") from None
    for warning in caught:  # any other warning is shown as usual
        if not issubclass(warning.category, pd.errors.ParserWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
        raise DataError(
            f"{name}: rows have more fields than the header ({len(frame.columns)} names) with data.read.delimiter "
            f"{json.dumps(sep)}; every column needs a name; {_header_hint(names, sep, path, options)}"
        )
    _check_names(names, name)
    if len(names) == len(frame.columns):  # a blank name keeps pandas' "Unnamed: <i>"
        frame.columns = _named([n or str(c) for n, c in zip(names, frame.columns, strict=True)])
    else:
        frame.columns = _named(frame.columns)
    if len(frame.columns) == 1:
        raise DataError(
            f"{name}: parses into a single column with data.read.delimiter {json.dumps(sep)}, but a dataset needs a "
            f"label column and at least one feature; {_header_hint(names, sep, path, options)}"
        )
    return frame


def _decode_failure(err: UnicodeError) -> str:
    """What the codec rejected: the offending byte (never the text around it), or the codec's own reason."""
    if isinstance(err, UnicodeDecodeError):
        return f"byte 0x{err.object[err.start]:02x} is not valid {err.encoding}"
    return str(err)


def _header_hint(names: list[str], sep: str, path: Source, options: dict[str, Any]) -> str:
    """The file's first line (truncated) if it looks like a header, else its length, and the separator it seems to use.

    A file without a header row has a row of data as its first line: that line is described (its length and
    how many of each candidate delimiter it holds), never quoted.
    """
    line = sep.join(names)
    counts = {d: line.count(d) for d in LIKELY_DELIMITERS if d != sep and d in line}
    best = max(counts, key=lambda d: counts[d]) if counts else None
    if looks_like_header(line, _second_line(path, options)):
        shown = line if len(line) <= SHOWN_LINE_CHARS else line[:SHOWN_LINE_CHARS] + "..."
        if best is None:
            return f"the first line is {shown!r}; check data.read.delimiter"
        return (
            f"the first line is {shown!r}, which holds {counts[best]} {json.dumps(best)}: set data.read.delimiter: "
            f"{json.dumps(best)}"
        )
    held = ", ".join(f"{line.count(d)} {json.dumps(d)}" for d in LIKELY_DELIMITERS)
    described = (
        f"the first line is not shown (it does not look like a header: a number among its fields, or no number in "
        f"the next line, so it may be a row of data; the first line must name the columns): {len(line)} characters "
        f"holding {held}"
    )
    if best is None:
        return f"{described}; check data.read.delimiter"
    return f"{described}: set data.read.delimiter: {json.dumps(best)}"


def _second_line(path: Source, options: dict[str, Any]) -> str | None:
    """The file's second line, its fields joined by the delimiter; None when there is none or it does not parse."""
    try:
        row = pd.read_csv(_input(path), header=None, skiprows=1, nrows=1, dtype=str, keep_default_na=False, **options)
    except (ValueError, OSError, *CORRUPT_ARCHIVE):  # ParserError, EmptyDataError, UnicodeDecodeError among them
        return None
    return str(options["sep"]).join(str(v) for v in row.iloc[0].tolist()) if len(row) else None


def _numbers(line: str) -> list[bool]:
    """Per field of `line`, split on every candidate delimiter: whether it is a number."""
    fields = pd.Series([f.strip().strip("\"'").strip() for f in _ANY_DELIMITER.split(line)], dtype=object)
    return pd.to_numeric(fields, errors="coerce").notna().tolist()


def looks_like_header(first: str, second: str | None) -> bool:
    """Whether a first line may be quoted as a header: none of its fields is a number, and the next line has one.

    A line that holds a number, or that has the shape of the next line (all text, as a row of names would be),
    may be a row of data in a file without a header; so may the only line of a file.
    """
    if second is None or any(_numbers(first)):
        return False
    return any(_numbers(second))


def _read_parquet(path: Source, name: str) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = [str(n).strip() for n in pq.read_schema(_input(path)).names]
        _check_names(names, name)
        frame = pd.read_parquet(_input(path))
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{name}: not a readable Parquet file ({type(err).__name__}: {err})") from None
    frame.columns = _named(frame.columns)
    if len(frame.columns) == 1:
        raise DataError(
            f"{name}: holds a single column {frame.columns[0]!r}; a dataset needs a label column and at least one "
            "feature"
        )
    return frame


def _named(columns: Any) -> list[str]:
    """Column names without surrounding whitespace; a name left blank is pandas' own "Unnamed: <i>".

    pandas names an empty header field so, but not one of spaces or control characters that strip() removes.
    """
    stripped = [str(c).strip() for c in columns]
    return [c or f"Unnamed: {i}" for i, c in enumerate(stripped)]


def _check_names(names: list[str], name: str) -> None:
    """Column names are unique once surrounding spaces are stripped (blank names are pandas' "Unnamed: <i>")."""
    repeated = sorted(n for n, count in Counter(names).items() if count > 1 and n)
    if repeated:
        raise DataError(
            f"{name}: duplicate column names {repeated} in the header (pandas would silently rename the second "
            f"'{repeated[0]}' to '{repeated[0]}.1'); give every column its own name"
        )


def read_table(
    path: Path,
    shown: str | None = None,
    read: ReadParams | None = None,
    identity: Callable[[str], x25519.Identity] | None = None,
) -> pd.DataFrame:
    """Read a user CSV (data.read options; compressed by name, e.g. .csv.gz) or Parquet file.

    Column names keep their spelling (spaces, odd characters) without surrounding whitespace. Errors name the
    file as params.yaml names it (`shown`). With `identity` (data.encryption: age; called with the file's name),
    the file is an age file (x.csv.age), decrypted in memory and parsed as the file inside it (x.csv).
    """
    name = shown or str(path)
    read = read or ReadParams()
    if not path.exists():
        raise DataError(f"{name}: data source not found (data.source must be a built-in name or a file path)")
    if path.is_dir():
        raise DataError(f"{name}: data source is a directory, expected a .csv or .parquet file")
    if path.stat().st_size == 0:
        raise DataError(f"{name}: file is empty")
    source = _plaintext(path, name, identity)
    kind = _kind(source.path if isinstance(source, Decrypted) else path, name)
    _check_archive(source, name)
    frame = _read_parquet(source, name) if kind == "parquet" else _read_csv(source, name, read, tab=kind == "tsv")
    if frame.empty:
        raise DataError(f"{name}: file has a header but no rows")
    return frame


def _plaintext(path: Path, name: str, identity: Callable[[str], x25519.Identity] | None) -> Source:
    """The file to parse: the path itself, or (data.encryption: age) an age file's plaintext, in memory only.

    An age file (by its name or its first bytes) read without data.encryption: age, and a plaintext file read with
    it, are errors naming the file.
    """
    from humane.privacy.encryption import decrypt, inner_name, is_encrypted, looks_encrypted

    if identity is None:
        if is_encrypted(path) or looks_encrypted(path):
            raise DataError(
                f"{name}: is an age-encrypted file, but data.encryption is none; set data.encryption: age and put the "
                f"identity in the environment variable data.encryption_key_env names (default HUMANE_AGE_IDENTITY)"
            )
        return path
    if not is_encrypted(path):
        raise DataError(
            f"{name}: data.encryption is age, but this file is not an age file (its name does not end in .age); "
            f"encrypt it (`python -m humane.privacy.encryption encrypt {name} --recipients FILE`) and name the .age "
            f"file, or set data.encryption: none"
        )
    return Decrypted(decrypt(path, identity(name), name), inner_name(path))


def split_test(frame: pd.DataFrame, target: str, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out a seeded, label-stratified test share of a single-file source."""
    if not 0 < fraction < 1:
        raise DataError(f"data.test_fraction must be in (0, 1), got {fraction}")
    labels = frame.get(target)
    stratify = labels if labels is not None and _stratifiable(labels, fraction) else None
    train, test = train_test_split(frame, test_size=fraction, random_state=TEST_SPLIT_SEED, stratify=stratify)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def _stratifiable(labels: pd.Series, fraction: float) -> bool:
    """Whether a stratified split exists: two rows per label, and room for every label on both sides.

    A few rows (a file of four, say) are split unstratified; validation then judges what each side holds.
    """
    counts = labels.value_counts()
    test_rows = math.ceil(fraction * len(labels))  # as scikit-learn rounds the test share
    return bool(len(counts)) and counts.min() >= 2 and min(test_rows, len(labels) - test_rows) >= len(counts)


def _missing(values: pd.Series) -> pd.Series:
    """Null, or text that is blank after stripping."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        return values.isna()
    try:
        blank = values.str.strip().eq("").fillna(False).astype(bool)  # non-text values of a mixed column: NaN
    except AttributeError:  # no text at all (e.g. an object column of numbers)
        return values.isna()
    return values.isna() | blank


def clean_labels(frame: pd.DataFrame, spec: DataParams, name: str) -> tuple[pd.DataFrame, int]:
    """The frame with a usable label column, and how many rows were dropped for a missing label.

    The target must be a column; rows without a label are an error naming the column and the count, or,
    with data.missing_labels: drop, dropped and counted. A numeric label column that held nulls (and so was
    read as floats) becomes integer again when every remaining label is a whole number.
    """
    if spec.target not in frame:
        columns = [str(c) for c in frame.columns]
        first_row = ",".join(str(v) for v in frame.iloc[0].tolist()) if len(frame) else None
        if looks_like_header(",".join(columns), first_row):
            listed = f": {columns if len(columns) <= 30 else [*columns[:30], '...']}"
        else:  # a file without a header row: its "names" are a row of data
            listed = (
                ", whose names are not shown (the first line does not look like a header, so it may be a row of "
                "data; the first line must name the columns)"
            )
        raise DataError(
            f"{name}: the label column {spec.target!r} (data.target) is not in the data; the file has "
            f"{len(columns)} columns{listed}" + ("; check data.read.delimiter" if len(columns) <= 2 else "")
        )
    missing = _missing(frame[spec.target])
    count = int(missing.sum())
    if count and spec.missing_labels == "error":
        raise DataError(
            f"{name}: column {spec.target!r} (the label) is missing in {count} of {len(frame)} rows; fill them in, "
            f"or set data.missing_labels: drop to drop those rows (they are counted in data/interim/meta.json)"
        )
    if count:
        frame = frame.loc[~missing].reset_index(drop=True)
    labels = frame[spec.target]
    if pd.api.types.is_float_dtype(labels) and len(labels) and bool((labels == labels.round()).all()):
        frame = frame.assign(**{spec.target: labels.astype("int64")})
    return frame, count


def check_numbers(frame: pd.DataFrame, numeric: list[str] | None, name: str, read: ReadParams) -> pd.DataFrame:
    """Numbers read as text: converted where declared numeric, an error where the decimal mark is the cause.

    A column in data.numeric whose text values are all numbers (a Parquet string column, say) becomes numeric.
    A text column whose every value is a number written with the other decimal mark ("3,5" read with
    data.read.decimal ".") is an error pointing at data.read.decimal, instead of a numeric column silently
    read as text. Any other text in a numeric column is left to validation, which counts it (and quotes it
    only for columns no privacy rule protects).
    """
    other = "," if read.decimal == "." else "."
    out = frame
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
            continue
        text = values[~_missing(values)].astype(str).str.strip()
        if text.empty:
            continue
        if column in (numeric or []):
            parsed = pd.to_numeric(values.where(~_missing(values)), errors="coerce")
            if parsed.notna().sum() == len(text):
                out = out.assign(**{column: parsed})
                continue
        if not text.str.contains(other, regex=False).any():
            continue
        swapped = pd.to_numeric(text.str.replace(other, read.decimal, regex=False), errors="coerce")
        if swapped.notna().all():
            raise DataError(
                f"{name}: column {column!r} holds numbers written with {json.dumps(other)} (all {len(text)} values; "
                f"values withheld), read as text with data.read.decimal {json.dumps(read.decimal)}; set "
                f"data.read.decimal: {json.dumps(other)} (or data.read.thousands: {json.dumps(other)} if it "
                f"separates thousands)"
            )
    return out


def check_test_columns(train: pd.DataFrame, test: pd.DataFrame, train_name: str, test_name: str) -> None:
    """A separate test file holds no column the training file lacks (columns named, values never quoted).

    The privacy rules are fitted, and the identifier check is judged, on the training file's columns: a column
    only the test file has (an e-mail column, say) would otherwise reach data/interim unmasked.
    """
    extra = [str(c) for c in test.columns if c not in train.columns]
    if extra:
        raise DataError(
            f"{test_name}: {len(extra)} columns are not in the training file {train_name}: {extra}; a test file may "
            f"only hold the training file's columns (nothing was written). Remove them from {test_name}, or add "
            f"them to {train_name} so that the privacy rules and the identifier check cover them"
        )


def check_label_values(frame: pd.DataFrame, target: str, name: str) -> None:
    """A binary task needs at least two label values in the train pool (labels are not personal data)."""
    observed = sorted(frame[target].dropna().unique().tolist(), key=str)
    if len(observed) < 2:
        raise DataError(
            f"{name}: column {target!r} (the label) holds a single value {observed}; a classifier needs rows of "
            f"both labels"
        )


def convert_dates(frame: pd.DataFrame, dates: dict[str, str], name: str) -> pd.DataFrame:
    """Apply data.dates: each named column is parsed, then dropped or turned into its year or days since 1970.

    A value that is present but not a date is an error counting such values (values withheld).
    """
    out = frame.copy()
    for column, rule in dates.items():
        if column not in out:
            raise DataError(f"{name}: data.dates names column {column!r}, which is not in the data")
        if rule == "drop":
            out = out.drop(columns=[column])
            continue
        parsed = parse_dates(out[column])
        bad = int((out[column].notna() & parsed.isna() & ~_missing(out[column])).sum())
        if bad:
            raise DataError(
                f"{name}: column {column!r} (data.dates: {rule}): {bad} values are not dates (values withheld)"
            )
        number = parsed.dt.year if rule == "year" else (parsed - EPOCH).dt.days
        out[column] = number.astype("int64") if number.notna().all() else number.astype("float64")
    return out


def parse_dates(values: pd.Series) -> pd.Series:
    """Dates as naive UTC timestamps (ISO 8601 first, then any format pandas recognises); NaT if not a date."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = pd.to_datetime(values, utc=True)
    else:
        # As text: 19800131 and 1980 read as dates, never as a count of nanoseconds since 1970.
        text = values.astype("object").where(values.notna(), None).map(lambda v: None if v is None else str(v))
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
        rest = parsed.isna() & text.notna()
        if rest.any():
            parsed[rest] = pd.to_datetime(text[rest], format="mixed", errors="coerce", utc=True)
    return parsed.dt.tz_localize(None)


def _identity(spec: DataParams, builtin: bool) -> Callable[[str], x25519.Identity] | None:
    """Where an age file's identity comes from (data.encryption: age), asked only when a file is decrypted."""
    if spec.encryption == "none":
        return None
    if builtin:
        raise ConfigError(
            f"data.encryption: age needs data.source to name an age-encrypted file (x.csv.age), not the built-in "
            f"dataset {spec.source!r}; set data.encryption: none"
        )
    from humane.privacy.encryption import source_identity

    return lambda name: source_identity(spec, name)


def _prepared(frame: pd.DataFrame, spec: DataParams, name: str) -> tuple[pd.DataFrame, int]:
    frame, dropped = clean_labels(frame, spec, name)
    return check_numbers(frame, spec.numeric, name, spec.read), dropped


def load(spec: DataParams, root: Path) -> Loaded:
    """Read the source named in the data spec; built-ins are checked against their published md5.

    A file path must resolve inside the project folder `root` (or inside a declared absolute data.root). The
    label column is checked (present, no missing labels unless data.missing_labels: drop, at least two
    values) before a single-file source is split, so the split can be stratified; a separate test file may not
    hold a column the training file lacks.
    """
    builtin = BUILTINS.get(spec.source)
    dropped: dict[str, int] = {}
    identity = _identity(spec, builtin is not None)
    if builtin is not None:
        train_path = verify(builtin.train, root)
        files = {"train": str(builtin.train.path)}
        md5 = {"train": builtin.train.md5}
        train, dropped[files["train"]] = _prepared(builtin.reader(train_path), spec, files["train"])
        if builtin.test is not None:
            test_path = verify(builtin.test, root)
            files["test"], md5["test"] = str(builtin.test.path), builtin.test.md5
            test, dropped[files["test"]] = _prepared(builtin.reader(test_path), spec, files["test"])
    else:
        train_path = confine(spec.source, "data.source", root, spec.root)
        # Read first: a missing or unreadable file is a clear error there, before its md5 is taken.
        train_frame = read_table(train_path, spec.source, spec.read, identity)
        files, md5 = {"train": spec.source}, {"train": md5_of(train_path)}
        train, dropped[spec.source] = _prepared(train_frame, spec, spec.source)
        if spec.test_source:
            test_path = confine(spec.test_source, "data.test_source", root, spec.root)
            raw_test = read_table(test_path, spec.test_source, spec.read, identity)
            files["test"], md5["test"] = spec.test_source, md5_of(test_path)
            test, dropped[spec.test_source] = _prepared(raw_test, spec, spec.test_source)
    if "test" in files:
        check_test_columns(train, test, files["train"], files["test"])
    check_label_values(train, spec.target, files["train"])
    if "test" not in files:
        train, test = split_test(train, spec.target, spec.test_fraction)
        files["test"], md5["test"] = files["train"], md5["train"]
    return Loaded(train, test, files, md5, {f: n for f, n in dropped.items() if n})
