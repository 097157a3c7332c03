"""A federated site's aggregates: what the global preprocessor needs, and nothing row-level.

A site summarises its own training rows (`site_summary`); the coordinator adds the sites' summaries up
(`merge_summaries`) and fits the preprocessor from the sums (humane.modeling.federated.preprocessor_from_summary).

What a summary holds (all JSON: ints, floats, the column names and the category values that pass the threshold):
- `rows` and `label_counts` {"positive", "negative"};
- per numeric column: `count` (non-null values), `sum`, `sum_sq`, and `log_sum`, `log_sum_sq` of signed_log1p of
  the values (for whichever columns the coordinator's preprocess.log_transform names); no minimum or maximum:
  each is one person's value, and the preprocessor does not need them. A column with fewer than min_group_size
  values at the site (a sum of one value is that value) sends zeros, and its values are counted in `withheld`;
- per categorical column (sensitive ones included): `categories`, a list of [value, rows] for the values seen in at
  least `min_group_size` rows, `missing` (null rows, sent under the same threshold) and `withheld` (the rows of
  values, or nulls, below it: counted, never named);
- the column roles (`numeric`, `categorical`, `sensitive`, `target`, `labels`, `positive_label`): names and the
  label values of the profile, no data.

With `noise` > 0 Gaussian noise of that standard deviation, in rows, is added to every count (rounded, never
below 0), and noise of as many "typical values" (the column's root mean square) to every sum; a value's presence
is decided on its true count before the noise.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from humane.core.errors import DataError
from humane.data.schema import Schema

FORMAT = "humane-site-summary/1"
ROLES = ("target", "labels", "positive_label", "numeric", "categorical", "sensitive")
NUMERIC_SUMS = ("sum", "sum_sq", "log_sum", "log_sum_sq")


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON writes (str, int, float, bool stay what they are)."""
    return value.item() if isinstance(value, np.generic) else value


def _signed_log1p(values: np.ndarray) -> np.ndarray:
    # The same formula as humane.modeling.features.signed_log1p (a layer above; tests/unit/test_site_stats.py
    # checks that the two agree).
    return np.sign(values) * np.log1p(np.abs(values))


def _numeric_stats(values: pd.Series, column: str, min_group_size: int) -> dict[str, float | int]:
    try:
        present = pd.to_numeric(values.dropna(), errors="raise").to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(
            f"column {column!r}: numeric column holds values that are not numbers (values withheld)"
        ) from None
    if not np.isfinite(present).all():
        raise DataError(f"column {column!r}: numeric column holds infinite values (values withheld)")
    if present.size < min_group_size:
        return {"count": 0, **dict.fromkeys(NUMERIC_SUMS, 0.0), "withheld": int(present.size)}
    logged = _signed_log1p(present)
    return {
        "count": int(present.size),
        "sum": float(present.sum()),
        "sum_sq": float((present**2).sum()),
        "log_sum": float(logged.sum()),
        "log_sum_sq": float((logged**2).sum()),
        "withheld": 0,
    }


def _category_stats(values: pd.Series, min_group_size: int) -> dict[str, Any]:
    counts = values.astype("object").value_counts(dropna=True)
    kept = counts[counts >= min_group_size]
    nulls = int(values.isna().sum())
    missing = nulls if nulls >= min_group_size else 0
    withheld = int(counts[counts < min_group_size].sum()) + (nulls - missing)
    categories = [[_plain(v), int(n)] for v, n in sorted(kept.items(), key=lambda item: str(item[0]))]
    return {"categories": categories, "missing": missing, "withheld": withheld}


def site_summary(
    frame: pd.DataFrame, schema: Schema, *, min_group_size: int, noise: float = 0.0, seed: int = 0
) -> dict[str, Any]:
    """The aggregates of one site's training rows (see the module docstring for what is and is not in them).

    Args:
        frame: the site's training rows (after its train/validation split), with the label column.
        schema: the site's resolved column roles (humane.data.schema.resolve_schema on its own rows).
        min_group_size: a category (or the nulls of a column) with fewer rows is withheld: counted, not named.
        noise: standard deviation, in rows, of the Gaussian noise added to counts and sums; 0: none.
        seed: seed of the noise.

    Returns:
        A JSON-able mapping (FORMAT).

    Raises:
        DataError: a role's column is absent, a numeric column holds non-numbers, or the site has fewer rows than
            min_group_size (then nothing about it can be sent).

    """
    if min_group_size < 1 or noise < 0:
        raise DataError(f"min_group_size must be >= 1 and noise >= 0, got {min_group_size} and {noise}")
    absent = [c for c in [*schema.numeric, *schema.categorical, schema.target] if c not in frame]
    if absent:
        raise DataError(f"the site's training rows lack the columns {absent}")
    if len(frame) < min_group_size:
        raise DataError(
            f"the site has {len(frame)} training rows, fewer than min_group_size ({min_group_size}): "
            "no aggregate of them is sent"
        )
    positive = int((frame[schema.target] == schema.positive_label).sum())
    columns: dict[str, dict[str, Any]] = {c: _numeric_stats(frame[c], c, min_group_size) for c in schema.numeric}
    columns.update({c: _category_stats(frame[c], min_group_size) for c in schema.categorical})
    summary = {
        "format": FORMAT,
        "sites": 1,
        "rows": len(frame),
        "label_counts": {"positive": positive, "negative": len(frame) - positive},
        "target": schema.target,
        "labels": [_plain(v) for v in schema.labels],
        "positive_label": _plain(schema.positive_label),
        "numeric": list(schema.numeric),
        "categorical": list(schema.categorical),
        "sensitive": list(schema.sensitive),
        "min_group_size": min_group_size,
        "noise": float(noise),
        "columns": columns,
    }
    return add_noise(summary, noise, np.random.default_rng(seed)) if noise > 0 else summary


def _noisy_count(count: int, sd: float, rng: np.random.Generator) -> int:
    return max(0, round(count + float(rng.normal(0.0, sd))))


def add_noise(summary: dict[str, Any], sd: float, rng: np.random.Generator) -> dict[str, Any]:
    """A copy with Gaussian noise on every count (rounded, >= 0) and sum (sd typical values: the column's RMS)."""
    out = json.loads(json.dumps(summary))
    out["rows"] = _noisy_count(out["rows"], sd, rng)
    out["label_counts"] = {k: _noisy_count(v, sd, rng) for k, v in out["label_counts"].items()}
    for column in out["numeric"]:
        stats = out["columns"][column]
        n = max(stats["count"], 1)
        for name, total in (("sum", "sum_sq"), ("log_sum", "log_sum_sq")):
            rms_sq = stats[total] / n
            stats[name] += float(rng.normal(0.0, sd * math.sqrt(rms_sq)))
            stats[total] = max(0.0, stats[total] + float(rng.normal(0.0, sd * rms_sq)))
        stats["count"] = _noisy_count(stats["count"], sd, rng) if stats["count"] else 0
        stats["withheld"] = _noisy_count(stats["withheld"], sd, rng) if stats["withheld"] else 0
    for column in out["categorical"]:
        stats = out["columns"][column]
        stats["categories"] = [[v, _noisy_count(n, sd, rng)] for v, n in stats["categories"]]
        for key in ("missing", "withheld"):
            stats[key] = _noisy_count(stats[key], sd, rng) if stats[key] else 0
    return out


def check_summary(summary: Any, name: str) -> None:
    """Fail with one line naming the site and the key when a summary is not of FORMAT."""
    if not isinstance(summary, dict) or summary.get("format") != FORMAT:
        raise DataError(f"{name}: not a site summary of format {FORMAT}")
    missing = [k for k in ("rows", "label_counts", "columns", "min_group_size", "sites", *ROLES) if k not in summary]
    missing += [
        c for c in [*summary.get("numeric", []), *summary.get("categorical", [])] if c not in summary.get("columns", {})
    ]
    if missing:
        raise DataError(f"{name}: the site summary lacks {missing}")
    counts = [summary["rows"], *summary["label_counts"].values()]
    counts += [summary["columns"][c][k] for c in summary["numeric"] for k in ("count", "withheld")]
    for column in summary["categorical"]:
        stats = summary["columns"][column]
        counts += [stats["missing"], stats["withheld"], *(n for _, n in stats["categories"])]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        raise DataError(f"{name}: a count in the site summary is not a non-negative integer")


def merge_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of site summaries, in the same format (so merging is associative).

    Raises:
        DataError: no summaries, a summary not of FORMAT, or sites whose column roles or labels differ (named by
            their position in the list).

    """
    if not summaries:
        raise DataError("no site summary to merge")
    for i, summary in enumerate(summaries):
        check_summary(summary, f"site summary {i}")
    first = summaries[0]
    for i, summary in enumerate(summaries[1:], start=1):
        differ = [role for role in ROLES if summary[role] != first[role]]
        if differ:
            raise DataError(
                f"site summary {i} differs from site summary 0 in {differ}: every site must have the "
                "same columns, roles and labels"
            )
    merged = {
        **{role: first[role] for role in ROLES},
        "format": FORMAT,
        "sites": sum(s["sites"] for s in summaries),
        "rows": sum(s["rows"] for s in summaries),
        "label_counts": {k: sum(s["label_counts"][k] for s in summaries) for k in ("positive", "negative")},
        "min_group_size": max(s["min_group_size"] for s in summaries),
        "noise": max(float(s.get("noise", 0.0)) for s in summaries),
        "columns": {},
    }
    for column in first["numeric"]:
        stats = [s["columns"][column] for s in summaries]
        merged["columns"][column] = {
            "count": sum(s["count"] for s in stats),
            **{k: float(sum(s[k] for s in stats)) for k in NUMERIC_SUMS},
            "withheld": sum(s["withheld"] for s in stats),
        }
    for column in first["categorical"]:
        merged["columns"][column] = _merge_categories([s["columns"][column] for s in summaries])
    return merged


def _merge_categories(stats: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, list[Any]] = {}
    for site in stats:
        for value, n in site["categories"]:
            # Keyed by the JSON text: the value 1 and the text "1" stay two categories, as in the encoder.
            entry = totals.setdefault(json.dumps(value), [value, 0])
            entry[1] += n
    categories = [totals[k] for k in sorted(totals, key=lambda k: str(totals[k][0]))]
    return {
        "categories": categories,
        "missing": sum(s["missing"] for s in stats),
        "withheld": sum(s["withheld"] for s in stats),
    }


def group_mix(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each sensitive feature's groups as shares of the rows (federation.json's `group_mix`).

    Withheld rows (groups below min_group_size, and small null counts) are one share, "(withheld)"; nulls sent
    are "(missing)". A numeric sensitive feature has no groups here (its sums only).
    """
    mix: dict[str, dict[str, float]] = {}
    for feature in [f for f in summary["sensitive"] if f in summary["categorical"]]:
        stats = summary["columns"][feature]
        counts = {str(v): n for v, n in stats["categories"]}
        counts.update(
            {k: stats[key] for k, key in (("(missing)", "missing"), ("(withheld)", "withheld")) if stats[key]}
        )
        total = sum(counts.values())
        mix[feature] = {g: n / total for g, n in counts.items()} if total else {}
    return mix
