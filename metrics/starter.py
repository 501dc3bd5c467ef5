"""The starter project `labelqa init DIR` writes: a commented config and a contract."""

from __future__ import annotations

from pathlib import Path

STARTER_CONFIG = '''\
# labelqa QA project. Paths are relative to this file.
# Docs: README.md "Project config". Every section but [project] is optional.

[project]
name = "{name}"
database = "labelqa.duckdb"        # created by `labelqa ingest`
images = "images"                  # image URIs resolve under here and nowhere else
contract = "contract.schema.json"  # JSON Schema (draft 2020-12) every annotation must satisfy
timezone = "UTC"                   # weeks and guideline dates are midnight here

# The label set, with the words text may use for each (whole words, case-insensitive;
# list plural forms explicitly). Used by presence agreement and the cross-modal rules.
[labels]
car = ["car", "cars", "vehicle", "vehicles"]
person = ["person", "people", "man", "men", "woman", "women"]

# How each field under "fields" is compared: free | categorical | multilabel.
[fields]
caption = "free"
tags = "multilabel"

[agreement]
iou_threshold = 0.5   # boxes overlapping less than this do not match
low_overlap = 0.75    # matched pairs below this are flagged as low overlap
bootstrap = 1000      # resamples for confidence intervals
min_units = 100       # fewer units than this: a small-sample warning

[thresholds]          # traffic lights and `report --fail-on`: [amber, red]
schema_error_rate = [0.02, 0.05]
policy_violation_rate = [0.03, 0.08]
visual_disagreement_rate = [0.10, 0.20]

[sample]
rate = 0.10           # share of items in the stable, double-annotated sample
salt = "{name}"       # changing it draws a different sample
pinned = []           # item ids always in the sample (e.g. gold items)

# Text rules. Types: banned, length, pattern, invented_objects, unmentioned_objects,
# hedging. Patterns are RE2 syntax.
[[policy]]
id = "caption-length"
type = "length"
fields = ["caption"]
min_words = 5
max_words = 40
severity = "error"

[[policy]]
id = "no-invented-objects"
type = "invented_objects"   # the text names a label that has no box of it
fields = ["caption"]
severity = "error"

# The guideline log: one [[guideline]] per version of the written guidelines.
# [[guideline]]
# version = "v2"
# effective = "2026-10-05"
# summary = "Captions must not guess brands."
# fields = ["caption"]
# relabel = "filter"        # none | filter | relabel
'''

STARTER_CONTRACT = '''\
{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "One annotation (a line of a native export)",
  "type": "object",
  "required": ["item_id", "annotator_id", "submitted_at", "image", "boxes", "fields"],
  "properties": {
    "item_id": {"type": "string", "minLength": 1},
    "annotation_id": {"type": "string", "minLength": 1},
    "annotator_id": {"type": "string", "minLength": 1},
    "role": {"enum": ["annotator", "reviewer", "gold", "model"]},
    "submitted_at": {"type": "string"},
    "guideline_version": {"type": "string"},
    "image": {
      "type": "object",
      "required": ["uri", "width", "height"],
      "properties": {
        "uri": {"type": "string"},
        "width": {"type": "integer", "exclusiveMinimum": 0},
        "height": {"type": "integer", "exclusiveMinimum": 0}
      }
    },
    "boxes": {
      "type": "array",
      "items": {
        "type": "object",
        "required": ["label", "bbox"],
        "properties": {
          "label": {"enum": ["car", "person"]},
          "bbox": {"type": "array", "items": {"type": "number"},
                   "minItems": 4, "maxItems": 4},
          "attributes": {"type": "object"}
        },
        "additionalProperties": false
      }
    },
    "fields": {
      "type": "object",
      "required": ["caption"],
      "properties": {
        "caption": {"type": "string", "minLength": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true}
      }
    },
    "prefilled": {"type": "boolean"},
    "reviewed": {"type": "boolean"},
    "reviewed_by": {"type": "string"},
    "draft": {"type": "object"}
  }
}
'''


def write_starter(folder: Path, *, force: bool = False) -> list[Path]:
    """Write a starter project into `folder`; refuses to overwrite unless `force`."""
    folder.mkdir(parents=True, exist_ok=True)
    name = folder.resolve().name or "project"
    files = {
        folder / "labelqa.toml": STARTER_CONFIG.format(name=name.replace('"', "")),
        folder / "contract.schema.json": STARTER_CONTRACT,
    }
    existing = [p for p in files if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{existing[0]} exists (use --force to overwrite)")
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    (folder / "images").mkdir(exist_ok=True)
    (folder / "exports").mkdir(exist_ok=True)
    return list(files)
