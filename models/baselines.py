"""Streaming baselines with the same interface as :class:`~models.ranking.HybridRanker`.

They exist to keep the ranker honest: ``recostream replay`` evaluates them in
the same prequential run.

"""

from __future__ import annotations

import numpy as np

from models.covisit import SparseRows
from models.popularity import TrendingPopularity
from models.ranking.base import StreamingRecommender

__all__ = ["PopularityBaseline", "CooccurrenceBaseline", "DecayedCooccurrenceBaseline", "RepeatBaseline",
           "RepeatCooccurrenceBaseline"]


class PopularityBaseline(StreamingRecommender):
    """Most interacted items so far (cumulative counts, every event counts 1).

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

    def _learn(self, user_id, user, row, weight, ts):
        self.popularity.update(row, 1.0)

    def _scores(self, user_id, user, n_items):
        return self.popularity.scores(n_items).copy()


class CooccurrenceBaseline(StreamingRecommender):
    """Item co-occurrence within each user's last ``window`` items.

    When a user interacts with ``j``, every item ``h`` among their previous
    ``window`` items gets ``C[h, j] += 1`` and ``C[j, h] += 1`` (symmetric,
    unbounded, event types ignored). A user is scored by summing the rows of
    their last ``window`` items.

    With ``decay`` set, a pair at distance ``d`` counts ``decay ** (d - 1)``,
    history items are weighted the same way at scoring time and scores are
    divided by ``sqrt(item popularity)`` (cosine-like normalisation).

    Parameters
    ----------
    window
        History length considered.
    decay
        ``None`` for plain counts, else the per-step distance decay.

    Examples
    --------
    >>> m = CooccurrenceBaseline(window=20)
    >>> for user, items in {"a": "xy", "b": "xy", "c": "xz"}.items():
    ...     for item in items:
    ...         m.learn_one(user, item)
    >>> m.learn_one("d", "x")
    >>> ids, scores = m.recommend(["d"], n=2, exclude="interacted")
    >>> ids[0].tolist(), scores[0].round(6).tolist()
    (['y', 'z'], [2.0, 1.0])

    """

    def __init__(self, window: int = 20, decay: float | None = None, seed: int = 0):
        self.window = window
        self.decay = decay
        super().__init__(history_size=window, seed=seed)

    def _reset(self):
        super()._reset()
        self.cooc = SparseRows(max_neighbors=None)
        self.popularity = TrendingPopularity(half_life=None)

    def _learn(self, user_id, user, row, weight, ts):
        self.popularity.update(row, 1.0)
        w, decay = 1.0, 1.0 if self.decay is None else self.decay
        for h in reversed(user.history):
            if h != row:
                self.cooc.add(h, row, w)
                self.cooc.add(row, h, w)
            w *= decay

    def _scores(self, user_id, user, n_items):
        # Popularity breaks ties (e.g. between items with no co-occurrence at
        # all) at a scale far below one co-occurrence.
        pop = self.popularity.scores(n_items)
        tiebreak = pop * (1e-9 / pop.max()) if n_items and pop.max() > 0 else np.zeros(n_items)
        if user is None or not user.history:
            return tiebreak
        rows = list(reversed(user.history))
        if self.decay is None:
            weights = [1.0] * len(rows)
        else:
            weights = list(self.decay ** np.arange(len(rows)))
        scores = self.cooc.gather(rows, weights, n_items)
        if self.decay is not None:
            scores /= np.sqrt(np.maximum(pop, 1.0))
        return scores + tiebreak


class DecayedCooccurrenceBaseline(CooccurrenceBaseline):
    """:class:`CooccurrenceBaseline` with ``decay=0.9`` (recency + cosine-like).

    >>> DecayedCooccurrenceBaseline().decay
    0.9

    """

    def __init__(self, window: int = 20, decay: float = 0.9, seed: int = 0):
        super().__init__(window=window, decay=decay, seed=seed)


def _recent_first(history) -> list[int]:
    """Distinct rows of a user's history, most recent first."""
    seen: set[int] = set()
    out = []
    for row in reversed(history):
        if row not in seen:
            seen.add(row)
            out.append(row)
    return out


class RepeatBaseline(StreamingRecommender):
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

    def _learn(self, user_id, user, row, weight, ts):
        pass

    def _scores(self, user_id, user, n_items):
        scores = np.full(n_items, -np.inf)
        if user is not None:
            rows = _recent_first(user.history)
            scores[rows] = np.arange(len(rows), 0, -1, dtype=float)
        return scores


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
        rows = _recent_first(user.history)
        # Above every co-occurrence score, most recent first.
        scores[rows] = top + 1.0 + np.arange(len(rows), 0, -1, dtype=float)
        return scores
