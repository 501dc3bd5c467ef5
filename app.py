"""labelqa dashboard, the weekly overview: the three numbers of the weekly QA review with
their CI, delta to the previous ISO week and traffic light, 12-week sparklines, the
biggest movers, small-sample warnings, the guideline in force and the HTML report.

URL: ?week=2026-W47
Run: `streamlit run app.py` (project from LABELQA_PROJECT, else the demo project).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import streamlit as st
from streamlit.errors import StreamlitAPIException

from metrics import html_report, overview
from metrics.html_report import MOVER_KINDS, fmt_mover, fmt_mover_delta, sparkline_figure
from pages.common import ui
from pages.common.ui import plural

P = "overview_"  # page prefix of session keys
ROOT = Path(__file__).resolve().parent
METRIC_PAGES = {
    "schema": ("pages/1_Schema_errors.py", "Schema errors"),
    "policy": ("pages/2_Text_policy.py", "Text policy"),
    "visual": ("pages/3_Visual_agreement.py", "Visual agreement"),
}


def page_link(path: str, label: str, week: str, params: dict[str, str] | None = None
              ) -> None:
    """A link to another page of this week (and `params`, the page's URL filters);
    nothing when that page is not there."""
    if not (ROOT / path).exists():
        return
    try:
        st.page_link(path, label=label, icon="➡️",
                     query_params={"week": week, **(params or {})})
    except StreamlitAPIException:
        pass


def mover_target(mv: dict) -> tuple[str, str, dict[str, str]]:
    """The page, link text and URL filters that show a mover's rate behind it: the
    Schema errors examples at its path, the Text policy examples of its rule, the
    Visual agreement page filtered to its label or its annotator pair."""
    f = mv["filter"]
    if mv["kind"] == "path":
        return METRIC_PAGES["schema"][0], "Annotations with this error", {"path": f["path"]}
    if mv["kind"] == "rule":
        return METRIC_PAGES["policy"][0], "Examples of this rule", {"rule": f["rule"]}
    if mv["kind"] == "label":
        return (METRIC_PAGES["visual"][0], "Disagreements on this label",
                {"label": f["label"]} if f["label"] is not None else {})
    return (METRIC_PAGES["visual"][0], "This pair's disagreements",
            {"pair": f"{f['annotator_a']}|{f['annotator_b']}"})


def fmt_pp(delta: float | None) -> str | None:
    return None if delta is None else f"{delta * 100:+.1f} pp"


# A rule's rate in the unit of the Text policy page (annotations per 1,000); the other
# movers are shares (%) of the unit named under them.
MOVER_UNITS = {"path": "share of the week's annotations with a contract error at this path",
               "rule": "annotations violating this rule per 1,000 of the week's annotations",
               "label": "share of this label's box units in disagreement",
               "pair": "share of this pair's box units in disagreement"}


config, weeks, week = ui.open_weekly_page(
    "Weekly QA overview",
    "schema errors, text policy and visual agreement of one ISO week")
ov = ui.safe_call(overview.week_overview, week)

top, download = st.columns([3, 1], vertical_alignment="center")
with top:
    g = ov["guideline"]
    in_force = (f"guideline **{ui.md_escape(g['version'])}** in force"
                if g else "no guideline version in force")
    st.markdown(f"### Week {week} · {plural(ov['annotations'], 'annotation')} · {in_force}")
with download:
    st.download_button(
        "⬇️ Download report (HTML)",
        data=partial(html_report.report_bytes, str(config.file), week),
        file_name=f"labelqa-{config.name}-{week}.html", mime="text/html",
        on_click="ignore", key=P + "download", type="primary",
        help="One self-contained HTML file (charts inline, opens offline) with this "
             "overview, the movers, the breakdown and the trends: the file to mail after "
             "the meeting. Same as `labelqa report --html FILE --week " + week + "`.")

for col, m in zip(st.columns(3), ov["metrics"], strict=True):
    with col, st.container(border=True):
        amber, red = m["thresholds"]
        st.metric(
            f"{ui.STATUS_ICON.get(m['status'], '⚪')} {m['name']}",
            ui.fmt_rate(m["rate"]),
            delta=fmt_pp(m["delta"]), delta_color="inverse",
            delta_description=f"vs {ov['previous_week']}" if m["delta"] is not None
            else None,
            help=f"Traffic light: amber at {ui.fmt_rate(amber)} or more, red at "
                 f"{ui.fmt_rate(red)} or more ([thresholds] in labelqa.toml). "
                 "The delta is in percentage points; up is worse.",
        )
        st.markdown(f"{ui.light(m['status'])} · {ui.fmt_ci(m['ci'])}")
        lines = [f"{m['events']:,} of {m['units']:,} {m['unit_name']}"]
        if m["reason"]:
            lines.append(ui.md_escape(m["reason"]))
        elif m["delta"] is None:
            lines.append(f"no delta: {ui.md_escape(m['delta_reason'])}")
        lines.append(f"amber ≥ {ui.fmt_rate(amber)} · red ≥ {ui.fmt_rate(red)}")
        st.caption(" · ".join(lines))
        spark = m["spark"]
        if len(spark["weeks"]) > 1:
            st.plotly_chart(
                sparkline_figure(spark["weeks"], spark["rates"], thresholds=m["thresholds"],
                                 week=week,
                                 title=f"last {len(spark['weeks'])} weeks with data (%)"),
                key=P + "spark_" + m["section"], config={"displayModeBar": False})
        else:
            st.caption("One week of data so far: the sparkline needs two.")
        if m["swing"]:
            text = (f"Swing {m['swing']}: outside the p-chart control limits of the last "
                    f"{len(spark['weeks'])} weeks with data.")
            if m["swing"] == "up":
                st.warning(text, icon="📈")
            else:
                st.success(text, icon="📉")
        path, label = METRIC_PAGES[m["section"]]
        page_link(path, label, week)

st.subheader(f"Biggest movers against {ov['previous_week']}")
if ov["movers"]:
    st.caption("Per-path, per-rule, per-label and per-annotator-pair rates with at least 20 "
               "units in both weeks, ranked by the size of the change (up is worse). Rules "
               "are counted per 1,000 annotations, as on the Text policy page (10 per 1,000 "
               "= 1 percentage point); the others in % and percentage points (pp).")
    for col, mv in zip(st.columns(3), ov["movers"], strict=False):
        with col, st.container(border=True):
            kind = mv["kind"]
            st.metric(f"{MOVER_KINDS.get(kind, kind)}: **{ui.md_escape(mv['key'])}**",
                      fmt_mover(kind, mv["rate"]), delta=fmt_mover_delta(kind, mv["delta"]),
                      delta_color="inverse",
                      delta_description=f"from {fmt_mover(kind, mv['previous'])}")
            unit = "annotations" if kind in ("path", "rule") else "box units"
            st.caption(f"{MOVER_UNITS.get(kind, '')} · {mv['units']:,} {unit} this week, "
                       f"{mv['previous_units']:,} in {ov['previous_week']}")
            path, label, params = mover_target(mv)
            page_link(path, label, week, params)
else:
    st.info(f"Nothing to compare: no per-path, per-rule, per-label or per-pair rate has at "
            f"least 20 units in both {ov['previous_week']} and {week}. A week without data "
            "before this one, or small weeks, leave this empty.")

if ov["warnings"]:
    st.warning("**Small samples** — these numbers rest on few units:\n\n"
               + "\n".join(f"- {ui.md_escape(w)}" for w in ov["warnings"]))

for change in ov["changes"]:
    st.info(f"Guideline **{ui.md_escape(change['version'])}** took effect this week "
            f"({change['effective']}): {ui.md_escape(change['summary'])}", icon="📘")
g = ov["guideline"]
if g:
    st.caption(f"Guideline in force: **{ui.md_escape(g['version'])}**, effective "
               f"{g['effective']} — {ui.md_escape(g['summary'])}")
else:
    st.caption("No guideline version in force this week: add `[[guideline]]` entries to "
               "labelqa.toml to track guideline changes.")
visual = ov["visual_sample"]
st.caption(f"Visual agreement is measured on the stable sample: "
           f"{plural(visual['items'], 'item')} and {plural(visual['pairs'], 'annotator pair')} "
           "this week.")
page_link("pages/5_Trends_and_guidelines.py", "Trends and guideline changes", week)
