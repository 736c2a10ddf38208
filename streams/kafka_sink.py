"""Every Kafka output of a micro-batch, produced in bulk and flushed before the batch is acked.

The worker writes three kinds of Kafka records: the profiles table's changelog
(one per touched customer, to the customer's source partition), the
recommendations topic and the dead-letter topic. They go through one
confluent-kafka producer (librdkafka: batching and retries in C, idempotent,
``acks=all``) instead of Faust's per-message producer path, and
:meth:`KafkaSink.flush` waits until the broker acknowledged every one of them.

Why not Faust's own producer: its ``flush()`` (called before a commit and
during a rebalance) gives up after 0.1 s without progress
(``ProducerBuffer.flush_atmost``), so records still queued in its buffer,
for example behind a metadata fetch right after an assignment, could miss
the flush and an offset be committed before the changelog record of the
events below it: another worker recovering the table then starts from a
profile that lacks them. This sink's :meth:`KafkaSink.flush` is awaited
before every commit (``streams.pipeline.BatchProcessor.drain``), so an offset
can only be committed after every output of the events before it is on the
broker.

Changelog records are *sealed*: the last record of each changelog partition
in a batch is held back and produced alone after the others are acknowledged,
so every flush ends each partition with a one-record batch. The embedded
broker (tansu 0.6) reports a partition's high watermark as the base offset of
its last record batch + 1, not the last offset + 1 (measured: 3 batches of 7
records -> high watermark 15, not 21); Faust's table recovery reads a
changelog only up to that watermark, so without the seal a worker taking over
a partition silently skipped the rest of the last batch (the "rebalance loses
1-4 updates" bug). On Apache Kafka the seal is harmless: one more produce
request per batch.

Sink error policy: a record the broker does not acknowledge is produced again
by the next :meth:`KafkaSink.flush`, with capped exponential backoff, until it
is; the flush does not return meanwhile (backpressure: no commit passes it,
and the batch loop waits once more than 8 batches of records are pending).
One error is logged per outage and one line when it ends;
``recostream_kafka_produce_errors_total`` counts the failed deliveries. Records of one key keep their order while the broker accepts
them (the idempotent producer retries in order). Batches do not wait for
their records (the pipeline drains them before commits, see
``streams.pipeline``), so a record that librdkafka gives up on and this sink
produces again can land after a later batch's record of the same key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from confluent_kafka import Producer

from streams.metrics import Metrics
from streams.produce import _send, make_producer
from streams.settings import Settings

log = logging.getLogger(__name__)


class KafkaSink:
    def __init__(self, settings: Settings, metrics: Metrics, max_backoff_s: float = 5.0) -> None:
        self.producer: Producer = make_producer(settings, **{
            "acks": "all",
            # 1 ms, not more: with 20 ms (which cut tansu's CPU from 68 % to 10 %
            # of a core at 4k records/s) the two-worker rebalance soak lost
            # events in ~1 run of 10 (tests/soak_rebalance.py); not understood
            # yet, so the setting that soaked clean is kept (docs/BENCHMARKS.md).
            "linger.ms": 1,
            # Room for several micro-batches of outputs (librdkafka's default is 100k).
            "queue.buffering.max.messages": max(100_000, 8 * settings.batch_max_events),
        })
        self.metrics = metrics
        self.max_backoff_s = max_backoff_s
        self._held: dict[tuple[str, int], tuple[bytes | None, bytes | None]] = {}
        self._failed: list[tuple[str, int | None, bytes | None, bytes | None]] = []
        self._outage_since: float | None = None
        self._flushing = asyncio.Lock()  # commits, checkpoints and batches may flush at once

    def produce(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        """Queue one record (``value=None`` is a tombstone); :meth:`flush` delivers it."""
        _send(self.producer, topic, key, value, self._on_delivery, partition)

    def produce_sealed(self, topic: str, key: bytes | None, value: bytes | None, partition: int) -> None:
        """Like :meth:`produce`, for changelogs: the partition's last record of the
        batch goes alone, after the rest (see the module doc)."""
        held = self._held.get((topic, partition))
        if held is not None:
            self.produce(topic, held[0], held[1], partition)
        self._held[topic, partition] = (key, value)

    def _on_delivery(self, err: Any, msg: Any) -> None:
        # Runs inside producer.flush()/poll(), on the flushing thread.
        if err is not None:
            partition = msg.partition()
            self._failed.append((msg.topic(), partition if partition >= 0 else None, msg.key(), msg.value()))
            if len(self._failed) == 1 and self._outage_since is None:
                log.error("Kafka did not acknowledge output records (%s); retrying with backoff "
                          "and pausing consumption until it does", err)

    async def flush(self) -> None:
        """Return once every queued record is acknowledged (see the module doc)."""
        async with self._flushing:
            await self._deliver()
            if self._held:
                held, self._held = self._held, {}
                for (topic, partition), (key, value) in held.items():
                    self.produce(topic, key, value, partition)
                await self._deliver()

    async def _deliver(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.05
        while True:
            remaining = await loop.run_in_executor(None, self.producer.flush, 5.0)
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
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)
            for topic, partition, key, value in failed:
                self.produce(topic, key, value, partition)
        if self._outage_since is not None:
            log.warning("Kafka acknowledges output records again after %.1f s", time.monotonic() - self._outage_since)
            self._outage_since = None

    def collect(self) -> None:
        """Serve the delivery reports the broker has sent so far, without waiting.

        Until reports are served, librdkafka counts acknowledged records as
        pending, so :meth:`pending` grew by every batch's outputs and the
        batch loop stopped for a flush every ~25 batches even with a
        prompt broker. Skipped while a flush runs: then the flushing thread
        serves them, and a failure it reports is seen by that flush.
        """
        if not self._flushing.locked():
            self.producer.poll(0)

    def pending(self) -> int:
        """Records queued, in flight or acknowledged but not yet collected, plus held seals."""
        return len(self.producer) + len(self._held)
