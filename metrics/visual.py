"""M3 visual disagreement and the agreement breakdown, read from the derived tables.

Pure functions of ``(con, config, ...)``: they read the tables `metrics.derived.refresh`
builds (counts and coincidence contributions), reduce them once, and return plain
dicts / DataFrames for the report, the CLI and the dashboard. Rates are computed from
summed counts; alpha from summed coincidence matrices; intervals by resampling items
(sorted by id) with ``numpy.random.default_rng(0)``. `metrics.derived.refresh` draws
them once per week and stores them (``d_week_ci``); these functions read them, and
resample only when the stored ones were drawn with another ``[agreement] bootstrap``.

The ``visual`` object of the weekly report is :func:`visual_week`; the other functions
are the breakdowns behind its numbers (per week, per annotator pair, against gold, per
label, the items behind a number, and one item's pairs for the drill-down).
"""

from __future__ import annotations

from typing import Any, Sequence

import duckdb
import numpy as np
import orjson
import pandas as pd

from metrics import derived
from metrics.agreement import (
    MATCH_THRESHOLDS,
    REASON_NO_PAIRABLE_UNITS,
    REASON_NO_VARIATION,
    GroupCoincidence,
    alpha_from_coincidence,
    cohen_kappa_from_table,
    percent_agreement_from_coincidence,
)
from metrics.config import ProjectConfig
from metrics.status import traffic_light

__all__ = [
    "annotation_boxes",
    "FREE_TEXT_CUTOFF",
    "disagreement_items",
    "gold_breakdown",
    "item_pairs",
    "kind_coincidence",
    "label_breakdown",
    "pair_breakdown",
    "visual_series",
    "visual_week",
]

#: Free-text pairs below this similarity count as disagreeing (`share_below_0_8`).
FREE_TEXT_CUTOFF = 0.8

REASON_NO_PAIRS = "no pairs this week"
REASON_NO_BOXES = "no boxes in the week's pairs (agreements + class + presence = 0)"
REASON_NO_BOOTSTRAP = "bootstrap = 0 in [agreement]: intervals disabled"
REASON_FREE_TEXT = "free text"
REASON_IOU = "IoU is continuous: see mean, median and by_threshold"
REASON_NO_MATCHED = "no matched box pairs"
REASON_NO_TEXT_PAIRS = "no pairs where both annotations have the field"

_BOX_KINDS = ("presence", "class", "low_overlap")


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def _small_sample(units: int, config: ProjectConfig) -> list[str]:
    min_units = config.agreement.min_units
    if units < min_units:
        return [f"{units} units, below min_units {min_units}: treat with care"]
    return []


def _coincidence(con, weeks: Sequence[str], kind: str, field: str,
                 categories: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Per-item coincidence contributions (G, K, K) of a kind over some weeks (items of
    the weeks' peer pairs, sorted by id): the categories (default: the values used,
    sorted) and the array."""
    kinds = [(kind, field)]
    (used,) = derived.period_values(con, weeks, kinds)
    if categories is None:
        cats = used
    else:
        cats = list(categories)
        unknown = set(used) - set(cats)
        if unknown:
            raise ValueError(f"values {sorted(unknown)!r} are not in categories")
    _, (o,) = derived.period_coincidence(con, weeks, kinds, [cats])
    return cats, o


class _WeekKinds:
    """Every agreement kind of one week, read at once (``d_week_coincidence``,
    ``d_units``): per (kind, field) the coincidence matrix summed over the week's items
    and the pairable units with the least and most values in one of them."""

    def __init__(self, con, config: ProjectConfig, week: str):
        self._o = {(kind, field): np.asarray(values, dtype=np.float64).reshape(k, k)
                   for kind, field, k, values in con.execute(
            "SELECT kind, field, k, coincidence FROM d_week_coincidence WHERE week = $w",
            {"w": week},
        ).fetchall()}
        self._units = {(kind, field): (int(units), m_min, m_max)
                       for kind, field, units, m_min, m_max in con.execute(
            """SELECT kind, field, coalesce(sum(units), 0), min(m_min), max(m_max)
            FROM d_units WHERE week = $w GROUP BY kind, field""", {"w": week},
        ).fetchall()}

    def get(self, kind: str, field: str) -> tuple[np.ndarray, int, Any, Any]:
        """(coincidence matrix, units, m_min, m_max); no values: a 0 x 0 matrix."""
        return (self._o.get((kind, field), np.zeros((0, 0))),
                *self._units.get((kind, field), (0, None, None)))


class _Intervals:
    """The stored bootstrap intervals of one week (``d_week_ci``), drawn with the
    config's ``bootstrap``; resampled here (once, every interval of the week) when one
    is missing."""

    def __init__(self, con, config: ProjectConfig, week: str):
        self._con, self._config, self._week = con, config, week
        self._rows = self._index(con.execute(
            """SELECT week, reference, kind, field, n_resamples, low, high, dropped, reason
            FROM d_week_ci WHERE week = $w AND n_resamples = $n""",
            {"w": week, "n": config.agreement.bootstrap},
        ).fetchall())
        self._resampled = False

    @staticmethod
    def _index(rows) -> dict:
        return {(bool(r[1]), r[2], r[3]): (r[5], r[6], r[7], r[8]) for r in rows}

    def get(self, reference: bool, kind: str, field: str = ""
            ) -> tuple[float | None, float | None, int, str | None]:
        """(low, high, dropped, reason) of an interval the week has a statistic for."""
        key = (reference, kind, field)
        if key not in self._rows and not self._resampled:
            self._rows.update(self._index(
                derived.week_intervals(self._con, self._config, [self._week])))
            self._resampled = True
        return self._rows[key]


def _fleiss(o: np.ndarray, units: int, m_min, m_max) -> tuple[float | None, str | None]:
    """Fleiss' kappa from a summed coincidence matrix when every unit has m values.

    With m values per unit, ``trace(o) = m * sum_i P_i`` and the row sums of o are the
    category totals ``sum_i n_ij``, so P-bar = trace / (N m), p_j = n_j / (N m) and
    kappa = (P-bar - sum p_j^2) / (1 - sum p_j^2) (Fleiss 1971), as
    `metrics.agreement.fleiss_kappa` on the units x categories counts.
    """
    if not units:
        return None, REASON_NO_PAIRABLE_UNITS
    if m_min != m_max:
        return None, f"units have {m_min} to {m_max} values: Fleiss' kappa needs equal counts"
    total = units * m_min
    p_bar = float(np.trace(o)) / total
    p_j = o.sum(axis=1) / total
    chance = float((p_j * p_j).sum())
    if chance >= 1.0 - 1e-12:
        return None, REASON_NO_VARIATION
    return (p_bar - chance) / (1.0 - chance), None


def _kind_summary(config: ProjectConfig, kind: str, week_kinds: _WeekKinds,
                  intervals: _Intervals, field: str = "") -> dict[str, Any]:
    """units, agreement, alpha, alpha_ci, alpha_reason, warnings of one kind in a week."""
    total, units, m_min, m_max = week_kinds.get(kind, field)
    fleiss, fleiss_reason = _fleiss(total, units, m_min, m_max)
    alpha, reason = alpha_from_coincidence(total)
    agreement = percent_agreement_from_coincidence(total)
    out: dict[str, Any] = {
        "units": units, "agreement": agreement, "alpha": alpha, "alpha_ci": None,
        "alpha_reason": reason, "warnings": _small_sample(units, config),
        "fleiss_kappa": fleiss, "fleiss_kappa_reason": fleiss_reason,
    }
    if alpha is not None:
        if config.agreement.bootstrap < 1:
            ci, dropped, ci_reason = None, 0, REASON_NO_BOOTSTRAP
        else:
            low, high, dropped, ci_reason = intervals.get(False, kind, field)
            ci = None if low is None else [low, high]
        out["alpha_ci"] = ci
        out["alpha_ci_dropped"] = dropped
        if ci_reason:
            out["alpha_ci_reason"] = ci_reason
    return out


def _m3_counts(con, week: str, *, reference: bool) -> dict[str, int]:
    row = con.execute(
        """SELECT count(DISTINCT item_id), count(*), coalesce(sum(agreements), 0),
                  coalesce(sum(class_disagreements), 0),
                  coalesce(sum(presence_disagreements), 0), coalesce(sum(low_overlap), 0)
        FROM d_pairs WHERE week = $w AND reference = $r""",
        {"w": week, "r": reference},
    ).fetchone()
    keys = ("items", "pairs", "agreements", "class_disagreements",
            "presence_disagreements", "low_overlap")
    return {k: int(v) for k, v in zip(keys, row, strict=True)}


def _m3(con, config: ProjectConfig, week: str, *, reference: bool,
        intervals: _Intervals) -> dict[str, Any]:
    """The M3 counts, rate, item-bootstrap CI and status of a week's peer or gold pairs."""
    out: dict[str, Any] = _m3_counts(con, week, reference=reference)
    a, c, p = out["agreements"], out["class_disagreements"], out["presence_disagreements"]
    rate = _ratio(c + p, a + c + p)
    out["disagreement_rate"] = rate
    out["disagreement_rate_reason"] = (
        None if rate is not None else REASON_NO_PAIRS if not out["pairs"] else REASON_NO_BOXES
    )
    out["disagreement_rate_ci"] = None
    out["disagreement_rate_ci_reason"] = out["disagreement_rate_reason"]
    if rate is not None:
        if config.agreement.bootstrap < 1:
            out["disagreement_rate_ci_reason"] = REASON_NO_BOOTSTRAP
        else:
            low, high, dropped, reason = intervals.get(reference, "m3")
            if low is not None:
                out["disagreement_rate_ci"] = [low, high]
            out["disagreement_rate_ci_reason"] = reason
            out["disagreement_rate_ci_dropped"] = dropped
    out["status"] = traffic_light(rate, config.thresholds["visual_disagreement_rate"])
    return out


def _labels_order(config: ProjectConfig, seen: Sequence[str]) -> list[str]:
    extra = sorted(set(seen) - set(config.labels))
    return list(config.labels) + extra


# --------------------------------------------------------------------------------------
# The weekly visual object
# --------------------------------------------------------------------------------------


def _class_section(con, config, week, week_kinds, intervals) -> dict[str, Any]:
    out = _kind_summary(config, "class", week_kinds, intervals)
    rows = con.execute(
        """SELECT bp.label_a, bp.label_b, count(*) FROM d_box_pairs bp JOIN d_pairs p
        USING (pair_id) WHERE p.week = $w AND NOT p.reference
          AND bp.kind IN ('agreement', 'class') GROUP BY ALL""",
        {"w": week},
    ).fetchall()
    out["confusion"] = confusion_matrix(config, rows)
    return out


def confusion_matrix(config: ProjectConfig, rows: Sequence[tuple[str, str, int]],
                     ) -> dict[str, Any]:
    """{labels, matrix} of matched box pairs counted by their two labels (rows of
    ``(label_a, label_b, n)``): the diagonal holds agreements, cells (a, b) and (b, a)
    both hold the class disagreements between a and b. Configured labels first."""
    labels = _labels_order(config, [r[0] for r in rows] + [r[1] for r in rows])
    pos = {lab: i for i, lab in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for la, lb, n in rows:
        i, j = pos[la], pos[lb]
        matrix[i, j] += n
        if i != j:
            matrix[j, i] += n
    return {"labels": labels, "matrix": matrix.tolist()}


def _iou_section(con, config, week) -> dict[str, Any]:
    row = con.execute(
        """SELECT count(*), avg(bp.iou), median(bp.iou),
                  count(*) FILTER (bp.low_overlap)
        FROM d_box_pairs bp JOIN d_pairs p USING (pair_id)
        WHERE p.week = $w AND NOT p.reference AND bp.kind IN ('agreement', 'class')""",
        {"w": week},
    ).fetchone()
    units, mean, median, low = int(row[0]), row[1], row[2], int(row[3])
    curve = {round(float(t), 2): (int(a), int(c), int(p)) for t, a, c, p in con.execute(
        """SELECT t, agreements, class_disagreements, presence_disagreements
        FROM d_threshold WHERE week = $w AND NOT reference""", {"w": week},
    ).fetchall()}
    by_threshold = []
    for t in MATCH_THRESHOLDS:
        a, c, p = curve.get(round(t, 2), (0, 0, 0))
        by_threshold.append({"t": t, "agreements": a, "class_disagreements": c,
                             "presence_disagreements": p, "agreement": _ratio(a, a + c + p)})
    return {
        "units": units,
        # Localization agreement: the share of matched pairs not flagged low overlap.
        "agreement": _ratio(units - low, units),
        "alpha": None, "alpha_ci": None,
        "alpha_reason": REASON_IOU if units else REASON_NO_MATCHED,
        "warnings": _small_sample(units, config),
        "mean": float(mean) if mean is not None else None,
        "median": float(median) if median is not None else None,
        "low_overlap": low,
        "low_overlap_threshold": config.agreement.low_overlap,
        "by_threshold": by_threshold,
    }


def _free_text_section(con, config, week, field) -> dict[str, Any]:
    row = con.execute(
        """SELECT count(*), avg(t.similarity), count(*) FILTER (t.similarity < $cut)
        FROM d_text t JOIN d_pairs p USING (pair_id)
        WHERE p.week = $w AND NOT p.reference AND t.field = $f""",
        {"w": week, "f": field, "cut": FREE_TEXT_CUTOFF},
    ).fetchone()
    pairs, mean, below = int(row[0]), row[1], int(row[2])
    return {
        "kind": "free",
        "units": pairs,
        # An agreeing pair of free texts: similarity at least 0.8.
        "agreement": _ratio(pairs - below, pairs),
        "alpha": None, "alpha_ci": None, "alpha_reason": REASON_FREE_TEXT,
        "warnings": _small_sample(pairs, config),
        "pairs": pairs,
        "mean_similarity": float(mean) if mean is not None else None,
        "share_below_0_8": _ratio(below, pairs),
        "similarity_reason": None if pairs else REASON_NO_TEXT_PAIRS,
    }


def _mentions_key(config: ProjectConfig) -> str:
    return "mentions" if "mentions" not in config.fields else "label_mentions"


def visual_week(con: duckdb.DuckDBPyConnection, config: ProjectConfig, week: str
                ) -> dict[str, Any]:
    """The ``visual`` object of the weekly report (DESIGN "Interfaces").

    M3 = (class + presence disagreements) / (agreements + class + presence) summed over
    the week's peer pairs, with an item-bootstrap 95% CI and a traffic light; the four
    kinds (presence, class, text per field plus ``mentions``, schema) with units, percent
    agreement, Krippendorff's alpha (nominal, from coincidence matrices) and its CI; IoU
    statistics and the threshold curve; and ``reference``, the same M3 numbers on the
    pairs against gold.

    Parameters
    ----------
    con : DuckDB connection (read-only is fine once the derived tables exist)
    config : ProjectConfig
    week : str
        ISO week, e.g. ``"2026-W02"``. A week without pairs gives zero counts and
        ``None`` rates with reasons.

    Returns
    -------
    dict
        JSON-ready (floats, ints, strings, lists, None).
    """
    derived.ensure(con, config)
    intervals = _Intervals(con, config, week)
    m3 = _m3(con, config, week, reference=False, intervals=intervals)
    week_kinds = _WeekKinds(con, config, week)
    warnings: list[str] = []
    if derived.is_fresh(con, config) is False:
        warnings.append("the visual tables were built with a different [labels], [fields], "
                        "[agreement] or [sample] config: ingest again to rebuild them")
    box_units = m3["agreements"] + m3["class_disagreements"] + m3["presence_disagreements"]
    if box_units < config.agreement.min_units:
        warnings.append(f"{box_units} box units, below min_units "
                        f"{config.agreement.min_units}: treat with care")
    text: dict[str, Any] = {}
    has_free = False
    for field, kind in config.fields.items():
        if kind == "free":
            has_free = True
            text[field] = _free_text_section(con, config, week, field)
        else:
            text[field] = {"kind": kind,
                           **_kind_summary(config, kind, week_kinds, intervals, field)}
    if has_free:
        text[_mentions_key(config)] = {
            "kind": "mentions", **_kind_summary(config, "mentions", week_kinds, intervals),
        }
    reference = _m3(con, config, week, reference=True, intervals=intervals)
    return {
        **m3,
        "warnings": warnings,
        "presence": _kind_summary(config, "presence", week_kinds, intervals),
        "class": _class_section(con, config, week, week_kinds, intervals),
        "text": text,
        "schema": _kind_summary(config, "schema", week_kinds, intervals),
        "iou": _iou_section(con, config, week),
        "reference": reference,
    }


# --------------------------------------------------------------------------------------
# Series and breakdowns
# --------------------------------------------------------------------------------------


def visual_series(con: duckdb.DuckDBPyConnection, config: ProjectConfig, *, ci: bool = True,
                  weeks: Sequence[str] | None = None) -> pd.DataFrame:
    """M3 per week, every week with data (annotations of roles annotator, reviewer or
    gold), ascending; only ``weeks`` when given (a row for each, data or not).

    Columns: week, items, pairs, agreements, class_disagreements, presence_disagreements,
    low_overlap, disagreement_rate (NaN when undefined), and with ``ci`` the item
    bootstrap interval ci_low, ci_high.
    """
    derived.ensure(con, config)
    # Weeks with data come from the counts the rebuild stores (`d_week_counts`); given
    # weeks restrict the pair scan, so a window of weeks costs the same however long the
    # history is.
    df = con.execute(
        """WITH weeks AS (
            SELECT week FROM d_week_counts WHERE $weeks IS NULL
            UNION SELECT DISTINCT week FROM d_pairs WHERE $weeks IS NULL
            UNION SELECT unnest($weeks::VARCHAR[])),
        c AS (SELECT week, count(DISTINCT item_id) AS items, count(*) AS pairs,
                     sum(agreements) AS agreements,
                     sum(class_disagreements) AS class_disagreements,
                     sum(presence_disagreements) AS presence_disagreements,
                     sum(low_overlap) AS low_overlap
              FROM d_pairs
              WHERE NOT reference AND ($weeks IS NULL OR list_contains($weeks, week))
              GROUP BY week)
        SELECT w.week, coalesce(items, 0) AS items, coalesce(pairs, 0) AS pairs,
               coalesce(agreements, 0) AS agreements,
               coalesce(class_disagreements, 0) AS class_disagreements,
               coalesce(presence_disagreements, 0) AS presence_disagreements,
               coalesce(low_overlap, 0) AS low_overlap
        FROM weeks w LEFT JOIN c USING (week) ORDER BY w.week""",
        {"weeks": None if weeks is None else list(weeks)},
    ).df()
    for col in df.columns[1:]:
        df[col] = df[col].astype("int64")
    den = df["agreements"] + df["class_disagreements"] + df["presence_disagreements"]
    num = df["class_disagreements"] + df["presence_disagreements"]
    df["disagreement_rate"] = (num / den.where(den > 0)).astype("float64")
    if ci:
        low = np.full(len(df), np.nan)
        high = np.full(len(df), np.nan)
        if config.agreement.bootstrap >= 1:
            stored = {w: (lo, hi) for w, lo, hi in con.execute(
                """SELECT week, low, high FROM d_week_ci
                WHERE NOT reference AND kind = 'm3' AND n_resamples = $n""",
                {"n": config.agreement.bootstrap},
            ).fetchall()}
            # Weeks with box units have an interval; resample those not stored.
            missing = [w for w, d in zip(df["week"], den, strict=True)
                       if d > 0 and w not in stored]
            if missing:
                for row in derived.week_intervals(con, config, missing, alphas=False):
                    if not row[1]:
                        stored[row[0]] = (row[5], row[6])
            for row, week in enumerate(df["week"]):
                lo, hi = stored.get(week, (None, None))
                if lo is not None:
                    low[row], high[row] = lo, hi
        df["ci_low"] = low
        df["ci_high"] = high
    return df


def _kappa(n11, n10, n01, n00) -> float | None:
    return cohen_kappa_from_table([[n11, n10], [n01, n00]])


def pair_breakdown(con: duckdb.DuckDBPyConnection, config: ProjectConfig, week: str
                   ) -> pd.DataFrame:
    """Per annotator pair (annotator_a < annotator_b) in a week: the heatmap data.

    Columns: annotator_a, annotator_b, items, pairs, agreements, class_disagreements,
    presence_disagreements, low_overlap, disagreement_rate, presence_units and
    presence_kappa (Cohen's kappa on the (item, label) presence units of their shared
    items; None when undefined).
    """
    derived.ensure(con, config)
    df = con.execute(
        """SELECT annotator_a, annotator_b, count(DISTINCT item_id) AS items,
                  count(*) AS pairs, sum(agreements) AS agreements,
                  sum(class_disagreements) AS class_disagreements,
                  sum(presence_disagreements) AS presence_disagreements,
                  sum(low_overlap) AS low_overlap,
                  sum(presence_11) AS n11, sum(presence_10) AS n10,
                  sum(presence_01) AS n01, sum(presence_00) AS n00
        FROM d_pairs WHERE week = $w AND NOT reference
        GROUP BY ALL ORDER BY annotator_a, annotator_b""",
        {"w": week},
    ).df()
    return _finish_pairs(df)


def _finish_pairs(df: pd.DataFrame) -> pd.DataFrame:
    for col in ("items", "pairs", "agreements", "class_disagreements",
                "presence_disagreements", "low_overlap", "n11", "n10", "n01", "n00"):
        df[col] = df[col].astype("int64")
    den = df["agreements"] + df["class_disagreements"] + df["presence_disagreements"]
    df["disagreement_rate"] = (
        (df["class_disagreements"] + df["presence_disagreements"]) / den.where(den > 0)
    ).astype("float64")
    df["presence_units"] = df["n11"] + df["n10"] + df["n01"] + df["n00"]
    df["presence_kappa"] = pd.Series(
        [_kappa(*r) for r in df[["n11", "n10", "n01", "n00"]].itertuples(index=False)],
        index=df.index, dtype=object,
    )
    return df.drop(columns=["n11", "n10", "n01", "n00"])


def gold_breakdown(con: duckdb.DuckDBPyConnection, config: ProjectConfig, *,
                   weeks: Sequence[str] | None = None) -> pd.DataFrame:
    """Each annotator against gold (the reference pairs), over ``weeks`` (default all).

    Box detection against gold: TP = same-label matched pairs (agreements), FP = the
    annotator's matchable boxes not in an agreement, FN = gold boxes not in an agreement;
    precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 TP / (2 TP + FP + FN).
    class_accuracy = agreements / (agreements + class disagreements). presence_kappa:
    Cohen's kappa on (item, label) presence. ``similarity_<field>``: mean free-text
    similarity per free field. Undefined ratios are None.
    """
    derived.ensure(con, config)
    params = {"all": weeks is None, "weeks": list(weeks or [])}
    where = "reference AND ($all OR week IN (SELECT unnest($weeks::VARCHAR[])))"
    df = con.execute(
        f"""SELECT annotator_a AS annotator, count(DISTINCT item_id) AS items,
                  count(*) AS pairs, sum(agreements) AS agreements,
                  sum(class_disagreements) AS class_disagreements,
                  sum(presence_disagreements) AS presence_disagreements,
                  sum(low_overlap) AS low_overlap,
                  sum(n_boxes_a) AS boxes, sum(n_boxes_b) AS gold_boxes,
                  sum(presence_11) AS n11, sum(presence_10) AS n10,
                  sum(presence_01) AS n01, sum(presence_00) AS n00
        FROM d_pairs WHERE {where} GROUP BY ALL ORDER BY annotator_a""",
        params,
    ).df()
    for col in df.columns[1:]:
        df[col] = df[col].astype("int64")
    tp = df["agreements"]
    fp = df["boxes"] - tp
    fn = df["gold_boxes"] - tp
    df["tp"], df["fp"], df["fn"] = tp, fp, fn

    def ratio(num, den):
        return pd.Series([_ratio(n, d) for n, d in zip(num, den, strict=True)],
                         index=df.index, dtype=object)

    df["precision"] = ratio(tp, tp + fp)
    df["recall"] = ratio(tp, tp + fn)
    df["f1"] = ratio(2 * tp, 2 * tp + fp + fn)
    df["class_accuracy"] = ratio(tp, tp + df["class_disagreements"])
    df["presence_kappa"] = pd.Series(
        [_kappa(*r) for r in df[["n11", "n10", "n01", "n00"]].itertuples(index=False)],
        index=df.index, dtype=object,
    )
    df = df.drop(columns=["n11", "n10", "n01", "n00"])
    for field, kind in config.fields.items():
        if kind != "free":
            continue
        sims = dict(con.execute(
            f"""SELECT p.annotator_a, avg(t.similarity) FROM d_text t JOIN d_pairs p
            USING (pair_id) WHERE {where.replace('reference', 'p.reference')}
              AND t.field = $f GROUP BY 1""",
            {**params, "f": field},
        ).fetchall())
        df[f"similarity_{field}"] = pd.Series(
            [sims.get(a) for a in df["annotator"]], index=df.index, dtype=object
        )
    return df


def label_breakdown(con: duckdb.DuckDBPyConnection, config: ProjectConfig, week: str
                    ) -> pd.DataFrame:
    """M3 per label in a week's peer pairs: every box outcome counted for its label(s).

    A class disagreement counts for both its labels. Columns: label, agreements,
    class_disagreements, presence_disagreements, low_overlap, disagreement_rate.
    """
    derived.ensure(con, config)
    df = con.execute(
        """WITH o AS (
            SELECT bp.kind, bp.low_overlap, coalesce(bp.label_a, bp.label_b) AS label
            FROM d_box_pairs bp JOIN d_pairs p USING (pair_id)
            WHERE p.week = $w AND NOT p.reference
            UNION ALL
            SELECT bp.kind, bp.low_overlap, bp.label_b
            FROM d_box_pairs bp JOIN d_pairs p USING (pair_id)
            WHERE p.week = $w AND NOT p.reference AND bp.kind = 'class')
        SELECT label, count(*) FILTER (kind = 'agreement') AS agreements,
               count(*) FILTER (kind = 'class') AS class_disagreements,
               count(*) FILTER (kind = 'presence') AS presence_disagreements,
               count(*) FILTER (low_overlap) AS low_overlap
        FROM o GROUP BY label""",
        {"w": week},
    ).df()
    order = _labels_order(config, df["label"].tolist())
    df = df.set_index("label").reindex(order, fill_value=0).reset_index()
    for col in df.columns[1:]:
        df[col] = df[col].astype("int64")
    den = df["agreements"] + df["class_disagreements"] + df["presence_disagreements"]
    df["disagreement_rate"] = (
        (df["class_disagreements"] + df["presence_disagreements"]) / den.where(den > 0)
    ).astype("float64")
    return df


def _annotator_filter(annotator) -> tuple[str | None, str | None]:
    if annotator is None:
        return None, None
    if isinstance(annotator, str):
        return annotator, None
    first, second = annotator
    return first, second


def disagreement_items(
    con: duckdb.DuckDBPyConnection,
    config: ProjectConfig,
    week: str,
    *,
    kind: str,
    label: str | None = None,
    annotator: str | tuple[str, str] | None = None,
) -> pd.DataFrame:
    """The items behind a number of a week: where annotators disagree in ``kind``.

    Parameters
    ----------
    kind : {"presence", "class", "low_overlap", "schema", "mentions"} or a field name
        presence / class / low_overlap: box outcomes of the week's peer pairs (``label``
        filters on either box's label). A categorical, multilabel field, ``mentions`` or
        ``schema``: pairs of annotations in the item's rating set whose values differ
        (``label`` filters a multilabel value or a mentioned label). A free field: the
        week's pairs with similarity below 0.8.
    label : str, optional
    annotator : str or (str, str), optional
        Only pairs involving this annotator, or exactly this pair of annotators.

    Returns
    -------
    DataFrame
        item_id, annotators (sorted list of the annotators in the disagreeing pairs),
        pairs (disagreeing pairs), count (disagreements: box outcomes, differing values
        or low-similarity pairs), sorted by count descending then item_id. Free fields add
        min_similarity.
    """
    derived.ensure(con, config)
    first, second = _annotator_filter(annotator)
    params: dict[str, Any] = {"w": week, "x": first, "y": second}
    free = kind not in _BOX_KINDS and config.fields.get(kind) == "free"
    pair_filter = """($x IS NULL OR ($y IS NULL AND (p.annotator_a = $x OR p.annotator_b = $x))
        OR (least($x, $y) = p.annotator_a AND greatest($x, $y) = p.annotator_b))"""
    if kind in _BOX_KINDS:
        cond = {"presence": "bp.kind = 'presence'", "class": "bp.kind = 'class'",
                "low_overlap": "bp.low_overlap"}[kind]
        params["label"] = label
        sql = f"""
            SELECT p.item_id, p.pair_id, p.annotator_a, p.annotator_b, count(*) AS n
            FROM d_box_pairs bp JOIN d_pairs p USING (pair_id)
            WHERE p.week = $w AND NOT p.reference AND {cond} AND {pair_filter}
              AND ($label IS NULL OR bp.label_a = $label OR bp.label_b = $label)
            GROUP BY ALL"""
    elif free:
        params["f"] = kind
        params["cut"] = FREE_TEXT_CUTOFF
        sql = f"""
            SELECT p.item_id, p.pair_id, p.annotator_a, p.annotator_b, 1 AS n,
                   t.similarity
            FROM d_text t JOIN d_pairs p USING (pair_id)
            WHERE p.week = $w AND NOT p.reference AND t.field = $f AND t.similarity < $cut
              AND {pair_filter}"""
    else:
        sql = _set_disagreement_sql(config, kind, label, params, pair_filter)
    columns = ["item_id", "annotators", "pairs", "count"]
    if free:
        columns.append("min_similarity")
    # One row per item: the annotators of its disagreeing pairs, sorted.
    rows = con.execute(
        f"""WITH d AS ({sql})
        SELECT item_id, list_sort(list_distinct(list(annotator_a) || list(annotator_b))),
               count(DISTINCT pair_id), sum(n) AS total
               {", min(similarity)" if free else ""}
        FROM d GROUP BY item_id ORDER BY total DESC, item_id""",
        params,
    ).fetchall()
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    out = [{"item_id": r[0], "annotators": list(r[1]), "pairs": int(r[2]), "count": int(r[3]),
            **({"min_similarity": float(r[4])} if free else {})} for r in rows]
    return pd.DataFrame(out, columns=columns)


def _set_disagreement_sql(config: ProjectConfig, kind: str, label: str | None,
                          params: dict[str, Any], pair_filter: str) -> str:
    """Pairs of rating-set members of the week whose values of ``kind`` differ."""
    members = """
        WITH p AS (
            SELECT m1.item_id, m1.ann_key AS ann_key_a, m2.ann_key AS ann_key_b,
                   m1.annotator_id AS annotator_a, m2.annotator_id AS annotator_b,
                   m1.ann_key * 1000003 + m2.ann_key AS pair_id
            FROM d_members m1 JOIN d_members m2
              ON m1.week = m2.week AND m1.item_id = m2.item_id
             AND m1.annotator_id < m2.annotator_id
            WHERE m1.week = $w)"""
    if kind == "schema":
        return members + f"""
            SELECT p.item_id, p.pair_id, p.annotator_a, p.annotator_b, 1 AS n
            FROM p JOIN d_ann a ON a.ann_key = p.ann_key_a
                   JOIN d_ann b ON b.ann_key = p.ann_key_b
            WHERE a.schema_pass <> b.schema_pass AND {pair_filter}"""
    field_kind = config.fields.get(kind)
    if field_kind is None and kind in ("mentions", _mentions_key(config)):
        params["label"] = label
        return members + f""",
        v AS (SELECT ann_key, label AS value FROM d_ann_label WHERE source = 'mention'),
        sides AS (
            SELECT p.*, v.value FROM p JOIN v ON v.ann_key = p.ann_key_a
            UNION ALL SELECT p.*, v.value FROM p JOIN v ON v.ann_key = p.ann_key_b),
        counted AS (SELECT item_id, pair_id, annotator_a, annotator_b, ann_key_a, ann_key_b,
                           value, count(*) AS k FROM sides GROUP BY ALL)
        SELECT c.item_id, c.pair_id, c.annotator_a, c.annotator_b, count(*) AS n
        FROM counted c JOIN d_ann a ON a.ann_key = c.ann_key_a AND a.has_text
                       JOIN d_ann b ON b.ann_key = c.ann_key_b AND b.has_text
        WHERE c.k = 1 AND ($label IS NULL OR c.value = $label) AND {pair_filter.replace('p.', 'c.')}
        GROUP BY ALL"""
    if field_kind == "categorical":
        params["f"] = kind
        return members + f"""
            SELECT p.item_id, p.pair_id, p.annotator_a, p.annotator_b, 1 AS n
            FROM p JOIN d_ann_value a ON a.ann_key = p.ann_key_a AND a.field = $f
                   JOIN d_ann_value b ON b.ann_key = p.ann_key_b AND b.field = $f
            WHERE a.value <> b.value AND {pair_filter}"""
    if field_kind == "multilabel":
        params["f"] = kind
        params["label"] = label
        return members + f""",
        v AS (SELECT ann_key, value FROM d_ann_value WHERE field = $f),
        sides AS (
            SELECT p.*, v.value FROM p JOIN v ON v.ann_key = p.ann_key_a
            UNION ALL SELECT p.*, v.value FROM p JOIN v ON v.ann_key = p.ann_key_b),
        counted AS (SELECT item_id, pair_id, annotator_a, annotator_b, ann_key_a, ann_key_b,
                           value, count(*) AS k FROM sides GROUP BY ALL)
        SELECT c.item_id, c.pair_id, c.annotator_a, c.annotator_b, count(*) AS n
        FROM counted c
        JOIN d_ann_field a ON a.ann_key = c.ann_key_a AND a.field = $f
        JOIN d_ann_field b ON b.ann_key = c.ann_key_b AND b.field = $f
        WHERE c.k = 1 AND ($label IS NULL OR c.value = $label) AND {pair_filter.replace('p.', 'c.')}
        GROUP BY ALL"""
    known = ", ".join(["presence", "class", "low_overlap", "schema", "mentions",
                       *config.fields])
    raise ValueError(f"unknown kind {kind!r}; use one of: {known}")


# --------------------------------------------------------------------------------------
# Drill-down
# --------------------------------------------------------------------------------------


def annotation_boxes(con: duckdb.DuckDBPyConnection, keys: Sequence[int]
                     ) -> dict[int, list[dict]]:
    """Every stored box of these annotations (by `ann_key`), in box order, with its
    `bbox` as [x, y, w, h] and whether it enters matching."""
    out: dict[int, list[dict]] = {int(k): [] for k in keys}
    for ann_key, idx, label, x, y, w, h, attrs, matchable in con.execute(
        """SELECT ann_key, box_idx, label, x, y, w, h, attributes, matchable FROM boxes
        WHERE ann_key IN (SELECT unnest($k::BIGINT[])) ORDER BY ann_key, box_idx""",
        {"k": list(out)},
    ).fetchall():
        out[ann_key].append({
            "box_idx": idx, "label": label, "bbox": [x, y, w, h], "matchable": matchable,
            "attributes": orjson.loads(attrs) if attrs is not None else None,
        })
    return out


def item_pairs(con: duckdb.DuckDBPyConnection, config: ProjectConfig, item_id: str
               ) -> list[dict[str, Any]]:
    """Every pair of an item (peer and reference, all weeks) with both annotations and
    the matching result, for the drill-down view.

    Each entry: pair_id, week, reference, item_id; ``a`` and ``b`` (annotation_id,
    annotator_id, role, submitted_at (ISO 8601), week, fields, boxes: every box with
    box_idx, label, bbox ``[x, y, w, h]``, matchable, attributes); the counts
    (agreements, class_disagreements, presence_disagreements, low_overlap); ``matches``
    (kind agreement/class, box_a, box_b, labels, iou, low_overlap); unmatched_a /
    unmatched_b (box indices, presence disagreements); ``text`` {free field: similarity}.
    """
    derived.ensure(con, config)
    pairs = con.execute(
        """SELECT pair_id, week, reference, ann_key_a, ann_key_b, agreements,
                  class_disagreements, presence_disagreements, low_overlap
        FROM d_pairs WHERE item_id = $i ORDER BY reference, week, annotator_a, annotator_b""",
        {"i": item_id},
    ).fetchall()
    if not pairs:
        return []
    keys = sorted({p[3] for p in pairs} | {p[4] for p in pairs})
    anns = {}
    for row in con.execute(
        """SELECT ann_key, annotation_id, annotator_id, role, submitted_at, week, fields
        FROM annotations WHERE ann_key IN (SELECT unnest($k::BIGINT[]))""", {"k": keys},
    ).fetchall():
        anns[row[0]] = {
            "ann_key": row[0], "annotation_id": row[1], "annotator_id": row[2],
            "role": row[3], "submitted_at": row[4].isoformat(), "week": row[5],
            "fields": orjson.loads(row[6]) if row[6] is not None else None, "boxes": [],
        }
    for ann_key, boxes in annotation_boxes(con, keys).items():
        anns[ann_key]["boxes"] = boxes
    pair_ids = [p[0] for p in pairs]
    outcomes: dict[int, list] = {pid: [] for pid in pair_ids}
    for pid, kind, box_a, box_b, la, lb, iou, low in con.execute(
        """SELECT pair_id, kind, box_a, box_b, label_a, label_b, iou, low_overlap
        FROM d_box_pairs WHERE pair_id IN (SELECT unnest($p::BIGINT[]))
        ORDER BY pair_id, kind, box_a, box_b""", {"p": pair_ids},
    ).fetchall():
        outcomes[pid].append((kind, box_a, box_b, la, lb, iou, low))
    texts: dict[int, dict] = {pid: {} for pid in pair_ids}
    for pid, field, sim in con.execute(
        "SELECT pair_id, field, similarity FROM d_text "
        "WHERE pair_id IN (SELECT unnest($p::BIGINT[]))", {"p": pair_ids},
    ).fetchall():
        texts[pid][field] = sim
    out = []
    for pid, week, reference, ka, kb, agr, cls, pres, low in pairs:
        rows = outcomes[pid]
        out.append({
            "pair_id": pid, "week": week, "reference": reference, "item_id": item_id,
            "a": anns[ka], "b": anns[kb],
            "agreements": agr, "class_disagreements": cls,
            "presence_disagreements": pres, "low_overlap": low,
            "matches": [{"kind": k, "box_a": ba, "box_b": bb, "label_a": la, "label_b": lb,
                         "iou": iou, "low_overlap": lo}
                        for k, ba, bb, la, lb, iou, lo in rows if k != "presence"],
            "unmatched_a": sorted(r[1] for r in rows if r[0] == "presence" and r[1] is not None),
            "unmatched_b": sorted(r[2] for r in rows if r[0] == "presence" and r[2] is not None),
            "text": texts[pid],
        })
    return out


def kind_coincidence(
    con: duckdb.DuckDBPyConnection,
    config: ProjectConfig,
    weeks: Sequence[str],
    *,
    kind: str,
    field: str = "",
    categories: Sequence[str] | None = None,
) -> GroupCoincidence:
    """Per-item coincidence contributions of a kind over several weeks, for
    `metrics.agreement.bootstrap_alpha_diff_ci` (alpha before/after a guideline change).

    An item counted in several of the weeks contributes the sum of its weekly units.
    ``kind`` is one of presence, class, schema, mentions, categorical, multilabel (the
    last two with ``field``). Pass the same ``categories`` for both periods.
    """
    derived.ensure(con, config)
    items = derived.period_items(con, weeks)
    cats, o = _coincidence(con, weeks, kind, field, categories)
    k = len(cats)
    return GroupCoincidence(
        groups=np.asarray(items, dtype=object),
        categories=np.asarray(cats, dtype=object),
        contributions=o.reshape(len(items), k * k),
    )
