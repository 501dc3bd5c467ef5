"""Importers on hostile or odd input: ids, format detection, and quarantine reasons that
name what is wrong and where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metrics.importers import ImportOptions
from metrics.ingest import Bad, Record, resolve_reader

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
