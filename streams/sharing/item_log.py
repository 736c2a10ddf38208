"""The item-updates log: every worker's item-side learning, applied by every worker in one order.

A worker hands each micro-batch's item-side learning
(:meth:`models.engine.PersonalisationEngine.take_update`) to
:meth:`ItemLog.exchange`, which publishes it to the single partition of the
``{app_id}-item-updates`` topic, waits for the broker's acknowledgement, and
applies the log up to and including that record: the peers' records before
it, then its own. Only then does the worker rank the batch's customers, so a
worker alone serves exactly what a replay of its batches serves, and workers
among others rank with every update the log held before their own.

Why every worker holds the same item side: applying a record reads only the
record and the item side (:mod:`models.engine_update`), and every worker
applies the same records in the log's order, each once (the engine keeps the
next log offset to apply, ``item_log_offset``, saved in its checkpoint with
the item side it describes).

Why no event is lost or counted twice:

* a batch's record is acknowledged before the batch's outputs and input
  positions are written, so every event whose position was recorded has its
  record in the log;
* a worker restored from a checkpoint, or one starting without any, applies
  the log from the checkpoint's offset (:meth:`ItemLog.catch_up`) before it
  takes partitions: the events after its checkpoint come back from the log,
  not from the input topics;
* an event in two records (a batch processed again after a crash or a
  rebalance, or by a paused worker that lost its partitions) is applied once,
  from the first: the engine applies an event only past the last offset
  applied from its source partition, the same rule everywhere.

Records that are not updates (a damaged record) are skipped and counted by
every worker alike. An update that decodes but fails to apply is a bug in
applying the log, not the batch's fault: the exchange raises
:class:`~streams.ports.PortFailed` and the worker stops without writing
positions (its item side may hold part of the record), rather than go on
with an item side its peers do not hold. A record with an empty value is a heartbeat: a worker
with nothing to publish sends one every ``item_updates_heartbeat_s`` so its
peers can tell an idle worker from a stuck one
(``recostream_item_updates_peer_last_timestamp_seconds``); a worker that
stops cleanly says goodbye with a ``bye`` header, and its peers drop its
series.

Retention: the topic keeps ``item_updates_retention_s`` (default one day).
A worker whose checkpoint is older than the log's start applies what is
left and counts the records it missed
(``recostream_item_updates_missed_total``): its item side lacks them, its
customers' own state does not (it comes with their profiles).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
from confluent_kafka import KafkaException, TopicPartition

from models.engine import PersonalisationEngine
from models.engine_update import EngineUpdate, decode_engine_update, encode_engine_update
from streams.kafka.produce import make_producer
from streams.kafka.read import Delivered, assigned_consumer, delivered
from streams.metrics import Metrics
from streams.ports import PortFailed
from streams.settings import Settings

log = logging.getLogger(__name__)

_BYE = "bye"
_WARN_EVERY_S = 30.0


def encode_in_records(update: EngineUpdate, max_bytes: int) -> list[bytes]:
    """``update`` encoded in records of at most ``max_bytes`` (halved until they fit, or down to one
    event; each record encoded once): applied in order, they teach what ``update`` does."""
    data = encode_engine_update(update)
    if update.n_events < 2 or len(data) <= max_bytes:
        return [data]
    mid = update.n_events // 2
    return encode_in_records(update.part(0, mid), max_bytes) + \
        encode_in_records(update.part(mid, update.n_events), max_bytes)


class ItemLog:
    """Publishes this worker's item-side updates and applies everyone's to ``engine`` (see the module doc).

    Every method runs on the worker's loop thread, the one that drives the engine.
    """

    def __init__(self, settings: Settings, engine: PersonalisationEngine, metrics: Metrics, worker_id: str) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.topic = settings.item_updates_topic
        self.key = worker_id.encode()
        self.max_record_bytes = settings.item_update_max_bytes
        self.heartbeat_s = settings.item_updates_heartbeat_s
        # One record per batch: tansu reports a partition's end as the base offset of its last batch + 1,
        # which :meth:`catch_up` reads as the log's end.
        self._producer = make_producer(settings, **{"acks": "all", "linger.ms": 0, "batch.num.messages": 1})
        self._consumer: Any = None
        self._last_sent = 0.0

    # ------------------------------------------------------------------ reading
    def _reader(self) -> Any:
        if self._consumer is None:
            self._consumer = assigned_consumer(self.settings, "item-log", **{
                "fetch.wait.max.ms": 10,  # tansu holds a fetch for the whole wait: keep round trips short
            })
            self._consumer.assign([TopicPartition(self.topic, 0, self.engine.item_log_offset)])
        return self._consumer

    def catch_up(self, timeout_s: float = 600.0) -> int:
        """Apply the log from the engine's offset to where it ended when called; return the records applied.

        Run before the worker takes partitions: a restored checkpoint misses
        the updates published after it, a new worker all of them. The target
        is the log's end as the broker reports it at the start, not an end
        reached while reading: peers keep publishing, so a reader may never
        be at the live end, and an end reported for an earlier fetch arrives
        with newer records after it. What peers publish meanwhile is applied
        by the next :meth:`poll` or :meth:`exchange`, before any batch is ranked.
        """
        began, applied = time.perf_counter(), 0
        deadline = time.monotonic() + timeout_s
        target = self._end()
        if target < self.engine.item_log_offset:  # the topic was deleted and created again
            log.error("%s ends at offset %d, before this worker's checkpoint (%d): the topic was created "
                      "again; applying it from its start", self.topic, target, self.engine.item_log_offset)
            self.engine.item_log_offset = 0
            self._reader().assign([TopicPartition(self.topic, 0, 0)])
        while self.engine.item_log_offset < target:
            applied += self._read(0.1)
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {self.topic} to offset {target} in {timeout_s:.0f} s "
                                   f"(at {self.engine.item_log_offset})")
        log.info("item side caught up: applied %d update records of %s in %.0f ms, at offset %d", applied,
                 self.topic, 1000 * (time.perf_counter() - began), self.engine.item_log_offset)
        return applied

    def _end(self) -> int:
        """The log's end offset as the broker reports it now (exact: every record is its own batch, see
        ``batch.num.messages`` in :meth:`__init__`)."""
        return self._reader().get_watermark_offsets(TopicPartition(self.topic, 0), timeout=30, cached=False)[1]

    def poll(self) -> int:
        """Apply what the log holds past the engine's offset, without waiting; return the records applied."""
        return self._read(0)

    def _read(self, timeout: float) -> int:
        """Apply the records one ``consume`` returns within ``timeout``; how many. The one read of the
        log, for every caller."""
        applied = 0
        # consume() waits its whole timeout unless 10,000 records arrive.
        for msg in self._reader().consume(10_000, timeout=timeout):
            if delivered(msg, self.topic) is Delivered.RECORD:
                applied += self._apply(msg)
        return applied

    def _apply(self, msg: Any) -> int:
        offset, engine = msg.offset(), self.engine
        if offset < engine.item_log_offset:
            return 0  # applied before (a reader positioned again)
        m = self.metrics
        if offset > engine.item_log_offset:
            m.item_updates_missed.inc(offset - engine.item_log_offset)
            log.error("%s: records %d..%d are gone (retention) before this worker applied them; its item side "
                      "lacks them", self.topic, engine.item_log_offset, offset - 1)
        peer = (msg.key() or b"").decode("utf-8", "replace")
        value = msg.value()
        engine.item_log_offset = offset + 1
        _, stamp = msg.timestamp()
        if any(k == _BYE for k, _ in msg.headers() or ()):
            m.forget_peer(peer)
            return 1
        m.peer_seen(peer, stamp / 1000.0 if stamp > 0 else time.time())
        if not value:
            return 1  # a heartbeat
        try:
            update = decode_engine_update(value)
        except msgspec.DecodeError as exc:
            m.item_updates_rejected.inc()
            log.error("%s@%d from %r is not an item update (%s): skipped, as every worker skips it", self.topic,
                      offset, peer[:64], exc)
            return 1
        n_new = engine.apply_update(update)
        m.item_updates_applied.inc()
        m.item_update_events_applied.inc(n_new)
        m.item_update_events_skipped.inc(update.n_events - n_new)
        return 1

    # ------------------------------------------------------------------ writing
    def exchange(self, update: EngineUpdate) -> None:
        """Publish ``update`` and apply the log up to and including it (the peers' records first).

        Raises :class:`~streams.ports.PortFailed` when the log refuses the record, its reader fails
        for good, or applying a record of the log fails: the batch is not at fault, so it must not be
        retried event by event. A record that fails to apply may have changed part of the item side,
        which is then no longer the log's: only a restart from the checkpoint makes it so again.
        """
        began = time.perf_counter()
        records = self._records(update)
        try:
            offset = self._publish(records)
        except KafkaException as exc:
            raise PortFailed(f"{self.topic}: {exc}") from exc
        try:
            self._apply_through(offset)
        except Exception as exc:
            raise PortFailed(f"{self.topic}: applying the log through offset {offset} failed (last record "
                             f"taken: {self.engine.item_log_offset - 1}): {type(exc).__name__}: {exc}") from exc
        self.metrics.item_update_exchange_seconds.observe(time.perf_counter() - began)

    def _records(self, update: EngineUpdate) -> list[bytes]:
        return encode_in_records(update, self.max_record_bytes)

    def _publish(self, values: list[bytes | None], headers: list | None = None) -> int:
        """Produce ``values`` in order and wait until the broker acknowledged them; the offset of the last.

        Transient failures are retried until acknowledged (the batch waits, as
        the worker's outputs do); a refusal raises, which stops the worker
        without writing positions: the batch is processed again.
        """
        delivered: list[tuple[Any, Any]] = []
        for value in values:
            self._producer.produce(self.topic, value=value, key=self.key, partition=0, headers=headers,
                                   on_delivery=lambda err, msg: delivered.append((err, msg)))
        since = time.monotonic()
        while len(delivered) < len(values):
            self._producer.flush(1.0)
            if len(delivered) < len(values) and time.monotonic() - since > _WARN_EVERY_S:
                log.error("%s has not acknowledged this worker's update for %.0f s; waiting", self.topic,
                          time.monotonic() - since)
                since = time.monotonic()
        errors = [err for err, _ in delivered if err is not None]
        if errors:
            raise KafkaException(errors[0])
        self._last_sent = time.monotonic()
        n = sum(len(v or b"") for v in values)
        self.metrics.item_updates_published.inc(len(values))
        self.metrics.item_update_bytes_published.inc(n)
        return max(msg.offset() for _, msg in delivered)

    def _apply_through(self, offset: int) -> None:
        since = time.monotonic()
        while self.engine.item_log_offset <= offset:
            self._read(0.002)  # a short wait: returns soon after the worker's own record does
            if self.engine.item_log_offset <= offset and time.monotonic() - since > _WARN_EVERY_S:
                log.error("%s: this worker's update at offset %d has not come back for %.0f s (at %d); waiting",
                          self.topic, offset, time.monotonic() - since, self.engine.item_log_offset)
                since = time.monotonic()

    def maybe_heartbeat(self) -> None:
        """Tell the peers this worker is alive when it has published nothing for ``item_updates_heartbeat_s``."""
        if time.monotonic() - self._last_sent >= self.heartbeat_s:
            self._publish([None])

    def close(self, goodbye: bool = True) -> None:
        """Leave: say goodbye to the peers (a clean stop) and close the clients."""
        try:
            if goodbye:
                self._publish([None], headers=[(_BYE, b"1")])
        finally:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
