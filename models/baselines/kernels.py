"""Compiled loops of the co-occurrence baselines: each user's sums over every neighbour of its items.

A co-occurrence list sums, per user, the rows of the user's recent items:
tens of thousands of ``(column, value)`` entries per user once a shop's
rows are long. numpy can only sum them per user by sorting or by bounds on
what it did not read; a compiled loop reads every entry once, into a dense
accumulator, in the order the dense definition sums them
(:meth:`~models.baselines.CooccurrenceBaseline._scores`: history order,
``np.bincount``'s order), so its scores are those floats exactly.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["TIE", "rank_from_rows"]

#: Above every popularity tiebreak (``pop * 1e-9 / max pop`` is at most 1e-9 up to rounding).
TIE = 1.000001e-9


@numba.njit(cache=True, nogil=True)
def rank_from_rows(pair_first, pair_start, pair_len, pair_weight, columns, values, pop, scale, decayed, blocked,
                   skip_first, skip, need, want_max, acc, seen, flag, out_rows, out_scores, out_count, out_best,
                   left):  # pragma: no cover - (compiled: coverage cannot see inside)
    """Rank users from every entry of their history rows.

    User ``u``'s history rows are pairs ``pair_first[u]:pair_first[u + 1]``
    (most recent first), row ``p`` covering ``columns`` / ``values`` at
    ``pair_start[p]:pair_start[p] + pair_len[p]`` with weight
    ``pair_weight[p]``. A column's score is its weighted sum (divided by
    ``sqrt(max(pop, 1))`` where ``decayed``) plus ``pop * scale``. Writes the
    user's best ``need[u]`` columns, neither ``blocked`` nor in
    ``skip[skip_first[u]:skip_first[u + 1]]``, best first, ties to the lower
    column (``out_rows``, ``out_scores``, ``out_count``), and its best score
    over every column it reached (``out_best``). ``left[u]`` is set where
    columns it did not reach (scoring their tiebreak alone) may belong in the
    list or hold the best (``want_max[u]``): the caller ranks those users
    itself. ``acc``, ``seen`` and ``flag`` are per-column scratch, zero on
    entry and left zero.
    """
    touched = np.empty(len(acc) + 1, dtype=np.int64)
    for u in range(len(pair_first) - 1):
        n_touched = 0
        for p in range(pair_first[u], pair_first[u + 1]):
            w = pair_weight[p]
            for e in range(pair_start[p], pair_start[p] + pair_len[p]):
                c = columns[e]
                # Without a branch: whether a column is new is a coin toss the processor cannot predict
                # (about a third faster); the write past the list's end is overwritten by the next new one.
                touched[n_touched] = c
                n_touched += 1 - np.int64(seen[c])
                seen[c] = True
                acc[c] += values[e] * w
        for q in range(skip_first[u], skip_first[u + 1]):
            flag[skip[q]] = True
        k = need[u]
        count = 0
        best = -np.inf
        for t in range(n_touched):
            c = touched[t]
            s = acc[c]
            acc[c] = 0.0
            seen[c] = False
            if decayed:
                s = s / np.sqrt(max(pop[c], 1.0))
            s = s + pop[c] * scale
            if s > best:
                best = s
            if k <= 0 or blocked[c] or flag[c]:
                continue
            if count == k:  # full: only what beats the last one enters
                if s < out_scores[u, k - 1] or (s == out_scores[u, k - 1] and c > out_rows[u, k - 1]):
                    continue
                j = k - 1
            else:
                j = count
                count += 1
            while j > 0 and (out_scores[u, j - 1] < s or (out_scores[u, j - 1] == s and out_rows[u, j - 1] > c)):
                out_scores[u, j] = out_scores[u, j - 1]
                out_rows[u, j] = out_rows[u, j - 1]
                j -= 1
            out_scores[u, j] = s
            out_rows[u, j] = c
        for q in range(skip_first[u], skip_first[u + 1]):
            flag[skip[q]] = False
        out_count[u] = count
        out_best[u] = best
        left[u] = (k > 0 and (count < k or not out_scores[u, k - 1] > TIE)) or (want_max[u] and not best > TIE)
