"""Trends and guideline changes: each metric's weekly series with its CI band, p-chart
control limits and swing flags, a marker at each guideline version; before/after a
change (difference with CI and p-value, alpha per kind); stale labels per field with a
CSV of the affected annotations.

URL: ?week=2026-W47&span=12&change=v2&k=4&stale=weather
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from metrics import overview, weekly
from metrics.html_report import trend_figure
from pages.common import ui
from pages.common.ui import plural

P = "trends_"  # page prefix of session keys
PREVIEW_ROWS = 200  # stale rows shown on the page; the CSV has them all
NO_VALUE = "–"  # an empty table cell (Streamlit would print "None")
SPANS = {"12": "last 12 weeks with data (the report's)", "26": "last 26 weeks",
         "52": "last 52 weeks", "all": "every week"}
METRICS = [  # (series prefix, metric key, title)
    ("schema", "schema_error_rate", "Schema error rate"),
    ("policy", "policy_violation_rate", "Text policy violation rate"),
    ("visual", "visual_disagreement_rate", "Visual disagreement on the stable sample"),
]
RELABEL_ADVICE = {
    "none": "none: the older labels stay valid",
    "filter": "filter: drop or fix the older labels that break the new rule",
    "relabel": "relabel: send the older items back for labeling",
}


def week_span(weeks: list[str]) -> str:
    return "" if not weeks else weeks[0] if len(weeks) == 1 else f"{weeks[0]} – {weeks[-1]}"


def runs(window: list[str], keep: set[str]) -> list[list[str]]:
    """The weeks of `window` (consecutive calendar weeks) in `keep`, as unbroken runs."""
    out: list[list[str]] = []
    for i, w in enumerate(window):
        if w in keep:
            if out and window[i - 1] == out[-1][-1]:
                out[-1].append(w)
            else:
                out.append([w])
    return out


def side_text(window: list[str], data: list[str]) -> str:
    """One side of a before/after comparison named by the weeks it has data for (the
    calendar window can reach before the first or past the last week with data)."""
    if not data:
        return f"no data in {week_span(window)}"
    empty = ", ".join(week_span(r) for r in runs(window, set(window) - set(data)))
    return (f"{week_span(data)} ({plural(len(data), 'week')} with data"
            + (f"; none in {empty}" if empty else "") + ")")


def alpha_note(a: dict) -> str:
    """Why an alpha or its difference is missing: each undefined side with its reason."""
    parts = [f"alpha {side} undefined: {a[side]['reason'] or 'no units'}"
             for side in ("before", "after") if a[side]["alpha"] is None]
    return "; ".join(parts) or a["reason"] or ""


def fmt_pp(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:+.1f} pp"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "–"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


config, weeks, week = ui.open_weekly_page(
    "Trends and guideline changes",
    "weekly series with control limits; did the guideline change help?",
    week_label="ISO week (the series ends here)")
span = ui.url_select("Weeks shown", list(SPANS), prefix=P, param="span", default="12",
                  container=st.sidebar, format_func=SPANS.get,
                  help="The p-chart centre and limits are computed over the weeks shown.")
trend = ui.safe_call(weekly.series, last=None if span == "all" else int(span), until=week)
log = weekly.guideline_log(config)

# -- series -------------------------------------------------------------------------------
st.subheader("Weekly series")
st.caption("Shaded band: 95% CI (Wilson for schema and policy, item bootstrap for visual). "
           "Dashed: p̄, the rate over the weeks shown; dotted: p-chart limits p̄ ± "
           "3·√(p̄(1 − p̄)/n). ▲/▼ a swing outside them. Purple lines: guideline versions. "
           "The selected week is shaded.")
if len(trend) < 2:
    st.info(f"Only {plural(len(trend), 'week')} with data up to {week}: trends need at least "
            "two weeks. Ingest more weeks of exports, or pick a later week.")
for prefix, key, title in METRICS:
    amber, red = config.threshold(key)
    st.plotly_chart(
        trend_figure(trend, prefix, title=f"{title} by week", guidelines=log,
                     thresholds=(amber, red), week=week, height=430),
        key=P + "chart_" + prefix)
    swings = [f"{w} {s}" for w, s in zip(trend["week"], trend[f"{prefix}_swing"],
                                        strict=True) if s]
    st.caption(f"{title}: " + (f"swings in {', '.join(swings)}." if swings
                               else "no week outside the control limits."))

# -- guideline changes --------------------------------------------------------------------
st.subheader("Guideline changes")
if not log:
    st.info("No guideline versions in this project: add `[[guideline]]` entries (version, "
            "effective date, summary, fields, relabel) to labelqa.toml to mark changes on "
            "the charts and compare before and after.")
    st.stop()
st.dataframe(
    pd.DataFrame([{**g, "fields": ", ".join(g["fields"])} for g in log],
                 columns=["version", "effective", "week", "summary", "fields", "relabel"]),
    hide_index=True, key=P + "log", placeholder=NO_VALUE,
    column_config={"week": "ISO week", "summary": st.column_config.TextColumn(width="large"),
                   "fields": "fields touched", "relabel": "advice for older labels"})

versions = [g["version"] for g in log]
past = [g["version"] for g in log if g["week"] <= week]
c1, c2 = st.columns([3, 1])
change = ui.url_select("Compare before and after the change to", versions, prefix=P,
                       param="change",
                    default=(past or versions)[-1], container=c1, keep_default=True,
                    format_func=lambda v: next(f"{g['version']} (effective {g['effective']}"
                                               f", {g['week']}): {g['summary']}"
                                               for g in log if g["version"] == v))
k = ui.url_select("Weeks on each side", list(range(1, 9)), prefix=P, param="k", default=4,
                  container=c2,
               help="The k ISO weeks before the week containing the effective date "
                    "against the k weeks after it; that week itself is left out.")
ba = ui.safe_call(weekly.before_after, change, k=k)
n_before, n_after = len(ba["before_data_weeks"]), len(ba["after_data_weeks"])
st.caption(f"Before: {side_text(ba['before_weeks'], ba['before_data_weeks'])} · after: "
           f"{side_text(ba['after_weeks'], ba['after_data_weeks'])} · {ba['week']} (the "
           f"change's week) left out. The {k} calendar weeks on each side are summed over "
           "the weeks with data. Differences are after − before with Newcombe's 95% CI and "
           "a pooled two-proportion z-test.")
later = [w for w in ba["before_data_weeks"] + ba["after_data_weeks"] if w > week]
if later:
    st.caption(f"This comparison uses {plural(len(later), 'week')} of data after {week}, "
               f"the week picked, where the charts above end: {week_span(later)}.")
names = {key: title for _, key, title in METRICS}
for col, (key, res) in zip(st.columns(len(ba["metrics"])), ba["metrics"].items(),
                           strict=True):
    with col, st.container(border=True):
        before, after = res["before"], res["after"]
        st.metric(f"{names.get(key, key)}, after", ui.fmt_rate(after["rate"]),
                  delta=None if res["diff"] is None else fmt_pp(res["diff"]),
                  delta_color="inverse",
                  delta_description=f"from {ui.fmt_rate(before['rate'])} before")
        if res["diff_ci"]:
            st.markdown(f"**{fmt_pp(res['diff'])}** (95% CI {fmt_pp(res['diff_ci'][0])} to "
                        f"{fmt_pp(res['diff_ci'][1])}) · {fmt_p(res['p_value'])}")
        unit = "box units" if key == "visual_disagreement_rate" else "annotations"
        st.caption(f"before ({plural(n_before, 'week')}) {before['events']:,} of "
                   f"{before['units']:,} {unit}; after ({plural(n_after, 'week')}) "
                   f"{after['events']:,} of {after['units']:,}"
                   + (f" · {ui.md_escape(res['reason'])}" if res["reason"] else ""))

alpha = ba.get("alpha", [])
if alpha:
    st.markdown("**Agreement (Krippendorff's alpha) before and after, per kind**")
    st.dataframe(
        pd.DataFrame([{
            "kind": a["kind"] + (f" · {a['field']}" if a["field"] else ""),
            "alpha before": a["before"]["alpha"], "items before": a["before"]["items"],
            "alpha after": a["after"]["alpha"], "items after": a["after"]["items"],
            "difference": a["diff"],
            "95% CI": (f"{a['diff_ci'][0]:+.3f} to {a['diff_ci'][1]:+.3f}"
                       if a["diff_ci"] else "–"),
            "note": alpha_note(a),
        } for a in alpha]),
        hide_index=True, key=P + "alpha", placeholder=NO_VALUE,
        column_config={c: st.column_config.NumberColumn(
            format="%.3f", help=f"{NO_VALUE} when alpha is undefined: the note says why.")
            for c in ("alpha before", "alpha after", "difference")})
    st.caption("Alpha: 1 is perfect agreement, 0 chance level. The difference's interval is "
               "an item bootstrap ([agreement] bootstrap resamples).")

# -- stale labels -------------------------------------------------------------------------
st.subheader("Stale labels: legal but outdated")
stale = ui.safe_call(weekly.stale_labels)
if not stale:
    st.info("No guideline change names the fields it touched: add `fields = [...]` to the "
            "`[[guideline]]` entries to find labels made under an older version.")
    st.stop()
st.dataframe(
    pd.DataFrame([{
        "field": s["field"], "changed by": f"{s['version']} ({s['effective']})",
        "summary": s["summary"], "stale": s["stale"], "annotations": s["annotations"],
        "share stale": s["stale_share"], "older versions": ", ".join(s["stale_versions"]),
        "unknown version": s["unknown_version"],
        "advice": RELABEL_ADVICE.get(s["relabel"], s["relabel"]),
    } for s in stale]),
    hide_index=True, key=P + "stale_table", placeholder=NO_VALUE,
    column_config={"share stale": st.column_config.ProgressColumn(
        "share stale", format="percent", min_value=0.0, max_value=1.0),
        "annotations": st.column_config.NumberColumn("annotations with the field"),
        "summary": st.column_config.TextColumn(width="medium"),
        "advice": st.column_config.TextColumn(width="medium")})
st.caption("Annotations (every week, roles annotator, reviewer and gold) that carry the "
           "field and were made under a version older than the latest change touching it.")
with_stale = [s["field"] for s in stale if s["stale"]]
if not with_stale:
    st.success("No stale labels: every annotation of a changed field was made under the "
               "latest version.")
    st.stop()
c1, c2 = st.columns([2, 1], vertical_alignment="bottom")
field = ui.url_select("Field", with_stale, prefix=P, param="stale", default=with_stale[0],
                      container=c1,
                   keep_default=True)
n_stale = next(s["stale"] for s in stale if s["field"] == field)
rows = ui.safe_call(weekly.stale_label_rows, field, limit=PREVIEW_ROWS)
with c2:
    # The CSV is built when the button is clicked, not on every page load.
    st.download_button(
        f"⬇️ Download {n_stale:,} stale annotations (CSV)",
        ui.deferred(weekly.stale_label_rows, field, then=overview.csv_bytes),
        file_name=f"labelqa-{config.name}-stale-{field}.csv", mime="text/csv",
        key=P + "stale_csv", on_click="ignore")
st.dataframe(rows, hide_index=True, key=P + "stale_rows", placeholder=NO_VALUE,
             column_config={"value": st.column_config.TextColumn("value (JSON)")})
if n_stale > len(rows):
    st.caption(f"The first {len(rows):,} of {n_stale:,} rows; the CSV has them all.")
