"""`metrics.store.Alongside`: a side query line on a cursor of the caller's connection."""

from __future__ import annotations

import threading

import duckdb
import pytest

from metrics.store import Alongside


def test_alongside_runs_on_its_own_cursor_and_thread_and_closes_it(tmp_path):
    con = duckdb.connect(str(tmp_path / "t.duckdb"))
    con.execute("CREATE TABLE t AS SELECT range AS x FROM range(1000)")
    seen = {}

    def side(cur, factor):
        seen["cursor"], seen["thread"] = cur, threading.current_thread()
        return cur.execute("SELECT sum(x) * $f FROM t", {"f": factor}).fetchone()[0]

    with Alongside(con, side, 2) as job:
        mine = con.execute("SELECT count(*) FROM t").fetchone()[0]
    assert (mine, job.result()) == (1000, 2 * 499500)
    assert seen["cursor"] is not con and seen["thread"] is not threading.current_thread()
    with pytest.raises(duckdb.ConnectionException):   # closed when the block ends
        seen["cursor"].execute("SELECT 1")
    assert con.execute("SELECT 1").fetchone() == (1,)


def test_alongside_error_reaches_result_and_the_block_waits_for_the_side(tmp_path):
    con = duckdb.connect(str(tmp_path / "t.duckdb"))
    started, release = threading.Event(), threading.Event()
    done = []

    def slow_then_fail(cur):
        started.set()
        release.wait(5)
        cur.execute("SELECT 1").fetchall()   # the cursor is still open here
        done.append(True)
        raise ValueError("side failed")

    with Alongside(con, slow_then_fail) as job:
        assert started.wait(5)
        threading.Timer(0.2, release.set).start()
    assert done == [True]                    # the block waited for it
    with pytest.raises(ValueError, match="side failed"):
        job.result()
    with pytest.raises(RuntimeError), Alongside(con, lambda cur: None):
        raise RuntimeError("caller failed")  # the caller's error passes through
