"""Columns that look like direct identifiers or personal free text, found when the data is loaded.

A column is flagged when it is

- unique per row: an id (text, or whole numbers shaped like an id: consecutive, or all of one width);
- high-cardinality text: names and the like;
- dates (a date of birth, an admission day): parsed by pandas from a sample;
- free text: several words per value;
- e-mail addresses, phone numbers, national ids, credit card numbers or IBANs: Presidio's recognizers, run on
  a sample with no NLP engine and nothing downloaded (the e-mail check uses tldextract's bundled list).

The uniqueness, name and free-text rules also need more distinct values than `data.max_categories`: a column
with fewer is a category (as role inference treats it), however small the table. A text column whose values
are nearly all numbers (an income column with a stray "unknown") is judged as numbers: an id only with an id's
shape, never a name or free text; validation counts its text values. Every flagged column must be
named in a rule (privacy.drop, privacy.pseudonymize, privacy.keep or data.dates) or the load stage
stops before writing anything. Findings carry the column, the kind and a share, never a value.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from humane.core.errors import DataError
from humane.data.params import DataParams
from humane.data.sources import parse_dates
from humane.privacy.params import IdentifierParams, PrivacyParams

# Which sampled rows are read is seeded, so the same data gives the same findings.
SAMPLE_SEED = 0

# Whole numbers are an id only with an id's shape as well as uniqueness (a money amount can be unique per row):
# consecutive (the distinct values fill at least 1 / ID_SPAN_FACTOR of their range, as row numbers do) ...
ID_SPAN_FACTOR = 2
# ... or all written with the same number of digits, at least this many (random account numbers, phone numbers).
ID_MIN_DIGITS = 4

# A text column whose sampled values are at least this share numbers is a numeric column with a few stray
# text values ("unknown"): it is judged as numbers (an id only with an id's shape), never as names or free text.
NUMBER_SHARE = 0.9

# Presidio's recognizers, entity -> class in presidio_analyzer.predefined_recognizers; each needs an "@" or six
# digits in a value to match it.
RECOGNIZERS = {
    "EMAIL_ADDRESS": "EmailRecognizer",
    "CREDIT_CARD": "CreditCardRecognizer",
    "IBAN_CODE": "IbanRecognizer",
    "US_SSN": "UsSsnRecognizer",
    "UK_NINO": "UkNinoRecognizer",
    "ES_NIF": "EsNifRecognizer",
    "IT_FISCAL_CODE": "ItFiscalCodeRecognizer",
    "PHONE_NUMBER": "PhoneRecognizer",  # last: python-phonenumbers, exact but slower than a regular expression
}
# Presidio scores its "weak" patterns (e.g. any nine digits as a US SSN) below this; they do not count.
MIN_SCORE = 0.4
# A value no recognizer above can match: no "@" and fewer than six digits (this skips Presidio, and its
# import, for ordinary categorical data).
MIN_DIGITS = 6
# What a date looks like before pandas is asked (pandas reads "7th-8th" as a date): 2024-01-31, 31/01/2024,
# 31.1.24, 31 Jan 2024, January 31, 2024, with an optional time.
_DATE_SHAPE = re.compile(
    r"^\s*(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}"
    r"|\d{1,2}\s+[A-Za-z]{3,9}\.?,?\s+\d{2,4}|[A-Za-z]{3,9}\.?\s+\d{1,2},?\s+\d{2,4})"
    r"(?:[T\s]+\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}:?\d{2}|[AaPp][Mm])?)?\s*$"
)
_WORD = re.compile(r"\S*\w\S*")

REASONS = {
    "EMAIL_ADDRESS": "e-mail addresses (pattern)",
    "PHONE_NUMBER": "phone numbers (pattern)",
    "CREDIT_CARD": "credit card numbers (pattern)",
    "IBAN_CODE": "bank account numbers, IBAN (pattern)",
    "US_SSN": "national ids: US social security numbers (pattern)",
    "UK_NINO": "national ids: UK national insurance numbers (pattern)",
    "ES_NIF": "national ids: Spanish NIF (pattern)",
    "IT_FISCAL_CODE": "national ids: Italian fiscal codes (pattern)",
    "date": "dates (e.g. a date of birth)",
    "free_text": "free text",
    "id": "unique per row (id)",
    "name": "high-cardinality text (names)",
}


@dataclass(frozen=True)
class Finding:
    """A column that looks identifying: why, and the measured share that says so (no value)."""

    column: str
    kind: str
    share: float
    measure: str

    @property
    def reason(self) -> str:
        """What the column looks like, in words."""
        return REASONS[self.kind]

    def summary(self) -> str:
        """The finding in one line of an error message: the column, why, and the measured share."""
        amount = f"{self.share:.1f}" if self.kind == "free_text" else f"{self.share:.0%}"
        return f"{self.column!r}: {self.reason} ({self.measure}: {amount})"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"kind": self.kind, "reason": self.reason, "share": round(self.share, 4), "measure": self.measure}


def find_identifiers(
    frame: pd.DataFrame, params: IdentifierParams, max_categories: int, skip: tuple[str, ...] = ()
) -> list[Finding]:
    """The columns of `frame` (except `skip`) that look like direct identifiers or personal free text."""
    findings = []
    for column in frame.columns:
        if column in skip:
            continue
        finding = _look_at(str(column), frame[column], params, max_categories)
        if finding is not None:
            findings.append(finding)
    return findings


def _look_at(column: str, values: pd.Series, params: IdentifierParams, max_categories: int) -> Finding | None:
    present = values.dropna()
    if present.empty or pd.api.types.is_bool_dtype(present):
        return None
    if pd.api.types.is_datetime64_any_dtype(present):
        return Finding(column, "date", 1.0, "values that are dates")
    distinct = int(present.nunique())
    unique_share = distinct / len(present)
    many = distinct > max_categories
    if pd.api.types.is_numeric_dtype(present):
        if many and unique_share >= params.unique_share and _id_shaped(present):
            return Finding(column, "id", unique_share, "distinct values per row")
        return None
    sample = present.sample(min(len(present), params.sample_rows), random_state=SAMPLE_SEED)
    if pd.api.types.infer_dtype(sample, skipna=True) in ("date", "datetime", "datetime64"):
        return Finding(column, "date", 1.0, "values that are dates")
    text = sample.astype(str).str.strip()
    entity, share = _patterns(text)
    if entity is not None and share >= params.pattern_share:
        return Finding(column, entity, share, "sampled values matching")
    dates = _date_share(text)
    if dates >= params.pattern_share:
        return Finding(column, "date", dates, "sampled values that are dates")
    if float(_as_numbers(text).notna().mean()) >= NUMBER_SHARE:
        # A numeric column with a few stray text values ("unknown" among incomes): judged as the numbers it
        # holds; validation counts the text values (without quoting those of a protected column).
        written = present.astype(str).str.strip()
        numbers = _as_numbers(written)
        written, numbers = written[numbers.notna()], numbers.dropna()
        distinct = int(numbers.nunique())
        share = distinct / len(present)
        if distinct > max_categories and share >= params.unique_share and _id_shaped(numbers, written):
            return Finding(column, "id", share, "distinct values per row")
        return None
    if not many:
        return None
    words = float(text.map(lambda v: len(_WORD.findall(v))).mean())
    if words >= params.free_text_words:
        return Finding(column, "free_text", words, "words per value on average")
    if unique_share >= params.unique_share:
        return Finding(column, "id", unique_share, "distinct values per row")
    if unique_share >= params.text_unique_share:
        return Finding(column, "name", unique_share, "distinct values per row")
    return None


def _id_shaped(values: pd.Series, written: pd.Series | None = None) -> bool:
    """Whole numbers that are consecutive-ish or all of one width (an amount is neither).

    `written`: the same values as text, when they were read as text, so that the width counts leading zeros.
    """
    numbers = pd.to_numeric(values)
    if not bool((numbers == numbers.round()).all()):
        return False  # measurements with decimals are not ids
    low, high, distinct = float(numbers.min()), float(numbers.max()), int(numbers.nunique())
    if (high - low + 1) <= ID_SPAN_FACTOR * distinct:
        return True
    digits = written.str.lstrip("+-") if written is not None else numbers.abs().astype("int64").astype(str)
    widths = digits.str.len()
    return int(widths.nunique()) == 1 and int(widths.iloc[0]) >= ID_MIN_DIGITS


def _as_numbers(text: pd.Series) -> pd.Series:
    """Text values as numbers, written with either decimal mark; NaN where a value is no number."""
    parsed = pd.to_numeric(text, errors="coerce")
    return parsed.fillna(pd.to_numeric(text.str.replace(",", ".", regex=False), errors="coerce"))


def _date_share(text: pd.Series) -> float:
    shaped = text[text.str.match(_DATE_SHAPE)]
    if shaped.empty:
        return 0.0
    return float(parse_dates(shaped).notna().sum() / len(text))


def _patterns(text: pd.Series) -> tuple[str | None, float]:
    """The entity most sampled values hold, and that share (each distinct value is analysed once)."""
    counts = text.value_counts()
    candidates = [v for v in counts.index if "@" in v or _digits(v) >= MIN_DIGITS]
    if not candidates:
        return None, 0.0
    matched: dict[str, int] = {}
    for value in candidates:
        for entity in _entities(value):
            matched[entity] = matched.get(entity, 0) + int(counts[value])
    if not matched:
        return None, 0.0
    entity = max(matched, key=lambda e: matched[e])
    return entity, matched[entity] / len(text)


def _entities(value: str) -> set[str]:
    """The entities Presidio finds in one value; the first recognizer that matches settles it."""
    has_at, digits = "@" in value, _digits(value) >= MIN_DIGITS
    for recognizer in _recognizers():
        entities = recognizer.supported_entities
        if not (has_at if "EMAIL_ADDRESS" in entities else digits):
            continue  # cannot match: an e-mail needs an "@", every other entity here six digits
        found = {r.entity_type for r in recognizer.analyze(value, entities) if r.score >= MIN_SCORE}
        if found:
            return found
    return set()


def _digits(value: str) -> int:
    return sum(c.isdigit() for c in value)


@functools.cache
def _recognizers() -> tuple[Any, ...]:
    """Presidio's pattern recognizers (plus its phonenumbers-based phone one), built once; no NLP engine."""
    import tldextract
    from presidio_analyzer import predefined_recognizers as presidio

    # The bundled public-suffix snapshot: no download, no cache folder (tldextract would otherwise fetch the
    # list from the network on first use).
    suffixes = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=())

    class OfflineEmailRecognizer(presidio.EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return suffixes(pattern_text).fqdn != ""

    built = []
    for entity, name in RECOGNIZERS.items():
        cls = OfflineEmailRecognizer if entity == "EMAIL_ADDRESS" else getattr(presidio, name)
        built.append(cls())
    return tuple(built)


def handled_by(finding: Finding, privacy: PrivacyParams, data: DataParams) -> str | None:
    """The rule that deals with a flagged column, or None (a kept date column still needs a data.dates rule)."""
    column = finding.column
    # data.drop does not count: it only keeps a column out of the model's inputs, and its raw values would
    # still be written to data/interim.
    for rule, columns in (
        ("privacy.drop", privacy.drop),
        ("privacy.pseudonymize", privacy.pseudonymize),
        ("data.dates", data.dates),
    ):
        if column in columns:
            return rule
    if column in privacy.keep and finding.kind != "date":
        return "privacy.keep"
    return None


def _yaml_list(columns: list[str]) -> str:
    return "[" + ", ".join(json.dumps(c) for c in columns) + "]"


def check_identifiers(findings: list[Finding], privacy: PrivacyParams, data: DataParams, file: str) -> None:
    """Every flagged column is named in a rule, or a DataError lists each one, why, and the rule to add."""
    open_ = [f for f in findings if handled_by(f, privacy, data) is None]
    if not open_:
        return
    kept_dates = [f.column for f in open_ if f.kind == "date" and f.column in privacy.keep]
    dates = [f.column for f in open_ if f.kind == "date" and f.column not in privacy.keep]
    others = [f.column for f in open_ if f.kind != "date"]
    advice = []
    if others:
        advice.append(
            f"add privacy.drop: {_yaml_list(others)} (or privacy.pseudonymize for an id that must still link rows, "
            f"or privacy.keep for a column reviewed and kept on purpose)"
        )
    if dates:
        advice.append(
            f"add a data.dates rule for {_yaml_list(dates)} (e.g. data.dates: {{{json.dumps(dates[0])}: year}}; "
            f"year, days or drop), or drop them with privacy.drop"
        )
    if kept_dates:
        advice.append(
            f"{_yaml_list(kept_dates)} in privacy.keep hold dates: add a data.dates rule for them "
            f"(e.g. data.dates: {{{json.dumps(kept_dates[0])}: year}}; year, days or drop)"
        )
    raise DataError(
        f"{file}: {len(open_)} columns look like direct identifiers or personal free text and no rule names them "
        f"(nothing was written): {'; '.join(f.summary() for f in open_)}. To go on, "
        f"{'; '.join(advice)}. privacy.identifiers.check: false turns this check off"
    )


def identifier_report(
    findings: list[Finding], privacy: PrivacyParams, data: DataParams, checked: bool
) -> dict[str, Any]:
    """The findings for reports/privacy.json: per column its kind, reason, share and the rule that handles it."""
    return {
        "checked": checked,
        "findings": {f.column: {**f.to_dict(), "handled_by": handled_by(f, privacy, data)} for f in findings},
    }
