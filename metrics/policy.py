"""Text policy: rules read from ``[[policy]]`` tables, and the one function that checks them.

A :class:`Rule` is a small frozen definition; :func:`check_fields` evaluates a tuple of
rules against one annotation's ``fields`` and returns :class:`Violation` records.

All patterns are RE2 (``google-re2``): matching is linear in the text, so no rule can
hang ingest, and Python-``re``-only syntax (look-around, backreferences) is rejected.

*Word-bounded* means not preceded or followed by a Unicode letter, digit or underscore
(RE2's ``\\b`` is ASCII-only, so the boundary is spelled out as a character class).
Offsets are code points into the checked string, end exclusive, so that
``text[start:end] == excerpt`` always holds.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import re2

__all__ = [
    "DEFAULT_HEDGES",
    "RULE_TYPES",
    "SEVERITIES",
    "PolicyError",
    "Rule",
    "Violation",
    "check_fields",
    "compile_rules",
    "label_mentions",
]

RULE_TYPES = (
    "banned",
    "length",
    "pattern",
    "invented_objects",
    "unmentioned_objects",
    "hedging",
)
SEVERITIES = ("error", "warning")
DEFAULT_HEDGES = (
    "maybe",
    "probably",
    "possibly",
    "perhaps",
    "might be",
    "appears to",
    "seems",
    "seem to",
    "looks like",
    "I think",
    "likely",
)

_COMMON_KEYS = ("id", "type", "fields", "severity")
_TYPE_KEYS = {
    "banned": ("patterns",),
    "length": ("min_words", "max_words"),
    "pattern": ("pattern",),
    "invented_objects": (),
    "unmentioned_objects": (),
    "hedging": ("words",),
}
_REQUIRED_TYPE_KEYS = {"banned": ("patterns",), "pattern": ("pattern",)}
_CROSS_MODAL = ("invented_objects", "unmentioned_objects")

_NOT_WORD = r"[^\p{L}\p{N}_]"
_BOUND_L = rf"(?:^|{_NOT_WORD})"
_BOUND_R = rf"(?:$|{_NOT_WORD})"
_BOUNDED_OPEN = _BOUND_L + "("
_BOUNDED_CLOSE = ")" + _BOUND_R
# What str.split() splits on, as near as RE2 classes allow: \s is ASCII-only in RE2.
_SPACE = r"[\s\x{0B}\x{1C}-\x{1F}\x{85}\p{Z}]+"


class PolicyError(Exception):
    """A ``[[policy]]`` table (or the ``[labels]`` it relies on) is invalid.

    Attributes
    ----------
    key : str
        Where the problem is, e.g. ``policy[2].patterns[0]`` (tables counted from 0).
    problem : str
        What is wrong with it.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Rule:
    """One text rule: a definition, evaluated by :func:`check_fields`.

    Parameters
    ----------
    id : str
        Unique rule id, stored with each violation.
    type : str
        One of :data:`RULE_TYPES`.
    fields : tuple of str
        Names of the annotation fields (under ``fields``) the rule checks.
    severity : {"error", "warning"}
        Only ``error`` violations count towards the M2 rate.
    patterns : tuple of str
        ``banned``: RE2 patterns, matched case-insensitively and word-bounded.
    pattern : str or None
        ``pattern``: an RE2 pattern the text must contain a match of (search, case
        sensitive; anchor with ``^...$`` for a whole-text match).
    min_words, max_words : int or None
        ``length``: bounds on the number of whitespace-separated words (either may be None).
    words : tuple of str
        ``hedging``: literal words or phrases, case-insensitive and word-bounded;
        :data:`DEFAULT_HEDGES` when empty.

    Notes
    -----
    The compiled RE2 program is kept in ``regex`` (not compared, not shown).
    Constructing a Rule directly validates and compiles it like :func:`compile_rules`.
    """

    id: str
    type: str
    fields: tuple[str, ...]
    severity: str = "error"
    patterns: tuple[str, ...] = ()
    pattern: str | None = None
    min_words: int | None = None
    max_words: int | None = None
    words: tuple[str, ...] = ()
    regex: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("fields", "patterns", "words"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if self.type == "hedging" and not self.words:
            object.__setattr__(self, "words", DEFAULT_HEDGES)
        if self.regex is None:
            object.__setattr__(self, "regex", _check_and_compile(self, f"rule {self.id!r}"))


@dataclass(frozen=True)
class Violation:
    """One place where a text breaks a rule.

    Attributes
    ----------
    rule : str
        The rule id.
    field : str
        The field name.
    severity : {"error", "warning"}
    excerpt : str
        The text that broke the rule; always ``text[start:end]``.
    start, end : int
        Code-point offsets into the checked string, end exclusive. For an element of a
        list-valued field they are relative to that element (see ``element``).
    label : str or None
        ``invented_objects``: the label the text named; ``unmentioned_objects``: the boxed
        label the text never names. None for the other rule types.
    element : int or None
        For a list-valued field, the index of the checked element; None for a string field
        (and for ``unmentioned_objects``, which judges the field's elements together).
    """

    rule: str
    field: str
    severity: str
    excerpt: str
    start: int
    end: int
    label: str | None = None
    element: int | None = None


# --------------------------------------------------------------------------- compiling


def compile_rules(
    raw: Sequence[Mapping[str, Any]], *, labels: Mapping[str, Sequence[str]]
) -> tuple[Rule, ...]:
    """Validate ``[[policy]]`` tables (as parsed from TOML) and compile them to rules.

    Parameters
    ----------
    raw : list of dict
        The ``[[policy]]`` tables, in file order.
    labels : dict of str to list of str
        The ``[labels]`` table: each label with the words text may use to name it.

    Returns
    -------
    tuple of Rule

    Raises
    ------
    PolicyError
        On the first problem, naming its key (``policy[i]`` counts from 0): an unknown
        key, a wrong type, a missing required key, an unknown type or severity, a
        duplicate id, ``min_words > max_words``, or a pattern RE2 cannot compile.
    """
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        raise PolicyError("policy", "expected a list of [[policy]] tables")
    _check_labels(labels)
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for i, table in enumerate(raw):
        key = f"policy[{i}]"
        rule = _rule_from_table(table, key, has_labels=bool(labels))
        if rule.id in seen:
            raise PolicyError(f"{key}.id", f"duplicate id {rule.id!r} (also {seen[rule.id]})")
        seen[rule.id] = key
        rules.append(rule)
    if any(rule.type in _CROSS_MODAL for rule in rules):
        _label_matcher(labels)  # compile now, so a bad label word fails at config time
    return tuple(rules)


def _rule_from_table(table: Any, key: str, *, has_labels: bool) -> Rule:
    if not isinstance(table, Mapping):
        raise PolicyError(key, f"expected a table, got {_type_name(table)}")
    for name in ("id", "type", "fields"):
        if name not in table:
            raise PolicyError(f"{key}.{name}", "missing required key")
    rule_id = table["id"]
    if not isinstance(rule_id, str) or not rule_id.strip():
        raise PolicyError(f"{key}.id", f"expected a non-empty string, got {rule_id!r}")
    rule_type = table["type"]
    if not isinstance(rule_type, str):
        raise PolicyError(f"{key}.type", f"expected a string, got {_type_name(rule_type)}")
    if rule_type not in RULE_TYPES:
        raise PolicyError(
            f"{key}.type", f"unknown type {rule_type!r} (use {', '.join(RULE_TYPES)})"
        )
    allowed = _COMMON_KEYS + _TYPE_KEYS[rule_type]
    for name in table:
        if name not in allowed:
            raise PolicyError(
                f"{key}.{name}",
                f"unknown key for a {rule_type!r} rule (allowed: {', '.join(allowed)})",
            )
    for name in _REQUIRED_TYPE_KEYS.get(rule_type, ()):
        if name not in table:
            raise PolicyError(f"{key}.{name}", f"missing required key for a {rule_type!r} rule")
    if rule_type == "length" and "min_words" not in table and "max_words" not in table:
        raise PolicyError(f"{key}.min_words", "a 'length' rule needs min_words, max_words or both")
    if rule_type in _CROSS_MODAL and not has_labels:
        raise PolicyError(
            f"{key}.type", f"a {rule_type!r} rule needs a [labels] table with words per label"
        )

    fields = _string_list(table["fields"], f"{key}.fields")
    severity = table.get("severity", "error")
    if not isinstance(severity, str):
        raise PolicyError(f"{key}.severity", f"expected a string, got {_type_name(severity)}")
    patterns = _string_list(table["patterns"], f"{key}.patterns") if "patterns" in table else ()
    pattern = table.get("pattern")
    if pattern is not None and not isinstance(pattern, str):
        raise PolicyError(f"{key}.pattern", f"expected a string, got {_type_name(pattern)}")
    bounds = {}
    for name in ("min_words", "max_words"):
        value = table.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise PolicyError(f"{key}.{name}", f"expected an integer, got {_type_name(value)}")
        bounds[name] = value
    words = _string_list(table["words"], f"{key}.words") if "words" in table else ()
    if rule_type == "hedging" and not words:
        words = DEFAULT_HEDGES

    proto = SimpleNamespace(
        id=rule_id, type=rule_type, fields=fields, severity=severity, patterns=patterns,
        pattern=pattern, words=words, **bounds,
    )
    regex = _check_and_compile(proto, key)
    return Rule(
        id=rule_id, type=rule_type, fields=fields, severity=severity, patterns=patterns,
        pattern=pattern, words=words, regex=regex, **bounds,
    )


def _check_and_compile(rule: Any, key: str) -> Any:
    """Check a rule's values and return its compiled RE2 program (False when it has none)."""
    if rule.type not in RULE_TYPES:
        raise PolicyError(
            f"{key}.type", f"unknown type {rule.type!r} (use {', '.join(RULE_TYPES)})"
        )
    if rule.severity not in SEVERITIES:
        raise PolicyError(
            f"{key}.severity", f"unknown severity {rule.severity!r} (use error or warning)"
        )
    if not rule.fields:
        raise PolicyError(f"{key}.fields", "expected at least one field name")
    for name in ("min_words", "max_words"):
        value = getattr(rule, name)
        if value is not None and value < 0:
            raise PolicyError(f"{key}.{name}", f"must be >= 0, got {value}")
    if (
        rule.min_words is not None
        and rule.max_words is not None
        and rule.min_words > rule.max_words
    ):
        raise PolicyError(
            f"{key}.min_words",
            f"min_words ({rule.min_words}) is greater than max_words ({rule.max_words})",
        )
    if rule.type == "banned":
        if not rule.patterns:
            raise PolicyError(f"{key}.patterns", "expected at least one pattern")
        for j, pat in enumerate(rule.patterns):
            where = f"{key}.patterns[{j}]"
            if _compile(pat, where, _options()).fullmatch(""):
                raise PolicyError(where, f"pattern {pat!r} matches the empty string")
            try:
                re2.compile(f"(?:{pat})", _options())
            except re2.error:
                raise PolicyError(
                    where, f"invalid RE2 pattern {pat!r}: \\Q without a closing \\E"
                ) from None
        inner = "|".join(f"(?:{pat})" for pat in rule.patterns)
        return _compile(
            _BOUNDED_OPEN + inner + _BOUNDED_CLOSE, f"{key}.patterns",
            _options(case_sensitive=False), embedded=True,
        )
    if rule.type == "pattern":
        if rule.pattern is None:
            raise PolicyError(f"{key}.pattern", "missing required key for a 'pattern' rule")
        return _compile(rule.pattern, f"{key}.pattern", _options())
    if rule.type == "hedging":
        return _compile(
            _BOUNDED_OPEN + _literal_alternation(rule.words, f"{key}.words") + _BOUNDED_CLOSE,
            f"{key}.words", _options(case_sensitive=False, longest_match=True),
        )
    if rule.type == "length" and rule.min_words is None and rule.max_words is None:
        raise PolicyError(f"{key}.min_words", "a 'length' rule needs min_words, max_words or both")
    return False


def _options(*, case_sensitive: bool = True, longest_match: bool = False) -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = case_sensitive
    options.longest_match = longest_match
    return options


def _compile(pattern: str, key: str, options: re2.Options, *, embedded: bool = False) -> Any:
    if not embedded and _has_any_byte(pattern):
        # \C can end a match inside a UTF-8 sequence; offsets would no longer be code points
        raise PolicyError(key, f"invalid RE2 pattern {pattern!r}: \\C (any byte) is not allowed")
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        message = exc.args[0] if exc.args else str(exc)
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        if embedded:
            raise PolicyError(
                key, f"cannot combine the patterns ({message}); close each \\Q with \\E"
            ) from None
        message = message.removesuffix(f": {pattern}")
        raise PolicyError(key, f"invalid RE2 pattern {pattern!r}: {message}") from None


def _has_any_byte(pattern: str) -> bool:
    """Whether an RE2 pattern uses ``\\C`` outside ``\\Q...\\E`` quoting."""
    i, n = 0, len(pattern)
    while i < n - 1:
        if pattern[i] == "\\":
            nxt = pattern[i + 1]
            if nxt == "C":
                return True
            if nxt == "Q":
                end = pattern.find("\\E", i + 2)
                if end < 0:
                    return False
                i = end + 2
                continue
            i += 2
            continue
        i += 1
    return False


def _literal_alternation(words: Iterable[str], key: str) -> str:
    """An RE2 alternation of literal words/phrases; inner spaces match any whitespace run."""
    alternatives = []
    for j, word in enumerate(words):
        tokens = word.split() if isinstance(word, str) else None
        if not tokens:
            raise PolicyError(f"{key}[{j}]", f"expected a non-empty word, got {word!r}")
        alternatives.append(_SPACE.join(re2.escape(tok) for tok in tokens))
    if not alternatives:
        raise PolicyError(key, "expected at least one word")
    return "|".join(alternatives)


def _string_list(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise PolicyError(key, f"expected a list of strings, got {_type_name(value)}")
    if not value:
        raise PolicyError(key, "expected a non-empty list")
    seen = set()
    for j, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise PolicyError(f"{key}[{j}]", f"expected a non-empty string, got {item!r}")
        if item in seen:
            raise PolicyError(f"{key}[{j}]", f"duplicate entry {item!r}")
        seen.add(item)
    return tuple(value)


def _check_labels(labels: Any) -> None:
    if not isinstance(labels, Mapping):
        raise PolicyError("labels", f"expected a table, got {_type_name(labels)}")
    for label, words in labels.items():
        if not isinstance(words, list | tuple):
            raise PolicyError(
                f"labels.{label}", f"expected a list of words, got {_type_name(words)}"
            )
        for j, word in enumerate(words):
            if not isinstance(word, str) or not word.strip():
                raise PolicyError(
                    f"labels.{label}[{j}]", f"expected a non-empty string, got {word!r}"
                )


def _type_name(value: Any) -> str:
    return {
        bool: "a boolean", int: "an integer", float: "a number", str: "a string",
        list: "a list", tuple: "a list", dict: "a table",
    }.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- matching


class _Text:
    """A string encoded once to UTF-8 for RE2, with byte -> code-point offsets."""

    __slots__ = ("text", "data", "_ascii", "_last_byte", "_last_cp")

    def __init__(self, text: str, data: bytes | None = None) -> None:
        self.text = text
        self._ascii = text.isascii()
        # A lone surrogate (legal in JSON "\ud800") cannot be UTF-8; "?" keeps one code
        # point per code point, so offsets still index the original string.
        self.data = text.encode("utf-8", "replace") if data is None else data
        self._last_byte = 0
        self._last_cp = 0

    def cp(self, offset: int) -> int:
        """Code-point offset of a byte offset that falls on a character boundary."""
        if self._ascii:
            return offset
        if offset < self._last_byte:
            self._last_byte = self._last_cp = 0
        cp = self._last_cp + len(self.data[self._last_byte:offset].decode("utf-8"))
        self._last_byte, self._last_cp = offset, cp
        return cp


def _span_search(regex: Any) -> Callable[[bytes, int], Sequence[tuple[int, int]] | None]:
    """A search returning the byte spans of every group of the first match, or None.

    Calls google-re2's pybind object directly when it is there: the public wrapper builds
    a generator and a match object per call, which doubles the cost of a short caption.
    """
    low = getattr(regex, "_regexp", None)
    if _UNANCHORED is not None and callable(getattr(low, "Match", None)):
        match = low.Match

        def search(data: bytes, pos: int) -> Sequence[tuple[int, int]] | None:
            spans = match(_UNANCHORED, data, pos, len(data))
            return None if spans[0][0] < 0 else spans

        return search

    groups = range(regex.groups + 1)

    def search_public(data: bytes, pos: int) -> Sequence[tuple[int, int]] | None:
        m = regex.search(data, pos)
        return None if m is None else [m.span(g) for g in groups]

    return search_public


_UNANCHORED = getattr(getattr(getattr(getattr(re2, "_re2", None), "RE2", None), "Anchor", None),
                      "UNANCHORED", None)


def _bounded_spans(regex: Any, t: _Text) -> Iterator[Sequence[tuple[int, int]]]:
    """Group spans (bytes) of all non-overlapping matches of a word-bounded pattern.

    The pattern consumes one boundary character on each side of group 1, so the next
    search starts at the end of group 1 (or at its last character when that is not a word
    character), letting "nike nike" give two matches. Empty group-1 matches are skipped.
    """
    search = _span_search(regex)
    data = t.data
    n = len(data)
    pos = 0
    while True:
        spans = search(data, pos)
        if spans is None:
            return
        start, end = spans[1]
        if start == end:
            if end > pos:
                pos = end
            elif pos >= n:
                return
            else:
                pos = _next_char(data, pos)
            continue
        yield spans
        last = end - 1
        while data[last] & 0xC0 == 0x80:
            last -= 1
        pos = last if last > 0 and not _is_word_char(data[last:end].decode("utf-8")) else end


def _next_char(data: bytes, pos: int) -> int:
    pos += 1
    while pos < len(data) and data[pos] & 0xC0 == 0x80:
        pos += 1
    return pos


def _is_word_char(ch: str) -> bool:
    return ch == "_" or unicodedata.category(ch)[0] in "LN"


def _norm(words: str) -> str:
    """How a label word, or the text that matched it, is keyed: whitespace-collapsed and
    casefolded. Every character RE2 matches case-insensitively with a word's character
    has the same casefold (tests/test_policy.py checks this over all code points), so the
    text a word matched keys to that word."""
    return " ".join(words.split()).casefold()


_WORD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


class _LabelMatcher:
    """All ``[labels]`` words in one RE2 program; the labels a match names are looked up by
    the matched words.

    ``regex`` is the reference form, one capture group per set of labels (``group_labels``),
    used only as a fallback. The searches use one of two programs without those groups,
    so that RE2 need not run its submatch engine over every group:

    - ``zero`` (when every word is ASCII letters, digits, underscores and spaces): no
      capture group at all, which RE2 answers with its DFAs alone. The matched words are
      the match minus its boundary characters: a word starts and ends with a word
      character, and a boundary character is never one.
    - ``one`` otherwise: group 1 only, the words between the boundaries.

    Either way the matched words key ``owners`` (by :func:`_norm`; ``raw_owners`` by the
    exact UTF-8 of a normalized word, which skips the normalizing for most matches).

    ``unshadowable``: no match of one set's word can overlap a match of another set's (no
    word's tokens are inside another's, no proper suffix of one is a proper prefix of
    another, across sets; only for the ASCII words of ``zero``, which match whole runs of
    word characters). Then every set of labels whose words match somewhere is named,
    which lets :func:`check_fields` learn the named labels from an ``re2.Set`` screen.
    """

    __slots__ = ("regex", "group_labels", "group_alts", "known", "owners", "raw_owners",
                 "one", "zero", "unshadowable", "naming")

    def __init__(self, labels: Mapping[str, Sequence[str]]) -> None:
        by_word: dict[str, list[str]] = {}
        pattern_of: dict[str, str] = {}
        for label, words in labels.items():
            for word in words:
                if not isinstance(word, str) or not word.split():
                    continue
                norm = _norm(word)
                pattern_of.setdefault(norm, _literal_alternation([word], f"labels.{label}"))
                owners = by_word.setdefault(norm, [])
                if label not in owners:
                    owners.append(label)
        groups: dict[tuple[str, ...], list[str]] = {}
        for norm, owners in by_word.items():
            groups.setdefault(tuple(owners), []).append(pattern_of[norm])
        self.known = frozenset(label for owners in groups for label in owners)
        self.group_labels = tuple(groups)
        self.group_alts = tuple("|".join(pats) for pats in groups.values())
        self.owners = {norm: tuple(owners) for norm, owners in by_word.items()}
        self.raw_owners = {norm.encode("utf-8", "replace"): owners
                           for norm, owners in self.owners.items()}
        self.one = self.zero = None
        self.unshadowable = False
        self.naming: Any = None   # `labels_named`'s screen, built on first use (False: none)
        if not groups:
            self.regex = None
            return
        options = _options(case_sensitive=False, longest_match=True)
        inner = "|".join(f"({alt})" for alt in self.group_alts)
        # longest_match: "traffic light" wins over a label whose word is "traffic"
        self.regex = _compile(_BOUNDED_OPEN + inner + _BOUNDED_CLOSE, "labels", options,
                              embedded=True)
        flat = "|".join(self.group_alts)
        if all(_is_ascii_word(tok) for norm in by_word for tok in norm.split(" ")):
            self.zero = _compile(f"{_BOUND_L}(?:{flat}){_BOUND_R}", "labels", options,
                                 embedded=True)
            self.unshadowable = _no_overlap(self.owners)
        else:
            self.one = _compile(_BOUNDED_OPEN + flat + _BOUNDED_CLOSE, "labels", options,
                                embedded=True)

    def find(self, t: _Text) -> list[tuple[int, int, tuple[str, ...]]]:
        """Mentions in text order: (start, end) in code points and the labels named."""
        if self.regex is None:
            return []
        if self.zero is not None and _UNANCHORED is not None:
            found = self._find_zero(t)
        elif self.one is not None:
            found = self._find_one(t)
        else:
            found = None
        return self.find_reference(t) if found is None else found

    def _find_zero(self, t: _Text) -> list[tuple[int, int, tuple[str, ...]]] | None:
        """``find`` with the ``zero`` program; None when a match touches an end of the text
        at a non-ASCII character (is it a boundary?) or its words key no label."""
        match = self.zero._regexp.Match
        raw, owners_of = self.raw_owners, self.owners
        data = t.data
        ascii_text = t._ascii
        n = len(data)
        pos = 0
        found = []
        while True:
            ((start, end),) = match(_UNANCHORED, data, pos, n)
            if start < 0:
                return found
            # the boundary before: one non-word character, or none at the start of the text
            b = data[start]
            if start:
                start += 1 if b < 0x80 else 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            elif b >= 0x80:
                return None
            elif b not in _WORD_BYTES:
                start = 1
            # the boundary after: likewise
            if end < n:
                end -= 1
                while data[end] & 0xC0 == 0x80:
                    end -= 1
            else:
                b = data[end - 1]
                if b >= 0x80:
                    return None
                if b not in _WORD_BYTES:
                    end -= 1
            words = data[start:end]
            owners = raw.get(words)
            if owners is None:
                owners = owners_of.get(_norm(words.decode("utf-8")))
                if owners is None:
                    return None
            found.append((start, end, owners) if ascii_text
                         else (t.cp(start), t.cp(end), owners))
            pos = end  # the words end in a word character: see _bounded_spans

    def _find_one(self, t: _Text) -> list[tuple[int, int, tuple[str, ...]]] | None:
        """``find`` with the ``one`` program; None when the words of a match key no label."""
        raw, owners_of = self.raw_owners, self.owners
        data = t.data
        found = []
        for spans in _bounded_spans(self.one, t):
            start, end = spans[1]
            words = data[start:end]
            owners = raw.get(words)
            if owners is None:
                owners = owners_of.get(_norm(words.decode("utf-8")))
                if owners is None:
                    return None
            found.append((t.cp(start), t.cp(end), owners))
        return found

    def find_reference(self, t: _Text) -> list[tuple[int, int, tuple[str, ...]]]:
        """``find`` with the capture group of each set of labels (slow: the reference)."""
        if self.regex is None:
            return []
        found = []
        for spans in _bounded_spans(self.regex, t):
            for g, owners in enumerate(self.group_labels, start=2):
                if spans[g][0] >= 0:
                    found.append((t.cp(spans[1][0]), t.cp(spans[1][1]), owners))
                    break
        return found


def _is_ascii_word(token: str) -> bool:
    return token.isascii() and all(ch.isalnum() or ch == "_" for ch in token)


def _no_overlap(owners: Mapping[str, tuple[str, ...]]) -> bool:
    """Whether no two words of different sets of labels can match overlapping text.

    For words of ASCII word tokens (so each token matches one whole run of word
    characters, and two tokens match the same run only when equal up to case): two matches
    overlap only when the tokens of one are a contiguous part of the other's, or a proper
    suffix of one is a proper prefix of the other.
    """
    inside: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    prefixes: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    suffixes: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    for norm, group in owners.items():
        tokens = tuple(norm.split(" "))
        k = len(tokens)
        for i in range(k):
            for j in range(i + 1, k + 1):
                inside.setdefault(tokens[i:j], set()).add(group)
        for i in range(1, k):
            prefixes.setdefault(tokens[:i], set()).add(group)
            suffixes.setdefault(tokens[i:], set()).add(group)
    for norm, group in owners.items():
        if inside[tuple(norm.split(" "))] != {group}:
            return False
    for part, groups in suffixes.items():
        if len(groups | prefixes.get(part, groups)) > 1:
            return False
    return True


_MATCHERS: dict[int, tuple[Any, _LabelMatcher]] = {}
_MATCHERS_BY_CONTENT: dict[tuple, _LabelMatcher] = {}


def _label_matcher(labels: Mapping[str, Sequence[str]]) -> _LabelMatcher:
    # Keyed by identity first: the config's labels mapping is built once and never mutated,
    # so a hit costs one dict lookup per annotation. The entry keeps the object alive, so
    # its id cannot be reused by another mapping.
    hit = _MATCHERS.get(id(labels))
    if hit is not None and hit[0] is labels:
        return hit[1]
    content = tuple((label, tuple(words)) for label, words in labels.items())
    matcher = _MATCHERS_BY_CONTENT.get(content)
    if matcher is None:
        if len(_MATCHERS_BY_CONTENT) >= 64:
            _MATCHERS_BY_CONTENT.clear()
        matcher = _MATCHERS_BY_CONTENT[content] = _LabelMatcher(labels)
    if len(_MATCHERS) >= 64:
        _MATCHERS.clear()
    _MATCHERS[id(labels)] = (labels, matcher)
    return matcher


def label_mentions(
    text: str, labels: Mapping[str, Sequence[str]]
) -> dict[str, list[tuple[int, int]]]:
    """Which labels a text names, and where.

    A label is named by any of its ``[labels]`` words: whole words or phrases,
    case-insensitive, word-bounded; spaces inside a phrase match any run of whitespace.
    Plurals count only when listed. Where words overlap, the longest wins ("traffic light"
    over "traffic"); a word listed under several labels names all of them.

    Parameters
    ----------
    text : str
    labels : dict of str to list of str
        Treated as immutable: its compiled form is cached by identity.

    Returns
    -------
    dict of str to list of (int, int)
        For each label named at least once, in order of first mention, its code-point
        spans ``(start, end)``, end exclusive.
    """
    out: dict[str, list[tuple[int, int]]] = {}
    for start, end, owners in _label_matcher(labels).find(_Text(text)):
        for label in owners:
            out.setdefault(label, []).append((start, end))
    return out


def labels_named(text: str, labels: Mapping[str, Sequence[str]]) -> frozenset[str]:
    """The labels a text names: the keys of :func:`label_mentions`, without the spans.

    When no label's words can shadow another's (``_LabelMatcher.unshadowable``), one
    ``re2.Set`` pass over the text tells which sets of labels have a word in it, and those
    are the labels named, as :func:`check_fields` reads them for
    ``unmentioned_objects``; otherwise (or when RE2's DFA runs out of memory) the
    mentions are searched.
    """
    matcher = _label_matcher(labels)
    if matcher.regex is None:
        return frozenset()
    screen = matcher.naming
    if screen is None:
        screen = False
        if matcher.unshadowable:
            try:
                screen = _Screen((), matcher)
            except re2.error:
                pass
            if screen and not screen.named:
                screen = False
        matcher.naming = screen
    data = text.encode("utf-8", "replace")
    if screen:
        hits = screen.match(data)
        if hits and 0 in hits:
            return (screen.verdicts.get(tuple(hits)) or screen.learn(hits)).named
    return frozenset(label for _s, _e, owners in matcher.find(_Text(text, data))
                     for label in owners)


# --------------------------------------------------------------------------- checking

# What check_fields does with a rule on one text: count the words; run the exact search
# of a banned or hedging rule; search a pattern rule's program; report a pattern rule the
# screen found no match of; look for invented objects.
_LENGTH, _WORDS, _SEARCH, _FAILED, _INVENTED = range(5)
# Options a screen's re2.Set shares with every program in it (case is set inline).
_SCREEN_OPTIONS = ("encoding", "posix_syntax", "literal", "never_nl", "dot_nl",
                   "perl_classes", "word_boundary", "one_line")


class _Verdict:
    """What a screen's answer for a text leaves to do: (rule, action) in rule order
    (``todo``); of the sets of labels with a word matching somewhere (None when the labels
    are not screened), the labels named alone (``named_alone``) and the sets of several
    labels (``shared``); all the labels they name (``named``)."""

    __slots__ = ("todo", "shared", "named_alone", "named")

    def __init__(self, todo: tuple[tuple[Rule, int], ...],
                 groups: tuple[tuple[str, ...], ...] | None) -> None:
        self.todo = todo
        self.shared = None if groups is None else tuple(g for g in groups if len(g) > 1)
        self.named_alone = frozenset(g[0] for g in groups or () if len(g) == 1)
        self.named = frozenset(label for owners in groups or () for label in owners)


class _Screen:
    """One ``re2.Set`` per field that answers, in one pass over a text, which ``banned``
    and ``hedging`` rules match somewhere, which ``pattern`` rules match, and which sets of
    labels (``_LabelMatcher.group_labels``) have a word matching somewhere.

    It only screens: a banned or hedging rule the Set does not report cannot match, so its
    exact search is skipped; mentions are searched only when a reported set of labels has
    no box (``invented_objects``) or the named labels cannot be read off the reported sets
    (``unmentioned_objects`` when the matcher is not ``unshadowable``). Program 0 is the
    empty pattern, which matches every text: an answer without it means RE2's DFA ran out
    of memory (the Set then reports nothing), and the text is checked without the screen.
    Answers (the indices, in the order found) are turned into a :class:`_Verdict` once.
    """

    __slots__ = ("match", "verdicts", "named", "_rules", "_index", "_group_owners")

    def __init__(self, field_rules: Sequence[Rule], matcher: _LabelMatcher | None) -> None:
        rset = re2.Set.SearchSet(_options())
        rset.Add("")
        self._rules = field_rules
        self._index: dict[int, int] = {}
        for rule in field_rules:
            if rule.type in ("banned", "hedging", "pattern"):
                pattern = _screen_pattern(rule.regex)
                if pattern is not None:
                    try:
                        self._index[id(rule)] = rset.Add(pattern)
                    except re2.error:
                        pass
        self._group_owners: dict[int, tuple[str, ...]] = {}
        if matcher is not None and matcher.regex is not None:
            try:
                for owners, alt in zip(matcher.group_labels, matcher.group_alts, strict=True):
                    i = rset.Add(f"(?i:{_BOUND_L}(?:{alt}){_BOUND_R})")
                    self._group_owners[i] = owners
            except re2.error:
                self._group_owners = {}
        self.named = bool(self._group_owners) and matcher.unshadowable
        rset.Compile()
        low = getattr(rset, "_set", None)
        self.match = low.Match if callable(getattr(low, "Match", None)) else rset.Match
        self.verdicts: dict[tuple[int, ...], _Verdict] = {}

    def learn(self, hits: Sequence[int]) -> _Verdict:
        """The verdict of an answer (which includes program 0)."""
        present = set(hits)
        todo = []
        for rule in self._rules:
            kind = rule.type
            index = self._index.get(id(rule), -1)
            if kind == "length":
                todo.append((rule, _LENGTH))
            elif kind == "banned" or kind == "hedging":
                if index < 0 or index in present:
                    todo.append((rule, _WORDS))
            elif kind == "pattern":
                if index < 0:
                    todo.append((rule, _SEARCH))
                elif index not in present:
                    todo.append((rule, _FAILED))
            elif kind == "invented_objects":
                todo.append((rule, _INVENTED))
        owners_at = self._group_owners
        groups = tuple(owners_at[i] for i in hits if i in owners_at) if owners_at else None
        verdict = _Verdict(tuple(todo), groups)
        if len(self.verdicts) >= 4096:
            self.verdicts.clear()
        self.verdicts[tuple(hits)] = verdict
        return verdict


def _screen_pattern(regex: Any) -> str | None:
    """A rule's program for a case-sensitive screen Set, or None when it cannot go in."""
    options = getattr(regex, "options", None)
    pattern = getattr(regex, "pattern", None)
    if options is None or not isinstance(pattern, str):
        return None
    default = _options()
    if any(getattr(options, name) != getattr(default, name) for name in _SCREEN_OPTIONS):
        return None
    return pattern if options.case_sensitive else f"(?i:{pattern})"


class _FieldPlan:
    """A field's rules: all of them in order, the ``unmentioned_objects`` ones, whether any
    needs the label words, what to do without a screen (``exact``), and ``built``: (label
    matcher, the screen built for it or None when there is nothing to screen)."""

    __slots__ = ("name", "rules", "unmentioned", "needs_labels", "exact", "built")

    def __init__(self, name: str, rules: tuple[Rule, ...]) -> None:
        self.name = name
        self.rules = rules
        self.unmentioned = tuple(r for r in rules if r.type == "unmentioned_objects")
        self.needs_labels = any(r.type in _CROSS_MODAL for r in rules)
        actions = {"length": _LENGTH, "banned": _WORDS, "hedging": _WORDS,
                   "pattern": _SEARCH, "invented_objects": _INVENTED}
        self.exact = tuple((r, actions[r.type]) for r in rules if r.type in actions)
        self.built: tuple[_LabelMatcher | None, _Screen | None] = (None, None)
        if not self.needs_labels:
            self.build(None)

    def build(self, matcher: _LabelMatcher | None
              ) -> tuple[_LabelMatcher | None, _Screen | None]:
        screen = None
        if any(r.type != "length" for r in self.rules):
            try:
                screen = _Screen(self.rules, matcher)
            except re2.error:  # e.g. too big for max_mem: check every text in full
                screen = None
        self.built = (matcher, screen)  # one assignment: a thread never sees a mixed pair
        return self.built


_PLANS: dict[int, tuple[Any, tuple[_FieldPlan, ...]]] = {}


def _plan(rules: Sequence[Rule]) -> tuple[_FieldPlan, ...]:
    """Per field name, in order of first appearance, its plan (cached by identity)."""
    hit = _PLANS.get(id(rules))
    if hit is not None and hit[0] is rules:
        return hit[1]
    by_field: dict[str, list[Rule]] = {}
    for rule in rules:
        for name in rule.fields:
            by_field.setdefault(name, []).append(rule)
    plan = tuple(_FieldPlan(name, tuple(rs)) for name, rs in by_field.items())
    if len(_PLANS) >= 64:
        _PLANS.clear()
    _PLANS[id(rules)] = (rules, plan)
    return plan


def check_fields(
    rules: Sequence[Rule],
    fields: Mapping[str, Any],
    box_labels: Iterable[str] = (),
    *,
    labels: Mapping[str, Sequence[str]],
) -> list[Violation]:
    """Check one annotation's fields against the policy rules.

    Parameters
    ----------
    rules : tuple of Rule
        As returned by :func:`compile_rules` (treated as immutable; its grouping by field
        is cached by identity).
    fields : dict
        The annotation's ``fields`` object.
    box_labels : set of str
        Labels of the annotation's boxes (for ``invented_objects``/``unmentioned_objects``).
    labels : dict of str to list of str
        The ``[labels]`` table (treated as immutable, see :func:`label_mentions`).

    Returns
    -------
    list of Violation
        By field (in rule order), element, rule, then position.

    Notes
    -----
    A rule skips a field that is absent or null. A string value is checked as is. A list
    value has each string element checked on its own: offsets are relative to that
    element, whose index is ``Violation.element``; non-string elements and values of
    other types are skipped (the contract judges types). ``unmentioned_objects`` judges a
    list field as a whole: a boxed label is mentioned when any element names it.

    Per rule type, the excerpt is: ``banned`` and ``hedging`` the matched words (one
    violation per match); ``length`` too few words: the whole text, too many: from word
    ``max_words + 1`` to the end; ``pattern`` no match: the whole text;
    ``invented_objects`` the words naming a label that has no box (one per mention,
    ``label`` = the label named; for a word of several labels, the first listed);
    ``unmentioned_objects`` one per boxed label the text never names, with the empty
    excerpt at ``(0, 0)`` and ``label`` = that label. Boxed labels that have no words in
    ``[labels]`` cannot be named and are not reported.

    Each text is first screened by one ``re2.Set`` (see ``_Screen``); the exact searches
    run only for what the screen cannot rule out.
    """
    if not rules or (type(fields) is not dict and not isinstance(fields, Mapping)) or not fields:
        return []
    out: list[Violation] = []
    boxed: frozenset[str] | None = None
    cached = _PLANS.get(id(rules))  # _plan() and _label_matcher() inlined for their hits
    for fp in cached[1] if cached is not None and cached[0] is rules else _plan(rules):
        name = fp.name
        value = fields.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            elements: list[tuple[int | None, str]] = [(None, value)]
        elif isinstance(value, list):
            elements = [(j, v) for j, v in enumerate(value) if isinstance(v, str)]
        else:
            continue
        matcher = None
        boxed_known: frozenset[str] = frozenset()
        if fp.needs_labels:
            known = _MATCHERS.get(id(labels))
            matcher = (known[1] if known is not None and known[0] is labels
                       else _label_matcher(labels))
            if boxed is None:
                boxed = frozenset(box_labels) if box_labels is not None else frozenset()
            if fp.unmentioned:
                boxed_known = boxed & matcher.known
        built = fp.built
        if built[0] is not matcher:
            built = fp.build(matcher)
        screen = built[1]
        named: set[str] = set()
        for element, text in elements:
            data = text.encode("utf-8", "replace")
            verdict = None
            if screen is not None:
                hits = screen.match(data)
                if hits and 0 in hits:
                    verdict = screen.verdicts.get(tuple(hits)) or screen.learn(hits)
            if verdict is None:
                todo, groups = fp.exact, None
            else:
                todo, groups = verdict.todo, verdict.shared
            t = None
            mentions = None
            for rule, action in todo:
                if action == _LENGTH:
                    if not _length_ok(rule, text, data):
                        _check_length(rule, name, text, element, out)
                elif action == _WORDS:
                    if t is None:
                        t = _Text(text, data)
                    for spans in _bounded_spans(rule.regex, t):
                        s, e = t.cp(spans[1][0]), t.cp(spans[1][1])
                        out.append(Violation(rule.id, name, rule.severity, text[s:e], s, e,
                                             None, element))
                elif action == _FAILED or (
                    action == _SEARCH and rule.regex.search(data) is None
                ):
                    out.append(Violation(rule.id, name, rule.severity, text, 0, len(text),
                                         None, element))
                elif action == _INVENTED:
                    if mentions is None:
                        if groups is not None and verdict.named_alone <= boxed:
                            for owners in groups:
                                if boxed.isdisjoint(owners):
                                    break
                            else:  # every set of labels the text may name has a box
                                continue
                        if t is None:
                            t = _Text(text, data)
                        mentions = matcher.find(t)
                        for _s, _e, owners in mentions:
                            named.update(owners)
                    for s, e, owners in mentions:
                        if boxed.isdisjoint(owners):
                            out.append(Violation(rule.id, name, rule.severity, text[s:e],
                                                 s, e, owners[0], element))
            if boxed_known and mentions is None:
                if verdict is not None and screen.named:
                    named.update(verdict.named)
                else:
                    for _s, _e, owners in matcher.find(t or _Text(text, data)):
                        named.update(owners)
        if boxed_known and not boxed_known <= named:
            missing = sorted(boxed_known - named)
            for rule in fp.unmentioned:
                for label in missing:
                    out.append(Violation(rule.id, name, rule.severity, "", 0, 0, label, None))
    return out


def _length_ok(rule: Rule, text: str, data: bytes) -> bool:
    """Whether a text's word count is within a length rule's bounds, without splitting
    all of it: ``split`` with ``maxsplit=k`` gives min(words, k + 1) items, and an ASCII
    text has at most one word more than it has whitespace characters."""
    low, high = rule.min_words, rule.max_words
    if low and len(text.split(None, low - 1)) < low:
        return False
    if high is None:
        return True
    if text.isascii() and len(data) - len(data.translate(None, _ASCII_SPACE)) < high:
        return True
    return len(text.split()) <= high


_ASCII_SPACE = bytes(c for c in range(128) if chr(c).isspace())


def _check_length(rule: Rule, name: str, text: str, element: int | None,
                  out: list[Violation]) -> None:
    n_words = len(text.split())
    if rule.min_words is not None and n_words < rule.min_words:
        out.append(Violation(rule.id, name, rule.severity, text, 0, len(text), None, element))
    elif rule.max_words is not None and n_words > rule.max_words:
        # split() with maxsplit keeps the rest verbatim from the start of the next word
        rest = text.split(None, rule.max_words)[-1]
        start = len(text) - len(rest)
        out.append(Violation(rule.id, name, rule.severity, rest, start, len(text), None,
                             element))
