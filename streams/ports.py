"""The ports of a batch: where its outputs go, as the processing and the checkpoint see them.

The batch processor (``streams/pipeline.py``) and the position checkpoint
(``streams/checkpointing/positions.py``) are handed these by the composition
root (``streams/wiring.py``). The worker's implementations talk to the broker
(:class:`streams.sinks.kafka.KafkaSink`) and to Redis
(:class:`streams.sinks.redis.RedisSink`); a unit test hands in memory ones
(``tests/unit/test_batch_processor.py``). Each port states what its
implementation promises, since the durability rule rests on it.

A port that fails for good raises :class:`PortFailed`: not an event's fault,
so the processor does not retry the batch event by event (which would park
valid events in the dead-letter topic); the loop stops without writing
positions and the next owner processes the batch again.
"""

from __future__ import annotations

from typing import Callable, Mapping, Protocol, Sequence

#: One partition's share of a batch for the view sink:
#: ``(partition, generation, recommendation by user, profile summary by user)``.
ViewGroup = tuple[int, int, Mapping[str, bytes], Mapping[str, bytes]]


class PortFailed(RuntimeError):
    """An exchange or output the batch waits on failed for good (a record refused, a fatal client
    error): the worker stops without writing positions."""


class Drainable(Protocol):
    """An output whose writes become durable only once :meth:`flush` returns."""

    def flush(self) -> None:
        """Return once every write queued before it is durable (or raise: the worker stops)."""


class RecordOutput(Drainable, Protocol):
    """Kafka records: queued by :meth:`produce`, durable once :meth:`flush` returns."""

    def produce(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
                headers: list | None = None) -> None:
        """Queue one record (``value=None``: a tombstone) to ``partition``, else the key's."""


class ViewSink(Drainable, Protocol):
    """The read views of customers (Redis): a write is durable once :meth:`flush` returns
    (the worker's writes overlap its next batch: ``streams/sinks/overlapped.py``).

    Writes are fenced per partition by generation: a group whose partition
    has a newer owner is skipped (and counted in a metric).
    """

    #: Set by the sink when its store came back empty-handed (a restarted Redis):
    #: every owned customer must then be written again.
    restarted: bool

    def write(self, parts: Sequence[ViewGroup], model: Mapping[str, str | int | float],
              effects: Mapping[int, tuple[int, bytes]] | None = None,
              on_durable: Callable[[], None] | None = None) -> object:
        """Write every group, the model's summary and ``{partition: (generation, experiment counts)}``
        at once, in order after every earlier write; ``on_durable()`` once they are durable."""

    def raise_fence(self, partition: int, gen: int) -> int:
        """Make ``gen`` the lowest generation whose writes to ``partition`` are accepted, after every
        earlier write; the fence after."""

    def delete_user(self, user_id: str) -> None:
        """Remove every key of one customer."""
