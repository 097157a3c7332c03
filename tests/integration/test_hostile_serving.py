"""Real: Hypothesis against the shared run's registered model: MLflow's scoring app in process, `mlflow models serve`.

Hostile scoring requests, generated (Hypothesis), to the registered model of the session's shared pipeline run.

In process, through the scoring server's own FastAPI app (`mlflow.pyfunc.scoring_server.init`, what `mlflow models
serve` runs) and through the pyfunc's `predict`; then a smaller number to a real `mlflow models serve` process.
Every request is scored (one finite probability per row) or refused with a 4xx and a JSON error that carries no
traceback; never a 5xx. No request changes the registry. Run with `--hypothesis-show-statistics` for the counts.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException

from humane.core.errors import HumaneError
from humane.governance.serving import PROBABILITY, as_request
from tests.conftest import BIN, SAMPLE_DIR, _free_port, mlflow_client

MODEL = "humane-sample"
BATTERY = settings(
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


def registry_state(project: Path) -> list[tuple]:
    """Every registered model's versions, their tags and aliases: what no request may change."""
    client = mlflow_client(project)
    state = []
    for model in client.search_registered_models():
        aliases = tuple(sorted(model.aliases.items()))
        for version in client.search_model_versions(f"name = '{model.name}'"):
            state.append((model.name, version.version, version.status, tuple(sorted(version.tags.items())), aliases))
    return sorted(state)


@pytest.fixture(scope="module")
def served(repro_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The shared run's registered version, loaded through MLflow, with raw request rows and the registry's state."""
    before = registry_state(repro_project)
    uri = f"models:/{MODEL}/{mlflow_client(repro_project).get_model_version_by_alias(MODEL, 'champion').version}"
    mlflow.set_tracking_uri(f"sqlite:///{repro_project / 'mlflow.db'}")
    try:
        model = mlflow.pyfunc.load_model(uri)
        scratch = tmp_path_factory.mktemp("hostile-model")
        local = mlflow.artifacts.download_artifacts(uri, dst_path=str(scratch / "model"))
    finally:
        mlflow.set_tracking_uri(None)
    rows = pd.read_csv(repro_project / SAMPLE_DIR / "test.csv").drop(columns=["income"]).head(200)
    from fastapi.testclient import TestClient
    from mlflow.pyfunc.scoring_server import init

    with TestClient(init(model), raise_server_exceptions=False) as client:
        yield {
            "project": repro_project,
            "scratch": scratch,
            "model": model,
            "local": Path(local),
            "rows": rows,
            "client": client,
        }
    assert registry_state(repro_project) == before  # no request changed the registry


# ---- requests: valid rows, mutated; random JSON; wrong content ----

_CHARS = st.characters(codec="utf-8", exclude_categories=["Cs"])
_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(_CHARS, max_size=12),
    st.sampled_from(["", "NaN", "inf", "-1e309", "\x00", "40", "Male", "1e6"]),
)
_JSON = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def requests(draw: st.DrawFn, rows: pd.DataFrame) -> tuple[str, int | None]:
    """A JSON body and the number of rows it should score if accepted (None: not a frame of rows)."""
    kind = draw(st.sampled_from(["records", "records", "records", "split", "instances", "inputs", "json", "text"]))
    if kind == "json":
        return json.dumps(draw(_JSON)), None
    if kind == "text":
        return draw(
            st.text(_CHARS, max_size=40) | st.sampled_from(["", "{", "[]", "null", '{"dataframe_records": 1}'])
        ), None
    n = draw(st.integers(0, 6))
    batch = rows.sample(n=n, random_state=draw(st.integers(0, 1000))) if n else rows.head(0)
    records = json.loads(batch.to_json(orient="records"))
    columns = list(rows.columns)
    gone = draw(st.lists(st.sampled_from(columns), max_size=3, unique=True)) if draw(st.integers(1, 4)) == 1 else []
    extra = (
        draw(st.dictionaries(st.text(_CHARS, max_size=8), _SCALAR, max_size=3)) if draw(st.integers(1, 3)) == 1 else {}
    )
    for record in records:
        for column in gone:
            record.pop(column, None)
        record.update(extra)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2])) if records else 0):  # hostile cells: wrong types, nesting
        records[draw(st.integers(0, len(records) - 1))][draw(st.sampled_from(columns))] = draw(_JSON)
    if kind == "records":
        return json.dumps({"dataframe_records": records}, allow_nan=True), n
    frame = pd.DataFrame(records)
    if kind == "split":
        split = {"columns": list(frame.columns), "data": frame.astype(object).values.tolist()}
        return json.dumps({"dataframe_split": split}, default=str), n
    return json.dumps({kind: frame.astype(object).to_dict(orient="list")}, default=str), n


def _check_answer(status: int, body: str, rows: int | None) -> str:
    """A 200 scores every row (finite probabilities in [0, 1]); anything else is a 4xx JSON error, no traceback."""
    assert status < 500, body[:2000]
    if status == 200:
        predictions = json.loads(body)["predictions"]
        if rows is not None:
            assert len(predictions) == rows
        assert all(0 <= p[PROBABILITY] <= 1 and math.isfinite(p[PROBABILITY]) for p in predictions), predictions
        return "scored"
    assert 400 <= status < 500
    error = json.loads(body) if status != 415 else {"message": body, "error_code": "UNSUPPORTED"}
    assert error.get("message") and error.get("error_code"), body[:2000]
    assert "stack_trace" not in error and "Traceback" not in body, body[:3000]
    return f"refused {status} {error['error_code']}"


@settings(BATTERY, max_examples=80)
@given(data=st.data())
def test_generated_requests_are_scored_or_refused_with_a_4xx(served, data):
    body, rows = data.draw(requests(served["rows"]), label="request")
    answer = served["client"].post("/invocations", content=body, headers={"Content-Type": "application/json"})
    event(_check_answer(answer.status_code, answer.text, rows))


@settings(BATTERY, max_examples=40)
@given(data=st.data())
def test_generated_frames_from_python_are_scored_or_refused_with_a_humane_or_mlflow_error(served, data):
    model, rows = served["model"], served["rows"]
    body, n = data.draw(requests(rows), label="request")
    if n is None or not body.startswith('{"dataframe_records"'):
        return
    frame = pd.DataFrame(json.loads(body)["dataframe_records"])
    try:
        scored = model.predict(as_request(frame, model.metadata.get_input_schema()))
    except (HumaneError, MlflowException) as err:
        assert "Traceback" not in str(err)
        event(f"refused {type(err).__name__}")
        return
    assert len(scored) == n and scored[PROBABILITY].between(0, 1).all()
    event("scored")


def test_a_cell_holding_a_list_is_refused_with_a_400_naming_the_column(served):
    # Found by the battery: a JSON array in a text column passed MLflow's schema check and broke the one-hot encoder,
    # which the server answered with a generic 400 carrying the traceback.
    records = json.loads(served["rows"].head(2).to_json(orient="records"))
    records[1]["workclass"] = ["Private", {"x": 1}]
    body = json.dumps({"dataframe_records": records})
    answer = served["client"].post("/invocations", content=body, headers={"Content-Type": "application/json"})
    assert _check_answer(answer.status_code, answer.text, 2) == "refused 400 INVALID_PARAMETER_VALUE"
    assert "request column 'workclass': 1 values are a list or an object" in json.loads(answer.text)["message"]
    with pytest.raises(HumaneError, match=r"'workclass': 1 values are a list"):
        served["model"].predict(as_request(pd.DataFrame(records), served["model"].metadata.get_input_schema()))


def test_a_huge_batch_is_scored(served):
    rows = pd.concat([served["rows"]] * 100, ignore_index=True)  # 20,000 rows
    body = json.dumps({"dataframe_records": json.loads(rows.to_json(orient="records"))})
    answer = served["client"].post("/invocations", content=body, headers={"Content-Type": "application/json"})
    assert _check_answer(answer.status_code, answer.text, len(rows)) == "scored"


# ---- a real `mlflow models serve` process ----


@pytest.fixture(scope="module")
def server(served: dict[str, Any]) -> Iterator[str]:
    """`mlflow models serve` on the downloaded registered model (no conda/virtualenv: this environment)."""
    port = _free_port()
    log = open(served["scratch"] / "hostile-serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            str(served["local"]),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "--env-manager",
            "local",
            "-w",
            "1",
        ],
        cwd=served["project"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError((served["scratch"] / "hostile-serve.log").read_text()[-3000:]) from None
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _post(url: str, body: str) -> tuple[int, str]:
    request = urllib.request.Request(
        f"{url}/invocations", data=body.encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@settings(BATTERY, max_examples=25)
@given(data=st.data())
def test_generated_requests_to_mlflow_models_serve(served, server, data):
    body, rows = data.draw(requests(served["rows"]), label="request")
    status, text = _post(server, body)
    event(_check_answer(status, text, rows))
