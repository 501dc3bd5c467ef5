"""The peers: what a team would use instead, run on the same data as ours.

- matching: pycocotools ``COCOeval`` on the same annotation pairs (one COCO image per
  pair, annotator a's boxes as ground truth, b's as detections with score 1), against
  `metrics.derived.match_pair_batch`;
- agreement: the ``krippendorff`` package (a dense raters x units matrix) on the same
  presence ratings, against `metrics.agreement.krippendorff_alpha` ((unit, value) rows);
- ingest: ``pandas.read_json(lines=True)`` plus per-row ``jsonschema`` validation, the
  pipeline a team writes by hand, against `metrics.ingest.ingest_files`.

The COCOeval parameters are the cheapest that still answer the question (one area range,
``maxDets = [100]``): the ratio is the peer's best case. Each function returns seconds
and the numbers needed to check that both sides computed the same thing.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from pathlib import Path

import numpy as np

from bench.timing import clock, lap

__all__ = ["alpha_krippendorff", "alpha_ours", "ingest_pandas", "match_coco", "match_ours",
           "prepare"]


def prepare(project: str, out: str, export: str, clean: str) -> dict:
    """Write ``out`` (npz: boxes and pairs of every derived pair; presence ratings of
    every rating set) and ``clean`` (the export without unparseable lines)."""
    import orjson

    from metrics import store
    from metrics.config import load_config

    config = load_config(project)
    with store.open_db(config.database, read_only=True) as con:
        boxes = con.execute(
            """WITH keys AS (SELECT ann_key_a AS k FROM d_pairs
                             UNION SELECT ann_key_b FROM d_pairs)
            SELECT b.ann_key, b.x, b.y, b.w, b.h,
                   (dense_rank() OVER (ORDER BY b.label) - 1)::INTEGER AS code
            FROM boxes b SEMI JOIN keys ON keys.k = b.ann_key
            WHERE b.matchable ORDER BY b.ann_key, b.box_idx"""
        ).fetchnumpy()
        pairs = con.execute(
            "SELECT ann_key_a, ann_key_b FROM d_pairs ORDER BY pair_id").fetchnumpy()
        ratings = con.execute(
            """WITH labels AS (SELECT unnest($labels::VARCHAR[]) AS label)
            SELECT dense_rank() OVER (ORDER BY m.week, m.item_id, l.label) - 1 AS unit,
                   dense_rank() OVER (ORDER BY m.annotator_id) - 1 AS rater,
                   (b.ann_key IS NOT NULL)::INTEGER AS value
            FROM d_members m CROSS JOIN labels l
            LEFT JOIN d_ann_label b ON b.ann_key = m.ann_key AND b.source = 'box'
                                   AND b.label = l.label""",
            {"labels": list(config.labels)},
        ).fetchnumpy()
    ann = np.asarray(boxes["ann_key"], dtype=np.int64)
    uniq, first, count = np.unique(ann, return_index=True, return_counts=True)

    def runs(keys):
        keys = np.asarray(keys, dtype=np.int64)
        pos = np.clip(np.searchsorted(uniq, keys), 0, max(uniq.size - 1, 0))
        found = (uniq[pos] == keys) if uniq.size else np.zeros(keys.size, bool)
        return (np.where(found, first[pos] if uniq.size else 0, 0),
                np.where(found, count[pos] if uniq.size else 0, 0))

    start_a, n_a = runs(pairs["ann_key_a"])
    start_b, n_b = runs(pairs["ann_key_b"])
    np.savez(out,
             xywh=np.column_stack([np.asarray(boxes[c], np.float64) for c in "xywh"]),
             codes=np.asarray(boxes["code"], np.int64),
             start_a=start_a, n_a=n_a, start_b=start_b, n_b=n_b,
             unit=np.asarray(ratings["unit"], np.int64),
             rater=np.asarray(ratings["rater"], np.int64),
             value=np.asarray(ratings["value"], np.int64))
    kept = 0
    with open(export, "rb") as src, open(clean, "wb") as dst:
        for raw in src:
            try:
                orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            dst.write(raw)
            kept += 1
    return {"seconds": 0.0, "pairs": int(n_a.size), "boxes": int(ann.size),
            "ratings": int(ratings["unit"].size), "clean_lines": kept}


def _load(npz: str) -> dict:
    with np.load(npz) as f:
        return {k: f[k] for k in f.files}


# -- matching -----------------------------------------------------------------------------


def match_ours(npz: str) -> dict:
    """`metrics.derived.match_pair_batch`: both passes, flags and the 0.50..0.95 curve."""
    from metrics.derived import match_pair_batch

    d = _load(npz)
    t0 = clock()
    res = match_pair_batch(d["xywh"], d["codes"], d["start_a"], d["n_a"], d["start_b"],
                           d["n_b"])
    seconds, cpu = lap(t0).values()
    return {"seconds": seconds, "cpu": cpu, "pairs": int(d["n_a"].size),
            "agreements_at_0_5": int(res.agreements.sum()),
            "class_at_0_5": int(res.class_disagreements.sum())}


def _runs(start: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pair of each box, global box index) of the runs [start, start + n)."""
    pair = np.repeat(np.arange(n.size), n)
    first = np.concatenate([[0], np.cumsum(n)[:-1]]) if n.size else n
    return pair, np.repeat(start - first, n) + np.arange(int(n.sum()))


def match_coco(npz: str) -> dict:
    """pycocotools: build the COCO dicts, index them, then ``evaluate`` + ``accumulate``
    (IoU 0.50..0.95, one area range, maxDets 100). ``seconds`` is evaluate + accumulate
    alone (the peer's best case); ``total`` adds building and indexing the dataset."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    d = _load(npz)
    xywh, codes = d["xywh"], d["codes"]
    t0 = clock()
    p_count = d["n_a"].size
    pair_of_a, idx_a = _runs(d["start_a"], d["n_a"])
    pair_of_b, idx_b = _runs(d["start_b"], d["n_b"])
    boxes = xywh.tolist()
    cats = codes.tolist()
    gt = {
        "images": [{"id": int(p) + 1, "width": 640, "height": 480} for p in range(p_count)],
        "categories": [{"id": c + 1, "name": str(c)} for c in range(int(codes.max()) + 1)]
        if codes.size else [],
        "annotations": [
            {"id": k + 1, "image_id": int(p) + 1, "category_id": cats[i] + 1,
             "bbox": boxes[i], "area": boxes[i][2] * boxes[i][3], "iscrowd": 0}
            for k, (p, i) in enumerate(zip(pair_of_a.tolist(), idx_a.tolist(), strict=True))
        ],
    }
    dets = [{"image_id": int(p) + 1, "category_id": cats[i] + 1, "bbox": boxes[i],
             "score": 1.0} for p, i in zip(pair_of_b.tolist(), idx_b.tolist(), strict=True)]
    t_build = lap(t0)["seconds"]
    t1 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets) if dets else COCO()
        t_index = time.perf_counter() - t1
        t2 = clock()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.areaRng = [[0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.params.maxDets = [100]
        ev.evaluate()
        ev.accumulate()
    t_eval, cpu = lap(t2).values()
    tp = 0
    for e in ev.evalImgs:
        if e is not None and len(e["dtIds"]):
            tp += int(np.count_nonzero((e["dtMatches"][0] > 0) & ~e["dtIgnore"][0]))
    return {"seconds": t_eval, "cpu": cpu, "build": t_build, "index": t_index,
            "total": t_build + t_index + t_eval, "pairs": int(p_count),
            "tp_at_0_5": tp}


# -- agreement ----------------------------------------------------------------------------


def alpha_ours(npz: str) -> dict:
    """`metrics.agreement.krippendorff_alpha` on (unit, value) rows."""
    from metrics.agreement import krippendorff_alpha

    d = _load(npz)
    units, values = d["unit"], d["value"]
    t0 = clock()
    alpha = krippendorff_alpha(units, values)
    return {**lap(t0), "alpha": alpha, "ratings": int(units.size)}


def alpha_krippendorff(npz: str) -> dict:
    """The ``krippendorff`` package: ``seconds`` is ``alpha()`` on the dense raters x
    units matrix it needs (NaN = missing); ``total`` adds building that matrix."""
    import krippendorff

    d = _load(npz)
    units, raters, values = d["unit"], d["rater"], d["value"]
    t0 = clock()
    n_units = int(units.max()) + 1 if units.size else 0
    n_raters = int(raters.max()) + 1 if raters.size else 0
    dense = np.full((n_raters, n_units), np.nan)
    dense[raters, units] = values
    t_build = lap(t0)["seconds"]
    t1 = clock()
    alpha = float(krippendorff.alpha(reliability_data=dense, level_of_measurement="nominal",
                                     value_domain=[0, 1]))
    t_alpha, cpu = lap(t1).values()
    return {"seconds": t_alpha, "cpu": cpu, "build": t_build, "total": t_build + t_alpha,
            "alpha": alpha, "matrix": [n_raters, n_units]}


# -- ingest -------------------------------------------------------------------------------


def ingest_pandas(export: str, contract: str) -> dict:
    """``pd.read_json(lines=True)`` then ``jsonschema`` per row, errors collected.

    ``dtype=False, convert_dates=False`` keep the values as JSON gave them (pandas would
    turn ``submitted_at`` into Timestamps and fail the contract); keys a row lacks come
    back as NaN and are dropped before validating, as the hand-written code must.
    """
    import jsonschema
    import pandas as pd

    schema = json.loads(Path(contract).read_text(encoding="utf-8"))
    t0 = clock()
    df = pd.read_json(export, lines=True, dtype=False, convert_dates=False)
    validator = jsonschema.Draft202012Validator(schema)
    invalid = errors = 0
    for rec in df.to_dict(orient="records"):
        rec = {k: v for k, v in rec.items() if not (isinstance(v, float) and math.isnan(v))}
        found = list(validator.iter_errors(rec))
        if found:
            invalid += 1
            errors += len(found)
    return {**lap(t0), "rows": len(df), "invalid": invalid,
            "errors": errors}
