"""M3 visual disagreement and the agreement breakdown (metrics.derived, metrics.visual).

Every expected number is worked out by hand in the comments, or computed independently
(krippendorff, scikit-learn, rapidfuzz, the DESIGN sample hash) on the same values.
"""

from __future__ import annotations

import hashlib
import unicodedata

import krippendorff
import numpy as np
import pandas as pd
import pytest
from conftest import CONFIG, record
from rapidfuzz.distance import Levenshtein
from sklearn.metrics import cohen_kappa_score

from metrics import agreement, derived, store, visual

W2 = "2026-01-06T10:00:00Z"  # Tuesday of ISO week 2026-W02
W3 = "2026-01-13T10:00:00Z"  # 2026-W03
W4 = "2026-01-20T10:00:00Z"  # 2026-W04
NAN = np.nan


def box(x, y, w=10, h=10, label="car"):
    return {"label": label, "bbox": [x, y, w, h]}


def kripp(rows):
    """Krippendorff's alpha (nominal) of a raters x units matrix, NaN = missing."""
    return krippendorff.alpha(reliability_data=np.array(rows, dtype=float),
                              level_of_measurement="nominal")


def norm(text):
    return " ".join(unicodedata.normalize("NFC", text).lower().split())


def sim(a, b):
    return Levenshtein.normalized_similarity(norm(a), norm(b))


def warn(units, min_units=10):
    return [f"{units} units, below min_units {min_units}: treat with care"]


@pytest.fixture
def open_con():
    cons = []

    def _open(project):
        con = project.connect()
        cons.append(con)
        return con

    yield _open
    for con in cons:
        con.close()


# IoUs used below, for 10 x 10 boxes at x = 0 and x = dx (same y):
#   dx = 1: inter 9*10 = 90,  union 200 - 90 = 110  -> 0.8182 (matched, not low overlap)
#   dx = 2: inter 80,         union 120             -> 0.6667 (matched, low overlap < 0.75)
#   dx = 5: inter 50,         union 150             -> 0.3333 (below t = 0.5: no match)
IOU_1 = 90 / 110
IOU_2 = 80 / 120

HAND = [
    # img-1: ann-1 car, person, bicycle; ann-2 car (dx=1), car on ann-1's person, person.
    #   car-car IoU 0.818 -> agreement; person/car IoU 1 -> class disagreement;
    #   ann-1's bicycle and ann-2's person at (80, 80) unmatched -> 2 presence.
    record("img-1", "ann-1", W2, [box(0, 0), box(50, 50, label="person"),
                                  box(20, 20, label="bicycle")],
           caption="A red car.", weather="sunny", tags=["a", "b"]),
    record("img-1", "ann-2", W2, [box(1, 0), box(50, 50), box(80, 80, label="person")],
           caption="a  RED car", weather="cloudy", tags=["a"]),
    record("img-1", "gold-1", W2, [box(0, 0), box(50, 50, label="person")],
           caption="A red car.", weather="sunny", role="gold"),
    # img-2: car vs car at dx=2 -> 1 agreement, flagged low overlap.
    record("img-2", "ann-1", W2, [box(0, 0)], caption="A car.", weather="sunny", tags=[]),
    record("img-2", "ann-2", W2, [box(2, 0)], caption="A car.", weather="sunny"),
    # img-3: no boxes on either side (adds 0); ann-2 has no caption (a contract error).
    record("img-3", "ann-1", W2, [], caption="Rain on the road.", weather="rainy",
           tags=["c"]),
    record("img-3", "ann-2", W2, [], caption=None, weather="rainy", tags=["c"]),
    # img-4: three annotators; ann-1 and ann-2 agree (IoU 1), ann-3 is at dx=5 (IoU 1/3):
    #   (1,2) 1 agreement; (1,3) 2 presence; (2,3) 2 presence.
    record("img-4", "ann-1", W2, [box(0, 0, label="person")], caption="A person.",
           weather="sunny", tags=["a"]),
    record("img-4", "ann-2", W2, [box(0, 0, label="person")], caption="A person",
           weather="sunny", tags=["b"]),
    record("img-4", "ann-3", W2, [box(5, 0, label="person")], caption="Someone walking.",
           weather="cloudy"),
    # A model pre-fill is never a rater.
    record("img-4", "model-1", W2, [box(0, 0, label="person")], role="model"),
]
# Totals: items 4, pairs 1 + 1 + 1 + 3 = 6, agreements 1 + 1 + 0 + 1 = 3, class 1,
# presence 2 + 0 + 0 + 4 = 6, low overlap 1; M3 = (1 + 6) / (3 + 1 + 6) = 0.7.


@pytest.fixture
def hand(project, open_con):
    project.ingest(project.write("w2.jsonl", HAND))
    return open_con(project), project.config


def test_m3_counts_rate_status_and_ci(hand):
    con, config = hand
    v = visual.visual_week(con, config, "2026-W02")
    assert (v["items"], v["pairs"]) == (4, 6)
    assert (v["agreements"], v["class_disagreements"], v["presence_disagreements"],
            v["low_overlap"]) == (3, 1, 6, 1)
    assert v["disagreement_rate"] == pytest.approx(0.7)
    assert v["disagreement_rate_reason"] is None
    assert v["status"] == "red"  # 0.7 >= 0.20
    # Item bootstrap, items sorted by id: (class + presence, all) per item:
    # img-1 (3, 4), img-2 (0, 1), img-3 (0, 0), img-4 (4, 5).
    ci = agreement.bootstrap_ratio_ci([3, 0, 0, 4], [4, 1, 0, 5], n_resamples=200, seed=0)
    assert v["disagreement_rate_ci"] == pytest.approx([ci.low, ci.high])
    assert v["disagreement_rate_ci"][0] <= 0.7 <= v["disagreement_rate_ci"][1]
    # Deterministic: the same object twice.
    assert visual.visual_week(con, config, "2026-W02") == v
    # 10 box units >= min_units 10: no top-level small-sample warning.
    assert v["warnings"] == []


def test_presence_class_schema_alpha(hand):
    con, config = hand
    v = visual.visual_week(con, config, "2026-W02")
    # Presence units (item, label) over car, person, bicycle; raters ann-1, ann-2, ann-3.
    presence = [
        [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0],
        [1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0],
        [NAN] * 9 + [0, 1, 0],
    ]
    p = v["presence"]
    assert p["units"] == 12
    # One disagreeing unit (img-1 bicycle): o01 = o10 = 1; n = 9 * 2 + 3 * 3 = 27.
    assert p["agreement"] == pytest.approx(25 / 27)
    assert p["alpha"] == pytest.approx(kripp(presence))
    assert p["alpha_reason"] is None and p["warnings"] == []
    # The CI: the same item bootstrap as metrics.agreement on the raw (unit, value) rows.
    groups, units, values = [], [], []
    items = ["img-1", "img-2", "img-3", "img-4"]
    for row in presence:
        for u, val in enumerate(row):
            if not np.isnan(val):
                groups.append(items[u // 3])
                units.append(u)
                values.append(int(val))
    ci = agreement.bootstrap_alpha_ci(groups, units, values, n_resamples=200, seed=0)
    assert p["alpha_ci"] == pytest.approx([ci.low, ci.high])

    # Class: matched box pairs (car, car), (person, car), (car, car), (person, person).
    c = v["class"]
    assert c["units"] == 4
    assert c["agreement"] == pytest.approx(3 / 4)
    assert c["alpha"] == pytest.approx(kripp([[0, 1, 0, 1], [0, 0, 0, 1]]))
    assert c["warnings"] == warn(4)
    # Diagonal: agreements per label; (car, person) and (person, car): 1 class pair.
    # bicycle is never matched: an all-zero row and column.
    assert c["confusion"] == {"labels": ["car", "person", "bicycle"],
                              "matrix": [[2, 1, 0], [1, 1, 0], [0, 0, 0]]}
    # Every class unit has 2 values: Fleiss' kappa on units x (car, person) counts.
    assert c["fleiss_kappa"] == pytest.approx(
        agreement.fleiss_kappa([[2, 0], [1, 1], [2, 0], [0, 2]]))
    # Presence units have 2 (img-1..3) or 3 (img-4) values: no Fleiss' kappa.
    assert p["fleiss_kappa"] is None and "2 to 3 values" in p["fleiss_kappa_reason"]

    # Schema, unit item: ann-2 on img-3 lacks the required caption.
    s = v["schema"]
    assert s["units"] == 4
    # o11 = 2 + 2 + 0 + 3 = 7, o01 = o10 = 1: agreement 7 / 9;
    # alpha = 1 - (9 - 1)(9 - 7) / (81 - 8^2 - 1^2) = 1 - 16 / 16 = 0.
    assert s["agreement"] == pytest.approx(7 / 9)
    assert s["alpha"] == pytest.approx(0.0)
    assert s["alpha"] == pytest.approx(kripp([[1, 1, 1, 1], [1, 1, 0, 1], [NAN, NAN, NAN, 1]]))


def test_presence_sees_the_boxes_matching_sees(project, open_con):
    # img-1: ann-1 draws a car; ann-2's only car is 0 px wide (a contract error, left
    # out of matching) and a person both drew. img-2: both draw a car.
    project.ingest(project.write("w2.jsonl", [
        record("img-1", "ann-1", W2, [box(0, 0), box(50, 50, label="person")]),
        record("img-1", "ann-2", W2, [box(0, 0, w=0), box(50, 50, label="person")]),
        record("img-2", "ann-1", W2, [box(0, 0)]),
        record("img-2", "ann-2", W2, [box(0, 0)]),
    ]))
    v = visual.visual_week(open_con(project), project.config, "2026-W02")
    # Matching: 2 agreements (person, car on img-2); ann-1's car on img-1 -> 1 presence.
    assert (v["agreements"], v["class_disagreements"], v["presence_disagreements"]) == (
        2, 0, 1)
    # Presence units (item, label) over car, person, bicycle: ann-2 has no car on img-1.
    presence = [[1, 1, 0, 1, 0, 0], [0, 1, 0, 1, 0, 0]]
    assert v["presence"]["units"] == 6
    assert v["presence"]["agreement"] == pytest.approx(5 / 6)
    assert v["presence"]["alpha"] == pytest.approx(kripp(presence))

def test_text_fields_and_mentions(hand):
    con, config = hand
    text = visual.visual_week(con, config, "2026-W02")["text"]
    assert set(text) == {"caption", "weather", "tags", "mentions"}

    # weather (categorical): sunny = 1, cloudy = 2, rainy = 3.
    w = text["weather"]
    assert w["kind"] == "categorical" and w["units"] == 4
    assert w["alpha"] == pytest.approx(kripp([[1, 1, 3, 1], [2, 1, 3, 1], [NAN, NAN, NAN, 2]]))
    # Pairable values n = 2 + 2 + 2 + 3 = 9. Diagonal o_cc = n_uc (n_uc - 1) / (m_u - 1):
    # img-2 2, img-3 2, img-4 sunny 2 * 1 / 2 = 1 -> agreement 5 / 9.
    assert w["agreement"] == pytest.approx(5 / 9)
    assert w["warnings"] == warn(4)

    # tags (multilabel): units (img-1, a), (img-1, b), (img-3, c), (img-4, a), (img-4, b);
    # img-2 (ann-1 chose [], ann-2 has no tags) has no chosen value: no unit. ann-3: missing.
    t = text["tags"]
    assert t["kind"] == "multilabel" and t["units"] == 5
    assert t["alpha"] == pytest.approx(kripp([[1, 1, 1, 1, 0], [1, 0, 1, 0, 1]]))
    assert t["agreement"] == pytest.approx(4 / 10)

    # caption (free): img-3 is skipped (ann-2 has none): 1 + 1 + 3 = 5 pairs.
    sims = [sim("A red car.", "a  RED car"), sim("A car.", "A car."),
            sim("A person.", "A person"), sim("A person.", "Someone walking."),
            sim("A person", "Someone walking.")]
    f = text["caption"]
    assert f["kind"] == "free" and f["units"] == f["pairs"] == 5
    assert f["mean_similarity"] == pytest.approx(np.mean(sims))
    below = sum(s < 0.8 for s in sims)
    assert below == 2
    assert f["share_below_0_8"] == pytest.approx(below / 5)
    assert f["agreement"] == pytest.approx(1 - below / 5)
    assert f["alpha"] is None and f["alpha_reason"] == "free text"

    # mentions: unit (item, label) for items with two or more captions (img-3 has one).
    m = text["mentions"]
    assert m["units"] == 9
    assert m["alpha"] == pytest.approx(kripp([
        [1, 0, 0, 1, 0, 0, 0, 1, 0],
        [1, 0, 0, 1, 0, 0, 0, 1, 0],
        [NAN] * 6 + [0, 0, 0],
    ]))


def test_iou_and_threshold_curve(hand):
    con, config = hand
    iou = visual.visual_week(con, config, "2026-W02")["iou"]
    matched = [IOU_1, 1.0, IOU_2, 1.0]
    assert iou["units"] == 4
    assert iou["mean"] == pytest.approx(np.mean(matched))
    assert iou["median"] == pytest.approx(np.median(matched))
    assert iou["low_overlap"] == 1
    assert iou["agreement"] == pytest.approx(3 / 4)
    assert iou["alpha"] is None and iou["alpha_reason"]
    # 14 boxes in the week's pairs (6 + 2 + 0 + 2 * 3); each matched pair takes 2 of them.
    # t <= 0.65: all 4 matched (3 agreements, 1 class), presence 14 - 8 = 6 -> 3 / 10;
    # 0.70..0.80: the 0.667 pair is lost -> 2 / (2 + 1 + 8);
    # 0.85..0.95: the 0.818 pair too -> 1 / (1 + 1 + 10).
    curve = {round(r["t"], 2): (r["agreements"], r["class_disagreements"],
                                r["presence_disagreements"], r["agreement"])
             for r in iou["by_threshold"]}
    assert list(curve) == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    for t in (0.5, 0.55, 0.6, 0.65):
        assert curve[t] == (3, 1, 6, pytest.approx(3 / 10))
    for t in (0.7, 0.75, 0.8):
        assert curve[t] == (2, 1, 8, pytest.approx(2 / 11))
    for t in (0.85, 0.9, 0.95):
        assert curve[t] == (1, 1, 10, pytest.approx(1 / 12))


def test_reference_and_gold_breakdown(hand):
    con, config = hand
    ref = visual.visual_week(con, config, "2026-W02")["reference"]
    # ann-1 vs gold: car IoU 1, person IoU 1 -> 2 agreements; bicycle -> 1 presence.
    # ann-2 vs gold: car 0.818 agreement; car on gold's person -> class; person -> presence.
    assert (ref["items"], ref["pairs"], ref["agreements"], ref["class_disagreements"],
            ref["presence_disagreements"], ref["low_overlap"]) == (1, 2, 3, 1, 2, 0)
    assert ref["disagreement_rate"] == pytest.approx(3 / 6)

    gb = visual.gold_breakdown(con, config).set_index("annotator")
    assert list(gb.index) == ["ann-1", "ann-2"]
    # ann-1: TP 2, FP 3 - 2 = 1, FN 2 - 2 = 0; ann-2: TP 1, FP 2, FN 1.
    assert gb.loc["ann-1", ["tp", "fp", "fn"]].tolist() == [2, 1, 0]
    assert gb.loc["ann-2", ["tp", "fp", "fn"]].tolist() == [1, 2, 1]
    assert gb.loc["ann-1", "precision"] == pytest.approx(2 / 3)
    assert gb.loc["ann-1", "recall"] == pytest.approx(1.0)
    assert gb.loc["ann-1", "f1"] == pytest.approx(4 / 5)
    assert gb.loc["ann-2", "precision"] == pytest.approx(1 / 3)
    assert gb.loc["ann-2", "recall"] == pytest.approx(1 / 2)
    assert gb.loc["ann-2", "f1"] == pytest.approx(2 / 5)
    assert gb.loc["ann-1", "class_accuracy"] == pytest.approx(1.0)
    assert gb.loc["ann-2", "class_accuracy"] == pytest.approx(1 / 2)
    assert gb.loc["ann-2", "similarity_caption"] == pytest.approx(sim("a  RED car", "A red car."))
    # Presence vs gold over car, person, bicycle: ann-1 (1, 1, 1) vs gold (1, 1, 0).
    assert gb.loc["ann-1", "presence_kappa"] == pytest.approx(
        cohen_kappa_score([1, 1, 1], [1, 1, 0]))
    assert visual.gold_breakdown(con, config, weeks=["2026-W09"]).empty


def test_pair_label_breakdowns_and_series(hand):
    con, config = hand
    pb = visual.pair_breakdown(con, config, "2026-W02")
    rows = {(r.annotator_a, r.annotator_b): r for r in pb.itertuples()}
    assert set(rows) == {("ann-1", "ann-2"), ("ann-1", "ann-3"), ("ann-2", "ann-3")}
    r12 = rows[("ann-1", "ann-2")]
    assert (r12.items, r12.pairs, r12.agreements, r12.class_disagreements,
            r12.presence_disagreements, r12.low_overlap) == (4, 4, 3, 1, 2, 1)
    assert r12.disagreement_rate == pytest.approx(3 / 6)
    a = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    b = [1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    assert r12.presence_units == 12
    assert r12.presence_kappa == pytest.approx(cohen_kappa_score(a, b))
    r13 = rows[("ann-1", "ann-3")]
    assert (r13.pairs, r13.agreements, r13.presence_disagreements) == (1, 0, 2)
    assert r13.disagreement_rate == 1.0

    lb = visual.label_breakdown(con, config, "2026-W02").set_index("label")
    assert list(lb.index) == ["car", "person", "bicycle"]
    # car: agreements img-1 + img-2, the class pair, img-2's low overlap.
    assert lb.loc["car"].tolist()[:4] == [2, 1, 0, 1]
    # person: img-4 agreement, the class pair, presence 1 (img-1) + 4 (img-4).
    assert lb.loc["person"].tolist()[:4] == [1, 1, 5, 0]
    assert lb.loc["bicycle"].tolist()[:4] == [0, 0, 1, 0]
    assert lb.loc["car", "disagreement_rate"] == pytest.approx(1 / 3)

    series = visual.visual_series(con, config)
    assert series["week"].tolist() == ["2026-W02"]
    row = series.iloc[0]
    assert (row["items"], row["pairs"], row["agreements"]) == (4, 6, 3)
    assert row["disagreement_rate"] == pytest.approx(0.7)
    v = visual.visual_week(con, config, "2026-W02")
    assert [row["ci_low"], row["ci_high"]] == pytest.approx(v["disagreement_rate_ci"])


def test_disagreement_items(hand):
    con, config = hand

    def items(**kw):
        df = visual.disagreement_items(con, config, "2026-W02", **kw)
        return [(r.item_id, r.count, r.pairs) for r in df.itertuples()]

    assert items(kind="presence") == [("img-4", 4, 2), ("img-1", 2, 1)]
    assert items(kind="presence", label="bicycle") == [("img-1", 1, 1)]
    assert items(kind="presence", annotator="ann-3") == [("img-4", 4, 2)]
    assert items(kind="presence", annotator=("ann-3", "ann-1")) == [("img-4", 2, 1)]
    assert items(kind="class") == [("img-1", 1, 1)]
    assert items(kind="low_overlap") == [("img-2", 1, 1)]
    # weather: img-1 sunny/cloudy; img-4 ann-3's cloudy against two sunny.
    assert items(kind="weather") == [("img-4", 2, 2), ("img-1", 1, 1)]
    # tags: img-4 {a} vs {b}: 2 differing values; img-1 {a, b} vs {a}: 1.
    assert items(kind="tags") == [("img-4", 2, 1), ("img-1", 1, 1)]
    assert items(kind="tags", label="b") == [("img-1", 1, 1), ("img-4", 1, 1)]
    assert items(kind="mentions") == [("img-4", 2, 2)]
    assert items(kind="schema") == [("img-3", 1, 1)]
    # caption: the two pairs with "Someone walking." are below 0.8.
    df = visual.disagreement_items(con, config, "2026-W02", kind="caption")
    assert df["item_id"].tolist() == ["img-4"] and df["count"].tolist() == [2]
    assert df["annotators"].tolist() == [["ann-1", "ann-2", "ann-3"]]
    assert df["min_similarity"].iloc[0] == pytest.approx(
        min(sim("A person.", "Someone walking."), sim("A person", "Someone walking.")))
    assert visual.disagreement_items(con, config, "2026-W09", kind="class").empty
    with pytest.raises(ValueError, match="unknown kind"):
        visual.disagreement_items(con, config, "2026-W02", kind="nope")


def test_item_pairs_drill_down(hand):
    con, config = hand
    pairs = visual.item_pairs(con, config, "img-1")
    assert [(p["reference"], p["a"]["annotator_id"], p["b"]["annotator_id"]) for p in pairs] \
        == [(False, "ann-1", "ann-2"), (True, "ann-1", "gold-1"), (True, "ann-2", "gold-1")]
    peer = pairs[0]
    assert [(m["kind"], m["box_a"], m["box_b"]) for m in peer["matches"]] == [
        ("agreement", 0, 0), ("class", 1, 1)]
    assert peer["matches"][0]["iou"] == pytest.approx(IOU_1)
    assert (peer["unmatched_a"], peer["unmatched_b"]) == ([2], [2])
    assert peer["a"]["boxes"][2] == {"box_idx": 2, "label": "bicycle",
                                     "bbox": [20.0, 20.0, 10.0, 10.0], "matchable": True,
                                     "attributes": None}
    assert peer["b"]["fields"]["weather"] == "cloudy"
    assert peer["text"]["caption"] == pytest.approx(sim("A red car.", "a  RED car"))
    assert visual.item_pairs(con, config, "img-404") == []


def test_week_without_pairs(hand):
    con, config = hand
    v = visual.visual_week(con, config, "2026-W30")
    assert (v["items"], v["pairs"], v["agreements"], v["class_disagreements"],
            v["presence_disagreements"], v["low_overlap"]) == (0, 0, 0, 0, 0, 0)
    assert v["disagreement_rate"] is None and v["disagreement_rate_reason"] == "no pairs this week"
    assert v["disagreement_rate_ci"] is None and v["status"] is None
    for kind in (v["presence"], v["class"], v["schema"], v["text"]["weather"],
                 v["text"]["tags"], v["text"]["mentions"]):
        assert kind["units"] == 0 and kind["agreement"] is None and kind["alpha"] is None
        assert kind["alpha_reason"] == agreement.REASON_NO_PAIRABLE_UNITS
        assert kind["warnings"] == warn(0)
    assert v["text"]["caption"]["mean_similarity"] is None
    assert all(r["agreement"] is None for r in v["iou"]["by_threshold"])
    assert v["reference"]["pairs"] == 0 and v["reference"]["disagreement_rate"] is None
    assert visual.pair_breakdown(con, config, "2026-W30").empty


def test_rating_sets_follow_weeks_and_relabels(project, open_con):
    project.ingest(project.write("a.jsonl", [
        # img-A: ann-1 in W02, ann-2 in W03: the set reaches 2 in W03 only.
        record("img-A", "ann-1", W2, [box(0, 0)]),
        record("img-A", "ann-2", W3, [box(0, 0)]),
        # img-B: ann-1 relabels within W03 (10:00 car, 12:00 person): only the later one
        # is in the set; vs ann-2's person -> 1 agreement.
        record("img-B", "ann-1", W3, [box(0, 0)]),
        record("img-B", "ann-1", "2026-01-13T12:00:00Z", [box(0, 0, label="person")]),
        record("img-B", "ann-2", W3, [box(0, 0, label="person")]),
    ]))
    con = open_con(project)
    config = project.config
    assert visual.visual_week(con, config, "2026-W02")["pairs"] == 0
    before = visual.visual_week(con, config, "2026-W03")
    assert (before["items"], before["pairs"], before["agreements"]) == (2, 2, 2)
    assert before["presence_disagreements"] == before["class_disagreements"] == 0
    con.close()

    project.ingest(project.write("b.jsonl", [
        # W04: ann-1 relabels img-A as person (a new annotation_id); ann-3 arrives.
        # Set {ann-1 (new), ann-2, ann-3}: (1,2) class, (1,3) class, (2,3) agreement.
        record("img-A", "ann-1", W4, [box(0, 0, label="person")]),
        record("img-A", "ann-3", W4, [box(0, 0)]),
    ]))
    con = open_con(project)
    # Past weeks keep their numbers.
    assert visual.visual_week(con, config, "2026-W03") == before
    w4 = visual.visual_week(con, config, "2026-W04")
    assert (w4["items"], w4["pairs"], w4["agreements"], w4["class_disagreements"],
            w4["presence_disagreements"]) == (1, 3, 1, 2, 0)
    pairs = visual.item_pairs(con, config, "img-A")
    assert [(p["week"], p["a"]["annotator_id"], p["a"]["submitted_at"][:10],
             p["b"]["annotator_id"]) for p in pairs] == [
        ("2026-W03", "ann-1", "2026-01-06", "ann-2"),
        ("2026-W04", "ann-1", "2026-01-20", "ann-2"),
        ("2026-W04", "ann-1", "2026-01-20", "ann-3"),
        ("2026-W04", "ann-2", "2026-01-13", "ann-3"),
    ]
    series = visual.visual_series(con, config)
    assert series["week"].tolist() == ["2026-W02", "2026-W03", "2026-W04"]
    assert series["pairs"].tolist() == [0, 2, 3]
    assert np.isnan(series["disagreement_rate"].iloc[0])


def test_new_version_replaces_the_old(project, open_con):
    project.ingest(project.write("a.jsonl", [
        record("img-1", "ann-1", W2, [box(0, 0)], annotation_id="x-1"),
        record("img-1", "ann-2", W2, [box(0, 0)], annotation_id="x-2"),
    ]))
    project.ingest(project.write("b.jsonl", [
        record("img-1", "ann-2", W2, [box(0, 0, label="person")], annotation_id="x-2"),
    ]))
    v = visual.visual_week(open_con(project), project.config, "2026-W02")
    assert (v["pairs"], v["agreements"], v["class_disagreements"]) == (1, 0, 1)


def test_roles(project, open_con):
    project.ingest(project.write("a.jsonl", [
        # img-1: an annotator and a reviewer are peers; model and gold are not.
        record("img-1", "ann-1", W2, [box(0, 0)]),
        record("img-1", "rev-1", W2, [box(0, 0)], role="reviewer"),
        record("img-1", "model-1", W2, [box(40, 40)], role="model"),
        record("img-1", "gold-1", W2, [box(0, 0), box(40, 40)], role="gold"),
        # img-2: one annotator and gold: no peer pair, one reference pair.
        record("img-2", "ann-1", W2, [box(0, 0)]),
        record("img-2", "gold-1", W2, [box(0, 0)], role="gold"),
    ]))
    con = open_con(project)
    v = visual.visual_week(con, project.config, "2026-W02")
    assert (v["items"], v["pairs"], v["agreements"], v["presence_disagreements"]) == (1, 1, 1, 0)
    ref = v["reference"]
    # ann-1 vs gold (img-1): 1 agreement, gold's (40, 40) box: 1 presence; rev-1 the same;
    # img-2: 1 agreement.
    assert (ref["items"], ref["pairs"], ref["agreements"], ref["presence_disagreements"]) \
        == (2, 3, 3, 2)
    pb = visual.pair_breakdown(con, project.config, "2026-W02")
    assert pb[["annotator_a", "annotator_b"]].values.tolist() == [["ann-1", "rev-1"]]


def _score(item_id, salt):
    digest = hashlib.sha256((salt + item_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def test_items_outside_the_sample_never_count(project, open_con):
    ids = [f"s-{i}" for i in range(100)]
    inside = next(i for i in ids if _score(i, "t") < 0.5)
    outside = [i for i in ids if _score(i, "t") >= 0.5]
    excluded, pinned = outside[0], outside[1]
    (project.root / "labelqa.toml").write_text(
        CONFIG.replace("rate = 1.0", "rate = 0.5").replace(
            "pinned = []", f'pinned = ["{pinned}"]'), encoding="utf-8")
    recs = []
    for item in (inside, excluded, pinned):
        recs += [record(item, "ann-1", W2, [box(0, 0)]),
                 record(item, "ann-2", W2, [box(0, 0, label="person")])]
    project.ingest(project.write("a.jsonl", recs))
    con = open_con(project)
    v = visual.visual_week(con, project.config, "2026-W02")
    # Each counted item adds one class disagreement.
    assert (v["items"], v["pairs"], v["class_disagreements"]) == (2, 2, 2)
    assert visual.item_pairs(con, project.config, excluded) == []
    sampled = {r[0] for r in con.execute("SELECT item_id FROM d_sample_items").fetchall()}
    assert sampled == {inside, pinned}


def test_edge_cases_no_boxes_zero_area_no_variation(project, open_con):
    project.ingest(project.write("a.jsonl", [
        # img-1: nobody drew a box: one pair, adds 0 -> M3 undefined.
        record("img-1", "ann-1", W2, []),
        record("img-1", "ann-2", W2, []),
    ]))
    con = open_con(project)
    v = visual.visual_week(con, project.config, "2026-W02")
    assert (v["items"], v["pairs"], v["agreements"], v["presence_disagreements"]) == (1, 1, 0, 0)
    assert v["disagreement_rate"] is None
    assert v["disagreement_rate_reason"] == visual.REASON_NO_BOXES
    assert v["disagreement_rate_ci"] is None and v["status"] is None
    # Everything identical: no variation, so alpha is undefined (with the reason).
    for kind in (v["schema"], v["text"]["weather"]):
        assert kind["agreement"] == 1.0
        assert kind["alpha"] is None and kind["alpha_reason"] == agreement.REASON_NO_VARIATION
        assert kind["alpha_ci"] is None
    assert v["presence"]["alpha_reason"] == agreement.REASON_NO_VARIATION
    assert v["class"]["alpha_reason"] == agreement.REASON_NO_PAIRABLE_UNITS
    con.close()

    project.ingest(project.write("b.jsonl", [
        # img-2: ann-1 adds a zero-width box: a contract error, left out of matching.
        record("img-2", "ann-1", W3, [box(0, 0), {"label": "car", "bbox": [20, 20, 0, 10]}]),
        record("img-2", "ann-2", W3, [box(0, 0)]),
    ]))
    con = open_con(project)
    v = visual.visual_week(con, project.config, "2026-W03")
    assert (v["agreements"], v["class_disagreements"], v["presence_disagreements"]) == (1, 0, 0)
    assert v["disagreement_rate"] == 0.0
    assert v["schema"]["agreement"] == 0.0  # ann-1 fails the contract, ann-2 passes
    (pair,) = visual.item_pairs(con, project.config, "img-2")
    assert pair["a"]["boxes"][1]["matchable"] is False
    assert (pair["unmatched_a"], pair["unmatched_b"]) == ([], [])
    # Labels never used: zero rows, undefined rate.
    lb = visual.label_breakdown(con, project.config, "2026-W03").set_index("label")
    assert lb.loc["bicycle"].tolist()[:4] == [0, 0, 0, 0]
    assert np.isnan(lb.loc["bicycle", "disagreement_rate"])


def test_one_annotator_and_small_sample_warnings(project, open_con):
    project.ingest(project.write("a.jsonl", [
        record(f"img-{i}", "ann-1", W2, [box(0, 0)]) for i in range(3)
    ]))
    con = open_con(project)
    v = visual.visual_week(con, project.config, "2026-W02")
    assert (v["items"], v["pairs"]) == (0, 0)
    assert v["disagreement_rate_reason"] == visual.REASON_NO_PAIRS
    assert v["presence"]["units"] == 0 and v["presence"]["warnings"] == warn(0)
    assert v["warnings"] == ["0 box units, below min_units 10: treat with care"]


def test_refresh_is_idempotent(hand, project):
    con, config = hand
    tables = {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
              for t in derived.DERIVED_TABLES}
    con.close()
    with store.open_db(config.database) as rw:
        rw.execute("BEGIN TRANSACTION")
        derived.refresh(rw, config)
        derived.refresh(rw, config)
        rw.execute("COMMIT")
        again = {t: rw.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
                 for t in derived.DERIVED_TABLES}
        assert derived.is_fresh(rw, config) is True
    assert again == tables


# --------------------------------------------------------------------------------------
# Batched matching against metrics.agreement, pair by pair
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_match_pair_batch_equals_match_boxes(iou_threshold):
    rng = np.random.default_rng(7)
    runs, boxes, labels = [], [], []
    for _ in range(150):
        pair = []
        # Crowded: both sides' boxes near two shared centres, so that some boxes have
        # several candidates and the Hungarian assignment decides.
        centres = rng.uniform(0, 40, size=(2, 2))
        for _side in range(2):
            n = int(rng.integers(0, 6))
            xy = centres[rng.integers(0, 2, size=n)] + rng.normal(0, 1.5, size=(n, 2))
            wh = rng.uniform(8, 14, size=(n, 2))
            pair.append((len(boxes), n))
            boxes += np.column_stack([xy, wh]).tolist()
            labels += rng.integers(0, 3, size=n).tolist()
        runs.append(pair)
    xywh = np.array(boxes).reshape(-1, 4)
    labels = np.array(labels)
    start_a = [r[0][0] for r in runs]
    n_a = [r[0][1] for r in runs]
    start_b = [r[1][0] for r in runs]
    n_b = [r[1][1] for r in runs]
    res = derived.match_pair_batch(xywh, labels, start_a, n_a, start_b, n_b,
                                   iou_threshold=iou_threshold, low_overlap=0.75)
    complex_seen = 0
    for p, ((sa, na), (sb, nb)) in enumerate(runs):
        a, b = xywh[sa:sa + na], xywh[sb:sb + nb]
        la, lb = labels[sa:sa + na], labels[sb:sb + nb]
        ref = agreement.match_boxes(a, la, b, lb, iou_threshold=iou_threshold,
                                    low_overlap=0.75)
        assert res.agreements[p] == ref.n_agreements
        assert res.class_disagreements[p] == ref.n_class_disagreements
        assert res.presence_disagreements[p] == ref.n_presence_disagreements
        assert res.low_overlap[p] == ref.n_low_overlap
        rows = res.out_pair == p
        got = sorted(zip(res.out_kind[rows].tolist(), res.out_box_a[rows].tolist(),
                         res.out_box_b[rows].tolist(), strict=True))
        want = sorted([(0, sa + i, sb + j) for i, j, _ in ref.agreements]
                      + [(1, sa + i, sb + j) for i, j, _ in ref.class_disagreements]
                      + [(2, sa + i, -1) for i in ref.unmatched_a]
                      + [(2, -1, sb + j) for j in ref.unmatched_b])
        assert got == want
        curve = agreement.match_counts_by_threshold(a, la, b, lb)
        assert res.by_threshold[p].tolist() == curve.tolist()
        iou = agreement.box_iou(a, b)
        above = iou >= min(iou_threshold, 0.5)
        complex_seen += bool((above.sum(axis=1) > 1).any() or (above.sum(axis=0) > 1).any())
    assert complex_seen >= 30  # the Hungarian path was exercised


def test_match_pair_batch_empty():
    res = derived.match_pair_batch(np.zeros((0, 4)), np.zeros(0, int), [], [], [], [])
    assert res.agreements.size == 0 and res.by_threshold.shape == (0, 10, 3)
    res = derived.match_pair_batch(np.array([[0, 0, 10, 10]]), np.array([0]),
                                   [0], [1], [0], [0])
    assert res.presence_disagreements.tolist() == [1]
    assert res.by_threshold[0, :, 2].tolist() == [1] * 10


def test_missing_or_stale_derived_tables(hand, project):
    con, config = hand
    expected = visual.visual_week(con, config, "2026-W02")
    con.close()
    with store.open_db(config.database) as rw:
        rw.execute("DROP TABLE d_pairs")
    ro = project.connect()
    with pytest.raises(RuntimeError, match="labelqa ingest"):
        visual.visual_week(ro, config, "2026-W02")
    ro.close()
    with store.open_db(config.database) as rw:
        # A writable connection rebuilds them.
        assert visual.visual_week(rw, config, "2026-W02") == expected
    # A config edited since the last ingest (a new label) is flagged.
    (project.root / "labelqa.toml").write_text(
        CONFIG.replace('bicycle = ["bicycle"', 'truck = ["truck"]\nbicycle = ["bicycle"'),
        encoding="utf-8")
    with store.open_db(config.database, read_only=True) as ro:
        v = visual.visual_week(ro, project.config, "2026-W02")
    assert any("ingest again" in w for w in v["warnings"])


def test_pages_with_a_side_query_line_rebuild_missing_tables_once(hand, project):
    """`week_overview` and `annotator_table` run a second line of queries on a cursor;
    the derived tables are built before it starts, never by both lines at once."""
    from metrics import overview, weekly

    con, config = hand
    want_overview = overview.week_overview(con, config, "2026-W02")
    want_table = weekly.annotator_table(con, config, "2026-W02")
    con.close()
    for call, want in ((overview.week_overview, want_overview),
                       (weekly.annotator_table, want_table)):
        with store.open_db(config.database) as rw:
            rw.execute("DROP TABLE d_pairs")
        ro = project.connect()
        with pytest.raises(RuntimeError, match="labelqa ingest"):
            call(ro, config, "2026-W02")
        ro.close()
        with store.open_db(config.database) as rw:
            got = call(rw, config, "2026-W02")
        if isinstance(want, dict):
            assert got == want
        else:
            pd.testing.assert_frame_equal(got, want)


# --------------------------------------------------------------------------------------
# Stored intervals (d_week_ci): one draw per week, the numbers of one draw per statistic
# --------------------------------------------------------------------------------------


def random_records(seed: int, weeks: list[str], n_items: int = 24, *, max_raters: int = 4,
                   prefix: str = "r") -> list[dict]:
    """Items drawn by 2 to ``max_raters`` annotators (coincidence weights 1, 1/2, 1/3)
    with jittered boxes of random labels, random weather, tags and captions."""
    rng = np.random.default_rng(seed)
    labels = ["car", "person", "bicycle"]
    recs = []
    for w, when in enumerate(weeks):
        for i in range(n_items):
            item = f"{prefix}{w}-{i:02d}"
            base = [(float(rng.uniform(0, 60)), float(rng.uniform(0, 60)))
                    for _ in range(int(rng.integers(0, 3)))]
            for a in range(int(rng.integers(2, max_raters + 1))):
                boxes = [box(x + float(rng.integers(0, 3)), y, 20, 20,
                             label=str(rng.choice(labels)))
                         for x, y in base if rng.random() < 0.85]
                tags = sorted({str(t) for t in rng.choice(["a", "b", "c"],
                                                          size=int(rng.integers(0, 3)))})
                recs.append(record(item, f"ann-{a}", when, boxes,
                                   caption=f"A {rng.choice(labels)} on the road.",
                                   weather=str(rng.choice(["sunny", "cloudy", "rainy"])),
                                   tags=tags))
    return recs


def _with_bootstrap(config, n: int):
    import dataclasses

    return dataclasses.replace(config,
                               agreement=dataclasses.replace(config.agreement, bootstrap=n))


def _ratio_ci(con, week: str, reference: bool, n: int) -> list[float]:
    rows = con.execute(
        """SELECT sum(class_disagreements + presence_disagreements),
                  sum(agreements + class_disagreements + presence_disagreements)
        FROM d_pairs WHERE week = $w AND reference = $r GROUP BY item_id ORDER BY item_id""",
        {"w": week, "r": reference}).fetchall()
    ci = agreement.bootstrap_ratio_ci([r[0] for r in rows], [r[1] for r in rows],
                                      n_resamples=n, seed=0)
    return [ci.low, ci.high]


def _alpha_ci(gc: agreement.GroupCoincidence, n: int) -> list[float]:
    """Alpha's item bootstrap drawn for this statistic alone (DESIGN "CIs"), from each
    item's coincidence row sums and trace."""
    g, k = gc.groups.size, gc.categories.size
    o = gc.contributions.reshape(g, k, k)
    stats = np.concatenate([o.sum(axis=2), np.trace(o, axis1=1, axis2=2)[:, None]], axis=1)
    idx = np.random.default_rng(0).integers(0, g, size=(n, g))
    counts = np.bincount((idx + np.arange(n)[:, None] * g).ravel(),
                         minlength=n * g).reshape(n, g)
    s = counts @ stats
    n_c, trace = s[:, :k], s[:, k]
    total = n_c.sum(axis=1)
    expected = total * total - (n_c * n_c).sum(axis=1)
    ok = (total > 0) & (expected > 1e-12 * total * total)
    alpha = 1.0 - (total[ok] - 1.0) * (total[ok] - trace[ok]) / expected[ok]
    return [float(x) for x in np.percentile(alpha, [2.5, 97.5])]


@pytest.mark.parametrize("bootstrap", [200, 150])
def test_week_intervals_equal_one_draw_per_statistic(project, open_con, bootstrap):
    """200: the intervals refresh stored; 150: another setting, resampled on read."""
    project.ingest(project.write("r.jsonl", random_records(3, [W2, W3])))
    con = open_con(project)
    config = _with_bootstrap(project.config, bootstrap)
    stored = con.execute("SELECT count(*) FROM d_week_ci WHERE n_resamples = 150").fetchone()
    assert stored == (0,)
    series = visual.visual_series(con, config).set_index("week")
    for week in ("2026-W02", "2026-W03"):
        v = visual.visual_week(con, config, week)
        assert v["disagreement_rate_ci"] == _ratio_ci(con, week, False, bootstrap)
        assert series.loc[week, ["ci_low", "ci_high"]].tolist() == v["disagreement_rate_ci"]
        assert v["reference"]["disagreement_rate_ci"] is None  # no gold
        sections = {("presence", ""): v["presence"], ("class", ""): v["class"],
                    ("schema", ""): v["schema"], ("categorical", "weather"):
                    v["text"]["weather"], ("multilabel", "tags"): v["text"]["tags"],
                    ("mentions", ""): v["text"]["mentions"]}
        assert set(sections) == set(derived.alpha_kinds(config))
        checked = 0
        for (kind, field), sec in sections.items():
            if sec["alpha"] is None:
                assert sec["alpha_ci"] is None
                continue
            gc = visual.kind_coincidence(con, config, [week], kind=kind, field=field)
            assert sec["alpha_ci"] == _alpha_ci(gc, bootstrap), (week, kind)
            assert sec["alpha_ci_dropped"] == 0
            checked += 1
        assert checked >= 5


def test_resample_counts_are_the_design_draws():
    for n_items, n_res in ((1, 5), (7, 300), (10_000, 300)):  # the last in two blocks
        idx = np.random.default_rng(0).integers(0, n_items, size=(n_res, n_items))
        want = np.stack([np.bincount(row, minlength=n_items) for row in idx])
        blocks = list(derived.resample_counts(n_items, n_res))
        assert np.array_equal(np.concatenate(blocks), want)
    assert len(blocks) == 2


def test_readiness_is_remembered_per_connection(hand, project, monkeypatch):
    con, config = hand
    derived.ensure(con, config)
    assert derived.is_fresh(con, config) is True
    with monkeypatch.context() as m:  # asking the database again would fail
        m.setattr(derived, "_PROBE_SQL", "SELECT nope")
        m.setattr(derived, "_missing_tables", lambda *a: pytest.fail("asked again"))
        derived.ensure(con, config)
        assert derived.is_current(con, config)
    con.close()
    # A refresh forgets the answer: the tables now carry another config.
    other = _with_bootstrap(config, 50)
    with store.open_db(config.database) as rw:
        assert derived.is_fresh(rw, config) is True
        rw.execute("BEGIN TRANSACTION")
        derived.refresh(rw, other)
        assert (derived.is_fresh(rw, config), derived.is_fresh(rw, other)) == (False, True)
        rw.execute("ROLLBACK")
        assert derived.is_fresh(rw, config) is True


def test_refresh_keeps_the_intervals_of_unchanged_weeks(project, open_con, monkeypatch):
    # At most 3 raters: every coincidence weight is a sum of halves, exact in any order
    # (with thirds, the SQL sums building d_coincidence may differ in the last bit from
    # one refresh to the next, and the intervals are then drawn again).
    project.ingest(project.write("w2.jsonl", random_records(4, [W2], max_raters=3)))
    calls = []
    real = derived.bootstrap_many
    monkeypatch.setattr(derived, "bootstrap_many",
                        lambda n, *a, **k: calls.append(n) or real(n, *a, **k))
    # A later week: W02's rating sets and intervals do not change, only W03's are drawn.
    project.ingest(project.write("w3.jsonl", random_records(5, [W3], max_raters=3,
                                                            prefix="s")))
    con = open_con(project)
    w3_items = con.execute("SELECT count(DISTINCT item_id) FROM d_pairs "
                           "WHERE week = '2026-W03' AND NOT reference").fetchone()[0]
    assert calls == [w3_items]
    stored = con.execute("SELECT * EXCLUDE (inputs) FROM d_week_ci ORDER BY ALL").fetchall()
    fresh = derived.week_intervals(con, project.config)
    assert stored == sorted(r[:-1] for r in fresh)
    assert {r[0] for r in stored} == {"2026-W02", "2026-W03"}


def test_visual_series_of_given_weeks_is_the_full_series_cut(project, open_con):
    """A window of weeks (what the overview's sparkline asks for) gives the full
    series' rows for those weeks, and zero rows for a week without pairs."""
    project.ingest(project.write("r.jsonl", random_records(4, [W2, W3])))
    con = open_con(project)
    config = project.config
    full = visual.visual_series(con, config).set_index("week")
    assert list(full.index) == ["2026-W02", "2026-W03"]
    part = visual.visual_series(con, config, weeks=["2026-W03", "2026-W09"]).set_index("week")
    assert list(part.index) == ["2026-W03", "2026-W09"]
    pd.testing.assert_series_equal(part.loc["2026-W03"], full.loc["2026-W03"])
    empty = part.loc["2026-W09"]
    assert (empty["items"], empty["pairs"], empty["agreements"]) == (0, 0, 0)
    assert np.isnan(empty["disagreement_rate"]) and np.isnan(empty["ci_low"])
