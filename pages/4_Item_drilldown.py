"""Item drill-down: one item's image with every annotator's boxes drawn over it, the
matching of a pair (links, presence / class / low-overlap marks), the fields side by side
with differences highlighted, and each annotation's contract errors and policy violations.

URL: ?item=img-000050&week=2026-W47&pair=31
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from metrics import images, inventory, visual
from pages.common import ui
from pages.common.ui import plural

P = "dd_"
FONT = 16
# One colour per annotation: Streamlit's named colours (so the field columns can show a
# matching swatch with :name[■]) and their hex values for the plot.
COLORS = [("blue", "#1c83e1"), ("orange", "#ff8700"), ("green", "#21c354"),
          ("violet", "#803df5"), ("gray", "#808495"), ("red", "#ff2b2b"),
          ("yellow", "#e8b000")]
MAX_COLUMNS = 4


def boxes(n: int) -> str:
    return plural(n, "box", "boxes")


# What a role's annotations are called, singular and plural.
ROLE_WORDS = {"annotator": ("annotator", "annotators"), "reviewer": ("reviewer", "reviewers"),
              "gold": ("gold answer", "gold answers"), "model": ("model draft", "model drafts")}


def who(a: dict) -> str:
    return f"{a['annotator_id']} ({a['role']})"


# -- page --------------------------------------------------------------------------------

config, weeks, week = ui.open_weekly_page(
    "Item drill-down",
    "one item: every annotator's boxes over the image, the fields side by side, "
    "errors and violations",
    week_label="ISO week (item list)")

ui.init(P + "item", st.query_params.get("item", "").strip())
ui.init(P + "item_text", st.session_state[P + "item"])


def on_text() -> None:
    st.session_state[P + "item"] = st.session_state[P + "item_text"].strip()
    st.session_state.pop(P + "pair", None)


def on_table(ids: list[str]) -> None:
    rows = st.session_state[P + "table"]["selection"]["rows"]
    if rows:
        st.session_state[P + "item"] = ids[rows[0]]
        st.session_state[P + "item_text"] = ids[rows[0]]
        st.session_state.pop(P + "pair", None)


st.text_input("Item id", key=P + "item_text", on_change=on_text,
              placeholder="e.g. img-000050", help="Type an item id and press Enter, or pick "
              "one from the table below.")
item = st.session_state[P + "item"]
ui.sync_param("item", item)

index = ui.safe_call(inventory.item_index, week)
with st.expander(f"Pick an item of {week} ({plural(len(index), 'item')}, most disagreement "
                 "first)",
                 expanded=not item):
    if index.empty:
        st.info(f"No annotations in {week}: pick another week in the sidebar.")
    else:
        shown = index.copy()
        shown["annotators"] = [", ".join(a) for a in shown["annotators"]]
        ids = list(shown["item_id"])
        st.dataframe(
            shown, hide_index=True, key=P + "table", on_select=lambda: on_table(ids),
            selection_mode="single-row", height=320, placeholder="–",
            column_config={
                "item_id": "item",
                "annotations": st.column_config.NumberColumn("annotations", format="%d"),
                "annotators": "annotators",
                "in_sample": st.column_config.CheckboxColumn("in stable sample"),
                "pairs": st.column_config.NumberColumn("pairs this week", format="%d"),
                "disagreements": st.column_config.NumberColumn(
                    "class + presence disagreements", format="%d"),
                "low_overlap": st.column_config.NumberColumn("low-overlap boxes", format="%d"),
                "schema_errors": st.column_config.NumberColumn(
                    "annotations with schema errors", format="%d"),
                "policy_errors": st.column_config.NumberColumn(
                    "annotations with policy errors", format="%d"),
            })
        st.caption("Click a row to open that item.")

if not item:
    st.info("Pick an item: type its id above, choose a row in the table, or follow a link "
            "from the Visual agreement, Schema or Text policy pages "
            "(`Item_drilldown?item=...`).")
    st.stop()

data = ui.safe_call(inventory.item_annotations, item)
if not data["found"]:
    st.warning(f"No annotations of item **{ui.md_escape(item)}** in this project. Check the "
               "id (ids are case-sensitive) or pick an item from the table above.")
    near = ui.safe_call(inventory.item_index, None, contains=item, limit=10)
    if not near.empty:
        st.markdown("Items whose id contains it: "
                    + ", ".join(f"**{ui.md_escape(i)}**" for i in near["item_id"]))
    st.stop()

anns = data["annotations"]
pairs = ui.safe_call(visual.item_pairs, item)
st.subheader(f"Item {ui.md_escape(item)}")
roles = pd.Series([a["role"] for a in anns]).value_counts()
st.caption(
    f"{plural(len(anns), 'current annotation')} ("
    + ", ".join(plural(n, *ROLE_WORDS.get(r, (ui.md_escape(r),))) for r, n in roles.items())
    + ") · " + ("in the stable sample" if data["in_sample"] else "not in the stable sample")
    + f" · {plural(sum(not p['reference'] for p in pairs), 'peer pair')}, "
      f"{plural(sum(p['reference'] for p in pairs), 'pair')} against gold (all weeks)")

# -- the image ---------------------------------------------------------------------------

img = data["image"] or {}
uri = img.get("uri")
width = float(img.get("width") or 0)
height = float(img.get("height") or 0)
if width <= 0 or height <= 0:
    extents = [(b["bbox"][0] + b["bbox"][2], b["bbox"][1] + b["bbox"][3])
               for a in anns for b in a["boxes"] if None not in b["bbox"]]
    width = max([640.0] + [e[0] for e in extents])
    height = max([480.0] + [e[1] for e in extents])
ref = images.resolve_image(config, uri)
data_uri, problem = None, None
if ref.kind == "file":
    try:
        data_uri = images.image_data_uri(ref)
    except (ValueError, OSError) as exc:
        problem = str(exc)
elif ref.kind == "url":
    problem = "the image is a URL; the server never fetches it"
else:
    problem = f"image refused: {ref.reason}"
if len(data["image_uris"]) > 1:
    st.warning(f"The annotations of this item name {len(data['image_uris'])} different image "
               "URIs; the first-ingested one is shown.")

# -- pair selection ----------------------------------------------------------------------

pair_by_id = {str(p["pair_id"]): p for p in pairs}


def pair_name(pid: str) -> str:
    if not pid:
        return "No pair (boxes only)"
    p = pair_by_id[pid]
    kind = "vs gold" if p["reference"] else "peers"
    return (f"{p['week']} · {p['a']['annotator_id']} × {p['b']['annotator_id']} ({kind}) · "
            f"{p['agreements']} agree, {p['class_disagreements']} class, "
            f"{p['presence_disagreements']} presence, {p['low_overlap']} low overlap")


options = [""] + list(pair_by_id)
if pairs:
    wanted = st.query_params.get("pair")
    if wanted not in pair_by_id:
        in_week = [str(p["pair_id"]) for p in pairs if p["week"] == week and not p["reference"]]
        peer = [str(p["pair_id"]) for p in pairs if not p["reference"]]
        wanted = (in_week or peer or list(pair_by_id))[0]
    ui.init(P + "pair", wanted)
else:
    ui.init(P + "pair", "")
if st.session_state[P + "pair"] not in options:
    st.session_state[P + "pair"] = options[1] if len(options) > 1 else ""

keys = [str(a["ann_key"]) for a in anns]
by_key = {str(a["ann_key"]): a for a in anns}
color_name = {k: COLORS[i % len(COLORS)][0] for i, k in enumerate(keys)}
color = {k: COLORS[i % len(COLORS)][1] for i, k in enumerate(keys)}
left, right = st.columns([2, 1])
with right:
    pid = st.selectbox("Matching shown", options, key=P + "pair", format_func=pair_name,
                       help="Two-pass box matching of a pair (DESIGN 'M3'): agreements, class "
                            "disagreements, presence disagreements, low overlap.")
    ui.sync_param("pair", pid)
    ui.init(P + "show", [k for k in keys if by_key[k]["role"] != "model"])
    st.session_state[P + "show"] = [k for k in st.session_state[P + "show"] if k in keys]
    show = st.multiselect("Annotations drawn", keys, key=P + "show",
                          format_func=lambda k: who(by_key[k]),
                          help="Every current annotation of the item; the pair picked above "
                               "is drawn bold and labelled, the others thin.")

pair = pair_by_id.get(pid) if pid else None
# box marks of the selected pair: (ann_key, box_idx) -> list of marks
marks: dict[tuple[str, int], list[str]] = {}
links = []
if pair is not None:
    ka, kb = str(pair["a"]["ann_key"]), str(pair["b"]["ann_key"])
    for idx in pair["unmatched_a"]:
        marks.setdefault((ka, idx), []).append("presence")
    for idx in pair["unmatched_b"]:
        marks.setdefault((kb, idx), []).append("presence")
    for m in pair["matches"]:
        if m["kind"] == "class":
            marks.setdefault((ka, m["box_a"]), []).append("class")
            marks.setdefault((kb, m["box_b"]), []).append("class")
        if m["low_overlap"]:
            marks.setdefault((ka, m["box_a"]), []).append("low overlap")
            marks.setdefault((kb, m["box_b"]), []).append("low overlap")
        links.append((ka, m["box_a"], kb, m["box_b"], m))

fig = go.Figure()
if data_uri:
    fig.add_layout_image(source=data_uri, xref="x", yref="y", x=0, y=0, sizex=width,
                         sizey=height, sizing="stretch", layer="below", opacity=1.0)
else:
    fig.add_shape(type="rect", x0=0, y0=0, x1=width, y1=height, line={"color": "#999"},
                  fillcolor="#f2f2f2", layer="below")
boxes_at: dict[tuple[str, int], list[float]] = {}
for k in keys:
    a = by_key[k]
    for b in a["boxes"]:
        x, y, w, h = b["bbox"]
        if None in (x, y, w, h):
            continue
        boxes_at[(k, b["box_idx"])] = [x, y, w, h]
    if k not in show:
        continue
    first = True
    # The selected pair stands out; other annotations are drawn thin and faded. Labels:
    # side A above its boxes, side B below them (so the two never overlap), others none.
    # Without a pair, every annotation is labelled, alternately above and below.
    side = ("a" if pair is not None and k == str(pair["a"]["ann_key"]) else
            "b" if pair is not None and k == str(pair["b"]["ann_key"]) else
            None if pair is not None else "ab"[show.index(k) % 2])
    for b in a["boxes"]:
        x, y, w, h = b["bbox"]
        if None in (x, y, w, h):
            continue
        mk = marks.get((k, b["box_idx"]), [])
        dash = "dash" if "presence" in mk else "dot" if "low overlap" in mk else "solid"
        tip = (f"{html.escape(who(a))}<br>box {b['box_idx']}: {html.escape(str(b['label']))}"
               f"<br>x {x:.0f}, y {y:.0f}, {w:.0f} × {h:.0f} px"
               + (f"<br><b>{html.escape(', '.join(mk))}</b>" if mk else "")
               + ("" if b["matchable"] else "<br>not matchable (non-positive size)"))
        fig.add_trace(go.Scatter(
            x=[x, x + w, x + w, x, x], y=[y, y, y + h, y + h, y], mode="lines",
            line={"color": color[k], "width": (4 if mk else 3) if side else 1.5, "dash": dash},
            opacity=1.0 if side else 0.55,
            name=html.escape(who(a)), legendgroup=k, showlegend=first,
            hoverinfo="text", hovertext=tip, hoveron="points+fills", fill="none"))
        if side:
            tag = str(b["label"]) + (" ⚠ " + ", ".join(mk) if mk else "")
            fig.add_annotation(
                x=x, y=y if side == "a" else y + h, text=html.escape(tag), showarrow=False,
                xanchor="left", yanchor="bottom" if side == "a" else "top",
                font={"color": color[k], "size": FONT - 1}, bgcolor="rgba(255,255,255,0.85)",
                bordercolor=color[k], borderwidth=1, borderpad=2)
        first = False
    if first:  # an annotation without boxes still gets its legend entry
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=html.escape(
            who(a) + " (no boxes)"), line={"color": color[k]}, legendgroup=k))
for ka, ia, kb, ib, m in links:
    if ka not in show or kb not in show:
        continue
    ba, bb = boxes_at.get((ka, ia)), boxes_at.get((kb, ib))
    if ba is None or bb is None:
        continue
    ca = (ba[0] + ba[2] / 2, ba[1] + ba[3] / 2)
    cb = (bb[0] + bb[2] / 2, bb[1] + bb[3] / 2)
    bad = m["kind"] == "class"
    fig.add_trace(go.Scatter(
        x=[ca[0], cb[0]], y=[ca[1], cb[1]], mode="lines+markers",
        line={"color": "#111" if bad else "#555", "width": 3 if bad else 2,
              "dash": "solid" if bad else "dot"},
        marker={"size": 7}, legendgroup="links", showlegend=False, hoverinfo="text",
        hovertext=(f"matched: {html.escape(str(m['label_a']))} ↔ "
                   f"{html.escape(str(m['label_b']))}, IoU {m['iou']:.2f}"
                   + (" (class disagreement)" if bad else "")
                   + (" (low overlap)" if m["low_overlap"] else ""))))
fig.update_xaxes(range=[0, width], showgrid=False, zeroline=False, title="x (px)",
                 constrain="domain")
fig.update_yaxes(range=[height, 0], showgrid=False, zeroline=False, title="y (px)",
                 scaleanchor="x", scaleratio=1, constrain="domain")
fig.update_layout(height=700, font={"size": FONT}, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                  legend={"title": {"text": "annotator (role)"}, "orientation": "h",
                          "y": -0.12},
                  hoverlabel={"font_size": FONT}, plot_bgcolor="white",
                  title={"text": f"{int(width)} × {int(height)} px"})
with left:
    st.plotly_chart(fig, key=P + "figure")
    if problem:
        st.info(f"Image not shown ({ui.md_escape(problem)}). The boxes are drawn on a blank "
                f"canvas of the image size ({int(width)} × {int(height)} px).")
    if ref.kind == "url":
        if ref.clickable:
            st.link_button("Open the image URL in a new tab", ref.url)
        st.code(ref.url or "", language=None)
    elif uri:
        st.caption(f"Image URI: {ui.md_escape(uri)}")
    st.caption("Solid: matched box · dashed: presence disagreement (no partner) · dotted: low "
               "overlap · lines join matched boxes (solid black: different labels).")

with right:
    if pair is None:
        st.info("No pairs for this item: it is not double-annotated in the stable sample "
                "(raise `[sample] rate` or pin it in `[sample] pinned`)." if not pairs else
                "Pick a pair above to see its matching.")
    else:
        la, lb = pair["a"], pair["b"]
        st.markdown(f"**{ui.md_escape(who(la))}** × **{ui.md_escape(who(lb))}** · "
                    f"{pair['week']}" + (" · against gold" if pair["reference"] else ""))
        rows = []
        box_a = {b["box_idx"]: b for b in la["boxes"]}
        box_b = {b["box_idx"]: b for b in lb["boxes"]}
        for m in pair["matches"]:
            rows.append({"outcome": "agreement" if m["kind"] == "agreement" else "class",
                         "box A": f"{m['box_a']}: {m['label_a']}",
                         "box B": f"{m['box_b']}: {m['label_b']}",
                         "IoU": m["iou"], "low overlap": bool(m["low_overlap"])})
        for idx in pair["unmatched_a"]:
            rows.append({"outcome": "presence", "box A": f"{idx}: {box_a[idx]['label']}",
                         "box B": "—", "IoU": None, "low overlap": False})
        for idx in pair["unmatched_b"]:
            rows.append({"outcome": "presence", "box A": "—",
                         "box B": f"{idx}: {box_b[idx]['label']}", "IoU": None,
                         "low overlap": False})
        if rows:
            st.dataframe(pd.DataFrame(rows), hide_index=True, placeholder="–", column_config={
                "IoU": st.column_config.NumberColumn(
                    "IoU (0–1)", format="%.2f",
                    help="– for a presence disagreement: the box has no partner to overlap."),
                "low overlap": st.column_config.CheckboxColumn(
                    f"IoU < {config.agreement.low_overlap:g}")})
        else:
            st.caption("Neither annotation has a box.")
        # Counts of boxes; the column is narrow, so the unit is in the label.
        c1, c2, c3 = st.columns(3)
        c1.metric("agree (boxes)", pair["agreements"])
        c2.metric("class (boxes)", pair["class_disagreements"])
        c3.metric("presence (boxes)", pair["presence_disagreements"])
        for field, sim in sorted(pair["text"].items()):
            st.caption(f"{ui.md_escape(field)}: similarity {sim:.2f} (0–1; below 0.8 counts "
                       "as disagreement)")

# -- fields side by side -----------------------------------------------------------------

st.subheader("Fields side by side")
st.caption("Highlighted: words only this annotation has (free text), values that differ from "
           "the most common one (categorical), values not everyone chose (multilabel), a field "
           "absent where others have it. Model drafts are shown but not compared.")
cmp = inventory.compare_fields(config, anns)


def field_md(entry: dict) -> str:
    if not entry.get("present"):
        return ":orange-background[*(absent)*]" if entry.get("differs") else "*(absent)*"
    if entry["kind"] == "free":
        return ui.highlight(entry["text"], entry["spans"], color="orange")
    if entry["kind"] == "multilabel":
        parts = [f":orange-background[**{ui.md_escape(v)}**]" if v in entry["differs_values"]
                 else ui.md_escape(v) for v in entry["values"]]
        return ", ".join(parts) or "*(empty list)*"
    value = ui.md_escape(entry["value"])
    return f":orange-background[**{value}**]" if entry["differs"] else value


def violation_md(a: dict, v: dict) -> str:
    field = v["field"]
    raw = (a.get("fields") or {}).get(field) if isinstance(a.get("fields"), dict) else None
    if v["element"] is not None and isinstance(raw, list) and v["element"] < len(raw):
        raw = raw[v["element"]]
    head = (f"**{ui.md_escape(v['rule'])}** ({ui.md_escape(v['severity'])}) in "
            f"{ui.md_escape(field)}")
    if v["label"] and not v["excerpt"]:
        return f"{head}: label **{ui.md_escape(v['label'])}** has a box but is never named"
    if isinstance(raw, str) and v["end"] > v["start"]:
        extra = f" (names **{ui.md_escape(v['label'])}**)" if v["label"] else ""
        return f"{head}{extra}: " + ui.highlight(raw, [(v["start"], v["end"])])
    return f"{head}: {ui.md_escape(v['excerpt'])}"


for start in range(0, len(anns), MAX_COLUMNS):
    chunk = anns[start:start + MAX_COLUMNS]
    cols = st.columns(MAX_COLUMNS)
    for col, a in zip(cols, chunk, strict=False):
        i = anns.index(a)
        badge = {"gold": "🥇 gold", "model": "🤖 model draft", "reviewer": "reviewer"}.get(
            a["role"], "annotator")
        swatch = f":{color_name[str(a['ann_key'])]}[■■]"
        col.markdown(f"{swatch} **{ui.md_escape(a['annotator_id'])}** · {badge}")
        col.caption(
            f"{a['week']} · guideline {ui.md_escape(a['guideline_version'] or '–')} · "
            f"{boxes(len(a['boxes']))} · annotation {ui.md_escape(a['annotation_id'])}"
            + (f" (version {a['version']})" if a["version"] > 1 else "")
            + (" · pre-filled" + (", reviewed" if a["reviewed"] else ", not reviewed")
               if a["prefilled"] else ""))
        for field, entries in cmp.items():
            col.markdown(f"**{ui.md_escape(field)}**: " + field_md(entries[i]))
        if a["errors"]:
            n = len(a["errors"])
            col.markdown(f":red[**{n} contract error{'' if n == 1 else 's'}**]")
            for e in a["errors"]:
                col.markdown(f"- {ui.md_escape(e['instance'])} · {ui.md_escape(e['keyword'])}: "
                             f"{ui.md_escape(e['message'])}")
        else:
            col.markdown(":green[passes the contract]")
        if a["violations"]:
            errors = sum(v["severity"] == "error" for v in a["violations"])
            n = len(a["violations"])
            col.markdown(f":orange[**{n} policy finding{'' if n == 1 else 's'}** "
                         f"({errors} error{'' if errors == 1 else 's'})]")
            for v in a["violations"]:
                col.markdown("- " + violation_md(a, v))
        else:
            col.markdown(":green[no policy findings]")

gold = [a for a in anns if a["role"] == "gold"]
if not gold:
    st.caption("No gold answer for this item.")
