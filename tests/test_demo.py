"""The demo project: committed config and contract, and the generator of its data."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
import tomllib
from collections import Counter
from pathlib import Path

import jsonschema_rs
import orjson
import pytest
from PIL import Image

from metrics import demo

TOML = demo.DEMO_DIR / "labelqa.toml"
CONTRACT = demo.DEMO_DIR / "contract.schema.json"
PLACE_KEYS = ("item_id", "annotator_id", "submitted_at")
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


@pytest.fixture(scope="module")
def plan() -> demo.DemoPlan:
    return demo.plan_demo(seed=2026)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, Path, list[Path]]:
    """Two generations with the same seed, in two folders."""
    first, second = tmp_path_factory.mktemp("demo-a"), tmp_path_factory.mktemp("demo-b")
    start = time.perf_counter()
    paths = demo.generate_demo(first, seed=2026)
    print(f"\ngenerate_demo: {time.perf_counter() - start:.2f} s")
    demo.generate_demo(second, seed=2026)
    return first, second, paths


@pytest.fixture(scope="module")
def lines(generated) -> list[tuple[str, int, bytes]]:
    """(export name, line number, raw line) for every line written."""
    out = []
    for path in generated[2]:
        for number, raw in enumerate(path.read_bytes().split(b"\n")[:-1], 1):
            out.append((path.name, number, raw))
    return out


def _placeable(raw: bytes) -> dict | None:
    """The record when the ingest could place the line, else None (quarantine)."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or any(k not in record for k in PLACE_KEYS):
        return None
    try:
        dt.datetime.fromisoformat(record["submitted_at"].replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    return record


def test_generation_is_byte_identical(generated):
    first, second, paths = generated
    assert [p.name for p in paths] == [f"2026-W{w}.jsonl" for w in range(36, 48)]
    for sub in ("exports", "images"):
        names = sorted(p.name for p in (first / sub).iterdir())
        assert names == sorted(p.name for p in (second / sub).iterdir())
        for name in names:
            assert (first / sub / name).read_bytes() == (second / sub / name).read_bytes(), name


def test_another_seed_gives_other_data():
    a, b = demo.plan_demo(seed=1), demo.plan_demo(seed=2)
    assert [x.data for x in a.lines[:50]] != [x.data for x in b.lines[:50]]


def test_counts(plan, generated, lines):
    summary = plan.summary()
    assert 2800 <= summary["items"] <= 3200
    assert len(list((generated[0] / "images").glob("img-*.png"))) == summary["items"]
    assert summary["by_role"]["gold"] == 30
    assert 100 <= summary["by_role"]["model"] <= 250
    assert 250 <= summary["sample_items"] <= 400
    assert 5 <= len(summary["broken"]) <= 10
    assert set(summary["broken"]) == {
        "truncated JSON", "not a JSON object (array)", "NaN in a bbox", "missing item_id",
        "submitted_at is not a date", "invalid UTF-8"}
    assert summary["corrections"] == summary["duplicates"] == 1
    assert len(lines) == summary["lines"]

    records = [r for _, _, raw in lines if (r := _placeable(raw))]
    assert len(lines) - len(records) == len(summary["broken"])
    roles = Counter(r["role"] for r in records)
    assert set(roles) == {"annotator", "gold", "model"}
    people = {r["annotator_id"] for r in records if r["role"] == "annotator"}
    assert people == {f"ann-{k:02d}" for k in range(1, 9)}
    assert {r["annotator_id"] for r in records if r["role"] == "gold"} == {"lead-01"}
    assert {r["annotator_id"] for r in records if r["role"] == "model"} == {"model-v1"}
    print("\n" + json.dumps(summary))


def test_each_export_holds_its_week_sorted(lines):
    by_file: dict[str, list[str]] = {}
    for name, _, raw in lines:
        record = _placeable(raw)
        if record:
            assert ISO.match(record["submitted_at"])
            by_file.setdefault(name, []).append(record["submitted_at"])
    for name, stamps in by_file.items():
        assert stamps == sorted(stamps), name
        weeks = Counter(
            "{}-W{:02d}".format(*dt.date.fromisoformat(s[:10]).isocalendar()[:2])
            for s in stamps)
        # every line belongs to its file's week, except one re-sent line (the duplicate)
        assert sum(n for week, n in weeks.items() if week != name[:-6]) <= 1, name


def test_lines_meet_the_contract_except_the_intended_errors(plan, lines):
    validator = jsonschema_rs.validator_for(json.loads(CONTRACT.read_text()))
    intended = {(x.record["annotation_id"], x.record["submitted_at"])
                for x in plan.lines if x.schema_errors}
    found, keywords = set(), Counter()
    for _, _, raw in lines:
        record = _placeable(raw)
        if record is None:
            continue
        errors = list(validator.iter_errors(record))
        if errors:
            found.add((record["annotation_id"], record["submitted_at"]))
            keywords.update(
                (re.sub(r"/\d+", "/*", "/" + "/".join(map(str, e.instance_path))),
                 type(e.kind).__name__) for e in errors)
    assert found == intended
    assert 40 <= len(intended) <= 200
    assert {path for path, _ in keywords} == {"/fields", "/boxes/*/label", "/fields/tags/*"}


def test_contract_errors_a_schema_cannot_state(plan):
    checks = {e: x.record for x in plan.lines for e in x.check_errors}
    assert set(checks) == {"box outside the image", "non-positive box size",
                           "image size differs from the item's first annotation"}
    outside = checks["box outside the image"]
    assert max(b["bbox"][0] + b["bbox"][2] for b in outside["boxes"]) == pytest.approx(330.0)
    assert min(b["bbox"][2] for b in checks["non-positive box size"]["boxes"]) == 0.0
    resized = checks["image size differs from the item's first annotation"]
    assert (resized["image"]["width"], resized["image"]["height"]) == (640, 480)
    earlier = [x.record for x in plan.lines if x.record and x.kind == "annotation"
               and x.record["item_id"] == resized["item_id"]
               and x.record["submitted_at"] < resized["submitted_at"]]
    assert earlier and all(r["image"]["width"] == 320 for r in earlier)
    # every other box lies inside its image, with a positive size
    for x in plan.lines:
        if x.record and not x.check_errors:
            for box in x.record["boxes"]:
                bx, by, bw, bh = box["bbox"]
                assert bw > 0 and bh > 0 and bx >= 0 and by >= 0
                assert bx + bw <= demo.WIDTH + 1 and by + bh <= demo.HEIGHT + 1


def test_correction_and_duplicate(plan):
    correction = next(x for x in plan.lines if x.kind == "correction")
    original = next(x for x in plan.lines if x.kind == "annotation" and x.record
                    and x.record["annotation_id"] == correction.record["annotation_id"])
    assert correction.week > original.week
    assert "weather" not in original.record["fields"] and correction.record["fields"]["weather"]
    duplicate = next(x for x in plan.lines if x.kind == "duplicate")
    twin = next(x for x in plan.lines if x.kind == "annotation" and x.data == duplicate.data)
    assert duplicate.week == twin.week + 1


def test_annotation_ids_unique(plan):
    ids = Counter(x.record["annotation_id"] for x in plan.lines
                  if x.record and x.kind == "annotation")
    assert ids.most_common(1)[0][1] == 1
    assert all(re.fullmatch(r"a-[0-9a-f]{8}", i) for i in ids)


def test_stable_sample_is_double_annotated(plan):
    def in_sample(item_id: str) -> bool:
        digest = hashlib.sha256(("demo" + item_id).encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < 0.10 or item_id in demo.GOLD_ITEMS

    raters: dict[str, set[str]] = {}
    for r in plan.records:
        if r["role"] == "annotator":
            raters.setdefault(r["item_id"], set()).add(r["annotator_id"])
    for scene in plan.scenes:
        assert demo.in_stable_sample(scene.item_id) == in_sample(scene.item_id)
        expected = (2, 3) if in_sample(scene.item_id) else (1,)
        assert len(raters[scene.item_id]) in expected, scene.item_id
    gold = {r["item_id"] for r in plan.records if r["role"] == "gold"}
    assert gold == set(demo.GOLD_ITEMS)


def test_boxes_sit_on_the_drawn_shapes(plan, generated):
    folder = generated[0]
    checked = 0
    ann01 = [r for r in plan.records
             if r["annotator_id"] == "ann-01" and not r.get("prefilled")][:25]
    gold = [r for r in plan.records if r["role"] == "gold"]
    for record in gold + ann01:
        image = Image.open(folder / record["image"]["uri"]).convert("RGB")
        assert image.size == (record["image"]["width"], record["image"]["height"])
        for box in record["boxes"]:
            x, y, w, h = box["bbox"]
            assert image.getpixel((int(x + w / 2), int(y + h / 2))) == \
                demo.LABEL_COLORS[box["label"]], (record["item_id"], box)
            checked += 1
    assert checked > 100


def test_habits_change_when_the_guidelines_do(plan):
    def share(annotator: str, versions: set[str], test) -> float:
        rs = [r for r in plan.records if r["annotator_id"] == annotator
              and r["role"] == "annotator" and r["guideline_version"] in versions
              and not r.get("prefilled")]
        return sum(map(test, rs)) / len(rs)

    no_weather = lambda r: "weather" not in r["fields"]  # noqa: E731
    assert share("ann-04", {"v1", "v2"}, no_weather) > 0.2
    assert share("ann-04", {"v3"}, no_weather) < 0.06
    brands = re.compile(r"(?i)\b(nike|adidas|coca-cola|starbucks|toyota|bmw|mercedes)\b")
    branded = lambda r: bool(brands.search(r["fields"]["caption"]))  # noqa: E731
    assert share("ann-03", {"v1"}, branded) > 0.15
    assert share("ann-03", {"v2", "v3"}, branded) < 0.03
    boxes = lambda r: len(r["boxes"])  # noqa: E731
    sloppy_misses = share("ann-02", {"v1", "v2"}, boxes) < share("ann-02", {"v3"}, boxes)
    assert sloppy_misses

    # stale labels: the late annotators keep the old version for a week
    stale = Counter((r["annotator_id"], r["guideline_version"]) for r in plan.records
                    if r["guideline_version"] != demo.guideline_in_force(
                        dt.datetime.fromisoformat(r["submitted_at"].replace("Z", "+00:00"))))
    assert set(stale) == {("ann-06", "v1"), ("ann-08", "v2")}


def test_rubber_stamping(plan):
    drafts: dict[str, list[bool]] = {}
    for r in plan.records:
        if r.get("prefilled"):
            same = r["draft"]["boxes"] == r["boxes"] and r["draft"]["fields"] == r["fields"]
            drafts.setdefault(r.get("reviewed_by") or r["annotator_id"], []).append(same)
    stamper = drafts.pop(demo.RUBBER_STAMPER)
    assert len(stamper) >= 20 and sum(stamper) / len(stamper) >= 0.95
    assert all(sum(v) / len(v) < 0.6 for v in drafts.values())


def test_committed_config_matches_the_generator():
    config = tomllib.loads(TOML.read_text(encoding="utf-8"))
    assert config["project"] == {"name": "demo", "database": "labelqa.duckdb",
                                 "images": "images", "contract": "contract.schema.json",
                                 "timezone": "UTC"}
    assert tuple(config["labels"]) == demo.LABELS
    assert all(label in words for label, words in config["labels"].items())
    assert config["fields"] == {"caption": "free", "weather": "categorical",
                                "tags": "multilabel"}
    assert config["sample"] == {"rate": demo.SAMPLE_RATE, "salt": demo.SAMPLE_SALT,
                                "pinned": list(demo.GOLD_ITEMS)}
    guidelines = [(g["version"], dt.date.fromisoformat(g["effective"]))
                  for g in config["guideline"]]
    assert tuple(guidelines) == demo.GUIDELINES
    assert all(d.weekday() == 0 for _, d in guidelines)
    assert {p["id"] for p in config["policy"]} >= {
        "no-brands", "caption-length", "no-invented-objects", "unmentioned-objects",
        "hedging"}

    contract = json.loads(CONTRACT.read_text(encoding="utf-8"))
    jsonschema_rs.meta.validate(contract)
    defs = contract["$defs"]
    assert tuple(defs["label"]["enum"]) == demo.LABELS
    assert tuple(defs["weather"]["enum"]) == demo.WEATHERS
    assert tuple(defs["tag"]["enum"]) == demo.TAGS
    assert demo.demo_config_files() == [TOML, CONTRACT]
    assert all(p.is_file() for p in demo.demo_config_files())


def test_rerun_removes_only_its_own_stale_files(tmp_path, monkeypatch):
    (tmp_path / "exports").mkdir()
    (tmp_path / "images").mkdir()
    (tmp_path / "exports" / "2026-W01.jsonl").write_text("{}\n")
    (tmp_path / "images" / "img-999999.png").write_bytes(b"")
    (tmp_path / "images" / "keep.png").write_bytes(b"")
    small = demo.plan_demo(seed=3)
    small.scenes[:] = small.scenes[:5]
    monkeypatch.setattr(demo, "plan_demo", lambda *, seed: small)
    demo.generate_demo(tmp_path, seed=3)
    assert not (tmp_path / "exports" / "2026-W01.jsonl").exists()
    assert not (tmp_path / "images" / "img-999999.png").exists()
    assert (tmp_path / "images" / "keep.png").exists()
    assert len(list((tmp_path / "images").glob("img-*.png"))) == 5
