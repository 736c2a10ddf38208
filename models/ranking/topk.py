"""Top-k selection kernels: exact, and deterministic under ties.

``np.argpartition`` keeps an arbitrary subset of the values tied at its cut;
the rankers' lists must not depend on it (nor on how users are batched), so
these kernels break ties by row, and sort small integer keys with numpy's
radix sort.
"""

from __future__ import annotations

import numpy as np

_RADIX_BOUND = 1 << 16  # keys below this are sorted by numpy's O(n) radix sort (kind="stable" on uint16)


def _stable_order(keys: np.ndarray, bound: int) -> np.ndarray:
    """``np.argsort(keys, kind="stable")`` for non-negative ints below ``bound`` (radix sort when they fit 16 bits).

    >>> _stable_order(np.array([2, 0, 2, 1]), bound=3).tolist()
    [1, 3, 0, 2]
    """
    if bound <= 256:
        keys = keys.astype(np.uint8)  # one radix pass instead of two
    elif bound <= _RADIX_BOUND:
        keys = keys.astype(np.uint16)
    return np.argsort(keys, kind="stable")


def _best_k(V: np.ndarray, k: int, ids) -> np.ndarray:
    """Column indices of the ``k`` best values of each row of ``V``; of values tied at the cut,
    those with the lowest ids (``ids(row_indices, column_indices)``) are kept.

    ``np.argpartition`` alone keeps an arbitrary subset of such ties, which
    could depend on a row's padding; this makes the choice a function of the
    candidates only (``-inf`` ties are left alone: they are never returned).

    >>> V = np.array([[1.0, 3.0, 2.0, 2.0, 2.0]])
    >>> sorted(_best_k(V, 3, lambda i, j: -j)[0].tolist())  # ids favour the last columns
    [1, 3, 4]
    """
    m, w = V.shape
    if w <= k:
        return np.broadcast_to(np.arange(w), (m, w))
    idx = np.argpartition(V, w - k, axis=1)[:, w - k:]
    vals = np.take_along_axis(V, idx, axis=1)
    T = vals.min(axis=1)
    tied = ((V == T[:, None]).sum(axis=1) > (vals == T[:, None]).sum(axis=1)) & (T > -np.inf)
    for i in np.flatnonzero(tied).tolist():
        row = V[i]
        above = np.flatnonzero(row > T[i])
        at = np.flatnonzero(row == T[i])
        at = at[np.argsort(ids(np.full(len(at), i), at), kind="stable")[: k - len(above)]]
        idx[i] = np.concatenate((above, at))
    return idx


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Rows of the ``n`` best finite scores, best first; ties go to the lower row.

    O(len(scores)): one partition finds the ``n``-th best value; every row
    above it is kept, and of the rows equal to it the lowest ones fill the
    rest (a partition alone would keep an arbitrary subset of them).

    >>> top_n(np.array([0.1, 0.5, -np.inf, 0.5, 0.2]), 3).tolist()
    [1, 3, 4]
    >>> top_n(np.array([0.0, 1.0, 0.0, 0.0, 1.0]), 3).tolist()  # of the tied 0.0s, row 0
    [1, 4, 0]
    >>> top_n(np.array([-np.inf, 2.0]), 5).tolist()  # padding is never a recommendation
    [1]
    """
    k = min(n, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if not np.isfinite(scores.max()) and np.isfinite(scores).any():  # +inf or NaN: never returned
        scores = np.where(np.isfinite(scores), scores, -np.inf)
    if k < len(scores):
        kth = -np.partition(-scores, k - 1)[k - 1]
        cand = np.flatnonzero(scores > kth)
        if kth > -np.inf:  # (padding at the cut is never returned)
            tied = np.flatnonzero(scores == kth)[: k - len(cand)]  # ascending rows: the lowest win
            cand = np.concatenate((cand, tied))
    else:
        cand = np.arange(len(scores))
    cand = cand[np.isfinite(scores[cand])]
    return cand[np.lexsort((cand, -scores[cand]))]
