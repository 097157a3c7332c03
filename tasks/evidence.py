"""Export a registered version's evidence, mapped to the EU AI Act's Annex IV and the NIST AI RMF, for an auditor.

    python -m tasks.evidence MODEL VERSION [--out DIR]   (DIR/evidence.json and DIR/evidence.md;
                                                          default reports/evidence/MODEL-vVERSION/)

Run it in the project folder: it reads the same MLflow store as the pipeline (MLFLOW_TRACKING_URI, else the
project's mlflow.db) and the sign-off trail in force (the team server's, else audit/signoff.jsonl). Each Annex IV
item and NIST AI RMF subcategory is covered, partly covered or not covered, by the run artifacts, tags, registry
fields and trail entries named (humane.governance.evidence). Exit 0 when written; 2 for an unknown model or
version; 10 when the server does not answer; 11 when it refuses the credentials; 12 when the trail does not verify.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from humane.core import io
from humane.core.context import RunContext
from humane.core.errors import cli
from humane.governance import approvals, evidence
from humane.governance.store import client, server_calls

JSON_NAME, MARKDOWN_NAME = "evidence.json", "evidence.md"


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m tasks.evidence", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="registered model name, e.g. humane-adult")
    p.add_argument("version", help="registry version number")
    p.add_argument("--out", type=Path, help="folder for evidence.json and evidence.md")
    return p


def export(uri: str, project: Path, name: str, version: str) -> dict[str, object]:
    """The version's evidence, judged item by item (humane.governance.evidence.resolve)."""
    record = evidence.read_record(client(uri), approvals.trail_for(uri, project), name, version)
    return evidence.resolve(record)


def main(argv: list[str] | None = None) -> None:
    """Parse, read the version's record, write both files (each atomically; both rendered before either)."""
    args = parser().parse_args(argv)
    project = Path.cwd()
    uri = RunContext(project).tracking_uri
    with server_calls(uri):  # bounded retries (HUMANE_SERVER_RETRY_S), one clear line
        result = export(uri, project, args.model, args.version)
    out = args.out or Path("reports/evidence") / f"{args.model}-v{args.version}"
    text = json.dumps(result, indent=2, sort_keys=True) + "\n"
    markdown = evidence.to_card(result).to_markdown()
    io.write_text(out / JSON_NAME, text)
    io.write_text(out / MARKDOWN_NAME, markdown)
    counts = "; ".join(f"{f}: " + ", ".join(f"{n} {s}" for s, n in c.items()) for f, c in result["summary"].items())
    print(f"wrote {out / JSON_NAME} and {out / MARKDOWN_NAME} ({counts})")


if __name__ == "__main__":
    cli(lambda: main())
