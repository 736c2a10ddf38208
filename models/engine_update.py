"""What one worker's micro-batch taught the item side, with where its events came from.

The record of the ``item-updates`` topic: every worker applies every
worker's records, its own included, in the topic's order
(:meth:`models.engine.PersonalisationEngine.apply_update`). Each event is
named by its source ``(topic, partition, offset)``, so a record applied
twice, or two records holding the same event (a batch processed again after
a crash or a rebalance), teach the item side each event once: an event is
applied only when its offset is past the last one applied from its source
partition, the same rule on every worker, in the same order, hence the same
choice everywhere. No customer id travels: the events are the items, their
weights and times and the anonymous recent items before them
(:class:`models.ranking.item_updates.ItemUpdate`).
"""

from __future__ import annotations

import msgspec

from models.ranking.item_updates import ItemUpdate, decode_update, encode_update

__all__ = ["EngineUpdate", "decode_engine_update", "encode_engine_update"]


class EngineUpdate(msgspec.Struct, array_like=True, frozen=True):
    """Event ``k`` of ``ranker`` (and of every variant ranker's update) came from
    ``sources[source[k]]`` at ``offset[k]`` (``source[k] == -1``: from no partition, always applied).

    >>> u = EngineUpdate(sources=[("click", 0)], source=[0], offset=[7],
    ...                  ranker=ItemUpdate(items=["boots"], item=[0], weight=[1.0], ts=[None], history=[[]]))
    >>> decode_engine_update(encode_engine_update(u)) == u
    True
    """

    sources: list[tuple[str, int]]
    source: list[int]
    offset: list[int]
    ranker: ItemUpdate
    variants: dict[str, ItemUpdate] = {}

    @property
    def n_events(self) -> int:
        return len(self.offset)

    def part(self, lo: int, hi: int) -> EngineUpdate:
        """Events ``lo`` to ``hi - 1`` as an update of their own (a record small enough for the log)."""
        return EngineUpdate(sources=self.sources, source=self.source[lo:hi], offset=self.offset[lo:hi],
                            ranker=self.ranker.part(lo, hi),
                            variants={name: u.part(lo, hi) for name, u in self.variants.items()})


def encode_engine_update(update: EngineUpdate) -> bytes:
    return encode_update(update)


def decode_engine_update(data: bytes) -> EngineUpdate:
    """The update of :func:`encode_engine_update`'s bytes (``msgspec.DecodeError`` on anything else)."""
    return decode_update(data, EngineUpdate)
