"""Load: many monitoring batches back to back on one champion, in one process; reports, open files and memory.

    python bench/monitoring_load.py                       # builds a sample champion first (about 2-5 minutes)
    python bench/monitoring_load.py --project DIR         # a project copy already built by `dvc repro`
    python bench/monitoring_load.py --batches 50 --rows 600 --out load.json

Builds a champion the way the test suite does (tests/conftest.py: the sample's 3,000 + 1,000 Adult rows, one
`dvc repro` with MLflow on the project's SQLite store), then calls the monitoring flow (flows/monitoring.py) once
per batch, in this one process, against a temporary Prefect server (prefect_test_harness). The batches cycle
through the demo generator's three kinds (in distribution, shifted, biased), each drawn with its own seed, so
that no two are equal. After batch 1, 10 and the last: the open file descriptors (/proc/self/fd) and the resident
memory (VmRSS, after a garbage collection). Fails loudly (exit 1) when a batch's report or MLflow run is missing or
a run ends in an unexpected state. Prints a table and a JSON line; nothing here is a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import make_project, run  # noqa: E402 (sets the tools' quiet, temporary state)

os.environ.pop("PREFECT_API_URL", None)  # prefect_test_harness below provides the server
KINDS = ("in_distribution", "shifted", "bias")
EXPECTED = {"in_distribution": {"Completed"}, "shifted": {"DriftDetected"}, "bias": {"BiasDegraded"}}
CHECKPOINTS = (1, 10)
MODEL, EXPERIMENT = "humane-sample", "humane-sample-monitoring"


def build(dest: Path) -> Path:
    """A sample project with a registered champion: `dvc repro` on a fresh copy, as the test suite makes it."""
    started = time.monotonic()
    project = make_project(dest)
    run(["dvc", "repro"], project, timeout=3600)
    print(f"champion built in {time.monotonic() - started:.0f} s: {project}", flush=True)
    return project


def prepare(project: Path, batches: int, rows: int) -> list[Path]:
    """The batch files, in data/batches/load/; params as tests/integration/test_monitoring.py sets them."""
    from humane.data.datasets import read_adult
    from humane.monitoring import demo

    params = yaml.safe_load((project / "params.yaml").read_text())
    # The sample's model knows the countries of 3,000 rows only (as in tests/integration/test_monitoring.py).
    params["monitor"]["max_out_of_domain_share"] = 0.2
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    folder = project / "data/batches/load"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    test = read_adult(ROOT / demo.TEST_FILE)
    stamp = time.strftime("%Y%m%dT%H%M%S")  # a rerun on the same project names its batches (and runs) anew
    files = []
    for i in range(batches):
        kind = KINDS[i % len(KINDS)]
        frame = demo.make_batches(test, rows, i)[kind]
        files.append(folder / f"{kind}-{stamp}-{i + 1:03d}.csv")
        frame.to_csv(files[-1], index=False)
    return files


def open_files() -> int:
    """File descriptors this process holds now."""
    return len(os.listdir("/proc/self/fd"))


def rss_mib() -> float:
    """Resident memory of this process (VmRSS), after a garbage collection, in MiB."""
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def monitor_all(project: Path, files: list[Path]) -> tuple[list[dict], Counter]:
    """One flow run per batch, back to back; a sample of fds and RSS after the checkpoints and the last batch."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.monitoring import EXIT, monitoring

    os.chdir(project)
    samples, states = [], Counter()
    marks = {*CHECKPOINTS, len(files)}
    with prefect_test_harness(server_startup_timeout=180):  # two busy cores: the server may start slowly
        samples.append({"after_batch": 0, "open_files": open_files(), "rss_mib": rss_mib(), "seconds": 0.0})
        started = time.monotonic()
        for i, path in enumerate(files, start=1):
            state = monitoring(batch=str(path), batch_time=f"2026-05-01T{i % 24:02d}:00:00+00:00", return_state=True)
            kind = path.stem.split("-")[0]
            states[state.name] += 1
            if state.name not in EXIT:
                raise SystemExit(f"batch {i} ({path.name}) ended {state.name}: {state.message}")
            if state.name not in EXPECTED[kind]:
                print(f"note: batch {i} ({path.name}) ended {state.name}: {str(state.message)[:300]}", flush=True)
            if i in marks:
                samples.append(
                    {
                        "after_batch": i,
                        "open_files": open_files(),
                        "rss_mib": rss_mib(),
                        "seconds": time.monotonic() - started,
                    }
                )
                print(f"after batch {i}: {samples[-1]}", flush=True)
    return samples, states


def check_outputs(project: Path, files: list[Path]) -> int:
    """Every batch's report folder complete, and exactly one MLflow run per batch; the batches' runs counted."""
    from humane.core.io import read_json
    from humane.governance.store import client
    from humane.monitoring.report import PLOTS

    missing = []
    for path in files:
        folder = project / "reports/monitoring" / path.stem
        for name in ("report.json", "report.html", *PLOTS):
            if not (folder / name).is_file():
                missing.append(str(folder / name))
        if (folder / "report.json").is_file() and read_json(folder / "report.json")["batch"] != path.stem:
            missing.append(f"{folder / 'report.json'} (another batch's)")
    mlflow_client = client(f"sqlite:///{project / 'mlflow.db'}")
    experiment = mlflow_client.get_experiment_by_name(EXPERIMENT)
    runs = [] if experiment is None else mlflow_client.search_runs([experiment.experiment_id], max_results=10000)
    per_batch = Counter(r.data.tags.get("humane.batch") for r in runs)
    missing += [f"MLflow run of {p.stem} ({per_batch[p.stem]} runs, not 1)" for p in files if per_batch[p.stem] != 1]
    assert not missing, f"{len(missing)} outputs missing: {missing[:20]}"
    return sum(per_batch[p.stem] for p in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, help="a project copy with a champion (default: build one)")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--rows", type=int, default=600, help="rows per batch (default 600, as the tests)")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    project = args.project.resolve() if args.project else build(Path(tempfile.mkdtemp(prefix="humane-load-")))
    files = prepare(project, args.batches, args.rows)
    samples, states = monitor_all(project, files)
    runs = check_outputs(project, files)
    first, tenth, last = samples[1], samples[min(2, len(samples) - 1)], samples[-1]
    print(f"\n{'after batch':>12} {'open files':>11} {'RSS MiB':>9} {'seconds':>9}")
    for s in samples:
        print(f"{s['after_batch']:>12} {s['open_files']:>11} {s['rss_mib']:>9.1f} {s['seconds']:>9.1f}")
    figures = {
        "bench": "monitoring_load",
        "batches": len(files),
        "rows_per_batch": args.rows,
        "states": dict(states),
        "reports_written": len(files),
        "mlflow_runs": runs,
        "samples": samples,
        "rss_growth_mib_1_to_last": round(last["rss_mib"] - first["rss_mib"], 1),
        "rss_growth_mib_10_to_last": round(last["rss_mib"] - tenth["rss_mib"], 1),
        "fd_growth_1_to_last": last["open_files"] - first["open_files"],
        "fd_growth_10_to_last": last["open_files"] - tenth["open_files"],
        "seconds_per_batch": round((last["seconds"] - first["seconds"]) / max(1, len(files) - 1), 2),
    }
    print(
        f"\nRSS growth batch 1 -> {len(files)}: {figures['rss_growth_mib_1_to_last']} MiB "
        f"(10 -> {len(files)}: {figures['rss_growth_mib_10_to_last']} MiB); open files growth: "
        f"{figures['fd_growth_1_to_last']} ({figures['fd_growth_10_to_last']} from batch 10)"
    )
    print(json.dumps(figures))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
