"""Which format a file is (from its content, never its name), and which COCO files given
together merge into one export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from metrics.importers import ImportOptions
from metrics.importers.coco import coco_role
from metrics.importers.common import JsonError, JsonScanner
from metrics.ingest import FileUnusable

HEAD_BYTES = 1 << 20
# Top-level keys that settle the question when met first.
COCO_KEYS = frozenset({"images", "categories", "info", "licenses"})
LABELSTUDIO_KEYS = frozenset({"data", "predictions", "completions", "drafts"})
NATIVE_KEYS = frozenset({"item_id", "annotator_id", "submitted_at", "annotation_id",
                         "boxes", "fields", "image", "role"})


def detect_format(path: Path) -> str:
    """`native`, `labelstudio`, `coco` or `cvat`, from the first bytes of the file.

    `<` -> CVAT XML (the reader checks the root is `<annotations>`); `[` followed by an
    object or `]` -> a Label Studio task list (or JSON-MIN); `{` -> COCO, a single Label
    Studio task or a native line, by the first telling top-level key. Anything else is
    left to the native reader, which explains what it found.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError as exc:
        raise FileUnusable(path, f"cannot be read: {exc.strerror or exc}") from None
    text = head.decode("utf-8", "ignore").lstrip("\ufeff \t\r\n")
    if text.startswith("<"):
        return "cvat"
    if text.startswith("["):
        rest = text[1:].lstrip(" \t\r\n")
        return "labelstudio" if rest[:1] in ("{", "]") else "native"
    if text.startswith("{"):
        return _object_kind(text)
    return "native"


def _object_kind(text: str) -> str:
    sc = JsonScanner(text)
    saw_annotations = False
    try:
        for key in sc.members():
            if key in COCO_KEYS:
                return "coco"
            if key in LABELSTUDIO_KEYS:
                return "labelstudio"
            if key in NATIVE_KEYS:
                return "native"
            saw_annotations = saw_annotations or key == "annotations"
    except JsonError:
        pass    # the head ends inside a long value
    return "coco" if saw_annotations else "native"


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
