"""Smoke test of the benchmark: the 10k size runs end to end (it must finish; no timing
is asserted). The full runs (100k, 1M, three runs each) happen outside CI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_quick_10k(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    markdown = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--annotations", "10000", "--quick",
         "--workdir", str(tmp_path / "work"), "--results", str(results),
         "--markdown", str(markdown)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    entry = json.loads(results.read_text())["10000"]
    assert entry["export"]["lines"] == 10_000
    ingest = entry["stages"]["ingest"]["last"]
    # Every line is accounted for: one truncated line per 10,000 is quarantined.
    assert ingest["records"] == 10_000
    assert ingest["quarantined"] == entry["export"]["broken"] == 1
    assert ingest["loaded"] == 9_999
    # A few percent contract errors and policy violations, as generated.
    assert 0.01 < ingest["schema_error_annotations"] / ingest["loaded"] < 0.06
    assert 0.01 < ingest["policy_error_annotations"] / ingest["loaded"] < 0.08
    for stage in ("floor", "ingest", "derived", "weekly", "report"):
        assert entry["stages"][stage]["median"] > 0
        assert entry["stages"][stage]["rss_mib"] > 0
    assert set(entry["pages"]) >= {"overview", "schema", "policy", "visual", "trends",
                                   "annotators", "data"}

    # The peers computed the same things as ours, on the same data.
    peers = entry["peers"]
    assert abs(peers["alpha_ours"]["last"]["alpha"]
               - peers["alpha_kripp"]["last"]["alpha"]) < 1e-9
    assert (peers["match_ours"]["last"]["agreements_at_0_5"]
            == peers["match_coco"]["last"]["tp_at_0_5"])
    assert peers["ingest_pandas"]["last"]["rows"] == 9_999

    text = markdown.read_text()
    assert "## Machine" in text and "## Peers" in text and "| 10k |" in text


def test_generator_is_deterministic(tmp_path: Path) -> None:
    from bench.generate import generate_export

    a = generate_export(tmp_path / "a.jsonl", 2_000, seed=3)
    b = generate_export(tmp_path / "b.jsonl", 2_000, seed=3)
    assert a == b
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert a.lines == 2_000
