"""Sign off a candidate awaiting approval, or export a version's audit record.

    python -m tasks.approve MODEL VERSION --approve --comment TEXT [--by DISPLAY NAME]
    python -m tasks.approve MODEL VERSION --reject --comment TEXT [--by DISPLAY NAME]
    python -m tasks.approve MODEL VERSION --export [PATH]   (Markdown and HTML; default reports/signoff/)

Run it in the project folder: it uses the same MLflow store as the pipeline (MLFLOW_TRACKING_URI, else the
project's mlflow.db). Who decides is an authenticated account, never a typed name: in team mode the MLflow user
whose credentials (MLFLOW_TRACKING_USERNAME/PASSWORD) the server accepted, and the server records the decision in
its trail; locally the operating-system account running this command, recorded in audit/signoff.jsonl. `--by`
is only the name shown beside the account. Exit 0 when done, 2 when refused (the reason printed), e.g. a
candidate that failed the automated checks, a second decision, or, under four eyes, an account that registered
the run approving it; 10 when a server does not answer, 11 when it refuses the credentials, 12 when the trail or
a recorded hash does not verify (docs/reference/exit-codes.md). Nothing moves unless it exits 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from humane.core import io
from humane.core.context import RunContext
from humane.core.errors import cli
from humane.governance import approvals
from humane.governance.store import server_calls


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m tasks.approve", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="registered model name, e.g. humane-adult")
    p.add_argument("version", help="registry version number")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--approve", action="store_true", help="approve: champion moves to this version")
    what.add_argument("--reject", action="store_true", help="reject: champion stays where it is")
    what.add_argument(
        "--export", nargs="?", const="", metavar="PATH", help="write the version's audit record (PATH.md and PATH.html)"
    )
    p.add_argument("--by", help="the name shown beside your account (default: $HUMANE_USER, else the account)")
    p.add_argument("--comment", default="", help="why (required for a decision)")
    return p


def main(argv: list[str] | None = None) -> None:
    """Parse, then decide or export."""
    args = parser().parse_args(argv)
    project = Path.cwd()
    uri = RunContext(project).tracking_uri
    with server_calls(uri):  # bounded retries (HUMANE_SERVER_RETRY_S), one clear line
        if args.export is not None:
            document = approvals.audit_document(uri, project, args.model, args.version)
            stem = Path(args.export) if args.export else Path("reports/signoff") / f"{args.model}-v{args.version}"
            io.write_text(stem.with_suffix(".md"), document.to_markdown())
            io.write_text(stem.with_suffix(".html"), document.to_html(f"Audit record: {args.model} v{args.version}"))
            print(f"wrote {stem.with_suffix('.md')} and {stem.with_suffix('.html')}")
            return
        entry = approvals.submit_decision(
            uri, project, args.model, args.version, args.approve, args.by, args.comment, approvals.channel()
        )
        moved = f"champion is now v{args.version}" if args.approve else "champion unchanged"
        trail = approvals.trail_for(uri, project)
        print(
            f"{args.model} v{args.version} {entry['event']} by account {entry['by']} ({entry.get('authority')}): "
            f"{moved}; audit trail entry {entry['hash'][:12]} in {trail.where}"
        )
        approvals.wake_paused_run(uri, entry)


if __name__ == "__main__":
    cli(main)
