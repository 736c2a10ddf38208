"""The durability rule of the worker, in one place: drain every sink, then record positions.

A position record (``streams/state/changelog.py``) says "every event of this
partition below these offsets is reflected in the changelog and its
outputs". The next owner of the partition restores it and resumes there, so
it must never run ahead of what is durable. :meth:`PositionCheckpoint.commit`
is the only code that writes one, and it first drains every sink: it returns
from the outputs' flush only once the broker acknowledged each record queued
before it (changelog profiles, recommendations, dead letters), and from the
Redis views' flush only once Redis answered the last batch's write (retried
until it did; ``streams/sinks/overlapped.py``), then queues the position
records behind them on the same idempotent producer.

Why that makes the guarantee hold (docs/RELIABILITY.md argues it in full): in
changelog partition ``p``, every position record of generation ``g`` follows
the acknowledged records of every event below it, so the state a restore
folds up to a position holds those events exactly once. A crash before the
position records are acknowledged loses only them: the next owner resumes at
the previous position and the profiles' per-partition offsets recognise the
events it processes again. The position records are acknowledged by the next
drain, or at once with ``acknowledged=True`` (a revocation: the partition is
about to move to another owner).
"""

from __future__ import annotations

from typing import Iterable, Sequence

from confluent_kafka import TopicPartition

from streams.ports import Drainable, RecordOutput
from streams.state.changelog import position_record
from streams.state.store import ProfileStore


class PositionCheckpoint:
    """Records the positions the worker's owned partitions reached, after every sink is drained.

    ``records`` is where position records go (the changelog's producer),
    ``topic`` the changelog topic, ``sinks`` every output to drain first.
    """

    def __init__(self, store: ProfileStore, records: RecordOutput, topic: str, sinks: Sequence[Drainable]) -> None:
        self.store = store
        self.records = records
        self.topic = topic
        self.sinks = tuple(sinks)

    def drain(self) -> None:
        """Return once every output queued so far is durable."""
        for sink in self.sinks:
            sink.flush()

    def commit(self, partitions: Iterable[int] | None = None, *, acknowledged: bool = False) -> int:
        """Drain every sink, then record the positions of ``partitions`` (default: every owned one)
        that moved since their last record; returns how many records were written.

        ``acknowledged``: also wait for the position records themselves.
        """
        self.drain()
        written = 0
        owned = self.store.partitions
        for partition in owned if partitions is None else partitions:
            state = owned.get(partition)
            if state is None or state.positions == state.committed:
                continue
            key, value, headers = position_record(state.gen, state.positions)
            self.records.produce(self.topic, key, value, partition, headers)
            state.committed = dict(state.positions)
            written += 1
        if acknowledged:
            self.records.flush()
        return written

    def offsets(self, partitions: Iterable[int] | None = None) -> list[TopicPartition]:
        """The recorded positions as Kafka offsets, for the group's own commit (lag tools read it)."""
        out = []
        owned = self.store.partitions
        for partition in owned if partitions is None else partitions:
            state = owned.get(partition)
            if state is not None:
                out += [TopicPartition(topic, partition, offset) for topic, offset in state.committed.items()]
        return out
