"""Incremental, sparse and bounded item-to-item co-visitation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.catalog import grow_to
from models.popularity import DecayClock

__all__ = ["SparseRows", "CoVisitation"]


class SparseRows:
    """One sparse row of float weights per item, optionally bounded.

    Each row keeps its neighbours in two numpy arrays (columns, values) plus a
    dict from column to slot, so that updates are O(1) and scoring can gather
    whole rows without converting dicts to arrays.

    Parameters
    ----------
    max_neighbors
        ``M``: when a row holds more than ``2 * M`` entries it is pruned to its
        ``M`` strongest ones. ``None`` keeps every entry (baselines only:
        memory then grows with the number of co-visited pairs).

    Examples
    --------
    >>> rows = SparseRows(max_neighbors=2)
    >>> for col, w in [(1, 5.0), (2, 1.0), (3, 3.0), (4, 2.0), (5, 0.5)]:
    ...     rows.add(0, col, w)
    >>> cols, vals = rows.row(0)
    >>> sorted(zip(cols.tolist(), vals.tolist()))  # 5 > 2M entries: pruned to the M strongest
    [(1, 5.0), (3, 3.0)]
    >>> rows.add(0, 5, 1.0); rows.nnz
    3

    """

    def __init__(self, max_neighbors: int | None = None):
        self.max_neighbors = max_neighbors
        self._cols: list[np.ndarray] = []
        self._vals: list[np.ndarray] = []
        self._slots: list[dict[int, int]] = []

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def nnz(self) -> int:
        return sum(len(s) for s in self._slots)

    def _ensure(self, row: int) -> None:
        while len(self._slots) <= row:
            self._cols.append(np.empty(4, dtype=np.int32))
            self._vals.append(np.empty(4, dtype=np.float64))
            self._slots.append({})

    def add(self, row: int, col: int, weight: float) -> None:
        self._ensure(row)
        slots = self._slots[row]
        slot = slots.get(col)
        if slot is not None:
            self._vals[row][slot] += weight
            return
        slot = len(slots)
        if slot == len(self._cols[row]):
            self._cols[row] = grow_to(self._cols[row], slot + 1)
            self._vals[row] = grow_to(self._vals[row], slot + 1)
        self._cols[row][slot] = col
        self._vals[row][slot] = weight
        slots[col] = slot
        if self.max_neighbors is not None and slot + 1 > 2 * self.max_neighbors:
            self._prune(row)

    def _prune(self, row: int) -> None:
        # Pruning only at 2M (not at M+1) amortises the argpartition and gives
        # newcomers some room to accumulate weight before they compete.
        n = len(self._slots[row])
        vals = self._vals[row][:n]
        # Stable ordering (value desc, column asc) keeps pruning deterministic.
        keep = np.lexsort((self._cols[row][:n], -vals))[: self.max_neighbors]
        keep.sort()
        cols = self._cols[row][keep].copy()
        vals = vals[keep].copy()
        self._cols[row] = grow_to(cols, 2 * self.max_neighbors + 1)
        self._vals[row] = grow_to(vals, 2 * self.max_neighbors + 1)
        self._slots[row] = {int(c): s for s, c in enumerate(cols)}

    def row(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Columns and values of ``row`` (views; empty when unknown)."""
        if row >= len(self._slots):
            return np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float64)
        n = len(self._slots[row])
        return self._cols[row][:n], self._vals[row][:n]

    def get(self, row: int, col: int) -> float:
        if row >= len(self._slots):
            return 0.0
        slot = self._slots[row].get(col)
        return 0.0 if slot is None else float(self._vals[row][slot])

    def scale(self, factor: float) -> None:
        """Multiply every value by ``factor`` (used to rescale decayed weights)."""
        for vals in self._vals:
            vals *= factor

    def gather(self, rows: Sequence[int], weights: Sequence[float], n_cols: int) -> np.ndarray:
        """``sum_r weights[r] * row_r`` as a dense vector of length ``n_cols``."""
        cols, vals = [], []
        for r, w in zip(rows, weights):
            c, v = self.row(r)
            if len(c):
                cols.append(c)
                vals.append(v * w)
        if not cols:
            return np.zeros(n_cols)
        return np.bincount(np.concatenate(cols), np.concatenate(vals), minlength=n_cols)[:n_cols]

    def __getstate__(self):
        # Only the used prefix of each row is state (the slot dicts are
        # derived); concatenating the rows keeps checkpoints compact and
        # byte-identical for equal models.
        lengths = np.array([len(s) for s in self._slots], dtype=np.int64)
        cols = [c[:n] for c, n in zip(self._cols, lengths)]
        vals = [v[:n] for v, n in zip(self._vals, lengths)]
        return {
            "max_neighbors": self.max_neighbors,
            "lengths": lengths,
            "cols": np.concatenate(cols) if cols else np.empty(0, dtype=np.int32),
            "vals": np.concatenate(vals) if vals else np.empty(0, dtype=np.float64),
        }

    def __setstate__(self, state):
        self.max_neighbors = state["max_neighbors"]
        self._cols, self._vals, self._slots = [], [], []
        bounds = np.concatenate([[0], np.cumsum(state["lengths"])])
        all_cols = state["cols"].astype(np.int32)
        all_vals = state["vals"].astype(np.float64)
        for start, stop in zip(bounds[:-1], bounds[1:]):
            cols = all_cols[start:stop].copy()
            size = max(4, len(cols))
            self._cols.append(grow_to(cols, size))
            self._vals.append(grow_to(all_vals[start:stop].copy(), size))
            self._slots.append({int(c): s for s, c in enumerate(cols)})


class CoVisitation:
    """Directed, recency-weighted co-visitation counts between items.

    When a user interacts with item ``j`` after items ``h_1 .. h_L`` (``h_1``
    the most recent), every pair gets weight ``w_e * distance_decay ** (d-1)``
    where ``d`` is the distance in the user's history and ``w_e`` the event
    weight. The *forward* edge ``h -> j`` (what people go on to look at) gets
    ``forward`` times that weight, the backward edge ``j -> h`` ``backward``
    times it: for next-item prediction the observed direction of travel is
    more informative than the reverse one, but the reverse is still evidence
    of similarity. Old co-visits fade with a time ``half_life`` so that the
    neighbourhoods follow the assortment.

    Scores are cosine-like: ``C[h, j] / (n_h ** alpha * n_j ** alpha)`` with
    ``n`` the (decayed) number of co-visit participations of an item, so that
    blockbuster items do not become everybody's neighbour.

    Parameters
    ----------
    max_neighbors
        Strongest neighbours kept per item (rows are pruned at twice that).
    distance_decay
        Pair weight decay per step of distance in the user's history.
    forward, backward
        Multipliers of the edge in and against the direction of travel.
    half_life
        Half-life of a co-visit (timestamp units), ``None`` for no forgetting.
    alpha
        Popularity normalisation exponent (0.5 = cosine).

    Examples
    --------
    >>> cv = CoVisitation(max_neighbors=10, half_life=None)
    >>> cv.update([0], 1)          # someone went from item 0 to item 1
    >>> cv.update([0], 2)          # ... and someone from 0 to 2
    >>> cv.update([1, 0], 2)       # and a third one 0, 1, then 2
    >>> s = cv.score([0], [1.0], n_items=3)
    >>> int(s.argmax())            # after 0 people look at 2 most
    2
    >>> float(s[0])                # an item is never its own neighbour
    0.0

    """

    def __init__(
        self,
        max_neighbors: int | None = 100,
        distance_decay: float = 0.9,
        forward: float = 1.0,
        backward: float = 0.5,
        half_life: float | None = 30 * 24 * 3600.0,
        alpha: float = 0.5,
    ):
        self.max_neighbors = max_neighbors
        self.distance_decay = distance_decay
        self.forward = forward
        self.backward = backward
        self.half_life = half_life
        self.alpha = alpha
        self.rows = SparseRows(max_neighbors)
        self.clock = DecayClock(half_life)
        self._mass = np.zeros(0, dtype=np.float64)  # decayed participations per item

    def update(self, history: Sequence[int], row: int, weight: float = 1.0, t: float | None = None) -> None:
        """Record that ``row`` was visited after ``history`` (most recent first)."""
        if not len(history):
            return
        inc = self.clock.increment(t) * weight
        if self.clock.rescale_factor != 1.0:
            self.rows.scale(1.0 / self.clock.rescale_factor)
            self._mass /= self.clock.rescale_factor
        top = max(row, max(history))
        self._mass = grow_to(self._mass, top + 1)
        rows = self.rows
        rows._ensure(top)
        slots, vals = rows._slots, rows._vals
        add = rows.add
        fw, bw, decay = self.forward, self.backward, self.distance_decay
        # Fast path of SparseRows.add inlined: most pairs update an existing slot.
        row_slots, row_vals = slots[row], vals[row]
        mass = self._mass
        w = inc
        total = 0.0
        for h in history:
            if h != row:
                s = slots[h].get(row)
                if s is not None:
                    vals[h][s] += fw * w
                else:
                    add(h, row, fw * w)
                s = row_slots.get(h)
                if s is not None:
                    row_vals[s] += bw * w
                else:
                    add(row, h, bw * w)
                    row_slots, row_vals = slots[row], vals[row]  # add() may have pruned or grown the row
                mass[h] += w
                total += w
            w *= decay
        mass[row] += total

    def mass(self, n_items: int) -> np.ndarray:
        self._mass = grow_to(self._mass, n_items)
        return self._mass[:n_items]

    def score(self, history: Sequence[int], weights: Sequence[float], n_items: int) -> np.ndarray:
        """Cosine-like neighbourhood score of every item for a weighted history."""
        mass = self.mass(n_items)
        if not len(history):
            return np.zeros(n_items)
        norm = np.power(np.maximum(mass, 1e-300), -self.alpha) if self.alpha else np.ones(n_items)
        w = [wh * norm[h] for h, wh in zip(history, weights)]
        scores = self.rows.gather(history, w, n_items)
        scores *= norm
        return scores

    def score_sparse(self, history: Sequence[int], weights: Sequence[float],
                     mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`score` on its support only: ``(rows ascending, scores)``.

        ``mass`` is :meth:`mass` ``(n_items)``. The scores are bit-identical to
        the dense ones at those rows (same operations, same summation order);
        every other item scores 0.
        """
        if not len(history):
            return np.empty(0, dtype=np.int64), np.empty(0)
        alpha = self.alpha
        hist = np.asarray(history, dtype=np.int64)
        norm_h = np.power(np.maximum(mass[hist], 1e-300), -alpha) if alpha else np.ones(len(hist))
        rows_ = self.rows
        n_rows = len(rows_._slots)
        cols, vals, lengths = [], [], []
        for h in history:
            n = len(rows_._slots[h]) if h < n_rows else 0
            lengths.append(n)
            if n:
                cols.append(rows_._cols[h][:n])
                vals.append(rows_._vals[h][:n])
        if not cols:
            return np.empty(0, dtype=np.int64), np.empty(0)
        cols = np.concatenate(cols)
        # Each neighbour value times its history item's weight (the same
        # products as CoVisitation.score, summed in the same order).
        w = np.asarray(weights, dtype=np.float64) * norm_h
        vals = np.concatenate(vals) * np.repeat(w, lengths)
        order = np.argsort(cols, kind="stable")
        cols = cols[order]
        starts = np.flatnonzero(np.concatenate(([True], cols[1:] != cols[:-1])))
        rows = cols[starts]
        scores = np.add.reduceat(vals[order], starts)
        if alpha:
            scores *= np.power(np.maximum(mass[rows], 1e-300), -alpha)
        return rows.astype(np.int64), scores

    def __getstate__(self):
        state = self.__dict__.copy()
        nz = np.flatnonzero(self._mass)
        state["_mass"] = self._mass[: (nz[-1] + 1) if len(nz) else 0].copy()
        return state
