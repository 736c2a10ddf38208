"""Prequential (test-then-train) evaluation of streaming recommenders."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.ranking.base import valid_part

__all__ = ["Event", "ModelScore", "Evaluation", "prequential", "served_lists"]

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


class _Tally:
    """What a prequential run accumulates per model: reciprocal ranks, items shown, time spent."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.rr: dict[str, list[float]] = {name: [] for name in names}
        self.positions: list[int] = []
        self.recommended: dict[str, set[str]] = {name: set() for name in names}
        self.t_learn = dict.fromkeys(names, 0.0)
        self.t_rec = dict.fromkeys(names, 0.0)
        self.items: set[str] = set()

    def recommend(self, model, name: str, users: list[str], k: int, exclude: str):
        t0 = time.perf_counter()
        ids, scores = model.recommend(users, n=k, exclude=exclude)
        self.t_rec[name] += time.perf_counter() - t0
        return ids, scores

    def score(self, name: str, shown: list[str], item: str) -> None:
        """One evaluated event: ``item`` against the list ``shown`` at the time."""
        self.recommended[name].update(shown)
        self.rr[name].append(1.0 / (shown.index(item) + 1) if item in shown else 0.0)

    def learn(self, models: Mapping[str, object], event: Event) -> None:
        ts, user, item, event_type = event
        self.items.add(item)
        for name in self.names:
            t0 = time.perf_counter()
            models[name].learn_one(user, item, event_type, ts)
            self.t_learn[name] += time.perf_counter() - t0

    def result(self, k: int, exclude: str, events: int, seconds: float) -> Evaluation:
        ev = Evaluation(k=k, exclude=exclude, events=events, seconds=seconds)
        pos = np.asarray(self.positions, dtype=np.int64)
        for name in self.names:
            ev.models[name] = ModelScore(
                k=k,
                rr=np.asarray(self.rr[name], dtype=np.float64),
                positions=pos,
                coverage=len(self.recommended[name]) / max(len(self.items), 1),
                learn_seconds=self.t_learn[name],
                recommend_seconds=self.t_rec[name],
            )
        return ev


def prequential(
    events: Iterable[Event],
    models: Mapping[str, object],
    k: int = 10,
    exclude: str = "interacted",
    progress: Callable[[int], None] | None = None,
    batch: int | Sequence[int] | None = None,
) -> Evaluation:
    """Test-then-train evaluation over a time-ordered event stream.

    Per event (``batch=None``, the strict reference): for each event whose
    user has been seen before, every model is asked for its top ``k`` (with
    the ``exclude`` rule); the event is a hit if its item is in that list
    (reciprocal rank for MRR). Then every model learns the event. Events of
    first-time users are learned but not scored: no model can know them, and
    scoring them would only dilute differences.

    Per micro-batch (``batch=N``), as a worker serves: the stream is cut into
    consecutive batches of ``N`` events; after learning a batch, every model
    ranks the batch's users in one batched call (:func:`served_lists`), and
    each later event of a user is scored against the list that user was last
    served, which is what the customer saw when the event happened. Events
    of users who were never served a list are learned but not scored. The
    per-event protocol is the limit where a customer's list is refreshed
    right before each of their events.

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
    batch
        Micro-batch size (or the sizes of consecutive batches), or ``None``
        for the per-event protocol.

    Examples
    --------
    >>> from models.baselines import PopularityBaseline
    >>> stream = [(0, "a", "x", "click"), (1, "b", "x", "click"), (2, "a", "y", "click"),
    ...           (3, "b", "y", "click"), (4, "a", "z", "click")]
    >>> ev = prequential(stream, {"pop": PopularityBaseline()}, k=1)
    >>> {k: round(v, 3) for k, v in ev.models["pop"].summary().items()}
    {'hr': 0.333, 'mrr': 0.333, 'n': 3, 'coverage': 0.333}
    >>> ev = prequential(stream, {"pop": PopularityBaseline()}, k=1, batch=2)
    >>> ev.models["pop"].summary()  # a and b were last served lists that knew only x
    {'hr': 0.0, 'mrr': 0.0, 'n': 3, 'coverage': 0.0}

    """
    if isinstance(batch, int) and batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    tally = _Tally(list(models))
    start = time.perf_counter()
    count = 0
    if batch is None:
        count = _per_event(events, models, tally, k, exclude, progress)
    else:
        count = _per_batch(events, models, tally, k, exclude, progress, batch)
    return tally.result(k, exclude, count, time.perf_counter() - start)


def _per_event(events, models, tally: _Tally, k: int, exclude: str, progress) -> int:
    seen_users: set[str] = set()
    count = 0
    for count, event in enumerate(events, 1):
        user, item = event[1], event[2]
        if user in seen_users:
            tally.positions.append(count - 1)
            for name in tally.names:
                ids, scores = tally.recommend(models[name], name, [user], k, exclude)
                tally.score(name, valid_part(ids, scores, 0)[0].tolist(), item)
        else:
            seen_users.add(user)
        tally.learn(models, event)
        if progress is not None and count % 1000 == 0:
            progress(1000)
    if progress is not None and count % 1000:
        progress(count % 1000)
    return count


def _per_batch(events, models, tally: _Tally, k: int, exclude: str, progress, batches) -> int:
    served: dict[str, dict[str, list[str]]] = {name: {} for name in tally.names}
    any_model = served[tally.names[0]] if tally.names else {}
    count = 0
    for first, chunk in _chunks(events, batches):
        scored = [(first + i, e[1], e[2]) for i, e in enumerate(chunk) if e[1] in any_model]
        tally.positions.extend(position for position, _, _ in scored)
        for name in tally.names:
            for _, user, item in scored:
                tally.score(name, served[name][user], item)
        for e in chunk:
            tally.learn(models, e)
        users = list(dict.fromkeys(e[1] for e in chunk))
        for name in tally.names:
            ids, scores = tally.recommend(models[name], name, users, k, exclude)
            for r, user in enumerate(users):
                served[name][user] = valid_part(ids, scores, r)[0].tolist()
        count = first + len(chunk)
        if progress is not None:
            progress(len(chunk))
    return count


def served_lists(events: Iterable[Event], model, batches: int | Sequence[int], k: int = 10,
                 exclude: str = "purchased"):
    """What a worker serves, batch by batch: it learns a micro-batch, then ranks the batch's users.

    Yields ``(first, chunk, users, ids, scores)`` per batch: the index of the
    batch's first event, its events, its distinct users in order of first
    appearance and their lists (``recommend``'s arrays). ``batches`` is a
    batch size, or the sizes of consecutive batches (those a worker formed).

    >>> from models.baselines import PopularityBaseline
    >>> stream = [(0, "a", "x", "click"), (1, "b", "x", "click"), (2, "a", "y", "click")]
    >>> [(users, ids.tolist()) for _, _, users, ids, _ in served_lists(stream, PopularityBaseline(), [2, 1], k=2)]
    [(['a', 'b'], [['x', None], ['x', None]]), (['a'], [['x', 'y']])]
    """
    for first, chunk in _chunks(events, batches):
        for ts, user, item, event_type in chunk:
            model.learn_one(user, item, event_type, ts)
        users = list(dict.fromkeys(e[1] for e in chunk))
        ids, scores = model.recommend(users, n=k, exclude=exclude)
        yield first, chunk, users, ids, scores


def _chunks(events: Iterable[Event], batches: int | Sequence[int]):
    """``(index of the first event, the events)`` of consecutive micro-batches.

    ``batches`` is one size for every batch, or the sizes of consecutive
    batches; events left after the last size form one more batch.
    """
    sizes = itertools.repeat(batches) if isinstance(batches, int) else iter(batches)
    size = next(sizes, None)
    chunk: list[Event] = []
    first = 0
    for event in events:
        chunk.append(event)
        if len(chunk) == size:
            yield first, chunk
            first, chunk, size = first + len(chunk), [], next(sizes, None)
    if chunk:
        yield first, chunk
