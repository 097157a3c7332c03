"""Read, verify and export the sign-off audit trail (the team server's, or the project's file).

    python -m tasks.trail verify            (the hash chain, and the registry against it)
    python -m tasks.trail export [PATH]     (the verified trail as JSON Lines; default reports/signoff/trail.jsonl)

Exit 0 when the chain verifies and the registry agrees with it; 12 (IntegrityFailed) when the registry disagrees,
each disagreement printed; otherwise the error's own code (docs/reference/exit-codes.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from humane.core import io
from humane.core.context import RunContext
from humane.core.errors import IntegrityFailed, cli
from humane.governance import approvals
from humane.governance.store import server_calls


class TrailMismatch(IntegrityFailed):
    """The registry disagrees with the trail."""


def main(argv: list[str] | None = None) -> None:
    """Parse, verify, then export."""
    p = argparse.ArgumentParser(prog="python -m tasks.trail", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["verify", "export"])
    p.add_argument("path", nargs="?", default="reports/signoff/trail.jsonl")
    args = p.parse_args(argv)
    project = Path.cwd()
    uri = RunContext(project).tracking_uri
    with server_calls(uri):  # bounded retries (HUMANE_SERVER_RETRY_S), one clear line
        trail = approvals.trail_for(uri, project)
        entries = trail.read()  # verifies the chain
        problems = approvals.registry_problems(uri, trail)
        if problems:
            raise TrailMismatch(f"{trail.where}: the registry disagrees with the trail:\n  " + "\n  ".join(problems))
        print(f"{trail.where}: hash chain verified ({len(entries)} entries); the registry agrees with it")
        if args.action == "export":
            text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
            io.write_text(Path(args.path), text)
            print(f"wrote {args.path}")


if __name__ == "__main__":
    cli(lambda: main())
