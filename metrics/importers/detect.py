"""Which format a file is (from its content, never its name), and which COCO files given
together merge into one export."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable

from metrics.importers import ImportOptions
from metrics.importers.coco import coco_role
from metrics.importers.common import JsonError, JsonScanner
from metrics.ingest import FileUnusable

HEAD_BYTES = 1 << 20
# A native line can be this long; a first line longer than that is not JSON Lines.
MAX_LINE_BYTES = 16 * 1024 * 1024
_SPACE = " \t\r\n"
# Top-level keys of an object that tell its format.
PLACEMENT_KEYS = frozenset({"item_id", "annotator_id", "submitted_at"})   # native only
COCO_KEYS = frozenset({"images", "categories", "info", "licenses"})
LABELSTUDIO_KEYS = frozenset({"data", "predictions", "completions", "drafts"})
# A COCO results list (`[{"image_id", "category_id", "bbox", "score"}]`) as opposed to a
# Label Studio task list: its entries point at images.
COCO_RESULT_KEYS = frozenset({"category_id", "bbox", "caption", "segmentation"})


def _structure(_text: str) -> None:
    return None     # detection needs the shape of the JSON, not its numbers


# Lenient (NaN, huge numbers): only where values start and end matters here; each
# reader is strict and explains what is wrong.
_DECODER = json.JSONDecoder(parse_int=_structure, parse_float=_structure,
                            parse_constant=_structure)


def detect_format(path: Path) -> str:
    """`native`, `labelstudio`, `coco` or `cvat`, from the content of the file.

    `<` -> CVAT XML (the reader checks the root is `<annotations>`). Otherwise the first
    JSON value of the file decides, as JSON Lines hold one value per line and a tool's
    JSON export is one document:

    - it is on one line and more follows -> native JSON Lines, whatever that value is;
    - it is the only value, or it continues validly onto the next line (a pretty-printed
      document) -> a JSON export: a list is Label Studio (a COCO results list: COCO, whose
      reader refuses it), an object is told by its top-level keys (`_object_kind`);
    - its first line is not valid JSON and the value does not go on validly on the next
      line -> native (that line is quarantined with the reason, the others are read).

    Reads the first MiB, more only while the first line goes on (up to the 16 MiB of a
    native line) or while only blank space follows a first value; never the whole file.
    """
    try:
        with open(path, "rb") as fh:
            return _detect(fh)
    except OSError as exc:
        raise FileUnusable(path, f"cannot be read: {exc.strerror or exc}") from None


def _detect(fh: BinaryIO) -> str:
    data = fh.read(HEAD_BYTES)
    complete = len(data) < HEAD_BYTES
    text = data.decode("utf-8", "ignore")
    start = len(text) - len(text.lstrip("\ufeff" + _SPACE))
    if text[start:start + 1] == "<":
        return "cvat"
    if text[start:start + 1] not in ("[", "{"):
        return "native"
    # The whole first line, and the start of the next, are needed to tell.
    lead = len(data) - len(data.lstrip(b"\xef\xbb\xbf \t\r\n"))
    newline = data.find(b"\n", lead)
    chunks, size = [data], len(data)
    while not complete and (size - lead <= MAX_LINE_BYTES if newline == -1 else
                            size - newline < HEAD_BYTES // 16):
        more = fh.read(HEAD_BYTES)
        complete = len(more) < HEAD_BYTES
        if newline == -1 and (i := more.find(b"\n")) != -1:
            newline = size + i
        chunks.append(more)
        size += len(more)
    if newline == -1 and not complete:
        return _head_kind(text, start)      # a first line longer than a native line
    if len(chunks) > 1:
        text = b"".join(chunks).decode("utf-8", "ignore")
        start = len(text) - len(text.lstrip("\ufeff" + _SPACE))
    line_end = text.find("\n", start)
    try:
        value, end = _DECODER.raw_decode(text, start)
    except RecursionError:
        return _head_kind(text, start)      # too deep to tell; its reader explains
    except json.JSONDecodeError as exc:
        # With strict strings, an unterminated string is one the text ran out in.
        pos = len(text) if exc.msg.startswith("Unterminated string") else exc.pos
        next_line = (len(text) if line_end == -1 else
                     len(text) - len(text[line_end:].lstrip(_SPACE)))
        if next_line == len(text) and complete:
            # A single broken line: no line to save either way; the likely format's
            # reader explains.
            return _head_kind(text, start)
        if pos > next_line or (pos >= len(text) and not complete):
            return _head_kind(text, start)  # a document over several lines
        return "native"                      # a broken first line of JSON Lines
    if line_end != -1 and end > line_end:
        return _value_kind(value)           # a document over several lines
    if text[end:].strip(_SPACE):
        return "native"                      # more values follow the first line
    if not complete and not _blank_to_end(fh):
        return "native"
    return _value_kind(value)


def _blank_to_end(fh: BinaryIO) -> bool:
    while chunk := fh.read(HEAD_BYTES):
        if chunk.strip(b" \t\r\n"):
            return False
    return True


def _value_kind(value: Any) -> str:
    """The format of a whole JSON document."""
    if isinstance(value, list):
        return _list_kind(value[0] if value else None)
    if isinstance(value, dict):
        return _object_kind(value.keys())
    return "native"


def _list_kind(first: Any) -> str:
    """Label Studio, unless the first entry is COCO's: a result pointing at an image, or a
    whole COCO document (the COCO reader then says why it cannot read it)."""
    if isinstance(first, dict) and not first.keys() & LABELSTUDIO_KEYS:
        keys = first.keys()
        if ("image_id" in keys and keys & COCO_RESULT_KEYS) or keys & COCO_KEYS:
            return "coco"
    return "labelstudio"


def _object_kind(keys: Iterable[str]) -> str:
    """Native when it has a native placement key (no tool writes them at the top level),
    else COCO or Label Studio by their keys, else native (whose reader explains)."""
    keys = set(keys)
    if keys & PLACEMENT_KEYS:
        return "native"
    if keys & COCO_KEYS:
        return "coco"
    if keys & LABELSTUDIO_KEYS:
        return "labelstudio"
    return "coco" if "annotations" in keys else "native"


def _head_kind(text: str, start: int) -> str:
    """The format of a document too large (or too deep) to decode here: the first entry
    of a list, or the top-level keys of an object met in the text read."""
    sc = JsonScanner(text[start:])
    if text[start] == "[":
        try:
            for _ in sc.items():
                return _list_kind(sc.value())
        except JsonError:
            pass
        return "labelstudio"
    keys: list[str] = []
    try:
        for key in sc.members():
            keys.append(key)
    except JsonError:
        pass    # the text ends inside a long value
    return _object_kind(keys)


@dataclass(frozen=True)
class Unit:
    """One export to read: a file, its format, and files merged into it."""
    path: Path
    fmt: str
    merge: tuple[Path, ...] = ()

    @property
    def label(self) -> str:
        return " + ".join(str(p) for p in (self.path, *self.merge))


def plan_files(paths: Iterable[Path], fmt: str) -> list[Unit]:
    """Formats of `paths` (detected when `fmt` is `auto`), with COCO captions files
    merged into their instances file: `captions_X.json` into `instances_X.json` (COCO's
    naming), or into the only instances file given. Other files stay on their own."""
    units = [Unit(p, detect_format(p) if fmt == "auto" else fmt) for p in paths]
    coco = [u.path for u in units if u.fmt == "coco"]
    if len(coco) < 2:
        return units
    roles = {p: coco_role(p) for p in coco}
    instances = [p for p in coco if roles[p] == "instances"]
    merge: dict[Path, list[Path]] = {p: [] for p in instances}
    merged: set[Path] = set()
    for p in coco:
        if roles[p] != "captions":
            continue
        twin = p.name.replace("captions", "instances")
        target = next((i for i in instances if i.name == twin), None)
        if target is None and len(instances) == 1:
            target = instances[0]
        if target is not None:
            merge[target].append(p)
            merged.add(p)
    out = []
    for u in units:
        if u.path in merged:
            continue
        out.append(Unit(u.path, u.fmt, tuple(merge.get(u.path, ()))))
    return out


def plan_exports(config, paths: list[Path], fmt: str, options: ImportOptions | None
                 ) -> list[tuple[Unit, ImportOptions]]:
    """(unit, options) per export for `ingest_files` / `check_files`: every path usable,
    formats detected, COCO captions merged, the project's `[fields]` kinds passed on."""
    from metrics.ingest import _usable

    for path in paths:
        _usable(path)
    options = (options or ImportOptions()).with_fields(config.fields)
    return [(u, options.with_merge(u.merge)) for u in plan_files(paths, fmt)]
