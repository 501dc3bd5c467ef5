"""CVAT for images 1.1 XML: one record per `<image>`.

Parsed with defusedxml, streaming (`iterparse`, each `<image>` cleared once converted),
so a large file never sits in memory and a document type declaration (how entity
expansion bombs and external entities are written) is refused before anything is read.
`line` is the line where the `<image ...>` start tag ends.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden
from defusedxml.ElementTree import ParseError, iterparse

from metrics.importers import ImportOptions
from metrics.importers.common import (
    base_name,
    iso_time,
    make_record,
    safe_dump,
    time_problem,
)
from metrics.ingest import Bad, Event, FileUnusable, Skip

# Shapes this tool does not compare: counted as skipped by their tag name.
SHAPES = ("polygon", "polyline", "points", "mask", "skeleton", "ellipse", "cuboid")
_PROGRESS_BYTES = 1 << 16
# A number as CVAT writes one: ASCII digits only (float() would also read '١٢' or '1_0').
_NUMBER = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*",
                     re.ASCII)
_INT64 = 1 << 63


class _LineSource:
    """A file object for `iterparse` that hands it one line per read, so the events of
    a read are known to come from line `current`."""

    def __init__(self, fh: BinaryIO, on_bytes: Callable[[int], None] | None):
        self.fh = fh
        self.on_bytes = on_bytes
        self.done = 0           # complete lines read
        self.current = 1        # the line the last read came from
        self._unreported = 0

    def read(self, size: int = -1) -> bytes:
        data = self.fh.readline(size if size and size > 0 else -1)
        self.current = self.done + 1
        if data.endswith(b"\n"):
            self.done += 1
        if self.on_bytes is not None:
            self._unreported += len(data)
            if self._unreported >= _PROGRESS_BYTES or not data:
                self.on_bytes(self._unreported)
                self._unreported = 0
        return data


@dataclass
class _Meta:
    """What `<meta>` says: who, when, the id scope and the attribute types."""
    dumped: str | None = None
    dumped_line: int = 0
    scope: str | None = None
    default_assignee: str | None = None
    assignees: dict[str, str] = field(default_factory=dict)      # task id -> username
    attr_types: dict[tuple[str, str], str] = field(default_factory=dict)
    has_tag_labels: bool = False

    @classmethod
    def parse(cls, meta: Any) -> _Meta:
        out = cls(dumped=_text(meta.find("dumped")))
        project, job, task = meta.find("project"), meta.find("job"), meta.find("task")
        for prefix, elem in (("p", project), ("j", job), ("t", task)):
            ident = _text(elem.find("id")) if elem is not None else None
            if ident:
                out.scope = f"{prefix}{ident}"
                break
        tasks = list(meta.iter("task"))
        for t in tasks:
            tid, who = _text(t.find("id")), _person(t.find("assignee"))
            if tid and who:
                out.assignees[tid] = who
        candidates = [_person(job.find("assignee")) if job is not None else None,
                      _person(tasks[0].find("assignee")) if len(tasks) == 1 else None,
                      _person(project.find("assignee")) if project is not None else None]
        out.default_assignee = next((c for c in candidates if c), None)
        for label in meta.iter("label"):
            lname = _text(label.find("name")) or ""
            if _text(label.find("type")) == "tag":
                out.has_tag_labels = True
            for attr in label.iter("attribute"):
                aname, kind = _text(attr.find("name")), _text(attr.find("input_type"))
                if aname and kind:
                    out.attr_types[(lname, aname)] = kind
        return out


def read_cvat(path: Path, on_bytes: Callable[[int], None] | None = None, *,
              options: ImportOptions | None = None) -> Iterator[Event]:
    """Stream the records of a CVAT for images 1.1 XML export.

    Raises FileUnusable for XML that is not well-formed, has a DOCTYPE (entity
    definitions, external references), is not CVAT for images, or names no annotator /
    time when `--annotator` / `--submitted-at` were not given.
    """
    options = options or ImportOptions()
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise FileUnusable(path, f"cannot be read: {exc.strerror or exc}") from None
    with fh:
        src = _LineSource(fh, on_bytes)
        try:
            yield from _walk(path, src, options)
        except DefusedXmlException as exc:
            raise FileUnusable(path, _refusal(exc, src.current)) from None
        except ParseError as exc:
            raise FileUnusable(path, f"not well-formed XML: {exc}") from None


def _refusal(exc: DefusedXmlException, line: int) -> str:
    if isinstance(exc, DTDForbidden):
        what = ("it has a document type declaration (<!DOCTYPE>), where entity expansion "
                "bombs and external entities are defined")
    elif isinstance(exc, EntitiesForbidden):
        what = f"it defines the entity {exc.name!r}"
    else:
        what = "it refers to an external resource"
    return (f"refused as unsafe XML (line {line}): {what}; CVAT exports have none, so "
            "this file was not written by CVAT or was altered")


def _walk(path: Path, src: _LineSource, options: ImportOptions) -> Iterator[Event]:
    depth = 0
    root = None
    meta = _Meta()
    image_line = dumped_line = 0
    for event, elem in iterparse(src, events=("start", "end"), forbid_dtd=True,
                                 forbid_entities=True, forbid_external=True):
        if event == "start":
            depth += 1
            if depth == 1:
                root = elem
                if elem.tag != "annotations":
                    raise FileUnusable(path, f"the XML root is <{elem.tag}>, not "
                                       "<annotations>: not a CVAT for images 1.1 export")
            elif depth == 2 and elem.tag == "image":
                image_line = src.current
            elif depth == 3 and elem.tag == "dumped":
                dumped_line = src.current
            elif depth == 2 and elem.tag == "track":
                raise FileUnusable(path, f"<track> at line {src.current}: this is a CVAT "
                                   "for video export; export as 'CVAT for images 1.1'")
            continue
        depth -= 1
        if depth != 1:
            continue
        if elem.tag == "meta":
            meta = _Meta.parse(elem)
            meta.dumped_line = dumped_line
        elif elem.tag == "image":
            yield from _image(path, elem, image_line, meta, options)
        elif elem.tag != "version":
            yield Skip(src.current, elem.tag)
        root.clear()    # converted: drop it, so memory stays flat


def _image(path: Path, elem: Any, line: int, meta: _Meta, options: ImportOptions
           ) -> Iterator[Event]:
    attrib = elem.attrib
    name, iid = attrib.get("name"), attrib.get("id")
    subset, task_id = attrib.get("subset") or None, attrib.get("task_id") or None
    base = base_name(name)
    ident = (iid or base) if options.item_id == "tool" else (base or iid)
    if not ident:
        yield Bad(line, "<image> has neither 'name' nor 'id'", safe_dump(_element_json(elem)))
        return
    annotator = (options.annotator or (meta.assignees.get(task_id) if task_id else None)
                 or meta.default_assignee)
    if not annotator:
        raise FileUnusable(path, "no annotator: the file names no job assignee; pass "
                           "--annotator NAME")
    when = options.submitted_at or meta.dumped
    if not when:
        raise FileUnusable(path, "no submission time: the file has no <dumped> date; pass "
                           "--submitted-at 2026-01-05T09:00:00Z (ISO 8601)")
    if not options.submitted_at and time_problem(when):
        # The one date of the whole file: every image would fail on it, so say where.
        raise FileUnusable(path, f"no submission time: <dumped> at line {meta.dumped_line} "
                           f"is not an ISO 8601 date ({when!r}); pass --submitted-at "
                           "2026-01-05T09:00:00Z (ISO 8601)")
    scope = meta.scope or f"@{annotator}"
    key_parts = (subset, f"t{task_id}" if task_id and scope != f"t{task_id}" else None,
                 iid if iid is not None else name)
    image: dict[str, Any] = {"uri": name} if name is not None else {}
    for dim in ("width", "height"):
        if dim in attrib:
            text = attrib[dim]
            if _NUMBER.fullmatch(text) and not abs(Decimal(text.strip())) < _INT64:
                yield Bad(line, f"<image> {dim}={text!r} is too large for an image size "
                          "(beyond a 64-bit integer)", safe_dump(_element_json(elem)))
                return
            image[dim] = _number(text)
    boxes: list[dict] = []
    tags: list[str] = []
    skips: Counter = Counter()
    for child in elem:
        if child.tag == "box":
            boxes.append(_box(child, meta, skips))
        elif child.tag == "tag":
            label = child.get("label")
            if label:
                tags.append(label)
            n_attrs = len(child.findall("attribute"))
            if n_attrs:
                skips["tag_attribute"] += n_attrs
        else:
            skips[child.tag] += 1       # polygon, polyline, points, mask, skeleton, ...
    fields: dict[str, Any] = {}
    if tags or meta.has_tag_labels:
        fields["tags"] = list(dict.fromkeys(tags))
    obj = {"item_id": f"{subset}/{ident}" if subset else ident,
           "annotation_id": f"cvat:{scope}:" + "/".join(p for p in key_parts if p),
           "annotator_id": annotator, "role": "annotator",
           "submitted_at": iso_time(when), "image": image, "boxes": boxes, "fields": fields}
    for kind, n in sorted(skips.items()):
        yield Skip(line, kind, count=n)
    yield make_record(line, obj, _element_json(elem))


def _box(elem: Any, meta: _Meta, skips: Counter) -> dict:
    """`xtl ytl xbr ybr` -> `[x, y, w, h]`; a rotated box (degrees clockwise about its
    centre) becomes the axis-aligned box around it, counted as skipped `rotation`."""
    label = elem.get("label") or None
    attrs: dict[str, Any] = {"occluded": elem.get("occluded") == "1"}
    for attr in elem.findall("attribute"):
        aname = attr.get("name")
        if aname:
            attrs[aname] = _typed(meta.attr_types.get((label or "", aname)), attr.text or "")
    coords = [_float(elem.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")]
    if any(c is None for c in coords):
        attrs["cvat_box"] = {k: elem.get(k) for k in ("xtl", "ytl", "xbr", "ybr")}
        return {"label": label, "bbox": None, "attributes": attrs}
    x1, y1, x2, y2 = coords
    x, y, w, h = x1, y1, x2 - x1, y2 - y1
    rotation = _float(elem.get("rotation"))
    if rotation is not None and rotation % 360 != 0:
        t = math.radians(rotation)
        rw = abs(w * math.cos(t)) + abs(h * math.sin(t))
        rh = abs(w * math.sin(t)) + abs(h * math.cos(t))
        x, y, w, h = x + w / 2 - rw / 2, y + h / 2 - rh / 2, rw, rh
        attrs["rotation"] = rotation
        skips["rotation"] += 1
    return {"label": label, "bbox": [x, y, w, h], "attributes": attrs}


def _typed(kind: str | None, text: str) -> Any:
    """Attribute text by the label's declared input type (checkbox, number)."""
    if kind == "checkbox":
        return text.strip().lower() == "true"
    if kind == "number":
        value = _float(text)
        return text if value is None else value
    return text


def _float(text: Any) -> float | None:
    if text is None or not _NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None



def _number(text: str) -> Any:
    """A whole number as that exact integer (no detour through a double), others as
    floats, text that is not a number as written."""
    value = _float(text)
    if value is None:
        return text
    exact = Decimal(text.strip())
    return int(exact) if exact == exact.to_integral_value() else value


def _text(elem: Any) -> str | None:
    if elem is None or elem.text is None:
        return None
    return elem.text.strip() or None


def _person(elem: Any) -> str | None:
    """An `<assignee>`: its `<username>`, or its text in older exports."""
    if elem is None:
        return None
    return _text(elem.find("username")) or _text(elem)


def _element_json(elem: Any, depth: int = 0) -> dict:
    """The element as JSON for `raw`: tag, attributes, text, children (32 levels)."""
    out: dict[str, Any] = {"tag": elem.tag}
    if elem.attrib:
        out["attributes"] = dict(elem.attrib)
    text = (elem.text or "").strip()
    if text:
        out["text"] = text
    if len(elem):
        if depth >= 32:
            out["children_omitted"] = len(elem)
        else:
            out["children"] = [_element_json(c, depth + 1) for c in elem]
    return out
