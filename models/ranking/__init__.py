"""Streaming top-N recommenders: the contract they share and the product's hybrid ranker.

* :mod:`~models.ranking.base`: :class:`StreamingRecommender`, the contract
  of every recommender (``learn_one``, batched ``recommend``, ``predict_one``,
  checkpoints), and the padding of ``recommend``'s arrays;
* :mod:`~models.ranking.hybrid`: :class:`HybridRanker`, the product's ranker;
* the ranker's parts: per-user state (:mod:`~models.ranking.users`),
  checkpoints (:mod:`~models.ranking.pickling`), top-k kernels
  (:mod:`~models.ranking.topk`), candidate pools
  (:mod:`~models.ranking.candidates`), quantised MF factors
  (:mod:`~models.ranking.factors`) and batched scoring
  (:mod:`~models.ranking.scoring`).
"""

from models.ranking.base import (
    EXCLUDE_RULES,
    PAD_ID,
    PAD_SCORE,
    StreamingRecommender,
    valid_counts,
    valid_part,
)
from models.ranking.hybrid import HybridRanker
from models.ranking.item_state import ItemState

__all__ = ["EXCLUDE_RULES", "PAD_ID", "PAD_SCORE", "HybridRanker", "ItemState", "StreamingRecommender",
           "valid_counts", "valid_part"]
