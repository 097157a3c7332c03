"""The MLflow dataset inputs the track stage logs: the schema MLflow infers, without its per-value loop."""

import mlflow
import numpy as np
import pandas as pd
import pytest

from humane.governance.tracking import distinct_values, summarized_dataset


def processed_like(rows: int = 2000) -> pd.DataFrame:
    """A frame shaped like data/processed/*.parquet, with a null in a feature and in a sensitive column."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "num__age": rng.integers(17, 91, rows).astype(np.float32),
            "cat__sex_Male": rng.integers(0, 2, rows).astype(np.float32),
            "__label__": rng.integers(0, 2, rows),
            "__sensitive__sex": rng.choice(["Female", "Male"], rows).astype(object),
            "__sensitive__race": pd.Series(rng.choice(["White", "Black", "Other"], rows), dtype="string"),
            "flag": rng.integers(0, 2, rows).astype(bool),
        }
    )
    frame.loc[7, "num__age"] = np.nan
    frame.loc[11, "__sensitive__sex"] = None
    return frame


@pytest.mark.filterwarnings("ignore::UserWarning")  # MLflow's hints on integer columns and local sources
@pytest.mark.parametrize("nulls", [True, False])
def test_summarized_dataset_logs_what_mlflow_would(nulls):
    frame = processed_like()
    if not nulls:
        frame = frame.dropna().reset_index(drop=True)
    expected = mlflow.data.from_pandas(frame, source="data/processed/train.parquet", name="train", digest="abc")
    got = summarized_dataset(frame, "data/processed/train.parquet", "train", "abc")
    assert got.to_dict() == expected.to_dict()  # schema (types, required), profile (all rows), source, digest
    assert got.profile == {"num_rows": len(frame), "num_elements": int(frame.size)}
    required = {spec.name: spec.required for spec in got.schema.inputs}
    assert required["num__age"] is not nulls and required["__sensitive__sex"] is not nulls
    assert required["__label__"] and required["__sensitive__race"]


def test_distinct_values_keeps_each_value_once_with_its_dtype():
    frame = processed_like()
    out = distinct_values(frame)
    assert len(out) == frame["num__age"].nunique(dropna=False) < len(frame)  # the most varied column sets the length
    assert list(out.dtypes) == list(frame.dtypes)
    for column in frame.columns:
        assert set(out[column].dropna()) == set(frame[column].dropna())
        assert out[column].isna().any() == frame[column].isna().any()
    assert distinct_values(frame.head(0)).empty


@pytest.mark.filterwarnings("ignore::UserWarning")  # MLflow's hints on integer columns and local sources
def test_the_logged_dataset_numbers_the_one_hot_features_of_a_protected_column():
    from humane.governance.tracking import numbered_features

    frame = processed_like(10).assign(
        **{"cat__email_ann@ZZKEPT.example": 1.0, "cat__email_bob@ZZKEPT.example": 0.0, "cat__email_x_y": 0.0}
    )
    out = numbered_features(frame, {"email", "email_x", "sex"})
    numbered = ["cat__email_<category 1>", "cat__email_<category 2>", "cat__email_x_<category 1>"]
    assert [c for c in out.columns if c.startswith("cat__email")] == numbered
    assert "cat__sex_Male" not in out and "cat__sex_<category 1>" in out  # a sensitive input too
    assert "num__age" in out and "__sensitive__sex" in out  # other columns keep their names
    assert out.set_axis(frame.columns, axis=1).equals(frame)  # rows, types and order unchanged
    summary = summarized_dataset(out, "data/processed/train.parquet", "train", "abc")
    assert "ZZKEPT" not in str(summary.to_dict())


def recorded_inputs(federated: bool = False):
    from humane.governance.tracking import RecordedInputs

    metrics = {
        "model": {"accuracy": 0.8, "roc_auc": float("nan")},
        "baseline": {"logreg": {"accuracy": 0.75}, "majority": {"accuracy": 0.6}},
        "test_rows": 100,
    }
    fairness = {"sex": {"demographic_parity_difference": 0.1}, "sex x race": {"equalized_odds_difference": 0.2}}
    validation = {"n_checks": 12, "n_failed": 0}
    return RecordedInputs({}, metrics, {"n_parameters": 5, "note": "text"}, [], validation, fairness, federated)


def test_summary_metrics_keep_the_logged_names():
    from humane.governance.tracking import summary_metrics

    got = summary_metrics(recorded_inputs(), {"privacy.epsilon": 3.0, "privacy.k_min": float("nan")})
    assert got == {
        "test.accuracy": 0.8,  # NaN roc_auc dropped: MLflow cannot plot it
        "baseline.logreg.accuracy": 0.75,
        "baseline.majority.accuracy": 0.6,
        "train.n_parameters": 5.0,  # text dropped
        "fairness.sex.demographic_parity_difference": 0.1,
        "fairness.sex x race.equalized_odds_difference": 0.2,
        "privacy.epsilon": 3.0,
        "validation.n_checks": 12,
        "validation.n_failed": 0,
    }


def test_epoch_metrics_step_by_epoch_and_skip_what_was_not_measured():
    from humane.governance.tracking import epoch_metrics

    history = [
        {"epoch": 1, "train_loss": 0.7, "val_loss": 0.6, "val_accuracy": 0.7, "val_auc": float("nan")},
        {"epoch": 2, "val_loss": 0.5, "val_accuracy": 0.75, "val_auc": 0.8, "other": 1.0},
    ]
    got = [(m.key, m.value, m.step) for m in epoch_metrics(history)]
    assert got == [
        ("epoch.train_loss", 0.7, 1),
        ("epoch.val_loss", 0.6, 1),
        ("epoch.val_accuracy", 0.7, 1),
        ("epoch.val_loss", 0.5, 2),
        ("epoch.val_accuracy", 0.75, 2),
        ("epoch.val_auc", 0.8, 2),
    ]


def test_the_reference_the_caller_writes_is_logged_where_monitoring_reads_it(tmp_path):
    """A real MLflow store: tracking logs the file the edge writes, and never a federated model's."""
    from humane.governance.store import using_tracking_uri
    from humane.governance.tracking import RunArtifact, log_reference

    written = []

    def write(path):
        written.append(path.name)
        path.write_bytes(b"reference rows")

    reference = RunArtifact("monitoring/reference.parquet", write)
    with using_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}"):
        client = mlflow.MlflowClient()
        experiment = client.create_experiment("track", artifact_location=(tmp_path / "artifacts").as_uri())
        found = {}
        for federated in (False, True):
            with mlflow.start_run(experiment_id=experiment) as run:
                log_reference(reference, federated=federated)
            listed = [f.path for f in client.list_artifacts(run.info.run_id, "monitoring")]
            found[federated] = listed, client.get_run(run.info.run_id).data.tags.get("humane.monitoring", "")
    assert written == ["reference.parquet"]  # written once: a federated model's test rows stay at its sites
    assert found[False] == (["monitoring/reference.parquet"], "")
    assert found[True][0] == [] and found[True][1].startswith("no reference")
