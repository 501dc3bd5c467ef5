"""Weekly metrics: M1 schema error rate, M2 text policy violation rate, their trends,
the biggest movers, guideline changes (before/after, stale labels), pre-fills and the
per-annotator table.

Every function takes an open DuckDB connection (read-only is enough) and the project
config and returns JSON-ready dicts or DataFrames. Per-row work happens in SQL with bound
parameters; Python only sums counts and derives rates, intervals and limits from them.

``A_w`` (DESIGN "Which annotations count"): the current version of every annotation of
role ``annotator``, ``reviewer`` or ``gold`` whose ``submitted_at`` falls in ISO week
``w`` of the project timezone (the ``week`` column). ``model`` records are drafts: counted
apart, never in a rate.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd

from metrics import derived
from metrics.agreement import (
    newcombe_diff_ci,
    p_chart_limits,
    two_proportion_ztest,
    wilson_interval,
)
from metrics.config import Guideline, ProjectConfig
from metrics.status import traffic_light
from metrics.store import Alongside
from metrics.visual import (
    gold_breakdown,
    pair_breakdown,
    visual_series,
)

__all__ = [
    "MIN_MOVER_UNITS",
    "REPORT_WEEKS",
    "RUBBER_STAMP_MIN_DRAFTS",
    "RUBBER_STAMP_SHARE",
    "annotator_table",
    "before_after",
    "current_week",
    "default_week",
    "guideline_log",
    "latest_week",
    "opening_week",
    "parse_week",
    "policy_week",
    "prefill_summary",
    "previous_week",
    "report_swings",
    "schema_week",
    "series",
    "shift_week",
    "stale_label_rows",
    "stale_labels",
    "top_movers",
    "version_in_force",
    "week_of",
    "week_start",
    "weeks",
]

#: Weeks with data that the report's p-chart spans (DESIGN "Trends").
REPORT_WEEKS = 12
#: A mover needs at least this many units in both weeks (DESIGN "Pages").
MIN_MOVER_UNITS = 20
#: Rubber-stamping: at least this many drafts, and this share or more accepted unchanged.
RUBBER_STAMP_MIN_DRAFTS = 20
RUBBER_STAMP_SHARE = 0.95

METRICS = ("schema_error_rate", "policy_violation_rate", "visual_disagreement_rate")

# -- SQL ---------------------------------------------------------------------------------
# `counted` is A over all weeks; every query narrows it with a bound week (or week list).

_COUNTED = """counted AS NOT MATERIALIZED (
    SELECT * FROM current_annotations WHERE role IN ('annotator', 'reviewer', 'gold')
)"""

_WEEKS_SQL = f"WITH {_COUNTED} SELECT DISTINCT week FROM counted ORDER BY week"

# Stored per week by `metrics.derived.refresh` (``d_week_counts``).
WEEK_COUNTS_ALL_SQL = f"""
WITH {_COUNTED}
SELECT week,
       count(*) AS annotations,
       count(*) FILTER (WHERE schema_errors > 0) AS schema_errors,
       count(*) FILTER (WHERE policy_errors > 0) AS policy_errors,
       count(*) FILTER (WHERE policy_warnings > 0) AS policy_warnings
FROM counted
GROUP BY week
ORDER BY week
"""

_WEEK_COUNTS_SQL = """
SELECT week, annotations, schema_errors, policy_errors, policy_warnings
FROM d_week_counts WHERE list_contains($weeks, week) ORDER BY week
"""

_MODEL_COUNTS_SQL = """
SELECT count(*) AS annotations,
       count(*) FILTER (WHERE schema_errors > 0) AS schema_errors,
       count(*) FILTER (WHERE policy_errors > 0) AS policy_errors
FROM current_annotations
WHERE role = 'model' AND week = $week
"""

# One breakdown query per dimension; the dimension is a fixed column name, never data.
_BREAKDOWN_SQL = {
    column: f"""
WITH {_COUNTED}
SELECT {column} AS key,
       count(*) AS annotations,
       count(*) FILTER (WHERE schema_errors > 0) AS schema_errors,
       count(*) FILTER (WHERE policy_errors > 0) AS policy_errors
FROM counted
WHERE week = $week
GROUP BY key
ORDER BY key
"""
    for column in ("annotator_id", "role")
}

_BY_PATH_SQL = f"""
WITH {_COUNTED}
SELECT e.pointer AS path, e.keyword, count(DISTINCT e.ann_key) AS count
FROM contract_errors e JOIN counted a USING (ann_key)
WHERE a.week = $week
GROUP BY e.pointer, e.keyword
ORDER BY count DESC, path, e.keyword
"""

_BY_KEYWORD_SQL = f"""
WITH {_COUNTED}
SELECT e.keyword, count(DISTINCT e.ann_key) AS count
FROM contract_errors e JOIN counted a USING (ann_key)
WHERE a.week = $week
GROUP BY e.keyword
ORDER BY count DESC, e.keyword
"""

_BY_RULE_SQL = f"""
WITH {_COUNTED}
SELECT v.rule,
       min(v.severity) AS severity,          -- 'error' sorts before 'warning'
       count(DISTINCT v.ann_key) AS count
FROM violations v JOIN counted a USING (ann_key)
WHERE a.week = $week
GROUP BY v.rule
ORDER BY count DESC, v.rule
"""

_BY_FIELD_SQL = f"""
WITH {_COUNTED}
SELECT v.field,
       count(DISTINCT v.ann_key) AS count,
       count(DISTINCT v.ann_key) FILTER (WHERE v.severity = 'error') AS errors
FROM violations v JOIN counted a USING (ann_key)
WHERE a.week = $week
GROUP BY v.field
ORDER BY count DESC, v.field
"""

# Movers: annotations of A_w with an error at a path / violating a rule, for two weeks.
_PATH_RULE_WEEKS_SQL = f"""
WITH {_COUNTED}
SELECT 'path' AS kind, a.week, e.pointer AS key, count(DISTINCT e.ann_key) AS events
FROM contract_errors e JOIN counted a USING (ann_key)
WHERE list_contains($weeks, a.week)
GROUP BY a.week, e.pointer
UNION ALL
SELECT 'rule', a.week, v.rule, count(DISTINCT v.ann_key)
FROM violations v JOIN counted a USING (ann_key)
WHERE list_contains($weeks, a.week)
GROUP BY a.week, v.rule
"""

# Movers: M3 events (class + presence disagreements) and units (+ agreements) of the
# week's peer pairs per label (every box outcome for its label(s), a class disagreement
# for both: `metrics.visual.label_breakdown`) and per annotator pair
# (`metrics.visual.pair_breakdown`), for two weeks.
_BOX_WEEKS_SQL = """
WITH p AS (SELECT * FROM d_pairs WHERE NOT reference AND list_contains($weeks, week)),
o AS (
    SELECT p.week, bp.kind, coalesce(bp.label_a, bp.label_b) AS label
    FROM d_box_pairs bp JOIN p USING (pair_id)
    UNION ALL
    SELECT p.week, bp.kind, bp.label_b
    FROM d_box_pairs bp JOIN p USING (pair_id) WHERE bp.kind = 'class'
)
SELECT 'label' AS kind, week, label AS key, count(*) FILTER (kind <> 'agreement') AS events,
       count(*) AS units, NULL AS annotator_a, NULL AS annotator_b
FROM o GROUP BY week, label
UNION ALL
SELECT 'pair', week, annotator_a || ' / ' || annotator_b,
       sum(class_disagreements + presence_disagreements),
       sum(agreements + class_disagreements + presence_disagreements),
       annotator_a, annotator_b
FROM p GROUP BY week, annotator_a, annotator_b
"""

# Stale labels: the record's version ranked in the guideline log (1-based, NULL if unknown).
_STALE_SQL = f"""
WITH {_COUNTED},
with_field AS (
    SELECT *, list_position($versions, guideline_version) AS version_rank
    FROM counted
    WHERE coalesce(json_type(fields, $pointer), 'NULL') <> 'NULL'
)
SELECT count(*) AS annotations,
       count(*) FILTER (WHERE version_rank < $rank) AS stale,
       count(*) FILTER (WHERE version_rank IS NULL) AS unknown_version,
       coalesce(list(DISTINCT guideline_version ORDER BY guideline_version)
                FILTER (WHERE version_rank < $rank), []) AS stale_versions
FROM with_field
"""

_STALE_ROWS_SQL = f"""
WITH {_COUNTED}
SELECT annotation_id, version, item_id, annotator_id, role, week, submitted_at,
       guideline_version, json_extract(fields, $pointer) AS value
FROM counted
WHERE coalesce(json_type(fields, $pointer), 'NULL') <> 'NULL'
  AND list_position($versions, guideline_version) < $rank
ORDER BY week, item_id, annotation_id
"""

# Pre-fills. "Unchanged": the boxes (label + bbox, by index) and the fields equal the
# draft's. Fields compare as JSON trees (key order ignored, numbers by value).
_PREFILL_SQL = f"""
WITH {_COUNTED},
prefilled AS MATERIALIZED (
    SELECT ann_key, annotator_id, reviewed_by, reviewed, fields, draft
    FROM counted
    WHERE prefilled AND ($week IS NULL OR week = $week)
),
drafted AS MATERIALIZED (SELECT * FROM prefilled WHERE draft IS NOT NULL),
ann_boxes AS (
    SELECT b.ann_key, b.box_idx AS idx, b.label, b.x, b.y, b.w, b.h
    FROM boxes b JOIN drafted d USING (ann_key)
),
draft_boxes AS (
    SELECT d.ann_key, CAST(e.key AS INTEGER) AS idx,
           e.value ->> '$.label' AS label,
           TRY_CAST(e.value ->> '$.bbox[0]' AS DOUBLE) AS x,
           TRY_CAST(e.value ->> '$.bbox[1]' AS DOUBLE) AS y,
           TRY_CAST(e.value ->> '$.bbox[2]' AS DOUBLE) AS w,
           TRY_CAST(e.value ->> '$.bbox[3]' AS DOUBLE) AS h
    FROM drafted d, json_each(d.draft, '$.boxes') e
),
box_changed AS (
    SELECT DISTINCT coalesce(a.ann_key, b.ann_key) AS ann_key
    FROM ann_boxes a FULL OUTER JOIN draft_boxes b
      ON a.ann_key = b.ann_key AND a.idx = b.idx
    WHERE a.ann_key IS NULL OR b.ann_key IS NULL
       OR a.label IS DISTINCT FROM b.label
       OR a.x IS DISTINCT FROM b.x OR a.y IS DISTINCT FROM b.y
       OR a.w IS DISTINCT FROM b.w OR a.h IS DISTINCT FROM b.h
),
ann_tree AS (
    SELECT d.ann_key, t.fullkey,
           CASE WHEN t.type IN ('UBIGINT', 'BIGINT', 'DOUBLE') THEN 'NUMBER' ELSE t.type END
             AS type,
           CASE WHEN t.type IN ('UBIGINT', 'BIGINT', 'DOUBLE')
                THEN CAST(CAST(t.atom AS DOUBLE) AS VARCHAR) ELSE CAST(t.atom AS VARCHAR) END
             AS atom
    FROM drafted d, json_tree(d.fields) t
),
draft_tree AS (
    SELECT d.ann_key, t.fullkey,
           CASE WHEN t.type IN ('UBIGINT', 'BIGINT', 'DOUBLE') THEN 'NUMBER' ELSE t.type END
             AS type,
           CASE WHEN t.type IN ('UBIGINT', 'BIGINT', 'DOUBLE')
                THEN CAST(CAST(t.atom AS DOUBLE) AS VARCHAR) ELSE CAST(t.atom AS VARCHAR) END
             AS atom
    FROM drafted d, json_tree(json_extract(d.draft, '$.fields')) t
),
field_changed AS (
    SELECT DISTINCT ann_key FROM (
        (SELECT * FROM ann_tree EXCEPT SELECT * FROM draft_tree)
        UNION ALL
        (SELECT * FROM draft_tree EXCEPT SELECT * FROM ann_tree)
    )
),
per_draft AS (
    SELECT coalesce(d.reviewed_by, d.annotator_id) AS reviewer,
           d.ann_key NOT IN (SELECT ann_key FROM box_changed)
             AND d.ann_key NOT IN (SELECT ann_key FROM field_changed) AS unchanged
    FROM drafted d
)
SELECT 'total' AS part, NULL AS reviewer,
       (SELECT count(*) FROM prefilled) AS prefilled,
       (SELECT count(*) FILTER (WHERE reviewed) FROM prefilled) AS reviewed,
       count(*) AS drafts, count(*) FILTER (WHERE unchanged) AS unchanged
FROM per_draft
UNION ALL
SELECT 'reviewer', reviewer, NULL, NULL, count(*), count(*) FILTER (WHERE unchanged)
FROM per_draft
GROUP BY reviewer
ORDER BY part = 'reviewer', reviewer
"""

_ANNOTATOR_SQL = f"""
WITH {_COUNTED}
SELECT annotator_id,
       count(*) AS annotations,
       count(*) FILTER (WHERE schema_errors > 0) AS schema_errors,
       count(*) FILTER (WHERE policy_errors > 0) AS policy_errors,
       string_agg(DISTINCT role, ',' ORDER BY role) AS roles
FROM counted
WHERE $week IS NULL OR week = $week
GROUP BY annotator_id
ORDER BY annotator_id
"""


# -- weeks -------------------------------------------------------------------------------

_WEEK_RE = re.compile(r"([0-9]{4})-W([0-9]{2})")


def parse_week(text: str) -> str:
    """Validate an ISO week such as ``2026-W47`` and return it normalized.

    Raises
    ------
    ValueError
        With one clear message when ``text`` is not ``YYYY-Www`` or the year has no such
        week (weeks run 01-52, or 01-53 in long ISO years).
    """
    match = _WEEK_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"malformed week {text!r}: expected an ISO week such as 2026-W47")
    year, week = int(match.group(1)), int(match.group(2))
    if year < 1:
        raise ValueError(f"malformed week {text!r}: year {year} is out of range")
    last = dt.date(year, 12, 28).isocalendar()[1]   # Dec 28 is always in the last week
    if not 1 <= week <= last:
        raise ValueError(f"malformed week {text!r}: ISO year {year} has weeks 01 to {last}")
    return f"{year:04d}-W{week:02d}"


def week_start(week: str) -> dt.date:
    """The Monday of an ISO week (``2026-W02`` -> 2026-01-05)."""
    week = parse_week(week)
    return dt.date.fromisocalendar(int(week[:4]), int(week[6:]), 1)


def week_of(day: dt.date) -> str:
    """The ISO week containing a date."""
    year, week, _ = day.isocalendar()
    return f"{year:04d}-W{week:02d}"


def change_weeks(effective: dt.date, k: int) -> tuple[list[str], list[str]]:
    """The ``k`` ISO weeks before the week containing ``effective`` and the ``k`` after
    it (that week left out): what `before_after` compares."""
    change_week = week_of(effective)
    return ([shift_week(change_week, -i) for i in range(k, 0, -1)],
            [shift_week(change_week, i) for i in range(1, k + 1)])


def shift_week(week: str, n: int) -> str:
    """The ISO week ``n`` weeks after ``week`` (before it when ``n`` < 0)."""
    return week_of(week_start(week) + dt.timedelta(weeks=n))


def previous_week(week: str) -> str:
    """The ISO week before ``week`` (calendar, not the previous week with data)."""
    return shift_week(week, -1)


def weeks(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The weeks with data (``A_w`` non-empty), ascending."""
    return [r[0] for r in con.execute(_WEEKS_SQL).fetchall()]


def latest_week(con: duckdb.DuckDBPyConnection) -> str | None:
    """The latest week with data, or None when there is none."""
    found = weeks(con)
    return found[-1] if found else None


def default_week(found: list[str], this_week: str) -> str | None:
    """The week a report or page opens on: the latest of ``found`` (weeks with data,
    ascending) that is not after ``this_week``, so one annotation dated years ahead by
    a typo does not take the weekly review with it; the latest of all when every week
    is ahead (data dated in the future throughout). None when ``found`` is empty."""
    past = [w for w in found if w <= this_week]
    return past[-1] if past else (found[-1] if found else None)


def current_week(config: ProjectConfig) -> str:
    """This ISO week in the project's time zone."""
    return week_of(dt.datetime.now(config.tz).date())


def opening_week(con: duckdb.DuckDBPyConnection, config: ProjectConfig) -> str:
    """The week a report without ``--week`` shows: :func:`default_week` of the weeks
    with data, or this week when there is none (a zero report)."""
    this_week = current_week(config)
    return default_week(weeks(con), this_week) or this_week


# -- helpers -----------------------------------------------------------------------------


def _records(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> list[dict]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


def _ci(k: int, n: int) -> list[float] | None:
    ci = wilson_interval(k, n)
    return None if ci is None else [ci[0], ci[1]]


def _no_data(week: str) -> str:
    return f"no annotations of roles annotator, reviewer or gold in {week}"


def _week_counts(con: duckdb.DuckDBPyConnection, config: ProjectConfig,
                 week_list: list[str]) -> pd.DataFrame:
    derived.ensure(con, config)   # d_week_counts
    df = con.execute(_WEEK_COUNTS_SQL, {"weeks": list(week_list)}).df()
    return df.set_index("week").reindex(week_list, fill_value=0)


def _breakdown(con: duckdb.DuckDBPyConnection, column: str, week: str, counter: str
               ) -> list[dict]:
    """Per annotator_id or role: annotations, those with the counted error, the rate."""
    rows = _records(con, _BREAKDOWN_SQL[column], {"week": week})
    out = [{column: r["key"], "annotations": r["annotations"], "count": r[counter],
            "rate": _rate(r[counter], r["annotations"])} for r in rows]
    out.sort(key=lambda r: (-r["count"], r[column]))
    return out


def _model_counts(con: duckdb.DuckDBPyConnection, week: str) -> dict:
    return _records(con, _MODEL_COUNTS_SQL, {"week": week})[0]


# -- M1 and M2 ---------------------------------------------------------------------------


def schema_week(con: duckdb.DuckDBPyConnection, config: ProjectConfig, week: str) -> dict:
    """M1, the schema error rate of week ``week``, with its breakdowns.

    ``error_rate = |{a in A_w : a has >= 1 contract error}| / |A_w|`` with a Wilson 95%
    interval; ``None`` (with ``reason``) when ``A_w`` is empty.

    Returns
    -------
    dict
        ``week``, ``annotations`` (|A_w|), ``with_errors``, ``error_rate``,
        ``error_rate_ci`` ([low, high] or None), ``status`` (green/amber/red or None),
        ``reason``, ``by_path`` [{path, keyword, count}] (annotations of A_w with that
        error, most first), ``by_keyword`` [{keyword, count}], ``by_annotator``
        [{annotator_id, annotations, count, rate}], ``by_role`` [{role, ...}], and
        ``model`` {annotations, with_errors} (drafts, reported apart).
    """
    week = parse_week(week)
    counts = _week_counts(con, config, [week]).loc[week]
    n, k = int(counts["annotations"]), int(counts["schema_errors"])
    rate = _rate(k, n)
    model = _model_counts(con, week)
    return {
        "week": week,
        "annotations": n,
        "with_errors": k,
        "error_rate": rate,
        "error_rate_ci": _ci(k, n),
        "status": traffic_light(rate, config.threshold("schema_error_rate")),
        "reason": None if n else _no_data(week),
        "by_path": _records(con, _BY_PATH_SQL, {"week": week}),
        "by_keyword": _records(con, _BY_KEYWORD_SQL, {"week": week}),
        "by_annotator": _breakdown(con, "annotator_id", week, "schema_errors"),
        "by_role": _breakdown(con, "role", week, "schema_errors"),
        "model": {"annotations": model["annotations"],
                  "with_errors": model["schema_errors"]},
    }


def policy_week(con: duckdb.DuckDBPyConnection, config: ProjectConfig, week: str) -> dict:
    """M2, the text policy violation rate of week ``week``, with its breakdowns.

    ``violation_rate = |{a in A_w : a has >= 1 violation of severity error}| / |A_w|``
    with a Wilson 95% interval; by rule, the annotations of A_w violating it (any
    severity; the rule's severity beside) per 1,000 of ``A_w``.

    Returns
    -------
    dict
        ``week``, ``annotations``, ``with_violations``, ``with_warnings``,
        ``violation_rate``, ``violation_rate_ci``, ``status``, ``reason``, ``by_rule``
        [{rule, count, per_1000, severity}] (most first), ``by_field`` [{field, count,
        errors, per_1000}], ``by_annotator``, ``by_role`` and ``model``.
    """
    week = parse_week(week)
    counts = _week_counts(con, config, [week]).loc[week]
    n, k = int(counts["annotations"]), int(counts["policy_errors"])
    rate = _rate(k, n)

    def per_1000(count: int) -> float | None:
        return 1000.0 * count / n if n else None

    by_rule = [
        {"rule": r["rule"], "count": r["count"], "per_1000": per_1000(r["count"]),
         "severity": r["severity"]}
        for r in _records(con, _BY_RULE_SQL, {"week": week})
    ]
    by_field = [
        {**r, "per_1000": per_1000(r["count"])}
        for r in _records(con, _BY_FIELD_SQL, {"week": week})
    ]
    model = _model_counts(con, week)
    return {
        "week": week,
        "annotations": n,
        "with_violations": k,
        "with_warnings": int(counts["policy_warnings"]),
        "violation_rate": rate,
        "violation_rate_ci": _ci(k, n),
        "status": traffic_light(rate, config.threshold("policy_violation_rate")),
        "reason": None if n else _no_data(week),
        "by_rule": by_rule,
        "by_field": by_field,
        "by_annotator": _breakdown(con, "annotator_id", week, "policy_errors"),
        "by_role": _breakdown(con, "role", week, "policy_errors"),
        "model": {"annotations": model["annotations"],
                  "with_violations": model["policy_errors"]},
    }


# -- trends ------------------------------------------------------------------------------


def _chart_columns(df: pd.DataFrame, prefix: str, events: str, units: str) -> None:
    """Add ``{prefix}_rate``, Wilson bounds and p-chart columns computed from counts."""
    e = df[events].to_numpy(dtype=np.float64)
    n = df[units].to_numpy(dtype=np.float64)
    chart = p_chart_limits(e, n)
    df[f"{prefix}_rate"] = chart.p
    if f"{prefix}_ci_low" not in df:
        bounds = [wilson_interval(int(k), int(m)) or (math.nan, math.nan)
                  for k, m in zip(e, n, strict=True)]
        df[f"{prefix}_ci_low"] = [b[0] for b in bounds]
        df[f"{prefix}_ci_high"] = [b[1] for b in bounds]
    df[f"{prefix}_center"] = math.nan if chart.center is None else chart.center
    df[f"{prefix}_lcl"] = chart.lcl
    df[f"{prefix}_ucl"] = chart.ucl
    df[f"{prefix}_swing"] = pd.Series(chart.swing, index=df.index, dtype=object)


def _visual_counts(con: duckdb.DuckDBPyConnection, config: ProjectConfig, *, ci: bool = True,
                   weeks: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-week M3 counts from :func:`metrics.visual.visual_series`, indexed by week, with
    ``visual_errors`` (class + presence), ``visual_units`` (+ agreements) and the item
    bootstrap bounds as ``visual_ci_low`` / ``visual_ci_high``."""
    vs = visual_series(con, config, ci=ci, weeks=weeks).drop(columns=["disagreement_rate"])
    vs = vs.rename(columns={"ci_low": "visual_ci_low", "ci_high": "visual_ci_high"})
    vs["visual_errors"] = vs["class_disagreements"] + vs["presence_disagreements"]
    vs["visual_units"] = vs["agreements"] + vs["visual_errors"]
    return vs.set_index("week")


def series(con: duckdb.DuckDBPyConnection, config: ProjectConfig, *, last: int | None = None,
           until: str | None = None, visual: bool = True, ci: bool = True) -> pd.DataFrame:
    """The weekly series of M1, M2 (and M3) with CI bands and p-chart limits.

    The p-chart spans the weeks returned: ``p̄ = Σ events / Σ units`` over them and
    limits ``p̄ ± 3·sqrt(p̄(1 − p̄)/n_w)`` clipped to [0, 1]; a week strictly outside is
    a swing ``"up"`` or ``"down"`` (Montgomery, "Introduction to Statistical Quality
    Control", 7.2).

    Parameters
    ----------
    last : int, optional
        Only the last ``last`` weeks with data (the report uses :data:`REPORT_WEEKS`).
    until : str, optional
        Only weeks up to and including this one.
    visual : bool, default True
        Add the M3 columns from :func:`metrics.visual.visual_series`.
    ci : bool, default True
        Compute M3's item-bootstrap band (``visual_ci_low``/``_high``); without it M3
        gets a Wilson band over its box units. M1 and M2 always get Wilson intervals.

    Returns
    -------
    DataFrame, one row per week with data, ascending
        ``week``, ``annotations``, ``schema_errors`` (annotations with >= 1 contract
        error), ``policy_errors`` (with >= 1 error violation), ``policy_warnings``, and for
        each of ``schema``, ``policy`` (and ``visual``): ``{p}_rate``, ``{p}_ci_low``,
        ``{p}_ci_high``, ``{p}_center`` (p̄), ``{p}_lcl``, ``{p}_ucl``, ``{p}_swing``.
        Visual adds its per-week counts (``items``, ``pairs``, ``agreements``,
        ``class_disagreements``, ``presence_disagreements``, ``low_overlap``) and
        ``visual_errors`` (class + presence) / ``visual_units`` (+ agreements). Rates of
        weeks with zero units are NaN.
    """
    week_list = weeks(con)
    if until is not None:
        until = parse_week(until)
        week_list = [w for w in week_list if w <= until]
    if last is not None:
        week_list = week_list[-last:] if last > 0 else []
    df = _week_counts(con, config, week_list).reset_index()
    _chart_columns(df, "schema", "schema_errors", "annotations")
    _chart_columns(df, "policy", "policy_errors", "annotations")
    if visual:
        vs = _visual_counts(con, config, ci=ci, weeks=week_list).reindex(week_list)
        counts = [c for c in vs.columns if not c.startswith("visual_ci_")]
        vs[counts] = vs[counts].fillna(0).astype("int64")
        df = df.join(vs, on="week")
        _chart_columns(df, "visual", "visual_errors", "visual_units")
    return df


def report_swings(con: duckdb.DuckDBPyConnection, config: ProjectConfig, week: str
                  ) -> dict[str, str | None]:
    """The p-chart swing of each metric in ``week`` over the last :data:`REPORT_WEEKS`
    weeks with data up to it; ``None`` when the week is no swing or has no data."""
    df = series(con, config, last=REPORT_WEEKS, until=week, ci=False)
    row = df[df["week"] == parse_week(week)]
    out = {}
    for metric, prefix in zip(METRICS, ("schema", "policy", "visual"), strict=True):
        out[metric] = None if row.empty else row.iloc[0][f"{prefix}_swing"]
    return out


# -- movers ------------------------------------------------------------------------------


def _mover_counts(con: duckdb.DuckDBPyConnection, config: ProjectConfig, prev: str,
                  week: str) -> tuple[dict[tuple[str, str], dict[str, tuple[int, int]]],
                                      dict[tuple[str, str], dict]]:
    """(kind, key) -> week -> (events, units) of every per-path/rule/label/pair rate, and
    (kind, key) -> the filter that selects it (see `top_movers`)."""
    both = [prev, week]
    totals = {w: int(n) for w, n in _week_counts(con, config, both)["annotations"].items()}
    counts: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
    filters: dict[tuple[str, str], dict] = {}
    for kind, w, key, events in con.execute(_PATH_RULE_WEEKS_SQL, {"weeks": both}).fetchall():
        # The units are A_w, also in a week where the path or rule does not occur.
        entry = counts.setdefault((kind, key), {x: (0, totals[x]) for x in both})
        entry[w] = (events, totals[w])
        filters[(kind, key)] = {kind: key}
    derived.ensure(con, config)
    for kind, w, key, events, units, a, b in con.execute(_BOX_WEEKS_SQL,
                                                         {"weeks": both}).fetchall():
        counts.setdefault((kind, key), {})[w] = (int(events), int(units))
        filters[(kind, key)] = ({"label": key} if kind == "label"
                                else {"annotator_a": a, "annotator_b": b})
    return counts, filters


def top_movers(con: duckdb.DuckDBPyConnection, config: ProjectConfig, week: str, *,
               n: int = 3, min_units: int = MIN_MOVER_UNITS) -> list[dict]:
    """The biggest changes of a per-path, per-rule, per-label or per-pair rate against
    the previous ISO week.

    Rates: ``path`` annotations of A_w with a contract error at that path / |A_w|;
    ``rule`` annotations violating the rule / |A_w|; ``label`` and ``pair`` M3's
    (class + presence disagreements) / box units of that label or annotator pair
    (:func:`metrics.visual.label_breakdown`, :func:`metrics.visual.pair_breakdown`).
    Only rates with at least ``min_units`` units in both weeks compete; ranked by
    ``|delta|``.

    Returns
    -------
    list of dict
        At most ``n`` of {kind, key, rate, previous, delta, units, previous_units,
        filter}. ``key`` is for reading (a pair is ``"a / b"``); ``filter`` selects the
        rate's units unambiguously: {path}, {rule}, {label} or {annotator_a,
        annotator_b}.
    """
    week = parse_week(week)
    prev = previous_week(week)
    movers = []
    counts, filters = _mover_counts(con, config, prev, week)
    for (kind, key), by_week in counts.items():
        (e0, n0), (e1, n1) = by_week.get(prev, (0, 0)), by_week.get(week, (0, 0))
        if n0 < min_units or n1 < min_units:
            continue
        rate, previous = e1 / n1, e0 / n0
        movers.append({"kind": kind, "key": key, "rate": rate, "previous": previous,
                       "delta": rate - previous, "units": n1, "previous_units": n0,
                       "filter": filters[(kind, key)]})
    movers.sort(key=lambda m: (-abs(m["delta"]), m["kind"], m["key"]))
    return movers[:n]


# -- guideline changes -------------------------------------------------------------------


def guideline_log(config: ProjectConfig) -> list[dict]:
    """The guideline versions ordered by ``effective`` (as the config keeps them), each with
    the ISO week it falls in."""
    return [
        {"version": g.version, "effective": g.effective.isoformat(),
         "week": week_of(g.effective), "summary": g.summary, "fields": list(g.fields),
         "relabel": g.relabel}
        for g in config.guidelines
    ]


def _guideline(config: ProjectConfig, version: str) -> Guideline:
    for g in config.guidelines:
        if g.version == version:
            return g
    known = ", ".join(g.version for g in config.guidelines) or "none"
    raise ValueError(f"unknown guideline version {version!r} (the log has: {known})")


def version_in_force(config: ProjectConfig, week: str) -> Guideline | None:
    """The guideline version in force at the end of ``week``: the latest whose
    ``effective`` date is on or before the week's Sunday (None before the first)."""
    sunday = week_start(week) + dt.timedelta(days=6)
    current = None
    for g in config.guidelines:
        if g.effective <= sunday:
            current = g
    return current


def _compare(k1: int, n1: int, k2: int, n2: int) -> dict:
    diff = newcombe_diff_ci(k1, n1, k2, n2)
    test = two_proportion_ztest(k1, n1, k2, n2)
    reason = None
    if diff is None:
        reason = "no units before" if n1 == 0 else "no units after"
    elif test is None:
        reason = "no variation: the pooled rate is 0 or 1, so the z-test is undefined"
    return {
        "before": {"events": k1, "units": n1, "rate": _rate(k1, n1)},
        "after": {"events": k2, "units": n2, "rate": _rate(k2, n2)},
        "diff": None if diff is None else diff.diff,
        "diff_ci": None if diff is None else [diff.low, diff.high],
        "z": None if test is None else test.z,
        "p_value": None if test is None else test.p_value,
        "reason": reason,
    }


def before_after(con: duckdb.DuckDBPyConnection, config: ProjectConfig, version: str, *,
                 k: int = 4, visual: bool = True) -> dict:
    """Rates in the ``k`` ISO weeks before a guideline change against the ``k`` after.

    The week containing the version's ``effective`` date is left out. For each rate the
    events and units of each period are summed (counts, not averaged rates), then
    ``diff = p_after − p_before`` with Newcombe's hybrid score 95% interval and the
    pooled two-proportion z-test (two-sided p-value). M3 uses box units, which are not
    independent trials: read its p-value as indicative.

    Returns
    -------
    dict
        ``version``, ``effective``, ``week``, ``k``, ``before_weeks``, ``after_weeks``
        (the ``k`` calendar weeks of each side), ``before_data_weeks``,
        ``after_data_weeks`` (those of them with data, A_w non-empty: the weeks the
        sums are over), ``metrics`` {metric: {before {events, units, rate}, after
        {...}, diff, diff_ci, z, p_value, reason}} for ``schema_error_rate``,
        ``policy_violation_rate`` and ``visual_disagreement_rate``; with ``visual``,
        ``alpha`` [{kind, field, before {items, alpha, reason}, after {...}, diff,
        diff_ci, reason}] for each agreement kind (presence, class, schema,
        categorical/multilabel fields, mentions):
        ``alpha(after) − alpha(before)`` with an item bootstrap percentile interval
        (:func:`metrics.agreement.bootstrap_alpha_diff_ci`, ``[agreement] bootstrap``
        resamples).

    Raises
    ------
    ValueError
        For a version not in the guideline log or ``k`` < 1.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    g = _guideline(config, version)
    before, after = change_weeks(g.effective, k)
    bw, aw = _week_counts(con, config, before), _week_counts(con, config, after)
    b, a = bw.sum(), aw.sum()
    metrics = {
        "schema_error_rate": _compare(int(b["schema_errors"]), int(b["annotations"]),
                                      int(a["schema_errors"]), int(a["annotations"])),
        "policy_violation_rate": _compare(int(b["policy_errors"]), int(b["annotations"]),
                                          int(a["policy_errors"]), int(a["annotations"])),
    }
    if visual:
        vs = _visual_counts(con, config, ci=False, weeks=before + after)
        vb = vs.reindex(before)[["visual_errors", "visual_units"]].fillna(0).sum()
        va = vs.reindex(after)[["visual_errors", "visual_units"]].fillna(0).sum()
        metrics["visual_disagreement_rate"] = _compare(
            int(vb["visual_errors"]), int(vb["visual_units"]),
            int(va["visual_errors"]), int(va["visual_units"]))
    out = {"version": g.version, "effective": g.effective.isoformat(),
           "week": week_of(g.effective), "k": k, "before_weeks": before, "after_weeks": after,
           # The weeks whose data the sums hold: a window can reach past the data.
           "before_data_weeks": [w for w in before if bw.loc[w, "annotations"] > 0],
           "after_data_weeks": [w for w in after if aw.loc[w, "annotations"] > 0],
           "metrics": metrics}
    if visual:
        out["alpha"] = _alpha_changes(con, config, before, after)
    return out


def _alpha_changes(con: duckdb.DuckDBPyConnection, config: ProjectConfig,
                   before: list[str], after: list[str]) -> list[dict]:
    """Krippendorff's alpha of each kind before and after, from the summed coincidence
    matrices of each period, with the item bootstrap interval of the difference: as
    `metrics.derived.refresh` stored it for these weeks, else computed
    (`metrics.derived.alpha_change`, one draw per period for every kind)."""
    derived.ensure(con, config)
    stored = derived.stored_alpha_change(con, config, before, after)
    return stored if stored is not None else derived.alpha_change(con, config, before, after)


def _json_pointer(field: str) -> str:
    return "/" + field.replace("~", "~0").replace("/", "~1")


def _touched_fields(config: ProjectConfig) -> dict[str, tuple[int, Guideline]]:
    """Each field a guideline touched -> (1-based rank, the latest change touching it)."""
    latest: dict[str, tuple[int, Guideline]] = {}
    for rank, g in enumerate(config.guidelines, start=1):
        for field in g.fields:
            latest[field] = (rank, g)
    return latest


def stale_labels(con: duckdb.DuckDBPyConnection, config: ProjectConfig) -> list[dict]:
    """"Legal but outdated" labels: per field a guideline change touched, the current
    annotations (roles annotator, reviewer, gold; every week) that carry the field and
    were made under a version older than the latest change touching it.

    Versions are ordered by ``effective``; a record's version is its
    ``guideline_version``. Records with no or an unknown version are counted apart
    (``unknown_version``), not as stale.

    Returns
    -------
    list of dict
        Per field, in field order of first mention: ``field``, ``version`` (the latest
        change touching it), ``effective``, ``summary``, ``relabel`` (its advice),
        ``annotations`` (carrying the field), ``stale``, ``stale_share``,
        ``unknown_version``, ``stale_versions``.
    """
    versions = [g.version for g in config.guidelines]
    out = []
    for field, (rank, g) in _touched_fields(config).items():
        row = _records(con, _STALE_SQL, {"versions": versions, "rank": rank,
                                         "pointer": _json_pointer(field)})[0]
        out.append({
            "field": field, "version": g.version, "effective": g.effective.isoformat(),
            "summary": g.summary, "relabel": g.relabel,
            "annotations": row["annotations"], "stale": row["stale"],
            "stale_share": _rate(row["stale"], row["annotations"]),
            "unknown_version": row["unknown_version"],
            "stale_versions": list(row["stale_versions"]),
        })
    return out


def stale_label_rows(con: duckdb.DuckDBPyConnection, config: ProjectConfig, field: str,
                     limit: int | None = None) -> pd.DataFrame:
    """The stale annotations of one field (see :func:`stale_labels`), for a CSV download
    (the first ``limit`` of them in week, item order when given: a preview).

    Columns: annotation_id, version, item_id, annotator_id, role, week, submitted_at,
    guideline_version, value (the field's JSON), changed_by (the change's version),
    relabel (its advice).

    Raises
    ------
    ValueError
        When no guideline change touched ``field``.
    """
    touched = _touched_fields(config)
    if field not in touched:
        raise ValueError(f"no guideline change touched field {field!r} "
                         f"(touched: {', '.join(touched) or 'none'})")
    rank, g = touched[field]
    versions = [v.version for v in config.guidelines]
    params = {"versions": versions, "rank": rank, "pointer": _json_pointer(field)}
    sql = _STALE_ROWS_SQL
    if limit is not None:
        sql += "LIMIT $limit"
        params["limit"] = int(limit)
    df = con.execute(sql, params).df()
    df["changed_by"] = g.version
    df["relabel"] = g.relabel
    return df


# -- pre-fills ---------------------------------------------------------------------------


def prefill_summary(con: duckdb.DuckDBPyConnection, config: ProjectConfig,
                    week: str | None = None) -> dict:
    """Pre-filled annotations: the share reviewed, and drafts accepted unchanged.

    Among ``prefilled`` annotations (of A, in ``week`` or every week), the share
    ``reviewed``. Among those with a ``draft``, per reviewer (``reviewed_by``, else the
    annotator), the share accepted unchanged: boxes (label and bbox, by index) and fields
    equal to the draft's. A reviewer with at least :data:`RUBBER_STAMP_MIN_DRAFTS`
    drafts and :data:`RUBBER_STAMP_SHARE` or more unchanged is flagged as rubber-stamping.

    Returns
    -------
    dict
        ``week``, ``prefilled``, ``reviewed``, ``reviewed_share`` (+ ``_ci``), ``drafts``,
        ``unchanged``, ``unchanged_share`` (+ ``_ci``), ``reason``, ``by_reviewer``
        [{reviewer, drafts, unchanged, unchanged_share, rubber_stamping}] and
        ``rubber_stamping`` (the flagged reviewers).
    """
    if week is not None:
        week = parse_week(week)
    rows = _records(con, _PREFILL_SQL, {"week": week})
    total = rows[0]
    prefilled, reviewed = int(total["prefilled"]), int(total["reviewed"])
    drafts, unchanged = int(total["drafts"]), int(total["unchanged"])
    by_reviewer = []
    for r in rows[1:]:
        share = _rate(r["unchanged"], r["drafts"])
        by_reviewer.append({
            "reviewer": r["reviewer"], "drafts": r["drafts"], "unchanged": r["unchanged"],
            "unchanged_share": share,
            "rubber_stamping": bool(r["drafts"] >= RUBBER_STAMP_MIN_DRAFTS
                                    and share >= RUBBER_STAMP_SHARE),
        })
    return {
        "week": week,
        "prefilled": prefilled,
        "reviewed": reviewed,
        "reviewed_share": _rate(reviewed, prefilled),
        "reviewed_share_ci": _ci(reviewed, prefilled),
        "drafts": drafts,
        "unchanged": unchanged,
        "unchanged_share": _rate(unchanged, drafts),
        "unchanged_share_ci": _ci(unchanged, drafts),
        "reason": None if prefilled else "no pre-filled annotations",
        "by_reviewer": by_reviewer,
        "rubber_stamping": [r["reviewer"] for r in by_reviewer if r["rubber_stamping"]],
    }


# -- annotators --------------------------------------------------------------------------


def annotator_table(con: duckdb.DuckDBPyConnection, config: ProjectConfig,
                    week: str | None = None) -> pd.DataFrame:
    """One row per annotator of A (in ``week``, or every week), against peers and gold.

    Columns: annotator_id, roles, annotations, schema_errors, schema_error_rate,
    policy_errors, violation_rate; peer_agreements, peer_units, peer_agreement (M3
    agreements / (agreements + class + presence) summed over the peer pairs the
    annotator is in, i.e. 1 − their M3); gold_agreements, gold_units, gold_agreement
    (the same on their pairs against gold), gold_f1 and gold_class_accuracy (from
    :func:`metrics.visual.gold_breakdown`); drafts, drafts_unchanged, unchanged_share
    and rubber_stamping (pre-fills they accepted, see :func:`prefill_summary`). Rates
    over zero units are NaN.
    """
    if week is not None:
        week = parse_week(week)
    derived.ensure(con, config)   # here, not in both lines at once
    with Alongside(con, prefill_summary, config, week) as prefill:   # its own ~30 ms
        df = con.execute(_ANNOTATOR_SQL, {"week": week}).df()
        df = _with_pair_columns(con, config, week, df)
    pre = pd.DataFrame(prefill.result()["by_reviewer"],
                       columns=["reviewer", "drafts", "unchanged", "rubber_stamping"])
    pre = pre.rename(columns={"reviewer": "annotator_id", "unchanged": "drafts_unchanged"})
    df = df.merge(pre, on="annotator_id", how="left")
    for col in ("peer_agreements", "peer_units", "gold_agreements", "gold_units", "drafts",
                "drafts_unchanged"):
        df[col] = df[col].fillna(0).astype("int64")
    df["rubber_stamping"] = df["rubber_stamping"].fillna(False).astype(bool)
    for col in ("gold_f1", "gold_class_accuracy"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for rate, num, den in (("schema_error_rate", "schema_errors", "annotations"),
                           ("violation_rate", "policy_errors", "annotations"),
                           ("peer_agreement", "peer_agreements", "peer_units"),
                           ("gold_agreement", "gold_agreements", "gold_units"),
                           ("unchanged_share", "drafts_unchanged", "drafts")):
        df[rate] = (df[num] / df[den].where(df[den] > 0)).astype("float64")
    return df


def _with_pair_columns(con: duckdb.DuckDBPyConnection, config: ProjectConfig,
                       week: str | None, df: pd.DataFrame) -> pd.DataFrame:
    """`annotator_table`'s rows with their peer and gold pair counts merged in."""
    parts = []
    for w in ([week] if week is not None else weeks(con)):
        pairs = pair_breakdown(con, config, w)
        for side in ("annotator_a", "annotator_b"):
            parts.append(pd.DataFrame({"annotator_id": pairs[side],
                                       "peer_agreements": pairs["agreements"],
                                       "peer_units": _box_units(pairs)}))
    peer = (pd.concat(parts).groupby("annotator_id", as_index=False).sum() if parts
            else pd.DataFrame(columns=["annotator_id", "peer_agreements", "peer_units"]))

    gb = gold_breakdown(con, config, weeks=None if week is None else [week])
    gold = pd.DataFrame({"annotator_id": gb["annotator"], "gold_agreements": gb["agreements"],
                         "gold_units": _box_units(gb), "gold_f1": gb["f1"],
                         "gold_class_accuracy": gb["class_accuracy"]})
    return (df.merge(peer, on="annotator_id", how="left")
              .merge(gold, on="annotator_id", how="left"))


def _box_units(df: pd.DataFrame) -> pd.Series:
    """M3 units of breakdown rows: agreements + class + presence disagreements."""
    return df["agreements"] + df["class_disagreements"] + df["presence_disagreements"]
