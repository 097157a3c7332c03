"""Monitoring's pure parts: batch checks, the breach rules, the demo batches, the params and the automation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from humane.core.errors import ConfigError, DataError
from humane.core.params import read_raw
from humane.core.paths import LABEL_COLUMN, SENSITIVE_PREFIX
from humane.data.datasets import read_adult
from humane.monitoring import checks, demo, monitor
from humane.monitoring.batch import batch_name, check_columns, read_batch
from humane.monitoring.monitor import breach_name
from humane.monitoring.params import MonitorParams
from humane.monitoring.reference import DECISION_COLUMN, PROBABILITY_COLUMN, positive_indicator
from humane.pipeline.params import parse_params

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"age": "numeric", "workclass": "text"}


def _rows(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [30 + i for i in range(n)],
            "workclass": ["Private"] * n,
            "sex": ["Male"] * n,
            "id": [f"person-{i}" for i in range(n)],
        }
    )


def test_a_batch_keeps_only_what_the_monitoring_reads_and_says_when_it_has_no_labels(tmp_path):
    path = tmp_path / "day-1.csv"
    _rows().to_csv(path, index=False)
    batch = read_batch(path, KINDS, ["sex"], "income", min_rows=5)
    assert batch.name == "day-1" and list(batch.frame.columns) == ["age", "workclass", "sex"]  # no identifier kept
    assert not batch.labeled and "no label column" in batch.notes[0]
    _rows().assign(income=["<=50K", None, ">50K", None, None]).to_csv(path, index=False)
    labeled = read_batch(path, KINDS, ["sex"], "income", min_rows=5)
    assert labeled.labeled and "3 of 5 rows have no label yet" in labeled.notes[0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda f: f.drop(columns=["workclass"]), "columns ['workclass'] are missing"),
        (lambda f: f.drop(columns=["sex"]), "columns ['sex'] are missing"),
        (lambda f: f.assign(age=["thirty"] + [30] * 4), "column 'age': the model reads numbers; 1 of 5 values"),
        (lambda f: f.assign(workclass=range(5)), "column 'workclass': the model reads text"),
    ],
)
def test_a_malformed_batch_is_refused_naming_the_file_the_column_and_the_rule(tmp_path, change, expected):
    path = tmp_path / "bad.csv"
    change(_rows()).to_csv(path, index=False)
    with pytest.raises(DataError, match="rule") as err:
        read_batch(path, KINDS, ["sex"], "income", min_rows=1)
    assert str(path) in str(err.value) and expected in str(err.value)
    assert "thirty" not in str(err.value)  # values are withheld


def test_empty_and_too_small_batches_are_refused(tmp_path):
    empty, header, small = tmp_path / "empty.csv", tmp_path / "header.csv", tmp_path / "small.csv"
    empty.write_text("")
    header.write_text("age,workclass,sex\n")
    _rows(3).to_csv(small, index=False)
    with pytest.raises(DataError, match=r"empty\.csv: file is empty"):
        read_batch(empty, KINDS, ["sex"], "income", min_rows=1)
    with pytest.raises(DataError, match=r"header\.csv: file has a header but no rows"):
        read_batch(header, KINDS, ["sex"], "income", min_rows=1)
    with pytest.raises(DataError, match=r"3 rows; rule: a batch needs at least monitor\.min_rows = 5"):
        read_batch(small, KINDS, ["sex"], "income", min_rows=5)
    with pytest.raises(DataError, match="must be letters"):
        batch_name(Path("/x/ bad name.csv"))


def test_numbers_sent_as_text_are_read_as_numbers():
    out = check_columns(_rows().assign(age=["30", "31", "32", "33", None]), KINDS, ["sex"], "f.parquet")
    assert out["age"].tolist()[:4] == [30, 31, 32, 33] and pd.isna(out["age"].iloc[4])


def test_labels_outside_the_models_are_refused_by_name():
    labels = pd.Series(["<=50K", ">50K", None, ">50K."], name="income")
    with pytest.raises(DataError, match=r"column 'income' \(the label\) holds values \['>50K.'\]"):
        positive_indicator(labels, ">50K", ["<=50K", ">50K"], "b.csv")
    ok = positive_indicator(labels.iloc[:3], ">50K", ["<=50K", ">50K"], "b.csv")
    assert ok.iloc[0] == 0 and ok.iloc[1] == 1 and np.isnan(ok.iloc[2])


def _figure(value, lo=None, hi=None):
    return {"value": value, "lo": lo, "hi": hi}


def _result(drift=None, share=0.0, estimated=0.85, gap=(0.1, 0.08, 0.12), labeled=False):
    drift = drift or {}
    return {
        "drift": {
            **{
                f: {"method": "jensen_shannon", "distance": d, "threshold": 0.1, "drifted": d > 0.1}
                for f, d in {"age": 0.02, "hours": 0.03, **drift}.items()
            },
            "prediction": {"method": "jensen_shannon", "distance": 0.01, "threshold": 0.1, "drifted": False},
        },
        "out_of_domain": {"share": share, "rows": 0, "per_rule": {"age: above the validated range": share}},
        "labeled": labeled,
        "min_group_size": 50,
        "performance": {
            "estimated": {
                "accuracy": _figure(estimated, estimated - 0.01, estimated + 0.01),
                "roc_auc": _figure(0.9, 0.88, 0.92),
            },
            "estimated_groups": {},
            "realised": None,
        },
        "groups": {
            "sex": {
                "groups": {
                    "Female": {"count": 300, "too_small": False, "metrics": {"selection_rate": _figure(0.1)}},
                    "Male": {"count": 600, "too_small": False, "metrics": {"selection_rate": _figure(0.1 + gap[0])}},
                },
                "gaps": {"demographic_parity_difference": _figure(*gap)},
                "too_small": [],
            }
        },
    }


RECORDED = checks.Recorded(
    overall={"accuracy": _figure(0.85, 0.84, 0.86), "roc_auc": _figure(0.9)},
    groups={"sex": {"Female": {"count": 500, "too_small": False, "metrics": {"selection_rate": _figure(0.08)}}}},
    gaps={"sex": {"demographic_parity_difference": _figure(0.1, 0.08, 0.12)}},
    calibration={"ece": 0.01},
)


def test_a_batch_like_the_reference_breaches_nothing():
    assert checks.breaches(_result(), RECORDED, MonitorParams(), ["sex"]) == []
    assert checks.unmeasured(_result(), RECORDED, MonitorParams(), ["sex"]) == []


def _end(result: dict, recorded: checks.Recorded = RECORDED) -> tuple[str, int, str]:
    """What the flow makes of a judged result: its end state's name, its exit code and its message."""
    from flows.monitoring import exit_status, outcome

    result = {**result, "batch": "day-1", "rows": 600}
    result["breaches"] = checks.breaches(result, recorded, MonitorParams(), ["sex"])
    result["incomplete"] = checks.unmeasured(result, recorded, MonitorParams(), ["sex"])
    state = outcome(result, Path("reports/monitoring/day-1"), None)
    return state.name, exit_status(state), state.message


def test_a_nan_drift_distance_is_unmeasured_not_undrifted_and_ends_monitoring_incomplete():
    from humane.monitoring.reference import PROBABILITY_COLUMN

    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"age": rng.normal(40, 10, 300), PROBABILITY_COLUMN: rng.uniform(size=300)})
    batch = pd.DataFrame({"age": np.full(150, np.nan), PROBABILITY_COLUMN: rng.uniform(size=150)})  # all null
    drift = checks.drift(reference, batch, ["age"], MonitorParams(prediction_drift_threshold=0.9))
    assert drift["age"]["distance"] is None and drift["age"]["drifted"] is None  # NannyML's NaN, never "not drifted"
    assert "no finite jensen_shannon distance" in drift["age"]["reason"]
    name, code, message = _end({**_result(), "drift": drift})
    assert (name, code) == ("MonitoringIncomplete", 6)
    assert "drift.age (NannyML gave no finite jensen_shannon distance" in message


@pytest.mark.parametrize(
    ("change", "figure", "reason"),
    [
        # A figure the rules need is missing from the result.
        (
            lambda r: r["groups"]["sex"]["gaps"].pop("demographic_parity_difference"),
            "sex.demographic_parity_difference",
            "the gap was not computed",
        ),
        (lambda r: r["performance"]["estimated"].pop("roc_auc"), "estimated.roc_auc", "no estimated figure"),
        (lambda r: r.pop("groups"), "sex.demographic_parity_difference", "no group rates computed"),
        # Non-finite figures: NaN or infinite are never within a threshold.
        (
            lambda r: r["performance"]["estimated"].update(accuracy=checks._figure(float("inf"))),
            "estimated.accuracy",
            "the computation gave inf",
        ),
        (
            lambda r: r["groups"]["sex"]["gaps"].update(demographic_parity_difference=checks._figure(float("nan"))),
            "sex.demographic_parity_difference",
            "the computation gave nan",
        ),
        (lambda r: r["out_of_domain"].update(share=float("nan")), "out_of_domain.share", "the share of rows is nan"),
        # No performance figures at all: the performance rules cannot run, so the batch is not judged as passing.
        (lambda r: r["performance"].update(estimated=None), "estimated.accuracy", "no estimated figure"),
        (lambda r: r.update(performance={}), "estimated_groups.accuracy", "no per-group figures"),
        # A labeled batch must give its realised figures.
        (lambda r: r.update(labeled=True), "realised.accuracy", "no realised figure"),
    ],
)
def test_a_missing_or_non_finite_figure_ends_monitoring_incomplete_naming_it(change, figure, reason):
    result = _result()
    change(result)
    name, code, message = _end(result)
    assert (name, code) == ("MonitoringIncomplete", 6), message
    assert f"{figure} ({reason}" in message


def test_a_gap_without_two_groups_large_enough_is_named_with_the_counts():
    result = _result()
    result["groups"]["sex"]["groups"]["Female"].update(count=20, too_small=True)
    result["groups"]["sex"]["gaps"]["demographic_parity_difference"] = checks._figure(None)
    (missing,) = checks.unmeasured(result, RECORDED, MonitorParams(), ["sex"])
    assert missing["figure"] == "sex.demographic_parity_difference"
    counts = "rows per group: Female 20, Male 600"
    assert missing["reason"] == f"fewer than two groups with at least audit.min_group_size = 50 rows ({counts})"
    # A test-time gap the champion's audit does not hold cannot be compared with either.
    recorded = checks.Recorded(RECORDED.overall, RECORDED.groups, {"sex": {}}, RECORDED.calibration)
    assert checks.unmeasured(_result(), recorded, MonitorParams(), ["sex"]) == [
        {"figure": "test_time.sex.demographic_parity_difference", "reason": "not in the champion's recorded audit"}
    ]


def test_realised_roc_auc_on_one_label_class_is_unmeasured():
    from humane.fairness.params import AuditParams

    frame = pd.DataFrame({LABEL_COLUMN: [1.0] * 60, DECISION_COLUMN: [1, 0] * 30, PROBABILITY_COLUMN: [0.7, 0.3] * 30})
    figures = checks.realised(frame, AuditParams(seed=0, bootstrap=10, min_group_size=5))
    assert figures["accuracy"]["value"] == 0.5
    assert figures["roc_auc"]["value"] is None
    assert figures["roc_auc"]["reason"] == "the 60 labeled rows hold one label class only"


def test_a_breach_outranks_an_unmeasured_figure_and_both_are_said():
    result = _result(drift={"age": 0.4})
    result["performance"]["estimated"].pop("roc_auc")
    name, code, message = _end(result)
    assert (name, code) == ("DriftDetected", 5)
    assert "1 of 2 input features drifted" in message and "MonitoringIncomplete: 1 figure(s)" in message
    assert _end(_result())[:2] == ("Completed", 0)


def _female(accuracy: dict, roc_auc: dict) -> dict:
    metrics = {"accuracy": accuracy, "roc_auc": roc_auc}
    return {"sex": {"Female": {"count": 300, "too_small": False, "metrics": metrics}}}


def test_a_group_s_test_time_figure_without_its_interval_is_unmeasured_not_skipped():
    result = _result()
    result["performance"]["estimated_groups"] = _female(_figure(0.85, 0.84, 0.86), _figure(0.9, 0.88, 0.92))
    # A group's ROC AUC has no test-time interval by design: reported only. Its accuracy must have one.
    groups = _female(_figure(0.85), _figure(0.9))
    bare = checks.Recorded(RECORDED.overall, groups, RECORDED.gaps, RECORDED.calibration)
    name, code, message = _end(result, bare)
    assert (name, code) == ("MonitoringIncomplete", 6), message
    assert "1 figure(s)" in message
    assert "test_time.sex=Female.accuracy (the champion's recorded audit gives it no 95% interval)" in message
    # With its interval the group is judged: like the test-time figure it passes, 0.15 below it breaches.
    recorded = checks.Recorded(RECORDED.overall, _female(_figure(0.85, 0.83, 0.87), _figure(0.9)), RECORDED.gaps, {})
    assert _end(result, recorded)[:2] == ("Completed", 0)
    result["performance"]["estimated_groups"]["sex"]["Female"]["metrics"]["accuracy"] = _figure(0.7, 0.68, 0.72)
    name, code, message = _end(result, recorded)
    assert (name, code) == ("PerformanceDegraded", 4) and "accuracy of sex=Female 0.700" in message


def test_a_group_whose_reference_holds_one_label_is_unmeasured_not_withheld():
    rows = pd.DataFrame(
        {f"{SENSITIVE_PREFIX}sex": ["Female"] * 60, LABEL_COLUMN: [0.0] * 60, PROBABILITY_COLUMN: [0.2] * 60}
    )
    (row,) = checks.group_estimates(rows, rows, ["sex"], 50)["sex"].values()
    assert row["too_small"] is False and row["metrics"]["accuracy"]["value"] is None
    reason = "the group's 60 reference rows hold one label class: CBPE cannot be fitted on them"
    assert row["metrics"]["accuracy"]["reason"] == reason
    result = _result()
    result["performance"]["estimated_groups"] = {"sex": {"Female": row}}
    recorded = checks.Recorded(RECORDED.overall, _female(_figure(0.85, 0.83, 0.87), _figure(0.9)), RECORDED.gaps, {})
    name, _, message = _end(result, recorded)
    assert name == "MonitoringIncomplete" and f"estimated.sex=Female.accuracy ({reason})" in message


def test_an_unlabeled_batch_that_breaches_nothing_never_reads_no_threshold_breached():
    name, code, message = _end(_result())
    assert (name, code) == ("Completed", 0)
    assert "no threshold breached" not in message
    said = "no label-free threshold breached; realised performance and the label gaps are not judged: the batch has"
    assert message.startswith(f"day-1: {said} no labels (600 rows; drifted: none)"), message
    assert monitor.passed({"labeled": True}) == "no threshold breached"


@pytest.mark.parametrize(
    ("error", "code"),
    [("HumaneError", 2), ("ServerUnavailable", 10), ("AccessRefused", 11), ("IntegrityFailed", 12), ("KeyError", 1)],
)
def test_the_exit_code_of_a_failed_run_is_read_from_its_error_s_type(error, code):
    import builtins

    from prefect.states import Crashed, Failed

    from flows.monitoring import exit_status
    from humane.core import errors

    kind = getattr(errors, error, None) or getattr(builtins, error)
    assert exit_status(Failed(data=kind("DriftDetected"))) == code  # the message text is never read
    assert exit_status(Failed(name="DriftDetected")) == 5
    assert exit_status(Crashed(message="Completed")) == 1


def test_a_corrupt_champion_artifact_is_an_integrity_failure_naming_it(tmp_path):
    from humane.core.errors import IntegrityFailed
    from humane.monitoring.champion import ARTIFACTS, _parse

    files = {a: tmp_path / a.replace("/", "_") for a in ARTIFACTS}
    reference = pd.DataFrame({LABEL_COLUMN: [0], PROBABILITY_COLUMN: [0.1], DECISION_COLUMN: [0]})
    reference.to_parquet(files[ARTIFACTS[0]])
    files[ARTIFACTS[1]].write_text('{"overall": {}, "features": []}')
    files[ARTIFACTS[2]].write_text('{"model": {}}')
    assert len(_parse(files, "r1", "m v1")[0]) == 1
    files[ARTIFACTS[2]].write_text('{"model": ')  # cut short
    with pytest.raises(IntegrityFailed, match=r"m v1: reports/metrics.json of run r1 is corrupt: not a JSON object"):
        _parse(files, "r1", "m v1")
    files[ARTIFACTS[2]].write_text('{"model": {}}')
    reference.drop(columns=[PROBABILITY_COLUMN]).to_parquet(files[ARTIFACTS[0]])
    with pytest.raises(IntegrityFailed, match=r"monitoring/reference.parquet of run r1 is corrupt: it lacks"):
        _parse(files, "r1", "m v1")
    files[ARTIFACTS[0]].write_bytes(b"PAR1 not parquet")
    with pytest.raises(IntegrityFailed, match=r"not a Parquet table"):
        _parse(files, "r1", "m v1")


def test_drift_names_the_drifted_features_only():
    (breach,) = checks.breaches(_result(drift={"age": 0.4}), RECORDED, MonitorParams(), ["sex"])
    assert breach["breach"] == "DriftDetected" and breach["subject"] == "age"
    assert "age jensen_shannon 0.400" in breach["message"] and "hours" not in breach["message"]
    # A share above which features must drift: one of three is not enough at 0.5.
    assert checks.breaches(_result(drift={"age": 0.4}), RECORDED, MonitorParams(max_drifted_share=0.5), ["sex"]) == []


def test_out_of_domain_share_is_a_drift_breach_naming_the_rule():
    (breach,) = checks.breaches(_result(share=0.2), RECORDED, MonitorParams(), ["sex"])
    assert breach["subject"] == "out_of_domain" and "age: above the validated range 20.0%" in breach["message"]


def test_a_performance_drop_counts_only_beyond_the_margin_and_the_intervals():
    (breach,) = checks.breaches(_result(estimated=0.70), RECORDED, MonitorParams(), ["sex"])
    assert breach["breach"] == "PerformanceDegraded" and "estimated accuracy 0.700" in breach["message"]
    assert checks.breaches(_result(estimated=0.81), RECORDED, MonitorParams(), ["sex"]) == []  # within 0.05


def test_a_gap_breaches_only_when_it_grows_beyond_the_margin_and_its_interval_clears_the_test_times():
    wide = _result(gap=(0.3, 0.25, 0.35))
    (breach,) = checks.breaches(wide, RECORDED, MonitorParams(), ["sex"])
    assert breach["breach"] == "BiasDegraded" and breach["subject"] == "sex.demographic_parity_difference"
    assert "Female 0.100 (test 0.080)" in breach["message"]
    overlapping = _result(gap=(0.3, 0.11, 0.45))  # a noisy estimate whose interval reaches the test-time one
    assert checks.breaches(overlapping, RECORDED, MonitorParams(), ["sex"]) == []
    # A feature's own key wins over "*".
    lenient = MonitorParams(
        max_increase={"*.demographic_parity_difference": 0.05, "sex.demographic_parity_difference": 0.5}
    )
    assert checks.breaches(wide, RECORDED, lenient, ["sex"]) == []


def test_the_state_is_named_by_the_first_breach_kind():
    breaches = [{"breach": "DriftDetected"}, {"breach": "BiasDegraded"}]
    assert breach_name(breaches) == "BiasDegraded" and breach_name([]) is None


def test_gap_limits_apply_star_to_each_sensitive_feature_not_the_intersection():
    limits = {"*.equalized_odds_difference": 0.05, "sex x race.equalized_odds_difference": 0.2}
    assert checks.gap_limit(limits, "sex", "equalized_odds_difference", ["sex", "race"]) == 0.05
    assert checks.gap_limit(limits, "sex x race", "equalized_odds_difference", ["sex", "race"]) == 0.2
    assert (
        checks.gap_limit(
            {"*.equalized_odds_difference": 0.05}, "sex x race", "equalized_odds_difference", ["sex", "race"]
        )
        is None
    )


def test_group_rates_without_labels_keep_only_the_selection_rate_and_the_dp_gaps():
    from humane.fairness.params import AuditParams

    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(
        {f"{SENSITIVE_PREFIX}sex": rng.choice(["Female", "Male"], n), PROBABILITY_COLUMN: rng.uniform(size=n)}
    )
    frame[DECISION_COLUMN] = (frame[PROBABILITY_COLUMN] > 0.5).astype(int)
    out = checks.groups(frame, ["sex"], labeled=False, audit=AuditParams(seed=0, bootstrap=20, min_group_size=50))
    assert set(out["sex"]["gaps"]) == {"demographic_parity_difference", "demographic_parity_ratio"}
    assert set(out["sex"]["groups"]["Female"]["metrics"]) == {"selection_rate"}
    labeled = frame.assign(**{LABEL_COLUMN: (rng.uniform(size=n) < 0.3).astype(float)})
    full = checks.groups(labeled, ["sex"], labeled=True, audit=AuditParams(seed=0, bootstrap=20, min_group_size=50))
    assert "equalized_odds_difference" in full["sex"]["gaps"]

    # Labels for a few rows only: the DP gap and selection rates still read every row (they need no label); the
    # label metrics read the labeled rows, and a group with too few of them is withheld from those alone. 30 of
    # the women's rows keep their label, every man's row: fewer than 50 and more, whatever the draw.
    few = labeled.copy()
    women = few.index[few[f"{SENSITIVE_PREFIX}sex"] == "Female"]
    few.loc[women[30:], LABEL_COLUMN] = np.nan
    partial = checks.groups(few, ["sex"], labeled=True, audit=AuditParams(seed=0, bootstrap=20, min_group_size=50))
    dp = "demographic_parity_difference"
    assert partial["sex"]["gaps"][dp] == out["sex"]["gaps"][dp]
    female, male = partial["sex"]["groups"]["Female"], partial["sex"]["groups"]["Male"]
    assert female["count"] == out["sex"]["groups"]["Female"]["count"] and not female["too_small"]
    assert female["labels_too_small"] and set(female["metrics"]) == {"selection_rate"}
    assert not male["labels_too_small"] and set(male["metrics"]) > {"selection_rate"}


def test_demo_batches_are_deterministic_and_shift_only_what_they_say():
    test = read_adult(ROOT / "data/raw/adult/adult.test")
    first, again = demo.make_batches(test, 1000, 0), demo.make_batches(test, 1000, 0)
    for name in first:
        pd.testing.assert_frame_equal(first[name], again[name])
    same, shifted, bias = first["in_distribution"], first["shifted"], first["bias"]
    assert demo.TARGET in same and demo.TARGET not in shifted and demo.TARGET in bias
    assert shifted["age"].mean() > same["age"].mean() + 10 and shifted["age"].max() <= 90
    assert shifted["hours-per-week"].mean() < 0.8 * same["hours-per-week"].mean()
    women = bias["sex"] == "Female"
    assert (bias.loc[women, demo.TARGET] == demo.POSITIVE).mean() > 0.25  # about 11% in the source
    assert set(bias.drop(columns=[demo.TARGET]).columns) == set(shifted.columns)


def test_monitor_params_refuse_unknown_gaps_and_breaches():
    raw = read_raw(ROOT / "params.yaml")
    assert parse_params(raw).monitor.retrain_on == []
    with pytest.raises(ConfigError, match=r"monitor\.max_increase: key .sex\.demographic_parity_ratio."):
        parse_params({**raw, "monitor": {**raw["monitor"], "max_increase": {"sex.demographic_parity_ratio": 0.1}}})
    with pytest.raises(ConfigError, match=r"monitor\.retrain_on"):
        parse_params({**raw, "monitor": {**raw["monitor"], "retrain_on": ["Drift"]}})


def test_the_monitoring_deployment_and_the_retraining_automation_are_valid():
    from prefect.automations import AutomationCore

    deployments = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    monitoring = deployments["adult-monitoring"]
    assert monitoring["entrypoint"] == "flows/monitoring.py:monitoring" and "batch" in monitoring["parameters"]
    assert monitoring["schedules"][0]["cron"]
    training = f"training/{deployments['adult']['name']}"
    assert parse_params(read_raw(ROOT / "params.yaml")).monitor.training_deployment == training
    text = (ROOT / "automations/retrain_on_drift.yaml").read_text()
    automation = AutomationCore.model_validate(
        yaml.safe_load(text.replace("TRAINING_DEPLOYMENT_ID", "00000000-0000-0000-0000-000000000001"))
    )
    assert automation.trigger.expect == {"prefect.flow-run.DriftDetected"}
    assert automation.actions[0].type == "run-deployment"


def test_inputs_kept_although_identifying_or_from_dates_are_never_stored_row_by_row(tiny_adult):
    from humane.governance.serving import DECISION, PROBABILITY
    from humane.monitoring.reference import MonitoredColumns, monitored_frame
    from humane.privacy.policy import fit_policy

    raw = read_raw(Path(__file__).resolve().parents[2] / "params.yaml")  # the Adult profile
    raw["privacy"]["keep"] = ["occupation"]
    params = parse_params(raw)
    columns = MonitoredColumns.of(params)
    assert columns.withheld == ("occupation",)
    scores = pd.DataFrame({PROBABILITY: np.full(len(tiny_adult), 0.4), DECISION: np.zeros(len(tiny_adult), int)})
    policy = fit_policy(params.privacy, tiny_adult)
    frame = monitored_frame(
        tiny_adult, scores, policy, ["age", "occupation", "education"], columns, ">50K", ["<=50K", ">50K"], "batch.csv"
    )
    assert "occupation" not in frame and {"age", "education", f"{SENSITIVE_PREFIX}sex"} <= set(frame)
