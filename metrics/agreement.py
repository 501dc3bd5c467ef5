"""Agreement statistics: box IoU and matching, kappas, Krippendorff's alpha, intervals.

Everything here is pure numpy/scipy: arrays in, Python floats (or ``None``) out. Boxes are
``[x, y, w, h]`` in pixels, origin top-left (the COCO convention), and every argument that
holds boxes says so in its name (``*_xywh``).

Undefined results are ``None`` with a stated reason (a module constant such as
:data:`REASON_NO_VARIATION`, or the conditions listed in the docstring), never a silent
0 or 1 and never an exception. Exceptions (``ValueError``) are kept for inputs that a caller
built wrongly: wrong shapes, unequal lengths, unequal row totals.

Counts are the state: :func:`coincidence_matrix` returns the counts that can be summed over
weeks or items, and :func:`alpha_from_coincidence` reduces summed counts once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment
from scipy.special import ndtr

__all__ = [
    "MATCH_THRESHOLDS",
    "REASON_ALL_RESAMPLES_UNDEFINED",
    "REASON_NO_ITEMS",
    "REASON_NO_PAIRABLE_UNITS",
    "REASON_NO_UNITS",
    "REASON_NO_VARIATION",
    "Z_95",
    "AgreementCI",
    "AgreementSummary",
    "BootstrapCI",
    "DiffCI",
    "GroupCoincidence",
    "MatchResult",
    "PChart",
    "ZTest",
    "agreement_summary",
    "alpha_from_coincidence",
    "bootstrap_agreement_ci",
    "bootstrap_alpha_ci",
    "bootstrap_alpha_diff_ci",
    "bootstrap_ratio_ci",
    "box_iou",
    "iou_of",
    "coincidence_by_group",
    "coincidence_matrix",
    "cohen_kappa",
    "cohen_kappa_from_table",
    "fleiss_kappa",
    "krippendorff_alpha",
    "match_boxes",
    "match_counts_by_threshold",
    "match_from_iou",
    "newcombe_diff_ci",
    "p_chart_limits",
    "percent_agreement_from_coincidence",
    "summarize_coincidence",
    "two_proportion_ztest",
    "wilson_interval",
]

#: Two-sided 95% standard normal quantile, ``scipy.stats.norm.ppf(0.975)``.
Z_95 = 1.959963984540054

#: The IoU thresholds of the threshold curve: 0.50, 0.55, ..., 0.95 (as in COCO mAP).
MATCH_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))

REASON_NO_PAIRABLE_UNITS = "no pairable units"
REASON_NO_VARIATION = "no variation: every value is the same"
REASON_NO_ITEMS = "no items to resample"
REASON_ALL_RESAMPLES_UNDEFINED = "statistic undefined in every resample"
REASON_NO_UNITS = "no units in any week"

# Memory cap for one block of bootstrap resample counts (entries of a B x n matrix).
_BOOTSTRAP_BLOCK = 2_000_000


# --------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------


def _as_xywh(boxes: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (n, 4) as [x, y, w, h]; got {arr.shape}")
    return arr


def box_iou(a_xywh: npt.ArrayLike, b_xywh: npt.ArrayLike) -> np.ndarray:
    """Intersection over union of every box in ``a_xywh`` with every box in ``b_xywh``.

    .. math::

        \\mathrm{IoU}(a, b) = \\frac{|a \\cap b|}{|a| + |b| - |a \\cap b|}

    Parameters
    ----------
    a_xywh : array_like, shape (N, 4)
        Boxes as ``[x, y, w, h]`` in pixels, origin top-left.
    b_xywh : array_like, shape (M, 4)
        Boxes in the same format.

    Returns
    -------
    iou : ndarray of float64, shape (N, M)
        ``iou[i, j]`` is the IoU of ``a_xywh[i]`` and ``b_xywh[j]``, in [0, 1]. A box with
        non-positive width or height has IoU 0 with everything (no division by zero). Empty
        inputs give a 0 x M or N x 0 array.

    Notes
    -----
    Same as ``pycocotools.mask.iou(a, b, iscrowd=[0] * M)`` for boxes of positive size.

    References
    ----------
    Everingham et al. (2010), "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 88.
    Lin et al. (2014), "Microsoft COCO: Common Objects in Context", ECCV.
    """
    a = _as_xywh(a_xywh, "a_xywh")
    b = _as_xywh(b_xywh, "b_xywh")
    return iou_of(a.T[:, :, None], b.T[:, None, :])


def iou_of(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes given as coordinate arrays ``a[0..3]`` (x, y, w, h) and ``b[0..3]``
    that broadcast against each other: `box_iou` pairs every box with every box,
    `metrics.derived` row with row. Coordinates near the float maximum overflow to inf
    and nan: such a pair counts as not overlapping (0) rather than poisoning comparisons
    and the assignment."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    with np.errstate(over="ignore", invalid="ignore"):
        inter_w = np.clip(np.minimum(ax + aw, bx + bw) - np.maximum(ax, bx), 0.0, None)
        inter_h = np.clip(np.minimum(ay + ah, by + bh) - np.maximum(ay, by), 0.0, None)
        inter = inter_w * inter_h
        valid = ((aw > 0) & (ah > 0)) & ((bw > 0) & (bh > 0))
        union = aw * ah + bw * bh - inter
        iou = np.zeros(inter.shape, dtype=np.float64)
        np.divide(inter, union, out=iou, where=valid)
    bad = ~np.isfinite(iou)
    if bad.any():
        iou[bad] = 0.0
    return iou


@dataclass(frozen=True)
class MatchResult:
    """The two-pass matching of the boxes of two annotations (see :func:`match_boxes`).

    Attributes
    ----------
    agreements : list of (int, int, float)
        Same-label pairs ``(i, j, iou)``: ``i`` indexes the first annotation's boxes, ``j``
        the second's. Sorted by ``i``.
    class_disagreements : list of (int, int, float)
        Pairs of the second pass (labels ignored; their labels always differ). Sorted by ``i``.
    low_overlap : list of (int, int, float)
        The pairs of either pass whose IoU is below ``low_overlap``. They are also in
        ``agreements`` or ``class_disagreements`` and still count as matched.
    unmatched_a, unmatched_b : list of int
        Sorted indices of boxes left unmatched (presence disagreements).
    """

    agreements: list[tuple[int, int, float]]
    class_disagreements: list[tuple[int, int, float]]
    low_overlap: list[tuple[int, int, float]]
    unmatched_a: list[int]
    unmatched_b: list[int]

    @property
    def n_agreements(self) -> int:
        return len(self.agreements)

    @property
    def n_class_disagreements(self) -> int:
        return len(self.class_disagreements)

    @property
    def n_presence_disagreements(self) -> int:
        """Boxes one annotator drew and the other did not: ``unmatched_a + unmatched_b``."""
        return len(self.unmatched_a) + len(self.unmatched_b)

    @property
    def n_low_overlap(self) -> int:
        return len(self.low_overlap)

    @property
    def n_disagreements(self) -> int:
        """The M3 numerator of this pair: class plus presence disagreements."""
        return self.n_class_disagreements + self.n_presence_disagreements

    @property
    def n_total(self) -> int:
        """The M3 denominator of this pair: agreements + class + presence disagreements."""
        return self.n_agreements + self.n_disagreements

    @property
    def matched(self) -> list[tuple[int, int, float]]:
        """Pairs of both passes, sorted by ``(i, j)``."""
        return sorted(self.agreements + self.class_disagreements)


def _max_iou_matching(iou: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a matching of maximum total IoU that uses only allowed edges.

    Allowed edges have IoU >= t > 0 and the others weigh 0, so the best full assignment
    restricted to its allowed pairs is a best partial matching: any partial matching extends
    to a full assignment with the same total by adding zero-weight pairs.
    """
    rows, cols = np.nonzero(allowed)
    if rows.size == 0:
        return rows, cols
    # One-to-one candidate graph: every allowed edge can be taken at once.
    if not np.any(rows[1:] == rows[:-1]) and np.unique(cols).size == cols.size:
        return rows, cols
    used_rows = np.unique(rows)
    used_cols = np.unique(cols)
    sub_allowed = allowed[np.ix_(used_rows, used_cols)]
    weights = np.where(sub_allowed, iou[np.ix_(used_rows, used_cols)], 0.0)
    r, c = linear_sum_assignment(weights, maximize=True)
    keep = sub_allowed[r, c]
    return used_rows[r[keep]], used_cols[c[keep]]


def _check_threshold(iou_threshold: float, low_overlap: float) -> None:
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1]; got {iou_threshold!r}")
    if not 0.0 <= low_overlap <= 1.0:
        raise ValueError(f"low_overlap must be in [0, 1]; got {low_overlap!r}")


def _labels(labels: npt.ArrayLike, n: int, name: str) -> np.ndarray:
    arr = np.empty(n, dtype=object)
    values = list(np.asarray(labels, dtype=object).ravel()) if n else []
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} labels for {n} boxes")
    arr[:] = values
    return arr


def match_from_iou(
    iou: npt.ArrayLike,
    a_labels: npt.ArrayLike,
    b_labels: npt.ArrayLike,
    *,
    iou_threshold: float = 0.5,
    low_overlap: float = 0.75,
) -> MatchResult:
    """The two-pass matching of :func:`match_boxes` on a precomputed IoU matrix.

    Parameters
    ----------
    iou : array_like, shape (N, M)
        IoU of box ``i`` of annotation a with box ``j`` of annotation b (:func:`box_iou`).
    a_labels : array_like, shape (N,)
    b_labels : array_like, shape (M,)
        Labels of the boxes, compared with ``==``.
    iou_threshold : float in (0, 1], default 0.5
        A pair with IoU below it is never matched.
    low_overlap : float in [0, 1], default 0.75
        Matched pairs with IoU strictly below it are listed in ``low_overlap``.

    Returns
    -------
    MatchResult

    See Also
    --------
    match_boxes : the definition of the matching.
    """
    _check_threshold(iou_threshold, low_overlap)
    iou = np.asarray(iou, dtype=np.float64)
    if iou.ndim != 2:
        raise ValueError(f"iou must be a 2-D N x M matrix; got shape {iou.shape}")
    n, m = iou.shape
    la = _labels(a_labels, n, "a_labels")
    lb = _labels(b_labels, m, "b_labels")
    above = iou >= iou_threshold
    same_label = (la[:, None] == lb[None, :]).astype(bool) if n and m else above
    r1, c1 = _max_iou_matching(iou, above & same_label)
    free_a = np.ones(n, dtype=bool)
    free_b = np.ones(m, dtype=bool)
    free_a[r1] = False
    free_b[c1] = False
    r2, c2 = _max_iou_matching(iou, above & free_a[:, None] & free_b[None, :])
    free_a[r2] = False
    free_b[c2] = False

    agreements = [(int(i), int(j), float(iou[i, j])) for i, j in zip(r1, c1, strict=True)]
    class_dis = [(int(i), int(j), float(iou[i, j])) for i, j in zip(r2, c2, strict=True)]
    low = sorted(p for p in agreements + class_dis if p[2] < low_overlap)
    return MatchResult(
        agreements=agreements,
        class_disagreements=class_dis,
        low_overlap=low,
        unmatched_a=np.flatnonzero(free_a).tolist(),
        unmatched_b=np.flatnonzero(free_b).tolist(),
    )


def match_boxes(
    a_xywh: npt.ArrayLike,
    a_labels: npt.ArrayLike,
    b_xywh: npt.ArrayLike,
    b_labels: npt.ArrayLike,
    *,
    iou_threshold: float = 0.5,
    low_overlap: float = 0.75,
) -> MatchResult:
    """Match the boxes of two annotations of one item in two passes.

    1. IoU of every box of a with every box of b (:func:`box_iou`).
    2. Same-label pairs: the one-to-one assignment that maximizes the total IoU over pairs
       with ``IoU >= iou_threshold`` (a pair below the threshold, or with different labels,
       counts as no match). Its pairs are **agreements**.
    3. Boxes left over, labels ignored: the same rule. Its pairs are **class disagreements**.
    4. Boxes still unmatched are **presence disagreements** (``unmatched_a``, ``unmatched_b``).
    5. Pairs of either pass with ``IoU < low_overlap`` are also listed in ``low_overlap``
       (localization); they still count as matched.

    The assignment of each pass solves

    .. math::

        \\max_{\\pi} \\sum_{(i, j) \\in \\pi} \\mathrm{IoU}_{ij}
        \\quad \\text{over matchings } \\pi \\text{ of allowed pairs}

    with :func:`scipy.optimize.linear_sum_assignment` (``maximize=True``). Unlike the greedy
    score-ordered matching of COCOeval, it does not let one box take a partner that
    another box needed more. Ties between optimal matchings are broken by the solver.
    The solver is skipped when there is no allowed pair or when no box has two.

    Parameters
    ----------
    a_xywh : array_like, shape (N, 4)
        Boxes of annotation a as ``[x, y, w, h]`` in pixels.
    a_labels : array_like, shape (N,)
        Their labels.
    b_xywh : array_like, shape (M, 4)
        Boxes of annotation b.
    b_labels : array_like, shape (M,)
        Their labels.
    iou_threshold : float in (0, 1], default 0.5
        Minimum IoU of a matched pair.
    low_overlap : float in [0, 1], default 0.75
        Matched pairs with IoU strictly below it are flagged.

    Returns
    -------
    MatchResult
        ``agreements``, ``class_disagreements`` and ``low_overlap`` as lists of
        ``(i, j, iou)``; ``unmatched_a`` and ``unmatched_b`` as sorted index lists. Every
        box is in exactly one matched pair or one unmatched list.

    References
    ----------
    Kuhn (1955), "The Hungarian method for the assignment problem", Naval Research
    Logistics Quarterly 2. Crouse (2016), "On implementing 2D rectangular assignment
    algorithms", IEEE TAES 52 (the scipy solver). CVAT quality control (annotation
    comparison by matching, then class and presence conflicts).
    """
    iou = box_iou(a_xywh, b_xywh)
    return match_from_iou(
        iou, a_labels, b_labels, iou_threshold=iou_threshold, low_overlap=low_overlap
    )


def match_counts_by_threshold(
    a_xywh: npt.ArrayLike,
    a_labels: npt.ArrayLike,
    b_xywh: npt.ArrayLike,
    b_labels: npt.ArrayLike,
    *,
    thresholds: tuple[float, ...] = MATCH_THRESHOLDS,
) -> np.ndarray:
    """Counts of the matching re-run at several IoU thresholds (the threshold curve).

    The IoU matrix is computed once. Summed over a week's pairs, ``counts[:, 0] /
    counts.sum(axis=1)`` is the share of agreements at each threshold.

    Parameters
    ----------
    a_xywh, a_labels, b_xywh, b_labels
        As in :func:`match_boxes`.
    thresholds : tuple of float, default :data:`MATCH_THRESHOLDS` (0.50, 0.55, ..., 0.95)

    Returns
    -------
    counts : ndarray of int64, shape (T, 3)
        Per threshold: agreements, class disagreements, presence disagreements.
    """
    iou = box_iou(a_xywh, b_xywh)
    counts = np.zeros((len(thresholds), 3), dtype=np.int64)
    for row, t in enumerate(thresholds):
        res = match_from_iou(iou, a_labels, b_labels, iou_threshold=t, low_overlap=0.0)
        counts[row] = (
            res.n_agreements,
            res.n_class_disagreements,
            res.n_presence_disagreements,
        )
    return counts


# --------------------------------------------------------------------------------------
# Kappas
# --------------------------------------------------------------------------------------


def _encode(values: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """Position of each value in ``categories``, -1 when it is not there."""
    if categories.size == 0 or values.size == 0:
        return np.full(values.shape, -1, dtype=np.int64)
    order = np.argsort(categories, kind="stable")
    sorted_cats = categories[order]
    if np.any(sorted_cats[1:] == sorted_cats[:-1]):
        raise ValueError("categories / labels must not repeat a value")
    pos = np.clip(np.searchsorted(sorted_cats, values), 0, sorted_cats.size - 1)
    found = sorted_cats[pos] == values
    return np.where(found, order[pos], -1).astype(np.int64)


def cohen_kappa_from_table(table: npt.ArrayLike) -> float | None:
    """Cohen's kappa from a K x K contingency table of two raters.

    .. math::

        \\kappa = \\frac{p_o - p_e}{1 - p_e}, \\quad
        p_o = \\frac{\\sum_k n_{kk}}{n}, \\quad
        p_e = \\frac{\\sum_k n_{k\\cdot} n_{\\cdot k}}{n^2}

    Parameters
    ----------
    table : array_like, shape (K, K)
        ``table[r, c]`` counts the units rater a put in category r and rater b in c.

    Returns
    -------
    float or None
        ``None`` when the table is empty (n = 0) or when p_e = 1 (both raters used one
        and the same category for every unit).

    References
    ----------
    Cohen (1960), "A coefficient of agreement for nominal scales", Educational and
    Psychological Measurement 20(1).
    """
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise ValueError(f"table must be square K x K; got shape {t.shape}")
    n = t.sum()
    if n <= 0:
        return None
    chance = float(t.sum(axis=1) @ t.sum(axis=0))
    denominator = n * n - chance
    if denominator <= 0:
        return None
    return float((n * np.trace(t) - chance) / denominator)


def cohen_kappa(
    a: npt.ArrayLike, b: npt.ArrayLike, *, labels: npt.ArrayLike | None = None
) -> float | None:
    """Cohen's kappa of two raters who each rated the same units once.

    Parameters
    ----------
    a, b : array_like, shape (n,)
        The two raters' values, aligned by unit.
    labels : array_like, optional
        The categories to use. Units where either value is not among them are left out
        (as in ``sklearn.metrics.cohen_kappa_score``). Default: every value seen.

    Returns
    -------
    float or None
        ``(p_o - p_e) / (1 - p_e)``; ``None`` when no unit is left or p_e = 1.

    See Also
    --------
    cohen_kappa_from_table : the formula.
    """
    av = np.asarray(a)
    bv = np.asarray(b)
    if av.ndim != 1 or av.shape != bv.shape:
        raise ValueError(f"a and b must be 1-D of equal length; got {av.shape} and {bv.shape}")
    if labels is None:
        cats = np.unique(np.concatenate([av, bv])) if av.size else np.empty(0)
    else:
        cats = np.asarray(labels)
    k = cats.size
    ca = _encode(av, cats)
    cb = _encode(bv, cats)
    keep = (ca >= 0) & (cb >= 0)
    table = np.bincount(ca[keep] * k + cb[keep], minlength=k * k).reshape(k, k)
    return cohen_kappa_from_table(table)


def fleiss_kappa(counts: npt.ArrayLike) -> float | None:
    """Fleiss' kappa from a units x categories count matrix.

    .. math::

        P_i = \\frac{\\sum_j n_{ij}^2 - m}{m(m - 1)}, \\quad
        p_j = \\frac{\\sum_i n_{ij}}{N m}, \\quad
        \\kappa = \\frac{\\bar P - \\sum_j p_j^2}{1 - \\sum_j p_j^2}

    Parameters
    ----------
    counts : array_like, shape (N, K)
        ``counts[i, j]`` is the number of raters who put unit i in category j. Every row
        must have the same total m (the number of ratings per unit).

    Returns
    -------
    float or None
        ``None`` when there are no units, fewer than two ratings per unit, or every rating
        is in one category (``sum p_j^2 = 1``).

    Raises
    ------
    ValueError
        When ``counts`` is not 2-D or its rows have different totals.

    References
    ----------
    Fleiss (1971), "Measuring nominal scale agreement among many raters", Psychological
    Bulletin 76(5).
    """
    t = np.asarray(counts, dtype=np.float64)
    if t.ndim != 2:
        raise ValueError(f"counts must be a 2-D units x categories matrix; got {t.shape}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        return None
    totals = t.sum(axis=1)
    if np.any(totals != totals[0]):
        raise ValueError(
            "fleiss_kappa needs the same number of ratings per unit; row totals range "
            f"from {totals.min():g} to {totals.max():g}"
        )
    m = totals[0]
    if m < 2:
        return None
    p_j = t.sum(axis=0) / (t.shape[0] * m)
    p_i = ((t * t).sum(axis=1) - m) / (m * (m - 1))
    p_e = float((p_j * p_j).sum())
    if p_e >= 1.0:
        return None
    return float((p_i.mean() - p_e) / (1.0 - p_e))


# --------------------------------------------------------------------------------------
# Krippendorff's alpha (nominal) from coincidences
# --------------------------------------------------------------------------------------


def _missing_mask(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind == "O":
        return np.fromiter(
            (v is None or (isinstance(v, float) and math.isnan(v)) for v in values),
            dtype=bool,
            count=values.size,
        )
    return np.zeros(values.shape, dtype=bool)


def _rows(
    units: npt.ArrayLike, values: npt.ArrayLike, groups: npt.ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    u = np.asarray(units)
    v = np.asarray(values)
    if u.ndim != 1 or v.ndim != 1 or u.shape != v.shape:
        raise ValueError(
            f"units and values must be 1-D with one entry per rating; got {u.shape}, {v.shape}"
        )
    g = None
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != u.shape:
            raise ValueError(f"groups must have one entry per rating; got {g.shape}")
    return u, v, g


def _codes(
    units: np.ndarray, values: np.ndarray, categories: npt.ArrayLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Categories, unit codes, value codes (missing values removed) and the unit count."""
    keep = ~_missing_mask(values)
    units = units[keep]
    values = values[keep]
    if categories is None:
        cats, vcode = np.unique(values, return_inverse=True)
    else:
        cats = np.asarray(categories)
        if cats.ndim != 1:
            raise ValueError("categories must be 1-D")
        vcode = _encode(values, cats)
        if np.any(vcode < 0):
            unknown = values[vcode < 0][0]
            raise ValueError(f"value {unknown!r} is not in categories")
    if units.size == 0:
        return cats, np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    unit_ids, ucode = np.unique(units, return_inverse=True)
    return cats, ucode.astype(np.int64), vcode.astype(np.int64), unit_ids.size


def _pair_contributions(
    ucode: np.ndarray, vcode: np.ndarray, n_units: int, n_cats: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Coincidence contributions ``(unit, c, k, weight)`` of every pairable unit.

    For unit u with m_u >= 2 values, of which n_uc are c, the contribution to o[c, k] is
    ``n_uc * (n_uk - [c == k]) / (m_u - 1)``. Only the categories present in a unit are
    paired, so the work is the sum over units of (distinct values in the unit) squared,
    never units x categories.
    Also returns ``m_u`` for every unit.
    """
    m_u = np.bincount(ucode, minlength=n_units)
    keys, n_uc = np.unique(ucode * n_cats + vcode, return_counts=True)
    unit = keys // n_cats
    cat = keys % n_cats
    pairable = m_u[unit] >= 2
    unit, cat, n_uc = unit[pairable], cat[pairable], n_uc[pairable]
    if unit.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, np.zeros(0), m_u
    # Entries are sorted by unit: each unit is one run; pair every entry with its run.
    run_start = np.flatnonzero(np.r_[True, unit[1:] != unit[:-1]])
    run_len = np.diff(np.r_[run_start, unit.size])
    entry_run_start = np.repeat(run_start, run_len)
    entry_run_len = np.repeat(run_len, run_len)
    left = np.repeat(np.arange(unit.size), entry_run_len)
    first_of_left = np.repeat(np.cumsum(entry_run_len) - entry_run_len, entry_run_len)
    right = entry_run_start[left] + (np.arange(left.size) - first_of_left)
    weight = n_uc[left] * (n_uc[right] - (left == right)) / (m_u[unit[left]] - 1.0)
    return unit[left], cat[left], cat[right], weight, m_u


def coincidence_matrix(
    units: npt.ArrayLike,
    values: npt.ArrayLike,
    *,
    categories: npt.ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Krippendorff's coincidence matrix of nominal ratings given as (unit, value) rows.

    .. math::

        o_{ck} = \\sum_{u:\\, m_u \\ge 2} \\frac{n_{uc}\\,(n_{uk} - [c = k])}{m_u - 1}

    where ``n_uc`` is the number of values c in unit u and ``m_u`` the number of values in
    u. Units with fewer than two values are not pairable and are left out. The matrix is
    symmetric and sums to n, the number of pairable values.

    Parameters
    ----------
    units : array_like, shape (R,)
        The unit of each rating (any sortable scalars, e.g. ints or strings).
    values : array_like, shape (R,)
        The value of each rating. A missing rating is simply an absent row; ``NaN`` (and
        ``None`` in an object array) also count as missing.
    categories : array_like, shape (K,), optional
        The categories, in the order of the rows of ``o``. Pass the same list every week to
        sum matrices over weeks. Default: the sorted distinct values. A value outside the
        given categories raises ``ValueError``.

    Returns
    -------
    categories : ndarray, shape (K,)
    o : ndarray of float64, shape (K, K)

    References
    ----------
    Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability",
    https://repository.upenn.edu/asc_papers/43 (section B, the coincidence matrix).
    """
    u, v, _ = _rows(units, values)
    cats, ucode, vcode, n_units = _codes(u, v, categories)
    k = cats.size
    _, c, kk, w, _ = _pair_contributions(ucode, vcode, n_units, k)
    o = np.bincount(c * k + kk, weights=w, minlength=k * k).reshape(k, k)
    return cats, o


def _alpha_agreement_batch(o_flat: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Alpha and percent agreement of each row of ``o_flat`` (B x K*K); NaN where undefined.

    alpha = 1 - D_o / D_e with D_o = (n - tr o) / n and D_e = (n^2 - sum n_c^2) / (n (n - 1)),
    i.e. alpha = 1 - (n - 1)(n - tr o) / (n^2 - sum n_c^2).
    """
    o = o_flat.reshape(-1, k, k)
    n_c = o.sum(axis=2)
    n = n_c.sum(axis=1)
    trace = np.trace(o, axis1=1, axis2=2)
    expected = n * n - (n_c * n_c).sum(axis=1)
    agreement = np.full(n.shape, np.nan)
    alpha = np.full(n.shape, np.nan)
    has_values = n > 0
    agreement[has_values] = trace[has_values] / n[has_values]
    # Only one category used gives exactly 0; the tolerance guards summed fractions.
    varied = has_values & (expected > 1e-12 * n * n)
    alpha[varied] = 1.0 - (n[varied] - 1.0) * (n[varied] - trace[varied]) / expected[varied]
    return alpha, agreement


def _square(o: npt.ArrayLike) -> np.ndarray:
    arr = np.asarray(o, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"coincidence matrix must be square K x K; got {arr.shape}")
    return arr


def alpha_from_coincidence(o: npt.ArrayLike) -> tuple[float | None, str | None]:
    """Krippendorff's alpha (nominal) from a coincidence matrix.

    .. math::

        \\alpha = 1 - \\frac{D_o}{D_e} = 1 - (n - 1)\\,
        \\frac{n - \\sum_c o_{cc}}{n^2 - \\sum_c n_c^2},
        \\quad n_c = \\sum_k o_{ck}, \\; n = \\sum_c n_c

    Parameters
    ----------
    o : array_like, shape (K, K)
        A coincidence matrix (:func:`coincidence_matrix`), or a sum of several built with
        the same categories.

    Returns
    -------
    alpha : float or None
    reason : str or None
        ``None`` when alpha is defined, else :data:`REASON_NO_PAIRABLE_UNITS` (n = 0) or
        :data:`REASON_NO_VARIATION` (every pairable value is the same, so D_e = 0).

    References
    ----------
    Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability",
    https://repository.upenn.edu/asc_papers/43.
    """
    arr = _square(o)
    k = arr.shape[0]
    if k == 0 or arr.sum() <= 0:
        return None, REASON_NO_PAIRABLE_UNITS
    alpha, _ = _alpha_agreement_batch(arr.reshape(1, k * k), k)
    if np.isnan(alpha[0]):
        return None, REASON_NO_VARIATION
    return float(alpha[0]), None


def percent_agreement_from_coincidence(o: npt.ArrayLike) -> float | None:
    """Share of agreeing pairs of values within units: ``trace(o) / n = 1 - D_o``.

    Parameters
    ----------
    o : array_like, shape (K, K)
        A coincidence matrix.

    Returns
    -------
    float or None
        ``None`` when there are no pairable values (n = 0).
    """
    arr = _square(o)
    n = arr.sum()
    if n <= 0:
        return None
    return float(np.trace(arr) / n)


@dataclass(frozen=True)
class AgreementSummary:
    """Agreement of one kind of rating, as reported per kind.

    Attributes
    ----------
    units : int
        Pairable units (units with at least two values).
    pairable_values : int
        n, the number of values in pairable units.
    agreement : float or None
        Percent agreement ``trace(o) / n``; ``None`` with no pairable units.
    alpha : float or None
        Krippendorff's alpha (nominal); ``None`` when undefined, with ``reason``.
    reason : str or None
        Why ``alpha`` is ``None``.
    """

    units: int
    pairable_values: int
    agreement: float | None
    alpha: float | None
    reason: str | None


def summarize_coincidence(o: npt.ArrayLike, *, units: int) -> AgreementSummary:
    """An :class:`AgreementSummary` from a (possibly summed) coincidence matrix.

    Parameters
    ----------
    o : array_like, shape (K, K)
        Coincidence matrix.
    units : int
        The number of pairable units behind ``o`` (stored beside it).
    """
    arr = _square(o)
    alpha, reason = alpha_from_coincidence(arr)
    return AgreementSummary(
        units=int(units),
        pairable_values=int(round(arr.sum())),
        agreement=percent_agreement_from_coincidence(arr),
        alpha=alpha,
        reason=reason,
    )


def agreement_summary(
    units: npt.ArrayLike,
    values: npt.ArrayLike,
    *,
    categories: npt.ArrayLike | None = None,
) -> AgreementSummary:
    """Pairable units, percent agreement and Krippendorff's alpha of (unit, value) rows.

    Parameters
    ----------
    units, values, categories
        As in :func:`coincidence_matrix`.

    Returns
    -------
    AgreementSummary
    """
    u, v, _ = _rows(units, values)
    cats, ucode, vcode, n_units = _codes(u, v, categories)
    k = cats.size
    _, c, kk, w, m_u = _pair_contributions(ucode, vcode, n_units, k)
    o = np.bincount(c * k + kk, weights=w, minlength=k * k).reshape(k, k)
    return summarize_coincidence(o, units=int(np.count_nonzero(m_u >= 2)))


def krippendorff_alpha(
    units: npt.ArrayLike,
    values: npt.ArrayLike,
    *,
    categories: npt.ArrayLike | None = None,
) -> float | None:
    """Krippendorff's alpha for nominal data, from one (unit, value) row per rating.

    Missing ratings are absent rows (or ``NaN``); units with fewer than two values are
    left out. Computed from the coincidence matrix (:func:`coincidence_matrix`), never
    from a dense raters x units matrix.

    .. math::

        \\alpha = 1 - \\frac{D_o}{D_e}

    Parameters
    ----------
    units : array_like, shape (R,)
        The unit of each rating.
    values : array_like, shape (R,)
        Its value (nominal).
    categories : array_like, optional
        See :func:`coincidence_matrix`; categories never used do not change alpha.

    Returns
    -------
    float or None
        ``None`` when there are no pairable units or no variation; use
        :func:`agreement_summary` to get the reason.

    References
    ----------
    Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability",
    https://repository.upenn.edu/asc_papers/43.
    """
    return agreement_summary(units, values, categories=categories).alpha


@dataclass(frozen=True)
class GroupCoincidence:
    """Coincidence contributions per group (item), ready to be resampled.

    Attributes
    ----------
    groups : ndarray, shape (G,)
        Sorted distinct group ids: the items, in the order a bootstrap resamples them.
    categories : ndarray, shape (K,)
    contributions : ndarray of float64, shape (G, K * K)
        Row g is the flattened coincidence matrix of the units of group g; the rows sum
        to the coincidence matrix of all the data.
    """

    groups: np.ndarray
    categories: np.ndarray
    contributions: np.ndarray

    @property
    def coincidence(self) -> np.ndarray:
        """The K x K coincidence matrix of all groups."""
        k = self.categories.size
        return self.contributions.sum(axis=0).reshape(k, k)


def coincidence_by_group(
    groups: npt.ArrayLike,
    units: npt.ArrayLike,
    values: npt.ArrayLike,
    *,
    categories: npt.ArrayLike | None = None,
) -> GroupCoincidence:
    """Flattened coincidence contributions of each group (item) of nested units.

    Parameters
    ----------
    groups : array_like, shape (R,)
        The group (item id) of each rating. Every group that appears is a row of the
        result, even when it has no pairable unit (it then contributes zeros).
    units : array_like, shape (R,)
        The unit of each rating; a unit must lie within one group.
    values : array_like, shape (R,)
        The value of each rating (missing: absent row or ``NaN``).
    categories : array_like, optional
        See :func:`coincidence_matrix`.

    Returns
    -------
    GroupCoincidence
        Memory is G x K^2 floats.

    Raises
    ------
    ValueError
        When a unit appears in more than one group.
    """
    u, v, g = _rows(units, values, groups)
    group_ids, gcode = np.unique(g, return_inverse=True)
    keep = ~_missing_mask(v)
    cats, ucode, vcode, n_units = _codes(u, v, categories)
    gcode = gcode[keep]
    unit_group = np.zeros(n_units, dtype=np.int64)
    unit_group[ucode] = gcode
    if np.any(unit_group[ucode] != gcode):
        raise ValueError("units must be nested in groups: a unit appears in several groups")
    k = cats.size
    unit, c, kk, w, _ = _pair_contributions(ucode, vcode, n_units, k)
    flat = unit_group[unit] * (k * k) + c * k + kk
    contrib = np.bincount(flat, weights=w, minlength=group_ids.size * k * k)
    return GroupCoincidence(
        groups=group_ids,
        categories=cats,
        contributions=contrib.reshape(group_ids.size, k * k),
    )


# --------------------------------------------------------------------------------------
# Confidence intervals
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapCI:
    """A percentile bootstrap interval.

    Attributes
    ----------
    low, high : float or None
        The 2.5th and 97.5th percentiles (numpy's default linear interpolation) of the
        statistic over the resamples where it is defined; ``None`` when it is defined in
        none of them, with ``reason``.
    n_resamples : int
        Resamples drawn.
    dropped : int
        Resamples where the statistic was undefined (left out of the percentiles).
    reason : str or None
        Why ``low``/``high`` are ``None``.
    """

    low: float | None
    high: float | None
    n_resamples: int
    dropped: int
    reason: str | None = None


class AgreementCI(NamedTuple):
    """Bootstrap intervals of alpha and of percent agreement from the same resamples."""

    alpha: BootstrapCI
    agreement: BootstrapCI


def _check_resamples(n_resamples: int) -> None:
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be at least 1; got {n_resamples!r}")


def _draw(n_items: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n_items, size=(n_resamples, n_items))


def _resample_counts(idx: np.ndarray, n_items: int):
    """Yield blocks of per-resample item counts (b x n_items) for the index draws ``idx``."""
    block = max(1, _BOOTSTRAP_BLOCK // max(n_items, 1))
    for start in range(0, idx.shape[0], block):
        rows = idx[start : start + block]
        b = rows.shape[0]
        offsets = (np.arange(b, dtype=np.int64) * n_items)[:, None]
        yield np.bincount((rows + offsets).ravel(), minlength=b * n_items).reshape(b, n_items)


def _percentile_ci(stat: np.ndarray, n_resamples: int) -> BootstrapCI:
    defined = stat[~np.isnan(stat)]
    dropped = int(n_resamples - defined.size)
    if defined.size == 0:
        return BootstrapCI(None, None, n_resamples, dropped, REASON_ALL_RESAMPLES_UNDEFINED)
    low, high = np.percentile(defined, [2.5, 97.5])
    return BootstrapCI(float(low), float(high), n_resamples, dropped, None)


def bootstrap_ratio_ci(
    numerators: npt.ArrayLike,
    denominators: npt.ArrayLike,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> BootstrapCI:
    """Item bootstrap percentile interval of a ratio of sums, such as M3.

    Each resample draws items with replacement and computes
    ``sum(numerators[idx]) / sum(denominators[idx])``; resamples with a zero denominator
    are dropped and counted. The draws are exactly::

        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n_items, size=(n_resamples, n_items))

    Parameters
    ----------
    numerators, denominators : array_like, shape (n_items,)
        Per-item counts, in item-id order (e.g. disagreements and matched units).
    n_resamples : int, default 1000
    seed : int, default 0

    Returns
    -------
    BootstrapCI
        ``low``/``high`` ``None`` with :data:`REASON_NO_ITEMS` when there are no items
        (``dropped = n_resamples``), or :data:`REASON_ALL_RESAMPLES_UNDEFINED`.

    References
    ----------
    Efron & Tibshirani (1993), "An Introduction to the Bootstrap", ch. 13 (percentile
    interval).
    """
    _check_resamples(n_resamples)
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    if num.ndim != 1 or num.shape != den.shape:
        raise ValueError(
            f"numerators and denominators must be 1-D of equal length; got {num.shape}, "
            f"{den.shape}"
        )
    n_items = num.size
    if n_items == 0:
        return BootstrapCI(None, None, n_resamples, n_resamples, REASON_NO_ITEMS)
    idx = _draw(n_items, n_resamples, np.random.default_rng(seed))
    parts = []
    for counts in _resample_counts(idx, n_items):
        top = counts @ num
        bottom = counts @ den
        ratio = np.full(top.shape, np.nan)
        np.divide(top, bottom, out=ratio, where=bottom != 0)
        parts.append(ratio)
    return _percentile_ci(np.concatenate(parts), n_resamples)


def _bootstrap_coincidence(
    coincidence: GroupCoincidence, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    k = coincidence.categories.size
    n_items = coincidence.groups.size
    alphas, agreements = [], []
    for counts in _resample_counts(idx, n_items):
        alpha, agreement = _alpha_agreement_batch(counts @ coincidence.contributions, k)
        alphas.append(alpha)
        agreements.append(agreement)
    return np.concatenate(alphas), np.concatenate(agreements)


def bootstrap_agreement_ci(
    groups: npt.ArrayLike,
    units: npt.ArrayLike,
    values: npt.ArrayLike,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    categories: npt.ArrayLike | None = None,
) -> AgreementCI:
    """Item bootstrap intervals of Krippendorff's alpha and of percent agreement.

    Items (``groups``, sorted by id) are resampled with replacement; an item drawn twice
    contributes its units twice. The resampled coincidence matrices are
    ``counts @ contributions`` with ``contributions`` from :func:`coincidence_by_group`
    and ``counts[b, g]`` the times item g is in resample b. The draws are exactly::

        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n_items, size=(n_resamples, n_items))

    Resamples where a statistic is undefined (no pairable unit, or no variation for
    alpha) are dropped and counted.

    Parameters
    ----------
    groups : array_like, shape (R,)
        Item id of each rating.
    units : array_like, shape (R,)
        Unit of each rating, nested in items.
    values : array_like, shape (R,)
        Value of each rating.
    n_resamples : int, default 1000
    seed : int, default 0
    categories : array_like, optional
        See :func:`coincidence_matrix`.

    Returns
    -------
    AgreementCI
        ``(alpha, agreement)``, two :class:`BootstrapCI`.

    References
    ----------
    Hayes & Krippendorff (2007), "Answering the call for a standard reliability measure
    for coding data", Communication Methods and Measures 1(1). Efron & Tibshirani (1993).
    """
    _check_resamples(n_resamples)
    coincidence = coincidence_by_group(groups, units, values, categories=categories)
    n_items = coincidence.groups.size
    if n_items == 0:
        empty = BootstrapCI(None, None, n_resamples, n_resamples, REASON_NO_ITEMS)
        return AgreementCI(empty, empty)
    idx = _draw(n_items, n_resamples, np.random.default_rng(seed))
    alpha, agreement = _bootstrap_coincidence(coincidence, idx)
    return AgreementCI(_percentile_ci(alpha, n_resamples), _percentile_ci(agreement, n_resamples))


def bootstrap_alpha_ci(
    groups: npt.ArrayLike,
    units: npt.ArrayLike,
    values: npt.ArrayLike,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    categories: npt.ArrayLike | None = None,
) -> BootstrapCI:
    """Item bootstrap interval of Krippendorff's alpha (nominal).

    The alpha part of :func:`bootstrap_agreement_ci` (same arguments, same draws).
    """
    return bootstrap_agreement_ci(
        groups, units, values, n_resamples=n_resamples, seed=seed, categories=categories
    ).alpha


def bootstrap_alpha_diff_ci(
    before: GroupCoincidence,
    after: GroupCoincidence,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> BootstrapCI:
    """Bootstrap interval of ``alpha(after) - alpha(before)`` for two independent periods.

    Items of each period are resampled independently. The draws are exactly::

        rng = np.random.default_rng(seed)
        idx_before = rng.integers(0, n_before, size=(n_resamples, n_before))
        idx_after = rng.integers(0, n_after, size=(n_resamples, n_after))

    A resample is dropped when alpha is undefined in either period.

    Parameters
    ----------
    before, after : GroupCoincidence
        From :func:`coincidence_by_group` with the same ``categories``.
    n_resamples : int, default 1000
    seed : int, default 0

    Returns
    -------
    BootstrapCI
        ``None`` limits with :data:`REASON_NO_ITEMS` when a period has no items.
    """
    _check_resamples(n_resamples)
    if not np.array_equal(before.categories, after.categories):
        raise ValueError("before and after must be built with the same categories")
    if before.groups.size == 0 or after.groups.size == 0:
        return BootstrapCI(None, None, n_resamples, n_resamples, REASON_NO_ITEMS)
    rng = np.random.default_rng(seed)
    idx_before = _draw(before.groups.size, n_resamples, rng)
    idx_after = _draw(after.groups.size, n_resamples, rng)
    alpha_before, _ = _bootstrap_coincidence(before, idx_before)
    alpha_after, _ = _bootstrap_coincidence(after, idx_after)
    return _percentile_ci(alpha_after - alpha_before, n_resamples)


def wilson_interval(k: int, n: int, *, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion k / n.

    .. math::

        \\frac{\\hat p + \\frac{z^2}{2n} \\pm z \\sqrt{\\frac{\\hat p (1 - \\hat p)}{n}
        + \\frac{z^2}{4 n^2}}}{1 + \\frac{z^2}{n}}

    Parameters
    ----------
    k : int
        Successes (e.g. annotations with an error), ``0 <= k <= n``.
    n : int
        Trials.
    z : float, default :data:`Z_95`
        Standard normal quantile (1.96 for 95%).

    Returns
    -------
    (low, high) or None
        Clipped to [0, 1]; ``None`` when n = 0 (a rate over zero units).

    References
    ----------
    Wilson (1927), "Probable inference, the law of succession, and statistical
    inference", JASA 22(158).
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n; got k={k!r}, n={n!r}")
    if n == 0:
        return None
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    # At k = 0 and k = n the bound is exactly 0 or 1; rounding would leave 1e-17 off.
    low = 0.0 if k == 0 else max(0.0, center - half)
    high = 1.0 if k == n else min(1.0, center + half)
    return low, high


class DiffCI(NamedTuple):
    """A difference of proportions ``p2 - p1`` and its interval."""

    diff: float
    low: float
    high: float


def newcombe_diff_ci(k1: int, n1: int, k2: int, n2: int, *, z: float = Z_95) -> DiffCI | None:
    """Newcombe's hybrid score interval for the difference ``p2 - p1`` (second minus first).

    With Wilson intervals (l1, u1) of p1 and (l2, u2) of p2 and d = p2 - p1:

    .. math::

        \\left[d - \\sqrt{(p_2 - l_2)^2 + (u_1 - p_1)^2},\\;
               d + \\sqrt{(u_2 - p_2)^2 + (p_1 - l_1)^2}\\right]

    Pass the period before a change first and the period after it second, so a positive
    difference means the rate went up after the change.

    Parameters
    ----------
    k1, n1 : int
        Successes and trials of the first sample (e.g. before).
    k2, n2 : int
        Of the second sample (e.g. after).
    z : float, default :data:`Z_95`

    Returns
    -------
    DiffCI or None
        ``(diff, low, high)`` for ``p2 - p1``; ``None`` when n1 = 0 or n2 = 0.

    References
    ----------
    Newcombe (1998), "Interval estimation for the difference between independent
    proportions: comparison of eleven methods", Statistics in Medicine 17(8), method 10.
    """
    ci1 = wilson_interval(k1, n1, z=z)
    ci2 = wilson_interval(k2, n2, z=z)
    if ci1 is None or ci2 is None:
        return None
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = ci1, ci2
    d = p2 - p1
    low = d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return DiffCI(d, low, high)


class ZTest(NamedTuple):
    """A z statistic (for ``p2 - p1``) and its two-sided p-value."""

    z: float
    p_value: float


def two_proportion_ztest(k1: int, n1: int, k2: int, n2: int) -> ZTest | None:
    """Pooled two-proportion z-test of ``p2 - p1 = 0`` (second minus first), two-sided.

    .. math::

        \\bar p = \\frac{k_1 + k_2}{n_1 + n_2}, \\quad
        z = \\frac{p_2 - p_1}{\\sqrt{\\bar p (1 - \\bar p)(1/n_1 + 1/n_2)}}, \\quad
        p = 2\\,\\Phi(-|z|)

    Parameters
    ----------
    k1, n1 : int
        First sample (e.g. before a change).
    k2, n2 : int
        Second sample (e.g. after).

    Returns
    -------
    ZTest or None
        ``(z, p_value)``, with z > 0 when the second proportion is larger; ``None`` when
        n1 = 0, n2 = 0 or the pooled proportion is 0 or 1 (no variation: zero standard
        error).

    References
    ----------
    Fleiss, Levin & Paik (2003), "Statistical Methods for Rates and Proportions", 3rd ed.,
    section 2.4.
    """
    for k, n in ((k1, n1), (k2, n2)):
        if n < 0 or k < 0 or k > n:
            raise ValueError(f"need 0 <= k <= n; got k={k!r}, n={n!r}")
    if n1 == 0 or n2 == 0:
        return None
    pooled = (k1 + k2) / (n1 + n2)
    variance = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)
    if variance <= 0:
        return None
    z = (k2 / n2 - k1 / n1) / math.sqrt(variance)
    return ZTest(float(z), float(2.0 * ndtr(-abs(z))))


@dataclass(frozen=True)
class PChart:
    """p-chart of a weekly rate.

    Attributes
    ----------
    center : float or None
        p-bar = sum(errors) / sum(totals); ``None`` with ``reason`` when every total is 0.
    p, lcl, ucl : ndarray of float64, shape (W,)
        Weekly rate and control limits; NaN for a week with total 0.
    swing : list of {"up", "down", None}, length W
        "up" when p > ucl, "down" when p < lcl, else ``None``.
    reason : str or None
    """

    center: float | None
    p: np.ndarray
    lcl: np.ndarray
    ucl: np.ndarray
    swing: list[str | None]
    reason: str | None = None


def p_chart_limits(errors: npt.ArrayLike, totals: npt.ArrayLike) -> PChart:
    """Shewhart p-chart limits for weekly rates with varying week sizes.

    .. math::

        \\bar p = \\frac{\\sum_w e_w}{\\sum_w n_w}, \\quad
        \\mathrm{LCL}_w, \\mathrm{UCL}_w = \\bar p \\mp 3 \\sqrt{\\frac{\\bar p (1 - \\bar p)}{n_w}}
        \\text{ clipped to } [0, 1]

    A week whose rate is strictly outside its limits is a swing ("up" or "down").

    Parameters
    ----------
    errors : array_like, shape (W,)
        Units with the event per week (e.g. annotations with a schema error).
    totals : array_like, shape (W,)
        Units per week.

    Returns
    -------
    PChart

    References
    ----------
    Montgomery (2019), "Introduction to Statistical Quality Control", 8th ed., section 7.2
    (control chart for fraction nonconforming, variable sample size).
    """
    e = np.asarray(errors, dtype=np.float64)
    n = np.asarray(totals, dtype=np.float64)
    if e.ndim != 1 or e.shape != n.shape:
        raise ValueError(f"errors and totals must be 1-D of equal length; got {e.shape}, {n.shape}")
    weeks = e.size
    nan = np.full(weeks, np.nan)
    total = n.sum()
    if total <= 0:
        return PChart(None, nan.copy(), nan.copy(), nan.copy(), [None] * weeks, REASON_NO_UNITS)
    center = float(e.sum() / total)
    has_units = n > 0
    p = nan.copy()
    lcl = nan.copy()
    ucl = nan.copy()
    p[has_units] = e[has_units] / n[has_units]
    spread = 3.0 * np.sqrt(center * (1.0 - center) / n[has_units])
    lcl[has_units] = np.clip(center - spread, 0.0, 1.0)
    ucl[has_units] = np.clip(center + spread, 0.0, 1.0)
    swing: list[str | None] = [None] * weeks
    for w in np.flatnonzero(has_units):
        if p[w] > ucl[w]:
            swing[w] = "up"
        elif p[w] < lcl[w]:
            swing[w] = "down"
    return PChart(center, p, lcl, ucl, swing)
