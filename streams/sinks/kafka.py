"""Every Kafka output of the worker, through one producer, acknowledged before positions move.

The worker writes four kinds of Kafka records: the changelog (profiles and
the protocol's markers and positions, ``streams/state/changelog.py``), the
recommendations topic and the dead-letter topic. They go through one
confluent-kafka producer (librdkafka: batching and retries in C, idempotent,
``acks=all``); :meth:`KafkaSink.flush` returns once the broker acknowledged
every record produced before it. The position checkpoint
(``streams/checkpointing/positions.py``) flushes it before it writes a
position record, and the model checkpointer through it before every model
checkpoint, so a position never covers an event whose outputs could still
be lost.

Error policy, per record:

* a transient failure (timeout, broker down, leader moving) is produced
  again by the next :meth:`flush`, with capped exponential backoff, until it
  is acknowledged; the flush does not return meanwhile (backpressure: the
  batch loop stops; one log line per outage, one when it ends, and
  ``recostream_kafka_produce_errors_total``);
* a permanent failure (too large, rejected, not authorised) of a
  recommendation or a dead letter is parked: logged with its topic, key and,
  for a dead letter, the source position it describes, and counted in
  ``recostream_outputs_parked_total{topic}``; consumption goes on. Neither
  can be oversized by construction (recommendations are bounded by
  ``top_n``, dead letters by ``streams.contract.dead_letter``);
* a permanent failure of a changelog record, or a fatal producer error,
  raises :class:`OutputLost` from :meth:`flush`: the worker stops without
  writing a position, like a crash, and the events are processed again by
  the next owner.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
from confluent_kafka import KafkaError, KafkaException, Producer

from streams.kafka.produce import make_producer, send
from streams.metrics import Metrics
from streams.settings import Settings

log = logging.getLogger(__name__)

PERMANENT = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD,
    KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError._INVALID_ARG, KafkaError.INVALID_REQUIRED_ACKS,
})
_source = msgspec.json.Decoder(dict)


class OutputLost(RuntimeError):
    """A record the worker's state depends on could not be written; stop without moving positions."""


class KafkaSink:
    def __init__(self, settings: Settings, metrics: Metrics, essential_topics: frozenset[str] = frozenset(),
                 max_backoff_s: float = 5.0) -> None:
        self.producer: Producer = make_producer(settings, **{
            "acks": "all",
            "linger.ms": 1,
            # Room for several micro-batches of outputs (librdkafka's default is 100k).
            "queue.buffering.max.messages": max(100_000, 8 * settings.batch_max_events),
        })
        self.metrics = metrics
        self.essential = essential_topics
        self.max_backoff_s = max_backoff_s
        self._failed: list[tuple[str, int | None, bytes | None, bytes | None, Any]] = []
        self._lost: list[str] = []
        self._outage_since: float | None = None

    def produce(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
                headers: list | None = None) -> None:
        """Queue one record (``value=None`` is a tombstone); :meth:`flush` delivers it."""
        try:
            send(self.producer, topic, key, value, self._on_delivery, partition, headers)
        except KafkaException as exc:  # refused before sending, e.g. larger than message.max.bytes
            self._give_up(topic, key, value, exc.args[0])

    def _on_delivery(self, err: Any, msg: Any) -> None:
        # Runs inside producer.flush()/poll(), on the calling thread.
        if err is None:
            return
        if err.fatal() or err.code() in PERMANENT:
            self._give_up(msg.topic(), msg.key(), msg.value(), err)
            return
        partition = msg.partition()
        self._failed.append((msg.topic(), partition if partition >= 0 else None, msg.key(), msg.value(),
                             msg.headers()))
        if len(self._failed) == 1 and self._outage_since is None:
            log.error("Kafka did not acknowledge output records (%s); retrying with backoff "
                      "and pausing consumption until it does", err)

    def _give_up(self, topic: str, key: bytes | None, value: bytes | None, err: Any) -> None:
        if topic in self.essential or getattr(err, "fatal", lambda: False)():
            self._lost.append(f"{topic}: {err}")
            return
        where = ""
        if value is not None and b'"offset"' in value[:4096]:
            try:  # a dead letter: name the message it describes
                doc = _source.decode(value)
                where = f" (dead letter of {doc.get('topic')}:{doc.get('partition')}@{doc.get('offset')})"
            except msgspec.DecodeError:
                pass
        log.error("parked an output record to %s, key %r, %d bytes%s: %s", topic, (key or b"")[:32],
                  len(value or b""), where, err)
        self.metrics.outputs_parked(topic)

    def flush(self) -> None:
        """Return once every queued record is acknowledged or parked (see the module doc)."""
        backoff = 0.05
        while True:
            remaining = self.producer.flush(5.0)
            self._raise_if_lost()
            if remaining:  # still in flight after 5 s (librdkafka retries internally): keep waiting
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    log.error("Kafka has not acknowledged %d output records for 5 s; "
                              "pausing consumption until it does", remaining)
                continue
            if not self._failed:
                break
            failed, self._failed = self._failed, []
            self.metrics.kafka_produce_errors.inc(len(failed))
            if self._outage_since is None:
                self._outage_since = time.monotonic()
            time.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)
            for topic, partition, key, value, headers in failed:
                self.produce(topic, key, value, partition, headers)
        if self._outage_since is not None:
            log.warning("Kafka acknowledges output records again after %.1f s", time.monotonic() - self._outage_since)
            self._outage_since = None

    def _raise_if_lost(self) -> None:
        if self._lost:
            lost, self._lost = self._lost, []
            raise OutputLost(f"{len(lost)} records the worker's state depends on were refused: {lost[:3]}")

    def collect(self) -> None:
        """Serve the delivery reports the broker has sent so far, without waiting."""
        self.producer.poll(0)
        self._raise_if_lost()

    def pending(self) -> int:
        """Records queued, in flight or acknowledged but not yet collected."""
        return len(self.producer)
