"""What the dashboard's overview, schema-error, text-policy and trends pages show beyond
the report: the week at a glance (the three metrics with their delta to the previous ISO
week, sparklines, movers, small-sample warnings, the guideline in force) and the example
annotations behind M1 and M2 with their errors and violations.

Pure functions of ``(con, config, ...)`` like the rest of `metrics`: bound parameters
only, JSON-ready dicts or DataFrames out, nothing about Streamlit. The pages draw them;
the HTML report (:mod:`metrics.html_report`) prints them.
"""

from __future__ import annotations

import io
from typing import Any

import duckdb
import orjson
import pandas as pd

from metrics import derived
from metrics.config import ProjectConfig
from metrics.report import build_report
from metrics.store import Alongside
from metrics.weekly import (
    REPORT_WEEKS,
    guideline_log,
    parse_week,
    previous_week,
    series,
    top_movers,
    version_in_force,
    weeks,
)

__all__ = [
    "METRICS",
    "available_weeks",
    "csv_bytes",
    "policy_examples",
    "schema_examples",
    "week_overview",
]

#: (metric key, report section, rate key, series prefix, name, what its units are)
METRICS = (
    ("schema_error_rate", "schema", "error_rate", "schema", "Schema error rate",
     "annotations"),
    ("policy_violation_rate", "policy", "violation_rate", "policy",
     "Text policy violation rate", "annotations"),
    ("visual_disagreement_rate", "visual", "disagreement_rate", "visual",
     "Visual disagreement (stable sample)", "box units"),
)


def _trend_and_movers(con: duckdb.DuckDBPyConnection, config: ProjectConfig,
                      week: str) -> tuple[pd.DataFrame, list[dict]]:
    return (series(con, config, last=REPORT_WEEKS, until=week, ci=False),
            top_movers(con, config, week))


def available_weeks(con: duckdb.DuckDBPyConnection, config: ProjectConfig) -> list[str]:
    """The weeks with data, ascending (:func:`metrics.weekly.weeks` in the
    ``(con, config)`` shape the dashboard's cached calls take)."""
    return weeks(con)


def _num(value: Any) -> float | None:
    """A float, or None for a missing / NaN value."""
    if value is None:
        return None
    value = float(value)
    return None if value != value else value


def _guideline_dict(g) -> dict | None:
    if g is None:
        return None
    return {"version": g.version, "effective": g.effective.isoformat(), "summary": g.summary,
            "fields": list(g.fields), "relabel": g.relabel}


def _warnings(report: dict, config: ProjectConfig) -> list[str]:
    """Small-sample warnings of a week's report, each saying which number it concerns."""
    out: list[str] = []
    n, min_units = report["annotations"], config.agreement.min_units
    if 0 < n < min_units:
        out.append(f"Schema and policy rates: {n} annotations this week, below min_units "
                   f"{min_units}: treat with care")
    visual = report["visual"]
    out += [f"Visual disagreement: {w}" for w in visual.get("warnings", [])]
    kinds = [("presence", visual.get("presence")), ("class", visual.get("class")),
             ("schema", visual.get("schema"))]
    kinds += [(f"text · {field}", part) for field, part in visual.get("text", {}).items()]
    for name, part in kinds:
        for w in (part or {}).get("warnings", []):
            out.append(f"Agreement, {name}: {w}")
    return list(dict.fromkeys(out))


def week_overview(con: duckdb.DuckDBPyConnection, config: ProjectConfig, week: str) -> dict:
    """Everything the weekly overview shows for ``week``.

    Each metric's rate, CI and status are the report's (:func:`metrics.report.build_report`,
    so the page and ``labelqa report --json`` agree); the delta is ``rate(w) − rate(w−1)``
    against the previous *ISO* week (``None`` with a reason when either is undefined),
    and the sparkline is the last :data:`metrics.weekly.REPORT_WEEKS` weeks with data up
    to ``week`` (:func:`metrics.weekly.series`), whose p-chart also gives the swing.

    Returns
    -------
    dict
        ``week``, ``previous_week``, ``annotations``, ``report`` (the full report),
        ``metrics`` [{key, section, name, unit_name, rate, ci, status, reason,
        thresholds [amber, red], events, units, previous, delta, delta_reason, swing,
        spark {weeks, rates}}], ``movers`` (:func:`metrics.weekly.top_movers`),
        ``warnings`` (small-sample warnings), ``guideline`` (the version in force or
        None), ``changes`` (guideline versions taking effect in ``week``) and
        ``visual_sample`` {items, pairs}.
    """
    week = parse_week(week)
    prev = previous_week(week)
    derived.ensure(con, config)   # here, not in both lines at once
    # The report on ``con``, the sparklines and movers meanwhile on a cursor.
    with Alongside(con, _trend_and_movers, config, week) as side:
        report = build_report(con, config, week)
    trend, movers = side.result()
    rows = {r["week"]: r for r in trend.to_dict("records")}
    this, before = rows.get(week), rows.get(prev)
    metrics = []
    for key, section, rate_key, prefix, name, unit_name in METRICS:
        part = report[section]
        rate = part[rate_key]
        previous = _num(before[f"{prefix}_rate"]) if before else None
        if rate is None:
            delta, delta_reason = None, f"no rate in {week}"
        elif previous is None:
            delta, delta_reason = None, f"no rate in {prev}"
        else:
            delta, delta_reason = rate - previous, None
        if prefix == "visual":
            events = part["class_disagreements"] + part["presence_disagreements"]
            units = events + part["agreements"]
        else:
            events = int(this[f"{prefix}_errors"]) if this else 0
            units = report["annotations"]
        metrics.append({
            "key": key, "section": section, "name": name, "unit_name": unit_name,
            "rate": rate, "ci": part[rate_key + "_ci"], "status": part["status"],
            "reason": part.get(rate_key + "_reason"),
            "thresholds": list(config.threshold(key)), "events": int(events),
            "units": int(units), "previous": previous, "delta": delta,
            "delta_reason": delta_reason,
            "swing": this[f"{prefix}_swing"] if this else None,
            "spark": {"weeks": trend["week"].tolist(),
                      "rates": [_num(v) for v in trend[f"{prefix}_rate"]]},
        })
    return {
        "week": week,
        "previous_week": prev,
        "annotations": report["annotations"],
        "report": report,
        "metrics": metrics,
        "movers": movers,
        "warnings": _warnings(report, config),
        "guideline": _guideline_dict(version_in_force(config, week)),
        "changes": [g for g in guideline_log(config) if g["week"] == week],
        "visual_sample": {"items": report["visual"]["items"],
                          "pairs": report["visual"]["pairs"]},
    }


# -- examples behind M1 and M2 -----------------------------------------------------------

_COUNTED = """counted AS NOT MATERIALIZED (
    SELECT * FROM current_annotations WHERE role IN ('annotator', 'reviewer', 'gold')
)"""

# Annotations of A_w with at least one contract error matching the filters; all of their
# errors listed. NULL filters match everything.
_SCHEMA_EXAMPLES_SQL = f"""
WITH {_COUNTED},
hit AS (
    SELECT DISTINCT e.ann_key
    FROM contract_errors e JOIN counted a USING (ann_key)
    WHERE a.week = $week
      AND ($path IS NULL OR e.pointer = $path)
      AND ($keyword IS NULL OR e.keyword = $keyword)
      AND ($annotator IS NULL OR a.annotator_id = $annotator)
      AND ($role IS NULL OR a.role = $role)
),
shown AS (
    SELECT a.ann_key, a.item_id, a.annotation_id, a.version, a.annotator_id, a.role,
           a.submitted_at, a.line, x.name AS export, count(*) OVER () AS total
    FROM counted a JOIN hit USING (ann_key) LEFT JOIN exports x USING (export_id)
    ORDER BY a.item_id, a.annotation_id
    LIMIT $limit
)
SELECT s.item_id, s.annotation_id, s.version, s.annotator_id, s.role, s.submitted_at,
       s.export, s.line, s.total,
       count(*) AS errors,
       string_agg(e.instance || ' [' || e.keyword || '] ' || e.message, '; '
                  ORDER BY e.instance, e.keyword, e.message) AS details
FROM shown s JOIN contract_errors e USING (ann_key)
GROUP BY ALL
ORDER BY s.item_id, s.annotation_id
"""


def schema_examples(con: duckdb.DuckDBPyConnection, config: ProjectConfig, week: str, *,
                    path: str | None = None, keyword: str | None = None,
                    annotator: str | None = None, role: str | None = None,
                    limit: int = 500) -> dict:
    """The annotations of ``A_w`` with contract errors, for the examples table.

    An annotation is listed when one of its errors matches ``path`` (the grouped JSON
    Pointer, array indices as ``*``) and ``keyword``, and it is by ``annotator`` in
    ``role`` (``None`` matches all). All its errors are listed in ``details``.

    Returns
    -------
    dict
        ``total`` (matching annotations), ``examples``: DataFrame of at most ``limit``
        rows sorted by item: item_id, annotation_id, version, annotator_id, role,
        submitted_at, export, line, errors (count), details
        (``instance [keyword] message; ...``).
    """
    week = parse_week(week)
    df = con.execute(_SCHEMA_EXAMPLES_SQL, {
        "week": week, "path": path, "keyword": keyword, "annotator": annotator,
        "role": role, "limit": int(limit),
    }).df()
    total = int(df["total"].iloc[0]) if len(df) else 0
    return {"total": total, "examples": df.drop(columns=["total"]).reset_index(drop=True)}


_POLICY_HIT_SQL = f"""
WITH {_COUNTED},
hit AS (
    SELECT v.ann_key, bool_or(v.severity = 'error') AS has_error
    FROM violations v JOIN counted a USING (ann_key)
    WHERE a.week = $week
      AND ($rule IS NULL OR v.rule = $rule)
      AND ($field IS NULL OR v.field = $field)
      AND ($severity IS NULL OR v.severity = $severity)
      AND ($annotator IS NULL OR a.annotator_id = $annotator)
    GROUP BY v.ann_key
)
SELECT a.ann_key, a.item_id, a.annotation_id, a.version, a.annotator_id, a.role,
       a.submitted_at, a.guideline_version, CAST(a.fields AS VARCHAR) AS fields,
       count(*) OVER () AS total
FROM counted a JOIN hit USING (ann_key)
ORDER BY hit.has_error DESC, a.item_id, a.annotation_id
LIMIT $limit
"""

_POLICY_VIOLATIONS_SQL = """
SELECT ann_key, rule, field, element, severity, excerpt, start_pos, end_pos, label
FROM violations
WHERE list_contains($keys, ann_key)
ORDER BY ann_key, field, element NULLS FIRST, start_pos, rule
"""

_POLICY_BOXES_SQL = """
SELECT ann_key, label, count(*) AS count
FROM boxes
WHERE list_contains($keys, ann_key)
GROUP BY ann_key, label
ORDER BY ann_key, label
"""


def _field_text(fields: Any, field: str, element: int | None) -> str | None:
    """The text a violation's offsets point into: the field, or one of its elements."""
    if not isinstance(fields, dict) or field not in fields:
        return None
    value = fields[field]
    if element is not None:
        if not isinstance(value, list) or not 0 <= element < len(value):
            return None
        value = value[element]
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def policy_examples(con: duckdb.DuckDBPyConnection, config: ProjectConfig, week: str, *,
                    rule: str | None = None, field: str | None = None,
                    severity: str | None = None, annotator: str | None = None,
                    limit: int = 50) -> dict:
    """The annotations of ``A_w`` with text policy violations, with the words that broke
    each rule.

    An annotation is listed when one of its violations matches ``rule``, ``field`` and
    ``severity`` (``error`` | ``warning``) and it is by ``annotator`` (``None`` matches
    all); all of its violations are returned, those matching the filters marked.

    Returns
    -------
    dict
        ``total`` (matching annotations) and ``examples``, at most ``limit``: those with
        a matching ``error`` violation first, then by item; each {item_id, annotation_id, version, annotator_id, role, submitted_at
        (ISO text), guideline_version, texts [{field, element, text, spans [[start, end]]}]
        (the texts the matching violations point into; spans in code points, end
        exclusive, of the offending words: a rule about the whole text, such as length,
        has none), violations [{rule, field, element, severity, excerpt, start, end,
        label, match}], boxes [{label, count}] (the boxes the annotation has: with
        ``no-invented-objects``, ``label`` is what the text named without a box)}.
    """
    week = parse_week(week)
    if severity is not None and severity not in ("error", "warning"):
        raise ValueError(f"severity must be 'error' or 'warning', got {severity!r}")
    rows = con.execute(_POLICY_HIT_SQL, {
        "week": week, "rule": rule, "field": field, "severity": severity,
        "annotator": annotator, "limit": int(limit),
    }).df()
    if rows.empty:
        return {"total": 0, "examples": []}
    keys = [int(k) for k in rows["ann_key"]]
    violations = con.execute(_POLICY_VIOLATIONS_SQL, {"keys": keys}).df()
    boxes = con.execute(_POLICY_BOXES_SQL, {"keys": keys}).df()
    by_key_v = {k: g for k, g in violations.groupby("ann_key", sort=False)}
    by_key_b = {k: g for k, g in boxes.groupby("ann_key", sort=False)}
    examples = []
    for r in rows.to_dict("records"):
        fields = orjson.loads(r["fields"]) if r["fields"] else {}
        vs = []
        texts: dict[tuple[str, int | None], dict] = {}
        g = by_key_v.get(r["ann_key"])
        for v in ([] if g is None else g.to_dict("records")):
            element = None if pd.isna(v["element"]) else int(v["element"])
            match = ((rule is None or v["rule"] == rule)
                     and (field is None or v["field"] == field)
                     and (severity is None or v["severity"] == severity))
            vs.append({"rule": v["rule"], "field": v["field"], "element": element,
                       "severity": v["severity"], "excerpt": v["excerpt"],
                       "start": int(v["start_pos"]), "end": int(v["end_pos"]),
                       "label": None if pd.isna(v["label"]) else v["label"],
                       "match": bool(match)})
            if not match:
                continue
            text = _field_text(fields, v["field"], element)
            if text is None:
                continue
            entry = texts.setdefault((v["field"], element), {
                "field": v["field"], "element": element, "text": text, "spans": []})
            # A rule about the whole text (length, pattern) has no offending words.
            if 0 < v["end_pos"] - v["start_pos"] < len(text):
                entry["spans"].append([int(v["start_pos"]), int(v["end_pos"])])
        vs.sort(key=lambda v: (not v["match"], v["severity"] != "error", v["field"],
                               v["start"], v["rule"]))
        b = by_key_b.get(r["ann_key"])
        examples.append({
            "item_id": r["item_id"], "annotation_id": r["annotation_id"],
            "version": int(r["version"]), "annotator_id": r["annotator_id"],
            "role": r["role"], "submitted_at": pd.Timestamp(r["submitted_at"]).isoformat(),
            "guideline_version": (None if pd.isna(r["guideline_version"])
                                  else r["guideline_version"]),
            "texts": list(texts.values()),
            "violations": vs,
            "boxes": [] if b is None else [
                {"label": None if pd.isna(x["label"]) else x["label"],
                 "count": int(x["count"])} for x in b.to_dict("records")],
        })
    return {"total": int(rows["total"].iloc[0]), "examples": examples}


# -- downloads ---------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_bytes(df: pd.DataFrame) -> bytes:
    """``df`` as UTF-8 CSV for a download, with text cells that a spreadsheet would read
    as a formula (starting with ``= + - @``, tab or CR) prefixed by ``'`` (OWASP "CSV
    injection"); annotation text is user data."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(
                lambda v: "'" + v if isinstance(v, str) and v.startswith(_FORMULA_START)
                else v)
    buf = io.StringIO()
    out.to_csv(buf, index=False)
    return buf.getvalue().encode("utf-8")
