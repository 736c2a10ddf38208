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
* sink: Redis writes are retried until they succeed (backpressure); topic
  sends are buffered and Faust flushes the producer before committing offsets.

Order of operations per batch: table changelog records and output messages are
queued, Redis is written (awaited), then the batch returns and its events are
acked; offsets are committed later by Faust's commit timer, which first flushes
the producer. So an offset is only committed after every output of the events
before it was written; a crash in between replays the batch, which the
per-customer dedupe window makes harmless for profiles.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterator, Mapping, Sequence

import msgspec

from models.engine import BatchOutcome
from models.profile import Profile, decode_profile, encode_profile, profile_summary
from streams.contract import ContractError, Limits, Recommendation, ScoredItem, dead_letter, decode_event
from streams.metrics import Metrics
from streams.privacy import pseudonym
from streams.redis_sink import RedisSink

_encode = msgspec.json.Encoder().encode
log = logging.getLogger(__name__)


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
    def __init__(self, app: Any, metrics: Metrics, sink: RedisSink) -> None:
        s = self.settings = app.settings_
        self.app = app
        self.table = app.profiles
        self.profiles = TableProfiles(app.profiles)
        self.metrics = metrics
        self.sink = sink
        self.topic_types = s.input_topics
        self.pseudonymize_key = s.pseudonymize_key
        self.limits = Limits(max_message_bytes=s.max_message_bytes, max_id_length=s.max_id_length,
                             min_ts=s.min_event_ts, max_future_skew_s=s.max_future_skew_s)

    @property
    def engine(self) -> Any:  # read each time: a checkpoint restore replaces it
        return self.app.engine

    async def process(self, batch: Sequence[Any]) -> None:
        started = time.time()
        m = self.metrics
        valid = []
        partition_of: dict[str, int] = {}
        for event in batch:
            msg = event.message
            etype = self.topic_types[msg.topic]
            m.consumed_by_type[etype or "mixed"].inc()
            try:
                ev = decode_event(msg.value, etype, self.limits, now=started)
                if msg.key is not None and msg.key != ev.user_id.encode():
                    raise ContractError("key_mismatch",
                                        f"message key {msg.key[:64]!r} is not the user_id {ev.user_id[:64]!r}: "
                                        "input topics must be keyed by user_id")
            except ContractError as err:
                self.send_dead_letter(err, msg)
                continue
            if self.pseudonymize_key:
                ev = msgspec.structs.replace(ev, user_id=pseudonym(ev.user_id, self.pseudonymize_key))
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
        profile_docs: dict[str, bytes] = {}
        for user, profile in outcome.profiles.items():
            self.table.set_in_partition(user, encode_profile(profile), partition_of[user])
            profile_docs[user] = _encode(profile_summary(profile, now))
        version = self.engine.model_version
        rec_docs: dict[str, bytes] = {}
        for user, recs in outcome.recommendations.items():
            rec_docs[user] = _encode(Recommendation(
                user_id=user, items=[ScoredItem(item_id=i, score=round(float(s), 6)) for i, s in recs],
                model_version=version, generated_at=now, segment=outcome.profiles[user].segment))
        await self.sink.write(rec_docs, profile_docs, {
            "version": version, "updated_at": now, "users": len(self.table), "items": self.engine.ranker.n_items})
        written = time.time()
        send = self.app.recommendations_topic.send_soon
        for user, doc in rec_docs.items():
            send(key=user.encode(), value=doc)
        m.recommendations_written.inc(len(rec_docs))
        # Freshness: from each event's own time to its recommendations being readable.
        latest: dict[str, float] = {}
        for ev in valid:
            latest[ev.user_id] = max(latest.get(ev.user_id, 0.0), ev.ts)
        for user in rec_docs:
            m.freshness.observe(max(0.0, written - latest[user]))
        m.batch_seconds.observe(written - started)
        m.users.set(len(self.table))
        m.items.set(self.engine.ranker.n_items)
        m.model_version.set(version)
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
        self.table.del_in_partition(user_id, partition)
        self.engine.forget_user(user_id)
        self.metrics.forget_customer(user_id)
        await self.sink.delete_user(user_id)
        self.app.recommendations_topic.send_soon(key=user_id.encode(), value=None)
        log.info("forgot customer %s", user_id[:8] + "…")

    def send_dead_letter(self, err: ContractError, msg: Any) -> None:
        self.metrics.dead_letter(err.reason)
        record = dead_letter(err, topic=msg.topic, partition=msg.partition, offset=msg.offset,
                             key=msg.key, value=msg.value)
        self.app.dead_letter_topic.send_soon(key=msg.key, value=_encode(record))
