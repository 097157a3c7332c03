"""Sign off a candidate awaiting approval, or export a version's audit record.

    python -m tasks.approve MODEL VERSION --approve --by NAME --comment TEXT
    python -m tasks.approve MODEL VERSION --reject --by NAME --comment TEXT
    python -m tasks.approve MODEL VERSION --export [PATH]   (Markdown and HTML; default reports/signoff/)

Run it in the project folder: it uses the same MLflow store as the pipeline (MLFLOW_TRACKING_URI, else the
project's mlflow.db) and the project's audit trail (audit/signoff.jsonl). It works the same for a version that
`dvc repro` registered and for one a Prefect run left pending. Exit 0 when done, 2 when refused (the reason
printed), e.g. a candidate that failed the automated checks, a second decision, or, under gate.four_eyes, the
person who triggered the run approving it.
"""

from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path

from humane.core import io
from humane.core.context import RunContext
from humane.core.errors import cli
from humane.core.paths import Paths
from humane.governance.signoff import audit_document, sign_off, user_name


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m tasks.approve", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="registered model name, e.g. humane-adult")
    p.add_argument("version", help="registry version number")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--approve", action="store_true", help="approve: champion moves to this version")
    what.add_argument("--reject", action="store_true", help="reject: champion stays where it is")
    what.add_argument("--export", nargs="?", const="", metavar="PATH",
                      help="write the version's audit record (PATH.md and PATH.html)")  # fmt: skip
    p.add_argument("--by", help="who decides (default: $HUMANE_USER, else the login name)")
    p.add_argument("--comment", default="", help="why (required for a decision)")
    return p


def main(argv: list[str] | None = None) -> None:
    """Parse, then decide or export."""
    args = parser().parse_args(argv)
    project = Path.cwd()
    uri = RunContext(project).tracking_uri
    trail = Paths(project).audit_trail
    if args.export is not None:
        document = audit_document(uri, trail, args.model, args.version)
        stem = Path(args.export) if args.export else Path("reports/signoff") / f"{args.model}-v{args.version}"
        title = f"Audit record: {args.model} v{args.version}"
        io.write_text(stem.with_suffix(".md"), document.to_markdown())
        io.write_text(stem.with_suffix(".html"), document.to_html(title))
        print(f"wrote {stem.with_suffix('.md')} and {stem.with_suffix('.html')}")
        return
    entry = sign_off(uri, trail, args.model, args.version, args.approve, user_name(args.by), args.comment,
                     channel=f"cli ({getpass.getuser()}@{os.uname().nodename})")  # fmt: skip
    moved = f"champion is now v{args.version}" if args.approve else "champion unchanged"
    print(f"{args.model} v{args.version} {entry['event']} by {entry['by']}: {moved}; audit trail entry "
          f"{entry['hash'][:12]} in {trail} (commit it)")  # fmt: skip


if __name__ == "__main__":
    cli(main)
