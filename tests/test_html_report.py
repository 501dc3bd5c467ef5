"""`labelqa report --html FILE`: one self-contained file with the week's numbers, and
annotation text escaped."""

from __future__ import annotations

import re

import pytest
from conftest import record
from plotly.offline import get_plotlyjs

from metrics import store
from metrics.cli import main
from metrics.config import load_config
from metrics.html_report import render_html
from metrics.report import build_report
from metrics.weekly import latest_week, top_movers

# Anything that would make the browser fetch: a src/href/url() to a network address.
NETWORK_REF = re.compile(
    r"""<(?:script|link|img|iframe|embed|source|object)\b[^>]*\b(?:src|href|data)\s*=\s*"""
    r"""["']?\s*(?:https?:)?//""", re.IGNORECASE)


def html_of(config, week=None) -> tuple[str, dict]:
    with store.open_db(config.database, read_only=True) as con:
        week = week or latest_week(con)
        return render_html(con, config, week), build_report(con, config, week)


def pct(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def test_self_contained_with_the_weeks_numbers(demo_project):
    page, rep = html_of(load_config(demo_project))
    assert page.startswith("<!DOCTYPE html>")
    assert not NETWORK_REF.search(page)
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", page)
    scripts = re.findall(r"<script\b[^>]*>", page)
    assert scripts and all("src" not in s for s in scripts)
    assert page.count("Plotly.newPlot") == 3            # the three trend charts
    assert page.count(get_plotlyjs()[:500]) == 1         # plotly.js inline, once
    assert f"Weekly QA report · demo · {rep['week']}" in page
    assert f"{rep['annotations']:,} annotations" in page
    for rate, ci in ((rep["schema"]["error_rate"], rep["schema"]["error_rate_ci"]),
                     (rep["policy"]["violation_rate"], rep["policy"]["violation_rate_ci"]),
                     (rep["visual"]["disagreement_rate"],
                      rep["visual"]["disagreement_rate_ci"])):
        assert f'<div class="value">{pct(rate)}</div>' in page
        assert f"95% CI {ci[0] * 100:.1f}–{ci[1] * 100:.1f}%" in page
    for rule in rep["policy"]["by_rule"]:
        assert (f"<td class=\"\">{rule['rule']}</td>"
                f"<td class=\"\">{rule['severity']}</td>") in page
    assert "Top movers against" in page and "Guideline log" in page
    # Movers read in the overview's units: a rule per 1,000 annotations, others in %.
    with store.open_db(load_config(demo_project).database, read_only=True) as con:
        movers = top_movers(con, load_config(demo_project), rep["week"])
    assert any(m["kind"] == "rule" for m in movers)
    for m in movers:
        per = m["kind"] == "rule"
        shown = f"{m['rate'] * 1000:.1f} per 1,000" if per else pct(m["rate"])
        change = f"{m['delta'] * 1000:+.1f} per 1,000" if per else f"{m['delta'] * 100:+.1f} pp"
        assert f'<td class="num">{shown}</td><td class="num">{change}</td>' in page


def test_cli_writes_the_file_for_the_week(demo_project, tmp_path, capsys):
    out = tmp_path / "report.html"
    code = main(["report", "--project", str(demo_project), "--html", str(out),
                 "--week", "2026-W40"])
    assert code == 0
    assert "2026-W40" in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    _, rep = html_of(load_config(demo_project), "2026-W40")
    assert "Weekly QA report · demo · 2026-W40" in page
    assert f'<div class="value">{pct(rep["policy"]["violation_rate"])}</div>' in page
    # The guideline v2 took effect in 2026-W40: the report says so.
    assert "took effect this week" in page


def test_cli_html_and_json_exclude_each_other(demo_project, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["report", "--project", str(demo_project), "--json", "--html",
              str(tmp_path / "r.html")])
    assert exc.value.code == 2


def test_cli_unwritable_file_exits_2(demo_project, tmp_path, capsys):
    code = main(["report", "--project", str(demo_project), "--html",
                 str(tmp_path / "missing" / "r.html")])
    assert code == 2
    assert "cannot write" in capsys.readouterr().err


def test_annotation_text_is_escaped(project):
    evil = "<img src=x onerror=alert(1)>"
    records = [
        record(item="img-1", annotator="<b>ann-1</b>",
               caption=f"{evil} A Nike car parked on a street."),
        record(item="img-2", annotator="ann-2", weather="<script>alert(2)</script>",
               caption="A car parked on a quiet street."),
        record(item="img-3", annotator="ann-3"),
    ]
    project.ingest(project.write("evil.jsonl", records))
    page, rep = html_of(project.config, "2026-W02")
    assert rep["policy"]["violation_rate"] == pytest.approx(1 / 3)
    assert "&lt;img src=x onerror=alert(1)&gt;" in page       # shown, as text
    assert evil not in page
    assert "<script>alert(2)" not in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page     # in the contract error
    assert "<b>ann-1</b>" not in page and "&lt;b&gt;ann-1&lt;/b&gt;" in page
    assert "<mark>Nike</mark>" in page                          # the offending word
    assert not NETWORK_REF.search(page)


def test_week_without_data_says_so(project):
    project.ingest(project.write("w02.jsonl", [record()]))
    page, rep = html_of(project.config, "2026-W05")
    assert rep["annotations"] == 0
    assert '<div class="value">–</div>' in page
    assert "no annotations of roles annotator, reviewer or gold in 2026-W05" in page
