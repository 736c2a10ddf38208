"""One micro-batch, edge to edge: decode, dead-letter, learn, write, publish.

Error policy per stage:

* decode: a message that breaks the contract goes to the dead-letter topic
  with its original bytes, source topic/partition/offset and the reason; the
  batch goes on. Nothing else about it is kept.
* process: the engine runs only on validated events, so an exception there is
  a bug triggered by some event. Faust's ``take_events`` acks a batch even when
  its body raises, so letting it propagate would silently drop the batch.
  Instead the batch is retried event by event and only the events that still
  fail are dead-lettered (reason ``processing_error``, with their bytes): the
  worker stays up and no valid event is lost, only parked for replay.
* sink: Redis writes are retried until they succeed (backpressure); Kafka
  outputs (table changelog, recommendations, dead letters) are produced in
  bulk and re-produced until the broker acknowledges them
  (``streams/kafka_sink.py``).

Order of operations. A batch queues its dead letters, changelog records and
recommendation messages on the Kafka producer and starts its Redis write,
then returns, and Faust acks its events: the next batch is computed while
the broker and Redis take the outputs (on this 2-core machine they run on the
other core). Outputs are awaited where it matters, by :meth:`BatchProcessor.drain`:

* before every offset commit, rebalance and shutdown: Faust calls its
  producer's ``flush()`` there, and the worker makes that call drain its own
  outputs first (``agents/personalise.py``); the offsets of a commit are
  chosen before that flush, so every event they cover has its outputs on the
  broker and in Redis before the offset is committed;
* before the next batch's Redis write (at most one in flight, so writes of
  one key stay in order and a Redis outage stops consumption after one
  batch), and when the producer holds more than a few batches of records;
* before a model checkpoint and before a forget.

A crash therefore replays from an offset whose outputs were all durable; the
events after it are replayed, and the per-customer dedupe window makes that
harmless for profiles (a redelivery rewrites the outputs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Iterator, Mapping, Sequence

import msgspec
import numpy as np

from models.engine import BatchOutcome
from models.profile import Profile, decode_profile, encode_profile, profile_summary
from streams.kafka_sink import KafkaSink
from streams.offset_guard import OffsetGuard, committed_offsets, faust_committed, fetch_range
from streams.contract import ContractError, Limits, Recommendation, ScoredItem, dead_letter, decode_event
from streams.metrics import Metrics
from streams.privacy import pseudonym
from streams.redis_sink import RedisSink

_encode = msgspec.json.Encoder().encode
log = logging.getLogger(__name__)
_CATCH_UP_CHUNK = 10_000


class TableProfiles(Mapping[str, Profile]):
    """The profiles table seen as decoded :class:`Profile` objects (read only)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def __getitem__(self, user: str) -> Profile:
        raw = self.table.get(user)
        if raw is None:
            raise KeyError(user)
        return decode_profile(raw)

    def __iter__(self) -> Iterator[str]:
        return iter(self.table.keys())

    def __len__(self) -> int:
        return len(self.table)


class _Overlay(Mapping[str, Profile]):
    """Profiles updated earlier in this batch, falling back to the table."""

    def __init__(self, fresh: dict[str, Profile], base: Mapping[str, Profile]) -> None:
        self.fresh, self.base = fresh, base

    def __getitem__(self, user: str) -> Profile:
        return self.fresh[user] if user in self.fresh else self.base[user]

    def __iter__(self) -> Iterator[str]:
        return iter(set(self.fresh) | set(self.base))

    def __len__(self) -> int:
        return len(set(self.fresh) | set(self.base))


def _merge(a: BatchOutcome, b: BatchOutcome) -> BatchOutcome:
    a.profiles.update(b.profiles)
    a.recommendations.update(b.recommendations)
    for f in ("learned", "duplicates", "evaluated", "hits", "popularity_hits"):
        setattr(a, f, getattr(a, f) + getattr(b, f))
    for t, n in b.learned_by_type.items():
        a.learned_by_type[t] = a.learned_by_type.get(t, 0) + n
    return a


class BatchProcessor:
    def __init__(self, app: Any, metrics: Metrics, sink: RedisSink, outputs: KafkaSink) -> None:
        s = self.settings = app.settings_
        self.app = app
        self.table = app.profiles
        self.outputs = outputs
        self.changelog_topic = app.profiles.changelog_topic_name
        self.guard = OffsetGuard(faust_committed(app))
        self._last_batch = 0.0  # time.monotonic() when the last batch started
        self.profiles = TableProfiles(app.profiles)
        self.metrics = metrics
        self.sink = sink
        self.topic_types = s.input_topics
        self.pseudonymize_key = s.pseudonymize_key
        self.limits = Limits(max_message_bytes=s.max_message_bytes, max_id_length=s.max_id_length,
                             min_ts=s.min_event_ts, max_future_skew_s=s.max_future_skew_s)
        self._redis_write: asyncio.Future | None = None  # the last batch's Redis write, if still running
        self._max_queued_records = 8 * s.batch_max_events

    @property
    def engine(self) -> Any:  # read each time: a checkpoint restore replaces it
        return self.app.engine

    async def process(self, batch: Sequence[Any]) -> None:
        """Learn from one micro-batch and write every output (see the module doc)."""
        started = time.time()
        self._last_batch = time.monotonic()
        firsts: dict[Any, int] = {}  # lowest offset of each partition in the batch
        for event in batch:
            msg = event.message
            if msg.offset < firsts.get(msg.tp, msg.offset + 1):
                firsts[msg.tp] = msg.offset
        resumed = self.guard.new(firsts)  # first met since start or rebalance
        if resumed:
            await self._read_committed(self.guard.unknown(resumed))
        gaps = self.guard.observe((event.message.tp, event.message.offset) for event in batch)
        if gaps:
            batch = await self._read_ranges(gaps, "were never delivered to this worker's stream") + list(batch)
        if resumed:
            await self._catch_up_models({tp: min(firsts[tp], gaps[tp][0]) if tp in gaps else firsts[tp]
                                         for tp in resumed}, started)
        await self._process(batch, started)
        if gaps:
            await self._mark_processed(gaps)
        self.outputs.collect()
        if self.outputs.pending() > self._max_queued_records:  # the broker is slow: wait for it
            await self.outputs.flush()

    async def drain(self) -> None:
        """Return once every output of every batch processed so far is on the broker and in Redis."""
        while self._redis_write is not None and not self._redis_write.done():
            await asyncio.shield(self._redis_write)
        await self.outputs.flush()

    async def process_dropped(self, idle_s: float = 2.0) -> int:
        """Process input messages Faust took from its consumer but never delivered, at a quiet partition's end.

        The offset guard sees a skipped range when a later message of the
        partition arrives. When none arrives (a burst that ended while Faust
        was starting or rebalancing: its stream drops what arrived then), the
        range would wait for the partition's next event. So once no batch has
        run for ``idle_s`` (every message Faust took would have been delivered
        by then), each assigned input partition whose consumer position is
        past the next offset the worker must process is read from the broker
        and processed. Returns the number of messages processed. Call it with
        the batch lock held.
        """
        consumer = self.app.consumer
        if time.monotonic() - self._last_batch < idle_s or not getattr(consumer, "flow_active", True):
            return 0
        ranges: dict[Any, tuple[int, int]] = {}
        for tp in sorted(consumer.assignment()):
            if tp.topic not in self.topic_types:
                continue
            expected = self.guard.expected(tp)
            try:
                position = await consumer.position(tp)
            except Exception:  # noqa: BLE001 - e.g. revoked meanwhile: the next rebalance re-reads it
                continue
            if expected is not None and position is not None and position > expected:
                ranges[tp] = (expected, position)
        dropped = await self._read_ranges(
            ranges, "were fetched but never delivered to this worker's stream, and no later message came")
        if dropped:
            await self.process(dropped)
            await self._mark_processed(ranges)
        return len(dropped)

    async def _read_committed(self, tps: set) -> None:
        """Committed offsets of partitions met before Faust knew them, from the broker.

        Faust fills in its committed offsets when it seeks, which can come
        after the first messages of a new assignment were fetched; without
        them the guard could not check a partition's first message (measured:
        the first delivered message arrived with Faust's committed offset
        still unknown).
        """
        if not tps:
            return
        loop = asyncio.get_running_loop()
        try:
            self.guard.assume(await loop.run_in_executor(None, committed_offsets, self.settings, tps))
        except Exception:  # noqa: BLE001 - the guard then starts from the first message, as before
            log.exception("could not read the committed offsets of %d partitions", len(tps))

    async def _mark_processed(self, ranges: Mapping[Any, tuple[int, int]]) -> None:
        """Tell Faust's consumer that ``{tp: (start, end)}`` was processed outside its stream (commits pass it)."""
        mark = getattr(self.app.consumer, "mark_processed", None)
        if mark is not None:
            for tp, (start, end) in ranges.items():
                await mark(tp, start, end)

    async def _read_ranges(self, ranges: Mapping[Any, tuple[int, int]], what: str) -> list:
        """The input messages ``{tp: (start, end)}`` Faust never delivered (see streams/offset_guard.py),
        read from the broker; ``what`` happened to them, for the log."""
        loop = asyncio.get_running_loop()
        messages: list = []
        for (topic, partition), (start, end) in ranges.items():
            log.warning("%s:%d: offsets %d..%d %s; reading them from the broker", topic, partition, start,
                        end - 1, what)
            events = await loop.run_in_executor(None, fetch_range, self.settings, topic, partition, start, end)
            self.metrics.input_refetched.inc(len(events))
            messages += events
        return messages

    def reset_positions(self) -> None:
        """Partitions move on a rebalance: each one's next offset is its committed one again, and
        each one's models are checked for a catch-up at its first batch."""
        self.guard.reset()

    async def _catch_up_models(self, resume_at: Mapping[Any, int], now: float) -> None:
        """Partitions resumed at ``{tp: offset}`` (their first batch since start or rebalance): the
        events their models miss.

        The models are restored from a checkpoint that may be older than the
        committed offset the partition resumes from; the events in between
        are in the profiles but will not be delivered again. They are read
        from the broker (at most ``model_catch_up_max_events`` per partition,
        the most recent ones) and learned by the models only
        (:meth:`models.engine.PersonalisationEngine.catch_up`).
        """
        cap = self.settings.model_catch_up_max_events
        loop = asyncio.get_running_loop()
        for (topic, partition), first in resume_at.items():
            part = f"{topic}:{partition}"
            start = self.engine.model_offsets.get(part)
            if start is None or start >= first or not cap:
                continue
            if first - start > cap:
                log.warning("%s: the models' checkpoint is %d events behind; they learn the last %d of them "
                            "(RECOSTREAM_MODEL_CATCH_UP_MAX_EVENTS)", part, first - start, cap)
            began = time.perf_counter()
            try:
                messages = await loop.run_in_executor(None, fetch_range, self.settings, topic, partition,
                                                      max(start, first - cap), first)
            except Exception:  # noqa: BLE001 - the models stay behind; consumption must go on
                log.exception("%s: could not re-read offsets %d..%d for the models; they stay without them",
                              part, start, first - 1)
                continue
            events, positions = [], []
            for raw in messages:
                with contextlib.suppress(ContractError):  # dead-lettered when first consumed
                    events.append(self._decode(raw.message, now))
                    positions.append((part, raw.message.offset))
            learned = 0
            for lo in range(0, len(events), _CATCH_UP_CHUNK):  # let the loop breathe between chunks
                learned += self.engine.catch_up(events[lo:lo + _CATCH_UP_CHUNK], positions[lo:lo + _CATCH_UP_CHUNK],
                                                self.profiles)
                await asyncio.sleep(0)
            self.engine.model_offsets[part] = max(self.engine.model_offsets.get(part, 0), first)
            self.metrics.model_caught_up.inc(learned)
            log.info("%s: models restored at offset %d, partition resumed at %d: re-read %d events, "
                     "the models learned %d of them in %.0f ms", part, start, first, len(messages), learned,
                     1000 * (time.perf_counter() - began))

    async def _process(self, batch: Sequence[Any], started: float) -> None:
        m = self.metrics
        valid = []
        partition_of: dict[str, int] = {}
        for event in batch:
            msg = event.message
            m.consumed_by_type[self.topic_types[msg.topic] or "mixed"].inc()
            try:
                ev = self._decode(msg, started)
            except ContractError as err:
                self.send_dead_letter(err, msg)
                continue
            valid.append((ev, msg, (f"{msg.topic}:{msg.partition}", msg.offset)))
            partition_of[ev.user_id] = msg.partition
        m.batch_size.observe(len(batch))
        if not valid:
            return

        outcome, valid = self._learn(valid)
        for etype, n in outcome.learned_by_type.items():
            m.processed_by_type[etype].inc(n)
        m.duplicates.inc(outcome.duplicates)
        m.live_evaluated.inc(outcome.evaluated)
        m.hits_model.inc(outcome.hits)
        m.hits_popularity.inc(outcome.popularity_hits)
        m.observe_segments(outcome.profiles)
        if not outcome.profiles:
            return

        now = time.time()
        produce, changelog, recs_topic = self.outputs.produce, self.changelog_topic, self.settings.topic_recommendations
        profile_docs: dict[str, bytes] = {}
        for user, profile in outcome.profiles.items():
            raw, partition = encode_profile(profile), partition_of[user]
            self.table.put_local(user, raw, partition)
            self.outputs.produce_sealed(changelog, _encode(user), raw, partition)  # the table's key codec is JSON
            profile_docs[user] = _encode(profile_summary(profile, now))
        version = self.engine.model_version
        rec_docs: dict[str, bytes] = {}
        # Scores go out with 6 decimals, rounded for the whole batch at once:
        # Python's round() per score was ~5 % of the worker (16 -> 7 us per shopper).
        scores = np.round(np.fromiter((s for recs in outcome.recommendations.values() for _, s in recs), float),
                          6).tolist()
        k = 0
        for user, recs in outcome.recommendations.items():
            n = len(recs)
            doc = rec_docs[user] = _encode(Recommendation(
                user, list(map(ScoredItem, [i for i, _ in recs], scores[k:k + n])), version, now,
                outcome.profiles[user].segment))
            k += n
            produce(recs_topic, user.encode(), doc)
        meta = {"version": version, "updated_at": now, "users": len(self.table), "items": self.engine.ranker.n_items}
        latest: dict[str, float] = {}
        for ev in valid:
            latest[ev.user_id] = max(latest.get(ev.user_id, 0.0), ev.ts)
        if self._redis_write is not None:
            await asyncio.shield(self._redis_write)  # one write in flight: keys stay in order
        self._redis_write = asyncio.ensure_future(self._write_redis(rec_docs, profile_docs, meta, latest, started))

    def _decode(self, msg: Any, now: float) -> Any:
        """The validated event of an input message (pseudonymised if configured); raises ContractError."""
        ev = decode_event(msg.value, self.topic_types[msg.topic], self.limits, now=now)
        if msg.key is not None and msg.key != ev.user_id.encode():
            raise ContractError("key_mismatch",
                                f"message key {msg.key[:64]!r} is not the user_id {ev.user_id[:64]!r}: "
                                "input topics must be keyed by user_id")
        if self.pseudonymize_key:
            ev = msgspec.structs.replace(ev, user_id=pseudonym(ev.user_id, self.pseudonymize_key))
        return ev

    async def _write_redis(self, rec_docs: dict[str, bytes], profile_docs: dict[str, bytes], meta: dict,
                           latest: dict[str, float], started: float) -> None:
        m = self.metrics
        await self.sink.write(rec_docs, profile_docs, meta)
        written = time.time()
        m.recommendations_written.inc(len(rec_docs))
        # Freshness: from each event's own time to its recommendations being readable.
        for user in rec_docs:
            m.freshness.observe(max(0.0, written - latest[user]))
        m.batch_seconds.observe(written - started)
        m.users.set(meta["users"])
        m.items.set(meta["items"])
        m.model_version.set(meta["version"])
        m.model_updated.set(written)

    def _learn(self, valid: list) -> tuple[Any, list]:
        events = [ev for ev, _, _ in valid]
        try:
            return self.engine.process(events, self.profiles, positions=[pos for _, _, pos in valid]), events
        except Exception:
            log.exception("processing a batch of %d events failed; isolating the failing events", len(events))
        merged, kept, profiles = None, [], {}
        for ev, msg, pos in valid:
            try:
                outcome = self.engine.process([ev], _Overlay(profiles, self.profiles), positions=[pos])
            except Exception as exc:  # noqa: BLE001 - parked in the dead-letter topic with the reason
                self.send_dead_letter(ContractError("processing_error", f"{type(exc).__name__}: {exc}"[:500]), msg)
                continue
            profiles.update(outcome.profiles)
            kept.append(ev)
            merged = outcome if merged is None else _merge(merged, outcome)
        return merged or BatchOutcome(), kept

    async def forget(self, user_id: str, partition: int) -> None:
        """Remove every trace of a customer: profile and dedupe window (table
        tombstone), model state, Redis keys, and a tombstone on the
        recommendations topic. The caller then checkpoints, so no saved model keeps them."""
        await self.drain()  # no earlier write of this customer may land after the deletion
        self.table.delete_local(user_id)
        self.outputs.produce_sealed(self.changelog_topic, _encode(user_id), None, partition)
        self.engine.forget_user(user_id)
        self.metrics.forget_customer(user_id)
        self.outputs.produce(self.settings.topic_recommendations, user_id.encode(), None)
        await asyncio.gather(self.outputs.flush(), self.sink.delete_user(user_id))
        log.info("forgot customer %s", user_id[:8] + "…")

    def send_dead_letter(self, err: ContractError, msg: Any) -> None:
        """Queue ``msg`` for the dead-letter topic (delivered before its offset is committed: see the module doc)."""
        self.metrics.dead_letter(err.reason)
        record = dead_letter(err, topic=msg.topic, partition=msg.partition, offset=msg.offset,
                             key=msg.key, value=msg.value)
        self.outputs.produce(self.settings.topic_dead_letter, msg.key, _encode(record))
