"""Co-occurrence learned many events at a time: the pairs of a micro-batch added in a few numpy passes.

The baselines queue each event (the user's history and the new item) and
add the queued pairs before anything reads the counts. The result is the
one-at-a-time learner's to the bit: every entry receives the same additions
in the same order (``np.add.at`` adds in index order), and a row's new
entries take their slots in the order the one-at-a-time learner would have
given them, so checkpoints are the same bytes too.
"""

from __future__ import annotations

from itertools import chain

import numpy as np

from models.baselines.pair_index import PairIndex
from models.covisit import SparseRows
from models.groups import within
from models.sets import unique_sorted

__all__ = ["add_pairs", "pair_updates", "step_weights"]


def step_weights(decay: float | None, length: int) -> np.ndarray:
    """Weight of a pair at each distance from the new item, as the one-at-a-time learner computes it
    (a running product, which can differ from ``decay ** d`` in the last bit).

    >>> step_weights(0.5, 3).tolist(), step_weights(None, 2).tolist()
    ([1.0, 0.5, 0.25], [1.0, 1.0])
    """
    out = np.empty(length)
    w, d = 1.0, 1.0 if decay is None else decay
    for i in range(length):
        out[i] = w
        w *= d
    return out


def pair_updates(pending: list[tuple[tuple[int, ...], int]],
                 weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``(row, column, weight)`` additions of queued events ``(history, new item)``, in the learner's order.

    For each event, for each history item ``h`` from the most recent (the
    new item itself skipped): ``(h, item)`` then ``(item, h)``, both weighted
    by ``h``'s distance (:func:`step_weights`).

    >>> [a.tolist() for a in pair_updates([((4, 7), 9), ((9,), 9)], step_weights(0.5, 2))]
    [[7, 9, 4, 9], [9, 7, 9, 4], [1.0, 1.0, 0.5, 0.5]]
    """
    histories = [h for h, _ in pending]
    lens = np.fromiter(map(len, histories), dtype=np.int64, count=len(histories))
    hist = np.fromiter(chain.from_iterable(h[::-1] for h in histories), dtype=np.int64, count=int(lens.sum()))
    item = np.repeat(np.fromiter((r for _, r in pending), dtype=np.int64, count=len(pending)), lens)
    w = weights[within(lens)]
    keep = hist != item
    hist, item, w = hist[keep], item[keep], w[keep]
    rows, cols = np.empty(2 * len(hist), dtype=np.int64), np.empty(2 * len(hist), dtype=np.int64)
    rows[0::2], rows[1::2] = hist, item
    cols[0::2], cols[1::2] = item, hist
    return rows, cols, np.repeat(w, 2)


def add_pairs(cooc: SparseRows, index: PairIndex, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray) -> None:
    """``cooc.add(rows[k], cols[k], weights[k])`` for every ``k`` in order, keeping ``index`` up to date."""
    if not len(rows):
        return
    top = int(max(rows.max(), cols.max()))
    if top >= len(cooc):
        cooc._ensure(top)
    cell = index.cells(rows, cols)
    new = cell < 0
    if new.any():
        size = len(index.keys)
        _insert(cooc, index, rows[new], cols[new])
        if len(index.keys) != size:  # the table was rebuilt larger: every entry has a new cell
            cell = index.cells(rows, cols)
        else:
            cell[new] = index.cells(rows[new], cols[new])
    starts = np.fromiter(cooc._start, dtype=np.int64, count=len(cooc))
    at = starts[rows] + index.slots[cell]
    np.add.at(cooc._V, at, weights)  # in order: each entry gets its additions as add() makes them
    if cooc._log is not None:  # someone reads SparseRows.strongest: it must know which rows changed
        cooc._log.extend(unique_sorted(rows).tolist())


def _insert(cooc: SparseRows, index: PairIndex, rows: np.ndarray, cols: np.ndarray) -> None:
    """Create the entries ``(rows[k], cols[k])`` (repeats allowed) with value 0, each row's new entries
    taking the next slots in order of first appearance, as :meth:`SparseRows.add` would give them."""
    keys = (rows << 32) | cols
    _, first = np.unique(keys, return_index=True)
    first.sort()
    rows, cols = rows[first], cols[first]  # distinct, in order of first appearance
    by_row = np.argsort(rows, kind="stable")
    grouped = rows[by_row]
    starts_of_runs = np.flatnonzero(np.concatenate(([True], grouped[1:] != grouped[:-1])))
    distinct = grouped[starts_of_runs].tolist()
    counts = np.diff(np.append(starts_of_runs, len(grouped)))
    slots, caps = cooc._slots, cooc._cap
    base = np.array([len(slots[r]) for r in distinct], dtype=np.int64)
    for r, n0, k in zip(distinct, base.tolist(), counts.tolist()):
        if n0 + k > caps[r]:  # the row moves to the end of the slab with room to spare, as add() moves it
            cooc._relocate(r, max(n0 + k, 2 * n0, 16))
    rank, slot = np.empty(len(rows), dtype=np.int64), np.empty(len(rows), dtype=np.int64)
    rank[by_row] = within(counts)  # among the row's new entries
    slot[by_row] = np.repeat(base, counts) + rank[by_row]
    starts = np.fromiter(cooc._start, dtype=np.int64, count=len(cooc))
    at = starts[rows] + slot
    cooc._C[at] = cols
    cooc._V[at] = 0.0
    for r, c, s in zip(rows.tolist(), cols.tolist(), slot.tolist()):
        slots[r][c] = s
    index.insert(rows, cols, slot)

