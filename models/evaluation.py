"""Prequential (test-then-train) evaluation of streaming recommenders."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from models.ranking.base import valid_part

__all__ = ["Event", "ModelScore", "Evaluation", "prequential"]

#: ``(ts_seconds, user_id, item_id, event_type)``
Event = tuple[float, str, str, str]


@dataclass
class ModelScore:
    """Prequential metrics of one model.

    ``rr`` holds the reciprocal rank of every evaluated event (0 on a miss),
    ``positions`` the index in the stream of each evaluated event, so any
    segment of the stream can be re-scored with :meth:`segment`.
    """

    k: int
    rr: np.ndarray
    positions: np.ndarray
    coverage: float
    learn_seconds: float
    recommend_seconds: float

    @property
    def n(self) -> int:
        return len(self.rr)

    @property
    def hr(self) -> float:
        return float((self.rr > 0).mean()) if self.n else 0.0

    @property
    def mrr(self) -> float:
        return float(self.rr.mean()) if self.n else 0.0

    def segment(self, start: int, stop: int) -> dict:
        """HR/MRR/n over stream positions ``[start, stop)``."""
        sel = (self.positions >= start) & (self.positions < stop)
        rr = self.rr[sel]
        n = int(sel.sum())
        return {"hr": float((rr > 0).mean()) if n else 0.0, "mrr": float(rr.mean()) if n else 0.0, "n": n}

    def rolling_hr(self, window: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        """``(stream positions, HR over the previous `window` evaluated events)``."""
        if self.n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        hits = np.concatenate([[0.0], np.cumsum(self.rr > 0)])
        window = max(1, min(window, self.n))
        idx = np.arange(window, self.n + 1)
        return self.positions[idx - 1], (hits[idx] - hits[idx - window]) / window

    def summary(self) -> dict:
        return {"hr": self.hr, "mrr": self.mrr, "n": self.n, "coverage": self.coverage}


@dataclass
class Evaluation:
    k: int
    exclude: str
    events: int
    seconds: float
    models: dict[str, ModelScore] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


def prequential(
    events: Iterable[Event],
    models: Mapping[str, object],
    k: int = 10,
    exclude: str = "interacted",
    progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """Test-then-train evaluation over a time-ordered event stream.

    For each event whose user has been seen before, every model is asked for
    its top ``k`` (with the ``exclude`` rule); the event is a hit if its item
    is in that list (reciprocal rank for MRR). Then every model learns the
    event. Events of first-time users are learned but not scored: no model
    can know them, and scoring them would only dilute differences.

    Parameters
    ----------
    events
        Iterable of ``(ts, user_id, item_id, event_type)`` in time order.
    models
        Name -> model exposing ``learn_one`` and ``recommend``.
    k
        Size of the recommendation list.
    exclude
        Exclusion rule passed to ``recommend``.
    progress
        Called with the number of events processed since the previous call.

    Examples
    --------
    >>> from models.baselines import PopularityBaseline
    >>> stream = [(0, "a", "x", "click"), (1, "b", "x", "click"), (2, "a", "y", "click"),
    ...           (3, "b", "y", "click"), (4, "a", "z", "click")]
    >>> ev = prequential(stream, {"pop": PopularityBaseline()}, k=1)
    >>> {k: round(v, 3) for k, v in ev.models["pop"].summary().items()}
    {'hr': 0.333, 'mrr': 0.333, 'n': 3, 'coverage': 0.333}

    """
    names = list(models)
    rr: dict[str, list[float]] = {name: [] for name in names}
    positions: list[int] = []
    recommended: dict[str, set[str]] = {name: set() for name in names}
    t_learn = dict.fromkeys(names, 0.0)
    t_rec = dict.fromkeys(names, 0.0)
    seen_users: set[str] = set()
    items: set[str] = set()
    clock = time.perf_counter
    start = clock()
    count = 0
    for count, (ts, user, item, event_type) in enumerate(events, 1):
        items.add(item)
        if user in seen_users:
            positions.append(count - 1)
            for name in names:
                t0 = clock()
                ids, scores = models[name].recommend([user], n=k, exclude=exclude)
                t_rec[name] += clock() - t0
                rank = 0.0
                for r, rec_item in enumerate(valid_part(ids, scores, 0)[0].tolist(), 1):
                    recommended[name].add(rec_item)
                    if rec_item == item:
                        rank = 1.0 / r
                rr[name].append(rank)
        else:
            seen_users.add(user)
        for name in names:
            t0 = clock()
            models[name].learn_one(user, item, event_type, ts)
            t_learn[name] += clock() - t0
        if progress is not None and count % 1000 == 0:
            progress(1000)
    if progress is not None and count % 1000:
        progress(count % 1000)
    seconds = clock() - start
    ev = Evaluation(k=k, exclude=exclude, events=count, seconds=seconds)
    pos = np.asarray(positions, dtype=np.int64)
    for name in names:
        ev.models[name] = ModelScore(
            k=k,
            rr=np.asarray(rr[name], dtype=np.float64),
            positions=pos,
            coverage=len(recommended[name]) / max(len(items), 1),
            learn_seconds=t_learn[name],
            recommend_seconds=t_rec[name],
        )
    return ev
