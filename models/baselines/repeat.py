"""The repeat baselines: the customer's own recent items, alone or followed by decayed co-occurrence."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np

from models.baselines import paths
from models.baselines.cooccurrence import DecayedCooccurrenceBaseline
from models.baselines.cooccurrence_lists import CooccurrenceLists, cold_lists
from models.baselines.request import BatchedRecommender, Request
from models.baselines.selection import position_in_group, recent_first
from models.groups import within
from models.sets import member, unique_sorted

__all__ = ["RepeatBaseline", "RepeatCooccurrenceBaseline"]


def repeat_entries(request: Request, ks: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The distinct history rows of users ``ks``, most recent first, that they may be shown:
    ``(user, position among all its distinct rows, row, its number of distinct rows)``, users by position in ``ks``."""
    hist = [recent_first(request.users[k].history) for k in ks]
    lens = np.fromiter(map(len, hist), dtype=np.int64, count=len(hist))
    user = np.repeat(np.arange(len(ks)), lens)
    rows = np.fromiter(chain.from_iterable(hist), dtype=np.int64, count=int(lens.sum()))
    pos = within(lens)
    skip_user, skip_rows = request.exclusions(ks)
    n_items = request.n_items
    ok = ~request.blocked[rows] & ~member(user * n_items + rows, skip_user * n_items + skip_rows)
    return user[ok], pos[ok], rows[ok], lens[user[ok]]


class RepeatBaseline(BatchedRecommender):
    """The customer's own last ``window`` distinct items, most recent first, and nothing else.

    Shoppers come back to what they looked at; with re-views allowed
    (``exclude="purchased"``) this is the first thing a ranker must beat.

    >>> from models.ranking import valid_counts, valid_part
    >>> m = RepeatBaseline()
    >>> for item in "xyzy":
    ...     m.learn_one("a", item)
    >>> ids, scores = m.recommend(["a"], n=5, exclude="purchased")
    >>> valid_part(ids, scores, 0)[0].tolist()
    ['y', 'z', 'x']
    >>> ids, scores = m.recommend(["a"], n=5, exclude="interacted")  # nothing else to offer
    >>> valid_counts(scores).tolist()
    [0]
    """

    def __init__(self, window: int = 20, seed: int = 0):
        self.window = window
        super().__init__(history_size=window, seed=seed)

    def _learn(self, user_id, user, row, weight, ts, personal=True):
        pass

    def _scores(self, user_id, user, n_items):
        scores = np.full(n_items, -np.inf)
        if user is not None:
            rows = recent_first(user.history)
            scores[rows] = np.arange(len(rows), 0, -1, dtype=float)
        return scores

    def _rank(self, request: Request) -> None:
        """Only the users' own items are looked at."""
        ks = np.array([k for k, user in enumerate(request.users) if user is not None], dtype=np.int64)
        user, pos, rows, lens = repeat_entries(request, ks.tolist())
        rank, _ = position_in_group(user, len(ks))
        sel = rank < request.n
        request.put(ks[user[sel]], rank[sel], rows[sel], (lens - pos)[sel].astype(float))


class RepeatCooccurrenceBaseline(DecayedCooccurrenceBaseline):
    """:class:`RepeatBaseline`'s list, then decayed co-occurrence (:class:`DecayedCooccurrenceBaseline`) to fill it.

    >>> m = RepeatCooccurrenceBaseline()
    >>> for user, items in {"a": "xy", "b": "xz"}.items():
    ...     for item in items:
    ...         m.learn_one(user, item)
    >>> ids, _ = m.recommend(["a"], n=3, exclude="purchased")
    >>> ids[0].tolist()
    ['y', 'x', 'z']
    """

    def _scores(self, user_id, user, n_items):
        scores = super()._scores(user_id, user, n_items)
        if user is None or not user.history:
            return scores
        top = scores.max() if n_items else 0.0
        rows = recent_first(user.history)
        # Above every co-occurrence score, most recent first.
        scores[rows] = top + 1.0 + np.arange(len(rows), 0, -1, dtype=float)
        return scores

    def recommend_with_decayed(self, user_ids: Sequence[str], n: int = 20, exclude: str = "purchased"):
        """``(this model's lists, DecayedCooccurrenceBaseline's lists)`` for the same call, ranked together.

        Both models learn the same counts, and a repeat list's co-occurrence part is the decayed list
        without history items: one pass over the counts ranks both (a replay scores both baselines for
        the cost of one). Each is what that model's ``recommend`` returns.

        >>> m, alone = RepeatCooccurrenceBaseline(), DecayedCooccurrenceBaseline()
        >>> for user, items in {"a": "xy", "b": "xz"}.items():
        ...     for item in items:
        ...         m.learn_one(user, item)
        ...         alone.learn_one(user, item)
        >>> (mine, _), (decayed, _) = m.recommend_with_decayed(["a"], n=3, exclude="purchased")
        >>> mine[0].tolist(), decayed[0].tolist(), alone.recommend(["a"], n=3)[0][0].tolist()
        (['y', 'x', 'z'], ['y', 'z', 'x'], ['y', 'z', 'x'])
        """
        if paths.dense_is_cheaper(self, user_ids):
            return self.recommend(user_ids, n, exclude), self._dense_lists(user_ids, n, exclude, super()._scores)
        mine, decayed = Request(self, user_ids, n, exclude), Request(self, user_ids, n, exclude)
        if not mine.empty:
            self._rank_both(mine, decayed)
        return mine.result(), decayed.result()

    def _rank(self, request: Request) -> None:
        self._rank_both(request, None)

    def _rank_both(self, request: Request, decayed: Request | None) -> None:
        """The repeat items the user may be shown, scored above the user's best co-occurrence score, then
        the co-occurrence list without history items; into ``decayed`` (if given) the decayed lists.

        One pass ranks, per user, the best ``n + |history|`` items it may be shown (history items
        among them): its first ``n`` are the decayed list, and without the history items it holds the
        co-occurrence part of any repeat list (at most ``n`` of them).
        """
        lists = CooccurrenceLists(self, request)
        ks = request.with_history()
        n, n_items = request.n, request.n_items
        user, pos, rows, lens = repeat_entries(request, ks)
        rank, _ = position_in_group(user, len(ks))
        sel = rank < n
        user, rank, pos, rows, lens = user[sel], rank[sel], pos[sel], rows[sel], lens[sel]
        shown = np.bincount(user, minlength=len(ks))
        history = [unique_sorted(np.fromiter(request.users[k].history, dtype=np.int64)) for k in ks]
        history_lens = np.fromiter(map(len, history), dtype=np.int64, count=len(history))
        lists.rank(ks, n + history_lens, np.ones(len(ks), dtype=bool))
        kk = np.asarray(ks, dtype=np.int64)
        top = lists.best[user] + 1.0  # the best co-occurrence score over the catalogue, as _scores has it
        request.put(kk[user], rank, rows, top + (lens - pos).astype(float))
        cu, cr, crows, cscores = lists.collected()
        if decayed is not None:
            first = cr < n
            decayed.put(kk[cu[first]], cr[first], crows[first], cscores[first])
            cold_lists(decayed, lists, decayed.without_history())
        history_keys = np.repeat(np.arange(len(ks)), history_lens) * n_items
        if history:
            history_keys = history_keys + np.concatenate(history)  # (ascending: users in order, rows sorted)
        keep = ~member(cu * n_items + crows, history_keys)
        cu, cr, crows, cscores = cu[keep], cr[keep], crows[keep], cscores[keep]
        order = np.lexsort((cr, cu))
        cu, crows, cscores = cu[order], crows[order], cscores[order]
        at, _ = position_in_group(cu, len(ks))
        fill = at < n - shown[cu]
        request.put(kk[cu[fill]], at[fill] + shown[cu[fill]], crows[fill], cscores[fill])
        cold_lists(request, lists, request.without_history())
