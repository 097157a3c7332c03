"""Registration's pure pieces: the model file's input widths, the sign-off rule on a retry, the record it writes."""

import math
from pathlib import Path

import pytest
import torch

from humane.core.context import RunContext, overrides_text
from humane.fairness.sweep_report import table
from humane.governance.gate import DOMINANCE, REMEDY_COST, Decision, RuleOutcome
from humane.governance.promotion import asks_signoff_anew, registration
from humane.governance.signoff import APPROVAL_BASIS_TAG, APPROVAL_TAG, APPROVED, PENDING, REJECTED
from humane.modeling.model import build_model, file_input_widths, input_widths, model_state
from humane.pipeline.params import load_params
from tasks.gate import sweep_advised
from tests.unit.test_sweep import result

ROOT = Path(__file__).resolve().parents[2]


def test_input_widths_read_an_ensemble_through_its_members_and_an_old_file_as_all_one_hot():
    members = [{"n_inputs": 12, "n_numeric": 3}, {"n_inputs": 12, "n_numeric": 5}]
    assert input_widths({"kind": "ensemble", "members": members}) == (12, 5)
    assert input_widths({"n_inputs": 9}) == (9, 0)  # a model file from before the numeric layout


def test_file_input_widths_reads_what_the_train_stage_saves(tmp_path):
    params = load_params(ROOT / "params.yaml")
    model = build_model(params.train, 7, layout=(3, [2, 2]))
    torch.save(model_state(model), tmp_path / "model.pt")
    assert file_input_widths(tmp_path / "model.pt") == input_widths(model.args.to_dict())
    assert file_input_widths(tmp_path / "model.pt") == (7, 3)


@pytest.mark.parametrize(
    ("tags", "asks"),
    [
        ({}, True),  # a new version
        ({APPROVAL_TAG: PENDING, APPROVAL_BASIS_TAG: "b"}, False),  # a retry: already asked on this basis
        ({APPROVAL_TAG: APPROVED, APPROVAL_BASIS_TAG: "b"}, False),
        ({APPROVAL_TAG: APPROVED, APPROVAL_BASIS_TAG: "older"}, True),  # judged again on another basis: ask again
        ({APPROVAL_TAG: REJECTED, APPROVAL_BASIS_TAG: "older"}, False),  # a person's rejection stands
    ],
)
def test_a_passing_version_asks_for_a_signoff_anew_only_on_a_new_basis(tags, asks):
    assert asks_signoff_anew(tags, "b") is asks


def test_the_registration_record_never_claims_a_pending_champion():
    decision = Decision(True, [], [], "3")
    pending = registration("m", "4", decision, PENDING, False, "run")
    assert pending["pending"] and pending["aliases"] == ["challenger"] and pending["compared_with"] == "3"
    promoted = registration("m", "4", decision, APPROVED, True, "run")
    assert not promoted["pending"] and promoted["aliases"] == ["challenger", "champion"]


def test_the_sweep_names_overrides_as_the_runs_tag_them():
    overrides = {"mitigation.reweigh": True, "mitigation.loss": "demographic_parity"}
    tagged = RunContext(project=ROOT, overrides=overrides).describe_overrides()
    assert overrides_text(overrides) == tagged == "mitigation.loss='demographic_parity', mitigation.reweigh=True"
    assert overrides_text({}) == RunContext(project=ROOT).describe_overrides() == "defaults"
    row = table([result(0.9, 0.1)], "sex", None, {}, {})[0]
    assert row["overrides"] == "defaults"


def _outcome(rule: str, figures: dict, value: float = 0.85) -> RuleOutcome:
    return RuleOutcome(rule, "test.accuracy", True, value, False, reference_value=0.86, figures=figures)


def test_the_gate_stage_advises_the_sweep_only_for_a_measured_failure_under_a_remedy():
    params = load_params(ROOT / "params.yaml")
    assert params.mitigation.active
    gap = "fairness.sex.demographic_parity_difference"
    measured = _outcome(DOMINANCE, {gap: [0.12, 0.10]})
    unmeasured = _outcome(REMEDY_COST, {gap: [math.nan, 0.10]})
    assert measured.all_measured() and not unmeasured.all_measured()
    assert sweep_advised(params, Decision(False, ["x"], [measured], None))
    assert not sweep_advised(params, Decision(False, ["x"], [unmeasured], None))
    off = params.mitigation.model_copy(
        update={"reweigh": False, "resample": False, "loss": "none", "reductions": "none", "thresholds": "none"}
    )
    assert not sweep_advised(params.model_copy(update={"mitigation": off}), Decision(False, ["x"], [measured], None))
