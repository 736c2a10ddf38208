"""Where each entry of a :class:`~models.covisit.SparseRows` sits, looked up for many entries at once."""

from __future__ import annotations

import numpy as np

from models.covisit import SparseRows
from models.groups import concat_ranges

__all__ = ["PairIndex"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing
_EMPTY = np.uint64(2**64 - 1)


class PairIndex:
    """``(row, column) -> slot`` of every entry of a :class:`SparseRows`, as an open-addressing hash table
    looked up in vectorised passes (the rows' own dicts cost an interpreter step per look-up).

    These rows are never pruned and an entry keeps its slot when its row
    moves, so the table only grows (:meth:`insert`, twice the room when half full).

    >>> rows = SparseRows()
    >>> rows.add(3, 7, 1.0); rows.add(3, 2, 5.0)
    >>> index = PairIndex(rows)
    >>> rows.add(0, 9, 2.0); index.insert(np.array([0]), np.array([9]), np.array([0]))
    >>> index.values(rows, np.array([3, 3, 0, 0]), np.array([2, 9, 9, 7])).tolist()
    [5.0, 0.0, 2.0, 0.0]
    """

    def __init__(self, cooc: SparseRows):
        n_rows = len(cooc)
        starts, lens = cooc.regions(np.arange(n_rows))
        rows = np.repeat(np.arange(n_rows), lens)
        cols = cooc.columns[concat_ranges(starts, lens)]
        self._alloc(len(rows))
        self._place(self._key(rows, cols), concat_ranges(np.zeros(n_rows, dtype=np.int64), lens))

    @staticmethod
    def _key(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """One 64-bit key per entry (rows and columns are below 2**32)."""
        return (rows.astype(np.uint64) << np.uint64(32)) | cols.astype(np.uint64)

    def _alloc(self, n: int) -> None:
        """An empty table for ``n`` entries, at most half full."""
        bits = max(10, (2 * n).bit_length())
        self.shift, self.mask, self.size = np.uint64(64 - bits), (1 << bits) - 1, 0
        self.keys = np.full(1 << bits, _EMPTY, dtype=np.uint64)
        self.slots = np.zeros(1 << bits, dtype=np.int32)

    def _place(self, keys: np.ndarray, slots: np.ndarray) -> None:
        """Insert new, distinct keys by linear probing from their hash (rebuilt twice as large when half full)."""
        if 2 * (self.size + len(keys)) > len(self.keys):
            held = self.keys != _EMPTY
            old = self.keys[held], self.slots[held]
            self._alloc(self.size + len(keys))
            self._place(*old)
        at = ((keys * _GOLDEN) >> self.shift).astype(np.int64)
        todo = np.arange(len(keys))
        while len(todo):
            pos = at[todo]
            free = self.keys[pos] == _EMPTY
            mine, pos_free = todo[free], pos[free]
            self.keys[pos_free] = keys[mine]  # of entries racing for a cell, the last one wins it
            won = self.keys[pos_free] == keys[mine]
            self.slots[pos_free[won]] = slots[mine[won]]
            todo = np.concatenate((mine[~won], todo[~free]))
            at[todo] = (at[todo] + 1) & self.mask
        self.size += len(keys)

    def insert(self, rows: np.ndarray, cols: np.ndarray, slots: np.ndarray) -> None:
        """New entries (distinct, not in the table yet) at their slots."""
        self._place(self._key(rows, cols), slots)

    def cells(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The cell of each ``(rows[k], cols[k])`` (-1 where there is no such entry)."""
        keys = self._key(rows, cols)
        at = ((keys * _GOLDEN) >> self.shift).astype(np.int64)
        cell = np.full(len(keys), -1, dtype=np.int64)
        todo = np.arange(len(keys))
        while len(todo):
            pos = at[todo]
            held = self.keys[pos]
            hit = held == keys[todo]
            cell[todo[hit]] = pos[hit]
            todo = todo[~hit & (held != _EMPTY)]
            at[todo] = (at[todo] + 1) & self.mask
        return cell

    def values(self, cooc: SparseRows, rows: np.ndarray, cols: np.ndarray,
               starts: np.ndarray | None = None) -> np.ndarray:
        """``cooc``'s values at ``(rows[k], cols[k])``, 0 where there is no entry
        (``starts``: the rows' :meth:`SparseRows.regions` starts, if known)."""
        cell = self.cells(rows, cols)
        if starts is None:
            starts, _ = cooc.regions(rows)
        slot = np.where(cell >= 0, self.slots[np.maximum(cell, 0)], 0)
        return np.where(cell >= 0, cooc.values[starts + slot], 0.0)
