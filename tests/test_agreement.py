"""Tests of metrics.agreement against independent references and published examples."""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from pathlib import Path

import krippendorff
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as coco_mask
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from metrics import agreement as ag
from metrics.agreement import (
    REASON_ALL_RESAMPLES_UNDEFINED,
    REASON_NO_ITEMS,
    REASON_NO_PAIRABLE_UNITS,
    REASON_NO_UNITS,
    REASON_NO_VARIATION,
    agreement_summary,
    alpha_from_coincidence,
    bootstrap_agreement_ci,
    bootstrap_alpha_ci,
    bootstrap_alpha_diff_ci,
    bootstrap_ratio_ci,
    box_iou,
    cohen_kappa,
    cohen_kappa_from_table,
    coincidence_by_group,
    coincidence_matrix,
    fleiss_kappa,
    krippendorff_alpha,
    match_boxes,
    match_counts_by_threshold,
    newcombe_diff_ci,
    p_chart_limits,
    percent_agreement_from_coincidence,
    summarize_coincidence,
    two_proportion_ztest,
    wilson_interval,
)

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLES = json.loads((FIXTURES / "published_examples.json").read_text(encoding="utf-8"))

TIGHT = 1e-9


def rows_from_matrix(matrix):
    """(unit, value) rows from a raters x units matrix with None/NaN as missing."""
    units, values = [], []
    for row in matrix:
        for unit, value in enumerate(row):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            units.append(unit)
            values.append(value)
    return np.array(units), np.array(values)


def reference_alpha(reliability):
    """krippendorff package, nominal; None where it is undefined (NaN or refused)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = krippendorff.alpha(
                reliability_data=reliability, level_of_measurement="nominal"
            )
        except ValueError:
            return None
    return None if math.isnan(value) else value


def slow_alpha_agreement(ratings):
    """Textbook pairable-value definition, loop by loop: (alpha, agreement) or None."""
    by_unit = defaultdict(list)
    for unit, value in ratings:
        by_unit[unit].append(value)
    o = defaultdict(float)
    for vals in by_unit.values():
        m = len(vals)
        if m < 2:
            continue
        for x in range(m):
            for y in range(m):
                if x != y:
                    o[vals[x], vals[y]] += 1.0 / (m - 1)
    n = sum(o.values())
    if n == 0:
        return None, None
    n_c = defaultdict(float)
    for (c, _), w in o.items():
        n_c[c] += w
    d_o = sum(w for (c, k), w in o.items() if c != k)
    d_e = sum(n_c[c] * n_c[k] for c in n_c for k in n_c if c != k)
    agreement = 1.0 - d_o / n
    if d_e == 0:
        return None, agreement
    return 1.0 - (n - 1.0) * d_o / d_e, agreement


def percentile_or_none(stats):
    defined = [s for s in stats if s is not None]
    if not defined:
        return None, None, len(stats)
    low, high = np.percentile(defined, [2.5, 97.5])
    return low, high, len(stats) - len(defined)


# --------------------------------------------------------------------------------------
# box_iou
# --------------------------------------------------------------------------------------


def random_boxes(rng, n, scale=100.0):
    xy = rng.uniform(0, scale, size=(n, 2))
    wh = rng.uniform(0.5, scale / 2, size=(n, 2))
    return np.hstack([xy, wh])


@pytest.mark.parametrize("seed", range(5))
def test_box_iou_matches_pycocotools(seed):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(1, 30, size=2)
    a = random_boxes(rng, n)
    b = random_boxes(rng, m)
    expected = coco_mask.iou(a, b, [0] * m)
    np.testing.assert_allclose(box_iou(a, b), expected, rtol=0, atol=1e-12)


def test_box_iou_integer_grid_matches_pycocotools():
    rng = np.random.default_rng(42)
    a = rng.integers(0, 12, size=(40, 4)).astype(float)
    b = rng.integers(0, 12, size=(35, 4)).astype(float)
    a[:, 2:] += 1
    b[:, 2:] += 1
    np.testing.assert_allclose(box_iou(a, b), coco_mask.iou(a, b, [0] * 35), atol=1e-12)


def test_box_iou_published_pycocotools_example():
    ex = EXAMPLES["pycocotools_bbox_iou_xywh"]
    np.testing.assert_allclose(box_iou(ex["dt"], ex["gt"]), ex["iou_iscrowd_00"], atol=1e-8)


def test_box_iou_shapes_of_empty_inputs():
    assert box_iou([], [[0, 0, 1, 1], [1, 1, 2, 2]]).shape == (0, 2)
    assert box_iou([[0, 0, 1, 1]], np.zeros((0, 4))).shape == (1, 0)
    assert box_iou([], []).shape == (0, 0)
    assert box_iou([[0, 0, 1, 1]], []).dtype == np.float64


def test_box_iou_zero_and_negative_area_is_zero_without_warnings():
    a = np.array([[0, 0, 0, 0], [0, 0, 10, 0], [5, 5, -3, 4], [0, 0, 10, 10]], float)
    b = np.array([[0, 0, 0, 0], [0, 0, 10, 10]], float)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        iou = box_iou(a, b)
    np.testing.assert_array_equal(iou[:3], 0.0)
    assert iou[3].tolist() == [0.0, 1.0]


def test_box_iou_rejects_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        box_iou([[0, 0, 1]], [[0, 0, 1, 1]])


def test_box_iou_is_symmetric_and_bounded():
    rng = np.random.default_rng(7)
    a, b = random_boxes(rng, 12), random_boxes(rng, 9)
    iou = box_iou(a, b)
    np.testing.assert_allclose(iou, box_iou(b, a).T, atol=1e-15)
    assert np.all((iou >= 0) & (iou <= 1))
    np.testing.assert_allclose(np.diag(box_iou(a, a)), 1.0)


# --------------------------------------------------------------------------------------
# match_boxes
# --------------------------------------------------------------------------------------


def test_match_hungarian_differs_from_coco_greedy_published_case():
    ex = EXAMPLES["coco_greedy_vs_hungarian"]
    dt = np.array(ex["dt"])[:, :4]
    gt = np.array(ex["gt"])
    np.testing.assert_allclose(box_iou(dt, gt), ex["iou_rows_dt_cols_gt"], atol=1e-5)
    res = match_boxes(dt, ["car", "car"], gt, ["car", "car"], iou_threshold=0.5)
    pairs = ex["hungarian_at_0.5_pairs_dtidx_gtidx"]
    expected = [(i, j, pytest.approx(v, abs=1e-12)) for i, j, v in pairs]
    assert res.agreements == expected
    # COCOeval's greedy matching pairs dt 0 with gt 1 (ids [2, 0]) and leaves one of each.
    greedy = ex["cocoeval_greedy_at_0.5"]["dtMatches_gtIds"]
    assert [j + 1 for _, j, _ in res.agreements] != greedy
    assert res.unmatched_a == [] and res.unmatched_b == []
    assert res.low_overlap == [(0, 0, pytest.approx(0.6))]
    assert res.n_total == 2 and res.n_disagreements == 0


def test_match_no_boxes_on_either_side():
    res = match_boxes([], [], [], [])
    assert res.agreements == [] and res.class_disagreements == [] and res.low_overlap == []
    assert res.unmatched_a == [] and res.unmatched_b == []
    assert res.n_total == 0


def test_match_one_side_empty():
    boxes = [[0, 0, 10, 10], [20, 20, 5, 5]]
    res = match_boxes(boxes, ["car", "bike"], [], [])
    assert res.unmatched_a == [0, 1] and res.unmatched_b == []
    assert res.n_presence_disagreements == 2 and res.n_disagreements == 2
    res = match_boxes(np.zeros((0, 4)), [], boxes, ["car", "bike"])
    assert res.unmatched_a == [] and res.unmatched_b == [0, 1]


def test_match_zero_area_boxes_are_never_matched():
    res = match_boxes([[0, 0, 0, 0]], ["car"], [[0, 0, 0, 0]], ["car"])
    assert res.agreements == [] and res.unmatched_a == [0] and res.unmatched_b == [0]


def test_match_class_disagreement_and_presence():
    a = [[0, 0, 10, 10], [50, 50, 10, 10], [100, 100, 5, 5]]
    b = [[0, 0, 10, 10], [51, 50, 10, 10], [200, 200, 5, 5]]
    res = match_boxes(a, ["car", "car", "dog"], b, ["car", "bike", "dog"])
    assert res.agreements == [(0, 0, 1.0)]
    assert [(i, j) for i, j, _ in res.class_disagreements] == [(1, 1)]
    assert res.unmatched_a == [2] and res.unmatched_b == [2]
    assert res.n_disagreements == 3 and res.n_total == 4
    assert res.low_overlap == []
    assert res.matched == [(0, 0, 1.0), res.class_disagreements[0]]


def test_match_same_label_pass_runs_first():
    # b0 overlaps a0 best but has another label; the same-label pair must win pass 1.
    a = [[0, 0, 10, 10]]
    b = [[0, 0, 10, 10], [1, 0, 10, 10]]
    res = match_boxes(a, ["car"], b, ["bike", "car"])
    assert [(i, j) for i, j, _ in res.agreements] == [(0, 1)]
    assert res.class_disagreements == [] and res.unmatched_b == [0]


def test_match_threshold_is_inclusive_and_low_overlap_strict():
    # IoU exactly 0.5: [0,0,10,10] vs [0,0,10,5] -> 50 / 100.
    res = match_boxes([[0, 0, 10, 10]], ["a"], [[0, 0, 10, 5]], ["a"], low_overlap=0.5)
    assert res.agreements == [(0, 0, 0.5)] and res.low_overlap == []
    res = match_boxes([[0, 0, 10, 10]], ["a"], [[0, 0, 10, 5]], ["a"], iou_threshold=0.51)
    assert res.agreements == [] and res.n_presence_disagreements == 2


def test_match_validates_arguments():
    with pytest.raises(ValueError, match="labels"):
        match_boxes([[0, 0, 1, 1]], [], [[0, 0, 1, 1]], ["a"])
    with pytest.raises(ValueError, match="iou_threshold"):
        match_boxes([], [], [], [], iou_threshold=0.0)
    with pytest.raises(ValueError, match="low_overlap"):
        match_boxes([], [], [], [], low_overlap=1.5)


def test_match_fast_path_skips_the_solver(monkeypatch):
    calls = []
    real = ag.linear_sum_assignment

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ag, "linear_sum_assignment", spy)
    a = [[0, 0, 10, 10], [100, 0, 10, 10]]
    b = [[1, 0, 10, 10], [101, 0, 10, 10], [500, 500, 3, 3]]
    res = match_boxes(a, ["x", "y"], b, ["x", "z", "y"])
    assert calls == []
    assert [(i, j) for i, j, _ in res.agreements] == [(0, 0)]
    assert [(i, j) for i, j, _ in res.class_disagreements] == [(1, 1)]
    # Two a boxes competing for one b box needs the solver.
    match_boxes([[0, 0, 10, 10], [1, 0, 10, 10]], ["x", "x"], [[0, 0, 10, 10]], ["x"])
    assert calls == [1]


def brute_force_best(iou, allowed):
    n, m = allowed.shape
    best = 0.0

    def walk(i, used, total):
        nonlocal best
        if i == n:
            best = max(best, total)
            return
        walk(i + 1, used, total)
        for j in range(m):
            if allowed[i, j] and not used & (1 << j):
                walk(i + 1, used | (1 << j), total + iou[i, j])

    walk(0, 0, 0.0)
    return best


box_strategy = st.tuples(
    st.integers(0, 12),
    st.integers(0, 12),
    st.integers(0, 10),
    st.integers(0, 10),
    st.sampled_from(["a", "b", "c"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    a=st.lists(box_strategy, max_size=5),
    b=st.lists(box_strategy, max_size=5),
    t=st.sampled_from([0.1, 0.3, 0.5, 0.7]),
    lo=st.sampled_from([0.0, 0.6, 0.75, 1.0]),
)
def test_match_is_optimal_and_loses_nothing(a, b, t, lo):
    a_xywh = np.array([x[:4] for x in a], float).reshape(-1, 4)
    b_xywh = np.array([x[:4] for x in b], float).reshape(-1, 4)
    a_lab = [x[4] for x in a]
    b_lab = [x[4] for x in b]
    res = match_boxes(a_xywh, a_lab, b_xywh, b_lab, iou_threshold=t, low_overlap=lo)
    iou = box_iou(a_xywh, b_xywh)
    n, m = iou.shape

    same = np.array([[la == lb for lb in b_lab] for la in a_lab], bool).reshape(n, m)
    pass1 = (iou >= t) & same
    total1 = sum(v for _, _, v in res.agreements)
    assert total1 == pytest.approx(brute_force_best(iou, pass1), abs=1e-9)

    used_a = {i for i, _, _ in res.agreements}
    used_b = {j for _, j, _ in res.agreements}
    free_a = np.array([i not in used_a for i in range(n)], bool)
    free_b = np.array([j not in used_b for j in range(m)], bool)
    pass2 = (iou >= t) & free_a[:, None] & free_b[None, :]
    total2 = sum(v for _, _, v in res.class_disagreements)
    assert total2 == pytest.approx(brute_force_best(iou, pass2), abs=1e-9)

    for i, j, v in res.agreements:
        assert a_lab[i] == b_lab[j] and v >= t and v == iou[i, j]
    for i, j, v in res.class_disagreements:
        assert a_lab[i] != b_lab[j] and v >= t and v == iou[i, j]
    matched = res.agreements + res.class_disagreements
    a_seen = sorted([i for i, _, _ in matched] + res.unmatched_a)
    b_seen = sorted([j for _, j, _ in matched] + res.unmatched_b)
    assert a_seen == list(range(n)) and b_seen == list(range(m))
    assert res.unmatched_a == sorted(res.unmatched_a)
    assert res.low_overlap == sorted(p for p in matched if p[2] < lo)
    assert all(isinstance(v, float) for _, _, v in matched)
    assert res.n_total == len(matched) + len(res.unmatched_a) + len(res.unmatched_b)


def test_match_counts_by_threshold_agrees_with_match_boxes():
    rng = np.random.default_rng(3)
    a, b = random_boxes(rng, 8, 40), random_boxes(rng, 7, 40)
    la = rng.choice(["a", "b"], 8).tolist()
    lb = rng.choice(["a", "b"], 7).tolist()
    counts = match_counts_by_threshold(a, la, b, lb)
    assert counts.shape == (10, 3)
    for row, t in zip(counts, ag.MATCH_THRESHOLDS, strict=True):
        res = match_boxes(a, la, b, lb, iou_threshold=t)
        assert row.tolist() == [
            res.n_agreements,
            res.n_class_disagreements,
            res.n_presence_disagreements,
        ]


# --------------------------------------------------------------------------------------
# Cohen and Fleiss
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_cohen_kappa_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    k = int(rng.integers(2, 5))
    a = rng.integers(0, k, n)
    b = np.where(rng.random(n) < 0.6, a, rng.integers(0, k, n))
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=TIGHT)
    labels = [0, 1]
    assert cohen_kappa(a, b, labels=labels) == pytest.approx(
        cohen_kappa_score(a, b, labels=labels), abs=TIGHT
    )


def test_cohen_kappa_string_labels_match_sklearn():
    a = ["car", "bike", "car", "dog", "dog", "car"]
    b = ["car", "car", "car", "dog", "bike", "bike"]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=TIGHT)


def test_cohen_kappa_published_50_proposals():
    ex = EXAMPLES["cohen_wikipedia_50_proposals"]
    table = ex["table_rowsA_colsB_yes_no"]
    a, b = [], []
    for r, row in enumerate(table):
        for c, count in enumerate(row):
            a += [("yes", "no")[r]] * count
            b += [("yes", "no")[c]] * count
    assert len(a) == 50
    assert cohen_kappa(a, b) == pytest.approx(ex["kappa"], abs=1e-12)
    assert cohen_kappa_from_table(table) == pytest.approx(ex["kappa"], abs=1e-12)


def test_cohen_kappa_published_tables():
    assert cohen_kappa_from_table(
        EXAMPLES["cohen_sas_table10_statsmodels"]["table"]
    ) == pytest.approx(0.4842, abs=5e-5)
    ex = EXAMPLES["cohen_R_irr_anxiety_raters2_3"]
    assert cohen_kappa(ex["rater2"], ex["rater3"]) == pytest.approx(ex["unweighted"], abs=1e-8)


def test_cohen_kappa_undefined_cases():
    assert cohen_kappa(["a"] * 5, ["a"] * 5) is None  # p_e == 1
    assert cohen_kappa([], []) is None
    assert cohen_kappa([1, 2], [2, 1], labels=[3]) is None
    with pytest.raises(ValueError):
        cohen_kappa([1, 2], [1])


@pytest.mark.parametrize("seed", range(8))
def test_fleiss_kappa_matches_statsmodels(seed):
    rng = np.random.default_rng(seed)
    n_units = int(rng.integers(2, 60))
    raters = int(rng.integers(2, 8))
    k = int(rng.integers(2, 6))
    pvals = rng.dirichlet(np.ones(k))
    counts = rng.multinomial(raters, pvals, size=n_units)
    expected = sm_fleiss_kappa(counts, method="fleiss")
    if math.isnan(expected):
        assert fleiss_kappa(counts) is None
    else:
        assert fleiss_kappa(counts) == pytest.approx(expected, abs=TIGHT)


def test_fleiss_kappa_published_example():
    ex = EXAMPLES["fleiss_wikipedia_10subj_14raters_5cat"]
    kappa = fleiss_kappa(ex["counts"])
    assert kappa == pytest.approx(ex["statsmodels_kappa"], abs=1e-12)
    assert round(kappa, 3) == ex["published_kappa"]


def test_fleiss_kappa_edge_cases():
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[1, 2], [2, 2]])
    assert fleiss_kappa([[3, 0], [3, 0]]) is None  # every rating in one category
    assert fleiss_kappa([[1, 0], [0, 1]]) is None  # one rating per unit
    assert fleiss_kappa(np.zeros((0, 3))) is None


# --------------------------------------------------------------------------------------
# Krippendorff's alpha
# --------------------------------------------------------------------------------------


def test_alpha_published_krippendorff_2011_example():
    ex = EXAMPLES["krippendorff_2011_exampleC_4obs_12units"]
    units, values = rows_from_matrix(ex["rows_observers_A_B_C_D_null_is_missing"])
    alpha = krippendorff_alpha(units, values)
    assert alpha == pytest.approx(ex["krippendorff_0.9.0_full_precision"]["nominal"], abs=1e-12)
    assert round(alpha, 3) == ex["published"]["nominal"]
    summary = agreement_summary(units, values)
    # Unit 12 has a single value and is not pairable.
    assert summary.units == 11 and summary.pairable_values == 40
    assert summary.reason is None


def test_alpha_published_wikipedia_example():
    ex = EXAMPLES["wikipedia_3coders_15units"]
    units, values = rows_from_matrix(ex["rows"])
    alpha = krippendorff_alpha(units, values)
    assert alpha == pytest.approx(ex["krippendorff_0.9.0"]["nominal"], abs=1e-12)
    assert round(alpha, 3) == ex["published"]["nominal"]


@pytest.mark.parametrize("seed", range(12))
def test_alpha_matches_krippendorff_package_with_missing(seed):
    rng = np.random.default_rng(seed)
    raters = int(rng.integers(2, 7))
    n_units = int(rng.integers(1, 40))
    k = int(rng.integers(2, 5))
    data = rng.integers(1, k + 1, size=(raters, n_units)).astype(float)
    agree = rng.random(n_units) < 0.5
    data[:, agree] = data[0, agree]
    data[rng.random(data.shape) < 0.3] = np.nan
    units, values = rows_from_matrix(data.tolist())
    expected = reference_alpha(data)
    ours = krippendorff_alpha(units, values.astype(int))
    if expected is None:
        assert ours is None
    else:
        assert ours == pytest.approx(expected, abs=TIGHT)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=2, max_size=2),
        min_size=1,
        max_size=25,
    ).map(lambda cols: [list(r) for r in zip(*cols, strict=True)]),
    st.randoms(use_true_random=False),
)
def test_alpha_property_reference_and_row_order(matrix, rnd):
    units, values = rows_from_matrix(matrix)
    ours = krippendorff_alpha(units, values)
    reliability = np.array([[np.nan if v is None else v for v in r] for r in matrix], float)
    expected = reference_alpha(reliability) if len(values) else None
    if expected is None:
        assert ours is None
    else:
        assert ours == pytest.approx(expected, abs=TIGHT)
    order = list(range(len(units)))
    rnd.shuffle(order)
    shuffled = krippendorff_alpha(units[order], values[order])
    assert (shuffled is None) == (ours is None)
    if ours is not None:
        assert shuffled == pytest.approx(ours, abs=1e-12)


def test_coincidence_matrix_matches_loop_definition():
    ex = EXAMPLES["krippendorff_2011_exampleC_4obs_12units"]
    units, values = rows_from_matrix(ex["rows_observers_A_B_C_D_null_is_missing"])
    cats, o = coincidence_matrix(units, values)
    assert cats.tolist() == [1, 2, 3, 4, 5]
    by_unit = defaultdict(list)
    for u, v in zip(units, values, strict=True):
        by_unit[u].append(v)
    ref = np.zeros((5, 5))
    for vals in by_unit.values():
        m = len(vals)
        for x in range(m):
            for y in range(m):
                if x != y:
                    ref[vals[x] - 1, vals[y] - 1] += 1 / (m - 1)
    np.testing.assert_allclose(o, ref, atol=1e-12)
    np.testing.assert_allclose(o, o.T)
    assert o.sum() == pytest.approx(40)
    assert percent_agreement_from_coincidence(o) == pytest.approx(32 / 40)
    assert alpha_from_coincidence(o) == (pytest.approx(0.743421052631579, abs=1e-12), None)


def test_alpha_with_string_values_nan_missing_and_unused_category():
    units = np.array([0, 0, 0, 1, 1, 2, 2, 3])
    values = np.array(["car", "car", "bike", "bike", "bike", "car", "dog", "car"], object)
    base = krippendorff_alpha(units, values)
    with_unused = krippendorff_alpha(units, values, categories=["bike", "car", "dog", "bus"])
    assert with_unused == pytest.approx(base, abs=1e-12)
    cats, o = coincidence_matrix(units, values, categories=["bike", "car", "dog", "bus"])
    assert o[3].sum() == 0 and o[:, 3].sum() == 0
    # NaN / None values count as missing, like absent rows.
    float_values = np.array([1.0, 1.0, 0.0, 0.0, np.nan, 1.0, 0.0])
    float_units = np.array([0, 0, 0, 1, 1, 2, 2])
    assert krippendorff_alpha(float_units, float_values) == pytest.approx(
        krippendorff_alpha(float_units[[0, 1, 2, 3, 5, 6]], float_values[[0, 1, 2, 3, 5, 6]])
    )
    obj = np.array(["a", None, "b", "a"], object)
    assert agreement_summary([0, 0, 0, 1], obj).pairable_values == 2
    with pytest.raises(ValueError, match="not in categories"):
        coincidence_matrix(units, values, categories=["car", "bike"])


def test_alpha_no_variation_is_none_with_reason():
    summary = agreement_summary([0, 0, 1, 1, 1], ["x"] * 5)
    assert summary.alpha is None and summary.reason == REASON_NO_VARIATION
    assert summary.agreement == 1.0 and summary.units == 2
    assert krippendorff_alpha([0, 0, 1, 1], [1, 1, 1, 1]) is None
    # Values outside pairable units do not count as variation.
    assert agreement_summary([0, 0, 1], [1, 1, 2]).reason == REASON_NO_VARIATION


def test_alpha_single_unit_and_no_pairable_units():
    single = agreement_summary([7, 7, 7], ["a", "b", "a"])
    assert single.units == 1 and single.pairable_values == 3
    # One unit with variation: D_e > 0 and D_o > 0, alpha is defined (and negative here).
    expected = reference_alpha(np.array([[0.0], [1.0], [0.0]]))
    assert single.alpha == pytest.approx(expected, abs=TIGHT)
    none = agreement_summary([1, 2, 3], ["a", "b", "a"])
    assert none.units == 0 and none.pairable_values == 0
    assert none.alpha is None and none.agreement is None
    assert none.reason == REASON_NO_PAIRABLE_UNITS
    empty = agreement_summary([], [])
    assert empty.reason == REASON_NO_PAIRABLE_UNITS and empty.units == 0
    assert alpha_from_coincidence(np.zeros((0, 0))) == (None, REASON_NO_PAIRABLE_UNITS)
    assert percent_agreement_from_coincidence(np.zeros((2, 2))) is None


def test_summed_coincidence_equals_pooled_data():
    rng = np.random.default_rng(11)
    units = rng.integers(0, 50, 300)
    values = rng.integers(0, 3, 300)
    first = units < 25
    cats = [0, 1, 2]
    _, o1 = coincidence_matrix(units[first], values[first], categories=cats)
    _, o2 = coincidence_matrix(units[~first], values[~first], categories=cats)
    pooled = agreement_summary(units, values, categories=cats)
    from_sum = summarize_coincidence(o1 + o2, units=pooled.units)
    assert from_sum.alpha == pytest.approx(pooled.alpha, abs=1e-12)
    assert from_sum == summarize_coincidence(o1 + o2, units=pooled.units)


def test_coincidence_by_group_rows_sum_to_whole():
    rng = np.random.default_rng(5)
    groups = rng.integers(0, 20, 400)
    units = groups * 10 + rng.integers(0, 3, 400)
    values = rng.integers(0, 4, 400)
    grouped = coincidence_by_group(groups, units, values)
    _, o = coincidence_matrix(units, values)
    np.testing.assert_allclose(grouped.coincidence, o, atol=1e-9)
    assert grouped.groups.tolist() == sorted(set(groups.tolist()))
    assert grouped.contributions.shape == (grouped.groups.size, 16)
    with pytest.raises(ValueError, match="nested"):
        coincidence_by_group([0, 1], [5, 5], [1, 2])


# --------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------


def make_rated_items(rng, n_items, k=3):
    groups, units, values = [], [], []
    for item in rng.permutation(n_items):
        for unit in range(int(rng.integers(1, 4))):
            truth = int(rng.integers(0, k))
            for _ in range(int(rng.integers(1, 5))):
                value = truth if rng.random() < 0.7 else int(rng.integers(0, k))
                groups.append(f"img-{item:03d}")
                units.append(f"img-{item:03d}/{unit}")
                values.append(value)
    return np.array(groups), np.array(units), np.array(values)


def reference_bootstrap_alpha(groups, units, values, n_resamples, seed):
    items = sorted(set(groups.tolist()))
    ratings = defaultdict(list)
    for g, u, v in zip(groups.tolist(), units.tolist(), values.tolist(), strict=True):
        ratings[g].append((u, v))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(items), size=(n_resamples, len(items)))
    alphas, agreements = [], []
    for row in idx:
        resample = []
        for copy, pos in enumerate(row):
            resample += [((copy, u), v) for u, v in ratings[items[pos]]]
        alpha, agreement = slow_alpha_agreement(resample)
        alphas.append(alpha)
        agreements.append(agreement)
    return percentile_or_none(alphas), percentile_or_none(agreements)


def test_bootstrap_alpha_ci_equals_loop_reference():
    groups, units, values = make_rated_items(np.random.default_rng(1), 25)
    (a_low, a_high, a_drop), (p_low, p_high, p_drop) = reference_bootstrap_alpha(
        groups, units, values, 200, seed=0
    )
    alpha_ci, agreement_ci = bootstrap_agreement_ci(groups, units, values, n_resamples=200)
    assert alpha_ci.low == pytest.approx(a_low, abs=TIGHT)
    assert alpha_ci.high == pytest.approx(a_high, abs=TIGHT)
    assert alpha_ci.dropped == a_drop and alpha_ci.n_resamples == 200
    assert agreement_ci.low == pytest.approx(p_low, abs=TIGHT)
    assert agreement_ci.high == pytest.approx(p_high, abs=TIGHT)
    assert agreement_ci.dropped == p_drop
    point = krippendorff_alpha(units, values)
    assert alpha_ci.low <= point <= alpha_ci.high
    assert bootstrap_alpha_ci(groups, units, values, n_resamples=200) == alpha_ci


def test_bootstrap_alpha_ci_drops_undefined_resamples():
    # Item A agrees on 0, item B on 1, item C has no pairable unit.
    groups = ["A", "A", "B", "B", "C"]
    units = ["A1", "A1", "B1", "B1", "C1"]
    values = [0, 0, 1, 1, 1]
    (a_low, a_high, a_drop), (_, _, p_drop) = reference_bootstrap_alpha(
        np.array(groups), np.array(units), np.array(values), 300, seed=4
    )
    alpha_ci, agreement_ci = bootstrap_agreement_ci(
        groups, units, values, n_resamples=300, seed=4
    )
    idx = np.random.default_rng(4).integers(0, 3, size=(300, 3))
    has_a = (idx == 0).any(axis=1)
    has_b = (idx == 1).any(axis=1)
    assert alpha_ci.dropped == a_drop == int(np.sum(~(has_a & has_b)))
    assert agreement_ci.dropped == p_drop == int(np.sum(~(has_a | has_b)))
    assert alpha_ci.low == pytest.approx(a_low) and alpha_ci.high == pytest.approx(a_high)
    assert 0 < alpha_ci.dropped < 300


def test_bootstrap_alpha_ci_all_undefined_and_no_items():
    ci = bootstrap_alpha_ci(["A", "A", "B"], ["u", "u", "v"], [1, 1, 1], n_resamples=50)
    assert ci.low is None and ci.high is None
    assert ci.dropped == 50 and ci.reason == REASON_ALL_RESAMPLES_UNDEFINED
    ci = bootstrap_alpha_ci([], [], [], n_resamples=50)
    assert ci.low is None and ci.reason == REASON_NO_ITEMS


def test_bootstrap_is_deterministic_by_seed():
    groups, units, values = make_rated_items(np.random.default_rng(2), 30)
    first = bootstrap_alpha_ci(groups, units, values, n_resamples=300, seed=7)
    again = bootstrap_alpha_ci(groups, units, values, n_resamples=300, seed=7)
    other = bootstrap_alpha_ci(groups, units, values, n_resamples=300, seed=8)
    assert first == again and first != other
    # Item order in the input does not matter: items are resampled sorted by id.
    perm = np.random.default_rng(0).permutation(len(groups))
    shuffled = bootstrap_alpha_ci(groups[perm], units[perm], values[perm], n_resamples=300, seed=7)
    assert shuffled.low == pytest.approx(first.low) and shuffled.high == pytest.approx(first.high)


def test_bootstrap_ratio_ci_equals_loop_reference_and_counts_dropped():
    rng = np.random.default_rng(9)
    num = rng.integers(0, 4, 12).astype(float)
    den = num + rng.integers(0, 5, 12)
    den[:6] = 0
    num[:6] = 0
    with np.errstate(all="raise"):
        ci = bootstrap_ratio_ci(num, den, n_resamples=500, seed=3)
    idx = np.random.default_rng(3).integers(0, 12, size=(500, 12))
    stats = []
    for row in idx:
        bottom = sum(den[j] for j in row)
        stats.append(None if bottom == 0 else sum(num[j] for j in row) / bottom)
    low, high, dropped = percentile_or_none(stats)
    assert ci.low == pytest.approx(low, abs=TIGHT) and ci.high == pytest.approx(high, abs=TIGHT)
    assert ci.dropped == dropped
    assert bootstrap_ratio_ci(num, den, n_resamples=500, seed=3) == ci


def test_bootstrap_ratio_ci_undefined():
    ci = bootstrap_ratio_ci([0, 0], [0, 0], n_resamples=20)
    assert ci.low is None and ci.dropped == 20 and ci.reason == REASON_ALL_RESAMPLES_UNDEFINED
    ci = bootstrap_ratio_ci([], [], n_resamples=20)
    assert ci.low is None and ci.reason == REASON_NO_ITEMS
    with pytest.raises(ValueError):
        bootstrap_ratio_ci([1], [1], n_resamples=0)


def test_bootstrap_alpha_diff_ci_equals_loop_reference():
    rng = np.random.default_rng(21)
    g1, u1, v1 = make_rated_items(rng, 15)
    g2, u2, v2 = make_rated_items(rng, 18)
    cats = [0, 1, 2]
    before = coincidence_by_group(g1, u1, v1, categories=cats)
    after = coincidence_by_group(g2, u2, v2, categories=cats)
    ci = bootstrap_alpha_diff_ci(before, after, n_resamples=150, seed=0)

    def per_item(groups, units, values):
        out = defaultdict(list)
        for g, u, v in zip(groups.tolist(), units.tolist(), values.tolist(), strict=True):
            out[g].append((u, v))
        return [out[k] for k in sorted(out)]

    items1, items2 = per_item(g1, u1, v1), per_item(g2, u2, v2)
    draw = np.random.default_rng(0)
    idx1 = draw.integers(0, len(items1), size=(150, len(items1)))
    idx2 = draw.integers(0, len(items2), size=(150, len(items2)))
    diffs = []
    for r1, r2 in zip(idx1, idx2, strict=True):
        a1 = slow_alpha_agreement([((c, u), v) for c, p in enumerate(r1) for u, v in items1[p]])
        a2 = slow_alpha_agreement([((c, u), v) for c, p in enumerate(r2) for u, v in items2[p]])
        diffs.append(None if a1[0] is None or a2[0] is None else a2[0] - a1[0])
    low, high, dropped = percentile_or_none(diffs)
    assert ci.low == pytest.approx(low, abs=TIGHT) and ci.high == pytest.approx(high, abs=TIGHT)
    assert ci.dropped == dropped
    with pytest.raises(ValueError, match="categories"):
        other = coincidence_by_group(g2, u2, v2, categories=[0, 1, 2, 3])
        bootstrap_alpha_diff_ci(before, other, n_resamples=5)


# --------------------------------------------------------------------------------------
# Proportions and control limits
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 13, 100, 2500])
def test_wilson_matches_statsmodels(n):
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        low, high = wilson_interval(k, n)
        ref_low, ref_high = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert low == pytest.approx(ref_low, abs=1e-12)
        assert high == pytest.approx(ref_high, abs=1e-12)
        assert 0.0 <= low <= k / n <= high <= 1.0


def test_wilson_undefined_and_invalid():
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


@pytest.mark.parametrize(
    ("k1", "n1", "k2", "n2"),
    [(5, 50, 12, 60), (0, 20, 3, 25), (10, 10, 4, 30), (1, 1, 0, 1), (40, 400, 40, 400)],
)
def test_newcombe_and_ztest_match_statsmodels(k1, n1, k2, n2):
    res = newcombe_diff_ci(k1, n1, k2, n2)
    # statsmodels reports p1 - p2; ours is second minus first, so swap the samples.
    ref_low, ref_high = confint_proportions_2indep(k2, n2, k1, n1, method="newcomb")
    assert res.diff == pytest.approx(k2 / n2 - k1 / n1, abs=1e-15)
    assert res.low == pytest.approx(ref_low, abs=1e-12)
    assert res.high == pytest.approx(ref_high, abs=1e-12)
    assert res.low <= res.diff <= res.high
    test = two_proportion_ztest(k1, n1, k2, n2)
    ref_z, ref_p = proportions_ztest([k2, k1], [n2, n1])
    assert test.z == pytest.approx(ref_z, abs=1e-12)
    assert test.p_value == pytest.approx(ref_p, abs=1e-12)


def test_newcombe_and_ztest_undefined():
    assert newcombe_diff_ci(0, 0, 1, 2) is None
    assert two_proportion_ztest(0, 0, 1, 2) is None
    assert two_proportion_ztest(0, 10, 0, 20) is None  # pooled p = 0
    assert two_proportion_ztest(10, 10, 20, 20) is None  # pooled p = 1
    assert two_proportion_ztest(1, 10, 9, 10).z > 0


def test_p_chart_limits_by_hand():
    errors = [5, 6, 30, 0, 0]
    totals = [100, 100, 100, 100, 0]
    chart = p_chart_limits(errors, totals)
    p_bar = 41 / 400
    assert chart.center == pytest.approx(p_bar)
    spread = 3 * math.sqrt(p_bar * (1 - p_bar) / 100)
    np.testing.assert_allclose(chart.ucl[:4], p_bar + spread)
    np.testing.assert_allclose(chart.lcl[:4], max(0.0, p_bar - spread))
    np.testing.assert_allclose(chart.p[:4], [0.05, 0.06, 0.30, 0.0])
    assert chart.swing == [None, None, "up", "down", None]
    assert np.isnan(chart.p[4]) and np.isnan(chart.ucl[4])
    assert chart.reason is None


def test_p_chart_limits_clip_and_no_units():
    chart = p_chart_limits([1, 0], [2, 3])
    assert np.all(chart.lcl >= 0) and np.all(chart.ucl <= 1)
    empty = p_chart_limits([0, 0], [0, 0])
    assert empty.center is None and empty.reason == REASON_NO_UNITS
    assert empty.swing == [None, None]


def test_iou_of_boxes_near_the_float_maximum_is_finite():
    """Coordinates that overflow (x + w beyond 1.8e308) give IoU 0, not nan, and no
    numpy warning: the matching and every comparison stay defined."""
    import warnings

    from metrics.derived import _iou_elementwise

    huge = np.array([[1e308, 0.0, 1.7e308, 10.0], [-1.7e308, -1.7e308, 1.7e308, 1.7e308]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = ag.box_iou(huge, huge)
        pairwise = _iou_elementwise(huge, huge)
    assert np.isfinite(full).all() and ((full >= 0) & (full <= 1)).all()
    assert np.isfinite(pairwise).all()
    assert ag.box_iou([[0, 0, 10, 10]], [[5, 0, 10, 10]])[0, 0] == pytest.approx(1 / 3)
