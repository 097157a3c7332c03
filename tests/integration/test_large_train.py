"""Real: `dvc repro` of a fresh sample copy (one per module), the train stage SIGKILLed, torchrun over two processes.

The train stage as a process: killed and rerun, launched over two processes with torchrun, and the transformer
through the whole pipeline with its compute bill on the card and in MLflow."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from tests.conftest import make_project, run

# The stage's own RNG-free outcome: what must match exactly after a resume (timings and the bill may not).
OUTCOME = ("best_epoch", "epochs_run", "best_val_loss", "best_val_accuracy", "best_val_auc", "n_parameters")


def _train_params(project: Path, **train) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["train"].update(train)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _train(project: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "tasks.train"], project, timeout=timeout)


def _outcome(project: Path) -> tuple[dict, dict]:
    metrics = json.loads((project / "reports/train_metrics.json").read_text())
    state = torch.load(project / "models/model.pt", weights_only=True)["state_dict"]
    return {k: metrics[k] for k in OUTCOME}, state


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A project copy whose data is loaded, validated and preprocessed (the train stage's inputs)."""
    project = make_project(tmp_path_factory.mktemp("large"))
    run(["dvc", "repro", "preprocess"], project)
    return project


def test_a_killed_train_stage_resumes_to_the_uninterrupted_result(prepared):
    _train_params(prepared, hidden_sizes=[256, 256], dropout=0.2, batch_size=64, max_epochs=12, patience=12)
    _train(prepared)
    expected, expected_state = _outcome(prepared)
    checkpoints = prepared / "models/checkpoints"
    assert not (checkpoints / "resume.pt").exists()  # a finished run leaves nothing to resume
    (prepared / "models/model.pt").unlink()
    shutil.rmtree(checkpoints)  # the finished run's epoch files: the kill below must wait for this run's own

    proc = subprocess.Popen(
        [sys.executable, "-m", "tasks.train"], cwd=prepared, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not (checkpoints / "epoch_003.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its third epoch"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    killed_at = torch.load(checkpoints / "resume.pt", weights_only=True)["epoch"]
    assert 3 <= killed_at < expected["epochs_run"]
    assert not (prepared / "models/model.pt").exists()  # nothing half-written

    # Rerun as `dvc repro` does it: DVC removes the stage's outputs first but keeps the persisted checkpoints.
    rerun = run(["dvc", "repro", "train"], prepared, timeout=600)
    assert f"resumed after epoch {killed_at}" in rerun.stderr + rerun.stdout
    outcome, state = _outcome(prepared)
    assert outcome == expected
    resumed = json.loads((prepared / "reports/train_metrics.json").read_text())
    assert resumed["resumed_from_epoch"] == killed_at
    # The bill covers the killed attempt too: its epochs' training time, and their energy at this attempt's power.
    assert resumed["compute"]["energy_earlier_attempts_kwh"] > 0
    assert "earlier, interrupted attempts" in resumed["compute"]["note"]
    for name, tensor in expected_state.items():
        assert torch.equal(tensor, state[name]), name

    _train_params(prepared, lr=0.001)  # other params: the checkpoint of another run is not resumed
    shutil.rmtree(checkpoints)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasks.train"], cwd=prepared, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while not (checkpoints / "epoch_002.pt").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _train_params(prepared, lr=0.002)
    fresh = _train(prepared)
    assert "other params, data or training code; starting afresh" in fresh.stderr
    assert json.loads((prepared / "reports/train_metrics.json").read_text())["resumed_from_epoch"] == 0


# Two processes sum the gradient in another order than one: the validation loss agrees to this relative tolerance.
DDP_TOLERANCE = 1e-4


def test_two_processes_with_torchrun_reach_the_validation_loss_of_one(prepared):
    common = dict(hidden_sizes=[64, 32], dropout=0.0, batch_size=128, max_epochs=4, patience=10)
    _train_params(
        prepared,
        **common,
        distributed={
            "nproc_per_node": 1,
            "nnodes": 1,
            "master_addr": "127.0.0.1",
            "master_port": 29561,
            "backend": "auto",
        },
    )
    _train(prepared)
    one = json.loads((prepared / "reports/train_history.json").read_text())
    _train_params(
        prepared,
        **common,
        distributed={
            "nproc_per_node": 2,
            "nnodes": 1,
            "master_addr": "127.0.0.1",
            "master_port": 29561,
            "backend": "auto",
        },
    )
    result = _train(prepared)
    assert "on 2 x cpu" in result.stdout
    two = json.loads((prepared / "reports/train_history.json").read_text())
    metrics = json.loads((prepared / "reports/train_metrics.json").read_text())
    assert metrics["compute"]["world_size"] == 2
    assert [r["epoch"] for r in two] == [r["epoch"] for r in one]
    for a, b in zip(one, two, strict=True):
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=DDP_TOLERANCE)
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=DDP_TOLERANCE)


def test_the_transformer_runs_the_whole_pipeline_with_its_bill_on_the_card_and_in_mlflow(prepared):
    _train_params(
        prepared,
        model="ft_transformer",
        lr=0.001,
        batch_size=128,
        max_epochs=2,
        patience=2,
        ft_transformer={
            "d_block": 32,
            "n_blocks": 1,
            "attention_n_heads": 4,
            "attention_dropout": 0.1,
            "ffn_d_hidden_multiplier": 1.0,
            "ffn_dropout": 0.0,
            "residual_dropout": 0.0,
            "checkpointing": False,
        },
        distributed={
            "nproc_per_node": 1,
            "nnodes": 1,
            "master_addr": "127.0.0.1",
            "master_port": 29561,
            "backend": "auto",
        },
    )
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    params["gate"]["max"]["compute.energy_kwh"] = 1.0  # a rule on the bill: a small model passes it
    (prepared / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro"], prepared, timeout=900)

    compute = json.loads((prepared / "reports/train_metrics.json").read_text())["compute"]
    for figure in (
        "n_parameters",
        "flops_per_sample",
        "samples_per_second",
        "train_seconds",
        "peak_rss_gb",
        "energy_kwh",
        "co2_kg",
    ):
        assert compute[figure] > 0, figure
    card = (prepared / "reports/model_card.md").read_text()
    assert "FT-Transformer" in card and "## Compute" in card and "kWh" in card
    checks = json.loads((prepared / "reports/policy_checks.json").read_text())
    energy = [c for c in json.dumps(checks).split("{") if '"compute.energy_kwh"' in c]
    assert energy and '"passed": true' in energy[0]

    mlflow.set_tracking_uri(f"sqlite:///{prepared}/mlflow.db")
    try:
        run_id = json.loads((prepared / "reports/mlflow_run.json").read_text())["run_id"]
        logged = mlflow.get_run(run_id).data.metrics
    finally:
        mlflow.set_tracking_uri(None)
    assert logged["train.compute.energy_kwh"] > 0 and logged["train.compute.flops_per_sample"] > 0
    assert logged["train.compute.n_parameters"] == compute["n_parameters"]
    os.environ.pop("MLFLOW_TRACKING_URI", None)
