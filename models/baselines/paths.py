"""Which way a baseline ranks a call: the thresholds between its ranking paths, chosen by cost.

Read as module attributes at call time (``paths.DENSE_USERS``), so that tests
can move them and make every path serve on small data.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DENSE_ABOVE", "DENSE_ITEMS", "DENSE_USERS", "dense_is_cheaper"]

#: A call of fewer users than this, over at most DENSE_ITEMS items, every baseline ranks from the
#: dense scores (a batched call's fixed cost is not repaid).
DENSE_USERS = 16
DENSE_ITEMS = 16384
#: A co-occurrence user ranked one by one is scored from the dense scores once its rows' entries
#: outnumber the catalogue this many times.
DENSE_ABOVE = 1.0


def dense_is_cheaper(model, user_ids: Sequence[str]) -> bool:
    """Whether :meth:`StreamingRecommender.recommend` (every item scored per user) ranks this call faster."""
    return len(user_ids) < DENSE_USERS and len(model.catalog) <= DENSE_ITEMS
