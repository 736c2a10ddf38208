"""The hybrid ranker's item-side state: catalogue, popularity, co-visits, successors, and how they are built."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from models.adaptive_popularity import AdaptivePopularity
from models.catalog import Catalog
from models.covisit import CoVisitation
from models.popularity import TrendingPopularity

__all__ = ["ItemState"]


class ItemState:
    """Item-side state of the hybrid ranker: catalogue, popularity, co-visits, successors.

    Everything here is a sum over events, anonymous and independent of which
    learner saw them (forgetting a user keeps it). The ranker updates it in
    :meth:`HybridRanker._learn`.

    Examples
    --------
    >>> from models.ranking import HybridRanker
    >>> r = HybridRanker(popularity_half_life=None)
    >>> r.learn_one("ann", "boots"); r.learn_one("ann", "socks")
    >>> items = r.items
    >>> items.catalog is r.catalog, items.popularity.scores(2).tolist()
    (True, [1.0, 1.0])
    """

    def __init__(self, catalog: Catalog, popularity: AdaptivePopularity | TrendingPopularity, covisit: CoVisitation,
                 successors: CoVisitation | None = None):
        self.catalog = catalog
        self.popularity = popularity
        self.covisit = covisit
        self.successors = successors if successors is not None else _successors(covisit)

    def __setstate__(self, state):
        # Item state from before successors were counted starts counting them. (Keys interned as
        # pickle's default does, so that a re-dump is byte-identical.)
        self.__dict__.update((sys.intern(k), v) for k, v in state.items())
        if "successors" not in state:
            self.successors = _successors(self.covisit)

    def learn(self, histories: Sequence[tuple[int, ...]], rows: Sequence[int], weights: Sequence[float], ts) -> None:
        """Events ``rows[k]`` after ``histories[k]`` (rows, most recent first), of ``weights[k]`` at
        clock ``ts[k]``, one after the other: each structure takes them in one call, to the same
        state to the last bit as one event at a time (they are independent of each other)."""
        if len(rows) == 1:  # (one event: the structures' own one-event paths, without numpy's cost per call)
            history, row, weight, t = histories[0], int(rows[0]), float(weights[0]), ts[0]
            t = None if t is None else float(t)
            self.popularity.update(row, weight, t, novel=row not in history)
            self.covisit.update(history, row, weight, t)
            self.successors.update(history[:1], row, weight, t)
            return
        rows_a = np.asarray(rows, dtype=np.int64)
        weights_a = np.asarray(weights, dtype=np.float64)
        novel = np.fromiter((row not in h for h, row in zip(histories, rows)), dtype=bool, count=len(rows))
        self.popularity.update_many(rows_a, weights_a, ts, novel)
        self.covisit.update_many(histories, rows, weights_a, ts)
        self.successors.update_many([h[:1] for h in histories], rows, weights_a, ts)


def _popularity(half_life) -> AdaptivePopularity | TrendingPopularity:
    """Popularity forgetting at ``half_life``, or at the best of several (a tuple)."""
    if isinstance(half_life, tuple):
        return AdaptivePopularity(half_life)
    return TrendingPopularity(half_life)


def _successors(covisit: CoVisitation) -> CoVisitation:
    """Sequential rules: how often shoppers went from one item straight to another (the next event
    only, forward only, raw counts), with the co-visits' bounds and forgetting."""
    return CoVisitation(max_neighbors=covisit.max_neighbors, distance_decay=1.0, forward=1.0, backward=0.0,
                        half_life=covisit.half_life, alpha=0.0)
