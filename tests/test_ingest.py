"""Native ingest: every line loaded, a duplicate or quarantined; atomic; idempotent."""

from __future__ import annotations

import json

import pytest
from conftest import record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics import ingest as ingest_mod
from metrics.cli import main
from metrics.ingest import FileUnusable, check_files


def _db_counts(project, export_name: str) -> dict:
    con = project.connect()
    try:
        exp = con.execute(
            "SELECT export_id, records, loaded, duplicates, quarantined, skipped_records "
            "FROM exports WHERE name = ?", [export_name]).fetchall()[0]
        eid = exp[0]
        stored = con.execute("SELECT count(*) FROM annotations WHERE export_id = ?",
                             [eid]).fetchall()[0][0]
        quarantined = con.execute("SELECT count(*) FROM quarantine WHERE export_id = ?",
                                  [eid]).fetchall()[0][0]
    finally:
        con.close()
    return {"records": exp[1], "loaded": exp[2], "duplicates": exp[3],
            "quarantined": exp[4], "skipped": exp[5], "stored": stored,
            "stored_quarantine": quarantined}


def _balanced(fs) -> None:
    assert fs.records == fs.loaded + fs.duplicates + fs.quarantined + fs.skipped_records


def test_good_export_loads_every_line(project):
    path = project.write("w1.jsonl", [record(item=f"img-{i}") for i in range(5)])
    summary = project.ingest(path)
    fs = summary.files[0]
    assert (fs.records, fs.loaded, fs.quarantined, fs.duplicates) == (5, 5, 0, 0)
    assert fs.boxes == 5 and dict(fs.by_role) == {"annotator": 5}
    counts = _db_counts(project, "w1.jsonl")
    assert counts["stored"] == 5 and counts["stored_quarantine"] == 0


BAD_LINES = [
    ("[1, 2, 3]", "an array, not a JSON object"),
    ("42", "a number, not a JSON object"),
    ('"text"', "a string, not a JSON object"),
    ('{"item_id": "img-9", "annotator_id": "a"', "not valid JSON"),
    (json.dumps(record(item="x")).replace("[10, 10, 30, 20]", "[10, NaN, 30, 20]"),
     "NaN is not valid JSON (RFC 8259)"),
    (json.dumps(record(item="x")).replace("[10, 10, 30, 20]", "[10, -Infinity, 30, 20]"),
     "-Infinity is not valid JSON (RFC 8259)"),
    # Python's json reads these too, but they are not NaN: orjson's message says what.
    (json.dumps(record(item="x", caption="A \ud800 car.")), "no low surrogate in string"),
    (json.dumps(record(item="x")).replace("[10, 10, 30, 20]", "[1" + "0" * 400 + ", 1, 1, 1]"),
     "number is infinity when parsed as double"),
    (json.dumps({k: v for k, v in record().items() if k != "item_id"}),
     "missing required field 'item_id'"),
    (json.dumps(record(when="last tuesday")), "'submitted_at' is not an ISO 8601 date"),
    (json.dumps(record(item=7)), "'item_id' must be a non-empty string"),
    ("[" * 300 + "]" * 300, "nested deeper than 256"),
]


@pytest.mark.parametrize("line, reason", BAD_LINES)
def test_bad_line_is_quarantined_with_reason(project, line, reason):
    path = project.write("bad.jsonl", [record(item="ok-1"), line, record(item="ok-2")])
    fs = project.ingest(path).files[0]
    assert (fs.records, fs.loaded, fs.quarantined) == (3, 2, 1)
    _balanced(fs)
    con = project.connect()
    rows = con.execute("SELECT line, reason, raw FROM quarantine").fetchall()
    con.close()
    assert len(rows) == 1
    assert rows[0][0] == 2 and reason in rows[0][1]
    assert rows[0][2]  # raw text kept


@pytest.mark.parametrize("depth", [254, 255, 256])
def test_a_line_nested_up_to_256_levels_is_loaded(project, depth):
    # orjson serializes 254 levels; DESIGN quarantines only past 256.
    def nested(levels: int) -> str:  # the record is level 1, "fields" 2, "deep" 3...
        return "[" * (levels - 2) + "]" * (levels - 2)

    deep = json.dumps(record(item="deep")).replace(
        '"fields": {', f'"fields": {{"deep": {nested(depth)}, ', 1)
    nameless = json.dumps({k: v for k, v in json.loads(deep).items() if k != "item_id"})
    path = project.write("deep.jsonl", [deep, nameless, record(item="ok")])
    fs = project.ingest(path).files[0]
    assert (fs.records, fs.loaded, fs.quarantined) == (3, 2, 1)
    assert "missing required field 'item_id'" in fs.quarantine_examples[0][1]
    # The same lines in another file: the same content hashes, so duplicates.
    again = project.write("again.jsonl", [record(item="ok"), deep])
    assert project.ingest(again).files[0].duplicates == 2
    con = project.connect()
    fields = con.execute("SELECT fields FROM annotations WHERE item_id = 'deep'").fetchone()
    con.close()
    assert json.loads(fields[0])["deep"] == json.loads(nested(depth))


def test_invalid_utf8_bom_crlf_and_blank_lines(project):
    good = json.dumps(record(item="a")).encode()
    path = project.root / "exports" / "mixed.jsonl"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(
        b"\xef\xbb\xbf" + good + b"\r\n"                     # BOM + CRLF
        + b"\r\n \t \n"                                   # blank lines are not records
        + json.dumps(record(item="b")).encode() + b"\r\n"
        + b'{"item_id": "c\xff\xfe", "annotator_id": "x"}\n'  # invalid UTF-8
        + b"\x0b\x0c\n"                                    # not JSON whitespace: a record
        + json.dumps(record(item="d")).encode()            # no final newline
    )
    fs = project.ingest(path).files[0]
    assert (fs.records, fs.loaded, fs.quarantined) == (5, 3, 2)
    con = project.connect()
    (line, reason), (line2, reason2) = con.execute(
        "SELECT line, reason FROM quarantine ORDER BY line").fetchall()
    items = sorted(r[0] for r in con.execute("SELECT item_id FROM annotations").fetchall())
    con.close()
    assert line == 5 and "invalid UTF-8" in reason
    assert line2 == 6 and "not valid JSON" in reason2
    assert items == ["a", "b", "d"]


def test_huge_line_quarantined(project, monkeypatch):
    # A 50 MB line: over the 16 MiB limit, quarantined without parsing.
    big = json.dumps(record(item="big", caption="x" * (50 * 1024 * 1024)))
    path = project.write("big.jsonl", [record(item="a"), big])
    fs = project.ingest(path).files[0]
    assert (fs.records, fs.loaded, fs.quarantined) == (2, 1, 1)
    assert "over the 16 MiB limit" in fs.quarantine_examples[0][1]
    con = project.connect()
    raw_len = con.execute("SELECT length(raw) FROM quarantine").fetchall()[0][0]
    con.close()
    assert raw_len <= ingest_mod.RAW_KEEP_CHARS


@pytest.mark.parametrize("content, problem", [
    (b"", "empty"),
    (b"\n\n  \n", "empty"),
    (b"item_id,annotator_id\nimg-1,ann-1\n", "not a native export"),
    (b"[1, 2]\n[3]\n", "not a native export"),
])
def test_unusable_files_exit_2_and_write_nothing(project, capsys, content, problem):
    path = project.root / "exports" / "x.jsonl"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    with pytest.raises(FileUnusable, match=problem):
        project.ingest(path)
    rc = main(["ingest", str(path), "--project", str(project.root)])
    err = capsys.readouterr().err
    assert rc == 2 and problem in err and "Traceback" not in err
    con = project.connect()
    assert con.execute("SELECT count(*) FROM exports").fetchall()[0][0] == 0
    assert con.execute("SELECT count(*) FROM quarantine").fetchall()[0][0] == 0
    con.close()


def test_missing_path_and_directory(project, capsys):
    for target, problem in ((project.root / "nope.jsonl", "no such file"),
                            (project.root, "is a directory")):
        rc = main(["ingest", str(target), "--project", str(project.root)])
        err = capsys.readouterr().err
        assert rc == 2 and problem in err and str(target) in err
        rc = main(["check", str(target), "--project", str(project.root)])
        assert rc == 2 and problem in capsys.readouterr().err


def test_same_file_twice_changes_nothing(project):
    path = project.write("w1.jsonl", [record(item=f"i{i}") for i in range(3)] + ["[1]"])
    project.ingest(path)
    con = project.connect()
    before = con.execute("SELECT count(*) FROM annotations").fetchall()[0][0]
    gen = con.execute("SELECT value FROM meta WHERE key='generation'").fetchall()[0][0]
    con.close()
    again = project.ingest(path).files[0]
    assert again.already_ingested and again.loaded == 0 and again.duplicates == again.records
    con = project.connect()
    assert con.execute("SELECT count(*) FROM annotations").fetchall()[0][0] == before
    assert con.execute("SELECT count(*) FROM quarantine").fetchall()[0][0] == 1
    assert con.execute("SELECT count(*) FROM exports").fetchall()[0][0] == 1
    assert con.execute("SELECT value FROM meta WHERE key='generation'").fetchall()[0][0] == gen
    con.close()


def test_duplicates_and_versions(project):
    a = record(item="i1", annotation_id="a-1", caption="A car on the road.")
    b = record(item="i2", annotation_id="a-2")
    first = project.ingest(project.write("w1.jsonl", [a, b, a])).files[0]
    # Same id and content twice in one export: a duplicate, counted, not loaded.
    assert (first.records, first.loaded, first.duplicates) == (3, 2, 1)

    changed = dict(a, fields={"caption": "A red car on the road.", "weather": "rainy"})
    second = project.ingest(project.write("w2.jsonl", [changed, b])).files[0]
    # a-1 changed: a new version; a-2 unchanged: a duplicate of the stored one.
    assert (second.loaded, second.duplicates, second.new_versions) == (1, 1, 1)
    _balanced(second)
    con = project.connect()
    rows = con.execute(
        "SELECT version, is_current, fields->>'weather' FROM annotations "
        "WHERE annotation_id = 'a-1' ORDER BY version").fetchall()
    current = con.execute("SELECT count(*) FROM current_annotations").fetchall()[0][0]
    con.close()
    assert rows == [(1, False, "sunny"), (2, True, "rainy")]
    assert current == 2


def test_repeated_id_with_different_content_in_one_export(project):
    a1 = record(item="i1", annotation_id="a-1", weather="sunny")
    a2 = record(item="i1", annotation_id="a-1", weather="rainy")
    fs = project.ingest(project.write("w1.jsonl", [a1, a2])).files[0]
    assert (fs.loaded, fs.duplicates) == (2, 0)
    assert fs.errors_by[("/annotation_id", "uniqueId")] == 1
    assert fs.error_examples[0][0] == 2  # the later line carries the error
    con = project.connect()
    rows = con.execute("SELECT line, version, is_current, schema_errors FROM annotations "
                       "ORDER BY line").fetchall()
    con.close()
    assert rows == [(1, 1, False, 0), (2, 2, True, 1)]


def test_contract_checks_beyond_the_schema(project):
    recs = [
        record(item="i1", boxes=[{"label": "car", "bbox": [95, 10, 10, 10]}]),  # 5 px out
        record(item="i2", boxes=[{"label": "car", "bbox": [99.5, 10, 1.4, 10]}]),  # < 1 px
        record(item="i3", boxes=[{"label": "car", "bbox": [10, 10, 0, 10]},
                                 {"label": "person", "bbox": [10, 10, 5, -1]}]),
        record(item="i1", annotator="ann-2",
               image={"uri": "images/i1.png", "width": 200, "height": 100}),
        record(item="i4", boxes=[{"label": "truck", "bbox": [1, 1, 5, 5]}],
               fields={"weather": "snowy"}),
    ]
    fs = project.ingest(project.write("w1.jsonl", recs)).files[0]
    assert fs.loaded == 5 and fs.schema_error_annotations == 4
    con = project.connect()
    errors = con.execute(
        "SELECT a.line, e.pointer, e.instance, e.keyword FROM contract_errors e "
        "JOIN annotations a USING (ann_key) ORDER BY a.line, e.instance, e.keyword"
    ).fetchall()
    matchable = con.execute("SELECT a.line, b.box_idx, b.matchable FROM boxes b JOIN "
                            "annotations a USING (ann_key) WHERE a.line = 3 ORDER BY 2"
                            ).fetchall()
    con.close()
    assert errors == [
        (1, "/boxes/*/bbox", "/boxes/0/bbox", "withinImage"),
        (3, "/boxes/*/bbox", "/boxes/0/bbox", "positiveSize"),
        (3, "/boxes/*/bbox", "/boxes/1/bbox", "positiveSize"),
        (4, "/image", "/image", "imageSize"),
        (5, "/boxes/*/label", "/boxes/0/label", "enum"),
        (5, "/fields/caption", "/fields/caption", "required"),
        (5, "/fields/weather", "/fields/weather", "enum"),
    ]
    # Zero and negative sizes are left out of matching.
    assert matchable == [(3, 0, False), (3, 1, False)]


def test_item_size_checked_against_earlier_exports(project):
    project.ingest(project.write("w1.jsonl", [record(item="i1")]))
    other = record(item="i1", annotator="b",
                   image={"uri": "images/i1.png", "width": 64, "height": 64})
    fs = project.ingest(project.write("w2.jsonl", [other])).files[0]
    assert fs.errors_by == {("/image", "imageSize"): 1}


def test_failure_mid_export_leaves_database_as_it_was(project, monkeypatch):
    project.ingest(project.write("w0.jsonl", [record(item="first")]))
    monkeypatch.setattr(ingest_mod, "BATCH_ROWS", 10)
    calls = {"n": 0}
    real_check = ingest_mod.Checker.prepare

    def exploding(self, rec, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 35:  # after three batches were staged
            raise KeyboardInterrupt
        return real_check(self, rec, *args, **kwargs)

    monkeypatch.setattr(ingest_mod.Checker, "prepare", exploding)
    path = project.write("w1.jsonl", [record(item=f"i{i}") for i in range(50)] + ["[1]"])
    with pytest.raises(KeyboardInterrupt):
        project.ingest(path)
    con = project.connect()
    counts = [con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
              for t in ("exports", "annotations", "boxes", "quarantine", "items")]
    con.close()
    assert counts == [1, 1, 1, 0, 1]
    monkeypatch.setattr(ingest_mod.Checker, "prepare", real_check)
    fs = project.ingest(path).files[0]  # rerun completes it
    assert (fs.loaded, fs.quarantined) == (50, 1)


def test_timezone_places_week(project):
    text = (project.root / "labelqa.toml").read_text().replace(
        'timezone = "UTC"', 'timezone = "Pacific/Auckland"')
    (project.root / "labelqa.toml").write_text(text)
    # Sunday 2026-01-11 13:00 UTC is Monday 02:00 in Auckland: the next ISO week.
    # Without an offset, the time is read in the project timezone.
    recs = [record(item="a", when="2026-01-11T13:00:00Z"),
            record(item="b", when="2026-01-11T13:00:00")]
    project.ingest(project.write("w.jsonl", recs))
    con = project.connect()
    weeks = con.execute("SELECT item_id, week, submitted_at AT TIME ZONE 'UTC' "
                        "FROM annotations ORDER BY 1").fetchall()
    con.close()
    assert [w[1] for w in weeks] == ["2026-W03", "2026-W02"]
    assert str(weeks[1][2]) == "2026-01-11 00:00:00"


def test_check_is_a_dry_run_with_exit_codes(project, capsys):
    good = project.write("good.jsonl", [record(item="a")])
    assert main(["check", str(good), "--project", str(project.root)]) == 0
    assert "check: passed" in capsys.readouterr().out
    bad = project.write("bad.jsonl", [record(item="a", weather="snowy"), "[1]"])
    assert main(["check", str(bad), "--project", str(project.root)]) == 1
    out = capsys.readouterr().out
    assert "/fields/weather  enum" in out and "line 1: /fields/weather [enum]" in out
    assert "line 2: line is an array" in out
    assert main(["check", str(bad), "--project", str(project.root), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["errors"] == [{"path": str(bad), "pointer": "/fields/weather",
                               "keyword": "enum", "count": 1}]
    assert data["error_lines"] == [{"path": str(bad), "line": 1, "pointer": "/fields/weather",
                                    "keyword": "enum",
                                    "message": data["error_lines"][0]["message"]}]
    assert data["quarantine"] == [{"path": str(bad), "line": 2,
                                   "reason": "line is an array, not a JSON object"}]
    assert not project.config.database.exists()  # nothing written


def test_check_lists_every_bad_line_and_says_how_many_more(project, capsys, monkeypatch):
    lines = [record(item=f"i{i}") if i % 2 else "[1]" for i in range(30)]
    bad = project.write("bad.jsonl", lines)
    assert main(["check", str(bad), "--project", str(project.root)]) == 1
    out = capsys.readouterr().out
    assert all(f"line {n}: line is an array" in out for n in range(1, 31, 2))
    assert "more" not in out
    monkeypatch.setattr(ingest_mod, "CHECK_EXAMPLES_KEPT", 4)
    assert main(["check", str(bad), "--project", str(project.root), "--json"]) == 1
    assert [q["line"] for q in json.loads(capsys.readouterr().out)["quarantine"]] == [
        1, 3, 5, 7]
    # Ingest's summary lists ten and counts the rest.
    assert main(["ingest", str(bad), "--project", str(project.root)]) == 0
    out = capsys.readouterr().out
    assert "line 19: line is an array" in out and "line 21:" not in out
    assert "... and 5 more quarantined lines not listed" in out


def test_check_sees_image_sizes_already_stored(project, capsys):
    project.ingest(project.write("w1.jsonl", [record(item="i1")]))
    other = record(item="i1", annotator="b",
                   image={"uri": "images/i1.png", "width": 64, "height": 64})
    path = project.write("w2.jsonl", [other])
    assert main(["check", str(path), "--project", str(project.root)]) == 1
    assert "[imageSize]" in capsys.readouterr().out


def test_ingest_json_summary_keys(project, capsys):
    path = project.write("w.jsonl", [record(item="a"), record(item="b", role="gold"), "[]"])
    assert main(["ingest", str(path), "--project", str(project.root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("records", "loaded", "quarantined", "duplicates", "boxes", "skipped",
                "by_role", "files"):
        assert key in data
    assert (data["records"], data["loaded"], data["quarantined"]) == (3, 2, 1)
    assert data["by_role"] == {"annotator": 1, "gold": 1}
    assert data["files"][0]["path"] == str(path)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids,
                                                              max_size=3),
    max_leaves=8,
)
_lines = st.one_of(
    st.binary(max_size=60).filter(lambda b: b"\n" not in b and b"\r" not in b),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda r, extra: json.dumps({**r, **extra}).encode(),
              st.sampled_from([record(item="h1"), record(item="h2", annotator="z"),
                               record(item="h1", boxes=[{"label": "car", "bbox": [0, 0, 1]}])]),
              st.dictionaries(st.sampled_from(["item_id", "annotator_id", "submitted_at",
                                               "boxes", "fields", "image", "role",
                                               "annotation_id", "prefilled"]),
                              _json_values, max_size=2)),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_lines, min_size=1, max_size=12))
def test_random_lines_never_crash_or_vanish(project, lines):
    path = project.root / "exports" / "fuzz.jsonl"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"\n".join(lines))
    # A UTF-8 BOM opening the file is not content.
    first = lines[0][3:] if lines[0].startswith(b"\xef\xbb\xbf") else lines[0]
    # Blank: JSON whitespace only (RFC 8259); \x0b or \x0c make a record.
    non_blank = sum(1 for line in [first, *lines[1:]] if line.strip(b" \t\r\n"))
    try:
        dry = check_files(project.config, [path], fmt="native", progress=False).files[0]
    except FileUnusable:
        with pytest.raises(FileUnusable):  # refused as a whole by ingest too
            project.ingest(path, fmt="native")
        return
    assert dry.records == non_blank
    _balanced(dry)
    fs = project.ingest(path, fmt="native").files[0]
    _balanced(fs)
    assert fs.records == non_blank
    if fs.already_ingested:
        return
    con = project.connect()
    eid = con.execute("SELECT max(export_id) FROM exports").fetchall()[0][0]
    stored = con.execute("SELECT count(*) FROM annotations WHERE export_id = ?",
                         [eid]).fetchall()[0][0]
    quarantined = con.execute("SELECT count(*) FROM quarantine WHERE export_id = ?",
                              [eid]).fetchall()[0][0]
    con.close()
    assert (stored, quarantined) == (fs.loaded, fs.quarantined)


def test_an_unusable_bbox_is_reported_beside_other_boxes_errors(project):
    # The contract checks labels, not bboxes: box 1's bbox error must not be taken as
    # covered by box 10's label error (/boxes/10 starts with /boxes/1), nor by its own.
    schema = json.loads((project.root / "contract.schema.json").read_text())
    items = schema["properties"]["boxes"]["items"]
    del items["properties"]["bbox"]
    items["required"] = ["label"]
    items.pop("additionalProperties", None)
    (project.root / "contract.schema.json").write_text(json.dumps(schema))
    boxes = [{"label": "car", "bbox": [1, 1, 5, 5]} for _ in range(11)]
    boxes[1] = {"label": "truck", "bbox": "oops"}
    boxes[10]["label"] = "boat"
    fs = project.ingest(project.write("w.jsonl", [record(item="i1", boxes=boxes)])).files[0]
    assert fs.errors_by == {("/boxes/*/bbox", "bboxFormat"): 1,
                            ("/boxes/*/label", "enum"): 2}
    con = project.connect()
    pointers = con.execute("SELECT instance FROM contract_errors ORDER BY 1").fetchall()
    con.close()
    assert pointers == [("/boxes/1/bbox",), ("/boxes/1/label",), ("/boxes/10/label",)]


def test_box_without_usable_bbox_is_a_contract_error_whatever_the_schema(project):
    schema = json.loads((project.root / "contract.schema.json").read_text())
    del schema["properties"]["boxes"]  # a permissive contract
    (project.root / "contract.schema.json").write_text(json.dumps(schema))
    rec = record(item="i1", boxes=[{"label": "car", "bbox": None},
                                   {"label": "car", "bbox": [1, 2, 3]},
                                   {"label": "car", "bbox": [1, 1, 5, 5]}])
    fs = project.ingest(project.write("w.jsonl", [rec])).files[0]
    assert fs.errors_by == {("/boxes/*/bbox", "bboxFormat"): 2}
    con = project.connect()
    rows = con.execute("SELECT box_idx, matchable FROM boxes ORDER BY 1").fetchall()
    con.close()
    assert rows == [(0, False), (1, False), (2, True)]


def test_several_files_one_transaction_one_rebuild(project, monkeypatch):
    import metrics.derived as derived

    calls = []
    real = derived.refresh
    monkeypatch.setattr(derived, "refresh", lambda con, cfg: (calls.append(1), real(con, cfg)))
    a = project.write("a.jsonl", [record(item="i1")])
    b = project.write("b.jsonl", [record(item="i1", annotator="b",
                                         image={"uri": "x", "width": 50, "height": 50})])
    summary = project.ingest(a, b, a)
    assert calls == [1]  # derived tables rebuilt once for the whole ingest
    fa, fb, again = summary.files
    assert (fa.loaded, fb.loaded) == (1, 1)
    # The second file's image size is checked against the first file's.
    assert fb.errors_by == {("/image", "imageSize"): 1}
    assert again.already_ingested and again.loaded == 0 and again.duplicates == 1
    con = project.connect()
    assert con.execute("SELECT count(*) FROM exports").fetchall()[0][0] == 2
    assert con.execute("SELECT value FROM meta WHERE key = 'generation'"
                       ).fetchall()[0][0] == "1"
    con.close()


def test_an_unusable_file_among_good_ones_loads_none_of_them(project):
    good = project.write("good.jsonl", [record(item="i1")])
    empty = project.write("empty.jsonl", [])
    with pytest.raises(FileUnusable, match="empty.*nothing was loaded from any file"):
        project.ingest(good, empty)
    con = project.connect()
    assert con.execute("SELECT count(*) FROM exports").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM annotations").fetchall() == [(0,)]
    con.close()
    assert project.ingest(good).files[0].loaded == 1   # alone, it loads


_ZONES = ["UTC", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu",
          "Africa/Monrovia", "Europe/Dublin", "Pacific/Chatham", "America/St_Johns"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zone=st.sampled_from(_ZONES),
       stamps=st.lists(st.integers(min_value=-2_500_000_000_000_000,  # 1890
                                   max_value=4_200_000_000_000_000),  # 2103
                       min_size=1, max_size=20),
       jitter=st.integers(min_value=0, max_value=59_999_999))
def test_remembered_weeks_are_the_computed_ones(zone, stamps, jitter):
    """`Checker._week` (remembered per quarter hour) is `iso_week` itself, around
    midnights, DST changes, half- and quarter-hour offsets and the odd offsets of old
    local mean times; the same checker serves every timestamp, so remembered quarter
    hours are reused."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(zone)
    checker = ingest_mod.Checker.__new__(ingest_mod.Checker)
    checker.tz, checker._weeks = tz, {}
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    minute = 60 * 10**6
    points = list(stamps)
    for us in stamps:
        # Both sides of the midnight that starts the stamp's ISO week (local time),
        # within one quarter hour.
        local = (epoch + dt.timedelta(microseconds=us)).astimezone(tz)
        midnight = (local - dt.timedelta(days=local.weekday())).replace(
            hour=0, minute=0, second=0, microsecond=0)
        m = int((midnight - epoch) / dt.timedelta(microseconds=1))
        points += [m + k * minute + jitter for k in (-16, -15, -9, -2, -1, 0, 1, 2, 9, 15)]
    for us in points:
        ts = epoch + dt.timedelta(microseconds=us)
        assert checker._week(ts, us) == ingest_mod.iso_week(ts, tz), (zone, ts)


def test_dates_at_the_ends_of_the_range_are_quarantined_not_a_crash(project):
    """Year 1 and year 9999 stamps that the project's time zone (or their own offset)
    moves out of Python's date range: a quarantined line with the reason, in a dry run
    and in an ingest alike."""
    toml = project.root / "labelqa.toml"
    toml.write_text(toml.read_text().replace('timezone = "UTC"',
                                             'timezone = "Pacific/Kiritimati"'))
    path = project.write("edges.jsonl", [
        record(item="a", when="0001-01-01T00:00:00Z"),         # local: before year 1
        record(item="b", when="0001-01-01T00:00:00+01:00"),    # UTC: before year 1
        record(item="c", when="9999-12-31T23:00:00Z"),         # local: after 9999
        record(item="d", when="0999-06-01T10:00:00Z"),
    ])
    dry = check_files(project.config, [path], progress=False).files[0]
    fs = project.ingest(path).files[0]
    for s in (dry, fs):
        assert (s.records, s.loaded, s.quarantined) == (4, 1, 3)
        reasons = dict(s.quarantine_examples)
        assert set(reasons) == {1, 2, 3}
        assert all("out of the date range" in r for r in reasons.values()), reasons
    assert "Pacific/Kiritimati" in reasons[1]
    con = project.connect()
    try:   # a year before 1000 gets the week label the weekly pages read
        assert con.execute("SELECT week FROM annotations").fetchall() == [("0999-W22",)]
    finally:
        con.close()


@pytest.fixture(scope="module")
def any_zone_checkers(tmp_path_factory):
    """A Checker of the test project per time zone (zones of every kind of offset)."""
    import dataclasses

    from conftest import CONFIG, CONTRACT, Project

    root = tmp_path_factory.mktemp("zones")
    (root / "labelqa.toml").write_text(CONFIG, encoding="utf-8")
    (root / "contract.schema.json").write_text(json.dumps(CONTRACT), encoding="utf-8")
    config = Project(root).config
    return [ingest_mod.Checker(dataclasses.replace(config, timezone=z))
            for z in _ZONES + ["Pacific/Kiritimati", "Pacific/Niue"]]


@settings(max_examples=400, deadline=None)
@given(when=st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat(timespec="microseconds")),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat(sep=" ")),
    st.text(max_size=30)),
    pick=st.integers(min_value=0, max_value=9))
def test_any_submitted_at_is_loaded_or_quarantined(any_zone_checkers, when, pick):
    """Whatever `submitted_at` holds, in whatever project time zone: the record is
    loaded (with a week label the weekly code reads) or quarantined with a reason."""
    from metrics.weekly import parse_week

    checker = any_zone_checkers[pick % len(any_zone_checkers)]
    batch = ingest_mod._Batch()
    out = checker.prepare(ingest_mod.Record(1, record(when=when)), 0, batch)
    if isinstance(out, ingest_mod.Bad):
        assert "submitted_at" in out.reason
        assert not batch.ann
    else:
        (row,) = batch.ann
        week = row[10]
        assert parse_week(week) == week


def test_an_unknown_role_is_one_error_whether_or_not_the_schema_names_roles(project):
    fs = project.ingest(project.write("w.jsonl", [record(item="a", role="boss")])).files[0]
    assert fs.errors_by == {("/role", "enum"): 1}   # the project's schema lists the roles
    schema = json.loads((project.root / "contract.schema.json").read_text())
    del schema["properties"]["role"]
    (project.root / "contract.schema.json").write_text(json.dumps(schema))
    fs = project.ingest(project.write("w2.jsonl", [record(item="b", role="boss")])).files[0]
    assert fs.errors_by == {("/role", "enum"): 1}   # labelqa's own check says it
