import json

import numpy as np
import pandas as pd
import pytest

from humane.core.errors import DataError
from humane.data.params import DataParams
from humane.data.schema import resolve_schema
from humane.data.site_stats import group_mix, merge_summaries, site_summary
from humane.modeling.features import signed_log1p

SPEC = DataParams(
    name="t",
    intended_use="use.md",
    source="adult",
    target="income",
    positive_label=">50K",
    sensitive_features=["sex", "race"],
    drop=["fnlwgt"],
)


def _frame(tiny_adult: pd.DataFrame, copies: int = 5) -> pd.DataFrame:
    """60 rows: tiny_adult five times over, and one person of a race nobody else shares."""
    frame = pd.concat([tiny_adult] * copies, ignore_index=True)
    frame.loc[7, "race"] = "Amer-Indian-Eskimo"
    return frame


def test_summary_holds_sums_and_counts_only(tiny_adult):
    frame = _frame(tiny_adult)
    schema = resolve_schema(SPEC, frame)
    summary = site_summary(frame, schema, min_group_size=5)
    assert json.loads(json.dumps(summary)) == summary  # JSON as it is sent
    assert summary["rows"] == 60 and summary["label_counts"] == {"positive": 30, "negative": 30}
    age = summary["columns"]["age"]
    # No minimum or maximum: each is one person's value.
    assert set(age) == {"count", "sum", "sum_sq", "log_sum", "log_sum_sq", "withheld"}
    assert age["count"] == 60 and age["sum"] == pytest.approx(frame["age"].sum())
    assert age["sum_sq"] == pytest.approx((frame["age"].astype(float) ** 2).sum())
    gain = frame["capital-gain"].to_numpy(dtype=float)
    assert summary["columns"]["capital-gain"]["log_sum"] == pytest.approx(signed_log1p(gain).sum())
    workclass = summary["columns"]["workclass"]
    assert dict(map(tuple, workclass["categories"])) == {"Private": 20, "State-gov": 20}
    assert workclass["missing"] == 20 and workclass["withheld"] == 0


def test_small_groups_never_appear_in_a_summary(tiny_adult):
    frame = _frame(tiny_adult)
    schema = resolve_schema(SPEC, frame)
    text = json.dumps(site_summary(frame, schema, min_group_size=5))
    assert "Amer-Indian-Eskimo" not in text
    summary = json.loads(text)
    assert summary["columns"]["race"]["withheld"] == 1
    assert sum(n for _, n in summary["columns"]["race"]["categories"]) == 59
    # A column's nulls below the threshold are withheld too, not sent as a missing count.
    summary = site_summary(frame, schema, min_group_size=25)
    assert summary["columns"]["workclass"] == {"categories": [], "missing": 0, "withheld": 60}
    # A numeric column with fewer values than the threshold sends no sums: a sum of one value is that value.
    sparse = frame.astype({"capital-loss": float})
    sparse["capital-loss"] = np.nan
    sparse.loc[3, "capital-loss"] = 1234.0
    loss = site_summary(sparse, schema, min_group_size=5)["columns"]["capital-loss"]
    assert loss == {"count": 0, "sum": 0.0, "sum_sq": 0.0, "log_sum": 0.0, "log_sum_sq": 0.0, "withheld": 1}
    mix = group_mix(site_summary(frame, schema, min_group_size=5))
    assert mix["race"]["(withheld)"] == pytest.approx(1 / 60) and sum(mix["sex"].values()) == pytest.approx(1)
    with pytest.raises(DataError, match="fewer than min_group_size"):
        site_summary(frame.head(4), schema, min_group_size=5)


def test_noise_changes_counts_but_keeps_them_non_negative_integers(tiny_adult):
    frame = _frame(tiny_adult, copies=1)  # 12 rows: small counts that the noise could push below zero
    schema = resolve_schema(SPEC, frame)
    exact = site_summary(frame, schema, min_group_size=2)
    noisy = site_summary(frame, schema, min_group_size=2, noise=3.0, seed=1)
    assert noisy == site_summary(frame, schema, min_group_size=2, noise=3.0, seed=1)  # seeded
    assert noisy != site_summary(frame, schema, min_group_size=2, noise=3.0, seed=2)
    counts = [noisy["rows"], *noisy["label_counts"].values()]
    for column in schema.categorical:
        stats = noisy["columns"][column]
        counts += [stats["missing"], stats["withheld"], *(n for _, n in stats["categories"])]
        # Which values are sent is decided on the true counts, before the noise.
        assert [v for v, _ in stats["categories"]] == [v for v, _ in exact["columns"][column]["categories"]]
    counts += [noisy["columns"][c]["count"] for c in schema.numeric]
    assert all(isinstance(n, int) and n >= 0 for n in counts)
    exact_counts = [exact["rows"], *exact["label_counts"].values()]
    assert counts[: len(exact_counts)] != exact_counts
    assert noisy["columns"]["age"]["sum"] != exact["columns"]["age"]["sum"]


def test_merge_adds_sites_up_and_refuses_different_roles(tiny_adult):
    frame = _frame(tiny_adult)
    schema = resolve_schema(SPEC, frame)
    a, b, c = frame.iloc[:20], frame.iloc[20:45], frame.iloc[45:]
    parts = [site_summary(part, schema, min_group_size=1) for part in (a, b, c)]
    whole = site_summary(frame, schema, min_group_size=1)
    merged = merge_summaries(parts)
    assert merge_summaries([merge_summaries(parts[:2]), parts[2]]) == merged  # associative
    assert merged["sites"] == 3 and merged["rows"] == whole["rows"]
    assert merged["label_counts"] == whole["label_counts"]
    for column in schema.numeric:
        assert merged["columns"][column] == pytest.approx(whole["columns"][column])
    for column in schema.categorical:
        assert merged["columns"][column] == whole["columns"][column]
    other = dict(parts[1], numeric=[c for c in parts[1]["numeric"] if c != "age"])
    with pytest.raises(DataError, match=r"site summary 1 differs .*numeric"):
        merge_summaries([parts[0], other])
    with pytest.raises(DataError, match="not a site summary"):
        merge_summaries([parts[0], {"rows": 3}])
    broken = json.loads(json.dumps(parts[2]))
    broken["columns"]["sex"]["categories"][0][1] = -1
    with pytest.raises(DataError, match="site summary 1: a count"):
        merge_summaries([parts[0], broken])


def test_numbers_in_a_numeric_column_only(tiny_adult):
    frame = _frame(tiny_adult).astype({"age": "object"})
    frame.loc[3, "age"] = "old"
    with pytest.raises(DataError, match=r"'age'.*not numbers"):
        site_summary(frame, resolve_schema(SPEC, tiny_adult), min_group_size=1)
    infinite = _frame(tiny_adult).astype({"capital-gain": float})
    infinite.loc[5, "capital-gain"] = np.inf
    with pytest.raises(DataError, match=r"'capital-gain'.*infinite"):
        site_summary(infinite, resolve_schema(SPEC, tiny_adult), min_group_size=1)
