"""One micro-batch, edge to edge: decode, dead-letter, learn, write.

Runs on the worker's consumer thread (``streams/loop.py``), one batch at a
time; every call here is synchronous, so the order below is the order things
happen.

Error policy per stage:

* decode: a message that breaks the contract goes to the dead-letter topic
  with its source topic/partition/offset, the reason and its bytes (bounded:
  ``streams.contract.dead_letter``); the batch goes on.
* process: the engine runs only on validated events, so an exception there is
  a bug triggered by some event. The batch is retried event by event and only
  the events that still fail are dead-lettered (reason ``processing_error``):
  the worker stays up and no valid event is lost, only parked for replay.
  A failed ``engine.process`` learns nothing of the batch (the engine lets
  its customers' state go: their profiles hold it), so the retry learns each
  event once.
  The exception is the item-side exchange the engine calls (``share``):
  when it fails for good (:class:`~streams.ports.PortFailed`) no event is at
  fault, and the loop stops as for a sink.
* sinks: Redis writes are retried until they succeed (backpressure), each on
  the sink's thread while the next batch is learned, one in flight
  (``streams/sinks/overlapped.py``); Kafka outputs are queued on the producer
  and acknowledged at the next flush (``streams/sinks/kafka.py``). Both are
  durable once drained, which the position checkpoint does first. Any other
  exception leaves this module (a failed Redis write: at the next write or
  drain): the loop then stops without writing a position (a crash, replayed
  by the next owner).

Outputs of a batch, in order: changelog records of the touched customers
(tagged with their partition's generation, and with what the batch added to
the experiment's counts through the customer), one counts record per
partition whose counts moved, recommendation messages, dead letters, then
one Redis write for the whole batch (fenced per partition), the moved
partitions' counts in it. Why the counts are exact: docs/RELIABILITY.md.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import msgspec
import numpy as np

from models.effect import merge_deltas
from models.engine import BatchOutcome, PersonalisationEngine
from models.engine_update import EngineUpdate
from models.profile import Profile, encode_profile, profile_summary
from models.ranking.base import valid_counts
from streams.contract import (
    ContractError,
    Limits,
    Recommendation,
    ScoredItem,
    dead_letter,
    decode_event,
    decode_impression,
    decode_item,
)
from streams.metrics import Metrics
from streams.ports import PortFailed, RecordOutput, ViewSink
from streams.privacy import pseudonym
from streams.settings import Settings
from streams.state.changelog import counts_record, effect_header, gen_header
from streams.state.store import ProfileStore

_encode = msgspec.json.Encoder().encode
log = logging.getLogger(__name__)


class _Overlay(Mapping[str, Profile]):
    """Profiles updated earlier in this batch, falling back to the store."""

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
    for user, delta in b.effect.items():
        a.effect[user] = merge_deltas(a.effect.get(user, ()), delta)
    return a


class BatchProcessor:
    """Applies micro-batches of input messages to the engine and the store, and writes every output.

    Everything it uses is passed in: the engine (pure models), the store
    (owned partitions' profiles and generations) and the metrics, all in
    memory; and its two output ports (``streams/ports.py``): ``outputs``
    for Kafka records (changelog, recommendations, dead letters) and
    ``sink`` for the customers' views in Redis.
    """

    def __init__(self, settings: Settings, engine: PersonalisationEngine, store: ProfileStore,
                 outputs: RecordOutput, sink: ViewSink, metrics: Metrics,
                 share: Callable[[EngineUpdate], None] | None = None) -> None:
        self.settings = s = settings
        self.engine = engine
        self.store = store
        self.outputs = outputs
        self.sink = sink
        self.metrics = metrics
        # Where each batch's item-side learning goes before its customers are ranked: the item-updates
        # log (streams/sharing), or, without one, straight into this engine.
        self.share = share
        self.changelog_topic = s.changelog_topic
        self.topic_types = s.input_topics
        self.impressions_topic = s.topic_impressions
        self.pseudonymize_key = s.pseudonymize_key
        self.limits = Limits(max_message_bytes=s.max_message_bytes, max_id_length=s.max_id_length,
                             min_ts=s.min_event_ts, max_future_skew_s=s.max_future_skew_s,
                             max_impression_items=s.max_impression_items)

    # ------------------------------------------------------------------
    def process(self, batch: Sequence[Any]) -> None:
        """Learn from one micro-batch of input messages and write every output (see the module doc)."""
        started = time.time()
        m = self.metrics
        valid = []
        partition_of: dict[str, int] = {}
        consumed = m.consumed_by_type
        for msg in batch:
            topic = msg.topic()
            consumed["impression" if topic == self.impressions_topic else self.topic_types[topic] or "mixed"].inc()
            try:
                ev = self._decode(topic, msg.key(), msg.value(), started)
            except ContractError as err:
                self.send_dead_letter(err, msg)
                continue
            partition = msg.partition()
            valid.append((ev, msg, ((topic, partition), msg.offset())))
            partition_of[ev.user_id] = partition
        m.batch_size.observe(len(batch))
        if not valid:
            return

        outcome, events = self._learn(valid)
        for etype, n in outcome.learned_by_type.items():
            m.processed_by_type[etype].inc(n)
        m.duplicates.inc(outcome.duplicates)
        m.live_evaluated.inc(outcome.evaluated)
        m.hits_model.inc(outcome.hits)
        m.hits_popularity.inc(outcome.popularity_hits)
        m.observe_segments(outcome.profiles)
        if outcome.profiles:
            self._write(outcome, events, partition_of, started)

    def _write(self, outcome: BatchOutcome, events: list, partition_of: dict[str, int], started: float) -> None:
        now = time.time()
        produce, changelog, recs_topic = self.outputs.produce, self.changelog_topic, self.settings.topic_recommendations
        partitions = self.store.partitions
        headers = {p: [gen_header(state.gen)] for p, state in partitions.items()}
        by_partition: dict[int, tuple[dict[str, bytes], dict[str, bytes]]] = {}
        experiment, effect = self.engine.experiment.name, outcome.effect
        moved: set[int] = set()
        for user, profile in outcome.profiles.items():
            raw, partition = encode_profile(profile), partition_of[user]
            self.store.put(user, raw, partition)
            delta = effect.get(user)
            if delta:  # the record carries what it adds to the partition's counts (docs/RELIABILITY.md)
                self.store.count(partition, delta)
                moved.add(partition)
                produce(changelog, user.encode(), raw, partition,
                        [*headers[partition], effect_header(experiment, delta)])
            else:
                produce(changelog, user.encode(), raw, partition, headers[partition])
            group = by_partition.get(partition)
            if group is None:
                group = by_partition[partition] = ({}, {})
            group[1][user] = _encode(profile_summary(profile, now))
        effects = {}
        for p in sorted(moved):  # after the batch's profile records: the partition's total
            state = partitions[p]
            key, value, counts_headers = counts_record(state.gen, experiment, state.effect)
            produce(changelog, key, value, p, counts_headers)
            effects[p] = (state.gen, state.effect.to_bytes())
        version = self.engine.model_version
        # Scores go out with 6 decimals, rounded for the whole batch at once
        # (far cheaper than Python's round() per score on this path).
        recs = outcome.recommendations
        scores = np.round(recs.scores, 6).tolist()
        served = recs.served
        for user, items, row, n in zip(recs.users, recs.ids.tolist(), scores, valid_counts(recs.scores).tolist()):
            rec_id, variant = served[user]
            doc = _encode(Recommendation(user, list(map(ScoredItem, items[:n], row[:n])),
                                         version, now, outcome.profiles[user].segment, rec_id, variant))
            by_partition[partition_of[user]][0][user] = doc
            produce(recs_topic, user.encode(), doc)
        meta = {"version": version, "updated_at": now, "users": len(self.store), "items": self.engine.ranker.n_items}
        m = self.metrics
        latest: dict[str, float] = {}
        for ev in events:
            if ev.ts > latest.get(ev.user_id, 0.0):
                latest[ev.user_id] = ev.ts
        users = outcome.recommendations.users

        def durable() -> None:  # on the sink's thread, once Redis holds the batch
            written = time.time()
            # Freshness: from each event's own time to its recommendations being readable.
            for user in users:
                m.freshness.observe(max(0.0, written - latest.get(user, written)))
            m.batch_seconds.observe(written - started)

        self.sink.write([(p, partitions[p].gen, recs, profiles) for p, (recs, profiles) in by_partition.items()],
                        meta, effects, on_durable=durable)
        if moved:
            m.observe_effect(self.store.by_arm())
        m.recommendations_written.inc(len(outcome.recommendations))
        m.users.set(meta["users"])
        m.items.set(meta["items"])
        m.model_version.set(version)
        half_life = self.engine.ranker.served_popularity_half_life
        m.popularity_half_life.set(float("inf") if half_life is None else half_life)
        m.model_updated.set(now)

    def _decode(self, topic: str, key: bytes | None, value: bytes | None, now: float) -> Any:
        """The validated event or impression of an input message (pseudonymised if configured);
        raises ContractError."""
        if topic == self.impressions_topic:
            ev = decode_impression(value, self.limits, now=now)
        else:
            ev = decode_event(value, self.topic_types[topic], self.limits, now=now)
        if key != ev.user_id.encode():
            raise ContractError("key_mismatch",
                                f"message key {None if key is None else key[:64]!r} is not the user_id "
                                f"{ev.user_id[:64]!r}: input and impressions topics must be keyed by user_id")
        if self.pseudonymize_key:
            ev = msgspec.structs.replace(ev, user_id=pseudonym(ev.user_id, self.pseudonymize_key))
        return ev

    def _learn(self, valid: list) -> tuple[BatchOutcome, list]:
        events = [ev for ev, _, _ in valid]
        try:
            return self.engine.process(events, self.store, positions=[pos for _, _, pos in valid],
                                       share=self.share), events
        except PortFailed:
            raise  # an exchange failed, not an event: the loop stops and the next owner processes the batch
        except Exception:
            log.exception("processing a batch of %d events failed; isolating the failing events", len(events))
        merged, kept, profiles = None, [], {}
        for ev, msg, pos in valid:
            try:
                outcome = self.engine.process([ev], _Overlay(profiles, self.store), positions=[pos], share=self.share)
            except Exception as exc:  # parked in the dead-letter topic with the reason
                self.send_dead_letter(ContractError("processing_error", f"{type(exc).__name__}: {exc}"[:500]), msg)
                continue
            profiles.update(outcome.profiles)
            kept.append(ev)
            merged = outcome if merged is None else _merge(merged, outcome)
        return merged or BatchOutcome(), kept

    def remirror(self, chunk: int = 1000) -> int:
        """Write every owned customer's Redis keys again (after Redis lost data); returns how many.

        Profiles come from the store; recommendations are ranked afresh. Fenced
        per partition like every write.
        """
        now = time.time()
        partitions = self.store.partitions
        users = [(u, p) for p, state in list(partitions.items()) for u in list(state.profiles)]
        version = self.engine.model_version
        meta = {"version": version, "updated_at": now, "users": len(self.store), "items": self.engine.ranker.n_items}
        # The lists are served again under their latest rec_id on record: no new list is named, so the
        # customers' attribution states (in the changelog) need no change.
        self.sink.write([], meta, {p: (state.gen, state.effect.to_bytes()) for p, state in list(partitions.items())})
        for lo in range(0, len(users), chunk):
            part = users[lo:lo + chunk]
            ids, scores, arms = self.engine.serve([u for u, _ in part])
            groups: dict[int, tuple[dict[str, bytes], dict[str, bytes]]] = {}
            for (user, p), items, row, n, arm in zip(part, ids.tolist(), scores.tolist(), valid_counts(scores).tolist(),
                                                     arms):
                profile = self.store.get(user)
                if profile is None or p not in partitions:
                    continue
                recs_doc, profiles_doc = groups.setdefault(p, ({}, {}))
                profiles_doc[user] = _encode(profile_summary(profile, now))
                scored = [ScoredItem(i, round(sc, 6)) for i, sc in zip(items[:n], row[:n])]
                recs_doc[user] = _encode(Recommendation(user, scored, version, now, profile.segment,
                                                        self.engine.rec_id_of(profile, arm), arm))
            self.sink.write([(p, partitions[p].gen, r, pr) for p, (r, pr) in groups.items()], meta)
        log.info("wrote the Redis keys of %d customers again", len(users))
        return len(users)

    # ------------------------------------------------------------------
    def check_items(self, batch: Sequence[Any]) -> None:
        """Catalogue records of owned partitions: invalid ones go to the dead-letter topic, once.

        Every worker follows the whole catalogue for its models
        (``streams/catalogue.py``); only the partition's owner reports bad records.
        """
        for msg in batch:
            value = msg.value()
            if value is None:
                continue  # tombstone: an item removed from the catalogue
            try:
                decode_item(value)
            except ContractError as err:
                self.send_dead_letter(err, msg)

    def forget(self, user_id: str, partition: int) -> None:
        """Remove every trace of a customer: profile (changelog tombstone), model state, Redis keys,
        and a tombstone on the recommendations topic. The caller then checkpoints the models."""
        state = self.store.partitions[partition]
        self.store.delete(user_id)
        self.outputs.produce(self.changelog_topic, user_id.encode(), None, partition, [gen_header(state.gen)])
        self.engine.forget_user(user_id)
        self.metrics.forget_customer(user_id)
        self.outputs.produce(self.settings.topic_recommendations, user_id.encode(), None)
        self.outputs.flush()
        self.sink.delete_user(user_id)
        log.info("forgot a customer of partition %d (profile, models, Redis keys)", partition)

    def let_go(self, partitions: Iterable[int]) -> None:
        """Drop the models' state of the customers of ``partitions``, which this worker no longer
        owns: their profiles carry it to the next owner (call before the store lets them go)."""
        owned = self.store.partitions
        self.engine.drop_users([user for p in partitions if p in owned for user in owned[p].profiles])

    def send_dead_letter(self, err: ContractError, msg: Any) -> None:
        """Queue ``msg`` for the dead-letter topic (acknowledged before its position is written)."""
        self.metrics.dead_letter(err.reason)
        record = dead_letter(err, topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
                             key=msg.key(), value=msg.value(), max_value_bytes=self.settings.max_message_bytes)
        self.outputs.produce(self.settings.topic_dead_letter, msg.key(), _encode(record))
