"""``recostream bench --free-models``: the worker with near-free models, an upper bound for any model code.

:class:`FreeModelsEngine` is a :class:`~models.engine.PersonalisationEngine`
whose models cost (almost) nothing:

* :class:`FreeRanker` learns nothing (no MF, co-visitation or popularity
  update; each shopper's history is still kept) and gives every shopper the
  same list, the cold-start ranking, computed once per batch;
* :class:`OneSegment` puts every shopper in segment 0.

Everything else of the worker runs unchanged: decoding and validation,
dedupe, profiles and their changelog, the Redis writes, the
``recommendations`` topic, metrics, positions. So ``throughput_eps`` of such
a run is what the product would reach if the models cost nothing.

The bench starts these workers as ``python -m streams.tools.bench.free_models``,
which builds the ordinary worker with this engine (``run_worker(engine=...)``):
nothing in the product selects it, and a bench run writes to keys and topics of
its own, so its checkpoints never reach a real worker.
"""

from __future__ import annotations

from typing import Sequence

import click
import numpy as np

from models.engine import PersonalisationEngine
from models.ranking import HybridRanker
from models.segments import CustomerSegments
from streams.settings import Settings

# A user id the contract rejects (ids must not be empty), so it never has a history:
# ranking it gives the cold-start list.
NO_HISTORY = ""


class FreeRanker(HybridRanker):
    """Learns nothing; recommends the cold-start list to everyone."""

    def _learn(self, user_id, user, row, weight, ts, personal=True) -> None:
        return None

    def recommend(self, user_ids: Sequence[str], n: int = 20,
                  exclude: str = "purchased") -> tuple[np.ndarray, np.ndarray]:
        ids, scores = super().recommend([NO_HISTORY], n=n, exclude=exclude)
        return np.repeat(ids, len(user_ids), axis=0), np.repeat(scores, len(user_ids), axis=0)


class OneSegment(CustomerSegments):
    """Every shopper in segment 0, nothing learned."""

    def learn_predict_many(self, X: np.ndarray, keys: Sequence[str]) -> list[int]:
        return [0] * len(X)


class FreeModelsEngine(PersonalisationEngine):
    """The engine with :class:`FreeRanker` and :class:`OneSegment` as its models."""

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.ranker = FreeRanker(seed=self.seed)
        self.segments = OneSegment(n_segments=self.n_segments, seed=self.seed)


def free_models_engine(s: Settings) -> FreeModelsEngine:
    """The engine a worker would build from ``s``, with free models."""
    return FreeModelsEngine(top_n=s.top_n, exclude=s.exclude, n_segments=s.n_segments,
                            dedupe_window=s.dedupe_window, seed=s.seed)


@click.command()
@click.option("--loglevel", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def main(loglevel: str) -> None:
    """One worker with free models, configured like `recostream worker` (RECOSTREAM_* variables)."""
    from streams.worker import run_worker  # Faust import is slow

    settings = Settings.from_env()
    click.echo("bench worker with free models: an upper bound, not the product", err=True)
    run_worker(settings, loglevel=loglevel, engine=free_models_engine(settings))


if __name__ == "__main__":
    main()
