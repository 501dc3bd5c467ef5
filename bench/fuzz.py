"""``python -m bench.fuzz --examples 10000``: fuzz every importer (outside CI).

For each importer (native JSON Lines, Label Studio JSON, COCO JSON, CVAT XML) hypothesis
generates ``--examples`` documents: mostly well-formed exports of a few records, with
random corruption on top (keys dropped, values replaced by the wrong type, NaN,
Infinity, numbers beyond 64 bits or beyond a double, integers of 5,000 digits, odd
unicode and lone surrogates, JSON or XML nested thousands deep, truncation, invalid
UTF-8, a BOM, CRLF, unsafe XML). Each document goes through
`metrics.ingest.check_files` with the format given, and every ``--ingest-every``-th
through a real ingest (`metrics.workspace.ingest`) into a temporary project, then the
database is read back. The properties:

- nothing raises except `FileUnusable` (a clean refusal of the whole file), and nothing
  hangs (``--timeout`` seconds per example);
- per file, ``records == loaded + duplicates + quarantined + skipped_records``;
- a real ingest refuses exactly what the check refused and counts the same records;
- for an ingested file, the stored rows equal the summary: annotations with the
  export's id = loaded, quarantine rows = quarantined, and the `exports` row agrees.

Violations are collected, not raised, so the run always finishes with counts; each
failing input is kept under ``<workdir>/failures`` with its traceback. The result is
written as JSON (``--json``) and as the "Fuzz" section of ``bench/RELIABILITY.md``
(``--markdown``; ``--markdown -`` writes none). Exit status 1 when anything failed.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing as mp
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

REPO = Path(__file__).resolve().parents[1]
RELIABILITY = REPO / "bench" / "RELIABILITY.md"
IMPORTERS = ("native", "labelstudio", "coco", "cvat")
EXT = {"native": "jsonl", "labelstudio": "json", "coco": "json", "cvat": "xml"}
ANNOTATOR = "fz"
SUBMITTED_AT = "2026-01-05T00:00:00Z"


# -- building blocks ------------------------------------------------------------------

@dataclass(frozen=True)
class Raw:
    """Text put into a JSON document verbatim: what `json.dumps` cannot write (NaN as a
    bare word, 1e400, a 5,000-digit integer, arrays nested thousands deep)."""
    text: str


def to_json(value: Any, *, ascii_only: bool) -> str:
    """JSON text of `value`, with `Raw` pieces verbatim and NaN/Infinity as bare words.

    With ``ascii_only`` False, lone surrogates stay raw characters, which become invalid
    UTF-8 when the text is encoded with ``surrogatepass``.
    """
    if isinstance(value, Raw):
        return value.text
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ascii_only)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k), ensure_ascii=ascii_only)}:"
                              f"{to_json(v, ascii_only=ascii_only)}"
                              for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(to_json(v, ascii_only=ascii_only) for v in value) + "]"
    return json.dumps(str(value))


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _slots(value: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every dict member and list element inside `value`."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append(path + (k,))
            out.extend(_slots(v, path + (k,)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append(path + (i,))
            out.extend(_slots(v, path + (i,)))
    return out


def mutate(doc: Any, ops: list[tuple[int, str, Any]]) -> Any:
    """Apply value-level corruption in place: each op picks a slot by index and
    deletes it, replaces it with a nasty value, wraps it in a list or turns it into a
    string. Works on a deep copy: strategies may hand out shared constants."""
    doc = copy.deepcopy(doc)
    for index, op, nasty in ops:
        slots = _slots(doc)
        if not slots:
            return doc
        path = slots[index % len(slots)]
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        key = path[-1]
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = nasty
        elif op == "wrap":
            parent[key] = [parent[key]]
        elif op == "stringify":
            parent[key] = str(parent[key])
        elif op == "add" and isinstance(parent, dict):
            parent[str(nasty)[:20] if not isinstance(nasty, Raw) else "x"] = nasty
    return doc


def corrupt_bytes(data: bytes, ops: list[tuple[str, int, bytes]]) -> bytes:
    """Byte-level corruption: truncate, insert, overwrite, BOM, CRLF."""
    for op, pos, junk in ops:
        n = len(data)
        at = pos % (n + 1)
        if op == "truncate":
            data = data[:at]
        elif op == "insert":
            data = data[:at] + junk + data[at:]
        elif op == "overwrite":
            data = data[:at] + junk + data[at + len(junk):]
        elif op == "bom":
            data = b"\xef\xbb\xbf" + data
        elif op == "crlf":
            data = data.replace(b"\n", b"\r\n")
        elif op == "delete":
            data = data[:at] + data[at + len(junk) + 1:]
    return data


# -- strategies ---------------------------------------------------------------------

def strategies():
    """The hypothesis strategies of each importer's documents (imported lazily, so the
    module imports without hypothesis)."""
    from hypothesis import strategies as st

    def weighted(*pairs):
        """One of the strategies, by weight (`st.one_of` flattens nested unions and
        weighs every branch alike)."""
        return st.sampled_from([s for w, s in pairs for _ in range(w)]).flatmap(
            lambda s: s)

    weird_text = st.sampled_from([
        "", " ", "\u0000", "\t\n", "é", "日本語のキャプション", "🚗🚲", "\u202eRTL",
        "A\u0301", "\ufeff", "\uffff", "\ud800", "\udfff", "x" * 5000,
        "<script>alert(1)</script>", "'; DROP TABLE annotations; --", "NaN", "null",
        "1e400", "../../etc/passwd", "img-000001", "2026-13-45T99:99:99Z",
        "2026-01-06T10:00:00+14:00", "2026-01-06", "car", "nike", "A car maybe.",
    ])
    deep = st.integers(min_value=2, max_value=3000).flatmap(
        lambda d: st.sampled_from([Raw("[" * d + "]" * d),
                                   Raw('{"a":' * d + "1" + "}" * d),
                                   Raw("[" * d + "1" + "]" * d)]))
    raw_tokens = st.sampled_from([
        Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e400"), Raw("-1e999"),
        Raw("1" * 5000), Raw("-" + "9" * 400), Raw("18446744073709551616"),
        Raw("-9223372036854775809"), Raw("1.0e-400"), Raw("0.1e99999"),
    ])
    scalar = st.one_of(
        st.none(), st.booleans(),
        st.integers(),
        st.integers(min_value=2 ** 62, max_value=2 ** 80),
        st.integers(max_value=-(2 ** 63) + 5, min_value=-(2 ** 80)),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        weird_text,
    )
    nested = st.recursive(scalar, lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.dictionaries(st.text(max_size=6), kids, max_size=3)), max_leaves=6)
    nasty = st.one_of(scalar, nested, raw_tokens, deep)
    value_ops = weighted((1, st.just([])), (1, st.lists(st.tuples(st.integers(0, 10 ** 6),
                           st.sampled_from(["delete", "replace", "replace", "wrap",
                                            "stringify", "add"]),
                           nasty), min_size=1, max_size=4)))
    junk = st.one_of(st.sampled_from([
        b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\xf4\x90\x80\x80", b"\x00",
        b"\n", b"{", b"]", b'"', b"<", b"&", b"</image>", b"<!DOCTYPE x>",
    ]), st.binary(min_size=1, max_size=8))
    byte_ops = weighted((4, st.just([])), (1, st.lists(st.tuples(st.sampled_from(["truncate", "insert", "insert", "overwrite",
                                            "bom", "crlf", "delete"]),
                           st.integers(0, 10 ** 7), junk), min_size=1, max_size=3)))

    items = st.integers(1, 6).map(lambda i: f"img-{i:06d}")
    people = st.sampled_from(["ann-01", "ann-02", "ann-03", "lead-01", "model:v1"])
    times = st.sampled_from([
        "2026-09-01T10:00:00Z", "2026-09-08T10:00:00+02:00", "2026-09-15 08:30:00",
        "2026-10-06T23:59:59.999999Z", "2027-01-04T00:00:00Z", "2026-12-31T23:00:00-05:00",
    ])
    labels = st.sampled_from(["car", "person", "bicycle", "dog", "traffic light", "bus",
                              "Car", "truck", ""])
    captions = st.one_of(
        st.sampled_from([
            "A red car parked on a sunny street.", "Two people walk a dog in the park.",
            "A bus and a bicycle at a traffic light.", "Maybe a nike ad on a bus.",
            "car", "A person probably riding a bike near coca cola sign.", "",
        ]),
        st.text(max_size=60))
    weather = st.sampled_from(["sunny", "cloudy", "rainy", "night", "foggy"])
    tags = st.lists(st.sampled_from(["outdoor", "street", "park", "crowded", "traffic",
                                     "animal", "beach"]), max_size=3)
    num = st.one_of(st.integers(-5, 700), st.floats(-10, 700, allow_nan=False))
    size = st.tuples(st.sampled_from([640, 480, 100, 1, 0]),
                     st.sampled_from([480, 640, 100, 1, 0]))

    # native ---------------------------------------------------------------------
    box = st.fixed_dictionaries(
        {"label": labels, "bbox": st.lists(num, min_size=4, max_size=4)},
        optional={"attributes": st.dictionaries(st.sampled_from(["occluded", "score"]),
                                                scalar, max_size=2)})
    native_rec = st.fixed_dictionaries(
        {"item_id": items, "annotator_id": people, "submitted_at": times,
         "image": st.builds(lambda i, wh: {"uri": f"images/{i}.png", "width": wh[0],
                                          "height": wh[1]}, items, size),
         "boxes": st.lists(box, max_size=3),
         "fields": st.fixed_dictionaries({"caption": captions, "weather": weather},
                                         optional={"tags": tags})},
        optional={"annotation_id": st.sampled_from(["a1", "a2", "a3", "a4"]),
                  "role": st.sampled_from(["annotator", "reviewer", "gold", "model",
                                           "boss"]),
                  "prefilled": st.booleans(), "reviewed": st.booleans(),
                  "guideline_version": st.sampled_from(["v1", "v2", "v3", "v9"]),
                  "reviewed_by": people,
                  "draft": st.fixed_dictionaries({"boxes": st.lists(box, max_size=2)})})
    native_line = weighted(
        (4, st.tuples(native_rec, value_ops).map(lambda t: mutate(t[0], t[1]))),
        (5, native_rec),
        (1, st.one_of(nasty, st.just(Raw("")), st.just(Raw("   ")),
                      st.just(Raw('{"item_id": "img-1", ')))))
    native_doc = st.builds(
        lambda lines, asc, bops: ("native", lines, asc, bops),
        st.lists(native_line, min_size=1, max_size=8), st.booleans(), byte_ops)

    # Label Studio ------------------------------------------------------------------
    def rect(wh, x, y, w, h, lab, rid, rot):
        value = {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": [lab]}
        if rot:
            value["rotation"] = rot
        return {"id": rid, "type": "rectanglelabels", "from_name": "label",
                "to_name": "image", "original_width": wh[0], "original_height": wh[1],
                "image_rotation": 0, "value": value}

    pct = st.one_of(st.floats(0, 100, allow_nan=False), st.integers(-10, 120))
    ls_rect = st.builds(rect, size, pct, pct, pct, pct, labels,
                        st.sampled_from(["r1", "r2", "r3", 7]),
                        st.sampled_from([0, 0, 90, 30.5, 360]))
    ls_text = st.builds(lambda c, rid: {"id": rid, "type": "textarea",
                                        "from_name": "caption", "to_name": "image",
                                        "value": {"text": [c]}},
                        captions, st.sampled_from(["t1", "r1"]))
    ls_choice = st.builds(lambda w, name: {"type": "choices", "from_name": name,
                                           "to_name": "image", "value": {"choices": w}},
                          st.lists(weather, min_size=1, max_size=2),
                          st.sampled_from(["weather", "tags"]))
    ls_other = st.sampled_from([
        {"type": "polygonlabels", "value": {"points": [[1, 2], [3, 4]],
                                            "polygonlabels": ["car"]}},
        {"type": "labels", "value": {"start": 0, "end": 3, "labels": ["x"]}},
        {"type": "rating", "from_name": "quality", "value": {"rating": 4}},
        {"type": "keypointlabels", "value": {"x": 1, "y": 2}}, {"type": "weird"}, 5,
    ])
    ls_result = st.lists(st.one_of(ls_rect, ls_rect, ls_text, ls_choice, ls_other),
                         max_size=5)
    who = st.one_of(st.integers(1, 5), st.builds(lambda e: {"id": 3, "email": e},
                                                 st.sampled_from(["a@x.io", " ", ""])))
    ls_ann = st.fixed_dictionaries(
        {"id": st.integers(1, 8), "result": ls_result},
        optional={"completed_by": who, "created_at": times,
                  "was_cancelled": st.booleans(), "ground_truth": st.booleans(),
                  "parent_prediction": st.integers(1, 3), "lead_time": st.floats(0, 99),
                  "project": st.integers(1, 2)})
    ls_pred = st.fixed_dictionaries(
        {"id": st.integers(1, 3), "result": ls_result},
        optional={"model_version": st.sampled_from(["v1", "yolo", ""]),
                  "created_at": times, "score": st.floats(0, 1)})
    ls_task = st.fixed_dictionaries(
        {"id": st.integers(1, 20),
         "data": st.one_of(
             st.builds(lambda i: {"image": f"/data/upload/1/{i}.png"}, items),
             st.builds(lambda i: {"img": f"/data/local-files/?d=pics/{i}.jpg"}, items),
             st.builds(lambda i: {"image": f"s3://bucket/{i}.png", "text": "t"}, items),
             st.just({})),
         "annotations": st.one_of(st.lists(ls_ann, min_size=1, max_size=3),
                                  st.lists(ls_ann, max_size=3))},
        optional={
                  "predictions": st.lists(ls_pred, max_size=2),
                  "drafts": st.lists(st.just({"result": []}), max_size=1),
                  "project": st.integers(1, 2), "meta": st.just({})})
    ls_min = st.builds(
        lambda i, aid, who_, when, cap, w, boxes: {
            "image": f"/data/upload/1/{i}.png", "id": aid, "annotation_id": aid,
            "annotator": who_, "created_at": when, "caption": cap, "weather": w,
            "label": [{"x": b[0], "y": b[1], "width": b[2], "height": b[3],
                       "rectanglelabels": ["car"], "original_width": 640,
                       "original_height": 480} for b in boxes]},
        items, st.integers(1, 9), people, times, captions, weather,
        st.lists(st.tuples(pct, pct, pct, pct), max_size=2))
    ls_doc = st.one_of(
        st.builds(lambda tasks, ops: mutate(tasks, ops),
                  st.lists(ls_task, min_size=1, max_size=4), value_ops),
        st.builds(lambda tasks, ops: mutate(tasks, ops),
                  st.lists(ls_task, max_size=4), value_ops),
        st.builds(lambda tasks, ops: mutate(tasks, ops),
                  st.lists(ls_min, min_size=1, max_size=4), value_ops),
        st.builds(lambda task, ops: mutate(task, ops), ls_task, value_ops))
    labelstudio_doc = st.builds(lambda d, asc, bops: ("labelstudio", d, asc, bops),
                                ls_doc, st.booleans(), byte_ops)

    # COCO --------------------------------------------------------------------------
    coco_image = st.builds(
        lambda iid, i, wh: {"id": iid, "file_name": f"{i}.jpg", "width": wh[0],
                            "height": wh[1], "license": 1},
        st.one_of(st.integers(1, 4), st.integers(1, 4), st.sampled_from(["7", "a", 1.0])),
        items, size)
    coco_ann = st.fixed_dictionaries(
        {"id": st.integers(1, 50), "image_id": st.one_of(st.integers(1, 4),
                                                          st.integers(0, 7),
                                                          st.just("3")),
         "category_id": st.integers(0, 4),
         "bbox": st.lists(num, min_size=4, max_size=4)},
        optional={"iscrowd": st.sampled_from([0, 1, True, "1", "false"]),
                  "area": num, "score": st.floats(0, 1),
                  "segmentation": st.sampled_from([[], [[1, 2, 3, 4, 5, 6]],
                                                   {"counts": "abc", "size": [2, 2]}]),
                  "keypoints": st.just([1, 2, 2]),
                  "attributes": st.dictionaries(st.just("occluded"), st.booleans())})
    coco_cap = st.builds(lambda aid, img, c: {"id": aid, "image_id": img, "caption": c},
                         st.integers(100, 120), st.integers(1, 5), captions)
    coco_doc_s = st.builds(
        lambda imgs, anns, caps, cats, ops: mutate(
            {"info": {"year": 2026}, "licenses": [], "images": imgs,
             "annotations": anns + caps, "categories": cats}, ops),
        st.lists(coco_image, min_size=1, max_size=5), st.lists(coco_ann, max_size=6),
        st.lists(coco_cap, max_size=4),
        st.lists(st.builds(lambda cid, n: {"id": cid, "name": n, "supercategory": "x"},
                           st.integers(1, 4), labels), max_size=4),
        value_ops)
    coco_doc = st.builds(lambda d, asc, bops: ("coco", d, asc, bops),
                         coco_doc_s, st.booleans(), byte_ops)

    # CVAT ---------------------------------------------------------------------------
    coord = st.one_of(st.integers(-5, 700).map(str),
                      st.floats(-5, 700, allow_nan=False).map(lambda f: f"{f:.2f}"),
                      st.sampled_from(["nan", "inf", "1e400", "", "abc", "-0", "1e308"]))
    cvat_attr = st.builds(lambda n, v: ("attribute", {"name": n}, [], v),
                          st.sampled_from(["parked", "count", "colour"]),
                          st.sampled_from(["true", "false", "3", "x", ""]))
    cvat_box = st.builds(
        lambda lab, c, occ, rot, attrs: (
            "box", {"label": lab, "source": "manual", "occluded": occ, "xtl": c[0],
                    "ytl": c[1], "xbr": c[2], "ybr": c[3], "z_order": "0",
                    **({"rotation": rot} if rot else {})}, attrs, None),
        labels, st.tuples(coord, coord, coord, coord), st.sampled_from(["0", "1"]),
        st.sampled_from(["", "", "45.0", "360", "x"]), st.lists(cvat_attr, max_size=2))
    cvat_other = st.sampled_from([
        ("tag", {"label": "sunny", "source": "manual"}, [], None),
        ("tag", {"label": "street"}, [("attribute", {"name": "x"}, [], "1")], None),
        ("polygon", {"label": "car", "points": "1,2;3,4;5,6"}, [], None),
        ("points", {"label": "person", "points": "1,2"}, [], None),
        ("mask", {"label": "car", "rle": "1,2", "left": "0", "top": "0"}, [], None),
        ("skeleton", {"label": "person"}, [], None),
    ])
    cvat_image = st.builds(
        lambda iid, i, wh, kids, subset, task: (
            "image", {"id": iid, "name": f"{i}.png", "width": str(wh[0]),
                      "height": str(wh[1]), **({"subset": subset} if subset else {}),
                      **({"task_id": task} if task else {})}, kids, None),
        st.sampled_from(["0", "1", "2", "3", ""]), items, size,
        st.lists(st.one_of(cvat_box, cvat_box, cvat_other), max_size=4),
        st.sampled_from(["", "", "train", "val"]), st.sampled_from(["", "", "1", "2"]))
    label_def = st.builds(
        lambda n, kind: ("label", {}, [("name", {}, [], n), ("type", {}, [], kind),
                                       ("attributes", {}, [(
                                           "attribute", {}, [
                                               ("name", {}, [], "parked"),
                                               ("input_type", {}, [], "checkbox")],
                                           None)], None)], None),
        labels, st.sampled_from(["rectangle", "tag", "any"]))
    cvat_meta = st.builds(
        lambda labs, who_, dumped, scope: ("meta", {}, [
            (scope, {}, [("id", {}, [], "12"), ("name", {}, [], "t"),
                         ("labels", {}, labs, None),
                         ("assignee", {}, [("username", {}, [], who_)], None)], None),
            ("dumped", {}, [], dumped)], None),
        st.lists(label_def, max_size=3), people,
        st.sampled_from(["2026-01-06 10:00:00.000000+00:00", "yesterday", ""]),
        st.sampled_from(["task", "job", "project"]))
    cvat_tree = st.builds(
        lambda meta, imgs, extra: ("annotations", {}, [("version", {}, [], "1.1"), meta,
                                                       *imgs, *extra], None),
        cvat_meta, st.lists(cvat_image, min_size=1, max_size=5),
        weighted((12, st.just([])), (1, st.just([("track", {"id": "0", "label": "car"},
                                                        [], None)])),
                 (1, st.just([("junk", {}, [], "x")]))))
    xml_nasty = weighted(
        (1, weird_text), (4, coord), (1, st.text(max_size=12)),
        (2, st.integers(-(2 ** 70), 2 ** 70).map(str)),
        (2, st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")),
                    max_size=12)))
    xml_ops = weighted((1, st.just([])), (1, st.lists(st.tuples(
        st.integers(0, 10 ** 6),
        st.sampled_from(["attr", "attr", "drop_attr", "drop_child", "dup_child", "text",
                         "deep", "rename"]),
        xml_nasty, st.integers(2, 3000)), min_size=1, max_size=4)))
    prolog = weighted((12, st.just('<?xml version="1.0" encoding="utf-8"?>\n')),
                      (1, st.sampled_from([
        '<?xml version="1.0" encoding="utf-8"?>\n', "", '<?xml version="1.0"?>\n',
        '<?xml version="1.0" encoding="latin-1"?>\n',
        '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>\n',
        '<?xml version="1.0"?>\n<!DOCTYPE a SYSTEM "file:///etc/passwd">\n',
    ])))
    cvat_doc = st.builds(lambda tree, ops, pro, bops: ("cvat", (tree, ops, pro), True,
                                                       bops),
                         cvat_tree, xml_ops, prolog, byte_ops)

    return {"native": native_doc, "labelstudio": labelstudio_doc, "coco": coco_doc,
            "cvat": cvat_doc}


# -- serialising --------------------------------------------------------------------

def _xml_nodes(node, out):
    stack = [node]
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(reversed(n[2]))
    return out


def xml_mutate(tree, ops):
    """Corrupt an element tree given as (tag, attrs, children, text) tuples (copied to
    lists so it can change in place)."""
    def thaw(n):
        return [n[0], dict(n[1]), [thaw(k) for k in n[2]], n[3]]

    root = thaw(tree)
    for index, op, nasty, depth in ops:
        nodes = _xml_nodes(root, [])
        node = nodes[index % len(nodes)]
        if op == "attr":
            keys = list(node[1]) or ["x"]
            node[1][keys[index % len(keys)]] = nasty
        elif op == "drop_attr" and node[1]:
            del node[1][list(node[1])[index % len(node[1])]]
        elif op == "drop_child" and node[2]:
            del node[2][index % len(node[2])]
        elif op == "dup_child" and node[2]:
            node[2].append(node[2][index % len(node[2])])
        elif op == "text":
            node[3] = nasty
        elif op == "deep":
            inner = ["box", {"label": "car"}, [], None]
            for _ in range(depth):
                inner = ["g", {}, [inner], None]
            node[2].append(inner)
        elif op == "rename" and node is not root:
            node[0] = re.sub(r"[^A-Za-z0-9_]", "", nasty) or "x"
    return root


def to_xml(node, out: list[str], indent: int = 0) -> None:
    # Iterative for deep trees.
    stack: list[tuple[Any, int, bool]] = [(node, indent, False)]
    while stack:
        n, ind, closing = stack.pop()
        tag, attrs, kids, text = n
        pad = " " * min(ind, 8)
        if closing:
            out.append(f"{pad}</{tag}>\n")
            continue
        a = "".join(f" {k}={quoteattr(str(v))}" for k, v in attrs.items())
        if not kids and text is None:
            out.append(f"{pad}<{tag}{a}/>\n")
            continue
        body = escape(str(text)) if text is not None else ""
        if not kids:
            out.append(f"{pad}<{tag}{a}>{body}</{tag}>\n")
            continue
        out.append(f"{pad}<{tag}{a}>{body}\n")
        stack.append((n, ind, True))
        for kid in reversed(kids):
            stack.append((kid, ind + 2, False))


def render(example) -> bytes:
    """The bytes of one generated document."""
    fmt, doc, ascii_only, bops = example
    if fmt == "native":
        text = "\n".join(to_json(line, ascii_only=ascii_only) for line in doc) + "\n"
        data = encode(text)
    elif fmt == "cvat":
        tree, ops, prolog = doc
        root = xml_mutate(tree, ops)
        out = [prolog]
        to_xml(root, out)
        data = encode("".join(out))
    else:
        data = encode(to_json(doc, ascii_only=ascii_only))
    return corrupt_bytes(data, bops)


# -- the project --------------------------------------------------------------------

def make_project(root: Path) -> Path:
    """A project folder with the demo's config and contract (every policy type, the
    demo's labels and fields), no data."""
    from metrics.demo import demo_config_files

    root.mkdir(parents=True, exist_ok=True)
    for src in demo_config_files():
        shutil.copyfile(src, root / Path(src).name)
    (root / "images").mkdir(exist_ok=True)
    return root


# -- one importer ---------------------------------------------------------------------

class Hang(Exception):
    pass


def _on_alarm(signum, frame):
    raise Hang("example took longer than the timeout")


def _kind(stage: str, message: str) -> str:
    """A failure's kind: its stage and the last line of its message (the exception)."""
    text = message.strip()
    return f"{stage}: {text.splitlines()[-1][:160] if text else '?'}"


def _where(message: str) -> str | None:
    """The innermost frame of the project's code in a traceback: `file:line in func`."""
    frames = re.findall(r'File "[^"]*?/((?:metrics|pages)/[^"]+)", line (\d+), in (\S+)',
                        message)
    return f"{frames[-1][0]}:{frames[-1][1]} in {frames[-1][2]}" if frames else None


def _reason_key(text: str) -> str:
    """A refusal or quarantine reason without its particulars, for counting kinds."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "…", text)
    return " ".join(text.split()[:7])


def run_importer(fmt: str, examples: int, *, ingest_every: int, workdir: Path,
                 seed: int, timeout: float) -> dict:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    from metrics import store
    from metrics.config import load_config
    from metrics.importers import ImportOptions
    from metrics.ingest import FileUnusable, check_files, file_sha256
    from metrics.workspace import ingest

    os.environ.setdefault("TQDM_DISABLE", "1")
    base = workdir / fmt
    if base.exists():
        shutil.rmtree(base)
    failures_dir = workdir / "failures"
    failures_dir.mkdir(parents=True, exist_ok=True)
    options = ImportOptions(annotator=ANNOTATOR, submitted_at=SUBMITTED_AT)
    path = base / f"export.{EXT[fmt]}"
    base.mkdir(parents=True)
    state = {"project": None, "config": None, "ingests_in_project": 0}
    c: Counter = Counter()
    refusals: Counter = Counter()
    quarantine_reasons: Counter = Counter()
    failures: list[dict] = []
    fail_kinds: Counter = Counter()
    sizes = []

    def project_config():
        # A fresh project every 200 ingests keeps the database (and derived refresh) small.
        if state["config"] is None or state["ingests_in_project"] >= 200:
            n = c["projects"]
            c["projects"] += 1
            root = make_project(base / f"project-{n}")
            state["config"] = load_config(root)
            state["ingests_in_project"] = 0
        state["ingests_in_project"] += 1
        return state["config"]

    check_config = load_config(make_project(base / "check-project"))

    def fail(n: int, stage: str, message: str, data: bytes) -> None:
        c["failures"] += 1
        kind = _kind(stage, message)
        fail_kinds[kind] += 1
        if fail_kinds[kind] <= 3 and len(failures) < 50:
            keep = failures_dir / f"{fmt}-{n}.{EXT[fmt]}"
            keep.write_bytes(data)
            failures.append({"example": n, "stage": stage, "message": message[-4000:],
                             "input": str(keep)})

    def one(example) -> None:
        n = c["examples"]
        c["examples"] += 1
        data = render(example)
        sizes.append(len(data))
        path.write_bytes(data)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            _one(n, data)
        except Hang:
            fail(n, "timeout", f"no answer within {timeout:g} s", data)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _one(n: int, data: bytes) -> None:
        checked = None
        try:
            checked = check_files(check_config, [path], fmt=fmt, options=options,
                                  progress=False)
        except FileUnusable as exc:
            c["refused"] += 1
            refusals[_reason_key(exc.problem)] += 1
        except Hang:
            raise
        except BaseException:  # noqa: BLE001 - that is what is being looked for
            fail(n, "check", traceback.format_exc(), data)
            return
        if checked is not None:
            c["accepted"] += 1
            for fs in checked.files:
                for name in ("records", "loaded", "duplicates", "quarantined",
                             "skipped_records"):
                    c[name] += getattr(fs, name)
                for _line, reason in fs.quarantine_examples:
                    quarantine_reasons[_reason_key(reason)] += 1
                if not fs.balanced:
                    fail(n, "check", f"unbalanced: {fs.to_json()}", data)
        if n % ingest_every:
            return
        c["ingests"] += 1
        config = project_config()
        try:
            summary = ingest(config, [path], fmt=fmt, options=options, progress=False)
        except FileUnusable as exc:
            c["ingest_refused"] += 1
            if checked is not None:
                fail(n, "ingest", f"check accepted but ingest refused: {exc}", data)
            return
        except Hang:
            raise
        except BaseException:  # noqa: BLE001
            fail(n, "ingest", traceback.format_exc(), data)
            return
        if checked is None:
            fail(n, "ingest", "check refused but ingest loaded the file", data)
            return
        try:
            _verify(n, data, config, summary, checked)
        except Hang:
            raise
        except BaseException:  # noqa: BLE001
            fail(n, "verify", traceback.format_exc(), data)

    def _verify(n, data, config, summary, checked) -> None:
        sha = file_sha256(path)
        for fs, fc in zip(summary.files, checked.files, strict=True):
            c["ingest_records"] += fs.records
            if not fs.balanced:
                fail(n, "ingest", f"unbalanced: {fs.to_json()}", data)
            if fs.records != fc.records or fs.quarantined != fc.quarantined \
                    or fs.skipped_records != fc.skipped_records \
                    or fs.loaded + fs.duplicates != fc.loaded + fc.duplicates:
                fail(n, "ingest", f"ingest {fs.to_json()} differs from check "
                     f"{fc.to_json()}", data)
            if fs.already_ingested:
                c["already_ingested"] += 1
                continue
            with store.open_db(config.database, read_only=True) as con:
                row = con.execute("SELECT export_id, records, loaded, quarantined, "
                                  "duplicates, skipped_records FROM exports WHERE "
                                  "sha256 = $s", {"s": sha}).fetchall()
                if len(row) != 1:
                    fail(n, "db", f"{len(row)} export rows for this file", data)
                    continue
                eid, *stored = row[0]
                anns = con.execute("SELECT count(*) FROM annotations WHERE export_id = $e",
                                   {"e": eid}).fetchone()[0]
                quar = con.execute("SELECT count(*) FROM quarantine WHERE export_id = $e",
                                   {"e": eid}).fetchone()[0]
            c["db_verified"] += 1
            c["db_rows"] += anns + quar
            if anns != fs.loaded or quar != fs.quarantined:
                fail(n, "db", f"stored {anns} annotations + {quar} quarantined, summary "
                     f"says loaded {fs.loaded} + quarantined {fs.quarantined}", data)
            if stored != [fs.records, fs.loaded, fs.quarantined, fs.duplicates,
                          fs.skipped_records]:
                fail(n, "db", f"exports row {stored} differs from the summary "
                     f"{fs.to_json()}", data)

    strategy = strategies()[fmt]

    @hseed(seed)
    @settings(max_examples=examples, deadline=None, database=None,
              phases=(Phase.generate,), suppress_health_check=list(HealthCheck),
              print_blob=False)
    @given(strategy)
    def run(example) -> None:
        one(example)

    signal.signal(signal.SIGALRM, _on_alarm)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    run()
    seconds = time.perf_counter() - t0
    sizes.sort()
    return {"importer": fmt, "seconds": seconds, "cpu_seconds": time.process_time() - cpu0,
            "counts": dict(c), "refusals": dict(refusals.most_common(12)),
            "quarantine_reasons": dict(quarantine_reasons.most_common(12)),
            "failure_kinds": dict(fail_kinds.most_common(20)), "failures": failures,
            "bytes_median": sizes[len(sizes) // 2] if sizes else 0,
            "bytes_max": sizes[-1] if sizes else 0}


def _run_importer(args: tuple) -> dict:
    fmt, kwargs = args
    return run_importer(fmt, **kwargs)


# -- report -------------------------------------------------------------------------

SECTION_START = "<!-- {name}:start -->"
SECTION_END = "<!-- {name}:end -->"
HEADER = """# labelqa reliability runs

Outside-CI runs of issue 7: the importer fuzz (`python -m bench.fuzz`) and the dashboard
load test (`python -m bench.load`). Each command rewrites its own section of this file;
the smoke test `tests/test_bench_scripts.py` runs both at tiny sizes so they cannot rot.
"""


def update_section(path: Path, name: str, text: str) -> None:
    """Replace (or append) the section `name` of a Markdown file, delimited by HTML
    comments, leaving the other sections as they are."""
    start, end = SECTION_START.format(name=name), SECTION_END.format(name=name)
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    old = path.read_text(encoding="utf-8") if path.exists() else HEADER
    if start in old and end in old:
        before, rest = old.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        new = before + block + ("\n" + after if after else "")
    else:
        new = old.rstrip() + "\n\n" + block
    path.write_text(new, encoding="utf-8")


def machine() -> str:
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in
                    open("/proc/cpuinfo", encoding="utf-8") if ln.startswith("model name")),
                   platform.processor())
    except OSError:
        cpu = platform.processor()
    return (f"{cpu}, {os.cpu_count()} CPUs; {platform.platform()}, "
            f"Python {platform.python_version()}")


def _fmt_s(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 120 else f"{s:.1f} s"


def markdown(result: dict) -> str:
    import hypothesis

    rows = []
    tot: Counter = Counter()
    for r in result["importers"]:
        k = Counter(r["counts"])
        tot.update(k)
        rows.append(
            f"| {r['importer']} | {k['examples']:,} | {k['refused']:,} | "
            f"{k['accepted']:,} | {k['records']:,} | {k['loaded']:,} | "
            f"{k['duplicates']:,} | {k['quarantined']:,} | {k['skipped_records']:,} | "
            f"{k['ingests']:,} ({k['db_verified']:,}) | {k['failures']:,} | "
            f"{_fmt_s(r['seconds'])} |")
    rows.append(
        f"| **all** | **{tot['examples']:,}** | {tot['refused']:,} | {tot['accepted']:,} | "
        f"{tot['records']:,} | {tot['loaded']:,} | {tot['duplicates']:,} | "
        f"{tot['quarantined']:,} | {tot['skipped_records']:,} | {tot['ingests']:,} "
        f"({tot['db_verified']:,}) | **{tot['failures']:,}** | "
        f"{_fmt_s(result['wall_seconds'])} wall |")
    out = [
        "## Fuzz: every importer, hostile input",
        "",
        f"`{result['command']}` — {result['started']}, {result['machine']}; "
        f"hypothesis {hypothesis.__version__}, {result['jobs']} process(es), seed "
        f"{result['seed']}, a real ingest every {result['ingest_every']}th example, "
        f"{result['timeout']:g} s timeout per example. Code under test: "
        f"`{result['code']}`{' (' + result['note'] + ')' if result['note'] else ''}.",
        "",
        "Each example is one generated export file — mostly well-formed, with random "
        "corruption: keys dropped, wrong types, NaN/Infinity, integers beyond 64 bits and "
        "of 5,000 digits, 1e400, odd unicode and lone surrogates, JSON/XML nested up to "
        "3,000 deep, truncation, invalid UTF-8, BOM, CRLF, DOCTYPE/entities. It goes "
        "through `check_files(config, [path], fmt=..., options=ImportOptions("
        f"annotator=\"{ANNOTATOR}\", submitted_at=\"{SUBMITTED_AT}\"))` with the demo "
        "project's config and contract; every sampled example also through "
        "`metrics.workspace.ingest` into a temp project, then the database is read back.",
        "",
        "Checked: no exception but `FileUnusable` (a refusal of the whole file), no "
        "hang; per file `records == loaded + duplicates + quarantined + skipped_records`; "
        "ingest refuses exactly what the check refuses and counts the same records; for "
        "each ingested file the stored rows (annotations with its `export_id` + quarantine "
        "rows) equal loaded + quarantined and its `exports` row matches the summary.",
        "",
        "| importer | examples | refused | accepted | records | loaded | duplicates | "
        "quarantined | skipped | ingests (stored + DB-checked) | failures | time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Stored rows read back from the databases: {tot['db_rows']:,}; ingests that "
        f"found the same file already loaded (counted as duplicates, nothing stored): "
        f"{tot['already_ingested']:,}.",
        "",
    ]
    out.append("Most frequent refusals (what corruption reached) and quarantine reasons:")
    out.append("")
    for r in result["importers"]:
        ref = "; ".join(f"{k} ({v:,})" for k, v in list(r["refusals"].items())[:5])
        qua = "; ".join(f"{k} ({v:,})" for k, v in
                        list(r["quarantine_reasons"].items())[:5])
        out.append(f"- **{r['importer']}** — refused: {ref or 'none'}. "
                   f"Quarantined: {qua or 'none'}.")
    if tot["failures"]:
        out += ["", "### Failures", ""]
        for r in result["importers"]:
            for kind, n in r["failure_kinds"].items():
                same = [f for f in r["failures"] if _kind(f["stage"], f["message"]) == kind]
                where = _where(same[0]["message"]) if same else None
                out.append(f"- **{r['importer']}** ×{n}: `{kind}`"
                           + (f", raised at `{where}`" if where else "")
                           + (f"; inputs kept: {', '.join(Path(f['input']).name for f in same)}"
                              f" (in `{Path(same[0]['input']).parent}`)" if same else ""))
    return "\n".join(out) + "\n"


# -- main ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("--examples", type=int, default=10_000, help="per importer")
    ap.add_argument("--importers", default=",".join(IMPORTERS),
                    help="comma-separated subset of " + ", ".join(IMPORTERS))
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="processes (one importer per process at a time)")
    ap.add_argument("--ingest-every", type=int, default=20,
                    help="every Nth example also goes through a real ingest")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per example")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the raw result here")
    ap.add_argument("--note", default="",
                    help="said in the report (e.g. which commit the code under test is)")
    ap.add_argument("--markdown", default=str(RELIABILITY),
                    help="Markdown file whose 'fuzz' section is rewritten ('-': none)")
    args = ap.parse_args(argv)
    importers = [i.strip() for i in args.importers.split(",") if i.strip()]
    unknown = set(importers) - set(IMPORTERS)
    if unknown:
        ap.error(f"unknown importer(s): {', '.join(sorted(unknown))}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="labelqa-fuzz-"))
    workdir.mkdir(parents=True, exist_ok=True)
    kwargs = {"examples": args.examples, "ingest_every": args.ingest_every,
              "workdir": workdir, "timeout": args.timeout}
    tasks = [(fmt, {**kwargs, "seed": args.seed + i}) for i, fmt in enumerate(importers)]
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    t0 = time.perf_counter()
    print(f"fuzzing {', '.join(importers)}: {args.examples:,} examples each, "
          f"{args.jobs} process(es), workdir {workdir}", file=sys.stderr, flush=True)
    results: list[dict] = []
    if args.jobs > 1 and len(tasks) > 1:
        ctx = mp.get_context("spawn")
        with ctx.Pool(min(args.jobs, len(tasks)), maxtasksperchild=1) as pool:
            for r in pool.imap_unordered(_run_importer, tasks):
                _say(r)
                results.append(r)
    else:
        for t in tasks:
            r = _run_importer(t)
            _say(r)
            results.append(r)
    results.sort(key=lambda r: importers.index(r["importer"]))
    shown = [f"--examples {args.examples}", f"--jobs {args.jobs}"]
    if args.importers != ",".join(IMPORTERS):
        shown.append(f"--importers {args.importers}")
    cmd = "python -m bench.fuzz " + " ".join(shown)
    import metrics

    result = {"command": cmd.strip(), "started": started, "machine": machine(),
              "code": str(Path(metrics.__file__).resolve().parent), "note": args.note,
              "jobs": args.jobs, "seed": args.seed, "ingest_every": args.ingest_every,
              "timeout": args.timeout, "examples": args.examples,
              "wall_seconds": time.perf_counter() - t0, "workdir": str(workdir),
              "importers": results}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    if args.markdown != "-":
        update_section(Path(args.markdown), "fuzz", markdown(result))
    failures = sum(r["counts"].get("failures", 0) for r in results)
    print(f"done in {_fmt_s(result['wall_seconds'])}: "
          f"{sum(r['counts'].get('examples', 0) for r in results):,} examples, "
          f"{failures} failure(s)", file=sys.stderr)
    return 1 if failures else 0


def _say(r: dict) -> None:
    k = r["counts"]
    print(f"  {r['importer']}: {k.get('examples', 0):,} examples, "
          f"{k.get('refused', 0):,} refused, {k.get('records', 0):,} records, "
          f"{k.get('ingests', 0):,} ingests, {k.get('failures', 0)} failure(s) in "
          f"{_fmt_s(r['seconds'])}", file=sys.stderr, flush=True)
    for kind, n in r["failure_kinds"].items():
        print(f"    ×{n} {kind}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
