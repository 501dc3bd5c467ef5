"""COCO: instances files (`images`, `annotations` with `bbox`, `categories`) and captions
files, alone or merged by image.

One record per entry of `images` (an image without objects is an annotation with no
boxes); with several captions of one image, one record per caption. `line` is the line
where the image's entry starts. COCO names neither annotator nor time, so both come from
the options (`--annotator`, `--submitted-at`). Each file is read into memory as text and
its `images` and `annotations` decoded entry by entry; the objects of all images are held
until the end (COCO does not group them by image).
"""

from __future__ import annotations

import mmap
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

from metrics.importers import ImportOptions
from metrics.importers.common import (
    JsonError,
    base_name,
    is_num,
    iso_time,
    json_unusable,
    load_json_text,
    make_record,
    not_object,
    safe_dump,
)
from metrics.ingest import Bad, Event, FileUnusable, Skip, _json_kind


def coco_role(path: Path) -> str:
    """`captions` for a file with captions and no boxes, else `instances`.

    A byte search, not a parse: used only to decide which COCO files given together
    merge (a captions file into an instances file).
    """
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
            captions = m.find(b'"caption"') != -1
            boxes = m.find(b'"bbox"') != -1
    except (OSError, ValueError):   # ValueError: an empty file cannot be mapped
        return "instances"
    return "captions" if captions and not boxes else "instances"


def read_coco(path: Path, on_bytes: Callable[[int], None] | None = None, *,
              options: ImportOptions | None = None) -> Iterator[Event]:
    """Stream the records of a COCO file (and of `options.merge`, merged by image id).

    Raises FileUnusable without `--annotator` / `--submitted-at`, or when a file is not
    COCO JSON.
    """
    options = options or ImportOptions()
    if not options.annotator:
        raise FileUnusable(path, "no annotator in this COCO file (COCO does not record who "
                           "labeled): pass --annotator NAME")
    if not options.submitted_at:
        raise FileUnusable(path, "no submission time in this COCO file (COCO does not "
                           "record when): pass --submitted-at 2026-01-05T09:00:00Z (ISO 8601)")
    images: dict[Any, tuple[int, dict, Path]] = {}
    pending: list[tuple[int, dict]] = []
    categories: dict[Any, Any] = {}
    bad: list[Bad] = []
    for f in (path, *options.merge):
        _read_file(f, on_bytes, images, pending, categories, bad)

    objects: dict[Any, list[tuple[int, dict]]] = defaultdict(list)
    captions: dict[Any, list[tuple[int, dict]]] = defaultdict(list)
    for line, ann in pending:
        key = _key(ann.get("image_id"))
        if key is None:
            bad.append(Bad(line, _bad_id(f"annotation {_short(ann.get('id'))}",
                                         ann.get("image_id"), "image_id"), safe_dump(ann)))
        elif key not in images:
            bad.append(Bad(line, f"annotation {_short(ann.get('id'))} refers to image_id "
                           f"{_short(ann.get('image_id'))}, which is not in 'images'",
                           safe_dump(ann)))
        elif "caption" in ann and "bbox" not in ann:
            captions[key].append((line, ann))
        else:
            objects[key].append((line, ann))
    del pending
    yield from bad

    annotator = options.annotator
    when = iso_time(options.submitted_at)
    for key, (line, img, _f) in images.items():
        tool_id = img.get("id")
        uri = img.get("file_name") if isinstance(img.get("file_name"), str) else None
        name = base_name(uri)
        item_id = str(tool_id) if options.item_id == "tool" or not name else name
        image: dict[str, Any] = {}
        if uri is not None:
            image["uri"] = uri
        for dim in ("width", "height"):
            if dim in img:
                image[dim] = img[dim]
        objs = objects.pop(key, [])
        boxes, skips = _boxes(objs, categories)
        for kind, n in sorted(skips.items()):
            yield Skip(line, kind, count=n)
        caps = sorted(captions.pop(key, []), key=lambda c: (_order(c[1].get("id")), c[0]))
        raw = {"image": img, "annotations": [a for _, a in objs]}
        base = {"item_id": item_id, "role": "annotator", "submitted_at": when,
                "image": image}
        if len(caps) <= 1:
            fields = {"caption": caps[0][1].get("caption")} if caps else {}
            yield make_record(line, _native(base, annotator, tool_id, boxes, fields),
                              {**raw, "captions": [c for _, c in caps]})
            continue
        # Several captions (COCO has about five, by different workers): one annotation
        # each, so caption agreement can be measured. The boxes are the same on each.
        for i, (_cline, cap) in enumerate(caps, start=1):
            obj = _native(base, f"{annotator}#{i}", tool_id, [dict(b) for b in boxes],
                          {"caption": cap.get("caption")})
            yield make_record(line, obj, {**raw, "captions": [cap]})


def _native(base: dict, who: str, tool_id: Any, boxes: list, fields: dict) -> dict:
    return {"item_id": base["item_id"], "annotation_id": f"coco:{who}:{tool_id}",
            "annotator_id": who, "role": base["role"], "submitted_at": base["submitted_at"],
            "image": base["image"], "boxes": boxes, "fields": fields}


def _read_file(f: Path, on_bytes, images: dict, pending: list, categories: dict,
               bad: list) -> None:
    sc = load_json_text(f, on_bytes)
    found = False
    try:
        if sc.peek() != "{":
            raise FileUnusable(f, "not a COCO file: the top level is not a JSON object "
                               "(COCO results lists are not supported)")
        for key in sc.members():
            if key == "images" and sc.peek() == "[":
                found = True
                for start in sc.items():
                    line = sc.line_at(start)
                    img = sc.value()
                    if not isinstance(img, dict):
                        bad.append(not_object(line, "image", img))
                        continue
                    k = _key(img.get("id"))
                    if k is None:
                        bad.append(Bad(line, _bad_id("image", img.get("id")),
                                       safe_dump(img)))
                    elif k in images:
                        if images[k][2] == f:
                            bad.append(Bad(line, f"image id {k!r} repeats line "
                                           f"{images[k][0]}", safe_dump(img)))
                        # else: the same image listed again by a merged captions file
                    else:
                        images[k] = (line, img, f)
            elif key == "annotations" and sc.peek() == "[":
                found = True
                for start in sc.items():
                    line = sc.line_at(start)
                    ann = sc.value()
                    if isinstance(ann, dict):
                        pending.append((line, ann))
                    else:
                        bad.append(not_object(line, "annotation", ann))
            elif key == "categories" and sc.peek() == "[":
                for cat in sc.value():
                    if isinstance(cat, dict) and _key(cat.get("id")) is not None:
                        categories.setdefault(_key(cat["id"]), cat.get("name"))
            else:
                sc.value()
        sc.end()
    except JsonError as exc:
        raise json_unusable(f, sc, exc, "COCO") from None
    if not found:
        raise FileUnusable(f, "not a COCO file: no 'images' or 'annotations' list at the "
                           "top level")


def _boxes(objs: list[tuple[int, dict]], categories: dict) -> tuple[list[dict], Counter]:
    boxes: list[dict] = []
    skips: Counter = Counter()
    for _line, a in objs:
        if _crowd(a.get("iscrowd")):
            skips["crowd"] += 1
            continue
        seg = a.get("segmentation")
        if (isinstance(seg, list) and seg) or isinstance(seg, dict):
            skips["segmentation"] += 1      # the outline; the object stays as its bbox
        keypoints = a.get("keypoints")
        if isinstance(keypoints, list) and keypoints:
            skips["keypoints"] += 1
        cat = a.get("category_id")
        label = categories.get(_key(cat))
        attrs = dict(a["attributes"]) if isinstance(a.get("attributes"), dict) else {}
        if not isinstance(label, str) or not label:
            label = None
            attrs["category_id"] = cat
        if is_num(a.get("score")):
            attrs["score"] = a["score"]
        box: dict[str, Any] = {"label": label, "bbox": a.get("bbox")}
        if attrs:
            box["attributes"] = attrs
        boxes.append(box)
    return boxes, skips


def _crowd(value: Any) -> bool:
    """`iscrowd` as COCO writers spell it: 0/1, booleans, "0"/"1", "false"/"true"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value == 1
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true")
    return False


def _key(value: Any) -> Any:
    """An id as a dict key: integers, and strings of ASCII digits as the same integers.

    Only ASCII: `str.isdigit()` also holds for `"²"` or `"١"`, which `int()` refuses or
    reads as another number; such ids stay strings, matched as written, as do strings too
    long for `int()` (over 4,300 digits).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value:
        if value.isascii() and value.isdigit():
            try:
                return int(value)
            except ValueError:
                pass
        return value
    return None


def _bad_id(what: str, value: Any, field: str = "id") -> str:
    """Why an entry's id cannot be used, naming the field."""
    if value is None:
        return f"{what} has no '{field}' (an integer or string)"
    return (f"{what} '{field}' is {_json_kind(value)} {_short(value)}, not an integer or "
            "a non-empty string")


def _order(value: Any) -> tuple:
    k = _key(value)
    return (0, k, "") if isinstance(k, int) else (1, 0, str(k))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"
