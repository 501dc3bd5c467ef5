"""Smoke tests of the outside-CI reliability scripts, at tiny sizes, so they cannot rot:
the importer fuzz (`bench/fuzz.py`) and the dashboard load test (`bench/load.py`). No
result is asserted beyond "it ran and counted what it says"; the real runs and their
numbers are in bench/RELIABILITY.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_browser

REPO = Path(__file__).resolve().parents[1]


def test_fuzz_runs_every_importer(tmp_path: Path) -> None:
    out, md = tmp_path / "fuzz.json", tmp_path / "RELIABILITY.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.fuzz", "--examples", "50", "--jobs", "1",
         "--ingest-every", "10", "--workdir", str(tmp_path / "work"), "--json", str(out),
         "--markdown", str(md)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    # 1 means the fuzz found something: the script itself worked (the failures are in
    # the JSON); anything else is the script breaking.
    assert proc.returncode in (0, 1), proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert [r["importer"] for r in result["importers"]] == ["native", "labelstudio",
                                                             "coco", "cvat"]
    failures = 0
    for r in result["importers"]:
        c = r["counts"]
        assert c["examples"] == 50
        assert c.get("refused", 0) + c.get("accepted", 0) + c.get("failures", 0) >= 50
        assert 1 <= c["ingests"] <= 5       # examples 0, 10, 20, 30, 40
        assert c.get("records", 0) > 0      # mostly well-formed: records get through
        failures += c.get("failures", 0)
    assert (proc.returncode == 1) == (failures > 0), proc.stderr[-4000:]
    text = md.read_text()
    assert "<!-- fuzz:start -->" in text and "| **all** | **200** |" in text


@pytest.mark.browser
def test_load_runs_on_the_demo(demo_project: Path, tmp_path: Path) -> None:
    require_browser()
    out, md = tmp_path / "load.json", tmp_path / "RELIABILITY.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.load", "--project", str(demo_project),
         "--sessions", "2", "--seconds", "5", "--label", "smoke", "--json", str(out),
         "--markdown", str(md)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["warmup"]["error"] is None
    stats = result["stats"]["all"]
    assert stats["count"] >= 2 and stats["errors"] == 0
    assert stats["median"] > 0
    assert {x["session"] for x in result["loads"]} == {0, 1}
    text = md.read_text()
    assert "<!-- load-smoke:start -->" in text and "| **all page loads** |" in text


def test_floor_parts_runs_every_step(tmp_path: Path) -> None:
    from bench.generate import generate_export

    export = tmp_path / "native.jsonl"
    generate_export(export, 300, seed=1)
    out = tmp_path / "parts.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.floor_parts", str(export), "--runs", "1",
         "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(out.read_text())
    assert res["lines"] == 300
    us = list(res["us_per_line"].values())
    assert len(us) == 6 and all(v > 0 for v in us)
    assert "all checks and rows" in proc.stdout
