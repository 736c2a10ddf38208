"""Kernels over flat arrays cut into groups (one group per customer, usually).

Batched ranking keeps many customers' candidates in one flat array sorted by
customer; these find where each group starts and keep each group's ``k``
best entries without sorting the groups. Ties are broken by position (the
entry earlier in its group wins), so a group's result never depends on the
other groups of the batch.
"""

from __future__ import annotations

import numpy as np

from models.covisit import concat_ranges
from models.sets import unique_sorted

__all__ = ["firsts", "run_starts", "strongest_in_groups"]


def firsts(lengths: np.ndarray) -> np.ndarray:
    """Where each of consecutive groups of ``lengths`` starts, and where the last one ends.

    >>> firsts(np.array([2, 0, 3])).tolist()
    [0, 2, 2, 5]
    """
    return np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)


def run_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Index of the first element of each run of equal values in ``sorted_keys``.

    >>> run_starts(np.array([3, 3, 5, 7, 7, 7])).tolist()
    [0, 2, 3]
    """
    if not len(sorted_keys):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))


def strongest_in_groups(groups: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """Indices (ascending) of the ``k`` largest ``values`` of each group.

    ``groups`` is sorted; of values tied at a group's cut, the earliest
    entries are kept. Groups of at most ``k`` entries are kept whole.
    O(n): each large group's ``k``-th best value is found by a partition of
    a padded matrix of groups of similar sizes (within a factor of 2, so
    little padding is sorted), not by sorting the groups.

    >>> g = np.array([0, 0, 0, 0, 1, 1, 2])
    >>> v = np.array([1.0, 3.0, 2.0, 2.0, 5.0, 4.0, 9.0])
    >>> strongest_in_groups(g, v, 2).tolist()  # group 0: 3.0, then the first of the tied 2.0s
    [1, 2, 4, 5, 6]
    >>> strongest_in_groups(g, v, 1).tolist()
    [1, 4, 6]
    """
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if len(groups) <= k:
        return np.arange(len(groups))
    if groups[0] == groups[-1]:  # one group (a one-customer call): a stable sort is cheaper than the padding
        return np.sort(np.argsort(-values, kind="stable")[:k])
    starts = run_starts(groups)
    counts = np.diff(np.append(starts, len(groups)))
    big = counts > k
    if not big.any():
        return np.arange(len(groups))
    first, n = starts[big], counts[big]
    m = len(n)
    sel = concat_ranges(first, n)
    line = np.repeat(np.arange(m), n)
    vs = values[sel]
    kth = np.empty(m)
    size_class = np.frexp(n.astype(np.float64))[1]
    classes = unique_sorted(size_class)
    for c in classes.tolist():
        members = np.flatnonzero(size_class == c) if len(classes) > 1 else np.arange(m)
        fm, nm = first[members], n[members]
        w = int(nm.max())
        P = np.full((len(members), w), -np.inf)
        at = concat_ranges(fm, nm)
        P[np.repeat(np.arange(len(members)), nm), at - np.repeat(fm, nm)] = values[at]
        kth[members] = np.partition(P, w - k, axis=1)[:, w - k]
    T = kth[line]
    above = vs > T
    # Of the entries tied with the k-th best, the earliest fill the places left.
    tied = vs == T
    room = k - np.bincount(line[above], minlength=m)
    n_tied = np.bincount(line[tied], minlength=m)
    rank = np.cumsum(tied) - (np.cumsum(n_tied) - n_tied)[line]  # 1-based among the group's ties
    keep = np.ones(len(groups), dtype=bool)
    keep[sel] = above | (tied & (rank <= room[line]))
    return np.flatnonzero(keep)
