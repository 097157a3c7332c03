"""Federated against centralised training on full Adult split into 5 sites that differ (in one process).

The sites (non-IID, by native country and workclass; each site's rows, label rate and sex and race mix printed):
us-private (US, private sector), us-government (US, federal/state/local government), us-self-employed (US,
self-employed), us-other (US, workclass unknown, without pay or never worked) and abroad (another or an unknown
native country). Each site's rows are split into train and validation as the preprocess stage splits them
(preprocess.seed, val_fraction); the official test split is divided by the same rule, for the per-site gaps.

Side by side, with params.yaml's network (the MLP with periodic numeric embeddings by default), on the same rows:
- centralised: humane's trainer (humane.modeling.training.fit) on the pooled training rows, the preprocessor
  fitted on them (humane.modeling.features.fit_preprocessor), up to R x L epochs with params.yaml's patience;
- federated: a plain FedAvg loop (with --mu, FedProx beside it) over the 5 sites with humane.modeling.federated,
  in this process: the preprocessor from the sites' merged aggregates (humane.data.site_stats; min_group_size),
  then R rounds of L local epochs at every site, the same patience in rounds, the round with the lowest pooled
  validation loss kept;
- with DP at ε (default 3): centralised DP-SGD (humane's DP path, bench/privacy.py's settings: batch 1024, lr
  0.002, 10 epochs, all run) against DP-SGD at every site (Opacus, each site's ε over all 10 rounds of 1 epoch,
  same batch and lr).
Reported: test accuracy and ROC AUC (threshold evaluate.threshold; rows-based, and the AUC the coordinator gets
from the sites' score histograms, humane.fairness.counts), the sex gaps (demographic parity and equalized odds
differences) per site and global from the sites' confusion counts (humane.fairness.counts), rounds or epochs run
and the one kept, bytes per round (the weights as .npy bytes, what Flower's ndarray serialisation sends: to and
from the 5 sites) and of the aggregates, ε spent, and wall time (the federated loop runs the sites one after the
other; the "critical path" sums each round's slowest site).

Both sides see the same masked rows (the column policy of params.yaml fitted on the whole pool): the bench
measures the algorithm, not the sites' own policies. The Flower run in real processes (federated/) on the same
splits is a separate measurement; `--write-sites DIR` writes each site's raw rows (DIR/<site>/train.csv, test.csv)
for it.

Run with `nice python bench/federated.py [--rounds 60] [--local-epochs 1] [--mu 1] [--eps 3] [--json out.json]
[--threads 1]` in the activated venv; it needs only data/raw/adult.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from humane.core.protected import sensitive_group_labels  # noqa: E402
from humane.data.schema import Schema, resolve_schema  # noqa: E402
from humane.data.site_stats import merge_summaries, site_summary  # noqa: E402
from humane.data.sources import load  # noqa: E402
from humane.fairness.counts import audit_from_counts, merge_counts, metrics_from_counts, site_counts  # noqa: E402
from humane.fairness.params import AuditParams  # noqa: E402
from humane.modeling.evaluation import binary_metrics  # noqa: E402
from humane.modeling.features import Preprocessor, fit_preprocessor, split_train_val, token_layout  # noqa: E402
from humane.modeling.federated import (  # noqa: E402
    SiteData,
    SiteDP,
    build_network,
    fedavg,
    load_weights,
    local_round,
    preprocessor_from_summary,
    site_data,
    site_eval,
    weights,
)
from humane.modeling.params import TrainParams  # noqa: E402
from humane.modeling.training import fit  # noqa: E402
from humane.pipeline.params import Params, load_params  # noqa: E402
from humane.privacy.policy import apply_policy, fit_policy, pseudonym_key  # noqa: E402

SITES = ("us-private", "us-government", "us-self-employed", "us-other", "abroad")
# bench/privacy.py's DP-SGD settings (README's example): the same for the centralised and the federated DP rows.
DP_SETTINGS = {"batch_size": 1024, "lr": 0.002, "max_epochs": 10, "patience": 10}
GAPS = ("demographic_parity_difference", "equalized_odds_difference")


def site_of(frame: pd.DataFrame) -> pd.Series:
    """Each row's site, by native country and workclass (see the module docstring)."""
    us = frame["native-country"] == "United-States"
    work = frame["workclass"]
    government = work.isin(["Federal-gov", "State-gov", "Local-gov"])
    self_employed = work.isin(["Self-emp-not-inc", "Self-emp-inc"])
    site = np.select(
        [~us, work == "Private", government, self_employed],
        ["abroad", "us-private", "us-government", "us-self-employed"],
        default="us-other",
    )
    return pd.Series(site, index=frame.index)


@dataclass
class Setup:
    """The masked rows by site and split, the schema, and both preprocessors."""

    schema: Schema
    frames: dict[str, dict[str, pd.DataFrame]]
    pooled: Preprocessor
    federated: Preprocessor
    summary_bytes: dict[str, int]


def prepare(params: Params, min_group_size: int, noise: float, write_sites: Path | None) -> Setup:
    """Load and mask full Adult, split it into sites and train/validation, fit both preprocessors."""
    loaded = load(params.data, ROOT)
    policy = fit_policy(params.privacy, loaded.train)
    key = pseudonym_key(params.privacy)
    pool, test = apply_policy(policy, loaded.train, key), apply_policy(policy, loaded.test, key)
    schema = resolve_schema(params.data, pool, policy.to_dict())
    pool_site, test_site = site_of(pool), site_of(test)
    frames: dict[str, dict[str, pd.DataFrame]] = {}
    for name in SITES:
        rows = pool[pool_site == name].reset_index(drop=True)
        train, val = split_train_val(rows, schema.target, params.preprocess.val_fraction, params.preprocess.seed)
        frames[name] = {"train": train, "val": val, "test": test[test_site == name].reset_index(drop=True)}
        if write_sites is not None:
            (write_sites / name).mkdir(parents=True, exist_ok=True)
            loaded.train[site_of(loaded.train) == name].to_csv(write_sites / name / "train.csv", index=False)
            loaded.test[site_of(loaded.test) == name].to_csv(write_sites / name / "test.csv", index=False)
    pooled = fit_preprocessor(
        pd.concat([f["train"] for f in frames.values()], ignore_index=True), schema, params.preprocess
    )
    summaries = {
        n: site_summary(f["train"], schema, min_group_size=min_group_size, noise=noise, seed=i)
        for i, (n, f) in enumerate(frames.items())
    }
    federated = preprocessor_from_summary(merge_summaries(list(summaries.values())), params.preprocess)
    sizes = {n: len(json.dumps(s).encode()) for n, s in summaries.items()}
    return Setup(schema, frames, pooled, federated, sizes)


def describe_sites(setup: Setup) -> list[dict[str, Any]]:
    """Each site's rows, label rate and sex / race mix (training pool: train + validation)."""
    out = []
    for name, f in setup.frames.items():
        rows = pd.concat([f["train"], f["val"]])
        positive = (rows[setup.schema.target] == setup.schema.positive_label).mean()
        out.append(
            {
                "site": name,
                "train": len(f["train"]),
                "val": len(f["val"]),
                "test": len(f["test"]),
                "label_rate": float(positive),
                "sex": rows["sex"].value_counts(normalize=True).round(3).to_dict(),
                "race": rows["race"].value_counts(normalize=True).round(3).to_dict(),
            }
        )
    return out


def payload_bytes(arrays: list[np.ndarray]) -> int:
    """The weights as Flower sends them: each array as .npy bytes."""
    total = 0
    for array in arrays:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        total += len(buffer.getvalue())
    return total


def val_loss(model: torch.nn.Module, sites: dict[str, dict[str, SiteData]]) -> float:
    """Pooled validation loss from the sites' summed losses (what the coordinator gets)."""
    sums = [
        site_counts(d["val"].y.numpy(), site_eval(model, d["val"].x), 0.5, {}, 1)["loss_sum"] for d in sites.values()
    ]
    return float(sum(sums) / sum(len(d["val"].y) for d in sites.values()))


def centralised(settings: TrainParams, setup: Setup) -> tuple[torch.nn.Module, dict[str, Any]]:
    """humane's trainer on the pooled rows, the preprocessor fitted on them."""
    pooled = {
        s: site_data(setup.pooled, pd.concat([f[s] for f in setup.frames.values()], ignore_index=True))
        for s in ("train", "val")
    }
    started = time.perf_counter()
    result = fit(
        pooled["train"].x,
        pooled["train"].y,
        pooled["val"].x,
        pooled["val"].y,
        settings,
        layout=token_layout(setup.pooled),
    )
    info = {
        "epochs_run": len(result.history),
        "kept": result.best_epoch,
        "wall_s": time.perf_counter() - started,
        "epsilon": result.privacy.get("epsilon"),
        "noise_multiplier": result.privacy.get("noise_multiplier"),
        "history": result.history,
    }
    return result.model, info


def federated(
    settings: TrainParams, setup: Setup, rounds: int, local_epochs: int, mu: float, patience: int, dp: SiteDP | None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """FedAvg (FedProx with mu > 0) over the sites with humane.modeling.federated, the sites one after another."""
    sites = {n: {s: site_data(setup.federated, f[s]) for s in ("train", "val")} for n, f in setup.frames.items()}
    torch.manual_seed(settings.seed)
    model = build_network(settings, setup.federated)
    arrays = weights(model)
    best, kept, stale, history, critical = float("inf"), 0, 0, [], 0.0
    kept_arrays = arrays
    started = time.perf_counter()
    for r in range(1, rounds + 1):
        updates, slowest, eps, noise = [], 0.0, {}, {}
        for i, (name, d) in enumerate(sites.items()):
            a, n, m = local_round(
                model,
                d["train"].x,
                d["train"].y,
                global_arrays=arrays,
                epochs=local_epochs,
                batch_size=settings.batch_size,
                lr=settings.lr,
                weight_decay=settings.weight_decay,
                proximal_mu=mu,
                dp=dp,
                rounds_joined=r - 1,
                seed=settings.seed * 100_000 + r * 100 + i,
            )
            updates.append((a, n))
            slowest = max(slowest, m["seconds"])
            if dp is not None:
                eps[name] = m["epsilon"]
                noise[name] = m["noise_multiplier"]
        arrays = fedavg(updates)
        load_weights(model, arrays)
        critical += slowest
        loss = val_loss(model, sites)
        history.append({"round": r, "val_loss": loss, "epsilon": eps or None})
        if loss < best:
            best, kept, kept_arrays, stale = loss, r, arrays, 0
        else:
            stale += 1
        print(f"  round {r}: val_loss {loss:.4f}" + (f", ε per site {eps}" if eps else ""), flush=True)
        if stale >= patience:
            break
    load_weights(model, kept_arrays)
    size = payload_bytes(arrays)
    info = {
        "rounds_run": len(history),
        "kept": kept,
        "wall_s": time.perf_counter() - started,
        "critical_path_s": critical,
        "bytes_per_round": {"to_sites": size * len(sites), "from_sites": size * len(sites), "per_site_each_way": size},
        "epsilon_per_site": history[-1]["epsilon"],
        "noise_multiplier_per_site": noise or None,
        "history": history,
    }
    if dp is not None:
        info["epsilon"] = max(history[-1]["epsilon"].values())
    return model, info


def evaluate(model: torch.nn.Module, pre: Preprocessor, setup: Setup, params: Params) -> dict[str, Any]:
    """Test figures from the rows and from the sites' counts; sex gaps per site and global (from counts)."""
    threshold, audit = params.evaluate.threshold, params.audit
    counts, ys, ps = {}, [], []
    for name, f in setup.frames.items():
        d = site_data(pre, f["test"])
        p = site_eval(model, d.x)
        ys.append(d.y.numpy())
        ps.append(p)
        counts[name] = site_counts(d.y.numpy(), p, threshold, sensitive_group_labels(d.sensitive, ["sex"]), 1)
    rows = binary_metrics(np.concatenate(ys), np.concatenate(ps), threshold, params.evaluate.calibration_bins)
    merged = merge_counts(list(counts.values()))
    from_counts = metrics_from_counts(merged, params.evaluate.calibration_bins)
    gaps = {name: sex_gaps(c, audit) for name, c in {**counts, "global": merged}.items()}
    return {
        "accuracy": rows["accuracy"],
        "roc_auc": rows["roc_auc"],
        "roc_auc_from_counts": from_counts["roc_auc"],
        "accuracy_from_counts": from_counts["accuracy"],
        "sex_gaps": gaps,
    }


def sex_gaps(counts: dict[str, Any], audit: AuditParams) -> dict[str, float | None]:
    """The sex gaps from confusion counts (groups below audit.min_group_size are not judged)."""
    result = audit_from_counts("sex", counts["groups"]["sex"], counts["withheld"]["sex"], audit)
    return {g: result.gaps[g]["value"] for g in GAPS}


def plan(args: argparse.Namespace, params: Params) -> list[tuple[str, TrainParams, SiteDP | None, float]]:
    """The runs: name, training settings, a site's DP settings (None: none) and FedProx's mu."""
    plain = params.train.model_copy(update={"progress": False, "max_epochs": args.rounds * args.local_epochs})
    runs = [("centralised", plain, None, 0.0), ("federated FedAvg", plain, None, 0.0)]
    if args.mu > 0:
        runs.append((f"federated FedProx mu={args.mu:g}", plain, None, args.mu))
    if args.eps > 0:
        private = plain.model_copy(update=DP_SETTINGS)
        dp = private.dp.model_copy(update={"enabled": True, "target_epsilon": args.eps})
        site_dp = SiteDP(
            epsilon=args.eps,
            delta=dp.delta,
            clip=dp.max_grad_norm,
            rounds=DP_SETTINGS["max_epochs"],
            accountant=dp.accountant,
            max_physical_batch_size=dp.max_physical_batch_size,
        )
        runs += [
            (f"centralised DP-SGD ε={args.eps:g}", private.model_copy(update={"dp": dp}), None, 0.0),
            (f"federated FedAvg, DP-SGD at each site ε={args.eps:g}", private, site_dp, 0.0),
        ]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60, help="federated rounds R (centralised: R x L epochs)")
    parser.add_argument("--local-epochs", type=int, default=1, help="local epochs L per round")
    parser.add_argument("--mu", type=float, default=0.0, help="FedProx mu of an extra row (0: no FedProx row)")
    parser.add_argument("--eps", type=float, default=3.0, help="target ε of the DP rows (0: no DP rows)")
    parser.add_argument("--min-group-size", type=int, default=10, help="aggregates: smallest category sent")
    parser.add_argument("--noise", type=float, default=0.0, help="aggregates: sd of the noise on counts")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--write-sites", type=Path, help="write each site's raw rows here (DIR/<site>/*.csv)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(ROOT / "params.yaml")
    setup = prepare(params, args.min_group_size, args.noise, args.write_sites)
    out: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "threads": args.threads,
        "load_average_start": os.getloadavg(),
        "sites": describe_sites(setup),
        "summary_bytes": setup.summary_bytes,
        "rows": {},
    }
    for s in out["sites"]:
        print(
            f"{s['site']}: {s['train']} train / {s['val']} val / {s['test']} test rows, label rate "
            f"{s['label_rate']:.3f}, sex {s['sex']}, race {s['race']}"
        )
    for name, settings, site_dp, mu in plan(args, params):
        print(f"{name} ...", flush=True)
        if name.startswith("centralised"):
            model, info = centralised(settings, setup)
            pre = setup.pooled
        else:
            dp_run = site_dp is not None
            rounds = DP_SETTINGS["max_epochs"] if dp_run else args.rounds
            model, info = federated(
                settings,
                setup,
                rounds,
                1 if dp_run else args.local_epochs,
                mu,
                rounds if dp_run else settings.patience,
                site_dp,
            )
            pre = setup.federated
        out["rows"][name] = {**info, **evaluate(model, pre, setup, params)}
        r = out["rows"][name]
        print(f"  accuracy {r['accuracy']:.4f}, ROC AUC {r['roc_auc']:.4f}, wall {r['wall_s']:.0f} s", flush=True)
    out["load_average_end"] = os.getloadavg()  # wall times are only comparable on an otherwise idle machine
    table(out)
    print(f"\nload average (1, 5, 15 min) at start {out['load_average_start']}, at end {out['load_average_end']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))


def table(out: dict[str, Any]) -> None:
    """The figures as Markdown tables."""
    print(
        "\n| run | test accuracy | ROC AUC (rows / counts) | ε | epochs or rounds (kept) | bytes per round "
        "(to / from sites) | wall s (critical path) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in out["rows"].items():
        eps = "-" if r.get("epsilon") is None else f"{r['epsilon']:.2f}"
        run = r.get("rounds_run", r.get("epochs_run"))
        sent = r.get("bytes_per_round")
        sent_text = "-" if sent is None else f"{sent['to_sites']:,} / {sent['from_sites']:,}"
        path = f" ({r['critical_path_s']:.0f})" if "critical_path_s" in r else ""
        print(
            f"| {name} | {r['accuracy']:.4f} | {r['roc_auc']:.4f} / {r['roc_auc_from_counts']:.4f} | {eps} | "
            f"{run} ({r['kept']}) | {sent_text} | {r['wall_s']:.0f}{path} |"
        )
    sites = [*SITES, "global"]
    print("\nSex gaps (demographic parity / equalized odds difference), test split by site:\n")
    print("| run | " + " | ".join(sites) + " |")
    print("| --- |" + " --- |" * len(sites))
    for name, r in out["rows"].items():
        cells = [_pair(r["sex_gaps"][s]) for s in sites]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nAggregates sent once per site (bytes of JSON): {out['summary_bytes']}")


def _pair(gaps: dict[str, float | None]) -> str:
    return " / ".join("-" if gaps[g] is None or gaps[g] != gaps[g] else f"{gaps[g]:.3f}" for g in GAPS)


if __name__ == "__main__":
    main()
