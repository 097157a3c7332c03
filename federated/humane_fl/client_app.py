"""The ClientApp: what a site's SuperNode runs for each message (Flower 1.42 Message API).

The node is started with `--node-config "site='<name>' workspace='<abs path>'"`; every handler works on that
workspace (humane_fl.site) and replies only what the contract allows:

- "query.stats" -> {"stats": site, status "ok" | "excluded", reason, summary (JSON of site_summary)}
- "train"       -> {"arrays": new weights, "metrics": num-examples, train_loss, val_loss, val_rows, (DP) epsilon...}
- "evaluate"    -> {"evaluation": site, counts (JSON of site_counts), val_loss, val_rows, rows}

A site excluded at "stats" remembers it (context.state) and refuses later messages with the same reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from . import site as work
from .records import STATE, config_dict

app = ClientApp()


def _where(context: Context) -> tuple[str, Path]:
    config = context.node_config
    name, workspace = str(config.get("site", "")), Path(str(config.get("workspace", "")))
    if not name or not workspace.is_absolute():
        raise work.Excluded("the SuperNode's --node-config must name site='<name>' and workspace='<absolute path>'")
    return name, workspace


def _state(context: Context) -> ConfigRecord:
    if STATE not in context.state.config_records:
        context.state.config_records[STATE] = ConfigRecord({"rounds_joined": 0, "excluded": ""})
    return context.state.config_records[STATE]


def _excluded(msg: Message, site: str, reason: str) -> Message:
    record = ConfigRecord({"site": site, "status": "excluded", "reason": reason})
    return Message(RecordDict({"stats": record}), reply_to=msg)


@app.query("stats")
def stats(msg: Message, context: Context) -> Message:
    """Run the site's load/validate/data_audit and reply its summary, or its exclusion with the reason."""
    config = config_dict(msg.content.config_records["config"])
    site = str(context.node_config.get("site", "?"))
    try:
        site, workspace = _where(context)
        settings = work.RunSettings.parse(config)
        summary = work.stats(workspace, site, settings)
    except work.Excluded as err:
        _state(context)["excluded"] = err.reason
        return _excluded(msg, site, err.reason)
    record = ConfigRecord({"site": site, "status": "ok", "reason": "", "summary": work.to_json(summary)})
    return Message(RecordDict({"stats": record}), reply_to=msg)


def _refuse_if_excluded(context: Context) -> None:
    reason = str(_state(context)["excluded"])
    if reason:
        raise work.Excluded(reason)


def _dp(config: dict[str, Any]) -> Any:
    if float(config.get("dp_epsilon", 0.0)) <= 0:
        return None
    from humane.modeling.federated import SiteDP

    return SiteDP(
        epsilon=float(config["dp_epsilon"]),
        delta=float(config["dp_delta"]),
        clip=float(config["dp_clip"]),
        rounds=int(config["rounds"]),
    )


def _local_round(config: dict[str, Any], arrays: list, context: Context) -> tuple[list, int, dict[str, float]]:
    site, workspace = _where(context)
    _refuse_if_excluded(context)
    state = _state(context)
    new, rows, metrics = work.train(
        workspace,
        site,
        work.RunSettings.parse(config),
        bytes(config["preprocessor"]),
        arrays,
        server_round=int(config["server-round"]),
        epochs=int(config["local_epochs"]),
        proximal_mu=float(config.get("proximal-mu", config.get("proximal_mu", 0.0))),
        dp=_dp(config),
        rounds_joined=int(state["rounds_joined"]),
    )
    state["rounds_joined"] = int(state["rounds_joined"]) + 1
    return new, rows, {k: float(v) for k, v in metrics.items()}


def _secagg_train(msg: Message, context: Context) -> Message:
    """The training step inside SecAgg+ (Flower's legacy FitIns/FitRes format; secaggplus_mod masks the reply)."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    new, rows, metrics = _local_round(dict(fitins.config), parameters_to_ndarrays(fitins.parameters), context)
    res = FitRes(Status(Code.OK, "ok"), ndarrays_to_parameters(new), rows, metrics)
    return Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One local round (FedAvg/FedProx; Opacus DP when dp_epsilon > 0) from the global weights.

    Under secagg, the round's SecAgg+ stages: Flower's secaggplus_mod around the same training.
    """
    from flwr.client.mod import secaggplus_mod
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, _secagg_train)
    config = config_dict(msg.content.config_records["config"])
    arrays = msg.content.array_records["arrays"].to_numpy_ndarrays()
    new, rows, metrics = _local_round(config, arrays, context)
    record = MetricRecord({"num-examples": rows, **metrics})
    return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": record}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The global model on the site's test rows, as counts (and its validation loss)."""
    config = config_dict(msg.content.config_records["config"])
    site, workspace = _where(context)
    _refuse_if_excluded(context)
    arrays = msg.content.array_records["arrays"].to_numpy_ndarrays()
    result = work.evaluate(workspace, site, work.RunSettings.parse(config), bytes(config["preprocessor"]), arrays)
    record = ConfigRecord(
        {
            "site": site,
            "counts": work.to_json(result["counts"]),
            "rows": result["counts"]["rows"],
            "val_loss": float(result["val_loss"]),
            "val_rows": int(result["val_rows"]),
        }
    )
    return Message(RecordDict({"evaluation": record}), reply_to=msg)
