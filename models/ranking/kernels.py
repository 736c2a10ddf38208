"""Compiled loops of the ranker: each customer's co-visitation neighbourhood, summed and cut in one pass.

The first stage sums, per customer, the neighbour rows of the customer's
recent items and keeps the strongest sums (``neighbor_candidates``). In
numpy that is two stable sorts of every entry, a segmented sum and a
per-customer partition; this loop reads each entry twice (count, then
place) and sums each (customer, item) group the way ``np.add.reduceat``
sums it (its first value plus numpy's pairwise sum of the rest), so the
scores are the floats :meth:`~models.covisit.CoVisitation.score_sparse`
gives, bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np

from models.groups import strongest_in_groups

__all__ = ["Scratch", "compile_now", "covisit_neighbourhoods", "reduceat_sum"]

_BLOCK = 128  # numpy's PW_BLOCKSIZE


@numba.njit(cache=True, nogil=True)
def _pairwise(a, lo, n):  # pragma: no cover - (compiled: coverage cannot see inside)
    """numpy's pairwise sum of ``a[lo:lo + n]`` (``pairwise_sum_DOUBLE``: the same additions in the same order)."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    if n <= _BLOCK:
        r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
        r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
        i = 8
        while i < n - (n % 8):
            r0 += a[lo + i]
            r1 += a[lo + i + 1]
            r2 += a[lo + i + 2]
            r3 += a[lo + i + 3]
            r4 += a[lo + i + 4]
            r5 += a[lo + i + 5]
            r6 += a[lo + i + 6]
            r7 += a[lo + i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[lo + i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise(a, lo, n2) + _pairwise(a, lo + n2, n - n2)


@numba.njit(cache=True, nogil=True)
def reduceat_sum(a, lo, n):  # pragma: no cover - (compiled)
    """``np.add.reduceat``'s sum of the segment ``a[lo:lo + n]`` (``n >= 1``): its first value plus
    the pairwise sum of the rest."""
    if n == 1:
        return a[lo]
    return a[lo] + _pairwise(a, lo + 1, n - 1)


class Scratch:
    """Work arrays of :func:`covisit_neighbourhoods`, kept between calls: per item (left zero by the
    loop) and per entry (grown as calls need), so that a call does not map fresh pages each time."""

    def __init__(self):
        self.per_item: tuple[np.ndarray, ...] = ()
        self.per_entry: tuple[np.ndarray, ...] = ()

    def arrays(self, n_items: int, n_entries: int) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        if not self.per_item or len(self.per_item[0]) != n_items:
            self.per_item = (np.zeros(n_items, dtype=np.int64), np.zeros(n_items), np.zeros(n_items),
                             np.zeros(n_items, dtype=np.int64))
        if not self.per_entry or len(self.per_entry[0]) < n_entries:
            n = max(n_entries, 2 * len(self.per_entry[0]) if self.per_entry else 1024)
            self.per_entry = (np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64), np.empty(n),
                              np.empty(n, dtype=np.int64), np.empty(n), np.empty(n, dtype=np.int64))
        return self.per_item, self.per_entry


def covisit_neighbourhoods(scratch: Scratch, n_items: int, hist_first, entry_first, entries, hist_weight, columns,
                           values, col_scale, cap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each customer's co-visitation sums, scaled and cut to its ``cap`` strongest.

    Customer ``u``'s history items are ``hist_first[u]:hist_first[u + 1]``
    (in history order); item ``p``'s neighbour entries are the slab positions
    ``entries[entry_first[p]:entry_first[p + 1]]``, each worth
    ``values[e] * hist_weight[p]``. Per (customer, column) the worths are
    summed in that order as ``np.add.reduceat`` sums them, then multiplied by
    ``col_scale[column]`` (if ``col_scale`` is not empty); with ``cap >= 0``
    a customer keeps its ``cap`` largest sums, of equal ones the lower
    columns. Returns ``(customer, column, sum)`` sorted by customer, then
    column (columns below ``n_items``).

    One pass sums each group as it comes: its first worth, and the others
    from 0 in order, which is numpy's pairwise sum while they are fewer than
    8; the rare group with more is summed again from its worths.
    """
    per_item, per_entry = scratch.arrays(n_items, len(entries))
    n = _neighbourhoods(hist_first, entry_first, entries, hist_weight, columns, values, col_scale, cap, *per_item,
                        *per_entry)
    return per_entry[0][:n].copy(), per_entry[1][:n].copy(), per_entry[2][:n].copy()


def compile_now() -> None:
    """Compile the loops for the argument types the ranker passes (or load them from numba's cache), so
    that a worker pays for it as it starts, not in its first batch (several seconds uncached)."""
    covisit_neighbourhoods(Scratch(), 2, np.array([0, 1]), np.array([0, 1]), np.array([0]), np.ones(1),
                           np.zeros(1, dtype=np.int32), np.ones(1), np.ones(2), 1)
    strongest_in_groups(np.zeros(2, dtype=np.int64), np.ones(2), 1)


@numba.njit(cache=True, nogil=True)
def _neighbourhoods(hist_first, entry_first, entries, hist_weight, columns, values, col_scale, cap,
                    count, first, rest, slot, out_u, out_c, out_v, touched, sums,
                    long_groups):  # pragma: no cover - (compiled)
    """:func:`covisit_neighbourhoods` into ``out_u``, ``out_c``, ``out_v``: how many it wrote."""
    # Columns reached, one bit each: read word by word, they come out in ascending order (no sort).
    bits = np.zeros((len(count) + 63) // 64, dtype=np.uint64)
    n_out = 0
    scaled = len(col_scale) > 0
    for u in range(len(hist_first) - 1):
        lo_word, hi_word = len(bits), -1
        n_long = 0
        for p in range(hist_first[u], hist_first[u + 1]):
            w = hist_weight[p]
            for q in range(entry_first[p], entry_first[p + 1]):
                e = entries[q]
                c = columns[e]
                n = count[c]
                if n == 0:
                    first[c] = values[e] * w
                    word = c >> 6
                    bits[word] |= np.uint64(1) << np.uint64(c & 63)
                    lo_word, hi_word = min(lo_word, word), max(hi_word, word)
                else:
                    rest[c] += values[e] * w
                    if n == 8:
                        long_groups[n_long] = c
                        n_long += 1
                count[c] = n + 1
        if n_long:
            _sum_long_groups(hist_first[u], hist_first[u + 1], entry_first, entries, hist_weight, columns, values,
                             rest, long_groups[:n_long], slot)
        n_touched = 0
        for word in range(lo_word, hi_word + 1):
            b = bits[word]
            bits[word] = 0
            while b:
                low = b & (~b + np.uint64(1))  # the lowest set bit
                c = (word << 6) + _bit_index(low)
                b ^= low
                s = first[c] if count[c] == 1 else first[c] + rest[c]
                if scaled:
                    s *= col_scale[c]
                touched[n_touched] = c
                sums[n_touched] = s
                n_touched += 1
                count[c] = 0
                first[c] = 0.0
                rest[c] = 0.0
        if cap == 0:
            continue
        kth = -np.inf
        room = n_touched
        if 0 < cap < n_touched:
            kth = np.partition(sums[:n_touched], n_touched - cap)[n_touched - cap]
            room = cap
            for t in range(n_touched):
                if sums[t] > kth:
                    room -= 1
        for t in range(n_touched):  # (ascending columns: of sums equal to the cut, the lower ones)
            if sums[t] > kth or (sums[t] == kth and room > 0):
                if sums[t] == kth:
                    room -= 1
                out_u[n_out] = u
                out_c[n_out] = touched[t]
                out_v[n_out] = sums[t]
                n_out += 1
    return n_out


@numba.njit(cache=True, nogil=True)
def _sum_long_groups(lo, hi, entry_first, entries, hist_weight, columns, values, rest, groups,
                     slot):  # pragma: no cover - (compiled)
    """``rest`` of the ``groups`` with 9 worths or more: numpy's pairwise sum of all but their first.
    (``slot``: per-column int scratch, zero on entry and left zero.)"""
    width = hi - lo  # a group has at most one worth per history item
    worths = np.empty(len(groups) * width)
    filled = np.zeros(len(groups), dtype=np.int64)
    for g in range(len(groups)):
        slot[groups[g]] = g + 1
    for p in range(lo, hi):
        w = hist_weight[p]
        for q in range(entry_first[p], entry_first[p + 1]):
            e = entries[q]
            g = slot[columns[e]] - 1
            if g >= 0:
                worths[g * width + filled[g]] = values[e] * w
                filled[g] += 1
    for g in range(len(groups)):
        rest[groups[g]] = _pairwise(worths, g * width + 1, filled[g] - 1)
        slot[groups[g]] = 0


@numba.njit(cache=True, nogil=True)
def _bit_index(low):  # pragma: no cover - (compiled)
    """Position of the one set bit of ``low`` (a binary search over halves)."""
    i = 0
    half = 32
    while half:
        if low >> np.uint64(half):
            i += half
            low >>= np.uint64(half)
        half >>= 1
    return i
