"""Smoke test of the benchmark: the 10k size runs end to end (it must finish; no timing
is asserted), and so does re-measuring only its pages. The full runs (100k, 1M, three
runs each) happen outside CI. The page stages' call lists are checked against the calls
the pages really make."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The bench's page keys and the scripts they stand for.
PAGE_SCRIPTS = {"overview": "app.py", "schema": "pages/1_Schema_errors.py",
                "policy": "pages/2_Text_policy.py", "visual": "pages/3_Visual_agreement.py",
                "items": "pages/4_Item_drilldown.py",
                "trends": "pages/5_Trends_and_guidelines.py",
                "annotators": "pages/6_Annotators.py", "data": "pages/7_Data.py"}


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

    # --only-pages: the pages again, merged; every other number kept as it was.
    before = json.loads(results.read_text())
    before["10000"]["pages"]["overview"]["cold_median"] = -1.0   # must be replaced
    results.write_text(json.dumps(before))
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--annotations", "10000", "--quick", "--only-pages",
         "--workdir", str(tmp_path / "work"), "--results", str(results),
         "--markdown", str(markdown)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    after = json.loads(results.read_text())["10000"]
    assert set(after["pages"]) == set(PAGE_SCRIPTS)
    assert after["pages"]["overview"]["cold_median"] > 0
    assert after["pages_runs"] == 1
    assert {k: v for k, v in after.items() if k not in ("pages", "pages_runs")} == {
        k: v for k, v in before["10000"].items() if k != "pages"}
    assert "re-measured on their own" in markdown.read_text()


def test_generator_is_deterministic(tmp_path: Path) -> None:
    from bench.generate import generate_export

    a = generate_export(tmp_path / "a.jsonl", 2_000, seed=3)
    b = generate_export(tmp_path / "b.jsonl", 2_000, seed=3)
    assert a == b
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert a.lines == 2_000


# -- the page stages mirror the pages --------------------------------------------------


def _bench_calls(page: str, config, week: str) -> list[tuple[str, bool, tuple]]:
    """(name, by_week, ui.call key) of each call `bench.stages.page_calls` makes for
    the page and week, run in order on the project as the page stage runs them."""
    from bench.stages import page_calls
    from metrics import store

    got: dict = {}
    out = []
    for call in page_calls(page, got):
        if call.when is not None and not call.when(config, week):
            break
        out.append((call.name, call.by_week, call.key(config, week)))
        with store.open_db(config.database, read_only=True) as con:
            call.fn(con, config, week)
    return out


@pytest.mark.parametrize("page", list(PAGE_SCRIPTS))
def test_page_calls_are_the_calls_the_page_makes(page, demo_project, monkeypatch):
    """Under AppTest, with default widgets, for the latest week and the week before (the
    bench's week switch), the page makes exactly the `ui.call`s of `page_calls`, with
    the same arguments and in the same order."""
    from conftest import run_page

    from bench.__main__ import PAGES
    from metrics import store
    from metrics.config import load_config
    from metrics.overview import available_weeks
    from pages.common import ui

    assert set(PAGES) == set(PAGE_SCRIPTS)
    monkeypatch.setenv("LABELQA_PROJECT", str(demo_project))
    config = load_config(demo_project)
    with store.open_db(config.database, read_only=True) as con:
        weeks = available_weeks(con, config)
    seen: list[tuple] = []
    real = ui.call

    def record(fn, *args, **kwargs):
        seen.append((f"{fn.__module__}.{fn.__qualname__}", args,
                     tuple(sorted(kwargs.items()))))
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(ui, "call", record)
    bench = {}
    for week in (weeks[-1], weeks[-2]):
        seen.clear()
        at = run_page(REPO / PAGE_SCRIPTS[page], week=week)
        assert not at.exception, [e.value for e in at.exception]
        bench[week] = _bench_calls(page, config, week)
        assert seen == [key for _, _, key in bench[week]]
    # A call that does not depend on the week has the same cache key in both weeks.
    for (name, by_week, key), (_, _, key2) in zip(*bench.values(), strict=True):
        if not by_week:
            assert key == key2, name


def test_page_stage_runs_every_page(demo_project) -> None:
    """Each page stage runs in-process on the demo: cold runs every call, the week switch
    re-runs the week's calls and takes the others from the cache, uncached runs all."""
    from bench.__main__ import PAGES
    from bench.stages import stage_page
    from metrics import store
    from metrics.config import load_config
    from metrics.overview import available_weeks

    config = load_config(demo_project)
    with store.open_db(config.database, read_only=True) as con:
        weeks = available_weeks(con, config)
    for page in PAGES:
        r = stage_page({"project": str(demo_project), "page": page, "week": weeks[-1],
                        "week2": weeks[-2]})
        assert r["cold"] > 0 and r["warm"] > 0 and r["uncached"] > 0, page
        ran = [k for k in r["parts"] if k != "ui.generation"]
        assert ran == r["calls"], page
        assert [k for k in r["uncached_parts"] if k != "ui.generation"] == ran, page
        rerun = {k for k in r["warm_parts"] if k in ran}
        assert rerun <= set(r["by_week"]), page
        assert {k.removesuffix(" (cached)") for k in r["warm_parts"]
                if k.endswith(" (cached)")} | rerun == set(ran), page

