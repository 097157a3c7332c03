"""Attribution drift's pure parts: shares, the comparison, what is unmeasured, the breach and the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from humane.core.errors import IntegrityFailed
from humane.governance.serving import HumaneModel
from humane.modeling.params import ExplainParams
from humane.monitoring import attribution_drift, report
from humane.monitoring.champion import MonitoringError
from humane.monitoring.params import MonitorParams
from tests.unit.test_monitoring import _end, _result

REFERENCE = {
    "shares": {"relationship": 0.4, "capital-gain": 0.3, "age": 0.2, "hours-per-week": 0.1},
    "top": ["relationship", "capital-gain"],
}
SETTINGS = ExplainParams(sample_rows=50, seed=3, top_k=2)


def _explanations(shares: dict[str, float], top: list[str]) -> dict:
    """The part of reports/explanations.json the monitoring reads (the explain contract's shape)."""
    entries = {c: {"value": v, "lo": v - 0.01, "hi": v + 0.01} for c, v in shares.items()}
    return {"method": "integrated_gradients", "attributions": {"overall": {"rows": 100, "shares": entries, "top": top}}}


def _attributions(scale: dict[str, float], rows: int = 200, seed: int = 0) -> pd.DataFrame:
    """Synthetic per-row attributions whose mean |attribution| per column is about `scale` (signs random)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: s * rng.choice([-1.0, 1.0], rows) * rng.uniform(0.5, 1.5, rows) for c, s in scale.items()})


class _Served:
    """Stands in for the served HumaneModel's attribution interface: rows in, one attribution per input out."""

    explanation = "fitted"

    def __init__(self, scale: dict[str, float]) -> None:
        self.scale, self.seen = scale, 0

    def attribute(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.seen = len(frame)
        return _attributions(self.scale, len(frame))


def test_shares_are_each_columns_mean_absolute_attribution_over_the_sum():
    frame = pd.DataFrame({"a": [1.0, -3.0], "b": [-1.0, 1.0], "c": [0.0, 0.0]})
    assert attribution_drift.shares(frame) == {"a": pytest.approx(2 / 3), "b": pytest.approx(1 / 3), "c": 0.0}


@pytest.mark.parametrize("values", [[[0.0, 0.0]], [[np.nan, 1.0]], []])
def test_no_share_is_given_for_zero_non_finite_or_no_attributions(values):
    with pytest.raises(MonitoringError, match="attributions are"):
        attribution_drift.shares(pd.DataFrame(values, columns=["a", "b"]))


def test_a_top_input_whose_share_moves_beyond_the_threshold_drifts_and_one_within_it_does_not():
    batch = {"relationship": 0.25, "capital-gain": 0.36, "age": 0.27, "hours-per-week": 0.12}
    entry = attribution_drift.compare(REFERENCE, batch, threshold=0.1, top_k=2)
    # The reference's top two, then age, which entered the batch's top two (0.36, 0.27).
    assert list(entry["columns"]) == ["relationship", "capital-gain", "age"]
    assert entry["columns"]["relationship"] == {
        "reference": 0.4,
        "batch": 0.25,
        "change": pytest.approx(-0.15),
        "drifted": True,
    }
    assert entry["columns"]["capital-gain"]["drifted"] is False  # +0.06
    assert entry["columns"]["age"]["drifted"] is False  # +0.07
    assert (
        attribution_drift.compare(REFERENCE, batch, threshold=0.2, top_k=2)["columns"]["relationship"]["drifted"]
        is False
    )


def test_an_input_rising_into_the_batch_s_top_is_judged_and_can_drift():
    batch = {"relationship": 0.35, "capital-gain": 0.15, "age": 0.1, "hours-per-week": 0.4}
    entry = attribution_drift.compare(REFERENCE, batch, threshold=0.1, top_k=2)
    assert entry["columns"]["hours-per-week"]["drifted"] is True and entry["columns"]["capital-gain"]["drifted"]
    assert "age" not in entry["columns"]


def test_drift_ends_drift_detected_naming_the_input_and_its_shares():
    batch = {"relationship": 0.02, "capital-gain": 0.45, "age": 0.35, "hours-per-week": 0.18}
    result = _result()
    result["attribution_drift"] = attribution_drift.compare(REFERENCE, batch, threshold=0.1, top_k=2)
    name, code, message = _end(result)
    assert (name, code) == ("DriftDetected", 5)
    assert "attribution drifted" in message and "relationship 0.400 -> 0.020 (-0.380)" in message
    assert "capital-gain 0.300 -> 0.450 (+0.150)" in message and "age 0.200 -> 0.350 (+0.150)" in message
    assert "hours-per-week" not in message  # not among the judged (reference top two, batch top two)


def test_unchanged_shares_pass():
    result = _result()
    result["attribution_drift"] = attribution_drift.compare(REFERENCE, REFERENCE["shares"], threshold=0.1, top_k=2)
    assert _end(result)[:2] == ("Completed", 0)


def test_the_batch_is_attributed_on_a_seeded_sample_of_at_most_sample_rows():
    served = _Served({"relationship": 4.0, "capital-gain": 3.0, "age": 2.0, "hours-per-week": 1.0})
    rows = pd.DataFrame({"age": range(120)})
    entry = attribution_drift.measure(served, rows, REFERENCE, SETTINGS, 0.1)
    assert served.seen == SETTINGS.sample_rows and entry["rows"] == SETTINGS.sample_rows
    assert entry["measured"] and not any(row["drifted"] for row in entry["columns"].values())
    assert attribution_drift.measure(served, rows, REFERENCE, SETTINGS, 0.1) == entry  # seeded: the same again


@pytest.mark.parametrize(
    ("served", "reference", "why"),
    [
        (_Served({"relationship": 1.0}), {"reason": "v1's run holds no reports/explanations.json"}, "holds no"),
        (HumaneModel(), REFERENCE, "carries no explainer"),
        (
            _Served({"relationship": 0.0, "capital-gain": 0.0, "age": 0.0, "hours-per-week": 0.0}),
            REFERENCE,
            "attributions are all zero",
        ),
        (_Served({"relationship": 1.0, "education": 1.0}), REFERENCE, "differ from the recorded ones"),
    ],
)
def test_attribution_drift_that_cannot_be_measured_ends_monitoring_incomplete_never_passes(served, reference, why):
    entry = attribution_drift.measure(served, pd.DataFrame({"age": range(20)}), reference, SETTINGS, 0.1)
    assert entry["measured"] is False and why in entry["reason"] and entry["columns"] == {}
    result = _result()
    result["attribution_drift"] = entry
    name, code, message = _end(result)
    assert (name, code) == ("MonitoringIncomplete", 6)
    assert f"attribution_drift ({entry['reason']})" in message
    assert report.attribution_status(result) == f"not measured: {entry['reason']}"
    assert "not measured: " in report.summary({**result, **_shown(result)})


class _Failing(_Served):
    """A served model whose attribution fails the way pandas does on a cell it cannot read: quoting the value."""

    def attribute(self, frame: pd.DataFrame) -> pd.DataFrame:
        raise ValueError("could not convert string to float: 'Jane Doe'")


class _Named(_Served):
    """Attributions with a column holding a person's name: pandas' own float conversion (in shares) then fails."""

    def attribute(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(name="Jane Doe")


@pytest.mark.parametrize("served", [_Failing({}), _Named({})])
def test_an_error_from_outside_humane_is_named_by_its_type_never_its_message(served, tmp_path):
    entry = attribution_drift.measure(served, pd.DataFrame({"age": range(20)}), REFERENCE, SETTINGS, 0.1)
    assert entry["reason"] == "the batch's attributions could not be computed (ValueError)"
    result = {**_result(), "attribution_drift": entry}
    name, code, message = _end(result)
    assert (name, code) == ("MonitoringIncomplete", 6) and "(ValueError)" in message
    result = {**result, **_shown(result), "reference_rows": 900, "thresholds": MonitorParams().model_dump()}
    result["incomplete"] = attribution_drift.unmeasured(entry)
    folder = report.write_report(result, tmp_path / "day-1")
    shown = [message, report.summary(result), *((folder / f).read_text() for f in ("report.json", "report.html"))]
    assert all("could not be computed (ValueError)" in text and "Jane Doe" not in text for text in shown)


def test_a_humane_error_s_message_is_kept():
    err = MonitoringError("the 20 rows' attributions are all zero")
    assert attribution_drift.failure_reason(err) == (
        "the batch's attributions could not be computed (MonitoringError: the 20 rows' attributions are all zero)"
    )


def test_a_recorded_share_that_is_not_finite_is_named_unmeasured():
    reference = attribution_drift.recorded_shares(
        _explanations({**REFERENCE["shares"], "relationship": float("nan")}, REFERENCE["top"]), "x"
    )
    assert reference["shares"]["relationship"] is None
    entry = attribution_drift.compare(reference, REFERENCE["shares"], threshold=0.1, top_k=2)
    assert attribution_drift.unmeasured(entry) == [
        {"figure": "attribution_drift.relationship", "reason": "no finite reference share"}
    ]


def test_recorded_shares_read_the_explain_contract_and_refuse_a_file_lacking_them():
    assert attribution_drift.recorded_shares(_explanations(REFERENCE["shares"], REFERENCE["top"]), "x") == REFERENCE
    with pytest.raises(IntegrityFailed, match=r"v1: reports/explanations\.json .* lacks attributions\.overall"):
        attribution_drift.recorded_shares({"attributions": {}}, "v1: reports/explanations.json of run r")


def test_the_report_lists_shares_change_and_verdict_and_keeps_no_row():
    batch = {"relationship": 0.02, "capital-gain": 0.45, "age": 0.35, "hours-per-week": 0.18}
    result = _result()
    result["attribution_drift"] = {**attribution_drift.compare(REFERENCE, batch, 0.1, 2), "rows": 600}
    rows = report.attribution_rows(result)
    assert rows[0] == {
        "input": "relationship",
        "share (test)": "0.400",
        "share (batch)": "0.020",
        "change": "-0.380",
        "drifted": "yes",
    }
    assert [r["input"] for r in rows] == ["relationship", "capital-gain", "age"]
    assert report.attribution_status(result).startswith("relationship, capital-gain, age (share moved > 0.1; 600 rows")
    # What report.json keeps of it: shares per judged input, no row and no row's attributions.
    assert set(result["attribution_drift"]) == {"measured", "threshold", "top_k", "rows", "columns"}
    assert all(
        set(row) == {"reference", "batch", "change", "drifted"}
        for row in result["attribution_drift"]["columns"].values()
    )
    assert "attribution drift | relationship, capital-gain, age (" in report.summary({**result, **_shown(result)})


def _shown(result: dict) -> dict:
    """The fields summary() reads beside the judged figures."""
    return {
        "batch": "day-1",
        "rows": 600,
        "labeled_rows": 0,
        "batch_time": "2026-05-01T00:00:00+00:00",
        "model": {"name": "humane-sample", "version": "1"},
        "breaches": [],
        "incomplete": [],
        "notes": [],
        "selection_rate": {"batch": 0.2, "reference": 0.2},
        "test_time": {"groups": {}, "gaps": {}},
        "performance": {**result["performance"], "test_time": result["performance"]["estimated"]},
    }
