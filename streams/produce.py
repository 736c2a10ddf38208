"""Publishing events and the catalogue to Kafka (confluent-kafka: fast, batched)."""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

import msgspec
from confluent_kafka import KafkaException, Producer

from streams.settings import Settings

_encode = msgspec.json.Encoder().encode


def make_producer(settings: Settings, **extra: str) -> Producer:
    conf = settings.kafka_client_config()
    conf.update({
        "linger.ms": 5,
        "enable.idempotence": True,  # retries never duplicate on the log
        # Key hashing compatible with the Java client (Kafka's default), so
        # events of one user land on the same partition whoever produces them.
        "partitioner": "murmur2_random",
    })
    conf.update(extra)
    # librdkafka logs to stderr by default; route it through logging instead.
    conf.setdefault("logger", logging.getLogger("librdkafka"))
    return Producer(conf)


def _send(producer: Producer, topic: str, key: bytes | None, value: bytes | None) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key)
            return
        except BufferError:  # local queue full: let librdkafka drain, then retry
            producer.poll(0.05)


def publish_catalogue(producer: Producer, settings: Settings, items: Iterable[dict]) -> int:
    n = 0
    for item in items:
        _send(producer, settings.topic_items, item["item_id"].encode(), _encode(item))
        n += 1
    producer.flush(30)
    return n


def publish_events(
    producer: Producer,
    settings: Settings,
    events: Iterable[tuple[str, dict]],
    *,
    rate: float | None = None,
    live_ts: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Publish ``(event_type, payload)`` pairs to the type's topic, keyed by user.

    ``rate`` (events/s) paces publishing; ``live_ts`` stamps each event with the
    wall clock at send time (the live demo), instead of its simulated time.
    """
    start = time.monotonic()
    n = 0
    for etype, payload in events:
        if should_stop():
            break
        if rate:
            ahead = n / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        # `type` is redundant on a per-type topic and required on a mixed one.
        payload = {**payload, "type": etype}
        if live_ts:
            payload["ts"] = int(time.time() * 1000)
        _send(producer, settings.topic_for(etype), payload["user_id"].encode(), _encode(payload))
        n += 1
        if n % 1000 == 0:
            producer.poll(0)
            if on_progress:
                on_progress(1000)
    remaining = producer.flush(30)
    if remaining:
        raise KafkaException(f"{remaining} events were not delivered within 30 s")
    if on_progress and n % 1000:
        on_progress(n % 1000)
    return n


def publish_raw(producer: Producer, messages: Iterable[tuple[str, bytes | None, bytes | None]]) -> int:
    """Publish ``(topic, key, value)`` exactly as given: used to test bad input."""
    n = 0
    for topic, key, value in messages:
        _send(producer, topic, key, value)
        n += 1
    producer.flush(30)
    return n
