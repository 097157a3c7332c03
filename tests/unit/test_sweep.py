"""The sweep's pure parts: the Pareto front, the choice by policy, model sharing, and one candidate end to end."""

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from prefect.task_runners import ProcessPoolTaskRunner
from prefect_dask import DaskTaskRunner
from ruamel.yaml import YAML

from flows.sweep import queue_commands, task_runner, yaml_value
from humane.core.errors import ConfigError, DataError
from humane.core.params import read_raw
from humane.core.paths import LABEL_COLUMN, SENSITIVE_PREFIX, WEIGHT_COLUMN
from humane.fairness.mitigation import mitigate_data, unmitigated_train
from humane.fairness.params import PolicyParams, SweepParams
from humane.fairness.policy import Policy
from humane.fairness.sweep import (
    CandidateResult,
    check_candidates,
    compute_sum,
    cross_fitted,
    run_candidate,
    score_candidate,
    train_candidate,
    training_key,
)
from humane.fairness.sweep_choice import pareto_front, select
from humane.fairness.sweep_report import choice_markdown, compute_markdown, plot_front, table
from humane.governance.params import GateParams
from humane.modeling.features import split_xy
from humane.pipeline.params import apply_overrides, parse_params

ROOT = Path(__file__).resolve().parents[2]
DP, EO = "fairness.sex.demographic_parity_difference", "fairness.sex.equalized_odds_difference"


def result(
    val_accuracy: float,
    val_dp: float,
    test_accuracy: float | None = None,
    test_dp: float | None = None,
    val_eo: float = 0.01,
) -> CandidateResult:
    test_accuracy = val_accuracy if test_accuracy is None else test_accuracy
    test_dp = val_dp if test_dp is None else test_dp
    return CandidateResult(
        overrides={},
        methods=[],
        val={"accuracy": val_accuracy, DP: val_dp, EO: val_eo},
        test={"accuracy": test_accuracy, DP: test_dp, EO: val_eo},
        train_seconds=1.0,
        best_epoch=1,
        epochs_run=1,
        train_rows=10,
        started=0.0,
        finished=1.0,
    )


def policy(max_: dict[str, float], min_: dict[str, float] | None = None) -> Policy:
    gate = GateParams(
        require_validation=True,
        above_baseline={},
        min={"test.accuracy": 0.5},
        max={},
        max_drop={},
        max_increase={},
        dominated_by=[],
        max_remedy_cost=None,
    )
    return Policy.of(gate, PolicyParams(max=max_, min=min_ or {}), ["sex"])


# ---------------------------------------------------------------------------------------------------------------
# The front
# ---------------------------------------------------------------------------------------------------------------


def test_pareto_front_keeps_the_undominated_by_ascending_gap():
    results = [
        result(0.86, 0.17),  # 0: most accurate
        result(0.84, 0.02),  # 1: fairest
        result(0.83, 0.05),  # 2: dominated by 1 (less accurate, larger gap)
        result(0.85, 0.10),  # 3: between 0 and 1
        result(0.85, 0.12),  # 4: dominated by 3 (same accuracy, larger gap)
        result(0.84, 0.10),  # 5: dominated by 3 (same gap, less accurate)
    ]
    assert pareto_front(results, "accuracy", DP, "val") == [1, 3, 0]


def test_pareto_front_ties_stay_together_and_unmeasured_points_are_left_out():
    results = [result(0.85, 0.10), result(0.85, 0.10), result(0.80, float("nan")), result(0.90, 0.30)]
    assert pareto_front(results, "accuracy", DP, "val") == [0, 1, 3]
    assert pareto_front([result(0.8, float("nan"))], "accuracy", DP, "val") == []


def test_pareto_front_reads_the_split_asked_for():
    # On validation 0 dominates 1; on test it is the other way round.
    results = [result(0.86, 0.05, test_accuracy=0.80, test_dp=0.20), result(0.84, 0.10, 0.85, 0.02)]
    assert pareto_front(results, "accuracy", DP, "val") == [0]
    assert pareto_front(results, "accuracy", DP, "test") == [1]
    with pytest.raises(ValueError, match="split"):
        pareto_front(results, "accuracy", DP, "train")


# ---------------------------------------------------------------------------------------------------------------
# The choice
# ---------------------------------------------------------------------------------------------------------------


def test_select_takes_the_most_accurate_within_the_limits_and_says_why_not_the_others():
    results = [result(0.86, 0.17), result(0.84, 0.02), result(0.85, 0.08), result(0.83, 0.01)]
    chosen, rejected = select(results, policy({DP: 0.10}), "accuracy")
    assert chosen == 2
    assert set(rejected) == {0, 1, 3}
    assert rejected[0] == f"validation {DP} = 0.1700 > max 0.1"
    assert "0.8400 < 0.8500 of candidate 2" in rejected[1]
    assert "0.8300 < 0.8500 of candidate 2" in rejected[3]


def test_select_reads_validation_figures_only():
    # Candidate 0 breaks the limit on validation but not on test; candidate 1 the other way round.
    results = [result(0.86, 0.15, test_dp=0.01), result(0.84, 0.05, test_dp=0.30)]
    chosen, rejected = select(results, policy({DP: 0.10}), "accuracy")
    assert chosen == 1
    assert "0.1500 > max 0.1" in rejected[0]


def test_select_fails_closed_when_no_candidate_is_within_the_limits():
    results = [result(0.86, 0.17), result(0.84, 0.12, val_eo=0.3)]
    chosen, rejected = select(results, policy({DP: 0.10, EO: 0.2}), "accuracy")
    assert chosen is None
    assert rejected == {
        0: f"validation {DP} = 0.1700 > max 0.1",
        1: f"validation {DP} = 0.1200 > max 0.1; validation {EO} = 0.3000 > max 0.2",
    }


def test_select_refuses_an_unmeasured_gap_and_applies_min_rules():
    ratio = "fairness.sex.demographic_parity_ratio"
    results = [result(0.86, float("nan")), result(0.85, 0.05), result(0.84, 0.05)]
    results[1].val[ratio], results[2].val[ratio] = 0.7, 0.9
    chosen, rejected = select(results, policy({DP: 0.10}, {ratio: 0.8}), "accuracy")
    assert chosen == 2
    assert rejected[0].startswith(f"validation {DP}: unmeasurable (fewer than two groups of 'sex' with at least")
    assert rejected[1] == f"validation {ratio} = 0.7000 < min 0.8"


def test_select_breaks_ties_by_candidate_order_and_checks_the_metric():
    chosen, rejected = select([result(0.85, 0.05), result(0.85, 0.05)], policy({DP: 0.1}), "accuracy")
    assert chosen == 0 and "ties candidate 0" in rejected[1]
    with pytest.raises(ConfigError, match=r"sweep\.select"):
        select([result(0.85, 0.05)], policy({}), "precision")


def test_table_rows_are_flat_and_plot_is_written(tmp_path):
    results = [result(0.86, 0.17), result(0.84, 0.02)]
    rows = table(results, "sex", 1, {0: "too unfair"}, {"dp": [1, 0], "eo": [0]})
    assert rows[1]["chosen"] and rows[1]["status"] == "chosen" and rows[0]["status"] == "too unfair"
    assert rows[0]["test_dp_sex"] == 0.17 and rows[0]["front_eo"] and not rows[1]["front_eo"]
    assert all("." not in key and " " not in key for key in rows[0])  # field names `dvc plots` can read
    plot_front(results, tmp_path / "front.png", "sex", chosen=1, limits=[(DP, "max", 0.1)])
    assert (tmp_path / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------------------
# Candidates and model sharing
# ---------------------------------------------------------------------------------------------------------------


# Unmitigated base (the Adult profile's default thresholds undone), so "plain" and "thresholded" differ.
# Plain numeric inputs: the tiny 4-epoch network learns the injected bias (these tests are about the sweep).
SMALL = {
    "train.max_epochs": 4,
    "train.patience": 2,
    "train.hidden_sizes": [16],
    "train.lr": 0.01,
    "train.progress": False,
    "mitigation.thresholds": "none",
    "train.numeric_embedding": {"kind": "linear"},
}


@pytest.fixture(scope="module")
def raw() -> dict:
    return apply_overrides(read_raw(ROOT / "params.yaml"), SMALL)


def params_with(raw: dict, **overrides):
    return parse_params(apply_overrides(raw, {k.replace("__", "."): v for k, v in overrides.items()}))


def test_training_key_shares_models_only_across_post_training_settings(raw):
    base = training_key(params_with(raw))
    assert training_key(params_with(raw, mitigation__thresholds="equalized_odds")) == base
    assert training_key(params_with(raw, evaluate__threshold=0.4)) == base
    assert training_key(params_with(raw, mitigation__seed=9)) == base  # the seed only seeds oversampling
    assert training_key(params_with(raw, mitigation__loss="demographic_parity", mitigation__loss_weight=0.0)) == base
    assert training_key(params_with(raw, mitigation__reweigh=True)) != base
    assert training_key(params_with(raw, train__seed=1)) != base
    resampled = training_key(params_with(raw, mitigation__resample=True))
    assert training_key(params_with(raw, mitigation__resample=True, mitigation__seed=9)) != resampled


def test_check_candidates_refuses_preprocess_keys_and_repeats():
    check_candidates([{}, {"mitigation.reweigh": True}])
    with pytest.raises(ConfigError, match=r"sweep.candidates\[1\] sets \['preprocess.seed'\]"):
        check_candidates([{}, {"preprocess.seed": 1}])
    with pytest.raises(ConfigError, match=r"sweep.candidates\[2\] repeats sweep.candidates\[0\]"):
        check_candidates([{"train.lr": 0.1}, {}, {"train.lr": 0.1}])


def processed(n: int, seed: int) -> pd.DataFrame:
    """A processed frame with an injected bias: women get a lower label rate; sex and race are not inputs."""
    rng = np.random.default_rng(seed)
    woman = rng.random(n) < 0.4
    f0, f1 = rng.normal(size=n), rng.normal(size=n) - 2.0 * woman  # f1 is a proxy for sex
    y = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * f0 - 2.0 * woman - 0.5)))).astype(int)
    return pd.DataFrame(
        {
            "f0": f0,
            "f1": f1,
            LABEL_COLUMN: y,
            f"{SENSITIVE_PREFIX}sex": np.where(woman, "F", "M"),
            f"{SENSITIVE_PREFIX}race": np.where(rng.random(n) < 0.8, "W", "B"),
        }
    )


LAYOUT = (2, [])  # the processed frames' inputs: two numeric columns, no one-hot blocks


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {"train": processed(1500, 0), "val": processed(800, 1), "test": processed(800, 2)}


def test_unmitigated_train_undoes_the_preprocess_stage_mitigation(raw, frames):
    settings = params_with(raw, mitigation__reweigh=True, mitigation__resample=True)
    mitigated, report = mitigate_data(frames["train"], settings.mitigation, settings.validate.min_group_rows)
    assert len(mitigated) > len(frames["train"]) and WEIGHT_COLUMN in mitigated
    pd.testing.assert_frame_equal(unmitigated_train(mitigated, report), frames["train"])
    with pytest.raises(DataError, match="re-run `dvc repro preprocess`"):
        unmitigated_train(mitigated.iloc[:-1], report)


@pytest.mark.slow  # trains candidates: 5 s (on an idle two-core machine)
def test_a_candidate_is_measured_like_the_pipeline_and_a_shared_model_scores_the_same(raw, frames):
    threads = torch.get_num_threads()
    try:
        plain = run_candidate(params_with(raw), frames, layout=LAYOUT)
        dp = params_with(raw, mitigation__thresholds="demographic_parity")
        fitted = run_candidate(dp, frames, layout=LAYOUT)
        again = train_candidate(params_with(raw), frames, LAYOUT)
        shared = score_candidate(dp, frames["val"], frames["test"], again, 0)
    finally:
        torch.set_num_threads(threads)
    # Every quality figure and every gap of sex, race and their intersection, on both splits.
    for figures in (plain.val, plain.test):
        assert {
            "accuracy",
            "balanced_accuracy",
            "roc_auc",
            DP,
            EO,
            "fairness.sex x race.demographic_parity_difference",
            "fairness.race.equalized_odds_difference",
        } <= set(figures)
        assert all(not math.isnan(v) for v in figures.values())
    assert plain.val[DP] > 0.1 and plain.test[DP] > 0.1  # the injected bias is there
    # Thresholds fitted on validation rows cut the DP gap on the held-out test rows.
    assert fitted.test[DP] < 0.5 * plain.test[DP]
    majority = max(frames["test"][LABEL_COLUMN].mean(), 1 - frames["test"][LABEL_COLUMN].mean())
    assert fitted.test["accuracy"] > majority
    assert fitted.test["roc_auc"] == plain.test["roc_auc"]  # same model, different decisions
    # The same training settings make the same model: sharing it changes nothing but the record.
    assert shared.val == fitted.val and shared.test == fitted.test
    assert shared.model_of == 0 and fitted.model_of is None
    # Each trained candidate carries its compute bill; one scored on another's model trained nothing.
    assert plain.compute["train_flops"] > 0 and plain.compute["samples"] == plain.epochs_run * plain.train_rows
    assert plain.compute["n_parameters"] > 0 and shared.compute == {}


def test_the_sweeps_compute_bill_sums_trained_candidates_and_never_a_partial_energy():
    def bill(**kw):
        return {
            "train_flops": 1e9,
            "samples": 100,
            "train_seconds": 2.0,
            "stage_seconds": 3.0,
            "energy_kwh": 0.5,
            "co2_kg": 0.2,
            "n_parameters": 7,
            **kw,
        }

    trained, shared = replace(result(0.8, 0.1), compute=bill()), replace(result(0.8, 0.1), model_of=0)
    total = compute_sum([trained, replace(trained, compute=bill(samples=50)), shared])
    assert total == {
        "models_trained": 2,
        "train_flops": 2e9,
        "samples": 150,
        "train_seconds": 4.0,
        "stage_seconds": 6.0,
        "energy_kwh": 1.0,
        "co2_kg": 0.4,
    }
    unmeasured = bill()
    del unmeasured["energy_kwh"], unmeasured["co2_kg"]
    total = compute_sum([trained, replace(trained, compute=unmeasured)])
    assert "energy_kwh" not in total and "co2_kg" not in total and total["samples"] == 200
    assert total["note"] == "not measured for every trained candidate, so not summed: energy_kwh, co2_kg"
    text = compute_markdown(total)
    assert "2e+09 training FLOPs, 200 samples, 4.0 s training." in text and "Not measured" in text


def test_a_threshold_candidates_validation_decisions_are_out_of_fold(raw, frames):
    from sklearn.model_selection import StratifiedKFold

    from humane.fairness.mitigation import group_keys
    from humane.fairness.thresholds import fit_thresholds, group_decisions

    dp = params_with(raw, mitigation__thresholds="demographic_parity")
    val = frames["val"]
    woman = (val[f"{SENSITIVE_PREFIX}sex"] == "F").to_numpy()
    p = 1 / (1 + np.exp(-(1.5 * val["f0"].to_numpy() - 2.0 * woman - 0.5)))  # the true scores: biased by sex
    decided = cross_fitted(dp, val, p)
    # Each half of the validation rows is decided by thresholds fitted on the other half only (never on itself).
    strata = group_keys(val, ["sex"]).astype(str) + "|" + val[LABEL_COLUMN].astype(str)
    halves = list(StratifiedKFold(2, shuffle=True, random_state=dp.mitigation.seed).split(p, strata))
    for fit_rows, apply_rows in halves:
        assert not set(fit_rows) & set(apply_rows)
        state = fit_thresholds(p[fit_rows], val.iloc[fit_rows], dp.mitigation, dp.validate.min_group_rows, 0.5)
        applied = val.iloc[apply_rows]
        assert (
            group_decisions(p[apply_rows], applied, state, split_xy(applied)[0].numpy()) == decided[apply_rows]
        ).all()
    in_sample = group_decisions(
        p, val, fit_thresholds(p, val, dp.mitigation, dp.validate.min_group_rows, 0.5), split_xy(val)[0].numpy()
    )
    assert (in_sample != decided).any()  # what the choice used to read
    assert cross_fitted(params_with(raw), val, p) is None  # no thresholds: decided by p >= threshold


# ---------------------------------------------------------------------------------------------------------------
# Runners and the DVC queue
# ---------------------------------------------------------------------------------------------------------------


def test_task_runner_is_local_processes_or_the_named_dask_cluster():
    local = task_runner(SweepParams(candidates=[{}], select="accuracy", workers=3))
    assert isinstance(local, ProcessPoolTaskRunner) and local._max_workers == 3
    remote = task_runner(SweepParams(candidates=[{}], select="accuracy", workers=3, dask_address="tcp://1.2.3.4:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://1.2.3.4:8786"


@pytest.mark.parametrize("value", ["demographic_parity", True, 0.3, 1e-3, [64, 32], "1e-3", "yes", "a: b", None])
def test_queue_values_read_back_as_themselves(value):
    assert YAML(typ="safe", pure=True).load(yaml_value(value)) == value


def test_queue_commands_one_per_candidate_up_to_the_audit():
    commands = queue_commands([{}, {"mitigation.loss": "equalized_odds", "mitigation.loss_weight": 0.3}])
    assert commands[0] == ["dvc", "exp", "run", "--queue", "audit"]
    assert commands[1] == [
        "dvc",
        "exp",
        "run",
        "--queue",
        "-S",
        "mitigation.loss=equalized_odds",
        "-S",
        "mitigation.loss_weight=0.3",
        "audit",
    ]


def test_select_applies_the_policys_quality_floors_on_validation():
    # Candidate 1 meets the gap limit by collapsing (accuracy 0.45 < the policy's test.accuracy minimum 0.5).
    results = [result(0.86, 0.17), result(0.45, 0.0), result(0.84, 0.05)]
    chosen, rejected = select(results, policy({DP: 0.10}), "accuracy")
    assert chosen == 2
    assert rejected[1] == "validation accuracy = 0.4500 < min 0.5"


def test_select_refuses_a_quality_floor_it_cannot_read_and_keeps_a_min_and_a_max_on_one_gap():
    # The floor's figure absent (or NaN) on validation: the floor cannot be shown to hold, so not eligible.
    results = [result(0.86, 0.05), result(0.85, 0.05), result(0.84, 0.05)]
    del results[0].val["accuracy"]
    results[1].val["accuracy"] = float("nan")
    chosen, rejected = select(results, policy({DP: 0.10}), "accuracy")
    assert chosen == 2
    assert rejected[0].startswith("validation accuracy not measured (the policy's min is 0.5)")
    assert rejected[1].startswith("validation accuracy not measured (the policy's min is 0.5)")
    # A min and a max on the same gap: both judged (a min no longer replaces the max).
    results = [result(0.86, 0.30), result(0.85, 0.001), result(0.84, 0.05)]
    chosen, rejected = select(results, policy({DP: 0.10}, {DP: 0.01}), "accuracy")
    assert chosen == 2
    assert rejected[0] == f"validation {DP} = 0.3000 > max 0.1"
    assert rejected[1] == f"validation {DP} = 0.0010 < min 0.01"


def test_the_choice_states_every_limit_it_judged_a_min_and_a_max_on_one_gap_both():
    markdown = choice_markdown([], None, "accuracy", "sex", [(EO, "max", 0.2), (EO, "min", 0.01), (DP, "max", 0.1)])
    assert f"{EO} ≤ 0.2" in markdown and f"{EO} ≥ 0.01" in markdown and f"{DP} ≤ 0.1" in markdown
    assert "No candidate is within the policy's fairness limits" in markdown
