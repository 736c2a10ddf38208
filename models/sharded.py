"""Several copies of a recommender, each learning only the customers of its partitions: N workers."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import numpy as np

from models.ranking.base import check_request, padded
from models.ranking.item_updates import decode_update, encode_update

__all__ = ["ShardedRecommender", "shard_of"]


def shard_of(user_id: str, shards: int) -> int:
    """The shard of ``user_id``: CRC-32 of its UTF-8 bytes modulo ``shards`` (the hash librdkafka's
    default partitioner gives a keyed record).

    >>> shard_of("u1", 1), shard_of("u1", 4) == shard_of("u1", 4)
    (0, True)
    """
    return zlib.crc32(user_id.encode()) % shards


class ShardedRecommender:
    """``workers`` recommenders made by ``make``, each learning the events of its own customers and
    ranking them, as that many workers of the runtime do.

    Unshared, each worker's item side is its own, learned from its customers
    only. With ``sharing``, each worker's recommender queues its item-side
    updates (``HybridRanker(share_items=True)``), and at the end of every
    micro-batch (:meth:`end_batch`) every worker applies every worker's
    update, its own included, in worker order, through their wire form: the
    order an ``item-updates`` topic gives them, one batch of each worker after
    the other.

    Parameters
    ----------
    make
        Builds one worker's recommender (a :class:`~models.ranking.base.StreamingRecommender`;
        with ``sharing``, one with ``take_updates`` and ``apply_updates``).
    workers
        How many.
    sharing
        Whether the workers share their item-side learning.

    Examples
    --------
    >>> from models.baselines import PopularityBaseline
    >>> two = ShardedRecommender(PopularityBaseline, workers=2)
    >>> for user, item in [("ann", "a"), ("ann", "a"), ("bob", "b"), ("cy", "c")]:
    ...     two.learn_one(user, item)
    >>> [shard_of(u, 2) for u in ("ann", "bob", "cy")]
    [1, 0, 1]
    >>> ids, _ = two.recommend(["ann", "bob"], n=2, exclude="none")
    >>> ids.tolist()  # each worker's popularity is its own customers'
    [['a', 'c'], ['b', None]]
    """

    def __init__(self, make: Callable[[], object], workers: int, sharing: bool = False):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.sharing = sharing
        self.shards = [make() for _ in range(workers)]

    @property
    def model_version(self) -> int:
        """Events learned: each worker's own unshared; with sharing, those every worker applied."""
        if self.sharing:
            return min(s.model_version for s in self.shards)
        return sum(s.model_version for s in self.shards)

    @property
    def n_users(self) -> int:
        return sum(s.n_users for s in self.shards)

    @property
    def n_items(self) -> int:
        return max(s.n_items for s in self.shards)

    def facts(self) -> dict:
        """The workers' facts (their ``facts()``): one dict where they agree, as workers sharing their
        item side do; else ``{"workers": [each worker's]}``."""
        each = [s.facts() if callable(getattr(s, "facts", None)) else {} for s in self.shards]
        return each[0] if all(f == each[0] for f in each) else {"workers": each}

    def upsert_item(self, item_id: str, category: str | None = None, available: bool = True) -> None:
        for s in self.shards:  # every worker follows the whole catalogue
            s.upsert_item(item_id, category=category, available=available)

    def learn_one(self, user_id: str, item_id: str, event_type: str = "click", ts: float | None = None, *,
                  category: str | None = None) -> None:
        self.shards[shard_of(user_id, self.workers)].learn_one(user_id, item_id, event_type, ts, category=category)

    def end_batch(self) -> None:
        """A micro-batch is learned: with sharing, every worker applies every worker's update."""
        if not self.sharing:
            return
        # Through their wire form once each, as peers read them; applying does not change an update.
        updates = [decode_update(encode_update(u)) for s in self.shards if (u := s.take_updates()) is not None]
        for update in updates:
            for s in self.shards:
                s.apply_updates(update)

    def recommend(self, user_ids: Sequence[str], n: int = 20,
                  exclude: str = "purchased") -> tuple[np.ndarray, np.ndarray]:
        """Each customer's list from their own worker; one batched call per worker."""
        check_request(user_ids, exclude)
        ids, scores = padded(len(user_ids), n)
        by_shard: dict[int, list[int]] = {}
        for i, user in enumerate(user_ids):
            by_shard.setdefault(shard_of(user, self.workers), []).append(i)
        for shard, at in by_shard.items():
            part_ids, part_scores = self.shards[shard].recommend([user_ids[i] for i in at], n=n, exclude=exclude)
            ids[at], scores[at] = part_ids, part_scores
        return ids, scores
