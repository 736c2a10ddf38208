"""The strongest entries ("heads") of co-occurrence rows, nested by depth, and bounds on all the others."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.baselines.pair_index import OUTSIDE, PairIndex
from models.catalog import grow_to
from models.covisit import SparseRows, concat_ranges
from models.ranking.topk import _stable_order

__all__ = ["Heads"]


class Heads:
    """Each row's strongest entries by key, best first, and per depth a bound on every entry past it.

    A row's key of an entry is ``value / norm`` of its column (the norm is 1
    for plain counts). When a row's head is chosen, its ``sizes[-1]``
    largest entries by key are listed best first (:attr:`cols`, :attr:`slots`
    by line); for each depth ``sizes[k]``, ``bounds[k, row]`` is at least the
    key of every entry past that depth, in the head or not. A ranker reads
    the first ``sizes[k]`` entries of each row and ``bounds[k]`` for the rest:
    shallow heads for lists that are easy to prove, deeper ones for the others.

    The learner keeps the bounds (:func:`~models.baselines.pair_updates.add_pairs`:
    values only grow and norms never shrink, so an entry's key can only rise
    when the model adds to it), and a head that holds its whole row takes the
    row's new entries while it has room; the index records each head entry's
    position (:attr:`PairIndex.head_pos`). A head is chosen again, when a
    ranking reads it, once one of its bounds has grown by half (from zero: at
    all). Derived state: never pickled.

    >>> rows = SparseRows()
    >>> for col, value in [(1, 5.0), (2, 1.0), (3, 3.0), (4, 2.0)]:
    ...     rows.add(0, col, value)
    >>> heads = Heads((1, 2))
    >>> line = heads.lookup(rows, PairIndex(rows), np.array([0]), None)
    >>> heads.cols[line[0]].tolist(), heads.bounds[:, 0].tolist()
    ([1, 3], [3.0, 2.0])
    """

    STALE = 1.5

    def __init__(self, sizes: tuple[int, ...]):
        if list(sizes) != sorted(set(sizes)) or not 0 < sizes[-1] < OUTSIDE:
            raise ValueError(f"head sizes must increase, from 1 to {OUTSIDE - 1}: {sizes}")
        self.sizes, self.size = tuple(sizes), sizes[-1]
        self.line = np.zeros(0, dtype=np.int64)  # per row: its line of `slots` and `cols` (-1: none)
        self.bounds = np.zeros((len(sizes), 0))
        self.bound0 = np.zeros((len(sizes), 0))  # the bounds when the head was chosen
        self.slots = np.zeros((0, self.size), dtype=np.int32)
        self.cols = np.zeros((0, self.size), dtype=np.int32)
        self.count = np.zeros(0, dtype=np.int64)  # per line: entries in the head
        self.n_lines = 0
        self.chosen = 0  # heads chosen so far (tests and benchmarks read it)

    def ensure(self, n_rows: int) -> None:
        """Room for rows ``0 .. n_rows - 1``."""
        if n_rows > len(self.line):
            self.line = grow_to(self.line, n_rows, fill=-1)
            size = len(self.line)
            for name in ("bounds", "bound0"):
                old = getattr(self, name)
                grown = np.zeros((len(self.sizes), size))
                grown[:, :old.shape[1]] = old
                setattr(self, name, grown)

    def lookup(self, cooc: SparseRows, index: PairIndex, rows: np.ndarray,
               norm: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
        """The lines of the distinct ``rows``, choosing the heads that are missing or stale.

        ``norm(columns)`` gives the norms of the columns (``None``: 1).
        """
        self.ensure(int(rows.max(initial=-1)) + 1)
        line = self.line[rows]
        stale = (line < 0) | (self.bounds[:, rows] > self.STALE * self.bound0[:, rows]).any(axis=0)
        if stale.any():
            self._choose(cooc, index, rows[stale], norm)
            line = self.line[rows]
        return line

    def _lines(self, rows: np.ndarray) -> np.ndarray:
        """The lines of ``rows``, giving a new line to rows without one."""
        line = self.line[rows]
        new = line < 0
        if new.any():
            n0, n1 = self.n_lines, self.n_lines + int(new.sum())
            if n1 > len(self.count):
                size = max(n1, 2 * len(self.count), 64)
                for name in ("slots", "cols"):
                    old = getattr(self, name)
                    grown = np.zeros((size, self.size), dtype=old.dtype)
                    grown[:n0] = old[:n0]
                    setattr(self, name, grown)
                self.count = grow_to(self.count, size)
            line[new] = np.arange(n0, n1)
            self.line[rows[new]] = line[new]
            self.n_lines = n1
        return line

    def _choose(self, cooc: SparseRows, index: PairIndex, rows: np.ndarray, norm) -> None:
        """Choose the heads of ``rows`` (distinct) from their current entries."""
        line = self._lines(rows)
        old = np.repeat(rows, self.count[line])
        old_cols = self.cols[line][np.arange(self.size)[None, :] < self.count[line][:, None]]
        index.head_pos[index.cells(old, old_cols)] = OUTSIDE
        starts, lens = cooc.regions(rows)
        at = concat_ranges(starts, lens)
        which = np.repeat(np.arange(len(rows)), lens)
        cols, values = cooc.columns[at], cooc.values[at]
        key = values if norm is None else values / norm(cols)
        order = np.argsort(-key)
        order = order[_stable_order(which[order], len(rows))]  # by row, then key descending
        first = np.cumsum(lens) - lens
        pos = np.arange(len(at)) - np.repeat(first, lens)
        head = order[pos < self.size]
        hpos = pos[pos < self.size]
        self.slots[line[which[head]], hpos] = at[head] - starts[which[head]]
        self.cols[line[which[head]], hpos] = cols[head]
        self.count[line] = np.minimum(lens, self.size)
        index.head_pos[index.cells(rows[which[head]], cols[head])] = hpos
        sorted_key = key[order]
        for k, size in enumerate(self.sizes):  # the first key past each depth bounds every later one
            past = lens > size
            bound = np.zeros(len(rows))
            bound[past] = sorted_key[first[past] + size]
            self.bounds[k, rows] = self.bound0[k, rows] = bound
        self.chosen += len(rows)
