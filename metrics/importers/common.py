"""Helpers shared by the importers: an incremental JSON scanner, names, times."""

from __future__ import annotations

import datetime as dt
import json
import math
import posixpath
import re
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from metrics.ingest import Bad, FileUnusable, Record, _dump, _json_kind

_WS = re.compile(r"[ \t\n\r]*")


class JsonError(Exception):
    """Malformed JSON at a character position of the scanned text."""

    def __init__(self, pos: int, message: str):
        self.pos = pos
        self.message = message
        super().__init__(message)


class _NotFinite(ValueError):
    pass


def _reject_constant(name: str) -> float:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


class JsonScanner:
    """Walk one JSON document a value at a time, with line numbers.

    The text is held in memory, but arrays and objects can be walked element by element
    (`items()`, `members()`), each element decoded on its own by the C decoder of the
    standard library, so only one element is ever a Python object. Strict JSON: NaN,
    Infinity and numbers overflowing a double are errors.

    `items()` and `members()` yield with `pos` at the start of the next value; a caller
    that does not consume it (`value()` or a nested walk) has it skipped.
    """

    def __init__(self, text: str, on_progress: Callable[[int], None] | None = None):
        self.text = text
        self.pos = 0
        self._decoder = json.JSONDecoder(parse_constant=_reject_constant,
                                         parse_float=_finite_float)
        self._line_pos = 0
        self._line = 1
        self._on_progress = on_progress
        self._reported = 0

    # -- positions ------------------------------------------------------------------
    def line_at(self, pos: int) -> int:
        """1-based line of a position; cheap when positions only grow."""
        if pos < self._line_pos:
            return self.text.count("\n", 0, pos) + 1
        self._line += self.text.count("\n", self._line_pos, pos)
        self._line_pos = pos
        return self._line

    def where(self, pos: int) -> str:
        line = self.text.count("\n", 0, pos) + 1
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return f"line {line}, column {column}"

    def _progress(self) -> None:
        if self._on_progress is not None and self.pos - self._reported >= 1 << 16:
            self._on_progress(self.pos - self._reported)
            self._reported = self.pos

    def finish_progress(self) -> None:
        if self._on_progress is not None and self.pos > self._reported:
            self._on_progress(self.pos - self._reported)
            self._reported = self.pos

    # -- reading --------------------------------------------------------------------
    def ws(self) -> int:
        self.pos = _WS.match(self.text, self.pos).end()
        return self.pos

    def peek(self) -> str:
        self.ws()
        return self.text[self.pos:self.pos + 1]

    def _expect(self, char: str) -> None:
        if self.peek() != char:
            found = self.text[self.pos:self.pos + 1] or "the end of the file"
            raise JsonError(self.pos, f"expected {char!r}, found {found!r}")
        self.pos += 1

    def value(self) -> Any:
        start = self.ws()
        try:
            obj, end = self._decoder.raw_decode(self.text, start)
        except json.JSONDecodeError as exc:
            raise JsonError(exc.pos, exc.msg) from None
        except _NotFinite:
            raise JsonError(start, "NaN, Infinity or a number too large for a double "
                            "is not valid JSON (RFC 8259)") from None
        except RecursionError:
            raise JsonError(start, "JSON nested too deeply") from None
        except ValueError as exc:  # an integer of more than 4,300 digits
            raise JsonError(start, f"a number too long to read: {exc}") from None
        self.pos = end
        self._progress()
        return obj

    def items(self) -> Iterator[int]:
        """Walk an array; yields the start position of each element."""
        self._expect("[")
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            start = self.ws()
            yield start
            if self.pos == start:
                self.value()
            char = self.peek()
            self.pos += 1
            if char == "]":
                return
            if char != ",":
                raise JsonError(self.pos - 1, "expected ',' or ']' in an array")

    def members(self) -> Iterator[str]:
        """Walk an object; yields each key with `pos` at the start of its value."""
        self._expect("{")
        if self.peek() == "}":
            self.pos += 1
            return
        while True:
            if self.peek() != '"':
                raise JsonError(self.pos, "expected a key in double quotes")
            key = self.value()
            self._expect(":")
            start = self.ws()
            yield key
            if self.pos == start:
                self.value()
            char = self.peek()
            self.pos += 1
            if char == "}":
                return
            if char != ",":
                raise JsonError(self.pos - 1, "expected ',' or '}' in an object")

    def end(self) -> None:
        if self.ws() != len(self.text):
            raise JsonError(self.pos, "extra data after the JSON document")
        self.finish_progress()


def load_json_text(path: Path, on_bytes: Callable[[int], None] | None) -> JsonScanner:
    """The whole file as text in a scanner (UTF-8, a BOM allowed)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FileUnusable(path, f"cannot be read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileUnusable(path, f"not UTF-8 text (invalid byte at offset {exc.start})"
                           ) from None
    del data
    return JsonScanner(text, on_bytes)


def json_unusable(path: Path, sc: JsonScanner, exc: JsonError, what: str) -> FileUnusable:
    return FileUnusable(path, f"not a valid {what} JSON file: {exc.message} at "
                        f"{sc.where(exc.pos)}")


# -- names and times ------------------------------------------------------------------

def base_name(uri: Any) -> str | None:
    """The file name at the end of a path or URL (`/data/upload/7/a.jpg` -> `a.jpg`).

    A Label Studio local-files URL (`/data/local-files/?d=dir/a.jpg`) names the file in
    its `d` query parameter.
    """
    if not isinstance(uri, str) or not uri.strip():
        return None
    parts = urlsplit(uri.strip())
    path = parts.path
    if parts.query:
        d = parse_qs(parts.query).get("d")
        if d:
            path = d[0]
    name = posixpath.basename(unquote(path).replace("\\", "/").rstrip("/"))
    return name or None


def iso_time(value: Any) -> Any:
    """An ISO 8601 string as written by the tools (`2018-09-25 11:38:28+03:00`,
    `...Z`) normalized to `YYYY-MM-DDTHH:MM:SS[.ffffff][+HH:MM]`; other values unchanged
    (the checker then quarantines the record with the reason)."""
    if not isinstance(value, str):
        return value
    try:
        return dt.datetime.fromisoformat(value.strip()).isoformat()
    except ValueError:
        return value


def is_num(value: Any) -> bool:
    """A finite JSON number (not a bool), usable as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond the range of a double
        return False


def make_record(line: int, obj: dict, original: Any) -> Record | Bad:
    """A Record, unless the tool's object cannot be stored as strict JSON
    (a lone surrogate escape, an integer beyond 64 bits, nesting past 254 levels); the
    reason then says what and where, as a JSON pointer into the tool's object."""
    for value, whose in ((original, ""), (obj, " of the converted record")):
        try:
            orjson.dumps(value)
        except (orjson.JSONEncodeError, TypeError) as exc:
            found = unstorable(value)
            if found is None:
                reason = str(exc)
            else:
                subject, pointer, predicate = found
                reason = f"{subject} at {pointer or '/'}{whose} {predicate}"
            return Bad(line, f"cannot be stored as JSON: {reason}", safe_dump(original))
    return Record(line, obj, original)


_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1     # what orjson writes
MAX_STORED_DEPTH = 254                             # orjson's nesting limit


def unstorable(value: Any, path: tuple = (), depth: int = 0
               ) -> tuple[str, str, str] | None:
    """(what, JSON pointer, why) of the first value orjson cannot write, or None."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return None
    if isinstance(value, int):
        if _INT_MIN <= value <= _INT_MAX:
            return None
        digits = str(value) if abs(value) < 10 ** 40 else f"of {len(str(abs(value)))} digits"
        return f"the integer {digits}", _pointer(path), "is beyond 64 bits"
    if isinstance(value, str):
        return _bad_text(value, path)
    if isinstance(value, (list, dict)) and depth >= MAX_STORED_DEPTH:
        return ("the value", _pointer(path[:8]) + "/…",
                f"is nested more than {MAX_STORED_DEPTH} levels deep")
    if isinstance(value, list):
        for i, item in enumerate(value):
            if (found := unstorable(item, (*path, i), depth + 1)) is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (found := _bad_text(key, (*path, key), " key")):
                return found
            if (found := unstorable(item, (*path, key), depth + 1)) is not None:
                return found
    return None


def _bad_text(text: str, path: tuple, what: str = "") -> tuple[str, str, str] | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"the string{what}", _pointer(path), "holds a lone surrogate escape "
                f"(\\u{ord(text[exc.start]):04x}), which is not text")
    return None


def _pointer(path: tuple, limit: int = 120) -> str:
    """A JSON pointer (RFC 6901), shortened to `limit` characters."""
    parts = []
    for p in path:
        part = str(p).replace("~", "~0").replace("/", "~1")
        parts.append(part if len(part) <= 40 else part[:39] + "…")
    text = "".join("/" + part for part in parts)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def not_object(line: int, what: str, value: Any) -> Bad:
    return Bad(line, f"{what} is {_json_kind(value)}, not a JSON object", safe_dump(value))


def short_json(value: Any, n: int = 60) -> str:
    """A value as JSON text for a message, cut to `n` characters."""
    try:
        text = orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        text = repr(value)
    return text if len(text) <= n else text[:n - 1] + "…"


def time_problem(value: Any) -> str | None:
    """Why a time a tool wrote is not ISO 8601 (None: it is), for `'<field>' <why>`."""
    if isinstance(value, str):
        try:
            dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return f"is not an ISO 8601 date: {short_json(value)}"
        return None
    return f"is {_json_kind(value)} {short_json(value)}, not an ISO 8601 date string"


def safe_dump(value: Any) -> str:
    try:
        return _dump(value)
    except (orjson.JSONEncodeError, TypeError, ValueError):  # ValueError: a lone surrogate
        return repr(value)[:4000]
