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
from typing import Any, Callable

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


def page_calls(page: str) -> list[tuple[str, Callable[..., Any], bool]]:
    """The metrics calls a dashboard page makes for one week: (name, fn(con, config,
    week), whether it depends on the week). Each call gets its own read-only connection,
    as `pages/common/ui.call` does."""
    from metrics import report, visual, weekly

    try:
        from metrics import inventory
    except ImportError:  # not written yet: the data page reads the tables directly
        inventory = None

    def first_item(con, config, week):
        items = visual.disagreement_items(con, config, week, kind="presence")
        if len(items):
            visual.item_pairs(con, config, items["item_id"].iloc[0])
        return items

    def data(con, config, week):
        if inventory is not None:
            inventory.exports(con, config)
            return inventory.quarantine(con, config)
        con.execute("SELECT * FROM exports ORDER BY export_id").df()
        return con.execute("SELECT * FROM quarantine ORDER BY export_id, line").df()

    def before_after_all(con, config):
        return [weekly.before_after(con, config, g.version)
                for g in config.guidelines[1:]]

    def weekless(fn, **kwargs):
        return lambda con, config, week: fn(con, config, **kwargs)

    # (name, fn, depends on the week): on a week switch `ui.call` serves the calls that
    # do not depend on the week from its cache.
    pages: dict[str, list[tuple[str, Callable[..., Any], bool]]] = {
        "overview": [("build_report", report.build_report, True),
                     ("series", weekless(weekly.series), False),
                     ("top_movers", weekly.top_movers, True)],
        "schema": [("schema_week", weekly.schema_week, True),
                   ("series", weekless(weekly.series), False)],
        "policy": [("policy_week", weekly.policy_week, True)],
        "visual": [("visual_week", visual.visual_week, True),
                   ("pair_breakdown", visual.pair_breakdown, True),
                   ("visual_series", weekless(visual.visual_series), False)],
        "trends": [("series", weekless(weekly.series), False),
                   ("before_after", weekless(before_after_all), False),
                   ("stale_labels", weekless(weekly.stale_labels), False)],
        "annotators": [("annotator_table", weekly.annotator_table, True),
                       ("prefill_summary", weekly.prefill_summary, True),
                       ("gold_breakdown", lambda con, config, week:
                        visual.gold_breakdown(con, config, weeks=[week]), True)],
        "items": [("disagreement_items+item_pairs", first_item, True)],
        "data": [("exports+quarantine", data, False)],
    }
    return pages[page]


def stage_page(args: dict) -> dict:
    """One dashboard page's queries in a fresh process: cold (first week) and warm (a
    week switch in the same process), each call on its own read-only connection."""
    from metrics import store

    config = _config(args["project"])
    calls = page_calls(args["page"])

    def render(week: str, t: Timer, *, switch: bool = False) -> tuple[float, float]:
        w0, c0 = time.perf_counter(), time.process_time()
        with store.open_db(config.database, read_only=True) as con:
            store.generation(con)     # the dashboard's cache key
        for name, fn, by_week in calls:
            if switch and not by_week:
                continue              # a cache hit in `ui.call`
            with t(name):
                with store.open_db(config.database, read_only=True) as con:
                    fn(con, config, week)
        return time.perf_counter() - w0, time.process_time() - c0

    cold_t, warm_t, again_t = Timer(), Timer(), Timer()
    cold, cold_cpu = render(args["week"], cold_t)
    warm, warm_cpu = render(args["week2"], warm_t, switch=True)
    # Everything again (no result cache): what a new ingest costs the next visitor.
    again, _ = render(args["week"], again_t) if args.get("uncached", True) else (None, None)
    return {"seconds": cold, "cpu": cold_cpu, "cold": cold, "warm": warm, "warm_cpu": warm_cpu,
            "uncached": again, "parts": cold_t.parts, "warm_parts": warm_t.parts,
            "uncached_parts": again_t.parts}


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
