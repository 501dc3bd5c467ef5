"""Derived tables follow the config: editing the sample or thresholds rebuilds them."""

from __future__ import annotations

import json

from conftest import record

from metrics.cli import main


def _visual(capsys, project) -> dict:
    assert main(["report", "--project", str(project.root), "--json",
                 "--week", "2026-W02"]) == 0
    return json.loads(capsys.readouterr().out)["visual"]


def test_config_change_rebuilds_derived_tables(project, capsys):
    boxes_a = [{"label": "car", "bbox": [10, 10, 30, 20]}]
    boxes_b = [{"label": "person", "bbox": [10, 10, 30, 20]}]
    project.ingest(project.write("w.jsonl", [
        record(item="i1", annotator="a", boxes=boxes_a),
        record(item="i1", annotator="b", boxes=boxes_b),
    ]))
    v = _visual(capsys, project)
    assert (v["items"], v["pairs"], v["class_disagreements"]) == (1, 1, 1)

    cfg = project.root / "labelqa.toml"
    cfg.write_text(cfg.read_text().replace("rate = 1.0", "rate = 0.0"))
    v = _visual(capsys, project)
    assert (v["items"], v["pairs"]) == (0, 0)  # the sample is empty now

    cfg.write_text(cfg.read_text().replace('pinned = []', 'pinned = ["i1"]'))
    v = _visual(capsys, project)
    assert (v["items"], v["pairs"]) == (1, 1)


def test_timezone_change_moves_weeks(project, capsys):
    # Sunday 2026-01-11 13:00 UTC is Monday in Auckland: the next ISO week there.
    project.ingest(project.write("w.jsonl", [record(item="a", when="2026-01-11T13:00:00Z")]))
    assert main(["report", "--project", str(project.root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["week"] == "2026-W02"
    cfg = project.root / "labelqa.toml"
    cfg.write_text(cfg.read_text().replace('timezone = "UTC"',
                                           'timezone = "Pacific/Auckland"'))
    assert main(["report", "--project", str(project.root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["week"], data["annotations"]) == ("2026-W03", 1)
    # And new exports land in the same zone's weeks.
    project.ingest(project.write("w2.jsonl", [record(item="b", when="2026-01-11T13:00:00Z")]))
    assert main(["report", "--project", str(project.root), "--json",
                 "--week", "2026-W03"]) == 0
    assert json.loads(capsys.readouterr().out)["annotations"] == 2
