"""Shared fixtures: a small QA project in a temp folder, and helpers to write exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

CONFIG = """\
[project]
name = "t"
database = "labelqa.duckdb"
images = "images"
contract = "contract.schema.json"
timezone = "UTC"

[labels]
car = ["car", "cars", "vehicle"]
person = ["person", "people", "man", "woman"]
bicycle = ["bicycle", "bicycles", "bike"]

[fields]
caption = "free"
weather = "categorical"
tags = "multilabel"

[agreement]
iou_threshold = 0.5
low_overlap = 0.75
bootstrap = 200
min_units = 10

[sample]
rate = 1.0
salt = "t"
pinned = []

[[policy]]
id = "no-brands"
type = "banned"
patterns = ["nike", "coca[- ]?cola"]
fields = ["caption"]
severity = "error"

[[policy]]
id = "caption-length"
type = "length"
fields = ["caption"]
min_words = 3
max_words = 40
severity = "error"

[[policy]]
id = "no-invented-objects"
type = "invented_objects"
fields = ["caption"]
severity = "error"

[[policy]]
id = "hedging"
type = "hedging"
fields = ["caption"]
severity = "warning"

[[guideline]]
version = "v1"
effective = "2026-01-05"
summary = "First version."
fields = ["caption", "weather", "tags"]

[[guideline]]
version = "v2"
effective = "2026-02-02"
summary = "Captions must not guess brands."
fields = ["caption"]
relabel = "filter"
"""

CONTRACT = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["item_id", "annotator_id", "submitted_at", "image", "boxes", "fields"],
    "properties": {
        "item_id": {"type": "string"},
        "annotator_id": {"type": "string"},
        "submitted_at": {"type": "string"},
        "role": {"enum": ["annotator", "reviewer", "gold", "model"]},
        "image": {
            "type": "object",
            "required": ["uri", "width", "height"],
            "properties": {"uri": {"type": "string"}, "width": {"type": "integer"},
                           "height": {"type": "integer"}},
        },
        "boxes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["label", "bbox"],
                "properties": {
                    "label": {"enum": ["car", "person", "bicycle"]},
                    "bbox": {"type": "array", "items": {"type": "number"},
                             "minItems": 4, "maxItems": 4},
                    "attributes": {"type": "object"},
                },
                "additionalProperties": False,
            },
        },
        "fields": {
            "type": "object",
            "required": ["caption", "weather"],
            "properties": {
                "caption": {"type": "string", "minLength": 1},
                "weather": {"enum": ["sunny", "cloudy", "rainy"]},
                "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            },
        },
    },
}


class Project:
    """A temp QA project: `.write(name, records)` makes an export, `.config` loads it."""

    def __init__(self, root: Path):
        self.root = root

    @property
    def config(self):
        from metrics.config import load_config

        return load_config(self.root)

    def write(self, name: str, records: list) -> Path:
        """Write records (dicts become JSON lines; str/bytes are written as-is)."""
        path = self.root / "exports" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            for rec in records:
                if isinstance(rec, dict):
                    fh.write(json.dumps(rec).encode() + b"\n")
                elif isinstance(rec, str):
                    fh.write(rec.encode() + b"\n")
                else:
                    fh.write(rec + b"\n")
        return path

    def ingest(self, *paths: Path, **kwargs):
        from metrics.workspace import ingest

        return ingest(self.config, paths, progress=False, **kwargs)

    def connect(self):
        from metrics.store import connect

        return connect(self.config.database, read_only=True)


def record(item="img-1", annotator="ann-1", when="2026-01-06T10:00:00Z", boxes=None,
           caption="A car parked on a street.", weather="sunny", tags=None, **extra) -> dict:
    """A valid native record; keyword overrides for every part."""
    rec = {
        "item_id": item, "annotator_id": annotator, "submitted_at": when,
        "image": {"uri": f"images/{item}.png", "width": 100, "height": 100},
        "boxes": [{"label": "car", "bbox": [10, 10, 30, 20]}] if boxes is None else boxes,
        "fields": {"caption": caption, "weather": weather,
                   **({"tags": tags} if tags is not None else {})},
    }
    if caption is None:
        del rec["fields"]["caption"]
    if weather is None:
        del rec["fields"]["weather"]
    rec.update(extra)
    return rec


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "labelqa.toml").write_text(CONFIG, encoding="utf-8")
    (root / "contract.schema.json").write_text(json.dumps(CONTRACT), encoding="utf-8")
    (root / "images").mkdir()
    return Project(root)


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory) -> Path:
    """The demo project, built once per test session; returns its folder."""
    from metrics.workspace import build_demo

    folder = tmp_path_factory.mktemp("demo")
    config, _ = build_demo(folder)
    return config.root


@pytest.fixture
def demo(monkeypatch, demo_project):
    """The demo project as the dashboard's project (LABELQA_PROJECT); its config."""
    from metrics.config import load_config

    monkeypatch.setenv("LABELQA_PROJECT", str(demo_project))
    return load_config(demo_project)


@pytest.fixture
def empty(monkeypatch, empty_project):
    """An empty project as the dashboard's project; its config."""
    from metrics.config import load_config

    monkeypatch.setenv("LABELQA_PROJECT", str(empty_project))
    return load_config(empty_project)


def query(config, fn, *args, **kwargs):
    """`fn(con, config, ...)` on a read-only connection, as the pages call metrics."""
    from metrics import store

    with store.open_db(config.database, read_only=True) as con:
        return fn(con, config, *args, **kwargs)


@pytest.fixture
def empty_project(tmp_path: Path) -> Path:
    """A valid project with no database yet; returns its folder."""
    from metrics.starter import write_starter

    write_starter(tmp_path / "empty")
    return tmp_path / "empty"


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking"]


def require_browser() -> None:
    """Skip a browser test when Playwright or Debian's chromium is missing; fail instead
    where `LABELQA_REQUIRE_BROWSER` is set (CI), so they never skip there."""
    import os

    try:
        import playwright  # noqa: F401
        missing = None if Path(CHROMIUM).exists() else (
            f"{CHROMIUM} not found (apt-get install chromium)")
    except ImportError:
        missing = "the Python playwright package is not installed"
    if missing:
        if os.environ.get("LABELQA_REQUIRE_BROWSER"):
            pytest.fail(f"browser tests are required here but {missing}")
        pytest.skip(f"browser tests skipped: {missing}")


def run_page(path: Path | str, **params: str):
    """Run one dashboard page under Streamlit's AppTest with these URL parameters."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(path), default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def no_exception(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def page_texts(at) -> str:
    """Every text element of a page run, joined: what a reader sees, minus tables."""
    parts = [m.value for m in at.markdown] + [m.value for m in at.caption]
    parts += [m.value for m in at.info] + [m.value for m in at.warning]
    parts += [m.value for m in at.error] + [m.value for m in at.success]
    return "\n".join(parts)
