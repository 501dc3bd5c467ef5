"""Schema errors (M1): the error rate by week, errors by path and keyword, by annotator
and role, and the annotations behind them, each linked to the item drill-down.

URL: ?week=2026-W47&path=/fields/weather&keyword=required&annotator=ann-05&role=annotator
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from metrics import overview, weekly
from metrics.html_report import bar_figure, trend_figure
from pages.common import ui
from pages.common.ui import plural

P = "schema_"  # page prefix of session keys
ALL = "All"


config, weeks, week = ui.open_weekly_page(
    "Schema errors",
    "annotations that break the contract (JSON Schema and the checks "
    "it cannot state)")
sw = ui.safe_call(weekly.schema_week, week)
trend = ui.safe_call(weekly.series, visual=False)
log = weekly.guideline_log(config)
amber, red = config.threshold("schema_error_rate")

# -- the week's number and its trend ------------------------------------------------------
head, chart = st.columns([1, 3])
with head:
    st.metric(f"{ui.STATUS_ICON.get(sw['status'], '⚪')} Schema error rate",
              ui.fmt_rate(sw["error_rate"]), border=True,
              help="Annotations with at least one contract error / annotations of roles "
                   "annotator, reviewer and gold submitted this week.")
    st.markdown(f"{ui.light(sw['status'])} · {ui.fmt_ci(sw['error_rate_ci'])}")
    st.caption(f"{sw['with_errors']:,} of {plural(sw['annotations'], 'annotation')} in "
               f"{week} · amber ≥ {ui.fmt_rate(amber)} · red ≥ {ui.fmt_rate(red)}")
    if sw["reason"]:
        st.caption(ui.md_escape(sw["reason"]))
    model = sw["model"]
    if model["annotations"]:
        st.caption(f"Model pre-fills (not in the rate): {model['with_errors']:,} of "
                   f"{model['annotations']:,} with errors.")
with chart:
    st.plotly_chart(
        trend_figure(trend, "schema", title="Schema error rate by week, with 95% CI",
                     guidelines=log, thresholds=(amber, red), limits=False, week=week,
                     height=380),
        key=P + "trend")

if not sw["with_errors"]:
    st.success(f"No contract errors in {week}: every annotation of the week passes the "
               "contract. Pick another week in the sidebar to see errors.")
    st.stop()

# -- breakdowns ---------------------------------------------------------------------------
st.subheader(f"What breaks the contract in {week}")
left, right = st.columns(2)
with left:
    by_path = sw["by_path"][:20]
    st.plotly_chart(
        bar_figure([f"{r['path'] or '/'}  [{r['keyword']}]" for r in by_path],
                   [r["count"] for r in by_path],
                   title="By path and keyword (top 20)",
                   x_title="annotations with the error",
                   text=[f"{r['count']:,}" for r in by_path]),
        key=P + "by_path")
with right:
    by_kw = sw["by_keyword"]
    st.plotly_chart(
        bar_figure([r["keyword"] for r in by_kw], [r["count"] for r in by_kw],
                   title="By JSON Schema keyword or check", x_title="annotations with the error",
                   text=[f"{r['count']:,}" for r in by_kw], color="#8250df"),
        key=P + "by_keyword")

left, right = st.columns([3, 2])
with left:
    by_ann = [r for r in sw["by_annotator"] if r["annotations"]]
    by_ann.sort(key=lambda r: (-(r["rate"] or 0), r["annotator_id"]))
    st.plotly_chart(
        bar_figure([r["annotator_id"] for r in by_ann], [r["rate"] for r in by_ann],
                   title="By annotator: share of their annotations with errors",
                   x_title="annotations with a contract error (%)", percent=True,
                   text=[f"{r['count']:,} / {r['annotations']:,}" for r in by_ann]),
        key=P + "by_annotator")
with right:
    st.markdown("**By role**")
    st.dataframe(
        pd.DataFrame(sw["by_role"], columns=["role", "annotations", "count", "rate"]),
        hide_index=True, key=P + "by_role", placeholder="–",
        column_config={
            "role": "role", "annotations": st.column_config.NumberColumn("annotations"),
            "count": st.column_config.NumberColumn("with errors"),
            "rate": st.column_config.NumberColumn("error rate", format="percent"),
        })
    st.caption("Roles annotator, reviewer and gold count in the rate; model pre-fills are "
               "reported apart.")

# -- examples -----------------------------------------------------------------------------
st.subheader("Annotations with errors")
c1, c2, c3, c4 = st.columns(4)
with c1:
    path = ui.url_select("Path", sorted({r["path"] for r in sw["by_path"]}),
                         prefix=P, all_label=ALL, param="path",
                      help="JSON Pointer of the error; array indices are shown as *.")
with c2:
    keyword = ui.url_select("Keyword", [r["keyword"] for r in sw["by_keyword"]],
                         prefix=P, all_label=ALL, param="keyword")
with c3:
    annotator = ui.url_select("Annotator",
                           sorted(r["annotator_id"] for r in sw["by_annotator"] if r["count"]),
                           prefix=P, all_label=ALL, param="annotator")
with c4:
    role = ui.url_select("Role", sorted(r["role"] for r in sw["by_role"] if r["count"]),
                      prefix=P, all_label=ALL, param="role")

found = ui.safe_call(overview.schema_examples, week, path=path, keyword=keyword,
                  annotator=annotator, role=role)
examples = found["examples"]
if examples.empty:
    st.info("No annotation of this week has an error matching these filters: set a filter "
            "back to All.")
    st.stop()
examples.insert(0, "open", [ui.drill_url(i, week) for i in examples["item_id"]])
st.caption(f"{plural(found['total'], 'annotation')} "
           + ("matches" if found["total"] == 1 else "match")
           + (f"; the first {len(examples):,} are listed" if found["total"] > len(examples)
              else "")
           + ". Open an item to see its image, boxes and every annotator's fields.")
st.dataframe(
    examples, hide_index=True, key=P + "examples", placeholder="–",
    column_order=["open", "annotator_id", "role", "errors", "details", "annotation_id",
                  "version", "submitted_at", "export", "line"],
    column_config={
        "open": st.column_config.LinkColumn(
            "item (drill-down)", display_text=r"item=([^&]*)", width="medium",
            help="Open the item drill-down for this item and week"),
        "annotator_id": "annotator",
        "errors": st.column_config.NumberColumn("errors", width="small"),
        "details": st.column_config.TextColumn("errors: where [keyword] message",
                                               width="large"),
        "annotation_id": "annotation",
        "submitted_at": st.column_config.DatetimeColumn("submitted", format="YYYY-MM-DD HH:mm"),
        "export": "export file",
        "line": st.column_config.NumberColumn("line", format="%d"),
    })
