"""The auditor's export: a registered version's evidence mapped to the EU AI Act's Annex IV and the NIST AI RMF.

The mapping is data (`ITEMS`): each item of the technical documentation (Regulation (EU) 2024/1689, Annex IV)
and each NIST AI RMF 1.0 subcategory the pipeline speaks to names the evidence it rests on: run artifacts,
run tags, version tags, registry fields, the run's dataset inputs and the sign-off trail's entries. `resolve`
judges each item against what one version's run actually holds: an item whose evidence is absent is
"not covered: <evidence> missing", never "covered"; an item the pipeline can only partly cover says what is
outside it and why; an item outside the pipeline altogether (harmonised standards, the declaration of
conformity, the organisation's own processes) says so.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from typing import Any

from humane.governance import audit_trail, signoff
from humane.governance.audit_trail import Trail
from humane.governance.card import EXPLAIN_PLOTS_ARTIFACT, EXPLANATIONS_ARTIFACT, Card
from humane.governance.store import StoreError

ANNEX_IV = "EU AI Act Annex IV"
NIST = "NIST AI RMF 1.0"
NIST_FUNCTIONS = ("GOVERN", "MAP", "MEASURE", "MANAGE")
COVERED, PARTLY, NOT_COVERED = "covered", "partly", "not covered"
# Where the evidence of an item can be found (Source.kind).
ARTIFACT, RUN_TAG, VERSION_TAG, REGISTRY, INPUT, TRAIL = (
    "run artifact",
    "run tag",
    "version tag",
    "registry field",
    "dataset input",
    "trail entry",
)


@dataclass(frozen=True)
class Source:
    """One piece of evidence: where it is (`kind`), its name (a path or glob, tag, field, context, event)."""

    kind: str
    name: str
    what: str


@dataclass(frozen=True)
class Item:
    """One documentation item or subcategory, the evidence it needs (all of it) and what lies outside the pipeline.

    `outside` empty: the evidence covers the item; set: at most "partly", for that reason. No `needs`: the
    pipeline holds nothing for it ("not covered", for the reason in `outside`).
    """

    framework: str
    ref: str
    title: str
    needs: tuple[Source, ...] = ()
    outside: str = ""


@dataclass
class Record:
    """What one registered version's run holds: the facts `resolve` judges the items against."""

    model: str
    version: str
    run_id: str
    artifact_uri: str
    artifacts: list[str] = field(default_factory=list)
    run_tags: dict[str, str] = field(default_factory=dict)
    version_tags: dict[str, str] = field(default_factory=dict)
    registry: dict[str, str] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)  # the dataset inputs' contexts ("training", "test")
    trail: list[str] = field(default_factory=list)  # the events of the version's trail entries
    # The events (approved, rejected) of the trail entries that decide this version's own sign-off request (their
    # `pending_entry` is the hash its approval.pending_entry tag names): a person's decision, not a request.
    decisions: list[str] = field(default_factory=list)


def _a(name: str, what: str) -> Source:
    return Source(ARTIFACT, name, what)


CARD = _a("model_card/model_card.md", "the model card (intended use, model details, limitations)")
PARAMS = _a("reports/params.yaml", "every setting the run used (params.yaml)")
DECISION = _a("reports/decision.json", "the gate's decision: every check against the policy")
METRICS = _a("reports/metrics.json", "test metrics of the model and two baselines")
AUDIT = _a("reports/audit.json", "per-group metrics with 95% bootstrap intervals")
FAIRNESS = _a("reports/fairness.json", "the fairness gaps the gate judges")
EXPLANATIONS = _a(EXPLANATIONS_ARTIFACT, "attributions overall and per group, proxies, error cohorts")
EXPLAIN_PLOTS = _a(f"{EXPLAIN_PLOTS_ARTIFACT}/*.png", "attribution plots")
VALIDATION = _a("reports/validation.json", "Great Expectations validation and leakage checks")
DATA_AUDIT = _a("reports/data_audit.json", "group shares and base rates of the training data")
PRIVACY = _a("reports/privacy.json", "column privacy policy, k-anonymity and l-diversity")
MEMBERSHIP = _a("reports/membership.json", "membership-inference attack on the model")
TRAIN = _a("reports/train_metrics.json", "training: epochs, parameters, compute, energy")
HISTORY = _a("reports/train_history.json", "per-epoch losses and validation metrics")
CALIBRATION = _a("reports/calibration.json", "calibration bins")
REFERENCE = _a("monitoring/reference.parquet", "the reference the monitoring flow compares batches with")
GIT = Source(RUN_TAG, "git_commit", "the code's commit (pipeline definition dvc.yaml and every stage)")
DATA_SOURCE = Source(RUN_TAG, "data.source", "where the data came from")
DATA_MD5 = Source(RUN_TAG, "data.md5.train", "md5 of the processed training data (DVC)")
MODEL_URI = Source(RUN_TAG, "humane.model_uri", "the logged model: signature, input example, pinned requirements")
VERDICT = Source(VERSION_TAG, "decision", "the automated decision recorded on the version")
CHAMPION_BEFORE = Source(VERSION_TAG, "decision.champion_version", "the champion the candidate was compared with")
MANIFEST = Source(VERSION_TAG, "humane.files", "sha256 of each model file, verified before loading")
APPROVAL = Source(VERSION_TAG, signoff.APPROVAL_TAG, "a person's sign-off decision: approved or rejected")
SOURCE = Source(REGISTRY, "source", "the registered model's location")
TRAINING_INPUT = Source(INPUT, "training", "the training dataset's schema, row count and digest (no rows)")
DECIDED = (signoff.APPROVED, signoff.REJECTED)  # a sign-off decided by a person (pending is only a request)
SIGNED = Source(TRAIL, "approved or rejected", "a person's decision on this version's sign-off request (hash chain)")

ORGANISATION = "the organisation's own process, outside the pipeline"

ITEMS: tuple[Item, ...] = (
    Item(
        ANNEX_IV,
        "1",
        "General description: intended purpose, provider, versions, how it is placed on the market",
        (CARD, PARAMS, GIT, SOURCE),
        "the provider's identity, the forms in which the system is placed on the market, the hardware it runs on "
        "and the instructions for use are the provider's documents",
    ),
    Item(ANNEX_IV, "2(a)", "Methods and steps of development, third-party tools", (PARAMS, GIT, HISTORY, MODEL_URI)),
    Item(
        ANNEX_IV,
        "2(b)",
        "Design specifications: logic, key choices and their rationale, trade-offs",
        (CARD, PARAMS, DECISION),
        "the rationale of the design choices with regard to the persons affected is the provider's to write (the "
        "intended-use text on the card records part of it)",
    ),
    Item(ANNEX_IV, "2(c)", "System architecture and computational resources", (CARD, TRAIN, MODEL_URI, SOURCE)),
    Item(
        ANNEX_IV,
        "2(d)",
        "Data requirements and datasheets: provenance, scope, characteristics, cleaning",
        (VALIDATION, DATA_AUDIT, PRIVACY, DATA_SOURCE, DATA_MD5, TRAINING_INPUT),
        "how the raw data were collected and labelled is the data owner's to document; the pipeline records its "
        "source, digest, validation and group composition",
    ),
    Item(
        ANNEX_IV,
        "2(e)",
        "Human oversight measures (Art. 14), incl. aids to interpret the outputs",
        (APPROVAL, SIGNED, CARD, EXPLANATIONS),
        "who may oversee, their training and the means to stop the system in operation are " + ORGANISATION,
    ),
    Item(
        ANNEX_IV,
        "2(f)",
        "Pre-determined changes and the solutions for continuous compliance",
        (DECISION, VERDICT, PARAMS),
        "the gate's policy states what a retrained candidate must meet before it replaces the champion; changes "
        "to code, data sources or policy are not pre-determined by the pipeline",
    ),
    Item(
        ANNEX_IV,
        "2(g)",
        "Validation and testing: data, metrics (accuracy, robustness, discriminatory impact), test reports",
        (METRICS, AUDIT, FAIRNESS, DECISION, CALIBRATION),
        "robustness to adversarial or shifted inputs is not tested; the reports are signed by a person only when "
        "the policy requires sign-off (see 2(e))",
    ),
    Item(
        ANNEX_IV,
        "2(h)",
        "Cybersecurity measures",
        (MANIFEST, MEMBERSHIP),
        "the deployment's security (network, access, secrets) is " + ORGANISATION,
    ),
    Item(
        ANNEX_IV,
        "3 (capabilities and limitations)",
        "Capabilities and limitations in performance, expected accuracy",
        (CARD, METRICS),
    ),
    Item(
        ANNEX_IV,
        "3 (accuracy per group)",
        "Degrees of accuracy for the groups of persons it is used on",
        (AUDIT, _a("reports/audit_groups.json", "the per-group table")),
    ),
    Item(
        ANNEX_IV,
        "3 (unintended outcomes)",
        "Foreseeable unintended outcomes, risks to fundamental rights and of discrimination",
        (FAIRNESS, EXPLANATIONS),
        "risks to health and safety in the use context are the provider's assessment; the pipeline measures "
        "group gaps, proxies and error cohorts",
    ),
    Item(ANNEX_IV, "3 (input data)", "Specifications of the input data", (VALIDATION, MODEL_URI)),
    Item(
        ANNEX_IV,
        "4",
        "Appropriateness of the performance metrics",
        (DECISION, PARAMS, METRICS),
        "why these metrics and thresholds suit the intended purpose is the provider's judgement; the pipeline "
        "records them, the baselines and every check",
    ),
    Item(
        ANNEX_IV,
        "5",
        "Risk management system (Art. 9)",
        (DECISION, FAIRNESS, PRIVACY, MEMBERSHIP),
        "the risk management system is " + ORGANISATION + "; the pipeline supplies measured risks and a gate",
    ),
    Item(
        ANNEX_IV,
        "6",
        "Relevant changes through the lifecycle",
        (CHAMPION_BEFORE, GIT, SOURCE),
        "alias moves and rollbacks are in the sign-off trail (python -m tasks.trail export); changes made "
        "outside the pipeline are not recorded",
    ),
    Item(
        ANNEX_IV,
        "7",
        "Harmonised standards applied",
        (),
        "no harmonised standard is applied or claimed by the pipeline; the provider lists what it applies",
    ),
    Item(
        ANNEX_IV,
        "8",
        "EU declaration of conformity (Art. 47)",
        (),
        "a legal declaration the provider signs, outside the pipeline",
    ),
    Item(
        ANNEX_IV,
        "9",
        "Post-market monitoring plan (Art. 72)",
        (REFERENCE, GIT),
        "the monitoring flow (flows/monitoring.py) compares batches with this reference; the plan (who reviews, "
        "how often, serious-incident reporting under Art. 73) is " + ORGANISATION,
    ),
    Item(
        NIST,
        "GOVERN 1.1",
        "Legal and regulatory requirements understood and managed",
        (),
        "the organisation's legal review, outside the pipeline",
    ),
    Item(
        NIST,
        "GOVERN 1.4",
        "Risk management outcomes set through transparent policies and controls",
        (PARAMS, DECISION),
        "the policy's thresholds are set by the organisation; the pipeline enforces them",
    ),
    Item(
        NIST,
        "GOVERN 1.6",
        "Inventory of AI systems",
        (SOURCE, VERDICT),
        "the registry inventories this pipeline's models, not the organisation's other systems",
    ),
    Item(
        NIST,
        "GOVERN 2.1",
        "Roles and responsibilities documented",
        (APPROVAL, SIGNED),
        "the roles (who may approve) are set in the team server's configuration, " + ORGANISATION,
    ),
    Item(
        NIST,
        "MAP 1.1",
        "Intended purposes and context of use documented",
        (CARD,),
        "the deployment context beyond the intended-use text is the deployer's",
    ),
    Item(NIST, "MAP 2.1", "The task and methods defined", (CARD, PARAMS)),
    Item(NIST, "MAP 2.3", "Scientific integrity and TEVV considerations, data selection", (VALIDATION, DATA_AUDIT)),
    Item(
        NIST,
        "MAP 5.1",
        "Likelihood and magnitude of impacts identified",
        (),
        "impact assessment in the use context is " + ORGANISATION,
    ),
    Item(NIST, "MEASURE 1.1", "Approaches and metrics selected and documented", (PARAMS, DECISION)),
    Item(NIST, "MEASURE 2.1", "Test sets, metrics and TEVV tools documented", (METRICS, VALIDATION, GIT)),
    Item(
        NIST,
        "MEASURE 2.3",
        "Performance demonstrated, per group",
        (METRICS, AUDIT),
        "measured on the held-out test split, not in deployment conditions",
    ),
    Item(
        NIST,
        "MEASURE 2.4",
        "Functionality and behaviour monitored in production",
        (REFERENCE,),
        "the monitoring flow runs on batches the organisation supplies, on its own schedule",
    ),
    Item(
        NIST,
        "MEASURE 2.5",
        "Validity and reliability demonstrated, limitations documented",
        (METRICS, CALIBRATION, AUDIT),
    ),
    Item(
        NIST,
        "MEASURE 2.7",
        "Security and resilience evaluated",
        (MANIFEST, MEMBERSHIP),
        "adversarial robustness and the deployment's security are not evaluated",
    ),
    Item(NIST, "MEASURE 2.8", "Transparency and accountability examined", (CARD, DECISION, SIGNED)),
    Item(
        NIST,
        "MEASURE 2.9",
        "The model explained, validated and documented; outputs interpreted in context",
        (EXPLANATIONS, EXPLAIN_PLOTS),
    ),
    Item(NIST, "MEASURE 2.10", "Privacy risk examined", (PRIVACY, MEMBERSHIP)),
    Item(NIST, "MEASURE 2.11", "Fairness and bias evaluated (proxies: MEASURE 2.9)", (AUDIT, FAIRNESS, DATA_AUDIT)),
    Item(NIST, "MANAGE 1.1", "Whether the system achieves its purpose and should proceed", (DECISION, VERDICT)),
    Item(
        NIST,
        "MANAGE 2.4",
        "Mechanisms to supersede, disengage or deactivate",
        (VERDICT,),
        "the champion alias moves only on a passing decision (and sign-off when required); rolling back "
        "(python -m tasks.rollback) in operation is the organisation's call",
    ),
    Item(
        NIST,
        "MANAGE 4.1",
        "Post-deployment monitoring plans implemented",
        (REFERENCE,),
        "the plan (schedule, responses, decommissioning) is " + ORGANISATION,
    ),
    Item(
        NIST,
        "MANAGE 4.3",
        "Incidents and errors communicated",
        (),
        "incident tracking and communication are " + ORGANISATION,
    ),
)


def read_record(mlflow_client: Any, trail: Trail, name: str, version: str) -> Record:
    """What the registry, the version's run and the trail hold for one version.

    Raises:
        SignOffError: The version does not exist (exit 2).
        StoreError: The store could not be read.

    """
    record = signoff.read_version(mlflow_client, name, version)
    try:
        run = mlflow_client.get_run(record.run_id)
        artifacts = list(artifact_paths(mlflow_client, record.run_id))
    except Exception as err:
        raise StoreError(
            f"cannot read MLflow run {record.run_id} of {name} v{version}: {type(err).__name__}: {err}"
        ) from err
    inputs = [
        tag.value
        for ds in (run.inputs.dataset_inputs if run.inputs else [])
        for tag in ds.tags
        if tag.key == "mlflow.data.context"
    ]
    entries = audit_trail.entries_of(trail, name, str(version), record.run_id)
    registry = {"source": record.source or "", "run_id": record.run_id or "", "status": record.status or ""}
    return Record(
        name,
        str(version),
        record.run_id,
        run.info.artifact_uri,
        sorted(artifacts),
        dict(run.data.tags),
        dict(record.tags),
        registry,
        inputs,
        [e["event"] for e in entries],
        decisions_of(entries, record.tags.get(signoff.PENDING_ENTRY_TAG)),
    )


def decisions_of(entries: list[dict[str, Any]], request: str | None) -> list[str]:
    """The events of the entries that decide the sign-off request `request` (a `pending` entry's hash)."""
    return [e["event"] for e in entries if e["event"] in DECIDED and request and e.get("pending_entry") == request]


def artifact_paths(mlflow_client: Any, run_id: str, under: str | None = None) -> Any:
    """Every file path in the run's artifacts (recursively)."""
    for entry in mlflow_client.list_artifacts(run_id, under):
        if entry.is_dir:
            yield from artifact_paths(mlflow_client, run_id, entry.path)
        else:
            yield entry.path


def present(source: Source, record: Record) -> bool:
    """Whether the record holds this piece of evidence (an artifact name may be a glob)."""
    return not shortfall(source, record)


def shortfall(source: Source, record: Record) -> str:
    """Why the record does not hold this piece of evidence ("" when it does).

    A sign-off counts only once a person decided it: the approval tag approved or rejected, and an approve or
    reject event in the trail that answers this version's own request (a `pending` request alone is no oversight).
    """
    if source == APPROVAL and record.version_tags.get(source.name) not in (None, *DECIDED):
        return f"{source.kind} {source.name} is {record.version_tags[source.name]!r}, not approved or rejected"
    if source == SIGNED and not record.decisions:
        asked = " (its sign-off was requested but never decided)" if signoff.PENDING in record.trail else ""
        return f"{source.kind} {source.name} for this version's sign-off request missing{asked}"
    if source == SIGNED:
        return ""
    return "" if named(source, record) else f"{source.kind} {source.name} missing"


def named(source: Source, record: Record) -> bool:
    """Whether the record holds something under the source's name (an artifact name may be a glob)."""
    if source.kind == ARTIFACT:
        return any(fnmatch.fnmatchcase(path, source.name) for path in record.artifacts)
    held = {
        RUN_TAG: record.run_tags,
        VERSION_TAG: record.version_tags,
        REGISTRY: {k: v for k, v in record.registry.items() if v},
        INPUT: dict.fromkeys(record.inputs, "1"),
        TRAIL: dict.fromkeys(record.trail, "1"),
    }[source.kind]
    return source.name in held


def judge(item: Item, record: Record) -> dict[str, Any]:
    """One item's status against the record: covered, partly or not covered, with what is missing and why."""
    gaps = {s: shortfall(s, record) for s in item.needs}
    missing = [s for s, gap in gaps.items() if gap]
    if not item.needs:
        status, why = NOT_COVERED, item.outside
    elif missing:
        status, why = NOT_COVERED, "; ".join(gaps[s] for s in missing)
    else:
        status, why = (PARTLY, item.outside) if item.outside else (COVERED, "")
    return {
        "framework": item.framework,
        "ref": item.ref,
        "title": item.title,
        "status": status,
        "statement": f"{status}: {why}" if why else status,
        "not_covered": why,
        "evidence": [{**asdict(s), "present": s not in missing} for s in item.needs],
    }


def resolve(record: Record) -> dict[str, Any]:
    """The export: every item judged against the record, and a count per framework and status."""
    items = [judge(item, record) for item in ITEMS]
    summary = {
        framework: {
            s: sum(1 for i in items if i["framework"] == framework and i["status"] == s)
            for s in (COVERED, PARTLY, NOT_COVERED)
        }
        for framework in (ANNEX_IV, NIST)
    }
    functions = {f: [i["ref"] for i in items if i["ref"].startswith(f"{f} ")] for f in NIST_FUNCTIONS}
    return {
        "model": record.model,
        "version": record.version,
        "run_id": record.run_id,
        "artifact_uri": record.artifact_uri,
        "summary": summary,
        "nist_functions": functions,
        "items": items,
    }


def to_card(export: dict[str, Any]) -> Card:
    """The export as a document for people (evidence.md)."""
    card = Card()
    card.heading(f"Technical-documentation evidence: {export['model']} v{export['version']}", 1)
    card.para(
        f"MLflow run {export['run_id']} (artifacts under {export['artifact_uri']}). Each item is judged against "
        "what the run, the registry and the sign-off trail hold now: covered only when every piece of evidence "
        "named is present. This maps evidence; it is not a conformity assessment."
    )
    card.table(["framework", COVERED, PARTLY, NOT_COVERED], [[f, *c.values()] for f, c in export["summary"].items()])
    for framework in (ANNEX_IV, NIST):
        card.heading(framework)
        rows = [
            [i["ref"], i["title"], i["status"], evidence_text(i["evidence"]), i["not_covered"] or "-"]
            for i in export["items"]
            if i["framework"] == framework
        ]
        card.table(["item", "what", "status", "evidence", "not covered, and why"], rows)
    return card


def evidence_text(evidence: list[dict[str, Any]]) -> str:
    """The evidence of an item in one cell: kind, name, and whether it is there."""
    return "; ".join(f"{e['kind']} {e['name']}" + ("" if e["present"] else " (MISSING)") for e in evidence) or "none"
