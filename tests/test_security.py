"""Hostile input through the dashboard: URL parameters with quotes, semicolons and
unicode reach every page as bound values (never SQL text), and nothing breaks or
changes; annotation text with markup is shown as text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import record
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["app.py", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("*.py"))]

HOSTILE = [
    "2026-W02'; DROP TABLE annotations; --",
    "' OR '1'='1",
    "\"; DELETE FROM exports; --",
    "Ünïcødé 🚗 ' \" ; \\ % _",
]


def _params() -> list[str]:
    """Every query parameter a page reads, found in the page sources."""
    names = set()
    pattern = re.compile(r'(?:param=|query_params\.get\(|query_default\(|sync_param\(|'
                         r'query_params\[)"([a-z_]+)"')
    for path in [ROOT / "app.py", *(ROOT / "pages").rglob("*.py")]:
        names.update(pattern.findall(path.read_text(encoding="utf-8")))
    return sorted(names)


HOSTILE_TEXT = {
    "caption": "<img src=x onerror=alert(1)> <script>alert(2)</script> "
               "[click me](javascript:alert(3)) **bold** :red[red] $x$ car",
}


@pytest.fixture(scope="module")
def hostile_project(tmp_path_factory) -> Path:
    import json

    from conftest import CONFIG, CONTRACT, Project

    root = tmp_path_factory.mktemp("hostile") / "proj"
    root.mkdir()
    (root / "labelqa.toml").write_text(CONFIG, encoding="utf-8")
    (root / "contract.schema.json").write_text(json.dumps(CONTRACT), encoding="utf-8")
    (root / "images").mkdir()
    project = Project(root)
    recs = [
        record(item="<b>evil</b>'; --", annotator="<script>x</script>",
               caption=HOSTILE_TEXT["caption"]),
        record(item="<b>evil</b>'; --", annotator="ann-2", caption="A car. nike",
               image={"uri": "../../etc/passwd", "width": 100, "height": 100}),
        record(item="img-2", annotator="ann-2", weather="<i>sunny</i>",
               image={"uri": "/etc/passwd", "width": 100, "height": 100}),
    ]
    project.ingest(project.write("w.jsonl", recs))
    return root


def _counts(root: Path) -> tuple:
    from metrics import store
    from metrics.config import load_config

    with store.open_db(load_config(root).database, read_only=True) as con:
        return tuple(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                     for t in ("annotations", "exports", "quarantine", "violations"))


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_url_parameters_are_harmless(monkeypatch, hostile_project, page, value):
    monkeypatch.setenv("LABELQA_PROJECT", str(hostile_project))
    before = _counts(hostile_project)
    at = AppTest.from_file(str(ROOT / page), default_timeout=60)
    for name in _params():
        at.query_params[name] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert _counts(hostile_project) == before


@pytest.mark.parametrize("page", PAGES)
def test_hostile_text_never_rendered_as_markup(monkeypatch, hostile_project, page):
    monkeypatch.setenv("LABELQA_PROJECT", str(hostile_project))
    at = AppTest.from_file(str(ROOT / page), default_timeout=60)
    at.query_params["item"] = "<b>evil</b>'; --"
    at.query_params["week"] = "2026-W02"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    for md in at.markdown:
        body = md.value
        # Markup from annotation text only ever appears backslash-escaped.
        for raw in ("<img src=x", "<script>", "](javascript:", "<b>evil</b>"):
            assert raw not in body, (page, body[:300])
        assert getattr(md, "allow_html", False) is False or "<img src=x" not in body
