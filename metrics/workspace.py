"""Project-level operations shared by the CLI and the dashboard: ingest with derived
tables refreshed, and building the demo project."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

from metrics import store
from metrics.config import ProjectConfig, load_config
from metrics.ingest import IngestSummary, ingest_files


def _zone(con) -> str | None:
    row = con.execute("SELECT value FROM meta WHERE key = 'timezone'").fetchall()
    return row[0][0] if row else None


def rezone(con, config: ProjectConfig) -> None:
    """Weeks are stored per annotation, in the project time zone. When the config's
    time zone changed since they were computed, recompute them in place (DuckDB's
    ISO year and week of `submitted_at` in that zone)."""
    zone = _zone(con)
    if zone == config.timezone:
        return
    if zone is not None:
        con.execute("UPDATE annotations SET week = "
                    "strftime(timezone($tz, submitted_at), '%G-W%V')",
                    {"tz": config.timezone})
    con.execute("INSERT INTO meta VALUES ('timezone', $tz) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                {"tz": config.timezone})


def _refresher(config: ProjectConfig):
    from metrics.derived import refresh

    def after_load(con) -> None:
        rezone(con, config)
        refresh(con, config)

    return after_load


def ingest(config: ProjectConfig, paths: Iterable[Path | str], *, fmt: str = "auto",
           progress: bool | None = None, options=None, on_wait=None) -> IngestSummary:
    """Ingest exports and rebuild the derived weekly tables in the same transaction.

    `options` (a `metrics.importers.ImportOptions`) supply what a tool's export lacks
    (annotator, time) and how items are named.
    """
    return ingest_files(config, paths, fmt=fmt, progress=progress,
                        after_load=_refresher(config), options=options, on_wait=on_wait)


def ensure_derived(config: ProjectConfig) -> bool:
    """Rebuild the derived tables when the config they depend on changed (labels,
    fields, thresholds, sample, time zone) or they predate this version; True when
    rebuilt.

    Readers open the database read-only, so this takes the write lock briefly first.
    """
    from metrics import derived

    if not config.database.exists():
        return False
    with store.open_db(config.database, read_only=True) as con:
        if derived.is_current(con, config) and _zone(con) in (None, config.timezone):
            return False
    with store.open_db(config.database) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            _refresher(config)(con)
            store.bump_generation(con)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return True


def demo_dir() -> Path:
    from metrics.demo import DEMO_DIR

    return Path(DEMO_DIR)


def build_demo(folder: Path | None = None, *, force: bool = False, progress: bool = False,
               ) -> tuple[ProjectConfig, IngestSummary | None]:
    """Generate and ingest the demo project; reuse a ready one unless `force`.

    Returns the config and the ingest summary (None when an existing database was reused).
    """
    from metrics.demo import demo_config_files, generate_demo

    folder = (folder or demo_dir()).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for src in demo_config_files():
        dst = folder / Path(src).name
        if Path(src).resolve() != dst.resolve() and (force or not dst.exists()):
            shutil.copyfile(src, dst)
    config = load_config(folder)
    if config.database.exists() and not force:
        try:
            with store.open_db(config.database, read_only=True) as con:
                if con.execute("SELECT count(*) FROM exports").fetchone()[0]:
                    return config, None
        except store.DatabaseError:
            pass
    for suffix in ("", ".wal"):
        p = Path(str(config.database) + suffix)
        if p.exists():
            p.unlink()
    exports = generate_demo(folder)
    return config, ingest(config, exports, progress=progress)
