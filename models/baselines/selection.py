"""Selection kernels over flat per-user entries: the baselines rank many users in a few numpy passes.

Entries of many users live in flat arrays with a ``user`` array beside them
(non-decreasing where a kernel says so); every kernel is exact and breaks
ties by catalogue row, as :func:`~models.ranking.topk.top_n` does.
"""

from __future__ import annotations

import numpy as np

from models.groups import concat_ranges, within
from models.ranking.topk import top_n
from models.sets import member

__all__ = ["NO_ROWS", "Order", "best_of", "first_allowed", "position_in_group", "recent_first"]

NO_ROWS = np.zeros(0, dtype=np.int64)


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
    return within(counts), int(counts.max(initial=0))


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
