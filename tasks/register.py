"""Register stage: a registry version per tracked run, the final decision, the model card, the aliases."""

from __future__ import annotations

from humane.core.context import RunContext
from humane.core.paths import Paths
from humane.governance.promotion import register
from humane.governance.store import server_calls
from humane.pipeline.entry import stage_main
from humane.pipeline.params import Params


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Register the candidate and move the aliases its decision allows."""
    with server_calls(ctx.tracking_uri):  # bounded retries (HUMANE_SERVER_RETRY_S), then one clear line
        result = register(params, paths, ctx)
    name = f"{result['model_name']} v{result['version']} (challenger)"
    if result["pending"]:
        return (
            f"register: {name} passed the automated checks and awaits sign-off: python -m tasks.approve "
            f"{result['model_name']} {result['version']} --approve (or --reject) --comment TEXT"
        )
    return f"register: {name}, {verdict(result)}"


def verdict(result: dict) -> str:
    """What became of a candidate that does not wait for a sign-off, never claiming more than the registry says."""
    if result["promoted"]:
        return "promoted to champion"
    if result.get("passed_checks"):  # passed, then decided at sign-off or moved off since
        return f"passed the automated checks, not champion (sign-off: {result.get('approval') or 'none'})"
    return "not promoted: " + "; ".join(result["reasons"])


if __name__ == "__main__":
    stage_main(run)
