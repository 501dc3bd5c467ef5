"""``python -m bench.load --project DIR --sessions 10 --seconds 60``: dashboard load test
(outside CI).

Starts ``streamlit run app.py`` (headless, a free port, ``LABELQA_PROJECT=DIR``) and one
headless Chromium (Playwright) with ``--sessions`` browser contexts, each its own
Streamlit session. After one warm-up load (the cold start, reported on its own), every
session loops for ``--seconds``: open the overview of a random week by URL
(``/?week=...``, a new Streamlit session), then switch the week twice with the "ISO week"
selectbox (a rerun of the same session). Each page load is timed from the navigation (or
the choice in the selectbox) until the page is ready:

- the app container is present, the week's heading ("Week 2026-W40 · ...") is shown,
- Streamlit's status widget (``[data-testid="stStatusWidget"]``, "Running...") is gone
  and no element is stale,

and it is an error when a Streamlit exception box (``[data-testid="stException"]``)
shows, a script error reaches the page, or it is not ready within ``--timeout`` seconds.
Count, errors, median, p95 and max are written as JSON (``--json``) and as a section of
``bench/RELIABILITY.md`` named by ``--label`` (``--markdown -``: none). Exit status 1 when
any load failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

REPO = Path(__file__).resolve().parents[1]
RELIABILITY = REPO / "bench" / "RELIABILITY.md"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

READY_JS = """(week) => {
  if (document.querySelector('[data-testid="stException"]')) return 'exception';
  if (!document.querySelector('[data-testid="stAppViewContainer"]')) return false;
  if (document.querySelector('[data-testid="stStatusWidget"]')) return false;
  if (document.querySelector('[data-stale="true"]')) return false;
  const heads = document.querySelectorAll('h3');
  for (const h of heads) { if (h.textContent.includes('Week ' + week + ' ')) return 'ready'; }
  return false;
}"""


# -- the project and the server ---------------------------------------------------------

def project_info(project: Path) -> dict:
    """Weeks with data, annotation count and database size, read before the server
    starts (a reader here would hold the lock the dashboard may need briefly)."""
    from metrics import store
    from metrics.config import load_config

    config = load_config(project)
    with store.open_db(config.database, read_only=True) as con:
        weeks = [r[0] for r in con.execute(
            "SELECT DISTINCT week FROM annotations ORDER BY 1").fetchall()]
        annotations = con.execute("SELECT count(*) FROM annotations").fetchone()[0]
        items = con.execute("SELECT count(*) FROM items").fetchone()[0]
    return {"project": str(project), "name": config.name, "weeks": weeks,
            "annotations": annotations, "items": items,
            "database_mib": config.database.stat().st_size / 2 ** 20}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(project: Path, repo: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, LABELQA_PROJECT=str(project))
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py",
         "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError(f"streamlit did not start on {url}:\n"
                       f"{log_path.read_text(errors='replace')[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (all threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def descendants_cpu(root: int, exclude: int | None = None) -> float:
    """CPU seconds (user + system, with reaped children) of every process below `root`
    except the subtree of `exclude`: here, the Playwright driver and Chromium."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parent[int(d.name)] = int(fields[1])
        cpu[int(d.name)] = sum(int(f) for f in fields[11:15]) / tick
    total = 0.0
    for pid in cpu:
        p, inside = pid, False
        while p in parent and p > 1:
            if p == exclude:
                break
            p = parent[p]
            if p == root:
                inside = True
                break
        if inside and pid != exclude:
            total += cpu[pid]
    return total


# -- the browser ------------------------------------------------------------------------

class Run:
    def __init__(self) -> None:
        self.loads: list[dict] = []

    def add(self, session: int, kind: str, week: str, seconds: float,
            error: str | None) -> None:
        # `end` (monotonic) marks which loads of a week came after a finished one.
        self.loads.append({"session": session, "kind": kind, "week": week,
                           "seconds": seconds, "error": error, "end": time.monotonic()})


def mark_repeats(loads: list[dict]) -> None:
    """`repeat`: the week had been shown (without error) before this load began, so
    the server's cache may hold its numbers; the others are first visits of a week."""
    shown: list[tuple[float, str]] = sorted((x["end"], x["week"]) for x in loads
                                            if not x["error"])
    for x in loads:
        start = x["end"] - x["seconds"]
        x["repeat"] = any(end <= start and week == x["week"] for end, week in shown)


async def wait_ready(page, week: str, timeout_s: float, js_errors: list) -> str | None:
    """None when the page is ready, else what went wrong."""
    try:
        handle = await page.wait_for_function(READY_JS, arg=week, polling=50,
                                              timeout=timeout_s * 1000)
        state = await handle.json_value()
    except Exception as exc:  # noqa: BLE001 - a timeout or a closed page
        return f"not ready within {timeout_s:g} s ({type(exc).__name__})"
    if state == "exception":
        text = await page.locator('[data-testid="stException"]').first.inner_text()
        return "Streamlit exception: " + " ".join(text.split())[:300]
    if js_errors:
        err = js_errors.pop(0)
        js_errors.clear()
        return f"script error in the page: {err[:300]}"
    return None


async def timed_open(page, url: str, week: str, timeout_s: float, js_errors: list
                     ) -> tuple[float, str | None]:
    t0 = time.perf_counter()
    try:
        await page.goto(f"{url}/?week={week}", wait_until="commit",
                        timeout=timeout_s * 1000)
    except Exception as exc:  # noqa: BLE001
        return time.perf_counter() - t0, f"navigation failed: {exc}"[:300]
    err = await wait_ready(page, week, timeout_s, js_errors)
    return time.perf_counter() - t0, err


async def timed_switch(page, week: str, timeout_s: float, js_errors: list
                       ) -> tuple[float, str | None]:
    picker = page.get_by_role("combobox", name="ISO week")
    try:
        await picker.click(timeout=timeout_s * 1000)
        await picker.fill(week, timeout=timeout_s * 1000)
        option = page.get_by_role("option", name=week, exact=True)
        await option.wait_for(timeout=timeout_s * 1000)
    except Exception as exc:  # noqa: BLE001
        return 0.0, f"week picker not usable: {type(exc).__name__}: {exc}"[:300]
    t0 = time.perf_counter()
    try:
        await option.click(timeout=timeout_s * 1000)
    except Exception as exc:  # noqa: BLE001
        return time.perf_counter() - t0, f"option click failed: {exc}"[:300]
    err = await wait_ready(page, week, timeout_s, js_errors)
    if err is None and f"week={week}" not in page.url:
        err = f"URL does not follow the picker: {page.url}"
    return time.perf_counter() - t0, err


async def session(i: int, browser, url: str, weeks: list[str], deadline: float,
                  run: Run, *, seed: int, timeout_s: float, switches: int) -> None:
    rng = random.Random(seed * 1000 + i)
    ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await ctx.new_page()
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    try:
        while time.monotonic() < deadline:
            week = rng.choice(weeks)
            seconds, err = await timed_open(page, url, week, timeout_s, js_errors)
            run.add(i, "open", week, seconds, err)
            if err:
                continue
            for _ in range(switches):
                if time.monotonic() >= deadline or len(weeks) < 2:
                    break
                week = rng.choice([w for w in weeks if w != week])
                seconds, err = await timed_switch(page, week, timeout_s, js_errors)
                run.add(i, "switch", week, seconds, err)
                if err:
                    break
    finally:
        await ctx.close()


async def drive(url: str, weeks: list[str], *, sessions: int, seconds: float, seed: int,
                timeout_s: float, switches: int, chromium: str,
                server_pid: int) -> tuple[Run, dict]:
    from playwright.async_api import async_playwright

    run = Run()
    warm = Run()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            # Warm-up: the first load after the server starts (caches empty).
            ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
            page = await ctx.new_page()
            js_errors: list[str] = []
            page.on("pageerror", lambda exc: js_errors.append(str(exc)))
            seconds_, err = await timed_open(page, url, weeks[-1], max(timeout_s, 300.0),
                                             js_errors)
            warm.add(-1, "open", weeks[-1], seconds_, err)
            await ctx.close()
            deadline = time.monotonic() + seconds
            browser_cpu0 = descendants_cpu(os.getpid(), exclude=server_pid)
            server_cpu0 = cpu_seconds(server_pid) or 0.0
            t0 = time.perf_counter()
            await asyncio.gather(*(
                session(i, browser, url, weeks, deadline, run, seed=seed,
                        timeout_s=timeout_s, switches=switches) for i in range(sessions)))
            wall = time.perf_counter() - t0
            browser_cpu = descendants_cpu(os.getpid(), exclude=server_pid) - browser_cpu0
            server_cpu = (cpu_seconds(server_pid) or 0.0) - server_cpu0
        finally:
            await browser.close()
    mark_repeats(warm.loads + run.loads)
    return run, {"warmup": warm.loads[0] if warm.loads else None, "wall": wall,
                 "browser_cpu_s": browser_cpu, "server_cpu_s": server_cpu}


# -- numbers and report -------------------------------------------------------------------

def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def stats(loads: list[dict]) -> dict:
    ok = [x["seconds"] for x in loads if not x["error"]]
    return {"count": len(loads), "errors": sum(1 for x in loads if x["error"]),
            "median": statistics.median(ok) if ok else None, "p95": pct(ok, 0.95),
            "max": max(ok) if ok else None}


def _s(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f} s"


def markdown(result: dict) -> str:
    info = result["project"]
    rows = []
    for kind, label in (("all", "**all page loads**"),
                        ("open", "open by URL (`/?week=…`, new session)"),
                        ("switch", "switch week (selectbox, rerun)"),
                        ("first", "first visit of a week (nothing cached)"),
                        ("repeat", "week shown before (cache may hold it)")):
        s = result["stats"][kind]
        rows.append(f"| {label} | {s['count']:,} | {s['errors']:,} | {_s(s['median'])} | "
                    f"{_s(s['p95'])} | {_s(s['max'])} |")
    warm = result["warmup"]
    out = [
        f"## Load: {result['label']}, {result['sessions']} browser session"
        f"{'s' if result['sessions'] != 1 else ''}",
        "",
        f"`{result['command']}` — {result['started']}, {result['machine']}; "
        f"{result['note'] + '; ' if result['note'] else ''}"
        f"streamlit {result['versions']['streamlit']}, playwright "
        f"{result['versions']['playwright']}, {result['versions']['chromium']}.",
        "",
        f"Project: {info['annotations']:,} annotations, {info['items']:,} items, "
        f"{len(info['weeks'])} weeks ({info['weeks'][0]} … {info['weeks'][-1]}), database "
        f"{info['database_mib']:.0f} MiB. One headless Chromium, {result['sessions']} "
        f"contexts for {result['seconds']:g} s; each loops: open the overview of a random "
        f"week by URL, then switch the week {result['switches']}× in the \"ISO week\" "
        "selectbox. Ready = app container present, the week's heading shown, "
        "`[data-testid=\"stStatusWidget\"]` gone, nothing stale; an error = "
        "`[data-testid=\"stException\"]`, a script error in the page, or not ready "
        f"within {result['timeout']:g} s.",
        "",
        "| page loads | count | errors | median | p95 | max |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Cold start (first load after the server started, before the sessions): "
        f"{_s(warm['seconds']) if warm else '–'}"
        f"{' — ' + warm['error'] if warm and warm['error'] else ''}. "
        f"Throughput {result['stats']['all']['count'] / result['wall']:.2f} loads/s; "
        f"during the {result['wall']:.0f} s of sessions the server used "
        f"{result['server_cpu_s']:.0f} CPU-seconds (all threads; peak RSS "
        f"{result['server_rss_mib']:.0f} MiB) and Chromium with the Playwright driver "
        f"{result['browser_cpu_s']:.0f}; 1-minute load average "
        f"{result['loadavg_start']:.1f} before, {result['loadavg_end']:.1f} at the end, "
        f"on {os.cpu_count()} CPUs, shared by the server, the browser and whatever else "
        "ran on the machine.",
    ]
    errors = [x for x in result["loads"] if x["error"]]
    if errors:
        out += ["", "Errors:", ""]
        kinds: dict[str, int] = {}
        for x in errors:
            kinds[x["error"]] = kinds.get(x["error"], 0) + 1
        for text, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:10]:
            out.append(f"- ×{n}: {text}")
    return "\n".join(out) + "\n"


def _chromium_version(path: str) -> str:
    try:
        return subprocess.run([path, "--version"], capture_output=True, text=True,
                              timeout=30).stdout.strip() or "chromium"
    except (OSError, subprocess.SubprocessError):
        return "chromium"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.load",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, required=True, help="project folder")
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--switches", type=int, default=2,
                    help="selectbox week switches after each open by URL")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per page load")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repo", type=Path, default=REPO, help="where app.py is (cwd)")
    ap.add_argument("--chromium", default=CHROMIUM)
    ap.add_argument("--label", default=None, help="names the report section "
                    "(default: the project folder's name)")
    ap.add_argument("--note", default="", help="said in the report")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", default=str(RELIABILITY),
                    help="Markdown file whose 'load-LABEL' section is rewritten ('-': none)")
    args = ap.parse_args(argv)
    project = args.project.resolve()
    label = args.label or project.name
    info = project_info(project)
    if not info["weeks"]:
        ap.error(f"{project}: no annotations, nothing to load")
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"labelqa-load-{os.getpid()}.log"
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    print(f"load: {info['annotations']:,} annotations, {len(info['weeks'])} weeks; "
          f"{args.sessions} sessions for {args.seconds:g} s", file=sys.stderr, flush=True)
    loadavg_start = os.getloadavg()[0]
    proc, url = start_server(project, args.repo, log_path)
    try:
        run, extra = asyncio.run(drive(
            url, info["weeks"], sessions=args.sessions, seconds=args.seconds,
            seed=args.seed, timeout_s=args.timeout, switches=args.switches,
            chromium=args.chromium, server_pid=proc.pid))
        rss = peak_rss_mib(proc.pid)
        loadavg = os.getloadavg()[0]
    finally:
        stop_server(proc)
    from importlib.metadata import version

    import streamlit

    from bench.fuzz import machine, update_section

    loads = run.loads
    result = {
        "command": f"python -m bench.load --project {args.project} --sessions "
                   f"{args.sessions} --seconds {args.seconds:g}",
        "label": label, "started": started, "machine": machine(), "note": args.note,
        "versions": {"streamlit": streamlit.__version__,
                     "playwright": version("playwright"),
                     "chromium": _chromium_version(args.chromium)},
        "project": info, "sessions": args.sessions, "seconds": args.seconds,
        "switches": args.switches, "timeout": args.timeout, "wall": extra["wall"],
        "warmup": extra["warmup"], "server_rss_mib": rss or 0.0,
        "server_cpu_s": extra["server_cpu_s"], "browser_cpu_s": extra["browser_cpu_s"],
        "loadavg_start": loadavg_start, "loadavg_end": loadavg,
        "stats": {"all": stats(loads),
                  "open": stats([x for x in loads if x["kind"] == "open"]),
                  "switch": stats([x for x in loads if x["kind"] == "switch"]),
                  "first": stats([x for x in loads if not x["repeat"]]),
                  "repeat": stats([x for x in loads if x["repeat"]])},
        "loads": loads,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.markdown != "-":
        slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
        update_section(Path(args.markdown), f"load-{slug}", markdown(result))
    s = result["stats"]["all"]
    print(f"{s['count']} page loads, {s['errors']} errors, median {_s(s['median'])}, "
          f"p95 {_s(s['p95'])}", file=sys.stderr)
    if s["errors"]:
        for x in loads:
            if x["error"]:
                print(f"  session {x['session']} {x['kind']} {x['week']}: {x['error']}",
                      file=sys.stderr)
    log_path.unlink(missing_ok=True)
    return 1 if s["errors"] or (extra["warmup"] and extra["warmup"]["error"]) else 0


if __name__ == "__main__":
    sys.exit(main())
