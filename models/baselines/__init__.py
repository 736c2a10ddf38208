"""Streaming baselines with the same interface as :class:`~models.ranking.HybridRanker`.

They exist to keep the ranker honest: ``recostream replay`` evaluates them in
the same prequential run.

Each baseline defines its scores once, densely (``_scores``: one score per
catalogue row, which :meth:`~models.ranking.base.StreamingRecommender.predict_one`
reads), and ranks a batch of users in ``recommend`` without scoring the whole
catalogue per user: popularity is ordered once per call, a repeat list comes
from the user's history, and co-occurrence is summed over every neighbour of
the user's items in one compiled loop per call (:mod:`models.baselines.kernels`).
Lists and scores are those of the dense definition, ties to the lower
catalogue row, float for float.

| module | what it holds |
|---|---|
| ``popularity`` | :class:`PopularityBaseline` |
| ``cooccurrence`` | :class:`CooccurrenceBaseline`, :class:`DecayedCooccurrenceBaseline` |
| ``repeat`` | :class:`RepeatBaseline`, :class:`RepeatCooccurrenceBaseline` (which also ranks the decayed lists of its counts in the same pass) |
| ``request`` | one ``recommend`` call: its users, exclusions and lists; :class:`BatchedRecommender`, the baselines' ``recommend`` |
| ``selection`` | exact per-user selection kernels over flat arrays |
| ``paths`` | the thresholds between the ranking paths |
| ``pair_updates``, ``pair_index`` | co-occurrence learned many events at a time; where each entry sits |
| ``cooccurrence_lists``, ``kernels`` | co-occurrence lists of a call; the compiled loop that sums them |
"""

from models.baselines.cooccurrence import CooccurrenceBaseline, DecayedCooccurrenceBaseline
from models.baselines.popularity import PopularityBaseline
from models.baselines.repeat import RepeatBaseline, RepeatCooccurrenceBaseline

__all__ = ["PopularityBaseline", "CooccurrenceBaseline", "DecayedCooccurrenceBaseline", "RepeatBaseline",
           "RepeatCooccurrenceBaseline"]
