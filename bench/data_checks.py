"""Time the identifier and leakage checks on full Adult, as the load and validate stages call them.

Run from the project root: python bench/data_checks.py
"""

import time
from pathlib import Path

from humane.data.datasets import read_adult
from humane.data.identifiers import find_identifiers
from humane.data.schema import resolve_schema
from humane.data.validation import leakage_checks
from humane.pipeline.params import load_params
from humane.privacy.policy import apply_policy, fit_policy

params = load_params(Path("params.yaml"))
train, test = read_adult(Path("data/raw/adult/adult.data")), read_adult(Path("data/raw/adult/adult.test"))
find_identifiers(train.head(100), params.privacy.identifiers, params.data.max_categories, skip=("income",))
t = []
for _ in range(5):
    s = time.perf_counter()
    found = find_identifiers(train, params.privacy.identifiers, params.data.max_categories, skip=("income",))
    find_identifiers(test, params.privacy.identifiers, params.data.max_categories, skip=("income",))
    t.append(time.perf_counter() - s)
median = sorted(t)[2] * 1000
print(f"identifier check, train {len(train)} + test {len(test)} rows: median {median:.0f} ms; findings {found}")
policy = fit_policy(params.privacy, train)
mtrain, mtest = apply_policy(policy, train, None), apply_policy(policy, test, None)
schema = resolve_schema(params.data, mtrain, policy.to_dict(), params.validate.min_group_rows)
t = []
for _ in range(3):
    s = time.perf_counter()
    checks = leakage_checks(
        {"train": mtrain, "test": mtest}, {"train": "adult.data", "test": "adult.test"}, schema, params.data.leakage
    )
    t.append(time.perf_counter() - s)
shared = [c for c in checks if c.rule == "shared_rows" or "shared" in c.rule]
print(
    f"leakage checks: median {sorted(t)[1]:.2f} s; {len(checks)} checks; failed/warned: "
    f"{[(c.rule, c.column, c.unexpected_count) for c in checks if not c.passed]}"
)
