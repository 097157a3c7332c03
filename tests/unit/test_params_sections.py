"""The params sections live beside their concern; the code below `humane.pipeline` names what it reads of the whole
in a Protocol of its own layer. These tests hold each Protocol to the real models: every attribute it names is a
field (or property) of the model it stands for, of a matching type. No servers."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from humane.data.params import DataParams
from humane.fairness.params import FairnessSections, GateRules
from humane.governance.params import GateParams, GovernanceSections
from humane.modeling.params import ModelingSections, TrainParams
from humane.monitoring.params import MonitoringSections
from humane.pipeline.params import Params, load_params
from humane.privacy.params import DatasetColumns, DPTraining, EncryptedSource
from tests.conftest import ROOT


def _field_type(model: type[BaseModel], name: str) -> object:
    for field_name, field in model.model_fields.items():
        if name in (field_name, field.alias):
            return field.annotation
    prop = getattr(model, name, None)
    assert isinstance(prop, property), f"{model.__name__} has no field or property {name!r}"
    return typing.get_type_hints(prop.fget)["return"]


def _mismatches(model: type[BaseModel], protocol: type) -> list[str]:
    out = []
    for name, hint in typing.get_type_hints(protocol).items():
        actual = _field_type(model, name)
        if getattr(hint, "_is_protocol", False):
            assert isinstance(actual, type) and issubclass(actual, BaseModel), (protocol, name, actual)
            out += [f"{name}.{m}" for m in _mismatches(actual, hint)]
        elif actual != hint and (
            typing.get_origin(hint) is None or typing.get_origin(actual) != typing.get_origin(hint)
        ):
            # A generic may be narrower in the model (dict[str, Literal[...]] for dict[str, str]); a plain type not.
            out.append(f"{name}: {protocol.__name__} says {hint}, {model.__name__} has {actual}")
    return out


@pytest.mark.parametrize(
    ("model", "protocol"),
    [
        (Params, ModelingSections),
        (Params, FairnessSections),
        (Params, GovernanceSections),
        (Params, MonitoringSections),
        (GateParams, GateRules),
        (TrainParams, DPTraining),
        (DataParams, EncryptedSource),
        (DataParams, DatasetColumns),
    ],
    ids=lambda x: x.__name__,
)
def test_each_layers_protocol_names_real_fields_of_the_model_it_stands_for(model, protocol):
    assert typing.get_type_hints(protocol), f"{protocol.__name__} names nothing"
    assert _mismatches(model, protocol) == []


def test_the_check_finds_a_protocol_that_names_a_missing_or_mistyped_field():
    class Missing(typing.Protocol):
        no_such_section: DataParams

    class Mistyped(typing.Protocol):
        lr: str

    with pytest.raises(AssertionError, match="no field or property 'no_such_section'"):
        _mismatches(Params, Missing)
    assert _mismatches(TrainParams, Mistyped) == ["lr: Mistyped says <class 'str'>, TrainParams has <class 'float'>"]


def test_the_shipped_params_read_through_every_layers_protocol():
    params = load_params(ROOT / "params.yaml")
    for protocol in (MonitoringSections, FairnessSections):
        for name in typing.get_type_hints(protocol):
            assert getattr(params, name) is not None, name
