"""Taking partitions over and letting them go: markers, restores, fences and positions.

A worker owns partition ``p`` (of every input topic, the control topic and
the catalogue topic, which the group's range assignor gives to one member
together) from the moment its consumer is assigned ``p`` until it is revoked
or lost. The steps, all on the consumer thread, before any message of ``p``
is processed:

1. write a takeover marker to changelog partition ``p``, tagged with this
   assignment's generation, and wait until the broker acknowledged it;
2. read changelog partition ``p`` from its start up to that marker and fold
   it (``streams.state.changelog.Restore``): every profile, and the
   positions of the last position record, as of the marker;
3. raise the partition's Redis fence to the generation, and write the
   partition's restored experiment counts to Redis (a crashed owner may have
   written counts there that its lost changelog records no longer hold);
4. resume each source topic at the restored position (the group's committed
   offset only for a changelog written before this protocol; the start of
   the log when the protocol ran but wrote no position yet). The item side
   already holds every event before that position: each batch's update was in
   the item-updates log before its position was written, and every worker
   applies the log (``streams/sharing/item_log.py``).

Letting go: on revocation the loop records the positions reached so far
(``streams/checkpointing/positions.py``, which drains every output first); on
loss (the group expelled this worker) nothing is written, since another
member may already own the partition; in both cases its state is dropped.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable

from streams.kafka.read import committed_offsets, read_ranges
from streams.metrics import Metrics
from streams.settings import Settings
from streams.sinks.kafka import KafkaSink
from streams.sinks.redis import RedisSink
from streams.state.changelog import Restore, marker_record
from streams.state.store import PartitionState, ProfileStore

log = logging.getLogger(__name__)


class Ownership:
    def __init__(self, settings: Settings, store: ProfileStore, outputs: KafkaSink, sink: RedisSink,
                 metrics: Metrics, worker_id: str) -> None:
        self.settings = settings
        self.store = store
        self.outputs = outputs
        self.sink = sink
        self.metrics = metrics
        self.worker_id = worker_id
        self.topic = settings.changelog_topic
        self.experiment = settings.experiment_config.name

    def take(self, partitions: Iterable[int], gen: int, topics: dict[int, list[str]]) -> dict[int, dict[str, int]]:
        """Take ``partitions`` over in generation ``gen``: per partition, the offset to resume each of
        its ``topics[partition]`` at; partitions a newer owner already holds are left out."""
        began = time.perf_counter()
        partitions = sorted(partitions)
        log.info("taking partitions %s over in generation %d", partitions, gen)
        markers = self._write_markers(partitions, gen)
        logs = read_ranges(self.settings, self.topic, {p: (None, markers[p] + 1) for p in partitions})
        starts: dict[int, dict[str, int]] = {}
        for partition in partitions:
            restore = Restore(experiment=self.experiment)
            for msg in logs[partition]:
                restore.apply(msg.key(), msg.value(), msg.headers())
            if restore.gen > gen:
                log.warning("not taking partition %d: its changelog already holds generation %d above this "
                            "worker's %d (this assignment is out of date)", partition, restore.gen, gen)
                continue
            starts[partition] = self._adopt(partition, gen, restore, topics[partition])
        self.metrics.observe_effect(self.store.by_arm())
        log.info("took partitions %s over in generation %d in %.0f ms", sorted(starts), gen,
                 1000 * (time.perf_counter() - began))
        return starts

    def _adopt(self, partition: int, gen: int, restore: Restore, topics: list[str]) -> dict[str, int]:
        starts = dict(restore.positions)
        missing = [t for t in topics if t not in starts]
        if missing:
            if restore.markers <= 1:  # ours is the first marker: a changelog written before this protocol
                legacy = committed_offsets(self.settings, [(t, partition) for t in missing])
                starts.update({t: legacy.get((t, partition), 0) for t in missing})
            else:
                starts.update(dict.fromkeys(missing, 0))
        effect = restore.effect
        self.store.adopt(partition, PartitionState(gen=gen, profiles=restore.profiles, positions=dict(starts),
                                                   committed=dict(starts), effect=effect))
        self.sink.raise_fence(partition, gen)
        self.sink.write([], {}, effects={partition: (gen, effect.to_bytes())})
        m = self.metrics
        m.takeovers.inc()
        m.restored_records.inc(restore.records)
        m.stale_records.inc(restore.stale)
        log.info("partition %d: %d changelog records (%d ignored: written by an owner that had lost it), "
                 "%d customers, resuming at %s", partition, restore.records, restore.stale,
                 len(restore.profiles), starts)
        return {t: starts[t] for t in topics}

    def _write_markers(self, partitions: list[int], gen: int) -> dict[int, int]:
        """Produce a takeover marker per partition; their offsets once the broker acknowledged them."""
        key, value, headers = marker_record(gen, self.worker_id)
        offsets: dict[int, int] = {}
        # Every earlier output first, so each marker travels alone and is the last record of its
        # partition: tansu reports a partition's end as the base offset of its last record batch
        # + 1, and the restore must be able to read up to the marker.
        self.outputs.flush()
        for attempt in range(10):
            acked: list[Any] = []
            todo = [p for p in partitions if p not in offsets]
            for partition in todo:
                self.outputs.producer.produce(self.topic, value=value, key=key, partition=partition,
                                              headers=headers, on_delivery=lambda err, msg, acked=acked: acked.append((err, msg)))
            self.outputs.flush()
            while len(acked) < len(todo):
                self.outputs.producer.poll(0.1)
            for err, msg in acked:
                if err is None:
                    offsets[msg.partition()] = msg.offset()
                else:
                    log.warning("takeover marker for %s:%d not acknowledged (%s); retrying", self.topic,
                                msg.partition(), err)
            if len(offsets) == len(partitions):
                return offsets
            time.sleep(min(0.1 * 2 ** attempt, 5.0))
        raise RuntimeError(f"could not write the takeover markers of {self.topic} partitions {partitions}")

    def release(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self.store.release(partition)
        self.metrics.observe_effect(self.store.by_arm())


