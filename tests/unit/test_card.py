"""The model card's named facts (ModelFacts) and its bias-mitigation section, rendered in-process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from humane.governance import card as card_module
from humane.governance.card import Card, ModelFacts, add_mitigation
from humane.pipeline.params import load_params

ROOT = Path(__file__).resolve().parents[2]


def test_model_facts_documents_every_fact_the_card_reads() -> None:
    source = Path(card_module.__file__).read_text()
    read = set(re.findall(r"""facts(?:\[|\.get\()["'](\w+)["']""", source))
    declared = set(ModelFacts.__annotations__)
    assert read and read <= declared, read - declared
    assert ModelFacts.__optional_keys__ == {"federation"}  # absent unless the workspace is federated


@pytest.fixture(scope="module")
def mitigated():
    """The project's params with every mitigation method on (not validated: the card reads what was recorded)."""
    params = load_params(ROOT / "params.yaml")
    settings = params.mitigation.model_copy(
        update={
            "target": ["sex"],
            "reweigh": True,
            "resample": True,
            "loss": "demographic_parity",
            "loss_weight": 0.5,
            "reductions": "demographic_parity",
            "thresholds": "equalized_odds",
        }
    )
    return params.model_copy(update={"mitigation": settings})


def mitigation_facts(constraint: str) -> dict:
    reductions = {
        "constraint": "demographic_parity",
        "eps": 0.01,
        "groups": ["A", "B"],
        "oracle_calls": 7,
        "epochs_per_fit": 5,
        "members": 3,
        "too_small_to_constrain": ["C"],
        "merged_into": "A",
    }
    return {
        "mitigation_data": {
            "reweigh": {"cells": [{"group": "A", "label": 1, "weight": 1.25}, {"group": "B", "label": 0}]},
            "resample": {"target_positive_rate": 0.3, "rows_before": 100, "rows_after": 120},
            "too_small_to_constrain": ["G"],
        },
        "train_metrics": {
            "mitigation": {"groups": ["A", "B"], "reductions": reductions, "too_small_to_constrain": ["D"]}
        },
        "thresholds": {"constraint": constraint, "fit_rows": 50, "excluded": ["E"]},
    }


def test_every_mitigation_method_is_one_bullet_and_post_processing_says_how_to_use_it(mitigated) -> None:
    card = Card()
    add_mitigation(card, mitigated, mitigation_facts("equalized_odds"))
    text = card.to_markdown()
    bullets = [line for line in text.splitlines() if line.startswith("- ")]
    assert [b.split(" ")[1] for b in bullets] == [
        "reweighing",
        "oversampling",
        "a",
        "Fairlearn's",
        "groups",
        "per-group",
        "groups",
    ]
    assert "(A/1: 1.250)" in bullets[0]  # a cell without a weight is not shown
    assert "100 → 120 training rows" in bullets[1]
    assert "then decided by the per-group thresholds below" in bullets[3]
    assert "merged into the largest group 'A' and constrained with it: ['C']" in bullets[4]
    assert bullets[-1].endswith("left out of the constraints: ['D', 'E', 'G']")
    assert "**Use:** this model needs the sensitive column(s) ['sex'] in every request" in text


def test_without_per_group_thresholds_the_vote_is_decided_by_the_one_threshold(mitigated) -> None:
    card = Card()
    add_mitigation(card, mitigated, mitigation_facts("none"))
    text = card.to_markdown()
    assert f"decided by the threshold {mitigated.evaluate.threshold} instead of a draw" in text
    assert "per-group decision thresholds" not in text and "**Use:**" not in text
