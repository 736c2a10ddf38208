"""The worker's Kafka outputs against the real embedded broker."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.kafka_sink import KafkaSink
from streams.metrics import Metrics

pytestmark = pytest.mark.integration


def _create(settings, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result()


def _read_all(settings, topic: str, partition: int, end: int) -> list[tuple[bytes, bytes | None]]:
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": topic,
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, partition, 0)])
    out = []
    try:
        while len(out) < end:
            msg = c.poll(10)
            assert msg is not None, f"only {len(out)} of {end} records readable"
            assert msg.error() is None, msg.error()
            out.append((msg.key(), msg.value()))
    finally:
        c.close()
    return out


def test_sealed_changelog_batches_end_at_the_high_watermark(settings):
    """Faust recovers a table only up to the partition's high watermark; after
    every flush it must cover every record of the batch (tansu reports the
    base offset of the last record batch + 1, so the last record goes alone)."""
    topic = f"{settings.redis_prefix}.sealed-changelog"
    _create(settings, topic, 2)
    sink = KafkaSink(settings, Metrics(process_metrics=False))
    sent = {0: [], 1: []}
    for batch in range(3):
        for i in range(9):
            partition, key, value = i % 2, f'"u{i}"'.encode(), f"b{batch}-{i}".encode()
            sink.produce_sealed(topic, key, value, partition)
            sent[partition].append((key, value))
        asyncio.run(sink.flush())
        assert sink.pending() == 0
        probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": topic + "-probe"})
        try:
            for partition in (0, 1):
                low, high = probe.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                assert high == len(sent[partition]), (batch, partition, high)
        finally:
            probe.close()
    for partition in (0, 1):
        assert _read_all(settings, topic, partition, len(sent[partition])) == sent[partition]


def test_a_tombstone_and_unsealed_records_are_delivered_on_flush(settings):
    topic = f"{settings.redis_prefix}.plain"
    _create(settings, topic, 1)
    sink = KafkaSink(settings, Metrics(process_metrics=False))
    sink.produce(topic, b"k1", b"v1")
    sink.produce(topic, b"k1", None)
    asyncio.run(sink.flush())
    assert sink.pending() == 0
    assert _read_all(settings, topic, 0, 2) == [(b"k1", b"v1"), (b"k1", None)]


def test_collect_serves_acknowledged_records_without_waiting(settings):
    """Between flushes the worker calls collect(): records the broker acknowledged stop counting as
    pending (before, they counted until the next flush, and the batch loop stopped for a flush every
    ~25 batches with a prompt broker)."""
    import time

    topic = f"{settings.redis_prefix}.collected"
    _create(settings, topic, 1)
    sink = KafkaSink(settings, Metrics(process_metrics=False))
    sent = [(b"k", b"v%d" % i) for i in range(50)]
    for key, value in sent:
        sink.produce(topic, key, value)
    assert sink.pending() == 50
    deadline = time.monotonic() + 10
    while sink.pending() and time.monotonic() < deadline:
        sink.collect()
        time.sleep(0.01)
    assert sink.pending() == 0
    assert _read_all(settings, topic, 0, 50) == sent
