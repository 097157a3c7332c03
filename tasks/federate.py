"""Federate stage: one federated training run with Flower, then the same reports the pooled stages write.

The coordinator holds no row. This stage asks the SuperLink to run the Flower App (`flwr run`, in the site
environment: flwr cannot share this environment, docs/how-to/federated.md), waits for it, and turns what the
ServerApp wrote (the contract's out_dir: model.pt, preprocessor.skops, federation.json, evaluation.json) into the
workspace's models/ and reports/ files: evaluation and bias audit from the sites' merged counts
(humane.fairness.counts), per site and global. Track, gate, register and sign-off then read them as for any model;
what only rows give is stated as unmeasurable (humane.governance.federation), never left out silently.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

from humane.core import io
from humane.core.context import RunContext
from humane.core.errors import ConfigError, HumaneError, ServerUnavailable
from humane.core.paths import Paths
from humane.core.protected import INTERSECTION
from humane.fairness.counts import (
    audit_from_counts,
    calibration_from_histograms,
    metrics_from_counts,
    overall_from_counts,
    roc_from_histograms,
)
from humane.fairness.metrics import FeatureAudit, headline, shown_names
from humane.fairness.plots import save_plots as save_audit_plots
from humane.governance import federation
from humane.modeling.evaluation import CalibrationBin, save_plots
from humane.modeling.features import load_preprocessor
from humane.modeling.model import count_parameters, load_model
from humane.modeling.params import FederatedParams
from humane.pipeline.entry import stage_main
from humane.pipeline.params import Params
from humane.privacy.policy import OTHER, FittedPolicy

# What flwr prints when the SuperLink's control API does not answer (flwr.cli.utils.SUPERLINK_UNAVAILABLE_MESSAGE).
UNAVAILABLE = "Connection to the SuperLink is unavailable"
OUT_FILES = ("model.pt", "preprocessor.skops", "federation.json", "evaluation.json")
# The one line the ServerApp leaves in out_dir when its run fails (federated/humane_fl/server_app.py).
ERROR_FILE = "federation_error.txt"
STARTED = re.compile(r"Successfully started run (\d+)")  # flwr run's line naming the run it started
STOP_TIMEOUT_S = 60
ANSI = re.compile(r"\x1b\[[0-9;]*m")
RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Failed)\w*: ")  # a traceback's last line


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Run the federation, then write models/ and reports/ from its output folder."""
    settings = federated_settings(params)
    # Absolute: the ServerApp (another process, started by the SuperLink) writes into out_dir.
    with tempfile.TemporaryDirectory(prefix=".federate-", dir=paths.root.resolve()) as tmp:
        out_dir = Path(tmp) / "out"
        out_dir.mkdir()
        flower_run(params, settings, paths.root.resolve(), Path(tmp))
        run_of_sites = write_reports(params, settings, paths, out_dir)
    trained = federation.sites_with(run_of_sites, "trained")
    others = [
        f"{s['site']} {s['status']} ({s.get('reason')})" for s in run_of_sites["sites"] if s["status"] != "trained"
    ]
    metrics = io.read_json(paths.metrics)["model"]
    return (
        f"federate: {len(trained)} sites trained ({', '.join(s['site'] for s in trained)}) for "
        f"{run_of_sites['rounds']} rounds; test accuracy {metrics['accuracy']:.4f}, ROC AUC {metrics['roc_auc']:.4f}"
        + (f"; {'; '.join(others)}" if others else "")
    )


def federated_settings(params: Params) -> FederatedParams:
    """The `federated:` section, refusing what federated training does not combine with."""
    settings = params.federated
    if settings is None:
        raise ConfigError(
            "params.yaml: no `federated:` section; the federate stage runs in a federated "
            "coordinator's workspace (federation/params.yaml)"
        )
    refused = [
        what
        for what, on in [
            (
                "mitigation (per-group weights, terms or thresholds need the rows at one place)",
                params.mitigation.active,
            ),
            ("train.dp.enabled (use federated.dp_epsilon: DP-SGD at each site, record-level)", params.train.dp.enabled),
            ("train.distributed (each site trains in one process)", params.train.distributed.world > 1),
        ]
        if on
    ]
    if refused:
        raise ConfigError(f"federated training is not combined with {'; '.join(refused)}")
    if settings.min_sites > len(settings.sites):
        raise ConfigError(
            f"federated.min_sites {settings.min_sites} exceeds the {len(settings.sites)} sites named in federated.sites"
        )
    return settings


def run_config(params: Params, settings: FederatedParams, out_dir: Path) -> dict[str, Any]:
    """The ServerApp's run config (docs/how-to/federated.md; the keys of federated/pyproject.toml)."""
    shared = {
        "train": params.train.model_dump(mode="json"),
        "preprocess": params.preprocess.model_dump(mode="json"),
        "evaluate": params.evaluate.model_dump(mode="json"),
        "data": {"sensitive_features": params.data.sensitive_features},
        "privacy": params.privacy.model_dump(mode="json"),  # each site checks it applies these rules
    }
    return {
        "out_dir": str(out_dir),
        "rounds": settings.rounds,
        "local_epochs": settings.local_epochs,
        "fraction_train": float(settings.fraction_train),
        "min_sites": settings.min_sites,
        "strategy": settings.strategy,
        "proximal_mu": float(settings.proximal_mu),
        "min_group_size": settings.min_group_size,
        "noise": float(settings.noise),
        "dp_epsilon": float(settings.dp_epsilon),
        "dp_delta": float(settings.dp_delta),
        "dp_clip": float(settings.dp_clip),
        "secagg": settings.secagg,
        "seed": settings.seed,
        "params_json": json.dumps(shared, sort_keys=True),
        "round_timeout_s": float(settings.round_timeout_s),
        "expected_sites": len(settings.sites),
    }


def toml_lines(values: dict[str, Any]) -> str:
    """Flat TOML: JSON's strings, numbers and booleans are TOML's."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


def flower_run(params: Params, settings: FederatedParams, root: Path, tmp: Path) -> None:
    """`flwr run <app> <connection> --run-config <file> --stream` in the site environment; errors in one line."""
    flwr = (root / settings.site_env / "bin" / "flwr").resolve()
    if not flwr.exists():
        raise ConfigError(f"federated.site_env: {flwr} not found; make the site environment first: `make site-env`")
    app = (root / settings.app).resolve()
    if not (app / "pyproject.toml").is_file():
        raise ConfigError(f"federated.app: {app} holds no Flower App (pyproject.toml)")
    home = tmp / "flwr-home"  # the run's own Flower configuration, never ~/.flwr
    home.mkdir()
    link = settings.superlink
    connection = {"address": link.address, "insecure": link.insecure}
    if link.root_certificates:
        connection["root-certificates"] = str((root / link.root_certificates).resolve())
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{link.connection}"\n\n[superlink.{link.connection}]\n' + toml_lines(connection)
    )
    config = tmp / "run_config.toml"
    config.write_text(toml_lines(run_config(params, settings, tmp / "out")))
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "DO_NOT_TRACK": "true"}
    command = [str(flwr), "run", str(app), link.connection, "--run-config", str(config), "--stream"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=settings.run_timeout_s)
    except subprocess.TimeoutExpired as late:
        stopped = stop_run(flwr, link.connection, env, late.stdout)
        raise HumaneError(
            f"the federated run did not finish within federated.run_timeout_s ({settings.run_timeout_s:g} s); {stopped}"
        ) from None
    output = done.stdout + done.stderr
    if UNAVAILABLE in output:
        raise ServerUnavailable(
            f"the Flower SuperLink at {link.address} did not answer (federated.superlink.address);"
            " start it first (docs/how-to/federated.md)"
        )
    missing = [name for name in OUT_FILES if not (tmp / "out" / name).is_file()]
    error = tmp / "out" / ERROR_FILE
    if error.is_file():  # the ServerApp's own reason (e.g. fewer usable sites than min_sites)
        raise HumaneError(f"the federated run failed: {error.read_text().strip()}")
    if done.returncode != 0 or missing:
        raise HumaneError(
            f"the federated run failed (flwr exit {done.returncode}; no {', '.join(missing) or '-'} "
            f"written): {failure_text(output)}"
        )


def stop_run(flwr: Path, connection: str, env: dict[str, str], output: bytes | str | None) -> str:
    """Ask the SuperLink to stop the run `flwr run` started (its id from the output); what became of it, said.

    Without the stop, the ServerApp would go on training and writing after the stage gave up.
    """
    text = output.decode(errors="replace") if isinstance(output, bytes) else output or ""
    started = STARTED.search(ANSI.sub("", text))
    if started is None:
        return "no run had started on the SuperLink"
    run_id = started.group(1)
    try:
        stop = [str(flwr), "stop", run_id, connection]
        done = subprocess.run(stop, capture_output=True, text=True, env=env, timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        done = None
    if done is not None and done.returncode == 0:
        return f"run {run_id} was stopped on the SuperLink"
    return f"run {run_id} could NOT be stopped on the SuperLink: stop it with `flwr stop {run_id}`"


def failure_text(output: str) -> str:
    """The ServerApp's own exception line (its traceback's last), else flwr's error lines, in one line."""
    lines = [line.strip() for line in ANSI.sub("", output).splitlines() if line.strip()]
    raised = [line for line in lines if RAISED.match(line)]
    if raised:
        return raised[-1]
    errors = [line for line in lines if "error" in line.lower() or "exception" in line.lower()]
    return " | ".join((errors or lines)[-4:]) or "no output"


def write_reports(params: Params, settings: FederatedParams, paths: Paths, out_dir: Path) -> dict[str, Any]:
    """The workspace's models/ and reports/ from the ServerApp's out_dir; the run (federation.json) as written."""
    run_of_sites = sites_accounted(io.read_json(out_dir / "federation.json"), settings)
    counts = io.read_json(out_dir / "evaluation.json")
    if abs(counts["threshold"] - params.evaluate.threshold) > 1e-12:
        raise HumaneError(
            f"the sites scored at threshold {counts['threshold']}, not evaluate.threshold {params.evaluate.threshold}"
        )
    pre = load_preprocessor(out_dir / "preprocessor.skops")  # refuses untrusted types
    state = torch.load(out_dir / "model.pt", weights_only=True)
    model = load_model(state)
    paths.model.parent.mkdir(parents=True, exist_ok=True)
    io.write_with(paths.model, lambda tmp: shutil.copyfile(out_dir / "model.pt", tmp))
    io.write_with(paths.preprocessor, lambda tmp: shutil.copyfile(out_dir / "preprocessor.skops", tmp))
    io.write_json(paths.thresholds, {"constraint": "none"})
    io.write_json(paths.privacy_policy, served_policy(params, pre).to_dict())
    write_evaluation(params, paths, counts)
    write_audit(params, paths, counts)
    write_training(params, paths, run_of_sites, state, count_parameters(model))
    write_site_checks(params, paths, run_of_sites)
    io.write_json(paths.federated_evaluation, counts)
    io.write_json(paths.federation, run_of_sites)  # last: its presence marks the workspace as federated
    return run_of_sites


def sites_accounted(run_of_sites: dict[str, Any], settings: FederatedParams) -> dict[str, Any]:
    """The run with every expected site accounted for (one that never connected: dropped, said so); enough trained.

    A site's name is what its SuperNode's --node-config says: a name not in federated.sites, or one answered by
    two nodes, is refused (its rows are not known to be the site's), never counted as a trained site.
    """
    names = [s["site"] for s in run_of_sites["sites"]]
    trained_names = [s["site"] for s in federation.sites_with(run_of_sites, "trained")]
    unknown = sorted({n for n in trained_names if n not in settings.sites})
    twice = sorted({n for n in trained_names if names.count(n) > 1})
    if unknown or twice:
        refused = [f"nodes that trained as sites not in federated.sites: {', '.join(unknown)}"] * bool(unknown)
        refused += [f"sites answered by more than one node: {', '.join(twice)}"] * bool(twice)
        raise HumaneError(
            f"the federated run is refused: {'; '.join(refused)} (a site's name is its SuperNode's --node-config, "
            f"not authenticated: list every site in federated.sites and start one node per site)"
        )
    named = set(names)
    absent = [
        {
            "site": s,
            "status": "dropped",
            "reason": "never connected to the SuperLink",
            "rows": {"train": 0, "test": 0},
            "group_mix": {},
            "rounds_joined": 0,
        }
        for s in settings.sites
        if s not in named
    ]
    run_of_sites = {**run_of_sites, "sites": run_of_sites["sites"] + absent, "sites_expected": settings.sites}
    trained = federation.sites_with(run_of_sites, "trained")
    if len(trained) < settings.min_sites:
        why = "; ".join(f"{s['site']}: {s['status']} ({s.get('reason') or '-'})" for s in run_of_sites["sites"])
        raise HumaneError(
            f"only {len(trained)} sites trained, fewer than federated.min_sites {settings.min_sites}: {why}"
        )
    return run_of_sites


def served_policy(params: Params, pre: Any) -> FittedPolicy:
    """The column policy the served model applies: the profile's rules, the categories the global model knows kept."""
    policy = params.privacy
    encoder_columns = dict((n, c) for n, _, c in pre.transformer.transformers_).get("cat", [])
    categories = {}
    if "cat" in pre.transformer.named_transformers_:
        encoder = pre.transformer.named_transformers_["cat"][-1]
        categories = dict(zip(encoder_columns, encoder.categories_, strict=True))
    kept = {c: sorted(str(v) for v in categories.get(c, []) if v == v and v != OTHER) for c in policy.group_rare}
    return FittedPolicy(
        list(policy.drop), list(policy.pseudonymize), dict(policy.bins), dict(policy.top_code), kept, policy.strict_bins
    )


def write_evaluation(params: Params, paths: Paths, counts: dict[str, Any]) -> None:
    """reports/metrics.json (global and per site) and the ROC and calibration plots, from the merged counts."""
    bins = params.evaluate.calibration_bins
    model = metrics_from_counts(counts["global"], bins)
    baseline = dict.fromkeys(model, float("nan"))  # unmeasurable: federation.why_unmeasured("baseline.")
    io.write_json(
        paths.metrics,
        {
            "model": model,
            "baseline": {"logreg": baseline, "majority": baseline},
            "test_rows": counts["global"]["rows"],
            "sites": {site: metrics_from_counts(c, bins) for site, c in counts["sites"].items()},
        },
    )
    roc = roc_from_histograms(counts["global"]["scores"]["positive"], counts["global"]["scores"]["negative"])
    calibration = calibration_from_histograms(
        counts["global"]["scores"]["positive"], counts["global"]["scores"]["negative"], bins
    )["bins"]
    io.write_json(paths.roc_data, roc)
    io.write_json(paths.calibration_data, calibration)
    save_plots(roc, [CalibrationBin(**b) for b in calibration], model["roc_auc"], paths.roc_png, paths.calibration_png)


def audits_of(params: Params, counts: dict[str, Any]) -> list[FeatureAudit]:
    """The audit of each sensitive feature (and their intersection) from one set of counts, in params order."""
    names = [*params.data.sensitive_features]
    if len(names) > 1:
        names.append(INTERSECTION.join(names))
    return [
        audit_from_counts(f, counts["groups"].get(f, {}), counts["withheld"].get(f, 0), params.audit) for f in names
    ]


def write_audit(params: Params, paths: Paths, counts: dict[str, Any]) -> None:
    """reports/audit.json (global, and per site), the headline gaps and the audit plots, from the counts."""
    audits = audits_of(params, counts["global"])
    report = {
        "threshold": params.evaluate.threshold,
        "thresholds": "none",
        "min_group_size": params.audit.min_group_size,
        "bootstrap": params.audit.bootstrap,
        "overall": overall_from_counts(counts["global"], params.audit),
        "features": [a.__dict__ for a in audits],
        "withheld_rows": counts["global"]["withheld"],
        "sites": {
            site: {
                "overall": overall_from_counts(c, params.audit),
                "withheld_rows": c["withheld"],
                "features": [a.__dict__ for a in audits_of(params, c)],
            }
            for site, c in counts["sites"].items()
        },
    }
    io.write_json(paths.audit_report, report)
    io.write_json(paths.fairness, headline(audits))
    with io.atomic_dir(paths.audit_plots_dir) as out_dir:
        rows = save_audit_plots(audits, out_dir)
    io.write_json(paths.audit_groups_data, rows)


def write_training(
    params: Params, paths: Paths, run_of_sites: dict[str, Any], state: dict[str, Any], n_parameters: int
) -> None:
    """reports/train_history.json (one row per round) and train_metrics.json (the round kept, DP)."""
    nan = float("nan")  # accuracy and AUC are not sent per round: only the losses the sites report
    history = [
        {
            "epoch": h["round"],
            "train_loss": h["train_loss"],
            "val_loss": h["val_loss"],
            "val_accuracy": nan,
            "val_auc": nan,
            "sites": h["sites"],
        }
        for h in run_of_sites["history"]
    ]
    best = int(state.get("best_epoch", run_of_sites["rounds"]))
    kept = next((h for h in history if h["epoch"] == best), {"val_loss": nan})
    dp = run_of_sites.get("dp")
    privacy = {"dp_enabled": dp is not None}
    if dp:
        privacy.update(
            epsilon=dp["epsilon"],
            delta=dp["delta"],
            noise_multiplier=dp["noise_multiplier"],
            max_grad_norm=dp["clip"],
            accountant="Opacus at each site (record-level: a site's rows, not a site's participation)",
        )
    io.write_json(paths.train_history, history)
    io.write_json(
        paths.train_metrics,
        {
            "model": params.train.model,
            "best_epoch": best,
            "epochs_run": run_of_sites["rounds"],
            "best_val_loss": kept["val_loss"],
            "best_val_accuracy": nan,
            "best_val_auc": nan,
            "n_parameters": n_parameters,
            "resumed_from_epoch": None,
            "mitigation": {},
            "federated": True,
            **privacy,
        },
    )


def write_site_checks(params: Params, paths: Paths, run_of_sites: dict[str, Any]) -> None:
    """What the sites checked on their own rows: validation, data audit, privacy (the rest says unmeasurable)."""
    sites = [{"site": s["site"], "status": s["status"], "reason": s.get("reason")} for s in run_of_sites["sites"]]
    ranges = {**params.data.ranges, **{c: [e[0], e[-1]] for c, e in params.privacy.bins.items()}}
    io.write_json(
        paths.validation_report,
        {
            # The model's rows passed validation at every site that trained them: a site whose own stages failed was
            # excluded (its rows unused, its reason in `sites`). Counted in sites, not checks: each site's report
            # stays at the site.
            "passed": True,
            "federated": True,
            "unit": "sites",
            "sites": sites,
            "warnings": [],
            "n_checks": sum(s["status"] == "trained" for s in sites),
            "n_failed": 0,
            "n_excluded": sum(s["status"] == "excluded" for s in sites),
            "schema": {"ranges": ranges},
        },
    )
    with io.atomic_dir(paths.validation_docs) as docs:
        rows = "".join(
            f"<li>{s['site']}: {s['status']}{' (' + s['reason'] + ')' if s['reason'] else ''}</li>" for s in sites
        )
        (docs / "index.html").write_text(
            f"<html><body><h1>Validation at the sites</h1><ul>{rows}</ul>"
            "<p>Each site's Great Expectations report stays at the site.</p></body></html>"
        )
    io.write_json(paths.data_audit, pooled_group_mix(run_of_sites, params.validate.min_group_rows))
    io.write_json(
        paths.privacy_report,
        {
            "federated": federation.why_unmeasured("privacy.k_min"),
            "quasi_identifiers": params.privacy.quasi_identifiers,
            "k": params.privacy.k,
        },
    )
    io.write_json(paths.membership_report, {"federated": federation.why_unmeasured("privacy.mia_auc")})
    io.write_json(paths.mitigation_data, {})


def pooled_group_mix(run_of_sites: dict[str, Any], min_group_rows: int) -> dict[str, list[dict[str, Any]]]:
    """Each sensitive group's share of the trained sites' training rows (group_mix weighted by rows); no base rate.

    A group with fewer pooled rows than validate.min_group_rows is numbered, not named, as in the pooled data audit.
    """
    trained = federation.sites_with(run_of_sites, "trained")
    total = sum(s["rows"]["train"] for s in trained) or 1
    pooled: dict[str, dict[str, float]] = {}
    for site in trained:
        for feature, mix in site.get("group_mix", {}).items():
            for group, share in mix.items():
                into = pooled.setdefault(feature, {})
                into[group] = into.get(group, 0.0) + share * site["rows"]["train"]
    out = {}
    for feature, rows in pooled.items():
        shown = shown_names({g: round(n) for g, n in rows.items()}, min_group_rows)
        out[feature] = [
            {
                "group": shown[g],
                "rows": round(n),
                "share": n / total,
                "base_rate": None,
                "too_small": round(n) < min_group_rows,
            }
            for g, n in sorted(rows.items(), key=lambda kv: -kv[1])
        ]
    return out


if __name__ == "__main__":
    stage_main(run)
