"""Reading from the broker: what a consumed message is, and partition ranges read outside any group.

Every reader of the worker (the stream loop, the catalogue follower, the
item-updates log, the changelog restore) tells a consumed message apart with
:func:`delivered`, so a fatal client error stops each of them alike and a
transient one is logged alike. Partition ranges (:func:`read_ranges`)
restore a partition's state from its changelog: a group-less consumer with
manual assignment reads exactly the asked offsets, whatever the worker's own
consumer group is doing.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from typing import Any, Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.settings import Settings

log = logging.getLogger(__name__)
_POLL_S = 0.02


class Delivered(enum.Enum):
    """What a message from ``Consumer.consume`` is."""

    RECORD = "record"
    END = "end"  # its partition's end was reached (``enable.partition.eof``); ``offset()`` is the end
    RETRIED = "retried"  # a transient error, logged: librdkafka retries it itself


def delivered(msg: Message, reader: str) -> Delivered:
    """What ``msg`` is, for the reader named ``reader``; a fatal error raises ``KafkaException``
    (the client cannot go on: the worker stops and its partitions move on to the others).

    >>> delivered(Message(topic="events", partition=0, offset=7, value=b"{}"), "loop")
    <Delivered.RECORD: 'record'>
    >>> delivered(Message(topic="events", offset=9, error=KafkaError(KafkaError._PARTITION_EOF)), "loop")
    <Delivered.END: 'end'>
    >>> delivered(Message(error=KafkaError(KafkaError._TRANSPORT)), "loop")
    <Delivered.RETRIED: 'retried'>
    >>> delivered(Message(error=KafkaError(KafkaError._FATAL, fatal=True)), "loop")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    KafkaException: KafkaError{FATAL,code=_FATAL,...}
    """
    err = msg.error()
    if err is None:
        return Delivered.RECORD
    if err.code() == KafkaError._PARTITION_EOF:
        return Delivered.END
    if err.fatal():
        raise KafkaException(err)
    log.warning("%s: consumer error: %s", reader, err)
    return Delivered.RETRIED


def assigned_consumer(settings: Settings, purpose: str, **extra: Any) -> Consumer:
    """A consumer that reads the partitions it is assigned, outside every consumer group.

    librdkafka wants a ``group.id`` even for a consumer that never
    subscribes: a unique one (``{app_id}-{purpose}-{random}``) that is never
    joined and never committed keeps it out of the workers' group. Security
    and bootstrap come from ``settings.kafka_client_config()``, like every
    client of the worker.
    """
    return Consumer({**settings.kafka_client_config(),
                     "group.id": f"{settings.app_id}-{purpose}-{uuid.uuid4().hex[:8]}",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest",
                     "enable.partition.eof": False, "logger": logging.getLogger("librdkafka"), **extra})


def _reader(settings: Settings) -> Consumer:
    # tansu holds a fetch for the whole wait even when data is there: a bounded read waits little.
    return assigned_consumer(settings, "reader", **{"fetch.wait.max.ms": 10})


def read_ranges(settings: Settings, topic: str, ranges: dict[int, tuple[int | None, int]],
                timeout_s: float = 60.0) -> dict[int, list[Any]]:
    """The messages at offsets ``[start, end)`` of each partition ``{p: (start, end)}`` of ``topic``, read
    at once (``start=None``: from the log start).

    A partition is done at its first message at or past ``end - 1``; offsets
    deleted by retention are simply absent. Raises ``TimeoutError`` when
    ``timeout_s`` pass without a message while a range is not complete, and
    ``KafkaException`` on a fatal client error (a transient one is logged and retried, as by
    :func:`delivered` everywhere).
    """
    out: dict[int, list[Any]] = {p: [] for p in ranges}
    todo = {p for p, (start, end) in ranges.items() if end > (start or 0)}
    if not todo:
        return out
    consumer = _reader(settings)
    try:
        # Offset 0, not OFFSET_BEGINNING: resolving "beginning" costs a round of offset
        # requests first; a log that starts later resets to its start.
        consumer.assign([TopicPartition(topic, p, ranges[p][0] or 0) for p in sorted(todo)])
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            # consume() waits its whole timeout unless num_messages arrive: keep it short.
            batch = consumer.consume(num_messages=10_000, timeout=_POLL_S)
            if not batch:
                continue
            deadline = time.monotonic() + timeout_s
            for msg in batch:
                if delivered(msg, f"reading {topic}") is not Delivered.RECORD:
                    continue  # a transient error, retried by the client within the deadline
                p = msg.partition()
                if p not in todo:
                    continue
                end = ranges[p][1]
                if msg.offset() < end:
                    out[p].append(msg)
                if msg.offset() >= end - 1:
                    todo.discard(p)
        if todo:
            raise TimeoutError(f"reading {topic} partitions {sorted(todo)} of {ranges} did not complete in "
                               f"{timeout_s:.0f} s")
        return out
    finally:
        consumer.close()


def committed_offsets(settings: Settings, tps: Iterable[tuple[str, int]], timeout_s: float = 10.0) -> dict:
    """The worker group's committed offsets of ``(topic, partition)`` pairs (absent: none committed)."""
    tps = list(tps)
    consumer = Consumer({**settings.kafka_client_config(), "group.id": settings.app_id,
                         "enable.auto.commit": False, "logger": logging.getLogger("librdkafka")})
    try:
        got = consumer.committed([TopicPartition(topic, partition) for topic, partition in tps], timeout=timeout_s)
    finally:
        consumer.close()
    return {tp: c.offset for tp, c in zip(tps, got) if c.offset >= 0}
