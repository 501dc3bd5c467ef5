"""The dashboard's shared read-only connection: reused within a script run, closed when
idle so an ingest never waits on an idle dashboard, dropped after a failing call."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import record

from metrics import store
from pages.common import ui


@pytest.fixture
def db(project, monkeypatch):
    project.ingest(project.write("w1.jsonl", [record(item="a"), record(item="b")]))
    monkeypatch.setattr(ui, "READER_IDLE_S", 0.2)
    opened = []
    real = store.connect

    def counting(*args, **kwargs):
        opened.append(kwargs.get("read_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "connect", counting)
    return project, opened


def count(con, config):
    return con.execute("SELECT count(*) FROM annotations").fetchall()[0][0]


def test_calls_of_one_run_share_a_connection_then_it_closes(db):
    project, opened = db
    config = project.config
    reader = ui._Reader.for_thread(config.database)
    assert reader.run(count, config, (), {}) == 2
    assert reader.run(count, config, (), {}) == 2
    assert opened == [True]                       # one open for both calls
    deadline = time.monotonic() + ui.READER_IDLE_S + 5
    while reader.con is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reader.con is None                     # closed when idle
    # ... so a writer gets the database (a locked one raises after 0.1 s).
    store.connect(config.database, read_only=False, wait_s=0.1).close()


def test_an_ingest_waits_for_an_idle_dashboard_no_longer_than_the_idle_time(db):
    project, _ = db
    config = project.config
    ui._Reader.for_thread(config.database).run(count, config, (), {})
    t0 = time.monotonic()
    project.ingest(project.write("w2.jsonl", [record(item="c")]))
    assert time.monotonic() - t0 < 5
    reader = ui._Reader.for_thread(config.database)
    assert reader.run(count, config, (), {}) == 3   # a fresh connection sees it


def test_a_failing_call_drops_the_connection(db):
    project, opened = db
    config = project.config
    reader = ui._Reader.for_thread(config.database)

    def broken(con, config):
        con.execute("SELECT * FROM no_such_table")

    with pytest.raises(Exception, match="no_such_table"):
        reader.run(broken, config, (), {})
    assert reader.con is None
    assert ui._Reader.for_thread(config.database).run(count, config, (), {}) == 2
    assert opened == [True, True]


def test_each_thread_has_its_own_connection(db):
    project, opened = db
    config = project.config
    seen = []

    def work():
        r = ui._Reader.for_thread(config.database)
        seen.append(r.run(lambda con, c: id(con), config, (), {}))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 3 and len(opened) == 3


def test_the_stamp_changes_with_the_database_file_or_its_log(tmp_path):
    """The dashboard and the page benchmark key the generation on `store.db_stamp`."""
    db = tmp_path / "x.duckdb"
    db.write_bytes(b"1")
    before = store.db_stamp(db)
    assert before == store.db_stamp(db)
    (tmp_path / "x.duckdb.wal").write_bytes(b"12")
    assert store.db_stamp(db) != before


def test_a_ci_of_one_value_says_it_is_degenerate():
    assert ui.fmt_ci([0.1, 0.25]) == "95% CI 10.0–25.0%"
    assert ui.fmt_ci(None) == "CI –"
    flat = ui.fmt_ci([0.0, 0.0])
    assert flat.startswith("95% CI 0.0–0.0% (") and "every resample" in flat


def test_pages_open_on_the_latest_week_up_to_this_one(project, monkeypatch):
    from conftest import no_exception, run_page

    project.ingest(project.write("w.jsonl", [
        record(item="a", when="2026-01-06T10:00:00Z"),
        record(item="b", when="2062-11-20T10:00:00Z"),   # a typo decades ahead
    ]))
    monkeypatch.setenv("LABELQA_PROJECT", str(project.root))
    root = Path(__file__).resolve().parents[1]
    at = run_page(root / "app.py")
    no_exception(at)
    picker = at.selectbox(key="week_picker")
    assert picker.value == "2026-W02" and "2062-W47" in picker.options
    assert run_page(root / "app.py", week="2062-W47").selectbox(
        key="week_picker").value == "2062-W47"
