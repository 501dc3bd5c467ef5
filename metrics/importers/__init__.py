"""Importers: Label Studio, COCO and CVAT exports converted into native records.

Each reader is a generator `read_x(path, on_bytes=None, *, options)` yielding the events
`metrics.ingest` understands (`Record`, `Bad`, `Skip`) and raising `FileUnusable` for a
file that cannot be used at all. `metrics.ingest.resolve_reader` binds `options`, so the
pipeline calls every reader as `reader(path, on_bytes)`. The mapping of each format is
documented in `docs/formats.md`.

This module stays free of imports from `metrics.ingest` (which imports the readers
lazily), so the two can refer to each other without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

ITEM_ID_MODES = ("basename", "tool")


@dataclass(frozen=True)
class ImportOptions:
    """What a tool's file may lack, and how to name items.

    Parameters
    ----------
    annotator : str or None
        `--annotator`: the annotator of files that do not name one (COCO always; CVAT
        instead of the job assignee; Label Studio where `completed_by` is missing).
    submitted_at : str or None
        `--submitted-at`: ISO 8601 time for files without one (COCO always; CVAT instead
        of `<dumped>`; Label Studio where `created_at` is missing).
    item_id : {"basename", "tool"}
        `basename`: the image file's base name (lines items up across tools);
        `tool`: the tool's own id (Label Studio task id, COCO image id, CVAT image id).
    field_kinds : mapping of str to str
        The project's `[fields]` (name -> free | categorical | multilabel): decides whether
        a Label Studio `choices` result becomes one value or a list.
    merge : tuple of Path
        Further files read into the same export (a COCO captions file merged into its
        instances file by image).
    """

    annotator: str | None = None
    submitted_at: str | None = None
    item_id: str = "basename"
    field_kinds: Mapping[str, str] = field(default_factory=dict)
    merge: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if self.item_id not in ITEM_ID_MODES:
            raise ValueError(f"item_id must be one of {', '.join(ITEM_ID_MODES)}, "
                             f"got {self.item_id!r}")

    def with_merge(self, paths: tuple[Path, ...] | list[Path]) -> ImportOptions:
        return replace(self, merge=tuple(paths))

    def with_fields(self, kinds: Mapping[str, str]) -> ImportOptions:
        return self if self.field_kinds else replace(self, field_kinds=dict(kinds))
