"""What one benchmark subprocess runs: ``python -m bench.stages STAGE '{json args}'``.

Each stage imports what it needs, times only the work (``time.perf_counter``, imports
and fixture loading excluded) and prints one JSON object as its last stdout line. The
parent reads the child's peak RSS from ``os.wait4`` (see ``bench.__main__``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from bench.timing import Timer, clock, lap


def _config(project: str):
    from metrics.config import load_config

    return load_config(project)


# -- setup ----------------------------------------------------------------------------


def stage_generate(args: dict) -> dict:
    from bench.generate import generate_export

    t0 = clock()
    stats = generate_export(Path(args["out"]), args["n"], seed=args["seed"])
    return {**lap(t0), **stats.to_json()}


def stage_project(args: dict) -> dict:
    from bench.generate import write_project

    write_project(Path(args["folder"]))
    return {"seconds": 0.0}


# -- ingest ---------------------------------------------------------------------------


def stage_floor(args: dict) -> dict:
    """The floor: read the file and parse every non-blank line with orjson."""
    import orjson

    t0 = clock()
    parsed = bad = 0
    with open(args["export"], "rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                orjson.loads(raw)
                parsed += 1
            except orjson.JSONDecodeError:
                bad += 1
    return {**lap(t0), "parsed": parsed, "bad": bad}


def stage_ingest(args: dict) -> dict:
    """Ours: parse, load, contract, policy (`metrics.ingest.ingest_files`, derived tables
    not rebuilt; that is the `derived` stage)."""
    import resource

    from metrics.ingest import ingest_files, ingest_workers

    config = _config(args["project"])
    export = Path(args["export"])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = clock()
    summary = ingest_files(config, [export], progress=False, after_load=None)
    seconds, cpu = lap(t0).values()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The worker processes' CPU counts too; their peak RSS is reported apart (wait4 on
    # this process gives the largest of the tree, not the sum).
    workers_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    s = summary.to_json()
    return {"seconds": seconds, "cpu": cpu + workers_cpu, "parent_cpu": cpu,
            "workers": ingest_workers(export), "workers_cpu": workers_cpu,
            "workers_rss_mib": after.ru_maxrss / 1024,
            **{k: s[k] for k in ("records", "loaded", "quarantined",
                                                     "duplicates", "boxes",
                                                     "schema_error_annotations",
                                                     "policy_error_annotations")}}


def stage_derived(args: dict) -> dict:
    """Ours: `metrics.derived.refresh` (rating sets, pair matching, coincidences) in one
    committed transaction, as ingest runs it after loading."""
    from metrics import derived, store

    config = _config(args["project"])
    con = store.connect(config.database)
    t0 = clock()
    con.execute("BEGIN TRANSACTION")
    derived.refresh(con, config)
    con.execute("COMMIT")
    seconds, cpu = lap(t0).values()
    pairs = con.execute("SELECT count(*) FROM d_pairs").fetchone()[0]
    con.close()
    return {"seconds": seconds, "cpu": cpu, "pairs": pairs}


def stage_split(args: dict) -> dict:
    """Split an export into one file per ISO week of ``submitted_at`` (lines that do not
    parse go with the previous line), as a team exporting weekly would have it."""
    import orjson

    from bench.generate import N_WEEKS, week_label

    out = Path(args["out"])
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, object] = {}
    week = week_label(0)
    with open(args["export"], "rb") as fh:
        for raw in fh:
            try:
                week = _iso_week_of(orjson.loads(raw)["submitted_at"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                pass
            if week not in files:
                files[week] = open(out / f"{week}.jsonl", "wb")
            files[week].write(raw)
    for fh in files.values():
        fh.close()
    paths = sorted(str(out / f"{w}.jsonl") for w in files)
    return {"seconds": 0.0, "files": paths, "weeks": N_WEEKS}


def _iso_week_of(stamp: str) -> str:
    import datetime as dt

    year, week, _ = dt.datetime.fromisoformat(stamp).isocalendar()
    return f"{year}-W{week:02d}"


def stage_ingest_full(args: dict) -> dict:
    """The user path: `metrics.workspace.ingest` (ingest + derived in one transaction per
    file)."""
    from metrics.workspace import ingest

    config = _config(args["project"])
    t0 = clock()
    ingest(config, [Path(p) for p in args["exports"]], progress=False)
    return {**lap(t0), "files": len(args["exports"])}


# -- metrics --------------------------------------------------------------------------


def stage_weekly(args: dict) -> dict:
    """Every weekly metric's point estimates for every week: the series of M1, M2, M3
    (no bootstrap) and each week's M1 and M2 breakdowns."""
    from metrics import store
    from metrics.weekly import policy_week, schema_week, series, weeks

    config = _config(args["project"])
    t = Timer()
    t0 = clock()
    with store.open_db(config.database, read_only=True) as con:
        with t("series"):
            df = series(con, config, ci=False)
        with t("schema_week x weeks"):
            for w in weeks(con):
                schema_week(con, config, w)
        with t("policy_week x weeks"):
            for w in weeks(con):
                policy_week(con, config, w)
    return {**lap(t0), "weeks": len(df), "parts": t.parts}


def stage_report(args: dict) -> dict:
    """`labelqa report --json` for one week: `build_report` (with every CI of the week)
    and its JSON text."""
    from metrics import store
    from metrics.report import build_report, report_json
    from metrics.visual import visual_week
    from metrics.weekly import policy_week, schema_week

    config = _config(args["project"])
    week = args["week"]
    t = Timer()
    t0 = clock()
    with store.open_db(config.database, read_only=True) as con:
        report = build_report(con, config, week)
        text = report_json(report)
    seconds, cpu = lap(t0).values()
    # Where the time goes (a second pass: the parts, not the total, use warm caches).
    with store.open_db(config.database, read_only=True) as con:
        with t("schema_week"):
            schema_week(con, config, week)
        with t("policy_week"):
            policy_week(con, config, week)
        with t("visual_week"):
            visual_week(con, config, week)
    return {"seconds": seconds, "cpu": cpu, "bytes": len(text), "parts": t.parts,
            "visual_rate": report["visual"]["disagreement_rate"],
            "schema_rate": report["schema"]["error_rate"],
            "policy_rate": report["policy"]["violation_rate"]}


WEEK = object()  # placeholder for the page's week in a call's arguments


class From:
    """An argument the page derives from its config, its week and earlier calls:
    ``fn(config, week, got)``, ``got`` holding each earlier call's result by name."""

    def __init__(self, fn: Callable[[Any, str, dict], Any]) -> None:
        self.fn = fn


class PageCall(NamedTuple):
    """One ``ui.safe_call`` of a page.

    ``fn(con, config, week)`` runs it with the page's arguments (and keeps its result in
    ``got``); ``by_week``: its arguments contain the week or a value derived from it;
    ``key(config, week)``: what ``ui.call`` caches it on (the function and its arguments),
    so a week switch re-runs exactly the calls whose key changed; ``when(config, week)``
    false: the page stops (``st.stop()``) before this call.
    """

    name: str
    fn: Callable[[Any, Any, str], Any]
    by_week: bool
    key: Callable[[Any, str], tuple]
    when: Callable[[Any, str], bool] | None = None


def page_calls(page: str, got: dict | None = None) -> list[PageCall]:
    """The metrics calls a dashboard page makes through ``ui.safe_call`` on a first load
    with default widgets and URL parameters (and ``?week=``), in its order, with its
    arguments. ``got`` receives each call's result by name (the later calls' arguments
    come from it, as on the page).

    Mirrors app.py and pages/*.py; ``tests/test_bench.py`` checks the lists against
    the calls the pages make under Streamlit's AppTest.
    """
    from metrics import inventory, overview, visual, weekly

    got = {} if got is None else got

    def value(x: Any, config: Any, week: str) -> Any:
        if x is WEEK:
            return week
        return x.fn(config, week, got) if isinstance(x, From) else x

    def call(name: str, metric: Callable[..., Any], *args: Any, by_week: bool,
             when: Callable[[Any, str], bool] | None = None, **kwargs: Any) -> PageCall:
        path = f"{metric.__module__}.{metric.__qualname__}"

        def resolve(config: Any, week: str) -> tuple[tuple, tuple]:
            return (tuple(value(a, config, week) for a in args),
                    tuple(sorted((k, value(v, config, week)) for k, v in kwargs.items())))

        def key(config: Any, week: str) -> tuple:
            return (path, *resolve(config, week))

        def fn(con: Any, config: Any, week: str) -> Any:
            a, kw = resolve(config, week)
            got[name] = metric(con, config, *a, **dict(kw))
            return got[name]

        return PageCall(name, fn, by_week, key, when)

    weeks = call("available_weeks", overview.available_weeks, by_week=False)

    def change(config: Any, week: str, got: dict) -> str:
        # Trends: the version to compare, default the latest in force by `week`.
        log = weekly.guideline_log(config)
        past = [g["version"] for g in log if g["week"] <= week]
        return (past or [g["version"] for g in log])[-1]

    def stale_fields(got: dict) -> list[str]:
        return [s["field"] for s in got["stale_labels"] if s["stale"]]

    pages: dict[str, list[PageCall]] = {
        # app.py: week_overview runs build_report, series(last=12, until=week) and
        # top_movers for the week.
        "overview": [weeks, call("week_overview", overview.week_overview, WEEK,
                                 by_week=True)],
        "schema": [
            weeks,
            call("schema_week", weekly.schema_week, WEEK, by_week=True),
            call("series(visual=False)", weekly.series, visual=False, by_week=False),
            call("schema_examples", overview.schema_examples, WEEK, path=None,
                 keyword=None, annotator=None, role=None, by_week=True,
                 when=lambda config, week: bool(got["schema_week"]["with_errors"])),
        ],
        "policy": [
            weeks,
            call("policy_week", weekly.policy_week, WEEK, by_week=True),
            call("series(visual=False)", weekly.series, visual=False, by_week=False),
            call("policy_examples", overview.policy_examples, WEEK, rule=None, field=None,
                 severity=None, annotator=None, limit=20, by_week=True,
                 when=lambda config, week: bool(config.policy
                                                and got["policy_week"]["by_rule"])),
        ],
        "visual": [
            weeks,
            call("annotators", inventory.annotators, by_week=False),
            call("visual_week", visual.visual_week, WEEK, by_week=True),
            call("visual_series", visual.visual_series, by_week=False),
            call("pair_breakdown", visual.pair_breakdown, WEEK, by_week=True,
                 when=lambda config, week: bool(got["visual_week"]["pairs"])),
            call("iou_histogram", inventory.iou_histogram, WEEK, label=None, annotator=None,
                 by_week=True),
            call("disagreement_items", visual.disagreement_items, WEEK, kind="presence",
                 label=None, annotator=None, by_week=True),
        ],
        "trends": [
            weeks,
            call("series(last=12, until=week)", weekly.series, last=12, until=WEEK,
                 by_week=True),
            call("before_after", weekly.before_after, From(change), k=4, by_week=True,
                 when=lambda config, week: bool(config.guidelines)),
            call("stale_labels", weekly.stale_labels, by_week=False),
            call("stale_label_rows", weekly.stale_label_rows,
                 From(lambda config, week, got: stale_fields(got)[0]), limit=200,
                 by_week=False,
                 when=lambda config, week: bool(stale_fields(got))),
        ],
        "annotators": [
            weeks,
            call("annotator_table", weekly.annotator_table, WEEK, by_week=True),
            call("prefill_summary", weekly.prefill_summary, WEEK, by_week=True),
            # The first annotator of the week's table.
            call("annotator_series", inventory.annotator_series,
                 From(lambda config, week, got: got["annotator_table"]["annotator_id"]
                      .iloc[0]), by_week=True,
                 when=lambda config, week: not got["annotator_table"].empty),
            call("series(visual=True, ci=False)", weekly.series, visual=True, ci=False,
                 by_week=False),
        ],
        # The drill-down without ?item= lists the week's items and stops.
        "items": [weeks, call("item_index", inventory.item_index, WEEK, by_week=True)],
        "data": [
            call("exports", inventory.exports, by_week=False),
            call("quarantine", inventory.quarantine, None, by_week=False,
                 when=lambda config, week: not got["exports"].empty),
        ],
    }
    return pages[page]


def stage_page(args: dict) -> dict:
    """One dashboard page's metrics calls in a fresh process, as ``ui.safe_call`` makes
    them: cold (the first week), warm (a week switch in the same process) and, unless
    ``uncached`` is false, everything again without the result cache (as after a new
    ingest).

    Like ``pages/common/ui.call``, the page first checks the database generation, and so
    does every call: read on a read-only connection only when the database file's
    (mtime, size) changed, with the derived tables' freshness check once per generation.
    Then it either unpickles the cached result (its key, the function and arguments,
    seen before) or runs the call and pickles the result into the cache; the calls of one
    render share a read-only connection, opened at the first that runs (`ui._Reader`).
    """
    import pickle

    from metrics import store
    from metrics.workspace import ensure_derived

    config = _config(args["project"])
    got: dict = {}
    calls = page_calls(args["page"], got)
    cache: dict[tuple, bytes] = {}     # ui._cached (st.cache_data keeps pickles)
    ready: set[int] = set()            # ui._derived_ready (st.cache_resource)

    stamps: dict[tuple, int] = {}      # ui._generation_at (st.cache_data on the stamp)

    def generation(t: Timer) -> None:  # ui.generation
        with t("ui.generation"):
            stamp = store.db_stamp(config.database)
            gen = stamps.get(stamp)
            if gen is None:
                with store.open_db(config.database, read_only=True) as con:
                    gen = stamps[stamp] = store.generation(con)
            if gen not in ready:
                if ensure_derived(config):   # a rebuild is not what a page costs
                    raise RuntimeError("the derived tables were outdated and got rebuilt; "
                                       "run the derived stage first")
                ready.add(gen)

    def render(week: str, t: Timer) -> tuple[float, float]:
        w0, c0 = time.perf_counter(), time.process_time()
        generation(t)                 # ui.has_data
        con = None                    # ui._Reader: one connection for the run's calls
        try:
            for call in calls:
                if call.when is not None and not call.when(config, week):
                    break             # st.stop()
                generation(t)
                key = call.key(config, week)
                if key in cache:
                    with t(f"{call.name} (cached)"):
                        got[call.name] = pickle.loads(cache[key])
                    continue
                with t(call.name):
                    if con is None:
                        con = store.connect(config.database, read_only=True)
                    result = call.fn(con, config, week)
                    cache[key] = pickle.dumps(result)
        finally:
            if con is not None:
                con.close()
        return time.perf_counter() - w0, time.process_time() - c0

    cold_t, warm_t, again_t = Timer(), Timer(), Timer()
    cold, cold_cpu = render(args["week"], cold_t)
    warm, warm_cpu = render(args["week2"], warm_t)
    # Everything again (no result cache): what a new ingest costs the next visitor.
    again = None
    if args.get("uncached", True):
        cache.clear()
        ready.clear()
        stamps.clear()
        again, _ = render(args["week"], again_t)
    return {"seconds": cold, "cpu": cold_cpu, "cold": cold, "warm": warm, "warm_cpu": warm_cpu,
            "uncached": again, "parts": cold_t.parts, "warm_parts": warm_t.parts,
            "uncached_parts": again_t.parts,
            "calls": [c.name for c in calls], "by_week": [c.name for c in calls if c.by_week]}


# -- peers ----------------------------------------------------------------------------


def stage_prep(args: dict) -> dict:
    """Fixtures for the peers, from the ingested database: the week's peer pairs with
    their boxes (matching) and the presence ratings (agreement); a copy of the export
    without its unparseable lines (pandas `read_json` stops at the first)."""
    from bench import peers

    return peers.prepare(args["project"], args["out"], args["export"], args["clean"])


def stage_match_ours(args: dict) -> dict:
    from bench import peers

    return peers.match_ours(args["npz"])


def stage_match_coco(args: dict) -> dict:
    from bench import peers

    return peers.match_coco(args["npz"])


def stage_alpha_ours(args: dict) -> dict:
    from bench import peers

    return peers.alpha_ours(args["npz"])


def stage_alpha_kripp(args: dict) -> dict:
    from bench import peers

    return peers.alpha_krippendorff(args["npz"])


def stage_ingest_pandas(args: dict) -> dict:
    from bench import peers

    return peers.ingest_pandas(args["export"], args["contract"])


STAGES = {name[6:]: fn for name, fn in globals().items() if name.startswith("stage_")}


def main(argv: list[str]) -> int:
    stage, raw = argv[0], argv[1] if len(argv) > 1 else "{}"
    result = STAGES[stage](json.loads(raw))
    sys.stdout.write("\n" + json.dumps(result, default=_default) + "\n")
    sys.stdout.flush()
    return 0


def _default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
