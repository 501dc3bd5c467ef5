"""Importers: Label Studio, COCO and CVAT exports as real tools write them.

Expected numbers are worked out here from the fixture files themselves (with `json` and
`xml.etree`), independently of the importers.
"""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics.cli import main
from metrics.config import load_config
from metrics.importers import ImportOptions
from metrics.importers.detect import detect_format
from metrics.ingest import Bad, FileUnusable, Record, Skip, check_files, resolve_reader
from metrics.store import connect

REAL = Path(__file__).parent / "fixtures" / "real"
WHEN = "2026-01-05T09:00:00Z"
FLAGS = ["--annotator", "alice", "--submitted-at", WHEN]

CONFIG = """\
[project]
name = "tools"
database = "labelqa.duckdb"
images = "images"
contract = "contract.schema.json"
timezone = "UTC"

[fields]
caption = "free"
weather = "categorical"
tags = "multilabel"
"""

# Permissive about labels and fields (each tool has its own), strict about geometry: a box
# needs a label and four numbers, so a box that cannot be placed is a contract error.
CONTRACT = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["item_id", "annotator_id", "submitted_at", "boxes"],
    "properties": {
        "boxes": {"type": "array", "items": {
            "type": "object", "required": ["label", "bbox"],
            "properties": {"label": {"type": "string"},
                           "bbox": {"type": "array", "items": {"type": "number"},
                                    "minItems": 4, "maxItems": 4}}}},
        "fields": {"type": "object"},
    },
}
FIELD_KINDS = {"caption": "free", "weather": "categorical", "tags": "multilabel"}


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    """A QA project that accepts any tool's labels and fields."""
    root = tmp_path / "tools"
    root.mkdir()
    (root / "labelqa.toml").write_text(CONFIG, encoding="utf-8")
    (root / "contract.schema.json").write_text(json.dumps(CONTRACT), encoding="utf-8")
    return root


def run(capsys, command: str, root: Path, *args) -> tuple[int, dict | str]:
    rc = main([command, *map(str, args), "--project", str(root), "--json"])
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if out.out.strip() else out.err)


def query(root: Path, sql: str, *params) -> list[tuple]:
    con = connect(load_config(root).database, read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def stored_boxes(root: Path) -> list[tuple]:
    rows = query(root, "SELECT label, x, y, w, h FROM boxes ORDER BY ALL")
    return [(r[0], *(round(v, 6) if v is not None else None for v in r[1:])) for r in rows]


def rounded(boxes: list[tuple]) -> list[tuple]:
    return sorted((b[0], *(round(float(v), 6) if v is not None else None for v in b[1:]))
                  for b in boxes)


def field_count(root: Path) -> int:
    return query(root, "SELECT coalesce(sum(len(json_keys(fields))), 0) FROM annotations")[0][0]


def balanced(fs) -> None:
    assert fs.records == fs.loaded + fs.duplicates + fs.quarantined + fs.skipped_records


# -- real exports: Label Studio ----------------------------------------------------------

def ls_expected(path: Path) -> dict:
    tasks = json.loads(path.read_text(encoding="utf-8"))
    exp = {"records": 0, "cancelled": 0, "roles": Counter(), "boxes": [], "n_boxes": 0,
           "fields": 0}
    for task in tasks:
        entries = [(a, "gold" if a.get("ground_truth") else "annotator")
                   for a in task.get("annotations", [])]
        entries += [(p, "model") for p in task.get("predictions", [])]
        for entry, role in entries:
            exp["records"] += 1
            if entry.get("was_cancelled"):
                exp["cancelled"] += 1
                continue
            exp["roles"][role] += 1
            names = set()
            for r in entry["result"]:
                if r["type"] == "rectanglelabels":
                    exp["n_boxes"] += 1
                    v = r["value"]
                    if "original_width" in r:
                        w, h = r["original_width"], r["original_height"]
                        exp["boxes"].append((v["rectanglelabels"][0], v["x"] * w / 100,
                                             v["y"] * h / 100, v["width"] * w / 100,
                                             v["height"] * h / 100))
                    else:
                        exp["boxes"].append((v["rectanglelabels"][0], None, None, None, None))
                elif r["type"] in ("textarea", "choices"):
                    names.add(r["from_name"])
            exp["fields"] += len(names)
    return exp


@pytest.mark.parametrize("name", ["evalme_test_bbox_5tasks_3annotators.json",
                                  "converter_test_export_yolo_data.json"])
def test_labelstudio_real_exports(tools, capsys, name):
    path = REAL / "labelstudio" / name
    exp = ls_expected(path)
    rc, out = run(capsys, "ingest", tools, path)
    assert rc == 0, out
    f = out["files"][0]
    assert f["format"] == "labelstudio"
    assert (f["records"], f["loaded"], f["skipped_records"], f["quarantined"]) == (
        exp["records"], exp["records"] - exp["cancelled"], exp["cancelled"], 0)
    assert f["boxes"] == exp["n_boxes"]
    assert f["by_role"] == dict(exp["roles"])
    assert f["skipped"] == ({"cancelled": exp["cancelled"]} if exp["cancelled"] else {})
    assert f["schema_error_annotations"] == 0
    assert stored_boxes(tools) == rounded(exp["boxes"])
    assert field_count(tools) == exp["fields"]


def test_evalme_identity_annotators_and_predictions(tools, capsys):
    path = REAL / "labelstudio" / "evalme_test_bbox_5tasks_3annotators.json"
    tasks = json.loads(path.read_text(encoding="utf-8"))
    assert run(capsys, "ingest", tools, path)[0] == 0
    rows = query(tools, "SELECT annotation_id, item_id, annotator_id, role FROM annotations")
    expected = set()
    for t in tasks:
        item = t["data"]["image"].rsplit("/", 1)[1]
        for a in t["annotations"]:
            expected.add((f"ls:{t['project']}:{a['id']}", item, a["completed_by"]["email"],
                          "annotator"))
        for p in t["predictions"]:
            expected.add((f"ls:{t['project']}:p{p['id']}", item,
                          f"model:{p['model_version']}", "model"))
    assert set(rows) == expected
    # created_at is the submission time
    first = tasks[0]["annotations"][0]
    got = query(tools, "SELECT submitted_at FROM annotations WHERE annotation_id = ?",
                f"ls:{tasks[0]['project']}:{first['id']}")[0][0]
    assert got == dt.datetime.fromisoformat(first["created_at"])
    # the same file again changes nothing
    rc, out = run(capsys, "ingest", tools, path)
    assert rc == 0 and out["files"][0]["already_ingested"]


def test_labelstudio_item_id_tool_uses_task_ids(tools, capsys):
    path = REAL / "labelstudio" / "converter_test_export_yolo_data.json"
    tasks = json.loads(path.read_text(encoding="utf-8"))
    assert run(capsys, "ingest", tools, path, "--item-id", "tool")[0] == 0
    items = {r[0] for r in query(tools, "SELECT item_id FROM annotations")}
    assert items == {str(t["id"]) for t in tasks}
    annotators = Counter(r[0] for r in query(tools, "SELECT annotator_id FROM annotations"))
    assert annotators == Counter(str(a["completed_by"]) for t in tasks for a in t["annotations"])


def test_doclang_needs_flags_and_unplaceable_boxes_are_contract_errors(tools, capsys):
    path = REAL / "labelstudio" / "sdk_test_export_doclang_rect_textarea.json"
    rc, err = run(capsys, "ingest", tools, path)
    assert rc == 2 and "--annotator" in err and str(path) in err and "Traceback" not in err
    rc, err = run(capsys, "check", tools, path, "--annotator", "alice")
    assert rc == 2 and "--submitted-at" in err
    assert query(tools, "SELECT count(*) FROM exports") == [(0,)]     # nothing written

    exp = ls_expected(path)
    rc, out = run(capsys, "ingest", tools, path, *FLAGS)
    assert rc == 0, out
    f = out["files"][0]
    assert (f["records"], f["loaded"], f["skipped_records"]) == (
        exp["records"], exp["records"] - exp["cancelled"], exp["cancelled"]) == (3, 2, 1)
    assert f["skipped"] == {"cancelled": 1}
    assert f["boxes"] == exp["n_boxes"] == 2
    # no original size: every annotation with a box has a contract error; none is matched
    assert f["schema_error_annotations"] == 2
    assert query(tools, "SELECT DISTINCT pointer, keyword FROM contract_errors") == [
        ("/boxes/*/bbox", "type")]
    assert query(tools, "SELECT count(*) FROM boxes WHERE matchable") == [(0,)]
    assert field_count(tools) == exp["fields"] == 1
    assert {r[0] for r in query(tools, "SELECT annotator_id FROM annotations")} == {"alice"}


# -- real exports: CVAT ---------------------------------------------------------------------

def cvat_expected(path: Path) -> dict:
    images = ET.parse(path).getroot().findall("image")
    boxes = [(b.get("label"), float(b.get("xtl")), float(b.get("ytl")),
              float(b.get("xbr")) - float(b.get("xtl")),
              float(b.get("ybr")) - float(b.get("ytl")))
             for im in images for b in im.findall("box")]
    skipped = Counter(c.tag for im in images for c in im if c.tag not in ("box", "tag"))
    items = [f"{im.get('subset')}/{im.get('name')}" if im.get("subset") else im.get("name")
             for im in images]
    return {"records": len(images), "boxes": boxes, "skipped": dict(skipped),
            "fields": sum(1 for im in images if im.findall("tag")), "items": items}


@pytest.mark.parametrize("name", ["cvat_docs_xml_format_annotation_example.xml",
                                  "datumaro_cvat_for_images_export_project_annotations.xml",
                                  "datumaro_cvat_for_images_export_task_train.xml"])
def test_cvat_real_exports(tools, capsys, name):
    path = REAL / "cvat" / name
    exp = cvat_expected(path)
    rc, err = run(capsys, "ingest", tools, path)
    assert rc == 2 and "--annotator" in err     # none of them names an assignee
    rc, out = run(capsys, "ingest", tools, path, *FLAGS)
    assert rc == 0, out
    f = out["files"][0]
    assert f["format"] == "cvat"
    assert (f["records"], f["loaded"], f["quarantined"]) == (exp["records"],) * 2 + (0,)
    assert f["boxes"] == len(exp["boxes"])
    assert f["skipped"] == exp["skipped"]
    assert stored_boxes(tools) == rounded(exp["boxes"])
    assert field_count(tools) == exp["fields"]
    items = sorted(r[0] for r in query(tools, "SELECT item_id FROM annotations"))
    assert items == sorted(exp["items"])


def test_cvat_subsets_attributes_and_dumped_date(tools, capsys):
    project = REAL / "cvat" / "datumaro_cvat_for_images_export_project_annotations.xml"
    assert run(capsys, "ingest", tools, project, "--annotator", "bob")[0] == 0
    # one image name in three subsets: three items, never versions of each other
    rows = query(tools, "SELECT item_id, annotation_id FROM annotations ORDER BY 1")
    assert len({r[0] for r in rows}) == len({r[1] for r in rows}) == 6
    assert ("Test/img0.jpg", "cvat:p3:Test/t39/0") in rows
    attrs = query(tools, "SELECT DISTINCT attributes FROM boxes")
    assert [json.loads(a[0]) for a in attrs] == [
        {"occluded": True, "a1": True, "a2": "v3", "a3": "0003", "a4": 2.4}]
    # time from <dumped> when --submitted-at is not given
    when = query(tools, "SELECT DISTINCT submitted_at FROM annotations")
    assert when == [(dt.datetime.fromisoformat("2023-01-17 01:38:22.055780+00:00"),)]

    docs = REAL / "cvat" / "cvat_docs_xml_format_annotation_example.xml"
    assert run(capsys, "ingest", tools, docs, "--annotator", "bob")[0] == 0
    tags = query(tools, "SELECT fields FROM annotations WHERE item_id = 'filename000.jpg'")
    assert json.loads(tags[0][0]) == {"tags": ["good_frame"]}


def test_cvat_assignee_names_the_annotator(tools, capsys):
    text = (REAL / "cvat" / "cvat_docs_xml_format_annotation_example.xml").read_text()
    text = text.replace("</owner>", "</owner><assignee><username>carol</username>"
                        "<email>c@x.org</email></assignee>", 1)
    path = tools / "assigned.xml"
    path.write_text(text)
    assert run(capsys, "ingest", tools, path)[0] == 0
    assert query(tools, "SELECT annotator_id FROM annotations") == [("carol",)]


# -- real exports: COCO ----------------------------------------------------------------------

def coco_expected(path: Path) -> dict:
    doc = json.loads(path.read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in doc["categories"]}

    def crowd(v) -> bool:
        return str(v).strip().lower() in ("1", "true")

    objs = [a for a in doc["annotations"] if not crowd(a.get("iscrowd", 0))]
    skipped = Counter()
    skipped["crowd"] = len(doc["annotations"]) - len(objs)
    skipped["segmentation"] = sum(1 for a in objs if a.get("segmentation"))
    return {"records": len(doc["images"]),
            "boxes": [(names[a["category_id"]], *a["bbox"]) for a in objs],
            "skipped": {k: v for k, v in skipped.items() if v},
            "items": sorted(im["file_name"] for im in doc["images"])}


@pytest.mark.parametrize("name", ["datumaro_coco_instances_val.json",
                                  "datumaro_coco_instances_train.json",
                                  "labelstudio_sdk_coco_import_input_cocoannotator.json"])
def test_coco_real_exports(tools, capsys, name):
    path = REAL / "coco" / name
    exp = coco_expected(path)
    rc, err = run(capsys, "check", tools, path)
    assert rc == 2 and "--annotator" in err
    rc, err = run(capsys, "check", tools, path, "--annotator", "alice")
    assert rc == 2 and "--submitted-at" in err
    rc, out = run(capsys, "ingest", tools, path, *FLAGS)
    assert rc == 0, out
    f = out["files"][0]
    assert f["format"] == "coco"
    assert (f["records"], f["loaded"], f["quarantined"]) == (exp["records"],) * 2 + (0,)
    assert f["boxes"] == len(exp["boxes"])
    assert f["skipped"] == exp["skipped"]
    assert f["schema_error_annotations"] == 0
    assert stored_boxes(tools) == rounded(exp["boxes"])
    assert sorted(r[0] for r in query(tools, "SELECT item_id FROM annotations")) == exp["items"]


def test_coco_non_contiguous_categories_and_string_iscrowd(tools, capsys):
    val = REAL / "coco" / "datumaro_coco_instances_val.json"
    assert run(capsys, "ingest", tools, val, *FLAGS)[0] == 0
    # category ids 1, 2, 4: the crowd region (id 2) is skipped, the box keeps its attributes
    assert query(tools, "SELECT label, attributes FROM boxes") == [("a", '{"x":1,"y":"hello"}')]
    assert query(tools, "SELECT annotation_id, annotator_id FROM annotations") == [
        ("coco:alice:40", "alice")]
    doc = json.loads(val.read_text())
    for ann in doc["annotations"]:
        ann["iscrowd"] = "true" if ann["iscrowd"] else "false"
    path = tools / "strings.json"
    path.write_text(json.dumps(doc))
    rc, out = run(capsys, "check", tools, path, *FLAGS)
    assert rc == 0 and out["skipped"] == {"crowd": 1, "segmentation": 1}


# -- Label Studio details ----------------------------------------------------------------------

def _rect(rid, label, x, y, w, h, *, size=(200, 100), rotation=0, score=None):
    r = {"id": rid, "type": "rectanglelabels", "from_name": "label", "to_name": "image",
         "original_width": size[0], "original_height": size[1], "image_rotation": 0,
         "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation,
                   "rectanglelabels": [label]}}
    if score is not None:
        r["score"] = score
    return r


def _read(path: Path, fmt: str = "auto", **options) -> list:
    options.setdefault("field_kinds", FIELD_KINDS)
    _name, reader = resolve_reader(path, fmt, ImportOptions(**options))
    return list(reader(path, None))


def test_labelstudio_predictions_drafts_gold_fields_and_rotation(tmp_path):
    task = {
        "id": 9, "project": 4, "data": {"image": "s3://bucket/photos/cat.png"},
        "predictions": [{"id": 5, "model_version": "yolo-1", "created_at": WHEN,
                         "result": [_rect("p1", "car", 10, 10, 20, 20, score=0.9)]}],
        "annotations": [
            {"id": 1, "completed_by": {"id": 3, "email": "ann@x.org"}, "created_at": WHEN,
             "parent_prediction": 5, "ground_truth": True,
             "result": [_rect("r1", "car", 10, 10, 20, 20),
                        {"id": "r1", "type": "textarea", "from_name": "plate",
                         "value": {"text": ["AB 123"]}},
                        {"type": "textarea", "from_name": "caption",
                         "value": {"text": ["A car.", "Parked."]}},
                        {"type": "choices", "from_name": "weather",
                         "value": {"choices": ["sunny"]}},
                        {"type": "choices", "from_name": "tags",
                         "value": {"choices": ["street"]}},
                        {"type": "polygonlabels", "from_name": "poly",
                         "value": {"points": [[1, 1], [2, 2], [3, 1]]}},
                        _rect("r2", "bus", 50, 50, 10, 20, rotation=90)]},
            {"id": 2, "completed_by": 7, "created_at": WHEN, "was_cancelled": True,
             "result": []},
        ],
    }
    path = tmp_path / "ls.json"
    path.write_text(json.dumps([task], indent=2))
    events = _read(path)
    records = {e.obj["role"]: e for e in events if isinstance(e, Record)}
    skips = Counter()
    for e in events:
        if isinstance(e, Skip):
            skips[(e.kind, e.record)] += e.count
    assert skips == {("cancelled", True): 1, ("polygon", False): 1, ("rotation", False): 1}
    gold, model = records["gold"].obj, records["model"].obj
    assert gold["annotation_id"] == "ls:4:1" and model["annotation_id"] == "ls:4:p5"
    assert gold["item_id"] == model["item_id"] == "cat.png"
    assert gold["annotator_id"] == "ann@x.org" and model["annotator_id"] == "model:yolo-1"
    assert gold["fields"] == {"caption": "A car.\nParked.", "weather": "sunny",
                              "tags": ["street"]}
    car, bus = gold["boxes"]
    assert car == {"label": "car", "bbox": [20.0, 10.0, 40.0, 20.0],
                   "attributes": {"plate": "AB 123"}}
    # 20 x 20 px at (100, 50) turned 90 degrees clockwise about its top-left corner
    assert bus["bbox"] == pytest.approx([80.0, 50.0, 20.0, 20.0])
    assert bus["attributes"] == {"rotation": 90}
    assert gold["prefilled"] is True
    assert gold["draft"] == {"boxes": model["boxes"], "fields": {}}
    assert model["boxes"][0]["attributes"] == {"score": 0.9}
    # lines are where each entry starts in the file
    text = path.read_text().splitlines()
    assert text[records["gold"].line - 1].strip() == "{"
    assert '"id": 1' in text[records["gold"].line]


def test_labelstudio_json_min(tools, capsys):
    entries = [
        {"image": "/data/upload/1/a.jpg", "id": 1,
         "label": [{"x": 10, "y": 20, "width": 30, "height": 40, "rotation": 0,
                    "rectanglelabels": ["car"], "original_width": 100,
                    "original_height": 50}],
         "caption": "A car.", "weather": "sunny", "tags": {"choices": ["street", "day"]},
         "annotator": "ann@x.org", "annotation_id": 11, "created_at": WHEN,
         "updated_at": WHEN, "lead_time": 3.5},
        {"image": "/data/upload/1/b.jpg", "id": 2, "annotator": 4, "annotation_id": 12,
         "created_at": WHEN, "tags": "night", "source": "batch 3"},
        {"image": "/data/upload/1/c.jpg", "id": 3, "annotator": {}, "annotation_id": None,
         "created_at": None},
    ]
    path = tools / "min.json"
    path.write_text(json.dumps(entries, indent=2))
    assert detect_format(path) == "labelstudio"
    rc, out = run(capsys, "ingest", tools, path)
    assert rc == 0, out
    assert (out["records"], out["loaded"], out["skipped"]) == (3, 2, {"unannotated": 1})
    rows = query(tools, "SELECT annotation_id, item_id, annotator_id, fields FROM annotations "
                 "ORDER BY 1")
    assert [(r[0], r[1], r[2], json.loads(r[3])) for r in rows] == [
        ("ls:_:11", "a.jpg", "ann@x.org",
         {"caption": "A car.", "weather": "sunny", "tags": ["street", "day"]}),
        ("ls:_:12", "b.jpg", "4", {"tags": ["night"]}),     # "source" is task data
    ]
    assert stored_boxes(tools) == [("car", 10.0, 10.0, 30.0, 20.0)]


def test_labelstudio_projects_never_collide(tools, capsys):
    def export(project: int) -> Path:
        path = tools / f"project-{project}.json"
        path.write_text(json.dumps([{"id": 1, "project": project, "data": {"image": "a.jpg"},
                                     "annotations": [{"id": 1, "completed_by": project,
                                                      "created_at": WHEN, "result": []}]}]))
        return path

    rc, out = run(capsys, "ingest", tools, export(1), export(2))
    assert rc == 0 and out["loaded"] == 2 and out["new_versions"] == 0
    assert query(tools, "SELECT count(DISTINCT annotation_id) FROM annotations") == [(2,)]


def test_malformed_json_names_file_line_and_column(tools, capsys):
    path = tools / "broken.json"
    path.write_text('[\n  {"id": 1, "annotations": [],\n   "data": {"image": "a.jpg"}}\n  x\n]')
    rc, err = run(capsys, "check", tools, path)
    assert rc == 2 and str(path) in err and "line 4, column 3" in err


def test_detection_reads_content_not_names(tools):
    cases = {"a.xml": REAL / "labelstudio" / "converter_test_export_yolo_data.json",
             "b.json": REAL / "cvat" / "datumaro_cvat_for_images_export_task_train.xml",
             "c.jsonl": REAL / "coco" / "datumaro_coco_instances_train.json"}
    for name, src in cases.items():
        (tools / name).write_bytes(src.read_bytes())
    assert [detect_format(tools / n) for n in cases] == ["labelstudio", "cvat", "coco"]
    (tools / "d.json").write_text('{"item_id": "a", "annotator_id": "b"}\n')
    (tools / "e.json").write_text('{"id": 3, "annotations": [], "data": {"image": "x.png"}}')
    assert detect_format(tools / "d.json") == "native"
    assert detect_format(tools / "e.json") == "labelstudio"


# -- COCO captions -------------------------------------------------------------------------------

def test_coco_instances_and_captions_merge_by_image(tools, capsys):
    images = [{"id": 1, "file_name": "train/one.jpg", "width": 100, "height": 80},
              {"id": 2, "file_name": "train/two.jpg", "width": 100, "height": 80},
              {"id": 3, "file_name": "train/three.jpg", "width": 100, "height": 80}]
    instances = {"images": images, "categories": [{"id": 3, "name": "car"}],
                 "annotations": [{"id": 7, "image_id": 1, "category_id": 3,
                                  "bbox": [1, 2, 3, 4], "iscrowd": 0}]}
    captions = {"images": images, "annotations": [
        {"id": 20 + i, "image_id": 1, "caption": f"Caption {i}."} for i in (3, 1, 2)] + [
        {"id": 30, "image_id": 2, "caption": "Only one."}]}
    ipath, cpath = tools / "instances_x.json", tools / "captions_x.json"
    ipath.write_text(json.dumps(instances))
    cpath.write_text(json.dumps(captions))
    rc, out = run(capsys, "ingest", tools, ipath, cpath, *FLAGS)
    assert rc == 0, out
    assert len(out["files"]) == 1 and out["files"][0]["path"] == f"{ipath} + {cpath}"
    # image 1: three captions -> alice#1..#3 (each with the box); 2: one; 3: none
    assert (out["records"], out["loaded"], out["boxes"]) == (5, 5, 3)
    rows = query(tools, "SELECT item_id, annotator_id, annotation_id, fields, n_boxes "
                 "FROM annotations ORDER BY 1, 2")
    assert [(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows] == [
        ("one.jpg", "alice#1", "coco:alice#1:1", {"caption": "Caption 1."}, 1),
        ("one.jpg", "alice#2", "coco:alice#2:1", {"caption": "Caption 2."}, 1),
        ("one.jpg", "alice#3", "coco:alice#3:1", {"caption": "Caption 3."}, 1),
        ("three.jpg", "alice", "coco:alice:3", {}, 0),
        ("two.jpg", "alice", "coco:alice:2", {"caption": "Only one."}, 0),
    ]
    # the pair again is the same export
    rc, out = run(capsys, "ingest", tools, ipath, cpath, *FLAGS)
    assert rc == 0 and out["files"][0]["already_ingested"]


def test_coco_orphan_annotation_is_quarantined(tools, capsys):
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
           "categories": [{"id": 1, "name": "car"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]},
                           {"id": 2, "image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1]}]}
    path = tools / "orphan.json"
    path.write_text(json.dumps(doc, indent=1))
    rc, out = run(capsys, "check", tools, path, *FLAGS)
    assert rc == 1
    assert (out["records"], out["loaded"], out["quarantined"]) == (2, 1, 1)


# -- hostile XML ------------------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE annotations [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<annotations><image id="0" name="&lol9;.jpg" width="10" height="10"/></annotations>
"""
EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE annotations [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<annotations><image id="0" name="a.jpg" width="10" height="10">
<tag label="&secret;"/></image></annotations>
"""


@pytest.mark.parametrize("content", [BILLION_LAUGHS, EXTERNAL_ENTITY],
                         ids=["billion-laughs", "external-entity"])
@pytest.mark.parametrize("fmt", ["auto", "cvat"])
def test_hostile_xml_is_refused_and_nothing_written(tools, capsys, content, fmt):
    path = tools / "hostile.xml"
    path.write_text(content)
    for command in ("check", "ingest"):
        rc = main([command, str(path), "--project", str(tools), "--format", fmt, *FLAGS])
        err = capsys.readouterr().err
        assert rc == 2 and str(path) in err and "refused as unsafe XML" in err
        assert "DOCTYPE" in err and "Traceback" not in err
    if load_config(tools).database.exists():
        assert query(tools, "SELECT count(*) FROM exports") == [(0,)]
        assert query(tools, "SELECT count(*) FROM annotations") == [(0,)]


def test_not_cvat_xml(tools, capsys):
    path = tools / "voc.xml"
    path.write_text("<annotation><object><name>car</name></object></annotation>")
    rc, err = run(capsys, "check", tools, path, *FLAGS)
    assert rc == 2 and "not a CVAT for images 1.1 export" in err


# -- round trip: native -> tool format -> native ---------------------------------------------

NATIVE = [
    {"item_id": f"img-{i}.png", "annotator_id": who, "submitted_at": "2026-01-06T10:00:00+00:00",
     "image": {"uri": f"images/img-{i}.png", "width": 640, "height": 480},
     "boxes": [{"label": label, "bbox": [10.5 + 7 * i + j, 20.25 + 3 * j, 33.3 + j, 41.7]}
               for j, label in enumerate(labels)],
     "fields": {"caption": f"{who} saw image {i}.", "weather": weather, "tags": tags}}
    for i, (who, labels, weather, tags) in enumerate([
        ("alice", ["car", "person"], "sunny", ["street"]),
        ("bob", ["car"], "rainy", ["street", "night"]),
        ("alice", [], "cloudy", ["indoor"]),
        ("alice", ["bicycle", "car", "car"], "sunny", ["street", "day"]),
    ])
]


def to_labelstudio(records: list[dict]) -> list[dict]:
    tasks = []
    for n, rec in enumerate(records, start=1):
        w, h = rec["image"]["width"], rec["image"]["height"]
        result = [_rect(f"r{j}", b["label"], b["bbox"][0] / w * 100, b["bbox"][1] / h * 100,
                        b["bbox"][2] / w * 100, b["bbox"][3] / h * 100, size=(w, h))
                  for j, b in enumerate(rec["boxes"])]
        f = rec["fields"]
        result += [
            {"type": "textarea", "from_name": "caption", "value": {"text": [f["caption"]]}},
            {"type": "choices", "from_name": "weather", "value": {"choices": [f["weather"]]}},
            {"type": "choices", "from_name": "tags", "value": {"choices": f["tags"]}},
        ]
        tasks.append({"id": n, "project": 1, "data": {"image": f"/data/upload/1/{rec['item_id']}"},
                      "annotations": [{"id": n, "completed_by": {"email": rec["annotator_id"]},
                                       "created_at": rec["submitted_at"], "result": result}]})
    return tasks


CATEGORY_IDS = {"car": 3, "person": 7, "bicycle": 11}       # not contiguous


def to_coco(records: list[dict]) -> tuple[dict, dict]:
    images, objects, captions = [], [], []
    for n, rec in enumerate(records, start=1):
        images.append({"id": n * 10, "file_name": f"val/{rec['item_id']}",
                       "width": rec["image"]["width"], "height": rec["image"]["height"]})
        for b in rec["boxes"]:
            objects.append({"id": len(objects) + 1, "image_id": n * 10, "iscrowd": "0",
                            "category_id": CATEGORY_IDS[b["label"]], "bbox": b["bbox"],
                            "area": b["bbox"][2] * b["bbox"][3], "segmentation": []})
        captions.append({"id": n, "image_id": n * 10, "caption": rec["fields"]["caption"]})
    categories = [{"id": i, "name": name} for name, i in CATEGORY_IDS.items()]
    return ({"images": images, "annotations": objects, "categories": categories},
            {"images": images, "annotations": captions})


def to_cvat(records: list[dict]) -> str:
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    meta = ET.SubElement(root, "meta")
    task = ET.SubElement(meta, "task")
    ET.SubElement(task, "id").text = "12"
    ET.SubElement(ET.SubElement(task, "assignee"), "username").text = "alice"
    ET.SubElement(meta, "dumped").text = "2026-01-06 10:00:00.000000+00:00"
    for n, rec in enumerate(records):
        img = ET.SubElement(root, "image", id=str(n), name=f"frames/{rec['item_id']}",
                            width=str(rec["image"]["width"]),
                            height=str(rec["image"]["height"]))
        for b in rec["boxes"]:
            x, y, w, h = b["bbox"]
            box = ET.SubElement(img, "box", label=b["label"], occluded="0", xtl=repr(x),
                                ytl=repr(y), xbr=repr(x + w), ybr=repr(y + h), z_order="0")
            ET.SubElement(box, "attribute", name="note").text = "a <note> & more"
        for tag in rec["fields"]["tags"]:
            ET.SubElement(img, "tag", label=tag, source="manual")
    return ET.tostring(root, encoding="unicode")


def assert_same(native: dict, got: dict, fields: tuple[str, ...]) -> None:
    assert got["item_id"] == native["item_id"]
    if native["boxes"] or "width" in got["image"]:    # Label Studio has sizes on regions only
        assert got["image"]["width"] == native["image"]["width"]
    assert [b["label"] for b in got["boxes"]] == [b["label"] for b in native["boxes"]]
    for a, b in zip(got["boxes"], native["boxes"], strict=True):
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-9)
    assert {k: got["fields"].get(k) for k in fields} == {k: native["fields"][k] for k in fields}


def _records(events: list) -> list[dict]:
    assert not [e for e in events if isinstance(e, Bad)]
    return [e.obj for e in events if isinstance(e, Record)]


def test_round_trip_labelstudio(tmp_path):
    path = tmp_path / "ls.json"
    path.write_text(json.dumps(to_labelstudio(NATIVE)))
    got = _records(_read(path))
    assert len(got) == len(NATIVE)
    for native, rec in zip(NATIVE, got, strict=True):
        assert rec["annotator_id"] == native["annotator_id"]
        assert_same(native, rec, ("caption", "weather", "tags"))


def test_round_trip_coco(tmp_path):
    alice = [r for r in NATIVE if r["annotator_id"] == "alice"]
    instances, captions = to_coco(alice)
    ipath, cpath = tmp_path / "instances_val.json", tmp_path / "captions_val.json"
    ipath.write_text(json.dumps(instances, indent=2))
    cpath.write_text(json.dumps(captions, indent=2))
    got = _records(_read(ipath, annotator="alice", submitted_at=WHEN, merge=(cpath,)))
    for native, rec in zip(alice, got, strict=True):
        assert rec["annotator_id"] == "alice"
        assert_same(native, rec, ("caption",))        # COCO carries no weather or tags


def test_round_trip_cvat(tmp_path):
    alice = [r for r in NATIVE if r["annotator_id"] == "alice"]
    path = tmp_path / "cvat.xml"
    path.write_text(to_cvat(alice))
    got = _records(_read(path))
    for native, rec in zip(alice, got, strict=True):
        assert rec["annotator_id"] == "alice"                 # the task's assignee
        assert rec["annotation_id"].startswith("cvat:t12:")
        assert_same(native, rec, ("tags",))                   # CVAT carries tags only
        assert all(b["attributes"] == {"occluded": False, "note": "a <note> & more"}
                   for b in rec["boxes"])


# -- property tests: random well-formed documents never crash -----------------------------

_names = st.sampled_from(["a.jpg", "dir/b.png", "https://x.org/c.jpeg?sig=1",
                          "/data/local-files/?d=imgs/d.png", "", "e"])
_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=8)
_num = st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.integers(-10, 5000), st.none(),
                 _text)
_json = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | _text,
                     lambda kids: st.lists(kids, max_size=3)
                     | st.dictionaries(_text, kids, max_size=3), max_leaves=6)
_when = st.sampled_from(["2026-01-05T10:00:00Z", "2026-01-06 11:00:00+02:00", "not a date"])

_ls_result = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["rectanglelabels", "rectangle"]), "from_name": _text,
         "value": st.fixed_dictionaries({"x": _num, "y": _num, "width": _num, "height": _num,
                                         "rotation": st.one_of(st.just(0), _num),
                                         "rectanglelabels": st.lists(_text, max_size=2)})},
        optional={"original_width": _num, "original_height": _num,
                  "id": st.sampled_from(["r1", "r2"]), "image_rotation": st.just(90)}),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["textarea", "choices", "taxonomy", "rating", "labels"]),
         "from_name": st.sampled_from(["caption", "weather", "tags", "other"]),
         "value": st.fixed_dictionaries({}, optional={
             "text": st.lists(_text, max_size=2), "choices": st.lists(_text, max_size=3),
             "taxonomy": st.lists(st.lists(_text, max_size=2), max_size=2),
             "rating": _num, "labels": st.lists(_text, max_size=2), "start": st.just(0)})},
        optional={"id": st.sampled_from(["r1", "r2"])}),
    st.fixed_dictionaries({"type": st.sampled_from(["polygonlabels", "keypointlabels",
                                                    "brushlabels", "relation", "odd"]),
                           "value": st.dictionaries(_text, _json, max_size=2)}),
    _json,
)
_ls_annotation = st.one_of(st.fixed_dictionaries(
    {"id": st.integers(0, 30), "result": st.one_of(st.lists(_ls_result, max_size=5), _json)},
    optional={"completed_by": st.one_of(st.integers(0, 5),
                                        st.fixed_dictionaries({"email": _text}), st.none()),
              "created_at": _when, "was_cancelled": st.booleans(),
              "ground_truth": st.booleans(),
              "parent_prediction": st.one_of(st.none(), st.integers(0, 3))}), _json)
_ls_prediction = st.fixed_dictionaries(
    {"id": st.integers(0, 3), "result": st.lists(_ls_result, max_size=3)},
    optional={"model_version": _text, "created_at": _when})
_ls_task = st.fixed_dictionaries(
    {"id": st.integers(0, 9), "data": st.fixed_dictionaries({"image": _names})},
    optional={"annotations": st.lists(_ls_annotation, max_size=3),
              "predictions": st.lists(_ls_prediction, max_size=2),
              "drafts": st.lists(_json, max_size=1), "project": st.integers(1, 3)})
_ls_min = st.fixed_dictionaries(
    {"id": st.integers(0, 9), "image": _names,
     "annotation_id": st.one_of(st.none(), st.integers(0, 9)),
     "annotator": st.one_of(_text, st.integers(0, 3)), "created_at": _when},
    optional={"label": st.lists(st.fixed_dictionaries(
        {"x": _num, "y": _num, "width": _num, "height": _num,
         "rectanglelabels": st.lists(_text, max_size=1)},
        optional={"original_width": _num, "original_height": _num}), max_size=2),
        "caption": _json, "weather": st.one_of(_text, st.fixed_dictionaries(
            {"choices": st.lists(_text, max_size=2)})), "tags": st.lists(_text, max_size=3)})

_PROPS = settings(max_examples=40, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture,
                                         HealthCheck.too_slow])


def _check(root: Path, path: Path, fmt: str):
    options = ImportOptions(annotator="alice", submitted_at=WHEN)
    try:
        fs = check_files(load_config(root), [path], fmt=fmt, progress=False,
                         options=options).files[0]
    except FileUnusable as exc:
        assert "empty: no records" in exc.problem
        return None
    balanced(fs)
    return fs


@_PROPS
@given(tasks=st.lists(st.one_of(_ls_task, _ls_min), max_size=4),
       indent=st.sampled_from([None, 1]))
def test_random_labelstudio_documents_never_crash(tools, tasks, indent):
    path = tools / "fuzz.json"
    path.write_text(json.dumps(tasks, indent=indent))
    fs = _check(tools, path, "auto")
    expected = 0
    for t in tasks:
        if "annotations" in t or "predictions" in t:
            expected += len(t.get("annotations", [])) + len(t.get("predictions", []))
        else:
            expected += 1
    assert (fs.records if fs else 0) == expected
    if fs is not None:
        assert fs.format == "labelstudio"


_coco_object = st.fixed_dictionaries(
    {"id": st.integers(0, 99), "image_id": st.integers(0, 4), "category_id": st.integers(0, 5),
     "bbox": st.one_of(st.lists(_num, max_size=5), _json)},
    optional={"iscrowd": st.sampled_from([0, 1, "0", "1", "false", "true", True, None, "x"]),
              "segmentation": st.one_of(st.lists(st.lists(st.floats(0, 9), max_size=6),
                                                 max_size=2), st.just({"counts": [1, 2]})),
              "attributes": _json, "score": _num})
_coco_caption = st.fixed_dictionaries({"id": st.integers(0, 99), "image_id": st.integers(0, 4),
                                       "caption": _text})
_coco_image = st.fixed_dictionaries(
    {"id": st.integers(0, 3), "file_name": _names},
    optional={"width": _num, "height": _num})


@_PROPS
@given(images=st.lists(st.one_of(_coco_image, _json), max_size=4),
       anns=st.lists(st.one_of(_coco_object, _coco_caption, _json), max_size=6),
       indent=st.sampled_from([None, 2]))
def test_random_coco_documents_never_crash(tools, images, anns, indent):
    doc = {"info": {}, "images": images, "annotations": anns,
           "categories": [{"id": 1, "name": "car"}, {"id": 4, "name": "person"}]}
    path = tools / "fuzz_coco.json"
    path.write_text(json.dumps(doc, indent=indent))
    fs = _check(tools, path, "auto")
    # independently: records = images (one per caption when several) + every entry that
    # cannot be placed (not an object, a repeated image id, an unknown image id)
    def image_key(value):
        if isinstance(value, bool) or value is None or value == "":
            return None
        if isinstance(value, str) and value.isascii() and value.isdigit():
            return int(value)
        return value if isinstance(value, (int, str)) else None

    ids = [image_key(im.get("id")) for im in images if isinstance(im, dict)]
    unplaced = len(images) - len(set(ids) - {None})
    ids = set(ids) - {None}
    captions = Counter()
    for a in anns:
        if not isinstance(a, dict) or image_key(a.get("image_id")) not in ids:
            unplaced += 1
        elif "caption" in a and "bbox" not in a:
            captions[a["image_id"]] += 1
    expected = unplaced + sum(max(1, captions[i]) for i in ids)
    assert (fs.records if fs else 0) == expected


_cvat_child = st.one_of(
    st.tuples(st.just("box"), st.fixed_dictionaries(
        {"label": _text, "xtl": _num.map(str), "ytl": _num.map(str), "xbr": _num.map(str),
         "ybr": _num.map(str)},
        optional={"occluded": st.sampled_from(["0", "1"]), "rotation": _num.map(str)})),
    st.tuples(st.just("tag"), st.fixed_dictionaries({"label": _text})),
    st.tuples(st.sampled_from(["polygon", "polyline", "points", "mask", "skeleton", "odd"]),
              st.fixed_dictionaries({"label": _text})),
)
_cvat_image = st.fixed_dictionaries(
    {"name": st.sampled_from(["a.jpg", "dir/b.png", "c"]),
     "children": st.lists(_cvat_child, max_size=4)},
    optional={"width": _num.map(str), "subset": st.sampled_from(["Train", "Test"])})


@_PROPS
@given(images=st.lists(_cvat_image, max_size=4),
       attr=st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=6))
def test_random_cvat_documents_never_crash(tools, images, attr):
    root = ET.Element("annotations")
    ET.SubElement(root, "meta")
    skipped = Counter()
    for n, spec in enumerate(images):
        img = ET.SubElement(root, "image", {"id": str(n), **{
            k: v for k, v in spec.items() if k != "children"}})
        for tag, attrs in spec["children"]:
            child = ET.SubElement(img, tag, {k: str(v) for k, v in attrs.items()})
            if tag == "box":
                ET.SubElement(child, "attribute", name="free").text = attr
            elif tag != "tag":
                skipped[tag] += 1
    path = tools / "fuzz.xml"
    path.write_text(ET.tostring(root, encoding="unicode"))
    fs = _check(tools, path, "auto")
    assert (fs.records if fs else 0) == len(images)
    if fs is not None:
        assert fs.loaded == len(images)
        assert fs.boxes == sum(1 for s in images for t, _ in s["children"] if t == "box")
        assert {k: v for k, v in fs.skipped.items() if k != "rotation"} == dict(skipped)


@pytest.mark.parametrize("name", ["coco-1127.json", "labelstudio-31.json",
                                  "labelstudio-9459.json"])
def test_fuzz_findings_huge_integers_are_refused_or_quarantined(name):
    """Inputs the outside-CI fuzz run (bench/fuzz.py) once crashed on: integers of
    5,000 digits and beyond a double's range."""
    from metrics.config import load_config
    from metrics.importers import ImportOptions
    from metrics.ingest import FileUnusable, check_files

    path = Path(__file__).parent / "fixtures" / "fuzz" / name
    config = load_config(Path(__file__).resolve().parents[1] / "data" / "demo")
    opts = ImportOptions(annotator="fz", submitted_at="2026-01-05T00:00:00Z")
    try:
        fs = check_files(config, [path], fmt=name.split("-")[0], options=opts,
                         progress=False).files[0]
    except FileUnusable as exc:
        assert "number too long" in str(exc)
        return
    assert fs.records == fs.loaded + fs.duplicates + fs.quarantined + fs.skipped_records
    assert fs.quarantined >= 1
