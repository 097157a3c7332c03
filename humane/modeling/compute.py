"""The compute bill of a training run: parameters, FLOPs, throughput, wall time, peak memory, energy and CO2.

FLOPs are counted by torch's own FlopCounterMode on one forward + backward pass (matmuls and attention: the
operations that dominate); energy and CO2 by codecarbon's OfflineEmissionsTracker, which never calls the network
(the grid's carbon intensity comes from its bundled table for `train.compute.country_iso_code`). On a machine
without power counters (RAPL, NVML) codecarbon estimates CPU power from its TDP table: the figure is an estimate
either way, and the card says so.
"""

from __future__ import annotations

import copy
import logging
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from humane.modeling.params import ComputeParams

FLOP_PROBE_ROWS = 64  # rows of the one forward + backward pass whose FLOPs are counted


def flops_per_sample(model: nn.Module, x: torch.Tensor) -> float:
    """Floating-point operations of one training step (forward + backward), per row of `x`.

    Counted on a copy of the model in training mode, so the caller's model, gradients and state are untouched.
    An ensemble (ExponentiatedGradient's vote) was trained one member at a time: one member's step is the unit.
    """
    from humane.modeling.model import Ensemble

    probe = copy.deepcopy(model.networks[0] if isinstance(model, Ensemble) else model).train()
    with FlopCounterMode(display=False) as counter:
        probe(x).float().sum().backward()
    return counter.get_total_flops() / max(len(x), 1)


def peak_rss_bytes() -> int:
    """Peak resident memory of the calling process (Linux reports kilobytes, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@dataclass
class ComputeMeter:
    """Wall time and (optionally) energy and CO2 of the code run inside `with meter:`."""

    settings: ComputeParams
    # machine: measure the whole machine (several training processes), not this process only.
    machine: bool = False
    # inactive (a torchrun worker other than rank 0): time only, no tracker.
    active: bool = True
    seconds: float = 0.0
    energy_kwh: float | None = None
    co2_kg: float | None = None
    note: str = ""
    _tracker: Any = field(default=None, repr=False)
    _dir: Any = field(default=None, repr=False)
    _start: float = 0.0

    def __enter__(self) -> ComputeMeter:
        if self.settings.energy and self.active:
            try:
                self._start_tracker()
            except Exception as err:  # energy is an estimate; training goes on without it, and says so
                self._tracker, self.note = None, f"energy not measured: codecarbon failed to start ({err})"
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._start = time.perf_counter()
        return self

    def _start_tracker(self) -> None:
        from codecarbon import OfflineEmissionsTracker

        self._dir = tempfile.TemporaryDirectory(prefix="humane-codecarbon-")
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        kwargs: dict[str, Any] = {"country_iso_code": self.settings.country_iso_code}
        if self.settings.region:
            kwargs["region"] = self.settings.region
        self._tracker = OfflineEmissionsTracker(
            **kwargs,
            output_dir=self._dir.name,
            save_to_file=False,
            log_level="error",
            measure_power_secs=1,
            tracking_mode="machine" if self.machine else "process",
            allow_multiple_runs=True,
            project_name="humane-train",
        )
        self._tracker.start()

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
        if self._tracker is not None:
            try:
                self.co2_kg = float(self._tracker.stop() or 0.0)
                self.energy_kwh = float(self._tracker.final_emissions_data.energy_consumed)
            except Exception as err:
                self.note = f"energy not measured: codecarbon failed ({err})"
        if self._dir is not None:
            self._dir.cleanup()


def bill(
    meter: ComputeMeter,
    *,
    n_parameters: int,
    flops: float,
    samples: int,
    train_seconds: float,
    device: str,
    world_size: int,
    precision: str,
    prior_train_seconds: float = 0.0,
) -> dict[str, Any]:
    """The compute figures of one training run, for train_metrics.json (`compute`), MLflow, the card and the gate.

    `samples`, `train_flops` and `train_seconds` cover every attempt of a resumed run. The meter saw only this
    attempt, so the energy and CO2 of the earlier attempts' `prior_train_seconds` of training are added at this
    attempt's mean power (`energy_earlier_attempts_kwh`), and the note says so; an interrupted attempt's
    unfinished epoch was never checkpointed and is not counted.
    """
    out: dict[str, Any] = {
        "n_parameters": n_parameters,
        "flops_per_sample": flops,
        "train_flops": flops * samples,
        "samples": samples,
        "samples_per_second": samples / train_seconds if train_seconds > 0 else 0.0,
        "train_seconds": train_seconds,
        "stage_seconds": meter.seconds,
        "peak_rss_gb": peak_rss_bytes() / 1e9,
        "device": device,
        "world_size": world_size,
        "precision": precision,
        "country_iso_code": meter.settings.country_iso_code,
    }
    if torch.cuda.is_available() and device.startswith("cuda"):
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1e9
    notes = [meter.note] if meter.note else []
    if meter.energy_kwh is not None and meter.co2_kg is not None:
        out["energy_kwh"], out["co2_kg"] = meter.energy_kwh, meter.co2_kg
        if prior_train_seconds > 0 and meter.seconds > 0:
            share = prior_train_seconds / meter.seconds
            earlier = meter.energy_kwh * share
            out["energy_kwh"] += earlier
            out["co2_kg"] += meter.co2_kg * share
            out["energy_earlier_attempts_kwh"] = earlier
            notes.append(
                f"Energy and CO2 include {earlier:.3g} kWh estimated for the earlier, interrupted attempts' "
                f"{prior_train_seconds:.1f} s of training, at this attempt's mean power; an interrupted "
                "epoch that never reached its checkpoint is not counted."
            )
    if notes:
        out["note"] = " ".join(notes)
    return out
