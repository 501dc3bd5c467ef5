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
was. Parsing streams: a native export is read in blocks of whole lines (`BLOCK_BYTES`),
checked in worker processes when it is big (`ingest_workers`), and each block's rows are
appended to staging Arrow IPC files; the stateful checks run in line order
in this process (`ExportState`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator
from zoneinfo import ZoneInfo

import duckdb
import jsonschema_rs
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from metrics import ingest_worker, store
from metrics.config import ProjectConfig
from metrics.policy import check_fields

MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 256
BATCH_ROWS = 20_000
RAW_KEEP_CHARS = 4000           # quarantine keeps this much of a bad line
EXAMPLES_KEPT = 20
CHECK_EXAMPLES_KEPT = 1000     # `check` lists this many quarantined lines and errors per file
ROLES = ("annotator", "reviewer", "gold", "model")
_BOM = b"\xef\xbb\xbf"
_JSON_SPACE = b" \t\r\n"


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


def _bad_utf8(raw: bytes, line: int) -> Bad | None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Bad(line, f"invalid UTF-8 at byte {exc.start}", _raw_text(raw))
    return None


def parse_line(raw: bytes, line: int) -> Record | Bad:
    """Parse one non-blank native line into a Record or say why it is quarantined."""
    if len(raw) > MAX_LINE_BYTES:
        return Bad(line, f"line is {len(raw):,} bytes, over the 16 MiB limit", _raw_text(raw))
    # orjson rejects invalid UTF-8 itself, so the decode that names the byte runs only
    # for a line that fails.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth_exceeds(raw, MAX_DEPTH):
        return _bad_utf8(raw, line) or Bad(line, f"JSON nested deeper than {MAX_DEPTH} "
                                           "levels", _raw_text(raw))
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if (bad := _bad_utf8(raw, line)) is not None:
            return bad
        # orjson counts lines within what it parsed: always line 1 here, so only the
        # column says where.
        reason = "not valid JSON: " + re.sub(r": line 1 column (\d+) \(char \d+\)$",
                                             r" at column \1", str(exc))
        # Python's json reads NaN/Infinity, which orjson (RFC 8259) rejects: when that
        # is what failed, say which. orjson's own message names anything else (a lone
        # surrogate escape, a number too large for a double) with its column.
        found: list[str] = []
        try:
            json.loads(raw, parse_constant=found.append)
            if found:
                reason = (f"{found[0]} is not valid JSON (RFC 8259): NaN and Infinity "
                          "have no JSON form")
        except (ValueError, RecursionError):
            pass
        return Bad(line, reason, _raw_text(raw))
    if not isinstance(obj, dict):
        return Bad(line, f"line is {_json_kind(obj)}, not a JSON object", _raw_text(raw))
    return Record(line, obj)


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
    keep: int = field(default=EXAMPLES_KEPT, repr=False)         # examples kept of each

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


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICROSECOND = dt.timedelta(microseconds=1)
_QUARTER = dt.timedelta(minutes=15)
_QUARTER_US = 15 * 60 * 1_000_000


def iso_week(ts: dt.datetime, tz: ZoneInfo) -> str:
    year, week, _ = ts.astimezone(tz).isocalendar()
    return f"{year:04d}-W{week:02d}"   # as `metrics.weekly.week_of` writes it


def parse_timestamp(value: str, tz: ZoneInfo) -> dt.datetime:
    ts = dt.datetime.fromisoformat(value)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=tz)
    return ts.astimezone(dt.timezone.utc)


class _Batch:
    """Rows of one chunk, a tuple per row in each table's column order (appending one
    tuple is several times cheaper than appending to each column's list)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple]] = {name: [] for name in store.TABLES}
        self.ann = self.rows["annotations"]
        self.box = self.rows["boxes"]
        self.err = self.rows["contract_errors"]
        self.vio = self.rows["violations"]
        self.bad = self.rows["quarantine"]

    def tables(self) -> dict[str, pa.Table]:
        out = {}
        for name, rows in self.rows.items():
            if rows:
                schema = _SCHEMAS[name]
                out[name] = pa.Table.from_arrays(
                    [pa.array(col, type=f.type) for col, f in zip(zip(*rows, strict=True), schema,
                                                                   strict=True)],
                    schema=schema)
        return out


_ARROW_TYPES = {
    "BIGINT": pa.int64(), "INTEGER": pa.int32(), "VARCHAR": pa.string(),
    "BOOLEAN": pa.bool_(), "DOUBLE": pa.float64(), "JSON": pa.string(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
}


def _arrow_schema(columns: tuple[tuple[str, str], ...]) -> pa.Schema:
    return pa.schema([(c, _ARROW_TYPES[t.split()[0]]) for c, t in columns])


_SCHEMAS = {name: _arrow_schema(cols) for name, cols in store.TABLES.items()}


class Checker:
    """Turns Records into rows: contract errors, policy violations, boxes.

    Holds no state between records, so the chunks of one export can be checked in
    worker processes; what needs the whole export in line order (repeated ids, each
    item's image size) is `ExportState`.
    """

    def __init__(self, config: ProjectConfig):
        self.config = config
        self.tz = config.tz
        self._weeks: dict[int, str] = {}    # quarter hour since the epoch -> ISO week
        self.validator = jsonschema_rs.Draft202012Validator(config.contract_schema())
        self.labels = config.labels

    def _week(self, ts: dt.datetime, us: int) -> str:
        """`iso_week(ts)`, remembered per UTC quarter hour. Offsets are whole quarter
        hours, so local midnight falls on a quarter-hour boundary and the quarter hour
        has one local date, unless the offset changes inside it (or is not a whole
        quarter hour: some zones before 1980); such a quarter hour is not remembered."""
        quarter = us // _QUARTER_US
        week = self._weeks.get(quarter)
        if week is None:
            week = iso_week(ts, self.tz)
            start = _EPOCH + dt.timedelta(microseconds=quarter * _QUARTER_US)
            try:
                before = start.astimezone(self.tz).utcoffset()
                after = (start + _QUARTER - _MICROSECOND).astimezone(self.tz).utcoffset()
            except OverflowError:   # the quarter hour reaches past year 1 or 9999
                return week
            if before == after and before % _QUARTER == dt.timedelta(0):
                if len(self._weeks) >= 100_000:   # timestamps spread over centuries
                    self._weeks.clear()
                self._weeks[quarter] = week
        return week

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

    def prepare(self, rec: Record, idx: int, batch: _Batch | None) -> Bad | tuple:
        """Check one record; its rows go to `batch` under the chunk-local key `idx`.

        Returns why it is quarantined, or the entry `ExportState.admit` takes: (line,
        annotation_id, content hash, item_id, (width, height) or None, role, boxes,
        contract errors, policy errors). `idx` is the record's position among the
        chunk's entries.
        """
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
            us = (submitted - _EPOCH) // _MICROSECOND
            week = self._week(submitted, us)
        except ValueError:
            return Bad(rec.line, f"'submitted_at' is not an ISO 8601 date: "
                       f"{_short(submitted_raw)}", _dump(obj))
        except OverflowError:  # e.g. year 1 or 9999 moved across a day by the time zone
            return Bad(rec.line, f"'submitted_at' {_short(submitted_raw)} is out of the "
                       f"date range in the project's time zone ({self.tz})", _dump(obj))

        errors = self.contract_errors(obj)

        def extra(pointer: str, instance: str, keyword: str, message: str) -> None:
            errors.append((pointer, instance, keyword, message))

        try:
            content = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
            dumps = orjson.dumps
        except orjson.JSONEncodeError:  # nested past orjson's 254 levels (DESIGN allows 256)
            content = _std_dumps(obj, sort_keys=True)
            dumps = _deep_dumps
        chash = hashlib.blake2b(content, digest_size=16).hexdigest()
        ann_id = obj.get("annotation_id")
        if ann_id is None:
            ann_id = derive_annotation_id(item_id, annotator_id, submitted_raw)
        elif not isinstance(ann_id, str) or not ann_id:
            extra("/annotation_id", "/annotation_id", "type",
                  f"annotation_id must be a non-empty string, got {_short(ann_id)}")
            ann_id = derive_annotation_id(item_id, annotator_id, submitted_raw)

        role = obj.get("role", "annotator")
        if role not in ROLES:
            if not any(err[1] == "/role" for err in errors):  # the schema may say it
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

        box_labels = set()
        boxes = obj.get("boxes")
        n_boxes = 0
        if isinstance(boxes, list):
            for i, box in enumerate(boxes):
                if not isinstance(box, dict):
                    continue
                label = box.get("label")
                if not isinstance(label, str):
                    label = None
                bbox = box.get("bbox")
                x = y = w = h = None
                matchable = False
                if _usable_bbox(bbox):
                    x, y, w, h = float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])
                    if w <= 0 or h <= 0:
                        extra("/boxes/*/bbox", f"/boxes/{i}/bbox", "positiveSize",
                              f"box {i} has non-positive size {w:g}x{h:g}")
                    else:
                        matchable = label is not None
                        if width is not None and (
                            x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1
                        ):
                            extra("/boxes/*/bbox", f"/boxes/{i}/bbox", "withinImage",
                                  f"box {i} [{x:g}, {y:g}, {w:g}, {h:g}] extends outside "
                                  f"the {width:g}x{height:g} image (1 px tolerance)")
                elif not any(err[1].startswith(f"/boxes/{i}/bbox") or err[1] == f"/boxes/{i}"
                             for err in errors):
                    # Whatever the project's schema says, a box needs [x, y, w, h].
                    extra("/boxes/*/bbox", f"/boxes/{i}/bbox", "bboxFormat",
                          f"box {i} has no usable bbox (need [x, y, w, h] in pixels), "
                          f"got {_short(bbox)}")
                if label is not None:
                    box_labels.add(label)
                n_boxes += 1
                if batch is not None:
                    attrs = box.get("attributes")
                    batch.box.append((idx, i, label, x, y, w, h,
                                      dumps(attrs) if attrs is not None else None,
                                      matchable))

        fields = obj.get("fields")
        violations = []
        if isinstance(fields, dict) and self.config.policy:
            violations = check_fields(self.config.policy, fields, box_labels,
                                      labels=self.labels)
        n_err = sum(1 for v in violations if v.severity == "error")
        entry = (rec.line, ann_id, chash, item_id,
                 (width, height) if width is not None else None, role, n_boxes, errors,
                 n_err)
        if batch is None:
            return entry

        gv = obj.get("guideline_version")
        rb = obj.get("reviewed_by")
        draft = obj.get("draft")
        batch.ann.append((
            idx, ann_id, 1, True, 0, rec.line, item_id, annotator_id, role,
            us, week,
            gv if isinstance(gv, str) else None, uri, width, height, flags["prefilled"],
            flags["reviewed"], rb if isinstance(rb, str) else None,
            dumps(fields) if isinstance(fields, dict) else None,
            dumps(draft) if draft is not None else None,
            _deep_dumps(rec.original) if rec.original is not None else None,
            chash, n_boxes,
            len(errors),   # ExportState.admit adds the errors only it can tell
            n_err, len(violations) - n_err,
        ))
        batch.err.extend((idx, *err) for err in errors)
        batch.vio.extend(
            (idx, viol.rule, viol.field, getattr(viol, "element", None), viol.severity,
             viol.excerpt, viol.start, viol.end, getattr(viol, "label", None))
            for viol in violations)
        return entry


@dataclass
class Chunk:
    """Consecutive events of one file, checked.

    The records to load are kept by column, in line order (`Checker.prepare`'s entry,
    transposed: a column per field, the record's position is its chunk-local key), so
    that `ExportState.admit` can take a whole chunk with set and dict operations. `bad`
    holds (line, reason) of each quarantined record; when building, `tables` holds the
    rows as Arrow tables keyed by chunk-local position.
    """
    lines: tuple = ()
    ann_ids: tuple = ()
    hashes: tuple = ()
    item_ids: tuple = ()
    sizes: tuple = ()           # (width, height), or None when the image has no size
    roles: tuple = ()
    n_boxes: tuple = ()
    errors: dict = field(default_factory=dict)   # position -> contract errors, where any
    n_policy_errors: tuple = ()
    bad: list = field(default_factory=list)
    records: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_records: int = 0
    any_object: bool = False
    tables: dict[str, pa.Table] | None = None

    def __len__(self) -> int:
        return len(self.ann_ids)


def check_events(checker: Checker, events: Iterable[Event], build: bool) -> Chunk:
    batch = _Batch() if build else None
    ch = Chunk()
    good: list[tuple] = []
    for event in events:
        if isinstance(event, Skip):
            ch.skipped[event.kind] += event.count
            if event.record:
                ch.records += event.count
                ch.skipped_records += event.count
            continue
        ch.records += 1
        if isinstance(event, Record):
            ch.any_object = True
            out = checker.prepare(event, len(good), batch)
            if not isinstance(out, Bad):
                good.append(out)
                continue
            event = out
        ch.bad.append((event.line, event.reason))
        if batch is not None:
            batch.bad.append((0, event.line, event.reason, event.raw))
    if good:
        (ch.lines, ch.ann_ids, ch.hashes, ch.item_ids, ch.sizes, ch.roles, ch.n_boxes,
         errors, ch.n_policy_errors) = zip(*good, strict=True)
        ch.errors = {i: e for i, e in enumerate(errors) if e}
    if batch is not None:
        ch.tables = batch.tables()
    return ch


class ExportState:
    """What checking needs of a whole export, in line order: the ids seen (a repeat with
    the same content is a duplicate, with other content a `uniqueId` error) and each
    item's first image size (`imageSize`; shared by the files of one ingest and seeded
    with the stored items). Assigns the final keys: duplicates get none."""

    def __init__(self, items: dict[str, tuple[float, float]] | None = None):
        self.items: dict[str, tuple[float, float]] = items if items is not None else {}
        self.new_items: dict[str, tuple[float, float, int]] = {}
        self.seen: dict[str, tuple[str, int]] = {}   # annotation_id -> (content hash, line)

    def admit(self, ch: Chunk, fs: FileSummary, next_key: int,
              ) -> tuple[dict[str, pa.Table] | None, int]:
        """Count the chunk into `fs`; its tables with final keys, and the next free key."""
        fs.records += ch.records
        fs.skipped.update(ch.skipped)
        fs.skipped_records += ch.skipped_records
        fs.quarantined += len(ch.bad)
        room = fs.keep - len(fs.quarantine_examples)
        if room > 0:
            fs.quarantine_examples.extend(ch.bad[:room])
        n = len(ch)
        first = self._first_sizes(ch) if n else {}
        if first is None:   # a repeated id or a size conflict: record by record
            keys, added = self._admit_each(ch, fs, next_key)
        else:
            keys, added = np.arange(next_key, next_key + n, dtype=np.int64), []
            self.seen.update(zip(ch.ann_ids, zip(ch.hashes, ch.lines, strict=True),
                                 strict=True))
            for item_id, (size, pos) in first.items():
                if item_id not in self.items:
                    self.items[item_id] = size
                    self.new_items[item_id] = (*size, next_key + pos)
            fs.loaded += n
            fs.boxes += sum(ch.n_boxes)
            fs.by_role.update(ch.roles)
            self._count_errors(ch, fs, ch.errors)
            fs.policy_error_annotations += n - ch.n_policy_errors.count(0)
        after = next_key + int((keys >= 0).sum())
        if ch.tables is None:
            return None, after
        return _rekey(ch.tables, keys, added), after

    def _first_sizes(self, ch: Chunk) -> dict | None:
        """Each sized item's (first size, first position) when no id of the chunk repeats
        (within it or an earlier one) and no item's size conflicts; None otherwise."""
        ids = ch.ann_ids
        if len(set(ids)) != len(ids) or not self.seen.keys().isdisjoint(ids):
            return None
        first: dict = {}
        for pos, item_id, size in zip(range(len(ids)), ch.item_ids, ch.sizes, strict=False):
            if size is None:
                continue
            got = first.get(item_id)
            if got is None:
                known = self.items.get(item_id)
                if known is not None and known != size:
                    return None
                first[item_id] = (size, pos)
            elif got[0] != size:
                return None
        return first

    @staticmethod
    def _count_errors(ch: Chunk, fs: FileSummary, errors: dict) -> None:
        fs.schema_error_annotations += len(errors)
        for pos in sorted(errors):
            for pointer, _inst, keyword, message in errors[pos]:
                fs.errors_by[(pointer, keyword)] += 1
                if len(fs.error_examples) < fs.keep:
                    fs.error_examples.append((ch.lines[pos], pointer, keyword, message))

    def _admit_each(self, ch: Chunk, fs: FileSummary, next_key: int,
                    ) -> tuple[np.ndarray, list[tuple]]:
        """Record by record, in line order: duplicates dropped (key -1), repeated ids and
        image size conflicts added as contract errors."""
        seen, items, new_items = self.seen, self.items, self.new_items
        keys = np.full(len(ch), -1, dtype=np.int64)
        added: list[tuple] = []        # (position, pointer, instance, keyword, message)
        errors: dict[int, list] = {}
        for pos, (line, ann_id, chash, item_id, size) in enumerate(zip(
                ch.lines, ch.ann_ids, ch.hashes, ch.item_ids, ch.sizes, strict=True)):
            more = None
            prev = seen.get(ann_id)
            if prev is not None:
                if prev[0] == chash:
                    fs.duplicates += 1
                    continue
                more = [("/annotation_id", "/annotation_id", "uniqueId",
                         f"annotation_id {ann_id!r} repeats line {prev[1]} with "
                         "different content")]
            seen[ann_id] = (chash, line)
            if size is not None:
                known = items.get(item_id)
                if known is None:
                    items[item_id] = size
                    new_items[item_id] = (*size, int(next_key))
                elif known != size:
                    more = (more or []) + [(
                        "/image", "/image", "imageSize",
                        f"image is {size[0]:g}x{size[1]:g} but item {item_id!r} was first "
                        f"ingested at {known[0]:g}x{known[1]:g}")]
            keys[pos] = next_key
            next_key += 1
            fs.loaded += 1
            fs.boxes += ch.n_boxes[pos]
            fs.by_role[ch.roles[pos]] += 1
            if ch.n_policy_errors[pos]:
                fs.policy_error_annotations += 1
            own = ch.errors.get(pos)
            if more:
                added.extend((pos, *m) for m in more)
                own = (own or []) + more
            if own:
                errors[pos] = own
        self._count_errors(ch, fs, errors)
        return keys, added


def _rekey(tables: dict[str, pa.Table], keys: np.ndarray, added: list[tuple],
           ) -> dict[str, pa.Table]:
    """Chunk-local keys to final ones; rows of duplicates dropped; the errors only the
    whole export could tell appended (and counted in `schema_errors`)."""
    keep = keys >= 0
    out = {}
    for name, tbl in tables.items():
        if name == "quarantine":
            out[name] = tbl
            continue
        local = tbl.column("ann_key").to_numpy()
        mask = keep[local]
        if not mask.all():
            tbl = tbl.filter(pa.array(mask))
            local = local[mask]
        tbl = tbl.set_column(tbl.schema.get_field_index("ann_key"), "ann_key",
                             pa.array(keys[local]))
        if name == "annotations" and added:
            more = np.zeros(len(keys), dtype=np.int32)
            for row in added:
                more[row[0]] += 1
            col = tbl.column("schema_errors").to_numpy() + more[local]
            tbl = tbl.set_column(tbl.schema.get_field_index("schema_errors"),
                                 "schema_errors", pa.array(col, pa.int32()))
        out[name] = tbl
    if added:
        extra = pa.Table.from_pydict({
            "ann_key": [int(keys[r[0]]) for r in added],
            "pointer": [r[1] for r in added], "instance": [r[2] for r in added],
            "keyword": [r[3] for r in added], "message": [r[4] for r in added],
        }, schema=_SCHEMAS["contract_errors"])
        prior = out.get("contract_errors")
        out["contract_errors"] = extra if prior is None else pa.concat_tables([prior, extra])
    return out


_NUMBER_TYPES = frozenset((int, float))


def _usable_bbox(bbox: Any) -> bool:
    """[x, y, w, h] of finite numbers (booleans and strings are not numbers)."""
    if type(bbox) is not list or len(bbox) != 4:
        return False
    x, y, w, h = bbox
    if not (type(x) in _NUMBER_TYPES and type(y) in _NUMBER_TYPES
            and type(w) in _NUMBER_TYPES and type(h) in _NUMBER_TYPES):
        return False
    try:
        return (math.isfinite(x) and math.isfinite(y) and math.isfinite(w)
                and math.isfinite(h))
    except OverflowError:  # an integer too large for a float
        return False


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def _dump(obj: Any) -> str:
    return _raw_text(_deep_dumps(obj))


def _deep_dumps(obj: Any, option: int = 0) -> bytes:
    """`orjson.dumps`, or the standard library's compact JSON for a value nested deeper
    than orjson serializes (254 levels; lines up to DESIGN's 256 are loaded). The same
    value always gives the same bytes, so content hashes stay stable."""
    try:
        return orjson.dumps(obj, option=option)
    except orjson.JSONEncodeError:
        return _std_dumps(obj, sort_keys=bool(option & orjson.OPT_SORT_KEYS))


def _std_dumps(obj: Any, *, sort_keys: bool = False) -> bytes:
    """Compact JSON by the standard library, which has no nesting limit of its own."""
    return json.dumps(obj, sort_keys=sort_keys, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode()


# -- the pipeline -----------------------------------------------------------------------

Reader = Callable[[Path, Callable[[int], None] | None], Iterator[Event]]
BLOCK_BYTES = 2 * 1024 * 1024     # native lines checked together (by one worker)
PARALLEL_MIN_BYTES = 8 * 1024 * 1024


def _progress(path: Path, enabled: bool | None):
    from tqdm import tqdm

    big = path.stat().st_size >= 8 * 1024 * 1024
    # None: a bar for big files on a terminal only (tqdm's disable=None checks the tty).
    disable = True if enabled is False or (enabled is None and not big) else (
        None if enabled is None else False)
    return tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=path.name,
                leave=False, disable=disable, file=sys.stderr)


class SettingError(ValueError):
    """An environment setting labelqa cannot use (the CLI exits 2 with it)."""


def ingest_workers(path: Path) -> int:
    """Worker processes for checking a native export: one per CPU for a big file, none
    for a small one (starting them costs more than they save). `LABELQA_INGEST_WORKERS`
    overrides it (0 or 1: check in this process), up to the larger of 4 and the CPUs:
    each worker holds its blocks in memory, and more of them than CPUs only costs that."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    env = os.environ.get("LABELQA_INGEST_WORKERS", "").strip()
    if env:
        if not (env.isascii() and env.isdigit()):
            raise SettingError(f"LABELQA_INGEST_WORKERS must be a whole number (0 or 1: "
                               f"no worker processes), got {env!r}")
        return min(int(env), max(4, cpus))
    if path.stat().st_size < PARALLEL_MIN_BYTES:
        return 0
    return cpus


def _native_ranges(path: Path, on_bytes: Callable[[int], None] | None,
                   ) -> Iterator[tuple[int, int, int]]:
    """(offset, length, number of the first line) of consecutive blocks of whole lines,
    about `BLOCK_BYTES` each: a worker reads its block itself, so only three numbers
    cross the pipe."""
    with open(path, "rb") as fh:
        offset, first, carry = 0, 1, b""
        while data := fh.read(BLOCK_BYTES):
            buf = carry + data if carry else data
            cut = buf.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a block: read on
                carry = buf
                continue
            if on_bytes is not None:
                on_bytes(cut)
            yield offset, cut, first
            first += buf.count(b"\n", 0, cut)
            offset += cut
            carry = buf[cut:]
        if carry:
            if on_bytes is not None:
                on_bytes(len(carry))
            yield offset, len(carry), first


def _range_lines(fh: BinaryIO, offset: int, length: int) -> list[bytes]:
    fh.seek(offset)
    buf = fh.read(length)
    lines = buf.split(b"\n")
    if buf.endswith(b"\n"):
        lines.pop()
    return lines


def _native_events(lines: list[bytes], first: int) -> Iterator[Event]:
    for i, raw in enumerate(lines):
        lineno = first + i
        if lineno == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        raw = raw.rstrip(b"\r\n")
        if not raw.strip(_JSON_SPACE):  # blank: JSON whitespace only (RFC 8259)
            continue
        yield parse_line(raw, lineno)


def read_native(path: Path, on_bytes: Callable[[int], None] | None = None) -> Iterator[Event]:
    """Stream a native JSON Lines export. Blank lines are not records."""
    with open(path, "rb") as fh:
        for offset, length, first in _native_ranges(path, on_bytes):
            yield from _native_events(_range_lines(fh, offset, length), first)


class WorkerFailed(RuntimeError):
    """A worker process died or raised; the ingest stops and nothing is loaded."""


class _Workers:
    """Worker processes (`metrics.ingest_worker`) checking blocks of native lines.

    Parsing, the contract, the policy rules and building Arrow rows are per record and
    pure Python, so one process is bound to one core; the order-dependent part stays
    with the caller (`ExportState`). Block i goes to worker i mod n and results are read
    back in block order; a feeder thread per worker writes its blocks, so a worker
    writing a result never waits on the parent writing the next block.
    """

    def __init__(self, config: ProjectConfig, n: int):
        import queue
        import subprocess
        import threading

        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(filter(None, [root,
                                                          os.environ.get("PYTHONPATH")]))}
        self.procs = [subprocess.Popen([sys.executable, "-m", "metrics.ingest_worker"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, env=env)
                      for _ in range(n)]
        self.queues: list[queue.Queue] = [queue.Queue() for _ in range(n)]
        self.threads = [threading.Thread(target=self._feed, args=(p, q, config),
                                         daemon=True)
                        for p, q in zip(self.procs, self.queues, strict=True)]
        for t in self.threads:
            t.start()

    @staticmethod
    def _feed(proc, q, config: ProjectConfig) -> None:
        try:
            ingest_worker.send(proc.stdin, config)
            while (task := q.get()) is not None:
                ingest_worker.send(proc.stdin, task)
            proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the worker died; the reader reports it

    def submit(self, i: int, task: tuple) -> None:
        self.queues[i % len(self.procs)].put(task)

    def result(self, i: int) -> Chunk:
        proc = self.procs[i % len(self.procs)]
        try:
            status, value = ingest_worker.receive(proc.stdout)
        except EOFError:
            code = proc.wait()
            err = proc.stderr.read().decode("utf-8", "replace").strip()
            raise WorkerFailed(f"ingest worker stopped (exit code {code})"
                               + (f": {err.splitlines()[-1]}" if err else "")) from None
        if status != "ok":
            raise WorkerFailed(f"ingest worker failed:\n{value}")
        return value

    def close(self, *, ok: bool) -> None:
        for q in self.queues:
            q.put(None)
        for p in self.procs:
            if not ok:
                p.kill()
        for t in self.threads:
            t.join(timeout=5)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except Exception:  # noqa: BLE001 - a worker that will not stop is killed
                p.kill()
                p.wait()
            for s in (p.stdout, p.stderr):
                s.close()


def _parallel_chunks(config: ProjectConfig, path: Path, on_bytes: Callable[[int], None],
                     build: bool, workers: int) -> Iterator[Chunk]:
    """Check the blocks of a native file in worker processes, yielded in file order. At
    most two blocks per worker are in flight, so memory stays bounded whatever the file
    size."""
    pool = _Workers(config, workers)
    ok = False
    try:
        sent = done = 0
        for offset, length, first in _native_ranges(path, on_bytes):
            pool.submit(sent, (str(path), offset, length, first, build))
            sent += 1
            while sent - done > 2 * workers:
                yield pool.result(done)
                done += 1
        while done < sent:
            yield pool.result(done)
            done += 1
        ok = True
    finally:
        pool.close(ok=ok)


def _chunks(path: Path, checker: Checker, fmt: str, reader: Reader, build: bool,
            on_bytes: Callable[[int], None], workers: int) -> Iterator[Chunk]:
    if fmt == "native" and workers > 1:
        yield from _parallel_chunks(checker.config, path, on_bytes, build, workers)
        return
    events: list[Event] = []
    for event in reader(path, on_bytes):
        events.append(event)
        if len(events) >= BATCH_ROWS:
            yield check_events(checker, events, build)
            events = []
    if events:
        yield check_events(checker, events, build)


def process_file(path: Path, checker: Checker, state: ExportState, fs: FileSummary, *,
                 reader: Reader, sink: Callable[[dict[str, pa.Table]], None] | None,
                 next_key: int, progress: bool | None = None,
                 workers: int | None = None) -> int:
    """Run every event of one file through the checks; returns the next free key.

    `sink` receives each chunk's rows (final keys) in file order; None: a dry run."""
    bar = _progress(path, progress)
    if workers is None:
        workers = ingest_workers(path) if fs.format == "native" else 0
    any_object = False
    gc_was = gc.isenabled()
    # The loop makes millions of short-lived containers and keeps a dict per export;
    # the cyclic GC's full passes over them cost a fifth of the time at 1M lines and
    # find nothing (no reference cycles are made here).
    gc.disable()
    try:
        for ch in _chunks(path, checker, fs.format, reader, sink is not None, bar.update,
                          workers):
            any_object = any_object or ch.any_object
            tables, next_key = state.admit(ch, fs, next_key)
            if sink is not None and tables:
                sink(tables)
    finally:
        bar.close()
        if gc_was:
            gc.enable()
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

    Image sizes are checked against the items already stored, as ingest would; up to
    `CHECK_EXAMPLES_KEPT` quarantined lines and contract errors are kept per file.
    `options` (a `metrics.importers.ImportOptions`) supply what a tool's export lacks.
    """
    summary = IngestSummary()
    from metrics.importers.detect import plan_exports

    stored: dict[str, tuple[float, float]] = {}
    if config.database.exists():
        with store.open_db(config.database, read_only=True) as con:
            stored = {r[0]: (r[1], r[2]) for r in con.execute(
                "SELECT item_id, image_width, image_height FROM items").fetchall()}
    for unit, opts in plan_exports(config, [Path(p) for p in paths], fmt, options):
        name, reader = resolve_reader(unit.path, unit.fmt, opts)
        fs = FileSummary(unit.label, format=name, keep=CHECK_EXAMPLES_KEPT)
        # Each file is checked on its own, as its own export would be.
        process_file(unit.path, Checker(config), ExportState(dict(stored)), fs,
                     reader=reader, sink=None, next_key=0, progress=progress)
        summary.files.append(fs)
    return summary


def ingest_files(config: ProjectConfig, paths: Iterable[Path | str], *, fmt: str = "auto",
                 progress: bool | None = None,
                 after_load: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
                 options: Any = None,
                 on_wait: Callable[[str], None] | None = None,
                 ) -> IngestSummary:
    """Load exports into the project database in one transaction.

    Each file is parsed, checked and staged into private Arrow files without touching
    the project database; only the final move of all of them (dedupe, versions, derived
    tables, rebuilt once) holds the write lock, in one transaction. Dashboards reading
    meanwhile keep working; a failure, Ctrl-C or a killed process leaves the database as
    it was.

    Raises FileUnusable for a file that cannot be used; then nothing is loaded, from
    any file: one command loads all its files or none.
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
                if len(plan) > 1:
                    unusable = FileUnusable(exc.path, f"{exc.problem}; nothing was loaded "
                                            "from any file of this ingest")
                break
            summary.files.append(st.fs)
            if not st.fs.already_ingested:
                staged.append(st)
        # 3. The move into the project database: the only part under the write lock.
        if staged and unusable is None:
            t1 = time.perf_counter()
            with store.open_db(config.database, wait_s=3600.0, on_wait=on_wait) as con:
                _commit(con, staged, after_load=after_load, t1=t1)
    finally:
        for st in staged:
            shutil.rmtree(st.stage_path, ignore_errors=True)
    if unusable is not None:
        raise unusable
    return summary


@dataclass
class _Staged:
    fs: FileSummary
    state: ExportState
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
    for f in folder.glob("stage-*"):
        pid = f.name.split("-")[1].split(".")[0]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            if f.is_dir():
                shutil.rmtree(f, ignore_errors=True)
            else:
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
    stage_path = stage_dir / f"stage-{os.getpid()}-{time.monotonic_ns()}"
    checker = Checker(config)
    state = ExportState(items)
    st = _Staged(fs, state, stage_path, sha, path, merged, name, 0.0)
    if sha in loaded_shas:
        fs.already_ingested = True
        fs.records = fs.duplicates = loaded_shas[sha]
        return st
    t0 = time.perf_counter()
    stage_path.mkdir()
    writers: dict[str, tuple[Any, Any]] = {}   # table -> (file, Arrow IPC writer)

    def writer(tname: str):
        if tname not in writers:
            sink_file = pa.OSFile(str(stage_path / f"{tname}.arrow"), "wb")
            writers[tname] = (sink_file, pa.ipc.new_file(sink_file, _SCHEMAS[tname]))
        return writers[tname][1]

    try:
        # Staged as Arrow IPC files (one per table): appending a chunk's tables costs
        # next to nothing (no encoding, no compression), and the move maps them back
        # without copying.
        def sink(tables: dict[str, pa.Table]) -> None:
            for tname, tbl in tables.items():
                writer(tname).write_table(tbl)

        # Keys are local (1..n) here; the commit shifts them past the stored ones.
        process_file(path, checker, state, fs, reader=reader, sink=sink, next_key=1,
                     progress=progress)
        for tname in store.TABLES:
            writer(tname)
        for sink_file, w in writers.values():
            w.close()
            sink_file.close()
    except BaseException:
        for sink_file, w in writers.values():
            with contextlib.suppress(Exception):
                w.close()
            sink_file.close()
        shutil.rmtree(stage_path, ignore_errors=True)
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
    fs, state = st.fs, st.state
    export_id = con.execute(
        "SELECT coalesce(max(export_id), 0) + 1 FROM exports").fetchall()[0][0]
    base = con.execute(
        "SELECT coalesce(max(ann_key), 0) FROM annotations").fetchall()[0][0]
    with contextlib.ExitStack() as maps:
        # The staged files are mapped, not copied; keys shift past the stored ones and
        # the export id is set in Arrow, so DuckDB inserts the rows as they are.
        staged = {}
        for tname in store.TABLES:
            source = maps.enter_context(pa.memory_map(str(st.stage_path / f"{tname}.arrow")))
            tbl = pa.ipc.open_file(source).read_all()
            if tname != "quarantine":
                tbl = _set_column(tbl, "ann_key", pc.add(tbl.column("ann_key"), base))
            if tname in ("annotations", "quarantine"):
                tbl = _set_column(tbl, "export_id",
                                  pa.array(np.full(tbl.num_rows, export_id, np.int32)))
            staged[tname] = tbl
        try:
            _finalize(con, state, fs, base, staged)
        finally:
            for tname in staged:
                con.unregister(f"stage_{tname}")
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
    return export_id


def _set_column(tbl: pa.Table, name: str, values: Any) -> pa.Table:
    return tbl.set_column(tbl.schema.get_field_index(name), name, values)


def _finalize(con: duckdb.DuckDBPyConnection, state: ExportState, fs: FileSummary,
              base: int, staged: dict[str, pa.Table]) -> None:
    """Move staged rows into the store: drop duplicates of stored annotations, number
    versions, flip `is_current`, register new items (their staged first keys shifted by
    `base`, as the rows' were). `staged` holds each table's rows with final keys."""
    for tname, tbl in staged.items():
        con.register(f"stage_{tname}", tbl)
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
        gone = con.sql("SELECT ann_key FROM stage_dups").to_arrow_table().column("ann_key")
        for tname, tbl in staged.items():
            if tname != "quarantine":
                staged[tname] = tbl.filter(pc.invert(pc.is_in(tbl.column("ann_key"), gone)))
                con.register(f"stage_{tname}", staged[tname])
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
    # Rows go in in key order (the staged order; sorted if it were not), with their
    # version and currency set in Arrow: no join or sort at insert.
    ann = staged["annotations"]
    keys = ann.column("ann_key").to_numpy()
    if len(keys) > 1 and not bool((keys[1:] > keys[:-1]).all()):
        ann = ann.sort_by("ann_key")
    versions = con.sql(
        "SELECT version, is_current FROM stage_versions ORDER BY ann_key").to_arrow_table()
    ann = _set_column(ann, "version", versions.column("version").cast(pa.int32()))
    ann = _set_column(ann, "is_current", versions.column("is_current"))
    con.register("stage_annotations", ann)
    con.execute("INSERT INTO annotations SELECT * FROM stage_annotations")
    for tname in ("boxes", "contract_errors", "violations", "quarantine"):
        con.execute(f"INSERT INTO {tname} SELECT * FROM stage_{tname}")
    if state.new_items:
        widths, heights, first_keys = zip(*state.new_items.values(), strict=True)
        items_tbl = pa.table({  # noqa: F841
            "item_id": pa.array(list(state.new_items), pa.string()),
            "image_width": pa.array(widths, pa.float64()),
            "image_height": pa.array(heights, pa.float64()),
            "first_ann_key": np.array(first_keys, dtype=np.int64) + base,
        })
        con.execute("INSERT INTO items BY NAME SELECT * FROM items_tbl "
                    "WHERE item_id NOT IN (SELECT item_id FROM items)")
    con.execute("DROP TABLE IF EXISTS stage_dups")
    con.execute("DROP TABLE IF EXISTS stage_versions")
