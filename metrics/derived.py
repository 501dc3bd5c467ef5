"""Derived tables of the visual-agreement metric (M3) and its agreement breakdown.

`refresh(con, config)` rebuilds them from the current annotations. Ingest calls it inside
each export's transaction (see `metrics.workspace`), so a reader never sees new
annotations without their derived numbers. Everything is dropped and rebuilt
(idempotent); selection and joins are DuckDB SQL, box matching is batched numpy with
the Hungarian solver only for the rare pairs where a box has two candidate partners.

The tables hold counts, never rates (DESIGN "Counts are the state"):

``d_meta(key, value)``
    The fingerprint of the config parts the tables depend on.
``d_sample_items(item_id)``
    The stable sample (DESIGN "M3": the SHA-256 hash, or pinned).
``d_ann``
    Sample annotations that can be in a rating set: roles annotator / reviewer
    (``side = 'peer'``) and gold (``side = 'gold'``), current versions, with ``next_week``,
    the week of the same annotator's next annotation of the item (for gold: the item's
    next gold). An annotation is in the set of week w when ``week <= w < next_week``;
    one superseded within its own week never is, and is left out.
``d_ann_label(ann_key, source, label)``
    Configured labels an annotation has a matchable box of (``box``) or its free text
    names (``mention``).
``d_ann_field(ann_key, field)`` / ``d_ann_value(ann_key, field, value)``
    Configured fields present (not absent, not null) and the categorical / multilabel
    values chosen.
``d_pairs``
    One row per pair of a week: peer pairs (``reference = false``) and reference pairs
    (an eligible annotation against the item's latest gold, ``reference = true``; the gold
    side is ``b``). A pair belongs to the week of its later annotation and only when both
    are in that week's rating set. Matching counts, matchable box counts, and the 2 x 2
    presence table over the configured labels (for Cohen's kappa).
``d_box_pairs``
    Every box outcome of every pair: ``kind`` agreement / class (a matched pair, with IoU
    and the low-overlap flag) or presence (an unmatched box: ``box_a`` or ``box_b`` NULL).
``d_threshold(week, reference, t, agreements, class_disagreements, presence_disagreements)``
    The matching re-run at t = 0.50, 0.55, ..., 0.95, summed per week.
``d_members(week, item_id, ann_key, annotator_id)``
    The rating set of each item that counts in a week.
``d_text(pair_id, field, similarity)``
    Free-text similarity of each pair where both annotations have the field.
``d_coincidence(week, kind, field, item_id, c, k, weight)`` / ``d_units(...)``
    Krippendorff coincidence contributions and pairable-unit counts (with the least and
    most values in a unit, for Fleiss' kappa) per item and week, for the kinds presence,
    class, schema, categorical, multilabel and mentions.
``d_week_ci(week, reference, kind, field, n_resamples, low, high, dropped, reason, inputs)``
    The item-bootstrap intervals of every week (DESIGN "CIs"), so that the dashboard
    reads them instead of resampling on every call: M3 (``kind = 'm3'``) of the peer and
    of the reference pairs, and alpha of each agreement kind whose alpha is defined (peer
    pairs). All the intervals of one week share one draw (they resample the same items).
    ``inputs`` digests what they were computed from: a refresh keeps the intervals of a
    week whose inputs did not change (past weeks, as new weeks arrive).
``d_week_coincidence(week, kind, field, k, coincidence)``
    Each agreement kind's K x K coincidence matrix of each week (flattened; categories
    in value order), summed over the week's items: what `metrics.visual.visual_week`
    computes alpha, percent agreement and Fleiss' kappa from.
``d_alpha_change(before_weeks, after_weeks, n_resamples, position, kind, field, ...)``
    Alpha before / after each guideline change of the config (``k = 4`` weeks on each
    side) with the bootstrap interval of the difference: `alpha_change`, keyed by the
    weeks compared (comma-joined), with ``inputs`` as in ``d_week_ci``.

The interval tables hold the draws of ``[agreement] bootstrap`` resamples (recorded in
``n_resamples``); readers fall back to resampling when the setting differs.

Values: a categorical value is the string, or the JSON text of a non-string; a
multilabel field is a list (or one string) of values; a free field is a string, or a
list whose strings are joined with spaces. Absent or null fields are missing.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
import weakref
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import duckdb
import numpy as np
import orjson
import pyarrow as pa

from metrics.agreement import (
    _BOOTSTRAP_BLOCK,
    MATCH_THRESHOLDS,
    REASON_ALL_RESAMPLES_UNDEFINED,
    GroupCoincidence,
    _alpha_agreement_batch,
    _percentile_ci,
    alpha_from_coincidence,
    iou_of,
    match_from_iou,
)
from metrics.config import ProjectConfig
from metrics.policy import labels_named
from metrics.sample import SCORE_SQL

__all__ = [
    "DERIVED_TABLES",
    "NEVER_WEEK",
    "PairBatchMatch",
    "alpha_change",
    "alpha_kinds",
    "bootstrap_many",
    "config_fingerprint",
    "ensure",
    "is_fresh",
    "match_pair_batch",
    "normalize_text",
    "period_coincidence",
    "period_items",
    "period_values",
    "refresh",
    "resample_counts",
    "stored_alpha_change",
    "week_intervals",
]

ELIGIBLE_ROLES = ("annotator", "reviewer")
# Bumped when the derived tables change shape: older ones are rebuilt by `ensure`.
DERIVED_LAYOUT = "3"
# Bumped when the interval computations change: stored intervals are then recomputed
# (they are reused by `refresh` while their inputs are unchanged).
_INTERVALS_VERSION = "1"
# Sorts after every ISO week string: "no next annotation".
NEVER_WEEK = "9999-W99"
# Matching works through the box pairs of this many candidate combinations at a time.
_CHUNK_COMBOS = 4_000_000

DERIVED_TABLES = (
    "d_meta", "d_sample_items", "d_ann", "d_ann_label", "d_ann_field", "d_ann_value",
    "d_pairs", "d_box_pairs", "d_threshold", "d_members", "d_text", "d_coincidence",
    "d_units", "d_week_ci", "d_week_coincidence", "d_alpha_change", "d_week_counts",
)
#: Weeks on each side of a guideline change precomputed in ``d_alpha_change`` (the
#: default of `metrics.weekly.before_after`).
CHANGE_WEEKS = 4
#: The ``reason`` of an alpha interval undefined in every resample.
REASON_ALPHA_UNDEFINED = "alpha undefined in every resample"

KIND_AGREEMENT, KIND_CLASS, KIND_PRESENCE = 0, 1, 2
_KIND_NAMES = ("agreement", "class", "presence")


# --------------------------------------------------------------------------------------
# Config fingerprint
# --------------------------------------------------------------------------------------


def config_fingerprint(config: ProjectConfig) -> str:
    """Hash of the config parts the derived tables depend on (labels, fields, matching
    thresholds, bootstrap resamples, sample); a change means the tables must be rebuilt."""
    parts = {
        "labels": {k: list(v) for k, v in config.labels.items()},
        "fields": dict(config.fields),
        "iou_threshold": config.agreement.iou_threshold,
        "low_overlap": config.agreement.low_overlap,
        "bootstrap": config.agreement.bootstrap,
        "sample": [config.sample.rate, config.sample.salt, sorted(config.sample.pinned)],
    }
    blob = json.dumps(parts, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def _missing_tables(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> set[str]:
    found = {r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT temporary "
        "AND table_name IN (SELECT unnest($n::VARCHAR[]))",
        {"n": list(names)},
    ).fetchall()}
    return set(names) - found


# Per connection: d_meta once every derived table was found (the answer of `_probe`).
# Metrics calls ask on every call, and catalog queries cost a fresh connection several
# milliseconds. While a connection is open no other process can write the database;
# in this one only `refresh` changes the tables. A connection that ran `refresh` may
# hold them in an open transaction: it is asked directly, every time.
_META: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_REFRESHED: weakref.WeakSet = weakref.WeakSet()

# Binds every derived table (a missing one is an error) and reads d_meta.
_PROBE_SQL = "SELECT key, value FROM d_meta " + " ".join(
    f"UNION ALL (SELECT NULL, NULL FROM {name} LIMIT 0)"
    for name in DERIVED_TABLES if name != "d_meta"
)


def _probe(con: duckdb.DuckDBPyConnection) -> dict[str, str] | None:
    """d_meta as a dict when every derived table exists, else None; remembered per
    connection. The probe runs on a cursor (a query on a missing table would abort a
    transaction open on ``con``), which sees committed tables only: when it finds them
    missing, or ``con`` ran `refresh`, ``con`` itself is asked through the catalog."""
    try:
        meta = _META.get(con)
        direct = con in _REFRESHED
    except TypeError:  # not weak-referenceable
        meta, direct = None, True
    if meta is not None:
        return meta
    if direct:
        if _missing_tables(con, DERIVED_TABLES):
            return None
        return dict(con.execute("SELECT key, value FROM d_meta").fetchall())
    try:
        cur = con.cursor()
        try:
            meta = dict(cur.execute(_PROBE_SQL).fetchall())
        finally:
            cur.close()
    except duckdb.Error:
        meta = None
    if meta is None:
        if _missing_tables(con, DERIVED_TABLES):
            return None
        return dict(con.execute("SELECT key, value FROM d_meta").fetchall())
    try:
        _META[con] = meta
    except TypeError:
        pass
    return meta


def _refreshing(con: duckdb.DuckDBPyConnection, running: bool) -> None:
    try:
        _META.pop(con, None)
        if running:
            _REFRESHED.add(con)
        else:
            _REFRESHED.discard(con)
    except TypeError:
        pass


def is_fresh(con: duckdb.DuckDBPyConnection, config: ProjectConfig) -> bool | None:
    """True when the derived tables were built with this config; None when absent."""
    meta = _probe(con)
    if meta is None:
        if _missing_tables(con, ("d_meta",)):
            return None
        meta = dict(con.execute("SELECT key, value FROM d_meta").fetchall())
    return meta.get("config") == config_fingerprint(config)


def _tables_ready(con: duckdb.DuckDBPyConnection) -> bool:
    """Every derived table exists, of this layout (whatever config built them)."""
    meta = _probe(con)
    return meta is not None and meta.get("layout") == DERIVED_LAYOUT


def is_current(con: duckdb.DuckDBPyConnection, config: ProjectConfig) -> bool:
    """True when every derived table exists, of this layout, built with this config."""
    return _tables_ready(con) and bool(is_fresh(con, config))


def ensure(con: duckdb.DuckDBPyConnection, config: ProjectConfig) -> None:
    """Build the derived tables when they are missing or of an older layout (a database
    ingested before this module or this layout existed). A read-only connection cannot:
    a clear error says what to do."""
    if _tables_ready(con):
        return
    try:
        con.execute("BEGIN TRANSACTION")
    except duckdb.Error as exc:
        raise RuntimeError(
            "the visual-agreement tables are missing; run `labelqa ingest` again "
            f"to build them ({exc})"
        ) from None
    try:
        refresh(con, config)
        con.execute("COMMIT")
    except duckdb.Error as exc:
        con.execute("ROLLBACK")
        raise RuntimeError(
            "the visual-agreement tables are missing and this connection cannot build "
            f"them (read-only?); run `labelqa ingest` again ({exc})"
        ) from None
    _refreshing(con, False)


# --------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """NFC, lowercase, whitespace runs collapsed to one space (ends stripped)."""
    return " ".join(unicodedata.normalize("NFC", text).lower().split())


def _text_parts(raw_json: str) -> list[str] | None:
    """The strings of a free field's JSON value: a string, or the strings of a list."""
    value = orjson.loads(raw_json)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return None


def _json_path(field: str) -> str:
    escaped = field.replace("\\", "\\\\").replace('"', '\\"')
    return f'$."{escaped}"'


# --------------------------------------------------------------------------------------
# Batched box matching
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairBatchMatch:
    """The two-pass matching of many annotation pairs at once.

    Per pair (shape (P,)): ``agreements``, ``class_disagreements``,
    ``presence_disagreements``, ``low_overlap``. ``by_threshold`` (P, T, 3): agreements,
    class and presence disagreements with the matching re-run at each threshold.

    Box outcomes (shape (R,)), one per matched pair of boxes and one per unmatched box:
    ``out_pair`` (pair index), ``out_kind`` (0 agreement, 1 class, 2 presence),
    ``out_box_a`` / ``out_box_b`` (global box index, -1 for the missing side of a
    presence row), ``out_iou`` (NaN for presence), ``out_low`` (IoU below low_overlap).
    """

    agreements: np.ndarray
    class_disagreements: np.ndarray
    presence_disagreements: np.ndarray
    low_overlap: np.ndarray
    by_threshold: np.ndarray
    out_pair: np.ndarray
    out_kind: np.ndarray
    out_box_a: np.ndarray
    out_box_b: np.ndarray
    out_iou: np.ndarray
    out_low: np.ndarray


def _iou_elementwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of a[r] with b[r] (xywh rows), by `metrics.agreement.iou_of` as `box_iou`."""
    return iou_of(a.T, b.T)


def _exclusive_cumsum(x: np.ndarray) -> np.ndarray:
    out = np.zeros(x.size, dtype=np.int64)
    if x.size > 1:
        np.cumsum(x[:-1], out=out[1:])
    return out


def _match_chunk(xywh, labels, start_a, n_a, start_b, n_b, *, iou_threshold, low_overlap,
                 thresholds):
    p_count = n_a.size
    t_count = len(thresholds)
    sizes = n_a * n_b
    cstart = _exclusive_cumsum(sizes)
    rep = np.repeat(np.arange(p_count), sizes)
    k = np.arange(rep.size, dtype=np.int64) - cstart[rep]
    nb_rep = n_b[rep]
    i = k // np.maximum(nb_rep, 1)
    j = k - i * nb_rep
    ga = start_a[rep] + i
    gb = start_b[rep] + j
    iou = _iou_elementwise(xywh[ga], xywh[gb])

    # Candidate edges: any pair that could match at the lowest threshold in use.
    t_min = min(iou_threshold, min(thresholds))
    ce = np.flatnonzero(iou >= t_min)
    e_pair, e_iou, e_ga, e_gb = rep[ce], iou[ce], ga[ce], gb[ce]
    astart = _exclusive_cumsum(n_a)
    bstart = _exclusive_cumsum(n_b)
    slot_a = astart[e_pair] + i[ce]
    slot_b = bstart[e_pair] + j[ce]
    total_a, total_b = int(n_a.sum()), int(n_b.sum())
    deg_a = np.bincount(slot_a, minlength=total_a)
    deg_b = np.bincount(slot_b, minlength=total_b)
    # A pair is simple when no box has two candidates: every candidate edge is then taken
    # by the matching at any threshold it passes, with no assignment to solve.
    complex_pair = np.zeros(p_count, dtype=bool)
    complex_pair[e_pair[deg_a[slot_a] > 1]] = True
    complex_pair[e_pair[deg_b[slot_b] > 1]] = True
    simple = ~complex_pair[e_pair]
    same = labels[e_ga] == labels[e_gb]

    matched = simple & (e_iou >= iou_threshold)
    agreements = np.bincount(e_pair[matched & same], minlength=p_count)
    class_dis = np.bincount(e_pair[matched & ~same], minlength=p_count)
    low = np.bincount(e_pair[matched & (e_iou < low_overlap)], minlength=p_count)
    matched_a = np.zeros(total_a, dtype=bool)
    matched_b = np.zeros(total_b, dtype=bool)
    matched_a[slot_a[matched]] = True
    matched_b[slot_b[matched]] = True
    by_t = np.zeros((p_count, t_count, 3), dtype=np.int64)
    for ti, t in enumerate(thresholds):
        mt = simple & (e_iou >= t)
        by_t[:, ti, 0] = np.bincount(e_pair[mt & same], minlength=p_count)
        by_t[:, ti, 1] = np.bincount(e_pair[mt & ~same], minlength=p_count)

    out = [(e_pair[matched], np.where(same[matched], KIND_AGREEMENT, KIND_CLASS),
            e_ga[matched], e_gb[matched], e_iou[matched], e_iou[matched] < low_overlap)]
    for p in np.flatnonzero(complex_pair):
        na, nb = int(n_a[p]), int(n_b[p])
        sub = iou[cstart[p]:cstart[p] + na * nb].reshape(na, nb)
        la = labels[start_a[p]:start_a[p] + na]
        lb = labels[start_b[p]:start_b[p] + nb]
        res = match_from_iou(sub, la, lb, iou_threshold=iou_threshold,
                             low_overlap=low_overlap)
        agreements[p] = len(res.agreements)
        class_dis[p] = len(res.class_disagreements)
        low[p] = len(res.low_overlap)
        edges = [(KIND_AGREEMENT, e) for e in res.agreements]
        edges += [(KIND_CLASS, e) for e in res.class_disagreements]
        if edges:
            ei = np.array([e[1][0] for e in edges], dtype=np.int64)
            ej = np.array([e[1][1] for e in edges], dtype=np.int64)
            eiou = np.array([e[1][2] for e in edges], dtype=np.float64)
            matched_a[astart[p] + ei] = True
            matched_b[bstart[p] + ej] = True
            out.append((np.full(ei.size, p), np.array([e[0] for e in edges]),
                        start_a[p] + ei, start_b[p] + ej, eiou, eiou < low_overlap))
        # The matching depends on the threshold only through which IoUs reach it, and
        # a pair's few candidate IoUs leave most thresholds with the same set.
        seen = {(sub >= iou_threshold).tobytes(): (agreements[p], class_dis[p])}
        for ti, t in enumerate(thresholds):
            key = (sub >= t).tobytes()
            got = seen.get(key)
            if got is None:
                r = match_from_iou(sub, la, lb, iou_threshold=t, low_overlap=0.0)
                got = seen[key] = (len(r.agreements), len(r.class_disagreements))
            by_t[p, ti, 0], by_t[p, ti, 1] = got
    by_t[:, :, 2] = (n_a + n_b)[:, None] - 2 * (by_t[:, :, 0] + by_t[:, :, 1])

    for side_matched, side_start, side_n, side_slot0, is_a in (
        (matched_a, start_a, n_a, astart, True), (matched_b, start_b, n_b, bstart, False),
    ):
        free = np.flatnonzero(~side_matched)
        owner = np.repeat(np.arange(p_count), side_n)[free]
        box = side_start[owner] + (free - side_slot0[owner])
        none = np.full(free.size, -1, dtype=np.int64)
        out.append((owner, np.full(free.size, KIND_PRESENCE), box if is_a else none,
                    none if is_a else box, np.full(free.size, np.nan),
                    np.zeros(free.size, dtype=bool)))
    presence = n_a + n_b - 2 * (agreements + class_dis)
    cols = [np.concatenate([o[c] for o in out]) for c in range(6)]
    return agreements, class_dis, presence, low, by_t, cols


def match_pair_batch(
    xywh: np.ndarray,
    labels: np.ndarray,
    start_a: np.ndarray,
    n_a: np.ndarray,
    start_b: np.ndarray,
    n_b: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    low_overlap: float = 0.75,
    thresholds: tuple[float, ...] = MATCH_THRESHOLDS,
) -> PairBatchMatch:
    """Match the boxes of many annotation pairs: `metrics.agreement.match_boxes` per pair.

    The boxes of an annotation are a contiguous run of the global box arrays; pair p
    compares the run ``[start_a[p], start_a[p] + n_a[p])`` with ``[start_b[p], ...)``.
    IoUs of all box combinations are computed in one vectorized pass. Where no box of a
    pair has two partners with IoU at or above the lowest threshold, the matching is the
    set of those edges (no assignment to solve; identical to `match_boxes`); the other
    pairs go through `metrics.agreement.match_from_iou` (Hungarian assignment).

    Parameters
    ----------
    xywh : ndarray, shape (N, 4)
        All boxes as ``[x, y, w, h]``.
    labels : ndarray of int, shape (N,)
        Label codes.
    start_a, n_a, start_b, n_b : ndarray of int, shape (P,)
        Box runs of the two annotations of each pair.
    iou_threshold, low_overlap : float
        As in `match_boxes`.
    thresholds : tuple of float
        The threshold curve (default 0.50, 0.55, ..., 0.95).

    Returns
    -------
    PairBatchMatch
    """
    xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels)
    start_a, n_a, start_b, n_b = (np.asarray(v, dtype=np.int64)
                                  for v in (start_a, n_a, start_b, n_b))
    p_total = n_a.size
    csum = np.cumsum(n_a * n_b)
    # Chunks of pairs bound the memory of the all-combinations IoU pass.
    bounds = [0]
    while bounds[-1] < p_total:
        base = int(csum[bounds[-1] - 1]) if bounds[-1] else 0
        end = int(np.searchsorted(csum, base + _CHUNK_COMBOS, side="right"))
        bounds.append(min(p_total, max(end, bounds[-1] + 1)))
    if len(bounds) == 1:
        bounds.append(0)
    parts = []
    for begin, end in zip(bounds[:-1], bounds[1:], strict=True):
        sl = slice(begin, end)
        res = _match_chunk(xywh, labels, start_a[sl], n_a[sl], start_b[sl], n_b[sl],
                           iou_threshold=iou_threshold, low_overlap=low_overlap,
                           thresholds=thresholds)
        parts.append((begin, res))

    def cat(idx):
        return np.concatenate([r[idx] for _, r in parts])

    cols = [np.concatenate([r[5][c] + (b if c == 0 else 0) for b, r in parts])
            for c in range(6)]
    return PairBatchMatch(
        agreements=cat(0), class_disagreements=cat(1), presence_disagreements=cat(2),
        low_overlap=cat(3), by_threshold=np.concatenate([r[4] for _, r in parts]),
        out_pair=cols[0].astype(np.int64), out_kind=cols[1].astype(np.int8),
        out_box_a=cols[2].astype(np.int64), out_box_b=cols[3].astype(np.int64),
        out_iou=cols[4].astype(np.float64), out_low=cols[5].astype(bool),
    )


# --------------------------------------------------------------------------------------
# Refresh
# --------------------------------------------------------------------------------------


def refresh(con: duckdb.DuckDBPyConnection, config: ProjectConfig) -> None:
    """Rebuild every derived table from the current annotations (inside the caller's
    transaction; never BEGIN/COMMIT here)."""
    _refreshing(con, True)
    _config_tables(con, config)
    _build_sample(con, config)
    _build_week_counts(con)
    _build_annotations(con, config)
    _build_pairs(con, config)
    _build_members(con)
    _build_text(con, config)
    _build_units(con, config)
    _build_week_ci(con, config)
    _build_alpha_change(con, config)
    con.execute("CREATE OR REPLACE TABLE d_meta (key VARCHAR, value VARCHAR)")
    con.execute("INSERT INTO d_meta VALUES ('config', $fp), ('layout', $layout)",
                {"fp": config_fingerprint(config), "layout": DERIVED_LAYOUT})
    for name in ("_d_cfg_labels", "_d_fields", "_d_pairs_base", "_d_free", "_d_box_labels"):
        con.execute(f"DROP TABLE IF EXISTS {name}")


def _register_table(con, name: str, table: pa.Table, create_sql: str,
                    params: dict | None = None) -> None:
    con.register(name, table)
    try:
        con.execute(create_sql, params)
    finally:
        con.unregister(name)


def _config_tables(con, config: ProjectConfig) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE _d_cfg_labels AS "
                "SELECT unnest($labels::VARCHAR[]) AS label",
                {"labels": list(config.labels)})


def _build_week_counts(con) -> None:
    """Per week: the annotations of A (roles annotator, reviewer, gold) and those with a
    contract error, a policy error, a policy warning. M1 and M2 of any week (and their
    series) read it instead of scanning every annotation."""
    from metrics.weekly import WEEK_COUNTS_ALL_SQL

    con.execute(f"CREATE OR REPLACE TABLE d_week_counts AS {WEEK_COUNTS_ALL_SQL}")


def _build_sample(con, config: ProjectConfig) -> None:
    """The stable sample's items (`metrics.sample`), scored in DuckDB: ~1 s less than
    hashing each id in Python at 1M (a test compares the two on any ids and salts)."""
    smp = config.sample
    rate = float(smp.rate)   # in [0, 1]: the config checks it
    con.execute(
        f"""CREATE OR REPLACE TABLE d_sample_items AS
        SELECT item_id FROM (SELECT DISTINCT item_id FROM annotations)
        WHERE $all OR {SCORE_SQL} < $rate OR list_contains($pinned, item_id)
        ORDER BY item_id""",
        {"all": rate >= 1.0, "salt": smp.salt, "rate": rate,
         "pinned": sorted(smp.pinned)},
    )


def _build_annotations(con, config: ProjectConfig) -> None:
    con.execute(
        """CREATE OR REPLACE TABLE d_ann AS
        WITH base AS (
            SELECT a.ann_key, a.annotation_id, a.item_id, a.annotator_id, a.role,
                   a.submitted_at, a.week, a.schema_errors = 0 AS schema_pass,
                   CASE WHEN a.role = 'gold' THEN 'gold' ELSE 'peer' END AS side
            FROM annotations a SEMI JOIN d_sample_items s ON s.item_id = a.item_id
            WHERE a.is_current AND a.role IN ('annotator', 'reviewer', 'gold')
        ), ordered AS (
            SELECT *, lead(week) OVER (
                PARTITION BY item_id, side,
                             CASE WHEN side = 'peer' THEN annotator_id END
                ORDER BY submitted_at, ann_key) AS next_week
            FROM base
        )
        SELECT * FROM ordered
        WHERE next_week IS NULL OR next_week > week
        ORDER BY ann_key"""
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _d_fields AS
        SELECT a.ann_key, a.fields FROM annotations a SEMI JOIN d_ann d ON d.ann_key = a.ann_key
        WHERE a.fields IS NOT NULL"""
    )
    con.execute(
        """CREATE OR REPLACE TABLE d_ann_label AS
        SELECT DISTINCT b.ann_key, 'box' AS source, b.label
        FROM boxes b SEMI JOIN d_ann d ON d.ann_key = b.ann_key
        WHERE b.matchable AND b.label IN (SELECT label FROM _d_cfg_labels)"""
    )
    con.execute("CREATE OR REPLACE TABLE d_ann_field (ann_key BIGINT, field VARCHAR)")
    con.execute("CREATE OR REPLACE TABLE d_ann_value "
                "(ann_key BIGINT, field VARCHAR, value VARCHAR)")
    for field, kind in config.fields.items():
        params = {"f": field, "p": _json_path(field), "ps": _json_path(field) + "[*]"}
        if kind == "categorical":
            con.execute(
                """INSERT INTO d_ann_value
                SELECT ann_key, $f, CASE WHEN json_type(fields, $p) = 'VARCHAR'
                                         THEN json_extract_string(fields, $p)
                                         ELSE CAST(json_extract(fields, $p) AS VARCHAR) END
                FROM _d_fields
                WHERE json_type(fields, $p) IS NOT NULL AND json_type(fields, $p) <> 'NULL'""",
                {"f": field, "p": params["p"]},
            )
            con.execute("INSERT INTO d_ann_field SELECT ann_key, $f FROM d_ann_value "
                        "WHERE field = $f", {"f": field})
        elif kind == "multilabel":
            con.execute(
                """INSERT INTO d_ann_field SELECT ann_key, $f FROM _d_fields
                WHERE json_type(fields, $p) IN ('ARRAY', 'VARCHAR')""",
                {"f": field, "p": params["p"]},
            )
            con.execute(
                """INSERT INTO d_ann_value
                SELECT DISTINCT ann_key, $f, v FROM (
                    SELECT ann_key, unnest(CASE WHEN json_type(fields, $p) = 'ARRAY'
                                                THEN json_extract_string(fields, $ps)
                                                ELSE [json_extract_string(fields, $p)] END) AS v
                    FROM _d_fields WHERE json_type(fields, $p) IN ('ARRAY', 'VARCHAR')
                ) WHERE v IS NOT NULL""",
                params,
            )
    _build_free_text(con, config)


def _build_free_text(con, config: ProjectConfig) -> None:
    """Normalized free text per (annotation, field), and the labels it mentions."""
    keys: list[int] = []
    fields: list[str] = []
    norms: list[str] = []
    mention_keys: list[int] = []
    mention_labels: list[str] = []
    mentioned: dict[int, set[str]] = {}
    for field, kind in config.fields.items():
        if kind != "free":
            continue
        p = _json_path(field)
        rows = con.execute(
            """SELECT f.ann_key, CAST(json_extract(f.fields, $p) AS VARCHAR), d.side = 'peer'
            FROM _d_fields f JOIN d_ann d USING (ann_key)
            WHERE json_type(f.fields, $p) IN ('VARCHAR', 'ARRAY')""",
            {"p": p},
        ).fetchall()
        for ann_key, raw, peer in rows:
            parts = _text_parts(raw)
            if parts is None:
                continue
            keys.append(ann_key)
            fields.append(field)
            norms.append(normalize_text(" ".join(parts)))
            if peer and config.labels:
                found = mentioned.setdefault(ann_key, set())
                for part in parts:
                    found.update(labels_named(part, config.labels))
    for ann_key, found in mentioned.items():
        for label in sorted(found):
            mention_keys.append(ann_key)
            mention_labels.append(label)
    _register_table(
        con, "_free",
        pa.table({"ann_key": pa.array(keys, pa.int64()), "field": pa.array(fields, pa.string()),
                  "norm": pa.array(norms, pa.string())}),
        "CREATE OR REPLACE TEMP TABLE _d_free AS SELECT * FROM _free",
    )
    con.execute("INSERT INTO d_ann_field SELECT ann_key, field FROM _d_free")
    _register_table(
        con, "_mentions",
        pa.table({"ann_key": pa.array(mention_keys, pa.int64()),
                  "label": pa.array(mention_labels, pa.string())}),
        "INSERT INTO d_ann_label SELECT ann_key, 'mention', label FROM _mentions",
    )
    # has_text: the annotation has at least one free field (the raters of `mentions`).
    con.execute(
        """CREATE OR REPLACE TABLE d_ann AS
        SELECT d.*, d.ann_key IN (SELECT ann_key FROM _d_free) AS has_text
        FROM d_ann d ORDER BY ann_key"""
    )


def _build_pairs(con, config: ProjectConfig) -> None:
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _d_pairs_base AS
        WITH peer AS (SELECT * FROM d_ann WHERE side = 'peer'),
        gold AS (SELECT * FROM d_ann WHERE side = 'gold'),
        candidates AS (
            SELECT a.item_id, false AS reference, a.ann_key AS ann_key_a,
                   b.ann_key AS ann_key_b, a.annotator_id AS annotator_a,
                   b.annotator_id AS annotator_b, greatest(a.week, b.week) AS week,
                   coalesce(a.next_week, $never) AS next_a,
                   coalesce(b.next_week, $never) AS next_b
            FROM peer a JOIN peer b ON a.item_id = b.item_id AND a.annotator_id < b.annotator_id
            UNION ALL
            SELECT a.item_id, true, a.ann_key, g.ann_key, a.annotator_id, g.annotator_id,
                   greatest(a.week, g.week), coalesce(a.next_week, $never),
                   coalesce(g.next_week, $never)
            FROM peer a JOIN gold g ON a.item_id = g.item_id
        )
        SELECT row_number() OVER (ORDER BY reference, week, item_id, annotator_a,
                                           annotator_b)::BIGINT AS pair_id,
               week, item_id, reference, ann_key_a, ann_key_b, annotator_a, annotator_b
        FROM candidates
        WHERE next_a > week AND next_b > week""",
        {"never": NEVER_WEEK},
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _d_box_labels AS
        SELECT label, (row_number() OVER (ORDER BY label) - 1)::INTEGER AS code
        FROM (SELECT DISTINCT b.label FROM boxes b SEMI JOIN d_ann d ON d.ann_key = b.ann_key
              WHERE b.matchable)"""
    )
    boxes = con.execute(
        """SELECT b.ann_key, b.box_idx, b.x, b.y, b.w, b.h, l.code
        FROM boxes b SEMI JOIN d_ann d ON d.ann_key = b.ann_key
        JOIN _d_box_labels l ON l.label = b.label
        WHERE b.matchable ORDER BY b.ann_key, b.box_idx"""
    ).fetchnumpy()
    pairs = con.execute(
        "SELECT pair_id, ann_key_a, ann_key_b FROM _d_pairs_base ORDER BY pair_id"
    ).fetchnumpy()
    box_ann = np.asarray(boxes["ann_key"], dtype=np.int64)
    xywh = np.column_stack([np.asarray(boxes[c], dtype=np.float64) for c in "xywh"])
    codes = np.asarray(boxes["code"], dtype=np.int64)
    box_idx = np.asarray(boxes["box_idx"], dtype=np.int64)
    uniq, first, count = np.unique(box_ann, return_index=True, return_counts=True)

    def runs(keys):
        keys = np.asarray(keys, dtype=np.int64)
        if uniq.size == 0:
            zeros = np.zeros(keys.size, dtype=np.int64)
            return zeros, zeros.copy()
        pos = np.clip(np.searchsorted(uniq, keys), 0, uniq.size - 1)
        found = uniq[pos] == keys
        return np.where(found, first[pos], 0), np.where(found, count[pos], 0)

    start_a, n_a = runs(pairs["ann_key_a"])
    start_b, n_b = runs(pairs["ann_key_b"])
    res = match_pair_batch(
        xywh, codes, start_a, n_a, start_b, n_b,
        iou_threshold=config.agreement.iou_threshold,
        low_overlap=config.agreement.low_overlap,
    )
    pair_id = np.asarray(pairs["pair_id"], dtype=np.int64)
    counts = pa.table({
        "pair_id": pair_id, "n_boxes_a": n_a.astype(np.int32), "n_boxes_b": n_b.astype(np.int32),
        "agreements": res.agreements.astype(np.int32),
        "class_disagreements": res.class_disagreements.astype(np.int32),
        "presence_disagreements": res.presence_disagreements.astype(np.int32),
        "low_overlap": res.low_overlap.astype(np.int32),
    })
    _register_table(
        con, "_counts", counts,
        """CREATE OR REPLACE TABLE d_pairs AS
        WITH sides AS (
            SELECT pair_id, ann_key_a AS ann_key, 1 AS side FROM _d_pairs_base
            UNION ALL SELECT pair_id, ann_key_b, 2 FROM _d_pairs_base),
        -- side mask per (pair, label): 1 only a has a box of it, 2 only b, 3 both
        labels AS (
            SELECT s.pair_id, l.label, sum(s.side) AS mask
            FROM sides s JOIN d_ann_label l ON l.ann_key = s.ann_key AND l.source = 'box'
            GROUP BY ALL),
        presence AS (
            SELECT pair_id, count(*) FILTER (mask = 3) AS n11,
                   count(*) FILTER (mask = 1) AS n10, count(*) FILTER (mask = 2) AS n01
            FROM labels GROUP BY 1)
        SELECT p.*, c.* EXCLUDE (pair_id),
               coalesce(r.n11, 0)::INTEGER AS presence_11,
               coalesce(r.n10, 0)::INTEGER AS presence_10,
               coalesce(r.n01, 0)::INTEGER AS presence_01,
               ($n_labels - coalesce(r.n11, 0) - coalesce(r.n10, 0)
                 - coalesce(r.n01, 0))::INTEGER AS presence_00
        FROM _d_pairs_base p JOIN _counts c USING (pair_id)
        LEFT JOIN presence r USING (pair_id)
        ORDER BY p.pair_id""",
        {"n_labels": len(config.labels)},
    )

    has_a = res.out_box_a >= 0
    has_b = res.out_box_b >= 0
    safe_a = np.where(has_a, res.out_box_a, 0)
    safe_b = np.where(has_b, res.out_box_b, 0)
    outcomes = pa.table({
        "pair_id": pair_id[res.out_pair],
        "kind": pa.array(np.array(_KIND_NAMES, dtype=object)[res.out_kind].tolist(),
                         pa.string()),
        "box_a": pa.array(box_idx[safe_a].astype(np.int32), mask=~has_a),
        "box_b": pa.array(box_idx[safe_b].astype(np.int32), mask=~has_b),
        "code_a": pa.array(codes[safe_a].astype(np.int32), mask=~has_a),
        "code_b": pa.array(codes[safe_b].astype(np.int32), mask=~has_b),
        "iou": pa.array(res.out_iou, mask=np.isnan(res.out_iou)),
        "low_overlap": res.out_low,
    })
    _register_table(
        con, "_outcomes", outcomes,
        """CREATE OR REPLACE TABLE d_box_pairs AS
        SELECT o.pair_id, o.kind, o.box_a, o.box_b, la.label AS label_a, lb.label AS label_b,
               o.iou, o.low_overlap
        FROM _outcomes o
        LEFT JOIN _d_box_labels la ON la.code = o.code_a
        LEFT JOIN _d_box_labels lb ON lb.code = o.code_b
        ORDER BY o.pair_id, o.kind, o.box_a, o.box_b""",
    )

    t_count = len(MATCH_THRESHOLDS)
    by_t = res.by_threshold.reshape(-1, 3)
    curve = pa.table({
        "pair_id": np.repeat(pair_id, t_count),
        "t": np.tile(np.asarray(MATCH_THRESHOLDS, dtype=np.float64), pair_id.size),
        "a": by_t[:, 0], "c": by_t[:, 1], "p": by_t[:, 2],
    })
    _register_table(
        con, "_curve", curve,
        """CREATE OR REPLACE TABLE d_threshold AS
        SELECT p.week, p.reference, c.t, sum(c.a)::BIGINT AS agreements,
               sum(c.c)::BIGINT AS class_disagreements,
               sum(c.p)::BIGINT AS presence_disagreements
        FROM _curve c JOIN _d_pairs_base p USING (pair_id)
        GROUP BY ALL ORDER BY p.reference, p.week, c.t""",
    )


def _build_members(con) -> None:
    con.execute(
        """CREATE OR REPLACE TABLE d_members AS
        WITH counted AS (SELECT DISTINCT week, item_id FROM d_pairs WHERE NOT reference)
        SELECT w.week, w.item_id, a.ann_key, a.annotator_id
        FROM counted w JOIN d_ann a
          ON a.item_id = w.item_id AND a.side = 'peer' AND a.week <= w.week
         AND coalesce(a.next_week, $never) > w.week
        ORDER BY w.week, w.item_id, a.annotator_id""",
        {"never": NEVER_WEEK},
    )


def _build_text(con, config: ProjectConfig) -> None:
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    rows = con.execute(
        # Materialized one side at a time: left to the optimizer, the two joins on
        # _d_free were once planned as a field = field cross product (quadratic).
        """WITH side_a AS MATERIALIZED (
            SELECT p.pair_id, p.ann_key_b, fa.field, fa.norm
            FROM d_pairs p JOIN _d_free fa ON fa.ann_key = p.ann_key_a)
        SELECT s.pair_id, s.field, s.norm AS a, fb.norm AS b
        FROM side_a s JOIN _d_free fb ON fb.ann_key = s.ann_key_b AND fb.field = s.field
        ORDER BY s.pair_id, s.field"""
    ).fetchnumpy()
    a = rows["a"].tolist()
    b = rows["b"].tolist()
    sim = (process.cpdist(a, b, scorer=Levenshtein.normalized_similarity, workers=1,
                          dtype=np.float64)
           if a else np.zeros(0, dtype=np.float64))
    _register_table(
        con, "_text",
        pa.table({"pair_id": np.asarray(rows["pair_id"], dtype=np.int64),
                  "field": pa.array(rows["field"].tolist(), pa.string()),
                  "similarity": np.asarray(sim, dtype=np.float64)}),
        "CREATE OR REPLACE TABLE d_text AS SELECT * FROM _text",
    )


def _binary_sql(per_unit: str) -> tuple[str, str]:
    """Coincidence rows and unit counts of binary (0/1) units given as groups of units.

    ``per_unit`` yields (week, item_id, field, m, n1, n_units): ``n_units`` units of one
    item, each with m values of which n1 are 1. For m >= 2 a unit adds
    o11 = n1 (n1 - 1) / (m - 1), o00 = n0 (n0 - 1) / (m - 1), o01 = o10 = n1 n0 / (m - 1).
    """
    coincidence = f"""
        WITH u AS ({per_unit}), v AS (
            SELECT week, item_id, field, n_units::DOUBLE AS n_units, m::DOUBLE AS m,
                   n1::DOUBLE AS n1, (m - n1)::DOUBLE AS n0
            FROM u WHERE m >= 2 AND n_units > 0)
        SELECT week, $kind AS kind, field, item_id, c, k, sum(weight) AS weight FROM (
            SELECT week, item_id, field, '1' AS c, '1' AS k,
                   n_units * n1 * (n1 - 1) / (m - 1) AS weight FROM v
            UNION ALL SELECT week, item_id, field, '0', '0', n_units * n0 * (n0 - 1) / (m - 1)
                      FROM v
            UNION ALL SELECT week, item_id, field, '0', '1', n_units * n1 * n0 / (m - 1) FROM v
            UNION ALL SELECT week, item_id, field, '1', '0', n_units * n1 * n0 / (m - 1) FROM v
        ) GROUP BY ALL HAVING sum(weight) > 0"""
    units = f"""
        WITH u AS ({per_unit})
        SELECT week, $kind AS kind, field, item_id, sum(n_units)::BIGINT AS units,
               min(m)::INTEGER AS m_min, max(m)::INTEGER AS m_max
        FROM u WHERE m >= 2 AND n_units > 0 GROUP BY ALL"""
    return coincidence, units


def _label_units_sql(raters: str) -> str:
    """Per-unit rows for binary units (item, label) over every configured label: ``m``
    raters (the members `raters` selects, a fixed join of ours), ``n1`` of them with the
    label from ``d_ann_label`` source ``$source``; the labels nobody gave are
    ``$n_labels`` minus those seen, all with n1 = 0."""
    return f"""
        WITH m AS (SELECT mem.week, mem.item_id, count(*) AS m FROM {raters} GROUP BY ALL),
        n1 AS (SELECT mem.week, mem.item_id, l.label, count(*) AS n1
               FROM {raters} JOIN d_ann_label l
                 ON l.ann_key = mem.ann_key AND l.source = $source
               GROUP BY ALL),
        seen AS (SELECT week, item_id, count(*) AS n FROM n1 GROUP BY ALL)
        SELECT week, item_id, '' AS field, m.m, n1.n1, 1 AS n_units
        FROM n1 JOIN m USING (week, item_id)
        UNION ALL
        SELECT week, item_id, '', m.m, 0, $n_labels - coalesce(seen.n, 0)
        FROM m LEFT JOIN seen USING (week, item_id)"""


def _build_units(con, config: ProjectConfig) -> None:
    con.execute(
        """CREATE OR REPLACE TABLE d_coincidence (week VARCHAR, kind VARCHAR, field VARCHAR,
        item_id VARCHAR, c VARCHAR, k VARCHAR, weight DOUBLE)"""
    )
    con.execute(
        """CREATE OR REPLACE TABLE d_units (week VARCHAR, kind VARCHAR, field VARCHAR,
        item_id VARCHAR, units BIGINT, m_min INTEGER, m_max INTEGER)"""
    )
    n_labels = len(config.labels)

    def insert_binary(kind: str, per_unit: str, params: dict | None = None) -> None:
        coincidence, units = _binary_sql(per_unit)
        p = {"kind": kind, **(params or {})}
        con.execute(f"INSERT INTO d_coincidence {coincidence}", p)
        con.execute(f"INSERT INTO d_units {units}", p)

    # Presence: unit (item, label) for every configured label; raters: the whole set.
    insert_binary("presence", _label_units_sql("d_members mem"),
                  {"n_labels": n_labels, "source": "box"})
    # Mentions: unit (item, label); raters: the set's annotations with free text.
    insert_binary("mentions", _label_units_sql(
        "d_members mem JOIN d_ann a ON a.ann_key = mem.ann_key AND a.has_text"),
        {"n_labels": n_labels, "source": "mention"})
    # Schema: unit item; 1 when the annotation passes the contract.
    insert_binary("schema", """
        SELECT mem.week, mem.item_id, '' AS field, count(*) AS m,
               count(*) FILTER (a.schema_pass) AS n1, 1 AS n_units
        FROM d_members mem JOIN d_ann a ON a.ann_key = mem.ann_key GROUP BY ALL""")
    # Multilabel: unit (item, value) for values anyone in the set chose; raters: the set's
    # annotations that have the field.
    multilabel = [f for f, k in config.fields.items() if k == "multilabel"]
    if multilabel:
        insert_binary("multilabel", """
            WITH m AS (SELECT mem.week, mem.item_id, f.field, count(*) AS m
                       FROM d_members mem JOIN d_ann_field f ON f.ann_key = mem.ann_key
                       WHERE f.field IN (SELECT unnest($fields::VARCHAR[]))
                       GROUP BY ALL),
            n1 AS (SELECT mem.week, mem.item_id, v.field, v.value, count(*) AS n1
                   FROM d_members mem JOIN d_ann_value v ON v.ann_key = mem.ann_key
                   WHERE v.field IN (SELECT unnest($fields::VARCHAR[]))
                   GROUP BY ALL)
            SELECT week, item_id, field, m.m, n1.n1, 1 AS n_units
            FROM n1 JOIN m USING (week, item_id, field)""", {"fields": multilabel})
    # Categorical: unit item, nominal values; o_ck = sum_u n_uc (n_uk - [c = k]) / (m_u - 1).
    categorical = [f for f, k in config.fields.items() if k == "categorical"]
    if categorical:
        con.execute(
            """INSERT INTO d_coincidence
            WITH r AS (SELECT mem.week, mem.item_id, v.field, v.value
                       FROM d_members mem JOIN d_ann_value v ON v.ann_key = mem.ann_key
                       WHERE v.field IN (SELECT unnest($fields::VARCHAR[]))),
            m AS (SELECT week, item_id, field, count(*)::DOUBLE AS m FROM r GROUP BY ALL
                  HAVING count(*) >= 2),
            n AS (SELECT week, item_id, field, value, count(*)::DOUBLE AS n FROM r GROUP BY ALL)
            SELECT x.week, 'categorical', x.field, x.item_id, x.value, y.value,
                   sum(x.n * (y.n - CASE WHEN x.value = y.value THEN 1 ELSE 0 END)
                       / (m.m - 1))
            FROM n x JOIN n y USING (week, item_id, field) JOIN m USING (week, item_id, field)
            GROUP BY ALL HAVING sum(x.n * (y.n - CASE WHEN x.value = y.value THEN 1 ELSE 0 END)
                                    / (m.m - 1)) > 0""",
            {"fields": categorical},
        )
        con.execute(
            """INSERT INTO d_units
            SELECT mem.week, 'categorical', v.field, mem.item_id, 1, count(*), count(*)
            FROM d_members mem JOIN d_ann_value v ON v.ann_key = mem.ann_key
            WHERE v.field IN (SELECT unnest($fields::VARCHAR[]))
            GROUP BY ALL HAVING count(*) >= 2""",
            {"fields": categorical},
        )
    # Class: unit matched box pair, its two labels: o[a, b] and o[b, a] each get 1.
    con.execute(
        """INSERT INTO d_coincidence
        WITH m AS (SELECT p.week, p.item_id, bp.label_a, bp.label_b
                   FROM d_box_pairs bp JOIN d_pairs p USING (pair_id)
                   WHERE NOT p.reference AND bp.kind IN ('agreement', 'class'))
        SELECT week, 'class', '', item_id, c, k, count(*)::DOUBLE FROM (
            SELECT week, item_id, label_a AS c, label_b AS k FROM m
            UNION ALL SELECT week, item_id, label_b, label_a FROM m)
        GROUP BY ALL"""
    )
    con.execute(
        """INSERT INTO d_units
        SELECT p.week, 'class', '', p.item_id, count(*), 2, 2
        FROM d_box_pairs bp JOIN d_pairs p USING (pair_id)
        WHERE NOT p.reference AND bp.kind IN ('agreement', 'class') GROUP BY ALL"""
    )


# --------------------------------------------------------------------------------------
# Bootstrap intervals (DESIGN "CIs"), precomputed at refresh
# --------------------------------------------------------------------------------------


def alpha_kinds(config: ProjectConfig) -> list[tuple[str, str]]:
    """(kind, field) of every alpha the visual breakdown reports, in report order."""
    kinds = [("presence", ""), ("class", ""), ("schema", "")]
    kinds += [(kind, field) for field, kind in config.fields.items()
              if kind in ("categorical", "multilabel")]
    if "free" in config.fields.values():
        kinds.append(("mentions", ""))
    return kinds


def resample_counts(n_items: int, n_resamples: int, rng: np.random.Generator | None = None
                    ) -> Iterator[np.ndarray]:
    """Blocks (b x n_items, float64) of per-resample item counts: ``counts[r, g]`` is how
    often item g is in resample r.

    The draws are those of DESIGN "CIs" and `metrics.agreement.bootstrap_ratio_ci`,
    ``rng.integers(0, n_items, size=(n_resamples, n_items))`` with ``rng =
    numpy.random.default_rng(0)`` unless given, made block by block (the generator's
    stream does not depend on how the draw is cut) in the blocks of
    `metrics.agreement`, so the counts are identical and one draw serves every statistic
    over the same items. They are cast to float64 once, as every product with them is.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    block = max(1, _BOOTSTRAP_BLOCK // max(n_items, 1))
    for start in range(0, n_resamples, block):
        b = min(block, n_resamples - start)
        rows = rng.integers(0, n_items, size=(b, n_items))
        counts = np.empty((b, n_items), dtype=np.float64)
        for r in range(b):
            counts[r] = np.bincount(rows[r], minlength=n_items)
        yield counts


Statistic = Callable[[np.ndarray], np.ndarray]


def bootstrap_many(n_items: int, n_resamples: int, stats: Sequence[Statistic],
                   rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Every statistic over the same resamples of ``n_items`` items (one draw, see
    `resample_counts`): each maps a counts block (b x n_items) to b values."""
    parts: list[list[np.ndarray]] = [[] for _ in stats]
    for counts in resample_counts(n_items, n_resamples, rng):
        for part, stat in zip(parts, stats, strict=True):
            part.append(stat(counts))
    return [np.concatenate(p) if p else np.zeros(0) for p in parts]


def ratio_statistic(num: np.ndarray, den: np.ndarray) -> Statistic:
    """sum(num) / sum(den) of a resample (NaN when the denominator is 0), as
    `metrics.agreement.bootstrap_ratio_ci`, for whole-number ``num`` and ``den`` (M3's
    counts): every partial sum is then exact, so numpy's own product loop (no BLAS
    threads to wake) gives the sums of the BLAS product bit for bit."""
    both = np.vstack([np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)])
    if not np.array_equal(both, np.round(both)):
        raise ValueError("ratio_statistic needs whole-number numerators and denominators")

    def stat(counts: np.ndarray) -> np.ndarray:
        sums = np.einsum("ij,kj->ik", counts, both)
        top, bottom = sums[:, 0], sums[:, 1]
        ratio = np.full(top.shape, np.nan)
        np.divide(top, bottom, out=ratio, where=bottom != 0)
        return ratio

    return stat


def alpha_statistic(o: np.ndarray) -> Statistic:
    """Alpha of a resample from per-item contributions ``o`` (G, K, K), through each
    item's coincidence row sums n_c and trace: alpha = 1 - (n - 1)(n - tr) /
    (n^2 - sum n_c^2), NaN where undefined (the intervals of `metrics.visual`)."""
    k = o.shape[1]
    stats = np.concatenate([o.sum(axis=2), np.trace(o, axis1=1, axis2=2)[:, None]], axis=1)

    def stat(counts: np.ndarray) -> np.ndarray:
        s = counts @ stats
        n_c, trace = s[:, :k], s[:, k]
        n = n_c.sum(axis=1)
        expected = n * n - (n_c * n_c).sum(axis=1)
        alpha = np.full(counts.shape[0], np.nan)
        ok = (n > 0) & (expected > 1e-12 * n * n)
        alpha[ok] = 1.0 - (n[ok] - 1.0) * (n[ok] - trace[ok]) / expected[ok]
        return alpha

    return stat


def contribution_alpha_statistic(coincidence: GroupCoincidence) -> Statistic:
    """Alpha of a resample from per-item flattened coincidence matrices, as
    `metrics.agreement.bootstrap_alpha_diff_ci`."""
    k = coincidence.categories.size
    contributions = coincidence.contributions
    return lambda counts: _alpha_agreement_batch(counts @ contributions, k)[0]


def _percentile_row(values: np.ndarray, n_resamples: int, undefined: str):
    ci = _percentile_ci(values, n_resamples)
    reason = undefined if ci.reason == REASON_ALL_RESAMPLES_UNDEFINED else ci.reason
    return ci.low, ci.high, ci.dropped, reason


def dense_coincidence(gi: np.ndarray, ci: np.ndarray, ki: np.ndarray, weight: np.ndarray,
                      n_items: int, k: int) -> np.ndarray:
    """(G, K, K) contributions from rows (item code, category codes, weight), one row per
    cell (as the derived tables hold them)."""
    flat = (np.asarray(gi, dtype=np.int64) * k + np.asarray(ci, dtype=np.int64)) * k
    flat += np.asarray(ki, dtype=np.int64)
    out = np.bincount(flat, weights=np.asarray(weight, dtype=np.float64),
                      minlength=n_items * k * k)
    return out.reshape(n_items, k, k)


# The (kind, field) pairs asked for, numbered: kc is the position in $kk / $kf.
_KINDS_CTE = """kinds AS (
    SELECT unnest($kk::VARCHAR[]) AS kind, unnest($kf::VARCHAR[]) AS field,
           (generate_subscripts($kk::VARCHAR[], 1) - 1)::BIGINT AS kc)"""


def _kinds_params(kinds: Sequence[tuple[str, str]]) -> dict:
    return {"kk": [k for k, _ in kinds], "kf": [f for _, f in kinds]}


def _groups(keys: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Row order grouping ``keys`` (0 .. n_groups - 1) and each group's bounds."""
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(n_groups + 1))
    return order, bounds


def _inputs_hash(*parts) -> str:
    """A digest of a computation's inputs (arrays by dtype, shape and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(_INTERVALS_VERSION.encode())
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(repr((part.dtype.str, part.shape)).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(repr(part).encode())
        h.update(b"|")
    return h.hexdigest()


Reuse = dict[tuple, tuple[str, list[tuple]]]


def week_intervals(con: duckdb.DuckDBPyConnection, config: ProjectConfig,
                   weeks: Sequence[str] | None = None, *, alphas: bool = True,
                   reuse: Reuse | None = None, totals: list[tuple] | None = None
                   ) -> list[tuple]:
    """The item-bootstrap intervals of some weeks (default every week with pairs).

    Rows ``(week, reference, kind, field, n_resamples, low, high, dropped, reason,
    inputs)``: kind ``m3`` for M3 of the peer and of the reference pairs (where a box
    unit exists), and with ``alphas`` each agreement kind of `alpha_kinds` whose alpha is
    defined (peer pairs). The items of a week's peer pairs (sorted by id) are resampled
    once for M3 and every alpha, with the draws of DESIGN "CIs": the intervals are those
    of `metrics.agreement.bootstrap_ratio_ci` and of resampling each kind on its own.

    ``inputs`` digests everything a (week, reference) group's intervals depend on;
    ``reuse`` maps (week, reference) to an earlier digest and rows, taken as they are
    when the digest is unchanged (past weeks keep their numbers as new weeks arrive).
    ``totals`` (a list) receives ``(week, kind, field, k, coincidence)``: each kind's
    K x K coincidence matrix of the week (flattened), the sum over its items in id order
    that alpha, percent agreement and Fleiss' kappa are computed from.
    """
    n_res = config.agreement.bootstrap
    if n_res < 1 and totals is None:
        return []
    params = {"all": weeks is None, "weeks": list(weeks or [])}
    where = "($all OR week IN (SELECT unnest($weeks::VARCHAR[])))"
    groups = con.execute(
        f"""SELECT week, reference, count(DISTINCT item_id) AS g FROM d_pairs WHERE {where}
        GROUP BY ALL ORDER BY week, reference""", params,
    ).fetchall()
    per_item = con.execute(
        f"""SELECT sum(class_disagreements + presence_disagreements)::DOUBLE AS num,
                   sum(agreements + class_disagreements + presence_disagreements)::DOUBLE
                     AS den
        FROM d_pairs WHERE {where} GROUP BY week, reference, item_id
        ORDER BY week, reference, item_id""", params,
    ).fetchnumpy()
    num_all = np.asarray(per_item["num"], dtype=np.float64)
    den_all = np.asarray(per_item["den"], dtype=np.float64)
    kinds = alpha_kinds(config) if alphas else []
    peer_weeks = [w for w, ref, _ in groups if not ref]
    by_kind_week = _week_kind_rows(con, kinds, len(peer_weeks), where, params)
    out: list[tuple] = []
    start = 0
    peer_pos = 0
    for week, reference, g in groups:
        reference = bool(reference)
        num, den = num_all[start:start + g], den_all[start:start + g]
        start += g
        # (kind, field, its per-item inputs) of every statistic of the group
        found: list[tuple[str, str, tuple[np.ndarray, ...]]] = []
        if den.sum() > 0:
            found.append(("m3", "", (num, den)))
        if not reference:
            for kc, (kind, field) in enumerate(kinds):
                o = by_kind_week(kc, peer_pos, g)
                if o is None:
                    continue
                total = o.sum(axis=0)
                if totals is not None:
                    totals.append((week, kind, field, total.shape[0], total.ravel().tolist()))
                if alpha_from_coincidence(total)[0] is not None:
                    found.append((kind, field, (o,)))
            peer_pos += 1
        if not found or n_res < 1:
            continue
        digest = _inputs_hash(n_res, g, *(x for f in found for x in (f[0], f[1], *f[2])))
        old = (reuse or {}).get((week, reference))
        if old is not None and old[0] == digest:
            out += old[1]
            continue
        names = [(kind, field) for kind, field, _ in found]
        stats = [ratio_statistic(*arrays) if kind == "m3" else alpha_statistic(*arrays)
                 for kind, _, arrays in found]
        values = bootstrap_many(g, n_res, stats)
        for (kind, field), v in zip(names, values, strict=True):
            undefined = (REASON_ALL_RESAMPLES_UNDEFINED if kind == "m3"
                         else REASON_ALPHA_UNDEFINED)
            out.append((week, reference, kind, field, n_res,
                        *_percentile_row(v, n_res, undefined), digest))
    return out


def _week_kind_rows(con, kinds: Sequence[tuple[str, str]], n_weeks: int, where: str,
                    params: dict):
    """A function (kind position, week position among the weeks with peer pairs, items)
    -> the (G, K, K) contributions of that kind in that week, or None without any
    (categories: the values the week uses, sorted; items: the week's peer items sorted
    by id)."""
    if not kinds or not n_weeks:
        return lambda kc, w, n_items: None
    rows = con.execute(
        f"""WITH {_KINDS_CTE},
        items AS (
            SELECT week, item_id,
                   (row_number() OVER (PARTITION BY week ORDER BY item_id) - 1)::BIGINT
                     AS gi,
                   (dense_rank() OVER (ORDER BY week) - 1)::BIGINT AS wi
            FROM (SELECT DISTINCT week, item_id FROM d_pairs
                  WHERE NOT reference AND {where})),
        r AS (SELECT kinds.kc, d.week, d.item_id, d.c, d.k, d.weight
              FROM d_coincidence d JOIN kinds USING (kind, field) WHERE {where}),
        cats AS (SELECT kc, v, (row_number() OVER (PARTITION BY kc ORDER BY v) - 1)::BIGINT
                           AS code
                 FROM (SELECT kc, c AS v FROM r UNION SELECT kc, k FROM r))
        SELECT r.kc, i.wi, i.gi, cc.code AS ci, ck.code AS ki, r.weight
        FROM r JOIN items i USING (week, item_id)
        JOIN cats cc ON cc.kc = r.kc AND cc.v = r.c
        JOIN cats ck ON ck.kc = r.kc AND ck.v = r.k""",
        {**params, **_kinds_params(kinds)},
    ).fetchnumpy()
    key = (np.asarray(rows["kc"], dtype=np.int64) * n_weeks
           + np.asarray(rows["wi"], dtype=np.int64))
    order, bounds = _groups(key, len(kinds) * n_weeks)
    gi, ci, ki, weight = (np.asarray(rows[c])[order] for c in ("gi", "ci", "ki", "weight"))

    def kind_week(kc: int, w: int, n_items: int) -> np.ndarray | None:
        lo, hi = bounds[kc * n_weeks + w], bounds[kc * n_weeks + w + 1]
        if lo == hi:
            return None
        c, k = ci[lo:hi], ki[lo:hi]
        # The week's categories: the codes (value order over all weeks) it uses.
        used = np.unique(np.concatenate([c, k]))
        return dense_coincidence(gi[lo:hi], np.searchsorted(used, c),
                                 np.searchsorted(used, k), weight[lo:hi], n_items,
                                 used.size)

    return kind_week


def _insert_rows(con, name: str, columns: Sequence[tuple[str, pa.DataType, str]],
                 rows: list[tuple], order: str) -> None:
    con.execute(f"CREATE OR REPLACE TABLE {name} ("
                + ", ".join(f"{c} {sql}" for c, _, sql in columns) + ")")
    if not rows:
        return
    cols = list(zip(*rows, strict=True))
    table = pa.table({c: pa.array(col, typ)
                      for (c, typ, _), col in zip(columns, cols, strict=True)})
    _register_table(con, "_rows", table,
                    f"INSERT INTO {name} SELECT * FROM _rows ORDER BY {order}")


_WEEK_CI_COLUMNS = (
    ("week", pa.string(), "VARCHAR"), ("reference", pa.bool_(), "BOOLEAN"),
    ("kind", pa.string(), "VARCHAR"), ("field", pa.string(), "VARCHAR"),
    ("n_resamples", pa.int32(), "INTEGER"), ("low", pa.float64(), "DOUBLE"),
    ("high", pa.float64(), "DOUBLE"), ("dropped", pa.int32(), "INTEGER"),
    ("reason", pa.string(), "VARCHAR"), ("inputs", pa.string(), "VARCHAR"),
)


def _previous(con, table: str, key_columns: int) -> Reuse:
    """The rows of an interval table of this layout before this refresh, by key (the
    first ``key_columns``): (digest, rows), for `week_intervals` / `_build_alpha_change`
    to keep what did not change."""
    if _missing_tables(con, ("d_meta", table)):
        return {}
    layout = con.execute("SELECT value FROM d_meta WHERE key = 'layout'").fetchall()
    if layout != [(DERIVED_LAYOUT,)]:
        return {}
    out: Reuse = {}
    for row in con.execute(f"SELECT * FROM {table}").fetchall():
        key = tuple(row[:key_columns])
        digest = row[-1]
        entry = out.setdefault(key, (digest, []))
        if entry[0] == digest:
            entry[1].append(tuple(row))
    return out


_WEEK_COINCIDENCE_COLUMNS = (
    ("week", pa.string(), "VARCHAR"), ("kind", pa.string(), "VARCHAR"),
    ("field", pa.string(), "VARCHAR"), ("k", pa.int32(), "INTEGER"),
    ("coincidence", pa.list_(pa.float64()), "DOUBLE[]"),
)


def _build_week_ci(con, config: ProjectConfig) -> None:
    reuse = _previous(con, "d_week_ci", 2)
    totals: list[tuple] = []
    rows = week_intervals(con, config, reuse=reuse, totals=totals)
    _insert_rows(con, "d_week_ci", _WEEK_CI_COLUMNS, rows, "week, reference, kind, field")
    _insert_rows(con, "d_week_coincidence", _WEEK_COINCIDENCE_COLUMNS, totals,
                 "week, kind, field")


# -- alpha before / after a guideline change ------------------------------------------


def period_items(con: duckdb.DuckDBPyConnection, weeks: Sequence[str]) -> list[str]:
    """The items of some weeks' peer pairs, sorted by id (the groups resampled)."""
    return [r[0] for r in con.execute(
        "SELECT DISTINCT item_id FROM d_pairs WHERE NOT reference "
        "AND week IN (SELECT unnest($w::VARCHAR[])) ORDER BY item_id", {"w": list(weeks)},
    ).fetchall()]


def period_values(con: duckdb.DuckDBPyConnection, weeks: Sequence[str],
                  kinds: Sequence[tuple[str, str]]) -> list[list[str]]:
    """The values (categories) each kind uses in some weeks, sorted."""
    found: list[set[str]] = [set() for _ in kinds]
    for kc, v in con.execute(
        f"""WITH {_KINDS_CTE},
        r AS (SELECT kinds.kc, d.c, d.k FROM d_coincidence d JOIN kinds USING (kind, field)
              WHERE d.week IN (SELECT unnest($weeks::VARCHAR[])))
        SELECT kc, c FROM r UNION SELECT kc, k FROM r""",
        {"weeks": list(weeks), **_kinds_params(kinds)},
    ).fetchall():
        found[kc].add(v)
    return [sorted(v) for v in found]


def period_coincidence(con: duckdb.DuckDBPyConnection, weeks: Sequence[str],
                       kinds: Sequence[tuple[str, str]], categories: Sequence[Sequence[str]]
                       ) -> tuple[int, list[np.ndarray]]:
    """The items of some weeks' peer pairs (G) and, per kind, the per-item coincidence
    contributions (G, K, K) summed over the weeks: items sorted by id, categories in the
    given order (values that are not categories are left out)."""
    where = "week IN (SELECT unnest($weeks::VARCHAR[]))"
    n_items = con.execute(
        f"SELECT count(DISTINCT item_id) FROM d_pairs WHERE NOT reference AND {where}",
        {"weeks": list(weeks)},
    ).fetchone()[0]
    if not kinds or not n_items:
        return n_items, [np.zeros((n_items, len(c), len(c))) for c in categories]
    cats = [(kc, v, code) for kc, values in enumerate(categories)
            for code, v in enumerate(values)]
    rows = con.execute(
        f"""WITH {_KINDS_CTE},
        cats AS (SELECT unnest($ck::BIGINT[]) AS kc, unnest($cv::VARCHAR[]) AS v,
                        unnest($cc::BIGINT[]) AS code),
        it AS (SELECT item_id, (row_number() OVER (ORDER BY item_id) - 1)::BIGINT AS gi
               FROM (SELECT DISTINCT item_id FROM d_pairs WHERE NOT reference AND {where})),
        r AS (SELECT kind, field, item_id, c, k, sum(weight) AS weight FROM d_coincidence
              WHERE {where} GROUP BY ALL)
        SELECT kinds.kc, it.gi, cc.code AS ci, ck.code AS ki, r.weight
        FROM r JOIN kinds USING (kind, field) JOIN it USING (item_id)
        JOIN cats cc ON cc.kc = kinds.kc AND cc.v = r.c
        JOIN cats ck ON ck.kc = kinds.kc AND ck.v = r.k""",
        {"weeks": list(weeks), **_kinds_params(kinds), "ck": [c[0] for c in cats],
         "cv": [c[1] for c in cats], "cc": [c[2] for c in cats]},
    ).fetchnumpy()
    order, bounds = _groups(np.asarray(rows["kc"], dtype=np.int64), len(kinds))
    gi, ci, ki, weight = (np.asarray(rows[c])[order] for c in ("gi", "ci", "ki", "weight"))
    out = []
    for kc in range(len(kinds)):
        sl = slice(bounds[kc], bounds[kc + 1])
        out.append(dense_coincidence(gi[sl], ci[sl], ki[sl], weight[sl], n_items,
                                     len(categories[kc])))
    return n_items, out


def _group_coincidence(n_items: int, cats: list[str], o: np.ndarray) -> GroupCoincidence:
    k = len(cats)
    return GroupCoincidence(groups=np.arange(n_items), categories=np.asarray(cats, dtype=object),
                            contributions=o.reshape(n_items, k * k))


@dataclass(frozen=True)
class _ChangeInputs:
    """What `alpha_change` computes from: per kind the categories and the per-item
    contributions of each period (items of its peer pairs, sorted by id)."""

    kinds: list[tuple[str, str]]
    categories: list[list[str]]
    before: list[GroupCoincidence]
    after: list[GroupCoincidence]

    def digest(self, n_resamples: int) -> str:
        return _inputs_hash(n_resamples, self.kinds, self.categories,
                            *(g.contributions for g in self.before),
                            *(g.contributions for g in self.after))


def _change_inputs(con, config: ProjectConfig, before: Sequence[str],
                   after: Sequence[str]) -> _ChangeInputs:
    kinds = alpha_kinds(config)
    periods = (list(before), list(after))
    values = [period_values(con, ws, kinds) for ws in periods]
    cats = [sorted(set(b) | set(a)) for b, a in zip(*values, strict=True)]
    groups = []
    for ws in periods:
        n_items, contributions = period_coincidence(con, ws, kinds, cats)
        groups.append([_group_coincidence(n_items, c, o)
                       for c, o in zip(cats, contributions, strict=True)])
    return _ChangeInputs(kinds, cats, groups[0], groups[1])


def alpha_change(con: duckdb.DuckDBPyConnection, config: ProjectConfig,
                 before: Sequence[str], after: Sequence[str]) -> list[dict]:
    """Krippendorff's alpha of each kind (`alpha_kinds`) before and after, from the summed
    coincidence matrices of each period, with the item bootstrap interval of the
    difference (the ``alpha`` entries of `metrics.weekly.before_after`).

    Every kind resamples the same items (those of the period's peer pairs, sorted by
    id), so one draw per period serves them all: the draws of
    `metrics.agreement.bootstrap_alpha_diff_ci` (``default_rng(0)``, before then after).
    """
    return _alpha_change(config, _change_inputs(con, config, before, after))


def _alpha_change(config: ProjectConfig, inputs: _ChangeInputs) -> list[dict]:
    entries, found = [], []
    for (kind, field), b, a in zip(inputs.kinds, inputs.before, inputs.after, strict=True):
        alpha_b, reason_b = alpha_from_coincidence(b.coincidence)
        alpha_a, reason_a = alpha_from_coincidence(a.coincidence)
        entry = {"kind": kind, "field": field or None,
                 "before": {"items": int(b.groups.size), "alpha": alpha_b, "reason": reason_b},
                 "after": {"items": int(a.groups.size), "alpha": alpha_a, "reason": reason_a},
                 "diff": None, "diff_ci": None, "reason": None}
        entries.append(entry)
        if alpha_b is None or alpha_a is None:
            entry["reason"] = "alpha undefined " + ("before" if alpha_b is None else "after")
            continue
        entry["diff"] = alpha_a - alpha_b
        if config.agreement.bootstrap < 1:
            entry["reason"] = "bootstrap = 0 in [agreement]: intervals disabled"
            continue
        found.append((entry, b, a))
    if found:
        n_res = config.agreement.bootstrap
        rng = np.random.default_rng(0)
        # Both periods have items (their alphas are defined); before is drawn first.
        alpha_before = bootstrap_many(found[0][1].groups.size, n_res,
                                      [contribution_alpha_statistic(b) for _, b, _ in found],
                                      rng)
        alpha_after = bootstrap_many(found[0][2].groups.size, n_res,
                                     [contribution_alpha_statistic(a) for _, _, a in found],
                                     rng)
        for (entry, _, _), vb, va in zip(found, alpha_before, alpha_after, strict=True):
            ci = _percentile_ci(va - vb, n_res)
            entry["diff_ci"] = None if ci.low is None else [ci.low, ci.high]
            entry["reason"] = ci.reason
    return entries


_CHANGE_COLUMNS = (
    ("before_weeks", pa.string(), "VARCHAR"), ("after_weeks", pa.string(), "VARCHAR"),
    ("n_resamples", pa.int32(), "INTEGER"), ("position", pa.int32(), "INTEGER"),
    ("kind", pa.string(), "VARCHAR"), ("field", pa.string(), "VARCHAR"),
    ("items_before", pa.int64(), "BIGINT"), ("alpha_before", pa.float64(), "DOUBLE"),
    ("reason_before", pa.string(), "VARCHAR"), ("items_after", pa.int64(), "BIGINT"),
    ("alpha_after", pa.float64(), "DOUBLE"), ("reason_after", pa.string(), "VARCHAR"),
    ("diff", pa.float64(), "DOUBLE"), ("low", pa.float64(), "DOUBLE"),
    ("high", pa.float64(), "DOUBLE"), ("reason", pa.string(), "VARCHAR"),
    ("inputs", pa.string(), "VARCHAR"),
)


def _build_alpha_change(con, config: ProjectConfig) -> None:
    from metrics.weekly import change_weeks  # weekly imports this module

    rows: list[tuple] = []
    n_res = config.agreement.bootstrap
    if n_res >= 1:
        reuse = _previous(con, "d_alpha_change", 2)
        done = set()
        for g in config.guidelines:
            before, after = change_weeks(g.effective, CHANGE_WEEKS)
            key = (",".join(before), ",".join(after))
            if key in done:
                continue
            done.add(key)
            inputs = _change_inputs(con, config, before, after)
            digest = inputs.digest(n_res)
            old = reuse.get(key)
            if old is not None and old[0] == digest:
                rows += old[1]
                continue
            for pos, e in enumerate(_alpha_change(config, inputs)):
                low, high = e["diff_ci"] or (None, None)
                rows.append((*key, n_res, pos, e["kind"], e["field"] or "",
                             e["before"]["items"], e["before"]["alpha"], e["before"]["reason"],
                             e["after"]["items"], e["after"]["alpha"], e["after"]["reason"],
                             e["diff"], low, high, e["reason"], digest))
    _insert_rows(con, "d_alpha_change", _CHANGE_COLUMNS, rows,
                 "before_weeks, after_weeks, position")


def stored_alpha_change(con: duckdb.DuckDBPyConnection, config: ProjectConfig,
                        before: Sequence[str], after: Sequence[str]) -> list[dict] | None:
    """`alpha_change` as ``d_alpha_change`` holds it, or None when it does not hold these
    weeks with these kinds and ``[agreement] bootstrap``."""
    rows = con.execute(
        """SELECT kind, field, items_before, alpha_before, reason_before, items_after,
                  alpha_after, reason_after, diff, low, high, reason
        FROM d_alpha_change WHERE before_weeks = $b AND after_weeks = $a
          AND n_resamples = $n ORDER BY position""",
        {"b": ",".join(before), "a": ",".join(after), "n": config.agreement.bootstrap},
    ).fetchall()
    if [(r[0], r[1]) for r in rows] != alpha_kinds(config):
        return None
    return [{"kind": kind, "field": field or None,
             "before": {"items": ib, "alpha": ab, "reason": rb},
             "after": {"items": ia, "alpha": aa, "reason": ra},
             "diff": diff, "diff_ci": None if low is None else [low, high], "reason": reason}
            for kind, field, ib, ab, rb, ia, aa, ra, diff, low, high, reason in rows]
