import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics import policy
from metrics.policy import (
    DEFAULT_HEDGES,
    PolicyError,
    Rule,
    Violation,
    check_fields,
    compile_rules,
    label_mentions,
    labels_named,
)

LABELS = {
    "car": ["car", "cars", "vehicle"],
    "bicycle": ["bicycle", "bicycles", "bike"],
    "traffic_light": ["traffic light", "traffic lights"],
}


def rules_of(*tables, labels=LABELS):
    return compile_rules(list(tables), labels=labels)


def banned(*patterns, fields=("caption",), **extra):
    return {"id": "banned", "type": "banned", "patterns": list(patterns),
            "fields": list(fields), **extra}


def check(rules, text, boxes=(), *, field="caption", labels=LABELS):
    return check_fields(rules, {field: text}, set(boxes), labels=labels)


def spans(violations):
    return [(v.excerpt, v.start, v.end) for v in violations]


def assert_offsets(violations, fields):
    for v in violations:
        value = fields[v.field]
        if v.element is not None:
            text = value[v.element]
        elif isinstance(value, list):  # unmentioned_objects judges a list as a whole
            assert (v.excerpt, v.start, v.end) == ("", 0, 0)
            continue
        else:
            text = value
        assert text[v.start:v.end] == v.excerpt, v
        assert 0 <= v.start <= v.end <= len(text)


# --------------------------------------------------------------------------- banned


def test_banned_word_bounded_and_case_insensitive():
    rules = rules_of(banned("nike"))
    text = "Nike nike, snike nike_x Nike! nikes NIKE"
    got = check(rules, text)
    assert spans(got) == [("Nike", 0, 4), ("nike", 5, 9), ("Nike", 24, 28), ("NIKE", 36, 40)]
    assert all(v.rule == "banned" and v.field == "caption" and v.severity == "error"
               for v in got)
    assert_offsets(got, {"caption": text})


@pytest.mark.parametrize("text, expected", [
    ("nike nike", [("nike", 0, 4), ("nike", 5, 9)]),
    ("nike-nike", [("nike", 0, 4), ("nike", 5, 9)]),
    ("nike\nnike", [("nike", 0, 4), ("nike", 5, 9)]),
    ("(nike)", [("nike", 1, 5)]),
    ("nike", [("nike", 0, 4)]),
    ("nikenike", []),
    ("énike", []),  # a non-ASCII letter bounds a word: RE2's ASCII \b would match here
    ("nikeß", []),
    ("٣nike", []),  # ARABIC-INDIC DIGIT THREE is \p{N}
    ("😀nike😀", [("nike", 1, 5)]),
    ("nike\u00a0nike", [("nike", 0, 4), ("nike", 5, 9)]),
])
def test_banned_boundaries(text, expected):
    got = check(rules_of(banned("nike")), text)
    assert spans(got) == expected
    assert_offsets(got, {"caption": text})


def test_banned_unicode_offsets_are_code_points():
    rules = rules_of(banned("café", "gro(ß|ss)es"))
    text = "Ein großes Café 😀 und noch ein CAFÉ"
    got = check(rules, text)
    assert spans(got) == [("großes", 4, 10), ("Café", 11, 15), ("CAFÉ", 31, 35)]
    assert_offsets(got, {"caption": text})


def test_banned_several_patterns_and_regex_syntax():
    rules = rules_of(banned("nike", "coca[- ]?cola"))
    text = "Coca-Cola, COCA COLA and cocacola by Nike"
    got = check(rules, text)
    assert spans(got) == [("Coca-Cola", 0, 9), ("COCA COLA", 11, 20), ("cocacola", 25, 33),
                          ("Nike", 37, 41)]


def test_banned_pattern_ending_in_punctuation_lets_the_next_match_start():
    # "c++" ends in a non-word character, which is itself the left boundary of "+1"
    rules = rules_of(banned(r"c\+\+", r"\+1"))
    text = "c+++1"
    assert spans(check(rules, text)) == [("c++", 0, 3), ("+1", 3, 5)]


def test_banned_lone_surrogate_does_not_break_offsets():
    text = "nike \ud800 nike"
    got = check(rules_of(banned("nike")), text)
    assert spans(got) == [("nike", 0, 4), ("nike", 7, 11)]


# --------------------------------------------------------------------------- length


def length_rule(**bounds):
    return rules_of({"id": "len", "type": "length", "fields": ["caption"], **bounds})


def test_length_too_few_words_reports_whole_text():
    got = check(length_rule(min_words=5), "Too short")
    assert spans(got) == [("Too short", 0, 9)]
    assert spans(check(length_rule(min_words=1), "")) == [("", 0, 0)]


def test_length_too_many_words_reports_from_first_extra_word():
    rules = length_rule(max_words=3)
    assert spans(check(rules, "one two three four five")) == [("four five", 14, 23)]
    text = "Ein großes Café 😀 jetzt"
    assert spans(check(rules, text)) == [("😀 jetzt", 16, 23)]
    assert spans(check(rules, "a  b\tc\n d e  ")) == [("d e  ", 8, 13)]
    assert spans(check(length_rule(max_words=0), "  hi")) == [("hi", 2, 4)]


def test_length_within_bounds_and_open_bounds():
    rules = length_rule(min_words=2, max_words=3)
    assert check(rules, "two words") == []
    assert check(rules, "now three words") == []
    assert check(length_rule(max_words=2), "") == []
    assert check(length_rule(min_words=2), " ".join(["w"] * 500)) == []
    # words are whitespace-separated: punctuation and emoji count as words
    assert check(length_rule(min_words=3), "a - 😀") == []


# --------------------------------------------------------------------------- pattern


def test_pattern_must_match_somewhere():
    rules = rules_of({"id": "ends-with-period", "type": "pattern", "pattern": r"\.$",
                      "fields": ["caption"]})
    assert check(rules, "A car.") == []
    assert spans(check(rules, "A café 😀")) == [("A café 😀", 0, 8)]


def test_pattern_is_a_search_and_case_sensitive():
    rules = rules_of({"id": "p", "type": "pattern", "pattern": "car", "fields": ["caption"]})
    assert check(rules, "A red car parked.") == []
    assert len(check(rules, "A red CAR parked.")) == 1
    anchored = rules_of({"id": "p", "type": "pattern", "pattern": "^[A-Z]",
                         "fields": ["caption"]})
    assert len(check(anchored, "a red car")) == 1


# --------------------------------------------------------------------------- cross-modal

INVENTED = {"id": "invented", "type": "invented_objects", "fields": ["caption"]}
UNMENTIONED = {"id": "unmentioned", "type": "unmentioned_objects", "fields": ["caption"],
               "severity": "warning"}


def test_invented_objects_uses_label_words_and_plurals():
    rules = rules_of(INVENTED)
    got = check(rules, "two cars and a bike", {"car"})
    assert got == [Violation("invented", "caption", "error", "bike", 15, 19, label="bicycle")]
    # plurals only as listed: "bikes" is not a word of any label
    assert check(rules, "two cars and two bikes", {"car"}) == []
    assert spans(check(rules, "A Bicycle; a BICYCLES", {"car"})) == [
        ("Bicycle", 2, 9), ("BICYCLES", 13, 21)]
    assert check(rules, "a bike and a vehicle", {"car", "bicycle"}) == []
    assert check(rules, "a bikeshed and a carport", set()) == []


def test_invented_objects_multi_word_label():
    rules = rules_of(INVENTED)
    got = check(rules, "A Traffic  light, then traffic\nlights.", {"car"})
    assert spans(got) == [("Traffic  light", 2, 16), ("traffic\nlights", 23, 37)]
    assert {v.label for v in got} == {"traffic_light"}
    assert check(rules, "heavy traffic and a car", {"car"}) == []


def test_invented_objects_unicode_offsets():
    rules = rules_of(INVENTED)
    text = "Ein großes Café 😀 mit Fahrrad und bike"
    got = check(rules, text, {"car"})
    assert spans(got) == [("bike", 34, 38)]
    assert_offsets(got, {"caption": text})


def test_unmentioned_objects():
    rules = rules_of(UNMENTIONED)
    got = check(rules, "a red car", {"car", "bicycle", "bus"})
    # "bus" has no words in [labels], so text cannot name it and it is not reported
    assert got == [Violation("unmentioned", "caption", "warning", "", 0, 0, label="bicycle")]
    assert check(rules, "a red car and a bike", {"car", "bicycle"}) == []
    assert [v.label for v in check(rules, "", {"car", "bicycle"})] == ["bicycle", "car"]
    assert check(rules, "a red car", set()) == []


def test_invented_and_unmentioned_together():
    rules = rules_of(INVENTED, UNMENTIONED)
    got = check(rules, "a bike", {"car"})
    assert [(v.rule, v.label, v.excerpt) for v in got] == [
        ("invented", "bicycle", "bike"), ("unmentioned", "car", "")]


def test_box_labels_accepts_any_iterable():
    rules = rules_of(INVENTED)
    for boxes in (["car"], ("car",), frozenset({"car"}), (b for b in ["car"])):
        assert check_fields(rules, {"caption": "a car"}, boxes, labels=LABELS) == []


def test_label_mentions():
    text = "Ein großes Café with cars 😀 car, a Traffic Light"
    assert label_mentions(text, LABELS) == {
        "car": [(21, 25), (28, 31)], "traffic_light": [(35, 48)]}
    assert label_mentions("no labels here: carpet, bikes", LABELS) == {}
    assert label_mentions("", LABELS) == {}
    assert label_mentions("a car", {}) == {}


def test_label_mentions_longest_phrase_wins_and_shared_words():
    labels = {"light": ["light"], "traffic_light": ["traffic light"], "traffic": ["traffic"]}
    assert label_mentions("a traffic light; a light", labels) == {
        "traffic_light": [(2, 15)], "light": [(19, 24)]}
    shared = {"car": ["vehicle"], "truck": ["truck", "vehicle"], "t-shirt": ["t-shirt"]}
    assert label_mentions("a vehicle and a T-Shirt.", shared) == {
        "car": [(2, 9)], "truck": [(2, 9)], "t-shirt": [(16, 23)]}
    rules = rules_of(INVENTED, labels=shared)
    assert check(rules, "a vehicle", {"truck"}, labels=shared) == []
    assert [v.label for v in check(rules, "a vehicle", set(), labels=shared)] == ["car"]


def test_labels_passed_as_equal_copy_give_same_result():
    rules = rules_of(INVENTED)
    copy = {k: tuple(v) for k, v in LABELS.items()}
    assert check(rules, "a bike", {"car"}, labels=copy) == check(rules, "a bike", {"car"})


# --------------------------------------------------------------------------- hedging


def test_hedging_default_words():
    rules = rules_of({"id": "hedge", "type": "hedging", "fields": ["caption"],
                      "severity": "warning"})
    assert rules[0].words == DEFAULT_HEDGES
    text = "It is maybe a car, I think it looks  like one. Probably. mayber"
    got = check(rules, text)
    assert spans(got) == [("maybe", 6, 11), ("I think", 19, 26), ("looks  like", 30, 41),
                          ("Probably", 47, 55)]
    assert all(v.severity == "warning" for v in got)


def test_hedging_custom_words_replace_defaults():
    rules = rules_of({"id": "hedge", "type": "hedging", "fields": ["caption"],
                      "words": ["kind of", "vielleicht"]})
    text = "maybe it is kind of a Café, VIELLEICHT 😀"
    assert spans(check(rules, text)) == [("kind of", 12, 19), ("VIELLEICHT", 28, 38)]


# --------------------------------------------------------------------------- fields


def test_absent_null_and_non_string_fields_are_skipped():
    rules = rules_of(banned("nike", fields=("caption", "title")),
                     {"id": "len", "type": "length", "fields": ["caption"], "min_words": 3})
    assert check_fields(rules, {}, set(), labels=LABELS) == []
    assert check_fields(rules, {"caption": None, "weather": "nike"}, set(), labels=LABELS) == []
    assert check_fields(rules, {"caption": 3, "title": {"a": "nike"}}, set(),
                        labels=LABELS) == []
    assert check_fields(rules, "not a dict", set(), labels=LABELS) == []
    got = check_fields(rules, {"title": "Nike"}, set(), labels=LABELS)
    assert got == [Violation("banned", "title", "error", "Nike", 0, 4)]


def test_list_fields_offsets_are_per_element():
    rules = rules_of(banned("nike", fields=("tags",)))
    fields = {"tags": ["outdoor", "nike", 7, None, "café nike"]}
    got = check_fields(rules, fields, set(), labels=LABELS)
    assert [(v.element, v.excerpt, v.start, v.end) for v in got] == [
        (1, "nike", 0, 4), (4, "nike", 5, 9)]
    assert_offsets(got, fields)


def test_unmentioned_on_a_list_field_judges_all_elements_together():
    rules = compile_rules([{**UNMENTIONED, "fields": ["tags"]}], labels=LABELS)
    got = check_fields(rules, {"tags": ["car", "street"]}, {"car", "bicycle"}, labels=LABELS)
    assert [(v.label, v.element) for v in got] == [("bicycle", None)]
    assert check_fields(rules, {"tags": ["car", "bike"]}, {"car", "bicycle"},
                        labels=LABELS) == []


def test_rules_apply_only_to_their_fields_and_in_order():
    rules = rules_of(banned("nike", fields=("caption",)),
                     {"id": "h", "type": "hedging", "fields": ["caption", "notes"]})
    got = check_fields(rules, {"caption": "maybe nike", "notes": "nike maybe"}, set(),
                       labels=LABELS)
    assert [(v.rule, v.field, v.excerpt) for v in got] == [
        ("banned", "caption", "nike"), ("h", "caption", "maybe"), ("h", "notes", "maybe")]


def test_no_rules():
    assert check_fields((), {"caption": "nike"}, set(), labels=LABELS) == []


def test_rule_built_directly():
    rule = Rule(id="b", type="banned", fields=["caption"], patterns=["nike"])
    assert rule.fields == ("caption",) and rule.patterns == ("nike",)
    assert spans(check_fields([rule], {"caption": "a nike"}, (), labels=LABELS)) == [
        ("nike", 2, 6)]
    assert Rule(id="h", type="hedging", fields=("c",)).words == DEFAULT_HEDGES
    with pytest.raises(PolicyError) as err:
        Rule(id="b", type="banned", fields=("c",), patterns=("a(",))
    assert err.value.key == "rule 'b'.patterns[0]"
    # the compiled program is not part of equality or repr
    assert rule == Rule(id="b", type="banned", fields=("caption",), patterns=("nike",))
    assert "regex" not in repr(rule)


def test_public_search_fallback_gives_the_same_results(monkeypatch):
    rules = rules_of(banned("nike", "coca[- ]?cola"), INVENTED,
                     {"id": "h", "type": "hedging", "fields": ["caption"]})
    text = "Nike nike coca cola maybe a bike 😀 and traffic lights, café nike_x nike"
    fast = check(rules, text, {"car"})
    monkeypatch.setattr(policy, "_UNANCHORED", None)
    assert check(rules, text, {"car"}) == fast
    assert [v.excerpt for v in fast] == [
        "Nike", "nike", "coca cola", "nike", "bike", "traffic lights", "maybe"]


# --------------------------------------------------------------------------- config errors

BASE = {"id": "r", "type": "banned", "patterns": ["nike"], "fields": ["caption"]}


@pytest.mark.parametrize("tables, key, fragment", [
    ([{**BASE, "colour": "red"}], "policy[0].colour", "unknown key"),
    ([{**BASE, "min_words": 3}], "policy[0].min_words", "unknown key"),
    ([{k: v for k, v in BASE.items() if k != "id"}], "policy[0].id", "missing"),
    ([{k: v for k, v in BASE.items() if k != "type"}], "policy[0].type", "missing"),
    ([{k: v for k, v in BASE.items() if k != "fields"}], "policy[0].fields", "missing"),
    ([{k: v for k, v in BASE.items() if k != "patterns"}], "policy[0].patterns", "missing"),
    ([{"id": "p", "type": "pattern", "fields": ["c"]}], "policy[0].pattern", "missing"),
    ([{"id": "l", "type": "length", "fields": ["c"]}], "policy[0].min_words", "needs"),
    ([{**BASE, "type": "profanity"}], "policy[0].type", "unknown type"),
    ([{**BASE, "type": 3}], "policy[0].type", "expected a string"),
    ([{**BASE, "severity": "fatal"}], "policy[0].severity", "unknown severity"),
    ([{**BASE, "severity": 1}], "policy[0].severity", "expected a string"),
    ([{**BASE, "id": 3}], "policy[0].id", "non-empty string"),
    ([{**BASE, "id": ""}], "policy[0].id", "non-empty string"),
    ([{**BASE, "fields": "caption"}], "policy[0].fields", "list"),
    ([{**BASE, "fields": []}], "policy[0].fields", "non-empty"),
    ([{**BASE, "fields": ["caption", 2]}], "policy[0].fields[1]", "string"),
    ([{**BASE, "patterns": "nike"}], "policy[0].patterns", "list"),
    ([{**BASE, "patterns": ["nike", 5]}], "policy[0].patterns[1]", "string"),
    ([{"id": "p", "type": "pattern", "pattern": ["x"], "fields": ["c"]}],
     "policy[0].pattern", "expected a string"),
    ([{"id": "l", "type": "length", "fields": ["c"], "min_words": "5"}],
     "policy[0].min_words", "integer"),
    ([{"id": "l", "type": "length", "fields": ["c"], "max_words": True}],
     "policy[0].max_words", "integer"),
    ([{"id": "l", "type": "length", "fields": ["c"], "max_words": 2.5}],
     "policy[0].max_words", "integer"),
    ([{"id": "l", "type": "length", "fields": ["c"], "min_words": -1}],
     "policy[0].min_words", ">= 0"),
    ([{"id": "l", "type": "length", "fields": ["c"], "min_words": 5, "max_words": 3}],
     "policy[0].min_words", "greater than max_words"),
    ([{"id": "h", "type": "hedging", "fields": ["c"], "words": ["ok", " "]}],
     "policy[0].words[1]", "non-empty"),
    ([{"id": "h", "type": "hedging", "fields": ["c"], "words": []}],
     "policy[0].words", "non-empty"),
    ([BASE, {**BASE, "patterns": ["adidas"]}], "policy[1].id", "duplicate id 'r'"),
    ([BASE, "nike"], "policy[1]", "expected a table"),
    ([{"id": "p", "type": "pattern", "pattern": "a(", "fields": ["c"]}],
     "policy[0].pattern", "invalid RE2 pattern"),
    ([{**BASE, "patterns": ["x*"]}], "policy[0].patterns[0]", "empty string"),
    ([{**BASE, "patterns": [r"\Qcoca-cola"]}], "policy[0].patterns[0]", r"\Q"),
    ([{**BASE, "patterns": [r"a\Cb"]}], "policy[0].patterns[0]", r"\C"),
])
def test_policy_errors_name_their_key(tables, key, fragment):
    with pytest.raises(PolicyError) as err:
        compile_rules(tables, labels=LABELS)
    assert err.value.key == key
    assert fragment in err.value.problem
    assert str(err.value) == f"{key}: {err.value.problem}"


def test_invalid_regex_message():
    tables = [BASE, {**BASE, "id": "r2", "patterns": ["nike", "a("]}]
    with pytest.raises(PolicyError) as err:
        compile_rules(tables, labels=LABELS)
    assert str(err.value) == "policy[1].patterns[1]: invalid RE2 pattern 'a(': missing )"


@pytest.mark.parametrize("pattern", [
    "(?<=a)b",  # lookbehind
    "(?<!a)b",
    "a(?=b)",  # lookahead
    "(?!a)b",
    r"(a)\1",  # backreference
    "a++",  # possessive
    "(?>ab)",  # atomic group
])
def test_python_re_only_syntax_is_rejected(pattern):
    with pytest.raises(PolicyError) as err:
        compile_rules([{**BASE, "patterns": [pattern]}], labels=LABELS)
    assert err.value.key == "policy[0].patterns[0]"
    assert err.value.problem.startswith(f"invalid RE2 pattern {pattern!r}: ")


def test_cross_modal_rules_need_labels():
    with pytest.raises(PolicyError) as err:
        compile_rules([INVENTED], labels={})
    assert err.value.key == "policy[0].type"
    assert compile_rules([BASE], labels={})[0].id == "r"


@pytest.mark.parametrize("labels, key", [
    ({"car": "car"}, "labels.car"),
    ({"car": ["car", ""]}, "labels.car[1]"),
    ({"car": ["car", 3]}, "labels.car[1]"),
])
def test_bad_labels(labels, key):
    with pytest.raises(PolicyError) as err:
        compile_rules([INVENTED], labels=labels)
    assert err.value.key == key


def test_not_a_list():
    with pytest.raises(PolicyError) as err:
        compile_rules("nope", labels=LABELS)
    assert err.value.key == "policy"


def test_compile_rules_output():
    rules = compile_rules([BASE, {"id": "l", "type": "length", "fields": ["c"],
                                  "max_words": 4, "severity": "warning"}], labels=LABELS)
    assert rules == (
        Rule(id="r", type="banned", fields=("caption",), patterns=("nike",)),
        Rule(id="l", type="length", fields=("c",), severity="warning", max_words=4),
    )
    assert compile_rules([], labels=LABELS) == ()


# --------------------------------------------------------------------------- properties

ALL_RULES = compile_rules([
    {"id": "b", "type": "banned", "patterns": ["nike", "coca[- ]?cola", "café", "😀+"],
     "fields": ["caption", "tags"]},
    {"id": "l", "type": "length", "fields": ["caption", "tags"], "min_words": 2,
     "max_words": 4},
    {"id": "p", "type": "pattern", "pattern": r"\.$", "fields": ["caption"]},
    {"id": "i", "type": "invented_objects", "fields": ["caption", "tags"]},
    {"id": "u", "type": "unmentioned_objects", "fields": ["caption", "tags"]},
    {"id": "h", "type": "hedging", "fields": ["caption", "tags"]},
], labels=LABELS)

TOKENS = ["nike", "NIKE", "coca cola", "Café", "😀", "car", "cars", "bike", "traffic light",
          "maybe", "looks like", "ß", "é", "_", "-", "٣", "\u00a0"]
text_strategy = st.lists(
    st.one_of(st.sampled_from(TOKENS), st.text(max_size=6)), max_size=12,
).map(lambda parts: "".join(parts))
separated = st.lists(
    st.one_of(st.sampled_from(TOKENS), st.text(max_size=6)), max_size=12,
).map(lambda parts: " ".join(parts))


@settings(max_examples=300, deadline=None)
@given(caption=st.one_of(text_strategy, separated, st.text()),
       tags=st.lists(st.one_of(text_strategy, st.integers())),
       boxes=st.sets(st.sampled_from(["car", "bicycle", "traffic_light", "bus"])))
def test_never_crashes_and_offsets_slice_back(caption, tags, boxes):
    fields = {"caption": caption, "tags": tags}
    got = check_fields(ALL_RULES, fields, boxes, labels=LABELS)
    assert_offsets(got, fields)
    for v in got:
        assert v.severity == "error"
        if v.rule in ("b", "h", "i"):
            assert v.excerpt
    mentions = label_mentions(caption, LABELS)
    for label, found in mentions.items():
        assert label in LABELS
        for start, end in found:
            said = " ".join(caption[start:end].split()).casefold()
            assert said in {" ".join(w.split()).casefold() for w in LABELS[label]}


def _is_word(ch: str) -> bool:
    return ch == "_" or unicodedata.category(ch)[0] in "LN"


def reference_nike(text):
    """All word-bounded, case-insensitive "nike" by brute force (no regex)."""
    out = []
    for i in range(len(text) - 3):
        if text[i:i + 4].lower() != "nike":
            continue
        if i > 0 and _is_word(text[i - 1]):
            continue
        if i + 4 < len(text) and _is_word(text[i + 4]):
            continue
        out.append((text[i:i + 4], i, i + 4))
    return out


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="nikeNIKE _-!éß٣😀\n\u00a0x", max_size=40))
def test_banned_matches_a_brute_force_reference(text):
    assert spans(check(rules_of(banned("nike")), text)) == reference_nike(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.integers(0, 6))
def test_length_matches_split(text, max_words):
    got = check(length_rule(max_words=max_words), text)
    words = text.split()
    if len(words) <= max_words:
        assert got == []
    else:
        (v,) = got
        assert v.excerpt.split() == words[max_words:]
        assert text[v.start:v.end] == v.excerpt and v.end == len(text)


# --------------------------------------------------------------------------- screen vs reference


def reference_check_fields(rules, fields, box_labels=(), *, labels):
    """check_fields as it was before the re2.Set screen and the label lookup: every rule
    searched on every text, mentions from the program with one group per set of labels."""
    if not rules or not isinstance(fields, dict) or not fields:
        return []
    by_field = {}
    for rule in rules:
        for name in rule.fields:
            by_field.setdefault(name, []).append(rule)
    out = []
    boxed = None
    for name, field_rules in by_field.items():
        value = fields.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            elements = [(None, value)]
        elif isinstance(value, list):
            elements = [(j, v) for j, v in enumerate(value) if isinstance(v, str)]
        else:
            continue
        needs_labels = any(r.type in ("invented_objects", "unmentioned_objects")
                           for r in field_rules)
        matcher = policy._label_matcher(labels) if needs_labels else None
        if needs_labels and boxed is None:
            boxed = frozenset(box_labels)
        named = set()
        for element, text in elements:
            t = policy._Text(text)
            mentions = None
            for rule in field_rules:
                kind = rule.type
                if kind == "length":
                    policy._check_length(rule, name, text, element, out)
                elif kind in ("banned", "hedging"):
                    for sp in policy._bounded_spans(rule.regex, t):
                        s, e = t.cp(sp[1][0]), t.cp(sp[1][1])
                        out.append(Violation(rule.id, name, rule.severity, text[s:e], s, e,
                                             None, element))
                elif kind == "pattern":
                    if rule.regex.search(t.data) is None:
                        out.append(Violation(rule.id, name, rule.severity, text, 0,
                                             len(text), None, element))
                else:
                    if mentions is None:
                        mentions = matcher.find_reference(t)
                        for _s, _e, owners in mentions:
                            named.update(owners)
                    if kind == "invented_objects":
                        for s, e, owners in mentions:
                            if boxed.isdisjoint(owners):
                                out.append(Violation(rule.id, name, rule.severity, text[s:e],
                                                     s, e, owners[0], element))
        for rule in field_rules:
            if rule.type == "unmentioned_objects":
                for label in sorted(boxed):
                    if label in matcher.known and label not in named:
                        out.append(Violation(rule.id, name, rule.severity, "", 0, 0, label,
                                             None))
    return out


def reference_mentions(text, labels):
    out = {}
    for start, end, owners in policy._label_matcher(labels).find_reference(policy._Text(text)):
        for label in owners:
            out.setdefault(label, []).append((start, end))
    return out


# Words of every kind the matcher treats apart: ASCII words and phrases (the no-group
# program), overlapping phrases across labels (no screen for the named labels), non-ASCII
# and punctuated words (the one-group program), case variants RE2 folds (K, ſ, ι/U+0345).
ASCII_WORDS = ["car", "cars", "Car", "light", "traffic light", "traffic", "red car",
               "car park", "bike", "b1_x", "strasse", "sun", "kit", "a  b", "x"]
LABEL_WORDS = ASCII_WORDS + ["Straße", "café", "t-shirt", "c++", "(c)", "-x", "ιx"]
BANNED_PATTERNS = ["nike", "coca[- ]?cola", "café", "😀+", r"\b", "a|ab", r"x\.", "^nike",
                   "nike$", "(?i)NIKE", "(?-i:Nike)", "[[:alpha:]]+z", r"\Qc++\E", "k", "ſ",
                   r"\pL\d"]
HEDGE_WORDS = ["maybe", "looks like", "I think", "seems", "kind of", "ſo"]
PATTERNS = [r"\.$", "^[A-Z]", "car", "(?i)CAR", "^$", r"\Qx", r"\bnike\b", "a{2,}",
            r"(?s).", "^(?:a|b)", r"\z", "é$"]
TEXT_TOKENS = LABEL_WORDS + ["nike", "NIKE", "coca cola", "maybe", "looks  like", "I think",
                             "😀", "ß", "é", "_", "-", ".", ",", "٣", "\u00a0", "\n", "\u212a",
                             "\u017f", "\u0345", "\ud800", "K", "CAR", "TRAFFIC\tLIGHT",
                             "Cars.", "aab", "xz"]
BOX_LABELS = ["car", "light", "traffic_light", "traffic", "parking", "bicycle", "bus",
              "misc"]


@st.composite
def policies(draw):
    names = draw(st.lists(st.sampled_from(BOX_LABELS[:-1]), min_size=1, max_size=4,
                          unique=True))
    words = st.sampled_from(draw(st.sampled_from([ASCII_WORDS, LABEL_WORDS])))
    labels = {name: draw(st.lists(words, min_size=1, max_size=4, unique=True))
              for name in names}
    fields = st.lists(st.sampled_from(["caption", "tags"]), min_size=1, max_size=2,
                      unique=True)
    tables = []
    for i, kind in enumerate(draw(st.lists(st.sampled_from(
            ["banned", "hedging", "pattern", "length", "invented_objects",
             "unmentioned_objects"]), max_size=7))):
        table = {"id": f"r{i}", "type": kind, "fields": draw(fields),
                 "severity": draw(st.sampled_from(["error", "warning"]))}
        if kind == "banned":
            table["patterns"] = draw(st.lists(st.sampled_from(BANNED_PATTERNS), min_size=1,
                                              max_size=3, unique=True))
        elif kind == "hedging" and draw(st.booleans()):
            table["words"] = draw(st.lists(st.sampled_from(HEDGE_WORDS), min_size=1,
                                           max_size=3, unique=True))
        elif kind == "pattern":
            table["pattern"] = draw(st.sampled_from(PATTERNS))
        elif kind == "length":
            table["min_words"] = draw(st.integers(0, 4))
            table["max_words"] = draw(st.integers(4, 8))
        tables.append(table)
    return tables, labels


screen_texts = st.lists(st.one_of(st.sampled_from(TEXT_TOKENS), st.text(max_size=4)),
                        max_size=10).flatmap(
    lambda parts: st.sampled_from(["", " ", "  "]).map(lambda sep: sep.join(parts)))


@settings(max_examples=400, deadline=None)
@given(policy_=policies(), caption=screen_texts,
       tags=st.lists(st.one_of(screen_texts, st.integers()), max_size=3),
       boxes=st.sets(st.sampled_from(BOX_LABELS)))
def test_screened_check_matches_the_reference(policy_, caption, tags, boxes):
    tables, labels = policy_
    try:
        rules = compile_rules(tables, labels=labels)
    except PolicyError:  # e.g. a banned pattern that matches the empty string
        return
    fields = {"caption": caption, "tags": tags}
    expected = reference_check_fields(rules, fields, boxes, labels=labels)
    assert check_fields(rules, fields, boxes, labels=labels) == expected
    assert label_mentions(caption, labels) == reference_mentions(caption, labels)
    assert labels_named(caption, labels) == frozenset(reference_mentions(caption, labels))


def test_screen_on_the_demo_rules_matches_the_reference():
    import numpy as np

    from bench.generate import _caption  # captions as the benchmark builds them
    from metrics.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "data" / "demo")
    rng = np.random.default_rng(7)
    for _ in range(2000):
        counts = {name: int(c) for name, c in zip(
            ("car", "person", "bicycle", "dog", "traffic light", "bus"),
            rng.integers(0, 3, size=6), strict=True) if c}
        r = rng.random(12).tolist()
        r[5], r[8], r[10] = r[5] / 5, r[8] / 5, r[10] / 5  # more hedges, brands, inventions
        caption = _caption(counts, r, rng, exact=False)
        boxes = set(counts) - ({"dog"} if rng.random() < 0.2 else set())
        fields = {"caption": caption}
        assert check_fields(config.policy, fields, boxes, labels=config.labels) == (
            reference_check_fields(config.policy, fields, boxes, labels=config.labels))
        assert label_mentions(caption, config.labels) == reference_mentions(
            caption, config.labels)
        assert labels_named(caption, config.labels) == frozenset(reference_mentions(
            caption, config.labels))


def test_labels_named_reads_the_screen_only_when_unshadowable():
    assert labels_named("Two cars and a BIKE.", LABELS) == {"car", "bicycle"}
    assert policy._label_matcher(LABELS).naming
    # "light" inside "traffic light": the longest wins, so a Set hit is not a mention
    overlapping = {"light": ["light"], "traffic_light": ["traffic light"]}
    assert labels_named("a traffic light", overlapping) == {"traffic_light"}
    assert policy._label_matcher(overlapping).naming is False
    assert labels_named("anything", {}) == frozenset()


def test_unshadowable_only_without_overlapping_words():
    assert policy._label_matcher(LABELS).unshadowable
    overlapping = {"light": ["light"], "traffic_light": ["traffic light"]}
    assert not policy._label_matcher(overlapping).unshadowable
    chained = {"a": ["red car"], "b": ["car park"]}
    assert not policy._label_matcher(chained).unshadowable
    same_set = {"a": ["traffic light", "light"]}
    assert policy._label_matcher(same_set).unshadowable
    assert policy._label_matcher({"c": ["café"]}).zero is None  # non-ASCII: one group


def test_shadowed_word_does_not_name_its_label():
    labels = {"light": ["light"], "traffic_light": ["traffic light"]}
    rules = compile_rules([UNMENTIONED], labels=labels)
    got = check(rules, "a traffic light", {"light", "traffic_light"}, labels=labels)
    assert [v.label for v in got] == ["light"]
    assert check(rules, "a traffic light, a light", {"light", "traffic_light"},
                 labels=labels) == []


def test_invented_objects_found_when_the_screen_reports_an_unboxed_label():
    rules = rules_of(INVENTED, UNMENTIONED)
    assert [(v.rule, v.label, v.excerpt) for v in check(rules, "two cars, a bike", {"car"})] \
        == [("invented", "bicycle", "bike")]
    assert check(rules, "two cars, a bike", {"car", "bicycle"}) == []


def test_screen_failure_falls_back_to_the_full_check(monkeypatch):
    rules = rules_of(banned("nike", "coca[- ]?cola"), INVENTED, UNMENTIONED,
                     {"id": "h", "type": "hedging", "fields": ["caption"]},
                     {"id": "p", "type": "pattern", "pattern": r"\.$", "fields": ["caption"]})
    texts = ["Nike maybe a bike and two cars.", "a car", "", "traffic lights 😀 nike"]
    expected = [check(rules, text, {"car", "traffic_light"}) for text in texts]
    (fp,) = policy._plan(rules)
    matcher, screen = fp.built
    # RE2::Set reports nothing when its DFA runs out of memory: no program 0 in the answer
    monkeypatch.setattr(screen, "match", lambda data: [])
    assert [check(rules, text, {"car", "traffic_light"}) for text in texts] == expected
    assert [reference_check_fields(rules, {"caption": text}, {"car", "traffic_light"},
                                   labels=LABELS) for text in texts] == expected


def test_label_matches_at_the_ends_of_the_text():
    # the no-group program cannot tell a non-ASCII first/last character apart from a
    # boundary by itself: those texts go to the reference search
    for text in ["\u212aar car", "car \u212aar", "😀car", "car😀", "Car", "car.", ".car",
                 "\u00a0cars\u00a0", "\u017fun", "car\u00a0x", "x😀car😀x", "é car\u2028é",
                 "\u00a0\u212aar\u00a0."]:
        labels = {"car": ["car", "kar"], "sun": ["sun"]}
        assert label_mentions(text, labels) == reference_mentions(text, labels), text


def test_re2_case_folding_agrees_with_casefold():
    """The label lookup keys matched text by str.casefold(): every pair of characters RE2
    matches case-insensitively must casefold alike (true of RE2's Unicode tables)."""
    import re2

    cased = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000
                    and (chr(c).casefold() != chr(c) or chr(c).upper() != chr(c)
                         or chr(c).lower() != chr(c)))
    options = re2.Options()
    options.case_sensitive = False
    for ch in cased:
        for m in re2.compile(re2.escape(ch), options).finditer(cased):
            assert m.group().casefold() == ch.casefold(), (ch, m.group())


def test_space_classes_agree_with_str_split():
    import re2

    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    found = "".join(m.group() for m in re2.compile(policy._SPACE).finditer(every))
    assert found == "".join(ch for ch in every if ch.isspace())
    assert policy._ASCII_SPACE == bytes(c for c in range(128) if chr(c).isspace())


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=" \t\n\x1c\u00a0ab😀", max_size=30), st.integers(0, 5),
       st.integers(0, 8))
def test_length_ok_matches_split(text, low, extra):
    rule = Rule(id="l", type="length", fields=("c",), min_words=low, max_words=low + extra)
    n = len(text.split())
    assert policy._length_ok(rule, text, text.encode("utf-8", "replace")) == (
        low <= n <= low + extra)


def test_length_ok_counts_non_ascii_whitespace():
    rule = Rule(id="l", type="length", fields=("c",), min_words=2, max_words=2)
    for text, ok in [("a\u00a0b", True), ("a\u00a0b\u2028c", False), ("a b\u3000c", False),
                     ("a\x1cb", True), ("a\x1cb\x1fc", False), ("😀\u00a0", False)]:
        assert policy._length_ok(rule, text, text.encode("utf-8", "replace")) is ok, text
