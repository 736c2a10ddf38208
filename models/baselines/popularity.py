"""The popularity baseline: the most interacted items so far, the same list for everybody."""

from __future__ import annotations

import numpy as np

from models.baselines.request import BatchedRecommender, Request
from models.baselines.selection import Order, first_allowed
from models.popularity import TrendingPopularity
from models.ranking.topk import top_n
from models.sets import member, union_sorted

__all__ = ["PopularityBaseline"]

_LEADERS = 64  # most popular rows kept ordered between calls
_FEW_SHORT = 4  # users who exclude too many leaders, ranked one by one from every score


class PopularityBaseline(BatchedRecommender):
    """Most interacted items so far (cumulative counts, every event counts 1).

    ``recommend`` orders the catalogue once per call (its leaders are kept
    from call to call) and gives each user the first items it may be shown.

    Examples
    --------
    >>> m = PopularityBaseline()
    >>> for user, item in [("a", "x"), ("b", "x"), ("b", "y")]:
    ...     m.learn_one(user, item)
    >>> ids, scores = m.recommend(["c", "b"], n=2, exclude="interacted")
    >>> ids
    array([['x', 'y'],
           [None, None]], dtype=object)
    >>> scores
    array([[  2.,   1.],
           [-inf, -inf]])

    """

    def __init__(self, history_size: int = 20, seed: int = 0):
        super().__init__(history_size=history_size, seed=seed)

    def _reset(self):
        super()._reset()
        self.popularity = TrendingPopularity(half_life=None)

    def _learn(self, user_id, user, row, weight, ts, personal=True):
        self.popularity.update(row, 1.0)

    def _scores(self, user_id, user, n_items):
        return self.popularity.scores(n_items).copy()

    def _rank(self, request: Request) -> None:
        """The catalogue is ordered once for all users; each takes the first items it may be shown."""
        skip_user, skip_rows = request.exclusions(range(len(request.users)))
        need = np.full(len(request.users), request.n)
        order = self._leaders(request.blocked)
        users, ranks, rows = first_allowed(order, need, skip_user, skip_rows, request.n_items)
        short = np.bincount(users, minlength=len(need)) < need
        short = np.flatnonzero(short) if len(order) == _LEADERS else short[:0]  # (else: every row is a leader)
        pop = self.popularity.scores(request.n_items)
        if len(short):
            keep = ~member(users, short)  # (short: ascending)
            users, ranks, rows = users[keep], ranks[keep], rows[keep]
            if len(short) <= _FEW_SHORT:
                self._rank_each(request, short, pop)
            else:  # many: a longer order, as long as the most any of them skips
                sel = member(skip_user, short)
                order = Order(pop, request.blocked).prefix(request.n + int(np.bincount(skip_user).max(initial=0)))
                again = first_allowed(order, need[short], np.searchsorted(short, skip_user[sel]), skip_rows[sel],
                                      request.n_items)
                request.put(short[again[0]], again[1], again[2], pop[again[2]])
        request.put(users, ranks, rows, pop[rows])

    @staticmethod
    def _rank_each(request: Request, ks: np.ndarray, pop: np.ndarray) -> None:
        """The lists of users ``ks`` from every item's score (a few users who exclude many leaders)."""
        for k in ks.tolist():
            scores = pop.copy()
            scores[request.blocked] = -np.inf
            scores[request.excluded(k)] = -np.inf
            best = top_n(scores, request.n)
            request.put(np.full(len(best), k), np.arange(len(best)), best, scores[best])

    def _leaders(self, blocked: np.ndarray) -> np.ndarray:
        """The :data:`_LEADERS` most popular available rows, ties to the lower row (fewer if there are not as many).

        Kept from call to call: counts only grow, so the new leaders are among
        the old ones and the rows counted since (``track_changes``). They are
        chosen from the whole catalogue again when its availability changed or
        when rows without counts reach the cut (new items could tie with them).
        """
        kept = self.__dict__.get("_leaders_kept")
        changed = self.popularity.track_changes()
        pop = self.popularity.scores(len(self.catalog))
        if kept is not None and changed is not None and kept["version"] == self.catalog.version and kept["cut"] > 0:
            rows = union_sorted(kept["rows"], np.asarray(changed, dtype=np.int64))
            rows = rows[~blocked[rows]]
            rows = rows[np.lexsort((rows, -pop[rows]))][:_LEADERS]
        else:
            rows = Order(pop, blocked).prefix(_LEADERS)
        cut = pop[rows[-1]] if len(rows) == _LEADERS else 0.0  # every row listed: new ones may come in
        self.__dict__["_leaders_kept"] = {"rows": rows, "cut": cut, "version": self.catalog.version}
        return rows

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_leaders_kept", None)  # derived from the counts, rebuilt on demand
        return state
