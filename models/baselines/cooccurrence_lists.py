"""The co-occurrence lists of one ``recommend`` call: every user summed over all its rows' entries at once."""

from __future__ import annotations

from itertools import chain

import numpy as np

from models.baselines import paths
from models.baselines.kernels import TIE, rank_from_rows
from models.baselines.request import Request
from models.baselines.selection import NO_ROWS, Order, best_of, first_allowed
from models.groups import concat_ranges, firsts, within
from models.ranking.topk import top_n
from models.sets import isin, member

__all__ = ["CooccurrenceLists", "cold_lists"]


class CooccurrenceLists:
    """The co-occurrence lists of the users of one call (see :class:`~models.baselines.CooccurrenceBaseline`).

    For users ``ks`` (indices into the call's users, each with a history):
    the ``need`` best items they may be shown and, where ``want_max``, their
    best score over the whole catalogue (no row skipped:
    ``RepeatCooccurrenceBaseline`` puts its repeat items above it).
    Results accumulate in :attr:`users`, :attr:`ranks`, :attr:`rows`, :attr:`scores`
    (positions in ``ks``) and :attr:`best` (per user, ``nan`` where not asked).
    """

    def __init__(self, model, request: Request):
        self.model, self.request = model, request
        self.cooc = model.cooc
        self.n_items = request.n_items
        self.pop = model.popularity.scores(self.n_items)
        top = self.pop.max()
        self.scale = 1e-9 / top if top > 0 else 0.0  # the tiebreak is pop * scale, as in _scores
        self.decay = model.decay
        self._orders: dict[bool, Order] = {}
        self.users, self.ranks, self.rows, self.scores = [], [], [], []

    # -- scores, exactly as CooccurrenceBaseline._scores computes them ----------

    def norm(self, cols: np.ndarray) -> np.ndarray:
        """The decayed scores' divisor of ``cols``, ``sqrt(max(popularity, 1))``."""
        return np.sqrt(np.maximum(self.pop[cols], 1.0))

    def score(self, cols: np.ndarray, sums: np.ndarray) -> np.ndarray:
        """Scores of ``cols`` from their co-occurrence sums (normalised, plus the tiebreak)."""
        if self.decay is not None:
            sums = sums / self.norm(cols)
        return sums + self.pop[cols] * self.scale

    def weights(self, lengths: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Weight of the ``i``-th most recent item of a history of ``lengths`` items."""
        if self.decay is None:
            return np.ones(len(i))
        return self.model._weight_table(int(lengths.max(initial=0)))[lengths, i]

    def order(self, blocked: bool) -> Order:
        """Catalogue rows by tiebreak (popularity), skipping unavailable ones if ``blocked``."""
        if blocked not in self._orders:
            self._orders[blocked] = Order(self.pop * self.scale, self.request.blocked if blocked else None)
        return self._orders[blocked]

    # -- ranking --------------------------------------------------------------

    def rank(self, ks: list[int], need: np.ndarray, want_max: np.ndarray) -> None:
        """Rank users ``ks`` (see the class) from every entry of their history rows, in one compiled
        pass (:func:`~models.baselines.kernels.rank_from_rows`); the few whose list needs items
        without co-occurrence, or whose best score may be one, one by one (:meth:`full`)."""
        self.best = np.full(len(ks), np.nan)
        if not ks:
            return
        hist = [self.request.users[k].history for k in ks]
        m = np.fromiter(map(len, hist), dtype=np.int64, count=len(hist))
        rows = np.fromiter(chain.from_iterable(h[::-1] for h in hist), dtype=np.int64, count=int(m.sum()))
        recency = within(m)  # (0 for each user's latest item)
        starts, lens = self.cooc.regions(rows)
        skips = [self.request.excluded(k) for k in ks]
        skip_lens = np.fromiter(map(len, skips), dtype=np.int64, count=len(skips))
        width = max(int(need.max(initial=0)), 1)
        out_rows = np.full((len(ks), width), -1, dtype=np.int64)
        out_scores = np.full((len(ks), width), -np.inf)
        count, best, left = np.zeros(len(ks), dtype=np.int64), np.zeros(len(ks)), np.zeros(len(ks), dtype=bool)
        acc, seen, flag = self.model._scratch(self.n_items, ("acc", "seen", "flag"))
        rank_from_rows(firsts(m), starts, lens, self.weights(np.repeat(m, m), recency), self.cooc.columns,
                       self.cooc.values, self.pop, float(self.scale), self.decay is not None, self.request.blocked,
                       firsts(skip_lens), np.concatenate(skips).astype(np.int64, copy=False),
                       need.astype(np.int64, copy=False), want_max.astype(bool, copy=False), acc, seen, flag,
                       out_rows, out_scores, count, best, left)
        self.best = np.where(want_max, best, np.nan)
        listed = np.where(left, 0, count)
        users = np.repeat(np.arange(len(ks)), listed)
        ranks = within(listed)
        self.add(users, ranks, out_rows[users, ranks], out_scores[users, ranks])
        for j in np.flatnonzero(left).tolist():
            self.full(j, ks[j], int(need[j]), bool(want_max[j]))

    def entries(self, ks: list[int]) -> np.ndarray:
        """Neighbour entries of each user's history rows (what the full path gathers)."""
        hist = [self.request.users[k].history for k in ks]
        m = np.fromiter(map(len, hist), dtype=np.int64, count=len(hist))
        # Only the history rows' lengths: a call for one customer in a large catalogue must not
        # cost one step per catalogue row. (Rows the counts have not reached yet: none.)
        slots = self.cooc._slots
        n_rows = len(slots)
        per_row = np.fromiter((len(slots[r]) if r < n_rows else 0 for r in chain.from_iterable(hist)),
                              dtype=np.int64, count=int(m.sum()))
        return np.bincount(np.repeat(np.arange(len(ks)), m), per_row, minlength=len(ks)).astype(np.int64)

    def add(self, users, ranks, rows, scores) -> None:
        """Entries of the lists (users by position in ``ks``)."""
        self.users.append(users)
        self.ranks.append(ranks)
        self.rows.append(rows)
        self.scores.append(scores)

    def collected(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every entry added: ``(user, rank, row, score)``."""
        if not self.users:
            return NO_ROWS, NO_ROWS, NO_ROWS, np.zeros(0)
        cat = np.concatenate
        return cat(self.users), cat(self.ranks), cat(self.rows), cat(self.scores)

    # -- one user at a time: what the blocks leave ------------------------------

    def support(self, user) -> tuple[np.ndarray, np.ndarray]:
        """Every item co-occurring with the user's history and its score: the dense ``_scores``
        at those rows (the same sums in the same order); every other item scores its tiebreak."""
        rows = np.fromiter(reversed(user.history), dtype=np.int64, count=len(user.history))
        starts, lens = self.cooc.regions(rows)
        idx = concat_ranges(starts, lens)
        cols = self.cooc.columns[idx].astype(np.int64)
        vals = self.cooc.values[idx]
        if self.decay is not None:
            vals = vals * np.repeat(self.weights(np.full(len(rows), len(rows)), np.arange(len(rows))), lens)
        acc, mark = self.model._scratch(self.n_items, ("acc", "mark"))
        np.add.at(acc, cols, vals)  # in order, as np.bincount sums them
        ar = np.arange(len(cols))
        mark[cols] = ar
        cols = cols[mark[cols] == ar]
        sums = acc[cols]
        acc[cols] = 0.0
        return cols, self.score(cols, sums)

    def full(self, at: int, k: int, need: int, want_max: bool) -> None:
        """The list (and best score) of one user from every neighbour of its items (or, when they
        outnumber the catalogue, from ``_scores``' dense array: the same scores, cheaper then)."""
        request = self.request
        if self.entries([k])[0] > paths.DENSE_ABOVE * self.n_items:
            self.dense(at, k, need, want_max)
            return
        cols, scores = self.support(request.users[k])
        if want_max:
            best = scores.max(initial=-np.inf)
            if not best > TIE:  # the best may be an item without co-occurrence: the first by tiebreak
                order = self.order(False).prefix(len(cols) + 1)
                order = order[~isin(order, cols)]
                if len(order):
                    best = max(best, self.pop[order[0]] * self.scale)
            self.best[at] = best
        if need <= 0:
            return
        skip = request.excluded(k)
        ok = ~request.blocked[cols] & ~member(cols, skip)
        cols, scores = cols[ok], scores[ok]
        mine = best_of(cols, scores, need)
        rows, scores = cols[mine], scores[mine]
        if len(mine) < need or not scores[-1] > TIE:
            # Items without co-occurrence score their tiebreak: the best of them
            # by it (the others cannot beat them) compete with the list.
            fill = self.order(True).prefix(need + len(skip))
            fill = fill[~member(fill, skip) & ~isin(fill, cols)][:need]
            rows = np.concatenate((rows, fill))
            scores = np.concatenate((scores, self.pop[fill] * self.scale))
            best = best_of(rows, scores, need)
            rows, scores = rows[best], scores[best]
        self.add(np.full(len(rows), at), np.arange(len(rows)), rows, scores)

    def dense(self, at: int, k: int, need: int, want_max: bool) -> None:
        """:meth:`full` from the dense definition (the model's co-occurrence scores of every item)."""
        request = self.request
        scores = self.model._cooccurrence_scores(request.users[k], self.n_items)
        if want_max:
            self.best[at] = scores.max()
        if need <= 0:
            return
        scores[request.blocked] = -np.inf
        scores[request.excluded(k)] = -np.inf
        rows = top_n(scores, need)
        self.add(np.full(len(rows), at), np.arange(len(rows)), rows, scores[rows])


def cold_lists(request: Request, lists: CooccurrenceLists, ks: list[int]) -> None:
    """Lists of users without a history: items by tiebreak (popularity), the user's exclusions applied."""
    if not ks:
        return
    skip_user, skip_rows = request.exclusions(ks)
    most = int(np.bincount(skip_user).max(initial=0)) if len(skip_user) else 0
    order = lists.order(True).prefix(request.n + most)
    users, ranks, rows = first_allowed(order, np.full(len(ks), request.n), skip_user, skip_rows, request.n_items)
    request.put(np.asarray(ks, dtype=np.int64)[users], ranks, rows, lists.pop[rows] * lists.scale)
