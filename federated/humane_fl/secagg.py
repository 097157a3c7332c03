"""Secure aggregation (secagg = true): Flower's SecAgg+ for the training rounds.

Flower 1.42 ships SecAgg+ only as a workflow of its legacy API (`SecAggPlusWorkflow` over a `LegacyContext` with a
`flwr.server.strategy` Strategy and FitIns/FitRes messages), not for the Message API strategies. So with secagg the
rounds run that workflow with Flower's legacy FedAvg or FedProx (the same averaging), and the sites' ClientApp
wraps its training in `secaggplus_mod`: each site uploads its weighted weights masked (pairwise masks, secret-shared
seeds), and the coordinator only ever unmasks their sum. Each round is four message exchanges (setup, share keys,
masked vectors, unmask); every one is recorded like any other message. The sites' metrics (losses, epsilon) travel
in clear beside the masked weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.server import ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.strategy import FedProx as LegacyFedProx
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from .ledger import DROPPED, Ledger
from .records import keys, size
from .server_app import NodeSubset

# Parameters are clipped to this range before quantisation: above any weight of humane's networks.
CLIPPING_RANGE = 64.0


class RecordingGrid(NodeSubset):
    """The run's grid restricted to the usable nodes, recording every message of the SecAgg+ stages."""

    def __init__(self, grid: Grid, nodes: Iterable[int], ledger: Ledger, server_round: int) -> None:
        super().__init__(grid, nodes)
        self.ledger, self.server_round = ledger, server_round

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Send, wait at most `timeout` s, and record both directions (an error reply: Ledger.failed)."""
        messages = list(messages)
        for msg in messages:
            self.ledger.message(
                self.server_round, msg.metadata.dst_node_id, "train", "to_site", keys(msg.content), size(msg.content)
            )
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            content = RecordDict() if reply.has_error() else reply.content
            if reply.has_error():
                self.ledger.failed(
                    reply.metadata.src_node_id,
                    int(reply.error.code),
                    str(reply.error.reason or ""),
                    f"in round {self.server_round} (SecAgg+)",
                )
            self.ledger.message(
                self.server_round, reply.metadata.src_node_id, "train", "from_site", keys(content), size(content)
            )
        return replies


def _strategy(cfg: Any, common: dict[str, Any], nodes: int) -> Any:
    """Flower's legacy FedAvg / FedProx over the usable nodes, keeping each round's per-site results."""
    base = LegacyFedProx if cfg.strategy == "fedprox" else LegacyFedAvg

    class Keeping(base):  # type: ignore[misc, valid-type]
        results: ClassVar[list[Any]] = []

        def aggregate_fit(self, server_round: int, results: list, failures: list) -> Any:
            type(self).results = list(results)
            return super().aggregate_fit(server_round, results, failures)

    kwargs: dict[str, Any] = {
        "fraction_fit": cfg.fraction_train,
        "fraction_evaluate": 0.0,
        "min_fit_clients": 2,
        "min_evaluate_clients": 0,
        "min_available_clients": min(2, nodes),
        "on_fit_config_fn": lambda r: {**common, "server-round": r},
    }
    if cfg.strategy == "fedprox":
        kwargs["proximal_mu"] = cfg.proximal_mu
    return Keeping(**kwargs)


def secagg_round(
    grid: Grid,
    context: Context,
    ledger: Ledger,
    cfg: Any,
    arrays: ArrayRecord,
    common: dict[str, Any],
    server_round: int,
    max_rows: int,
) -> tuple[ArrayRecord | None, list]:
    """One SecAgg+ round over the usable nodes.

    Returns:
        The new global weights (None: the protocol halted) and each site's (node, metrics, rows), in clear.

    """
    nodes = ledger.usable()
    recording = RecordingGrid(grid, nodes, ledger, server_round)
    manager = SimpleClientManager()
    for node in nodes:
        manager.register(GridClientProxy(node_id=node, grid=recording, run_id=grid.run.run_id))
    strategy = _strategy(cfg, common, len(nodes))
    legacy = LegacyContext(
        context, config=ServerConfig(num_rounds=cfg.rounds), strategy=strategy, client_manager=manager
    )
    legacy.state.array_records[MAIN_PARAMS_RECORD] = arrays
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: server_round})
    # Every share is needed back unless a site drops out: 3 sites share with all, a threshold of 2.
    workflow = SecAggPlusWorkflow(
        num_shares=1.0,
        reconstruction_threshold=0.67,
        max_weight=float(max_rows),
        clipping_range=CLIPPING_RANGE,
        timeout=cfg.round_timeout_s,
    )
    workflow(recording, legacy)
    results = [(proxy.node_id, dict(fitres.metrics), fitres.num_examples) for proxy, fitres in strategy.results]
    for node in set(nodes) - {node for node, _, _ in results}:
        why = f"no masked update within round_timeout_s = {cfg.round_timeout_s:g} s in round {server_round} (SecAgg+)"
        ledger.set_status(node, DROPPED, f"{why}; left out of the later rounds")
    if not results:
        return None, []
    # The unmasked sum comes back as float64: the global weights keep the network's own dtypes.
    summed = legacy.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays()
    dtypes = [a.dtype for a in arrays.to_numpy_ndarrays()]
    return ArrayRecord([a.astype(d) for a, d in zip(summed, dtypes, strict=True)]), results
