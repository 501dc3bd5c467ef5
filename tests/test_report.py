"""`labelqa report`: the JSON keys of DESIGN "Interfaces", every M1/M2 count by hand,
the text output, `--fail-on` and the exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import CONFIG, record
from statsmodels.stats.proportion import proportion_confint
from test_weekly import broken, clean, pair_items, week_w02

from metrics.cli import main
from metrics.report import build_report, fail_on
from metrics.weekly import default_week

# DESIGN "Interfaces", plus the reason beside each nullable rate (DESIGN "Which
# annotations count": a rate over zero units is null with a reason; visual.py's
# `disagreement_rate_reason` has the same shape).
TOP_KEYS = {"week", "annotations", "schema", "policy", "visual"}
SCHEMA_KEYS = {"error_rate", "error_rate_ci", "status", "by_path", "error_rate_reason"}
POLICY_KEYS = {"violation_rate", "violation_rate_ci", "status", "by_rule",
               "violation_rate_reason"}
VISUAL_KEYS = {"items", "pairs", "agreements", "class_disagreements",
               "presence_disagreements", "low_overlap", "disagreement_rate",
               "disagreement_rate_ci", "status", "presence", "class", "text", "schema", "iou",
               "reference"}
KIND_KEYS = {"units", "agreement", "alpha", "alpha_ci", "alpha_reason", "warnings"}


def report(project, capsys, *args: str) -> tuple[int, dict | str, str]:
    capsys.readouterr()
    code = main(["report", "--project", str(project.root), *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if "--json" in args and out else out), err


def test_report_json_counted_by_hand(project, capsys):
    project.ingest(project.write("w02.jsonl", week_w02()))
    code, rep, err = report(project, capsys, "--json", "--week", "2026-W02")
    assert code == 0 and err == ""
    assert rep["week"] == "2026-W02"
    assert rep["annotations"] == 9           # r1..r10 without the model draft r8
    s = rep["schema"]
    assert s["error_rate"] == pytest.approx(4 / 9)   # r2, r3, r6, r10
    assert s["error_rate_ci"] == pytest.approx(
        list(proportion_confint(4, 9, method="wilson")), abs=1e-12)
    assert s["status"] == "red" and s["error_rate_reason"] is None
    assert s["by_path"] == [
        {"path": "/fields/weather", "keyword": "enum", "count": 2},
        {"path": "/boxes/*/bbox", "keyword": "withinImage", "count": 1},
        {"path": "/boxes/*/label", "keyword": "enum", "count": 1},
        {"path": "/fields/weather", "keyword": "required", "count": 1},
    ]
    p = rep["policy"]
    assert p["violation_rate"] == pytest.approx(3 / 9)   # r3, r4, r7
    assert p["violation_rate_ci"] == pytest.approx(
        list(proportion_confint(3, 9, method="wilson")), abs=1e-12)
    assert p["status"] == "red"
    assert p["by_rule"] == [
        {"rule": "no-brands", "severity": "error", "count": 2,
         "per_1000": pytest.approx(2000 / 9)},
        {"rule": "caption-length", "severity": "error", "count": 1,
         "per_1000": pytest.approx(1000 / 9)},
        # A warning rule is listed with its severity: its annotations are not in M2.
        {"rule": "hedging", "severity": "warning", "count": 1,
         "per_1000": pytest.approx(1000 / 9)},
        {"rule": "no-invented-objects", "severity": "error", "count": 1,
         "per_1000": pytest.approx(1000 / 9)},
    ]
    # One annotation per item: no pairs, so M3 is undefined, with its reason.
    v = rep["visual"]
    assert (v["items"], v["pairs"], v["disagreement_rate"], v["status"]) == (0, 0, None, None)
    assert v["disagreement_rate_reason"]


def test_report_json_has_the_design_keys(project, capsys):
    recs = pair_items("2026-01-06T10:00:00Z", "p", agree=3, klass=1, gold=1)
    project.ingest(project.write("p.jsonl", recs + week_w02()))
    code, rep, _ = report(project, capsys, "--json")
    assert code == 0
    assert set(rep) == TOP_KEYS
    assert set(rep["schema"]) == SCHEMA_KEYS
    assert set(rep["policy"]) == POLICY_KEYS
    assert all(set(r) == {"path", "keyword", "count"} for r in rep["schema"]["by_path"])
    assert all(set(r) == {"rule", "severity", "count", "per_1000"}
               for r in rep["policy"]["by_rule"])
    v = rep["visual"]
    assert VISUAL_KEYS <= set(v)
    for kind in ("presence", "class", "schema", "iou"):
        assert KIND_KEYS <= set(v[kind]), kind
    assert set(v["text"]) >= {"caption", "weather", "tags"}
    for field in v["text"].values():
        assert KIND_KEYS <= set(field)
    # 3 agreeing pairs, 1 class disagreement: M3 = 1 / 4.
    assert (v["items"], v["pairs"], v["agreements"], v["class_disagreements"],
            v["presence_disagreements"]) == (4, 4, 3, 1, 0)
    assert v["disagreement_rate"] == pytest.approx(0.25) and v["status"] == "red"
    assert rep["annotations"] == 9 + 9     # 8 pair annotations + 1 gold


def test_default_week_is_the_latest_with_data(project, capsys):
    project.ingest(project.write("e.jsonl", [
        record(item="a", when="2026-01-06T10:00:00Z"),
        record(item="b", when="2026-01-13T10:00:00Z", weather="foggy"),
        record(item="c", when="2026-01-20T10:00:00Z", role="model"),   # drafts only
    ]))
    code, rep, _ = report(project, capsys, "--json")
    assert code == 0 and rep["week"] == "2026-W03"
    assert rep["annotations"] == 1 and rep["schema"]["error_rate"] == 1.0


def test_a_week_dated_ahead_does_not_take_the_default(project, capsys):
    # One annotation dated decades ahead by a typo: the report stays on the latest week
    # up to this one, and says what lies ahead.
    project.ingest(project.write("e.jsonl", [
        record(item="a", when="2026-01-06T10:00:00Z"),
        record(item="b", when="2062-11-20T10:00:00Z"),
    ]))
    code, rep, err = report(project, capsys, "--json")
    assert code == 0 and rep["week"] == "2026-W02" and rep["annotations"] == 1
    assert "1 week(s) with data are dated after 2026-W02" in err and "2062-W47" in err
    code, rep, err = report(project, capsys, "--json", "--week", "2062-W47")
    assert rep["annotations"] == 1 and err == ""


def test_default_week_rule():
    found = ["2026-W01", "2026-W05", "2062-W47"]
    assert default_week(found, "2026-W48") == "2026-W05"
    assert default_week(found, "2026-W05") == "2026-W05"
    assert default_week(found, "2026-W04") == "2026-W01"
    assert default_week(found, "2025-W52") == "2062-W47"   # all ahead: the latest
    assert default_week([], "2026-W48") is None


def test_week_without_data_gives_zero_counts_and_null_rates(project, capsys):
    project.ingest(project.write("w02.jsonl", week_w02()))
    code, rep, _ = report(project, capsys, "--json", "--week", "2026-W20")
    assert code == 0 and rep["week"] == "2026-W20" and rep["annotations"] == 0
    assert rep["schema"] == {"error_rate": None, "error_rate_ci": None, "status": None,
                             "by_path": [], "error_rate_reason":
                             "no annotations of roles annotator, reviewer or gold in 2026-W20"}
    assert rep["policy"]["violation_rate"] is None and rep["policy"]["by_rule"] == []
    assert rep["policy"]["violation_rate_reason"]
    v = rep["visual"]
    assert (v["items"], v["pairs"], v["agreements"], v["disagreement_rate"]) == (0, 0, 0, None)
    assert v["disagreement_rate_reason"]
    code, text, _ = report(project, capsys, "--week", "2026-W20")
    assert code == 0 and "n/a" in text and "no annotations" in text


def test_only_current_versions_and_no_model_records_count(project, capsys):
    project.ingest(project.write("w02.jsonl", week_w02()))
    _, first, _ = report(project, capsys, "--json", "--week", "2026-W02")
    # A later export: r2 and r6 fixed, r1 broken, and more model drafts with errors.
    project.ingest(project.write("w02b.jsonl", [
        record(item="i2", annotation_id="r2"),
        record(item="i6", annotation_id="r6"),
        record(item="i1", annotation_id="r1", caption="Nike"),
        record(item="m", annotation_id="m1", role="model", weather="foggy", caption="x"),
    ]))
    _, second, _ = report(project, capsys, "--json", "--week", "2026-W02")
    assert (first["annotations"], second["annotations"]) == (9, 9)
    assert first["schema"]["error_rate"] == pytest.approx(4 / 9)
    assert second["schema"]["error_rate"] == pytest.approx(2 / 9)     # r3, r10
    assert second["schema"]["by_path"] == [
        {"path": "/boxes/*/bbox", "keyword": "withinImage", "count": 1},
        {"path": "/boxes/*/label", "keyword": "enum", "count": 1},
        {"path": "/fields/weather", "keyword": "enum", "count": 1},
    ]
    assert second["policy"]["violation_rate"] == pytest.approx(4 / 9)  # + r1
    rules = {r["rule"]: r["count"] for r in second["policy"]["by_rule"]}
    # r1 "Nike": a brand and one word (it names no label, so nothing is invented).
    assert rules == {"no-brands": 3, "caption-length": 2, "hedging": 1,
                     "no-invented-objects": 1}


def test_text_output_shows_the_three_numbers(project, capsys):
    project.ingest(project.write("w02.jsonl", week_w02()))
    code, text, _ = report(project, capsys, "--week", "2026-W02")
    assert code == 0
    assert "week 2026-W02 (9 annotations)" in text
    assert "schema error rate" in text and "44.4%" in text and "red" in text
    assert "text policy violations" in text and "33.3%" in text
    assert "visual disagreement" in text and "no pairs this week" in text
    assert "/fields/weather  [enum]" in text
    assert "no-brands" in text and "222.2" in text
    hedging = next(line for line in text.splitlines() if "hedging" in line)
    assert "warning: not in the rate" in hedging
    assert "warning" not in next(line for line in text.splitlines() if "no-brands" in line)


THRESHOLDS = CONFIG + """
[thresholds]
schema_error_rate = [0.5, 0.9]
policy_violation_rate = [0.5, 0.9]
"""


def test_fail_on_exit_codes(project, capsys):
    project.ingest(project.write("w02.jsonl", week_w02() + clean(
        20, "2026-01-13T10:00:00Z", "ok")))
    # W02: schema 44% and policy 33%: red (thresholds 0.05 and 0.08).
    code, _, err = report(project, capsys, "--week", "2026-W02", "--fail-on", "red")
    assert code == 1
    assert "schema_error_rate 44.4% is red" in err
    assert "policy_violation_rate 33.3% is red" in err
    code, rep, _ = report(project, capsys, "--week", "2026-W02", "--json", "--fail-on",
                          "amber")
    assert code == 1 and rep["week"] == "2026-W02"     # JSON still printed
    assert report(project, capsys, "--week", "2026-W02")[0] == 0   # no --fail-on
    # W03: all green, no swing up (its rate 0 is below the chart).
    assert report(project, capsys, "--week", "2026-W03", "--fail-on", "amber")[0] == 0
    assert report(project, capsys, "--week", "2026-W03", "--fail-on", "red", "--json")[0] == 0


def test_fail_on_a_swing_up_below_the_thresholds(project, capsys):
    (project.root / "labelqa.toml").write_text(THRESHOLDS, encoding="utf-8")
    recs = (clean(20, "2026-01-06T10:00:00Z", "a") + clean(20, "2026-01-13T10:00:00Z", "b")
            + clean(20, "2026-01-20T10:00:00Z", "c")
            + broken(5, "2026-01-27T10:00:00Z", "d") + clean(15, "2026-01-27T10:00:00Z", "e"))
    project.ingest(project.write("s.jsonl", recs))
    # W05: 5 / 20 = 0.25 < amber 0.5, but p̄ = 5/80 and UCL = p̄ + 3·sqrt(p̄(1 − p̄)/20)
    # = 0.0625 + 0.1624 = 0.2249 < 0.25: a swing up.
    code, rep, err = report(project, capsys, "--json", "--fail-on", "red")
    assert code == 1 and rep["week"] == "2026-W05"
    assert rep["schema"]["status"] == "green" and rep["policy"]["status"] == "green"
    assert "schema_error_rate 25.0% swung up" in err
    assert "policy_violation_rate 25.0% swung up" in err
    code, text, _ = report(project, capsys)
    assert code == 0 and "swing up" in text
    assert report(project, capsys, "--week", "2026-W04", "--fail-on", "red")[0] == 0


def test_fail_on_function():
    rep = {"schema": {"error_rate": 0.03, "status": "amber"},
           "policy": {"violation_rate": 0.0, "status": "green"},
           "visual": {"disagreement_rate": None, "status": None}}
    assert fail_on(rep, "red", {}) == []
    assert fail_on(rep, "amber", {}) == ["schema_error_rate 3.0% is amber"]
    assert fail_on(rep, "red", {"policy_violation_rate": "up"}) == [
        "policy_violation_rate 0.0% swung up above its p-chart upper control limit"]
    assert fail_on(rep, "red", {"policy_violation_rate": "down"}) == []
    with pytest.raises(ValueError):
        fail_on(rep, "green", {})


@pytest.mark.parametrize("week", ["2026-W60", "47", "2026-47", "W47"])
def test_malformed_week_exits_2_with_one_message(project, capsys, week):
    project.ingest(project.write("w02.jsonl", week_w02()))
    code, out, err = report(project, capsys, "--week", week, "--json")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "malformed week" in err and "Traceback" not in err


def test_no_database_exits_2_saying_to_ingest(project, capsys):
    code, out, err = report(project, capsys, "--json")
    assert code == 2 and out == ""
    assert "labelqa ingest" in err and "Traceback" not in err


def test_build_report_reads_a_read_only_connection(project):
    project.ingest(project.write("w02.jsonl", week_w02()))
    con = project.connect()          # read_only=True
    rep = build_report(con, project.config)
    assert rep["week"] == "2026-W02" and rep["annotations"] == 9
    con.close()


def test_a_closed_output_pipe_ends_quietly(demo_project):
    # `labelqa report | head`: the reader is gone before the report is written.
    proc = subprocess.Popen(
        [sys.executable, "-m", "metrics.cli", "report", "--project", str(demo_project),
         "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_a_path_the_system_refuses_is_one_line_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["init", str(blocker / "project")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labelqa init: error: ") and "Not a directory" in err
    assert "Traceback" not in err
