"""The ServerApp: the coordinator's side of a federated run (Flower 1.42 Message API, deployment engine).

It runs on the coordinator's machine (a subprocess of the SuperLink, in the site environment) and writes the
contract's files into the run config's out_dir:

1. "stats" to every connected node: each site runs its own load/validate/data_audit and answers its summary or
   its exclusion with a reason (recorded, never silent); fewer usable sites than min_sites: the run fails.
2. The merged summaries give the global preprocessor (humane.modeling.federated.preprocessor_from_summary), sent to
   the sites with every message (aggregate-derived: category sets, means and variances).
3. `rounds` rounds of Flower's FedAvg or FedProx (their configure_train / aggregate_train; with secagg, Flower's
   SecAgg+ workflow: humane_fl.secagg): a node that does not answer within round_timeout_s is dropped from that
   round, which completes with the others, and takes no further part; with dp_epsilon > 0 each site trains with
   Opacus and reports its epsilon.
4. "evaluate": each site's counts on its test rows (humane.fairness.counts.site_counts), merged.

Every message in either direction is recorded (kind, keys, bytes) in federation.json. A failure writes
out_dir/federation_error.txt (one line) and none of the contract's files.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedProx
from flwr.supercore import log

from .ledger import DROPPED, EXCLUDED, Ledger, SiteRecord
from .records import keys, size

app = ServerApp()
STATS = f"{MessageType.QUERY}.stats"
ERROR_FILE = "federation_error.txt"
INFO = 20


class FederationFailed(RuntimeError):
    """The run cannot go on (too few usable sites, nothing aggregated); the message says why."""


@dataclass(frozen=True)
class RunConfig:
    """The run config (federated/pyproject.toml [tool.flwr.app.config], overridden by `flwr run --run-config`)."""

    out_dir: Path
    rounds: int
    local_epochs: int
    fraction_train: float
    min_sites: int
    strategy: str
    proximal_mu: float
    min_group_size: int
    noise: float
    dp_epsilon: float
    dp_delta: float
    dp_clip: float
    secagg: bool
    seed: int
    params_json: str
    round_timeout_s: float
    # The sites the coordinator expects (federated.sites): waited for, up to round_timeout_s, before the run starts.
    expected_sites: int

    @classmethod
    def parse(cls, config: dict[str, Any]) -> RunConfig:
        """Check and type the run config; a bad value fails with its key named."""
        try:
            parsed = cls(
                out_dir=Path(str(config["out_dir"])),
                rounds=int(config["rounds"]),
                local_epochs=int(config["local_epochs"]),
                fraction_train=float(config["fraction_train"]),
                min_sites=int(config["min_sites"]),
                strategy=str(config["strategy"]),
                proximal_mu=float(config["proximal_mu"]),
                min_group_size=int(config["min_group_size"]),
                noise=float(config["noise"]),
                dp_epsilon=float(config["dp_epsilon"]),
                dp_delta=float(config["dp_delta"]),
                dp_clip=float(config["dp_clip"]),
                secagg=bool(config["secagg"]),
                seed=int(config["seed"]),
                params_json=str(config["params_json"]),
                round_timeout_s=float(config["round_timeout_s"]),
                expected_sites=int(config["expected_sites"]),
            )
            json.loads(parsed.params_json)
        except (KeyError, ValueError, TypeError) as err:
            raise FederationFailed(f"run config: {type(err).__name__} {err}") from None
        problems = [
            k
            for k, bad in (
                ("out_dir", not parsed.out_dir.is_absolute()),
                ("rounds", parsed.rounds < 1),
                ("local_epochs", parsed.local_epochs < 1),
                ("min_sites", parsed.min_sites < 1),
                ("strategy", parsed.strategy not in ("fedavg", "fedprox")),
                ("fraction_train", not 0 < parsed.fraction_train <= 1),
                ("round_timeout_s", parsed.round_timeout_s <= 0),
                ("min_group_size", parsed.min_group_size < 1),
            )
            if bad
        ]
        if problems:
            raise FederationFailed(f"run config: invalid {problems} (out_dir must be an absolute path)")
        return parsed

    def to_sites(self) -> dict[str, Any]:
        """The settings every message to a site carries (no data)."""
        return {
            "min_group_size": self.min_group_size,
            "noise": self.noise,
            "seed": self.seed,
            "params_json": self.params_json,
            "rounds": self.rounds,
            "local_epochs": self.local_epochs,
            "dp_epsilon": self.dp_epsilon,
            "dp_delta": self.dp_delta,
            "dp_clip": self.dp_clip,
        }


class NodeSubset(Grid):
    """The run's grid seen through the nodes still taking part: Flower's strategies sample only from these."""

    def __init__(self, grid: Grid, nodes: Iterable[int]) -> None:
        self.grid, self.nodes = grid, list(nodes)

    def set_run(self, run: Any) -> None:  # noqa: D102 - delegated
        self.grid.set_run(run)

    @property
    def run(self) -> Any:  # noqa: D102 - delegated
        return self.grid.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        """Delegated."""
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102 - the subset
        return list(self.nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102 - delegated
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102 - delegated
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Delegated."""
        return self.grid.send_and_receive(messages, timeout=timeout)


def exchange(
    grid: Grid, ledger: Ledger, messages: list[Message], server_round: int, kind: str, timeout: float
) -> tuple[dict[int, Message], set[int]]:
    """Send messages, wait at most `timeout` s; record both directions; return {node: reply} and the silent nodes."""
    for msg in messages:
        ledger.message(server_round, msg.metadata.dst_node_id, kind, "to_site", keys(msg.content), size(msg.content))
    replies = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        replies[node] = reply
        content = RecordDict() if reply.has_error() else reply.content
        ledger.message(server_round, node, kind, "from_site", keys(content), size(content))
    silent = {msg.metadata.dst_node_id for msg in messages} - set(replies)
    return replies, silent


def _failed(ledger: Ledger, node: int, reply: Message, when: str) -> None:
    """Record a site's error reply (Ledger.failed: dropped when its node is gone, else excluded)."""
    ledger.failed(node, int(reply.error.code), str(reply.error.reason or ""), when)


def collect_stats(grid: Grid, ledger: Ledger, cfg: RunConfig) -> dict[int, dict[str, Any]]:
    """Ask every connected node for its summary; record exclusions; return {node: summary} of the usable sites."""
    nodes = _wait_for_nodes(grid, cfg)
    config = ConfigRecord(cfg.to_sites())
    messages = [Message(RecordDict({"config": config}), dst_node_id=n, message_type=STATS) for n in nodes]
    replies, silent = exchange(grid, ledger, messages, 0, "stats", cfg.round_timeout_s)
    summaries = {}
    for node, reply in replies.items():
        if reply.has_error():
            ledger.sites[node] = SiteRecord(f"node-{node}")
            _failed(ledger, node, reply, "at the data checks (stats)")
            continue
        stats = dict(reply.content.config_records["stats"].items())
        record = ledger.sites[node] = SiteRecord(str(stats["site"]))
        if stats["status"] != "ok":
            record.status, record.reason = EXCLUDED, str(stats["reason"])
            log(INFO, "site %s excluded: %s", record.site, record.reason)
            continue
        summaries[node] = json.loads(str(stats["summary"]))
    for node in silent:
        ledger.sites[node] = SiteRecord(f"node-{node}", DROPPED, f"no answer to stats within {cfg.round_timeout_s} s")
    _enough(ledger, cfg, "after the sites' data checks")
    return summaries


def _wait_for_nodes(grid: Grid, cfg: RunConfig) -> list[int]:
    """The connected nodes once every expected site's is (at most round_timeout_s); at least min_sites of them.

    Not as soon as min_sites are: a site whose node connects a moment later would be left out of the whole run.
    """
    deadline = time.time() + cfg.round_timeout_s
    wanted = max(cfg.min_sites, cfg.expected_sites)
    while len(nodes := sorted(grid.get_node_ids())) < wanted and time.time() < deadline:
        time.sleep(1)
    if len(nodes) < cfg.min_sites:
        raise FederationFailed(
            f"{len(nodes)} SuperNodes connected after {cfg.round_timeout_s} s; min_sites is {cfg.min_sites}"
        )
    return nodes


def _enough(ledger: Ledger, cfg: RunConfig, when: str) -> None:
    usable = ledger.usable()
    if len(usable) < cfg.min_sites:
        gone = "; ".join(f"{r.site}: {r.status} ({r.reason})" for r in ledger.sites.values() if r.reason)
        raise FederationFailed(
            f"{len(usable)} usable sites {when}, fewer than min_sites = {cfg.min_sites}{': ' + gone if gone else ''}"
        )


def _weighted(values: list[tuple[float, float]]) -> float | None:
    total = sum(w for _, w in values)
    return sum(v * w for v, w in values) / total if total > 0 else None


def train_rounds(
    grid: Grid,
    ledger: Ledger,
    cfg: RunConfig,
    arrays: ArrayRecord,
    common: dict[str, Any],
    context: Context,
    max_rows: int,
) -> ArrayRecord:
    """`rounds` rounds of Flower's FedAvg/FedProx over the usable sites; the last weights.

    With secagg, through Flower's SecAgg+ (humane_fl.secagg). Drop-outs and failures are recorded.
    """
    kwargs = {
        "fraction_train": cfg.fraction_train,
        "fraction_evaluate": 0.0,
        "min_train_nodes": 1,
        "min_available_nodes": 1,
    }
    strategy = FedProx(**kwargs, proximal_mu=cfg.proximal_mu) if cfg.strategy == "fedprox" else FedAvg(**kwargs)
    for server_round in range(1, cfg.rounds + 1):
        _enough(ledger, cfg, f"before round {server_round}")
        if cfg.secagg:
            from .secagg import secagg_round

            new, results = secagg_round(grid, context, ledger, cfg, arrays, common, server_round, max_rows)
            if new is None:
                raise FederationFailed(f"round {server_round}: secure aggregation halted (too few sites answered)")
        else:
            new, results = _plain_round(grid, ledger, cfg, strategy, arrays, common, server_round)
        arrays = new
        for node, metrics, _ in results:
            ledger.sites[node].rounds_joined += 1
            _spent(ledger, ledger.name(node), metrics)
        _history(ledger, server_round, [metrics for _, metrics, _ in results])
        log(INFO, "round %d/%d done: %d sites", server_round, cfg.rounds, len(results))
    return arrays


def _plain_round(
    grid: Grid,
    ledger: Ledger,
    cfg: RunConfig,
    strategy: FedAvg,
    arrays: ArrayRecord,
    common: dict[str, Any],
    server_round: int,
) -> tuple[ArrayRecord, list]:
    """One round of the Message API strategy: configure_train, send, wait round_timeout_s, aggregate_train."""
    messages = list(
        strategy.configure_train(server_round, arrays, ConfigRecord(common), NodeSubset(grid, ledger.usable()))
    )
    replies, silent = exchange(grid, ledger, messages, server_round, "train", cfg.round_timeout_s)
    for node in silent:
        ledger.set_status(
            node,
            DROPPED,
            f"no answer within round_timeout_s = {cfg.round_timeout_s:g} s in round "
            f"{server_round}; left out of the later rounds",
        )
    good = []
    for node, reply in replies.items():
        if reply.has_error():
            _failed(ledger, node, reply, f"in round {server_round}")
        else:
            good.append(reply)
    if not good:
        raise FederationFailed(f"round {server_round}: no site returned an update")
    aggregated, _ = strategy.aggregate_train(server_round, good)
    if aggregated is None:
        raise FederationFailed(f"round {server_round}: the updates could not be aggregated")
    results = []
    for reply in good:
        metrics = dict(reply.content.metric_records["metrics"].items())
        results.append((reply.metadata.src_node_id, metrics, int(metrics["num-examples"])))
    return aggregated, results


def _spent(ledger: Ledger, site: str, metrics: dict[str, Any]) -> None:
    if "epsilon" in metrics:
        ledger.dp[site] = {
            "epsilon": float(metrics["epsilon"]),
            "noise_multiplier": float(metrics["noise_multiplier"]),
            "rounds": int(metrics["dp_rounds"]),
        }


def _history(ledger: Ledger, server_round: int, metrics: list[dict[str, Any]]) -> None:
    train_loss = _weighted([(float(m["train_loss"]), float(m["rows"])) for m in metrics])
    # The sites measured the weights they received: the previous round's global model.
    if ledger.history:
        ledger.history[-1]["val_loss"] = _weighted([(float(m["val_loss"]), float(m["val_rows"])) for m in metrics])
    ledger.history.append({"round": server_round, "train_loss": train_loss, "val_loss": None, "sites": len(metrics)})


def evaluate(
    grid: Grid, ledger: Ledger, cfg: RunConfig, arrays: ArrayRecord, common: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The final weights at every site still taking part: {site: counts}; the last round's validation loss."""
    nodes = ledger.usable()
    content = RecordDict({"arrays": arrays, "config": ConfigRecord(common)})
    messages = [Message(content, dst_node_id=n, message_type=MessageType.EVALUATE) for n in nodes]
    replies, silent = exchange(grid, ledger, messages, cfg.rounds + 1, "evaluate", cfg.round_timeout_s)
    for node in silent:
        ledger.set_status(node, DROPPED, f"no answer to the evaluation within {cfg.round_timeout_s:g} s")
    counts, val = {}, []
    for node, reply in replies.items():
        if reply.has_error():
            _failed(ledger, node, reply, "at the evaluation")
            continue
        result = dict(reply.content.config_records["evaluation"].items())
        site = ledger.name(node)
        counts[site] = json.loads(str(result["counts"]))
        ledger.sites[node].rows["test"] = int(result["rows"])
        val.append((float(result["val_loss"]), float(result["val_rows"])))
    if not counts:
        raise FederationFailed("no site answered the evaluation")
    if ledger.history:
        ledger.history[-1]["val_loss"] = _weighted(val)
    return counts


def dp_record(ledger: Ledger, cfg: RunConfig) -> dict[str, Any] | None:
    """federation.json's "dp": the largest epsilon any site spent (the run's guarantee), and each site's."""
    if cfg.dp_epsilon <= 0:
        return None
    silent = sorted(r.site for r in ledger.sites.values() if r.rounds_joined and r.site not in ledger.dp)
    if not ledger.dp or silent:
        raise FederationFailed(
            f"DP was on but {', '.join(silent) or 'no site'} trained without reporting its epsilon: the run has no "
            "privacy guarantee to record"
        )
    spent = ledger.dp.values()
    return {
        "epsilon": max(d["epsilon"] for d in spent),
        "delta": cfg.dp_delta,
        "clip": cfg.dp_clip,
        "noise_multiplier": min(d["noise_multiplier"] for d in spent),
        "target_epsilon": cfg.dp_epsilon,
        "per_site": ledger.dp,
    }


def _write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def run(grid: Grid, cfg: RunConfig, context: Context) -> None:
    """The whole federated run; the contract's files are written only once everything succeeded."""
    import torch

    from humane.data.site_stats import group_mix, merge_summaries
    from humane.fairness.counts import merge_counts
    from humane.modeling.federated import build_network, load_weights, preprocessor_from_summary, weights
    from humane.modeling.model import model_state
    from humane.modeling.params import PreprocessParams, TrainParams

    from .site import preprocessor_bytes, to_json

    started = time.time()
    params = json.loads(cfg.params_json)
    preprocess = PreprocessParams.model_validate(params.get("preprocess") or {})
    train = TrainParams.model_validate(params["train"]) if "train" in params else TrainParams()
    ledger = Ledger(
        settings={
            "strategy": cfg.strategy,
            "proximal_mu": cfg.proximal_mu if cfg.strategy == "fedprox" else 0.0,
            "min_group_size": cfg.min_group_size,
            "noise": cfg.noise,
            "secagg": cfg.secagg,
        }
    )
    summaries = collect_stats(grid, ledger, cfg)
    for node, summary in summaries.items():
        ledger.sites[node].rows["train"] = int(summary["rows"])
        ledger.sites[node].group_mix = group_mix(summary)
    pre = preprocessor_from_summary(merge_summaries(list(summaries.values())), preprocess)
    blob = preprocessor_bytes(pre)
    # skops writes its schema uncompressed (about 190 KB on Adult); the sites get it zlib-compressed (about 8 KB).
    sent = zlib.compress(blob, 9)
    torch.manual_seed(cfg.seed)
    model = build_network(train, pre)
    common = {**cfg.to_sites(), "preprocessor": sent}
    max_rows = 2 * max(int(s["rows"]) for s in summaries.values()) + 100  # SecAgg+'s bound on a site's weight
    arrays = train_rounds(grid, ledger, cfg, ArrayRecord(weights(model)), common, context, max_rows)
    counts = evaluate(grid, ledger, cfg, arrays, common)
    load_weights(model, arrays.to_numpy_ndarrays())
    threshold = float((params.get("evaluate") or {}).get("threshold", 0.5))
    bins = len(next(iter(counts.values()))["scores"]["positive"])
    evaluation = {"threshold": threshold, "bins": bins, "global": merge_counts(list(counts.values())), "sites": counts}
    state = {
        **model_state(model),
        "config": train.model_dump(mode="json"),
        "feature_names": pre.feature_names,
        "best_epoch": len(ledger.history),
    }
    federation = ledger.to_dict(round(time.time() - started, 3), dp_record(ledger, cfg))
    federation["round_timeout_s"] = cfg.round_timeout_s
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "preprocessor.skops", lambda p: p.write_bytes(blob))
    _write(out / "model.pt", lambda p: torch.save(state, p))
    _write(out / "evaluation.json", lambda p: p.write_text(to_json(evaluation)))
    _write(out / "federation.json", lambda p: p.write_text(json.dumps(federation, indent=1)))
    trained = [r.site for r in ledger.sites.values() if r.status == "trained"]
    log(INFO, "federated run done: %d rounds, sites trained %s; files in %s", len(ledger.history), trained, out)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point: parse the run config, run, and on failure leave one line in out_dir/federation_error.txt."""
    cfg = RunConfig.parse(dict(context.run_config))
    error = cfg.out_dir / ERROR_FILE
    error.unlink(missing_ok=True)
    try:
        run(grid, cfg, context)
    except Exception as err:
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        error.write_text(f"{type(err).__name__}: {line}\n")
        raise
