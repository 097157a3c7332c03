import os
import re

import pytest
import yaml

from humane.core.errors import ConfigError
from humane.core.params import flatten, read_raw
from humane.data.datasets import BUILTINS
from humane.data.params import confine
from humane.pipeline.params import (
    OVERRIDABLE,
    apply_overrides,
    check_overridable,
    check_paths,
    load_params,
    parse_params,
)
from tests.conftest import ROOT

PARAMS = ROOT / "params.yaml"


def test_project_params_parse():
    params = load_params(PARAMS)
    assert params.data.source == "adult"
    assert params.train.hidden_sizes == [256, 256]
    assert params.validate.min_rows == 500 and params.data.model_name == "humane-adult"


def test_params_are_frozen():
    params = load_params(PARAMS)
    with pytest.raises(ValueError, match="frozen"):
        params.train.lr = 1.0


def test_unknown_key_is_an_error_naming_it_and_the_allowed_keys():
    raw = read_raw(PARAMS)
    raw["train"]["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match=r"train\.learning_rate: unknown key; allowed in train: \['activation'"):
        parse_params(raw)


def test_missing_required_key_is_an_error():
    raw = read_raw(PARAMS)
    del raw["data"]["target"]
    with pytest.raises(ConfigError, match=r"data\.target: required key is missing"):
        parse_params(raw)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("batch_size", "big", r"train\.batch_size: input should be a valid integer, got 'big'"),
        ("batch_size", True, r"train\.batch_size: input should be a valid integer, got True"),
        ("lr", "fast", r"train\.lr: input should be a valid number, got 'fast'"),
    ],
)
def test_wrong_type_names_the_key(key, value, message):
    raw = read_raw(PARAMS)
    raw["train"][key] = value
    with pytest.raises(ConfigError, match=message):
        parse_params(raw)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.lr", float("inf"), r"train\.lr: input should be a finite number"),
        ("evaluate.threshold", float("nan"), r"evaluate\.threshold: input should be a finite number"),
        ("evaluate.threshold", 5.0, r"evaluate\.threshold: input should be less than 1"),
        ("preprocess.val_fraction", 0, r"preprocess\.val_fraction: input should be greater than 0"),
    ],
)
def test_overrides_are_finite_and_within_range(key, value, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(read_raw(PARAMS), {key: value})


def test_an_integer_is_a_valid_float():
    raw = read_raw(PARAMS)
    raw["train"]["lr"] = 1
    assert parse_params(raw).train.lr == 1.0


def test_overrides_replace_allow_listed_keys_and_check_types():
    raw = read_raw(PARAMS)
    out = apply_overrides(raw, {"train.lr": 0.003, "train.hidden_sizes": [8]})
    assert out["train"]["lr"] == 0.003 and out["train"]["hidden_sizes"] == [8]
    assert raw["train"]["lr"] != 0.003  # the input is not modified
    with pytest.raises(ConfigError, match=r"override 'train\.nope' refused"):
        apply_overrides(raw, {"train.nope": 1})
    with pytest.raises(ConfigError, match=r"train\.lr: input should be a valid number"):
        apply_overrides(raw, {"train.lr": "fast"})


@pytest.mark.parametrize(
    "key",
    [
        "gate.min.test.accuracy",
        "gate.require_validation",
        "data.name",
        "data.intended_use",
        "policy.min",
        "data.source",
        "privacy.drop",
        "validate.min_rows",
        "audit.min_group_size",
        "gate.above_baseline",
        "preprocess.include_sensitive",
        "train.dp.enabled",
        "train.dp.delta",
        "train.dp",
        "train",
    ],
)
def test_policy_keys_cannot_be_overridden(key):
    with pytest.raises(ConfigError, match=rf"override '{key}' refused: a flow run may change only"):
        apply_overrides(read_raw(PARAMS), {key: 0})


def test_the_allow_list_is_experiment_settings_only():
    assert {k.split(".")[0] for k in OVERRIDABLE} == {"preprocess", "train", "evaluate", "mitigation"}
    assert "mitigation.target" not in OVERRIDABLE  # which groups are protected is the profile's decision
    assert not [k for k in OVERRIDABLE if k.startswith("train.dp")]  # the privacy guarantee is policy
    check_overridable({"train.lr": 1, "evaluate.threshold": 0.4, "preprocess.seed": 3})


def test_paths_are_confined_to_the_project(tmp_path):
    project = tmp_path / "project"
    (project / "data" / "raw").mkdir(parents=True)
    (project / "data" / "raw" / "ok.csv").write_text("a\n1\n")
    (project / "notes.csv").write_text("a\n1\n")
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    assert confine("data/raw/ok.csv", "data.source", project) == (project / "data/raw/ok.csv").resolve()
    with pytest.raises(ConfigError, match=r"data\.source: 'notes\.csv' resolves to .* outside data/raw/"):
        confine("notes.csv", "data.source", project)  # in the project, but not where DVC watches data
    assert confine("notes.csv", "data.intended_use", project) == (project / "notes.csv").resolve()
    with pytest.raises(ConfigError, match=r"data\.source: '\.\./secret\.csv' resolves to .* outside data/raw/"):
        confine("../secret.csv", "data.source", project)
    with pytest.raises(ConfigError, match=r"data\.intended_use: '/etc/passwd' resolves to /etc/passwd"):
        confine("/etc/passwd", "data.intended_use", project)
    os.symlink(outside, project / "data" / "raw" / "link.csv")
    with pytest.raises(ConfigError, match=r"data\.test_source: 'data/raw/link\.csv' resolves to .*secret\.csv"):
        confine("data/raw/link.csv", "data.test_source", project)


def test_a_declared_absolute_data_root_admits_data_files_only(tmp_path):
    project, shared = tmp_path / "project", tmp_path / "shared"
    project.mkdir()
    shared.mkdir()
    (shared / "loans.csv").write_text("a\n1\n")
    assert confine(str(shared / "loans.csv"), "data.source", project, str(shared)) == shared / "loans.csv"
    with pytest.raises(ConfigError, match=r"data\.intended_use: .* outside the project folder;"):
        confine(str(shared / "loans.csv"), "data.intended_use", project, str(shared))
    with pytest.raises(ConfigError, match=r"data\.root: must be an absolute folder"):
        confine("x.csv", "data.source", project, "relative/dir")


def test_check_paths_skips_builtins_and_names_the_key():
    raw = read_raw(PARAMS)
    check_paths(parse_params(raw), ROOT, frozenset(BUILTINS))
    raw["data"]["intended_use"] = "../../etc/hostname"
    with pytest.raises(ConfigError, match=r"data\.intended_use"):
        check_paths(parse_params(raw), ROOT, frozenset(BUILTINS))


def test_flatten_uses_dotted_names():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}


def test_exponent_floats_survive_the_round_trip_through_params_yaml(tmp_path):
    """An override like train.lr=1e-5 is written as DVC writes YAML (1e-05) and read back as a number."""
    from humane.pipeline.workspace import _set_params

    path = tmp_path / "params.yaml"
    path.write_text(PARAMS.read_text())
    _set_params(path, {"train.lr": 1e-5, "train.weight_decay": 1e-3})
    assert "1e-05" in path.read_text()
    params = load_params(path)
    assert params.train.lr == 1e-5 and params.train.weight_decay == 1e-3


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("train.lr", -1.0),
        ("train.dropout", 5.0),
        ("train.batch_size", 0),
        ("train.max_epochs", 0),
        ("train.hidden_sizes", []),
        ("train.hidden_sizes", [-3]),
        ("train.activation", "nope"),
        ("evaluate.calibration_bins", 100000),
    ],
)
def test_experiment_settings_are_bounded(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        apply_overrides(read_raw(PARAMS), {key: value})


def test_the_intended_use_must_be_an_existing_markdown_file(tmp_path):
    from humane.data.params import check_intended_use

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "use.md").write_text("# use\n")
    (tmp_path / "data.csv").write_text("a\n1\n")
    assert check_intended_use("docs/use.md", tmp_path) == (tmp_path / "docs/use.md").resolve()
    for bad in ("docs/nope.md", "data.csv"):
        with pytest.raises(ConfigError, match=r"data\.intended_use: .* must be an existing Markdown"):
            check_intended_use(bad, tmp_path)


@pytest.mark.parametrize(("label", "typed"), [("1", 1), ("true", True), ('"yes"', "yes"), ("'1'", "1")])
def test_labels_keep_their_yaml_type(tmp_path, label, typed):
    """positive_label: 1, true and "yes" are an int, a bool and a string, as YAML types them (never forced to str)."""
    text = PARAMS.read_text().replace('positive_label: ">50K"', f"positive_label: {label}")
    (tmp_path / "params.yaml").write_text(text)
    value = load_params(tmp_path / "params.yaml").data.positive_label
    assert value == typed and type(value) is type(typed)


def test_params_yaml_holds_the_adult_profile_verbatim():
    """params.yaml's profile sections are profiles/adult.yaml's: no drift between the two copies."""
    from humane.pipeline.params import PROFILE_SECTIONS

    profile, params = read_raw(ROOT / "profiles/adult.yaml"), read_raw(PARAMS)
    assert {s: params.get(s) for s in PROFILE_SECTIONS} == {s: profile.get(s) for s in PROFILE_SECTIONS}


def test_switching_profiles_replaces_the_whole_profile_and_nothing_else(tmp_path):
    from humane.pipeline.profiles import use

    target = tmp_path / "params.yaml"
    target.write_text(PARAMS.read_text())
    use(ROOT / "profiles/german.yaml", target)
    switched, before, german = read_raw(target), read_raw(PARAMS), read_raw(ROOT / "profiles/german.yaml")
    assert switched["data"] == german["data"] and switched["privacy"] == german["privacy"]
    assert switched["policy"] == german["policy"]  # nothing of Adult's policy survives
    assert not any(german["policy"].values())
    assert switched["mitigation"] == german["mitigation"]
    profile = ("data", "privacy", "policy", "mitigation")
    others = [k for k in before if k not in profile]
    assert {k: switched[k] for k in others} == {k: before[k] for k in others} and set(switched) == set(before)
    assert parse_params(switched).data.model_name == "humane-german"
    use(ROOT / "profiles/adult.yaml", target)
    assert target.read_text() == PARAMS.read_text()  # comments and layout of the other sections survive


def test_a_profile_with_a_stage_section_is_refused(tmp_path):
    from humane.pipeline.profiles import use

    bad = tmp_path / "bad.yaml"
    bad.write_text(PARAMS.read_text())  # a whole params file is not a profile
    with pytest.raises(ConfigError, match=r"a profile holds only \['data', 'privacy', 'policy', 'mitigation'\]"):
        use(bad, tmp_path / "params.yaml")


def test_a_section_read_alone_is_checked_and_worded_as_the_whole_file(tmp_path):
    from humane.core.params import read_section
    from humane.governance.params import GateParams

    shipped = read_raw(ROOT / "params.yaml")
    path = tmp_path / "params.yaml"
    cases = {
        "missing": (
            {k: v for k, v in shipped.items() if k != "gate"},
            "gate: required key is missing",
        ),
        "empty": ({**shipped, "gate": None}, "gate: input should be a valid dictionary or instance of gateparams"),
        "typed": (
            {**shipped, "gate": {**shipped["gate"], "require_approval": "yes"}},
            "gate.require_approval: input should be a valid boolean, got 'yes'",
        ),
        "unknown": (
            {**shipped, "gate": {**shipped["gate"], "four_eye": True}},
            "gate.four_eye: unknown key; allowed in gate: [",
        ),
    }
    for name, (raw, expected) in cases.items():
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match=re.escape(f"{path}: ")) as err:
            read_section(path, "gate", GateParams)
        assert expected in str(err.value), (name, str(err.value))
        with pytest.raises(ConfigError) as whole:  # the whole file's loader words the same key the same way
            load_params(path)
        assert expected in str(whole.value), (name, str(whole.value))
    path.write_text(yaml.safe_dump(shipped))
    assert read_section(path, "gate", GateParams) == load_params(path).gate


def test_an_unknown_key_in_an_optional_section_lists_that_sections_keys():
    raw = read_raw(ROOT / "federation" / "params.yaml")
    raw["federated"]["bogus"] = 1
    with pytest.raises(ConfigError, match=r"federated\.bogus: unknown key; allowed in federated: \['app', 'dp_clip'"):
        parse_params(raw)
