"""Bad input stops the pipeline with a message naming file, column and rule, and leaves earlier outputs intact."""

import pandas as pd
import pytest
import yaml

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
