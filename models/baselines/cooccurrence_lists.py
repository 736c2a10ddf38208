"""The co-occurrence lists of one ``recommend`` call: block by block, from the cheapest proof that holds."""

from __future__ import annotations

from itertools import chain

import numpy as np

from models.baselines import paths
from models.baselines.block_ranking import TIE, BlockRanking
from models.baselines.request import Request
from models.baselines.selection import NO_ROWS, Order, best_of, first_allowed
from models.covisit import concat_ranges
from models.ranking.topk import top_n
from models.sets import isin, member, union_sorted

__all__ = ["CooccurrenceLists", "cold_lists"]

# Entries ranked together in one block (users per block: this over their entries): enough to
# amortise numpy's per-call cost, few enough for a block's arrays to stay in cache.
_BLOCK_ENTRIES = 1 << 17
_MAX_BLOCK = 256  # users per block, at most (one-byte radix sorts)


class CooccurrenceLists:
    """The co-occurrence lists of the users of one call (see :class:`~models.baselines.CooccurrenceBaseline`).

    For users ``ks`` (indices into the call's users, each with a history):
    the ``need`` best items they may be shown, further skipping ``extra``
    rows, and, where ``want_max``, their best score over the whole catalogue
    (no row skipped: ``RepeatCooccurrenceBaseline`` puts its repeat items above it).
    Results accumulate in :attr:`users`, :attr:`ranks`, :attr:`rows`, :attr:`scores`
    (positions in ``ks``) and :attr:`best` (per user, ``nan`` where not asked).
    """

    def __init__(self, model, request: Request):
        self.model, self.request = model, request
        self.cooc, self.index = model.cooc, model._pair_index()
        self.n_items = request.n_items
        self.pop = model.popularity.scores(self.n_items)
        top = self.pop.max()
        self.scale = 1e-9 / top if top > 0 else 0.0  # the tiebreak is pop * scale, as in _scores
        self.decay = model.decay
        self.head_norm = self.norm if self.decay is not None else None
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

    def rank(self, ks: list[int], need: np.ndarray, extra: list[np.ndarray], want_max: np.ndarray) -> None:
        """Rank users ``ks`` (see the class) block by block: users with few neighbour entries from all of
        them, the others from their rows' heads, deeper for those that shallow heads do not prove; the
        few left over one by one."""
        self.best = np.full(len(ks), np.nan)
        entries = self.entries(ks)
        todo = np.arange(len(ks))
        # The heads have a fixed cost per call that a few users do not repay.
        heads = self.model._heads_for_ranking(self.request.exclude) if len(ks) >= paths.MIN_BLOCK else None
        small = entries <= (paths.FULL_BELOW if heads is not None else paths.DENSE_ABOVE * self.n_items)
        left = [self._blocks(None, 0, todo[small], entries[small], ks, need, extra, want_max)]
        big = todo[~small]
        for level in range(len(heads.sizes) if heads is not None else 0):
            big = self._blocks(heads, level, big, entries[big], ks, need, extra, want_max)
        for j in np.concatenate(left + [big]).tolist():
            self.full(j, ks[j], int(need[j]), extra[j], bool(want_max[j]))

    def _blocks(self, heads, level: int, js: np.ndarray, entries: np.ndarray, ks, need, extra,
                want_max) -> np.ndarray:
        """Rank users ``js`` (positions in ``ks``) by :class:`BlockRanking`, a block at a time; those left."""
        if not len(js):
            return js
        per_user = entries if heads is None else np.full(len(js), heads.sizes[level] * self.model.window)
        done = np.zeros(len(js), dtype=bool)
        a = 0
        while a < len(js):
            b = a + max(1, int(np.searchsorted(np.cumsum(per_user[a:a + _MAX_BLOCK]), _BLOCK_ENTRIES, side="right")))
            at = js[a:b]
            block = BlockRanking(self, heads, level, [ks[j] for j in at], need[at], [extra[j] for j in at],
                                 want_max[at])
            done[a:b] = block.run(at)
            a = b
        return js[~done]

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

    def full(self, at: int, k: int, need: int, extra: np.ndarray, want_max: bool) -> None:
        """The list (and best score) of one user from every neighbour of its items (or, when they
        outnumber the catalogue, from ``_scores``' dense array: the same scores, cheaper then)."""
        request = self.request
        if self.entries([k])[0] > paths.DENSE_ABOVE * self.n_items:
            self.dense(at, k, need, extra, want_max)
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
        skip = union_sorted(request.excluded(k), extra)
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

    def dense(self, at: int, k: int, need: int, extra: np.ndarray, want_max: bool) -> None:
        """:meth:`full` from the dense definition (the model's co-occurrence scores of every item)."""
        request = self.request
        scores = self.model._cooccurrence_scores(request.users[k], self.n_items)
        if want_max:
            self.best[at] = scores.max()
        if need <= 0:
            return
        scores[request.blocked] = -np.inf
        scores[request.excluded(k)] = -np.inf
        scores[extra] = -np.inf
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
