"""The worker with free models: an upper bound on ``throughput_eps`` for any model code.

Put this directory first on ``PYTHONPATH`` and every Python process started
with it (the bench and the workers it spawns) imports this module at start-up
and replaces the three model calls of a batch with near-free ones:

* ``HybridRanker._learn`` does nothing (no MF, no co-visitation, no
  popularity update; the user's history is still pushed, as before),
* ``HybridRanker.recommend`` returns the same popularity list to every user
  (one cheap catalogue-wide lookup per batch),
* ``CustomerSegments.learn_predict_many`` puts everyone in segment 0.

Everything else of the worker runs unchanged: decoding and validation, dedupe,
profiles and their changelog, the Redis writes, the ``recommendations`` topic,
metrics, positions. So ``throughput_eps`` of such a run is what the product
would reach if the models cost nothing, measured next to ``bare_loop_eps`` in
the same run::

    PYTHONPATH=benchmarks/models_free .venv/bin/recostream bench --freshness-seconds 0 --json

Results: docs/BENCHMARKS.md. Never on the path of a real worker.
"""

from __future__ import annotations

import sys


def _patch() -> None:
    from models import ranker, segments

    def learn_free(self, user_id, user, row, weight, ts):
        return None

    def recommend_free(self, user_ids, n=20, exclude="purchased"):
        n_items = len(self.catalog)
        if n_items == 0 or n <= 0:
            return [[] for _ in user_ids]
        ctx = self._context(n_items, many=True)
        rows, scores = ctx.cold(n)
        recs = list(zip(ctx.item_ids(rows), scores.tolist()))
        return [list(recs) for _ in user_ids]

    def segments_free(self, X, keys):
        return [0] * len(X)

    ranker.HybridRanker._learn = learn_free
    ranker.HybridRanker.recommend = recommend_free
    segments.CustomerSegments.learn_predict_many = segments_free
    print("benchmarks/models_free: model calls replaced by near-free ones (upper-bound run)", file=sys.stderr)


_patch()
