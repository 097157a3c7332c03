"""Columns that look like direct identifiers or personal free text are found, named, and never quoted."""

import socket

import numpy as np
import pandas as pd
import pytest

from humane.core.errors import DataError
from humane.data import identifiers
from humane.data.datasets import read_adult, read_german
from humane.data.identifiers import check_identifiers, find_identifiers, handled_by, identifier_report
from humane.data.params import DataParams
from humane.privacy.params import IdentifierParams, PrivacyParams
from tests.conftest import ROOT

PARAMS = IdentifierParams(
    check=True, unique_share=0.9, text_unique_share=0.5, free_text_words=4, pattern_share=0.3, sample_rows=1000
)
N = 400
FIRST = [
    "Anna",
    "Ben",
    "Carla",
    "Dieter",
    "Emma",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Kim",
    "Lena",
    "Mia",
    "Noah",
    "Olga",
    "Pavel",
    "Quinn",
    "Rosa",
    "Sven",
]
LAST = [
    "Smith",
    "Meyer",
    "Rossi",
    "Garcia",
    "Khan",
    "Novak",
    "Silva",
    "Kowalski",
    "Dubois",
    "Jensen",
    "Nakamura",
    "Okafor",
    "Ivanova",
    "Haddad",
    "Larsen",
]
WORDS = ["late", "payment", "customer", "called", "about", "the", "invoice", "again", "happy", "moved", "house"]


def _people(n: int = N, seed: int = 0) -> pd.DataFrame:
    """A table with one column of each identifying kind, and ordinary columns that must not be flagged."""
    rng = np.random.default_rng(seed)
    dob = pd.Timestamp("1940-01-01") + pd.to_timedelta(rng.integers(0, 25_000, n), unit="D")
    return pd.DataFrame(
        {
            "customer_id": rng.permutation(np.arange(700_000, 700_000 + n)),  # unique, six digits each
            "row": np.arange(n),  # consecutive
            "ref": [f"R-{i:05d}x" for i in rng.permutation(n)],  # unique text
            "full name": [f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(n)],
            "born": dob.strftime("%d/%m/%Y"),
            "visited": dob,  # a datetime column (as Parquet gives it)
            "notes": [" ".join(rng.choice(WORDS, rng.integers(4, 9))) for _ in range(n)],
            "email": [f"{rng.choice(FIRST).lower()}.{i}@example.org" for i in range(n)],
            "phone": [f"+44 20 7946 {i:04d}" for i in rng.permutation(n)],
            "card": rng.choice(["4111 1111 1111 1111", "5500 0000 0000 0004", "3400 0000 0000 009"], n),
            "iban": rng.choice(["DE89 3704 0044 0532 0130 00", "GB82 WEST 1234 5698 7654 32"], n),
            "ssn": [f"{rng.integers(100, 665)}-{rng.integers(10, 99)}-{rng.integers(1000, 9999)}" for _ in range(n)],
            # Ordinary columns: a unique-per-row money amount, a measurement, categories, a flag, a label.
            "amount": rng.integers(250, 18_000, n),
            "height": rng.normal(170, 10, n).round(1),
            "city": rng.choice(["Paris", "Lyon", "Nice", "Lille"], n),
            "job title": rng.choice(
                ["skilled employee / official", "management / self-employed / highly qualified"], n
            ),
            "vip": rng.choice([True, False], n),
            "y": rng.integers(0, 2, n),
        }
    )


def _findings(frame, **kw):
    return {f.column: f for f in find_identifiers(frame, PARAMS, max_categories=50, skip=("y",), **kw)}


def test_each_identifying_kind_is_found_and_ordinary_columns_are_not():
    found = _findings(_people())
    kinds = {column: f.kind for column, f in found.items()}
    assert kinds == {
        "customer_id": "id",
        "row": "id",
        "ref": "id",
        "full name": "name",
        "born": "date",
        "visited": "date",
        "notes": "free_text",
        "email": "EMAIL_ADDRESS",
        "phone": "PHONE_NUMBER",
        "card": "CREDIT_CARD",
        "iban": "IBAN_CODE",
        "ssn": "US_SSN",
    }
    assert found["customer_id"].share == 1.0 and found["email"].share == 1.0
    assert found["full name"].reason == "high-cardinality text (names)" and 0.5 <= found["full name"].share < 0.9
    assert found["notes"].summary().startswith("'notes': free text (words per value on average: ")


def test_small_tables_and_categories_are_not_ids():
    # Twelve rows: every value is distinct, but twelve values are categories (max_categories), not ids.
    tiny = _people(12)[["customer_id", "ref", "full name", "city", "y"]]
    assert _findings(tiny) == {}


def test_a_numeric_column_with_a_few_text_values_is_judged_as_numbers():
    rng = np.random.default_rng(3)
    income = rng.normal(3000, 500, N).round(2).astype(str).astype(object)  # unique per row, as text
    income[[5, 17]] = "unknown"
    comma = np.char.replace(income.astype(str), ".", ",").astype(object)  # written with a decimal comma
    padded = np.array([f"{i:07d}" for i in rng.permutation(np.arange(1, N * 50, 50))], dtype=object)
    padded[9] = "n/a"  # random account numbers, zero-padded to one width: still an id with a stray text value
    frame = pd.DataFrame({"income": income, "income_de": comma, "account": padded, "y": rng.integers(0, 2, N)})
    assert {c: f.kind for c, f in _findings(frame).items()} == {"account": "id"}
    texts = frame.assign(income=[f"{v} unknown" for v in income])  # mostly text: still a text column
    assert _findings(texts[["income", "y"]])["income"].kind == "id"


def test_the_real_datasets_raise_nothing():
    adult = read_adult(ROOT / "data/raw/adult/adult.data")
    assert find_identifiers(adult, PARAMS, 50, skip=("income",)) == []
    german = read_german(ROOT / "data/raw/german/german.data")
    assert find_identifiers(german, PARAMS, 50, skip=("credit_risk",)) == []  # credit_amount is no id


def test_the_email_check_never_touches_the_network(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    identifiers._recognizers.cache_clear()  # built afresh under the blocked network
    try:
        frame = pd.DataFrame({"contact": [f"someone.{i}@mail.example.co.uk" for i in range(60)], "y": [0, 1] * 30})
        assert _findings(frame)["contact"].kind == "EMAIL_ADDRESS"
    finally:
        identifiers._recognizers.cache_clear()
    assert attempts == []


def _privacy(**kw):
    base = dict(
        drop=[],
        pseudonymize=[],
        bins={},
        top_code={},
        group_rare={},
        key_env="K",
        key_block=None,
        quasi_identifiers=[],
        k=2,
        identifiers=PARAMS,
    )
    base.update(kw)
    return PrivacyParams(**base)


def _data(**kw):
    base = dict(
        name="t",
        intended_use="use.md",
        source="data/raw/t.csv",
        target="y",
        positive_label=1,
        sensitive_features=["city"],
    )
    base.update(kw)
    return DataParams(**base)


def test_an_unnamed_identifying_column_stops_the_load_naming_it_and_the_rule_never_a_value():
    frame = _people()
    findings = find_identifiers(frame, PARAMS, 50, skip=("y",))
    with pytest.raises(DataError) as err:
        check_identifiers(findings, _privacy(), _data(), "data/raw/t.csv")
    message = str(err.value)
    assert message.startswith(
        "data/raw/t.csv: 12 columns look like direct identifiers or personal free text and no "
        "rule names them (nothing was written): 'customer_id': unique per row (id) "
    )
    assert "'email': e-mail addresses (pattern) (sampled values matching: 100%)" in message
    assert "'born': dates (e.g. a date of birth)" in message
    assert 'add privacy.drop: ["customer_id", "row", "ref", "full name", "notes", "email", "phone", "card", ' in message
    assert 'add a data.dates rule for ["born", "visited"] (e.g. data.dates: {"born": year}' in message
    assert "privacy.identifiers.check: false turns this check off" in message
    for column in ["customer_id", "ref", "full name", "email", "phone", "card", "ssn", "notes", "born"]:
        for value in frame[column].astype(str).head(50):
            assert value not in message


def test_each_rule_handles_a_flagged_column_but_a_kept_date_needs_a_dates_rule():
    findings = find_identifiers(_people(), PARAMS, 50, skip=("y",))
    privacy = _privacy(
        drop=["customer_id", "email", "notes", "born"],
        pseudonymize=["ref"],
        keep=["row", "full name", "visited", "phone", "card", "iban", "ssn"],
    )
    data = _data(dates={})
    expected = r"1 columns look like .*'visited': dates .* \[\"visited\"\] in privacy.keep hold dates: add a data.dates"
    with pytest.raises(DataError, match=expected):
        check_identifiers(findings, privacy, data, "f")
    data = _data(dates={"visited": "year"})
    check_identifiers(findings, privacy, data, "f")
    report = identifier_report(findings, privacy, data, checked=True)
    assert report["findings"]["customer_id"] == {
        "kind": "id",
        "reason": "unique per row (id)",
        "share": 1.0,
        "measure": "distinct values per row",
        "handled_by": "privacy.drop",
    }
    assert {c: f["handled_by"] for c, f in report["findings"].items() if c in ("ref", "born", "visited", "row")} == {
        "ref": "privacy.pseudonymize",
        "born": "privacy.drop",
        "visited": "data.dates",
        "row": "privacy.keep",
    }
    assert all(handled_by(f, privacy, data) for f in findings)
    # data.drop keeps a column out of the model, not out of data/interim: it does not handle an identifier.
    only_model = _privacy(
        drop=["customer_id", "email", "notes"],
        pseudonymize=["ref"],
        keep=["row", "full name", "visited", "phone", "card", "iban", "ssn"],
    )
    with pytest.raises(DataError, match=r"'born': dates"):
        check_identifiers(findings, only_model, _data(drop=["born"], dates={"visited": "year"}), "f")
