"""The served model takes what clients send: doubles for numbers, and every scored row flagged against its domain."""

import json
import re
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.scoring_server import invocations

from humane.core import io
from humane.core.paths import Paths
from humane.data.schema import resolve_schema
from humane.fairness.thresholds import fit_thresholds
from humane.governance.domain import (
    ABOVE,
    BELOW,
    NULL,
    UNSEEN,
    ColumnDomain,
    Domain,
    as_model_input,
    broken_rules,
    fit_domain,
)
from humane.governance.serving import (
    DECISION,
    DOMAIN_RULES,
    LABEL,
    OUT_OF_DOMAIN,
    PROBABILITY,
    HumaneModel,
    as_request,
    checked_copy,
)
from humane.governance.tracking import DOMAIN_FILE, log_serving_model
from humane.modeling.evaluation import predict_proba
from humane.modeling.features import fit_preprocessor, save_preprocessor, split_xy, to_model_frame
from humane.modeling.model import MLP, MLPArgs
from humane.pipeline.params import load_params
from humane.privacy.policy import apply_policy, fit_policy
from tests.conftest import ROOT

RULE = re.compile(rf"^[\w-]+: ({BELOW}|{ABOVE}|{UNSEEN}|{NULL})$")  # column and rule, no value


def _rules(row: pd.Series) -> set[str]:
    return set(filter(None, row[DOMAIN_RULES].split("; ")))


# ---- the domain alone: tiny frames ----


def test_fit_domain_takes_stated_ranges_else_training_and_never_a_protected_column_values():
    train = pd.DataFrame(
        {
            "hours": [10, 40, 60],
            "gain": [0, 5, None],
            "age": [17, 30, 70],
            "secret": [3.0, 9.0, 12.0],
            "job": ["a", "b", None],
            "country": ["US", "Other", "US"],
        }
    )
    domain = fit_domain(
        train,
        numeric=["hours", "gain", "age", "secret"],
        categorical=["job", "country"],
        ranges={"age": (17, 91)},
        categories={"job": ["a", "b", "c"], "country": ["US", "Mexico", "Other"]},
        grouped=["country"],
        protected={"age", "secret"},
    )
    assert domain.columns["hours"] == ColumnDomain("numeric", nulls=False, min=10.0, max=60.0)
    assert domain.columns["gain"] == ColumnDomain("numeric", nulls=True, min=0.0, max=5.0)
    assert domain.columns["age"] == ColumnDomain("numeric", nulls=False, min=17.0, max=91.0)  # stated, not data
    assert domain.columns["secret"] == ColumnDomain("numeric", nulls=False)  # protected: no min/max shipped
    assert domain.columns["job"].categories == ["a", "b"]  # "c" is documented but no training row had it
    assert domain.columns["job"].nulls
    assert domain.columns["country"].categories == ["US", "Mexico", "Other"]  # grouped: Mexico maps to Other
    assert Domain.from_dict(json.loads(json.dumps(domain.to_dict()))) == domain


def test_broken_rules_name_column_and_rule_only():
    domain = Domain(
        {
            "hours": ColumnDomain("numeric", False, 1.0, 99.0),
            "job": ColumnDomain("categorical", True, categories=["a", "b"]),
            "code": ColumnDomain("categorical", False, categories=[1, 2]),
        }
    )
    request = pd.DataFrame({"hours": [-5, 40.0, None, 1e6], "job": ["a", "zzz", None, "b"], "code": [1.0, 2, 3, None]})
    rules = broken_rules(domain, as_model_input(domain, request))
    assert rules == [
        [f"hours: {BELOW}"],
        [f"job: {UNSEEN}"],
        [f"hours: {NULL}", f"code: {UNSEEN}"],  # a null job is fine: training had some
        [f"hours: {ABOVE}", f"code: {NULL}"],
    ]


def test_text_in_a_numeric_input_is_an_error_that_quotes_nothing():
    domain = Domain({"hours": ColumnDomain("numeric", False, 1.0, 99.0)})
    with pytest.raises(Exception, match=r"'hours'.*1 values are not numbers") as err:
        as_model_input(domain, pd.DataFrame({"hours": ["40", "PLANTED"]}))
    assert "PLANTED" not in str(err.value)


# ---- a real model, logged and loaded through MLflow ----


def _adult_rows(n: int, seed: int, numeric_sex: bool = False) -> pd.DataFrame:
    """Raw Adult-shaped rows: integer columns as CSV readers give them, nulls in workclass only.

    `numeric_sex`: sex coded 0/1 (int64), as many datasets code a group.
    """
    rows = _adult_text_rows(n, seed)
    if numeric_sex:
        rows["sex"] = (rows["sex"] == "Male").astype("int64")
    return rows


def _adult_text_rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(17, 90, n),
            "workclass": rng.choice(["Private", "State-gov", None], n),
            "fnlwgt": rng.integers(10_000, 300_000, n),
            "education": rng.choice(["Bachelors", "HS-grad"], n),
            "education-num": rng.integers(1, 16, n),
            "marital-status": rng.choice(["Never-married", "Divorced"], n),
            "occupation": rng.choice(["Sales", "Tech-support"], n),
            "relationship": rng.choice(["Husband", "Wife"], n),
            "race": rng.choice(["White", "Black"], n),
            "sex": rng.choice(["Male", "Female"], n),
            "capital-gain": rng.choice([0, 5000], n),
            "capital-loss": np.zeros(n, dtype=np.int64),
            "hours-per-week": rng.integers(20, 60, n),
            "native-country": "United-States",
            "income": rng.choice(["<=50K", ">50K"], n),
        }
    )


def write_stage_inputs(paths: Paths, train, test, policy, schema, pre) -> None:
    """The files the track stage reads besides the model: masked rows, policy, validated schema, preprocessor."""
    io.write_parquet(paths.interim_train, train)
    io.write_parquet(paths.interim_test, test)
    io.write_json(paths.privacy_policy, policy.to_dict())
    io.write_json(paths.validation_report, {"passed": True, "schema": asdict(schema)})
    paths.preprocessor.parent.mkdir(parents=True, exist_ok=True)
    save_preprocessor(pre, paths.preprocessor)


def _log(root: Path, thresholds: str, numeric_sex: bool = False):
    """A tiny model built as the pipeline builds one (optionally post-processed), logged by tracking, loaded back."""
    paths = Paths(root)
    params = load_params(ROOT / "params.yaml")  # the built-in Adult profile: documented ranges, age bins
    raw_train, raw_test = _adult_rows(60, 0, numeric_sex), _adult_rows(20, 1, numeric_sex)
    policy = fit_policy(params.privacy, raw_train)
    train, test = apply_policy(policy, raw_train, key=None), apply_policy(policy, raw_test, key=None)
    schema = resolve_schema(params.data, train, policy.to_dict(), params.validate_.min_group_rows)
    pre = fit_preprocessor(train, schema, params.preprocess)
    torch.manual_seed(0)
    network = MLP(MLPArgs(len(pre.feature_names), [8], 0.0, "relu"))
    write_stage_inputs(paths, train, test, policy, schema, pre)
    state = {"state_dict": network.state_dict(), "model_args": network.args.to_dict()}
    torch.save(state, paths.model)
    settings = params.mitigation.model_copy(update={"thresholds": thresholds, "target": ["sex"]})
    val = to_model_frame(pre, train)  # stands in for the validation rows here
    io.write_json(paths.thresholds, fit_thresholds(predict_proba(state, split_xy(val)[0]), val, settings, 5, 0.5))

    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    try:
        experiment = mlflow.create_experiment("serving", artifact_location=(root / "mlartifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = log_serving_model(paths, 0.5, {*policy.masked_columns, *schema.sensitive})
        local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(root / "downloaded")))
        return mlflow.pyfunc.load_model(str(local)), local, raw_test.drop(columns=["income"])
    finally:
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The plain model: one threshold for everyone."""
    return _log(tmp_path_factory.mktemp("served"), "none")


@pytest.fixture(scope="module")
def served_thresholds(tmp_path_factory):
    """The model post-processed for demographic parity on sex: it needs `sex` in every request."""
    return _log(tmp_path_factory.mktemp("served_thresholds"), "demographic_parity")


def test_a_post_processed_model_refuses_a_request_without_the_sensitive_column(served_thresholds):
    model, local, rows = served_thresholds
    types = {spec.name: spec.type.name for spec in model.metadata.get_input_schema().inputs}
    assert types["sex"] == "string"  # the signature says so
    body = json.dumps({"dataframe_records": json.loads(rows.head(4).to_json(orient="records"))})
    scored = _post(model, body)  # with the column: scored, and decided per group
    assert len(scored) == 4 and set(scored[DECISION]) <= {0, 1}
    without = json.dumps(
        {"dataframe_records": json.loads(rows.drop(columns=["sex"]).head(4).to_json(orient="records"))}
    )
    # Refused by the signature, naming the column: through the scoring server's handler and from Python.
    with pytest.raises(MlflowException, match=r"missing inputs \['sex'\]"):
        invocations(without, "application/json", model, model.metadata.get_input_schema())
    with pytest.raises(MlflowException, match=r"missing inputs \['sex'\]"):
        model.predict(as_request(rows.drop(columns=["sex"]), model.metadata.get_input_schema()))
    # And by the model itself, should a caller bypass the signature.
    with pytest.raises(Exception, match=r"lacks the sensitive column\(s\) \['sex'\]"):
        model.unwrap_python_model().predict(None, rows.drop(columns=["sex"]))
    # The logged example request is a valid request (it carries a group).
    assert len(_post(model, (local / "serving_input_example.json").read_text())) == 1


def test_a_group_coded_as_a_number_finds_its_threshold_when_sent_as_a_float(tmp_path):
    # Trained on sex coded 0/1 (int64); the signature declares the column double, so a JSON client's 1 and 1.0 both
    # arrive as 1.0. The group is still "1", the key its threshold was fitted under, not an unseen "1.0".
    model, local, _ = _log(tmp_path, "demographic_parity", numeric_sex=True)
    fitted = io.read_json(local / "artifacts" / "thresholds.json")
    assert set(fitted["groups"]) == {"0", "1"}
    rows = _adult_rows(100, 2, numeric_sex=True).drop(columns=["income"])
    records = json.loads(rows.to_json(orient="records"))
    for record in records:
        record["sex"] = float(record["sex"])
    scored = _post(model, json.dumps({"dataframe_records": records}))
    direct = model.unwrap_python_model().predict(None, rows)  # int64 codes, past the signature
    assert scored[DECISION].tolist() == direct[DECISION].tolist()
    # The check can tell: the groups' thresholds decide some rows otherwise than the fallback an unseen group gets
    # (100 rows: 4 or more such rows for each of 60 seeds tried; 20 rows left none for 2 of 40 seeds).
    fallback = (direct[PROBABILITY] >= fitted["fallback_threshold"]).astype(int)
    assert (direct[DECISION] != fallback).any()


def test_numeric_inputs_are_doubles_in_the_signature(served):
    model, _, _ = served
    types = {spec.name: spec.type.name for spec in model.metadata.get_input_schema().inputs}
    assert {types[c] for c in ["age", "education-num", "capital-gain", "capital-loss", "hours-per-week"]} == {"double"}
    assert types["workclass"] == "string" and "income" not in types and "sex" not in types
    outputs = {spec.name for spec in model.metadata.get_output_schema().inputs}
    assert {PROBABILITY, LABEL, OUT_OF_DOMAIN, DOMAIN_RULES} <= outputs


def _post(model, body: str) -> pd.DataFrame:
    """What `mlflow models serve` answers to a POST /invocations with this JSON body (its own request handler)."""
    answer = invocations(body, "application/json", model, model.metadata.get_input_schema())
    assert answer.status == 200, answer.response
    return pd.DataFrame(json.loads(answer.response)["predictions"])


def test_a_json_client_sending_floats_for_integer_looking_columns_is_scored(served):
    model, local, rows = served
    records = json.loads(rows.head(3).to_json(orient="records"))  # integers, as a client writes them
    for record, gain, age in zip(records, [0.0, 1e6, 5000.0], [30.0, 45.5, 60], strict=True):
        record.update({"capital-gain": gain, "age": age})  # floats, and an integer beside them
    records[2]["hours-per-week"] = None  # JSON's null in an integer-looking column
    body = json.dumps({"dataframe_records": records})
    assert '"capital-gain": 1000000.0' in body and '"capital-gain": 0.0' in body
    scored = _post(model, body)
    assert len(scored) == 3 and scored[PROBABILITY].between(0, 1).all()
    assert [_rules(r) for _, r in scored.iterrows()] == [
        set(),
        {"capital-gain: above the validated range"},  # Adult documents 0-99999
        {"hours-per-week: null where none was seen"},
    ]
    assert scored[OUT_OF_DOMAIN].tolist() == [False, True, True]
    # The request example logged with the model is itself a valid request.
    assert len(_post(model, (local / "serving_input_example.json").read_text())) == 1


def test_python_clients_cast_integer_columns_with_as_request(served):
    model, _, rows = served
    with pytest.raises(MlflowException, match="Can not safely convert int64 to float64"):
        model.predict(rows)  # MLflow's own enforcement: int64 is refused for a double column
    scored = model.predict(as_request(rows, model.metadata.get_input_schema()))
    assert scored[PROBABILITY].between(0, 1).all() and set(scored[LABEL]) <= {"<=50K", ">50K"}


def test_each_row_comes_back_flagged_with_the_rules_it_breaks(served):
    model, _, rows = served
    request = as_request(rows.head(6).reset_index(drop=True), model.metadata.get_input_schema())
    request.loc[0, "hours-per-week"] = -3.0  # Adult's documented hours: 1-99
    request.loc[1, "workclass"] = "Space-agency"  # no training row had it
    request.loc[2, "age"] = np.nan  # training held no null age
    request.loc[3, "workclass"] = None  # training held null workclass: fine
    request.loc[4, "age"] = 97.0  # beyond the bins' span and Adult's documented ages: answered, and flagged
    scored = model.predict(request)
    assert list(scored.columns[:2]) == [PROBABILITY, LABEL] and scored[PROBABILITY].notna().all()
    assert [_rules(r) for _, r in scored.iterrows()] == [
        {"hours-per-week: below the validated range"},
        {"workclass: unseen category"},
        {"age: null where none was seen"},
        set(),
        {"age: above the validated range"},
        set(),
    ]
    assert scored[OUT_OF_DOMAIN].tolist() == [True, True, True, False, True, False]
    assert all(RULE.match(rule) for _, row in scored.iterrows() for rule in _rules(row))  # no value is quoted


def test_age_97_is_answered_like_the_outermost_bin(served):
    model, _, rows = served
    request = as_request(rows.head(1).reset_index(drop=True), model.metadata.get_input_schema())
    old, oldest_bin = request.assign(age=97.0), request.assign(age=75.0)
    assert model.predict(old)[PROBABILITY].iloc[0] == pytest.approx(model.predict(oldest_bin)[PROBABILITY].iloc[0])
    assert model.predict(old)[OUT_OF_DOMAIN].iloc[0] and not model.predict(oldest_bin)[OUT_OF_DOMAIN].iloc[0]


def test_the_domain_ships_beside_the_model_without_protected_values(served):
    _, local, _ = served
    (path,) = local.rglob(DOMAIN_FILE)
    domain = Domain.from_dict(json.loads(path.read_text()))
    assert domain.columns["age"].min == 17 and domain.columns["age"].max == 91  # the bins' span, not the data's
    assert domain.columns["hours-per-week"].max == 99  # Adult's documented range
    assert "sex" not in domain.columns and "fnlwgt" not in domain.columns  # not model inputs
    assert domain.columns["native-country"].categories[-1] == "Other"  # grouped: the documented list and Other


def test_serving_answers_beyond_the_bins_even_when_loading_was_strict(served, tmp_path):
    _, local, rows = served
    files = local / "artifacts"
    strict = tmp_path / "privacy_policy.json"
    strict.write_text(json.dumps({**json.loads((files / "privacy_policy.json").read_text()), "strict_bins": True}))
    model = HumaneModel().load_files(0.5, strict, files / "preprocessor.skops", files / "model.pt", files / DOMAIN_FILE)
    scored = model.predict(None, rows.head(2).assign(age=[97, 12]))
    assert scored[PROBABILITY].notna().all()
    assert scored[DOMAIN_RULES].tolist() == [f"age: {ABOVE}", f"age: {BELOW}"]


def test_a_model_logged_without_a_domain_still_scores_unflagged(served):
    _, local, rows = served
    files = local / "artifacts"
    policy, pre, network = files / "privacy_policy.json", files / "preprocessor.skops", files / "model.pt"
    model = HumaneModel().load_files(0.5, policy, pre, network)  # no domain file, as models logged before
    scored = model.predict(None, rows.head(2).assign(age=[97, 40]))
    assert scored[PROBABILITY].notna().all() and not scored[OUT_OF_DOMAIN].any() and set(scored[DOMAIN_RULES]) == {""}


# ---- the registered files: a manifest at registration, verified before anything is loaded ----


def test_default_retry_budget_bounds_every_attempt_and_wait_within_30_s():
    from humane.governance.store import DEFAULT_RETRY_S, retry_budget, retry_plan

    plan = retry_plan(retry_budget({}))
    assert plan.budget_s == DEFAULT_RETRY_S == 30 and plan.worst_case_s <= 30 and plan.retries >= 1
    assert all(retry_plan(b).worst_case_s <= b for b in range(4, 600))
    assert plan.environment()["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == str(plan.retries)


def test_a_bad_retry_setting_is_named():
    from humane.core.errors import ConfigError
    from humane.governance.store import retry_budget

    for raw in ("soon", "2", "-1"):
        with pytest.raises(ConfigError, match=f"HUMANE_SERVER_RETRY_S='{raw}'"):
            retry_budget({"HUMANE_SERVER_RETRY_S": raw})


def test_a_server_is_named_without_its_credentials():
    from humane.governance.store import safe_uri

    assert safe_uri("https://tina:s3cret@mlflow.example:5000/x") == "https://mlflow.example:5000/x"
    assert safe_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_a_manifest_names_the_missing_added_or_changed_file(tmp_path):
    from humane.core.errors import IntegrityFailed
    from humane.governance.registry import manifest_tag, verify_manifest

    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts/model.pt").write_bytes(b"weights")
    (tmp_path / "served_model.py").write_text("print('served')\n")
    recorded = manifest_tag(tmp_path)
    verify_manifest(tmp_path, recorded, "m v1")
    (tmp_path / "artifacts/model.pt").write_bytes(b"other weights")
    with pytest.raises(IntegrityFailed, match=r"file artifacts/model.pt changed after registration"):
        verify_manifest(tmp_path, recorded, "m v1")
    (tmp_path / "artifacts/model.pt").unlink()
    with pytest.raises(IntegrityFailed, match=r"file artifacts/model.pt is missing"):
        verify_manifest(tmp_path, recorded, "m v1")
    (tmp_path / "artifacts/model.pt").write_bytes(b"weights")
    (tmp_path / "extra.py").write_text("x = 1\n")
    with pytest.raises(IntegrityFailed, match=r"file extra.py was added after registration"):
        verify_manifest(tmp_path, recorded, "m v1")
    with pytest.raises(IntegrityFailed, match="no manifest of its files was recorded"):
        verify_manifest(tmp_path, None, "m v1")


def test_a_tampered_registered_file_is_refused_by_name_before_its_code_runs(served, monkeypatch, tmp_path):
    """Registered in the fixture's real SQLite store; one file changed in the artifact store afterwards."""
    import yaml

    from humane.core.errors import IntegrityFailed
    from humane.governance.promotion import record_manifest
    from humane.governance.registry import load_verified, register_version, set_tags
    from humane.governance.store import client, using_tracking_uri

    _, local, rows = served
    root = next(p for p in local.parents if (p / "mlflow.db").exists())
    logged = yaml.safe_load((local / "MLmodel").read_text())
    uri, name = f"sqlite:///{root}/mlflow.db", "humane-unit"
    store = client(uri)
    with using_tracking_uri(uri):  # the SQLite registry finds the logged model on the fluent API's store
        version = register_version(store, name, f"models:/{logged['model_id']}", logged["run_id"])
    set_tags(store, name, version, record_manifest(store, uri, name, version, team=False))
    model = load_verified(uri, name, version)
    assert len(model.predict(as_request(rows.head(3), model.metadata.get_input_schema()))) == 3

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert (checked_copy(name, version, tmp_path / "good") / "MLmodel").exists()  # what `--files` serves from

    (stored,) = root.glob(f"mlartifacts/**/{logged['model_id']}/artifacts/served_model.py")
    stored.write_text(stored.read_text() + "\nraise SystemExit('the tampered code ran')\n")
    for load in (
        lambda: load_verified(uri, name, version),
        lambda: record_manifest(store, uri, name, version, False),
        lambda: checked_copy(name, version, tmp_path / "served"),
    ):
        with pytest.raises(
            IntegrityFailed, match=rf"{name} v{version}: file served_model.py changed after registration"
        ):
            load()
    assert not (tmp_path / "served").exists() and [p.name for p in tmp_path.iterdir()] == ["good"]
