"""Text policy (M2): the violation rate by week, violations by rule and field, and
example annotations with the offending words highlighted (escaped; never raw HTML).
Invented-object violations show which label the text named and which boxes exist.

URL: ?week=2026-W47&rule=no-brands&field=caption&severity=error&annotator=ann-03
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from metrics import overview, weekly
from metrics.html_report import SEVERITY_COLOR, bar_figure, trend_figure
from pages.common import ui

P = "policy_"  # page prefix of session keys
ALL = "All"
SEVERITY_ICON = {"error": "🔴", "warning": "🟠"}
LIMITS = [20, 50, 100]




def drill_link(item_id: str, week: str) -> str:
    """Markdown link to the item drill-down (relative: works under any base path)."""
    url = ui.drill_url(item_id, week)
    return f"[🔎 {ui.md_escape(item_id)}]({url})"


def describe(v: dict) -> str:
    """One violation as safe Markdown: rule, severity, where, and the words or labels."""
    where = ui.md_escape(v["field"] + (f"[{v['element']}]" if v["element"] is not None
                                       else ""))
    head = (f"{SEVERITY_ICON.get(v['severity'], '⚪')} **{ui.md_escape(v['rule'])}** "
            f"({v['severity']}) in *{where}*")
    rule_type = RULE_TYPES.get(v["rule"])
    label = ui.md_escape(v["label"]) if v["label"] else None
    if rule_type == "invented_objects" and label:
        return (f"{head}: the text names **{label}** (“{ui.md_escape(v['excerpt'])}”) "
                f"but there is no {label} box")
    if rule_type == "unmentioned_objects" and label:
        return f"{head}: a **{label}** box exists but the text never names it"
    if v["excerpt"] and v["end"] - v["start"] <= 60:
        return f"{head}: “{ui.md_escape(v['excerpt'])}”"
    return head


config, weeks, week = ui.open_weekly_page(
    "Text policy",
    "annotations whose text breaks the written rules of labelqa.toml")
RULE_TYPES = {r.id: r.type for r in config.policy}
pw = ui.safe_call(weekly.policy_week, week)
trend = ui.safe_call(weekly.series, visual=False)
log = weekly.guideline_log(config)
amber, red = config.threshold("policy_violation_rate")

if not config.policy:
    st.info("This project has no text rules: add `[[policy]]` entries to labelqa.toml "
            "(types banned, length, pattern, hedging, invented_objects, "
            "unmentioned_objects) and ingest again.")
    st.stop()

# -- the week's number and its trend ------------------------------------------------------
head, chart = st.columns([1, 3])
with head:
    st.metric(f"{ui.STATUS_ICON.get(pw['status'], '⚪')} Violation rate",
              ui.fmt_rate(pw["violation_rate"]), border=True,
              help="Annotations with at least one violation of an `error` rule / "
                   "annotations of roles annotator, reviewer and gold this week. "
                   "`warning` rules are listed but do not count.")
    st.markdown(f"{ui.light(pw['status'])} · "
                f"{ui.fmt_ci(pw['violation_rate_ci'])}")
    st.caption(f"{pw['with_violations']:,} of {pw['annotations']:,} annotations in {week} · "
               f"{pw['with_warnings']:,} with warnings (not counted) · amber ≥ "
               f"{ui.fmt_rate(amber)} · red ≥ {ui.fmt_rate(red)}")
    if pw["reason"]:
        st.caption(ui.md_escape(pw["reason"]))
with chart:
    st.plotly_chart(
        trend_figure(trend, "policy", title="Text policy violation rate by week, with 95% CI",
                     guidelines=log, thresholds=(amber, red), limits=False, week=week,
                     height=380),
        key=P + "trend")

if not pw["by_rule"]:
    st.success(f"No policy violations in {week}. Pick another week in the sidebar.")
    st.stop()

# -- breakdowns ---------------------------------------------------------------------------
st.subheader(f"Which rules broke in {week}")
left, right = st.columns([3, 2])
with left:
    rules = pw["by_rule"]
    st.plotly_chart(
        bar_figure([f"{r['rule']} ({r['severity']})" for r in rules],
                   [r["per_1000"] for r in rules],
                   title="By rule: annotations violating it per 1,000 annotations",
                   x_title="annotations per 1,000",
                   text=[f"{r['count']:,}" for r in rules],
                   color=[SEVERITY_COLOR.get(r["severity"], "#6e7781") for r in rules]),
        key=P + "by_rule")
    st.caption("Bar labels are annotation counts. :red[Red]: `error` rules, counted in the "
               "rate; :orange[orange]: `warning` rules, listed only.")
with right:
    st.markdown("**By field**")
    st.dataframe(
        pd.DataFrame(pw["by_field"], columns=["field", "count", "errors", "per_1000"]),
        hide_index=True, key=P + "by_field",
        column_config={
            "field": "field",
            "count": st.column_config.NumberColumn("annotations violating"),
            "errors": st.column_config.NumberColumn("of which errors"),
            "per_1000": st.column_config.NumberColumn("per 1,000", format="%.1f"),
        })
    by_ann = [r for r in pw["by_annotator"] if r["count"]]
    if by_ann:
        st.markdown("**By annotator** (error violations)")
        st.dataframe(
            pd.DataFrame(by_ann, columns=["annotator_id", "annotations", "count", "rate"]),
            hide_index=True, key=P + "by_annotator",
            column_config={
                "annotator_id": "annotator",
                "annotations": st.column_config.NumberColumn("annotations"),
                "count": st.column_config.NumberColumn("with errors"),
                "rate": st.column_config.NumberColumn("violation rate", format="percent"),
            })

# -- examples -----------------------------------------------------------------------------
st.subheader("Examples, with the words that broke the rule")
c1, c2, c3, c4, c5 = st.columns([3, 2, 2, 2, 1])
with c1:
    rule = ui.url_select("Rule", [r["rule"] for r in pw["by_rule"]], prefix=P,
                         all_label=ALL, param="rule")
with c2:
    field = ui.url_select("Field", [r["field"] for r in pw["by_field"]], prefix=P,
                          all_label=ALL, param="field")
with c3:
    severity = ui.url_select("Severity", ["error", "warning"], prefix=P, all_label=ALL,
                             param="severity",
                          help="`error` rules count in the rate; `warning` rules do not.")
with c4:
    annotator = ui.url_select("Annotator",
                           sorted(r["annotator_id"] for r in pw["by_annotator"]),
                           prefix=P, all_label=ALL, param="annotator")
with c5:
    limit = ui.url_select("Show", LIMITS, param="show", prefix=P, default=LIMITS[0])

found = ui.safe_call(overview.policy_examples, week, rule=rule, field=field, severity=severity,
                  annotator=annotator, limit=int(limit))
if not found["examples"]:
    st.info("No annotation of this week has a violation matching these filters: set a "
            "filter back to All.")
    st.stop()
st.caption(f"{found['total']:,} annotations match; showing {len(found['examples']):,}, "
           "those breaking an `error` rule first. Offending words are highlighted.")

for ex in found["examples"]:
    with st.container(border=True):
        when = ex["submitted_at"][:16].replace("T", " ")
        meta = (f"{drill_link(ex['item_id'], week)} · {ui.md_escape(ex['annotator_id'])} "
                f"({ui.md_escape(ex['role'])}) · submitted {when} · "
                f"guideline {ui.md_escape(ex['guideline_version'] or '–')}")
        st.markdown(meta)
        for t in ex["texts"]:
            name = t["field"] + (f"[{t['element']}]" if t["element"] is not None else "")
            spans = [tuple(s) for s in t["spans"]]
            st.markdown(f"**{ui.md_escape(name)}:** "
                        + ui.highlight(t["text"], spans, color="red"))
        st.markdown("\n".join(f"- {describe(v)}" for v in ex["violations"]))
        if any(RULE_TYPES.get(v["rule"]) in ("invented_objects", "unmentioned_objects")
               for v in ex["violations"]):
            boxes = ", ".join(f"{ui.md_escape(b['label'] or '(no label)')} × {b['count']}"
                              for b in ex["boxes"]) or "none"
            st.caption(f"Boxes in this annotation: {boxes}")
