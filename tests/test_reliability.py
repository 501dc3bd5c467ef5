"""Reliability: concurrent readers, killed ingests, database layout versions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from conftest import record

from metrics import store
from metrics.cli import main

ROOT = Path(__file__).resolve().parents[1]
LAYOUT1 = Path(__file__).parent / "fixtures" / "layout1"


def _big_export(project, n: int, name: str = "big.jsonl") -> Path:
    recs = [record(item=f"i{i}", annotator=f"a{i % 7}",
                   when=f"2026-01-{5 + i % 20:02d}T10:00:00Z",
                   caption=f"A car parked near person number {i} today.")
            for i in range(n)]
    return project.write(name, recs)


def _export_rows(db: Path) -> tuple[int, int]:
    with store.open_db(db, read_only=True) as con:
        exports = con.execute("SELECT count(*) FROM exports").fetchall()[0][0]
        rows = con.execute("SELECT count(*) FROM annotations").fetchall()[0][0]
    return exports, rows


def _ingest_cmd(project, path: Path) -> list[str]:
    return [sys.executable, "-m", "metrics.cli", "ingest", str(path), "--project",
            str(project.root), "--quiet"]


@pytest.mark.parametrize("delay", [0.3, 1.2, 2.5, 4.0])
def test_sigkill_leaves_none_or_all_and_rerun_completes(project, delay):
    n = 30_000
    path = _big_export(project, n)
    project.ingest(project.write("first.jsonl", [record(item="first")]))
    proc = subprocess.Popen(_ingest_cmd(project, path), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    exports, rows = _export_rows(project.config.database)
    assert (exports, rows) in {(1, 1), (2, 1 + n)}, (exports, rows)
    fs = project.ingest(path).files[0]  # rerun completes it (or finds it complete)
    assert fs.already_ingested or fs.loaded == n
    assert _export_rows(project.config.database) == (2, 1 + n)
    stage = project.config.database.parent / ".labelqa.duckdb.staging"
    assert not list(stage.glob("stage-*"))  # the dead ingest's staging file is gone


def test_readers_never_see_a_half_loaded_export(project):
    n = 20_000
    project.ingest(project.write("first.jsonl", [record(item="first")]))
    path = _big_export(project, n)
    # A reader process polls the database while ingest runs.
    reader = subprocess.Popen(
        [sys.executable, "-c", f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from metrics import store
seen = set()
end = time.monotonic() + 60
while time.monotonic() < end:
    with store.open_db({str(project.config.database)!r}, read_only=True) as con:
        seen.add(con.execute("SELECT count(*) FROM annotations").fetchall()[0][0])
    if {1 + n} in seen:
        break
    time.sleep(0.01)
print(sorted(seen))
"""], stdout=subprocess.PIPE, text=True)
    result = subprocess.run(_ingest_cmd(project, path), cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out, _ = reader.communicate(timeout=120)
    assert reader.returncode == 0
    assert set(json.loads(out)) <= {1, 1 + n}, out


def test_older_layout_is_upgraded_in_place(tmp_path, project):
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute((LAYOUT1 / "schema.sql").read_text())
    for line in (LAYOUT1 / "load.sql").read_text().splitlines():
        if line.strip():
            con.execute(line.replace("'tests/fixtures/layout1/", f"'{LAYOUT1}/"))
    con.close()
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT value FROM meta WHERE key = 'layout_version'"
                       ).fetchall() == [("1",)]
    con.close()

    # Opening read-only (as the dashboard does) upgrades it and keeps every row.
    with store.open_db(db, read_only=True) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'layout_version'"
                           ).fetchall() == [(str(store.LAYOUT_VERSION),)]
        assert con.execute("SELECT count(*) FROM annotations").fetchall() == [(3,)]
        cols = {r[0] for r in con.execute("DESCRIBE exports").fetchall()}
    assert {"stage_seconds", "lock_wait_seconds", "commit_seconds"} <= cols

    # And the upgraded database takes new exports and reports on them.
    cfg = project.root / "labelqa.toml"
    cfg.write_text(cfg.read_text().replace('database = "labelqa.duckdb"',
                                           f'database = "{db}"'))
    fs = project.ingest(project.write("w2.jsonl", [record(item="new")])).files[0]
    assert fs.loaded == 1
    assert main(["report", "--project", str(project.root), "--json",
                 "--week", "2026-W02"]) == 0


def test_newer_or_foreign_database_is_a_clear_error(tmp_path, capsys, project):
    newer = tmp_path / "newer.duckdb"
    with store.open_db(newer) as con:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'layout_version'")
    with pytest.raises(store.DatabaseError, match="newer labelqa"):
        store.connect(newer, read_only=True)

    foreign = tmp_path / "foreign.duckdb"
    with duckdb.connect(str(foreign)) as con:
        con.execute("CREATE TABLE sales (id INTEGER)")
    with pytest.raises(store.DatabaseError, match="not a labelqa database"):
        store.connect(foreign)

    text = tmp_path / "text.duckdb"
    text.write_text("hello, I am not a database\n" * 100)
    with pytest.raises(store.DatabaseError, match="cannot open"):
        store.connect(text)

    cfg = project.root / "labelqa.toml"
    cfg.write_text(cfg.read_text().replace('database = "labelqa.duckdb"',
                                           f'database = "{foreign}"'))
    path = project.write("w.jsonl", [record()])
    assert main(["ingest", str(path), "--project", str(project.root)]) == 2
    err = capsys.readouterr().err
    assert "not a labelqa database" in err and "Traceback" not in err


def test_ingest_waits_for_the_lock(project):
    project.ingest(project.write("first.jsonl", [record(item="first")]))
    path = project.write("second.jsonl", [record(item="second")])
    holder = subprocess.Popen(
        [sys.executable, "-c", f"""
import duckdb, time
con = duckdb.connect({str(project.config.database)!r})
print("locked", flush=True)
time.sleep(3)
con.close()
"""], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    t0 = time.monotonic()
    result = subprocess.run(_ingest_cmd(project, path), cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env=dict(os.environ))
    holder.wait()
    assert result.returncode == 0, result.stderr
    assert "waiting" in result.stderr
    assert time.monotonic() - t0 >= 1.0
    assert _export_rows(project.config.database) == (2, 2)
