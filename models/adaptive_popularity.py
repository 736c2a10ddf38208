"""Popularity whose forgetting is chosen online: the half-life that has best predicted discoveries.

A trending popularity forgets at a rate counted in events, and the right rate
depends on the shop's traffic: 2,000 events are most of a day in a small shop
and a few minutes in a large one, where a list of what was popular over a
few minutes is mostly noise. :class:`AdaptivePopularity` keeps one
:class:`~models.popularity.TrendingPopularity` per candidate half-life, all
counting every event, and serves the one whose top list has lately held the
most of the items customers went on to discover (items not among their
recent ones: re-visits are the re-consumption features' job, and would
favour the fastest forgetting on any log). The choice is a function of the
event sequence only, so learners that see the same events choose alike.
"""

from __future__ import annotations

import numpy as np

from models.popularity import TrendingPopularity

__all__ = ["AdaptivePopularity"]


class AdaptivePopularity:
    """Trending popularity served at the candidate half-life whose top list predicts discoveries best.

    Each learned event the model is told whether it is a discovery (the
    customer had not met the item lately). A discovery found in a candidate's
    top ``top`` items, as they stood at the last review, is one hit for that
    candidate. Every ``every`` events the hits are reviewed: they fade with
    ``evidence_half_life`` (in events), and the served candidate changes when
    another has ``margin`` more of them. Until then the first candidate is
    served. Readers see the served candidate's
    :class:`~models.popularity.TrendingPopularity` itself (:meth:`scores`,
    :attr:`max_value`, :meth:`track_changes`); a change of candidate is a
    change of every value (:meth:`track_changes` returns ``None``).

    Parameters
    ----------
    half_lives
        Candidate half-lives, in the unit of the timestamps given to
        :meth:`update` (``None``: never forget). The first is served until the
        evidence says otherwise.
    top
        Length of the top list a candidate is judged by.
    every
        Events between reviews.
    evidence_half_life
        Half-life of a hit, in events.
    margin
        Hits by which a candidate must lead the served one to replace it.

    Examples
    --------
    One item in ten events is item 0; the other nine are new items, each
    met once. Over the last few events a new item often looks as popular as
    item 0; over all of them item 0 stands out:

    >>> pop = AdaptivePopularity(half_lives=(4, None), top=1, every=8)
    >>> for t in range(400):
    ...     row = 0 if t % 10 == 0 else t
    ...     pop.update(row, 1.0, t=float(t), novel=True)
    >>> pop.half_life is None, pop.hits.round(1).tolist()  # hits of each top list, faded
    (True, [0.0, 38.9])
    >>> int(pop.scores(400).argmax())
    0
    """

    def __init__(self, half_lives=(2_000, 8_000, 32_000, 128_000), top: int = 10, every: int = 256,
                 evidence_half_life: float = 100_000, margin: float = 2.0):
        half_lives = tuple(half_lives)
        if not half_lives:
            raise ValueError("half_lives must name at least one half-life")
        if top < 1 or every < 1 or not evidence_half_life > 0 or margin < 0:
            raise ValueError("top and every must be positive, evidence_half_life positive, margin non-negative")
        self.half_lives = half_lives
        self.top = top
        self.every = every
        self.evidence_half_life = evidence_half_life
        self.margin = margin
        self.counters = [TrendingPopularity(h) for h in half_lives]  # (each refuses a bad half-life)
        self.served = 0
        self.hits = np.zeros(len(half_lives))
        self.tops: list[tuple[int, ...]] = [() for _ in half_lives]
        self.touched: list[int] = []  # rows counted since the last review
        self.n_updates = 0

    @property
    def half_life(self) -> float | None:
        """The served candidate's half-life."""
        return self.half_lives[self.served]

    @property
    def serving(self) -> TrendingPopularity:
        """The served candidate's counter."""
        return self.counters[self.served]

    def update(self, row: int, weight: float = 1.0, t: float | None = None, novel: bool = True) -> None:
        """Count one event of ``row``; ``novel``: it is a discovery, evidence for the choice."""
        if novel:
            for k, top in enumerate(self.tops):
                if row in top:
                    self.hits[k] += 1.0
        for counter in self.counters:
            counter.update(row, weight, t)
        self.touched.append(row)
        self.n_updates += 1
        if self.n_updates % self.every == 0:
            self._review()

    def update_many(self, rows: np.ndarray, weights: np.ndarray, ts, novel: np.ndarray) -> None:
        """:meth:`update` of each event in turn (``rows``, ``weights``, ``ts``, ``novel`` per event),
        with the same result to the last bit: each counter takes the run between two reviews in one
        :meth:`TrendingPopularity.update_many`.

        >>> a, b = AdaptivePopularity((4, None), top=1, every=3), AdaptivePopularity((4, None), top=1, every=3)
        >>> rows = [0, 1, 0, 2, 0, 0, 3]
        >>> a.update_many(np.array(rows), np.ones(7), [float(t) for t in range(7)], np.ones(7, dtype=bool))
        >>> for t, row in enumerate(rows):
        ...     b.update(row, 1.0, float(t), novel=True)
        >>> a.hits.tolist() == b.hits.tolist(), a.scores(4).tolist() == b.scores(4).tolist(), a.tops
        (True, True, [(0,), (0,)])
        """
        start, n = 0, len(rows)
        while start < n:
            stop = min(n, start + self.every - self.n_updates % self.every)
            part = rows[start:stop]
            found = part[novel[start:stop]].tolist()
            for k, top in enumerate(self.tops):
                for _ in range(sum(row in top for row in found)):
                    self.hits[k] += 1.0  # (one at a time, as update adds them)
            for counter in self.counters:
                counter.update_many(part, weights[start:stop], ts[start:stop])
            self.touched.extend(part.tolist())
            self.n_updates += stop - start
            if self.n_updates % self.every == 0:
                self._review()
            start = stop

    def _review(self) -> None:
        """Fade the hits, serve the candidate that leads by the margin, take new top lists."""
        self.hits *= 0.5 ** (self.every / self.evidence_half_life)
        best = int(np.argmax(self.hits))  # (ties: the first, the faster forgetting)
        if best != self.served and self.hits[best] >= self.hits[self.served] + self.margin:
            # Readers derived their structures from the counter served until now: they rebuild.
            self.counters[self.served].stop_tracking()
            self.served = best
            self.counters[best].stop_tracking()
        # Counts only grow between rescales, and a rescale keeps their order: a top list is found
        # among the previous one and the rows counted since.
        rows = [np.union1d(top, self.touched).astype(np.int64) for top in self.tops]
        self.tops = [_top_rows(c.scores(int(r[-1]) + 1), r, self.top) for c, r in zip(self.counters, rows)]
        self.touched = []

    def track_changes(self) -> list[int] | None:
        """The served counter's :meth:`TrendingPopularity.track_changes` (``None`` after a change of
        counter as well)."""
        return self.serving.track_changes()

    @property
    def max_value(self) -> float:
        """Largest stored value of the served candidate."""
        return self.serving.max_value

    def scores(self, n_items: int) -> np.ndarray:
        """The served candidate's scaled counts (:meth:`TrendingPopularity.scores`; a view)."""
        return self.serving.scores(n_items)

    def counts(self, n_items: int, t: float | None = None) -> np.ndarray:
        """The served candidate's counts decayed to ``t`` (:meth:`TrendingPopularity.counts`)."""
        return self.serving.counts(n_items, t)


def _top_rows(values: np.ndarray, rows: np.ndarray, k: int) -> tuple[int, ...]:
    """Of ``rows`` (sorted, unique), the ``k`` with the largest positive values (ties to the lower row)."""
    v = values[rows]
    order = np.lexsort((rows, -v))[:k]
    return tuple(int(r) for r in rows[order] if values[r] > 0)
