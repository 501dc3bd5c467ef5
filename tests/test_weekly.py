"""Weekly metrics: M1 and M2 counted by hand, Wilson / Newcombe / z-test against
statsmodels, p-chart limits by hand, movers, stale labels, pre-fills, annotators."""

from __future__ import annotations

import math

import pytest
from conftest import CONFIG, record
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from metrics import weekly

W02 = "2026-01-06T10:00:00Z"   # 2026-W02 (Mon 2026-01-05)
CAR = [{"label": "car", "bbox": [10, 10, 30, 20]}]


def week_w02() -> list[dict]:
    """Ten records in 2026-W02; the comments give each one's contract errors (E) and
    policy violations (V). A_W02 = the nine that are not `model`."""
    return [
        record(item="i1", annotation_id="r1"),                                # clean
        record(item="i2", annotation_id="r2", weather="foggy"),               # E weather enum
        record(item="i3", annotation_id="r3", weather="foggy",                # E weather enum
               boxes=[{"label": "truck", "bbox": [10, 10, 30, 20]}]),        # E label enum
        #                                                   V no-invented-objects (car, no box)
        record(item="i4", annotation_id="r4", caption="Nike shoes"),          # V no-brands,
        #                                                                       caption-length
        record(item="i5", annotation_id="r5", caption="Maybe a car here."),   # hedging (warning)
        record(item="i6", annotation_id="r6", weather=None),                  # E weather required
        record(item="i7", annotation_id="r7", role="gold",
               caption="A Coca-Cola truck near a car."),                      # V no-brands
        record(item="i8", annotation_id="r8", role="model", weather="foggy",
               caption="Nike"),                                               # model: not in A_w
        record(item="i9", annotation_id="r9", role="reviewer"),               # clean
        record(item="i10", annotation_id="r10",
               boxes=[{"label": "car", "bbox": [90, 90, 30, 20]}]),           # E withinImage
    ]


def clean(n: int, when: str, prefix: str, **kw) -> list[dict]:
    return [record(item=f"{prefix}-{i}", annotator=f"ann-{i % 3}", when=when, **kw)
            for i in range(n)]


def broken(n: int, when: str, prefix: str) -> list[dict]:
    """Records with exactly one contract error (weather enum) and one policy error."""
    return [record(item=f"{prefix}-{i}", annotator=f"ann-{i % 3}", when=when,
                   weather="foggy", caption="Nike shoes everywhere today.")
            for i in range(n)]


@pytest.fixture
def w02(project):
    project.ingest(project.write("w02.jsonl", week_w02()))
    con = project.connect()
    yield project, con
    con.close()


# -- weeks -------------------------------------------------------------------------------


# 2026 is a long ISO year (it starts on a Thursday): its week 53 exists; 2025's does not.
@pytest.mark.parametrize("text, norm", [("2026-W47", "2026-W47"), (" 2026-W02 ", "2026-W02"),
                                        ("2026-W53", "2026-W53")])
def test_parse_week_accepts(text, norm):
    assert weekly.parse_week(text) == norm


@pytest.mark.parametrize("text", ["2026-W60", "47", "2026W47", "2026-W00", "2025-W53",
                                  "2026-w47", "", "2026-W4", "２０２６-W47", "0000-W01", None])
def test_parse_week_rejects_with_clear_message(text):
    with pytest.raises(ValueError, match="malformed week"):
        weekly.parse_week(text)


def test_week_arithmetic():
    assert weekly.week_start("2026-W02").isoformat() == "2026-01-05"
    assert weekly.previous_week("2026-W01") == "2025-W52"
    assert weekly.shift_week("2026-W52", 2) == "2027-W01"   # 2026 has 53 weeks


def test_weeks_with_data_ignore_model_only_weeks(project):
    project.ingest(project.write("e.jsonl", [
        record(item="a", when="2026-01-13T09:00:00Z"),
        record(item="b", when=W02),
        record(item="c", when="2026-01-20T09:00:00Z", role="model"),
    ]))
    con = project.connect()
    assert weekly.weeks(con) == ["2026-W02", "2026-W03"]
    assert weekly.latest_week(con) == "2026-W03"
    con.close()


def test_no_weeks_in_empty_database(project):
    project.ingest(project.write("m.jsonl", [record(role="model")]))
    con = project.connect()
    assert weekly.weeks(con) == [] and weekly.latest_week(con) is None
    con.close()


# -- M1 ----------------------------------------------------------------------------------


def test_schema_week_counted_by_hand(w02):
    project, con = w02
    m1 = weekly.schema_week(con, project.config, "2026-W02")
    # A_W02: r1..r7, r9, r10 (r8 is a model draft). With a contract error: r2, r3, r6, r10.
    assert m1["annotations"] == 9 and m1["with_errors"] == 4
    assert m1["error_rate"] == pytest.approx(4 / 9)
    lo, hi = proportion_confint(4, 9, alpha=0.05, method="wilson")
    assert m1["error_rate_ci"] == pytest.approx([lo, hi], abs=1e-12)
    assert m1["status"] == "red" and m1["reason"] is None
    assert m1["by_path"] == [
        {"path": "/fields/weather", "keyword": "enum", "count": 2},
        {"path": "/boxes/*/bbox", "keyword": "withinImage", "count": 1},
        {"path": "/boxes/*/label", "keyword": "enum", "count": 1},
        {"path": "/fields/weather", "keyword": "required", "count": 1},
    ]
    assert m1["by_keyword"] == [{"keyword": "enum", "count": 2},
                                {"keyword": "required", "count": 1},
                                {"keyword": "withinImage", "count": 1}]
    roles = {r["role"]: (r["annotations"], r["count"]) for r in m1["by_role"]}
    assert roles == {"annotator": (7, 4), "gold": (1, 0), "reviewer": (1, 0)}
    assert m1["by_annotator"] == [{"annotator_id": "ann-1", "annotations": 9, "count": 4,
                                   "rate": pytest.approx(4 / 9)}]
    assert m1["model"] == {"annotations": 1, "with_errors": 1}


def test_a_week_without_data_gives_zero_counts_and_null_rates(w02):
    project, con = w02
    m1 = weekly.schema_week(con, project.config, "2026-W20")
    m2 = weekly.policy_week(con, project.config, "2026-W20")
    assert (m1["annotations"], m1["with_errors"], m1["error_rate"], m1["error_rate_ci"],
            m1["status"], m1["by_path"]) == (0, 0, None, None, None, [])
    assert (m2["annotations"], m2["with_violations"], m2["violation_rate"],
            m2["violation_rate_ci"], m2["status"], m2["by_rule"]) == (0, 0, None, None, None, [])
    assert m1["reason"] == m2["reason"] == (
        "no annotations of roles annotator, reviewer or gold in 2026-W20")


# -- M2 ----------------------------------------------------------------------------------


def test_policy_week_counted_by_hand(w02):
    project, con = w02
    m2 = weekly.policy_week(con, project.config, "2026-W02")
    # Error violations: r3 (invented car), r4 (brand + length), r7 (brand) -> 3 of 9.
    assert m2["annotations"] == 9 and m2["with_violations"] == 3 and m2["with_warnings"] == 1
    assert m2["violation_rate"] == pytest.approx(3 / 9)
    lo, hi = proportion_confint(3, 9, method="wilson")
    assert m2["violation_rate_ci"] == pytest.approx([lo, hi], abs=1e-12)
    assert m2["status"] == "red"
    assert m2["by_rule"] == [
        {"rule": "no-brands", "count": 2, "per_1000": pytest.approx(2000 / 9),
         "severity": "error"},
        {"rule": "caption-length", "count": 1, "per_1000": pytest.approx(1000 / 9),
         "severity": "error"},
        {"rule": "hedging", "count": 1, "per_1000": pytest.approx(1000 / 9),
         "severity": "warning"},
        {"rule": "no-invented-objects", "count": 1, "per_1000": pytest.approx(1000 / 9),
         "severity": "error"},
    ]
    assert m2["by_field"] == [{"field": "caption", "count": 4, "errors": 3,
                               "per_1000": pytest.approx(4000 / 9)}]
    assert m2["model"] == {"annotations": 1, "with_violations": 1}


def test_thresholds_drive_the_traffic_light(project):
    # 1 of 40 = 2.5%: amber for schema (0.02, 0.05), green for policy (0.03, 0.08).
    recs = clean(39, W02, "c") + [record(item="x", weather="foggy", when=W02)]
    project.ingest(project.write("t.jsonl", recs))
    con = project.connect()
    assert weekly.schema_week(con, project.config, "2026-W02")["status"] == "amber"
    assert weekly.policy_week(con, project.config, "2026-W02")["status"] == "green"
    con.close()


def test_only_the_current_version_counts(w02):
    project, con = w02
    con.close()
    # r2 is fixed in a later export; r10 gets a new version in the next week.
    project.ingest(project.write("fix.jsonl", [
        record(item="i2", annotation_id="r2"),
        record(item="i10", annotation_id="r10", when="2026-01-13T10:00:00Z",
               boxes=[{"label": "car", "bbox": [90, 90, 30, 20]}]),
    ]))
    con = project.connect()
    m1 = weekly.schema_week(con, project.config, "2026-W02")
    assert (m1["annotations"], m1["with_errors"]) == (8, 2)   # r3, r6
    assert m1["by_path"][0] == {"path": "/boxes/*/label", "keyword": "enum", "count": 1}
    assert {"path": "/fields/weather", "keyword": "enum", "count": 1} in m1["by_path"]
    w03 = weekly.schema_week(con, project.config, "2026-W03")
    assert (w03["annotations"], w03["with_errors"]) == (1, 1)
    # The old versions stay queryable.
    assert con.execute("SELECT count(*) FROM annotations WHERE NOT is_current").fetchone() == (2,)
    con.close()


# -- trends ------------------------------------------------------------------------------


def _trend_project(project) -> None:
    recs = week_w02()
    recs += clean(20, "2026-01-13T10:00:00Z", "w3")                          # W03: 0 / 20
    recs += clean(20, "2026-01-20T10:00:00Z", "w4")                          # W04: 0 / 20
    recs += broken(8, "2026-01-27T10:00:00Z", "w5") + clean(2, "2026-01-27T10:00:00Z", "w5c")
    project.ingest(project.write("trend.jsonl", recs))                       # W05: 8 / 10


def test_series_p_chart_by_hand(project):
    _trend_project(project)
    con = project.connect()
    df = weekly.series(con, project.config, visual=False)
    assert df["week"].tolist() == ["2026-W02", "2026-W03", "2026-W04", "2026-W05"]
    assert df["annotations"].tolist() == [9, 20, 20, 10]
    assert df["schema_errors"].tolist() == [4, 0, 0, 8]
    assert df["policy_errors"].tolist() == [3, 0, 0, 8]
    p_bar = 12 / 59
    for row in df.itertuples():
        sigma = 3 * math.sqrt(p_bar * (1 - p_bar) / row.annotations)
        assert row.schema_center == pytest.approx(p_bar)
        assert row.schema_ucl == pytest.approx(min(1.0, p_bar + sigma))
        assert row.schema_lcl == pytest.approx(max(0.0, p_bar - sigma))
        lo, hi = proportion_confint(row.schema_errors, row.annotations, method="wilson")
        assert (row.schema_ci_low, row.schema_ci_high) == pytest.approx((lo, hi), abs=1e-12)
    # W05: 0.8 > p̄ + 3·sqrt(p̄(1-p̄)/10) ≈ 0.585 -> up; W03/W04: rate 0 = clipped LCL 0.
    assert df["schema_swing"].tolist() == [None, None, None, "up"]
    assert df["policy_center"].iloc[0] == pytest.approx(11 / 59)

    # The chart spans only the weeks shown: the last two.
    last2 = weekly.series(con, project.config, last=2, visual=False)
    assert last2["week"].tolist() == ["2026-W04", "2026-W05"]
    assert last2["schema_center"].iloc[0] == pytest.approx(8 / 30)
    until = weekly.series(con, project.config, until="2026-W03", visual=False)
    assert until["week"].tolist() == ["2026-W02", "2026-W03"]
    con.close()


# -- movers ------------------------------------------------------------------------------


def test_top_movers_paths_and_rules(project):
    # W02: 20 clean; W03: 20 of which 5 broken (weather enum, brand).
    recs = clean(20, W02, "a")
    recs += clean(15, "2026-01-13T10:00:00Z", "b") + broken(5, "2026-01-13T10:00:00Z", "c")
    recs += [record(item="tiny", when="2026-01-13T10:00:00Z", role="model")]
    project.ingest(project.write("m.jsonl", recs))
    con = project.connect()
    movers = weekly.top_movers(con, project.config, "2026-W03", n=10)
    got = {(m["kind"], m["key"]): m for m in movers if m["kind"] in ("path", "rule")}
    assert set(got) == {("path", "/fields/weather"), ("rule", "no-brands")}
    m = got[("path", "/fields/weather")]
    assert (m["rate"], m["previous"], m["delta"], m["units"]) == (0.25, 0.0, 0.25, 20)
    # caption "Nike shoes everywhere today." has 4 words: no caption-length violation.
    assert got[("rule", "no-brands")]["delta"] == 0.25
    assert len(weekly.top_movers(con, project.config, "2026-W03", n=1)) == 1
    # Fewer units than asked for in a week: paths and rules do not compete.
    assert not any(m["kind"] in ("path", "rule") for m in
                   weekly.top_movers(con, project.config, "2026-W03", min_units=21))
    con.close()


# -- guideline changes -------------------------------------------------------------------


def test_guideline_log_and_version_in_force(project):
    cfg = project.config
    log = weekly.guideline_log(cfg)
    assert [(g["version"], g["effective"], g["week"]) for g in log] == [
        ("v1", "2026-01-05", "2026-W02"), ("v2", "2026-02-02", "2026-W06")]
    assert weekly.version_in_force(cfg, "2026-W01") is None
    assert weekly.version_in_force(cfg, "2026-W05").version == "v1"
    assert weekly.version_in_force(cfg, "2026-W06").version == "v2"


def test_before_after_against_statsmodels(project):
    # v2 takes effect 2026-02-02 (W06): before = W02..W05, after = W07..W10; W06 left out.
    recs = broken(6, "2026-01-06T10:00:00Z", "b1") + clean(14, "2026-01-06T10:00:00Z", "c1")
    recs += broken(4, "2026-01-27T10:00:00Z", "b2") + clean(6, "2026-01-27T10:00:00Z", "c2")
    recs += broken(9, "2026-02-03T10:00:00Z", "x") + clean(1, "2026-02-03T10:00:00Z", "xc")
    recs += broken(1, "2026-02-10T10:00:00Z", "a1") + clean(19, "2026-02-10T10:00:00Z", "a2")
    recs += broken(1, "2026-03-03T10:00:00Z", "a3") + clean(9, "2026-03-03T10:00:00Z", "a4")
    recs += broken(5, "2026-03-10T10:00:00Z", "late")                         # W11: outside
    project.ingest(project.write("ba.jsonl", recs))
    con = project.connect()
    ba = weekly.before_after(con, project.config, "v2", visual=False)
    assert ba["week"] == "2026-W06"
    assert ba["before_weeks"] == ["2026-W02", "2026-W03", "2026-W04", "2026-W05"]
    assert ba["after_weeks"] == ["2026-W07", "2026-W08", "2026-W09", "2026-W10"]
    # The weeks the sums are over: those of each window with data.
    assert ba["before_data_weeks"] == ["2026-W02", "2026-W05"]
    assert ba["after_data_weeks"] == ["2026-W07", "2026-W10"]
    k1, n1, k2, n2 = 10, 30, 2, 30
    for metric in ("schema_error_rate", "policy_violation_rate"):
        m = ba["metrics"][metric]
        assert m["before"] == {"events": k1, "units": n1, "rate": pytest.approx(k1 / n1)}
        assert m["after"] == {"events": k2, "units": n2, "rate": pytest.approx(k2 / n2)}
        assert m["diff"] == pytest.approx(k2 / n2 - k1 / n1)
        z, p = proportions_ztest([k2, k1], [n2, n1])
        assert m["z"] == pytest.approx(z) and m["p_value"] == pytest.approx(p)
        lo, hi = confint_proportions_2indep(k2, n2, k1, n1, method="newcomb")
        assert m["diff_ci"] == pytest.approx([lo, hi], abs=1e-9)
    with pytest.raises(ValueError, match="unknown guideline version"):
        weekly.before_after(con, project.config, "v9", visual=False)
    short = weekly.before_after(con, project.config, "v2", k=1, visual=False)
    assert short["metrics"]["schema_error_rate"]["before"]["units"] == 10
    assert short["metrics"]["schema_error_rate"]["after"]["units"] == 20
    con.close()


STALE_CONFIG = CONFIG + """
[[guideline]]
version = "v3"
effective = "2026-03-02"
summary = "Weather: overcast counts as cloudy."
fields = ["weather"]
relabel = "relabel"
"""


def test_stale_labels_counted_and_listed(project):
    (project.root / "labelqa.toml").write_text(STALE_CONFIG, encoding="utf-8")
    project.ingest(project.write("s.jsonl", [
        record(item="a", guideline_version="v1"),                     # stale: caption, weather
        record(item="b", guideline_version="v1", caption=None),       # stale: weather only
        record(item="c", guideline_version="v2"),                     # stale: weather
        record(item="d", guideline_version="v3"),                     # current
        record(item="e"),                                             # unknown version
        record(item="f", guideline_version="v0"),                     # unknown version
        record(item="g", guideline_version="v1", role="model"),       # drafts never count
    ]))
    con = project.connect()
    stale = {s["field"]: s for s in weekly.stale_labels(con, project.config)}
    assert set(stale) == {"caption", "weather", "tags"}
    cap = stale["caption"]
    assert (cap["version"], cap["relabel"], cap["annotations"], cap["stale"],
            cap["unknown_version"], cap["stale_versions"]) == ("v2", "filter", 5, 1, 2, ["v1"])
    wea = stale["weather"]
    assert (wea["version"], wea["relabel"], wea["annotations"], wea["stale"],
            wea["stale_versions"]) == ("v3", "relabel", 6, 3, ["v1", "v2"])
    assert stale["tags"]["annotations"] == 0 and stale["tags"]["stale_share"] is None

    rows = weekly.stale_label_rows(con, project.config, "weather")
    assert sorted(rows["item_id"]) == ["a", "b", "c"]
    assert set(rows["relabel"]) == {"relabel"} and set(rows["changed_by"]) == {"v3"}
    assert sorted(rows["value"]) == ['"sunny"'] * 3
    with pytest.raises(ValueError, match="no guideline change touched"):
        weekly.stale_label_rows(con, project.config, "mood")
    con.close()


# -- pre-fills ---------------------------------------------------------------------------


def _drafted(item: str, reviewer: str | None, *, changed: str | None = None,
             annotator: str = "ann-1", **kw) -> dict:
    draft = {"boxes": [{"label": "car", "bbox": [10, 10, 30, 20]}],
             "fields": {"weather": "sunny", "caption": "A car parked on a street."}}
    rec = record(item=item, annotator=annotator, prefilled=True, reviewed=reviewer is not None,
                 draft=draft, **kw)
    if reviewer is not None:
        rec["reviewed_by"] = reviewer
    if changed == "box":
        rec["boxes"] = [{"label": "car", "bbox": [12, 10, 30, 20]}]
    elif changed == "label":
        rec["boxes"] = [{"label": "bicycle", "bbox": [10, 10, 30, 20]}]
    elif changed == "field":
        rec["fields"]["weather"] = "cloudy"
    elif changed == "extra_box":
        rec["boxes"] = rec["boxes"] + [{"label": "person", "bbox": [50, 50, 10, 10]}]
    elif changed == "floats":  # the same numbers written as floats: unchanged
        rec["boxes"] = [{"label": "car", "bbox": [10.0, 10.0, 30.0, 20.0],
                         "attributes": {"occluded": True}}]
    return rec


def test_prefill_acceptance_and_rubber_stamping(project):
    recs = []
    # rev-1: 20 drafts, 19 unchanged (95%) -> flagged.
    recs += [_drafted(f"a{i}", "rev-1", changed="floats" if i % 2 else None) for i in range(19)]
    recs += [_drafted("a19", "rev-1", changed="box")]
    # rev-2: 20 drafts, 18 unchanged (90%) -> not flagged.
    recs += [_drafted(f"b{i}", "rev-2") for i in range(18)]
    recs += [_drafted("b18", "rev-2", changed="field"), _drafted("b19", "rev-2", changed="label")]
    # ann-9 (no reviewed_by, so the annotator): 19 drafts, all unchanged -> too few.
    recs += [_drafted(f"c{i}", None, annotator="ann-9") for i in range(19)]
    # Pre-filled without a draft, and one not reviewed.
    recs += [record(item="p1", prefilled=True, reviewed=True),
             record(item="p2", prefilled=True, reviewed=False)]
    recs += [record(item="n1"), _drafted("m1", "rev-1", role="model")]
    project.ingest(project.write("pre.jsonl", recs))
    con = project.connect()
    s = weekly.prefill_summary(con, project.config)
    assert (s["prefilled"], s["reviewed"]) == (61, 41)
    assert s["reviewed_share"] == pytest.approx(41 / 61)
    assert (s["drafts"], s["unchanged"]) == (59, 56)
    by = {r["reviewer"]: r for r in s["by_reviewer"]}
    assert (by["rev-1"]["drafts"], by["rev-1"]["unchanged"]) == (20, 19)
    assert (by["rev-2"]["drafts"], by["rev-2"]["unchanged"]) == (20, 18)
    assert (by["ann-9"]["drafts"], by["ann-9"]["unchanged"]) == (19, 19)
    assert [r for r, v in by.items() if v["rubber_stamping"]] == ["rev-1"]
    assert s["rubber_stamping"] == ["rev-1"]
    assert weekly.prefill_summary(con, project.config, "2026-W02")["drafts"] == 59
    empty = weekly.prefill_summary(con, project.config, "2026-W09")
    assert empty["prefilled"] == 0 and empty["reviewed_share"] is None and empty["reason"]
    con.close()


def test_prefill_draft_changes_detected(project):
    kinds = [None, "box", "label", "field", "extra_box", "floats"]
    project.ingest(project.write("d.jsonl", [
        _drafted(f"i{n}", "rev", changed=kind) for n, kind in enumerate(kinds)]))
    con = project.connect()
    s = weekly.prefill_summary(con, project.config)
    assert (s["drafts"], s["unchanged"]) == (6, 2)   # unchanged: None and floats
    con.close()


# -- with the visual metric --------------------------------------------------------------


def pair_items(when: str, prefix: str, *, agree: int, klass: int, gold: int = 0) -> list[dict]:
    """Items drawn by ann-1 and ann-2 (sample rate 1): ``agree`` with the same car box,
    ``klass`` where ann-2 calls it a bicycle (a class disagreement; its caption still
    names a car: no-invented-objects). The first ``gold`` class items get a gold car."""
    bike = [{"label": "bicycle", "bbox": [10, 10, 30, 20]}]
    recs = []
    for i in range(agree + klass):
        item = f"{prefix}-{i}"
        recs.append(record(item=item, annotator="ann-1", when=when))
        recs.append(record(item=item, annotator="ann-2", when=when,
                           boxes=CAR if i < agree else bike))
        if agree <= i < agree + gold:
            recs.append(record(item=item, annotator="gold-1", role="gold", when=when))
    return recs


def test_visual_series_movers_and_annotator_table(project):
    recs = pair_items("2026-01-06T10:00:00Z", "w2", agree=10, klass=0)
    recs += pair_items("2026-01-13T10:00:00Z", "w3", agree=5, klass=5, gold=2)
    project.ingest(project.write("v.jsonl", recs))
    con = project.connect()
    cfg = project.config

    df = weekly.series(con, cfg)
    assert df["visual_units"].tolist() == [10, 10]
    assert df["visual_errors"].tolist() == [0, 5]
    assert df["pairs"].tolist() == [10, 10]
    p_bar = 5 / 20
    sigma = 3 * math.sqrt(p_bar * (1 - p_bar) / 10)
    assert df["visual_center"].tolist() == pytest.approx([p_bar, p_bar])
    assert df["visual_ucl"].tolist() == pytest.approx([p_bar + sigma] * 2)
    assert df["visual_lcl"].tolist() == [0.0, 0.0]
    assert df["visual_rate"].tolist() == [0.0, 0.5]
    assert df["visual_swing"].tolist() == [None, None]
    assert (df["visual_ci_low"] <= df["visual_rate"]).all()

    movers = weekly.top_movers(con, cfg, "2026-W03", min_units=10, n=5)
    assert [(m["kind"], m["key"]) for m in movers] == [
        ("label", "car"), ("pair", "ann-1 / ann-2"), ("rule", "no-invented-objects")]
    assert [m["delta"] for m in movers] == pytest.approx([0.5, 0.5, 5 / 22])
    assert movers[0]["units"] == 10 and movers[2]["units"] == 22
    # The filter that shows each mover on its page (the pair's ids not parsed from "a / b").
    assert [m["filter"] for m in movers] == [
        {"label": "car"}, {"annotator_a": "ann-1", "annotator_b": "ann-2"},
        {"rule": "no-invented-objects"}]
    # At the default 20 units only the rule competes (A_w: 20 and 22; boxes: 10 and 10).
    assert [m["kind"] for m in weekly.top_movers(con, cfg, "2026-W03")] == ["rule"]

    table = weekly.annotator_table(con, cfg).set_index("annotator_id")
    assert table.loc["ann-1", "annotations"] == 20 and table.loc["gold-1", "annotations"] == 2
    assert table.loc["ann-2", "policy_errors"] == 5
    assert table.loc["ann-2", "violation_rate"] == pytest.approx(5 / 20)
    assert (table.loc["ann-1", "peer_agreements"], table.loc["ann-1", "peer_units"]) == (15, 20)
    assert table.loc["ann-2", "peer_agreement"] == pytest.approx(0.75)
    assert (table.loc["ann-1", "gold_units"], table.loc["ann-1", "gold_agreement"]) == (2, 1.0)
    assert (table.loc["ann-2", "gold_units"], table.loc["ann-2", "gold_agreement"]) == (2, 0.0)
    assert math.isnan(table.loc["gold-1", "peer_agreement"])
    w2 = weekly.annotator_table(con, cfg, "2026-W02").set_index("annotator_id")
    assert (w2.loc["ann-1", "peer_units"], w2.loc["ann-1", "gold_units"]) == (10, 0)
    con.close()


def test_alpha_before_after_against_krippendorff(project):
    import krippendorff
    import numpy as np

    recs = pair_items("2026-01-06T10:00:00Z", "w2", agree=10, klass=0)
    recs += pair_items("2026-01-13T10:00:00Z", "w3", agree=5, klass=5)
    recs += pair_items("2026-02-10T10:00:00Z", "w7", agree=8, klass=2)
    project.ingest(project.write("a.jsonl", recs))
    con = project.connect()
    ba = weekly.before_after(con, project.config, "v2")
    vis = ba["metrics"]["visual_disagreement_rate"]
    assert (vis["before"]["events"], vis["before"]["units"]) == (5, 20)
    assert (vis["after"]["events"], vis["after"]["units"]) == (2, 10)
    z, p = proportions_ztest([2, 5], [10, 20])
    assert vis["p_value"] == pytest.approx(p)

    def presence(agree: int, klass: int) -> list[list[int]]:
        # Units (item, label) over car, person, bicycle; one row per annotator.
        a, b = [], []
        for i in range(agree + klass):
            a += [1, 0, 0]
            b += [1, 0, 0] if i < agree else [0, 0, 1]
        return [a, b]

    before = np.hstack([presence(10, 0), presence(5, 5)])
    after = np.array(presence(8, 2))
    alpha = {a["kind"]: a for a in ba["alpha"]}
    assert set(alpha) == {"presence", "class", "schema", "categorical", "multilabel",
                          "mentions"}
    want_b = krippendorff.alpha(reliability_data=before, level_of_measurement="nominal")
    want_a = krippendorff.alpha(reliability_data=after, level_of_measurement="nominal")
    pres = alpha["presence"]
    assert pres["before"]["alpha"] == pytest.approx(want_b)
    assert pres["after"]["alpha"] == pytest.approx(want_a)
    assert pres["diff"] == pytest.approx(want_a - want_b)
    low, high = pres["diff_ci"]
    assert low <= high and pres["reason"] is None
    # Every annotation passes the contract: schema alpha is undefined, with the reason.
    schema = alpha["schema"]
    assert schema["diff"] is None and schema["reason"] == "alpha undefined before"
    assert "no variation" in schema["before"]["reason"]
    con.close()


def test_alpha_intervals_share_one_draw_per_period(project):
    """Every kind resamples the period's items with one shared draw (stored at refresh
    for k = 4, computed for other k): the intervals of kind-by-kind resampling."""
    import numpy as np

    from metrics import agreement, derived
    from metrics.visual import kind_coincidence

    rng = np.random.default_rng(5)
    recs = []
    for day, prefix in (("2026-01-13", "b1"), ("2026-01-27", "b2"), ("2026-02-10", "a1"),
                        ("2026-02-24", "a2")):
        for i in range(12):
            for a in range(int(rng.integers(2, 5))):  # coincidence weights 1, 1/2, 1/3
                label = "car" if rng.random() < 0.7 else "bicycle"
                recs.append(record(
                    item=f"{prefix}-{i}", annotator=f"ann-{a}", when=f"{day}T10:00:00Z",
                    boxes=[{"label": label, "bbox": [10, 10, 30, 20]}],
                    weather=str(rng.choice(["sunny", "cloudy", "rainy"])),
                    tags=sorted({str(t) for t in rng.choice(["x", "y"], size=2)}),
                    caption=f"A {label} on the street."))
    project.ingest(project.write("s.jsonl", recs))
    con = project.connect()
    cfg = project.config
    checked = 0
    for k in (4, 3):
        ba = weekly.before_after(con, cfg, "v2", k=k)
        stored = derived.stored_alpha_change(con, cfg, ba["before_weeks"], ba["after_weeks"])
        assert (stored is not None) == (k == 4)
        assert [(a["kind"], a["field"] or "") for a in ba["alpha"]] == derived.alpha_kinds(cfg)
        for entry in ba["alpha"]:
            kind, field = entry["kind"], entry["field"] or ""
            found = [kind_coincidence(con, cfg, ws, kind=kind, field=field)
                     for ws in (ba["before_weeks"], ba["after_weeks"])]
            cats = sorted(set(found[0].categories.tolist())
                          | set(found[1].categories.tolist()))
            b, a = (kind_coincidence(con, cfg, ws, kind=kind, field=field, categories=cats)
                    for ws in (ba["before_weeks"], ba["after_weeks"]))
            assert entry["before"]["items"] == b.groups.size
            if entry["diff"] is None:
                continue
            ci = agreement.bootstrap_alpha_diff_ci(b, a, n_resamples=200, seed=0)
            assert entry["diff_ci"] == [ci.low, ci.high], (k, kind)
            checked += 1
    assert checked >= 8
    con.close()
