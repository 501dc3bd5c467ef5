"""``python -m bench --annotations 10000 100000 1000000``: the labelqa benchmark.

For each size N: generate a deterministic native export (`bench.generate`), then run every
stage in its own subprocess (peak RSS from ``os.wait4``), ``--runs`` times (median):

==============  ===========================================================================
floor           read the file and ``orjson.loads`` every line, nothing else
ingest          parse, load, contract, policy (`metrics.ingest.ingest_files`, fresh database)
derived         `metrics.derived.refresh`: rating sets, matching, coincidences (ingest runs
                it in the same transaction; timed apart here)
weekly          point estimates of every weekly metric for all weeks (`series(ci=False)`,
                `schema_week` and `policy_week` of each week)
report          ``report --json`` for the latest week (`build_report` with every CI)
page:<name>     the ``ui.safe_call`` calls of one dashboard page on a first load with
                default widgets (`bench.stages.page_calls`), as ``ui.call`` makes them:
                cold (fresh process) and warm (a week switch in the same process)
peers           COCOeval vs our matching, ``krippendorff`` vs our alpha, pandas +
                jsonschema vs our ingest, on the same data (`bench.peers`)
==============  ===========================================================================

Raw numbers are merged by size into ``bench/results.json`` and rendered into
``bench/RESULTS.md`` with the machine they ran on. ``--quick`` (the CI smoke test): one
run, nothing written unless ``--results``/``--markdown`` are given. ``--only-pages``
re-measures just the pages of sizes already in the results (after a fresh ingest and
derived build, not recorded) and replaces only their ``pages``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
PAGES = ("overview", "schema", "policy", "visual", "trends", "annotators", "items", "data")
CORE = ("ingest", "derived", "weekly", "report")


class StageFailed(RuntimeError):
    pass


def run_child(stage: str, args: dict, *, timeout: float | None = None) -> dict:
    """Run ``bench.stages STAGE`` in a subprocess; its JSON result plus ``rss_mib``
    (the child's peak resident set) and ``wall`` (including interpreter start)."""
    load = os.getloadavg()[0]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.stages", stage, json.dumps(args)],
            cwd=REPO, stdout=out, stderr=err,
            env={**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"},
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = -9
                raise StageFailed(f"{stage}: timed out after {timeout:.0f} s")
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise StageFailed(f"{stage} exited {proc.returncode}:\n{stderr[-3000:]}")
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    result = json.loads(lines[-1])
    result["rss_mib"] = usage.ru_maxrss / 1024.0   # KiB on Linux
    result["wall"] = wall
    result["load"] = load
    return result


def repeat(stage: str, args: dict, runs: int, log, *, label: str | None = None,
           prepare=None) -> dict:
    """``runs`` runs of a stage: every result, the median seconds, the peak RSS."""
    results = []
    for r in range(runs):
        if prepare is not None:
            prepare(r)
        res = run_child(stage, args if not callable(args) else args(r))
        results.append(res)
        log(f"  {label or stage:<22} run {r + 1}/{runs}: {res['seconds']:8.3f} s  "
            f"rss {res['rss_mib']:7.0f} MiB")
    return summarize(results)


def summarize(results: list[dict]) -> dict:
    secs = [r["seconds"] for r in results]
    out = {"seconds": secs, "median": statistics.median(secs),
           "rss_mib": max(r["rss_mib"] for r in results), "last": results[-1]}
    out["load_max"] = max(r["load"] for r in results)
    if any(r.get("workers") for r in results):   # ingest in worker processes
        out["workers"] = max(r.get("workers") or 0 for r in results)
        out["workers_rss_mib"] = max(r.get("workers_rss_mib") or 0 for r in results)
    for key in ("cpu", "cold", "warm", "uncached", "total", "build", "index"):
        values = [r[key] for r in results if r.get(key) is not None]
        if values:
            out[f"{key}_median"] = statistics.median(values)
    return out


def ensure_export(n: int, opts, log) -> Path:
    """The export of size ``n`` (generated once, then cached in the workdir)."""
    export = Path(opts.workdir) / "exports" / f"native-{n}-s{opts.seed}.jsonl"
    if not export.exists():
        export.parent.mkdir(parents=True, exist_ok=True)
        log(f"generating {export} ...")
        tmp = export.with_suffix(".part")
        gen = run_child("generate", {"n": n, "out": str(tmp), "seed": opts.seed})
        tmp.rename(export)
        (export.with_suffix(".json")).write_text(json.dumps(gen))
        log(f"  generated in {gen['seconds']:.1f} s")
    return export


def bench_pages(n: int, db_project: Path, opts, log) -> dict:
    """Every page stage on an ingested project, ``--runs`` times each."""
    from bench.generate import N_WEEKS, week_label

    week, week2 = week_label(N_WEEKS - 1), week_label(N_WEEKS - 2)
    project = {"project": str(db_project)}
    return {page: repeat("page", {**project, "page": page, "week": week, "week2": week2,
                                  "uncached": n <= opts.slow_peers_max},
                         opts.runs, log, label=f"page:{page}")
            for page in PAGES}


def bench_pages_only(n: int, opts, log, *, expect: dict | None = None) -> dict:
    """``--only-pages``: a fresh project of size ``n`` (one ingest and derived build,
    not recorded), then the page stages. ``expect``: the recorded export's stats, which
    the export used must match (same lines, items, boxes and bytes)."""
    export = ensure_export(n, opts, log)
    stats = json.loads(export.with_suffix(".json").read_text())
    same = ("lines", "items", "sample_items", "boxes", "bytes")
    if expect is not None and any(stats.get(k) != expect.get(k) for k in same):
        raise SystemExit(f"--only-pages: {export} is not the export the results of size "
                         f"{n} were measured on (another --seed?)")
    root = Path(opts.workdir) / f"n{n}"
    db_project = root / "project"
    shutil.rmtree(db_project, ignore_errors=True)
    run_child("project", {"folder": str(db_project)})
    log(f"N = {n:,}: building the project (not recorded) ...")
    project = {"project": str(db_project)}
    res = run_child("ingest", {**project, "export": str(export)})
    log(f"  ingest {res['seconds']:.1f} s")
    res = run_child("derived", project)
    log(f"  derived {res['seconds']:.1f} s")
    pages = bench_pages(n, db_project, opts, log)
    if not opts.keep:
        shutil.rmtree(root, ignore_errors=True)
    return pages


def bench_size(n: int, opts, log) -> dict:
    from bench.generate import N_WEEKS, week_label

    work = Path(opts.workdir)
    export = ensure_export(n, opts, log)
    entry: dict = {"n": n, "runs": opts.runs, "stages": {}, "pages": {}, "peers": {}}
    entry["export"] = json.loads(export.with_suffix(".json").read_text())
    root = work / f"n{n}"
    db_project = root / "project"

    def fresh(r: int) -> None:
        shutil.rmtree(db_project, ignore_errors=True)
        run_child("project", {"folder": str(db_project)})

    stages = entry["stages"]
    log(f"N = {n:,}: {entry['export']['bytes'] / 2**20:.0f} MiB, "
        f"{entry['export']['items']:,} items")
    stages["floor"] = repeat("floor", {"export": str(export)}, opts.runs, log)

    # ingest and derived alternate: each run starts from an empty project.
    ing, der = [], []
    for r in range(opts.runs):
        fresh(r)
        res = run_child("ingest", {"project": str(db_project), "export": str(export)})
        log(f"  {'ingest':<22} run {r + 1}/{opts.runs}: {res['seconds']:8.3f} s  "
            f"rss {res['rss_mib']:7.0f} MiB")
        ing.append(res)
        res = run_child("derived", {"project": str(db_project)})
        log(f"  {'derived':<22} run {r + 1}/{opts.runs}: {res['seconds']:8.3f} s  "
            f"rss {res['rss_mib']:7.0f} MiB")
        der.append(res)
    stages["ingest"] = summarize(ing)
    stages["derived"] = summarize(der)
    db_bytes = sum(p.stat().st_size for p in db_project.glob("*.duckdb*"))
    entry["db_mib"] = db_bytes / 2**20

    project = {"project": str(db_project)}
    week = week_label(N_WEEKS - 1)
    entry["week"] = week
    stages["weekly"] = repeat("weekly", project, opts.runs, log)
    stages["report"] = repeat("report", {**project, "week": week}, opts.runs, log)
    entry["pages"] = bench_pages(n, db_project, opts, log)

    if n <= opts.weekly_files_max:
        entry["weekly_files"] = bench_weekly_files(n, export, root, log)
    if not opts.no_peers and n <= opts.peers_max:
        peers = entry["peers"]
        npz = root / "peers.npz"
        clean = root / "clean.jsonl"
        entry["peer_data"] = run_child("prep", {**project, "out": str(npz),
                                                "export": str(export), "clean": str(clean)})
        for name in ("match_ours", "match_coco", "alpha_ours", "alpha_kripp"):
            if name == "match_coco" and n > opts.slow_peers_max:
                continue
            peers[name] = repeat(name, {"npz": str(npz)}, opts.runs, log)
        if n <= opts.slow_peers_max:
            peers["ingest_pandas"] = repeat(
                "ingest_pandas", {"export": str(clean),
                                  "contract": str(db_project / "contract.schema.json")},
                opts.runs, log)
        clean.unlink(missing_ok=True)
    if not opts.keep:
        shutil.rmtree(root, ignore_errors=True)
    return entry


def bench_weekly_files(n: int, export: Path, root: Path, log) -> dict:
    """`labelqa ingest` (ingest + derived) of the export as one file against the same
    lines as one file per week, each on a fresh project (one run each)."""
    split = run_child("split", {"export": str(export), "out": str(root / "weekly")})
    out = {"files": len(split["files"])}
    for name, paths in (("one_file", [str(export)]), ("weekly_files", split["files"])):
        folder = root / f"ingest-{name}"
        shutil.rmtree(folder, ignore_errors=True)
        run_child("project", {"folder": str(folder)})
        res = run_child("ingest_full", {"project": str(folder), "exports": paths})
        log(f"  {'ingest_full ' + name:<22} run 1/1: {res['seconds']:8.3f} s  "
            f"rss {res['rss_mib']:7.0f} MiB")
        out[name] = res
        shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(root / "weekly", ignore_errors=True)
    return out


# -- machine and report -----------------------------------------------------------------


def machine() -> dict:
    info: dict = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["cpu"] = fields.get("Model name", "?")
        info["cpus"] = fields.get("CPU(s)", "?")
        info["hypervisor"] = fields.get("Hypervisor vendor", "")
    except OSError:
        info["cpu"] = platform.processor()
    try:
        mem = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        info["mem_gib"] = int(mem["MemTotal"].split()[0]) / 2**20
    except (OSError, KeyError):
        pass
    from importlib import metadata

    versions = {}
    for pkg in ("duckdb", "numpy", "pandas", "pyarrow", "orjson", "jsonschema-rs", "scipy",
                "rapidfuzz", "google-re2", "jsonschema", "pycocotools", "krippendorff"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "-"
    info["versions"] = versions
    return info


def _fit(ns: list[int], ts: list[float]) -> float | None:
    pts = [(math.log(n), math.log(t)) for n, t in zip(ns, ts, strict=True) if t and t > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


def _s(x: float | None) -> str:
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:.0f} s"
    if x >= 1:
        return f"{x:.2f} s"
    return f"{x * 1000:.0f} ms"


def _rss(stage: dict) -> str:
    """Peak RSS of a stage; with worker processes, theirs beside it (each at most)."""
    text = f"{stage['rss_mib']:.0f} MiB"
    if stage.get("workers"):
        text += f" + {stage['workers']} workers × {stage['workers_rss_mib']:.0f} MiB"
    return text


def _r(x: float | None) -> str:
    return "–" if x is None else (f"{x:.1f}x" if x < 100 else f"{x:.0f}x")


def _k(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else (
        f"{n // 1000}k" if n % 1000 == 0 else str(n))


def _exp(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _summaries(r: dict) -> list[dict]:
    return [*r["stages"].values(), *r["pages"].values(), *r["peers"].values()]


def render(results: dict, info: dict) -> str:
    sizes = sorted(int(n) for n in results)
    rs = [results[str(n)] for n in sizes]
    hdr = " | ".join(_k(n) for n in sizes)
    sep = "|".join(["---"] * (len(sizes) + 3))
    out = ["# labelqa benchmark results", "",
           "Generated by `python -m bench` (see `bench/__main__.py`); do not edit by hand — "
           "the findings below come from `bench/FINDINGS.md`.", ""]
    out += ["## Machine", "",
            f"- CPU: {info.get('cpu')} ({info.get('cpus')} CPUs"
            f"{', ' + info['hypervisor'] + ' guest' if info.get('hypervisor') else ''}), "
            f"memory {info.get('mem_gib', 0):.1f} GiB",
            f"- {info.get('platform')}, Python {info.get('python')}",
            "- " + ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items()),
            "- runs per stage: " + ", ".join(
                f"{_k(r['n'])}: {r['runs']}" + (f" (pages {r['pages_runs']})"
                                                 if r.get("pages_runs", r["runs"]) != r["runs"]
                                                 else "") for r in rs)
            + " (median shown); each stage in a fresh subprocess, peak RSS from `wait4`", ""]
    out += ["## Data", "", "| N (lines) | items | sample items | boxes | export | database "
            "| load average (max at a stage start) |", "|---|---|---|---|---|---|---|"]
    for r in rs:
        e = r["export"]
        load = max(x.get("load_max", 0) for x in _summaries(r))
        out.append(f"| {r['n']:,} | {e['items']:,} | {e['sample_items']:,} | {e['boxes']:,} "
                   f"| {e['bytes'] / 2**20:.0f} MiB | {r.get('db_mib', 0):.0f} MiB "
                   f"| {load:.1f} |")
    out += ["", "A load average above the 2 CPUs means other processes shared the machine "
            "during the run: wall times are then inflated, CPU times and same-run ratios "
            "much less.", ""]
    out += ["", "## Stages: median time (peak RSS) and the fitted scaling exponent", "",
            f"| stage | {hdr} | exponent (all sizes) | last step |", f"|{sep}|"]
    names = ["floor", *CORE]
    for name in names + ["total"]:
        if name == "total":
            ts = [sum(r["stages"][c]["median"] for c in CORE) for r in rs]
            cells = [f"**{_s(t)}**" for t in ts]
            label = "**ingest + derived + weekly + report**"
        else:
            ts = [r["stages"][name]["median"] for r in rs]
            cells = [f"{_s(t)} ({_rss(r['stages'][name])})"
                     for t, r in zip(ts, rs, strict=True)]
            label = name
        last = _fit(sizes[-2:], ts[-2:]) if len(sizes) >= 2 else None
        out.append(f"| {label} | {' | '.join(cells)} | {_exp(_fit(sizes, ts))} | "
                   f"{_exp(last)} |")
    out += ["", "| CPU seconds (all threads and worker processes, median) | " + hdr + " |",
            "|" + "|".join(["---"] * (len(sizes) + 1)) + "|"]
    for name in names:
        cells = [_s(r["stages"][name].get("cpu_median")) for r in rs]
        out.append(f"| {name} | {' | '.join(cells)} |")
    out += ["", "Ingest + derived is what `labelqa ingest` (`metrics.workspace.ingest`) does "
            "in one transaction; `report` includes every confidence interval of one week "
            "(bootstraps of M3 and each alpha).", ""]

    out += ["## Dashboard pages: cold (fresh process) / week switch (uncached)", "",
            f"| page | {hdr} |", "|" + "|".join(["---"] * (len(sizes) + 1)) + "|"]
    for page in PAGES:
        cells = []
        for r in rs:
            p = r["pages"].get(page)
            cells.append("–" if p is None else
                         f"{_s(p['cold_median'])} / {_s(p['warm_median'])} "
                         f"({_s(p.get('uncached_median'))})")
        out.append(f"| {page} | {' | '.join(cells)} |")
    remeasured = [_k(r["n"]) for r in rs if r.get("pages_runs") is not None]
    out += ["", "Each page makes the `ui.safe_call` calls of a first load with default "
            "widgets and URL parameters (`bench.stages.page_calls`), as `pages/common/ui.call` "
            "makes them: a database generation check per call (and one when the page "
            "opens; it reads the database only when its file changed), then the cached "
            "result unpickled, or the call run and its result pickled, the calls of one "
            "render sharing one read-only connection. Cold excludes "
            "interpreter start and imports. A week switch re-runs the calls whose arguments "
            "change with the week (`ui.call`'s cache key); the others come from the cache. "
            "Uncached: every call again in the same process, as after a new ingest."
            + (f" Pages re-measured on their own (`--only-pages`) at "
               f"{', '.join(remeasured)}." if remeasured else ""), ""]

    out += ["## Peers, same run and same data (ratios; > 1 means ours is faster)", "",
            f"| comparison | {hdr} | target |",
            "|" + "|".join(["---"] * (len(sizes) + 2)) + "|"]

    def ratio_row(label, fn, target):
        cells = []
        for r in rs:
            try:
                cells.append(fn(r))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("–")
        out.append(f"| {label} | {' | '.join(cells)} | {target} |")

    st = lambda r, k: r["stages"][k]["median"]  # noqa: E731
    pe = lambda r, k, f="median": r["peers"][k][f]  # noqa: E731
    ratio_row("ingest / orjson floor (lower is better)",
              lambda r: _r(st(r, "ingest") / st(r, "floor")), "≤ 4x")
    ratio_row("the same, CPU time", lambda r: _r(r["stages"]["ingest"]["cpu_median"]
                                                 / r["stages"]["floor"]["cpu_median"]), "")
    ratio_row("pandas `read_json` + `jsonschema` / our ingest",
              lambda r: _r(pe(r, "ingest_pandas") / st(r, "ingest")), "≥ 10x")
    ratio_row("the same, CPU time",
              lambda r: _r(pe(r, "ingest_pandas", "cpu_median")
                           / r["stages"]["ingest"]["cpu_median"]), "")
    ratio_row("COCOeval evaluate+accumulate / our matching",
              lambda r: _r(pe(r, "match_coco") / pe(r, "match_ours")), "≥ 5x")
    ratio_row("COCOeval incl. building its dataset / our matching",
              lambda r: _r(pe(r, "match_coco", "total_median") / pe(r, "match_ours")), "")
    ratio_row("the same, CPU time",
              lambda r: _r(pe(r, "match_coco", "cpu_median")
                           / pe(r, "match_ours", "cpu_median")), "")
    ratio_row("`krippendorff.alpha` (dense matrix given) / our alpha",
              lambda r: _r(pe(r, "alpha_kripp") / pe(r, "alpha_ours")), "≥ 1x")
    ratio_row("`krippendorff` incl. building the matrix / our alpha",
              lambda r: _r(pe(r, "alpha_kripp", "total_median") / pe(r, "alpha_ours")), "")
    out += ["", "| absolute (median) | " + hdr + " |",
            "|" + "|".join(["---"] * (len(sizes) + 1)) + "|"]

    def abs_row(label, fn):
        cells = []
        for r in rs:
            try:
                cells.append(fn(r))
            except (KeyError, TypeError):
                cells.append("–")
        out.append(f"| {label} | {' | '.join(cells)} |")

    abs_row("our matching (pairs)", lambda r: f"{_s(pe(r, 'match_ours'))} "
            f"({r['peers']['match_ours']['last']['pairs']:,})")
    abs_row("COCOeval eval / total", lambda r: f"{_s(pe(r, 'match_coco'))} / "
            f"{_s(pe(r, 'match_coco', 'total_median'))}")
    abs_row("our alpha (ratings) / RSS", lambda r: f"{_s(pe(r, 'alpha_ours'))} "
            f"({r['peers']['alpha_ours']['last']['ratings']:,}) / "
            f"{r['peers']['alpha_ours']['rss_mib']:.0f} MiB")
    abs_row("krippendorff alpha / total / RSS", lambda r: f"{_s(pe(r, 'alpha_kripp'))} / "
            f"{_s(pe(r, 'alpha_kripp', 'total_median'))} / "
            f"{r['peers']['alpha_kripp']['rss_mib']:.0f} MiB")
    abs_row("pandas + jsonschema / RSS", lambda r: f"{_s(pe(r, 'ingest_pandas'))} / "
            f"{r['peers']['ingest_pandas']['rss_mib']:.0f} MiB")
    abs_row("same answer? alpha ours vs krippendorff",
            lambda r: f"{r['peers']['alpha_ours']['last']['alpha']:.6f} vs "
            f"{r['peers']['alpha_kripp']['last']['alpha']:.6f}")
    abs_row("same answer? agreements@0.5 ours vs COCO TP@0.5",
            lambda r: f"{r['peers']['match_ours']['last']['agreements_at_0_5']:,} vs "
            f"{r['peers']['match_coco']['last']['tp_at_0_5']:,}")
    abs_row("same answer? invalid rows: ours vs jsonschema",
            lambda r: f"{r['stages']['ingest']['last']['schema_error_annotations']:,} vs "
            f"{r['peers']['ingest_pandas']['last']['invalid']:,}")
    out += ["", "COCOeval runs with one area range and `maxDets = [100]` (its cheapest "
            "setting), IoU 0.50:0.95 like our threshold curve; it matches greedily within "
            "a category, we run two Hungarian passes (same label, then any label). The "
            "pandas pipeline only parses and validates (no policy, no load) and reads a copy "
            "without the unparseable lines, which make `read_json` stop. Our ingest "
            "counts `withinImage` errors a JSON Schema cannot state, hence more invalid "
            "rows.", ""]

    weekly = [r for r in rs if r.get("weekly_files")]
    if weekly:
        out += ["## One export per week", "",
                "`labelqa ingest` (ingest + derived tables) of the same lines as one file and "
                "as one file per ISO week (one run each): each file is its own transaction "
                "and rebuilds every derived table.", "",
                "| N | one file | 26 weekly files | ratio |", "|---|---|---|---|"]
        for r in weekly:
            w = r["weekly_files"]
            one, many = w["one_file"]["seconds"], w["weekly_files"]["seconds"]
            out.append(f"| {_k(r['n'])} | {_s(one)} | {_s(many)} ({w['files']} files) "
                       f"| {_r(many / one)} |")
        out.append("")

    big = rs[-1]
    out += [f"## Targets at {_k(big['n'])}", ""]
    total = sum(big["stages"][c]["median"] for c in CORE)
    # A stage with worker processes holds their memory too: its peak plus theirs.
    rss = max([big["stages"][c]["rss_mib"]
               + big["stages"][c].get("workers", 0) * big["stages"][c].get("workers_rss_mib", 0)
               for c in CORE]
              + [p["rss_mib"] for p in big["pages"].values()])
    checks = [
        ("ingest within 4x the orjson floor",
         big["stages"]["ingest"]["median"] / big["stages"]["floor"]["median"] <= 4,
         _r(big["stages"]["ingest"]["median"] / big["stages"]["floor"]["median"])),
        ("ingest + derived + all weekly point estimates + one week's CIs < 60 s",
         total < 60, _s(total)),
        ("peak memory < 4 GiB", rss < 4096, f"{rss:.0f} MiB (ingest: process and workers)"),
        ("every page < 1 s cold",
         all(p["cold_median"] < 1 for p in big["pages"].values()),
         ", ".join(f"{k} {_s(p['cold_median'])}" for k, p in big["pages"].items())),
        ("every page < 200 ms on a week switch",
         all(p["warm_median"] < 0.2 for p in big["pages"].values()),
         ", ".join(f"{k} {_s(p['warm_median'])}" for k, p in big["pages"].items())),
    ]
    p = big["peers"]
    if "match_coco" in p and "match_ours" in p:
        checks.append(("matching ≥ 5x faster than COCOeval",
                       p["match_coco"]["median"] / p["match_ours"]["median"] >= 5,
                       _r(p["match_coco"]["median"] / p["match_ours"]["median"])))
    if "alpha_kripp" in p and "alpha_ours" in p:
        checks.append(("agreement no slower than `krippendorff`",
                       p["alpha_kripp"]["median"] / p["alpha_ours"]["median"] >= 1,
                       _r(p["alpha_kripp"]["median"] / p["alpha_ours"]["median"])))
    if "ingest_pandas" in p:
        checks.append(("ingest ≥ 10x faster than pandas + jsonschema",
                       p["ingest_pandas"]["median"] / big["stages"]["ingest"]["median"] >= 10,
                       _r(p["ingest_pandas"]["median"] / big["stages"]["ingest"]["median"])))
    for name in ("match_coco", "ingest_pandas"):
        if name not in p:
            done = [r["n"] for r in rs if name in r["peers"]]
            if done:
                checks.append((f"{name}: slow peer stopped at {_k(max(done))}", True,
                               "see the peers table"))
    out += ["| target | met | measured |", "|---|---|---|"]
    out += [f"| {name} | {'yes' if ok else '**no**'} | {val} |" for name, ok, val in checks]

    out += ["", "## Where the time goes (largest size; pages: every call of the uncached "
            "re-run in a warm process, else of the cold load; then the week switch)", ""]
    for name in ("weekly", "report"):
        parts = big["stages"][name]["last"].get("parts", {})
        out.append(f"- {name}: " + ", ".join(f"{k} {_s(v)}" for k, v in parts.items()))
    for page, p in big["pages"].items():
        parts = p["last"].get("uncached_parts") or p["last"].get("parts", {})
        line = f"- page {page}: " + ", ".join(f"{k} {_s(v)}" for k, v in parts.items())
        warm = p["last"].get("warm_parts")
        if warm:
            line += "; switch: " + ", ".join(f"{k} {_s(v)}" for k, v in warm.items())
        out.append(line)
    findings = BENCH / "FINDINGS.md"
    if findings.exists():
        out += ["", findings.read_text(encoding="utf-8").strip()]
    out += ["", "## Reproduce", "", "```bash",
            "pip install -e '.[test]'",
            "python -m bench --annotations 10000 100000 1000000   # ~25 min on 2 cores",
            "python -m bench --annotations 10000 --quick           # the CI smoke run",
            "python -m bench --annotations 100000 1000000 --only-pages   # just the pages",
            "```", "",
            "Exports are cached under `$LABELQA_BENCH_DIR` (default: the temp folder); "
            "`--slow-peers-max` (COCOeval, pandas) and `--peers-max` bound the sizes at which "
            "the peers run.",
            ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--annotations", "-n", type=int, nargs="+", default=[10_000, 100_000],
                   help="sizes (export lines) to run, e.g. 10000 100000 1000000")
    p.add_argument("--runs", type=int, default=3, help="runs per stage (median)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 run, peers only up to 10k, nothing written by default")
    p.add_argument("--peers-max", type=int, default=1_000_000,
                   help="largest size for the peers (our matching and alpha, krippendorff)")
    p.add_argument("--slow-peers-max", type=int, default=100_000,
                   help="largest size for the slow peers (COCOeval, pandas + jsonschema) "
                   "and for the pages' uncached re-run")
    p.add_argument("--weekly-files-max", type=int, default=100_000,
                   help="largest size for the one-file-per-week ingest comparison")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--render-only", action="store_true",
                   help="only re-render the markdown from the saved results")
    p.add_argument("--weekly-files-only", action="store_true",
                   help="run only the one-file-per-week comparison and merge it into the "
                   "results of each size")
    p.add_argument("--only-pages", action="store_true",
                   help="re-measure only the dashboard pages of each size (after an ingest "
                   "and derived build that are not recorded) and merge them into the "
                   "results of that size, every other number kept")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=os.environ.get(
        "LABELQA_BENCH_DIR", str(Path(tempfile.gettempdir()) / "labelqa-bench")))
    p.add_argument("--keep", action="store_true", help="keep the databases")
    p.add_argument("--results", help="raw results JSON, merged by size "
                   "(default bench/results.json; none with --quick)")
    p.add_argument("--markdown", help="write the report here "
                   "(default bench/RESULTS.md; none with --quick)")
    opts = p.parse_args(argv)
    if sum((opts.render_only, opts.weekly_files_only, opts.only_pages)) > 1:
        p.error("--render-only, --weekly-files-only and --only-pages exclude each other")
    if opts.quick:
        opts.runs = 1
        opts.peers_max = min(opts.peers_max, 10_000)
        opts.slow_peers_max = min(opts.slow_peers_max, 10_000)
        opts.weekly_files_max = 0
    else:
        opts.results = opts.results or str(BENCH / "results.json")
        opts.markdown = opts.markdown or str(BENCH / "RESULTS.md")

    def log(msg: str) -> None:
        print(msg, flush=True)

    results: dict = {}
    if opts.results and Path(opts.results).exists():
        results = json.loads(Path(opts.results).read_text())
    if opts.only_pages:
        missing = [n for n in opts.annotations if str(n) not in results]
        if missing:
            raise SystemExit(f"--only-pages: no results for {missing} in "
                             f"{opts.results or '(no --results)'}; run those sizes first")
    t0 = time.perf_counter()
    for n in ([] if opts.render_only else opts.annotations):
        if opts.only_pages:
            results[str(n)]["pages"] = bench_pages_only(n, opts, log,
                                                        expect=results[str(n)]["export"])
            results[str(n)]["pages_runs"] = opts.runs
        elif opts.weekly_files_only:
            export = Path(opts.workdir) / "exports" / f"native-{n}-s{opts.seed}.jsonl"
            if str(n) not in results or not export.exists():
                raise SystemExit(f"--weekly-files-only: run size {n} first")
            results[str(n)]["weekly_files"] = bench_weekly_files(
                n, export, Path(opts.workdir) / f"n{n}", log)
        else:
            results[str(n)] = bench_size(n, opts, log)
        if opts.results:
            Path(opts.results).write_text(json.dumps(results, indent=1))
        log(f"N = {n:,} done ({time.perf_counter() - t0:.0f} s so far)")
    info = machine()
    text = render({str(n): results[str(n)] for n in sorted(map(int, results))}, info)
    if opts.markdown:
        Path(opts.markdown).write_text(text, encoding="utf-8")
        log(f"wrote {opts.markdown}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
