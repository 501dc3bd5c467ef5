"""AppTest of the overview pages: Overview (app.py), Schema errors, Text policy, Trends and
guideline changes.

Each page runs without an exception on the demo project and on an empty one, and shows
what `metrics` computes for the view in its URL: the overview's numbers are
`labelqa report --json`'s (`build_report`), the week and the filters come from the URL
and change what is shown.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest
from conftest import no_exception, page_texts, query, record, run_page
from streamlit.testing.v1 import AppTest

from metrics import overview, weekly
from metrics.report import build_report
from pages.common.ui import fmt_rate

ROOT = Path(__file__).resolve().parent.parent
PAGES = {
    "overview": "app.py",
    "schema": "pages/1_Schema_errors.py",
    "policy": "pages/2_Text_policy.py",
    "trends": "pages/5_Trends_and_guidelines.py",
}
NAMES = {"schema": "Schema error rate", "policy": "Text policy violation rate",
         "visual": "Visual disagreement (stable sample)"}
RATE_KEYS = {"schema": "error_rate", "policy": "violation_rate",
             "visual": "disagreement_rate"}


def app(name: str, **params: str) -> AppTest:
    return run_page(ROOT / PAGES[name], **params)


texts = page_texts


def metric(at: AppTest, label_ends: str):
    found = [m for m in at.metric if m.label.endswith(label_ends)]
    assert found, [m.label for m in at.metric]
    return found[0]


def frame(at: AppTest, column: str) -> pd.DataFrame:
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    raise AssertionError(f"no table with a column {column!r}")


def pp(delta: float) -> str:
    return f"{delta * 100:+.1f} pp"


# -- every page, demo and empty ----------------------------------------------------------


@pytest.mark.parametrize("name", list(PAGES))
def test_page_runs_on_demo(demo, name):
    at = app(name)
    no_exception(at)
    latest = query(demo, overview.available_weeks)[-1]
    assert at.query_params["week"] == latest          # the latest week, in the URL
    assert at.metric, "every page shows its numbers as metrics"


@pytest.mark.parametrize("name", list(PAGES))
def test_page_runs_on_empty_project_and_says_what_is_missing(empty, name):
    at = app(name)
    no_exception(at)
    info = "\n".join(m.value for m in at.info)
    assert "No annotations" in info and "labelqa ingest" in info
    assert not at.metric and not at.dataframe


# -- overview ----------------------------------------------------------------------------


def assert_overview_matches_report(at: AppTest, config, week: str) -> None:
    rep = query(config, build_report, week)
    prev = query(config, build_report, weekly.previous_week(week))
    for section, name in NAMES.items():
        shown = metric(at, name)
        rate = rep[section][RATE_KEYS[section]]
        assert shown.value == fmt_rate(rate)
        before = prev[section][RATE_KEYS[section]]
        if rate is not None and before is not None:
            assert shown.delta == pp(rate - before)
        ci = rep[section][RATE_KEYS[section] + "_ci"]
        assert f"95% CI {ci[0] * 100:.1f}–{ci[1] * 100:.1f}%" in texts(at)
        status = rep[section]["status"]
        assert status in shown.label or {"green": "🟢", "amber": "🟠", "red": "🔴"}[
            status] in shown.label
    assert f"Week {week} · {rep['annotations']:,} annotations" in texts(at)


def test_overview_equals_report_json_for_the_latest_week(demo):
    at = app("overview")
    no_exception(at)
    week = at.query_params["week"]
    assert_overview_matches_report(at, demo, week)
    assert at.get("download_button")                     # the HTML report
    movers = query(demo, weekly.top_movers, week)
    mover_values = [m.value for m in at.metric[3:]]
    assert mover_values == [f"{m['rate'] * 1000:.1f} per 1,000" if m["kind"] == "rule"
                            else fmt_rate(m["rate"]) for m in movers]
    g = weekly.version_in_force(demo, week)
    assert f"guideline **{g.version}** in force" in texts(at)


def test_overview_rule_movers_are_per_1000_like_the_text_policy_page(demo):
    """A rule's rate reads in the Text policy page's unit (annotations per 1,000), not as
    a percentage next to it; path, label and pair movers stay in % and pp."""
    at = app("overview", week="2026-W47")
    no_exception(at)
    movers = query(demo, weekly.top_movers, "2026-W47")
    rule = next(i for i, m in enumerate(movers) if m["kind"] == "rule")
    shown, mv = at.metric[3 + rule], movers[rule]
    assert shown.value == f"{mv['rate'] * 1000:.1f} per 1,000"
    assert shown.delta == f"{mv['delta'] * 1000:+.1f} per 1,000"
    per_1000 = next(r["per_1000"] for r in query(demo, weekly.policy_week, "2026-W47")[
        "by_rule"] if r["rule"] == mv["key"])
    assert shown.value == f"{per_1000:.1f} per 1,000"
    assert "per 1,000 of the week's annotations" in texts(at)
    other = next(i for i, m in enumerate(movers) if m["kind"] != "rule")
    assert at.metric[3 + other].delta == pp(movers[other]["delta"])


# The page, its URL filter and the session key of the widget that filter sets.
MOVER_PAGES = {"path": ("pages/1_Schema_errors.py", "path", "schema_path"),
               "rule": ("pages/2_Text_policy.py", "rule", "policy_rule"),
               "label": ("pages/3_Visual_agreement.py", "label", "va_label"),
               "pair": ("pages/3_Visual_agreement.py", "pair", "va_pair")}


@pytest.mark.parametrize("kind", list(MOVER_PAGES))
def test_each_mover_links_to_its_page_filtered_to_it_for_the_week(demo, monkeypatch, kind):
    """A mover card links to the page behind it with the week and the filter that shows
    that path's, rule's, label's or pair's annotations; the page picks the filter up."""
    from urllib.parse import parse_qsl

    import streamlit as st

    week = "2026-W43"   # every kind moves this week (at 1 unit)
    mover = next(m for m in query(demo, weekly.top_movers, week, n=1000, min_units=1)
                 if m["kind"] == kind)
    monkeypatch.setattr(overview, "top_movers", lambda con, config, w: [mover])
    st.cache_data.clear()   # the overview of this week may be cached without the patch
    try:
        at = app("overview", week=week)
    finally:
        st.cache_data.clear()
    no_exception(at)
    page, param, key = MOVER_PAGES[kind]
    links = [e.proto for e in at.main.get("page_link")]
    link = next(x for x in links if x.page.endswith(Path(page).stem.split("_", 1)[1])
                and param in dict(parse_qsl(x.query_string)))
    params = dict(parse_qsl(link.query_string, keep_blank_values=True))
    f = mover["filter"]
    want = f"{f['annotator_a']}|{f['annotator_b']}" if kind == "pair" else f[kind]
    assert params == {"week": week, param: want}
    target = AppTest.from_file(str(ROOT / page), default_timeout=60)
    for name, value in params.items():   # not run_page(): its own argument is "path"
        target.query_params[name] = value
    target.run()
    no_exception(target)
    assert target.selectbox(key=key).value == want
    assert target.query_params["week"] == week


def test_overview_week_from_the_url(demo):
    at = app("overview", week="2026-W40")
    no_exception(at)
    assert at.selectbox(key="week_picker").value == "2026-W40"
    assert_overview_matches_report(at, demo, "2026-W40")
    assert "took effect this week" in texts(at)          # v2: 2026-09-28, in W40


def test_overview_switching_the_week_changes_the_values(demo):
    at = app("overview")
    before = [m.value for m in at.metric[:3]]
    at.selectbox(key="week_picker").select("2026-W37").run()
    no_exception(at)
    assert at.query_params["week"] == "2026-W37"
    after = [m.value for m in at.metric[:3]]
    assert after != before
    assert_overview_matches_report(at, demo, "2026-W37")


def test_overview_shows_small_sample_warnings(demo):
    at = app("overview", week="2026-W47")
    ov = query(demo, overview.week_overview, "2026-W47")
    assert ov["warnings"]
    warning = "\n".join(w.value for w in at.warning)
    assert "Small samples" in warning and "below min\\_units" in warning


def test_overview_hostile_week_in_the_url_falls_back(demo):
    at = app("overview", week="<script>alert(1)</script>")
    no_exception(at)
    assert at.query_params["week"] == query(demo, overview.available_weeks)[-1]


# -- schema errors -----------------------------------------------------------------------


def test_schema_page_says_one_annotation_matches(demo):
    """One match reads "1 annotation matches", not "1 annotations match"."""
    sw = query(demo, weekly.schema_week, "2026-W47")
    assert sw["with_errors"] == 1
    at = app("schema", week="2026-W47")
    no_exception(at)
    shown = texts(at)
    assert "1 annotation matches." in shown and "annotations match" not in shown
    assert f"1 of {sw['annotations']:,} annotations in 2026-W47" in shown


def test_schema_page_numbers_and_examples(demo):
    at = app("schema", week="2026-W36")
    no_exception(at)
    sw = query(demo, weekly.schema_week, "2026-W36")
    rep = query(demo, build_report, "2026-W36")
    assert metric(at, "Schema error rate").value == fmt_rate(
        rep["schema"]["error_rate"])
    examples = frame(at, "details")
    assert len(examples) == sw["with_errors"]
    assert set(examples["item_id"]) == set(
        query(demo, overview.schema_examples, "2026-W36")["examples"]["item_id"])
    # Every row links into the drill-down of its item, this week.
    first = examples.iloc[0]
    assert first["open"] == f"Item_drilldown?item={first['item_id']}&week=2026-W36"
    roles = frame(at, "role")
    assert roles["count"].sum() == sw["with_errors"]


def test_schema_filter_changes_the_table(demo):
    at = app("schema", week="2026-W36")
    everything = frame(at, "details")
    at.selectbox(key="schema_annotator").select("ann-05").run()
    no_exception(at)
    assert at.query_params["annotator"] == "ann-05"
    only = frame(at, "details")
    assert 0 < len(only) < len(everything)
    assert set(only["annotator_id"]) == {"ann-05"}
    at.selectbox(key="schema_annotator").select("All").run()
    assert "annotator" not in at.query_params
    at.selectbox(key="schema_keyword").select("required").run()
    required = frame(at, "details")
    assert 0 < len(required) < len(everything)
    assert required["details"].str.contains("[required]", regex=False).all()


def test_schema_filters_from_the_url(demo):
    at = app("schema", week="2026-W36", keyword="enum")
    no_exception(at)
    assert at.selectbox(key="schema_keyword").value == "enum"
    expected = query(demo, overview.schema_examples, "2026-W36", keyword="enum")
    assert len(frame(at, "details")) == expected["total"] > 0
    # A value that is not an option is ignored, not trusted.
    at = app("schema", week="2026-W36", keyword="<b>x</b>")
    assert at.selectbox(key="schema_keyword").value == "All"
    assert "keyword" not in at.query_params


# -- text policy -------------------------------------------------------------------------


def test_policy_page_numbers_and_highlighted_examples(demo):
    at = app("policy", week="2026-W36")
    no_exception(at)
    rep = query(demo, build_report, "2026-W36")
    assert metric(at, "Violation rate").value == fmt_rate(
        rep["policy"]["violation_rate"])
    md = texts(at)
    assert ":red-background[**Toyota**]" in md            # the offending brand
    by_field = frame(at, "per_1000")
    assert by_field["count"].tolist() == [
        r["count"] for r in query(demo, weekly.policy_week, "2026-W36")["by_field"]]


def test_policy_rule_filter_shows_invented_objects(demo):
    at = app("policy", week="2026-W36")
    total = [c.value for c in at.caption if "annotations match" in c.value][0]
    at.selectbox(key="policy_rule").select("no-invented-objects").run()
    no_exception(at)
    assert at.query_params["rule"] == "no-invented-objects"
    narrowed = [c.value for c in at.caption if "annotations match" in c.value][0]
    assert narrowed != total
    found = query(demo, overview.policy_examples, "2026-W36", rule="no-invented-objects",
                  limit=20)
    assert narrowed.startswith(f"{found['total']:,} annotations match")
    md = texts(at)
    assert "the text names **car**" in md and "but there is no car box" in md
    assert "Boxes in this annotation:" in md


def test_policy_escapes_hostile_text(project, monkeypatch):
    evil = "<img src=x onerror=alert(1)> [click](javascript:alert(1)) :red[x] Nike"
    project.ingest(project.write("evil.jsonl", [
        record(item="img-7", annotator="<b>ann</b>", caption=evil + " shoes on a car."),
        record(item="img-8", annotator="ann-2"),
    ]))
    monkeypatch.setenv("LABELQA_PROJECT", str(project.root))
    at = app("policy", week="2026-W02")
    no_exception(at)
    md = "\n".join(m.value for m in at.markdown)
    assert "\\<img src\\=x onerror\\=alert\\(1\\)\\>" in md
    assert "\\[click\\]\\(javascript\\:alert\\(1\\)\\)" in md
    assert "\\:red\\[x\\]" in md
    assert ":red-background[**Nike**]" in md
    assert "<img" not in md.replace("\\<img", "")
    assert "\\<b\\>ann\\<\\/b\\>" in md


# -- trends and guideline changes --------------------------------------------------------


def test_trends_before_after_equals_metrics(demo):
    at = app("trends", change="v2")
    no_exception(at)
    assert at.selectbox(key="trends_change").value == "v2"
    ba = query(demo, weekly.before_after, "v2", k=4)
    res = ba["metrics"]["policy_violation_rate"]
    shown = metric(at, "Text policy violation rate, after")
    assert shown.value == fmt_rate(res["after"]["rate"])
    assert shown.delta == pp(res["diff"])
    alpha = frame(at, "alpha before")
    assert len(alpha) == len(ba["alpha"])
    # Another change from the picker: other numbers, in the URL.
    at.selectbox(key="trends_change").select("v3").run()
    assert at.query_params["change"] == "v3"
    v3 = query(demo, weekly.before_after, "v3", k=4)["metrics"]["policy_violation_rate"]
    assert metric(at, "Text policy violation rate, after").value == fmt_rate(
        v3["after"]["rate"])


def test_trends_before_after_names_the_weeks_with_data(demo):
    """The v3 window reaches W48, which has no data: the comparison names the weeks it
    sums (W45 – W47), says how many each side has, and which window weeks are empty."""
    weeks = query(demo, overview.available_weeks)
    assert weeks[-1] == "2026-W47"
    at = app("trends", week="2026-W47", change="v3", k="4")
    no_exception(at)
    shown = texts(at)
    assert ("Before: 2026-W40 – 2026-W43 (4 weeks with data) · after: 2026-W45 – 2026-W47 "
            "(3 weeks with data; none in 2026-W48)") in shown
    assert "2026-W45 – 2026-W48" not in shown
    assert "after (3 weeks)" in shown and "before (4 weeks)" in shown
    assert "after 2026-W47, the week picked" not in shown


def test_trends_before_after_says_when_it_uses_weeks_past_the_picked_one(demo):
    """At week W40 the charts end at W40 while v2's after side is W41 – W47: said."""
    at = app("trends", week="2026-W40", change="v2", k="8")
    no_exception(at)
    shown = texts(at)
    assert ("Before: 2026-W36 – 2026-W39 (4 weeks with data; none in 2026-W32 – 2026-W35) "
            "· after: 2026-W41 – 2026-W47 (7 weeks with data; none in 2026-W48)") in shown
    assert ("uses 7 weeks of data after 2026-W40, the week picked, where the charts above "
            "end: 2026-W41 – 2026-W47") in shown


def test_trends_stale_labels_and_csv(demo):
    at = app("trends", stale="weather")
    no_exception(at)
    stale = {s["field"]: s for s in query(demo, weekly.stale_labels)}
    table = frame(at, "share stale")
    assert dict(zip(table["field"], table["stale"], strict=True)) == {
        f: s["stale"] for f, s in stale.items()}
    assert at.selectbox(key="trends_stale").value == "weather"
    assert f"Download {stale['weather']['stale']:,} stale annotations" in \
        at.get("download_button")[0].proto.label
    rows = frame(at, "guideline_version")
    assert set(rows["guideline_version"]) <= set(stale["weather"]["stale_versions"])
    assert len(rows) == min(200, stale["weather"]["stale"])


def test_trends_stale_csv_is_built_on_click_with_every_row(demo):
    """The download's data is a callable Streamlit runs on the click; it yields every
    stale row (not the page's preview), as CSV."""
    import csv
    import io

    from pages.common import ui

    make = ui.deferred(weekly.stale_label_rows, "weather", then=overview.csv_bytes)
    body = make()
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8"))))
    stale = {s["field"]: s for s in query(demo, weekly.stale_labels)}
    assert len(rows) == stale["weather"]["stale"] > 200
    assert {r["changed_by"] for r in rows} == {stale["weather"]["version"]}
    preview = query(demo, weekly.stale_label_rows, "weather", limit=200)
    assert list(preview["annotation_id"]) == [r["annotation_id"] for r in rows[:200]]


def test_trends_k_and_span_from_the_url(demo):
    at = app("trends", week="2026-W44", k="2", span="all")
    no_exception(at)
    assert at.selectbox(key="trends_k").value == 2
    assert at.selectbox(key="trends_span").value == "all"
    # The default change is the latest one in force by the chosen week (v3, 2026-W44).
    assert at.selectbox(key="trends_change").value == "v3"
    assert "Before: 2026-W42 – 2026-W43" in texts(at)


def test_csv_download_neutralizes_formulas():
    df = pd.DataFrame({"a": ["=HYPERLINK(\"x\")", "plain", "+1", "@x"], "n": [1, 2, 3, 4]})
    text = overview.csv_bytes(df).decode()
    assert "'=HYPERLINK" in text and "'+1" in text and "'@x" in text
    assert "\nplain," in text


@pytest.mark.parametrize("page", [p for p, _, _ in __import__(
    "pages.common.ui", fromlist=["PAGES"]).PAGES])
def test_every_page_lists_every_page_by_name(demo, page):
    """The sidebar's page list (Streamlit's own would call the overview "app"): every
    page by its name, from every page, each link carrying the week on view."""
    from pages.common.ui import PAGES as NAV

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["week"] = "2026-W40"
    at.run()
    if page != "app.py":
        at.switch_page(page)   # AppTest drops the URL here: the page shows its default
        at.run()
    no_exception(at)
    links = [e.proto for e in at.sidebar.get("page_link")]
    assert [link.label for link in links] == [label for _, label, _ in NAV]
    expected = "2026-W40" if page == "app.py" else None
    if page != "pages/7_Data.py":
        shown = expected or at.selectbox(key="week_picker").value
        assert {link.query_string for link in links} == {f"week={shown}"}


def test_a_malformed_week_in_the_url_is_not_passed_on(demo):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/7_Data.py")
    at.query_params["week"] = "2026-W40\"><script>"
    at.run()
    no_exception(at)
    links = [e.proto for e in at.sidebar.get("page_link")]
    assert links and {link.query_string for link in links} == {""}


def test_week_overview_runs_its_two_query_lines_apart_with_the_sequential_answer(
        demo, monkeypatch):
    """The report on the caller's connection, sparklines and movers on a cursor in a side
    thread: the same values as each call on its own, from several threads at once; an
    error in either line reaches the caller and the cursor is closed."""
    from concurrent.futures import ThreadPoolExecutor

    weeks_ = query(demo, overview.available_weeks)[-4:]
    want = {w: (query(demo, build_report, w),
                query(demo, weekly.series, last=weekly.REPORT_WEEKS, until=w, ci=False),
                query(demo, weekly.top_movers, w)) for w in weeks_}
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda w: (w, query(demo, overview.week_overview, w)),
                            weeks_ * 3))
    for w, ov in got:
        rep, trend, movers = want[w]
        assert ov["report"] == rep and ov["movers"] == movers
        for m in ov["metrics"]:
            prefix = {"schema": "schema", "policy": "policy", "visual": "visual"}[m["section"]]
            assert m["spark"]["weeks"] == trend["week"].tolist()
            assert m["spark"]["rates"] == [overview._num(v) for v in trend[f"{prefix}_rate"]]

    cursors = []

    class Recording:   # the caller's connection, noting the cursors taken from it
        def __init__(self, con):
            self.con = con

        def cursor(self):
            cursors.append(self.con.cursor())
            return cursors[-1]

        def __getattr__(self, name):
            return getattr(self.con, name)

    def failing_movers(con, config, week, **kw):
        raise RuntimeError("side line failed")

    def failing_report(con, config, week):
        raise ValueError("report failed")

    from metrics import store
    with store.open_db(demo.database, read_only=True) as con:
        for name, fail, error in (("top_movers", failing_movers, RuntimeError),
                                  ("build_report", failing_report, ValueError)):
            with monkeypatch.context() as m:
                m.setattr(overview, name, fail)
                with pytest.raises(error, match="failed"):
                    overview.week_overview(Recording(con), demo, weeks_[-1])
        assert len(cursors) >= 2   # week_overview's, one per call (and the freshness probe's)
        for cur in cursors:
            with pytest.raises(duckdb.ConnectionException):  # closed
                cur.execute("SELECT 1")
        assert con.execute("SELECT 1").fetchone() == (1,)   # the caller's stays open
