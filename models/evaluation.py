"""Prequential (test-then-train) evaluation of streaming recommenders."""

from __future__ import annotations

import inspect
import itertools
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait

import numpy as np

from models.ranking.base import valid_counts, valid_part

__all__ = ["Event", "ModelScore", "Evaluation", "Rankings", "available_cpus", "model_facts", "model_groups",
           "prequential", "returning", "served_lists"]

#: ``(ts_seconds, user_id, item_id, event_type)``
Event = tuple[float, str, str, str]


class Rankings:
    """Several lists ranked from one learner's state, each scored by a replay as a model of its own.

    Two baselines that learn the same state and differ only in how they rank
    it need not learn it twice: ``learner`` learns each event once, and
    ``recommend(user_ids, n, exclude)`` returns one ``(ids, scores)`` per name
    of ``names``, each what that baseline alone would have returned.

    >>> from models.baselines import RepeatCooccurrenceBaseline
    >>> learner = RepeatCooccurrenceBaseline()
    >>> both = Rankings(learner, ("repeat_cooccurrence", "cooccurrence_decayed"), learner.recommend_with_decayed)
    >>> for user, items in {"a": "xy", "b": "xz"}.items():
    ...     for item in items:
    ...         both.learn_one(user, item)
    >>> [ids[0].tolist() for ids, _ in both.recommend(["a"], 3, "purchased")]
    [['y', 'x', 'z'], ['y', 'z', 'x']]
    """

    def __init__(self, learner, names: Sequence[str], recommend: Callable):
        self.learner, self.names, self._recommend = learner, tuple(names), recommend

    def learn_one(self, user_id: str, item_id: str, event_type: str = "click", ts: float | None = None) -> None:
        self.learner.learn_one(user_id, item_id, event_type, ts)

    def end_batch(self) -> None:
        _end_batch(self.learner)

    def recommend(self, user_ids: Sequence[str], n: int, exclude: str) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        return tuple(self._recommend(user_ids, n, exclude))


def list_names(key: str, model) -> tuple[str, ...]:
    """The names the lists of ``models[key]`` are scored under: its :attr:`Rankings.names`, or ``key``."""
    return model.names if isinstance(model, Rankings) else (key,)


@dataclass
class ModelScore:
    """Prequential metrics of one model.

    ``rr`` holds the reciprocal rank of every evaluated event (0 on a miss),
    ``positions`` the index in the stream of each evaluated event, so any
    segment of the stream can be re-scored with :meth:`segment`. ``facts``:
    what the model says of itself when the replay is over (its ``facts()``,
    if it has one), e.g. the ranker's learned weights.
    """

    k: int
    rr: np.ndarray
    positions: np.ndarray
    coverage: float
    learn_seconds: float
    recommend_seconds: float
    facts: dict = field(default_factory=dict)

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
        return self.where((self.positions >= start) & (self.positions < stop))

    def where(self, judged: np.ndarray) -> dict:
        """HR/MRR/n over the evaluated events where ``judged`` (one bool per evaluated event) holds."""
        rr = self.rr[judged]
        n = len(rr)
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
    """What a prequential run accumulates per list: reciprocal ranks, items shown; per learner: time spent.

    ``learners`` are the keys of the models; ``names`` the lists scored (:func:`list_names`).
    ``categories`` (item -> category) go with each event of the item to the models that take them.
    """

    def __init__(self, models: Mapping[str, object], categories: Mapping[str, str] | None = None) -> None:
        self.learners = list(models)
        self.learn_fns = {key: _learner(model, categories) for key, model in models.items()}
        self.lists = {key: list_names(key, model) for key, model in models.items()}
        self.learner_of = {name: key for key, names in self.lists.items() for name in names}
        self.names = list(self.learner_of)
        self.rr: dict[str, list[float]] = {name: [] for name in self.names}
        self.positions: list[int] = []
        self.recommended: dict[str, set[str]] = {name: set() for name in self.names}
        self.t_learn = dict.fromkeys(self.learners, 0.0)
        self.t_rec = dict.fromkeys(self.learners, 0.0)
        self.items: set[str] = set()

    def recommend(self, model, key: str, users: list[str], k: int, exclude: str):
        """``(name, ids, scores)`` of each list of learner ``key``."""
        t0 = time.perf_counter()
        ranked = model.recommend(users, n=k, exclude=exclude)
        self.t_rec[key] += time.perf_counter() - t0
        names = self.lists[key]
        if not isinstance(model, Rankings):
            ranked = (ranked,)
        return [(name, ids, scores) for name, (ids, scores) in zip(names, ranked)]

    def score(self, name: str, shown: list[str], item: str) -> None:
        """One evaluated event: ``item`` against the list ``shown`` at the time."""
        self.recommended[name].update(shown)
        self.rr[name].append(1.0 / (shown.index(item) + 1) if item in shown else 0.0)

    def learn(self, event: Event) -> None:
        self.items.add(event[2])
        for key in self.learners:
            t0 = time.perf_counter()
            self.learn_fns[key](*event)
            self.t_learn[key] += time.perf_counter() - t0

    def learn_batch(self, chunk: list[Event]) -> None:
        """:meth:`learn` for each event of ``chunk``, model by model (they are independent)."""
        self.items.update(e[2] for e in chunk)
        for key in self.learners:
            learn = self.learn_fns[key]
            t0 = time.perf_counter()
            for event in chunk:
                learn(*event)
            self.t_learn[key] += time.perf_counter() - t0

    def end_batch(self, models: Mapping[str, object]) -> None:
        """:func:`_end_batch` of every model."""
        for key in self.learners:
            t0 = time.perf_counter()
            _end_batch(models[key])
            self.t_learn[key] += time.perf_counter() - t0

    def result(self, k: int, exclude: str, events: int, seconds: float,
               models: Mapping[str, object] | None = None) -> Evaluation:
        ev = Evaluation(k=k, exclude=exclude, events=events, seconds=seconds)
        pos = np.asarray(self.positions, dtype=np.int64)
        for name in self.names:
            ev.models[name] = ModelScore(
                k=k,
                rr=np.asarray(self.rr[name], dtype=np.float64),
                positions=pos,
                coverage=len(self.recommended[name]) / max(len(self.items), 1),
                learn_seconds=self.t_learn[self.learner_of[name]],
                recommend_seconds=self.t_rec[self.learner_of[name]],
                facts=model_facts(models[self.learner_of[name]]) if models is not None else {},
            )
        return ev


def model_facts(model) -> dict:
    """What ``model`` says of itself (its ``facts()``: a JSON-ready dict), or nothing."""
    facts = getattr(model, "facts", None)
    return dict(facts()) if callable(facts) else {}


def prequential(
    events: Iterable[Event],
    models: Mapping[str, object],
    k: int = 10,
    exclude: str = "interacted",
    progress: Callable[[int], None] | None = None,
    batch: int | Sequence[int] | None = None,
    jobs: int = 1,
    costs: Mapping[str, float] | None = None,
    categories: Mapping[str, str] | None = None,
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

    Models are independent: with ``jobs`` above 1 they are split into at
    most ``jobs`` groups (:func:`model_groups`, balanced by ``costs``), each
    replayed over the whole stream in a forked worker process, and the
    groups' scores are merged. The results are those of ``jobs=1``, rank for
    rank; the models in ``models`` are then left untrained (each worker
    trains its own copy), and the time spent per model is the worker's.

    Parameters
    ----------
    events
        Iterable of ``(ts, user_id, item_id, event_type)`` in time order.
    models
        Name -> model exposing ``learn_one`` and ``recommend``, or several lists of one
        learner (:class:`Rankings`, scored under its names; the time spent per model
        is then its learner's, under each of them).
    k
        Size of the recommendation list.
    exclude
        Exclusion rule passed to ``recommend``.
    progress
        Called with the number of events processed since the previous call.
    batch
        Micro-batch size (or the sizes of consecutive batches), or ``None``
        for the per-event protocol.
    jobs
        Worker processes at most (1: all models in this process).
    costs
        Relative cost of each model, for balancing the groups (default 1 each).
    categories
        Item -> category: every event of an item names its category to the models that take
        one (``learn_one(..., category=)``, as a worker passes each event's ``category``): the
        item has it once the event is learned, unless the catalogue gave it one.

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
    >>> two = prequential(stream, {"pop": PopularityBaseline(), "again": PopularityBaseline()}, k=1, jobs=2)
    >>> [score.summary()["hr"] for score in two.models.values()]  # one worker process each
    [0.3333333333333333, 0.3333333333333333]

    """
    if isinstance(batch, int) and batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    start = time.perf_counter()
    groups = model_groups(models, jobs, costs)
    if len(groups) > 1:
        events = events if isinstance(events, list) else list(events)  # (the workers read it as forked)
        scores, count = _in_workers(events, models, groups, k, exclude, progress, batch, categories)
        ev = Evaluation(k=k, exclude=exclude, events=count, seconds=time.perf_counter() - start)
        ev.models = {name: scores[name] for key, model in models.items() for name in list_names(key, model)}
        return ev
    tally, count = _replay(events, models, k, exclude, progress, batch, categories)
    return tally.result(k, exclude, count, time.perf_counter() - start, models)


def returning(events: Sequence[Event], positions: np.ndarray) -> np.ndarray:
    """Whether each evaluated event (``positions`` into ``events``) is a **return**: of an item its
    customer had an event with earlier in ``events``, of any type. Only a list that may show a
    customer's own items again can hit a return; the other events are discovery.

    >>> stream = [(0, "a", "x", "browse"), (1, "b", "x", "click"), (2, "a", "x", "click"), (3, "a", "y", "click")]
    >>> returning(stream, np.array([1, 2, 3])).tolist()
    [False, True, False]
    """
    again = np.zeros(len(events), dtype=bool)
    met: set[tuple[str, str]] = set()
    for i, (_, user, item, _) in enumerate(events):
        again[i] = (user, item) in met
        met.add((user, item))
    return again[np.asarray(positions, dtype=np.int64)]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - (no affinity masks: macOS, Windows)
        return os.cpu_count() or 1


def model_groups(names: Iterable[str], jobs: int, costs: Mapping[str, float] | None = None) -> list[list[str]]:
    """``names`` in at most ``jobs`` groups of similar total cost, each in the order of ``names``.

    Greedy: the costliest model first, each into the group that costs least
    so far, of equal costs the one with fewer models (``costs``: default 1, a model not
    listed costs the mean of those listed).

    >>> model_groups(["ranker", "pop", "cooc", "repeat"], 2, {"ranker": 5, "pop": 1, "cooc": 3, "repeat": 1})
    [['ranker'], ['pop', 'cooc', 'repeat']]
    >>> model_groups(["a", "b", "c"], 8)
    [['a'], ['b'], ['c']]
    """
    names = list(names)
    costs = dict(costs or {})
    default = sum(costs.values()) / len(costs) if costs else 1.0
    cost = {name: float(costs.get(name, default)) for name in names}
    groups: list[list[str]] = [[] for _ in range(max(1, min(jobs, len(names))))]
    load = [0.0] * len(groups)
    for name in sorted(names, key=lambda name: -cost[name]):  # (stable: equal costs in the order given)
        g = min(range(len(groups)), key=lambda g: (load[g], len(groups[g])))
        groups[g].append(name)
        load[g] += cost[name]
    position = {name: i for i, name in enumerate(names)}
    return [sorted(group, key=position.__getitem__) for group in groups if group]


def _replay(events, models, k: int, exclude: str, progress, batch, categories=None) -> tuple[_Tally, int]:
    """One prequential run of ``models`` in this process: what it tallied, and the events replayed."""
    tally = _Tally(models, categories)
    if batch is None:
        return tally, _per_event(events, models, tally, k, exclude, progress)
    return tally, _per_batch(events, models, tally, k, exclude, progress, batch)


def _in_workers(events: list[Event], models, groups: list[list[str]], k: int, exclude: str, progress,
                batch, categories=None) -> tuple[dict[str, ModelScore], int]:
    """Each group of models replayed over ``events`` in a forked process; the scores of every model.

    A worker sends ``("progress", n)`` as it goes and ``("done", scores, count)``
    (or ``("error", traceback)``) at the end. Progress is reported as far as
    every group has gone.
    """
    ctx = multiprocessing.get_context("fork")
    workers, conns = [], []
    try:
        for group in groups:
            receiver, sender = ctx.Pipe(duplex=False)
            worker = ctx.Process(target=_worker, args=(sender, events, {n: models[n] for n in group}, k, exclude,
                                                       batch, progress is not None, categories), daemon=True)
            worker.start()
            sender.close()
            workers.append(worker)
            conns.append(receiver)
        done: dict[int, tuple[dict[str, ModelScore], int]] = {}
        reached, reported = [0] * len(groups), 0
        open_ = dict(enumerate(conns))
        while open_:
            ready = wait(list(open_.values()))
            for g in [g for g, conn in open_.items() if conn in ready]:
                try:
                    message = open_[g].recv()
                except EOFError:  # the worker is gone without a word
                    workers[g].join()
                    raise RuntimeError(f"the worker replaying {groups[g]} exited with code "
                                       f"{workers[g].exitcode} before its results") from None
                if message[0] == "progress":
                    reached[g] += message[1]
                    if progress is not None and min(reached) > reported:
                        progress(min(reached) - reported)
                        reported = min(reached)
                elif message[0] == "done":
                    done[g] = message[1], message[2]
                    del open_[g]
                else:
                    raise RuntimeError(f"the worker replaying {groups[g]} failed:\n{message[1]}")
        for worker in workers:
            worker.join()
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join()
        for conn in conns:
            conn.close()
    scores = {name: score for group_scores, _ in done.values() for name, score in group_scores.items()}
    return scores, done[0][1]


def _worker(conn, events: list[Event], models, k: int, exclude: str, batch, report: bool, categories=None) -> None:
    """A worker process: replay ``models`` and send their scores (see :func:`_in_workers`)."""
    try:
        progress = (lambda n: conn.send(("progress", n))) if report else None
        tally, count = _replay(events, models, k, exclude, progress, batch, categories)
        conn.send(("done", tally.result(k, exclude, count, 0.0, models).models, count))
    except BaseException:  # (anything: the parent must hear of it)
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _per_event(events, models, tally: _Tally, k: int, exclude: str, progress) -> int:
    seen_users: set[str] = set()
    count = 0
    for count, event in enumerate(events, 1):
        user, item = event[1], event[2]
        if user in seen_users:
            tally.positions.append(count - 1)
            for key in tally.learners:
                for name, ids, scores in tally.recommend(models[key], key, [user], k, exclude):
                    tally.score(name, valid_part(ids, scores, 0)[0].tolist(), item)
        else:
            seen_users.add(user)
        tally.learn(event)
        tally.end_batch(models)
        if progress is not None and count % 1000 == 0:
            progress(1000)
    if progress is not None and count % 1000:
        progress(count % 1000)
    return count


def _per_batch(events, models, tally: _Tally, k: int, exclude: str, progress, batches) -> int:
    served: dict[str, dict[str, list[str]]] = {name: {} for name in tally.names}
    # Lists served but not yet shown when an event happened: coverage counts a list's items once, when first shown.
    unseen: dict[str, set[str]] = {name: set() for name in tally.names}
    any_model = served[tally.names[0]] if tally.names else {}
    count = 0
    for first, chunk in _chunks(events, batches):
        scored = [(first + i, e[1], e[2]) for i, e in enumerate(chunk) if e[1] in any_model]
        tally.positions.extend(position for position, _, _ in scored)
        for name in tally.names:
            lists, rr, fresh, recommended = served[name], tally.rr[name], unseen[name], tally.recommended[name]
            for _, user, item in scored:
                shown = lists[user]
                if user in fresh:
                    fresh.discard(user)
                    recommended.update(shown)
                rr.append(1.0 / (shown.index(item) + 1) if item in shown else 0.0)
        tally.learn_batch(chunk)
        tally.end_batch(models)
        users = list(dict.fromkeys(e[1] for e in chunk))
        for key in tally.learners:
            for name, ids, scores in tally.recommend(models[key], key, users, k, exclude):
                lengths = valid_counts(scores).tolist()
                lists = served[name]
                for user, row, m in zip(users, ids.tolist(), lengths):
                    lists[user] = row[:m]
                unseen[name].update(users)
        count = first + len(chunk)
        if progress is not None:
            progress(len(chunk))
    return count


def served_lists(events: Iterable[Event], model, batches: int | Sequence[int], k: int = 10,
                 exclude: str = "purchased", categories: Mapping[str, str] | None = None):
    """What a worker serves, batch by batch: it learns a micro-batch, then ranks the batch's users.

    Yields ``(first, chunk, users, ids, scores)`` per batch: the index of the
    batch's first event, its events, its distinct users in order of first
    appearance and their lists (``recommend``'s arrays). ``batches`` is a
    batch size, or the sizes of consecutive batches (those a worker formed);
    ``categories`` (item -> category) go with the events, as in :func:`prequential`.

    >>> from models.baselines import PopularityBaseline
    >>> stream = [(0, "a", "x", "click"), (1, "b", "x", "click"), (2, "a", "y", "click")]
    >>> [(users, ids.tolist()) for _, _, users, ids, _ in served_lists(stream, PopularityBaseline(), [2, 1], k=2)]
    [(['a', 'b'], [['x', None], ['x', None]]), (['a'], [['x', 'y']])]
    """
    learn = _learner(model, categories)
    for first, chunk in _chunks(events, batches):
        for event in chunk:
            learn(*event)
        _end_batch(model)
        users = list(dict.fromkeys(e[1] for e in chunk))
        ids, scores = model.recommend(users, n=k, exclude=exclude)
        yield first, chunk, users, ids, scores


def _learner(model, categories: Mapping[str, str] | None) -> Callable[[float, str, str, str], None]:
    """``learn(ts, user, item, event_type)``: ``model.learn_one`` of an event, with its item's category
    from ``categories`` where the model takes one (``learn_one(..., category=)``)."""
    learn_one = model.learn_one
    if not categories or "category" not in inspect.signature(learn_one).parameters:
        return lambda ts, user, item, event_type: learn_one(user, item, event_type, ts)
    get = categories.get
    return lambda ts, user, item, event_type: learn_one(user, item, event_type, ts, category=get(item))


def _end_batch(model) -> None:
    """Tell ``model`` a micro-batch is learned, if it has learners to synchronise (``end_batch``)."""
    end_batch = getattr(model, "end_batch", None)
    if end_batch is not None:
        end_batch()


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
