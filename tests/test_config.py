"""Config loading: a good config becomes typed objects; every bad one is one clear error."""

from __future__ import annotations

import datetime as dt

import pytest

from metrics.config import ConfigError, load_config
from metrics.starter import write_starter
from tests.conftest import CONFIG


def test_loads_typed_config(project):
    cfg = project.config
    assert cfg.name == "t"
    assert cfg.database == project.root.resolve() / "labelqa.duckdb"
    assert cfg.labels["car"] == ("car", "cars", "vehicle")
    assert cfg.fields == {"caption": "free", "weather": "categorical", "tags": "multilabel"}
    assert cfg.agreement.bootstrap == 200 and cfg.agreement.iou_threshold == 0.5
    assert cfg.thresholds["schema_error_rate"] == (0.02, 0.05)  # default
    assert [g.version for g in cfg.guidelines] == ["v1", "v2"]
    assert cfg.guidelines[1].effective == dt.date(2026, 2, 2)
    assert cfg.guidelines[1].relabel == "filter"
    assert [r.id for r in cfg.policy] == ["no-brands", "caption-length",
                                         "no-invented-objects", "hedging"]


def test_project_named_by_file_folder_or_env(project, monkeypatch, tmp_path):
    assert load_config(project.root / "labelqa.toml").name == "t"
    monkeypatch.setenv("LABELQA_PROJECT", str(project.root))
    assert load_config(None).name == "t"
    monkeypatch.delenv("LABELQA_PROJECT")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="--project"):
        load_config(None)


def _bad(project, old: str, new: str) -> ConfigError:
    text = CONFIG.replace(old, new, 1)
    assert text != CONFIG, f"test setup: {old!r} not in config"
    (project.root / "labelqa.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(project.root)
    err = info.value
    assert str(err).startswith(str(project.root / "labelqa.toml"))
    return err


@pytest.mark.parametrize(
    "old, new, key, problem",
    [
        ("bootstrap = 200", "bootstrap = 200\nbogus = 1", "agreement.bogus", "unknown key"),
        ("min_units = 10", 'min_units = "ten"', "agreement.min_units", "expected an integer"),
        ("iou_threshold = 0.5", "iou_threshold = 1.5", "agreement.iou_threshold",
         "must be in"),
        ("iou_threshold = 0.5", "iou_threshold = true", "agreement.iou_threshold", "boolean"),
        ('contract = "contract.schema.json"', 'contract = "missing.json"',
         "project.contract", "file not found"),
        ('database = "labelqa.duckdb"', 'database = "."', "project.database", "is a folder"),
        ('database = "labelqa.duckdb"', 'database = "contract.schema.json/x.duckdb"',
         "project.database", "a part of the path is a file"),
        ('weather = "categorical"', 'weather = "ordinal"', "fields.weather",
         "unknown field kind"),
        ('patterns = ["nike", "coca[- ]?cola"]', 'patterns = ["nike", "coca("]',
         "policy[0].patterns[1]", "RE2"),
        ('timezone = "UTC"', 'timezone = "Mars/Olympus"', "project.timezone",
         "unknown time zone"),
        ('name = "t"\n', "", "project.name", "missing"),
        ("[sample]", "[sampel]", "sampel", "unknown key"),
        ('effective = "2026-02-02"', 'effective = "next week"', "guideline[1].effective",
         "not a date"),
        ('relabel = "filter"', 'relabel = "maybe"', "guideline[1].relabel", "must be one of"),
        ('type = "hedging"', 'type = "vibes"', "policy[3]", "type"),
    ],
)
def test_bad_config_names_key_and_problem(project, old, new, key, problem):
    err = _bad(project, old, new)
    assert err.key.startswith(key), (err.key, str(err))
    assert problem.lower() in err.problem.lower(), str(err)


def test_bad_threshold_and_toml_syntax(project):
    text = CONFIG + "\n[thresholds]\nschema_error_rate = [0.5, 0.1]\n"
    (project.root / "labelqa.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"thresholds\.schema_error_rate: need 0 <= amber"):
        load_config(project.root)
    (project.root / "labelqa.toml").write_text("[project\nname=", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(project.root)


def test_contract_must_be_a_schema(project):
    (project.root / "contract.schema.json").write_text('{"type": 12}', encoding="utf-8")
    with pytest.raises(ConfigError, match="project.contract: .*not a valid JSON Schema"):
        load_config(project.root)
    (project.root / "contract.schema.json").write_text("{nope", encoding="utf-8")
    with pytest.raises(ConfigError, match="not JSON"):
        load_config(project.root)


def test_policy_field_must_be_declared(project):
    err = _bad(project, 'fields = ["caption"]\nseverity = "error"\n\n[[policy]]\nid = "caption-length"',
               'fields = ["title"]\nseverity = "error"\n\n[[policy]]\nid = "caption-length"')
    assert err.key == "policy[0].fields"


def test_starter_project_loads_and_refuses_overwrite(tmp_path):
    written = write_starter(tmp_path / "new")
    cfg = load_config(tmp_path / "new")
    assert cfg.name == "new" and cfg.guidelines == ()
    assert {p.name for p in written} == {"labelqa.toml", "contract.schema.json"}
    with pytest.raises(FileExistsError):
        write_starter(tmp_path / "new")
