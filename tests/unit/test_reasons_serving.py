"""Reasons and counterfactuals from the served model: the shared sample run's model, logged by tracking, answered
by MLflow's own scoring handler (what `mlflow models serve` runs for POST /invocations)."""

import json
import re
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.pyfunc.scoring_server import invocations

from humane.core import io
from humane.core.errors import DataError
from humane.core.paths import Paths
from humane.governance.domain import SEPARATOR
from humane.governance.serving import (
    COUNTERFACTUAL,
    DECISION,
    DOMAIN_RULES,
    LABEL,
    NO_EXPLAINER,
    OUT_OF_DOMAIN,
    PROBABILITY,
    REASONS,
    HumaneModel,
    RequestRefused,
    as_request,
)
from humane.governance.tracking import DOMAIN_FILE, log_serving_model
from humane.pipeline.params import load_params
from humane.privacy.policy import protected_columns
from tests.conftest import SAMPLE_DIR

OLD_COLUMNS = [PROBABILITY, LABEL, DECISION, OUT_OF_DOMAIN, DOMAIN_RULES]


class Served(NamedTuple):
    model: Any  # the loaded pyfunc
    rows: pd.DataFrame  # raw test rows, typed as the signature says
    params: Any
    protected: frozenset[str]
    explainer: dict[str, Any]  # models/explainer.json
    files: Path  # the logged model's downloaded artifacts


@pytest.fixture(scope="module")
def served(repro_project, tmp_path_factory):
    """The shared run's model logged with its explainer into a store of its own; loaded back, with raw requests."""
    root = tmp_path_factory.mktemp("reasons") / "project"
    shutil.copytree(repro_project, root, symlinks=True)
    paths, params = Paths(root), load_params(root / "params.yaml")
    protected = protected_columns(params.privacy, params.data, io.read_json(paths.privacy_policy)).all
    assert paths.explainer.exists()  # written by the explain stage
    mlflow.set_tracking_uri(f"sqlite:///{root}/serving.db")
    try:
        experiment = mlflow.create_experiment("reasons", artifact_location=(root / "served").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = log_serving_model(paths, params.evaluate.threshold, set(protected))
        local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(root / "downloaded")))
        model = mlflow.pyfunc.load_model(str(local))
    finally:
        mlflow.set_tracking_uri(None)
    schema = model.metadata.get_input_schema()
    raw = pd.read_csv(root / SAMPLE_DIR / "test.csv")[[spec.name for spec in schema.inputs]]
    rows = as_request(raw.head(200), schema)
    return Served(model, rows, params, protected, io.read_json(paths.explainer), local / "artifacts")


def _post(model, rows: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
    """What `mlflow models serve` answers to POST /invocations with these rows (and params)."""
    body = {"dataframe_records": json.loads(rows.to_json(orient="records"))}
    if params is not None:
        body["params"] = params
    answer = invocations(json.dumps(body), "application/json", model, model.metadata.get_input_schema())
    assert answer.status == 200, answer.response
    return pd.DataFrame(json.loads(answer.response)["predictions"])


def test_the_signature_declares_the_explain_params_and_a_plain_request_is_answered_as_before(served):
    model, rows = served.model, served.rows
    declared = {spec.name: spec.default for spec in model.metadata.get_params_schema().params}
    assert declared == {REASONS: 0, COUNTERFACTUAL: False}
    plain = _post(model, rows)
    assert list(plain.columns) == OLD_COLUMNS  # exactly the columns a request got before explanations
    explained = _post(model, rows, {REASONS: 2, COUNTERFACTUAL: True})
    assert list(explained.columns) == [*OLD_COLUMNS, REASONS, COUNTERFACTUAL]
    pd.testing.assert_frame_equal(explained[OLD_COLUMNS], plain)  # explaining changes no answer


def test_reasons_name_at_most_k_columns_and_never_a_protected_one(served):
    model, rows, protected, explainer = served.model, served.rows, served.protected, served.explainer
    # With the sample's params age is binned, native-country rare-grouped, sex and race sensitive.
    assert {"age", "native-country", "sex", "race"} <= set(protected) <= set(explainer["excluded"])
    scored = _post(model, rows, {REASONS: 3})
    reasons = [list(filter(None, text.split(SEPARATOR))) for text in scored[REASONS]]
    assert all(len(r) <= 3 for r in reasons) and np.mean([len(r) == 3 for r in reasons]) > 0.5
    named = {c for r in reasons for c in r}
    assert named <= set(explainer["attribution"]["columns"]) - set(protected)
    # The exclusion is what keeps them out: by attribution alone, age is among the top three for many rows.
    attributions = model.unwrap_python_model().attribute(rows)
    towards = attributions.to_numpy() * np.where(scored[DECISION] == 1, 1.0, -1.0)[:, None]
    top3 = np.argsort(-towards, axis=1)[:, :3]
    assert (top3 == list(attributions.columns).index("age")).any(axis=1).sum() >= 5
    one = _post(model, rows.head(1), {REASONS: 3})[REASONS].iloc[0]
    assert one == scored[REASONS].iloc[0]  # a single row gets the reasons it gets in a batch


def test_the_counterfactual_flips_the_served_decision_and_changes_only_actionable_columns(served):
    model, rows, params, protected, explainer = (
        served.model,
        served.rows,
        served.params,
        served.protected,
        served.explainer,
    )
    scored = _post(model, rows.head(60), {COUNTERFACTUAL: True})
    assert (scored.loc[scored[DECISION] == 1, COUNTERFACTUAL] == "").all()
    refused = scored.index[scored[DECISION] == 0]
    found = {i: json.loads(scored.at[i, COUNTERFACTUAL]) for i in refused if scored.at[i, COUNTERFACTUAL]}
    assert len(found) >= 5
    actionable = set(explainer["counterfactual"]["candidates"])
    immutable = {*params.data.immutable, *params.data.sensitive_features, *protected}
    assert actionable and not actionable & immutable
    changed = rows.loc[list(found)].copy()
    for i, counterfactual in found.items():
        assert set(counterfactual["changes"]) <= actionable and 1 <= len(counterfactual["changes"]) <= 2
        for column, change in counterfactual["changes"].items():
            assert change["from"] == rows.at[i, column] or pd.isna(rows.at[i, column])  # the requester's own
            changed.at[i, column] = change["to"]
    again = _post(model, changed)  # re-scored as a new request: accepted, with the probability it reported
    assert (again[DECISION] == 1).all()
    assert again[PROBABILITY].to_numpy() == pytest.approx([f["probability"] for f in found.values()], abs=1e-6)
    kept = [c for c in rows.columns if c in immutable]
    pd.testing.assert_frame_equal(changed[kept], rows.loc[list(found), kept])


def test_a_model_without_an_explainer_refuses_only_requests_for_reasons(served):
    files, threshold = served.files, served.params.evaluate.threshold
    assert (files / "explainer.json").exists() and served.model.unwrap_python_model().explanation is not None
    plain = HumaneModel().load_files(
        threshold, files / "privacy_policy.json", files / "preprocessor.skops", files / "model.pt", files / DOMAIN_FILE
    )  # as a model logged before explanations: no explainer file
    request = served.rows.head(3)
    assert list(plain.predict(None, request).columns) == OLD_COLUMNS
    for asked in ({REASONS: 1}, {COUNTERFACTUAL: True}):
        with pytest.raises(RequestRefused, match="logged without an explainer"):
            plain.predict(None, request, asked)
    with pytest.raises(DataError, match=re.escape(NO_EXPLAINER)):
        plain.attribute(request)
    with pytest.raises(RequestRefused, match=r"param 'reasons'.*integer >= 0"):
        served.model.unwrap_python_model().predict(None, request, {REASONS: -1})


def test_a_stale_explainer_file_cannot_make_a_masked_column_a_reason(served, tmp_path):
    files, threshold = served.files, served.params.evaluate.threshold
    stale = {**served.explainer, "excluded": []}  # a file that forgot what the privacy policy masks
    io.write_json(tmp_path / "explainer.json", stale)
    model = HumaneModel().load_files(
        threshold,
        files / "privacy_policy.json",
        files / "preprocessor.skops",
        files / "model.pt",
        files / DOMAIN_FILE,
        None,
        tmp_path / "explainer.json",
    )
    reasons = model.predict(None, served.rows.head(100), {REASONS: 3})[REASONS]
    named = {c for text in reasons for c in text.split(SEPARATOR) if c}
    assert named and not named & {"age", "native-country", "sex", "race"}
