"""The DuckDB database of a QA project: its layout, opening it, and its generation.

One row of `annotations` per *version* of an annotation: a later export carrying an
`annotation_id` again with changed content adds a version and flips `is_current`, so
the older one stays queryable. `meta.generation` is bumped by every committed ingest;
readers key their caches on it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import duckdb

LAYOUT_VERSION = 2

# Upgrades from each older layout to the next, applied in place in one transaction.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 1 -> 2: ingest timings per export (staging, waiting for the lock, committing).
    1: (
        "ALTER TABLE exports ADD COLUMN stage_seconds DOUBLE",
        "ALTER TABLE exports ADD COLUMN lock_wait_seconds DOUBLE",
        "ALTER TABLE exports ADD COLUMN commit_seconds DOUBLE",
    ),
}
APP_ID = "labelqa"

# Column order matters: ingest builds Arrow batches in exactly this order.
ANNOTATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ann_key", "BIGINT NOT NULL"),        # one per stored version, never reused
    ("annotation_id", "VARCHAR NOT NULL"),
    ("version", "INTEGER NOT NULL"),       # 1, 2, ... per annotation_id
    ("is_current", "BOOLEAN NOT NULL"),    # the latest version of its annotation_id
    ("export_id", "INTEGER NOT NULL"),
    ("line", "INTEGER NOT NULL"),          # line (native) or record number in its export
    ("item_id", "VARCHAR NOT NULL"),
    ("annotator_id", "VARCHAR NOT NULL"),
    ("role", "VARCHAR NOT NULL"),
    ("submitted_at", "TIMESTAMPTZ NOT NULL"),
    ("week", "VARCHAR NOT NULL"),          # ISO week of submitted_at in the project tz
    ("guideline_version", "VARCHAR"),
    ("image_uri", "VARCHAR"),
    ("image_width", "DOUBLE"),
    ("image_height", "DOUBLE"),
    ("prefilled", "BOOLEAN NOT NULL"),
    ("reviewed", "BOOLEAN NOT NULL"),
    ("reviewed_by", "VARCHAR"),
    ("fields", "JSON"),
    ("draft", "JSON"),
    ("raw", "JSON"),                       # the tool's original object (non-native formats)
    ("content_hash", "VARCHAR NOT NULL"),
    ("n_boxes", "INTEGER NOT NULL"),
    ("schema_errors", "INTEGER NOT NULL"),  # contract errors of this version
    ("policy_errors", "INTEGER NOT NULL"),  # violations of severity error
    ("policy_warnings", "INTEGER NOT NULL"),
)

BOX_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ann_key", "BIGINT NOT NULL"),
    ("box_idx", "INTEGER NOT NULL"),       # index in the record's `boxes` array
    ("label", "VARCHAR"),
    ("x", "DOUBLE"),
    ("y", "DOUBLE"),
    ("w", "DOUBLE"),
    ("h", "DOUBLE"),
    ("attributes", "JSON"),
    ("matchable", "BOOLEAN NOT NULL"),     # finite, positive size, has a label
)

ERROR_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ann_key", "BIGINT NOT NULL"),
    ("pointer", "VARCHAR NOT NULL"),       # JSON Pointer, array indices as *
    ("instance", "VARCHAR NOT NULL"),      # JSON Pointer with the real indices
    ("keyword", "VARCHAR NOT NULL"),
    ("message", "VARCHAR NOT NULL"),
)

VIOLATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ann_key", "BIGINT NOT NULL"),
    ("rule", "VARCHAR NOT NULL"),
    ("field", "VARCHAR NOT NULL"),
    ("element", "INTEGER"),                # index in a list-valued field, else NULL
    ("severity", "VARCHAR NOT NULL"),
    ("excerpt", "VARCHAR NOT NULL"),
    ("start_pos", "INTEGER NOT NULL"),     # code points, end exclusive
    ("end_pos", "INTEGER NOT NULL"),
    ("label", "VARCHAR"),                  # the label named / boxed (cross-modal rules)
)

QUARANTINE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("export_id", "INTEGER NOT NULL"),
    ("line", "INTEGER NOT NULL"),
    ("reason", "VARCHAR NOT NULL"),
    ("raw", "VARCHAR"),                    # the line as text (invalid bytes replaced), capped
)

TABLES = {
    "annotations": ANNOTATION_COLUMNS,
    "boxes": BOX_COLUMNS,
    "contract_errors": ERROR_COLUMNS,
    "violations": VIOLATION_COLUMNS,
    "quarantine": QUARANTINE_COLUMNS,
}

_EXPORTS_DDL = """
CREATE TABLE IF NOT EXISTS exports (
    export_id INTEGER NOT NULL,
    path VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    format VARCHAR NOT NULL,
    size_bytes BIGINT NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL,
    records INTEGER NOT NULL,
    loaded INTEGER NOT NULL,
    duplicates INTEGER NOT NULL,
    quarantined INTEGER NOT NULL,
    skipped_records INTEGER NOT NULL,
    new_versions INTEGER NOT NULL,
    boxes INTEGER NOT NULL,
    skipped JSON,
    by_role JSON,
    stage_seconds DOUBLE,
    lock_wait_seconds DOUBLE,
    commit_seconds DOUBLE
)
"""

_ITEMS_DDL = """
CREATE TABLE IF NOT EXISTS items (
    item_id VARCHAR NOT NULL,
    image_width DOUBLE,
    image_height DOUBLE,
    first_ann_key BIGINT NOT NULL
)
"""


class DatabaseError(Exception):
    """The database file cannot be used (foreign, newer layout, locked too long)."""


def table_ddl(name: str, columns: tuple[tuple[str, str], ...], *, temp: bool = False) -> str:
    cols = ",\n    ".join(f"{c} {t}" for c, t in columns)
    kind = "TEMP TABLE" if temp else "TABLE"
    return f"CREATE {kind} IF NOT EXISTS {name} (\n    {cols}\n)"


def create_layout(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute(_EXPORTS_DDL)
    con.execute(_ITEMS_DDL)
    for name, cols in TABLES.items():
        con.execute(table_ddl(name, cols))
    con.execute(
        "INSERT INTO meta VALUES ('app', $app), ('layout_version', $v), ('generation', '0') "
        "ON CONFLICT DO NOTHING",
        {"app": APP_ID, "v": str(LAYOUT_VERSION)},
    )
    _create_views(con)


def _create_views(con: duckdb.DuckDBPyConnection) -> None:
    # The current version of each annotation: what every metric reads.
    con.execute(
        "CREATE OR REPLACE VIEW current_annotations AS "
        "SELECT * FROM annotations WHERE is_current"
    )


def _layout_version(con: duckdb.DuckDBPyConnection, path: Path) -> int | None:
    """The layout version of an existing labelqa database, None for a new, empty file."""
    tables = {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
    ).fetchall()}
    if not tables:
        return None
    if "meta" not in tables:
        raise DatabaseError(f"{path}: not a labelqa database (it has tables but no "
                            "labelqa metadata); point [project] database at another file")
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("app") != APP_ID:
        raise DatabaseError(f"{path}: not a labelqa database")
    try:
        version = int(meta.get("layout_version", ""))
    except ValueError:
        raise DatabaseError(f"{path}: unreadable layout version "
                            f"{meta.get('layout_version')!r}") from None
    if version > LAYOUT_VERSION:
        raise DatabaseError(
            f"{path}: written by a newer labelqa (layout {version}, this one reads up to "
            f"{LAYOUT_VERSION}); upgrade labelqa"
        )
    return version


def _upgrade(con: duckdb.DuckDBPyConnection, version: int) -> None:
    con.execute("BEGIN TRANSACTION")
    try:
        while version < LAYOUT_VERSION:
            for sql in MIGRATIONS[version]:
                con.execute(sql)
            version += 1
        con.execute("UPDATE meta SET value = $v WHERE key = 'layout_version'",
                    {"v": str(version)})
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def connect(path: Path | str, *, read_only: bool = False, wait_s: float = 30.0,
            on_wait: Callable[[str], None] | None = None,
            ) -> duckdb.DuckDBPyConnection:
    """Open the project database, creating its layout when writable and new, and
    upgrading an older layout in place.

    A lock held by another process (an ingest, or readers when writing) is waited for
    up to `wait_s` seconds; `on_wait` is told once that we are waiting. A database of
    an older layout opened read-only is upgraded first (briefly writable).
    """
    path = Path(path)
    if read_only and not path.exists():
        raise DatabaseError(f"{path}: no database yet; run `labelqa ingest` first")
    con = _open_waiting(path, read_only=read_only, wait_s=wait_s, on_wait=on_wait)
    try:
        version = _layout_version(con, path)
        if version is not None and version < LAYOUT_VERSION:
            if read_only:
                con.close()
                with _open_waiting(path, read_only=False, wait_s=wait_s,
                                   on_wait=on_wait) as rw:
                    if (_layout_version(rw, path) or LAYOUT_VERSION) < LAYOUT_VERSION:
                        _upgrade(rw, _layout_version(rw, path))
                con = _open_waiting(path, read_only=True, wait_s=wait_s, on_wait=on_wait)
            else:
                _upgrade(con, version)
        if not read_only:
            create_layout(con)
    except BaseException:
        con.close()
        raise
    return con


def _open_waiting(path: Path, *, read_only: bool, wait_s: float,
                  on_wait: Callable[[str], None] | None) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + wait_s
    delay = 0.02
    told = False
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            text = str(exc)
            # Another process holds the file lock (IOException), or this process has it
            # open the other way (read-only vs writable): a dashboard reading while its
            # own Data page ingests. Both are released shortly; wait for them.
            busy = ("lock" in text.lower() if isinstance(exc, duckdb.IOException)
                    else "different configuration" in text)
            if not busy:
                if isinstance(exc, duckdb.IOException):
                    raise DatabaseError(f"{path}: cannot open: {text}") from None
                raise DatabaseError(f"{path}: cannot open as a DuckDB database: {exc}"
                                    ) from None
            if time.monotonic() > deadline:
                raise DatabaseError(
                    f"{path}: still locked by another process after {wait_s:.0f} s "
                    "(an ingest, or a dashboard reading); try again") from None
            if on_wait is not None and not told:
                on_wait(f"{path.name} is in use by another process; waiting for it…")
                told = True
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


@contextmanager
def open_db(path: Path | str, *, read_only: bool = False, wait_s: float = 30.0,
            on_wait: Callable[[str], None] | None = None,
            ) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(path, read_only=read_only, wait_s=wait_s, on_wait=on_wait)
    try:
        yield con
    finally:
        con.close()


def generation(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
    return int(row[0]) if row else 0


def db_stamp(database: Path) -> tuple:
    """What changes on disk whenever the database does: the (mtime, size) of the file
    and of its write-ahead log. A commit always touches one of them, so readers can key
    a cache of the generation on it without opening the database."""
    stamp = []
    for f in (database, database.with_name(database.name + ".wal")):
        try:
            s = f.stat()
            stamp.append((s.st_mtime_ns, s.st_size))
        except FileNotFoundError:
            stamp.append(None)
    return tuple(stamp)


def bump_generation(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS VARCHAR) "
        "WHERE key = 'generation'"
    )


# Its threads start on the first submit; none while no page uses it.
_SIDE = ThreadPoolExecutor(max_workers=4, thread_name_prefix="labelqa-side")


class Alongside:
    """``fn(cursor, *args, **kwargs)`` in a side thread, on a cursor of ``con``, while the
    caller goes on with ``con``; ``result()`` after the ``with`` block.

    DuckDB releases the GIL while a query runs, so two short query sequences of one page
    overlap (the overview's week switch at 1M: 130 ms in sequence, 96 ms so). The
    cursor sees committed data only: for readers, never inside a caller's transaction.
    Leaving the block waits for the side call (a cursor is never closed under a running
    query) and closes the cursor; its error, if any, is raised by ``result()``.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, fn: Callable[..., Any],
                 *args: Any, **kwargs: Any) -> None:
        self._cursor = con.cursor()
        try:
            self._future = _SIDE.submit(fn, self._cursor, *args, **kwargs)
        except BaseException:
            self._cursor.close()
            raise

    def __enter__(self) -> Alongside:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            wait([self._future])
        finally:
            self._cursor.close()

    def result(self) -> Any:
        return self._future.result()
