"""Selection kernels over flat per-user entries: the baselines rank many users in a few numpy passes.

Entries of many users live in flat arrays with a ``user`` array beside them
(non-decreasing where a kernel says so); every kernel is exact and breaks
ties by catalogue row, as :func:`~models.ranking.topk.top_n` does.
"""

from __future__ import annotations

import numpy as np

from models.covisit import concat_ranges
from models.ranking.topk import _best_k, top_n
from models.sets import member

__all__ = ["NO_ROWS", "SLACK", "Order", "best_of", "best_per_user", "first_allowed", "group_max", "kth_floor",
           "popcount", "position_in_group", "recent_first"]

NO_ROWS = np.zeros(0, dtype=np.int64)
# Relative slack on bounds: they are summed in another order than the scores.
SLACK = 1e-9
_RUNGS = 48  # thresholds of kth_floor, a quarter of an octave apart (the last: zero)


class Order:
    """Catalogue rows by a score, best first, ties to the lower row; blocked rows left out.

    Computed once per call, only as long as asked (:func:`top_n`: linear in the catalogue).

    >>> Order(np.array([1.0, 3.0, 3.0, 2.0]), np.array([False, True, False, False])).prefix(2).tolist()
    [2, 3]
    """

    def __init__(self, scores: np.ndarray, blocked: np.ndarray | None):
        self.scores, self.blocked = scores, blocked
        self._rows = NO_ROWS
        self._all = False  # _rows holds every row there is

    def prefix(self, m: int) -> np.ndarray:
        """The first ``m`` rows of the order (fewer if there are not as many)."""
        if m > len(self._rows) and not self._all:
            masked = self.scores
            if self.blocked is not None:
                masked = masked.copy()
                masked[self.blocked] = -np.inf
            asked = max(m, 2 * len(self._rows), 64)
            self._rows = top_n(masked, asked)
            self._all = len(self._rows) < asked
        return self._rows[:m]


def position_in_group(user: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Position of each entry among its user's entries (``user`` non-decreasing), and the most any user has.

    >>> [a.tolist() for a in position_in_group(np.array([0, 0, 2, 2, 2]), 3)[:1]]
    [[0, 1, 0, 1, 2]]
    """
    counts = np.bincount(user, minlength=n_users)
    return np.arange(len(user)) - np.repeat(np.cumsum(counts) - counts, counts), int(counts.max(initial=0))


def first_allowed(order: np.ndarray, need: np.ndarray, skip_user: np.ndarray, skip_rows: np.ndarray,
                  n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each user ``u``, the first ``need[u]`` rows of ``order`` that it does not skip.

    ``order`` must hold at least ``need[u]`` plus the number of rows ``u``
    skips (those it has); returns ``(user, rank, row)``, ranks from 0.

    >>> first_allowed(np.array([5, 2, 7, 1]), np.array([2, 3]), np.array([0]), np.array([2]), 10)
    (array([0, 0, 1, 1, 1]), array([0, 1, 0, 1, 2]), array([5, 7, 5, 2, 7]))
    """
    n_users = len(need)
    take = np.minimum(need + np.bincount(skip_user, minlength=n_users), len(order))
    user = np.repeat(np.arange(n_users), take)
    rows = order[concat_ranges(np.zeros(n_users, dtype=np.int64), take)]
    if len(skip_rows):
        keep = ~member(user * n_items + rows, np.sort(skip_user * n_items + skip_rows))
        user, rows = user[keep], rows[keep]
    rank, _ = position_in_group(user, n_users)
    sel = rank < need[user]
    return user[sel], rank[sel], rows[sel]


def group_max(user: np.ndarray, values: np.ndarray, n_users: int) -> np.ndarray:
    """Largest value per user (``user`` non-decreasing; ``-inf`` for users without values).

    >>> group_max(np.array([0, 0, 2]), np.array([1.0, 3.0, 2.0]), 3).tolist()
    [3.0, -inf, 2.0]
    """
    counts = np.bincount(user, minlength=n_users)
    out = np.full(n_users, -np.inf)
    has = counts > 0
    if has.any():
        out[has] = np.maximum.reduceat(values, (np.cumsum(counts) - counts)[has])
    return out


def kth_floor(user: np.ndarray, values: np.ndarray, n_users: int, k: np.ndarray) -> np.ndarray:
    """Per user, a lower bound of its ``k[u]``-th largest value, within a quarter of an octave of it.

    Values are non-negative (or ``-inf``: ignored) and ``user`` non-decreasing;
    ``-inf`` for a user with fewer than ``k[u]`` values. Counting values per
    rung of a ladder of thresholds below the user's largest value costs a few
    passes over them, where an exact order statistic needs a partition.

    >>> kth_floor(np.array([0, 0, 0, 1]), np.array([8.0, 1.0, 6.0, 3.0]), 2, np.array([2, 2])).round(3).tolist()
    [5.657, -inf]
    """
    out = np.full(n_users, -np.inf)
    real = values > -np.inf
    user, values = user[real], values[real]
    if not len(user):
        return out
    top = group_max(user, values, n_users)
    with np.errstate(divide="ignore", invalid="ignore"):
        rung = -4 * np.log2(values / top[user])
    rung[~(rung < _RUNGS - 1)] = _RUNGS - 1  # zeros (inf) and 0 / 0 (nan): the last rung
    rung = np.maximum(rung, 0).astype(np.int64)
    counts = np.bincount(user * _RUNGS + rung, minlength=n_users * _RUNGS).reshape(n_users, _RUNGS).cumsum(axis=1)
    enough = counts[:, -1] >= k
    at = np.argmax(counts >= k[:, None], axis=1)
    # Every value on rungs 0 .. at is above top * 2 ** (-(at + 1) / 4) (up to rounding: the slack).
    floor = top * np.exp2(-(at + 1) / 4) * (1 - SLACK)
    floor[at == _RUNGS - 1] = 0.0
    out[enough] = floor[enough]
    return out


def best_per_user(user: np.ndarray, cols: np.ndarray, scores: np.ndarray, n_users: int,
                  k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per user, its ``k[u]`` best entries, best first, ties to the lower column: ``(user, rank, entry)``.

    ``user`` must be non-decreasing; entries with a score of ``-inf`` are never chosen.

    >>> u, r, e = best_per_user(np.array([0, 0, 0, 1]), np.array([9, 4, 6, 2]),
    ...                         np.array([1.0, 2.0, 1.0, 3.0]), 2, np.array([2, 5]))
    >>> u.tolist(), r.tolist(), e.tolist()
    ([0, 0, 1], [0, 1, 0], [1, 2, 3])
    """
    pos, width = position_in_group(user, n_users)
    kk = min(int(k.max(initial=0)), width)
    if not kk:
        return NO_ROWS, NO_ROWS, NO_ROWS
    table = np.full((n_users, width), -np.inf)
    table[user, pos] = scores
    col = np.zeros((n_users, width), dtype=np.int64)
    col[user, pos] = cols
    entry = np.zeros((n_users, width), dtype=np.int64)
    entry[user, pos] = np.arange(len(user))
    best = _best_k(table, kk, lambda i, j: col[i, j])
    best_scores = np.take_along_axis(table, best, axis=1)
    order = np.lexsort((np.take_along_axis(col, best, axis=1), -best_scores), axis=-1)
    best = np.take_along_axis(best, order, axis=1)
    best_scores = np.take_along_axis(best_scores, order, axis=1)
    keep = (best_scores > -np.inf) & (np.arange(kk)[None, :] < k[:, None])
    users, ranks = np.nonzero(keep)
    return users, ranks, entry[users, best[users, ranks]]


def best_of(cols: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best of one user's entries, best first, ties to the lower column.

    >>> best_of(np.array([7, 3, 5]), np.array([1.0, 1.0, 2.0]), 2).tolist()
    [2, 1]
    """
    if k <= 0 or not len(cols):
        return NO_ROWS
    idx = np.arange(len(cols))
    if k < len(cols):
        kth = -np.partition(-scores, k - 1)[k - 1]
        above = np.flatnonzero(scores > kth)
        tied = np.flatnonzero(scores == kth)
        tied = tied[np.argsort(cols[tied], kind="stable")][: k - len(above)]
        idx = np.concatenate((above, tied))
    return idx[np.lexsort((cols[idx], -scores[idx]))]


def popcount(bits: np.ndarray) -> np.ndarray:
    """Set bits of each (non-negative) int64.

    >>> popcount(np.array([0, 5, 2**40 + 3])).tolist()
    [0, 2, 3]
    """
    b = bits.view(np.uint64) if bits.dtype == np.int64 else bits.astype(np.uint64)
    return np.unpackbits(b.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1, dtype=np.int64)


def recent_first(history) -> list[int]:
    """Distinct rows of a user's history, most recent first.

    >>> recent_first((4, 7, 4, 9))
    [9, 4, 7]
    """
    seen: set[int] = set()
    out = []
    for row in reversed(history):
        if row not in seen:
            seen.add(row)
            out.append(row)
    return out
