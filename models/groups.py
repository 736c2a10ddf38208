"""Kernels over flat arrays cut into groups (one group per customer, usually).

Batched ranking keeps many customers' candidates in one flat array sorted by
customer; these find where each group starts, number the entries within
their group, gather ranges of a slab and keep each group's ``k`` best
entries without sorting the groups. Ties are broken by position (the
entry earlier in its group wins), so a group's result never depends on the
other groups of the batch.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["concat_ranges", "firsts", "run_starts", "strongest_in_groups", "within"]


def firsts(lengths: np.ndarray) -> np.ndarray:
    """Where each of consecutive groups of ``lengths`` starts, and where the last one ends.

    >>> firsts(np.array([2, 0, 3])).tolist()
    [0, 2, 2, 5]
    """
    return np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)


def concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of ``arange(s, s + l)`` over ``zip(starts, lengths)``, without a Python loop.

    >>> concat_ranges(np.array([5, 0, 9]), np.array([2, 0, 3])).tolist()
    [5, 6, 9, 10, 11]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(np.asarray(starts, dtype=np.int64) - offsets, lengths) + np.arange(total)


def within(lengths: np.ndarray) -> np.ndarray:
    """Each element's position within its group, for consecutive groups of ``lengths``
    (:func:`concat_ranges` with every range starting at 0).

    >>> within(np.array([2, 0, 3])).tolist()
    [0, 1, 0, 1, 2]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)


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
    O(n): each large group's ``k``-th best value is found by a partition,
    in one compiled pass over the groups.

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
    out = np.empty(len(groups), dtype=np.int64)
    n = _strongest(np.asarray(groups, dtype=np.int64), np.asarray(values, dtype=np.float64), k, out)
    return out[:n]


@numba.njit(cache=True, nogil=True)
def _strongest(groups, values, k, out):  # pragma: no cover - (compiled: coverage cannot see inside)
    """:func:`strongest_in_groups` into ``out``: how many it wrote."""
    n_out = 0
    i = 0
    while i < len(groups):
        j = i + 1
        while j < len(groups) and groups[j] == groups[i]:
            j += 1
        if j - i <= k:
            for t in range(i, j):
                out[n_out] = t
                n_out += 1
        else:
            kth = np.partition(values[i:j], j - i - k)[j - i - k]
            room = k  # places left for values equal to the k-th best, after those above it
            for t in range(i, j):
                if values[t] > kth:
                    room -= 1
            for t in range(i, j):
                if values[t] > kth or (values[t] == kth and room > 0):
                    if values[t] == kth:
                        room -= 1
                    out[n_out] = t
                    n_out += 1
        i = j
    return n_out
