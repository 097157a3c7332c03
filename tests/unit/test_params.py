import pytest

from tasks.errors import ConfigError
from tasks.params import apply_overrides, flatten, load_params, parse_params, read_raw


def test_project_params_parse():
    params = load_params()
    assert params.data.source == "adult"
    assert params.train.hidden_sizes == [256, 256]


def test_unknown_key_is_an_error():
    raw = read_raw()
    raw["train"]["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match=r"train: unknown key\(s\) \['learning_rate'\]"):
        parse_params(raw)


def test_missing_required_key_is_an_error():
    raw = read_raw()
    del raw["data"]["target"]
    with pytest.raises(ConfigError, match=r"data\.target: required key is missing"):
        parse_params(raw)


def test_wrong_type_names_the_key():
    raw = read_raw()
    raw["train"]["batch_size"] = "big"
    with pytest.raises(ConfigError, match=r"train\.batch_size: expected int"):
        parse_params(raw)


def test_overrides_replace_dotted_keys_and_check_types():
    raw = read_raw()
    out = apply_overrides(raw, {"train.lr": 0.003, "train.hidden_sizes": [8]})
    assert out["train"]["lr"] == 0.003 and out["train"]["hidden_sizes"] == [8]
    assert raw["train"]["lr"] != 0.003  # the input is not modified
    with pytest.raises(ConfigError, match="no such key"):
        apply_overrides(raw, {"train.nope": 1})
    with pytest.raises(ConfigError, match="expected a number"):
        apply_overrides(raw, {"train.lr": "fast"})


def test_flatten_uses_dotted_names():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}
