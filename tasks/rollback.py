"""Roll `champion` back: to an earlier approved version, or off every version; a recorded event.

    python -m tasks.rollback MODEL --to VERSION --comment TEXT   (champion back on an approved version)
    python -m tasks.rollback MODEL --none --comment TEXT         (no champion until the next approval)

The target must still hold a verified approval on the decision it records, and under four eyes an account
that registered it cannot put it back. In team mode only a reviewer (MANAGE on the model) may roll back, and
the server records who. Exit 0 when done, 2 when refused; 10, 11 or 12 when a server does not answer, refuses
the credentials, or the trail does not verify (docs/reference/exit-codes.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from humane.core.context import RunContext
from humane.core.errors import cli
from humane.governance import approvals
from humane.governance.store import server_calls


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m tasks.rollback", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="registered model name, e.g. humane-adult")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", metavar="VERSION", help="the approved version that becomes champion again")
    where.add_argument("--none", action="store_true", help="leave the model without a champion")
    p.add_argument("--comment", required=True, help="why (the auditor reads it)")
    p.add_argument("--by", help="the name shown beside your account")
    return p


def main(argv: list[str] | None = None) -> None:
    """Parse, then roll back."""
    args = parser().parse_args(argv)
    project = Path.cwd()
    uri = RunContext(project).tracking_uri
    with server_calls(uri):  # bounded retries (HUMANE_SERVER_RETRY_S), one clear line
        entry = approvals.submit_rollback(uri, project, args.model, args.to, args.comment, args.by)
        after = f"v{entry['champion_after']}" if entry.get("champion_after") else "no version"
        print(
            f"{args.model}: champion rolled back from v{entry.get('champion_before')} to {after} by account "
            f"{entry['by']}; audit trail entry {entry['hash'][:12]}"
        )


if __name__ == "__main__":
    cli(main)
