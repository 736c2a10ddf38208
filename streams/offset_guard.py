"""Catch input messages that Faust fetched but never delivered, and process them anyway.

Input topics are plain (not compacted, not transactional), so the offsets a
worker processes on one partition must be consecutive, starting at the
committed offset it was assigned. Around a rebalance Faust 0.15 breaks that:
measured in the rebalance soak test, the first message a worker got on a
partition it had just taken over was sometimes tens of offsets past the
committed one, or one message (118 between 117 and 119) was missing; Faust's
consumer marks a message as read even when its delivery to the stream is cut
short by a flow suspension, and its commit logic accepts an unacked offset
right above the committed one (``Consumer._new_offset`` checks ``> 1``), so
the skipped messages were committed past and never processed: their
customers ended an event or a few short. Seeking the consumer back does not
help reliably: an in-flight fetch iteration overwrites the read offset again.

So the worker checks every batch: when a partition's offsets jump forward, the
missing range is read directly from the broker (a group-less confluent-kafka
consumer, ``fetch_range``) and processed in the same batch, before the
batch's own messages; the batch is acked only after that, so nothing can be
committed past the gap before it is processed. Anything of the range that was
already processed is deduplicated by the per-customer window as usual.
Expectations are forgotten on every rebalance (a partition's next offset is
then its committed one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Optional

from confluent_kafka import Consumer, TopicPartition

from streams.settings import Settings

log = logging.getLogger(__name__)


class OffsetGuard:
    """Per partition, the next offset expected; reports the ranges that were skipped.

    ``committed(tp)`` gives the committed offset of a partition the worker was
    just assigned (the offset its first message must have), or ``None``.

    Examples
    --------
    >>> guard = OffsetGuard(committed=lambda tp: 10)
    >>> guard.observe([("t", 10), ("t", 11), ("t", 14), ("t", 15)])
    {'t': (12, 14)}
    >>> guard.observe([("t", 12), ("t", 13)])   # going backwards (a redelivery) is fine
    {}
    """

    def __init__(self, committed: Callable[[Hashable], Optional[int]]) -> None:
        self.committed = committed
        self.next: dict[Hashable, int] = {}

    def reset(self) -> None:
        """Forget every expectation (call on rebalance)."""
        self.next.clear()

    def new(self, tps: Iterable[Hashable]) -> set:
        """Those of ``tps`` met for the first time since the last reset (start or rebalance)."""
        return {tp for tp in tps if tp not in self.next}

    def unknown(self, tps: Iterable[Hashable]) -> set:
        """Those of ``tps`` whose next offset is not known (no message yet, committed offset unknown)."""
        return {tp for tp in tps if self.expected(tp) is None}

    def assume(self, offsets: dict) -> None:
        """Take ``{tp: committed offset}`` (read from the broker) as the next offsets of partitions not seen yet."""
        for tp, offset in offsets.items():
            self.next.setdefault(tp, offset)

    def expected(self, tp: Hashable) -> Optional[int]:
        """The next offset the worker must process on ``tp`` (the committed one if nothing came yet)."""
        expected = self.next.get(tp)
        return self.committed(tp) if expected is None else expected

    def observe(self, positions: Iterable[tuple[Hashable, int]]) -> dict[Hashable, tuple[int, int]]:
        """Record ``(tp, offset)`` pairs in delivery order; return ``{tp: (first missing, first present)}``."""
        gaps: dict[Hashable, tuple[int, int]] = {}
        for tp, offset in positions:
            expected = self.expected(tp)
            if expected is not None and offset > expected and tp not in gaps:
                gaps[tp] = (expected, offset)
            self.next[tp] = offset + 1
        return gaps


def faust_committed(app: Any) -> Callable[[Hashable], Optional[int]]:
    """The committed offset Faust's consumer sought a partition to (``None`` if unknown)."""
    def committed(tp: Hashable) -> Optional[int]:
        offsets = getattr(app.consumer, "_committed_offset", None) or {}
        return offsets.get(tp)
    return committed


@dataclass(frozen=True)
class RawMessage:
    """The fields of a Kafka message the pipeline reads (as on a Faust ``Message``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)


@dataclass(frozen=True)
class RawEvent:
    """Stands in for a Faust ``Event``: the pipeline only reads ``.message``."""

    message: RawMessage


def committed_offsets(settings: Settings, tps: Iterable[tuple[str, int]], timeout_s: float = 10.0) -> dict:
    """The worker group's committed offsets of ``tps`` (``(topic, partition)`` pairs, Faust ``TP``s
    included), read from the broker (blocking), keyed by the given ``tps``; partitions without a
    committed offset are left out."""
    tps = list(tps)
    consumer = Consumer({**settings.kafka_client_config(), "group.id": settings.app_id,
                         "enable.auto.commit": False, "logger": logging.getLogger("librdkafka")})
    try:
        got = consumer.committed([TopicPartition(topic, partition) for topic, partition in tps], timeout=timeout_s)
    finally:
        consumer.close()
    return {tp: c.offset for tp, c in zip(tps, got) if c.offset >= 0}


def fetch_range(settings: Settings, topic: str, partition: int, start: int, end: int,
                timeout_s: float = 30.0) -> list[RawEvent]:
    """Read offsets ``[start, end)`` of one partition straight from the broker (blocking).

    Offsets deleted by retention are simply absent (the read starts at the log start).
    """
    consumer = Consumer({**settings.kafka_client_config(), "group.id": f"{settings.app_id}-offset-guard",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "enable.partition.eof": False, "logger": logging.getLogger("librdkafka")})
    out: list[RawEvent] = []
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        deadline_polls = max(1, int(timeout_s / 0.5))
        polls_without_data = 0
        while polls_without_data < deadline_polls:
            batch = consumer.consume(num_messages=max(1, end - start), timeout=0.5)
            if not batch:
                polls_without_data += 1
                continue
            polls_without_data = 0
            for msg in batch:
                if msg.error() is not None:
                    raise RuntimeError(f"reading {topic}:{partition} from {start}: {msg.error()}")
                if msg.offset() >= end:
                    return out
                out.append(RawEvent(RawMessage(topic, partition, msg.offset(), msg.key(), msg.value())))
            if out and out[-1].message.offset >= end - 1:
                return out
        raise TimeoutError(f"reading {topic}:{partition} [{start}, {end}) got only {len(out)} messages in {timeout_s:.0f} s")
    finally:
        consumer.close()
