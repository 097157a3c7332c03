"""What a site does for each message, on its own workspace: plain humane calls, no Flower (the ClientApp wraps them).

- `stats`: the site's own load -> validate -> data_audit stages (tasks.*.run on its workspace: identifier check,
  privacy policy, Great Expectations, data audit; the files stay at the site), then only the aggregates of its
  training rows (humane.data.site_stats.site_summary).
- `train`: one local round from the global weights (humane.modeling.federated.local_round: FedProx, Opacus DP).
- `evaluate`: the global model on the site's test rows as counts only (humane.fairness.counts.site_counts).

A site's failure that humane names (HumaneError: file, column, rule; values withheld) becomes `Excluded` with that
line; any other error is excluded too, with only its type (its text could quote a value).
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from humane.core.errors import HumaneError
from humane.core.paths import Paths
from humane.modeling.params import PreprocessParams, TrainParams
from humane.pipeline.params import load_params

T = TypeVar("T")
# The column privacy rules every site must apply as the coordinator states them (federation/params.yaml `privacy`).
POLICY_RULES = ("drop", "pseudonymize", "bins", "top_code", "group_rare", "keep", "strict_bins")
# A reason longer than this is cut (a validation report can list many checks; the site's log has all of it).
MAX_REASON = 2000


class Excluded(Exception):
    """The site takes no further part: `reason` is what the coordinator records (no data values in it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def guarded(what: str, work: Callable[[], T]) -> T:
    """Run a site step; a HumaneError becomes Excluded with its message, anything else with its type only."""
    try:
        return work()
    except HumaneError as err:
        reason = str(err).strip() or type(err).__name__
        raise Excluded(reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "...") from None
    except Exception as err:
        traceback.print_exc(file=sys.stderr)
        raise Excluded(f"{what}: unexpected {type(err).__name__} at the site (its log has the details)") from None


@dataclass(frozen=True)
class RunSettings:
    """The coordinator's settings a site needs (from the run config and its params_json)."""

    preprocess: PreprocessParams
    train: TrainParams
    threshold: float
    bins: int
    min_group_size: int
    noise: float
    seed: int
    # The coordinator's privacy policy (federation/params.yaml `privacy`, as sent in params_json); None: not sent.
    privacy: dict[str, Any] | None = None

    @classmethod
    def parse(cls, config: dict[str, Any]) -> RunSettings:
        """From a message's config: `params_json` ({"preprocess", "train", "evaluate"}) and the run's scalars."""
        params = json.loads(str(config["params_json"]))
        evaluate = params.get("evaluate") or {}
        return cls(
            preprocess=PreprocessParams.model_validate(params.get("preprocess") or {}),
            train=TrainParams.model_validate(params["train"]) if "train" in params else TrainParams(),
            threshold=float(evaluate.get("threshold", 0.5)),
            bins=int(evaluate.get("bins", 100)),
            min_group_size=int(config["min_group_size"]),
            noise=float(config["noise"]),
            seed=int(config["seed"]),
            privacy=params.get("privacy"),
        )


def site_seed(seed: int, site: str, step: int) -> int:
    """A seed of its own for each site and step (round), stable across runs."""
    return (seed * 1_000_003 + step * 7919 + zlib.crc32(site.encode())) % 2**31


def stats(workspace: Path, site: str, settings: RunSettings) -> dict[str, Any]:
    """The site's own load, validate and data-audit stages, then its summary (aggregates only).

    Raises:
        Excluded: a stage or the summary failed (the reason names file, column or rule; no value).

    """
    import tasks.data_audit
    import tasks.load
    from humane.core.context import RunContext
    from humane.data.site_stats import site_summary
    from humane.modeling.federated import site_frames

    paths = Paths(workspace)
    params = guarded("params", lambda: load_params(paths.params))
    same_policy(params.privacy.model_dump(mode="json"), settings.privacy)
    ctx = RunContext(project=workspace)
    for name, step in (("load", tasks.load.run), ("validate", validated), ("data_audit", tasks.data_audit.run)):
        print(guarded(name, lambda s=step: s(params, paths, ctx)), file=sys.stderr)
    frames = guarded("split", lambda: site_frames(paths, params.data, settings.preprocess))
    return guarded(
        "summary",
        lambda: site_summary(
            frames.train,
            frames.schema,
            min_group_size=settings.min_group_size,
            noise=settings.noise,
            seed=site_seed(settings.seed, site, 0),
        ),
    )


def same_policy(own: dict[str, Any], coordinator: dict[str, Any] | None) -> None:
    """Refuse to take part unless this site applies the coordinator's privacy rules (the card states those).

    Raises:
        Excluded: The coordinator sent no policy, or this site's params.yaml `privacy` differs in a rule (named).

    """
    if coordinator is None:
        raise Excluded("privacy: the coordinator sent no privacy policy, so this site cannot show that it applies it")
    differ = [rule for rule in POLICY_RULES if own.get(rule) != coordinator.get(rule)]
    if differ:
        raise Excluded(
            f"privacy: this site's params.yaml privacy differs from the coordinator's in {', '.join(differ)}; the "
            f"model card states the coordinator's policy as applied at every site, so each site must apply it"
        )


def validated(params: Any, paths: Paths, ctx: Any) -> str:
    """The site's validate stage; a failure is sent as the failed checks' file, column, rule and counts only.

    The stage's own message quotes a few offending values of an unprotected column (and observed values): that is
    fine in the site's own log and report, but none of it may leave the site in the exclusion reason.

    Raises:
        ValidationFailed: A check failed; the message holds no value from the site's rows.

    """
    import tasks.validate
    from humane.core import io
    from humane.core.errors import ValidationFailed
    from humane.data.validation import DataCheck

    try:
        return tasks.validate.run(params, paths, ctx)
    except ValidationFailed:
        checks = [DataCheck(**check) for check in io.read_json(paths.validation_report)["checks"]]
        failed = [c for c in checks if not c.passed and c.severity == "error"]
        lines = [replace(c, observed=None, examples=None, note=None).summary() for c in failed]
        raise ValidationFailed(
            f"data validation failed ({len(failed)} of {len(checks)} checks): {'; '.join(lines)} (offending values "
            f"stay at the site: its reports/validation.json)"
        ) from None


def preprocessor(blob: bytes) -> Any:
    """The global preprocessor the coordinator sent (zlib-compressed skops; only trusted types are constructed)."""
    from humane.modeling.features import load_preprocessor

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "preprocessor.skops"
        path.write_bytes(zlib.decompress(blob))
        return load_preprocessor(path)


def preprocessor_bytes(pre: Any) -> bytes:
    """The preprocessor as the bytes sent to the sites (humane.modeling.features.save_preprocessor's file)."""
    from humane.modeling.features import save_preprocessor

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "preprocessor.skops"
        save_preprocessor(pre, path)
        return path.read_bytes()


def _frames(workspace: Path, settings: RunSettings) -> Any:
    from humane.modeling.federated import site_frames

    paths = Paths(workspace)
    return site_frames(paths, load_params(paths.params).data, settings.preprocess)


def _val_loss(model: Any, pre: Any, frame: Any) -> tuple[float, int]:
    """Mean log loss of the model on the site's validation rows, and their number."""
    from humane.fairness.counts import site_counts
    from humane.modeling.federated import site_data, site_eval

    data = site_data(pre, frame)
    if not len(data.y):
        return 0.0, 0
    counts = site_counts(data.y.numpy(), site_eval(model, data.x), 0.5, {}, 1)
    return counts["loss_sum"] / counts["rows"], counts["rows"]


def train(
    workspace: Path,
    site: str,
    settings: RunSettings,
    blob: bytes,
    arrays: list[np.ndarray],
    *,
    server_round: int,
    epochs: int,
    proximal_mu: float,
    dp: Any,
    rounds_joined: int,
) -> tuple[list[np.ndarray], int, dict[str, float]]:
    """One local round from the global weights; also the global model's loss on the site's validation rows.

    Returns:
        The new weights, the training rows (FedAvg's weight) and metrics (local_round's, plus val_loss and
        val_rows of the weights received, before local training).

    """
    from humane.modeling.federated import build_network, load_weights, local_round, site_data

    def work() -> tuple[list[np.ndarray], int, dict[str, float]]:
        pre = preprocessor(blob)
        frames = _frames(workspace, settings)
        model = build_network(settings.train, pre)
        load_weights(model, arrays)
        val_loss, val_rows = _val_loss(model, pre, frames.val)
        data = site_data(pre, frames.train)
        t = settings.train
        new, rows, metrics = local_round(
            model,
            data.x,
            data.y,
            global_arrays=arrays,
            epochs=epochs,
            batch_size=t.batch_size,
            lr=t.lr,
            weight_decay=t.weight_decay,
            proximal_mu=proximal_mu,
            dp=dp,
            rounds_joined=rounds_joined,
            seed=site_seed(settings.seed, site, server_round),
        )
        return new, rows, {**metrics, "val_loss": val_loss, "val_rows": val_rows}

    return guarded("train", work)


def evaluate(
    workspace: Path, site: str, settings: RunSettings, blob: bytes, arrays: list[np.ndarray]
) -> dict[str, Any]:
    """The global model on the site's test rows as counts (C's site_counts), blurred when noise > 0.

    Also the validation loss of the same weights ("val_loss", "val_rows"), for the last round's history.
    """
    from humane.core.protected import sensitive_group_labels
    from humane.fairness.counts import add_noise, site_counts
    from humane.modeling.federated import build_network, load_weights, site_data, site_eval

    def work() -> dict[str, Any]:
        pre = preprocessor(blob)
        frames = _frames(workspace, settings)
        model = build_network(settings.train, pre)
        load_weights(model, arrays)
        data = site_data(pre, frames.test)
        groups = sensitive_group_labels(data.sensitive, list(pre.sensitive))
        counts = site_counts(
            data.y.numpy(), site_eval(model, data.x), settings.threshold, groups, settings.min_group_size, settings.bins
        )
        if settings.noise > 0:
            rng = np.random.default_rng(site_seed(settings.seed, site, 10_000))
            counts = add_noise(counts, settings.noise, rng)
        val_loss, val_rows = _val_loss(model, pre, frames.val)
        return {"counts": counts, "val_loss": val_loss, "val_rows": val_rows}

    return guarded("evaluate", work)


def to_json(payload: Any) -> str:
    """Compact JSON of an aggregate payload (what goes into a message)."""
    buffer = io.StringIO()
    json.dump(payload, buffer, separators=(",", ":"), sort_keys=True)
    return buffer.getvalue()
