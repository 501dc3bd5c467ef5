"""The QA project config (`labelqa.toml`), loaded and validated into typed objects.

Every problem is one `ConfigError` naming the file, the key and what is wrong, so a
team editing the file by hand sees exactly where to look.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from metrics.policy import PolicyError, Rule, compile_rules

CONFIG_NAME = "labelqa.toml"
FIELD_KINDS = ("free", "categorical", "multilabel")
RELABEL_ADVICE = ("none", "filter", "relabel")
METRIC_KEYS = ("schema_error_rate", "policy_violation_rate", "visual_disagreement_rate")


class ConfigError(Exception):
    """A config problem: `file`, `key` (dotted, `""` for the whole file) and `problem`."""

    def __init__(self, file: Path | str, key: str, problem: str):
        self.file = Path(file)
        self.key = key
        self.problem = problem
        where = f"{self.file}: {key}: " if key else f"{self.file}: "
        super().__init__(where + problem)


@dataclass(frozen=True)
class AgreementConfig:
    iou_threshold: float = 0.5
    low_overlap: float = 0.75
    bootstrap: int = 1000
    min_units: int = 100


@dataclass(frozen=True)
class SampleConfig:
    rate: float = 0.10
    salt: str = ""
    pinned: tuple[str, ...] = ()


@dataclass(frozen=True)
class Guideline:
    version: str
    effective: dt.date
    summary: str = ""
    fields: tuple[str, ...] = ()
    relabel: str = "none"


@dataclass(frozen=True)
class DashboardConfig:
    max_upload_mb: float = 200.0


@dataclass(frozen=True)
class ProjectConfig:
    file: Path
    name: str
    database: Path
    images: Path
    contract: Path
    timezone: str = "UTC"
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    agreement: AgreementConfig = AgreementConfig()
    thresholds: dict[str, tuple[float, float]] = field(default_factory=dict)
    sample: SampleConfig = SampleConfig()
    policy: tuple[Rule, ...] = ()
    guidelines: tuple[Guideline, ...] = ()
    dashboard: DashboardConfig = DashboardConfig()

    @property
    def root(self) -> Path:
        return self.file.parent

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def contract_schema(self) -> dict:
        return orjson.loads(self.contract.read_bytes())

    def threshold(self, metric: str) -> tuple[float, float]:
        return self.thresholds[metric]


DEFAULT_THRESHOLDS = {
    "schema_error_rate": (0.02, 0.05),
    "policy_violation_rate": (0.03, 0.08),
    "visual_disagreement_rate": (0.10, 0.20),
}

_SECTIONS = {
    "project", "labels", "fields", "agreement", "thresholds", "sample", "policy",
    "guideline", "dashboard",
}


class _Reader:
    """Typed access to one TOML table, raising ConfigError with the dotted key."""

    def __init__(self, file: Path, prefix: str, table: Any):
        self.file = file
        self.prefix = prefix
        if not isinstance(table, dict):
            raise ConfigError(file, prefix, f"expected a table, got {_kind(table)}")
        self.table = table

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), problem)

    def only(self, allowed: set[str] | tuple[str, ...]) -> None:
        for name in self.table:
            if name not in allowed:
                raise self.fail(name, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def get(self, name: str, kinds: type | tuple[type, ...], default: Any = ..., *,
            what: str) -> Any:
        if name not in self.table:
            if default is ...:
                raise self.fail(name, f"missing (expected {what})")
            return default
        value = self.table[name]
        # bool is an int in Python; a number key must not accept `true`.
        if isinstance(value, bool) and bool not in _as_tuple(kinds):
            raise self.fail(name, f"expected {what}, got a boolean")
        if not isinstance(value, kinds):
            raise self.fail(name, f"expected {what}, got {_kind(value)} {value!r}")
        return value

    def number(self, name: str, default: float, *, lo: float, hi: float,
               lo_open: bool = False) -> float:
        value = float(self.get(name, (int, float), default, what="a number"))
        if not (lo < value if lo_open else lo <= value) or value > hi:
            bracket = "(" if lo_open else "["
            raise self.fail(name, f"must be in {bracket}{lo}, {hi}], got {value}")
        return value

    def integer(self, name: str, default: int, *, lo: int) -> int:
        value = self.get(name, int, default, what="an integer")
        if value < lo:
            raise self.fail(name, f"must be at least {lo}, got {value}")
        return value

    def string_list(self, name: str, default: Any = ..., *, nonempty: bool = False) -> tuple:
        value = self.get(name, list, default, what="a list of strings")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail(f"{name}[{i}]", f"expected a string, got {_kind(item)}")
        if nonempty and not value:
            raise self.fail(name, "must not be empty")
        return tuple(value)


def _as_tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _kind(value: Any) -> str:
    return {
        dict: "a table", list: "a list", str: "a string", bool: "a boolean",
        int: "an integer", float: "a number",
    }.get(type(value), type(value).__name__)


def find_config(project: str | os.PathLike | None = None, *, env: bool = True) -> Path:
    """The `labelqa.toml` named by `project` (file or folder), `LABELQA_PROJECT`, or ./.

    Raises ConfigError saying how to name one when none is found.
    """
    candidates: list[tuple[str, Path]] = []
    if project:
        candidates.append(("--project", Path(project)))
    elif env and os.environ.get("LABELQA_PROJECT"):
        candidates.append(("LABELQA_PROJECT", Path(os.environ["LABELQA_PROJECT"])))
    else:
        candidates.append(("current folder", Path.cwd()))
    source, path = candidates[0]
    target = path / CONFIG_NAME if path.is_dir() else path
    if not target.is_file():
        hint = (
            "pass --project DIR (a folder holding labelqa.toml, or the file itself), "
            "set LABELQA_PROJECT, or create one with `labelqa init DIR`"
        )
        raise ConfigError(target, "", f"no project config found ({source}); {hint}")
    return target.resolve()


def load_config(project: str | os.PathLike | None = None) -> ProjectConfig:
    """Read and validate a project config; see DESIGN.md "Project config"."""
    file = find_config(project)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "", f"not UTF-8 text ({exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"not valid TOML: {exc}") from None
    return parse_config(raw, file)


def parse_config(raw: dict, file: Path) -> ProjectConfig:
    top = _Reader(file, "", raw)
    top.only(_SECTIONS)
    root = file.parent

    proj = _Reader(file, "project", top.get("project", dict, what="a [project] table"))
    proj.only({"name", "database", "images", "contract", "timezone"})
    name = proj.get("name", str, what="a string")
    database = root / proj.get("database", str, "labelqa.duckdb", what="a path string")
    if database.is_dir():
        raise proj.fail("database", f"{database} is a folder; name the database file "
                        "(e.g. \"labelqa.duckdb\")")
    if any(parent.exists() and not parent.is_dir() for parent in database.parents):
        raise proj.fail("database", f"{database}: a part of the path is a file, not a "
                        "folder")
    images = root / proj.get("images", str, "images", what="a path string")
    contract_rel = proj.get("contract", str, what="a path to a JSON Schema file")
    contract = root / contract_rel
    timezone = proj.get("timezone", str, "UTC", what="an IANA time zone name")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise proj.fail("timezone", f"unknown time zone {timezone!r}") from None
    _check_contract(file, contract)

    labels: dict[str, tuple[str, ...]] = {}
    lab = _Reader(file, "labels", top.get("labels", dict, {}, what="a [labels] table"))
    for label in lab.table:
        words = lab.string_list(label, nonempty=True)
        labels[label] = tuple(w.strip() for w in words if w.strip())

    fields: dict[str, str] = {}
    fld = _Reader(file, "fields", top.get("fields", dict, {}, what="a [fields] table"))
    for fname in fld.table:
        kind = fld.get(fname, str, what="one of " + ", ".join(FIELD_KINDS))
        if kind not in FIELD_KINDS:
            raise fld.fail(fname, f"unknown field kind {kind!r} (use {', '.join(FIELD_KINDS)})")
        fields[fname] = kind

    agr = _Reader(file, "agreement", top.get("agreement", dict, {}, what="a table"))
    agr.only({"iou_threshold", "low_overlap", "bootstrap", "min_units"})
    agreement = AgreementConfig(
        iou_threshold=agr.number("iou_threshold", 0.5, lo=0.0, hi=1.0, lo_open=True),
        low_overlap=agr.number("low_overlap", 0.75, lo=0.0, hi=1.0, lo_open=True),
        bootstrap=agr.integer("bootstrap", 1000, lo=0),
        min_units=agr.integer("min_units", 100, lo=0),
    )

    thr = _Reader(file, "thresholds", top.get("thresholds", dict, {}, what="a table"))
    thr.only(METRIC_KEYS)
    thresholds = dict(DEFAULT_THRESHOLDS)
    for metric in METRIC_KEYS:
        if metric not in thr.table:
            continue
        pair = thr.get(metric, list, what="[amber, red]")
        if len(pair) != 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair
        ):
            raise thr.fail(metric, f"expected two numbers [amber, red], got {pair!r}")
        amber, red = float(pair[0]), float(pair[1])
        if not 0 <= amber <= red <= 1:
            raise thr.fail(metric, f"need 0 <= amber <= red <= 1, got [{amber}, {red}]")
        thresholds[metric] = (amber, red)

    smp = _Reader(file, "sample", top.get("sample", dict, {}, what="a table"))
    smp.only({"rate", "salt", "pinned"})
    sample = SampleConfig(
        rate=smp.number("rate", 0.10, lo=0.0, hi=1.0),
        salt=smp.get("salt", str, name, what="a string"),
        pinned=smp.string_list("pinned", []),
    )

    policies = top.get("policy", list, [], what="[[policy]] tables")
    try:
        policy = compile_rules(policies, labels=labels)
    except PolicyError as exc:
        raise ConfigError(file, exc.key, exc.problem) from None
    for i, rule in enumerate(policy):
        for fname in rule.fields:
            if fields and fname not in fields:
                raise ConfigError(
                    file, f"policy[{i}].fields",
                    f"field {fname!r} is not declared in [fields]",
                )

    guidelines = []
    seen_versions: set[str] = set()
    for i, gl in enumerate(top.get("guideline", list, [], what="[[guideline]] tables")):
        g = _Reader(file, f"guideline[{i}]", gl)
        g.only({"version", "effective", "summary", "fields", "relabel"})
        version = g.get("version", str, what="a version string")
        if version in seen_versions:
            raise g.fail("version", f"duplicate guideline version {version!r}")
        seen_versions.add(version)
        effective = g.get("effective", (str, dt.date), what="a date (YYYY-MM-DD)")
        if isinstance(effective, dt.datetime):
            effective = effective.date()
        elif isinstance(effective, str):
            try:
                effective = dt.date.fromisoformat(effective)
            except ValueError:
                raise g.fail("effective", f"not a date (YYYY-MM-DD): {effective!r}") from None
        relabel = g.get("relabel", str, "none", what="none, filter or relabel")
        if relabel not in RELABEL_ADVICE:
            raise g.fail("relabel", f"must be one of {', '.join(RELABEL_ADVICE)}, "
                         f"got {relabel!r}")
        guidelines.append(Guideline(
            version=version, effective=effective,
            summary=g.get("summary", str, "", what="a string"),
            fields=g.string_list("fields", []), relabel=relabel,
        ))
    guidelines.sort(key=lambda gl: (gl.effective, gl.version))

    dash = _Reader(file, "dashboard", top.get("dashboard", dict, {}, what="a table"))
    dash.only({"max_upload_mb"})
    dashboard = DashboardConfig(
        max_upload_mb=dash.number("max_upload_mb", 200.0, lo=0.0, hi=1e6, lo_open=True)
    )

    return ProjectConfig(
        file=file, name=name, database=database, images=images, contract=contract,
        timezone=timezone, labels=labels, fields=fields, agreement=agreement,
        thresholds=thresholds, sample=sample, policy=policy,
        guidelines=tuple(guidelines), dashboard=dashboard,
    )


def _check_contract(file: Path, contract: Path) -> None:
    import jsonschema_rs

    if not contract.is_file():
        raise ConfigError(file, "project.contract", f"file not found: {contract}")
    try:
        schema = orjson.loads(contract.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ConfigError(file, "project.contract", f"{contract.name} is not JSON: {exc}") from None
    try:
        jsonschema_rs.Draft202012Validator(schema)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        raise ConfigError(
            file, "project.contract", f"{contract.name} is not a valid JSON Schema: {exc}"
        ) from None
