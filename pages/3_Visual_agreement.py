"""Visual agreement: M3 by week, the four kinds of agreement side by side, the class
confusion matrix, IoU histogram and threshold curve, per annotator pair, and the items
behind any number (linked to the drill-down).

URL: ?week=2026-W47&from=2026-W36&to=2026-W47&label=car&annotator=ann-02
     &kind=class&vs=bus&pair=ann-01|ann-05
"""

from __future__ import annotations

import html
from functools import partial

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from metrics import inventory, visual
from pages.common import ui
from pages.common.ui import plural

P = "va_"  # page prefix of session keys
FONT = 16
KIND_NAMES = {
    "presence": "Presence: a box one annotator drew and the other did not",
    "class": "Class: matched boxes with different labels",
    "low_overlap": "Low overlap: matched boxes below [agreement] low_overlap",
    "schema": "Schema: one annotation passes the contract, the other does not",
    "mentions": "Text: labels the caption names (mentions)",
}
LABEL_KINDS = {"presence", "class", "low_overlap", "mentions"}


# -- plumbing ----------------------------------------------------------------------------


def style(fig: go.Figure, *, height: int = 420, title: str | None = None) -> go.Figure:
    fig.update_layout(height=height, font={"size": FONT}, margin={"l": 10, "r": 10, "t": 60,
                                                                   "b": 10},
                      title={"text": title, "font": {"size": FONT + 4}} if title else None,
                      hoverlabel={"font_size": FONT}, legend={"font": {"size": FONT - 2}})
    fig.update_xaxes(tickfont={"size": FONT - 2}, title_font={"size": FONT})
    fig.update_yaxes(tickfont={"size": FONT - 2}, title_font={"size": FONT})
    return fig


def pct(x) -> str:
    return ui.fmt_rate(None if x is None or pd.isna(x) else float(x))


def alpha_text(d: dict) -> str:
    if d.get("alpha") is None:
        return "–"
    return f"{d['alpha']:.2f}"


def alpha_ci_text(d: dict) -> str:
    ci = d.get("alpha_ci")
    if not ci or ci[0] is None:
        return "–"
    return f"{ci[0]:.2f} – {ci[1]:.2f}"


# -- page --------------------------------------------------------------------------------

config, weeks, week = ui.open_weekly_page(
    "Visual agreement",
    "M3 visual disagreement on the stable sample and its breakdown into presence, class, "
    "text and schema agreement")
people = ui.safe_call(inventory.annotators)
v = ui.safe_call(visual.visual_week, week)
# Configured labels, then any other label boxes carried this week (e.g. an unknown "truck").
labels_all = list(dict.fromkeys([*config.labels, *v["class"]["confusion"]["labels"]]))

# Session defaults, once, from the URL.
q = st.query_params
lo, hi = weeks[max(0, len(weeks) - 12)], weeks[-1]
ui.init(P + "label", ui.query_default("label", labels_all, ""))
ui.init(P + "annotator", ui.query_default("annotator", people, ""))
ui.init(P + "vs", q.get("vs") if q.get("vs") in labels_all else "")
ui.init(P + "pair", q.get("pair", ""))

st.sidebar.markdown("### Filters")
# A range slider needs its default as `value` (a tuple there makes it a range slider).
rng = st.sidebar.select_slider("Trend: weeks shown", options=weeks, key=P + "range",
                               value=(q.get("from") if q.get("from") in weeks else lo,
                                      q.get("to") if q.get("to") in weeks else hi),
                               help="The range of the M3-by-week chart.")
if rng[0] > rng[1]:
    rng = (rng[1], rng[0])
label = st.sidebar.selectbox("Label", [""] + labels_all, key=P + "label",
                             format_func=lambda v: v or "All labels",
                             help="Box outcomes where either box has this label.")
annotator = st.sidebar.selectbox("Annotator", [""] + people, key=P + "annotator",
                                 format_func=lambda v: v or "All annotators",
                                 help="Only the pairs this annotator is in.")
ui.sync_param("from", rng[0])
ui.sync_param("to", rng[1])
ui.sync_param("label", label)
ui.sync_param("annotator", annotator)
filters = [f"label **{ui.md_escape(label)}**" if label else "",
           f"annotator **{ui.md_escape(annotator)}**" if annotator else ""]
filter_text = " and ".join(f for f in filters if f)
filter_title = html.escape("".join(
    f" · {name} {value}" for name, value in (("label", label), ("annotator", annotator))
    if value))

# -- headline ----------------------------------------------------------------------------

st.subheader(f"M3 visual disagreement · {week}")
c1, c2, c3, c4 = st.columns(4)
c1.metric("M3 visual disagreement", pct(v["disagreement_rate"]),
          help="(class + presence disagreements) / (agreements + class + presence), "
               "summed over the week's pairs of the stable sample.")
c1.caption(f"{ui.fmt_ci(v['disagreement_rate_ci'])} (item bootstrap) · "
           f"{ui.status_badge(v['status'])}")
box_units = v["agreements"] + v["class_disagreements"] + v["presence_disagreements"]
c2.metric("Box units", f"{box_units:,} boxes",
          help="Agreements + class + presence disagreements.")
c2.caption(f"{v['agreements']:,} agree · {v['class_disagreements']:,} class · "
           f"{v['presence_disagreements']:,} presence")
c3.metric("Double-annotated items", f"{v['items']:,} items")
c3.caption(f"{v['pairs']:,} annotator pairs · {v['low_overlap']:,} matched boxes "
           f"with low overlap (IoU < {config.agreement.low_overlap:g})")
ref = v["reference"]
c4.metric("Against gold (M3)", pct(ref["disagreement_rate"]),
          help="The same M3 on each annotation against the item's gold answer.")
c4.caption(f"{ref['items']:,} gold items · {ref['pairs']:,} pairs · "
           f"{ui.fmt_ci(ref['disagreement_rate_ci'])}")
for w in v["warnings"] if v["pairs"] else []:
    st.warning(w, icon="⚠️")
if not v["pairs"]:
    st.info(f"No double-annotated items in {week}'s sample: raise `[sample] rate` or pin "
            "items (`[sample] pinned`) in labelqa.toml, or pick another week in the sidebar.")

# -- M3 by week --------------------------------------------------------------------------

if label or annotator:
    series = ui.safe_call(inventory.m3_by_week, label=label or None,
                       annotator=annotator or None)
else:
    series = ui.safe_call(visual.visual_series)
series = series[(series["week"] >= rng[0]) & (series["week"] <= rng[1])]
series = series[series["disagreement_rate"].notna()]
if series.empty:
    st.info("No week in the chosen range has box units"
            + (f" for {filter_text}" if filter_text else "") + ": widen the week range or "
            "clear the filters in the sidebar.")
else:
    fig = go.Figure()
    if "ci_low" in series and series["ci_low"].notna().any():
        fig.add_trace(go.Scatter(
            x=list(series["week"]) + list(series["week"])[::-1],
            y=list(series["ci_high"] * 100) + list(series["ci_low"] * 100)[::-1],
            fill="toself", fillcolor="rgba(31,119,180,0.15)", line={"width": 0},
            hoverinfo="skip", name="95% CI (item bootstrap)"))
    units = (series["agreements"] + series["class_disagreements"]
             + series["presence_disagreements"])
    fig.add_trace(go.Scatter(
        x=series["week"], y=series["disagreement_rate"] * 100, mode="lines+markers",
        name="M3 disagreement", line={"width": 3}, marker={"size": 9},
        customdata=list(zip(units, series["class_disagreements"],
                            series["presence_disagreements"], strict=True)),
        hovertemplate="%{x}: %{y:.1f}%<br>%{customdata[0]} box units · "
                      "%{customdata[1]} class · %{customdata[2]} presence<extra></extra>"))
    amber, red = config.thresholds["visual_disagreement_rate"]
    fig.add_hline(y=amber * 100, line_dash="dot", line_color="orange",
                  annotation_text=f"amber {amber:.0%}", annotation_position="top left")
    fig.add_hline(y=red * 100, line_dash="dot", line_color="red",
                  annotation_text=f"red {red:.0%}", annotation_position="top left")
    if week in set(series["week"]):
        row = series[series["week"] == week].iloc[0]
        fig.add_trace(go.Scatter(x=[week], y=[row["disagreement_rate"] * 100], mode="markers",
                                 marker={"size": 18, "symbol": "circle-open", "color": "black",
                                         "line": {"width": 3}},
                                 name="selected week", hoverinfo="skip"))
    fig.update_yaxes(title="disagreement (% of box units)", rangemode="tozero",
                     ticksuffix="%")
    fig.update_xaxes(title="ISO week")
    title = "M3 by week" + (" · " + html.escape(
        ", ".join(x for x in (label and f"label {label}", annotator and f"annotator {annotator}")
                  if x)) if (label or annotator) else "")
    st.plotly_chart(style(fig, height=380, title=title),
                    key=P + "trend")

# -- the four kinds ----------------------------------------------------------------------

if not v["pairs"]:
    st.stop()  # nothing below has data in a week without pairs (said above)

st.subheader("The four kinds of agreement")
st.caption("Percent agreement = share of agreeing pairs of values within units. "
           "Krippendorff's α (nominal, −1 to 1; 1 = perfect, 0 = chance) with its 95% item "
           "bootstrap CI. The week's official numbers; the sidebar filters do not apply here.")


def card(col, title: str, unit: str, d: dict) -> None:
    col.metric(f"{title} · α", alpha_text(d), help=d.get("alpha_reason") or None)
    col.markdown(f"**{pct(d.get('agreement'))}** agreement  \n"
                 f"{d.get('units', 0):,} {unit}  \n"
                 f"α 95% CI {alpha_ci_text(d)}")
    for w in d.get("warnings") or []:
        col.caption(f"⚠️ {w}")
    if d.get("alpha") is None and d.get("alpha_reason"):
        col.caption(f"α: {d['alpha_reason']}")


k1, k2, k3, k4 = st.columns(4)
card(k1, "Presence", "(item, label) units", v["presence"])
card(k2, "Class", "matched box pairs", v["class"])
card(k4, "Schema", "items (passes the contract: yes/no)", v["schema"])
with k3:
    st.markdown("Text · per field")
    for field, d in v["text"].items():
        name = ui.md_escape(field)
        if d.get("kind") == "free":
            mean = d.get("mean_similarity")
            mean_text = "–" if mean is None else f"{mean:.2f}"
            st.markdown(
                f"**{name}** (free text): **{pct(d.get('agreement'))}** of {d['units']:,} "
                f"pairs similar (≥ 0.8) · mean similarity {mean_text} (0–1)")
        else:
            unit = {"categorical": "items", "multilabel": "(item, value) units",
                    "mentions": "(item, label) units"}.get(d.get("kind"), "units")
            st.markdown(f"**{name}** ({d.get('kind')}): **α {alpha_text(d)}** "
                        f"(CI {alpha_ci_text(d)}) · {pct(d.get('agreement'))} agreement · "
                        f"{d['units']:,} {unit}")
        for w in d.get("warnings") or []:
            st.caption(f"⚠️ {w}")

rows = []


def add_row(kind: str, unit: str, d: dict, note: str = "") -> None:
    notes = [note] if note else []
    if d.get("alpha") is None and d.get("alpha_reason"):
        notes.append(f"α: {d['alpha_reason']}")
    notes += d.get("warnings") or []
    ci = d.get("alpha_ci") or [None, None]
    rows.append({"kind": kind, "unit": unit, "units": d.get("units", 0),
                 "agreement": d.get("agreement"), "alpha": d.get("alpha"),
                 "alpha_low": ci[0], "alpha_high": ci[1], "notes": "; ".join(notes)})


add_row("presence", "(item, label)", v["presence"])
add_row("class", "matched box pair", v["class"])
for field, d in v["text"].items():
    kind = d.get("kind")
    unit = {"free": "pair", "categorical": "item", "multilabel": "(item, value)",
            "mentions": "(item, label)"}.get(kind, "unit")
    note = ""
    if kind == "free" and d.get("mean_similarity") is not None:
        note = (f"mean similarity {d['mean_similarity']:.2f}, "
                f"{pct(d.get('share_below_0_8'))} of pairs below 0.8")
    add_row(f"text · {field} ({kind})", unit, d, note)
add_row("schema", "item", v["schema"])
iou = v["iou"]
add_row("iou (localization)", "matched box pair", iou,
        "" if iou.get("mean") is None else
        f"mean IoU {iou['mean']:.2f}, median {iou['median']:.2f}; agreement = share not "
        f"below low_overlap {config.agreement.low_overlap:g}")
with st.expander("All agreement numbers as a table", expanded=False):
    st.dataframe(pd.DataFrame(rows), hide_index=True,
                 column_config={
                     "kind": "kind", "unit": "unit",
                     "units": st.column_config.NumberColumn("units (n)", format="%d"),
                     "agreement": st.column_config.NumberColumn("agreement (%)",
                                                                format="percent"),
                     "alpha": st.column_config.NumberColumn("α", format="%.3f"),
                     "alpha_low": st.column_config.NumberColumn("α CI low", format="%.3f"),
                     "alpha_high": st.column_config.NumberColumn("α CI high", format="%.3f"),
                     "notes": st.column_config.TextColumn("notes", width="large"),
                 })


def click_layer(fig: go.Figure, names: list[str], hover: list[list[str]],
                keep: list[list[bool]]) -> None:
    """Invisible square markers over the heatmap cells: heatmaps cannot be selected in
    Streamlit, markers can, so a click on a cell selects its marker (x = column,
    y = row). They also carry the (escaped) hover text."""
    xs, ys, tips = [], [], []
    for i, row in enumerate(names):
        for j, col in enumerate(names):
            if keep[i][j]:
                xs.append(col)
                ys.append(row)
                tips.append(hover[i][j])
    size = max(12, min(60, int(380 / max(1, len(names)))))
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers", showlegend=False, customdata=tips,
        hovertemplate="%{customdata}<extra></extra>",
        marker={"symbol": "square", "size": size, "color": "rgba(0,0,0,0)"},
        selected={"marker": {"opacity": 1}}, unselected={"marker": {"opacity": 1}}))


# -- click handlers (run before the rerun, so they may set any widget's state) ------------


def points(key: str) -> list[dict]:
    event = st.session_state.get(key)
    try:
        return list(event["selection"]["points"])
    except (KeyError, TypeError):
        return []


def on_confusion(names: dict[str, str]) -> None:
    pts = points(P + "confusion_chart")
    if not pts:
        return
    a, b = names.get(str(pts[0].get("y"))), names.get(str(pts[0].get("x")))
    if a is None or b is None:
        return
    st.session_state[P + "kind"] = "class"
    st.session_state[P + "label"] = a
    st.session_state[P + "vs"] = b if b != a else ""


def on_pair(names: dict[str, str], counts: dict[str, tuple[int, int]]) -> None:
    """A pair's cell lists its items: under the box category it has disagreements in
    (class or presence; the current one when it has both or neither)."""
    pts = points(P + "pair_chart")
    if not pts:
        return
    a, b = names.get(str(pts[0].get("y"))), names.get(str(pts[0].get("x")))
    if a is None or b is None or a == b:
        return
    pair = "|".join(sorted((a, b)))
    st.session_state[P + "pair"] = pair
    n_class, n_presence = counts.get(pair, (0, 0))
    if n_class and not n_presence:
        st.session_state[P + "kind"] = "class"
    elif n_presence and not n_class:
        st.session_state[P + "kind"] = "presence"
    elif n_class and st.session_state.get(P + "kind") not in ("class", "presence"):
        st.session_state[P + "kind"] = "presence"


# -- confusion matrix and pairs ----------------------------------------------------------

left, right = st.columns(2)
with left:
    conf = (ui.safe_call(inventory.confusion, week, annotator=annotator)
            if annotator else v["class"]["confusion"])
    labs, matrix = conf["labels"], conf["matrix"]
    total = sum(sum(r) for r in matrix)
    if not total:
        st.info(f"No matched box pairs in {week}"
                + (f" for annotator {ui.md_escape(annotator)}" if annotator else "")
                + ": the confusion matrix needs double-annotated items with boxes.")
    else:
        shown = [html.escape(x) for x in labs]
        top = max([matrix[i][j] for i in range(len(labs)) for j in range(len(labs))
                   if i != j] + [1])
        z = [[None if i == j else (matrix[i][j] or None) for j in range(len(labs))]
             for i in range(len(labs))]
        hover = [[f"{shown[i]} × {shown[j]}: {matrix[i][j]} matched box pairs"
                  + (" (agreements)" if i == j else " (class disagreements)")
                  for j in range(len(labs))] for i in range(len(labs))]
        fig = go.Figure(go.Heatmap(
            z=z, x=shown, y=shown, colorscale="Reds", hoverinfo="skip",
            colorbar={"title": "class<br>disagreements", "dtick": 1 if top <= 10 else None},
            zmin=0, zmax=top))
        click_layer(fig, shown, hover, [[True] * len(labs) for _ in labs])
        # One layout update: plotly re-validates every annotation on each add_annotation,
        # which took half of this page's script time at 1M.
        fig.update_layout(annotations=[
            {"x": shown[j], "y": shown[i], "text": str(matrix[i][j]), "showarrow": False,
             "font": {"size": FONT + 2,
                      "color": ("white" if i != j and matrix[i][j] > top / 2
                                else "#666" if i == j else "black")}}
            for i in range(len(labs)) for j in range(len(labs)) if matrix[i][j]])
        fig.update_yaxes(autorange="reversed", title="label (one annotator)")
        fig.update_xaxes(title="label (the other)", side="bottom")
        st.plotly_chart(
            style(fig, height=460, title="Class confusion (matched box pairs)"),
            key=P + "confusion_chart",
            on_select=partial(on_confusion, dict(zip(shown, labs, strict=True))),
            selection_mode="points")
        st.caption("Diagonal (grey numbers): agreements. Colored cells: class disagreements "
                   "between the two labels. Click a cell to list its items below.")
with right:
    if label:
        pairs = ui.safe_call(inventory.pair_counts, week, label=label)
    else:
        pairs = ui.safe_call(visual.pair_breakdown, week)
    if pairs.empty:
        st.info(f"No annotator pairs in {week}'s sample: raise `[sample] rate` or pin items.")
    else:
        people_w = sorted(set(pairs["annotator_a"]) | set(pairs["annotator_b"]))
        shown = [html.escape(x) for x in people_w]
        pos = {p: i for i, p in enumerate(people_w)}
        n = len(people_w)
        z = [[None] * n for _ in range(n)]
        hover = [[""] * n for _ in range(n)]
        text = [[""] * n for _ in range(n)]
        counts = {}
        for r in pairs.itertuples(index=False):
            counts["|".join(sorted((r.annotator_a, r.annotator_b)))] = (
                int(r.class_disagreements), int(r.presence_disagreements))
            i, j = pos[r.annotator_a], pos[r.annotator_b]
            units = r.agreements + r.class_disagreements + r.presence_disagreements
            rate = None if pd.isna(r.disagreement_rate) else r.disagreement_rate * 100
            tip = (f"{shown[i]} × {shown[j]}: "
                   + ("no box units" if rate is None else f"{rate:.1f}% disagreement")
                   + f"<br>{units} box units · {r.class_disagreements} class · "
                     f"{r.presence_disagreements} presence · {r.items} items")
            for a, b in ((i, j), (j, i)):
                z[a][b] = rate
                hover[a][b] = tip
                text[a][b] = "" if rate is None else f"{rate:.0f}%"
        # The scale starts at 0% (white) and reaches at least 1%, so a week where every
        # pair agrees is drawn white, not mid-scale around a zero range.
        top = max([x for row in z for x in row if x is not None] + [1.0])
        fig = go.Figure(go.Heatmap(
            z=z, x=shown, y=shown, colorscale="Reds", zmin=0, zmax=top, hoverinfo="skip",
            text=text, texttemplate="%{text}", textfont={"size": FONT - 2},
            colorbar={"title": "M3 %", "ticksuffix": "%"}))
        click_layer(fig, shown, hover, [[bool(t) for t in row] for row in hover])
        fig.update_yaxes(autorange="reversed")
        title = "M3 per annotator pair" + (f" · label {html.escape(label)}" if label else "")
        st.plotly_chart(style(fig, height=460, title=title),
                        key=P + "pair_chart",
                        on_select=partial(on_pair, dict(zip(shown, people_w, strict=True)),
                                          counts),
                        selection_mode="points")
        st.caption("Disagreement (% of the pair's box units) on the items both labeled. "
                    "Click a cell to list that pair's items below.")

# -- IoU ---------------------------------------------------------------------------------

left, right = st.columns(2)
with left:
    ious = ui.safe_call(inventory.iou_histogram, week, label=label or None,
                        annotator=annotator or None)
    if not ious["n"]:
        st.info(f"No matched box pairs in {week}"
                + (f" for {filter_text}" if filter_text else "") + ": no IoU to show.")
    else:
        width = 1.0 / inventory.IOU_BINS
        starts = [k * width for k in range(inventory.IOU_BINS)]
        fig = go.Figure(go.Bar(
            x=[s + width / 2 for s in starts], y=ious["counts"], width=width,
            marker={"color": "#1f77b4", "line": {"color": "white", "width": 1}},
            name="matched box pairs",
            customdata=[[s, s + width] for s in starts],
            hovertemplate="IoU %{customdata[0]:.3f}–%{customdata[1]:.3f}: "
                          "%{y} box pairs<extra></extra>"))
        fig.add_vline(x=config.agreement.low_overlap, line_dash="dash", line_color="orange",
                      annotation_text=f"low overlap < {config.agreement.low_overlap:g}",
                      annotation_position="top left")
        fig.add_vline(x=config.agreement.iou_threshold, line_dash="dot", line_color="red",
                      annotation_text=f"t = {config.agreement.iou_threshold:g}",
                      annotation_position="bottom right")
        fig.update_xaxes(title="IoU of matched box pairs (0–1)",
                         range=[max(0.0, min(config.agreement.iou_threshold - 0.05,
                                             ious["min"] - 0.05)), 1.0])
        fig.update_yaxes(title="matched box pairs (count)", rangemode="tozero",
                         dtick=1 if ious["n"] <= 10 else None)
        st.plotly_chart(style(fig, height=400,
                              title=f"IoU histogram · mean {ious['mean']:.2f}, "
                                    f"median {ious['median']:.2f}" + filter_title),
                        key=P + "iou_hist")
        st.caption(f"{ious['n']:,} matched box pairs (agreement or class), in bins of "
                   f"{width:g} IoU.")
with right:
    curve = pd.DataFrame(v["iou"]["by_threshold"])
    if curve.empty or curve["agreement"].isna().all():
        st.info(f"No box units in {week}: the threshold curve needs double-annotated items "
                "with boxes.")
    else:
        fig = go.Figure(go.Scatter(
            x=curve["t"], y=curve["agreement"] * 100, mode="lines+markers",
            line={"width": 3}, marker={"size": 9}, name="agreement",
            customdata=curve[["agreements", "class_disagreements",
                              "presence_disagreements"]].to_numpy(),
            hovertemplate="IoU ≥ %{x:.2f}: %{y:.1f}% agreement<br>%{customdata[0]} agree · "
                          "%{customdata[1]} class · %{customdata[2]} presence<extra></extra>"))
        fig.add_vline(x=config.agreement.iou_threshold, line_dash="dot", line_color="red",
                      annotation_text=f"configured t = {config.agreement.iou_threshold:g}",
                      annotation_position="bottom right")
        fig.update_xaxes(title="IoU threshold t for a match", dtick=0.05)
        fig.update_yaxes(title="agreement (% of box units)", ticksuffix="%", range=[0, 105])
        st.plotly_chart(style(fig, height=400, title="Agreement vs IoU threshold"
                              + (" · all pairs" if filter_text else "")),
                        key=P + "iou_curve")
        if filter_text:
            st.caption("The week's official curve over all pairs: the sidebar filters do "
                       "not apply here.")

# -- items behind a number ---------------------------------------------------------------

st.subheader("Items behind a number")
kinds = ["presence", "class", "low_overlap"]
kind_label = dict(KIND_NAMES)
for field, fkind in config.fields.items():
    kinds.append(field)
    kind_label[field] = (f"Text: field {field} ({fkind}"
                         + (", similarity < 0.8)" if fkind == "free" else ")"))
mentions_key = "mentions" if "mentions" not in config.fields else None
if mentions_key and "free" in config.fields.values():
    kinds.append("mentions")
kinds.append("schema")
ui.init(P + "kind", q.get("kind") if q.get("kind") in kinds else "presence")
if st.session_state[P + "kind"] not in kinds:
    st.session_state[P + "kind"] = "presence"
pair_options = [""]
if not pairs.empty:
    pair_options += [f"{a}|{b}" for a, b in zip(pairs["annotator_a"], pairs["annotator_b"],
                                                strict=True)]
if st.session_state.get(P + "pair") not in pair_options:
    st.session_state[P + "pair"] = ""

c1, c2, c3 = st.columns([2, 1, 1])
kind = c1.selectbox("Category", kinds, key=P + "kind", format_func=lambda k: kind_label[k])
pair = c2.selectbox("Annotator pair", pair_options, key=P + "pair",
                    format_func=lambda p: p.replace("|", " × ") if p else
                    ("pairs with " + annotator if annotator else "All pairs"),
                    help="Click a cell of the pair heatmap to pick one.")
vs_options = [""] + [x for x in labels_all if x != label] if label else [""]
if st.session_state.get(P + "vs") not in vs_options:
    st.session_state[P + "vs"] = ""
vs = c3.selectbox("Confused with", vs_options, key=P + "vs",
                  format_func=lambda x: x or "Any label",
                  disabled=not (kind == "class" and label),
                  help="With category Class and a label: class disagreements between the "
                       "two labels (a confusion-matrix cell).")
ui.sync_param("kind", kind)
ui.sync_param("pair", pair)
ui.sync_param("vs", vs if kind == "class" and label else "")

who = tuple(pair.split("|", 1)) if pair else (annotator or None)
use_label = (label or None) if (kind in LABEL_KINDS
                                 or config.fields.get(kind) == "multilabel") else None
if kind == "class" and label and vs:
    items = ui.safe_call(inventory.class_pair_items, week, label, vs, annotator=who)
    what = f"class disagreements between **{ui.md_escape(label)}** and **{ui.md_escape(vs)}**"
else:
    items = ui.safe_call(visual.disagreement_items, week, kind=kind, label=use_label,
                      annotator=who)
    what = f"**{ui.md_escape(kind_label[kind])}**" + (
        f" for label **{ui.md_escape(use_label)}**" if use_label else "")
scope = (f" in the pair **{ui.md_escape(pair.replace('|', ' × '))}**" if pair else
         f" in pairs with **{ui.md_escape(annotator)}**" if annotator else "")
st.markdown(f"{plural(len(items), 'item')} of {week} with {what}{scope}.")
if label and kind not in LABEL_KINDS and config.fields.get(kind) != "multilabel":
    st.caption(f"The label filter does not apply to this category "
               f"({ui.md_escape(kind_label[kind])}).")
if items.empty:
    st.success(f"No items with these disagreements in {week}. Pick another category, "
               "week or pair, or clear the filters in the sidebar.")
else:
    table = items.copy()
    table["open"] = [ui.drill_url(i, week) for i in table["item_id"]]
    table["annotators"] = [", ".join(a) for a in table["annotators"]]
    cols = ["item_id", "open", "annotators", "pairs", "count"] + (
        ["min_similarity"] if "min_similarity" in table else [])
    st.dataframe(
        table[cols], hide_index=True, key=P + "items",
        column_config={
            "item_id": st.column_config.TextColumn("item"),
            "open": st.column_config.LinkColumn("drill-down", display_text="open ↗"),
            "annotators": st.column_config.TextColumn("annotators in disagreeing pairs"),
            "pairs": st.column_config.NumberColumn("disagreeing pairs", format="%d"),
            "count": st.column_config.NumberColumn("disagreements (count)", format="%d"),
            "min_similarity": st.column_config.NumberColumn("lowest similarity (0–1)",
                                                            format="%.2f"),
        })
    st.caption("“open ↗” opens the item in the drill-down (a shareable link).")
