"""Publishing events and the catalogue to Kafka (confluent-kafka: fast, batched)."""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

import msgspec
from confluent_kafka import KafkaException, Producer

from models.effect import IMPRESSION
from streams.contract import epoch_ms
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


class DeliveryFailed(KafkaException):
    """Some messages were not acknowledged by the broker."""


class DeliveryReport:
    """Counts broker acknowledgements; librdkafka reports each message once.

    Without it a producer loses messages silently: ``produce()`` only queues,
    and a message the broker rejects or that times out is reported here only.
    """

    def __init__(self, on_delivered: Callable[[object], None] | None = None) -> None:
        self.delivered = 0
        self.failed = 0
        self.errors: list[str] = []
        self.on_delivered = on_delivered

    def __call__(self, err, msg) -> None:
        if err is not None:
            self.failed += 1
            if len(self.errors) < 10:
                self.errors.append(f"{msg.topic()}: {err}")
        else:
            self.delivered += 1

    def callback(self, token: object) -> Callable:
        """A per-message callback that also hands ``token`` to ``on_delivered``
        (only needed when the caller tracks which messages were acknowledged)."""
        def report(err, msg) -> None:
            self(err, msg)
            if err is None and self.on_delivered is not None:
                self.on_delivered(token)
        return report

    def flush(self, producer: Producer, timeout: float = 30.0) -> None:
        """Wait for every queued message; raise if any was not acknowledged."""
        remaining = producer.flush(timeout)
        if remaining:
            raise DeliveryFailed(f"{remaining} messages were not delivered within {timeout:.0f} s")
        if self.failed:
            raise DeliveryFailed(f"{self.failed} messages were not delivered, e.g. {self.errors[:3]}")


def send(producer: Producer, topic: str, key: bytes | None, value: bytes | None,
          on_delivery: Callable, partition: int | None = None, headers: list | None = None) -> None:
    """Queue one message (to ``partition``, else the key's); waits while librdkafka's queue is full."""
    kwargs: dict = {"on_delivery": on_delivery}
    if partition is not None:
        kwargs["partition"] = partition
    if headers:
        kwargs["headers"] = headers
    while True:
        try:
            producer.produce(topic, value=value, key=key, **kwargs)
            return
        except BufferError:  # local queue full: let librdkafka drain, then retry
            producer.poll(0.05)


def publish_catalogue(producer: Producer, settings: Settings, items: Iterable[dict]) -> int:
    report = DeliveryReport()
    n = 0
    for item in items:
        send(producer, settings.topic_items, item["item_id"].encode(), _encode(item), report)
        n += 1
    report.flush(producer)
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
    on_delivered: Callable[[tuple[str, dict]], None] | None = None,
) -> int:
    """Publish ``(event_type, payload)`` pairs to the type's topic, keyed by user; ``("impression",
    payload)`` pairs (the closed-loop shop's) go to the impressions topic as they are.

    ``rate`` (events/s) paces publishing; ``live_ts`` stamps each event with the
    wall clock at send time (the live demo), instead of its simulated time.
    ``on_delivered`` is called with each pair the broker acknowledged. Raises
    :class:`DeliveryFailed` if any message was not acknowledged.
    """
    report = DeliveryReport(on_delivered)
    start = time.monotonic()
    n = 0
    for etype, payload in events:
        if should_stop():
            break
        if rate:
            ahead = n / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        if etype == IMPRESSION:
            topic, payload = settings.topic_impressions, dict(payload)
        else:  # `type` is redundant on a per-type topic and required on a mixed one
            topic, payload = settings.topic_for(etype), {**payload, "type": etype}
        if live_ts:
            payload["ts"] = epoch_ms(time.time())
        send(producer, topic, payload["user_id"].encode(), _encode(payload),
             report if on_delivered is None else report.callback((etype, payload)))
        n += 1
        if n % 1000 == 0:
            producer.poll(0)
            if on_progress:
                on_progress(1000)
    report.flush(producer)
    if on_progress and n % 1000:
        on_progress(n % 1000)
    return n


def publish_raw(producer: Producer, messages: Iterable[tuple[str, bytes | None, bytes | None]]) -> int:
    """Publish ``(topic, key, value)`` exactly as given: used to test bad input."""
    report = DeliveryReport()
    n = 0
    for topic, key, value in messages:
        send(producer, topic, key, value, report)
        n += 1
    report.flush(producer)
    return n
