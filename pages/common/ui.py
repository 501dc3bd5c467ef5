"""Dashboard plumbing shared by every page: the project, cached metric calls, the
week picker and shareable URLs, and safe rendering of untrusted annotation text.

Pages call `metrics` functions only through `call()`, which runs them on a read-only
DuckDB connection (shared by the calls of one script run, closed when idle) and caches
the result keyed on the function, its arguments, the config file and the database
generation (bumped by every ingest, and read again whenever the database file changes
on disk), so a new ingest shows up on the next rerun and nothing is served stale.
"""

from __future__ import annotations

import atexit
import importlib
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

import streamlit as st

from metrics import store
from metrics.config import ConfigError, ProjectConfig, find_config, load_config

STATUS_ICON = {"green": "🟢", "amber": "🟠", "red": "🔴", None: "⚪"}
STATUS_WORD = {"green": "green", "amber": "amber", "red": "red", None: "no data"}

# Every ASCII punctuation character Markdown (and Streamlit's directives like
# :red[...]) could give meaning to. Backslash-escaping them all shows text verbatim.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~:$&\"'=^@/%;,?])")


def md_escape(text: Any) -> str:
    """Untrusted text as inert Markdown: every special character escaped, newlines kept
    as line breaks. Streamlit never renders raw HTML here (no unsafe_allow_html)."""
    s = "" if text is None else str(text)
    return _MD_SPECIAL.sub(r"\\\1", s).replace("\n", "  \n")


def highlight(text: str, spans: list[tuple[int, int]], *, color: str = "red") -> str:
    """Markdown for `text` with the code-point `spans` highlighted; all text escaped."""
    out, pos = [], 0
    for start, end in sorted(spans):
        start, end = max(start, pos), min(end, len(text))
        if end <= start:
            continue
        out.append(md_escape(text[pos:start]))
        out.append(f":{color}-background[**{md_escape(text[start:end])}**]")
        pos = end
    out.append(md_escape(text[pos:]))
    return "".join(out)


@st.cache_resource(show_spinner="Building the demo project (first start only)…")
def _demo_config_file() -> str:
    from metrics.workspace import build_demo

    config, _ = build_demo()
    return str(config.file)


def config_file() -> str:
    env = os.environ.get("LABELQA_PROJECT")
    if env:
        return str(find_config(env))
    return _demo_config_file()


@st.cache_resource(show_spinner=False)
def _load(path: str, mtime: float) -> ProjectConfig:
    return load_config(path)


def project() -> ProjectConfig:
    """The project config; a bad config stops the page with the error, not a traceback."""
    try:
        path = config_file()
        return _load(path, Path(path).stat().st_mtime)
    except ConfigError as exc:
        st.error(f"The project config cannot be used: {exc}")
        st.stop()
    raise AssertionError("unreachable")


@st.cache_data(show_spinner=False, max_entries=64)
def _generation_at(database: str, stamp: tuple) -> int:
    # Opening the database costs ~20 ms at a million annotations; keyed on the file's
    # state, the generation is read once per change instead of once per metrics call.
    with store.open_db(Path(database), read_only=True) as con:
        return store.generation(con)


def generation(config: ProjectConfig) -> int:
    """The database's generation, or -1 when there is no database yet."""
    if not config.database.exists():
        return -1
    try:
        gen = _generation_at(str(config.database), store.db_stamp(config.database))
        _derived_ready(str(config.file), config.file.stat().st_mtime, gen)
        return gen
    except store.DatabaseError as exc:
        st.error(str(exc))
        st.stop()
    raise AssertionError("unreachable")


@st.cache_resource(show_spinner="Rebuilding the agreement tables for the edited config…")
def _derived_ready(config_path: str, mtime: float, gen: int) -> bool:
    """Once per config edit and ingest: rebuild derived tables the config outdated."""
    from metrics.workspace import ensure_derived

    return ensure_derived(_load(config_path, mtime))


READER_IDLE_S = 0.5


class _Reader:
    """A read-only connection shared by the metrics calls of one script run.

    Opening the database costs ~20 ms at a million annotations, once per uncached call
    before. The connection belongs to one thread (a session's script run) and is closed
    once idle for `READER_IDLE_S`: an open reader holds DuckDB's shared file lock, so an
    ingest waits for it, never longer than that. A call that fails closes it (its
    transaction may be aborted).
    """

    _all: dict[tuple[int, str], _Reader] = {}
    _all_lock = threading.Lock()

    def __init__(self, database: Path, key: tuple[int, str]):
        self.database = database
        self.key = key
        self.lock = threading.Lock()
        self.con = None
        self.last = 0.0
        self.timer: threading.Timer | None = None

    @classmethod
    def for_thread(cls, database: Path) -> _Reader:
        key = (threading.get_ident(), str(database))
        with cls._all_lock:
            reader = cls._all.get(key)
            if reader is None:
                reader = cls._all[key] = cls(database, key)
            return reader

    def run(self, fn: Callable, config: ProjectConfig, args: tuple, kwargs: dict) -> Any:
        with self.lock:
            if self.con is None:
                self.con = store.connect(self.database, read_only=True)
            try:
                return fn(self.con, config, *args, **kwargs)
            except BaseException:
                self._close()
                raise
            finally:
                self.last = time.monotonic()
                if self.con is not None and self.timer is None:
                    self._arm(READER_IDLE_S)

    def _arm(self, delay: float) -> None:
        self.timer = threading.Timer(delay, self._expire)
        self.timer.daemon = True
        self.timer.start()

    def _expire(self) -> None:
        with self.lock:
            self.timer = None
            if self.con is None:
                return
            idle = time.monotonic() - self.last
            if idle >= READER_IDLE_S:
                self._close()
            else:
                self._arm(READER_IDLE_S - idle)

    def _close(self) -> None:
        if self.con is not None:
            try:
                self.con.close()
            finally:
                self.con = None
        with _Reader._all_lock:
            if _Reader._all.get(self.key) is self:
                del _Reader._all[self.key]


@atexit.register
def _close_readers() -> None:
    """Close what is still open when the server stops (not from a timer mid-shutdown)."""
    with _Reader._all_lock:
        readers = list(_Reader._all.values())
    for reader in readers:
        if reader.timer is not None:
            reader.timer.cancel()
        with reader.lock:
            reader._close()


@st.cache_data(show_spinner=False, max_entries=512)
def _cached(fn_path: str, config_path: str, mtime: float, gen: int, args: tuple,
            kwargs: tuple) -> Any:
    module, name = fn_path.rsplit(".", 1)
    fn = getattr(importlib.import_module(module), name)
    config = _load(config_path, mtime)
    return _Reader.for_thread(config.database).run(fn, config, args, dict(kwargs))


def call(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Run `fn(con, config, *args, **kwargs)` on a read-only connection, cached."""
    path = config_file()
    config = project()
    gen = generation(config)
    return _cached(f"{fn.__module__}.{fn.__qualname__}", path, Path(path).stat().st_mtime,
                   gen, args, tuple(sorted(kwargs.items())))


def deferred(fn: Callable, *args: Any, then: Callable | None = None,
             **kwargs: Any) -> Callable[[], Any]:
    """`fn(con, config, *args, **kwargs)` (passed through `then`) as a callable run only
    when asked: the data of a download button, which Streamlit computes on the click,
    so a page never pays for a file nobody downloads. Runs outside the script run: no
    Streamlit calls in here."""
    path = config_file()

    def run() -> Any:
        config = load_config(path)
        with store.open_db(config.database, read_only=True) as con:
            out = fn(con, config, *args, **kwargs)
        return then(out) if then is not None else out

    return run


def has_data(config: ProjectConfig) -> bool:
    return generation(config) > 0


def empty_project(config: ProjectConfig) -> None:
    """The empty state of every page: what is missing and how to get it."""
    st.info(
        f"No annotations in project **{md_escape(config.name)}** yet. Load an export "
        f"on the **Data** page, or from a terminal:\n\n"
        f"`labelqa ingest EXPORT.jsonl --project {config.root}`"
    )


def query_default(name: str, options: list, fallback: Any) -> Any:
    value = st.query_params.get(name)
    return value if value in options else fallback


def week_picker(weeks: list[str], start: str, *, label: str = "ISO week") -> str:
    """Sidebar week picker; the week lives in the URL (`?week=2026-W47`), and without
    one it opens on `start`."""
    key = "week_picker"
    options = list(reversed(weeks))
    current = st.session_state.get(key)
    if current not in options:
        current = query_default("week", options, start)
    # Assigned on every run: after a switch of page Streamlit gives a new page's widget
    # its remembered value only when the script sets it again, and a week opened from
    # the URL would otherwise fall back to the default on the next page.
    st.session_state[key] = current
    week = st.sidebar.selectbox(label, options, key=key,
                                help="Weeks are ISO weeks in the project's time zone.")
    st.query_params["week"] = week
    return week


def sync_param(name: str, value: Any) -> None:
    """Put a view setting in the URL (or drop it when empty) so the view can be shared."""
    if value in (None, "", [], ()):
        if name in st.query_params:
            del st.query_params[name]
    else:
        st.query_params[name] = str(value)


def plural(n: int, word: str, words: str | None = None) -> str:
    """ "1 annotation", "3 annotations" (`words`: an irregular plural)."""
    return f"{n:,} " + (word if n == 1 else words or word + "s")


def fmt_rate(rate: float | None, digits: int = 1) -> str:
    return "–" if rate is None else f"{rate * 100:.{digits}f}%"


def fmt_ci(ci: Any, digits: int = 1) -> str:
    if not ci or ci[0] is None:
        return "CI –"
    text = f"95% CI {ci[0] * 100:.{digits}f}–{ci[1] * 100:.{digits}f}%"
    if ci[0] == ci[1]:
        # A bootstrap whose every resample gives the same rate (say, no item disagrees):
        # the interval is exact for these items, not a sign of certainty.
        return text + " (every resample gives this rate: too little variation to bound it)"
    return text


def status_badge(status: str | None) -> str:
    return f"{STATUS_ICON.get(status, '⚪')} {STATUS_WORD.get(status, status)}"


# The sidebar's page list (Streamlit's own is off in .streamlit/config.toml: it would
# name the overview after its file, "app").
PAGES = (
    ("app.py", "Weekly overview", "📊"),
    ("pages/1_Schema_errors.py", "Schema errors", "🧾"),
    ("pages/2_Text_policy.py", "Text policy", "✍️"),
    ("pages/3_Visual_agreement.py", "Visual agreement", "🔲"),
    ("pages/4_Item_drilldown.py", "Item drill-down", "🔍"),
    ("pages/5_Trends_and_guidelines.py", "Trends and guidelines", "📈"),
    ("pages/6_Annotators.py", "Annotators", "👥"),
    ("pages/7_Data.py", "Data", "🗂️"),
)


def _nav(slot: Any, week: str | None, *, rule: bool = True) -> None:
    """The page list; each link keeps the week on view. `rule`: a line under it, above
    the page's own sidebar widgets."""
    from streamlit.errors import StreamlitPageNotFoundError

    params = {"week": week} if week else None
    with slot:
        for path, label, icon in PAGES:
            try:
                st.page_link(path, label=label, icon=icon, query_params=params)
            except StreamlitPageNotFoundError:
                # Only when a page runs as its own entry point (a test): the paths are
                # relative to app.py, which `labelqa dashboard` always runs.
                continue
        if rule:
            st.divider()


def _header(title: str, caption: str) -> tuple[ProjectConfig, Any]:
    st.set_page_config(page_title=f"labelqa · {title}", page_icon="🏷️", layout="wide")
    slot = st.sidebar.container()   # filled once the week is known
    config = project()
    st.title(title)
    st.caption(f"Project **{md_escape(config.name)}** · {caption}")
    return config, slot


def page_header(title: str, caption: str) -> ProjectConfig:
    """The top of a page without a week: title, caption and the page list (its links
    keep the week of the URL, if any)."""
    from metrics.weekly import parse_week

    config, slot = _header(title, caption)
    try:   # a week from the URL is untrusted: only a well-formed one is passed on
        week = parse_week(st.query_params.get("week", ""))
    except ValueError:
        week = None
    _nav(slot, week, rule=False)
    return config


DRILLDOWN = "Item_drilldown"


def safe_call(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """`call`, with a database locked by an ingest shown as "updating" and retried
    (up to a minute), and any other unreadable database as a message, never a
    traceback."""
    try:
        result = call(fn, *args, **kwargs)
    except store.DatabaseError as exc:
        if "lock" in str(exc).lower():
            tries = st.session_state.get("ui_retries", 0)
            if tries < 30:
                st.session_state["ui_retries"] = tries + 1
                st.info("⏳ The database is updating (an ingest is writing). "
                        "This page retries in a moment…")
                time.sleep(2)
                st.rerun()
        st.error(f"The database cannot be read: {exc}")
        st.stop()
    except RuntimeError as exc:
        st.warning(str(exc))
        st.stop()
    st.session_state["ui_retries"] = 0
    return result


def init(key: str, value: Any) -> None:
    """Set a session-state default once."""
    if key not in st.session_state:
        st.session_state[key] = value


def light(status: str | None) -> str:
    """The traffic light as a colored Markdown badge (readable without emoji fonts)."""
    color = {"green": "green", "amber": "orange", "red": "red"}.get(status, "gray")
    return f":{color}-badge[{status_badge(status)}]"


def drill_url(item_id: str, week: str | None = None) -> str:
    """Relative URL of the item drill-down, so it resolves under any base path."""
    params = {"item": item_id, **({"week": week} if week else {})}
    return f"{DRILLDOWN}?{urlencode(params)}"


def url_select(label: str, options: list, *, param: str, prefix: str, default: Any = None,
               all_label: str | None = None, container: Any = st, format_func=str,
               help: str | None = None, keep_default: bool = False) -> Any:
    """A selectbox whose value lives in the URL (`?param=value`).

    With `all_label`, a first option meaning "no filter" is added and returned as None.
    The default is left out of the URL unless `keep_default` (for a default that
    depends on the data). Session keys carry the page's `prefix`.
    """
    opts = ([all_label] if all_label else []) + list(options)
    if default is None:
        default = opts[0] if opts else None
    key = prefix + param
    if st.session_state.get(key) not in opts:
        raw = st.query_params.get(param)
        match = [o for o in opts if str(o) == raw]
        st.session_state[key] = match[0] if match else default
    value = container.selectbox(label, opts, key=key, format_func=format_func, help=help)
    sync_param(param, None if value == default and not keep_default else value)
    return None if all_label is not None and value == all_label else value


def open_weekly_page(title: str, caption: str, *, week_label: str = "ISO week",
                     ) -> tuple[ProjectConfig, list[str], str]:
    """The top of every weekly page: header, the empty state when there is no data,
    and the week picker. Returns (config, weeks with data, the picked week)."""
    from metrics.overview import available_weeks

    config, slot = _header(title, caption)
    weeks = safe_call(available_weeks) if has_data(config) else []
    if not weeks:
        _nav(slot, None, rule=False)
        empty_project(config)
        st.stop()
    from metrics.weekly import current_week, default_week

    week = week_picker(weeks, default_week(weeks, current_week(config)), label=week_label)
    _nav(slot, week)
    return config, weeks, week
