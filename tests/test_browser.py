"""Real-browser tests: the app served by `streamlit run`, driven by Playwright in Debian's
headless Chromium. Every page opens without a Streamlit exception box; the week picker
and the drill-down work; screenshots land in tests/screenshots/.

In CI (`LABELQA_REQUIRE_BROWSER=1`, set by .ci/run) a missing browser fails; on a
developer machine without Chromium these tests skip, saying so.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, require_browser

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "tests" / "screenshots"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(project: Path):
    port = _free_port()
    env = dict(os.environ, LABELQA_PROJECT=str(project))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
         "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    raise RuntimeError(f"streamlit did not start on {url}:\n{out[-3000:]}")


@pytest.fixture(scope="module")
def server(demo_project):
    proc, url = _serve(demo_project)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _pages() -> list[str]:
    """URL paths of every page: '' (app.py) and one per file in pages/."""
    names = [""]
    for f in sorted((ROOT / "pages").glob("*.py")):
        stem = f.stem
        name = stem.split("_", 1)[1] if stem.split("_", 1)[0].isdigit() else stem
        names.append(name)
    return names


def _open(page, url: str) -> None:
    page.goto(url, wait_until="networkidle", timeout=60_000)
    page.wait_for_selector('[data-testid="stAppViewContainer"]', timeout=60_000)
    # A rerun is finished when no element is stale and the status widget is idle.
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
    page.wait_for_timeout(500)


def _assert_no_exception(page, where: str) -> None:
    boxes = page.locator('[data-testid="stException"]')
    if boxes.count():
        raise AssertionError(f"{where}: Streamlit exception shown: "
                             f"{boxes.first.inner_text()[:2000]}")


@pytest.mark.parametrize("name", _pages())
def test_every_page_opens_without_error(browser, server, name):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        _open(page, f"{server}/{name}")
        _assert_no_exception(page, name or "overview")
        assert page.locator('[data-testid="stHeading"], h1').count() > 0
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name or 'Overview'}.png"), full_page=True)
    finally:
        page.close()


def test_week_in_url_and_drilldown(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        _open(page, f"{server}/?week=2026-W40")
        _assert_no_exception(page, "overview W40")
        picker = page.get_by_role("combobox", name="ISO week")
        assert picker.input_value() == "2026-W40"
        assert "week=2026-W40" in page.url
        # Pick another week with the mouse: the URL and the numbers follow.
        before = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
        picker.click()
        page.get_by_role("option", name="2026-W37").click()
        page.wait_for_function("() => location.search.includes('week=2026-W37')",
                               timeout=30_000)
        page.wait_for_timeout(1500)
        _assert_no_exception(page, "overview W37")
        after = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
        assert after and after != before
        _open(page, f"{server}/Item_drilldown?item=img-000050")
        _assert_no_exception(page, "drill-down")
        body = page.locator('[data-testid="stAppViewContainer"]').inner_text()
        assert "img-000050" in body
        assert "lead-01" in body  # the pinned gold item shows its gold annotation
        page.screenshot(path=str(SHOTS / "Item_drilldown_img-000050.png"), full_page=True)
    finally:
        page.close()


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    import json

    from conftest import CONFIG, CONTRACT, Project, record
    from test_security import HOSTILE_TEXT

    root = tmp_path_factory.mktemp("xss") / "proj"
    root.mkdir()
    (root / "labelqa.toml").write_text(CONFIG, encoding="utf-8")
    (root / "contract.schema.json").write_text(json.dumps(CONTRACT), encoding="utf-8")
    (root / "images").mkdir()
    project = Project(root)
    project.ingest(project.write("w.jsonl", [
        record(item="evil", annotator="<script>alert(4)</script>",
               caption=HOSTILE_TEXT["caption"]),
        record(item="evil", annotator="ann-2", caption="<svg onload=alert(5)> a car",
               image={"uri": "javascript:alert(6)", "width": 100, "height": 100}),
    ]))
    proc, url = _serve(root)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.parametrize("name", _pages())
def test_hostile_text_runs_no_script(browser, hostile_server, name):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        _open(page, f"{hostile_server}/{name}?week=2026-W02&item=evil")
        _assert_no_exception(page, name or "overview")
        page.wait_for_timeout(1000)
        assert dialogs == [], f"{name}: a script ran: {dialogs}"
        injected = page.evaluate(
            "() => document.querySelectorAll('img[src=\"x\"], svg[onload]').length + "
            "[...document.scripts].filter(s => s.textContent.includes('alert(')).length")
        assert injected == 0
        if name == "Item_drilldown":
            text = page.locator('[data-testid="stAppViewContainer"]').inner_text()
            assert "<img src=x onerror=alert(1)>" in text  # shown, as text
    finally:
        page.close()


def _sidebar_to_schema_keeps(page, week: str) -> None:
    """Follow the sidebar link to Schema errors: the page opens on ``week``."""
    page.locator('[data-testid="stSidebar"]').get_by_role("link", name="Schema errors").click()
    page.wait_for_function("() => location.pathname.endsWith('/Schema_errors')",
                           timeout=30_000)
    page.wait_for_timeout(1500)
    _assert_no_exception(page, f"schema via the sidebar ({week})")
    assert f"week={week}" in page.url
    assert page.get_by_role("combobox", name="ISO week").input_value() == week


def test_sidebar_links_keep_the_week(browser, server):
    """The page list in the sidebar names every page (no "app") and a click keeps the
    week picked on the page before."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        _open(page, f"{server}/?week=2026-W40")
        sidebar = page.locator('[data-testid="stSidebar"]')
        names = sidebar.locator('[data-testid="stPageLink"]').all_inner_texts()
        assert [n.split(maxsplit=1)[-1] for n in names][:2] == ["Weekly overview",
                                                               "Schema errors"]
        assert not any(n.strip().endswith("app") for n in names)
        assert page.locator('[data-testid="stSidebarNav"]').count() == 0  # Streamlit's own
        picker = page.get_by_role("combobox", name="ISO week")
        picker.click()
        page.get_by_role("option", name="2026-W37").click()
        page.wait_for_function("() => location.search.includes('week=2026-W37')",
                               timeout=30_000)
        page.wait_for_timeout(1500)
        _sidebar_to_schema_keeps(page, "2026-W37")
    finally:
        page.close()


def _click_cell(page, title: str, x: str, y: str) -> None:
    """Click the cell (x, y) of the plotly chart whose title contains ``title``."""
    find = """(title) => [...document.querySelectorAll('.js-plotly-plot')].find(
        g => ((g.layout && g.layout.title || {}).text || '').includes(title))"""
    page.wait_for_function(f"([title]) => !!({find})(title)", arg=[title], timeout=30_000)
    pos = page.evaluate(f"""([title, x, y]) => {{
        const gd = ({find})(title);
        gd.scrollIntoView();
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        const r = gd.getBoundingClientRect();
        return [r.left + xa._offset + xa.d2p(x), r.top + ya._offset + ya.d2p(y)];
    }}""", [title, x, y])
    page.mouse.click(*pos)


@pytest.mark.parametrize("only", ["class_disagreements", "presence_disagreements"])
def test_a_pair_cell_lists_that_pairs_items_under_its_category(browser, server,
                                                               demo_project, only):
    """A pair with only class (or only presence) disagreements lists them on a click,
    whatever category was showing."""
    from conftest import query

    from metrics import visual
    from metrics.config import load_config

    week = "2026-W47"
    config = load_config(demo_project)
    pairs = query(config, visual.pair_breakdown, week)
    other = ({"class_disagreements", "presence_disagreements"} - {only}).pop()
    row = pairs[(pairs[only] > 0) & (pairs[other] == 0)].iloc[0]
    a, b = row["annotator_a"], row["annotator_b"]
    kind = only.split("_")[0]
    start = "presence" if kind == "class" else "class"
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        _open(page, f"{server}/Visual_agreement?week={week}&kind={start}")
        _click_cell(page, "M3 per annotator pair", b, a)
        page.wait_for_function("() => location.search.includes('pair=')", timeout=30_000)
        page.wait_for_timeout(1500)
        _assert_no_exception(page, "visual after a pair click")
        assert f"kind={kind}" in page.url and f"pair={a}%7C{b}" in page.url
        items = query(config, visual.disagreement_items, week, kind=kind, annotator=(a, b))
        assert not items.empty
        text = page.locator('[data-testid="stMarkdown"]').all_inner_texts()
        assert any(t.startswith(f"{len(items)} item") and f"{a} × {b}" in t for t in text)
    finally:
        page.close()


def test_a_week_opened_from_the_url_follows_a_link(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        _open(page, f"{server}/?week=2026-W43")
        _sidebar_to_schema_keeps(page, "2026-W43")
    finally:
        page.close()
