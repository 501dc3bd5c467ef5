"""Checking a native export in worker processes gives exactly what one process gives.

Blocks are made tiny here so that duplicates, repeated ids with new content and
conflicting image sizes fall in different blocks (and so in different workers)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from metrics import ingest as ingest_mod
from metrics import store
from tests.conftest import CONFIG, CONTRACT, Project, record

TABLE_ORDER = {
    "annotations": "ann_key", "boxes": "ann_key, box_idx",
    "contract_errors": "ann_key, pointer, instance, keyword, message",
    "violations": "ann_key, rule, field, start_pos", "quarantine": "line",
    "items": "item_id",
}


def _lines() -> list:
    out: list = []
    for i in range(400):
        item = f"i{i % 150}"
        rec = record(item=item, annotator=f"a{i % 3}", when=f"2026-01-{6 + i % 20:02d}T10:00:00Z",
                     caption="A nike car." if i % 37 == 0 else "A car parked on a street.",
                     annotation_id=f"x{i}")
        if i >= 200 and i % 10 == 0:  # an item seen before at another size: imageSize
            rec["image"] = {"uri": f"images/{item}.png", "width": 64, "height": 64}
        if i % 40 == 3:
            rec["boxes"] = [{"label": "car", "bbox": [90, 90, 30, 20]}]  # outside
        out.append(rec)
        if i % 45 == 11:  # a blank line and a broken one
            out.append("")
            out.append('{"item_id": "broken"')
    # repeats: exact duplicates and same ids with other content, far from their first
    out.append(record(item="i1", annotator="a1", when="2026-01-07T10:00:00Z",
                      annotation_id="x1"))
    out.append(dict(out[0]))
    out.append(record(item="i0", annotator="a0", caption="Another car here now.",
                      annotation_id="x0"))
    out.append(record(item="i2", annotator="a2", caption="Yet another car here.",
                      annotation_id="x2"))
    out.append(record(item="i2", annotator="a2", caption="Yet another car here.",
                      annotation_id="x2"))
    return out


def _dump(project: Project) -> dict:
    con = project.connect()
    try:
        out = {t: con.execute(f"SELECT * FROM {t} ORDER BY {o}").fetchall()
               for t, o in TABLE_ORDER.items()}
        out["exports"] = con.execute(
            "SELECT records, loaded, duplicates, quarantined, skipped_records, "
            "new_versions, boxes, skipped, by_role FROM exports").fetchall()
        return out
    finally:
        con.close()


def _assert_same_summary(s1, s2) -> None:
    """Two ingests of the same export counted alike: totals, errors and examples."""
    a, b = s1.to_json(), s2.to_json()
    a.pop("path"), b.pop("path")
    assert a == b
    assert s1.errors_by == s2.errors_by
    assert s1.error_examples == s2.error_examples
    assert s1.quarantine_examples == s2.quarantine_examples


@pytest.fixture
def twin(tmp_path):
    """Two identical projects holding the same export with an awkward byte layout:
    a BOM, CRLF endings and no newline at the end."""
    roots = []
    for name in ("serial", "parallel"):
        root = tmp_path / name
        root.mkdir()
        (root / "labelqa.toml").write_text(CONFIG, encoding="utf-8")
        roots.append(Project(root))
    for p in roots:
        (p.root / "contract.schema.json").write_text(json.dumps(CONTRACT))
        (p.root / "images").mkdir()
    path = roots[0].write("w.jsonl", _lines())
    data = path.read_bytes().replace(b"\n", b"\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + data.rstrip(b"\r\n"))
    other = roots[1].root / "exports" / "w.jsonl"
    other.parent.mkdir(parents=True)
    shutil.copy(path, other)
    return roots[0], roots[1], path, other


def test_workers_load_exactly_what_one_process_loads(twin, monkeypatch):
    serial, parallel, p1, p2 = twin
    monkeypatch.setattr(ingest_mod, "BLOCK_BYTES", 2048)   # ~6 lines per block
    monkeypatch.setenv("LABELQA_INGEST_WORKERS", "0")
    s1 = serial.ingest(p1).files[0]
    monkeypatch.setenv("LABELQA_INGEST_WORKERS", "2")
    s2 = parallel.ingest(p2).files[0]
    _assert_same_summary(s1, s2)
    assert s2.balanced
    # The awkward cases are really in there.
    assert s2.duplicates == 3
    assert s2.errors_by[("/annotation_id", "uniqueId")] == 2
    assert s2.errors_by[("/image", "imageSize")] == 20
    assert s2.quarantined == 9
    assert _dump(serial) == _dump(parallel)


def test_workers_dry_run_matches(twin, monkeypatch):
    serial, _, p1, _ = twin
    monkeypatch.setattr(ingest_mod, "BLOCK_BYTES", 4096)
    monkeypatch.setenv("LABELQA_INGEST_WORKERS", "0")
    one = ingest_mod.check_files(serial.config, [p1], progress=False).files[0]
    monkeypatch.setenv("LABELQA_INGEST_WORKERS", "2")
    two = ingest_mod.check_files(serial.config, [p1], progress=False).files[0]
    assert one.to_json() == two.to_json()
    assert one.errors_by == two.errors_by and one.error_examples == two.error_examples
    assert not serial.config.database.exists()


def test_a_dead_worker_stops_the_ingest_and_loads_nothing(twin, monkeypatch):
    _, parallel, _, path = twin
    parallel.ingest(parallel.write("first.jsonl", [record(item="first")]))
    monkeypatch.setattr(ingest_mod, "BLOCK_BYTES", 2048)
    monkeypatch.setenv("LABELQA_INGEST_WORKERS", "2")
    real = ingest_mod._Workers.result

    def dying(self, i):
        if i == 5:
            self.procs[i % len(self.procs)].kill()
        return real(self, i)

    monkeypatch.setattr(ingest_mod._Workers, "result", dying)
    with pytest.raises(ingest_mod.WorkerFailed, match="ingest worker stopped"):
        parallel.ingest(path)
    con = store.connect(parallel.config.database, read_only=True)
    assert con.execute("SELECT count(*) FROM exports").fetchall() == [(1,)]
    assert con.execute("SELECT count(*) FROM annotations").fetchall() == [(1,)]
    con.close()
    stage = parallel.config.database.parent / f".{parallel.config.database.name}.staging"
    assert not list(stage.glob("stage-*"))
    monkeypatch.setattr(ingest_mod._Workers, "result", real)
    fs = parallel.ingest(path).files[0]   # a rerun completes it
    assert fs.loaded > 400 and fs.balanced


def test_worker_count_setting(tmp_path, monkeypatch):
    small = tmp_path / "small.jsonl"
    small.write_text("{}\n")
    monkeypatch.delenv("LABELQA_INGEST_WORKERS", raising=False)
    assert ingest_mod.ingest_workers(small) == 0          # small: not worth starting
    monkeypatch.setenv("LABELQA_INGEST_WORKERS", "3")
    assert ingest_mod.ingest_workers(small) == 3
    # No more than max(4, CPUs): a thousand workers would each hold blocks in memory.
    monkeypatch.setenv("LABELQA_INGEST_WORKERS", "1000")
    assert ingest_mod.ingest_workers(small) == max(4, len(os.sched_getaffinity(0)))
    for bad in ("two", "²"):
        monkeypatch.setenv("LABELQA_INGEST_WORKERS", bad)
        with pytest.raises(ValueError, match="LABELQA_INGEST_WORKERS must be a whole"):
            ingest_mod.ingest_workers(small)


def test_a_bad_worker_setting_is_a_clear_cli_error(tmp_path, monkeypatch, capsys):
    from metrics.cli import main

    export = tmp_path / "w.jsonl"
    export.write_text('{"item_id": "a", "annotator_id": "b", "submitted_at": '
                      '"2026-01-06T10:00:00Z"}\n')
    assert main(["init", str(tmp_path / "p")]) == 0
    monkeypatch.setenv("LABELQA_INGEST_WORKERS", "abc")
    assert main(["check", str(export), "--project", str(tmp_path / "p")]) == 2
    assert "LABELQA_INGEST_WORKERS must be a whole number" in capsys.readouterr().err


@pytest.mark.parametrize("rows", [7, 10_000])
def test_whole_chunk_admit_matches_record_by_record(twin, monkeypatch, rows):
    """`ExportState.admit` takes a chunk with no repeated id and no size conflict in one
    go; what it loads and counts is what the record-by-record path gives."""
    serial, parallel, p1, p2 = twin
    monkeypatch.setenv("LABELQA_INGEST_WORKERS", "0")
    monkeypatch.setattr(ingest_mod, "BATCH_ROWS", rows)
    real = ingest_mod.ExportState._first_sizes
    whole = []

    def counted(self, ch):
        out = real(self, ch)
        whole.append(out is not None)
        return out

    monkeypatch.setattr(ingest_mod.ExportState, "_first_sizes", counted)
    s1 = serial.ingest(p1).files[0]
    if rows == 7:
        assert sum(whole) > len(whole) // 2   # most small chunks go in one go
    monkeypatch.setattr(ingest_mod.ExportState, "_first_sizes", lambda self, ch: None)
    s2 = parallel.ingest(p2).files[0]
    _assert_same_summary(s1, s2)
    assert _dump(serial) == _dump(parallel)
