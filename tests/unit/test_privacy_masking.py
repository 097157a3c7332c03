"""No raw value of a protected column (masked, sensitive, kept or date-derived) leaves in an error or a report."""

import json
import socket

import pandas as pd
import pytest

from humane.core.errors import DataError, ServerUnavailable, exit_code
from humane.data.params import DataParams, LeakageParams, ValidateParams
from humane.data.schema import resolve_schema
from humane.data.validation import report, validate_frames
from humane.privacy.params import PrivacyParams
from humane.privacy.policy import apply_policy, fit_policy, protected_columns, pseudonym_key

PLANTED_NUMBER = 987654  # out of the bins' span of the binned column `age`
PLANTED_CATEGORY = "ZZPLANTED"  # outside the value set of the sensitive column `sex`
PUBLIC_CATEGORY = "QQASTRONAUT"  # outside the value set of `occupation`, which nothing protects

SPEC = DataParams(
    name="tiny",
    intended_use="use.md",
    source="tiny.csv",
    target="income",
    positive_label=">50K",
    sensitive_features=["sex"],
    labels=["<=50K", ">50K"],
    numeric=["age", "capital-gain", "hours-per-week"],
    drop=["fnlwgt"],
    categorical=["workclass", "education", "occupation", "race", "sex", "native-country"],
)
PARAMS = ValidateParams(min_rows=10, min_group_rows=1, max_null_fraction=0.4, max_unseen_fraction=0.0, strict=False)
LEAKAGE = LeakageParams(max_feature_auc=1.0)  # tiny_adult's capital-gain follows the label: not what is tested here
POLICY = {"drop": [], "pseudonymize": [], "bins": {"age": [10.0, 20.0, 99.0]}, "top_code": {}, "kept_categories": {}}


def _privacy(**kw):
    base = dict(
        drop=[],
        pseudonymize=[],
        bins={},
        top_code={},
        group_rare={},
        key_env="HUMANE_TEST_KEY",
        key_block=None,
        quasi_identifiers=[],
        k=2,
        identifiers=dict(
            check=True, unique_share=0.9, text_unique_share=0.5, free_text_words=4, pattern_share=0.3, sample_rows=1000
        ),
    )
    base.update(kw)
    return PrivacyParams(**base)


def _docs_text(docs_dir):
    files = [p for p in docs_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".html" for p in files)
    return "\n".join(p.read_text(errors="replace") for p in files)


def test_policy_errors_count_offending_values_but_never_quote_them():
    frame = pd.DataFrame({"age": [18, 24, PLANTED_NUMBER, 5], "gain": [0, 10, 20, 30]})
    policy = fit_policy(_privacy(bins={"age": [17.0, 40.0, 91.0]}, top_code={"gain": 15.0}, strict_bins=True), frame)
    with pytest.raises(DataError) as out_of_bins:
        apply_policy(policy, frame, key=None)
    message = str(out_of_bins.value)
    assert "column 'age': privacy rule bins [17, 91]: 2 values fall outside the bins (1 below 17, 1 above 91" in message
    assert str(PLANTED_NUMBER) not in message and "5," not in message and "[5" not in message

    text = frame.astype({"age": "object", "gain": "object"})
    text.loc[[1, 2], "age"] = PLANTED_CATEGORY
    text.loc[0, "gain"] = PLANTED_CATEGORY
    with pytest.raises(DataError) as not_numbers:
        apply_policy(policy, text, key=None)
    message = str(not_numbers.value)
    assert "column 'age': privacy rule bins needs numbers" in message
    assert "fails for 2 values (1 distinct, of type str; values withheld" in message
    assert PLANTED_CATEGORY not in message
    with pytest.raises(DataError, match="column 'gain': privacy rule top_code needs numbers") as top_coded:
        apply_policy(policy, text.assign(age=18), key=None)
    assert PLANTED_CATEGORY not in str(top_coded.value)


def test_protected_columns_are_one_definition_of_four_kinds():
    rules = {"bins": {"age": [10.0, 99.0]}, "top_code": {"gain": 5.0}, "group_rare": {"native-country": 5}}
    privacy = _privacy(drop=["fnlwgt"], pseudonymize=["id"], keep=["email"], **rules)
    data = SPEC.model_copy(update={"dates": {"birth": "days"}})
    protected = protected_columns(privacy, data)
    assert protected.masked == {"fnlwgt", "id", "age", "gain", "native-country"}
    assert (protected.sensitive, protected.kept, protected.dates) == ({"sex"}, {"email"}, {"birth"})
    assert protected.all == {"fnlwgt", "id", "age", "gain", "native-country", "sex", "email", "birth"}
    assert protected.unmasked == {"email", "birth"}  # stored as loaded: withheld from the monitoring reference
    fitted = {**POLICY, "drop": ["ssn"]}  # a fitted policy adds its own columns
    assert protected_columns(_privacy(), SPEC, fitted).all == {"ssn", "age", "sex"}
    with pytest.raises(DataError, match=r"data/interim/privacy_policy.json: not a fitted privacy policy"):
        protected_columns(_privacy(), SPEC, {**POLICY, "generalize": {"age": 5}})  # an unknown rule fails closed
    with pytest.raises(DataError, match="not a fitted privacy policy"):
        protected_columns(_privacy(), SPEC, {"drop": []})


@pytest.mark.slow  # GX data docs: 4 s (on an idle two-core machine)
def test_validation_reports_and_data_docs_hold_no_value_of_a_protected_column(tiny_adult, tmp_path):
    schema = resolve_schema(SPEC, tiny_adult, POLICY)
    frame = tiny_adult.copy()
    frame.loc[0, "age"] = PLANTED_NUMBER
    frame.loc[1, "sex"] = PLANTED_CATEGORY
    frame.loc[2, "occupation"] = PUBLIC_CATEGORY
    protected = protected_columns(_privacy(), SPEC, POLICY).all
    assert protected == {"age", "sex"}
    docs = tmp_path / "docs"
    result = validate_frames(
        {"train": frame},
        {"train": "data/interim/train.parquet"},
        schema,
        PARAMS,
        docs_dir=docs,
        protected=protected,
        leakage=LEAKAGE,
    )

    failed = {(c.column, c.rule): c for c in result.failures}
    assert set(failed) == {
        ("age", "expect_column_values_to_be_between"),
        ("sex", "expect_column_values_to_be_in_set"),
        ("occupation", "expect_column_values_to_be_in_set"),
    }
    for key in [("age", "expect_column_values_to_be_between"), ("sex", "expect_column_values_to_be_in_set")]:
        check = failed[key]
        assert check.protected and check.examples is None  # counted, not quoted
        assert check.unexpected_count == 1 and check.unexpected_fraction == pytest.approx(1 / 12)
    assert failed[("occupation", "expect_column_values_to_be_in_set")].examples == [PUBLIC_CATEGORY]

    message = result.message()
    assert "column 'age': expect_column_values_to_be_between" in message and "1 rows (8.3%) violate it" in message
    assert "values withheld: protected column" in message
    report_text = json.dumps(report(result, schema), default=str)
    docs_text = _docs_text(docs)
    for where, text in {"message": message, "report": report_text, "data docs": docs_text}.items():
        assert PUBLIC_CATEGORY in text, where  # an unprotected column's offending value is still quoted
        assert str(PLANTED_NUMBER) not in text, where
        assert PLANTED_CATEGORY not in text, where
    written = report(result, schema)["schema"]
    assert "sex" not in written["categories"] and written["withheld_categories"] == ["sex"]  # learned from the data
    assert written["categories"]["occupation"] == ["Sales", "Tech-support"]  # an unprotected column's value set
    assert "Male" in report_text  # a group large enough is named by its size check, as the audits name it

    (groups,) = [c for c in result.checks if c.rule == "min_rows_per_sensitive_group"]
    assert groups.observed == {"Female": 6, "Male": 5, "<withheld group #1>": 1}  # the planted group, numbered


def test_unprotected_run_still_quotes_the_values(tiny_adult, tmp_path):
    """The same frame without `protected`: the planted values do appear, so the test above can fail."""
    schema = resolve_schema(SPEC, tiny_adult, POLICY)
    frame = tiny_adult.copy()
    frame.loc[0, "age"] = PLANTED_NUMBER
    frame.loc[1, "sex"] = PLANTED_CATEGORY
    docs = tmp_path / "docs"
    result = validate_frames({"train": frame}, {"train": "t"}, schema, PARAMS, docs_dir=docs, leakage=LEAKAGE)
    for text in [result.message(), json.dumps(report(result, schema), default=str), _docs_text(docs)]:
        assert str(PLANTED_NUMBER) in text and PLANTED_CATEGORY in text


def test_non_numeric_values_of_a_protected_numeric_column_are_counted_not_quoted(tiny_adult, tmp_path):
    schema = resolve_schema(SPEC, tiny_adult, POLICY)
    frame = tiny_adult.astype({"age": "object", "hours-per-week": "object"})
    frame.loc[[3, 4], "age"] = PLANTED_CATEGORY
    frame.loc[5, "hours-per-week"] = PUBLIC_CATEGORY
    docs = tmp_path / "docs"
    result = validate_frames(
        {"train": frame}, {"train": "t"}, schema, PARAMS, docs_dir=docs, protected={"age"}, leakage=LEAKAGE
    )
    failed = {(c.column, c.rule): c for c in result.failures}
    age = failed[("age", "expect_column_values_to_be_in_type_list")]
    assert age.unexpected_count == 2 and age.examples is None
    assert failed[("hours-per-week", "expect_column_values_to_be_in_type_list")].examples == [PUBLIC_CATEGORY]
    for text in [result.message(), json.dumps(report(result, schema), default=str), _docs_text(docs)]:
        assert PLANTED_CATEGORY not in text and PUBLIC_CATEGORY in text


def test_kept_and_date_columns_are_validated_without_quoting_a_value(tiny_adult, tmp_path):
    """A kept e-mail column with a few values and a date-derived number: failures counted, no value written."""
    train = tiny_adult.assign(email=[f"p{i % 3}@ZZKEPT.example" for i in range(12)], birth=range(-9000, -8988))
    test = train.astype({"birth": "object"})
    test.loc[[0, 1], "email"] = "stranger@ZZUNSEEN.example"  # outside the value set learned from the train pool
    test.loc[2, "birth"] = "ZZNOTADATE"
    roles = {"categorical": [*SPEC.categorical, "email"], "numeric": [*SPEC.numeric, "birth"]}
    spec = SPEC.model_copy(update={**roles, "dates": {"birth": "days"}})
    schema = resolve_schema(spec, train, POLICY)
    protected = protected_columns(_privacy(keep=["email"]), spec, POLICY).all
    docs = tmp_path / "docs"
    frames, files = {"train": train, "test": test}, {"train": "tr", "test": "te"}
    result = validate_frames(frames, files, schema, PARAMS, docs_dir=docs, protected=protected, leakage=LEAKAGE)

    failed = {(c.split, c.column, c.rule): c for c in result.failures}
    email = failed[("test", "email", "expect_column_values_to_be_in_set")]  # membership still checked
    assert email.protected and email.unexpected_count == 2 and email.examples is None
    birth = failed[("test", "birth", "expect_column_values_to_be_in_type_list")]
    assert birth.protected and birth.unexpected_count == 1 and birth.examples is None
    written = report(result, schema)
    assert written["schema"]["withheld_categories"] == ["email", "sex"]
    assert "email" not in written["schema"]["categories"] and "occupation" in written["schema"]["categories"]
    texts = {"message": result.message(), "report": json.dumps(written, default=str), "data docs": _docs_text(docs)}
    for where, text in texts.items():
        assert "ZZKEPT" not in text and "ZZUNSEEN" not in text and "ZZNOTADATE" not in text, where
    assert "Tech-support" in texts["report"] and "Tech-support" in texts["data docs"]  # unprotected value sets stay


def test_a_prefect_api_failure_reading_the_key_block_is_not_reported_as_no_key(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with socket.socket() as sock:  # a port nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.delenv("HUMANE_TEST_KEY", raising=False)
    params = _privacy(pseudonymize=["ssn"], key_block="humane-key")
    url = f"http://ops:hunter2@127.0.0.1:{port}/api"
    with temporary_settings({PREFECT_API_URL: url}), pytest.raises(ServerUnavailable) as err:
        pseudonym_key(params)
    message = str(err.value)
    assert "Prefect Secret block 'humane-key'" in message
    assert f"PREFECT_API_URL=http://127.0.0.1:{port}/api did not answer" in message
    assert "no key is set" not in message and "hunter2" not in message  # distinct; no password printed
    assert exit_code(err.value) == 10
