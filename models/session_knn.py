"""Session-based nearest neighbours: what shoppers with the same recent items went on to look at."""

from __future__ import annotations

import numpy as np

from models.catalog import grow_to
from models.covisit import SparseRows
from models.groups import concat_ranges, run_starts

__all__ = ["SessionNeighbours"]


class SessionNeighbours:
    """An online session-kNN index (the neighbourhood method of session-based recommendation).

    Every customer's recent items are a *session*. To score items for a
    customer, the sessions that share its recent items are its neighbours,
    each weighted by the summed recency weights of the shared items; the
    ``neighbours`` most similar ones vote for their items with that weight.
    Unlike item co-visitation, which adds up pairs, a neighbour counts with
    its whole session, so items that go with the *combination* of what the
    customer looked at come first.

    An item keeps its ``sessions_per_item`` most recent sessions (a bounded
    :class:`~models.covisit.SparseRows` valued by event sequence number, up to
    twice that between prunings); a session keeps its ``items_per_session``
    most recent distinct items in one row of a fixed-width matrix (4 bytes
    per item and customer), so the items of thousands of neighbours are one
    numpy gather. Memory is bounded per item and per customer; old behaviour
    leaves as new sessions arrive. Similarity is found from the item side (the
    sessions that recently touched each item), votes from the session side.

    Parameters
    ----------
    sessions_per_item
        Recent sessions kept per item (candidates for neighbours).
    items_per_session
        Recent items kept per session (what a neighbour votes for).
    neighbours
        Most similar sessions that vote.

    Examples
    --------
    >>> knn = SessionNeighbours()
    >>> for user, items in {"a": [1, 2, 3], "b": [1, 2, 4], "c": [5, 4]}.items():
    ...     for row in items:
    ...         knn.update(user, row)
    >>> u, rows, votes = knn.scores(["d"], np.array([0, 0]), np.array([1, 2]), np.array([1.0, 0.9]))
    >>> rows.tolist(), votes.round(3).tolist()  # a and b share 1 and 2 with d: 1.9 each
    ([1, 2, 3, 4], [1.0, 1.0, 0.5, 0.5])
    >>> knn.forget("a")
    >>> knn.scores(["d"], np.array([0, 0]), np.array([1, 2]), np.array([1.0, 0.9]))[1].tolist()
    [1, 2, 4]
    """

    def __init__(self, sessions_per_item: int = 100, items_per_session: int = 20, neighbours: int = 50):
        self.sessions_per_item = sessions_per_item
        self.items_per_session = items_per_session
        self.neighbours = neighbours

    def _state(self):
        if "_slot" not in self.__dict__:
            self._slot: dict[str, int] = {}
            self._n_slots = 0
            self._seq = 0.0
            # Row per session: its items, oldest first, -1 where empty.
            self._items_of = np.full((16, self.items_per_session), -1, dtype=np.int32)
            self._sessions_of = SparseRows(self.sessions_per_item)
        return self

    def update(self, user_id: str, row: int) -> None:
        """``user_id`` interacted with catalogue row ``row`` (the latest event)."""
        s = self._state()
        slot = s._slot.get(user_id)
        if slot is None:
            slot = s._slot[user_id] = s._n_slots
            s._n_slots += 1
        s._seq += 1.0
        if slot >= len(s._items_of):
            s._items_of = grow_to(s._items_of, slot + 1, fill=-1)
        line = s._items_of[slot]
        at = np.flatnonzero(line == row)
        drop = int(at[0]) if len(at) else 0  # the item itself if present, else the oldest
        line[drop:-1] = line[drop + 1:]
        line[-1] = row
        _set(s._sessions_of, row, slot, s._seq)

    def forget(self, user_id: str) -> None:
        """Erase a customer's session: its slot keeps no items and no longer maps to it."""
        s = self._state()
        slot = s._slot.pop(user_id, None)
        if slot is not None and slot < len(s._items_of):
            s._items_of[slot] = -1

    def scores(self, user_ids, uh: np.ndarray, rows: np.ndarray, weights: np.ndarray):
        """Votes of each customer's neighbours: ``(user index, row, vote)`` sorted by user then row,
        votes divided by the customer's largest.

        ``(uh, rows, weights)`` are the customers' recent items: the index in
        ``user_ids`` of each, the row and its weight (higher for more recent
        ones). A customer never votes for itself.
        """
        s = self._state()
        empty = np.zeros(0, dtype=np.int64)
        if not len(rows) or not s._n_slots:
            return empty, empty, np.zeros(0)
        own = np.array([s._slot.get(u, -1) for u in user_ids], dtype=np.int64)
        # Candidate neighbours: the recent sessions of each recent item, with the item's weight,
        # summed per (customer, session).
        start, per = s._sessions_of.regions(rows)
        idx = concat_ranges(start, per)
        nb = s._sessions_of.columns[idx].astype(np.int64)
        nu = np.repeat(uh, per)
        keep = nb != own[nu]
        if not keep.any():
            return empty, empty, np.zeros(0)
        keys, sim = _sum_by_key((nu * s._n_slots + nb)[keep], np.repeat(weights, per)[keep])
        nu, nb = keys // s._n_slots, keys % s._n_slots
        # The most similar neighbours of each customer (ties: the later session).
        order = np.lexsort((-nb, -sim, nu))
        nu, nb, sim = nu[order], nb[order], sim[order]
        top = np.arange(len(nu)) - np.searchsorted(nu, nu) < self.neighbours
        nu, nb, sim = nu[top], nb[top], sim[top]
        # Their items, each with its session's similarity.
        items = s._items_of[nb]
        has = items >= 0
        per = has.sum(axis=1)
        keys, votes = _sum_by_key(np.repeat(nu, per) * _ROW_SPAN + items[has].astype(np.int64), np.repeat(sim, per))
        vu, vr = keys // _ROW_SPAN, keys % _ROW_SPAN
        first = run_starts(vu)
        best = np.maximum.reduceat(votes, first)
        return vu, vr, votes / np.repeat(best, np.diff(np.append(first, len(vu))))


def _sum_by_key(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``keys`` (ascending) and the sum of the ``values`` of each (in input order)."""
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    first = run_starts(keys)
    return keys[first], np.add.reduceat(values[order], first)


# Rows are catalogue rows (int32 in SparseRows): a (user, row) key fits in int64.
_ROW_SPAN = 1 << 31


def _set(rows: SparseRows, row: int, col: int, value: float) -> None:
    rows.add(row, col, value - rows.get(row, col))
