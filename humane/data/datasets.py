"""Built-in datasets: where their raw files are, how to parse them, and their documented schema."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from humane.core.errors import DataError
from humane.core.io import md5_of
from humane.core.paths import Paths


@dataclass(frozen=True)
class RawFile:
    """A shipped raw file and the md5 its publisher gives for it."""

    path: Path
    md5: str


@dataclass(frozen=True)
class BuiltinDataset:
    """A dataset shipped in data/raw with its documented schema."""

    name: str
    train: RawFile
    test: RawFile | None
    reader: Callable[[Path], pd.DataFrame]
    numeric: list[str]
    categories: dict[str, list[str]]
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)


ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
]

ADULT_CATEGORIES = {
    "workclass": [
        "Private",
        "Self-emp-not-inc",
        "Self-emp-inc",
        "Federal-gov",
        "Local-gov",
        "State-gov",
        "Without-pay",
        "Never-worked",
    ],
    "education": [
        "Bachelors",
        "Some-college",
        "11th",
        "HS-grad",
        "Prof-school",
        "Assoc-acdm",
        "Assoc-voc",
        "9th",
        "7th-8th",
        "12th",
        "Masters",
        "1st-4th",
        "10th",
        "Doctorate",
        "5th-6th",
        "Preschool",
    ],
    "marital-status": [
        "Married-civ-spouse",
        "Divorced",
        "Never-married",
        "Separated",
        "Widowed",
        "Married-spouse-absent",
        "Married-AF-spouse",
    ],
    "occupation": [
        "Tech-support",
        "Craft-repair",
        "Other-service",
        "Sales",
        "Exec-managerial",
        "Prof-specialty",
        "Handlers-cleaners",
        "Machine-op-inspct",
        "Adm-clerical",
        "Farming-fishing",
        "Transport-moving",
        "Priv-house-serv",
        "Protective-serv",
        "Armed-Forces",
    ],
    "relationship": ["Wife", "Own-child", "Husband", "Not-in-family", "Other-relative", "Unmarried"],
    "race": ["White", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other", "Black"],
    "sex": ["Female", "Male"],
    "native-country": [
        "United-States",
        "Cambodia",
        "England",
        "Puerto-Rico",
        "Canada",
        "Germany",
        "Outlying-US(Guam-USVI-etc)",
        "India",
        "Japan",
        "Greece",
        "South",
        "China",
        "Cuba",
        "Iran",
        "Honduras",
        "Philippines",
        "Italy",
        "Poland",
        "Jamaica",
        "Vietnam",
        "Mexico",
        "Portugal",
        "Ireland",
        "France",
        "Dominican-Republic",
        "Laos",
        "Ecuador",
        "Taiwan",
        "Haiti",
        "Columbia",
        "Hungary",
        "Guatemala",
        "Nicaragua",
        "Scotland",
        "Thailand",
        "Yugoslavia",
        "El-Salvador",
        "Trinadad&Tobago",
        "Peru",
        "Hong",
        "Holand-Netherlands",
    ],
    "income": ["<=50K", ">50K"],
}

# Ranges documented by the census extraction (ages 17-90 after top-coding, hours 1-99, etc.).
ADULT_RANGES = {
    "age": (17, 90),
    "fnlwgt": (1, 2_000_000),
    "education-num": (1, 16),
    "capital-gain": (0, 99_999),
    "capital-loss": (0, 4_356),
    "hours-per-week": (1, 99),
}


def read_adult(path: Path) -> pd.DataFrame:
    """Parse an Adult file: comma+space separated, '?' for missing, test labels end with '.'."""
    frame = pd.read_csv(
        path,
        header=None,
        names=ADULT_COLUMNS,
        sep=",",
        skipinitialspace=True,
        na_values=["?"],
        comment="|",  # adult.test opens with a '|1x3 Cross validator' note line
    )
    frame = frame.dropna(how="all")
    frame["income"] = frame["income"].str.rstrip(".")
    return frame


GERMAN_COLUMNS = [
    "checking_status",
    "duration",
    "credit_history",
    "purpose",
    "credit_amount",
    "savings",
    "employment",
    "installment_rate",
    "personal_status",
    "other_debtors",
    "residence_since",
    "property",
    "age",
    "other_installment_plans",
    "housing",
    "existing_credits",
    "job",
    "num_dependents",
    "telephone",
    "foreign_worker",
    "credit_risk",
]

# Readable names for the coded attributes, from the UCI documentation.
GERMAN_CODES = {
    "checking_status": {"A11": "< 0 DM", "A12": "0-200 DM", "A13": ">= 200 DM", "A14": "no account"},
    "credit_history": {
        "A30": "no credits / all paid",
        "A31": "all paid at this bank",
        "A32": "existing paid",
        "A33": "delay in past",
        "A34": "critical account",
    },
    "purpose": {
        "A40": "car (new)",
        "A41": "car (used)",
        "A42": "furniture/equipment",
        "A43": "radio/television",
        "A44": "domestic appliances",
        "A45": "repairs",
        "A46": "education",
        "A47": "vacation",
        "A48": "retraining",
        "A49": "business",
        "A410": "others",
    },
    "savings": {
        "A61": "< 100 DM",
        "A62": "100-500 DM",
        "A63": "500-1000 DM",
        "A64": ">= 1000 DM",
        "A65": "unknown / none",
    },
    "employment": {"A71": "unemployed", "A72": "< 1 year", "A73": "1-4 years", "A74": "4-7 years", "A75": ">= 7 years"},
    "personal_status": {
        "A91": "male: divorced/separated",
        "A92": "female: divorced/separated/married",
        "A93": "male: single",
        "A94": "male: married/widowed",
        "A95": "female: single",
    },
    "other_debtors": {"A101": "none", "A102": "co-applicant", "A103": "guarantor"},
    "property": {
        "A121": "real estate",
        "A122": "savings agreement / life insurance",
        "A123": "car or other",
        "A124": "unknown / none",
    },
    "other_installment_plans": {"A141": "bank", "A142": "stores", "A143": "none"},
    "housing": {"A151": "rent", "A152": "own", "A153": "for free"},
    "job": {
        "A171": "unemployed / unskilled non-resident",
        "A172": "unskilled resident",
        "A173": "skilled employee / official",
        "A174": "management / self-employed / highly qualified",
    },
    "telephone": {"A191": "none", "A192": "yes"},
    "foreign_worker": {"A201": "yes", "A202": "no"},
}

GERMAN_SEX = {"A91": "male", "A92": "female", "A93": "male", "A94": "male", "A95": "female"}


def read_german(path: Path) -> pd.DataFrame:
    """Parse german.data: decode attribute codes, derive `sex` from personal status, name the label."""
    frame = pd.read_csv(path, header=None, names=GERMAN_COLUMNS, sep=" ")
    frame.insert(frame.columns.get_loc("personal_status") + 1, "sex", frame["personal_status"].map(GERMAN_SEX))
    for column, codes in GERMAN_CODES.items():
        frame[column] = frame[column].map(codes)
    frame["credit_risk"] = frame["credit_risk"].map({1: "good", 2: "bad"})
    return frame


GERMAN_CATEGORIES = {column: list(codes.values()) for column, codes in GERMAN_CODES.items()}
GERMAN_CATEGORIES["sex"] = ["female", "male"]
GERMAN_CATEGORIES["credit_risk"] = ["good", "bad"]

BUILTINS: dict[str, BuiltinDataset] = {
    "adult": BuiltinDataset(
        name="adult",
        train=RawFile(Paths.raw_dir / "adult" / "adult.data", "5d7c39d7b8804f071cdd1f2a7c460872"),
        test=RawFile(Paths.raw_dir / "adult" / "adult.test", "35238206dfdf7f1fe215bbb874adecdc"),
        reader=read_adult,
        numeric=list(ADULT_RANGES),
        categories=ADULT_CATEGORIES,
        ranges=ADULT_RANGES,
    ),
    "german": BuiltinDataset(
        name="german",
        train=RawFile(Paths.raw_dir / "german" / "german.data", "6b94c2e35480e671545e52a808a8a549"),
        test=None,
        reader=read_german,
        numeric=[
            "duration",
            "credit_amount",
            "installment_rate",
            "residence_since",
            "age",
            "existing_credits",
            "num_dependents",
        ],
        categories=GERMAN_CATEGORIES,
        ranges={"age": (18, 100), "duration": (1, 120), "credit_amount": (1, 1_000_000)},
    ),
}


def verify(raw: RawFile, root: Path) -> Path:
    """Return the file's path after checking it exists and matches its published checksum."""
    path = root / raw.path
    if not path.is_file():
        raise DataError(f"{raw.path}: built-in data file is missing (restore it with `git checkout -- {raw.path}`)")
    actual = md5_of(path)
    if actual != raw.md5:
        raise DataError(f"{raw.path}: checksum mismatch (md5 {actual}, expected {raw.md5}); the file was altered")
    return path
