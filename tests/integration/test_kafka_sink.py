"""The worker's Kafka outputs against the real embedded broker."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.metrics import Metrics
from streams.sinks.kafka import KafkaSink, OutputLost

pytestmark = pytest.mark.integration


def _create(settings, topic: str, partitions: int) -> None:
    admin = AdminClient(settings.kafka_client_config())
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result()


def _read_all(settings, topic: str, partition: int, end: int) -> list[tuple[bytes, bytes | None]]:
    c = Consumer({**settings.kafka_client_config(), "group.id": topic, "enable.auto.commit": False})
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


def test_records_headers_and_a_tombstone_are_delivered_on_flush(settings):
    topic = f"{settings.redis_prefix}.plain"
    _create(settings, topic, 1)
    sink = KafkaSink(settings, Metrics(process_metrics=False))
    sink.produce(topic, b"k1", b"v1", 0, [("rs.gen", b"\x00" * 8)])
    sink.produce(topic, b"k1", None)
    sink.flush()
    assert sink.pending() == 0
    assert _read_all(settings, topic, 0, 2) == [(b"k1", b"v1"), (b"k1", None)]


def test_a_record_too_large_for_the_producer_is_parked_not_raised(settings):
    """A recommendation or dead letter the producer refuses for good is logged and counted; the rest goes on."""
    topic = f"{settings.redis_prefix}.parked"
    _create(settings, topic, 1)
    metrics = Metrics(process_metrics=False)
    sink = KafkaSink(settings, metrics)
    sink.produce(topic, b"big", b"x" * 2_000_000)  # above librdkafka's message.max.bytes (1 MB)
    sink.produce(topic, b"k", b"fits")
    sink.flush()
    assert metrics.registry.get_sample_value("recostream_outputs_parked_total", {"topic": topic}) == 1
    assert _read_all(settings, topic, 0, 1) == [(b"k", b"fits")]


def test_a_refused_changelog_record_stops_the_worker(settings):
    """A changelog record cannot be parked: the state depends on it, so the flush raises and no position moves."""
    topic = f"{settings.redis_prefix}.essential"
    _create(settings, topic, 1)
    sink = KafkaSink(settings, Metrics(process_metrics=False), essential_topics=frozenset({topic}))
    sink.produce(topic, b"big", b"x" * 2_000_000)
    with pytest.raises(OutputLost):
        sink.flush()


def test_collect_serves_acknowledged_records_without_waiting(settings):
    """Between flushes the worker calls collect(): records the broker acknowledged stop counting as
    pending, so the loop's backpressure (a flush when too many are pending) waits only for a slow broker."""
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
