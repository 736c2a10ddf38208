"""The offset guard: a skipped input message is fetched again, exactly once."""

from __future__ import annotations

import doctest

import streams.offset_guard
from streams.offset_guard import OffsetGuard


def test_doctests():
    assert doctest.testmod(streams.offset_guard).failed == 0


def test_consecutive_offsets_and_redeliveries_report_no_gap():
    guard = OffsetGuard(committed=lambda tp: None)
    assert guard.observe([("a", 0), ("b", 5), ("a", 1), ("b", 6)]) == {}
    assert guard.observe([("a", 1), ("a", 2)]) == {}  # a redelivery goes backwards: fine
    assert guard.next == {"a": 3, "b": 7}


def test_a_gap_is_reported_once_with_its_range():
    guard = OffsetGuard(committed=lambda tp: None)
    guard.observe([("a", 116), ("a", 117)])
    assert guard.observe([("a", 119), ("a", 120), ("a", 125)]) == {"a": (118, 119)}
    assert guard.observe([("a", 126)]) == {}


def test_the_first_message_after_an_assignment_must_be_the_committed_one():
    committed = {"a": 40}
    guard = OffsetGuard(committed=committed.get)
    assert guard.observe([("a", 52)]) == {"a": (40, 52)}
    guard.reset()
    assert guard.observe([("a", 40)]) == {}


def test_fetch_range_reads_exactly_the_missing_offsets(settings):
    from streams.produce import make_producer, publish_raw
    from streams.offset_guard import fetch_range

    topic = settings.topic_click
    publish_raw(make_producer(settings), [(topic, b"k", f"v{i}".encode()) for i in range(30)])
    from confluent_kafka import Consumer, TopicPartition
    probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "probe"})
    partition = next(p for p in range(settings.partitions)
                     if probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] > 0)
    probe.close()
    events = fetch_range(settings, topic, partition, 7, 19)
    assert [e.message.offset for e in events] == list(range(7, 19))
    assert [e.message.value for e in events] == [f"v{i}".encode() for i in range(7, 19)]
    assert all(e.message.key == b"k" and e.message.tp == (topic, partition) for e in events)
