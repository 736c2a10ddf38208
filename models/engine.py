"""The personalisation engine: everything a worker learns, as one pure object.

A micro-batch of validated events goes in; updated customer profiles and fresh
top-N recommendations for the customers it touched come out. No I/O happens
here: the Faust agents (``agents/``) read and write Kafka, tables and Redis
around it, and the offline replay drives the very same object, so what is
measured offline is what runs live.

Order inside a batch, per event: drop duplicates (by ``event_id``, against the
customer's dedupe window kept IN the profile, so the window is checkpointed
atomically with the counts it protects), update the profile, let the models
learn. Then once per touched customer: update and assign the segment, and
rank the catalogue (one batched, vectorised call for all touched customers).

Item side shared, customers' own state by owner. Each customer's own model
state (history, sets, factors) is learned by the worker that owns them and
travels in their profile; the item side (popularity, co-visits, successors,
the second stage) is learned from updates: a batch's item-side learning is
taken out (:meth:`PersonalisationEngine.take_update`) and every worker, this
one included, applies every worker's updates in one order, the
``item-updates`` topic's (:meth:`PersonalisationEngine.apply_update`), so
all hold the same item side. ``process`` alone (no ``share``) applies the
batch's own update: one worker, or a replay.

Exactly-once across crashes. Profiles and models are persisted separately
(profiles continuously through the table changelog, the item side by the
updates log and periodic checkpoints), so after a crash the redelivered
events are new to one and old to the other. The engine therefore remembers,
per source partition, the next offset whose update its item side has not
applied (``model_offsets``, saved in every checkpoint with the position in
the updates log it reflects, ``item_log_offset``; a source partition is a
``(topic, partition)`` tuple), and the profile remembers the offset of each
event id in its window. For an event at ``(partition, offset)``:

* id not in the window: new to the profile; the customer's state learns it,
  and the item side too unless its offset for the partition is already past it;
* id in the window at the SAME offset: a redelivery; the profile skips it, the
  customer's outputs are rewritten (the first delivery may have died before
  writing them), and the item side learns it only if no update applied so far
  holds it;
* id in the window at another offset: a producer's duplicate; skipped by all.

An update holding an event the item side has applied already (the same batch
processed again by the next owner) teaches it nothing more: applying an
update skips events at or below the mark of their partition. A worker
restored from a checkpoint applies the updates log from the checkpoint's
position: it holds the item-side learning of every event whose input
position was recorded, since a batch's update is acknowledged before its
position is written.
"""

from __future__ import annotations

import heapq
import itertools
import pickle
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterable, Mapping, Protocol, Sequence

import numpy as np

from models.effect import (
    HOLDOUT,
    IMPRESSION,
    Attribution,
    Delta,
    EffectState,
    Experiment,
    Increment,
    default_experiment,
    make_rec_id,
    merge_deltas,
)
from models.effect import Interaction as Record
from models.engine_update import EngineUpdate
from models.profile import (
    FEATURE_KEYS,
    Profile,
    applied_offset,
    apply_event,
    feature_matrix,
    mark_applied,
    mark_seen,
    new_profile,
    seen_offset,
)
from models.ranking import pickling
from models.ranking.base import padded, valid_counts
from models.ranking.hybrid import HybridRanker
from models.ranking.item_updates import _Outbox
from models.segments import CustomerSegments
from models.sets import member

#: A source partition, ``(topic, partition)``: what event positions and ``model_offsets`` are keyed by.
SourcePartition = tuple[str, int]

# How an impression's event_id is held in the dedupe window: impressions come from their own
# topic, whose producer may number its ids like the event producers do; the prefix (a control
# character, which no contract-valid id holds) keeps "imp-1" of each apart.
_IMPRESSION_KEY = "\x01"
# A user id no customer can have (the contract refuses empty ids): ranking it gives the
# cold-start list, trending popularity.
_NO_HISTORY = ""


def source_position(part: SourcePartition, offset: int) -> int:
    """One int naming a message: 20 bits of the topic-partition's hash, 40 of the offset.

    Kept in the profile beside each event id. The same id at the same offset
    on ANOTHER topic is a duplicate, not a redelivery, so the topic-partition
    must be part of it; a customer's events come from a handful of
    topic-partitions, so a 20-bit hash practically never collides. The hash
    is the CRC-32 of ``"topic:partition"``: the profiles in the changelog
    hold these positions, so it must stay what it is.

    >>> source_position(("click", 0), 7) == source_position(("click", 0), 7) != source_position(("browse", 0), 7)
    True
    """
    topic, partition = part
    return (zlib.crc32(f"{topic}:{partition}".encode()) & 0xFFFFF) << 40 | offset


def _source_partition(key: SourcePartition | str) -> SourcePartition:
    """A ``model_offsets`` key of a checkpoint as a source partition: checkpoints of earlier
    versions name partitions ``"topic:partition"`` (Kafka topic names cannot hold a ``:``).

    >>> _source_partition("click:3"), _source_partition(("click", 3))
    (('click', 3), ('click', 3))
    """
    if isinstance(key, str):
        topic, _, partition = key.rpartition(":")
        return topic, int(partition)
    return key


class Interaction(Protocol):
    """What the engine needs to know of an event (``streams.contract.Event`` fits).

    A click or purchase may also carry ``rec_id`` (the list it came from). A
    record whose ``type`` is :data:`models.effect.IMPRESSION` is an impression
    (``streams.contract.Impression``: ``event_id``, ``user_id``, ``rec_id``,
    ``items``, ``ts``): it is deduplicated like an event and counted by the
    attribution, and teaches no model.
    """

    event_id: str
    user_id: str
    item_id: str
    type: str
    ts: float
    category: str | None
    price: float | None
    quantity: int
    order_id: str | None


@dataclass
class TopN:
    """Fresh top-N lists: row ``i`` of ``ids`` and ``scores`` is ``users[i]``'s, best first and
    padded at its end (id ``None``, score ``-inf``: :mod:`models.ranking.base`).

    >>> a = TopN(["u1", "u2"], np.array([["x"], ["y"]], dtype=object), np.array([[2.0], [1.0]]))
    >>> a.update(TopN(["u1"], np.array([["z"]], dtype=object), np.array([[3.0]])))
    >>> a.users, a.ids[:, 0].tolist(), len(a)  # like dict.update: first place, latest list
    (['u1', 'u2'], ['z', 'y'], 2)
    """

    users: list[str] = field(default_factory=list)
    ids: np.ndarray = field(default_factory=lambda: np.empty((0, 0), dtype=object))
    scores: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    #: ``(rec_id, variant)`` of each customer's list (``holdout``: the empty list of the holdout).
    served: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.users)

    def update(self, other: "TopN") -> None:
        """Add ``other``'s lists; a customer in both keeps its place and gets ``other``'s list."""
        if not other.users:
            return
        self.served.update(other.served)
        if not self.users:
            self.users, self.ids, self.scores = list(other.users), other.ids, other.scores
            return
        row = {user: i for i, user in enumerate(self.users + other.users)}  # first place, last row
        keep = list(row.values())
        self.users = list(row)
        self.ids = np.concatenate((self.ids, other.ids))[keep]
        self.scores = np.concatenate((self.scores, other.scores))[keep]


@dataclass
class BatchOutcome:
    """What one micro-batch changed."""

    profiles: dict[str, Profile] = field(default_factory=dict)
    recommendations: TopN = field(default_factory=TopN)
    learned: int = 0
    learned_by_type: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    # Live (prequential) quality: was the event's item among the top-K the
    # customer had been shown before this event was learned?
    evaluated: int = 0
    hits: int = 0
    popularity_hits: int = 0
    #: Per customer, what the batch added to the experiment's counts (customers with no count
    #: change are left out); the changelog record of the customer's profile carries it.
    effect: dict[str, Delta] = field(default_factory=dict)


class PersonalisationEngine:
    """Profiles, segments and the hybrid ranker behind one micro-batch API.

    Parameters
    ----------
    top_n
        Recommendations per customer.
    exclude
        ``"purchased"`` (default), ``"interacted"`` or ``"none"``.
    n_segments
        Customer segments (River KMeans clusters).
    dedupe_window
        Event ids remembered per customer to drop duplicates.
    hit_k
        Cut-off of the live hit rate.
    seed
        Seed of every stochastic component.

    The experiment (arms, attribution windows) is configuration, not model
    state: :meth:`set_experiment` sets it (the default: one ``ranker``
    variant with every customer), and a checkpoint does not carry it.

    Examples
    --------
    >>> from types import SimpleNamespace as E
    >>> engine = PersonalisationEngine(top_n=3)
    >>> engine.upsert_item("i1", "books"); engine.upsert_item("i2", "books"); engine.upsert_item("i3", "toys")
    >>> ev = E(event_id="e1", user_id="u1", item_id="i1", type="purchase", ts=1.7e9,
    ...        category="books", price=10.0, quantity=1, order_id="o1")
    >>> out = engine.process([ev, ev], profiles={})
    >>> out.learned, out.duplicates
    (1, 1)
    >>> out.recommendations.users, out.recommendations.ids  # purchased i1 is excluded
    (['u1'], array([['i2', 'i3', None]], dtype=object))
    >>> out.profiles["u1"].counts["purchase"]
    1
    """

    def __init__(self, top_n: int = 20, exclude: str = "purchased", n_segments: int = 6,
                 dedupe_window: int = 512, hit_k: int = 10, seed: int = 42,
                 warm_customers: int = 100_000, ranker_overrides: Mapping[str, Any] | None = None) -> None:
        self.top_n = top_n
        self.warm_customers = warm_customers
        self.exclude = exclude
        self.n_segments = n_segments
        self.dedupe_window = dedupe_window
        self.hit_k = hit_k
        self.seed = seed
        #: The ranker's parameters other than its defaults (RECOSTREAM_RANKER); variants' overrides go on top.
        self.ranker_overrides = dict(ranker_overrides or {})
        # Learns to rank under the rule it serves; its item side learns from updates (apply_update).
        self.ranker = HybridRanker(**self._ranker_params())
        self.segments = CustomerSegments(n_segments=n_segments, seed=seed)
        # Last top-K shown per customer (bounded by customers x K) and the
        # global popularity top list: the live quality metric compares them.
        self._shown: dict[str, tuple[str, ...]] = {}
        self._item_counts: dict[str, int] = {}
        self.model_offsets: dict[SourcePartition, int] = {}
        #: The next offset of the item-updates log to apply (kept by whoever feeds :meth:`apply_update`).
        self.item_log_offset = 0
        self.forgotten = 0  # customers forgotten so far: a change worth checkpointing
        #: Per variant with ranker overrides: ``(overrides, its own HybridRanker)`` (see :meth:`set_experiment`).
        self.variant_rankers: dict[str, tuple[tuple, HybridRanker]] = {}
        #: Seconds spent per phase of :meth:`process` since creation (not model state).
        self.timings: dict[str, float] = dict.fromkeys(("learn", "segments", "recommend"), 0.0)
        self.set_experiment(default_experiment())
        self._init_caches()

    def set_experiment(self, experiment: Experiment, click_window_s: float = 1800.0,
                       purchase_window_s: float = 86400.0) -> None:
        """Serve and count under ``experiment`` from now on (:class:`models.effect.Attribution` windows).

        A variant with ranker overrides gets a ranker of its own
        (:class:`HybridRanker` with those parameters) that learns every event
        the product's ranker learns: the price is one more ranker's learning
        time and memory per such variant. Rankers of variants kept with the
        same overrides are kept (a checkpoint carries them); a new one starts
        empty, with the catalogue, and learns from then on.
        """
        self.experiment = experiment
        self.attribution = Attribution(experiment, click_window_s=click_window_s, purchase_window_s=purchase_window_s)
        kept: dict[str, tuple[tuple, HybridRanker]] = {}
        for v in experiment.variants:
            if v.strategy != "ranker" or not v.overrides:
                continue
            old = self.variant_rankers.get(v.name)
            if old is not None and old[0] == v.overrides:
                kept[v.name] = old
                continue
            ranker = HybridRanker(**self._ranker_params(v.overrides_dict))
            catalog = self.ranker.catalog
            for item_id, available in zip(catalog.ids, catalog.available.tolist()):
                ranker.upsert_item(item_id, catalog.category_of(item_id), available)
            kept[v.name] = (v.overrides, ranker)
        self.variant_rankers = kept

    def _ranker_params(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A ranker's parameters: the engine's seed and rule, its ranker overrides, then ``overrides``."""
        return {"seed": self.seed, **self.ranker_overrides, **(overrides or {}), "exclude": self.exclude,
                "share_items": True}

    def _init_caches(self) -> None:
        # Derived from the state above, never saved.
        self._part_hash: dict[SourcePartition, int] = {}  # source_position(part, 0) per topic-partition
        self._pop_top: list[str] | None = None  # popularity top list as of the last batch ...
        self._pop_pending: list[str] = []  # ... and the items learned since
        self._item_seq: dict[str, int] = {}  # first-seen rank of each item (ties of the top list)
        # Customers whose own model state is in memory, least recently touched first.
        self._warm: dict[str, None] = dict.fromkeys(self.ranker.warm_users())
        # Source positions of the events queued for the item side since the last take_update.
        self._queued: list[tuple[SourcePartition | None, int]] = []

    # ------------------------------------------------------------------
    def upsert_item(self, item_id: str, category: str | None = None, available: bool = True) -> None:
        self.ranker.upsert_item(item_id, category=category, available=available)
        for _, ranker in self.variant_rankers.values():
            ranker.upsert_item(item_id, category=category, available=available)

    @property
    def model_version(self) -> int:
        return self.ranker.model_version

    def process(self, events: Sequence[Interaction], profiles: Mapping[str, Profile], *,
                positions: Sequence[tuple[SourcePartition, int]] | None = None,
                recommend: bool = True, share: Callable[[EngineUpdate], None] | None = None) -> BatchOutcome:
        """Learn from a micro-batch and refresh the touched customers' top-N.

        ``profiles`` is only read (customers seen before); the updated profiles
        of every touched customer are in the outcome, for the caller to store.
        ``positions`` gives each event's source ``(partition, offset)``
        (see the module docstring); without it, deduplication is by id only.

        The batch's item-side learning is handed to ``share`` (default:
        :meth:`apply_update` here, a worker alone) before the customers are
        ranked: a worker among others publishes it and applies every
        worker's updates, its own included, up to it (``streams/sharing``).

        A call that raises learns nothing of the batch: the customers' own
        state is let go (their profiles hold it) and the item-side part is
        dropped, so the caller may process the events again.
        """
        clock = time.perf_counter
        t0 = clock()
        out = BatchOutcome()
        triggers: dict[str, tuple[int, float]] = {}
        self.take_update()  # (what a failed batch queued is not learned)
        personal: set[str] = set()  # customers whose own model state changed
        try:
            latest_ts = self._learn_batch(events, profiles, positions, out, triggers, personal)
            update = self.take_update()
            if update is not None:
                (share or self.apply_update)(update)  # the customers' factors move with it
            self._put_model_state(out.profiles, personal)
            t1 = clock()
            if triggers:
                self._assign_segments({user: out.profiles[user] for user in triggers}, latest_ts)
            t2 = clock()
            if recommend and triggers:
                self._recommend_touched(out, triggers)
            t3 = clock()
        except Exception:
            # A failed batch leaves its customers' own state as their stored profiles hold it (a
            # customer without one starts afresh): events retried are then learned once, not again
            # on top of what the failed attempt learned.
            self.drop_users({ev.user_id for ev in events})
            raise
        timings = self.timings
        timings["learn"] += t1 - t0
        timings["segments"] += t2 - t1
        timings["recommend"] += t3 - t2
        return out

    def _learn_batch(self, events: Sequence[Interaction], profiles: Mapping[str, Profile],
                     positions: Sequence[tuple[SourcePartition, int]] | None, out: BatchOutcome,
                     triggers: dict[str, tuple[int, float]], personal: set[str]) -> float:
        """Deduplicate, update the profiles (into ``out.profiles``), count for the experiment (into
        ``out.effect``) and let the models learn (see the module docstring); returns the latest
        event time learned (0 if none). ``triggers`` gets, per customer with an event (applied or
        redelivered), the source position and time of its last one: what its new list is named by;
        ``personal`` the customers whose own model state changed."""
        touched: dict[str, Profile] = out.profiles
        pop_top = self._popular(self.hit_k)
        latest_ts = 0.0
        model_offsets = self.model_offsets
        learners = [self.ranker.learn_one, *(ranker.learn_one for _, ranker in self.variant_rankers.values())]
        queued = self._queued
        learned_by_type = out.learned_by_type
        shown_of = self._shown.get
        attribution = self.attribution
        increments: dict[str, list[Increment]] = {}
        for i, ev in enumerate(events):
            user = ev.user_id
            profile = touched.get(user)
            if profile is None:
                profile = profiles.get(user)
                if profile is None:
                    profile = new_profile(user)
                elif self._take_model_state(profile):
                    personal.add(user)
            if positions is None:
                part, offset, position, model_new = None, -1, -1, True
            else:
                part, offset = positions[i]
                position = self._position(part, offset)
                model_new = offset >= model_offsets.get(part, 0)
            applied, redelivery = self._apply(profile, ev, position, offset)
            if ev.type == IMPRESSION:  # counted, never learned; the customer's list does not change
                if applied:
                    increments.setdefault(user, []).extend(attribution.impression(self._effect(profile), ev))
                if applied or redelivery:
                    touched[user] = profile
                if not applied:
                    out.duplicates += 1
                continue
            if applied or redelivery:
                # A redelivery's first delivery may have died before its outputs
                # were written: refresh them (idempotent; counts do not change).
                touched[user] = profile
                triggers[user] = (position if position >= 0 else zlib.crc32(ev.event_id.encode()), ev.ts)
            if applied:
                increments.setdefault(user, []).extend(attribution.interaction(self._effect(profile), Record(
                    ev.event_id, user, ev.item_id, ev.type, ev.ts, rec_id=getattr(ev, "rec_id", None),
                    price=ev.price, quantity=ev.quantity or 1)))
            if not applied:
                out.duplicates += 1
                if not (redelivery and model_new):
                    continue  # a producer's duplicate, or a redelivery the models already know
                # A redelivery the restored models have not learned yet: the item side catches up
                # (the customer's own state came with the profile, which holds the event).
            if not model_new:
                # New to the profile, known to the item side (a checkpoint newer than the
                # changelog): only the customer's own state, taken from the profile, learns it.
                for learn in learners:
                    learn(user, ev.item_id, ev.type, ev.ts, items=False)
                personal.add(user)
                continue
            queued.append((part, offset))  # the item side learns it when the update is applied
            item, etype, ts = ev.item_id, ev.type, ev.ts
            # Live (prequential) quality: judged against what was shown before learning.
            shown = shown_of(user)
            if shown is not None:
                out.evaluated += 1
                out.hits += item in shown
                out.popularity_hits += item in pop_top
            for learn in learners:
                learn(user, item, etype, ts, personal=applied, category=ev.category)
            if applied:
                personal.add(user)
            out.learned += 1
            learned_by_type[etype] = learned_by_type.get(etype, 0) + 1
            if ts > latest_ts:
                latest_ts = ts
        for user, incs in increments.items():
            delta = merge_deltas(incs)
            if delta:
                out.effect[user] = delta
        return latest_ts

    def _take_model_state(self, profile: Profile) -> bool:
        """Make the models hold the customer's own state as their stored ``profile`` has it: taken
        from the profile when this process holds none or another version (the customer's partition
        was elsewhere, or a checkpoint restored an older state); whether it was taken."""
        record, user = profile.model, profile.user_id
        if record is None or self.ranker.user_version(user) == profile.model_version:
            return False
        for ranker in (self.ranker, *(r for _, r in self.variant_rankers.values())):
            ranker.import_user(user, record)
        return True

    def _put_model_state(self, touched: dict[str, Profile], users: set[str]) -> None:
        """Write the customers' own model state into their profiles (see :attr:`Profile.model`), then
        let go of the state of the customers touched least recently beyond :attr:`warm_customers`:
        their profiles hold it, and the next batch that meets them takes it back."""
        order = list(users)
        version = self.ranker.user_version
        for user, record in zip(order, self.ranker.export_users(order)):
            profile = touched[user]
            profile.model, profile.model_version = record, version(user) or 0
        self._touch(touched)

    def _touch(self, users: Collection[str]) -> None:
        """``users`` were just served: the most recent of the warm customers; the least recent
        ones beyond the bound are let go, except this batch's and those with factor steps queued
        (their record does not hold them yet)."""
        warm = self._warm
        for user in users:
            warm.pop(user, None)
            warm[user] = None
        excess = min(len(warm) - self.warm_customers, len(warm) - len(users))
        if excess > 0:
            busy = self.ranker.users_with_queued_steps()
            cold = [user for user in itertools.islice(warm, excess + len(busy)) if user not in busy][:excess]
            self.drop_users(cold)

    def _effect(self, profile: Profile) -> EffectState:
        """The customer's attribution state, created on first use (kept in the profile)."""
        state = profile.effect
        if state is None:
            state = profile.effect = self.attribution.new_state()
        return state

    def _position(self, part: SourcePartition, offset: int) -> int:
        """:func:`source_position` of ``(part, offset)``, the partition's hash computed once."""
        h = self._part_hash.get(part)
        if h is None:
            h = self._part_hash[part] = source_position(part, 0)
        return h | offset

    def _apply(self, profile: Profile, ev: Interaction, position: int, offset: int) -> tuple[bool, bool]:
        """Apply ``ev`` (at ``position`` and ``offset``; -1: unknown) to ``profile`` unless the profile
        holds it already: ``(applied, redelivery)``, a redelivery being the same message again (not
        a producer's duplicate)."""
        impression = ev.type == IMPRESSION
        key = _IMPRESSION_KEY + ev.event_id if impression else ev.event_id
        last = applied_offset(profile, position) if position >= 0 else None
        if last is not None and last >= offset:
            # At or below the last event applied from its partition: a redelivery
            # (after a crash or a rebalance), even if its id has left the window,
            # unless the window holds its id at another position (a duplicate).
            seen_at = seen_offset(profile, key)
            return False, seen_at is None or seen_at == position
        if impression:  # the same window and positions as events, no count of the profile
            applied = mark_seen(profile, key, self.dedupe_window, position)
        else:
            # An event without a category counts in the catalogue's category of its item.
            category = ev.category if ev.category is not None else self.ranker.item_category(ev.item_id)
            applied = apply_event(profile, event_id=ev.event_id, item_id=ev.item_id, event_type=ev.type,
                                  ts=ev.ts, category=category, price=ev.price, quantity=ev.quantity,
                                  order_id=ev.order_id, window=self.dedupe_window, offset=position)
        if applied:
            if position >= 0:
                mark_applied(profile, position)
            return True, False
        return False, position >= 0 and seen_offset(profile, key) == position

    def _assign_segments(self, touched: dict[str, Profile], latest_ts: float) -> None:
        """Update the segments with the touched profiles and assign each its segment."""
        profs = list(touched.values())
        now = latest_ts or [p.last_seen for p in profs]
        for profile, segment in zip(profs, self.segments.learn_predict_many(feature_matrix(profs, now),
                                                                          FEATURE_KEYS)):
            profile.segment = segment

    def _recommend_touched(self, out: BatchOutcome, triggers: dict[str, tuple[int, float]]) -> None:
        """Serve the customers with an event their arm's list (one batched call per arm), name each
        list after the position of the customer's last event (:func:`models.effect.make_rec_id`: a
        list written again after a crash keeps its name), put it on the customer's record of
        recommendations, and remember what they are shown (the live quality's reference)."""
        users = [user for user in out.profiles if user in triggers]
        ids, scores, arms = self.serve(users)
        served: dict[str, tuple[str, str]] = {}
        out.recommendations = TopN(users, ids, scores, served)
        name, recommended = self.experiment.name, self.attribution.recommended
        for user, arm in zip(users, arms):
            position, ts = triggers[user]
            rec_id = make_rec_id(name, user, position)
            served[user] = (rec_id, arm)
            if arm != HOLDOUT:
                recommended(self._effect(out.profiles[user]), rec_id, arm, ts)
        hit_k = self.hit_k
        shown = self._shown
        for user, row, m in zip(users, ids[:, :hit_k].tolist(), valid_counts(scores[:, :hit_k]).tolist()):
            shown[user] = tuple(row[:m])

    def serve(self, user_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Each customer's list under the experiment: ``(ids, scores, arms)``, ``ids`` and ``scores``
        as :meth:`recommend` gives them, ``arms`` the arm of each (:meth:`Experiment.assign`).

        A ``ranker`` variant gets the product's ranker (or its own ranker if
        it has overrides), a ``popularity`` variant the trending list
        (:meth:`_popularity`), the holdout an empty list.
        """
        users = list(user_ids)
        assign = self.experiment.assign
        arms = [assign(user) for user in users]
        ids, scores = padded(len(users), self.top_n)
        rows_of: dict[str, list[int]] = {}
        for i, arm in enumerate(arms):
            rows_of.setdefault(arm, []).append(i)
        for arm, rows in rows_of.items():
            if arm == HOLDOUT:
                continue  # no personalised list: what the holdout measures
            part = [users[i] for i in rows] if len(rows) < len(users) else users
            if self.experiment.variant(arm).strategy == "popularity":
                got = self._popularity(part)
            else:
                entry = self.variant_rankers.get(arm)
                got = (entry[1] if entry else self.ranker).recommend(part, n=self.top_n, exclude=self.exclude)
            if part is users:
                return got[0], got[1], arms
            ids[rows], scores[rows] = got
        return ids, scores, arms

    def rec_id_of(self, profile: Profile, arm: str) -> str:
        """The ``rec_id`` of the customer's latest list of ``arm`` on record (to serve a list again without
        naming a new one), else one derived from no position.

        Examples
        --------
        >>> engine = PersonalisationEngine()
        >>> p = new_profile("u1")
        >>> engine.attribution.recommended(engine._effect(p), "r1", "ranker", 0.0)
        >>> engine.rec_id_of(p, "ranker"), engine.rec_id_of(new_profile("u2"), "ranker") == make_rec_id("default", "u2", -1)
        ('r1', True)
        """
        state = profile.effect
        if state is not None and state.experiment == self.experiment.name:
            for issued in reversed(state.issued):
                if issued.variant == arm:
                    return issued.rec_id
        return make_rec_id(self.experiment.name, profile.user_id, -1)

    def _popularity(self, users: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The ``popularity`` arm: the ranker's trending list (its cold start) without each customer's
        excluded items.

        Why not a second model (``models.baselines.PopularityBaseline``): the
        ranker's trending popularity already learns every event, with the
        decay the product uses, so the control costs no learning time or
        memory, and it is the list the product itself shows a new customer.
        The exclusion rule is the ranker's: its per-customer state holds the
        purchased and interacted items.
        """
        n, ranker = self.top_n, self.ranker
        excluded = []
        for user in users:
            excl = ranker.excluded_rows(user, self.exclude)
            excluded.append(excl if excl is not None and len(excl) else None)
        extra = max((len(e) for e in excluded if e is not None), default=0)
        cold_ids, cold_scores = ranker.recommend([_NO_HISTORY], n=n + extra, exclude="none")
        m = int(valid_counts(cold_scores)[0])
        cold_ids, cold_scores = cold_ids[0, :m], cold_scores[0, :m]
        row_of = ranker.catalog.row
        cold_rows = np.array([row_of(i) for i in cold_ids.tolist()], dtype=np.int64)
        ids, scores = padded(len(users), n)
        for k, excl in enumerate(excluded):
            keep = np.flatnonzero(~member(cold_rows, excl))[:n] if excl is not None else np.arange(min(n, m))
            ids[k, :len(keep)] = cold_ids[keep]
            scores[k, :len(keep)] = cold_scores[keep]
        return ids, scores

    def take_update(self) -> EngineUpdate | None:
        """What the models learned of the events since the last call, for the item side of every
        worker (this one's included, through :meth:`apply_update`); ``None`` when nothing was."""
        queued, self._queued = self._queued, []
        ranker = self.ranker.take_updates()
        variants = {name: u for name, (_, r) in self.variant_rankers.items() if (u := r.take_updates()) is not None}
        if ranker is None:
            return None
        sources: dict[SourcePartition, int] = {}
        source = [-1 if part is None else sources.setdefault(part, len(sources)) for part, _ in queued]
        return EngineUpdate(sources=list(sources), source=source, offset=[offset for _, offset in queued],
                            ranker=ranker, variants=variants)

    def apply_update(self, update: EngineUpdate) -> int:
        """Fold a worker's :meth:`take_update` into the item side of every ranker; how many of its
        events were new to it.

        An event is applied when its offset is at or past ``model_offsets``
        of its source partition, which then moves past it: every worker
        applying the same updates in the same order makes the same choices
        (:mod:`models.engine_update`). Events from no partition are always applied.
        """
        marks, sources = self.model_offsets, [tuple(part) for part in update.sources]
        keep = []
        for src, offset in zip(update.source, update.offset):
            if src < 0:
                keep.append(True)
                continue
            part = sources[src]
            new = offset >= marks.get(part, 0)
            if new:
                marks[part] = offset + 1
            keep.append(new)
        n_new = sum(keep)
        if not n_new:
            return 0
        every = None if n_new == len(keep) else keep
        self.ranker.apply_updates(update.ranker, every)
        for name, (_, ranker) in self.variant_rankers.items():
            theirs = update.variants.get(name)
            if theirs is not None:
                ranker.apply_updates(theirs, every)
        counts, learned_items, items = self._item_counts, self._pop_pending, update.ranker.items
        for i, kept in zip(update.ranker.item, keep):
            if kept:
                item = items[i]
                counts[item] = counts.get(item, 0) + 1
                learned_items.append(item)
        return n_new

    def recommend(self, user_ids: Sequence[str], n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` (default ``top_n``) of each customer, with the engine's exclusion rule: ``(ids, scores)``
        (see :meth:`models.ranking.StreamingRecommender.recommend`)."""
        return self.ranker.recommend(list(user_ids), n=n or self.top_n, exclude=self.exclude)

    def forget_user(self, user_id: str) -> None:
        """Remove every per-customer trace from the models (the profile is the caller's)."""
        self.drop_users([user_id])
        self.forgotten += 1

    def drop_users(self, user_ids: Iterable[str]) -> None:
        """Let go of these customers' state in the models (their partition moved to another worker:
        their profiles carry it there); nothing changes for anyone else."""
        user_ids = frozenset(user_ids)
        for ranker in (self.ranker, *(r for _, r in self.variant_rankers.values())):
            ranker.drop_users(user_ids)
        shown, warm = self._shown, self._warm
        for user_id in user_ids:
            shown.pop(user_id, None)
            warm.pop(user_id, None)

    # ------------------------------------------------------------------
    def dumps(self) -> bytes:
        """Checkpoint of every model and the source offsets they reflect."""
        return pickle.dumps({
            "format": 1,
            "params": {k: getattr(self, k) for k in ("top_n", "exclude", "n_segments", "dedupe_window", "hit_k", "seed",
                                                     "ranker_overrides")},
            "ranker": self.ranker.dumps(),
            "segments": self.segments.dumps(),
            "shown": self._shown,
            "item_counts": self._item_counts,
            "model_offsets": self.model_offsets,
            "item_log_offset": self.item_log_offset,
            "variant_rankers": {name: (overrides, ranker.dumps())
                                for name, (overrides, ranker) in self.variant_rankers.items()},
        }, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def loads(cls, data: bytes) -> "PersonalisationEngine":
        """The engine of a checkpoint written by :meth:`dumps`, by this version or an earlier one.

        Checkpoints outlive upgrades: classes that moved are found at their new
        place (:class:`models.ranking.pickling.CheckpointUnpickler`), and
        ``model_offsets`` keyed by ``"topic:partition"`` strings get
        ``(topic, partition)`` keys.
        """
        state = pickling.load(data)  # our own checkpoint, from our own store
        if state.get("format") != 1:
            raise ValueError(f"unsupported engine checkpoint format {state.get('format')!r}")
        engine = cls(**state["params"])
        engine.ranker = _sharing(HybridRanker.loads(state["ranker"]))
        engine.segments = CustomerSegments.loads(state["segments"])
        engine._shown = state["shown"]
        engine._item_counts = state["item_counts"]
        engine.model_offsets = {_source_partition(k): v for k, v in state["model_offsets"].items()}
        engine.item_log_offset = state.get("item_log_offset", 0)
        # Checkpoints from before experiments carry no variant rankers; the caller sets the experiment.
        engine.variant_rankers = {name: (overrides, _sharing(HybridRanker.loads(raw)))
                                  for name, (overrides, raw) in state.get("variant_rankers", {}).items()}
        engine._init_caches()
        return engine

    # ------------------------------------------------------------------
    def _popular(self, k: int) -> list[str]:
        """The ``k`` most learned items, ties to the item learned first (``heapq.nlargest`` over
        ``_item_counts``), kept incrementally: counts only grow, so the new top list is among
        the previous one and the items learned since."""
        counts, seq = self._item_counts, self._item_seq
        pending = self._pop_pending
        if self._pop_top is None or len(seq) > len(counts):
            seq.clear()
            seq.update((item, i) for i, item in enumerate(counts))
            top = heapq.nlargest(k, counts, key=counts.__getitem__)
        else:
            for item in pending:
                if item not in seq:
                    seq[item] = len(seq)
            candidates = set(self._pop_top)
            candidates.update(pending)
            top = sorted(candidates, key=lambda item: (-counts[item], seq[item]))[:k]
        pending.clear()
        self._pop_top = top
        return top


def _sharing(ranker: HybridRanker) -> HybridRanker:
    """``ranker`` learning its item side from updates: a checkpoint written before the engine's
    rankers shared it holds one that learned it directly, which is the same state."""
    if not ranker.share_items:
        ranker.share_items, ranker._outbox = True, _Outbox()
    return ranker
