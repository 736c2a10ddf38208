"""Incremental, sparse and bounded item-to-item co-visitation."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np

from models.catalog import grow_to
from models.groups import concat_ranges, within
from models.popularity import DecayClock
from models.sets import unique_inverse, unique_sorted

__all__ = ["SparseRows", "CoVisitation"]


class SparseRows:
    """One sparse row of float weights per item, optionally bounded.

    Every row keeps its neighbours in its own region of two shared numpy
    arrays (a *slab* of columns and one of values), plus a dict from column
    to slot. Updates are O(1); gathering the neighbours of many rows at once
    is one vectorised index (:meth:`regions`: one Python step per distinct
    row, none per neighbour). A row that
    outgrows its region moves to the end of the slab with twice the room;
    the holes it leaves are compacted away once they make up half of it.

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

    _INITIAL = 4  # room of a new row

    def __init__(self, max_neighbors: int | None = None):
        self.max_neighbors = max_neighbors
        self._init_slab(1024)

    def _init_slab(self, size: int) -> None:
        # Zeroed, not left as whatever memory held: rescaling multiplies the whole used slab, holes
        # and spare room included, and must not meet NaNs there.
        self._C = np.zeros(size, dtype=np.int32)  # columns of every row, in the rows' regions
        self._V = np.zeros(size, dtype=np.float64)  # values, same layout
        self._used = 0  # slab positions handed out
        self._garbage = 0  # positions of regions left behind by rows that moved
        self._start: list[int] = []  # region of each row: start ...
        self._cap: list[int] = []  # ... and room
        self._slots: list[dict[int, int]] = []
        self._init_heads()

    def _init_heads(self) -> None:
        # Cache of :meth:`strongest` (derived, never serialised): slab positions of the
        # ``k`` strongest entries of long rows, valid until the row changes or moves.
        self._head_k = 0
        self._head_at = np.zeros(0, dtype=np.int64)  # line of each row in _head_pos (-1: none yet)
        self._head_pos = np.zeros((0, 0), dtype=np.int64)
        self._head_n = 0  # lines of _head_pos in use
        self._head_ok = np.zeros(0, dtype=bool)  # line still valid
        # Rows changed since the last read (None: nobody reads heads, nothing logged);
        # writers that bypass add() (CoVisitation.update) log into them too.
        self._log: list[int] | None = None
        self._log_seqs: list[Sequence[int]] = []

    def _forget_heads(self) -> None:
        """Every cached head is invalid (rows moved, or the change log was dropped)."""
        self._head_ok[:] = False
        if self._log is not None:
            self._log.clear()
            self._log_seqs.clear()

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def nnz(self) -> int:
        return sum(map(len, self._slots))

    def _reserve(self, size: int) -> None:
        """Make room for ``size`` more slab positions (may compact: region starts can change)."""
        if self._used + size <= len(self._C):
            return
        if 2 * self._garbage > self._used:
            self._compact()
        if self._used + size > len(self._C):
            n = max(2 * len(self._C), self._used + size)
            C = np.zeros(n, dtype=np.int32)
            V = np.zeros(n, dtype=np.float64)
            C[: self._used] = self._C[: self._used]
            V[: self._used] = self._V[: self._used]
            self._C, self._V = C, V

    def _compact(self) -> None:
        n_rows = len(self._slots)
        caps = np.array(self._cap, dtype=np.int64)
        starts = np.cumsum(caps) - caps
        lens = np.fromiter(map(len, self._slots), dtype=np.int64, count=n_rows)
        src = concat_ranges(np.array(self._start, dtype=np.int64), lens)
        dst = concat_ranges(starts, lens)
        C = np.zeros(len(self._C), dtype=np.int32)
        V = np.zeros(len(self._V), dtype=np.float64)
        C[dst] = self._C[src]
        V[dst] = self._V[src]
        self._C, self._V = C, V
        self._start[:] = starts.tolist()  # in place: callers may hold the list
        self._used = int(caps.sum())
        self._garbage = 0
        self._forget_heads()  # every row moved

    def _ensure(self, row: int) -> None:
        n0 = len(self._slots)
        if row < n0:
            return
        k = row + 1 - n0
        room = self._INITIAL
        self._reserve(room * k)
        first = self._used
        self._used += room * k
        self._start.extend(range(first, first + room * k, room))
        self._cap.extend([room] * k)
        self._slots.extend({} for _ in range(k))

    def _relocate(self, row: int, room: int) -> None:
        self._reserve(room)
        old, n = self._start[row], len(self._slots[row])
        new = self._used
        self._used += room
        self._C[new:new + n] = self._C[old:old + n]
        self._V[new:new + n] = self._V[old:old + n]
        self._garbage += self._cap[row]
        self._start[row] = new
        self._cap[row] = room

    def add(self, row: int, col: int, weight: float) -> None:
        if self._log is not None:
            self._log.append(row)
        if row >= len(self._slots):
            self._ensure(row)
        slots = self._slots[row]
        slot = slots.get(col)
        if slot is not None:
            self._V[self._start[row] + slot] += weight
            return
        slot = len(slots)
        if slot == self._cap[row]:
            self._relocate(row, max(slot + 1, 2 * slot, 16))
        p = self._start[row] + slot
        self._C[p] = col
        self._V[p] = weight
        slots[col] = slot
        if self.max_neighbors is not None and slot + 1 > 2 * self.max_neighbors:
            self._prune(row)

    def _prune(self, row: int) -> None:
        # Pruning only at 2M (not at M+1) amortises the argpartition and gives
        # newcomers some room to accumulate weight before they compete.
        n = len(self._slots[row])
        s = self._start[row]
        cols, vals = self._C[s:s + n], self._V[s:s + n]
        # Stable ordering (value desc, column asc) keeps pruning deterministic.
        keep = np.lexsort((cols, -vals))[: self.max_neighbors]
        keep.sort()
        cols, vals = cols[keep], vals[keep]
        m = len(keep)
        self._C[s:s + m] = cols
        self._V[s:s + m] = vals
        self._slots[row] = {int(c): i for i, c in enumerate(cols.tolist())}

    def row(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Columns and values of ``row`` (views, valid until the next update; empty when unknown)."""
        if row >= len(self._slots):
            return np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float64)
        n = len(self._slots[row])
        s = self._start[row]
        return self._C[s:s + n], self._V[s:s + n]

    @property
    def columns(self) -> np.ndarray:
        """The slab of columns: row ``r``'s are at the positions of :meth:`regions` ``(r)``
        (read only; valid until the next update)."""
        return self._C

    @property
    def values(self) -> np.ndarray:
        """The slab of values, in the layout of :attr:`columns` (read only; valid until the next update)."""
        return self._V

    def regions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slab start and length of each of ``rows`` (length 0 for unknown rows), for vectorised gathers
        from :attr:`columns` and :attr:`values` (valid until the next update)."""
        n_rows, slots, start = len(self._slots), self._slots, self._start
        if len(rows) <= 64:  # a few rows: no need to find the distinct ones first
            rows = rows.tolist() if isinstance(rows, np.ndarray) else list(rows)
            lens = np.array([len(slots[r]) if r < n_rows else 0 for r in rows], dtype=np.int64)
            return np.array([start[r] if r < n_rows else 0 for r in rows], dtype=np.int64), lens
        uniq, inv = unique_inverse(np.asarray(rows))
        rows_u = uniq.tolist()
        lens = np.array([len(slots[r]) if r < n_rows else 0 for r in rows_u], dtype=np.int64)
        starts = np.array([start[r] if r < n_rows else 0 for r in rows_u], dtype=np.int64)
        return starts[inv], lens[inv]

    def strongest(self, rows: np.ndarray, k: int | None,
                  regions: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Slab positions of the ``k`` strongest entries of each of ``rows`` (all entries of rows
        with at most ``k``; ``None``: no limit), concatenated in the order of ``rows``, and how
        many each row has there.

        Strongest: largest value, ties to the lower column (the order :meth:`_prune` keeps).
        The entries of a row come in slab order. ``regions`` is :meth:`regions` ``(rows)`` if
        already known. The choice is cached per row until the row changes; positions are valid
        until the next update.

        >>> rows = SparseRows()
        >>> for col, w in [(7, 1.0), (8, 4.0), (9, 2.0), (5, 4.0)]:
        ...     rows.add(0, col, w)
        >>> rows.add(1, 3, 1.0)
        >>> pos, per = rows.strongest(np.array([0, 1]), 2)
        >>> rows.columns[pos].tolist(), per.tolist()  # row 0: the two 4.0s; row 1 has one entry
        ([8, 5, 3], [2, 1])
        >>> rows.add(0, 9, 5.0)  # 9 is now the strongest; of the tied 8 and 5, 5 stays
        >>> rows.columns[rows.strongest(np.array([0]), 2)[0]].tolist()
        [9, 5]
        """
        starts, lens = self.regions(rows) if regions is None else regions
        if k is None or not len(lens) or int(lens.max()) <= k:
            return concat_ranges(starts, lens), lens
        if self._log is None:  # first reader: start logging changes
            self._log, self._log_seqs = [], []
            self._head_ok[:] = False
        if k != self._head_k:
            self._head_k = k
            self._head_at = np.full(len(self._slots), -1, dtype=np.int64)
            self._head_pos = np.zeros((0, k), dtype=np.int64)
            self._head_ok = np.zeros(0, dtype=bool)
            self._head_n = 0
        if len(self._head_at) < len(self._slots):
            self._head_at = grow_to(self._head_at, len(self._slots), fill=-1)
        if self._log:  # rows changed since the last read: their heads are stale
            changed = np.fromiter(chain(self._log, chain.from_iterable(self._log_seqs)), dtype=np.int64)
            self._log.clear()
            self._log_seqs.clear()
            at = self._head_at[changed[changed < len(self._head_at)]]
            self._head_ok[at[at >= 0]] = False
        rows = np.asarray(rows, dtype=np.int64)
        long = lens > k
        long_rows = rows[long]
        at = self._head_at[long_rows]
        stale = at < 0
        stale[~stale] = ~self._head_ok[at[~stale]]
        if stale.any():
            self._compute_heads(unique_sorted(long_rows[stale]), k)
            at = self._head_at[long_rows]
        per = np.minimum(lens, k)
        idx = concat_ranges(starts, per)
        offsets = np.cumsum(per) - per
        idx[concat_ranges(offsets[long], per[long])] = self._head_pos[at].ravel()
        return idx, per

    def _compute_heads(self, rows: np.ndarray, k: int) -> None:
        """Cache the slab positions of the ``k`` strongest entries of ``rows`` (each longer than ``k``)."""
        slots, start = self._slots, self._start
        rl = rows.tolist()
        lens = np.array([len(slots[r]) for r in rl], dtype=np.int64)
        starts = np.array([start[r] for r in rl], dtype=np.int64)
        w = int(lens.max())
        m = len(rl)
        pos = concat_ranges(starts, lens)
        line = np.repeat(np.arange(m), lens)
        j = within(lens)
        P = np.full((m, w), np.inf)  # minus the values; padding never selected (every row has > k)
        P[line, j] = -self._V[pos]
        best = np.argpartition(P, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(P, best, axis=1).max(axis=1)
        # Ties at the cut: the lower columns win (argpartition keeps an arbitrary subset).
        tied = (P == kth[:, None]).sum(axis=1) > (np.take_along_axis(P, best, axis=1) == kth[:, None]).sum(axis=1)
        for i in np.flatnonzero(tied).tolist():
            n, s = int(lens[i]), int(starts[i])
            best[i] = np.lexsort((self._C[s:s + n], -self._V[s:s + n]))[:k]
        best.sort(axis=1)
        at = self._head_at[rows]
        new = at < 0
        if new.any():
            n0 = self._head_n
            self._head_n = n1 = n0 + int(new.sum())
            at[new] = np.arange(n0, n1)
            self._head_at[rows[new]] = at[new]
            if n1 > len(self._head_pos):
                grown = np.empty((max(n1, 2 * n0), k), dtype=np.int64)
                grown[:n0] = self._head_pos[:n0]
                self._head_pos = grown
                self._head_ok = grow_to(self._head_ok, len(grown), fill=False)
        self._head_pos[at] = starts[:, None] + best
        self._head_ok[at] = True

    def get(self, row: int, col: int) -> float:
        if row >= len(self._slots):
            return 0.0
        slot = self._slots[row].get(col)
        return 0.0 if slot is None else float(self._V[self._start[row] + slot])

    def scale(self, factor: float) -> None:
        """Multiply every value by ``factor`` (used to rescale decayed weights)."""
        self._V[: self._used] *= factor

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
        # Only the used prefix of each row is state (the slot dicts and the
        # slab layout are derived); concatenating the rows keeps checkpoints
        # compact and byte-identical for equal models.
        n_rows = len(self._slots)
        lengths = np.fromiter(map(len, self._slots), dtype=np.int64, count=n_rows)
        idx = concat_ranges(np.array(self._start, dtype=np.int64), lengths)
        return {
            "max_neighbors": self.max_neighbors,
            "lengths": lengths,
            "cols": self._C[idx],
            "vals": self._V[idx],
        }

    def __setstate__(self, state):
        self.max_neighbors = state["max_neighbors"]
        lengths = np.asarray(state["lengths"], dtype=np.int64)
        caps = np.maximum(lengths, self._INITIAL)
        starts = np.cumsum(caps) - caps
        total = int(caps.sum())
        self._init_slab(max(1024, total + total // 2))
        dst = concat_ranges(starts, lengths)
        cols = state["cols"].astype(np.int32)
        self._C[dst] = cols
        self._V[dst] = state["vals"].astype(np.float64)
        self._used = total
        self._start = starts.tolist()
        self._cap = caps.tolist()
        bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
        cols = cols.tolist()
        self._slots = [{c: s for s, c in enumerate(cols[a:b])} for a, b in zip(bounds[:-1], bounds[1:])]


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
    ``n`` the (decayed) co-visit mass of an item plus ``prior_mass``, so that
    blockbuster items do not become everybody's neighbour. The prior keeps
    that division from favouring what little is known: without it, an item
    met once with one neighbour gets the largest normalised score there is,
    and on a young or sparse log that is most items (plain counts beat the
    normalised ones on such logs). It is a pseudo-mass in the units of the
    decayed mass, set against an item's mass as both stand at the latest
    time (the prior itself is never forgotten), so an item's own co-visits
    outweigh it once it has a few, and the scores of well-known items barely
    move.

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
    prior_mass
        Pseudo co-visit mass added to every item's before normalising (one
        event after a history of 20 items adds about 8.8 to its item's mass).

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

    With a prior, an item met once no longer outscores a popular one met
    three times:

    >>> cv = CoVisitation(half_life=None, alpha=0.5)
    >>> for _ in range(3):
    ...     cv.update([0], 1)      # 0 then 1, three times
    >>> for _ in range(10):
    ...     cv.update([3], 1)      # 1 is popular elsewhere too
    >>> cv.update([0], 2)          # 0 then 2, once
    >>> for prior in (0.0, 10.0):
    ...     cv.prior_mass = prior
    ...     s = cv.score([0], [1.0], n_items=3)
    ...     print(prior, int(s.argmax()))
    0.0 2
    10.0 1

    """

    prior_mass = 0.0  # (checkpoints from before the prior: HybridRanker's restore sets its own)

    def __init__(
        self,
        max_neighbors: int | None = 100,
        distance_decay: float = 0.9,
        forward: float = 1.0,
        backward: float = 0.5,
        half_life: float | None = 30 * 24 * 3600.0,
        alpha: float = 0.5,
        prior_mass: float = 0.0,
    ):
        if prior_mass < 0:
            raise ValueError("prior_mass must be non-negative")
        self.max_neighbors = max_neighbors
        self.distance_decay = distance_decay
        self.forward = forward
        self.backward = backward
        self.half_life = half_life
        self.alpha = alpha
        self.prior_mass = prior_mass
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
        self._fold((history,), (row,), (inc,))

    def update_many(self, histories: Sequence[Sequence[int]], rows: Sequence[int], weights: Sequence[float],
                    ts) -> None:
        """:meth:`update` of each ``(histories[k], rows[k], weights[k], ts[k])`` in turn, with the same
        result to the last bit.

        The clock's increments are taken together, and the additions to entries that exist are
        collected and made in order by ``np.add.at`` (as are the masses'): each entry, and each
        mass, takes the same additions in the same order as one event at a time. They are made
        before anything reads or moves values (a row outgrowing its region, pruning, a rescale).

        >>> a, b = CoVisitation(max_neighbors=2, half_life=3.0), CoVisitation(max_neighbors=2, half_life=3.0)
        >>> events = [((), 0), ((0,), 1), ((1, 0), 2), ((2, 1, 0), 3), ((3, 2), 0), ((0, 3), 1), ((1,), 0)]
        >>> a.update_many([h for h, _ in events], [r for _, r in events], [1.0, 2.0] * 3 + [1.0], range(7))
        >>> for t, (h, r) in enumerate(events):
        ...     b.update(h, r, 2.0 if t % 2 else 1.0, t)
        >>> all(np.array_equal(x, y) for x, y in zip(a.rows.row(0) + a.rows.row(3) + (a.mass(4),),
        ...                                          b.rows.row(0) + b.rows.row(3) + (b.mass(4),)))
        True
        """
        keep = [k for k, h in enumerate(histories) if len(h)]  # (an event with no history counts nothing)
        if not keep:
            return
        histories = [histories[k] for k in keep]
        rows = [rows[k] for k in keep]
        weights = np.asarray(weights, dtype=np.float64)[keep]
        ts = self.clock.times([ts[k] for k in keep])
        start = 0
        while start < len(rows):
            inc = self.clock.increments(ts[start:])
            if self.clock.rescale_factor != 1.0:
                self.rows.scale(1.0 / self.clock.rescale_factor)
                self._mass /= self.clock.rescale_factor
            stop = start + len(inc)
            self._fold(histories[start:stop], rows[start:stop], (inc * weights[start:stop]).tolist())
            start = stop

    def _fold(self, histories: Sequence[Sequence[int]], rows: Sequence[int], ws: list[float]) -> None:
        """The pairs of events whose increments (clock times weight) are ``ws``: no rescale among them."""
        srows = self.rows
        if srows._log is not None:  # the change log of SparseRows.strongest's cache: these rows change
            srows._log.extend(rows)
            srows._log_seqs.extend(h if type(h) is tuple else tuple(h) for h in histories)
            if len(srows._log) > 1_000_000:
                srows._forget_heads()
        slots, start, cap = srows._slots, srows._start, srows._cap
        fw, bw, decay = self.forward, self.backward, self.distance_decay
        full = 2 * srows.max_neighbors if srows.max_neighbors is not None else None
        # Additions to existing entries and to masses, made in order by np.add.at before values are
        # read or moved.
        at, by, mass_at, mass_by = [], [], [], []
        pend_at, pend_by, pend_mass_at, pend_mass_by = at.append, by.append, mass_at.append, mass_by.append

        def settle():
            _add_in_order(srows._V, at, by)
            at.clear()
            by.clear()

        def place(a: int, a_slots: dict, b: int, x: float) -> None:
            """A new entry ``b`` of row ``a``: in the row's region while it has room (most do),
            else by :meth:`SparseRows.add` (which may move the row, grow the slab or prune)."""
            s = len(a_slots)
            if s < cap[a] and (full is None or s < full):
                p = start[a] + s
                srows._C[p] = b
                srows._V[p] = x
                a_slots[b] = s
            else:
                settle()
                srows.add(a, b, x)

        for history, row, w in zip(histories, rows, ws):
            top = max(row, max(history))
            if top >= len(self._mass):
                self._mass = grow_to(self._mass, top + 1)
            if top >= len(slots):  # (new rows' regions are made event by event: the same slab layout)
                settle()
                srows._ensure(top)
            row_slots = slots[row]
            total = 0.0
            for h in history:
                if h != row:
                    h_slots = slots[h]
                    s = h_slots.get(row)
                    if s is not None:
                        pend_at(start[h] + s)
                        pend_by(fw * w)
                    else:
                        place(h, h_slots, row, fw * w)
                    s = row_slots.get(h)
                    if s is not None:
                        pend_at(start[row] + s)
                        pend_by(bw * w)
                    else:
                        place(row, row_slots, h, bw * w)
                        row_slots = slots[row]  # (placing may have pruned the row: a new dict)
                    pend_mass_at(h)
                    pend_mass_by(w)
                    total += w
                w *= decay
            pend_mass_at(row)
            pend_mass_by(total)
        settle()
        _add_in_order(self._mass, mass_at, mass_by)

    def mass(self, n_items: int) -> np.ndarray:
        self._mass = grow_to(self._mass, n_items)
        return self._mass[:n_items]

    def prior_now(self) -> float:
        """``prior_mass`` in the units the mass is stored in at the latest time (they grow as the
        clock forgets: :meth:`~models.popularity.DecayClock.units`, which moves in steps, so that
        cached normalisations stay valid between them)."""
        return self.prior_mass * self.clock.units() if self.prior_mass else 0.0

    def norm(self, mass: np.ndarray, prior: float | None = None) -> np.ndarray:
        """Each item's normalisation, ``(mass + prior) ** -alpha``, of the items whose :meth:`mass`
        is ``mass`` (``prior``: :meth:`prior_now`, if known). Elementwise: a subset's values are
        those of the whole."""
        if prior is None:
            prior = self.prior_now()
        return np.power(np.maximum(mass + prior, 1e-300), -self.alpha)

    def score(self, history: Sequence[int], weights: Sequence[float], n_items: int) -> np.ndarray:
        """Cosine-like neighbourhood score of every item for a weighted history."""
        mass = self.mass(n_items)
        if not len(history):
            return np.zeros(n_items)
        norm = self.norm(mass) if self.alpha else np.ones(n_items)
        w = [wh * norm[h] for h, wh in zip(history, weights)]
        scores = self.rows.gather(history, w, n_items)
        scores *= norm
        return scores

    def score_sparse(self, history: Sequence[int], weights: Sequence[float],
                     mass: np.ndarray, per_row: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`score` on its support only: ``(rows ascending, scores)``.

        ``mass`` is :meth:`mass` ``(n_items)``. The scores are bit-identical to
        the dense ones at those rows (same operations, same summation order);
        every other item scores 0. ``per_row``: only the strongest ``per_row``
        neighbours of each history item count (:meth:`SparseRows.strongest`).
        """
        if not len(history):
            return np.empty(0, dtype=np.int64), np.empty(0)
        alpha = self.alpha
        hist = np.asarray(history, dtype=np.int64)
        norm_h = self.norm(mass[hist]) if alpha else np.ones(len(hist))
        regions = self.rows.regions(hist)
        if not regions[1].sum():
            return np.empty(0, dtype=np.int64), np.empty(0)
        idx, lengths = self.rows.strongest(hist, per_row, regions)
        cols = self.rows.columns[idx]
        # Each neighbour value times its history item's weight (the same
        # products as CoVisitation.score, summed in the same order).
        w = np.asarray(weights, dtype=np.float64) * norm_h
        vals = self.rows.values[idx] * np.repeat(w, lengths)
        order = np.argsort(cols, kind="stable")
        cols = cols[order]
        starts = np.flatnonzero(np.concatenate(([True], cols[1:] != cols[:-1])))
        rows = cols[starts]
        scores = np.add.reduceat(vals[order], starts)
        if alpha:
            scores *= self.norm(mass[rows])
        return rows.astype(np.int64), scores

    def __getstate__(self):
        state = self.__dict__.copy()
        nz = np.flatnonzero(self._mass)
        state["_mass"] = self._mass[: (nz[-1] + 1) if len(nz) else 0].copy()
        return state


def _add_in_order(array: np.ndarray, at: list[int], by: list[float]) -> None:
    """``array[at[k]] += by[k]`` for every ``k`` in order: each element takes its additions one after
    the other, as a loop would (``np.add.at``, or the loop itself where numpy's cost per call is more)."""
    if len(at) > 16:
        np.add.at(array, at, by)
    else:
        for i, x in zip(at, by):
            array[i] += x
