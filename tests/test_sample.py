import hashlib
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics.sample import in_sample, in_sample_one, sample_score, sample_scores


def reference_score(item_id: str, salt: str) -> float:
    digest = hashlib.sha256((salt + item_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


IDS = [f"img-{i:06d}" for i in range(2000)] + ["", "café-ß", "画像-7", "😀", "a b\tc"]


def test_score_matches_the_formula_exactly():
    for salt in ["", "demo", "sälz 🧂"]:
        expected = [reference_score(i, salt) for i in IDS]
        assert [sample_score(i, salt) for i in IDS] == expected
        assert sample_scores(IDS, salt).tolist() == expected


def test_score_known_value():
    # sha256("demoimg-000123") starts b0bc6eb4d2c9b934 (checked with `sha256sum`)
    assert sample_score("img-000123", "demo") == 0xB0BC6EB4D2C9B934 / 2**64
    assert sample_score("img-000123", "demo") == pytest.approx(0.6903752509559017)


def test_membership_is_score_below_rate():
    rate = 0.3
    member = in_sample(IDS, rate=rate, salt="demo")
    assert member.dtype == np.bool_ and member.shape == (len(IDS),)
    assert member.tolist() == [reference_score(i, "demo") < rate for i in IDS]
    assert [in_sample_one(i, rate=rate, salt="demo") for i in IDS] == member.tolist()


def test_rate_zero_and_one():
    assert not in_sample(IDS, rate=0.0, salt="s").any()
    assert in_sample(IDS, rate=1.0, salt="s").all()
    assert not in_sample_one("img-1", rate=0, salt="s")
    assert in_sample_one("img-1", rate=1, salt="s")


def test_pinned_always_in():
    pinned = ["img-000005", "not-in-list"]
    member = in_sample(IDS, rate=0.0, salt="s", pinned=pinned)
    assert member.tolist() == [i == "img-000005" for i in IDS]
    assert in_sample_one("not-in-list", rate=0.0, salt="s", pinned=pinned)
    # pinning adds to the hashed sample, it never removes from it
    base = in_sample(IDS, rate=0.2, salt="s")
    with_pins = in_sample(IDS, rate=0.2, salt="s", pinned=set(pinned))
    assert (with_pins >= base).all()
    assert with_pins.sum() == base.sum() + (not base[IDS.index("img-000005")])


def test_salt_changes_the_sample():
    a = in_sample(IDS, rate=0.5, salt="one")
    b = in_sample(IDS, rate=0.5, salt="two")
    assert (a != b).any()


def test_larger_rate_is_a_superset():
    small = in_sample(IDS, rate=0.1, salt="s")
    large = in_sample(IDS, rate=0.4, salt="s")
    assert (large >= small).all()


def test_empty_input():
    out = in_sample([], rate=0.5, salt="s")
    assert out.dtype == np.bool_ and out.shape == (0,)


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), "0.1", None, True])
def test_bad_rate(rate):
    with pytest.raises(ValueError):
        in_sample(["a"], rate=rate, salt="s")
    with pytest.raises(ValueError):
        in_sample_one("a", rate=rate, salt="s")


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5])
def test_share_is_close_to_rate(rate):
    n = 100_000
    ids = [f"item-{i}" for i in range(n)]
    share = in_sample(ids, rate=rate, salt="demo").mean()
    sigma = math.sqrt(rate * (1 - rate) / n)
    assert abs(share - rate) < 3 * sigma


def test_accepts_numpy_and_generators():
    expected = in_sample(IDS, rate=0.5, salt="s")
    assert (in_sample(np.array(IDS), rate=0.5, salt="s") == expected).all()
    assert (in_sample(iter(IDS), rate=0.5, salt="s") == expected).all()


ids_strategy = st.lists(st.text(max_size=12), max_size=30)


@settings(max_examples=200, deadline=None)
@given(ids=ids_strategy, others=ids_strategy, rate=st.floats(0, 1), salt=st.text(max_size=8),
       pinned=st.lists(st.text(max_size=12), max_size=5))
def test_other_items_never_change_membership(ids, others, rate, salt, pinned):
    alone = in_sample(ids, rate=rate, salt=salt, pinned=pinned)
    mixed = others[: len(others) // 2] + ids + others[len(others) // 2:]
    together = in_sample(mixed, rate=rate, salt=salt, pinned=pinned)
    offset = len(others) // 2
    assert together[offset: offset + len(ids)].tolist() == alone.tolist()
    assert alone.tolist() == [in_sample_one(i, rate=rate, salt=salt, pinned=pinned) for i in ids]
    assert in_sample(list(reversed(ids)), rate=rate, salt=salt,
                     pinned=pinned).tolist() == alone.tolist()[::-1]


no_surrogates = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)


@settings(max_examples=300, deadline=None)
@given(ids=st.lists(no_surrogates, max_size=30, unique=True), salt=no_surrogates,
       rate=st.floats(0, 1), pins=st.lists(no_surrogates, max_size=3))
def test_the_derived_sample_scores_items_in_duckdb_as_in_python(ids, salt, rate, pins):
    """`derived._build_sample` scores with `SCORE_SQL`: the same doubles and the same
    members as `in_sample`, for any ids, salt, rate and pins."""
    import duckdb

    from metrics import derived
    from metrics.config import SampleConfig
    from metrics.sample import SCORE_SQL

    con = duckdb.connect()
    con.execute("CREATE TABLE annotations (item_id VARCHAR)")
    if ids:
        con.executemany("INSERT INTO annotations VALUES (?)", [[i] for i in ids + ids[:3]])
    got = dict(con.execute(f"SELECT item_id, {SCORE_SQL} FROM annotations",
                           {"salt": salt}).fetchall())
    assert got == dict(zip(ids, sample_scores(ids, salt).tolist(), strict=True))

    class Config:
        sample = SampleConfig(rate=rate, salt=salt, pinned=tuple(pins))

    derived._build_sample(con, Config)
    members = [r[0] for r in con.execute("SELECT item_id FROM d_sample_items").fetchall()]
    member = in_sample(ids, rate=rate, salt=salt, pinned=pins)
    assert members == sorted(i for i, m in zip(ids, member.tolist(), strict=True) if m)
