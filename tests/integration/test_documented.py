"""Real: bash, make, dvc and the stages as README and docs write them, a Prefect server, MLflow SQLite; shared run.

Documented means tested: every shell command of the README and the docs pages is run, by this file or a named test.

The pages are README.md, docs/index.md and docs/{tutorial,how-to,explanation}/*.md (the reference pages are generated).
A documented command is a line of a ```bash / ```sh / ```shell / ```console block (comments dropped, backslash
continuations and multi-line quotes joined, whitespace collapsed; a console block's `$ ` lines only), or a command
shown in backticks on a line of its own (the DP-SGD example). YAML and other blocks are not commands.

The tutorial pages and the README are run as written: `test_tutorial_page_runs_as_written` runs every shell block of
one page, in order, in one bash script, in a copy of the session's pipeline run on the sample data. A block that
cannot run there names the test that runs it, with an HTML comment right before it:
`<!-- run-by: tests/...::test_name -->` (e.g. on the team stack, another account or dataset: each command is then
registered to that test). Team mode's page is run as written by tests/team/test_team_signoff.py.

REGISTRY maps every other documented command to the tests that run it and the command's distinctive part (tokens
found in the command and in each test's source, or in the source of a helper function of the test's module that the
test calls). A `make` command whose tests run the target's recipe rather than `make` itself says so (`recipe=True`:
the tokens are then looked for in that recipe in the Makefile). A command that no test can run says why (`Exempt`),
never silently. A new documented command fails `test_every_documented_command_is_run_or_registered` with its text.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run, tracked_runs

SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
DISPLAYED = re.compile(r"^\s*`([^`]+)`\s*$", re.M)  # a command in backticks on a line of its own
MAKE = ["make", "-o", ".venv/.installed"]  # the venv is the suite's own (linked in): `setup` is not remade
# A fenced block and the marker comment right before it, if any: <!-- run-by: NODE -->.
BLOCK = re.compile(r"(?:^<!--\s*(run-by):\s*(.+?)\s*-->\n)?^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Covered:
    """The tests that run a documented command; `part`: its distinctive tokens, in the command and each test."""

    part: tuple[str, ...]
    nodes: tuple[str, ...]
    recipe: bool = False  # a `make` command: the tests run its recipe, which holds the tokens


@dataclass(frozen=True)
class Exempt:
    """A documented command that no test runs, and why."""

    reason: str


DOC = "tests/integration/test_documented.py::"
PIPE = "tests/integration/test_dvc_pipeline.py::"
FLOW = "tests/integration/test_prefect_flow.py::"
SIGN = "tests/integration/test_signoff.py::"
TEAM = "tests/team/test_team_signoff.py::"
STACK = "tests/team/conftest.py::"
TEAM_PAGE = TEAM + "test_the_team_mode_page_runs_as_written"
MON = "tests/integration/test_monitoring.py::"
ENC = (
    "tests/integration/test_encrypted_run.py::"
    "test_an_encrypted_run_leaves_no_plaintext_and_rotation_locks_the_old_identity_out"
)

OWN = "tests/integration/test_own_data.py::test_a_new_dataset_runs_with_only_its_profile"
FED = "tests/federated/conftest.py::"
FL_TLS = Exempt(
    "a SuperLink and SuperNodes with TLS certificates on separate machines; tests/federated start the same Flower "
    "executables (flower-superlink, flower-supernode --node-config) with --insecure on 127.0.0.1 through "
    "federated/humane_fl/nodes.py (tests/federated/conftest.py::start)"
)

REGISTRY: dict[str, Covered | Exempt] = {
    "dvc repro": Covered(
        ("dvc", "repro"),
        (
            PIPE + "test_second_repro_does_nothing",
            SIGN + "test_dvc_repro_leaves_a_pending_challenger_and_another_account_signs_it_off",
            OWN,
            TEAM_PAGE,
        ),
    ),
    "make profile PROFILE=profiles/loans.yaml": Covered(("profile", "profiles/loans.yaml"), (OWN,)),
    "cd federation && dvc repro": Covered(
        ("cd federation", "dvc repro"),
        ("tests/federated/test_pipeline.py::test_dvc_repro_of_the_federation_workspace_registers_a_judged_version",),
    ),
    "cd federation && python -m flows.training": Covered(
        ("cd federation", "flows.training"),
        ("tests/federated/test_pipeline.py::test_the_prefect_flow_runs_the_federation_workspace",),
    ),
    "python -m humane.privacy.encryption keygen --identity ~/.config/humane/age-identity.txt >> "
    "data/raw/recipients.txt": Covered(("humane.privacy.encryption keygen --identity",), (ENC,)),
    "python -m humane.privacy.encryption encrypt data/raw/loans/applicants.csv --recipients data/raw/recipients.txt "
    "--remove-plaintext": Covered(("humane.privacy.encryption encrypt", "--recipients", "--remove-plaintext"), (ENC,)),
    "dvc add data/raw/loans/applicants.csv.age": Covered(("dvc add", ".age"), (ENC,)),
    "git add data/raw/recipients.txt data/raw/loans/applicants.csv.age.dvc data/raw/loans/.gitignore": Covered(
        ("git add", ".age.dvc", ".gitignore"), (ENC,)
    ),
    'export HUMANE_AGE_IDENTITY="$(cat ~/.config/humane/age-identity.txt)"': Covered(
        ("export HUMANE_AGE_IDENTITY",), (ENC,)
    ),
    "python -m humane.privacy.encryption rotate data/raw/loans/applicants.csv.age --recipients "
    "data/raw/recipients.txt": Covered(("humane.privacy.encryption rotate", "--recipients"), (ENC,)),
    "dvc metrics show": Covered(("metrics", "show"), (PIPE + "test_repro_writes_every_artifact_and_is_clean",)),
    "dvc plots show": Covered(("plots", "show"), (PIPE + "test_repro_writes_every_artifact_and_is_clean",)),
    "dvc exp run -S train.lr=0.003": Covered(("dvc exp run -S",), (PIPE + "test_dvc_exp_run_with_set_param",)),
    "dvc exp show": Covered(("dvc exp show",), (PIPE + "test_dvc_exp_run_with_set_param",)),
    'python -m tasks.approve humane-adult 7 --approve --comment "gaps within policy; CIs checked"': Covered(
        ("approve", "--approve", "--comment"),
        (SIGN + "test_dvc_repro_leaves_a_pending_challenger_and_another_account_signs_it_off",),
    ),
    'python -m tasks.approve humane-adult 7 --reject --comment "EO gap too close to the limit"': Covered(
        ("approve", "--reject", "--comment"),
        (SIGN + "test_dvc_repro_leaves_a_pending_challenger_and_another_account_signs_it_off",),
    ),
    "python -m tasks.approve humane-adult 7 --export": Covered(
        ("approve", "--export"),
        (SIGN + "test_dvc_repro_leaves_a_pending_challenger_and_another_account_signs_it_off", TEAM_PAGE),
    ),
    'python -m tasks.rollback humane-adult --to 6 --comment "incident 42"': Covered(
        ("rollback", "--to", "--comment"),
        (
            SIGN + "test_rollback_is_recorded_and_a_rerun_approval_never_repromotes",
            TEAM + "test_rollback_is_a_recorded_reviewer_event_and_reapproval_never_repromotes",
            TEAM_PAGE,
        ),
    ),
    "python -m tasks.trail verify": Covered(
        ("trail", "verify"), (TEAM + "test_the_trainers_run_waits_and_only_a_reviewer_moves_champion", TEAM_PAGE)
    ),
    'make approve MODEL=humane-adult VERSION=7 COMMENT="..."': Covered(
        ("make", "approve", "MODEL=", "VERSION=", "COMMENT="), (DOC + "test_make_approve_reaches_the_sign_off",)
    ),
    "export MLFLOW_TRACKING_URI=sqlite:///mlflow.db": Covered(
        ("MLFLOW_TRACKING_URI", "sqlite:///"), (DOC + "test_serving_snippets_run_as_written",)
    ),
    'python -c " import pandas as pd from humane.governance.serving import as_request, load_champion model = '
    "load_champion('humane-adult') # the verified champion, loaded by its version number rows = "
    "pd.read_parquet('data/interim/test.parquet').head(3).drop(columns=['income']) print(model.predict(as_request("
    'rows, model.metadata.get_input_schema())))"': Covered(
        ("python -c",), (DOC + "test_serving_snippets_run_as_written",)
    ),
    'model=$(python -m humane.governance.serving humane-adult --files "$(mktemp -d)/model")': Covered(
        ("python -m humane.governance.serving",), (DOC + "test_serving_snippets_run_as_written",)
    ),
    'mlflow models serve -m "$model" --env-manager local --host 127.0.0.1 --port 5001 &': Covered(
        ("models serve -m", "--env-manager local"),
        ("tests/integration/test_registry.py::test_champion_is_a_serving_ready_pyfunc",),
    ),
    "curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' -d '{\"dataframe_split\": "
    '{"columns": ["age","workclass","education","education-num","marital-status","occupation","relationship", '
    '"capital-gain","capital-loss","hours-per-week","native-country"], "data": [[52,"Self-emp-inc","Masters",14,'
    '"Married-civ-spouse","Exec-managerial","Husband",15024,0,50,"United-States"]]}}\'': Covered(
        ("/invocations", "dataframe_split"),
        ("tests/integration/test_registry.py::test_champion_is_a_serving_ready_pyfunc",),
    ),
    "curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' -d '{\"dataframe_split\": "
    '{"columns": ["age","workclass","education","education-num","marital-status","occupation","relationship", '
    '"capital-gain","capital-loss","hours-per-week","native-country"], "data": [[38,"Private","HS-grad",9,'
    '"Never-married","Other-service","Not-in-family",0,0,40,"United-States"]]}, "params": {"reasons": 3, '
    '"counterfactual": true}}\'': Covered(
        ("/invocations", '"params"', "reasons", "counterfactual"),
        ("tests/integration/test_registry.py::test_champion_is_a_serving_ready_pyfunc",),
    ),
    "make ui": Covered(("make", "ui"), (DOC + "test_make_ui_serves_the_mlflow_ui",)),
    "python -m flows.training": Covered(
        ("flows.training",), (FLOW + "test_a_policy_override_is_refused_before_anything_runs",)
    ),
    "python -m flows.training train.lr=0.003": Covered(
        ("flows.training", "train."), (FLOW + "test_overridden_runs_are_isolated_and_saved_as_experiments",)
    ),
    "prefect server start --host 127.0.0.1 --port 4200 &": Covered(
        ("server", "start", "--host", "127.0.0.1", "--port"), ("tests/conftest.py::prefect_server",)
    ),
    "export PREFECT_API_URL=http://127.0.0.1:4200/api": Covered(
        ("PREFECT_API_URL",), ("tests/conftest.py::prefect_server",)
    ),
    "prefect work-pool create humane-local --type process": Covered(
        ("work-pool create humane-local --type process",), (FLOW + "test_deployment_runs_on_a_process_worker",)
    ),
    "prefect --no-prompt deploy --all": Covered(
        ("--no-prompt deploy --all",),
        (
            FLOW + "test_deployment_runs_on_a_process_worker",
            DOC + "test_the_retraining_automation_is_created_as_documented",
        ),
    ),
    "prefect worker start --pool humane-local &": Covered(
        ("worker start --pool humane-local",), (FLOW + "test_deployment_runs_on_a_process_worker",)
    ),
    "prefect automation create --from-file automations/crash_zombie_flow_runs.yaml": Covered(
        ("crash_zombie_flow_runs.yaml", "--from-file"),
        (
            "tests/integration/test_crash.py::test_a_worker_killed_in_train_leaves_a_crashed_run_and_the_rerun_resumes_and_registers_once",
        ),
    ),
    "prefect deployment run 'training/adult' --watch": Covered(
        ("deployment run", "training/adult", "--watch"), (FLOW + "test_deployment_runs_on_a_process_worker",)
    ),
    "prefect deployment run 'training/adult' -p overrides='{\"train.lr\": 0.003}' --watch": Covered(
        ("deployment run", "training/adult", "-p", "overrides=", "--watch"),
        (FLOW + "test_deployment_runs_on_a_process_worker",),
    ),
    "dvc exp apply prefect-<flow-run-name>-<id>": Covered(
        ("exp apply", "prefect-"), (FLOW + "test_overridden_runs_are_isolated_and_saved_as_experiments",)
    ),
    "python -m flows.monitoring data/batches/in_distribution.csv": Covered(
        ("data/batches/in_distribution.csv",),
        (MON + "test_an_in_distribution_batch_completes_with_no_alert_and_is_recorded",),
    ),
    "python -m flows.monitoring data/batches/bias.csv 2026-05-01T06:00:00Z": Covered(
        ("-m flows.monitoring data/batches/bias.csv",),
        (MON + "test_the_bias_batch_raises_bias_degraded_naming_the_group",),
    ),
    'id=$(curl -sf "$PREFECT_API_URL/deployments/name/training/adult" | jq -re .id)': Covered(
        ("deployments/name/training/adult",),
        (DOC + "test_the_retraining_automation_is_created_as_documented",),
    ),
    'sed "s/TRAINING_DEPLOYMENT_ID/$id/" automations/retrain_on_drift.yaml > /tmp/retrain_on_drift.yaml': Covered(
        ("TRAINING_DEPLOYMENT_ID", "retrain_on_drift.yaml"),
        (DOC + "test_the_retraining_automation_is_created_as_documented",),
    ),
    "prefect automation create --from-file /tmp/retrain_on_drift.yaml": Covered(
        ("automation create --from-file",), (DOC + "test_the_retraining_automation_is_created_as_documented",)
    ),
    "prefect deployment run monitoring/adult-monitoring -p batch=data/batches/shifted.csv --watch": Exempt(
        "a scheduled monitoring deployment run needs a process worker, a champion and the shifted batch: the "
        "monitoring flow itself on the same batches runs in tests/integration/test_monitoring.py and the deployment "
        "path in test_prefect_flow.py::test_deployment_runs_on_a_process_worker; this exact line is not run"
    ),
    # The session's team stack is started and stopped with these commands (tests/team/conftest.py UP, BOOTSTRAP,
    # DOWN); the page's test checks that its first and last blocks are exactly them.
    "make team-down": Covered(("make", "team-down"), (STACK + "_stop", TEAM_PAGE)),
    "dvc exp run -S train.dp.enabled=true -S train.dp.target_epsilon=3 -S train.dp.max_grad_norm=2.0 "
    "-S train.batch_size=4096 -S train.lr=0.003 -S train.max_epochs=15 -S train.patience=15": Covered(
        ("train.dp.enabled=true",), (DOC + "test_dp_sgd_experiment_runs_as_documented",)
    ),
    "make team-up": Covered(("make", "team-up"), (STACK + "_start", TEAM_PAGE)),
    "make team-bootstrap": Covered(("make", "team-bootstrap"), (STACK + "_start", TEAM_PAGE)),
    "set -a; . .team/team.env; . .team/accounts/alice.env; set +a": Covered(
        (".team/team.env", ".team/accounts/alice.env"), (TEAM_PAGE,)
    ),
    'python -m tasks.approve humane-adult 7 --approve --comment "CIs checked"': Covered(
        ("approve", "--approve", "--comment"),
        (
            SIGN + "test_dvc_repro_leaves_a_pending_challenger_and_another_account_signs_it_off",
            TEAM + "test_the_trainers_run_waits_and_only_a_reviewer_moves_champion",
            TEAM_PAGE,
        ),
    ),
    'dvc remote add -d team "$HUMANE_DVC_REMOTE_URL"; dvc remote modify --local team keyfile "$HUMANE_DVC_KEYFILE"': (
        Covered(("remote", "add", "-d"), (TEAM + "test_a_second_checkout_pulls_the_champions_exact_model", TEAM_PAGE))
    ),
    "dvc push": Covered(("dvc", "push"), (TEAM + "test_a_second_checkout_pulls_the_champions_exact_model", TEAM_PAGE)),
    'openssl s_client -connect "127.0.0.1:$HUMANE_TEAM_MLFLOW_PORT" -CAfile "$HUMANE_TEAM_CA_FILE" '
    "-verify_ip 127.0.0.1 -verify_return_error </dev/null": Covered(
        ("openssl", "s_client", "-verify_return_error"),
        ("tests/team/test_tls.py::test_openssl_verifies_each_servers_chain", TEAM_PAGE),
    ),
    "make site-env": Covered(
        ("requirements-site.txt", "--no-deps"),
        ("tests/federated/test_site_env.py::test_the_site_env_holds_the_pinned_versions",),
        recipe=True,
    ),
    ".site-env/bin/flower-superlink --ssl-ca-certfile ca.pem --ssl-certfile superlink.pem --ssl-keyfile superlink.key "
    "--host 0.0.0.0 --port 9093 --database superlink.db --disable-runtime-dependency-installation": FL_TLS,
    ".site-env/bin/flower-supernode --superlink coordinator.example.org:9093 --root-certificates ca.pem --node-config "
    "\"site='site_a' workspace='/srv/humane/site_a'\"": FL_TLS,
    ".site-env/bin/python -m federated.humane_fl.nodes up --dir .federation --site site_a=/abs/path/site_a --site "
    "site_b=/abs/path/site_b": Covered(("federated.humane_fl.nodes", "up", "--site"), (FED + "start",)),
    ".site-env/bin/python -m federated.humane_fl.nodes status --dir .federation": Covered(
        ("federated.humane_fl.nodes", "status", "--dir"),
        ("tests/federated/test_flower.py::test_nodes_status_names_the_connection_and_every_running_process",),
    ),
    ".site-env/bin/python -m federated.humane_fl.nodes down --dir .federation": Covered(
        ("federated.humane_fl.nodes", "down", "--dir"), (FED + "stop",)
    ),
}


def _strip_comment(line: str, quote: str | None) -> tuple[str, str | None]:
    """The line without its shell comment; `quote` is the quote still open from the line before (or None)."""
    out, prev = [], " "
    for ch in line:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and prev.isspace():
            break
        out.append(ch)
        prev = ch
    return "".join(out).rstrip(), quote


def block_commands(lang: str, body: str) -> list[str]:
    """The commands of one fenced block: continuations and open quotes joined, whitespace collapsed."""
    found, pending, quote = [], "", None
    for raw in body.splitlines():
        if lang == "console" and quote is None and not pending:
            if not raw.startswith("$ "):
                continue  # output, not a command
            raw = raw[2:]
        line, quote = _strip_comment(raw, quote)
        if quote is None and line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line + (" " if quote else "")
        if quote is None:
            if pending.strip():
                found.append(" ".join(pending.split()))
            pending = ""
    return found


PARTS = ("tutorial", "how-to", "explanation")


def doc_pages() -> list[Path]:
    """The hand-written pages: README.md, docs/index.md and the tutorial, how-to and explanation pages."""
    docs = ROOT / "docs"
    return [
        ROOT / "README.md",
        docs / "index.md",
        *(page for part in PARTS for page in sorted((docs / part).glob("*.md"))),
    ]


def tutorial_pages() -> list[Path]:
    """The pages run as written: the README and the tutorial."""
    return [ROOT / "README.md", *sorted((ROOT / "docs/tutorial").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    """One fenced block of a page, with its marker (`run-by`, and its value: a test node) if it has one."""

    page: str
    lang: str
    body: str
    marker: str = ""
    value: str = ""


def blocks(page: Path) -> list[Block]:
    """The shell blocks of a page, in order."""
    name = str(page.relative_to(ROOT))
    found = [Block(name, lang, body, marker, value) for marker, value, lang, body in BLOCK.findall(page.read_text())]
    return [block for block in found if block.lang in SHELL_BLOCKS]


def runnable(page: Path) -> list[Block]:
    """A tutorial page's blocks that its test runs: those without a marker."""
    return [block for block in blocks(page) if not block.marker]


def run_here() -> set[str]:
    """The commands that `test_tutorial_page_runs_as_written` runs."""
    return {c for page in tutorial_pages() for block in runnable(page) for c in block_commands(block.lang, block.body)}


def documented_commands() -> dict[str, str]:
    """Every documented command → where it is first shown (path from the project root)."""
    found: dict[str, str] = {}
    for path in doc_pages():
        text, name = path.read_text(), str(path.relative_to(ROOT))
        for lang, body in FENCE.findall(text):
            if lang in SHELL_BLOCKS:
                for command in block_commands(lang, body):
                    found.setdefault(command, name)
        for command in DISPLAYED.findall(text):
            found.setdefault(" ".join(command.split()), name)
    return found


@cache
def _functions(path: str) -> dict[str, tuple[str, str]]:
    """A module's functions (any depth): name → (source, its string literals in order, joined by spaces)."""
    source = (ROOT / path).read_text()
    out = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            literals = []
            for sub in ast.walk(node):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    literals.append((sub.lineno, sub.col_offset, sub.value))
                elif isinstance(sub, ast.JoinedStr):
                    text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in sub.values)
                    literals.append((sub.lineno, sub.col_offset, text))
            stream = " ".join(" ".join(v for *_, v in sorted(literals)).split())
            out.setdefault(node.name, (ast.get_source_segment(source, node) or "", stream))
    return out


def node_text(node: str) -> str:
    """The test's source and literals, and those of the module's functions it calls (transitively)."""
    path, _, name = node.partition("::")
    functions = _functions(path)
    seen, todo, texts = set(), [name.split("[")[0]], []
    while todo:
        current = todo.pop()
        if current in seen or current not in functions:
            continue
        seen.add(current)
        source, stream = functions[current]
        texts += [source, stream]
        todo += [n for n in functions if re.search(rf"\b{re.escape(n)}\(", source)]
    return "\n".join(texts)


def make_recipe(target: str) -> str:
    """The recipe lines of a Makefile target."""
    match = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, f"Makefile has no target {target}"
    return match.group(1)


def test_every_documented_command_is_run_or_registered():
    documented = documented_commands()
    assert len(documented) > 40  # the parser reads the blocks (a broken parser must not pass by finding none)
    assert len(run_here()) > 8  # and the tutorial's runnable blocks
    missing = [f"{where}: {c}" for c, where in documented.items() if c not in REGISTRY and c not in run_here()]
    assert not missing, "documented commands that no test is registered to run:\n" + "\n".join(missing)
    stale = [command for command in REGISTRY if command not in documented]
    assert not stale, f"registered commands the docs no longer show: {stale}"


def test_every_marked_block_names_the_test_that_runs_it():
    """A `run-by:` marker names a test that exists and is registered for each of the block's commands (or the
    command is exempt, with its reason). Any other marker (the former `needs:`) is no marker: its block is run by
    `test_tutorial_page_runs_as_written`."""
    marked = [block for page in doc_pages() for block in blocks(page) if block.marker]
    assert any(b.page == "docs/tutorial/team-mode.md" for b in marked)  # the parser reads the markers
    for block in marked:
        commands = block_commands(block.lang, block.body)
        assert commands and all(c in REGISTRY for c in commands), (block.page, commands)
        path, _, name = block.value.partition("::")
        assert (ROOT / path).is_file() and name in _functions(path), f"{block.page}: {block.value} does not exist"
        for command in commands:
            entry = REGISTRY[command]
            assert isinstance(entry, Exempt) or block.value in entry.nodes, (block.page, command, block.value)


@pytest.mark.parametrize("command", sorted(REGISTRY))
def test_each_registered_test_exists_and_runs_the_command(command):
    entry = REGISTRY[command]
    if isinstance(entry, Exempt):
        assert len(entry.reason) > 40, f"{command}: an exemption needs its reason"
        return
    assert entry.nodes and entry.part
    where = make_recipe(command.split()[1]) if entry.recipe else command
    assert all(token in where for token in entry.part), f"{entry.part} is not in {where!r}"
    for node in entry.nodes:
        path, _, name = node.partition("::")
        assert (ROOT / path).is_file() and name.split("[")[0] in _functions(path), f"{node} does not exist"
        text = node_text(node)
        absent = [token for token in entry.part if token not in text]
        assert not absent, f"{node} does not run {command!r}: {absent} not in its source"


def test_the_parser_joins_continuations_and_quotes_and_drops_comments():
    body = 'a --x \\\n  --y  # note\n# only a comment\npython -c "\nprint(1)  # kept\n"\n\n'
    assert block_commands("bash", body) == ["a --x --y", 'python -c " print(1) # kept "']
    assert block_commands("console", "$ dvc repro\nRunning stage 'load'\n") == ["dvc repro"]


# --- the documented commands no other test runs, on the sample data with the documented settings ---


def _with_venv(project: Path) -> Path:
    """The project copy with the suite's venv linked in as .venv (and the site environment as .site-env, which
    `make test` also wants), as `make` and `source` expect."""
    venv = project / ".venv"
    if not venv.exists():
        venv.symlink_to(Path(os.environ.get("VIRTUAL_ENV") or ROOT / ".venv").resolve())
    site_env = project / ".site-env"
    if not site_env.exists() and (ROOT / ".site-env").is_dir():
        site_env.symlink_to((ROOT / ".site-env").resolve())
    return project


def test_dp_sgd_experiment_runs_as_documented(ran_project):
    """The privacy how-to's DP-SGD example, exactly as written, on the sample data: it trains, spends at most ε=3,
    registers."""
    (line,) = [c for c in documented_commands() if "train.dp.enabled=true" in c]
    assert line.startswith("dvc exp run -S train.dp.enabled=true")
    run(line.split(), ran_project, timeout=900)
    metrics = json.loads((ran_project / "reports/train_metrics.json").read_text())
    assert metrics["dp_enabled"] is True and 0 < metrics["epsilon"] <= 3.0 + 1e-3
    assert metrics["epochs_run"] <= 15 and metrics["compute"]["flops_per_sample"] > 0
    params = tracked_runs(ran_project)[0].data.params
    assert (params["train.dp.enabled"], params["train.batch_size"], params["train.lr"]) == ("True", "4096", "0.003")


def test_serving_snippets_run_as_written(ran_project):
    """The serving how-to's `export MLFLOW_TRACKING_URI=sqlite:///mlflow.db`, its `python -c "..."` and
    `model=$(python -m humane.governance.serving ... --files ...)` lines, run by bash with the sample's model name for
    humane-adult."""
    model = "humane-" + yaml.safe_load((ran_project / "params.yaml").read_text())["data"]["name"]
    block = next(b for lang, b in FENCE.findall((ROOT / "docs/how-to/serving.md").read_text()) if "load_champion" in b)
    lines = block.split("mlflow models serve")[0].replace("humane-adult", model)  # up to the server: model=$(...)
    script = f'set -e\n{lines}\necho "model=$model"\n'
    done = subprocess.run(["bash", "-c", script], cwd=ran_project, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = Path(re.search(r"^model=(/.+)$", done.stdout, re.M).group(1))
    assert (folder / "MLmodel").exists() and (folder / "served_model.py").exists(), done.stdout
    assert "export MLFLOW_TRACKING_URI=sqlite:///mlflow.db" in block and "python -c" in block


def test_make_approve_reaches_the_sign_off(ran_project):
    """`make approve MODEL=... VERSION=... COMMENT="..."` passes its variables to tasks.approve: a version the
    registry lacks is refused by name with a non-zero exit."""
    project = _with_venv(ran_project)
    model = "humane-" + yaml.safe_load((project / "params.yaml").read_text())["data"]["name"]
    made = subprocess.run(
        [*MAKE, "approve", f"MODEL={model}", "VERSION=999", "COMMENT=checked"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode != 0
    assert f"tasks.approve {model} 999 --approve --comment" in made.stdout
    assert "999" in made.stderr and "Traceback" not in made.stderr, made.stderr[-2000:]


def test_make_ui_serves_the_mlflow_ui(ran_project):
    """`make ui` blocks serving the UI: started, its port probed until the UI answers, then stopped."""
    project = _with_venv(ran_project)
    ui = subprocess.Popen(
        [*MAKE, "ui"], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline, status = time.time() + 120, None
        while status != 200:
            assert ui.poll() is None and time.time() < deadline, ui.stdout.read().decode()[-2000:] if ui.poll() else ""
            try:
                with urllib.request.urlopen("http://127.0.0.1:5000/health", timeout=2) as response:
                    status = response.status
            except OSError:
                time.sleep(1)
    finally:
        os.killpg(ui.pid, signal.SIGTERM)  # make and the server it started: this test's own process group
        ui.wait(timeout=30)
    assert shutil.which("mlflow")


def test_the_retraining_automation_is_created_as_documented(project, prefect_server):
    """The monitoring tutorial's `prefect --no-prompt deploy --all`, the `sed ... | jq` line and `prefect automation
    create` against the session's server: the automation runs the deployment the sed line named."""
    block = next(
        b for lang, b in FENCE.findall((ROOT / "docs/tutorial/monitoring.md").read_text()) if "retrain_on_drift" in b
    )
    lines = block_commands("bash", block)
    deploy, named, sed, create = lines[:4]
    assert deploy == "prefect --no-prompt deploy --all" and "deployments/name/training/adult" in named
    assert "TRAINING_DEPLOYMENT_ID" in sed and "retrain_on_drift.yaml" in sed
    assert create.startswith("prefect automation create --from-file")
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    pool = "prefect work-pool create humane-local --type process --overwrite"  # as the Prefect how-to
    script = "set -e\n" + "\n".join([pool, deploy, named, sed.replace("/tmp/", "./"), create.replace("/tmp/", "./")])
    done = subprocess.run(["bash", "-c", script], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    try:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        # The page reads the id from the API: once an automation names the deployment, `prefect deployment
        # inspect -o json` fails (Prefect 3.9: "Type is not JSON serializable: set"), so a rerun would name none.
        with urllib.request.urlopen(f"{prefect_server}/deployments/name/training/adult", timeout=30) as response:
            deployment = json.loads(response.read())
        written = (project / "retrain_on_drift.yaml").read_text()
        assert deployment["id"] in written and "TRAINING_DEPLOYMENT_ID" not in written
        listed = run(["prefect", "automation", "ls"], project).stdout
        assert yaml.safe_load(written)["name"] in listed
    finally:
        name = yaml.safe_load((ROOT / "automations/retrain_on_drift.yaml").read_text())["name"]
        subprocess.run(["prefect", "--no-prompt", "automation", "delete", name], cwd=project, env=env)
        for gone in ("monitoring/adult-monitoring", "training/adult"):  # the daily schedule must not fire in the suite
            subprocess.run(["prefect", "--no-prompt", "deployment", "delete", gone], cwd=project, env=env)


# --- the README and the tutorial pages, run as written ---

PYTEST_ONE = "-p no:cacheprovider -n 0 tests/unit/test_train.py::test_loss_takes_the_raw_logit"
# bash runs a page's blocks with `make` as `make -o .venv/.installed -o site-env`: both environments are the suite's
# own, linked in; remaking either from the copy would re-point its editable install at a temporary directory.
PREAMBLE = 'set -e\nmake() { command make -o .venv/.installed -o site-env "$@"; }\n'


def _adult_files(project: Path) -> None:
    """The demo batches are drawn from Adult's own files, which the sample's project copy does not hold."""
    (project / "data/raw/adult").symlink_to(ROOT / "data/raw/adult")


SETUP = {"docs/tutorial/monitoring.md": _adult_files}
# What each page's run must show (in its output) and leave (files), beyond every command's exit status 0.
SHOWS = {
    "README.md": ["Data and pipelines are up to date", "1 passed"],
    "docs/tutorial/first-run.md": ["Data and pipelines are up to date", "accuracy", "decision.json"],
    "docs/tutorial/own-data.md": ["german"],
    "docs/tutorial/sign-off.md": [],
    "docs/tutorial/monitoring.md": [],
}
# Run after a page's blocks, in the same shell: first-run's `source .venv/bin/activate` puts the venv's tools first.
AFTER = {"docs/tutorial/first-run.md": 'echo "dvc=$(command -v dvc)"'}
LEAVES = {
    "docs/tutorial/first-run.md": ["dvc_plots/index.html"],
    "docs/tutorial/monitoring.md": [
        "data/batches/in_distribution.csv",
        "data/batches/shifted.csv",
        "data/batches/bias.csv",
    ],
}


def _pages_run() -> list[str]:
    return [str(page.relative_to(ROOT)) for page in tutorial_pages() if runnable(page)]


@pytest.mark.parametrize("page", _pages_run())
def test_tutorial_page_runs_as_written(page, ran_project):
    """Every unmarked shell block of the page, in order, in one bash script, in a copy of the session's pipeline run
    on the sample data (`make test` runs one unit test, chosen by PYTEST_ADDOPTS)."""
    project = _with_venv(ran_project)
    SETUP.get(page, lambda _: None)(project)
    script = PREAMBLE + "\n".join([*(block.body for block in runnable(ROOT / page)), AFTER.get(page, "")])
    env = {**os.environ, "PYTEST_ADDOPTS": PYTEST_ONE}
    if page in AFTER:  # the venv's tools reach the page's later blocks only through its `source .venv/bin/activate`
        own_bin = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join(d for d in env["PATH"].split(os.pathsep) if d != own_bin)
    done = subprocess.run(["bash", "-c", script], cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    absent = [text for text in SHOWS[page] if text not in done.stdout]
    assert not absent, f"{page}: {absent} not in its output:\n{done.stdout[-3000:]}"
    assert all((project / path).is_file() for path in LEAVES.get(page, [])), LEAVES[page]
    if page in AFTER:  # activate put its venv's bin on PATH (by the venv's real path): the suite's, linked in
        dvc = Path(re.search(r"^dvc=(.*)$", done.stdout, re.M).group(1))
        assert dvc.resolve() == (project / ".venv/bin/dvc").resolve(), dvc
    if page == "docs/tutorial/own-data.md":  # switched to German and back
        assert yaml.safe_load((project / "params.yaml").read_text())["data"]["name"] == "adult"
