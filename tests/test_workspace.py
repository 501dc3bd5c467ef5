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
