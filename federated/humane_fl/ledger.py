"""The coordinator's record of a federated run: each site's fate, every message, bytes per round, the history.

Written as out_dir/federation.json (the contract C's stage reads). Plain Python: no Flower, no humane.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TRAINED, EXCLUDED, DROPPED = "trained", "excluded", "dropped"
# Flower's error codes for a node or message that is gone (the node stopped, crashed or lost its connection):
# the site is dropped, not excluded (it did not refuse anything).
GONE = {3: "message unavailable", 4: "reply unavailable", 5: "node unavailable", 8: "ClientApp crashed"}


@dataclass
class SiteRecord:
    """One site's part in the run."""

    site: str
    status: str = TRAINED
    reason: str | None = None
    rows: dict[str, int] = field(default_factory=lambda: {"train": 0, "test": 0})
    group_mix: dict[str, dict[str, float]] = field(default_factory=dict)
    rounds_joined: int = 0

    def to_dict(self) -> dict[str, Any]:
        """federation.json's entry."""
        return {
            "site": self.site,
            "status": self.status,
            "reason": self.reason,
            "rows": dict(self.rows),
            "group_mix": self.group_mix,
            "rounds_joined": self.rounds_joined,
        }


@dataclass
class Ledger:
    """Sites by node, messages, per-round bytes, history and DP spending, as the run goes."""

    settings: dict[str, Any]
    sites: dict[int, SiteRecord] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    bytes: dict[int, dict[str, int]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    dp: dict[str, dict[str, float]] = field(default_factory=dict)

    def name(self, node: int) -> str:
        """The site a node serves (named by its stats reply), or `node-<id>` before it answered."""
        record = self.sites.get(node)
        return record.site if record else f"node-{node}"

    def message(self, server_round: int, node: int, kind: str, direction: str, keys: list[str], size: int) -> None:
        """Record one message (to or from a node) and add its size to the round's bytes.

        Kept by node and named by site at the end: a node's site is known once it answered "stats".
        """
        self.messages.append(
            {"round": server_round, "node": node, "kind": kind, "direction": direction, "keys": keys, "bytes": size}
        )
        totals = self.bytes.setdefault(server_round, {"phase": kind, "to_sites": 0, "from_sites": 0})
        totals["to_sites" if direction == "to_site" else "from_sites"] += size

    def set_status(self, node: int, status: str, reason: str) -> None:
        """Mark a site excluded or dropped (the first reason stays)."""
        record = self.sites.setdefault(node, SiteRecord(self.name(node)))
        if record.status == TRAINED:
            record.status, record.reason = status, reason

    def failed(self, node: int, code: int, reason: str, when: str) -> None:
        """A site's error reply: dropped when its node is gone, excluded when the site raised (with its reason)."""
        if code in GONE:
            self.set_status(node, DROPPED, f"{GONE[code]} {when}; left out of the later rounds")
        else:
            lines = reason.strip().splitlines()
            self.set_status(node, EXCLUDED, f"{when}: {(lines[-1] if lines else 'an error without a reason')[:2000]}")

    def usable(self) -> list[int]:
        """Nodes still taking part (neither excluded nor dropped)."""
        return [node for node, record in self.sites.items() if record.status == TRAINED]

    def to_dict(self, wall_s: float, dp: dict[str, Any] | None) -> dict[str, Any]:
        """federation.json."""
        s = self.settings
        return {
            "sites": [r.to_dict() for r in sorted(self.sites.values(), key=lambda r: r.site)],
            "rounds": len(self.history),
            "strategy": s["strategy"],
            "proximal_mu": s["proximal_mu"],
            "min_group_size": s["min_group_size"],
            "noise": s["noise"],
            "dp": dp,
            "secagg": s["secagg"],
            "bytes": [{"round": r, **b} for r, b in sorted(self.bytes.items())],
            "wall_s": wall_s,
            "messages": [
                {**{k: v for k, v in m.items() if k != "node"}, "site": self.name(m["node"])} for m in self.messages
            ],
            "history": self.history,
        }
