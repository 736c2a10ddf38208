"""Reading a partition range straight from the broker (blocking, no consumer group).

Used to restore a partition's state from its changelog and to let the models
catch up on events their checkpoint predates. A group-less consumer with
manual assignment reads exactly the asked offsets, whatever the worker's own
consumer group is doing.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Iterable

from confluent_kafka import Consumer, TopicPartition

from streams.settings import Settings

log = logging.getLogger(__name__)
_POLL_S = 0.02


def _reader(settings: Settings) -> Consumer:
    return Consumer({**settings.kafka_client_config(), "group.id": f"{settings.app_id}-reader-{uuid.uuid4().hex[:8]}",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest",
                     # tansu holds a fetch for the whole wait even when data is there
                     "fetch.wait.max.ms": 10,
                     "enable.partition.eof": False, "logger": logging.getLogger("librdkafka")})


def read_until(settings: Settings, topic: str, ends: dict[int, int], timeout_s: float = 60.0) -> dict[int, list[Any]]:
    """Every message of each partition ``p`` of ``topic`` from its log start up to offset ``ends[p]``
    (exclusive), read at once; raises like :func:`read_range`."""
    out: dict[int, list[Any]] = {p: [] for p in ends}
    todo = {p for p, end in ends.items() if end > 0}
    if not todo:
        return out
    consumer = _reader(settings)
    try:
        # Offset 0, not OFFSET_BEGINNING: resolving "beginning" costs a round of offset
        # requests (~0.5 s on tansu); a log that starts later resets to its start.
        consumer.assign([TopicPartition(topic, p, 0) for p in sorted(todo)])
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            # consume() waits its whole timeout unless num_messages arrive: keep it short.
            batch = consumer.consume(num_messages=10_000, timeout=_POLL_S)
            if not batch:
                continue
            deadline = time.monotonic() + timeout_s
            for msg in batch:
                if msg.error() is not None:
                    raise RuntimeError(f"reading {topic}: {msg.error()}")
                p = msg.partition()
                if p not in todo:
                    continue
                if msg.offset() < ends[p]:
                    out[p].append(msg)
                if msg.offset() >= ends[p] - 1:
                    todo.discard(p)
        if todo:
            raise TimeoutError(f"reading {topic} partitions {sorted(todo)} up to {ends} did not complete in "
                               f"{timeout_s:.0f} s")
        return out
    finally:
        consumer.close()


def read_range(settings: Settings, topic: str, partition: int, start: int | None, end: int,
               timeout_s: float = 30.0) -> list[Any]:
    """The messages at offsets ``[start, end)`` of one partition (``start=None``: from the log start).

    Stops at the first message at or past ``end``; offsets deleted by retention
    are simply absent. Raises ``TimeoutError`` when ``timeout_s`` pass without
    a message while the range is not complete, and ``RuntimeError`` on a
    broker error.
    """
    if start is not None and start >= end:
        return []
    consumer = _reader(settings)
    out: list[Any] = []
    try:
        consumer.assign([TopicPartition(topic, partition, 0 if start is None else start)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=10_000, timeout=_POLL_S)
            if not batch:
                continue
            deadline = time.monotonic() + timeout_s
            for msg in batch:
                if msg.error() is not None:
                    raise RuntimeError(f"reading {topic}:{partition}: {msg.error()}")
                if msg.offset() >= end:
                    return out
                out.append(msg)
            if out and out[-1].offset() >= end - 1:
                return out
        raise TimeoutError(f"reading {topic}:{partition} up to offset {end} got only {len(out)} messages "
                           f"(last offset {out[-1].offset() if out else None}) in {timeout_s:.0f} s")
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
