"""The params sections live beside their concern; the code below `humane.pipeline` names what it reads of the whole
in a Protocol of its own layer (read-only properties). These tests hold each Protocol to the real models: every
member it names is a field (or property) of the model it stands for, of a type the member accepts. No servers."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence

import pytest
from pydantic import BaseModel

from humane.data.params import DataParams
from humane.fairness.params import FairnessSections, GateRules
from humane.fairness.policy import policy_of
from humane.governance.params import GateParams, GovernanceSections
from humane.modeling.counterfactual import never_inputs
from humane.modeling.params import ModelingSections, TrainParams
from humane.monitoring.params import MonitoringSections
from humane.monitoring.reference import MonitoredColumns
from humane.pipeline.params import Params, load_params
from humane.privacy.params import DatasetColumns, DPTraining, EncryptedSource
from tests.conftest import ROOT

# A read-only view accepts a narrower container: a list for a Sequence, a dict for a Mapping.
VIEWS = {Sequence: (list, tuple), Mapping: (dict,)}


def _members(protocol: type) -> dict[str, object]:
    """Each property of a Protocol (its bases' included) → the type it returns."""
    out: dict[str, object] = {}
    for cls in reversed(protocol.__mro__):
        for name, value in vars(cls).items():
            if isinstance(value, property):
                out[name] = typing.get_type_hints(value.fget)["return"]
    return out


def _field_type(model: type[BaseModel], name: str) -> object:
    for field_name, field in model.model_fields.items():
        if name in (field_name, field.alias):
            return field.annotation
    prop = getattr(model, name, None)
    assert isinstance(prop, property), f"{model.__name__} has no field or property {name!r}"
    return typing.get_type_hints(prop.fget)["return"]


def _accepts(hint: object, actual: object) -> bool:
    """Whether a value of type `actual` is a valid `hint` (unions, Literals, read-only containers, protocols)."""
    if hint == actual:
        return True
    if _is_union(actual):
        return all(_accepts(hint, member) for member in typing.get_args(actual))
    if _is_union(hint):
        return any(_accepts(member, actual) for member in typing.get_args(hint))
    if typing.get_origin(actual) is typing.Literal:
        return all(_accepts(hint, type(value)) for value in typing.get_args(actual))
    if getattr(hint, "_is_protocol", False):
        return isinstance(actual, type) and issubclass(actual, BaseModel) and not _mismatches(actual, hint)
    h_origin, a_origin = typing.get_origin(hint), typing.get_origin(actual)
    if h_origin is None or a_origin is None:
        return isinstance(hint, type) and isinstance(actual, type) and issubclass(actual, hint)
    if a_origin is not h_origin and a_origin not in VIEWS.get(h_origin, ()):
        return False
    h_args, a_args = typing.get_args(hint), typing.get_args(actual)
    return len(h_args) == len(a_args) and all(_accepts(h, a) for h, a in zip(h_args, a_args, strict=True))


def _is_union(t: object) -> bool:
    return typing.get_origin(t) in (typing.Union, types.UnionType)


def _mismatches(model: type[BaseModel], protocol: type) -> list[str]:
    return [
        f"{name}: {protocol.__name__} says {hint}, {model.__name__} has {_field_type(model, name)}"
        for name, hint in _members(protocol).items()
        if not _accepts(hint, _field_type(model, name))
    ]


PAIRS = [
    (Params, ModelingSections),
    (Params, FairnessSections),
    (Params, GovernanceSections),
    (Params, MonitoringSections),
    (GateParams, GateRules),
    (TrainParams, DPTraining),
    (DataParams, EncryptedSource),
    (DataParams, DatasetColumns),
]


@pytest.mark.parametrize(("model", "protocol"), PAIRS, ids=lambda x: x.__name__)
def test_each_layers_protocol_names_real_fields_of_the_model_it_stands_for(model, protocol):
    assert _members(protocol), f"{protocol.__name__} names nothing"
    assert _mismatches(model, protocol) == []


def test_the_check_finds_a_missing_or_mistyped_member():
    class Missing(typing.Protocol):
        @property
        def no_such_section(self) -> DataParams:
            """Not a section."""

    class Mistyped(typing.Protocol):
        @property
        def min(self) -> Mapping[int, str]:
            """Wrong key and value types."""

        @property
        def max_remedy_cost(self) -> str | None:
            """Wrong member type in a union."""

        @property
        def dominated_by(self) -> Sequence[int]:
            """Wrong item type."""

    with pytest.raises(AssertionError, match="no field or property 'no_such_section'"):
        _mismatches(Params, Missing)
    assert [m.split(":")[0] for m in _mismatches(GateParams, Mistyped)] == ["min", "max_remedy_cost", "dominated_by"]
    assert not _accepts(Sequence[str], dict[str, str]) and _accepts(Mapping[str, str], dict[str, typing.Literal["a"]])


def test_the_shipped_params_go_through_code_typed_with_the_protocols():
    params = load_params(ROOT / "params.yaml")
    assert policy_of(params).min  # FairnessSections
    assert set(params.data.sensitive_features) <= set(never_inputs(params))  # ModelingSections
    columns = MonitoredColumns.of(params)  # MonitoringSections
    assert columns.sensitive == list(params.data.sensitive_features) and columns.target == params.data.target
