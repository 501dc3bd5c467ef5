"""Ingest exports into the project database: parse, quarantine, check, load.

Every record of a file ends up in exactly one bucket, so that
`records = loaded + duplicates + quarantined + skipped_records` holds per file:

- **quarantined**: it cannot be placed (not a JSON object, no `item_id`, ...), kept with
  its line number, reason and raw text;
- **duplicate**: identical content to an annotation already stored or seen earlier in the
  same export (counted, not loaded);
- **skipped**: a record the tool marks as not an annotation (cancelled, crowd region);
- **loaded**: everything else, including records that break the contract (those are
  loaded with their errors: a schema error is a measurement, not a reason to drop data).

One export loads in one transaction, so a failure or Ctrl-C leaves the database as it
was. Parsing streams: rows go to staging tables in Arrow batches of `BATCH_ROWS`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from zoneinfo import ZoneInfo

import duckdb
import jsonschema_rs
import orjson
import pyarrow as pa

from metrics import store
from metrics.config import ProjectConfig
from metrics.policy import check_fields

MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 256
BATCH_ROWS = 20_000
RAW_KEEP_CHARS = 4000           # quarantine keeps this much of a bad line
EXAMPLES_KEPT = 20
ROLES = ("annotator", "reviewer", "gold", "model")
_BOM = b"\xef\xbb\xbf"


class FileUnusable(Exception):
    """A file that cannot be used at all (missing, a directory, not its format)."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


# -- what a reader yields -------------------------------------------------------------

@dataclass(slots=True)
class Record:
    """One annotation in native shape; `original` is the tool's object (non-native)."""
    line: int
    obj: dict
    original: Any = None


@dataclass(slots=True)
class Bad:
    line: int
    reason: str
    raw: str


@dataclass(slots=True)
class Skip:
    """Something not loaded on purpose. `record` True: a whole record (counts toward
    `skipped_records`); False: a part of a record (a polygon, a crowd region)."""
    line: int
    kind: str
    record: bool = False
    count: int = 1


Event = Record | Bad | Skip


def _raw_text(raw: bytes) -> str:
    return raw[: RAW_KEEP_CHARS * 4].decode("utf-8", "replace")[:RAW_KEEP_CHARS]


def _depth_exceeds(raw: bytes, limit: int) -> bool:
    # Only called when the line holds more than `limit` brackets, so rare.
    depth = 0
    in_str = esc = False
    for b in raw:
        if in_str:
            if esc:
                esc = False
            elif b == 0x5C:
                esc = True
            elif b == 0x22:
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif b in (0x5D, 0x7D):
            depth -= 1
    return False


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def parse_line(raw: bytes, line: int) -> Record | Bad:
    """Parse one non-blank native line into a Record or say why it is quarantined."""
    if len(raw) > MAX_LINE_BYTES:
        return Bad(line, f"line is {len(raw):,} bytes, over the 16 MiB limit", _raw_text(raw))
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Bad(line, f"invalid UTF-8 at byte {exc.start}", _raw_text(raw))
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth_exceeds(raw, MAX_DEPTH):
        return Bad(line, f"JSON nested deeper than {MAX_DEPTH} levels", _raw_text(raw))
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = f"not valid JSON: {exc}"
        try:
            # Python's json accepts NaN/Infinity; orjson (RFC 8259) does not.
            json.loads(raw)
            reason = "NaN or Infinity is not valid JSON (RFC 8259)"
        except (ValueError, RecursionError):
            pass
        return Bad(line, reason, _raw_text(raw))
    if not isinstance(obj, dict):
        return Bad(line, f"line is {_json_kind(obj)}, not a JSON object", _raw_text(raw))
    return Record(line, obj)


def read_native(path: Path, on_bytes: Callable[[int], None] | None = None) -> Iterator[Event]:
    """Stream a native JSON Lines export. Blank lines are not records."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if on_bytes is not None:
                on_bytes(len(raw))
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            yield parse_line(raw, lineno)


# -- summaries ------------------------------------------------------------------------

@dataclass
class FileSummary:
    path: str
    format: str = "native"
    records: int = 0
    loaded: int = 0
    duplicates: int = 0
    quarantined: int = 0
    skipped_records: int = 0
    new_versions: int = 0
    boxes: int = 0
    skipped: Counter = field(default_factory=Counter)
    by_role: Counter = field(default_factory=Counter)
    schema_error_annotations: int = 0
    policy_error_annotations: int = 0
    already_ingested: bool = False
    errors_by: Counter = field(default_factory=Counter)          # (pointer, keyword) -> n
    error_examples: list = field(default_factory=list)          # (line, pointer, kw, message)
    quarantine_examples: list = field(default_factory=list)     # (line, reason)

    @property
    def balanced(self) -> bool:
        return self.records == (
            self.loaded + self.duplicates + self.quarantined + self.skipped_records
        )

    def to_json(self) -> dict:
        return {
            "path": self.path, "format": self.format, "records": self.records,
            "loaded": self.loaded, "quarantined": self.quarantined,
            "duplicates": self.duplicates, "skipped_records": self.skipped_records,
            "new_versions": self.new_versions, "boxes": self.boxes,
            "skipped": dict(sorted(self.skipped.items())),
            "by_role": dict(sorted(self.by_role.items())),
            "schema_error_annotations": self.schema_error_annotations,
            "policy_error_annotations": self.policy_error_annotations,
            "already_ingested": self.already_ingested,
        }


@dataclass
class IngestSummary:
    files: list[FileSummary] = field(default_factory=list)

    def total(self, name: str) -> int:
        return sum(getattr(f, name) for f in self.files)

    def counter(self, name: str) -> Counter:
        out: Counter = Counter()
        for f in self.files:
            out.update(getattr(f, name))
        return out

    def to_json(self) -> dict:
        return {
            "records": self.total("records"),
            "loaded": self.total("loaded"),
            "quarantined": self.total("quarantined"),
            "duplicates": self.total("duplicates"),
            "skipped_records": self.total("skipped_records"),
            "new_versions": self.total("new_versions"),
            "boxes": self.total("boxes"),
            "skipped": dict(sorted(self.counter("skipped").items())),
            "by_role": dict(sorted(self.counter("by_role").items())),
            "schema_error_annotations": self.total("schema_error_annotations"),
            "policy_error_annotations": self.total("policy_error_annotations"),
            "files": [f.to_json() for f in self.files],
        }


# -- checking one record ----------------------------------------------------------------

def _pointer(path: Iterable[Any], *, star: bool) -> str:
    parts = []
    for p in path:
        if isinstance(p, int):
            parts.append("*" if star else str(p))
        else:
            parts.append(str(p).replace("~", "~0").replace("/", "~1"))
    return "/" + "/".join(parts) if parts else ""


def derive_annotation_id(item_id: str, annotator_id: str, submitted_at: str) -> str:
    digest = hashlib.sha1(
        "\x1f".join((item_id, annotator_id, submitted_at)).encode("utf-8")
    ).hexdigest()
    return "d-" + digest[:16]


def iso_week(ts: dt.datetime, tz: ZoneInfo) -> str:
    year, week, _ = ts.astimezone(tz).isocalendar()
    return f"{year}-W{week:02d}"


def parse_timestamp(value: str, tz: ZoneInfo) -> dt.datetime:
    ts = dt.datetime.fromisoformat(value)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=tz)
    return ts.astimezone(dt.timezone.utc)


class _Batch:
    """Column buffers for one staging flush."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.ann = {c: [] for c, _ in store.ANNOTATION_COLUMNS}
        self.box = {c: [] for c, _ in store.BOX_COLUMNS}
        self.err = {c: [] for c, _ in store.ERROR_COLUMNS}
        self.vio = {c: [] for c, _ in store.VIOLATION_COLUMNS}
        self.bad = {c: [] for c, _ in store.QUARANTINE_COLUMNS}

    def __len__(self) -> int:
        return len(self.ann["ann_key"]) + len(self.bad["line"])


_ARROW_TYPES = {
    "BIGINT": pa.int64(), "INTEGER": pa.int32(), "VARCHAR": pa.string(),
    "BOOLEAN": pa.bool_(), "DOUBLE": pa.float64(), "JSON": pa.string(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
}


def _arrow_schema(columns: tuple[tuple[str, str], ...]) -> pa.Schema:
    return pa.schema([(c, _ARROW_TYPES[t.split()[0]]) for c, t in columns])


_SCHEMAS = {name: _arrow_schema(cols) for name, cols in store.TABLES.items()}


class Checker:
    """Turns Records into rows: contract errors, policy violations, boxes, versions.

    Holds the state a schema cannot: image size of each item, ids seen in this export.
    """

    def __init__(self, config: ProjectConfig, known_items: dict[str, tuple] | None = None):
        self.config = config
        self.tz = config.tz
        self.validator = jsonschema_rs.Draft202012Validator(config.contract_schema())
        # Shared, not copied: the files of one ingest see each other's items.
        self.items: dict[str, tuple[float, float]] = (
            known_items if known_items is not None else {})
        self.new_items: dict[str, tuple[float, float, int]] = {}
        self.seen: dict[str, tuple[str, int]] = {}   # annotation_id -> (content hash, line)
        self.labels = config.labels

    # The returned list holds (pointer, instance, keyword, message).
    def contract_errors(self, obj: dict) -> list[tuple[str, str, str, str]]:
        if self.validator.is_valid(obj):
            return []
        out = []
        for e in self.validator.iter_errors(obj):
            path = list(e.instance_path)
            keyword = next((p for p in reversed(e.schema_path) if isinstance(p, str)), "schema")
            if keyword == "required":
                prop = getattr(e.kind, "property", None)
                if isinstance(prop, str):
                    path.append(prop)
            out.append((_pointer(path, star=True), _pointer(path, star=False), keyword,
                         e.message))
        return out

    def check(self, rec: Record, ann_key: int, fs: FileSummary, batch: _Batch | None,
              export_id: int) -> Bad | None:
        obj = rec.obj
        placed = []
        for name in ("item_id", "annotator_id", "submitted_at"):
            value = obj.get(name)
            if value is None:
                return Bad(rec.line, f"missing required field '{name}'", _dump(obj))
            if not isinstance(value, str) or not value.strip():
                return Bad(rec.line, f"'{name}' must be a non-empty string, got "
                           f"{_json_kind(value)} {_short(value)}", _dump(obj))
            placed.append(value)
        item_id, annotator_id, submitted_raw = placed
        try:
            submitted = parse_timestamp(submitted_raw, self.tz)
        except ValueError:
            return Bad(rec.line, f"'submitted_at' is not an ISO 8601 date: "
                       f"{_short(submitted_raw)}", _dump(obj))

        errors = self.contract_errors(obj)

        def extra(pointer: str, instance: str, keyword: str, message: str) -> None:
            errors.append((pointer, instance, keyword, message))

        content = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        chash = hashlib.blake2b(content, digest_size=16).hexdigest()
        ann_id = obj.get("annotation_id")
        if ann_id is None:
            ann_id = derive_annotation_id(item_id, annotator_id, submitted_raw)
        elif not isinstance(ann_id, str) or not ann_id:
            extra("/annotation_id", "/annotation_id", "type",
                  f"annotation_id must be a non-empty string, got {_short(ann_id)}")
            ann_id = derive_annotation_id(item_id, annotator_id, submitted_raw)
        prev = self.seen.get(ann_id)
        if prev is not None:
            if prev[0] == chash:
                fs.duplicates += 1
                return None
            extra("/annotation_id", "/annotation_id", "uniqueId",
                  f"annotation_id {ann_id!r} repeats line {prev[1]} with different content")
        self.seen[ann_id] = (chash, rec.line)

        role = obj.get("role", "annotator")
        if role not in ROLES:
            extra("/role", "/role", "enum", f"role must be one of {', '.join(ROLES)}, "
                  f"got {_short(role)}")
            role = str(role)
        flags = {}
        for name in ("prefilled", "reviewed"):
            value = obj.get(name, False)
            if not isinstance(value, bool):
                extra(f"/{name}", f"/{name}", "type", f"{name} must be a boolean")
                value = False
            flags[name] = value

        image = obj.get("image")
        width = height = None
        uri = None
        if isinstance(image, dict):
            uri = image.get("uri") if isinstance(image.get("uri"), str) else None
            w, h = image.get("width"), image.get("height")
            if _is_num(w) and _is_num(h) and w > 0 and h > 0:
                width, height = float(w), float(h)
        if width is not None:
            known = self.items.get(item_id)
            if known is None:
                self.items[item_id] = (width, height)
                self.new_items[item_id] = (width, height, ann_key)
            elif known != (width, height):
                extra("/image", "/image", "imageSize",
                      f"image is {width:g}x{height:g} but item {item_id!r} was first "
                      f"ingested at {known[0]:g}x{known[1]:g}")

        box_labels = set()
        boxes = obj.get("boxes")
        n_boxes = 0
        if isinstance(boxes, list):
            for idx, box in enumerate(boxes):
                if not isinstance(box, dict):
                    continue
                label = box.get("label") if isinstance(box.get("label"), str) else None
                bbox = box.get("bbox")
                x = y = w = h = None
                matchable = False
                if (type(bbox) is list and len(bbox) == 4
                        and all(type(v) is int or (type(v) is float and math.isfinite(v))
                                for v in bbox)):
                    x, y, w, h = float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])
                    if w <= 0 or h <= 0:
                        extra("/boxes/*/bbox", f"/boxes/{idx}/bbox", "positiveSize",
                              f"box {idx} has non-positive size {w:g}x{h:g}")
                    else:
                        matchable = label is not None
                        if width is not None and (
                            x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1
                        ):
                            extra("/boxes/*/bbox", f"/boxes/{idx}/bbox", "withinImage",
                                  f"box {idx} [{x:g}, {y:g}, {w:g}, {h:g}] extends outside "
                                  f"the {width:g}x{height:g} image (1 px tolerance)")
                elif not any(err[1].startswith(f"/boxes/{idx}") for err in errors):
                    # Whatever the project's schema says, a box needs [x, y, w, h].
                    extra("/boxes/*/bbox", f"/boxes/{idx}/bbox", "bboxFormat",
                          f"box {idx} has no usable bbox (need [x, y, w, h] in pixels), "
                          f"got {_short(bbox)}")
                if label is not None:
                    box_labels.add(label)
                n_boxes += 1
                if batch is not None:
                    attrs = box.get("attributes")
                    b = batch.box
                    b["ann_key"].append(ann_key)
                    b["box_idx"].append(idx)
                    b["label"].append(label)
                    b["x"].append(x)
                    b["y"].append(y)
                    b["w"].append(w)
                    b["h"].append(h)
                    b["attributes"].append(orjson.dumps(attrs).decode()
                                           if attrs is not None else None)
                    b["matchable"].append(matchable)

        fields = obj.get("fields")
        violations = []
        if isinstance(fields, dict) and self.config.policy:
            violations = check_fields(self.config.policy, fields, box_labels,
                                      labels=self.labels)
        n_err = sum(1 for v in violations if v.severity == "error")

        fs.loaded += 1
        fs.boxes += n_boxes
        fs.by_role[role] += 1
        if errors:
            fs.schema_error_annotations += 1
            for pointer, _inst, keyword, message in errors:
                fs.errors_by[(pointer, keyword)] += 1
                if len(fs.error_examples) < EXAMPLES_KEPT:
                    fs.error_examples.append((rec.line, pointer, keyword, message))
        if n_err:
            fs.policy_error_annotations += 1
        if batch is None:
            return None

        a = batch.ann
        a["ann_key"].append(ann_key)
        a["annotation_id"].append(ann_id)
        a["version"].append(1)
        a["is_current"].append(True)
        a["export_id"].append(export_id)
        a["line"].append(rec.line)
        a["item_id"].append(item_id)
        a["annotator_id"].append(annotator_id)
        a["role"].append(role)
        a["submitted_at"].append(submitted)
        a["week"].append(iso_week(submitted, self.tz))
        gv = obj.get("guideline_version")
        a["guideline_version"].append(gv if isinstance(gv, str) else None)
        a["image_uri"].append(uri)
        a["image_width"].append(width)
        a["image_height"].append(height)
        a["prefilled"].append(flags["prefilled"])
        a["reviewed"].append(flags["reviewed"])
        rb = obj.get("reviewed_by")
        a["reviewed_by"].append(rb if isinstance(rb, str) else None)
        a["fields"].append(orjson.dumps(fields).decode() if isinstance(fields, dict) else None)
        draft = obj.get("draft")
        a["draft"].append(orjson.dumps(draft).decode() if draft is not None else None)
        a["raw"].append(orjson.dumps(rec.original).decode() if rec.original is not None
                        else None)
        a["content_hash"].append(chash)
        a["n_boxes"].append(n_boxes)
        a["schema_errors"].append(len(errors))
        a["policy_errors"].append(n_err)
        a["policy_warnings"].append(len(violations) - n_err)
        e = batch.err
        for pointer, instance, keyword, message in errors:
            e["ann_key"].append(ann_key)
            e["pointer"].append(pointer)
            e["instance"].append(instance)
            e["keyword"].append(keyword)
            e["message"].append(message)
        v = batch.vio
        for viol in violations:
            v["ann_key"].append(ann_key)
            v["rule"].append(viol.rule)
            v["field"].append(viol.field)
            v["element"].append(getattr(viol, "element", None))
            v["severity"].append(viol.severity)
            v["excerpt"].append(viol.excerpt)
            v["start_pos"].append(viol.start)
            v["end_pos"].append(viol.end)
            v["label"].append(getattr(viol, "label", None))
        return None


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def _dump(obj: Any) -> str:
    return _raw_text(orjson.dumps(obj))


# -- the pipeline -----------------------------------------------------------------------

Reader = Callable[[Path, Callable[[int], None] | None], Iterator[Event]]


def _progress(path: Path, enabled: bool | None):
    from tqdm import tqdm

    big = path.stat().st_size >= 8 * 1024 * 1024
    # None: a bar for big files on a terminal only (tqdm's disable=None checks the tty).
    disable = True if enabled is False or (enabled is None and not big) else (
        None if enabled is None else False)
    return tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=path.name,
                leave=False, disable=disable, file=sys.stderr)


def process_file(path: Path, checker: Checker, fs: FileSummary, *, reader: Reader,
                 sink: Callable[[_Batch], None] | None, export_id: int, next_key: int,
                 progress: bool | None = None) -> int:
    """Run every event of one file through the checker; returns the next free ann_key."""
    batch = _Batch() if sink is not None else None
    bar = _progress(path, progress)
    any_object = False
    try:
        for event in reader(path, bar.update):
            if isinstance(event, Skip):
                fs.skipped[event.kind] += event.count
                if event.record:
                    fs.records += event.count
                    fs.skipped_records += event.count
                continue
            fs.records += 1
            if isinstance(event, Record):
                any_object = True
                bad = checker.check(event, next_key, fs, batch, export_id)
                if bad is None:
                    next_key += 1
                else:
                    event = bad
            if isinstance(event, Bad):
                fs.quarantined += 1
                if len(fs.quarantine_examples) < EXAMPLES_KEPT:
                    fs.quarantine_examples.append((event.line, event.reason))
                if batch is not None:
                    q = batch.bad
                    q["export_id"].append(export_id)
                    q["line"].append(event.line)
                    q["reason"].append(event.reason)
                    q["raw"].append(event.raw)
            if batch is not None and len(batch) >= BATCH_ROWS:
                sink(batch)
                batch.clear()
        if batch is not None and len(batch):
            sink(batch)
    finally:
        bar.close()
    if fs.records == 0:
        raise FileUnusable(path, "empty: no records in this file")
    if not any_object and fs.format == "native":
        raise FileUnusable(path, f"not a native export: none of its {fs.records} lines is "
                           "a JSON object (first problem: "
                           f"{fs.quarantine_examples[0][1] if fs.quarantine_examples else '?'})")
    return next_key


def _usable(path: Path) -> None:
    if not path.exists():
        raise FileUnusable(path, "no such file")
    if path.is_dir():
        raise FileUnusable(path, "is a directory, not an export file")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def readers() -> dict[str, Reader]:
    """Every format's reader, called as `reader(path, on_bytes, *, options=...)`."""
    from metrics.importers.coco import read_coco
    from metrics.importers.cvat import read_cvat
    from metrics.importers.labelstudio import read_labelstudio

    return {"native": read_native, "labelstudio": read_labelstudio, "coco": read_coco,
            "cvat": read_cvat}


def resolve_reader(path: Path, fmt: str, options: Any = None,
                   ) -> tuple[str, Reader]:
    """The format of `path` (detected from its content when `fmt` is `auto`) and its
    reader with `options` bound, callable as `reader(path, on_bytes)`."""
    from functools import partial

    from metrics.importers import ImportOptions
    from metrics.importers.detect import detect_format

    available = readers()
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in available:
        raise FileUnusable(path, f"format {fmt!r} is not supported (use: "
                           f"{', '.join(sorted(available))})")
    if fmt == "native":
        return fmt, available[fmt]
    return fmt, partial(available[fmt], options=options or ImportOptions())


def check_files(config: ProjectConfig, paths: Iterable[Path | str], *, fmt: str = "auto",
                progress: bool | None = None, options: Any = None,
                ) -> IngestSummary:
    """Dry run: every check of ingest, nothing written. Raises FileUnusable.

    `options` (a `metrics.importers.ImportOptions`) supply what a tool's export lacks.
    """
    summary = IngestSummary()
    from metrics.importers.detect import plan_exports

    for unit, opts in plan_exports(config, [Path(p) for p in paths], fmt, options):
        name, reader = resolve_reader(unit.path, unit.fmt, opts)
        fs = FileSummary(unit.label, format=name)
        # Each file is checked on its own, as its own export would be.
        process_file(unit.path, Checker(config), fs, reader=reader, sink=None, export_id=0,
                     next_key=0, progress=progress)
        summary.files.append(fs)
    return summary


def ingest_files(config: ProjectConfig, paths: Iterable[Path | str], *, fmt: str = "auto",
                 progress: bool | None = None,
                 after_load: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
                 options: Any = None,
                 on_wait: Callable[[str], None] | None = None,
                 ) -> IngestSummary:
    """Load exports into the project database in one transaction.

    Each file is parsed, checked and staged into a private DuckDB file without touching
    the project database; only the final move of all of them (dedupe, versions, derived
    tables, rebuilt once) holds the write lock, in one transaction. Dashboards reading
    meanwhile keep working; a failure, Ctrl-C or a killed process leaves the database as
    it was.

    Raises FileUnusable for a file that cannot be used; the files before it are loaded.
    `after_load` runs once inside the transaction (derived tables are rebuilt there, so
    readers never see new rows without their derived numbers). `options` (a
    `metrics.importers.ImportOptions`) supply what a tool's export lacks (annotator,
    time) and how items are named; COCO captions files merge into their instances file.
    `on_wait` is told when the database is locked (the CLI prints it).
    """
    from metrics.importers.detect import plan_exports

    plan = plan_exports(config, [Path(p) for p in paths], fmt, options)
    summary = IngestSummary()
    config.database.parent.mkdir(parents=True, exist_ok=True)
    if not config.database.exists():
        store.connect(config.database).close()  # create the layout
    _clear_stale_stages(config.database)
    stage_dir = _stage_dir(config.database)
    stage_dir.mkdir(exist_ok=True)

    # 1. A snapshot of what the checks need, under a shared (read-only) lock.
    with store.open_db(config.database, read_only=True, wait_s=3600.0,
                       on_wait=on_wait) as con:
        loaded_shas = dict(con.execute("SELECT sha256, records FROM exports").fetchall())
        # Shared by every file of this ingest, so sizes line up across them too.
        items = {r[0]: (r[1], r[2]) for r in con.execute(
            "SELECT item_id, image_width, image_height FROM items").fetchall()}

    # 2. Parse, check and stage each file: no lock on the project database.
    staged: list[_Staged] = []
    unusable: FileUnusable | None = None
    try:
        for unit, opts in plan:
            try:
                st = _stage_one(config, unit.path, fmt=unit.fmt, options=opts, items=items,
                                loaded_shas=loaded_shas, stage_dir=stage_dir,
                                progress=progress)
            except FileUnusable as exc:
                unusable = exc
                break
            summary.files.append(st.fs)
            if not st.fs.already_ingested:
                staged.append(st)
        # 3. The move into the project database: the only part under the write lock.
        if staged:
            t1 = time.perf_counter()
            with store.open_db(config.database, wait_s=3600.0, on_wait=on_wait) as con:
                _commit(con, staged, after_load=after_load, t1=t1)
    finally:
        for st in staged:
            for f in stage_dir.glob(st.stage_path.name + "*"):
                f.unlink(missing_ok=True)
    if unusable is not None:
        raise unusable
    return summary


@dataclass
class _Staged:
    fs: FileSummary
    checker: Checker
    stage_path: Path
    sha: str
    path: Path
    merged: tuple[Path, ...]
    fmt: str
    staged_s: float


def _stage_dir(database: Path) -> Path:
    return database.parent / f".{database.name}.staging"


def _clear_stale_stages(database: Path) -> None:
    """Remove staging files of ingests that died (SIGKILL, power loss)."""
    folder = _stage_dir(database)
    if not folder.is_dir():
        return
    for f in folder.glob("stage-*.duckdb*"):
        pid = f.name.split("-")[1].split(".")[0]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            f.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, someone else's


def _export_identity(path: Path, merged: tuple[Path, ...]) -> str:
    sha = file_sha256(path)
    if merged:
        # A merged export (COCO instances + captions) is one export: its identity is
        # the content of all its files.
        sha = hashlib.sha256("+".join([sha, *map(file_sha256, merged)]).encode()).hexdigest()
    return sha


def _stage_one(config: ProjectConfig, path: Path, *, fmt: str, options: Any,
               items: dict, loaded_shas: dict, stage_dir: Path,
               progress: bool | None) -> _Staged:
    merged = tuple(options.merge) if options is not None else ()
    name, reader = resolve_reader(path, fmt, options)
    sha = _export_identity(path, merged)
    fs = FileSummary(" + ".join(str(p) for p in (path, *merged)), format=name)
    stage_path = stage_dir / f"stage-{os.getpid()}-{time.monotonic_ns()}.duckdb"
    checker = Checker(config, items)
    st = _Staged(fs, checker, stage_path, sha, path, merged, name, 0.0)
    if sha in loaded_shas:
        fs.already_ingested = True
        fs.records = fs.duplicates = loaded_shas[sha]
        return st
    t0 = time.perf_counter()
    try:
        with duckdb.connect(str(stage_path)) as stage:
            for tname, cols in store.TABLES.items():
                stage.execute(store.table_ddl(f"stage_{tname}", cols))

            def sink(batch: _Batch) -> None:
                for tname, cols in (("annotations", batch.ann), ("boxes", batch.box),
                                    ("contract_errors", batch.err),
                                    ("violations", batch.vio), ("quarantine", batch.bad)):
                    if not cols[next(iter(cols))]:
                        continue
                    batch_tbl = pa.Table.from_pydict(cols, schema=_SCHEMAS[tname])  # noqa: F841
                    # DuckDB reads the local Arrow table by name (replacement scan).
                    stage.execute(f"INSERT INTO stage_{tname} BY NAME SELECT * FROM batch_tbl")

            # Keys are local (1..n) here; the commit shifts them past the stored ones.
            process_file(path, checker, fs, reader=reader, sink=sink, export_id=0,
                         next_key=1, progress=progress)
            stage.execute("CHECKPOINT")
    except BaseException:
        for f in stage_dir.glob(stage_path.name + "*"):
            f.unlink(missing_ok=True)
        raise
    st.staged_s = time.perf_counter() - t0
    return st


def _commit(con: duckdb.DuckDBPyConnection, staged: list[_Staged], *, after_load,
            t1: float) -> None:
    """Move every staged export into the store in one transaction; derived tables are
    rebuilt once at the end."""
    lock_wait_s = time.perf_counter() - t1
    con.execute("BEGIN TRANSACTION")
    try:
        moved = []
        for st in staged:
            row = con.execute("SELECT records FROM exports WHERE sha256 = $sha LIMIT 1",
                              {"sha": st.sha}).fetchall()
            if row:  # the same file twice in one ingest, or a concurrent ingest won
                fs = st.fs
                fs.already_ingested = True
                fs.loaded = fs.quarantined = fs.skipped_records = fs.new_versions = 0
                fs.boxes = fs.schema_error_annotations = fs.policy_error_annotations = 0
                fs.by_role.clear()
                fs.skipped.clear()
                fs.records = fs.duplicates = row[0][0]
                continue
            moved.append(_move(con, st, lock_wait_s))
        if after_load is not None:
            after_load(con)
        store.bump_generation(con)
        con.execute("UPDATE exports SET commit_seconds = $s WHERE list_contains($ids, "
                    "export_id)", {"s": time.perf_counter() - t1 - lock_wait_s,
                                   "ids": moved})
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _move(con: duckdb.DuckDBPyConnection, st: _Staged, lock_wait_s: float) -> int:
    """One staged export into the store (inside the caller's transaction): its id."""
    fs, checker = st.fs, st.checker
    con.execute(f"ATTACH '{_sql_path(st.stage_path)}' AS stg (READ_ONLY)")
    try:
        export_id = con.execute(
            "SELECT coalesce(max(export_id), 0) + 1 FROM exports").fetchall()[0][0]
        base = con.execute(
            "SELECT coalesce(max(ann_key), 0) FROM annotations").fetchall()[0][0]
        for tname in store.TABLES:
            if tname == "quarantine":
                expr, params = "$eid AS export_id", {"eid": export_id}
            elif tname == "annotations":
                expr = "ann_key + $base AS ann_key, $eid AS export_id"
                params = {"eid": export_id, "base": base}
            else:
                expr, params = "ann_key + $base AS ann_key", {"base": base}
            con.execute(f"CREATE OR REPLACE TEMP TABLE stage_{tname} AS "
                        f"SELECT * REPLACE ({expr}) FROM stg.stage_{tname}", params)
        checker.new_items = {k: (w, h, key + base)
                             for k, (w, h, key) in checker.new_items.items()}
        _finalize(con, checker, fs)
        paths = (st.path, *st.merged)
        con.execute(
            """INSERT INTO exports BY NAME SELECT
               $id AS export_id, $path AS path, $name AS name, $sha AS sha256,
               $fmt AS format, $size AS size_bytes, now() AS ingested_at,
               $records AS records, $loaded AS loaded, $dups AS duplicates,
               $quar AS quarantined, $skipped_records AS skipped_records,
               $new_versions AS new_versions, $boxes AS boxes,
               $skipped::JSON AS skipped, $by_role::JSON AS by_role,
               $staged AS stage_seconds, $wait AS lock_wait_seconds""",
            {"id": export_id, "path": str(st.path.resolve()),
             "name": " + ".join(p.name for p in paths), "sha": st.sha,
             "fmt": st.fmt, "size": sum(p.stat().st_size for p in paths),
             "records": fs.records, "loaded": fs.loaded, "dups": fs.duplicates,
             "quar": fs.quarantined, "skipped_records": fs.skipped_records,
             "new_versions": fs.new_versions, "boxes": fs.boxes,
             "skipped": json.dumps(dict(fs.skipped)),
             "by_role": json.dumps(dict(fs.by_role)),
             "staged": st.staged_s, "wait": lock_wait_s},
        )
        for tname in store.TABLES:
            con.execute(f"DROP TABLE IF EXISTS stage_{tname}")
        return export_id
    finally:
        con.execute("DETACH stg")


def _sql_path(path: Path) -> str:
    # ATTACH takes a literal, not a parameter; the path is ours (pid + clock), but quote
    # it properly anyway.
    return str(path).replace("'", "''")


def _finalize(con: duckdb.DuckDBPyConnection, checker: Checker, fs: FileSummary) -> None:
    """Move staged rows into the store: drop duplicates of stored annotations, number
    versions, flip `is_current`, register new items."""
    dups = con.execute(
        """CREATE OR REPLACE TEMP TABLE stage_dups AS
           SELECT s.ann_key, s.role, s.n_boxes, s.schema_errors, s.policy_errors
           FROM stage_annotations s JOIN annotations a
             ON a.annotation_id = s.annotation_id AND a.is_current
            AND a.content_hash = s.content_hash"""
    )
    dups = con.execute(
        "SELECT count(*), coalesce(sum(n_boxes), 0), count(*) FILTER (schema_errors > 0), "
        "count(*) FILTER (policy_errors > 0) FROM stage_dups"
    ).fetchone()
    if dups[0]:
        fs.duplicates += dups[0]
        fs.loaded -= dups[0]
        fs.boxes -= dups[1]
        fs.schema_error_annotations -= dups[2]
        fs.policy_error_annotations -= dups[3]
        for role, n in con.execute("SELECT role, count(*) FROM stage_dups GROUP BY 1"
                                   ).fetchall():
            fs.by_role[role] -= n
            if not fs.by_role[role]:
                del fs.by_role[role]
        for tname in store.TABLES:
            if tname != "quarantine":
                con.execute(f"DELETE FROM stage_{tname} WHERE ann_key IN "
                            "(SELECT ann_key FROM stage_dups)")
    con.execute(
        """CREATE OR REPLACE TEMP TABLE stage_versions AS
           SELECT s.ann_key,
                  coalesce(p.maxv, 0)
                    + row_number() OVER (PARTITION BY s.annotation_id ORDER BY s.line)
                    AS version,
                  row_number() OVER (PARTITION BY s.annotation_id ORDER BY s.line DESC) = 1
                    AS is_current
           FROM stage_annotations s
           LEFT JOIN (SELECT annotation_id, max(version) AS maxv FROM annotations
                      GROUP BY 1) p USING (annotation_id)"""
    )
    fs.new_versions = con.execute(
        "SELECT count(*) FROM stage_versions WHERE version > 1").fetchone()[0]
    con.execute(
        "UPDATE annotations SET is_current = false WHERE is_current AND annotation_id IN "
        "(SELECT annotation_id FROM stage_annotations)"
    )
    con.execute(
        """INSERT INTO annotations
           SELECT s.* REPLACE (v.version AS version, v.is_current AS is_current)
           FROM stage_annotations s JOIN stage_versions v USING (ann_key)
           ORDER BY s.ann_key"""
    )
    for tname in ("boxes", "contract_errors", "violations", "quarantine"):
        con.execute(f"INSERT INTO {tname} SELECT * FROM stage_{tname}")
    if checker.new_items:
        items_tbl = pa.table({  # noqa: F841
            "item_id": list(checker.new_items),
            "image_width": [v[0] for v in checker.new_items.values()],
            "image_height": [v[1] for v in checker.new_items.values()],
            "first_ann_key": [v[2] for v in checker.new_items.values()],
        })
        con.execute("INSERT INTO items BY NAME SELECT * FROM items_tbl "
                    "WHERE item_id NOT IN (SELECT item_id FROM items)")
    con.execute("DROP TABLE IF EXISTS stage_dups")
    con.execute("DROP TABLE IF EXISTS stage_versions")
