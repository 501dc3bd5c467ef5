"""Queries behind the dashboard's detail pages: visual-agreement filters, the item
drill-down, per-annotator trends, and the data inventory (exports, quarantine, uploads).

Like the rest of `metrics`, every function is ``fn(con, config, ...)`` on a (read-only)
DuckDB connection, binds all its values and returns plain dicts / DataFrames; none
imports Streamlit. Rates are ratios of summed counts, as in `metrics.visual` and
`metrics.weekly`; the filtered M3 numbers here use the same definitions as
`metrics.visual.label_breakdown` (a box outcome counts for a label when either box has it)
and `metrics.visual.disagreement_items` (an annotator filter keeps the pairs they are in).
"""

from __future__ import annotations

import difflib
import filecmp
import os
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import duckdb
import numpy as np
import orjson
import pandas as pd

from metrics import derived
from metrics.agreement import bootstrap_ratio_ci
from metrics.config import ProjectConfig
from metrics.visual import annotation_boxes, confusion_matrix

__all__ = [
    "UploadRefused",
    "annotator_series",
    "annotators",
    "class_pair_items",
    "compare_fields",
    "confusion",
    "exports",
    "fmt_size",
    "IOU_BINS",
    "iou_histogram",
    "item_annotations",
    "item_index",
    "m3_by_week",
    "max_upload_bytes",
    "pair_counts",
    "quarantine",
    "safe_upload_name",
    "save_upload",
    "upload_dir",
    "word_diff_spans",
]

ROLE_ORDER = {"annotator": 0, "reviewer": 1, "gold": 2, "model": 3}

# A pair passes the annotator filter when $x is NULL, the pair includes $x ($y NULL), or
# it is exactly the pair {$x, $y}.
_PAIR_FILTER = """($x IS NULL OR ($y IS NULL AND (p.annotator_a = $x OR p.annotator_b = $x))
    OR (least($x, $y) = p.annotator_a AND greatest($x, $y) = p.annotator_b))"""


def _who(annotator: str | tuple[str, str] | list[str] | None) -> dict[str, str | None]:
    if annotator is None or annotator == "":
        return {"x": None, "y": None}
    if isinstance(annotator, str):
        return {"x": annotator, "y": None}
    first, second = annotator
    return {"x": first, "y": second}


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


# --------------------------------------------------------------------------------------
# Visual agreement, filtered
# --------------------------------------------------------------------------------------


def annotators(con: duckdb.DuckDBPyConnection, config: ProjectConfig) -> list[str]:
    """Annotator ids of current annotations of roles annotator, reviewer and gold."""
    return [r[0] for r in con.execute(
        "SELECT DISTINCT annotator_id FROM current_annotations "
        "WHERE role IN ('annotator', 'reviewer', 'gold') ORDER BY 1"
    ).fetchall()]


def m3_by_week(con: duckdb.DuckDBPyConnection, config: ProjectConfig, *,
               label: str | None = None, annotator: str | tuple[str, str] | None = None,
               ci: bool = True) -> pd.DataFrame:
    """M3 per week over the peer pairs, restricted to box outcomes of a label and/or the
    pairs of an annotator.

    Columns: week, items, pairs, agreements, class_disagreements, presence_disagreements,
    low_overlap, units (agreements + class + presence), disagreement_rate (NaN without
    units) and, with ``ci``, the item bootstrap interval ci_low / ci_high (as
    `metrics.visual.visual_series`). Weeks with pairs only, ascending.
    """
    derived.ensure(con, config)
    params: dict[str, Any] = {"label": label, **_who(annotator)}
    per_item = con.execute(
        f"""SELECT p.week, p.item_id, count(DISTINCT p.pair_id) AS pairs,
                  count(*) FILTER (bp.kind = 'agreement') AS a,
                  count(*) FILTER (bp.kind = 'class') AS c,
                  count(*) FILTER (bp.kind = 'presence') AS pr,
                  count(*) FILTER (bp.low_overlap) AS low
        FROM d_pairs p JOIN d_box_pairs bp USING (pair_id)
        WHERE NOT p.reference AND {_PAIR_FILTER}
          AND ($label IS NULL OR bp.label_a = $label OR bp.label_b = $label)
        GROUP BY ALL ORDER BY p.week, p.item_id""",
        params,
    ).df()
    cols = ["week", "items", "pairs", "agreements", "class_disagreements",
            "presence_disagreements", "low_overlap", "units", "disagreement_rate"]
    if ci:
        cols += ["ci_low", "ci_high"]
    if per_item.empty:
        return pd.DataFrame({c: pd.Series(dtype=object if c == "week" else "float64")
                             for c in cols})
    rows = []
    for week, g in per_item.groupby("week", sort=True):
        a, c, p = int(g["a"].sum()), int(g["c"].sum()), int(g["pr"].sum())
        row = {"week": week, "items": int(g["item_id"].nunique()), "pairs": int(g["pairs"].sum()),
               "agreements": a, "class_disagreements": c, "presence_disagreements": p,
               "low_overlap": int(g["low"].sum()), "units": a + c + p,
               "disagreement_rate": _ratio(c + p, a + c + p)}
        if ci:
            row["ci_low"] = row["ci_high"] = None
            if row["units"] and config.agreement.bootstrap >= 1:
                res = bootstrap_ratio_ci((g["c"] + g["pr"]).to_numpy(),
                                         (g["a"] + g["c"] + g["pr"]).to_numpy(),
                                         n_resamples=config.agreement.bootstrap, seed=0)
                row["ci_low"], row["ci_high"] = res.low, res.high
        rows.append(row)
    df = pd.DataFrame(rows, columns=cols)
    for col in ("disagreement_rate", *(("ci_low", "ci_high") if ci else ())):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df


def pair_counts(con: duckdb.DuckDBPyConnection, config: ProjectConfig, week: str, *,
                label: str | None = None) -> pd.DataFrame:
    """M3 per annotator pair of a week's peer pairs, counting box outcomes of ``label``
    only (all labels when None).

    Columns: annotator_a, annotator_b, items, pairs, agreements, class_disagreements,
    presence_disagreements, low_overlap, units, disagreement_rate.
    """
    derived.ensure(con, config)
    df = con.execute(
        """SELECT p.annotator_a, p.annotator_b, count(DISTINCT p.item_id) AS items,
                  count(DISTINCT p.pair_id) AS pairs,
                  count(bp.kind) FILTER (bp.kind = 'agreement') AS agreements,
                  count(bp.kind) FILTER (bp.kind = 'class') AS class_disagreements,
                  count(bp.kind) FILTER (bp.kind = 'presence') AS presence_disagreements,
                  count(bp.kind) FILTER (bp.low_overlap) AS low_overlap
        FROM d_pairs p LEFT JOIN d_box_pairs bp
          ON bp.pair_id = p.pair_id
         AND ($label IS NULL OR bp.label_a = $label OR bp.label_b = $label)
        WHERE p.week = $w AND NOT p.reference
        GROUP BY ALL ORDER BY p.annotator_a, p.annotator_b""",
        {"w": week, "label": label},
    ).df()
    for col in df.columns[2:]:
        df[col] = df[col].astype("int64")
    df["units"] = df["agreements"] + df["class_disagreements"] + df["presence_disagreements"]
    df["disagreement_rate"] = (
        (df["class_disagreements"] + df["presence_disagreements"])
        / df["units"].where(df["units"] > 0)
    ).astype("float64")
    return df


def confusion(con: duckdb.DuckDBPyConnection, config: ProjectConfig, week: str, *,
              annotator: str | tuple[str, str] | None = None) -> dict[str, Any]:
    """The symmetric label x label matrix of matched box pairs of a week's peer pairs
    (as ``visual_week(...)["class"]["confusion"]``), for the pairs of an annotator.

    Returns {labels, matrix}: the diagonal holds agreements; cells (a, b) and (b, a) both
    hold the class disagreements between a and b.
    """
    derived.ensure(con, config)
    rows = con.execute(
        f"""SELECT bp.label_a, bp.label_b, count(*) FROM d_box_pairs bp JOIN d_pairs p
        USING (pair_id) WHERE p.week = $w AND NOT p.reference
          AND bp.kind IN ('agreement', 'class') AND {_PAIR_FILTER} GROUP BY ALL""",
        {"w": week, **_who(annotator)},
    ).fetchall()
    return confusion_matrix(config, rows)


IOU_BINS = 40   # the IoU histogram's bins: [k/40, (k+1)/40), the last one closed at 1


def iou_histogram(con: duckdb.DuckDBPyConnection, config: ProjectConfig, week: str, *,
                  label: str | None = None, annotator: str | tuple[str, str] | None = None
                  ) -> dict:
    """The IoU of the matched box pairs (agreement or class) of a week's peer pairs, in
    ``IOU_BINS`` bins of width 1/``IOU_BINS`` over [0, 1] (the last bin includes 1).

    Counted in the database: a week at a million annotations has tens of thousands of
    matched pairs, which the page need not fetch nor send to the browser.

    Returns
    -------
    dict
        ``n`` (matched pairs), ``mean``, ``median`` and ``min`` IoU (None when ``n`` is
        0), ``counts``: list of ``IOU_BINS`` ints.
    """
    derived.ensure(con, config)
    rows = con.execute(
        f"""SELECT least(floor(bp.iou * $bins), $bins - 1)::INTEGER AS bin, count(*),
                   avg(bp.iou), median(bp.iou), min(bp.iou)
        FROM d_box_pairs bp JOIN d_pairs p USING (pair_id)
        WHERE p.week = $w AND NOT p.reference AND bp.kind IN ('agreement', 'class')
          AND ($label IS NULL OR bp.label_a = $label OR bp.label_b = $label)
          AND {_PAIR_FILTER}
        GROUP BY GROUPING SETS ((bin), ())""",
        {"w": week, "label": label, "bins": IOU_BINS, **_who(annotator)},
    ).fetchall()
    counts = [0] * IOU_BINS
    out = {"n": 0, "mean": None, "median": None, "min": None, "counts": counts}
    for b, n, mean, median, low in rows:
        if b is not None:
            counts[b] = int(n)
        elif n:      # the row of all bins
            out.update(n=int(n), mean=float(mean), median=float(median), min=float(low))
    return out


def class_pair_items(con: duckdb.DuckDBPyConnection, config: ProjectConfig, week: str,
                     label_a: str, label_b: str, *,
                     annotator: str | tuple[str, str] | None = None) -> pd.DataFrame:
    """Items of a week with class disagreements between two labels (a confusion-matrix
    cell), in the shape of `metrics.visual.disagreement_items`: item_id, annotators,
    pairs, count; most first."""
    derived.ensure(con, config)
    rows = con.execute(
        f"""SELECT p.item_id, p.pair_id, p.annotator_a, p.annotator_b, count(*) AS n
        FROM d_box_pairs bp JOIN d_pairs p USING (pair_id)
        WHERE p.week = $w AND NOT p.reference AND bp.kind = 'class'
          AND ((bp.label_a = $la AND bp.label_b = $lb)
               OR (bp.label_a = $lb AND bp.label_b = $la))
          AND {_PAIR_FILTER}
        GROUP BY ALL""",
        {"w": week, "la": label_a, "lb": label_b, **_who(annotator)},
    ).df()
    columns = ["item_id", "annotators", "pairs", "count"]
    if rows.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    out = []
    for item_id, g in rows.groupby("item_id", sort=True):
        out.append({"item_id": item_id,
                    "annotators": sorted(set(g["annotator_a"]) | set(g["annotator_b"])),
                    "pairs": int(g["pair_id"].nunique()), "count": int(g["n"].sum())})
    df = pd.DataFrame(out, columns=columns)
    return df.sort_values(["count", "item_id"], ascending=[False, True],
                          kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------
# Item drill-down
# --------------------------------------------------------------------------------------


def item_index(con: duckdb.DuckDBPyConnection, config: ProjectConfig, week: str | None = None,
               *, contains: str | None = None, limit: int = 500) -> pd.DataFrame:
    """Items to pick from: those with an annotation in ``week`` (every week when None)
    whose id contains ``contains``; most disagreement first.

    Columns: item_id, annotations (current, all roles), annotators, in_sample, pairs (peer
    pairs of the week, or of every week), disagreements (class + presence in them),
    low_overlap, schema_errors / policy_errors (annotations with one).
    """
    has_derived = not derived._missing_tables(con, ("d_pairs", "d_sample_items"))
    pairs_sql = (
        """SELECT item_id, count(*) AS pairs,
                  sum(class_disagreements + presence_disagreements) AS disagreements,
                  sum(low_overlap) AS low_overlap
           FROM d_pairs WHERE NOT reference AND ($week IS NULL OR week = $week)
           GROUP BY item_id"""
        if has_derived else
        "SELECT NULL::VARCHAR AS item_id, 0 AS pairs, 0 AS disagreements, 0 AS low_overlap "
        "WHERE false"
    )
    sample_sql = ("SELECT item_id FROM d_sample_items" if has_derived
                  else "SELECT NULL::VARCHAR AS item_id WHERE false")
    return con.execute(
        f"""WITH a AS (
            SELECT item_id, count(*) AS annotations,
                   list(DISTINCT annotator_id ORDER BY annotator_id) AS annotators,
                   count(*) FILTER (schema_errors > 0) AS schema_errors,
                   count(*) FILTER (policy_errors > 0) AS policy_errors
            FROM current_annotations
            WHERE item_id IN (SELECT item_id FROM current_annotations
                              WHERE $week IS NULL OR week = $week)
              AND ($q IS NULL OR contains(lower(item_id), lower($q)))
            GROUP BY item_id),
        pr AS ({pairs_sql}), s AS ({sample_sql})
        SELECT a.item_id, a.annotations, a.annotators,
               a.item_id IN (SELECT item_id FROM s) AS in_sample,
               coalesce(pr.pairs, 0)::BIGINT AS pairs,
               coalesce(pr.disagreements, 0)::BIGINT AS disagreements,
               coalesce(pr.low_overlap, 0)::BIGINT AS low_overlap,
               a.schema_errors, a.policy_errors
        FROM a LEFT JOIN pr USING (item_id)
        ORDER BY disagreements DESC, pairs DESC, a.schema_errors + a.policy_errors DESC,
                 a.item_id
        LIMIT $limit""",
        {"week": week, "q": contains or None, "limit": int(limit)},
    ).df()


def item_annotations(con: duckdb.DuckDBPyConnection, config: ProjectConfig, item_id: str
                     ) -> dict[str, Any]:
    """Everything the drill-down shows about one item: its image, and each current
    annotation (every role) with boxes, fields, contract errors and policy violations.

    Returns
    -------
    dict
        ``item_id``, ``found`` (any annotation), ``in_sample``, ``image`` {uri, width,
        height} (the first-ingested annotation's), ``image_uris`` (every URI used),
        ``annotations``: [{ann_key, annotation_id, version, annotator_id, role,
        submitted_at (ISO), week, guideline_version, image_uri, image_width,
        image_height, prefilled, reviewed, reviewed_by, fields, draft, boxes [{box_idx,
        label, bbox [x, y, w, h], matchable, attributes}], errors [{pointer, instance,
        keyword, message}], violations [{rule, field, element, severity, excerpt, start,
        end, label}]}] ordered annotators/reviewers, gold, model, then by time.
    """
    rows = con.execute(
        """SELECT ann_key, annotation_id, version, annotator_id, role, submitted_at, week,
                  guideline_version, image_uri, image_width, image_height, prefilled,
                  reviewed, reviewed_by, fields, draft
        FROM current_annotations WHERE item_id = $i ORDER BY submitted_at, annotator_id""",
        {"i": item_id},
    ).fetchall()
    out: dict[str, Any] = {"item_id": item_id, "found": bool(rows), "in_sample": False,
                           "image": None, "image_uris": [], "annotations": []}
    if not rows:
        return out
    if not derived._missing_tables(con, ("d_sample_items",)):
        out["in_sample"] = bool(con.execute(
            "SELECT count(*) FROM d_sample_items WHERE item_id = $i", {"i": item_id}
        ).fetchone()[0])
    anns: dict[int, dict] = {}
    for (key, aid, version, annotator, role, submitted, week, gv, uri, w, h, pre, rev,
         rev_by, fields, draft) in rows:
        anns[key] = {
            "ann_key": key, "annotation_id": aid, "version": version,
            "annotator_id": annotator, "role": role, "submitted_at": submitted.isoformat(),
            "week": week, "guideline_version": gv, "image_uri": uri, "image_width": w,
            "image_height": h, "prefilled": pre, "reviewed": rev, "reviewed_by": rev_by,
            "fields": orjson.loads(fields) if fields is not None else None,
            "draft": orjson.loads(draft) if draft is not None else None,
            "boxes": [], "errors": [], "violations": [],
        }
    keys = list(anns)
    for key, boxes in annotation_boxes(con, keys).items():
        anns[key]["boxes"] = boxes
    for key, pointer, instance, keyword, message in con.execute(
        """SELECT ann_key, pointer, instance, keyword, message FROM contract_errors
        WHERE ann_key IN (SELECT unnest($k::BIGINT[])) ORDER BY ann_key, instance, keyword""",
        {"k": keys},
    ).fetchall():
        anns[key]["errors"].append({"pointer": pointer, "instance": instance,
                                    "keyword": keyword, "message": message})
    for key, rule, field, element, severity, excerpt, start, end, label in con.execute(
        """SELECT ann_key, rule, field, element, severity, excerpt, start_pos, end_pos, label
        FROM violations WHERE ann_key IN (SELECT unnest($k::BIGINT[]))
        ORDER BY ann_key, severity, field, start_pos, rule""",
        {"k": keys},
    ).fetchall():
        anns[key]["violations"].append({
            "rule": rule, "field": field, "element": element, "severity": severity,
            "excerpt": excerpt, "start": start, "end": end, "label": label,
        })
    ordered = sorted(anns.values(), key=lambda a: (ROLE_ORDER.get(a["role"], 9),
                                                  a["submitted_at"], a["annotator_id"]))
    out["annotations"] = ordered
    first = con.execute(
        """SELECT a.image_uri, i.image_width, i.image_height FROM items i
        JOIN annotations a ON a.ann_key = i.first_ann_key WHERE i.item_id = $i""",
        {"i": item_id},
    ).fetchone()
    if first is None:
        a0 = min(anns.values(), key=lambda a: a["ann_key"])
        first = (a0["image_uri"], a0["image_width"], a0["image_height"])
    out["image"] = {"uri": first[0], "width": first[1], "height": first[2]}
    out["image_uris"] = sorted({a["image_uri"] for a in ordered if a["image_uri"]})
    return out


_WORD = re.compile(r"\S+")


def word_diff_spans(text: str, others: list[str]) -> list[tuple[int, int]]:
    """Code-point spans of the words of ``text`` that no text in ``others`` has in the
    same place (a word-level `difflib` alignment, case-insensitive).

    With one other text this is the classic two-sided diff; with several, a word is
    marked only when every other text differs there, so what is left is what this
    annotator alone wrote.
    """
    words = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(text or "")]
    if not words or not others:
        return []
    keep = np.zeros(len(words), dtype=bool)
    for other in others:
        theirs = [w.lower() for w in _WORD.findall(other or "")]
        sm = difflib.SequenceMatcher(a=[w[2] for w in words], b=theirs, autojunk=False)
        for block in sm.get_matching_blocks():
            keep[block.a:block.a + block.size] = True
    spans: list[tuple[int, int]] = []
    for (start, end, _), kept in zip(words, keep, strict=True):
        if kept:
            continue
        if spans and text[spans[-1][1]:start].isspace():
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return " ".join(value)
    return orjson.dumps(value).decode()


def _as_values(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list):
        return [v if isinstance(v, str) else orjson.dumps(v).decode() for v in value]
    return [value if isinstance(value, str) else orjson.dumps(value).decode()]


def compare_fields(config: ProjectConfig, annotations: list[dict[str, Any]]
                   ) -> dict[str, list[dict[str, Any]]]:
    """The fields of several annotations of one item side by side, differences marked.

    For every configured field (then any other field present), one entry per annotation
    (same order): ``present`` (an absent entry has ``differs`` when a compared annotation
    has the field); and by kind: free text ``text`` and ``spans`` (words
    this annotation alone wrote, :func:`word_diff_spans`); categorical ``value`` and
    ``differs`` (not the most common value, or a tie); multilabel ``values`` and
    ``differs_values`` (values not chosen by every annotation that has the field).
    Annotations of role ``model`` (drafts) are shown but not compared against.
    """
    names = list(config.fields)
    for a in annotations:
        for name in (a.get("fields") or {}):
            if name not in names:
                names.append(name)
    compared = [a for a in annotations if a.get("role") != "model"]
    out: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        kind = config.fields.get(name, "categorical")
        raw = [(a.get("fields") or {}).get(name) if isinstance(a.get("fields"), dict)
               else None for a in annotations]
        present = [v is not None for v in raw]
        cmp_raw = [(a.get("fields") or {}).get(name) if isinstance(a.get("fields"), dict)
                   else None for a in compared]
        entries: list[dict[str, Any]] = []
        # An absent field differs when an annotation compared has it.
        missing = {"present": False, "kind": kind,
                   "differs": any(v is not None for v in cmp_raw)}
        if kind == "free":
            texts = [_as_text(v) for v in raw]
            cmp_texts = [t for t in (_as_text(v) for v in cmp_raw) if t is not None]
            for a, text in zip(annotations, texts, strict=True):
                if text is None:
                    entries.append(dict(missing))
                    continue
                others = list(cmp_texts)
                if a.get("role") != "model" and text in others:
                    others.remove(text)
                entries.append({"present": True, "kind": kind, "text": text,
                                "spans": word_diff_spans(text, others)})
        elif kind == "multilabel":
            sets = [_as_values(v) for v in raw]
            cmp_sets = [set(s) for s in (_as_values(v) for v in cmp_raw) if s is not None]
            common = set.intersection(*cmp_sets) if cmp_sets else set()
            many = len(cmp_sets) > 1
            for values in sets:
                if values is None:
                    entries.append(dict(missing))
                    continue
                entries.append({"present": True, "kind": kind, "values": values,
                                "differs_values": [v for v in values
                                                   if many and v not in common]})
        else:
            values = [_as_text(v) for v in raw]
            cmp_values = [t for t in (_as_text(v) for v in cmp_raw) if t is not None]
            counts = pd.Series(cmp_values, dtype=object).value_counts()
            top = counts.iloc[0] if len(counts) else 0
            majority = ({v for v, n in counts.items() if n == top}
                        if len(counts) else set())
            tie = len(majority) > 1
            for value in values:
                if value is None:
                    entries.append(dict(missing))
                    continue
                differs = bool(majority) and (tie or value not in majority)
                entries.append({"present": True, "kind": kind, "value": value,
                                "differs": bool(differs)})
        if any(present):
            out[name] = entries
    return out


# --------------------------------------------------------------------------------------
# Annotators
# --------------------------------------------------------------------------------------


def annotator_series(con: duckdb.DuckDBPyConnection, config: ProjectConfig, annotator: str
                     ) -> pd.DataFrame:
    """One annotator's weekly series, every week with data (A_w of any annotator).

    Columns: week, annotations, schema_errors, schema_error_rate, policy_errors,
    violation_rate, peer_agreements, peer_units, peer_agreement (1 - M3 over the peer
    pairs they are in, pairs counted in their week), gold_agreements, gold_units,
    gold_agreement (their pairs against gold). Rates over zero units are NaN.
    """
    has_derived = not derived._missing_tables(con, ("d_pairs",))
    pairs = (
        """SELECT week,
                  sum(agreements) FILTER (NOT reference) AS peer_agreements,
                  sum(agreements + class_disagreements + presence_disagreements)
                    FILTER (NOT reference) AS peer_units,
                  sum(agreements) FILTER (reference AND annotator_a = $a) AS gold_agreements,
                  sum(agreements + class_disagreements + presence_disagreements)
                    FILTER (reference AND annotator_a = $a) AS gold_units
           FROM d_pairs
           WHERE (NOT reference AND (annotator_a = $a OR annotator_b = $a))
              OR (reference AND annotator_a = $a)
           GROUP BY week"""
        if has_derived else
        "SELECT NULL::VARCHAR AS week, 0 AS peer_agreements, 0 AS peer_units, "
        "0 AS gold_agreements, 0 AS gold_units WHERE false"
    )
    df = con.execute(
        f"""WITH counted AS (
            SELECT * FROM current_annotations WHERE role IN ('annotator', 'reviewer', 'gold')),
        weeks AS (SELECT DISTINCT week FROM counted),
        mine AS (
            SELECT week, count(*) AS annotations,
                   count(*) FILTER (schema_errors > 0) AS schema_errors,
                   count(*) FILTER (policy_errors > 0) AS policy_errors
            FROM counted WHERE annotator_id = $a GROUP BY week),
        pr AS ({pairs})
        SELECT w.week, coalesce(m.annotations, 0) AS annotations,
               coalesce(m.schema_errors, 0) AS schema_errors,
               coalesce(m.policy_errors, 0) AS policy_errors,
               coalesce(pr.peer_agreements, 0) AS peer_agreements,
               coalesce(pr.peer_units, 0) AS peer_units,
               coalesce(pr.gold_agreements, 0) AS gold_agreements,
               coalesce(pr.gold_units, 0) AS gold_units
        FROM weeks w LEFT JOIN mine m USING (week) LEFT JOIN pr USING (week)
        ORDER BY w.week""",
        {"a": annotator},
    ).df()
    for col in df.columns[1:]:
        df[col] = df[col].astype("int64")
    for rate, num, den in (("schema_error_rate", "schema_errors", "annotations"),
                           ("violation_rate", "policy_errors", "annotations"),
                           ("peer_agreement", "peer_agreements", "peer_units"),
                           ("gold_agreement", "gold_agreements", "gold_units")):
        df[rate] = (df[num] / df[den].where(df[den] > 0)).astype("float64")
    return df[["week", "annotations", "schema_errors", "schema_error_rate", "policy_errors",
               "violation_rate", "peer_agreements", "peer_units", "peer_agreement",
               "gold_agreements", "gold_units", "gold_agreement"]]


# --------------------------------------------------------------------------------------
# Data: exports, quarantine, uploads
# --------------------------------------------------------------------------------------


def exports(con: duckdb.DuckDBPyConnection, config: ProjectConfig) -> pd.DataFrame:
    """Every export ingested, in order: export_id, name, format, records (non-blank lines
    of a native export, annotation entries of the others), loaded, duplicates,
    quarantined, skipped_records, new_versions, boxes, size_bytes, ingested_at, path,
    balanced (records = loaded + duplicates + quarantined + skipped_records)."""
    df = con.execute(
        """SELECT export_id, name, format, records, loaded, duplicates, quarantined,
                  skipped_records, new_versions, boxes, size_bytes, ingested_at, path
        FROM exports ORDER BY export_id"""
    ).df()
    df["balanced"] = df["records"] == (df["loaded"] + df["duplicates"] + df["quarantined"]
                                       + df["skipped_records"])
    return df


def quarantine(con: duckdb.DuckDBPyConnection, config: ProjectConfig,
               export_id: int | None = None) -> pd.DataFrame:
    """Quarantined lines: export_id, export (file name), line, reason, raw (the line as
    text, capped at ingest), in export and line order."""
    return con.execute(
        """SELECT q.export_id, e.name AS export, q.line, q.reason, q.raw
        FROM quarantine q LEFT JOIN exports e USING (export_id)
        WHERE $e IS NULL OR q.export_id = $e
        ORDER BY q.export_id, q.line""",
        {"e": None if export_id is None else int(export_id)},
    ).df()


class UploadRefused(Exception):
    """An upload the dashboard will not store (too big, no usable name)."""


def max_upload_bytes(config: ProjectConfig) -> int:
    """``[dashboard] max_upload_mb`` in bytes (1 MB = 2^20 bytes, as Streamlit counts)."""
    return int(config.dashboard.max_upload_mb * 1024 * 1024)


def fmt_size(n: int) -> str:
    """A byte count for people: bytes below 10 KB, else KB or MB (1 MB = 2^20 bytes)."""
    if n < 10 * 1024:
        return f"{n:,} bytes"
    if n < 10 * 1024 * 1024:
        return f"{n / 1024:,.1f} KB"
    return f"{n / 1024 / 1024:,.1f} MB"


def upload_dir(config: ProjectConfig) -> Path:
    """Where the dashboard stores uploaded exports: ``<project>/exports/uploads``."""
    return Path(config.root) / "exports" / "uploads"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_upload_name(name: str) -> str:
    """A file name safe to create under the upload folder: the last path component,
    characters outside ``[A-Za-z0-9._-]`` replaced by ``_``, no leading dot."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = _UNSAFE.sub("_", base).lstrip("._")[:120]
    if not base:
        raise UploadRefused(f"the file name {name!r} has no usable characters")
    return base


def save_upload(config: ProjectConfig, name: str, stream: BinaryIO, size: int | None = None,
                *, on_progress: Callable[[int, int], None] | None = None,
                chunk: int = 1 << 20, folder: Path | None = None) -> Path:
    """Store an uploaded export under :func:`upload_dir` (or `folder`, e.g. a scratch
    folder for a dry run); refuse it when over ``[dashboard] max_upload_mb`` (checked
    before and while writing).

    The file is written to a temporary name and renamed, so a half-written upload is
    never visible. A file of the same name with different content gets a numbered name;
    the same content reuses the file (ingest recognizes it by content anyway).
    ``on_progress(done, total)`` is called after each chunk. Returns the stored path.
    """
    limit = max_upload_bytes(config)
    mb = config.dashboard.max_upload_mb
    if size is not None and size > limit:
        raise UploadRefused(
            f"{name!r} is {fmt_size(size)}, over the {mb:g} MB limit "
            "([dashboard] max_upload_mb in labelqa.toml); ingest it from a terminal "
            "with `labelqa ingest` instead")
    safe = safe_upload_name(name)
    folder = upload_dir(config) if folder is None else folder
    folder.mkdir(parents=True, exist_ok=True)
    total = size or 0
    fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=folder)
    done = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            while True:
                block = stream.read(chunk)
                if not block:
                    break
                done += len(block)
                if done > limit:
                    raise UploadRefused(
                        f"{name!r} is over the {mb:g} MB limit ([dashboard] max_upload_mb)")
                fh.write(block)
                if on_progress is not None:
                    on_progress(done, max(total, done))
        target = folder / safe
        stem, suffix = target.stem, target.suffix
        n = 1
        while target.exists():
            if filecmp.cmp(target, tmp, shallow=False):
                os.unlink(tmp)
                return target
            target = folder / f"{stem}-{n}{suffix}"
            n += 1
        os.replace(tmp, target)
        return target
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
