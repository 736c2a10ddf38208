"""Following the compacted ``items`` topic: every worker needs the whole catalogue.

A consumer-group member would get only some partitions of ``items``, so each
worker reads every partition itself, from the beginning, outside any group
(the topic is compacted: it holds one record per item). A tombstone (null
value) means the item left the catalogue: it becomes unavailable.

The consumer is a confluent-kafka client configured by
``Settings.kafka_client_config()``, like every Kafka client of the worker,
so the security settings reach it the same way. Its blocking poll runs in a
thread of its own (:meth:`CatalogueFollower.follow` awaits it), so the
Faust event loop is never blocked; each poll waits at most ``poll_s``, which
bounds how long stopping takes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Callable

from confluent_kafka import TopicPartition

from streams.contract import CatalogItem, ContractError, decode_item
from streams.kafka.read import Delivered, assigned_consumer, delivered
from streams.settings import Settings

log = logging.getLogger(__name__)

# A catalogue change may take this long to reach the models; a shorter wait
# would only make the broker answer more empty fetches.
_FETCH_WAIT_MS = 500


class CatalogueFollower:
    """Reads every partition of ``items`` from the beginning, forever, calling back per record.

    ``on_item`` gets each decoded item, ``on_removed`` the id of each
    tombstone. Both run on the follower's thread, so they must only hand the
    change over (the composition root submits it to the worker's loop, whose
    thread owns the models). Records that break the contract are skipped
    here: the worker's loop dead-letters them once, from the partition it
    owns.
    """

    def __init__(self, settings: Settings, on_item: Callable[[CatalogItem], None],
                 on_removed: Callable[[str], None], poll_s: float = 0.5,
                 caught_up: threading.Event | None = None) -> None:
        self.settings = settings
        self.on_item = on_item
        self.on_removed = on_removed
        self.poll_s = poll_s
        #: Set once every record the topic held when the follower first assigned it has been handed
        #: over (the worker's loop waits for it before its first event: see StreamLoop.run).
        self.caught_up = caught_up if caught_up is not None else threading.Event()

    async def follow(self, should_stop: Callable[[], bool]) -> None:
        """Follow until ``should_stop()``; raises if the broker fails for good (the caller starts again).

        Cancelling it stops the thread after its current poll and waits for
        the consumer to close, so no client outlives the task.
        """
        stopped = threading.Event()
        thread = asyncio.ensure_future(asyncio.to_thread(self.run, lambda: stopped.is_set() or should_stop()))
        try:
            await asyncio.shield(thread)
        except asyncio.CancelledError:
            stopped.set()
            await thread
            raise

    def run(self, should_stop: Callable[[], bool]) -> None:
        """The blocking follower: assign every partition of ``items`` at its start and poll until ``should_stop()``."""
        topic = self.settings.topic_items
        # End-of-partition events say when the records the topic held are read: the broker's
        # watermarks do not (tansu reports one past the last record batch, not record).
        consumer = assigned_consumer(self.settings, "catalogue",
                                     **{"fetch.wait.max.ms": _FETCH_WAIT_MS, "enable.partition.eof": True})
        try:
            partitions = self._partitions(consumer, topic, should_stop)
            if not partitions:
                return
            # Offset 0 rather than "beginning": no offset lookup first, and a
            # log that starts later (compacted, or trimmed) resets to its start.
            consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
            # Until every partition has reached its end, records are held and then handed over
            # together in (partition, offset) order, so that every worker meets the same catalogue in
            # the same order whatever order the partitions' fetches came back in; later ones as they come.
            first: list | None = None if self.caught_up.is_set() else []
            ended: set[int] = set()
            while not should_stop():
                for msg in consumer.consume(num_messages=5000, timeout=self.poll_s):
                    kind = delivered(msg, "catalogue")
                    if kind is Delivered.RECORD:
                        if first is None:
                            self._apply(msg.key(), msg.value())
                        else:
                            first.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
                    elif kind is Delivered.END:
                        ended.add(msg.partition())
                if first is not None and ended.issuperset(partitions):
                    for _, _, key, value in sorted(first, key=lambda r: r[:2]):
                        self._apply(key, value)
                    first = None
                    self.caught_up.set()
        finally:
            consumer.close()

    def _partitions(self, consumer, topic: str, should_stop: Callable[[], bool]) -> list[int]:
        """The partitions of ``topic`` once it exists ([] if told to stop first)."""
        while not should_stop():
            meta = consumer.list_topics(topic, timeout=max(self.poll_s, 1.0)).topics.get(topic)
            if meta is not None and meta.error is None and meta.partitions:
                return sorted(meta.partitions)
            time.sleep(self.poll_s)
        return []

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            if key:
                self.on_removed(key.decode("utf-8", "replace"))
            return
        try:
            self.on_item(decode_item(value))
        except ContractError:
            pass  # dead-lettered once, by the owner of the partition
