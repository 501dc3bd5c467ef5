"""Importers on hostile or odd input: ids, format detection, and quarantine reasons that
name what is wrong and where."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics.config import load_config
from metrics.importers import ImportOptions
from metrics.importers.detect import HEAD_BYTES, detect_format
from metrics.importers.detect import _detect as _detect_stream
from metrics.ingest import Bad, FileUnusable, Record, check_files, resolve_reader

WHEN = "2026-01-05T09:00:00Z"


def _read(path: Path, fmt: str = "auto", **options) -> list:
    _name, reader = resolve_reader(path, fmt, ImportOptions(**options))
    return list(reader(path, None))


def _coco(tmp_path: Path, images: list, annotations: list, categories=None) -> list:
    doc = {"images": images, "annotations": annotations,
           "categories": categories or [{"id": 1, "name": "car"}]}
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    return _read(path, "coco", annotator="qa", submitted_at=WHEN)


def _box(image_id, category_id=1, ident=1) -> dict:
    return {"id": ident, "image_id": image_id, "category_id": category_id,
            "bbox": [1, 2, 3, 4]}


# -- COCO ids --------------------------------------------------------------------------

@pytest.mark.parametrize("ident", ["²", "١", "\uff11", "7" * 5000])
def test_coco_non_ascii_or_overlong_digit_ids_are_string_ids(tmp_path, ident):
    # '²'.isdigit() holds but int('²') raises; '１' (full width) and '١' (Arabic-Indic)
    # would silently become 1. They are ids as written, matched to the same string.
    events = _coco(tmp_path, [{"id": ident, "file_name": "a.jpg"}, {"id": 1, "file_name":
                                                                     "b.jpg"}],
                   [_box(ident), _box(1, ident=2)])
    recs = {e.obj["item_id"]: e.obj for e in events if isinstance(e, Record)}
    assert not [e for e in events if isinstance(e, Bad)]
    assert len(recs["a.jpg"]["boxes"]) == 1 and len(recs["b.jpg"]["boxes"]) == 1
    assert recs["a.jpg"]["annotation_id"] == f"coco:qa:{ident}"


def test_coco_non_ascii_digit_category_id(tmp_path):
    events = _coco(tmp_path, [{"id": 1, "file_name": "a.jpg"}],
                   [_box(1, "²"), _box(1, 2, ident=2), _box(1, "2", ident=3)],
                   [{"id": "²", "name": "car"}, {"id": 2, "name": "bus"}])
    (rec,) = [e.obj for e in events if isinstance(e, Record)]
    assert [b["label"] for b in rec["boxes"]] == ["car", "bus", "bus"]


def test_coco_bad_ids_are_quarantined_naming_the_field(tmp_path):
    events = _coco(tmp_path, [{"id": 1.5, "file_name": "a.jpg"},
                              {"file_name": "b.jpg"},
                              {"id": 3, "file_name": "c.jpg"}],
                   [_box([3]), _box(None, ident=2), _box(3, ident=3)])
    reasons = sorted(e.reason for e in events if isinstance(e, Bad))
    assert reasons == [
        "annotation 1 'image_id' is an array [3], not an integer or a non-empty string",
        "annotation 2 has no 'image_id' (an integer or string)",
        "image 'id' is a number 1.5, not an integer or a non-empty string",
        "image has no 'id' (an integer or string)",
    ]
    assert [e.obj["item_id"] for e in events if isinstance(e, Record)] == ["c.jpg"]


# -- CVAT numbers and dates ------------------------------------------------------------

def _cvat(tmp_path: Path, images: str, dumped: str = "2026-01-06 10:00:00+00:00",
          **options) -> list:
    path = tmp_path / "cvat.xml"
    path.write_text(f"""<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task><id>12</id><assignee><username>alice</username></assignee></task>
    <dumped>{dumped}</dumped>
  </meta>
{images}
</annotations>
""", encoding="utf-8")
    return _read(path, "cvat", **options)


@pytest.mark.parametrize("dim, text", [("height", "1e300"), ("width", "-9223372036854775809"),
                                       ("height", "1e999")])
def test_cvat_image_size_beyond_64_bits_is_quarantined_naming_the_attribute(tmp_path, dim,
                                                                           text):
    other = "height" if dim == "width" else "width"
    events = _cvat(tmp_path, f"""  <image id="0" name="a.jpg" {dim}="{text}" {other}="8">
    <box label="car" xtl="0" ytl="0" xbr="4" ybr="4" occluded="0"/>
  </image>
  <image id="1" name="b.jpg" width="9223372036854775807" height="10"/>""")
    (bad,) = [e for e in events if isinstance(e, Bad)]
    assert bad.line == 8
    assert bad.reason == (f"<image> {dim}={text!r} is too large for an image size "
                          "(beyond a 64-bit integer)")
    (rec,) = [e.obj for e in events if isinstance(e, Record)]
    assert rec["image"] == {"uri": "b.jpg", "width": 9223372036854775807, "height": 10}


def test_cvat_numbers_are_ascii(tmp_path):
    # float() reads '١٢' as 12 and '1_0' as 10; CVAT writes neither, so they are kept as
    # written (a contract error), never silently turned into other numbers.
    events = _cvat(tmp_path, """  <image id="0" name="a.jpg" width="\uff11\uff10" height="1_0">
    <box label="car" xtl="\u0661" ytl="0" xbr="4" ybr="4" occluded="0"/>
    <box label="car" xtl=" 1.5e0 " ytl="0" xbr="4" ybr="4" occluded="0"/>
  </image>""")
    (rec,) = [e.obj for e in events if isinstance(e, Record)]
    assert rec["image"]["width"] == "\uff11\uff10" and rec["image"]["height"] == "1_0"
    assert rec["boxes"][0]["bbox"] is None
    assert rec["boxes"][0]["attributes"]["cvat_box"]["xtl"] == "\u0661"
    assert rec["boxes"][1]["bbox"] == [1.5, 0.0, 2.5, 4.0]


def test_cvat_bad_dumped_date_names_dumped(tmp_path):
    image = '  <image id="0" name="a.jpg" width="8" height="8"/>'
    with pytest.raises(FileUnusable) as exc:
        _cvat(tmp_path, image, dumped="2026-13-45 25:00")
    assert exc.value.problem == (
        "no submission time: <dumped> at line 6 is not an ISO 8601 date "
        "('2026-13-45 25:00'); pass --submitted-at 2026-01-05T09:00:00Z (ISO 8601)")
    events = _cvat(tmp_path, image, dumped="2026-13-45 25:00", submitted_at=WHEN)
    (rec,) = [e.obj for e in events if isinstance(e, Record)]
    assert rec["submitted_at"] == "2026-01-05T09:00:00+00:00"


# -- Label Studio: who, when, and values that cannot be stored -------------------------

def _ls(tmp_path: Path, annotation: dict, task_extra: dict | None = None, **options) -> list:
    task = {"id": 1, "project": 2, "data": {"image": "/data/upload/a.jpg"},
            "annotations": [{"id": 3, "result": [], **annotation}], **(task_extra or {})}
    path = tmp_path / "ls.json"
    path.write_text(json.dumps([task], indent=2, ensure_ascii=False), encoding="utf-8")
    return _read(path, "labelstudio", **options)


@pytest.mark.parametrize("completed_by, why", [
    ({"id": None, "email": ""}, "its 'completed_by' names no one ('email' is empty, "
                                "'id' is null)"),
    ({"first_name": "A"}, "its 'completed_by' names no one (no 'email', no 'id')"),
    (2.5, "its 'completed_by' is a number 2.5, not a user id (an integer or string) or an "
          "object with 'email' or 'id'"),
    (..., "it has no 'completed_by'"),
])
def test_labelstudio_unusable_completed_by_says_what_is_wrong(tmp_path, completed_by, why):
    ann = {"created_at": WHEN} if completed_by is ... else {"created_at": WHEN,
                                                             "completed_by": completed_by}
    with pytest.raises(FileUnusable) as exc:
        _ls(tmp_path, ann)
    assert exc.value.problem == (f"no annotator for annotation 3 of task 1 (line 9): {why}; "
                                 "pass --annotator NAME")
    (rec,) = [e for e in _ls(tmp_path, ann, annotator="qa") if isinstance(e, Record)]
    assert rec.obj["annotator_id"] == "qa"


def test_labelstudio_empty_created_at_says_so(tmp_path):
    with pytest.raises(FileUnusable) as exc:
        _ls(tmp_path, {"completed_by": 1, "created_at": ""})
    assert "(line 9): its 'created_at' is empty; pass --submitted-at" in exc.value.problem


@pytest.mark.parametrize("created_at, why", [
    ("yesterday", 'is not an ISO 8601 date: "yesterday"'),
    (1700000000, "is a number 1700000000, not an ISO 8601 date string"),
])
def test_labelstudio_bad_created_at_is_quarantined_naming_created_at(tmp_path, created_at,
                                                                     why):
    pred = {"id": 8, "model_version": "m1", "created_at": created_at, "result": []}
    events = _ls(tmp_path, {"completed_by": 1, "created_at": created_at},
                 {"predictions": [pred]}, submitted_at=WHEN)
    assert sorted((e.line, e.reason) for e in events if isinstance(e, Bad)) == [
        (9, f"annotation 'created_at' {why}"), (17, f"prediction 'created_at' {why}")]
    assert not [e for e in events if isinstance(e, Record)]


def test_labelstudio_json_min_bad_created_at(tmp_path):
    path = tmp_path / "min.json"
    path.write_text(json.dumps([{"id": 1, "image": "a.jpg", "annotation_id": 4,
                                 "annotator": "x@y", "created_at": "2026-02-30"}]))
    (bad,) = _read(path, "labelstudio")
    assert bad.reason == "annotation 'created_at' is not an ISO 8601 date: \"2026-02-30\""


def _nested(depth: int):
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("annotation, reason", [
    ({"id": 2 ** 70}, "the integer 1180591620717411303424 at /annotation/id is beyond 64 bits"),
    ({"lead_time": -(10 ** 60)}, "the integer of 61 digits at /annotation/lead_time is "
                                 "beyond 64 bits"),
    ({"meta": {"a/b~": "x\ud800"}}, "the string at /annotation/meta/a~1b~0 holds a lone "
                                    "surrogate escape (\\ud800), which is not text"),
    ({"meta": {"\udfff": 1}}, "the string key at /annotation/meta/\udfff holds a lone "
                              "surrogate escape (\\udfff), which is not text"),
    ({"extra": _nested(300)}, "the value at /annotation/extra/0/0/0/0/0/0/… is nested more "
                              "than 254 levels deep"),
])
def test_unstorable_values_are_quarantined_naming_where(tmp_path, annotation, reason):
    task = {"id": 1, "data": {"image": "a.jpg"}, "annotations": [
        {"id": 3, "completed_by": 1, "created_at": WHEN, "result": [], **annotation}]}
    path = tmp_path / "ls.json"
    # json.dumps escapes lone surrogates as \ud800, as a tool's export would carry them
    path.write_text(json.dumps([task]), encoding="utf-8")
    (bad,) = _read(path, "labelstudio")
    assert bad.reason == f"cannot be stored as JSON: {reason}"
    assert bad.raw       # kept, even when it holds a lone surrogate


# -- format detection --------------------------------------------------------------------

NATIVE_LINE = json.dumps({"item_id": "a.jpg", "annotator_id": "ann-1", "submitted_at": WHEN,
                          "boxes": []})
LS_TASK = {"id": 2, "data": {"image": "/data/upload/b.jpg"},
           "annotations": [{"id": 3, "completed_by": 1, "created_at": WHEN, "result": []}]}


def _detect(tmp_path: Path, content: str | bytes, name: str = "x.json") -> str:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return detect_format(path)


@pytest.mark.parametrize("first", [
    '[{"item_id": "x"}]',                               # an array on line 1
    '{"data": {"k": 1}, ' + NATIVE_LINE[1:],             # first keys a tool's
    '{"images": [], ' + NATIVE_LINE[1:],
    '{"info": {}, "annotations": []}',
    '{"item_id": "x", "v": NaN}',                        # invalid JSON, one line
    '{"item_id": "x"',                                   # broken: ends on its line
    '{"item_id": "x", "annotations": [',
])
def test_json_lines_whose_first_line_looks_like_a_tool_export_are_native(tmp_path, first):
    assert _detect(tmp_path, f"{first}\n{NATIVE_LINE}\n\n{NATIVE_LINE}\n") == "native"
    assert _detect(tmp_path, f"\ufeff\n\n{first}\r\n{NATIVE_LINE}") == "native"


@pytest.mark.parametrize("doc, kind", [
    ([7, LS_TASK], "labelstudio"),                      # a task that is not an object
    (["x"], "labelstudio"),
    ([], "labelstudio"),
    (LS_TASK, "labelstudio"),
    ({"info": {}, "images": [], "annotations": []}, "coco"),
    ({"annotations": []}, "coco"),
    ([{"image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1], "score": 0.5}], "coco"),
    ([{"images": [], "annotations": []}], "coco"),
    ({"images": [], "item_id": "a", "annotator_id": "b"}, "native"),
    ({"k": 1}, "native"),
])
@pytest.mark.parametrize("indent", [None, 2])
def test_one_json_document_is_told_by_its_shape(tmp_path, doc, kind, indent):
    assert _detect(tmp_path, json.dumps(doc, indent=indent) + "\n\n") == kind


def test_a_pretty_printed_document_with_an_error_is_still_a_document(tmp_path):
    text = json.dumps([LS_TASK, LS_TASK], indent=2).replace('"result": []', '"result": [,]', 1)
    assert _detect(tmp_path, text) == "labelstudio"
    # one that continues past its first line, then another document: a document too
    assert _detect(tmp_path, json.dumps([LS_TASK], indent=2) + "\n[]\n") == "labelstudio"
    # `[` alone, then lines: a list that lacks a comma (its reader says where)
    assert _detect(tmp_path, f"[\n{NATIVE_LINE}\n{NATIVE_LINE}\n") == "labelstudio"


def test_large_files_are_told_from_their_start(tmp_path):
    caption = "x" * (3 << 20)       # a first native line of 3 MiB
    long_line = json.dumps({"item_id": "a", "fields": {"caption": caption}})
    assert _detect(tmp_path, f"{long_line}\n{NATIVE_LINE}\n") == "native"
    assert _detect(tmp_path, long_line + "\n") == "native"
    big_task = {**LS_TASK, "data": {"image": "b.jpg", "text": caption}}
    assert _detect(tmp_path, json.dumps([big_task, LS_TASK])) == "labelstudio"
    assert _detect(tmp_path, json.dumps([big_task, LS_TASK], indent=1)) == "labelstudio"
    coco = {"info": {"description": caption}, "images": [], "annotations": []}
    assert _detect(tmp_path, json.dumps(coco)) == "coco"
    # a first value, then more than the head of blank lines, then a second line
    assert _detect(tmp_path, NATIVE_LINE + "\n" * (2 << 20) + NATIVE_LINE) == "native"
    assert _detect(tmp_path, json.dumps([LS_TASK]) + "\n" * (2 << 20)) == "labelstudio"


def test_detection_reads_the_head_of_a_big_json_lines_file_only():
    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, size=-1):
            data = super().read(size)
            Counting.read_bytes += len(data)
            return data

    lines = (NATIVE_LINE + "\n").encode() * ((20 << 20) // len(NATIVE_LINE))
    assert _detect_stream(Counting(lines)) == "native"
    assert Counting.read_bytes <= HEAD_BYTES


@pytest.mark.parametrize("name, content, quarantined", [
    ("first_line_array.jsonl", f'[{{"item_id": "x"}}]\n{NATIVE_LINE}\n',
     [(1, "line is an array, not a JSON object")]),
    ("task_number.json", json.dumps([7, LS_TASK], indent=2),
     [(2, "task is a number, not a JSON object")]),
])
def test_misdetected_files_now_load_with_the_bad_entry_quarantined(project, name, content,
                                                                   quarantined):
    path = project.root / name
    path.write_text(content, encoding="utf-8")
    fs = check_files(load_config(project.root), [path], progress=False).files[0]
    assert fs.records == fs.loaded + fs.duplicates + fs.quarantined + fs.skipped_records
    assert (fs.loaded, fs.quarantined) == (1, 1)
    assert [tuple(q[:2]) for q in fs.quarantine_examples] == quarantined


@pytest.mark.parametrize("content, kind", [
    ('[{"id": 1, "data": {"image": "a.jpg"}, "annotations": [', "labelstudio"),
    ('{"images": [{"id": 1}', "coco"),
    ('{"item_id": "x", "boxes": [', "native"),
])
def test_a_single_broken_line_is_told_by_its_start(tmp_path, content, kind):
    assert _detect(tmp_path, content + "\n") == kind


_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["images", "data", "annotations", "item_id", "info", "id", "x"]),
        inner, max_size=3),
    max_leaves=8)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(_json_value, min_size=2, max_size=4),
       blank=st.sampled_from(["\n", "\r\n", "\n\n", "\n \t\n"]))
def test_several_json_values_one_per_line_are_json_lines(tmp_path, values, blank):
    text = blank.join(json.dumps(v) for v in values)
    assert _detect(tmp_path, text) == "native"
