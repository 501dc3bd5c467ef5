"""Label Studio exports: the JSON export (a list of tasks) and the JSON-MIN export.

One record per entry of a task's `annotations` and `predictions` (JSON), or per entry
of a JSON-MIN list. `line` is the line where that entry starts in the file. The file is
read into memory as text, but tasks are decoded one at a time (see `JsonScanner`).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

from metrics.importers import ImportOptions
from metrics.importers.common import (
    JsonError,
    JsonScanner,
    base_name,
    is_num,
    iso_time,
    json_unusable,
    load_json_text,
    make_record,
    not_object,
    safe_dump,
    short_json,
    time_problem,
)
from metrics.ingest import Bad, Event, FileUnusable, Skip, _json_kind

ENTRY_KEYS = ("annotations", "completions", "predictions")
# Result types that are shapes this tool does not compare -> the `skipped` kind.
SHAPES = {
    "polygonlabels": "polygon", "polygon": "polygon",
    "keypointlabels": "points", "keypoint": "points",
    "brushlabels": "mask", "brush": "mask",
    "ellipselabels": "ellipse", "ellipse": "ellipse",
    "polylinelabels": "polyline", "polyline": "polyline",
    "relation": "relation",
}
FIELD_TYPES = ("textarea", "choices", "taxonomy", "rating", "number", "datetime")
# JSON-MIN keys that describe the annotation, not its results.
MIN_META = frozenset({"id", "annotator", "annotation_id", "created_at", "updated_at",
                      "lead_time", "agreement", "history", "was_cancelled", "completed_by"})
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".avif",
             ".heic", ".jfif", ".jp2")
_NOTHING = object()


def read_labelstudio(path: Path, on_bytes: Callable[[int], None] | None = None, *,
                     options: ImportOptions | None = None) -> Iterator[Event]:
    """Stream the records of a Label Studio JSON or JSON-MIN export.

    A single task object (Label Studio's one-file-per-task storage) is read too.
    Raises FileUnusable when the file is not JSON, or names no annotator / time and
    no `--annotator` / `--submitted-at` was given.
    """
    options = options or ImportOptions()
    sc = load_json_text(path, on_bytes)
    try:
        first = sc.peek()
        if first == "[":
            for start in sc.items():
                line = sc.line_at(start)
                if sc.peek() != "{":
                    yield not_object(line, "task", sc.value())
                    continue
                yield from _task(path, sc, line, options)
        elif first == "{":
            yield from _task(path, sc, sc.line_at(sc.pos), options)
        else:
            raise JsonError(sc.pos, "expected a list of tasks")
        sc.end()
    except JsonError as exc:
        raise json_unusable(path, sc, exc, "Label Studio") from None


# -- one task -------------------------------------------------------------------------

def _task(path: Path, sc: JsonScanner, line: int, options: ImportOptions
          ) -> Iterator[Event]:
    task: dict[str, Any] = {}
    entries: dict[str, list[tuple[int, Any]]] = {"annotations": [], "predictions": []}
    for key in sc.members():
        if key in ENTRY_KEYS and sc.peek() == "[":
            bucket = entries["predictions" if key == "predictions" else "annotations"]
            for start in sc.items():
                bucket.append((sc.line_at(start), sc.value()))
            task[key] = ...
        else:
            task[key] = sc.value()
    if not any(k in task for k in ENTRY_KEYS):
        yield from _min_entry(path, task, line, options)
        return
    for key in ENTRY_KEYS:
        if key in task and task[key] is not ... and task[key] is not None:
            yield Bad(line, f"task '{key}' is not a list", _short_json(task[key]))
    context = {k: v for k, v in task.items() if k not in ENTRY_KEYS and k != "drafts"}
    drafts = task.get("drafts")
    if isinstance(drafts, list) and drafts:
        # Unsubmitted work in progress: not an annotation entry, reported so it is seen.
        yield Skip(line, "draft", record=False, count=len(drafts))
    tid = task.get("id")
    data = task.get("data")
    _key, uri = _image_ref(data if isinstance(data, dict) else {})
    item_id = _item_id(uri, tid, options)
    project = _project(task.get("project"))

    out: list[Event] = []
    pred_drafts: dict[str, dict] = {}
    for pline, pred in entries["predictions"]:
        if not isinstance(pred, dict):
            out.append(not_object(pline, "prediction", pred))
            continue
        conv = _convert(pred.get("result"), options)
        if conv is None:
            out.append(Bad(pline, "prediction 'result' is not a list", _short_json(pred)))
            continue
        boxes, fields, skips, size = conv
        pid = pred.get("id")
        if _scalar(pid):
            pred_drafts[str(pid)] = {"boxes": boxes, "fields": fields}
        if item_id is None:
            out.append(_no_item(pline, tid, pred))
            continue
        version = pred.get("model_version")
        created = pred.get("created_at")
        when = created or options.submitted_at
        if not when:
            raise _no_time(path, pline, f"prediction {pid} of task {tid}", pred)
        if created and (why := time_problem(created)):
            out.append(Bad(pline, f"prediction 'created_at' {why}", _short_json(pred)))
            continue
        obj = _native(item_id, uri, size, boxes, fields,
                      annotation_id=(f"ls:{project}:p{pid}" if _scalar(pid) else None),
                      annotator_id=f"model:{version}" if _scalar(version) and str(version)
                      else "model", role="model", submitted_at=when)
        out.extend(Skip(pline, kind, count=n) for kind, n in sorted(skips.items()))
        out.append(make_record(pline, obj, {"task": context, "prediction": pred}))

    for aline, ann in entries["annotations"]:
        if not isinstance(ann, dict):
            out.append(not_object(aline, "annotation", ann))
            continue
        if ann.get("was_cancelled") is True or ann.get("skipped") is True:
            out.append(Skip(aline, "cancelled", record=True))
            continue
        aid = ann.get("id")
        conv = _convert(ann.get("result"), options)
        if conv is None:
            out.append(Bad(aline, "annotation 'result' is not a list", _short_json(ann)))
            continue
        boxes, fields, skips, size = conv
        if item_id is None:
            out.append(_no_item(aline, tid, ann))
            continue
        what = f"annotation {aid} of task {tid}"
        annotator = _annotator(ann.get("completed_by")) or options.annotator
        if not annotator:
            raise _no_annotator(path, aline, what, ann, "completed_by")
        created = ann.get("created_at")
        when = created or options.submitted_at
        if not when:
            raise _no_time(path, aline, what, ann)
        if created and (why := time_problem(created)):
            out.append(Bad(aline, f"annotation 'created_at' {why}", _short_json(ann)))
            continue
        proj = _project(ann.get("project"), project)
        obj = _native(item_id, uri, size, boxes, fields,
                      annotation_id=f"ls:{proj}:{aid}" if _scalar(aid) else None,
                      annotator_id=annotator,
                      role="gold" if ann.get("ground_truth") is True else "annotator",
                      submitted_at=when)
        parent = ann.get("parent_prediction")
        if parent is not None:
            obj["prefilled"] = True
            draft = pred_drafts.get(str(parent)) if _scalar(parent) else None
            if draft is not None:
                obj["draft"] = draft
        out.extend(Skip(aline, kind, count=n) for kind, n in sorted(skips.items()))
        out.append(make_record(aline, obj, {"task": context, "annotation": ann}))
    out.sort(key=lambda e: e.line)
    yield from out


def _min_entry(path: Path, entry: dict, line: int, options: ImportOptions
               ) -> Iterator[Event]:
    """One JSON-MIN entry: task data, results by `from_name`, and annotation metadata.

    JSON-MIN does not say which keys are task data and which are results. Lists of
    regions are results; other values are fields, except that when the project declares
    `[fields]`, undeclared keys are taken as task data (kept in `raw` only).
    """
    if "annotation_id" not in entry and "annotator" not in entry:
        yield Bad(line, "neither a Label Studio task (no 'annotations') nor a JSON-MIN "
                  "entry (no 'annotation_id')", _short_json(entry))
        return
    aid = entry.get("annotation_id")
    if aid is None:
        # JSON-MIN lists unlabeled tasks too; they are not annotations.
        yield Skip(line, "unannotated", record=True)
        return
    tid = entry.get("id")
    img_key, uri = _image_ref({k: v for k, v in entry.items() if k not in MIN_META})
    item_id = _item_id(uri, tid, options)
    if item_id is None:
        yield _no_item(line, tid, entry)
        return
    kinds = options.field_kinds
    boxes: list[dict] = []
    fields: dict[str, Any] = {}
    skips: Counter = Counter()
    size = None
    for key, val in entry.items():
        if key in MIN_META or key == img_key:
            continue
        if isinstance(val, list) and val and all(isinstance(x, dict) for x in val):
            for region in val:
                kind = _min_region_kind(region)
                if kind == "box":
                    boxes.append(_box(region, region, skips))
                    size = size or _size(region)
                elif kind in FIELD_TYPES:
                    value = _field_value(kind, region, kinds.get(key))
                    if value is not _NOTHING:
                        _put_field(fields, key, value)
                else:
                    skips[kind] += 1
            continue
        if kinds and key not in kinds:
            continue
        value = _min_field(val, kinds.get(key))
        if value is _NOTHING:
            skips["unknown"] += 1
        elif value is not None:
            fields[key] = value
    what = f"annotation {aid} of task {tid}"
    annotator = _annotator(entry.get("annotator")) or options.annotator
    if not annotator:
        raise _no_annotator(path, line, what, entry, "annotator")
    created = entry.get("created_at")
    when = created or options.submitted_at
    if not when:
        raise _no_time(path, line, what, entry)
    if created and (why := time_problem(created)):
        yield Bad(line, f"annotation 'created_at' {why}", _short_json(entry))
        return
    obj = _native(item_id, uri, size, boxes, fields,
                  annotation_id=f"ls:_:{aid}" if _scalar(aid) else None,
                  annotator_id=annotator, role="annotator", submitted_at=when)
    yield from (Skip(line, kind, count=n) for kind, n in sorted(skips.items()))
    yield make_record(line, obj, entry)


# -- results --------------------------------------------------------------------------

def _convert(results: Any, options: ImportOptions):
    """Results of one annotation -> (boxes, fields, skipped parts, image size)."""
    if results is None:
        results = []
    if not isinstance(results, list):
        return None
    boxes: list[dict] = []
    fields: dict[str, Any] = {}
    skips: Counter = Counter()
    size = None
    regions: dict[Any, dict] = {}
    later = []
    for r in results:
        if not isinstance(r, dict):
            skips["invalid_result"] += 1
            continue
        typ = r.get("type")
        typ = typ.lower() if isinstance(typ, str) else ""
        value = r.get("value") if isinstance(r.get("value"), dict) else {}
        size = size or _size(r)
        if typ in ("rectanglelabels", "rectangle"):
            box = _box(r, value, skips)
            boxes.append(box)
            if _scalar(r.get("id")):
                regions.setdefault(r["id"], box)
        else:
            later.append((typ, r, value))
    # Per-region results (a transcription, a choice about one box) share the region id.
    for typ, r, value in later:
        target = regions.get(r.get("id")) if _scalar(r.get("id")) else None
        name = r.get("from_name") if isinstance(r.get("from_name"), str) else typ
        if typ == "labels" and target is not None:
            labels = [x for x in value.get("labels") or [] if isinstance(x, str)]
            if target.get("label") is None and labels:
                target["label"] = labels[0]
            elif labels:
                target.setdefault("attributes", {})[name] = labels
        elif typ in FIELD_TYPES:
            field = _field_value(typ, value, options.field_kinds.get(name))
            if field is _NOTHING:
                skips["invalid_result"] += 1
            elif target is not None:
                target.setdefault("attributes", {})[name] = field
            else:
                _put_field(fields, name, field)
        elif typ in SHAPES:
            skips[SHAPES[typ]] += 1
        elif typ == "labels":
            skips["span" if "start" in value else "labels"] += 1
        else:
            skips[typ or "unknown"] += 1
    return boxes, fields, skips, size


def _box(r: dict, value: dict, skips: Counter) -> dict:
    """A rectangle in percent of the original image -> a box in pixels, `[x, y, w, h]`.

    A rotated rectangle (rotation about its top-left corner, clockwise) becomes the
    axis-aligned box around it, counted as skipped `rotation`. Without the original
    image size the box cannot be placed: `bbox` is null (a contract error, never matched)
    and the percentages are kept in `attributes.bbox_percent`.
    """
    labels = value.get("rectanglelabels", value.get("labels"))
    labels = [x for x in labels if isinstance(x, str)] if isinstance(labels, list) else []
    box: dict[str, Any] = {"label": labels[0] if labels else None}
    attrs: dict[str, Any] = {}
    if len(labels) > 1:
        attrs["labels"] = labels
    x, y, w, h = (value.get(k) for k in ("x", "y", "width", "height"))
    size = _size(r)
    if size is not None and all(is_num(v) for v in (x, y, w, h)):
        ow, oh = size
        px, py, pw, ph = x * ow / 100.0, y * oh / 100.0, w * ow / 100.0, h * oh / 100.0
        rotation = value.get("rotation", 0)
        if is_num(rotation) and rotation % 360 != 0:
            px, py, pw, ph = _rotated_xywh(px, py, pw, ph, rotation)
            attrs["rotation"] = rotation
            skips["rotation"] += 1
        box["bbox"] = [px, py, pw, ph]
    else:
        box["bbox"] = None
        attrs["bbox_percent"] = [x, y, w, h]
    rot = r.get("image_rotation")
    if is_num(rot) and rot % 360 != 0:
        attrs["image_rotation"] = rot
        skips["image_rotation"] += 1
    if is_num(r.get("score")):
        attrs["score"] = r["score"]
    if attrs:
        box["attributes"] = attrs
    return box


def _rotated_xywh(x: float, y: float, w: float, h: float, degrees: float):
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    xs = [x + dx * c - dy * s for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    ys = [y + dx * s + dy * c for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


def _size(r: dict):
    ow, oh = r.get("original_width"), r.get("original_height")
    if is_num(ow) and is_num(oh) and ow > 0 and oh > 0:
        return ow, oh
    return None


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _choices(values: list[str], kind: str | None) -> Any:
    unique = list(dict.fromkeys(values))
    if kind == "multilabel":
        return unique
    # One value for a categorical (or undeclared) field; several stay a list, so a
    # categorical field with two choices is a contract error rather than a silent pick.
    return unique[0] if len(unique) == 1 else unique


def _texts(values: list[str], kind: str | None) -> Any:
    return values if kind == "multilabel" else "\n".join(values)


def _field_value(typ: str, value: dict, kind: str | None) -> Any:
    if typ == "textarea":
        if "text" not in value:
            return _NOTHING
        return _texts(_strings(value.get("text")), kind)
    if typ == "choices":
        if "choices" not in value:
            return _NOTHING
        return _choices(_strings(value.get("choices")), kind)
    if typ == "taxonomy":
        paths = value.get("taxonomy")
        if not isinstance(paths, list):
            return _NOTHING
        return _choices(["/".join(str(p) for p in path) if isinstance(path, list)
                         else str(path) for path in paths], kind)
    out = value.get(typ, _NOTHING)   # rating, number, datetime
    return out if out is None or isinstance(out, (str, int, float, bool)) else _NOTHING


def _put_field(fields: dict, name: str, value: Any) -> None:
    if name not in fields:
        fields[name] = value
        return
    old = fields[name]
    if isinstance(old, str) and isinstance(value, str):
        fields[name] = old + "\n" + value
    elif isinstance(old, list) and isinstance(value, list):
        fields[name] = list(dict.fromkeys([*old, *value]))
    else:
        fields[name] = [*(old if isinstance(old, list) else [old]),
                        *(value if isinstance(value, list) else [value])]


def _min_region_kind(region: dict) -> str:
    keys = region.keys()
    if "rectanglelabels" in keys:
        return "box"
    for key, kind in (("polygonlabels", "polygon"), ("keypointlabels", "points"),
                      ("brushlabels", "mask"), ("ellipselabels", "ellipse"),
                      ("polylinelabels", "polyline"), ("points", "polygon"),
                      ("rle", "mask"), ("radiusX", "ellipse")):
        if key in keys:
            return kind
    if {"x", "y", "width", "height"} <= keys:
        return "box"
    for typ in FIELD_TYPES:
        if typ in keys or (typ == "textarea" and "text" in keys):
            return typ
    if "labels" in keys:
        return "span" if "start" in keys else "labels"
    return "unknown"


def _min_field(value: Any, kind: str | None) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        return [value] if kind == "multilabel" else value
    if isinstance(value, (int, float, bool)):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        if kind == "free":
            return "\n".join(value)
        return _choices(value, kind) if kind != "multilabel" else list(dict.fromkeys(value))
    if isinstance(value, dict):
        typ = _min_region_kind(value)
        if typ in FIELD_TYPES:
            return _field_value(typ, value, kind)
    return _NOTHING


# -- identity -------------------------------------------------------------------------

def _native(item_id: str, uri: str | None, size, boxes: list, fields: dict, *,
            annotation_id: str | None, annotator_id: str, role: str,
            submitted_at: str) -> dict:
    image: dict[str, Any] = {}
    if uri is not None:
        image["uri"] = uri
    if size is not None:
        image["width"], image["height"] = size
    obj: dict[str, Any] = {"item_id": item_id}
    if annotation_id is not None:
        obj["annotation_id"] = annotation_id
    obj.update({"annotator_id": annotator_id, "role": role,
                "submitted_at": iso_time(submitted_at), "image": image,
                "boxes": boxes, "fields": fields})
    return obj


def _image_ref(data: dict) -> tuple[str | None, str | None]:
    """(key, value) of the image in task data: `image`, else the first value that looks
    like an image file."""
    value = data.get("image")
    if isinstance(value, str) and value.strip():
        return "image", value
    for key, value in data.items():
        if isinstance(value, str):
            name = base_name(value)
            if name and name.lower().endswith(IMAGE_EXT):
                return key, value
    return None, None


def _item_id(uri: str | None, tool_id: Any, options: ImportOptions) -> str | None:
    if options.item_id == "tool" and _scalar(tool_id):
        return str(tool_id)
    name = base_name(uri)
    if name:
        return name
    return str(tool_id) if _scalar(tool_id) else None


def _annotator(value: Any) -> str | None:
    if isinstance(value, dict):
        email = value.get("email")
        if isinstance(email, str) and email.strip():
            return email.strip()
        value = value.get("id")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _project(value: Any, default: str = "_") -> str:
    return str(value) if _scalar(value) and str(value) else default


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool) and value != ""


def _short_json(value: Any) -> str:
    return safe_dump(value)


def _no_item(line: int, tid: Any, entry: Any) -> Bad:
    return Bad(line, f"task {tid} has no image in 'data' and no 'id' to name the item",
               _short_json(entry))


def _no_annotator(path: Path, line: int, what: str, entry: dict, key: str) -> FileUnusable:
    value = entry.get(key)
    if key not in entry:
        why = f"it has no '{key}'"
    elif isinstance(value, dict):
        parts = ", ".join(f"'{k}' is {_kind(value[k])}" if k in value else f"no '{k}'"
                          for k in ("email", "id"))
        why = f"its '{key}' names no one ({parts})"
    else:
        why = (f"its '{key}' is {_json_kind(value)} {short_json(value)}, not a user id "
               "(an integer or string) or an object with 'email' or 'id'")
    return FileUnusable(path, f"no annotator for {what} (line {line}): {why}; pass "
                        "--annotator NAME")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str) and not value.strip():
        return "empty"
    return f"{_json_kind(value)} {short_json(value)}"


def _no_time(path: Path, line: int, what: str, entry: dict) -> FileUnusable:
    if "created_at" not in entry:
        why = "it has no 'created_at'"
    else:
        value = entry["created_at"]
        why = f"its 'created_at' is {_kind(value)}"
    return FileUnusable(path, f"no submission time for {what} (line {line}): {why}; pass "
                        "--submitted-at 2026-01-05T09:00:00Z (ISO 8601)")

