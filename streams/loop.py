"""The worker's consumer loop: consume a micro-batch, process it, record positions, repeat.

One thread owns the consumer and everything it drives (ownership,
processing, outputs, checkpoints), so the order of operations is the order
of the code: a partition is restored inside the assignment callback, before
the consumer can return any of its messages; positions are recorded between
batches, every ``commit_interval_s``, by the position checkpoint
(``streams/checkpointing/positions.py``, which drains every output first); a
revocation records them inside the revocation callback, before the group
moves the partition. A message is handled only at its partition's position:
one below it is dropped, one past it makes the loop read the partition again
from the position until reading again confirms no record is there
(``streams/kafka/continuity.py``). docs/RELIABILITY.md argues why that loses
nothing.

Error policy: a message the broker reports as an error is logged (librdkafka
retries transient ones); a fatal consumer error, or any exception out of a
batch, stops the loop without writing positions for the batch (the worker
exits non-zero and the batch is processed again by the next owner).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable

import msgspec
from confluent_kafka import Consumer, TopicPartition

from streams.checkpointing.checkpointer import Checkpointer
from streams.checkpointing.positions import PositionCheckpoint
from streams.contract import ContractError
from streams.kafka.continuity import Check, Continuity
from streams.kafka.read import Delivered, delivered
from streams.metrics import Metrics, Position
from streams.pipeline import BatchProcessor
from streams.privacy import ACTIONS, decode_command
from streams.settings import Settings
from streams.sharing import ItemLog
from streams.sinks.kafka import KafkaSink
from streams.state.changelog import generation, group_generation
from streams.state.ownership import Ownership

log = logging.getLogger(__name__)

# How long a starting worker waits for the catalogue before its first event: longer than reading a
# large catalogue takes, short enough that a missing items topic does not hold the worker back.
_CATALOGUE_WAIT_S = 60.0


def make_consumer(settings: Settings) -> Consumer:
    """The worker group's consumer: manual positions, range assignment (partition ``p`` of every topic together)."""
    return Consumer({
        **settings.kafka_client_config(),
        "group.id": settings.app_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
        "session.timeout.ms": int(settings.kafka_session_timeout_s * 1000),
        "heartbeat.interval.ms": int(settings.kafka_heartbeat_interval_s * 1000),
        # tansu holds every fetch for the whole wait even when data is there.
        "fetch.wait.max.ms": settings.kafka_fetch_max_wait_ms,
        "logger": logging.getLogger("librdkafka"),
    })


class StreamLoop:
    def __init__(self, settings: Settings, consumer_factory: Callable[[], Any], ownership: Ownership,
                 processor: BatchProcessor, outputs: KafkaSink, positions: PositionCheckpoint,
                 checkpointer: Checkpointer, metrics: Metrics, item_log: ItemLog,
                 catalogue_read: threading.Event | None = None) -> None:
        self.settings = settings
        self.consumer_factory = consumer_factory
        self.ownership = ownership
        self.store = ownership.store
        self.processor = processor
        self.outputs = outputs
        self.positions = positions
        self.checkpointer = checkpointer
        self.metrics = metrics
        self.item_log = item_log
        self.catalogue_read = catalogue_read
        self.topic_types = settings.input_topics
        # Impressions are input too (deduplicated and counted like events, learned by no model).
        self.inputs = {*settings.input_topics, settings.topic_impressions}
        self.topics = [*settings.input_topics, settings.topic_impressions, settings.topic_control, settings.topic_items]
        self._stopping = threading.Event()
        self._submitted: collections.deque[Callable[[], None]] = collections.deque()
        self._lag: list[Position] = []
        self._max_queued = 8 * settings.batch_max_events
        self.consumer: Any = None
        self._callback_error: BaseException | None = None
        self.continuity = Continuity()
        self._failed = False
        #: Set once the loop has joined the group (for tests and ``up``).
        self.started = threading.Event()

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Ask the loop to finish its batch, record positions and leave the group."""
        self._stopping.set()

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop's thread between batches (the models are not thread-safe)."""
        self._submitted.append(fn)

    def lag_rows(self) -> list[Position]:
        """``(topic, partition, high watermark, committed position)`` per owned partition (for metrics)."""
        return list(self._lag)

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        s = self.settings
        try:
            self._take_catalogue()
            # The item side as the log has it before any partition is taken: what the checkpoint
            # misses, every update published since (streams/sharing/item_log.py).
            self.item_log.catch_up()
        except BaseException:
            self.item_log.close(goodbye=False)
            raise
        consumer = self.consumer = self.consumer_factory()
        consumer.subscribe(self.topics, on_assign=self._guarded(self._on_assign),
                           on_revoke=self._guarded(self._on_revoke), on_lost=self._guarded(self._on_lost))
        self.started.set()
        next_commit = time.monotonic() + s.commit_interval_s
        try:
            while not self._stopping.is_set():
                batch = consumer.consume(s.batch_max_events, s.batch_max_wait_s)
                self._raise_callback_error()
                self._run_submitted()
                if batch:
                    self._handle(batch)
                else:
                    self.item_log.maybe_heartbeat()
                self.item_log.poll()
                if self.processor.sink.restarted:
                    self.processor.sink.restarted = False
                    self.processor.remirror()
                self.outputs.collect()
                if self.outputs.pending() > self._max_queued:  # the broker is slow: wait for it
                    self.outputs.flush()
                if time.monotonic() >= next_commit:
                    self.commit()
                    next_commit = time.monotonic() + s.commit_interval_s
                self.checkpointer.maybe_save()
            self.commit()
            self.checkpointer.save()
        except BaseException:
            self._failed = True  # the revocation inside close() must not write positions now
            consumer.close()
            self.item_log.close(goodbye=False)
            raise
        consumer.close()  # leaves the group; the revocation writes positions first
        self.item_log.close(goodbye=True)
        self._raise_callback_error()
        self.outputs.flush()

    def _guarded(self, callback: Callable[[Any, list], None]) -> Callable[[Any, list], None]:
        """A rebalance callback whose exception is raised from the loop, not lost inside librdkafka.

        An exception escaping a callback surfaces from ``consume()`` as a
        librdkafka error object, not always an ``Exception``; kept here, it
        is raised as itself once ``consume()`` returns.
        """
        def guarded(consumer: Any, partitions: list) -> None:
            try:
                callback(consumer, partitions)
            except BaseException as exc:  # re-raised by _raise_callback_error
                self._callback_error = self._callback_error or exc
        return guarded

    def _raise_callback_error(self) -> None:
        if self._callback_error is not None:
            exc, self._callback_error = self._callback_error, None
            raise exc

    def commit(self) -> None:
        """Record the positions reached (:class:`PositionCheckpoint`: after every output before them is durable)."""
        if self.positions.commit():
            offsets = self.positions.offsets()
            if offsets:
                try:
                    self.consumer.commit(offsets=offsets, asynchronous=True)
                except Exception as exc:  # advisory: positions live in the changelog
                    log.debug("group commit failed: %s", exc)
        self._refresh_lag()

    def _take_catalogue(self) -> None:
        """Apply the catalogue as the items topic holds it before the first event or peer update.

        Items get their model rows in the order they first reach the models; workers that give the
        same items the same rows serve the same lists (docs/SCALING.md). Catalogue first, then the
        item-updates log, then events: a catalogue published before the events is numbered in its
        own order by every worker, instead of by whichever event or update came first.
        """
        if self.catalogue_read is None:
            return
        began = time.perf_counter()
        if not self.catalogue_read.wait(_CATALOGUE_WAIT_S):
            log.warning("the catalogue was not read within %.0f s; starting without all of it (items "
                        "may get other rows here than in other workers)", _CATALOGUE_WAIT_S)
        changes = len(self._submitted)
        self._run_submitted()
        log.info("catalogue taken: %d records in %.1f s", changes, time.perf_counter() - began)

    def _run_submitted(self) -> None:
        while self._submitted:
            self._submitted.popleft()()

    def _handle(self, batch: list[Any]) -> None:
        owned = self.store.partitions
        inputs, items = [], []
        control, catalogue = self.settings.topic_control, self.settings.topic_items
        # Each partition's position as the batch goes: a message is handled only at its partition's
        # position (streams/kafka/continuity.py); the positions move once the batch is handled.
        moved: dict[tuple[str, int], int] = {}
        reread: set[tuple[str, int]] = set()
        for msg in batch:
            if delivered(msg, "stream loop") is not Delivered.RECORD:
                continue
            state = owned.get(msg.partition())
            if state is None:
                continue  # a partition whose takeover found a newer owner
            topic = msg.topic()
            key = (topic, msg.partition())
            if key in reread:
                continue  # comes again from the position
            position = moved.get(key)
            if position is None:
                position = state.positions.get(topic)
            offset = msg.offset()
            if offset != position:  # (nearly never: the check is off the common path)
                check = self.continuity.check(key, offset, position)
                if check is Check.STALE:
                    continue
                if check is Check.REREAD:
                    self._read_again(key, position, offset)
                    reread.add(key)
                    continue
                if check is Check.STEP_OVER:
                    log.info("%s:%d: offsets %d..%d hold no record (read again %d times): stepping over them",
                             topic, key[1], position, offset - 1, self.continuity.confirm_after)
                    self.metrics.consumer_gaps.labels("stepped_over").inc()
            moved[key] = offset + 1
            if topic in self.inputs:
                inputs.append(msg)
            elif topic == catalogue:
                items.append(msg)
            elif topic == control:
                if inputs:  # a command applies after the events before it
                    self.processor.process(inputs)
                    inputs = []
                self._control(msg)
        if inputs:
            self.processor.process(inputs)
        if items:
            self.processor.check_items(items)
        for (topic, partition), position in moved.items():
            owned[partition].positions[topic] = position

    def _read_again(self, key: tuple[str, int], position: int, offset: int) -> None:
        """Seek a partition whose next message came past its position back to the position."""
        topic, partition = key
        log.warning("%s:%d: the consumer delivered offset %d at position %d; reading again from %d", topic,
                    partition, offset, position, position)
        self.metrics.consumer_gaps.labels("reread").inc()
        self.consumer.seek(TopicPartition(topic, partition, position))

    def _control(self, msg: Any) -> None:
        """A forget command erases the customer from profiles, models and Redis, then checkpoints."""
        try:
            command = decode_command(msg.value() or b"")
            if command.action not in ACTIONS:
                raise ContractError("invalid_value", f"unknown control action {command.action[:40]!r}")
        except (msgspec.DecodeError, ContractError) as exc:
            err = exc if isinstance(exc, ContractError) else ContractError("invalid_value", f"control message: {exc}")
            self.processor.send_dead_letter(err, msg)
            return
        self.processor.forget(command.user_id, msg.partition())
        self.checkpointer.save()  # no saved model may keep the customer

    def _refresh_lag(self) -> None:
        rows: list[Position] = []
        for partition, state in self.store.partitions.items():
            for topic, position in state.committed.items():
                try:
                    # Cached: the high watermark of the fetch responses, exact on every broker. A
                    # ListOffsets query is not: tansu answers one past the last record batch
                    # (100 records produced in one batch: 1), which would make the lag negative.
                    _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
                except Exception:  # not fetched yet
                    high = -1
                rows.append((topic, partition, high if high >= 0 else None, position))
        self._lag = rows

    # ------------------------------------------------------------------ rebalances
    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        gen = generation(group_generation(consumer.consumer_group_metadata()), self.settings.generation_epoch)
        topics: dict[int, list[str]] = {}
        for tp in partitions:
            topics.setdefault(tp.partition, []).append(tp.topic)
        began = time.perf_counter()
        starts = self.ownership.take(topics, gen, topics)
        assigned = [TopicPartition(tp.topic, tp.partition, starts[tp.partition][tp.topic])
                    for tp in partitions if tp.partition in starts]
        # The item side already holds every event before these positions: their batches' updates
        # were in the log before the positions were written, and the log is applied as it comes.
        self.item_log.poll()
        consumer.assign(assigned)
        self.metrics.restore_seconds.observe(time.perf_counter() - began)
        self._refresh_lag()
        log.info("worker ready: owns partitions %s in generation %d", sorted(starts), gen)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        owned = sorted({tp.partition for tp in partitions} & set(self.store.partitions))
        if owned and not self._failed:
            self.positions.commit(owned, acknowledged=True)  # before the partition moves
            offsets = self.positions.offsets(owned)
            if offsets:
                try:
                    consumer.commit(offsets=offsets, asynchronous=False)
                except Exception as exc:
                    log.info("group commit on revocation failed: %s", exc)
        self._let_go({tp.partition for tp in partitions})
        consumer.unassign()
        self._lag = []

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.warning("lost %d partitions (this worker was expelled from the group, e.g. paused longer than "
                    "the session timeout); their state is dropped, their new owner restores it",
                    len({tp.partition for tp in partitions}))
        self._let_go({tp.partition for tp in partitions})
        consumer.unassign()
        self._lag = []

    def _let_go(self, partitions: set[int]) -> None:
        self.continuity.forget()
        self.processor.let_go(partitions)
        self.ownership.release(partitions)
