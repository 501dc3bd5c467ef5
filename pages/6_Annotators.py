"""Annotators: per annotator volume, schema error rate, violation rate, agreement with
peers, accuracy against gold and pre-fill acceptance (rubber-stamping flagged), in a
sortable table; and one annotator's weekly trends.

URL: ?week=2026-W47&scope=all&annotator=ann-02
"""

from __future__ import annotations

import html
import math
from urllib.parse import urlencode

import plotly.graph_objects as go
import streamlit as st

from metrics import inventory, weekly
from pages.common import ui
from pages.common.ui import plural

P = "an_"
FONT = 16
MAX_TICKS = 8  # week labels on a half-width chart that fit side by side, unrotated
NO_VALUE = "–"  # a rate with nothing to rate; the column's help says why
WHY = {
    "peer": f"{NO_VALUE} when they have no box units with a peer (no double-annotated "
            "item of theirs in the stable sample).",
    "gold": f"{NO_VALUE} when no item of theirs has a gold answer by someone else (a gold "
            "annotator is the reference, not rated against it)",
    "drafts": f"{NO_VALUE} when they had no model draft to accept.",
    "week": f"{NO_VALUE} in a week without annotations of theirs.",
}


def week_axis(fig: go.Figure, weeks: list[str]) -> None:
    """Short, unrotated week ticks ("W36"; the year under the first and at a new year),
    at most MAX_TICKS of them with the latest always labelled, and the legend under the
    axis title in room of its own: rotated "2026-W36" labels were clipped and the axis
    title was drawn over the legend."""
    step = max(1, math.ceil(len(weeks) / MAX_TICKS))
    shown = weeks[::-1][::step][::-1]
    years = {w[:4] for w in weeks}
    text, year = [], None
    for w in shown:
        text.append(w[5:] if len(years) == 1 or w[:4] == year else f"{w[5:]}<br>{w[:4]}")
        year = w[:4]
    fig.update_xaxes(type="category", tickvals=shown, ticktext=text, tickangle=0,
                     title=f"ISO week of {years.pop()}" if len(years) == 1 else "ISO week",
                     tickfont={"size": FONT - 2})
    fig.update_layout(legend={"orientation": "h", "yref": "container", "y": 0,
                              "yanchor": "bottom", "x": 0, "xanchor": "left"},
                      margin={"l": 10, "r": 10, "t": 60, "b": 115})


def guideline_marks(fig: go.Figure, weeks: list[str]) -> None:
    """A dotted vertical line at each guideline version's week, labelled."""
    for g in weekly.guideline_log(config):
        if g["week"] in weeks:
            fig.add_shape(type="line", xref="x", yref="paper", x0=g["week"], x1=g["week"],
                          y0=0, y1=1, line={"dash": "dot", "color": "#888"})
            fig.add_annotation(x=g["week"], yref="paper", y=1.0, showarrow=False,
                               text=html.escape(g["version"]), yanchor="bottom",
                               font={"size": FONT - 2, "color": "#555"})


# -- page --------------------------------------------------------------------------------

config, weeks, week = ui.open_weekly_page(
    "Annotators",
    "each annotator against peers and gold: volume, errors, agreement, pre-fill acceptance")
ui.init(P + "all", st.query_params.get("scope") == "all")
all_weeks = st.sidebar.toggle("All weeks together", key=P + "all",
                              help="The table over every week instead of the picked one.")
ui.sync_param("scope", "all" if all_weeks else "")
scope = None if all_weeks else week
scope_text = f"all {plural(len(weeks), 'week')}" if all_weeks else week

table = ui.safe_call(weekly.annotator_table, scope)
pre = ui.safe_call(weekly.prefill_summary, scope)

st.subheader(f"Per annotator · {scope_text}")
if table.empty:
    st.info(f"No annotations of roles annotator, reviewer or gold in {scope_text}: pick "
            "another week, or load exports on the Data page.")
    st.stop()

c1, c2, c3, c4 = st.columns(4)
c1.metric("Annotators (people)", f"{len(table):,}")
c2.metric("Annotations (n)", f"{int(table['annotations'].sum()):,}")
c3.metric("Pre-fills reviewed", ui.fmt_rate(pre["reviewed_share"]),
          help="Among pre-filled annotations, the share marked reviewed.")
c3.caption(f"{pre['reviewed']:,} of {plural(pre['prefilled'], 'pre-filled annotation')} · "
           f"{ui.fmt_ci(pre['reviewed_share_ci'])}")
c4.metric("Drafts accepted unchanged", ui.fmt_rate(pre["unchanged_share"]),
          help="Among pre-fills with a model draft: boxes and fields equal to the draft's.")
c4.caption(f"{pre['unchanged']:,} of {plural(pre['drafts'], 'draft')} · "
           f"{ui.fmt_ci(pre['unchanged_share_ci'])}")
for r in pre["by_reviewer"]:
    if r["rubber_stamping"]:
        st.warning(
            f"**Rubber-stamping: {ui.md_escape(r['reviewer'])}** accepted "
            f"{ui.fmt_rate(r['unchanged_share'])} of {r['drafts']} model drafts unchanged "
            f"(flagged at ≥ {weekly.RUBBER_STAMP_MIN_DRAFTS} drafts and "
            f"≥ {weekly.RUBBER_STAMP_SHARE:.0%} unchanged). Check a few of their items in "
            "the drill-down.", icon="⚠️")

shown = table.copy()
shown["flag"] = ["⚠️ rubber-stamping" if f else "" for f in shown["rubber_stamping"]]
cols = ["annotator_id", "roles", "annotations", "schema_error_rate", "violation_rate",
        "peer_agreement", "peer_units", "gold_agreement", "gold_units", "gold_f1",
        "gold_class_accuracy", "drafts", "unchanged_share", "flag"]
ids = list(shown["annotator_id"])


def on_row() -> None:
    rows = st.session_state[P + "table"]["selection"]["rows"]
    if rows:
        st.session_state[P + "who"] = ids[rows[0]]


st.dataframe(
    shown[cols], hide_index=True, key=P + "table", on_select=on_row,
    selection_mode="single-row", placeholder=NO_VALUE,
    column_config={
        "annotator_id": st.column_config.TextColumn("annotator", pinned=True),
        "roles": "roles",
        "annotations": st.column_config.NumberColumn("annotations (n)", format="%d"),
        "schema_error_rate": st.column_config.NumberColumn(
            "schema error rate", format="percent",
            help="Share of their annotations with at least one contract error (M1)."),
        "violation_rate": st.column_config.NumberColumn(
            "violation rate", format="percent",
            help="Share of their annotations with at least one policy error (M2)."),
        "peer_agreement": st.column_config.NumberColumn(
            "agreement with peers", format="percent",
            help="1 − M3 over the peer pairs they are in: agreeing box units / all. "
                 + WHY["peer"]),
        "peer_units": st.column_config.NumberColumn("peer box units (n)", format="%d"),
        "gold_agreement": st.column_config.NumberColumn(
            "agreement with gold", format="percent",
            help="1 − M3 on their annotations against the item's gold answer. "
                 + WHY["gold"] + "."),
        "gold_units": st.column_config.NumberColumn("gold box units (n)", format="%d"),
        "gold_f1": st.column_config.NumberColumn(
            "box F1 vs gold", format="percent",
            help="2 TP / (2 TP + FP + FN), TP = same-label matched boxes. "
                 + WHY["gold"] + "."),
        "gold_class_accuracy": st.column_config.NumberColumn(
            "class accuracy vs gold", format="percent",
            help="Matched boxes with the gold label / matched boxes. " + WHY["gold"]
                 + " or no box of theirs matched one."),
        "drafts": st.column_config.NumberColumn("model drafts (n)", format="%d"),
        "unchanged_share": st.column_config.NumberColumn(
            "drafts accepted unchanged", format="percent",
            help="Model drafts they kept unchanged / their model drafts. " + WHY["drafts"]),
        "flag": st.column_config.TextColumn("flag"),
    })
st.caption(f"Click a column header to sort; click a row to see that annotator's trends below. "
           f"A dash ({NO_VALUE}) is a rate with nothing to rate: no double-annotated items "
           "with a peer, no gold answer, no model drafts (hover a column header for which).")

# -- trends ------------------------------------------------------------------------------

st.subheader("Trends per annotator")
ui.init(P + "who", ui.query_default("annotator", ids, ids[0]))
if st.session_state[P + "who"] not in ids:
    st.session_state[P + "who"] = ids[0]
person = st.selectbox("Annotator", ids, key=P + "who")
ui.sync_param("annotator", person)
s = ui.safe_call(inventory.annotator_series, person)
team = ui.safe_call(weekly.series, visual=True, ci=False)
s = s.merge(team[["week", "schema_rate", "policy_rate", "visual_rate"]], on="week",
            how="left")
mine = s[s["annotations"] > 0]
if mine.empty:
    st.info(f"{ui.md_escape(person)} has no annotations in any week.")
    st.stop()

left, right = st.columns(2)
weeks_shown = list(s["week"])
with left:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=s["week"], y=s["schema_error_rate"] * 100, name="schema errors",
                             mode="lines+markers", line={"width": 3, "color": "#d62728"},
                             marker={"size": 8}, hovertemplate="%{x}: %{y:.1f}%"))
    fig.add_trace(go.Scatter(x=s["week"], y=s["violation_rate"] * 100,
                             name="policy violations", mode="lines+markers",
                             line={"width": 3, "color": "#ff7f0e"}, marker={"size": 8},
                             hovertemplate="%{x}: %{y:.1f}%"))
    fig.add_trace(go.Scatter(x=s["week"], y=s["schema_rate"] * 100, name="team: schema",
                             mode="lines", line={"dash": "dot", "color": "#d62728"},
                             hovertemplate="%{x}: %{y:.1f}%"))
    fig.add_trace(go.Scatter(x=s["week"], y=s["policy_rate"] * 100, name="team: policy",
                             mode="lines", line={"dash": "dot", "color": "#ff7f0e"},
                             hovertemplate="%{x}: %{y:.1f}%"))
    guideline_marks(fig, weeks_shown)
    fig.update_yaxes(title="% of their annotations", ticksuffix="%", rangemode="tozero",
                     tickfont={"size": FONT - 2})
    fig.update_layout(height=480, font={"size": FONT}, hoverlabel={"font_size": FONT},
                      title={"text": f"Error rates · {html.escape(person)}"})
    week_axis(fig, weeks_shown)
    st.plotly_chart(fig, key=P + "errors")
with right:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=s["week"], y=s["peer_agreement"] * 100,
                             name="agreement with peers", mode="lines+markers",
                             line={"width": 3, "color": "#1f77b4"}, marker={"size": 8},
                             customdata=s["peer_units"],
                             hovertemplate="%{x}: %{y:.1f}% of %{customdata} box units"))
    fig.add_trace(go.Scatter(x=s["week"], y=s["gold_agreement"] * 100,
                             name="agreement with gold", mode="lines+markers",
                             line={"width": 3, "color": "#2ca02c"}, marker={"size": 10,
                                                                            "symbol": "star"},
                             customdata=s["gold_units"],
                             hovertemplate="%{x}: %{y:.1f}% of %{customdata} box units"))
    fig.add_trace(go.Scatter(x=s["week"], y=(1 - s["visual_rate"]) * 100,
                             name="team: 1 − M3", mode="lines",
                             line={"dash": "dot", "color": "#1f77b4"},
                             hovertemplate="%{x}: %{y:.1f}%"))
    guideline_marks(fig, weeks_shown)
    fig.update_yaxes(title="% of box units in agreement", ticksuffix="%",
                     tickfont={"size": FONT - 2})
    fig.update_layout(height=480, font={"size": FONT}, hoverlabel={"font_size": FONT},
                      title={"text": f"Agreement · {html.escape(person)}"})
    week_axis(fig, weeks_shown)
    st.plotly_chart(fig, key=P + "agreement")
    if not (s["peer_units"] > 0).any():
        st.caption("No double-annotated items with this annotator: raise `[sample] rate` or "
                   "pin items to measure agreement with peers.")

vol = go.Figure(go.Bar(x=s["week"], y=s["annotations"], marker={"color": "#7f7f7f"},
                       hovertemplate="%{x}: %{y} annotations<extra></extra>"))
vol.update_yaxes(title="annotations (count)", tickfont={"size": FONT - 2})
vol.update_xaxes(tickfont={"size": FONT - 2})
vol.update_layout(height=260, font={"size": FONT}, margin={"l": 10, "r": 10, "t": 50, "b": 10},
                  title={"text": f"Volume · {html.escape(person)}"})
st.plotly_chart(vol, key=P + "volume")
with st.expander("The weekly numbers as a table"):
    week_help = {"schema_error_rate": WHY["week"], "violation_rate": WHY["week"],
                 "peer_agreement": WHY["peer"], "gold_agreement": WHY["gold"]}
    st.dataframe(
        s.drop(columns=["schema_rate", "policy_rate", "visual_rate"]), hide_index=True,
        placeholder=NO_VALUE,
        column_config={c: st.column_config.NumberColumn(c.replace("_", " "), format="percent",
                                                        help=why)
                       for c, why in week_help.items()})
link = "Visual_agreement?" + urlencode({"week": week, "annotator": person})
st.markdown(f"🔍 [Their pairs on the Visual agreement page]({link})")
