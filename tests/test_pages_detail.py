"""AppTest of the detail pages: Visual agreement, Item drill-down, Annotators, Data.

Each page runs without an exception on the demo project and on an empty one, and shows
what `metrics` computes for the view in its URL.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import no_exception, page_texts, query, record, run_page
from streamlit.testing.v1 import AppTest

from metrics import inventory, visual, weekly
from metrics.config import load_config
from pages.common.ui import fmt_rate

ROOT = Path(__file__).resolve().parent.parent
PAGES = {
    "visual": "pages/3_Visual_agreement.py",
    "drilldown": "pages/4_Item_drilldown.py",
    "annotators": "pages/6_Annotators.py",
    "data": "pages/7_Data.py",
}


def app(name: str, **params: str) -> AppTest:
    return run_page(ROOT / PAGES[name], **params)


texts = page_texts


def metric(at: AppTest, label: str) -> str:
    found = [m.value for m in at.metric if m.label == label]
    assert found, [m.label for m in at.metric]
    return found[0]


def frame(at: AppTest, column: str):
    """The first table with this column (st.dataframe keeps no key without on_select)."""
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    raise AssertionError(f"no table with a column {column!r}")


def array(value) -> list:
    """A plotly data array: a list, or a typed array {dtype, bdata (base64)}."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return list(value)


# -- every page, demo and empty ----------------------------------------------------------


@pytest.mark.parametrize("name", list(PAGES))
def test_page_runs_on_demo(demo, name):
    at = app(name)
    no_exception(at)
    assert not at.error


@pytest.mark.parametrize("name", list(PAGES))
def test_page_runs_on_empty_project_and_says_what_is_missing(empty, name):
    at = app(name)
    no_exception(at)
    assert "No annotations in project" in texts(at)
    assert "labelqa ingest" in texts(at)
    if name == "data":
        assert at.get("file_uploader"), "the upload is the way to get data"


# -- visual agreement --------------------------------------------------------------------


@pytest.mark.parametrize("week", ["2026-W47", "2026-W40"])
def test_visual_m3_equals_visual_week(demo, week):
    at = app("visual", week=week)
    no_exception(at)
    v = query(demo, visual.visual_week, week)
    assert metric(at, "M3 visual disagreement") == fmt_rate(v["disagreement_rate"])
    assert metric(at, "Presence · α") == f"{v['presence']['alpha']:.2f}"
    assert metric(at, "Class · α") == f"{v['class']['alpha']:.2f}"
    box_units = v["agreements"] + v["class_disagreements"] + v["presence_disagreements"]
    assert metric(at, "Box units") == f"{box_units:,} boxes"
    assert at.query_params["week"] == week


def test_visual_filter_changes_the_items_table(demo):
    week = "2026-W40"
    at = app("visual", week=week, kind="presence")
    no_exception(at)
    all_items = frame(at, "open")
    expected = query(demo, visual.disagreement_items, week, kind="presence")
    assert list(all_items["item_id"]) == list(expected["item_id"])
    label = next(lab for lab in demo.labels
                 if 0 < len(query(demo, visual.disagreement_items, week, kind="presence",
                                  label=lab)) < len(expected))

    at.selectbox(key="va_label").set_value(label).run()
    no_exception(at)
    some = frame(at, "open")
    expected = query(demo, visual.disagreement_items, week, kind="presence", label=label)
    assert list(some["item_id"]) == list(expected["item_id"])
    assert len(some) < len(all_items)
    assert at.query_params["label"] == label
    # The links lead to the drill-down of each item, with the week.
    assert all(link == f"Item_drilldown?item={i}&week={week}"
               for i, link in zip(some["item_id"], some["open"], strict=True))


def test_visual_week_range_from_the_url_survives_other_filters(demo):
    at = app("visual", week="2026-W44", **{"from": "2026-W40", "to": "2026-W45"})
    no_exception(at)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["data"][-2]["x"] == [f"2026-W{w}" for w in range(40, 46)]
    at.selectbox(key="va_annotator").set_value("ann-02").run()
    no_exception(at)
    assert (at.query_params["from"], at.query_params["to"]) == ("2026-W40", "2026-W45")
    expected = query(demo, inventory.m3_by_week, annotator="ann-02")
    expected = expected[expected["week"].between("2026-W40", "2026-W45")]
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    line = next(t for t in spec["data"] if t.get("name") == "M3 disagreement")
    assert line["x"] == list(expected["week"])
    assert array(line["y"]) == pytest.approx(list(expected["disagreement_rate"] * 100))


def test_visual_confusion_cell_and_pair_from_the_url(demo):
    week = "2026-W40"
    at = app("visual", week=week, kind="class", label="bus", vs="car", annotator="ann-05")
    no_exception(at)
    got = frame(at, "open")
    expected = query(demo, inventory.class_pair_items, week, "bus", "car", annotator="ann-05")
    assert not expected.empty
    assert list(got["item_id"]) == list(expected["item_id"])
    pairs = query(demo, visual.pair_breakdown, week)
    row = pairs[pairs["presence_disagreements"] > 0].iloc[0]
    a, b = row["annotator_a"], row["annotator_b"]
    at = app("visual", week=week, kind="presence", pair=f"{a}|{b}")
    no_exception(at)
    expected = query(demo, visual.disagreement_items, week, kind="presence", annotator=(a, b))
    assert not expected.empty
    assert list(frame(at, "open")["item_id"]) == list(expected["item_id"])


def test_visual_confusion_chart_numbers_are_the_matrix(demo):
    week = "2026-W47"
    at = app("visual", week=week)
    no_exception(at)
    conf = query(demo, inventory.confusion, week)
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    spec = next(s for s in specs
                if "Class confusion" in str(s["layout"].get("title", {}).get("text", "")))
    labels, matrix = conf["labels"], conf["matrix"]
    cells = {(a["y"], a["x"]): a["text"] for a in spec["layout"]["annotations"]}
    assert cells == {(labels[i], labels[j]): str(matrix[i][j])
                     for i in range(len(labels)) for j in range(len(labels)) if matrix[i][j]}
    assert any(i != j and matrix[i][j] for i in range(len(labels)) for j in range(len(labels)))


def test_visual_text_card_shows_each_fields_small_sample_warning(demo):
    week = "2026-W47"
    v = query(demo, visual.visual_week, week)
    warned = {f: d["warnings"] for f, d in v["text"].items() if d.get("warnings")}
    assert warned, "the demo week has text fields below min_units"
    at = app("visual", week=week)
    no_exception(at)
    captions = [c.value for c in at.caption]
    for warnings in warned.values():
        for w in warnings:
            assert f"⚠️ {w}" in captions


def test_visual_pair_heatmap_scale_starts_at_zero_when_every_pair_agrees(demo):
    week = "2026-W47"
    pairs = query(demo, inventory.pair_counts, week, label="bicycle")
    assert not pairs.empty and (pairs["disagreement_rate"].fillna(0) == 0).all()
    at = app("visual", week=week, label="bicycle")
    no_exception(at)
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    spec = next(s for s in specs
                if "M3 per annotator pair" in str(s["layout"].get("title", {}).get("text")))
    heat = spec["data"][0]
    assert (heat["zmin"], heat["zmax"]) == (0, 1.0)   # 0% is the scale's white end
    # The IoU histogram says it is filtered; the threshold curve says it is not.
    titles = [str(s["layout"].get("title", {}).get("text")) for s in specs]
    assert any("IoU histogram" in t and "label bicycle" in t for t in titles)
    assert any("Agreement vs IoU threshold · all pairs" in t for t in titles)


def test_visual_hostile_filters_from_the_url_are_ignored(demo):
    at = app("visual", week="2026-W47'; DROP TABLE annotations; --",
             label="<script>alert(1)</script>", annotator="x' OR '1'='1", kind="nope",
             pair="a|b", vs="ü'\"")
    no_exception(at)
    assert at.query_params["week"] == "2026-W47"
    assert "label" not in at.query_params and "annotator" not in at.query_params


# -- item drill-down ---------------------------------------------------------------------


def test_drilldown_selects_the_item_from_the_url(demo):
    at = app("drilldown", item="img-000050", week="2026-W47")
    no_exception(at)
    assert at.text_input(key="dd_item_text").value == "img-000050"
    data = query(demo, inventory.item_annotations, "img-000050")
    shown = texts(at)
    for a in data["annotations"]:
        assert a["annotator_id"].replace("-", "\\-") in shown
    assert "🥇 gold" in shown
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["layout"]["images"][0]["source"].startswith("data:image/png;base64,")
    names = {t.get("name") for t in spec["data"] if t.get("showlegend", True) and t.get("name")}
    assert {f"{a['annotator_id']} ({a['role']})" for a in data["annotations"]
            if a["role"] != "model"} <= names
    assert at.query_params["item"] == "img-000050"


@pytest.mark.parametrize("item, counts", [
    ("img-002758", "1 current annotation (1 annotator) · "),
    ("img-002922", "3 current annotations (3 annotators) · "),
    ("img-000050", "4 current annotations (3 annotators, 1 gold answer) · "),
])
def test_drilldown_counts_read_as_english(demo, item, counts):
    """Singular and plural by the count ("1 current annotations (3 annotator)" before)."""
    at = app("drilldown", item=item, week="2026-W47")
    no_exception(at)
    caption = next(c.value for c in at.caption if "current annotation" in c.value)
    assert caption.startswith(counts)
    pairs = query(demo, visual.item_pairs, item)
    peers = sum(not p["reference"] for p in pairs)
    gold = len(pairs) - peers
    assert (f"{peers} peer pair{'' if peers == 1 else 's'}, "
            f"{gold} pair{'' if gold == 1 else 's'} against gold") in caption


def test_drilldown_unknown_item(demo):
    at = app("drilldown", item="img-0000<b>x</b>")
    no_exception(at)
    assert any("No annotations of item" in w.value for w in at.warning)


def test_drilldown_typed_item(demo):
    at = app("drilldown")
    at.text_input(key="dd_item_text").set_value("img-000150").run()
    no_exception(at)
    assert at.query_params["item"] == "img-000150"
    assert "Item img\\-000150" in [s.value for s in at.subheader]


@pytest.mark.parametrize("uri, shown", [
    ("/etc/passwd", "absolute path"),
    ("images/../labelqa.toml", "the path contains"),
    ("https://example.com/x.png", "URL"),
    ("images/missing.png", "missing file"),
])
def test_drilldown_refused_image_draws_on_a_blank_canvas(project, monkeypatch, uri, shown):
    rec_a = record(item="img-9", annotator="ann-1")
    rec_b = record(item="img-9", annotator="ann-2", when="2026-01-06T11:00:00Z")
    for rec in (rec_a, rec_b):
        rec["image"]["uri"] = uri
    project.ingest(project.write("e.jsonl", [rec_a, rec_b]))
    monkeypatch.setenv("LABELQA_PROJECT", str(project.root))
    at = app("drilldown", item="img-9")
    no_exception(at)
    info = "\n".join(i.value for i in at.info)
    assert "Image not shown" in info and shown in info
    assert "blank canvas of the image size (100 × 100 px)" in info
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert not spec["layout"].get("images")
    assert spec["layout"]["shapes"][0]["type"] == "rect"
    assert sum(1 for t in spec["data"] if t.get("mode") == "lines") >= 2  # both boxes


def test_drilldown_escapes_hostile_text(project, monkeypatch):
    evil = "<img src=x onerror=alert(1)> [click](javascript:alert(1)) **bold**"
    rec_a = record(item="img-7", annotator="<b>ann</b>", caption=evil,
                   boxes=[{"label": "<i>car</i>", "bbox": [1, 1, 10, 10]}])
    rec_b = record(item="img-7", annotator="ann-2", when="2026-01-06T11:00:00Z")
    project.ingest(project.write("e.jsonl", [rec_a, rec_b]))
    monkeypatch.setenv("LABELQA_PROJECT", str(project.root))
    at = app("drilldown", item="img-7")
    no_exception(at)
    md = "\n".join(m.value for m in at.markdown)
    assert not re.search(r"(?<!\\)[<>]", md)  # every angle bracket escaped: no raw HTML
    assert "\\<img src\\=x onerror\\=alert\\(1\\)\\>" in md
    assert "](javascript" not in md
    spec = json.dumps(json.loads(at.get("plotly_chart")[0].proto.spec), ensure_ascii=False)
    assert "<i>car</i>" not in spec and "&lt;i&gt;car&lt;/i&gt;" in spec
    assert "<b>ann</b>" not in spec


# -- annotators --------------------------------------------------------------------------


def test_annotators_table_and_trend(demo):
    at = app("annotators", week="2026-W47")
    no_exception(at)
    table = frame(at, "flag")
    expected = query(demo, weekly.annotator_table, "2026-W47")
    assert list(table["annotator_id"]) == list(expected["annotator_id"])
    assert table["annotations"].sum() == expected["annotations"].sum()
    at.selectbox(key="an_who").set_value("ann-02").run()
    no_exception(at)
    assert at.query_params["annotator"] == "ann-02"
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    series = query(demo, inventory.annotator_series, "ann-02")
    assert spec["data"][0]["x"] == list(series["week"])


def test_annotators_trend_charts_have_readable_week_ticks_and_legend(demo):
    """Rotated "2026-W36" ticks were clipped on the half-width charts and the axis title
    overlapped the legend: short unrotated ticks (at most 8, the latest labelled), the
    year in the axis title, the legend anchored to the bottom of the figure."""
    at = app("annotators", week="2026-W47", annotator="ann-01")
    no_exception(at)
    specs = [json.loads(c.proto.spec)["layout"] for c in at.get("plotly_chart")]
    layouts = {lay["title"]["text"]: lay for lay in specs}
    weeks = list(query(demo, inventory.annotator_series, "ann-01")["week"])
    for title in ("Error rates · ann-01", "Agreement · ann-01"):
        x, legend = layouts[title]["xaxis"], layouts[title]["legend"]
        assert x["tickangle"] == 0
        assert x["tickvals"][-1] == weeks[-1] and 2 <= len(x["tickvals"]) <= 8
        assert x["ticktext"] == [w[5:] for w in x["tickvals"]]   # "W36"
        assert x["title"]["text"] == f"ISO week of {weeks[-1][:4]}"
        assert (legend["yref"], legend["y"], legend["yanchor"]) == ("container", 0, "bottom")
        assert layouts[title]["margin"]["b"] >= 100


@pytest.mark.parametrize("page, params", [
    ("pages/6_Annotators.py", {"week": "2026-W47"}),
    ("pages/6_Annotators.py", {"week": "2026-W47", "annotator": "lead-01"}),
    ("pages/4_Item_drilldown.py", {"week": "2026-W47", "item": "img-000050"}),
    ("pages/5_Trends_and_guidelines.py", {"week": "2026-W47", "change": "v1"}),
])
def test_missing_values_show_a_dash_not_none(demo, page, params):
    """A rate with nothing to rate is missing, and Streamlit prints a missing cell as
    "None": each table sets a dash instead; views chosen to have missing cells."""
    at = run_page(ROOT / page, **params)
    no_exception(at)
    with_missing = [d for d in at.dataframe if d.value.isna().to_numpy().any()]
    assert with_missing
    assert all(d.proto.placeholder == "–" for d in with_missing)


def test_missing_values_say_why(demo):
    at = app("annotators", week="2026-W47")
    table = next(d for d in at.dataframe if "peer_agreement" in d.value.columns)
    config = json.loads(table.proto.columns)
    assert "no box units with a peer" in config["peer_agreement"]["help"]
    assert "no item of theirs has a gold answer" in config["gold_agreement"]["help"]
    assert "A dash (–) is a rate with nothing to rate" in texts(at)
    assert "None:" not in texts(at)
    trends = run_page(ROOT / "pages/5_Trends_and_guidelines.py", change="v1")
    alpha = next(d.value for d in trends.dataframe if "alpha before" in d.value.columns)
    missing = alpha[alpha["alpha before"].isna()]
    assert len(missing) and all(n.startswith("alpha before undefined: ")
                                for n in missing["note"])


def test_annotators_flags_rubber_stamping(demo):
    at = app("annotators", scope="all")
    no_exception(at)
    flagged = query(demo, weekly.prefill_summary)["rubber_stamping"]
    assert flagged == ["ann-07"]
    assert any("Rubber-stamping: ann\\-07" in w.value for w in at.warning)
    table = frame(at, "flag")
    assert list(table.loc[table["flag"] != "", "annotator_id"]) == ["ann-07"]


# -- data --------------------------------------------------------------------------------


def test_data_lists_exports_and_quarantine(demo):
    at = app("data")
    no_exception(at)
    exports = frame(at, "balanced")
    assert list(exports["name"]) == [f"2026-W{w}.jsonl" for w in range(36, 48)]
    assert exports["balanced"].all()
    bad = frame(at, "raw")
    assert len(bad) == 7
    expected = query(demo, inventory.quarantine)
    assert list(bad["line"]) == list(expected["line"])
    assert metric(at, "Quarantined (lines)") == "7"
    assert at.code[0].value == expected["raw"].iloc[0]


def test_data_upload_over_the_limit_is_refused(empty):
    with open(empty.file, "a", encoding="utf-8") as fh:
        fh.write("\n[dashboard]\nmax_upload_mb = 0.001\n")  # 1,048 bytes
    at = app("data")
    line = json.dumps(record()).encode() + b"\n"
    at.get("file_uploader")[0].upload("big.jsonl", line * 10, "application/json").run()
    no_exception(at)
    assert any("Refused" in e.value and "max_upload_mb" in e.value for e in at.error)
    assert not at.button  # nothing to run
    assert not inventory.upload_dir(load_config(empty.file)).exists()
    with pytest.raises(inventory.UploadRefused):
        inventory.save_upload(load_config(empty.file), "x.jsonl", _Stream(line * 10))


class _Stream:
    """A file-like object that does not say its size (save_upload counts while writing)."""

    def __init__(self, data: bytes):
        self.data = data

    def read(self, n: int) -> bytes:
        out, self.data = self.data[:n], self.data[n:]
        return out


def test_data_upload_check_then_ingest(empty):
    config = load_config(empty.file)
    lines = [json.dumps(record(item=f"img-{i}")) for i in range(3)] + ["{not json"]
    content = ("\n".join(lines) + "\n").encode()
    at = app("data")
    at.get("file_uploader")[0].upload("../../week 1.jsonl", content, "application/json")
    at.run()
    at.radio(key="data_action").set_value("check").run()
    at.button(key="data_run").click().run()
    no_exception(at)
    assert "Problems" in texts(at) and "1 line to quarantine" in texts(at)
    # A dry run writes nothing: no database, no saved upload.
    assert not config.database.exists()
    folder = inventory.upload_dir(config)
    assert not folder.exists() or not any(folder.iterdir())

    at.radio(key="data_action").set_value("ingest").run()
    at.button(key="data_run").click().run()
    no_exception(at)
    assert "Ingested: 3 annotations loaded, 1 line quarantined." in texts(at)
    exports = frame(at, "balanced")
    assert list(exports["name"]) == ["week_1.jsonl"]
    assert len(frame(at, "raw")) == 1
    saved = inventory.upload_dir(config) / "week_1.jsonl"
    assert sorted(p.name for p in inventory.upload_dir(config).iterdir()) == ["week_1.jsonl"]
    assert saved.read_bytes() == content


# -- the metrics behind these pages (metrics.inventory) ----------------------------------


def test_unfiltered_queries_equal_the_visual_module(demo):
    ours = query(demo, inventory.m3_by_week)
    theirs = query(demo, visual.visual_series)
    theirs = theirs[theirs["pairs"] > 0].reset_index(drop=True)
    assert list(ours["week"]) == list(theirs["week"])
    for col in ("agreements", "class_disagreements", "presence_disagreements", "low_overlap",
                "disagreement_rate", "ci_low", "ci_high"):
        assert ours[col].tolist() == pytest.approx(theirs[col].tolist(), nan_ok=True), col
    v = query(demo, visual.visual_week, "2026-W47")
    assert query(demo, inventory.confusion, "2026-W47") == v["class"]["confusion"]
    assert query(demo, inventory.iou_histogram, "2026-W47")["n"] == v["iou"]["units"]
    pairs = query(demo, inventory.pair_counts, "2026-W47")
    expected = query(demo, visual.pair_breakdown, "2026-W47")
    assert pairs["disagreement_rate"].tolist() == pytest.approx(
        expected["disagreement_rate"].tolist(), nan_ok=True)
    labels = query(demo, visual.label_breakdown, "2026-W47").set_index("label")
    for label in ("bus", "car"):
        one = query(demo, inventory.m3_by_week, label=label).set_index("week").loc["2026-W47"]
        assert one["agreements"] == labels.loc[label, "agreements"]
        assert one["presence_disagreements"] == labels.loc[label, "presence_disagreements"]


def test_annotator_series_sums_to_the_table(demo):
    table = query(demo, weekly.annotator_table).set_index("annotator_id")
    for who in ("ann-02", "lead-01"):
        s = query(demo, inventory.annotator_series, who)
        assert s["annotations"].sum() == table.loc[who, "annotations"]
        assert s["schema_errors"].sum() == table.loc[who, "schema_errors"]
        assert s["peer_units"].sum() == table.loc[who, "peer_units"]
        assert s["gold_units"].sum() == table.loc[who, "gold_units"]


def test_word_diff_and_compare_fields(demo):
    text = "A red car parked on a sunny street."
    assert inventory.word_diff_spans(text, ["A car parked on a sunny street."]) == [(2, 5)]
    assert inventory.word_diff_spans(text, [text]) == []
    assert inventory.word_diff_spans(text, []) == []
    anns = [
        {"role": "annotator", "fields": {"caption": "A car.", "weather": "sunny",
                                         "tags": ["outdoor", "street"]}},
        {"role": "annotator", "fields": {"caption": "A bus.", "weather": "sunny",
                                         "tags": ["outdoor"]}},
        {"role": "annotator", "fields": {"caption": "A car.", "tags": ["outdoor"]}},
        {"role": "model", "fields": {"caption": "It appears to be a car.", "weather": "rainy"}},
    ]
    cmp = inventory.compare_fields(demo, anns)
    assert [e.get("spans") for e in cmp["caption"]] == [[], [(2, 6)], [], [(0, 16)]]
    assert [e.get("differs") for e in cmp["weather"]] == [False, False, True, True]
    assert cmp["weather"][2]["present"] is False
    assert [e.get("differs_values") for e in cmp["tags"]][:3] == [["street"], [], []]


def test_save_upload_names_and_limits(project):
    config = project.config
    path = inventory.save_upload(config, "../../etc/pass wd.jsonl", _Stream(b"x\n"), 2)
    assert path == inventory.upload_dir(config) / "pass_wd.jsonl"
    again = inventory.save_upload(config, "pass wd.jsonl", _Stream(b"x\n"), 2)
    assert again == path  # same content: the same file
    other = inventory.save_upload(config, "pass wd.jsonl", _Stream(b"y\n"), 2)
    assert other.name == "pass_wd-1.jsonl"
    with pytest.raises(inventory.UploadRefused):
        inventory.safe_upload_name("../..")
    with pytest.raises(inventory.UploadRefused, match="max_upload_mb"):
        inventory.save_upload(config, "big.jsonl", _Stream(b""), 201 * 1024 * 1024)
    assert sorted(p.name for p in inventory.upload_dir(config).iterdir()) == [
        "pass_wd-1.jsonl", "pass_wd.jsonl"]


def test_a_new_ingest_shows_on_the_next_rerun(project, monkeypatch):
    """Results are cached on the database's generation, which is read again when the
    database file changes: an ingest in another process shows on the next rerun."""
    import subprocess
    import sys

    monkeypatch.setenv("LABELQA_PROJECT", str(project.root))
    project.ingest(project.write("w1.jsonl", [record(item="a")]))
    at = app("data")
    no_exception(at)
    assert list(frame(at, "balanced")["name"]) == ["w1.jsonl"]
    at.run()   # nothing changed: the same, from the cache
    assert list(frame(at, "balanced")["name"]) == ["w1.jsonl"]
    second = project.write("w2.jsonl", [record(item="b"), record(item="c")])
    subprocess.run([sys.executable, "-m", "metrics.cli", "ingest", str(second),
                    "--project", str(project.root)], check=True, cwd=ROOT,
                   capture_output=True)
    at.run()
    no_exception(at)
    assert list(frame(at, "balanced")["name"]) == ["w1.jsonl", "w2.jsonl"]


@pytest.mark.parametrize("week,label,annotator", [
    ("2026-W47", None, None), ("2026-W46", "car", None), ("2026-W47", None, "ann-02"),
    ("2026-W47", None, ("ann-01", "ann-02")), ("2026-W47", "no-such-label", None)])
def test_iou_histogram_against_numpy(demo, week, label, annotator):
    """Bins, count, mean, median and min of the matched pairs' IoU, against numpy on the
    rows themselves (bins [k/40, (k+1)/40), the last closed, as np.histogram makes them)."""
    import numpy as np

    def rows(con, config):
        who = (annotator,) if isinstance(annotator, str) else annotator or ()
        return con.execute(
            """SELECT bp.iou, p.annotator_a, p.annotator_b, bp.label_a, bp.label_b
            FROM d_box_pairs bp JOIN d_pairs p USING (pair_id)
            WHERE p.week = $w AND NOT p.reference AND bp.kind <> 'presence'""",
            {"w": week}).fetchall(), who

    got = query(demo, inventory.iou_histogram, week, label=label, annotator=annotator)
    all_rows, who = query(demo, rows)
    iou = np.array([r[0] for r in all_rows
                    if (label is None or label in (r[3], r[4]))
                    and set(who) <= {r[1], r[2]}], dtype=float)
    edges = np.linspace(0, 1, inventory.IOU_BINS + 1)
    assert got["counts"] == np.histogram(iou, bins=edges)[0].tolist()
    assert got["n"] == iou.size
    if iou.size:
        assert got["mean"] == pytest.approx(iou.mean(), rel=1e-12)
        assert got["median"] == pytest.approx(float(np.median(iou)), rel=1e-12)
        assert got["min"] == iou.min()
    else:
        assert got["mean"] is got["median"] is got["min"] is None
    if label is None and annotator is None:
        assert iou.size > 100     # the demo week has data to bin
