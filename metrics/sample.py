"""The stable sample: which items are double-annotated and measured for M3.

An item is in the sample when its score is below ``rate``, or when it is pinned::

    score(item_id) = int.from_bytes(sha256((salt + item_id).encode("utf-8"))[:8], "big") / 2**64

Membership depends only on (item_id, salt, rate, pinned), never on which other items
exist, so the sample does not change as data grows, and a larger rate gives a superset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable

import numpy as np

__all__ = ["SCORE_SQL", "in_sample", "in_sample_one", "sample_score", "sample_scores"]

_SCALE = 2**64


def sample_score(item_id: str, salt: str) -> float:
    """The item's score in [0, 1): the first 8 bytes of SHA-256(salt + item_id) / 2**64.

    Parameters
    ----------
    item_id : str
    salt : str
        The ``[sample] salt``; a different salt draws an independent sample.

    Returns
    -------
    float

    Raises
    ------
    UnicodeEncodeError
        When ``salt + item_id`` is not encodable as UTF-8 (a lone surrogate).
    """
    digest = hashlib.sha256((salt + item_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def sample_scores(item_ids: Iterable[str], salt: str) -> np.ndarray:
    """:func:`sample_score` of each id, as a float64 array of shape (n,)."""
    prefix = hashlib.sha256(salt.encode("utf-8"))
    out = []
    for item_id in item_ids:
        # sha256(salt + id) == sha256 state after salt, updated with id: hash the salt once
        h = prefix.copy()
        h.update(item_id.encode("utf-8"))
        out.append(int.from_bytes(h.digest()[:8], "big") / _SCALE)
    return np.asarray(out, dtype=np.float64)


def in_sample(
    item_ids: Iterable[str],
    *,
    rate: float,
    salt: str,
    pinned: Collection[str] = (),
) -> np.ndarray:
    """Whether each item is in the stable sample.

    Parameters
    ----------
    item_ids : sequence of str, shape (n,)
    rate : float
        Share of items sampled, in [0, 1]. 0 samples only the pinned items; 1 samples
        every item (even one whose score rounds to 1.0 as a float).
    salt : str
    pinned : collection of str
        Items always in the sample (e.g. gold items).

    Returns
    -------
    numpy.ndarray of bool, shape (n,)
        ``score < rate or item_id in pinned``, element-wise.

    Raises
    ------
    ValueError
        When ``rate`` is not a number in [0, 1].
    """
    rate = _check_rate(rate)
    ids = item_ids if isinstance(item_ids, list | tuple) else list(item_ids)
    if rate >= 1.0:
        return np.ones(len(ids), dtype=bool)
    member = sample_scores(ids, salt) < rate
    if pinned:
        pinned_set = pinned if isinstance(pinned, set | frozenset) else set(pinned)
        member |= np.fromiter((i in pinned_set for i in ids), dtype=bool, count=len(ids))
    return member


def in_sample_one(
    item_id: str, *, rate: float, salt: str, pinned: Collection[str] = ()
) -> bool:
    """Whether one item is in the stable sample; see :func:`in_sample`."""
    rate = _check_rate(rate)
    if rate >= 1.0 or item_id in pinned:
        return True
    return sample_score(item_id, salt) < rate


#: :func:`sample_score` of the column ``item_id`` in DuckDB, with the salt bound as ``$salt``:
#: the first 16 hex digits of SHA-256 as an unsigned 64-bit integer, to the nearest double
#: (as Python's ``int / 2**64`` rounds: the division by a power of two is exact).
SCORE_SQL = ("(('0x' || left(sha256($salt || item_id), 16))::UBIGINT::DOUBLE"
             " / 18446744073709551616.0)")


def _check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float | np.floating | np.integer):
        raise ValueError(f"rate must be a number in [0, 1], got {rate!r}")
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:  # also rejects NaN
        raise ValueError(f"rate must be a number in [0, 1], got {rate!r}")
    return rate
