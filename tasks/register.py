"""Register stage: a registry version per tracked run, the final decision, the model card, the aliases."""

from __future__ import annotations

from humane.core.context import RunContext, stage_main
from humane.core.params import Params
from humane.core.paths import Paths
from humane.governance.promotion import register
from humane.governance.store import server_calls


def run(params: Params, paths: Paths, ctx: RunContext) -> str:
    """Register the candidate and move the aliases its decision allows."""
    with server_calls(ctx.tracking_uri):  # bounded retries (HUMANE_SERVER_RETRY_S), then one clear line
        result = register(params, paths, ctx)
    if result["pending"]:
        return (f"register: {result['model_name']} v{result['version']} (challenger) passed the automated checks and "
                f"awaits sign-off: python -m tasks.approve {result['model_name']} {result['version']} --approve "
                "(or --reject) --by NAME --comment TEXT")  # fmt: skip
    verdict = "promoted to champion" if result["promoted"] else "not promoted: " + "; ".join(result["reasons"])
    return f"register: {result['model_name']} v{result['version']} (challenger), {verdict}"


if __name__ == "__main__":
    stage_main(run)
