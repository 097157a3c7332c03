"""Real: `dvc repro` and the training flow on copies of the shared session run; GX, MLflow SQLite store, Prefect server.

Bad input stops the pipeline with a message naming file, column and rule, and leaves earlier outputs intact."""

import json

import pandas as pd
import pytest
import yaml

from humane.data.validation import AUDITABLE, SHARED_ROWS
from humane.governance.card import leakage_statement
from tests.conftest import SAMPLE_DIR, md5s, run, tracked_runs

KEPT = ["models/model.pt", "models/preprocessor.skops", "reports/metrics.json", "data/processed/train.parquet"]
TRAIN = f"{SAMPLE_DIR}/train.csv"


def _edit(frame: pd.DataFrame, case: str) -> pd.DataFrame:
    if case == "missing_column":
        return frame.drop(columns=["education"])
    if case == "wrong_dtype":
        frame = frame.astype({"hours-per-week": "object"})
        frame.loc[frame.index[:3], "hours-per-week"] = "unknown"
        return frame
    if case == "wrong_dtype_generalized":
        frame = frame.astype({"age": "object"})
        frame.loc[frame.index[:3], "age"] = "unknown"
        return frame
    if case == "label_outside":
        frame.loc[frame.index[:4], "income"] = "maybe"
        return frame
    if case == "all_null":
        return frame.assign(occupation=None)
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        # The test file then holds a column the training file lacks: refused before anything is written.
        ("missing_column", [f"{SAMPLE_DIR}/test.csv", "['education']", "not in the training file"]),
        ("wrong_dtype", [TRAIN, "'hours-per-week'", "expect_column_values_to_be_in_type_list", "unknown"]),
        ("wrong_dtype_generalized", [TRAIN, "'age'", "privacy rule bins needs numbers", "3 values"]),
        ("label_outside", [TRAIN, "'income'", "expect_column_values_to_be_in_set", "maybe"]),
        ("all_null", [TRAIN, "'occupation'", "expect_column_values_to_not_be_null", "100.0%"]),
        ("empty_file", [TRAIN, "file is empty"]),
        ("no_such_source", ["data/raw/sample/nope.csv", "data source not found", "data.source"]),
    ],
)
def test_bad_input_fails_clearly_and_keeps_previous_outputs(ran_project, case, expected):
    before = md5s(ran_project, KEPT)
    runs_before = len(tracked_runs(ran_project))
    if case == "empty_file":
        (ran_project / TRAIN).write_text("")
    elif case == "no_such_source":
        params = yaml.safe_load((ran_project / "params.yaml").read_text())
        params["data"]["source"] = f"{SAMPLE_DIR}/nope.csv"
        (ran_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    else:
        _edit(pd.read_csv(ran_project / TRAIN), case).to_csv(ran_project / TRAIN, index=False)

    result = run(["dvc", "repro"], ran_project, check=False)
    assert result.returncode != 0
    message = result.stderr
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert "Traceback" not in message
    assert md5s(ran_project, KEPT) == before
    assert len(tracked_runs(ran_project)) == runs_before  # nothing tracked for a failed run


def test_prefect_flow_stops_on_bad_data_with_the_reason(ran_project, prefect_server):
    frame = pd.read_csv(ran_project / TRAIN)
    frame.loc[frame.index[:2], "hours-per-week"] = 250
    frame.to_csv(ran_project / TRAIN, index=False)
    before = md5s(ran_project, KEPT)
    result = run(["python", "-m", "flows.training"], ran_project, check=False)
    assert result.returncode == 2
    assert f"{TRAIN} [train] column 'hours-per-week': expect_column_values_to_be_between" in result.stderr
    assert "250" in result.stderr
    assert md5s(ran_project, KEPT) == before


LATER = [*KEPT, "reports/data_audit.json", "reports/fairness.json", "reports/policy_checks.json"]


def _failure_lines(stderr: str) -> list[str]:
    """The failed checks as validation lists them, one line each (the warnings listed after them left out)."""
    failures = stderr.split("data validation failed", 1)[-1].split("\nwarnings (", 1)[0]
    return [line for line in failures.splitlines() if line.startswith("  - ")]


def _one_file(project, leakage: dict | None = None) -> None:
    """The training file alone, the test rows split from it by data.test_fraction."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"].update(test_source=None, test_fraction=0.2, **({"leakage": leakage} if leakage else {}))
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_a_sensitive_feature_with_one_value_is_refused_by_validation(ran_project):
    """The issue's new user: one file, every row says "Male". Validation names the feature once, before training."""
    frame = pd.read_csv(ran_project / TRAIN)
    frame.assign(sex="Male").to_csv(ran_project / TRAIN, index=False)
    _one_file(ran_project)
    before, runs_before = md5s(ran_project, LATER), len(tracked_runs(ran_project))

    result = run(["dvc", "repro"], ran_project, check=False)
    assert result.returncode != 0 and "tasks.validate, exited with 2" in result.stdout + result.stderr, result.stderr
    # The training pool's line only: the test split's, split from the same file, has the same cause.
    (line,) = _failure_lines(result.stderr)
    assert line.startswith(f"  - {TRAIN} [train] column 'sex': {AUDITABLE}(min_groups=2, min_rows=5)"), line
    assert "cannot be audited: 1 of its 1 group(s) hold at least 5 rows" in line
    assert "Traceback" not in result.stderr and "Running stage 'data_audit'" not in result.stdout
    assert md5s(ran_project, LATER) == before  # nothing after validation ran
    assert len(tracked_runs(ran_project)) == runs_before


def _duplicated(project, leakage: dict | None = None) -> None:
    """Every training row twice, one file, the test rows split from it by data.test_fraction."""
    frame = pd.read_csv(project / TRAIN)
    pd.concat([frame, frame]).to_csv(project / TRAIN, index=False)
    _one_file(project, leakage)


def test_rows_shared_by_the_training_pool_and_the_test_split_fail_validation(ran_project):
    _duplicated(ran_project)
    before, runs_before = md5s(ran_project, LATER), len(tracked_runs(ran_project))

    result = run(["dvc", "repro"], ran_project, check=False)
    assert result.returncode != 0 and "tasks.validate, exited with 2" in result.stdout + result.stderr, result.stderr
    (line,) = _failure_lines(result.stderr)
    assert line.startswith(f"  - {TRAIN} [test]: {SHARED_ROWS}(max_fraction=0.01): "), line
    share = json.loads((ran_project / "reports/validation.json").read_text())["leakage"]["shared_fraction"]
    assert share > 0.75 and f"({share:.1%}) violate it" in line  # the twin of a test row is in the pool 4 times in 5
    assert "data.leakage.max_shared_fraction" in line
    assert "Traceback" not in result.stderr and "Running stage 'preprocess'" not in result.stdout
    assert md5s(ran_project, LATER) == before
    assert len(tracked_runs(ran_project)) == runs_before


def test_a_leakage_limit_raised_on_purpose_lets_validation_pass_and_the_card_says_so(ran_project):
    _duplicated(ran_project, leakage={"max_shared_fraction": 0.95, "max_feature_auc": 0.95})

    result = run(["dvc", "repro", "validate"], ran_project, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "leakage limits raised on purpose: data.leakage.max_shared_fraction = 0.95" in result.stdout
    report = json.loads((ran_project / "reports/validation.json").read_text())
    leak = report["leakage"]
    assert report["passed"] and leak["raised"] == ["max_shared_fraction"] and leak["shared_fraction"] > 0.75
    statement = leakage_statement(report)  # the paragraph the registered model's card carries
    assert statement.startswith("Leakage limits RAISED on purpose by the dataset profile: ")
    assert "data.leakage.max_shared_fraction 0.95 (default 0.01)" in statement
    assert f"test rows equal to a training-pool row: {leak['shared_fraction']:.2%}" in statement
