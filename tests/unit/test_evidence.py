"""The explanations in the record: the card's section, the sign-off form's links and figures, the auditor's export."""

import json
from pathlib import Path

import pytest

from humane.core.errors import cli
from humane.governance import audit_trail, evidence, signoff
from humane.governance.card import EXPLANATIONS_ARTIFACT, Card, add_explanations
from humane.governance.store import client
from tasks import evidence as evidence_task

ANNEX_IV_REFS = {"1", "2(a)", "2(b)", "2(c)", "2(d)", "2(e)", "2(f)", "2(g)", "4", "5", "6", "7", "8", "9"}


def _share(value, lo=None, hi=None):
    return {"value": value, "lo": lo, "hi": hi} if lo is not None else {"value": value}


def _group(rows, shares, top, too_small=False):
    return {"rows": rows, "too_small": too_small, "shares": shares, "top": top}


OVERALL_SHARES = {
    "relationship": (0.31, 0.29, 0.33),
    "capital-gain": (0.22, 0.19, 0.25),
    "education-num": (0.18, 0.16, 0.2),
    "age": (0.14, 0.12, 0.16),
    "marital-status": (0.1, 0.08, 0.12),
    "hours-per-week": (0.05, 0.04, 0.06),
}
SMALL_GROUP = "<withheld group #1>"  # how the audit names a group too small to judge


def attributions_fixture() -> dict:
    """importance(...)'s output: overall shares, per-group shares (one group too small: its rows only), differences."""
    overall = {c: _share(*s) for c, s in OVERALL_SHARES.items()}
    male = {c: _share(s["value"] + 0.02, s["lo"], s["hi"] + 0.04) for c, s in overall.items()}
    female = {c: _share(s["value"] - 0.02, s["lo"] - 0.04, s["hi"]) for c, s in overall.items()}
    return {
        "columns": list(OVERALL_SHARES),
        "overall": {"rows": 2000, "shares": overall, "top": ["relationship", "capital-gain", "education-num"]},
        "groups": {
            "sex": {
                "Male": _group(1340, male, ["relationship", "capital-gain"]),
                "Female": _group(660, female, ["capital-gain", "relationship"]),
            },
            "race": {"White": _group(1988, overall, ["age"]), SMALL_GROUP: _group(12, {}, [], too_small=True)},
        },
        "differences": {
            "sex": {
                "Male": {"relationship": _share(0.081, 0.05, 0.11), "age": _share(-0.01, -0.03, 0.01)},
                "Female": {"relationship": _share(-0.081, -0.11, -0.05), "capital-gain": _share(0.04, 0.01, 0.07)},
            },
            "race": {"White": {"age": _share(0.002, -0.01, 0.012)}},
        },
    }


def proxies_fixture() -> dict:
    """proxy_report(...)'s output with the attribution share through the proxies: one measured, one not."""
    sex = {"auc": 0.842, "folds": 5, "groups": ["Female", "Male"], "left_out": []}
    sex |= {"columns": {"relationship": 0.81, "marital-status": 0.74, "age": 0.55}}
    race = {"auc": float("nan"), "folds": 5, "groups": ["White"], "left_out": [SMALL_GROUP], "columns": {}}
    race |= {"proxies": [], "why": "fewer than 2 groups of 50 rows", "attribution_share": float("nan")}
    return {"sex": sex | {"proxies": ["relationship", "marital-status"], "attribution_share": 0.41}, "race": race}


def cohort(i: int, lo: float, **fields) -> dict:
    """One judged error cohort (its Wilson interval's lower bound `lo`)."""
    sex = {"Male": {"share": 0.97, "overall_share": 0.67}, "Female": {"share": 0.03, "overall_share": 0.33}}
    return {
        "rule": f"relationship = Husband and education-num > {12.5 + i}",
        "conditions": [],
        "rows": 200 - i,
        "errors": 70 - i,
        "error_rate": 0.35 - i / 100,
        "lo": lo,
        "hi": lo + 0.12,
        "lift": 2.3 - i / 10,
        "groups": {"sex": sex},
        "judged": True,
        "distinguishable": True,
        **fields,
    }


def error_analysis_fixture() -> dict:
    """error_cohorts(...)'s output: judged cohorts by their interval's lower bound, then two too small to judge."""
    judged = [cohort(0, 0.29), cohort(1, 0.28), cohort(2, 0.14, distinguishable=False), cohort(3, 0.13)]
    small = [{"rule": f"age > {70 + i}", "conditions": [], "rows": 9, "judged": False} for i in range(2)]
    rates = {"rows": 2000, "error_rate": 0.15, "grown_on": 1000, "measured_on": 1000, "measured_error_rate": 0.16}
    return rates | {"cohorts": [judged[0], small[0], *judged[1:], small[1]]}


def example_fixture() -> dict:
    """The example the stage writes: one refused row's reasons and the counterfactual search's coverage."""
    found = {"changes": {"hours-per-week": 50, "education-num": 13}, "probability": 0.56}
    return {
        "reasons": ["capital-gain", "education-num"],
        "counterfactuals": {"searched": 40, "found": 31, "example": found},
    }


def explanations_fixture() -> dict:
    """A report shaped as the explain stage writes it (issue 20's contract), with Adult-like figures."""
    return {
        "method": "integrated_gradients",
        "sample_rows": 2000,
        "seed": 13,
        "completeness_gap": 0.0007,
        "attributions": attributions_fixture(),
        "proxies": proxies_fixture(),
        "error_analysis": error_analysis_fixture(),
        "example": example_fixture(),
        "plots": ["overall.png", "sex.png", "sex_differences.png"],
    }


# --- the card ------------------------------------------------------------------------------------------------------


def test_the_cards_explanations_state_attributions_proxies_and_the_three_worst_cohorts():
    card = Card()
    add_explanations(card, explanations_fixture())
    text = card.to_markdown()
    assert "## Explanations" in text and "integrated gradients on 2000 test rows (seed 13)" in text
    assert "| relationship | 31.0% [29.0%, 33.0%] |" in text  # top inputs overall, with their interval
    assert "| Female | 660 | capital-gain 20.0% [15.0%, 25.0%]; relationship 29.0% [25.0%, 33.0%] |" in text
    small = next(line for line in text.splitlines() if line.startswith(f"| {SMALL_GROUP} |"))
    assert small == f"| {SMALL_GROUP} | 12 | too small to judge |"  # its rows only: no share, no percentage
    # The largest differences first, in percentage points with intervals.
    assert "Male: relationship +8.1 pp [+5.0, +11.0]; Female: relationship -8.1 pp [-11.0, -5.0]; Female: " in text
    assert "| sex | 0.842 (5 folds) | relationship (0.810), marital-status (0.740) | 41.0% |" in text
    assert "| race | not measured: fewer than 2 groups of 50 rows | none | n/a |" in text
    cohorts = [line for line in text.splitlines() if line.startswith("| relationship = Husband")]
    assert len(cohorts) == 3 and "education-num > 15.5" not in text  # the fourth is not shown
    assert cohorts[0].startswith("| relationship = Husband and education-num > 12.5 | 200 | 35.0% [29.0%, 41.0%] |")
    assert "sex: Male 97% (overall 67%)" in cohorts[0]
    assert "plots/explain/overall.png, plots/explain/sex.png, plots/explain/sex_differences.png" in text
    assert "<td>0.842 (5 folds)</td>" in card.to_html("card")
    assert "for one refused test row: capital-gain, education-num. A counterfactual within two changes" in text
    assert "for 31 of 40 refused rows searched; e.g. hours-per-week → 50, education-num → 13." in text


def test_the_card_renders_a_report_built_by_the_explain_librarys_own_functions():
    """The section reads what importance, proxy_report and error_cohorts return (not only the fixture's shape)."""
    import numpy as np
    import pandas as pd

    from humane.fairness.error_analysis import error_cohorts
    from humane.fairness.proxies import proxy_metrics, proxy_report
    from humane.modeling.attribution import importance
    from humane.modeling.params import ExplainParams

    rng = np.random.default_rng(0)
    n = 600
    sex = pd.Series(rng.choice(["Female", "Male"], n))
    husband = (sex == "Male") & (rng.random(n) < 0.8)  # a planted stand-in for sex
    age = rng.integers(18, 80, n)
    raw = pd.DataFrame({"relationship": np.where(husband, "Husband", "Other"), "age": age})
    features = pd.DataFrame(
        {
            "cat__relationship_Husband": husband.astype(float),
            "cat__relationship_Other": (~husband).astype(float),
            "num__age": age / 80,
        }
    )
    groups = {"sex": sex}
    settings = ExplainParams(bootstrap=20, proxy_folds=3)
    attributions = importance(
        rng.normal(size=(n, 2)) * [2.0, 1.0],
        ["relationship", "age"],
        groups,
        bootstrap=20,
        seed=1,
        top_k=2,
        min_rows=50,
    )
    proxies = proxy_report(features, ["relationship", "age"], [0, 0, 1], groups, settings, min_rows=50)
    shares = {c: v["value"] for c, v in attributions["overall"]["shares"].items()}
    for feature, share in proxy_metrics(proxies, shares)["proxy_attribution_share"].items():
        proxies[feature]["attribution_share"] = share
    errors = (husband & (age > 50)).to_numpy() | (rng.random(n) < 0.05)  # a planted high-error cohort
    report = {
        "method": "integrated_gradients",
        "sample_rows": n,
        "seed": 1,
        "completeness_gap": 1e-5,
        "attributions": attributions,
        "proxies": proxies,
        "error_analysis": error_cohorts(raw, errors, groups, settings, seed=1, min_rows=30),
        "plots": ["overall.png"],
    }
    card = Card()
    add_explanations(card, json.loads(json.dumps(report)))  # as read back from reports/explanations.json
    text = card.to_markdown()
    assert "| relationship | " in text and "Top inputs by sex" in text and "| Female | " in text
    assert "| sex | " in text and "relationship (" in text  # the planted stand-in, named with its own AUC
    # The worst cohort heads its table. The tree names the planted cohort by either one-hot column of relationship
    # and in either order (the seed picks: 53 of 100 seeds had no line starting "| relationship = Husband").
    lines = text.splitlines()
    worst = lines[next(i for i, line in enumerate(lines) if line.startswith("| cohort | rows |")) + 2]
    assert "relationship = Husband" in worst or "relationship ≠ Other" in worst, worst
    assert "age > " in worst and "sex: Male" in worst, worst


def test_a_group_too_small_to_judge_shows_its_rows_only_whatever_the_report_holds():
    report = explanations_fixture()
    small = report["attributions"]["groups"]["race"][SMALL_GROUP]
    small |= {"shares": {"age": _share(0.537)}, "top": ["age"]}  # figures the card must not print
    report["attributions"]["differences"]["race"][SMALL_GROUP] = {"age": _share(0.9, 0.8, 0.95)}
    card = Card()
    add_explanations(card, report)
    text = card.to_markdown()
    assert f"| {SMALL_GROUP} | 12 | too small to judge |" in text and "53.7%" not in text and "+90.0" not in text
    assert "Largest differences in share (group minus the other rows of race): White: age +0.2 pp" in text


def test_the_card_lists_the_worst_judged_cohorts_marks_the_indistinct_and_counts_the_too_small():
    card = Card()
    add_explanations(card, explanations_fixture())
    text = card.to_markdown()
    shown = [line for line in text.splitlines() if line.startswith("| relationship = Husband")]
    assert [line.split(" | ")[0] for line in shown] == [
        f"| relationship = Husband and education-num > {x}" for x in (12.5, 13.5, 14.5)
    ]
    assert "(not distinguishable from the overall rate)" in shown[2] and "distinguishable" not in shown[0] + shown[1]
    assert "age > 70" not in text and "| 9 |" not in text  # the cohorts too small to judge: no figure
    assert "2 cohort(s) below the audit's minimum group size: too small to judge, not shown." in text


def test_a_card_whose_cohorts_are_all_too_small_says_none_could_be_judged():
    report = explanations_fixture()
    report["error_analysis"]["cohorts"] = [c for c in report["error_analysis"]["cohorts"] if not c["judged"]]
    card = Card()
    add_explanations(card, report)
    assert "No cohort was large enough to judge. 2 cohort(s) below" in card.to_markdown()


@pytest.mark.parametrize("report", [None, {}])
def test_a_card_without_explanations_says_so_in_one_line(report):
    card = Card()
    add_explanations(card, report)
    assert card.blocks[0] == ("heading", (2, "Explanations"))
    assert len(card.blocks) == 2 and card.blocks[1][1].startswith("Not recorded: this model has no explanation")


# --- the sign-off form ---------------------------------------------------------------------------------------------

PROXY_CHECK = {
    "rule": "max",
    "metric": "explain.proxy_attribution_share.sex",
    "threshold": 0.5,
    "value": 0.41,
    "passed": True,
}


def test_the_forms_text_links_the_explanations_and_states_each_proxy_figure_beside_its_check():
    links = {EXPLANATIONS_ARTIFACT: "file:///a/reports/explanations.json", "plots/explain/sex.png": "file:///a/s.png"}
    figures = {"explain.proxy_auc.sex": 0.842, "explain.proxy_attribution_share.sex": 0.41}
    text = signoff.explanation_text(links, figures, [PROXY_CHECK, {**PROXY_CHECK, "metric": "test.accuracy"}])
    assert "[explanations.json](file:///a/reports/explanations.json), [sex.png](file:///a/s.png)" in text
    assert "explain.proxy_attribution_share.sex 0.410 (gate: max 0.5, pass)" in text
    assert "explain.proxy_auc.sex 0.842 (no gate rule)" in text and "test.accuracy" not in text
    missing = signoff.explanation_text({}, figures, [])
    assert "none recorded for this run" in missing and "explain.proxy" not in missing


def test_the_form_reads_the_candidates_run_for_links_and_proxy_figures(ran_project, tmp_path):
    uri = f"sqlite:///{ran_project / 'mlflow.db'}"
    registration = json.loads((ran_project / "reports/registration.json").read_text())
    name, version = registration["model_name"], str(registration["version"])
    mlflow_client = client(uri)
    run_id = mlflow_client.get_model_version(name, version).run_id
    report, plot = tmp_path / "explanations.json", tmp_path / "sex_differences.png"
    report.write_text(json.dumps(explanations_fixture()))
    plot.write_bytes(b"\x89PNG")
    mlflow_client.log_artifact(run_id, str(report), "reports")
    mlflow_client.log_artifact(run_id, str(plot), "plots/explain")
    mlflow_client.log_metric(run_id, "explain.proxy_auc.sex", 0.842)
    mlflow_client.log_metric(run_id, "explain.proxy_attribution_share.sex", 0.41)
    mlflow_client.set_model_version_tag(name, version, "decision.json", json.dumps({"checks": [PROXY_CHECK]}))
    text = signoff.explanation_evidence(mlflow_client, uri, name, version)
    run = mlflow_client.get_run(run_id)
    base = run.info.artifact_uri
    assert f"[explanations.json]({base}/reports/explanations.json)" in text
    assert f"[sex_differences.png]({base}/plots/explain/sex_differences.png)" in text
    assert "explain.proxy_auc.sex 0.842 (no gate rule)" in text and "(gate: max 0.5, pass)" in text
    server = signoff.artifact_link("http://u:secret@host:5000/", run, "plots/explain/a.png")
    assert (
        server == f"http://host:5000/#/experiments/{run.info.experiment_id}/runs/{run_id}/artifacts/plots/explain/a.png"
    )


# --- the auditor's export ------------------------------------------------------------------------------------------


def full_record() -> evidence.Record:
    """A version whose run holds every piece of evidence any item names."""
    needs = [s for item in evidence.ITEMS for s in item.needs]
    by = {kind: {s.name for s in needs if s.kind == kind} for kind in {s.kind for s in needs}}
    return evidence.Record(
        "m",
        "1",
        "r",
        "file:///a",
        artifacts=[name.replace("*", "sex") for name in by[evidence.ARTIFACT]],
        run_tags=dict.fromkeys(by[evidence.RUN_TAG], "x"),
        version_tags=dict.fromkeys(by[evidence.VERSION_TAG], "x") | {signoff.APPROVAL_TAG: signoff.APPROVED},
        registry=dict.fromkeys(by[evidence.REGISTRY], "x"),
        inputs=["training", "test"],
        trail=["pending", "approved"],
        decisions=["approved"],
    )


def test_every_annex_iv_item_and_nist_function_is_judged_and_covered_only_with_its_evidence():
    export = evidence.resolve(full_record())
    items = {(i["framework"], i["ref"]): i for i in export["items"]}
    refs = {ref.split(" ")[0] for framework, ref in items if framework == evidence.ANNEX_IV}
    assert refs == ANNEX_IV_REFS | {"2(h)", "3"}
    assert set(export["nist_functions"]) == set(evidence.NIST_FUNCTIONS) and all(export["nist_functions"].values())
    for item in evidence.ITEMS:
        judged = items[(item.framework, item.ref)]
        expected = evidence.NOT_COVERED if not item.needs else evidence.PARTLY if item.outside else evidence.COVERED
        assert judged["status"] == expected, item.ref
        assert all(e["present"] for e in judged["evidence"])
    for ref in ("7", "8"):  # outside the pipeline altogether, whatever the run holds
        assert items[(evidence.ANNEX_IV, ref)]["status"] == evidence.NOT_COVERED
    assert items[(evidence.NIST, "MEASURE 2.9")]["status"] == evidence.COVERED


@pytest.mark.parametrize(
    ("drop", "ref"),
    [
        (lambda r: r.artifacts.remove(EXPLANATIONS_ARTIFACT), "MEASURE 2.9"),
        (lambda r: r.artifacts.remove("plots/explain/sex.png"), "MEASURE 2.9"),
        (lambda r: r.version_tags.pop("approval"), "GOVERN 2.1"),
        (lambda r: (r.trail.clear(), r.decisions.clear()), "GOVERN 2.1"),
        (lambda r: r.inputs.clear(), "2(d)"),
        (lambda r: r.run_tags.pop("git_commit"), "MEASURE 2.1"),
    ],
)
def test_missing_evidence_turns_its_items_to_not_covered_naming_it(drop, ref):
    record = full_record()
    drop(record)
    items = {i["ref"]: i for i in evidence.resolve(record)["items"]}
    assert items[ref]["status"] == evidence.NOT_COVERED
    assert items[ref]["statement"].startswith("not covered: ") and items[ref]["statement"].endswith(" missing")
    assert [e for e in items[ref]["evidence"] if not e["present"]]


def test_a_version_requested_but_never_signed_is_not_covered_for_oversight_saying_why():
    record = full_record()
    record.version_tags["approval"], record.trail, record.decisions = "pending", ["pending"], []
    items = {i["ref"]: i for i in evidence.resolve(record)["items"]}
    for ref in ("2(e)", "GOVERN 2.1", "MEASURE 2.8"):
        assert items[ref]["status"] == evidence.NOT_COVERED, ref
    never = "trail entry approved or rejected for this version's sign-off request missing (its sign-off was requested"
    assert items["MEASURE 2.8"]["statement"] == f"not covered: {never} but never decided)"
    assert items["2(e)"]["not_covered"].startswith("version tag approval is 'pending', not approved or rejected; ")
    record.version_tags["approval"], record.trail, record.decisions = "rejected", ["pending", "rejected"], ["rejected"]
    items = {i["ref"]: i for i in evidence.resolve(record)["items"]}
    assert items["MEASURE 2.8"]["status"] == evidence.COVERED and items["2(e)"]["status"] == evidence.PARTLY


def test_only_a_decision_answering_the_versions_own_request_counts_as_signed(tmp_path):
    trail = audit_trail.FileTrail(tmp_path / "trail.jsonl")
    entry = {"model": "m", "version": "1", "run_id": "r", "by": "ana"}
    first = trail.append({**entry, "event": "pending"})
    trail.append({**entry, "event": "approved", "pending_entry": first["hash"]})  # an earlier request's answer
    again = trail.append({**entry, "event": "pending"})
    trail.append({**entry, "event": "promoted", "version": "2", "pending_entry": again["hash"]})
    assert evidence.decisions_of(audit_trail.entries_of(trail, "m", "1", "r"), again["hash"]) == []
    assert evidence.decisions_of(audit_trail.entries_of(trail, "m", "1", "r"), None) == []
    trail.append({**entry, "event": "rejected", "pending_entry": again["hash"]})
    assert evidence.decisions_of(audit_trail.entries_of(trail, "m", "1", "r"), again["hash"]) == ["rejected"]


def _export(project: Path, monkeypatch: pytest.MonkeyPatch, *argv: str) -> dict:
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    evidence_task.main(list(argv))
    return json.loads((Path(argv[argv.index("--out") + 1]) / evidence_task.JSON_NAME).read_text())


def test_the_export_of_a_pipeline_run_judges_its_artifacts_and_fails_clearly(ran_project, monkeypatch, capsys):
    registration = json.loads((ran_project / "reports/registration.json").read_text())
    name, version = registration["model_name"], str(registration["version"])
    out = ran_project / "evidence-out"
    export = _export(ran_project, monkeypatch, name, version, "--out", str(out))
    assert (out / evidence_task.MARKDOWN_NAME).read_text().count("| 2(g) |") == 1
    items = {i["ref"]: i for i in export["items"]}
    assert {ref.split(" ")[0] for ref in items if not ref[0].isalpha()} == ANNEX_IV_REFS | {"2(h)", "3"}
    assert set(export["nist_functions"]) == set(evidence.NIST_FUNCTIONS)
    # Covered (or partly) only where every artifact named is in the run.
    run_files = set(evidence.artifact_paths(client(f"sqlite:///{ran_project / 'mlflow.db'}"), export["run_id"]))
    for item in export["items"]:
        named = [e["name"] for e in item["evidence"] if e["kind"] == evidence.ARTIFACT]
        if item["status"] != evidence.NOT_COVERED:
            assert all(any(Path(f).match(n) for f in run_files) for n in named), item["ref"]
    assert items["3 (accuracy per group)"]["status"] == evidence.COVERED
    # The run's audit report removed from its artifacts: the items resting on it are no longer covered.
    (Path(export["artifact_uri"].removeprefix("file://")) / "reports" / "audit.json").unlink(missing_ok=True)
    again = {i["ref"]: i for i in _export(ran_project, monkeypatch, name, version, "--out", str(out))["items"]}
    for ref in ("3 (accuracy per group)", "2(g)", "MEASURE 2.11"):
        assert again[ref]["statement"] == "not covered: run artifact reports/audit.json missing", ref
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli(lambda: evidence_task.main([name, "99", "--out", str(ran_project / "nothing")]))
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"error: {name} v99 does not exist in the registry\n"
    assert not (ran_project / "nothing").exists()


def test_a_silent_server_exits_10_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("HUMANE_SERVER_RETRY_S", "4")
    with pytest.raises(SystemExit) as exited:
        cli(lambda: evidence_task.main(["humane-x", "1"]))
    err = capsys.readouterr().err
    assert exited.value.code == 10 and err.startswith("error: MLflow server http://127.0.0.1:9 did not answer")
    assert err.count("\n") == 1 and not (tmp_path / "reports").exists()
