"""One batched ``recommend`` call of a baseline: its distinct users, what each may be shown, their lists."""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np

from models.baselines import paths
from models.baselines.selection import NO_ROWS
from models.ranking.base import StreamingRecommender, check_request, padded

__all__ = ["BatchedRecommender", "Request"]


class Request:
    """One ``recommend`` call: lists are filled per distinct user, then copied to every position asking for it.

    :attr:`rows` holds each distinct user's list as catalogue rows (-1 after
    its end) and :attr:`scores` their scores; :meth:`result` turns them into
    ``recommend``'s ``(ids, scores)``.

    >>> from models.baselines import PopularityBaseline
    >>> model = PopularityBaseline()
    >>> model.learn_one("a", "x")
    >>> request = Request(model, ["b", "a", "b"], n=2, exclude="interacted")
    >>> request.distinct, request.excluded(1).tolist()
    (['b', 'a'], [0])
    >>> request.put(np.array([0]), np.array([0]), np.array([0]), np.array([1.0]))
    >>> request.result()[0].tolist()
    [['x', None], [None, None], ['x', None]]
    """

    def __init__(self, model: StreamingRecommender, user_ids: Sequence[str], n: int, exclude: str):
        check_request(user_ids, exclude)
        self.user_ids, self.n, self.exclude = user_ids, max(n, 0), exclude
        self.catalog = model.catalog
        self.n_items = len(model.catalog)
        self.distinct = list(dict.fromkeys(user_ids))
        self.users = [model._users.get(u) for u in self.distinct]
        self.blocked = ~model.catalog.available
        self.rows = np.full((len(self.distinct), self.n), -1, dtype=np.int64)
        self.scores = np.full((len(self.distinct), self.n), -np.inf)

    @property
    def empty(self) -> bool:
        """Nothing to rank: no items, no users or ``n <= 0``."""
        return not (self.n_items and self.n and self.distinct)

    def with_history(self) -> list[int]:
        """The distinct users (by index) that have a history."""
        return [k for k, user in enumerate(self.users) if user is not None and user.history]

    def without_history(self) -> list[int]:
        """The distinct users (by index) without a history (unknown ones included)."""
        return [k for k, user in enumerate(self.users) if user is None or not user.history]

    def excluded(self, k: int) -> np.ndarray:
        """Rows the exclusion rule removes for distinct user ``k`` (sorted)."""
        user = self.users[k]
        rows = None if user is None else user.excluded(self.exclude)
        return NO_ROWS if rows is None else rows

    def exclusions(self, ks: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(user, row)`` of the excluded rows of users ``ks``, users numbered by position in ``ks``."""
        rows = [self.excluded(k) for k in ks]
        lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        flat = np.concatenate(rows) if len(rows) else NO_ROWS
        return np.repeat(np.arange(len(rows)), lens), flat.astype(np.int64, copy=False)

    def put(self, users: np.ndarray, ranks: np.ndarray, rows: np.ndarray, scores: np.ndarray) -> None:
        """Entry ``ranks[k]`` of distinct user ``users[k]``'s list is ``rows[k]``, scored ``scores[k]``."""
        self.rows[users, ranks] = rows
        self.scores[users, ranks] = scores

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``recommend``'s ``(ids, scores)``, one row per requested user id."""
        ids, scores = padded(len(self.user_ids), self.n)
        if self.empty:
            return ids, scores
        where = {user_id: k for k, user_id in enumerate(self.distinct)}
        at = np.fromiter((where[u] for u in self.user_ids), dtype=np.int64, count=len(self.user_ids))
        rows = self.rows[at]
        scores[:] = self.scores[at]
        real = rows >= 0
        item_ids = self.catalog.ids
        values = np.empty(int(real.sum()), dtype=object)
        values[:] = [item_ids[r] for r in rows[real].tolist()]
        ids[real] = values
        return ids, scores


class BatchedRecommender(StreamingRecommender):
    """A baseline that ranks the users of a ``recommend`` call together (:meth:`_rank`), not item by item.

    A call of a few users over a small catalogue (:func:`~models.baselines.paths.dense_is_cheaper`)
    is ranked by :meth:`StreamingRecommender.recommend` from the dense scores instead; both give the
    same lists and scores.
    """

    def recommend(self, user_ids: Sequence[str], n: int = 20,
                  exclude: str = "purchased") -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`StreamingRecommender.recommend`: the lists of :meth:`_rank`, or of the dense scores."""
        if paths.dense_is_cheaper(self, user_ids):
            return super().recommend(user_ids, n, exclude)
        request = Request(self, user_ids, n, exclude)
        if not request.empty:
            self._rank(request)
        return request.result()

    @abc.abstractmethod
    def _rank(self, request: Request) -> None:
        """Put every distinct user's list into ``request`` (it has items, users and ``n > 0``)."""
