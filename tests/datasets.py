"""A generated tabular dataset with everything a real user file brings (used by the own-data tests).

3,000 loan applicants, written as a `;`-separated CSV with a decimal comma: a 0/1 integer label (`repaid`),
ages past 90, a 12-row ethnic group, an applicant id, a name, a date of birth, a free-text note and an
e-mail address. The label depends on income, debt and employment, and (the injected bias) on gender; two things
are planted for the explanations: a `branch` column that stands in for gender, and self-employed applicants
whose repayment is a coin flip (the cohort where the model errs most).
No real person is described: names are syllables drawn at random.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

LOANS_PROFILE_DATA = {
    "name": "loans",
    "source": "data/raw/loans/applicants.csv",
    "test_source": None,
    "test_fraction": 0.25,
    "target": "repaid",
    "positive_label": 1,
    "labels": None,
    "sensitive_features": ["gender", "ethnicity"],
    "categorical": None,
    "numeric": None,
    "drop": [],
    "ranges": {"age": [18, 110]},
    "read": {"delimiter": ";", "decimal": ",", "thousands": None, "encoding": "utf-8"},
    "missing_labels": "error",
    "max_categories": 50,
    "dates": {},
    "intended_use": "docs/intended_use/loans.md",
}

LOANS_PRIVACY = {
    "drop": ["full_name", "notes", "email", "date_of_birth"],
    "pseudonymize": ["applicant_id"],
    "keep": [],
    "bins": {"age": [18, 30, 45, 60, 75, 90]},
    "strict_bins": False,
    "top_code": {},
    "group_rare": {},
    "key_env": "HUMANE_PSEUDONYM_KEY",
    "key_block": None,
    "quasi_identifiers": ["age", "gender", "ethnicity", "region"],
    "k": 5,
    "identifiers": {
        "check": True,
        "unique_share": 0.9,
        "text_unique_share": 0.5,
        "free_text_words": 4,
        "pattern_share": 0.3,
        "sample_rows": 1000,
    },
}

SYLLABLES = ["ka", "lo", "mi", "ra", "ten", "vo", "shi", "an", "el", "dor", "pe", "su", "ri", "mon", "ta", "bel"]
WORDS = [
    "asked",
    "about",
    "a",
    "longer",
    "term",
    "called",
    "twice",
    "prefers",
    "email",
    "contact",
    "after",
    "noon",
    "moving",
    "soon",
    "new",
    "job",
    "since",
    "spring",
    "has",
    "two",
    "children",
    "needs",
    "car",
]


def _name(rng: np.random.Generator) -> str:
    return " ".join("".join(rng.choice(SYLLABLES, rng.integers(2, 4))).title() for _ in range(2))


def loans(rows: int = 3000, seed: int = 5) -> pd.DataFrame:
    """The applicants frame (see the module docstring)."""
    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(45, 16, rows).round(), 18, 99).astype(int)
    age[:25] = rng.integers(91, 100, 25)  # older than the profile's last bin edge
    gender = rng.choice(["female", "male"], rows)
    ethnicity = rng.choice(["group_a", "group_b", "group_c"], rows, p=[0.6, 0.3, 0.1])
    ethnicity[rng.choice(rows, 12, replace=False)] = "group_d"  # a 12-row group
    employment = rng.choice(["salaried", "self-employed", "unemployed", "retired"], rows, p=[0.6, 0.2, 0.1, 0.1])
    region = rng.choice(["north", "south", "east", "west"], rows)
    income = np.round(rng.lognormal(3.5, 0.5, rows), 2)  # thousands
    debt = np.round(rng.uniform(0, 60, rows), 2)
    logit = (
        0.04 * (income - 35)
        - 0.05 * (debt - 30)
        + (employment == "salaried") * 0.8
        - (employment == "unemployed") * 1.2
        + (gender == "male") * 0.6
        - 0.2
    )
    repaid = (rng.uniform(size=rows) < 1 / (1 + np.exp(-logit))).astype(int)
    # Planted for the explanations (tests/integration/test_own_data.py): the self-employed's repayment is a coin
    # flip, a cohort where any model errs about half the time; the branch stands in for gender (90% agree).
    noisy = employment == "self-employed"
    repaid[noisy] = rng.integers(0, 2, int(noisy.sum()))
    branch = np.where((gender == "female") ^ (rng.uniform(size=rows) < 0.1), "branch_f", "branch_m")
    birth = pd.Timestamp("2026-01-01") - pd.to_timedelta(age * 365.25 + rng.integers(0, 365, rows), unit="D")
    return pd.DataFrame(
        {
            "applicant_id": rng.permutation(np.arange(100000, 100000 + rows)),
            "full_name": [_name(rng) for _ in range(rows)],
            "email": [f"user{i}.{rng.integers(1000)}@example.org" for i in range(rows)],
            "date_of_birth": birth.strftime("%Y-%m-%d"),
            "age": age,
            "gender": gender,
            "ethnicity": ethnicity,
            "region": region,
            "branch": branch,
            "employment": employment,
            "monthly income (k)": income,
            "debt ratio %": debt,
            "notes": [" ".join(rng.choice(WORDS, rng.integers(5, 12))) for _ in range(rows)],
            "repaid": repaid,
        }
    )


def write_loans(dest: Path, rows: int = 3000) -> Path:
    """The applicants as the user would bring them: `;`-separated, decimal comma."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    loans(rows).to_csv(dest, sep=";", decimal=",", index=False)
    return dest
