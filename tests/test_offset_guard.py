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


def test_partitions_whose_committed_offset_faust_does_not_know_yet_take_the_brokers():
    guard = OffsetGuard(committed=lambda tp: None)  # Faust has not sought yet
    assert guard.unknown({("a", 0), ("b", 0)}) == {("a", 0), ("b", 0)}
    guard.assume({("a", 0): 40})
    assert guard.unknown({("a", 0), ("b", 0)}) == {("b", 0)}
    assert guard.observe([(("a", 0), 52)]) == {("a", 0): (40, 52)}


def test_committed_offsets_reads_the_worker_groups_offsets_from_the_broker(settings):
    from confluent_kafka import Consumer, TopicPartition

    from streams.offset_guard import committed_offsets
    from streams.produce import make_producer, publish_raw

    topic = settings.topic_click
    publish_raw(make_producer(settings), [(topic, b"k", f"v{i}".encode()) for i in range(10)])
    group = Consumer({**settings.kafka_client_config(), "group.id": settings.app_id, "enable.auto.commit": False})
    group.commit(offsets=[TopicPartition(topic, 0, 7)], asynchronous=False)
    group.close()
    assert committed_offsets(settings, [(topic, 0), (topic, 1)]) == {(topic, 0): 7}
