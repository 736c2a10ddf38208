"""The co-occurrence baselines: items seen near the customer's recent items, plain or decayed."""

from __future__ import annotations

import numpy as np

from models.baselines.cooccurrence_lists import CooccurrenceLists, cold_lists
from models.baselines.pair_index import PairIndex
from models.baselines.pair_updates import add_pairs, pair_updates, step_weights
from models.baselines.request import BatchedRecommender, Request
from models.covisit import SparseRows
from models.popularity import TrendingPopularity

__all__ = ["CooccurrenceBaseline", "DecayedCooccurrenceBaseline"]

# Queued events added one by one below this (a vectorised pass has a fixed cost), together above;
# the queue is emptied once it holds _QUEUE_MAX events even if nothing reads the counts.
_ONE_BY_ONE = 32
_QUEUE_MAX = 8192
_SCRATCH_TYPES = {"acc": np.float64, "flag": bool, "seen": bool, "mark": np.int64}
# Caches rebuilt on demand, never checkpointed (the queue is emptied before a checkpoint).
_DERIVED = ("_queue", "_index", "_weights", "_step_weights", "_scratch_arrays")


class CooccurrenceBaseline(BatchedRecommender):
    """Item co-occurrence within each user's last ``window`` items.

    When a user interacts with ``j``, every item ``h`` among their previous
    ``window`` items gets ``C[h, j] += 1`` and ``C[j, h] += 1`` (symmetric,
    unbounded, event types ignored). A user is scored by summing the rows of
    their last ``window`` items.

    With ``decay`` set, a pair at distance ``d`` counts ``decay ** (d - 1)``,
    history items are weighted the same way at scoring time and scores are
    divided by ``sqrt(item popularity)`` (cosine-like normalisation).

    Events are queued and their pairs added together when the counts are next
    read (:mod:`models.baselines.pair_updates`: the same counts to the bit).
    ``recommend`` ranks a batch of users without scoring every item for each
    (:class:`~models.baselines.cooccurrence_lists.CooccurrenceLists`: every
    neighbour of the user's items, in a compiled loop); its lists are those
    of the dense scores, ties to the lower catalogue row.

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
        self.__dict__["cooc"] = SparseRows(max_neighbors=None)
        self.popularity = TrendingPopularity(half_life=None)
        for name in _DERIVED:
            self.__dict__.pop(name, None)

    @property
    def cooc(self) -> SparseRows:
        """The co-occurrence counts, every queued event added."""
        self._add_queued()
        return self.__dict__["cooc"]

    # -- learning -------------------------------------------------------------

    def _learn(self, user_id, user, row, weight, ts, personal=True):
        self.popularity.update(row, 1.0)
        if user.history:
            queue = self.__dict__.setdefault("_queue", [])
            queue.append((user.history, row))  # (histories are tuples: never changed in place)
            if len(queue) >= _QUEUE_MAX:
                self._add_queued()

    def _add_queued(self) -> None:
        """Add the pairs of every queued event to the counts."""
        queue = self.__dict__.get("_queue")
        if not queue:
            return
        self.__dict__["_queue"] = []
        cooc, index = self.__dict__["cooc"], self.__dict__.get("_index")
        if len(queue) < _ONE_BY_ONE:
            added = [] if index is not None else None
            self._add_one_by_one(queue, cooc, added)
            if added:
                index.insert(*(np.array(a, dtype=np.int64) for a in zip(*added)))
            return
        add_pairs(cooc, self._pair_index(), *pair_updates(queue, self._steps()))

    def _add_one_by_one(self, queue, cooc: SparseRows, added: list | None) -> None:
        """The queued events' pairs through :meth:`SparseRows.add`, the order of :func:`pair_updates`
        (``added`` collects ``(row, column, slot)`` of the entries created)."""
        add, slots = cooc.add, cooc._slots
        decay = 1.0 if self.decay is None else self.decay
        for history, row in queue:
            w = 1.0
            for h in reversed(history):
                if h != row:
                    for a, b in ((h, row), (row, h)):
                        if added is not None and (a >= len(slots) or b not in slots[a]):
                            added.append((a, b, len(slots[a]) if a < len(slots) else 0))
                        add(a, b, w)
                w *= decay

    def _pair_index(self) -> PairIndex:
        """Where every entry sits (built on first use, then kept by the learner)."""
        index = self.__dict__.get("_index")
        if index is None:
            index = self.__dict__["_index"] = PairIndex(self.__dict__["cooc"])
        return index

    def _steps(self) -> np.ndarray:
        """The learner's pair weight at each distance (:func:`step_weights`)."""
        steps = self.__dict__.get("_step_weights")
        if steps is None:
            steps = self.__dict__["_step_weights"] = step_weights(self.decay, self.window)
        return steps

    # -- scores -----------------------------------------------------------------

    def _scores(self, user_id, user, n_items):
        self._add_queued()
        return self._cooccurrence_scores(user, n_items)

    def _cooccurrence_scores(self, user, n_items: int) -> np.ndarray:
        """The co-occurrence scores of every item (the dense definition the lists follow)."""
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

    def _weight_table(self, longest: int) -> np.ndarray:
        """Row ``m``: the weights of a history of ``m`` items, computed as ``_scores`` computes them."""
        table = self.__dict__.get("_weights")
        if table is None or len(table) <= longest:
            longest = max(longest, self.window)
            table = self.__dict__["_weights"] = np.zeros((longest + 1, max(longest, 1)))
            for m in range(1, longest + 1):
                table[m, :m] = self.decay ** np.arange(m)
        return table

    def _scratch(self, size: int, names: tuple[str, ...]) -> list[np.ndarray]:
        """Work arrays of at least ``size`` cells: ``acc`` (floats) and ``flag`` (booleans) are left zero by
        their users, ``mark`` (ints) holds anything."""
        scratch = self.__dict__.setdefault("_scratch_arrays", {})
        out = []
        for name in names:
            a = scratch.get(name)
            if a is None or len(a) < size:
                a = scratch[name] = np.zeros(size, dtype=_SCRATCH_TYPES[name])
            out.append(a)
        return out

    # -- ranking ------------------------------------------------------------------

    def _rank(self, request: Request) -> None:
        """``_scores``' lists, without scoring every item per user."""
        lists = CooccurrenceLists(self, request)
        ks = request.with_history()
        lists.rank(ks, np.full(len(ks), request.n), np.zeros(len(ks), dtype=bool))
        users, ranks, rows, scores = lists.collected()
        request.put(np.asarray(ks, dtype=np.int64)[users], ranks, rows, scores)
        cold_lists(request, lists, request.without_history())

    # -- checkpoints ----------------------------------------------------------------

    def __getstate__(self):
        self._add_queued()
        state = super().__getstate__()
        for name in _DERIVED:
            state.pop(name, None)
        return state


class DecayedCooccurrenceBaseline(CooccurrenceBaseline):
    """:class:`CooccurrenceBaseline` with ``decay=0.9`` (recency + cosine-like).

    >>> DecayedCooccurrenceBaseline().decay
    0.9

    """

    def __init__(self, window: int = 20, decay: float = 0.9, seed: int = 0):
        super().__init__(window=window, decay=decay, seed=seed)
