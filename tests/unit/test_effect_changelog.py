"""The experiment's counts through the batch processor and the changelog fold, without a broker.

A scripted shop (lists served, impressions, clicks with and without a rec_id, duplicates,
redeliveries, a purchase of an item shown twice) runs through a real engine and processor with
in-memory ports. Then a crash is staged after every prefix of the changelog records (any point:
mid-batch, between a batch's profile records and its counts record, ...): the fold of that prefix
gives exactly the counts its profile records' changes add up to, and a new owner that restores it
and processes the whole input again ends with exactly the counts of the run without a crash.
"""

from __future__ import annotations

import json
import time
from typing import Mapping, Sequence

from models.effect import EffectCounts, Experiment, Increment, decode_delta, make_rec_id
from models.engine import PersonalisationEngine, source_position
from streams.contract import decode_recommendation
from streams.metrics import Metrics
from streams.pipeline import BatchProcessor
from streams.ports import ViewGroup
from streams.settings import Settings
from streams.state.changelog import (
    COUNTS_KEY,
    EFFECT,
    Restore,
    counts_record,
    effect_header,
    gen_header,
    marker_record,
    position_record,
)
from streams.state.store import PartitionState, ProfileStore
from tests.unit.test_batch_processor import ITEMS, Message, RecordedOutput

EXPERIMENT = Experiment.from_mapping({
    "name": "unit-exp", "salt": "s1", "holdout": 0.2, "control": "pop",
    "variants": [{"name": "pop", "share": 0.4, "strategy": "popularity"},
                 {"name": "rank", "share": 0.4, "strategy": "ranker"}]})
T0 = (time.time() // 86400 - 1) * 86400 + 3600  # yesterday 01:00 UTC: every event of the script on one day


def user_in(arm: str, skip: int = 0) -> str:
    return [u for u in (f"c{k}" for k in range(1000)) if EXPERIMENT.assign(u) == arm][skip]


A, B, H = user_in("rank"), user_in("pop"), user_in("holdout")
PART = {A: 0, B: 1, H: 0}


class Views:
    restarted = False

    def __init__(self) -> None:
        self.effects: dict[int, bytes] = {}

    def write(self, parts: Sequence[ViewGroup], model: Mapping, effects: Mapping | None = None,
              on_durable=None) -> None:
        self.effects.update({p: raw for p, (_, raw) in (effects or {}).items()})
        if on_durable is not None:
            on_durable()

    def flush(self) -> None:
        pass

    def delete_user(self, user_id: str) -> None:
        pass


def settings() -> Settings:
    return Settings(app_id="unit", top_n=5, experiment=json.dumps(EXPERIMENT.to_mapping()))


def new_worker(gen: int, restored: Mapping[int, Restore] | None = None):
    s = settings()
    engine = PersonalisationEngine(top_n=s.top_n, seed=1)
    engine.set_experiment(s.experiment_config)
    for item, category in ITEMS:
        engine.upsert_item(item, category)
    store = ProfileStore()
    for p in (0, 1):
        r = (restored or {}).get(p) or Restore(experiment=EXPERIMENT.name)
        store.adopt(p, PartitionState(gen=gen, profiles=r.profiles, effect=r.effect))
    outputs, views = RecordedOutput(), Views()
    metrics = Metrics(process_metrics=False)
    metrics.set_experiment(EXPERIMENT)
    return BatchProcessor(s, engine, store, outputs, views, metrics), store, outputs, views, metrics


def msg(topic: str, offset: int, **doc) -> Message:
    doc = {"ts": int((T0 + doc.pop("at")) * 1000), **doc}
    return Message(topic, PART[doc["user_id"]], offset, doc["user_id"].encode(), json.dumps(doc).encode())


def rec_id(user: str, topic: str, offset: int) -> str:
    return make_rec_id(EXPERIMENT.name, user, source_position((topic, PART[user]), offset))


def script() -> list[list[Message]]:
    """Three batches; the lists of the first are what the impressions of the second name."""
    ra, rb = rec_id(A, "browse", 0), rec_id(B, "browse", 1)
    return [
        [msg("browse", 0, event_id="b1", user_id=A, item_id="i1", at=0),
         msg("browse", 1, event_id="b2", user_id=B, item_id="i6", at=0),
         msg("browse", 2, event_id="b3", user_id=H, item_id="i2", at=0)],
        [msg("impressions", 0, event_id="imp1", user_id=A, rec_id=ra, items=["i3", "i4"], at=10),
         msg("impressions", 1, event_id="imp2", user_id=B, rec_id=rb, items=["i7", "i8", "i9"], at=10),
         msg("impressions", 2, event_id="imp1", user_id=A, rec_id=ra, items=["i3", "i4"], at=11),  # duplicate
         msg("click", 0, event_id="c1", user_id=A, item_id="i3", rec_id=ra, at=20),  # explicit
         msg("click", 1, event_id="c2", user_id=B, item_id="i7", at=30),  # last touch
         msg("click", 2, event_id="c3", user_id=A, item_id="i1", at=40),  # shown nowhere
         msg("purchase", 0, event_id="p1", user_id=H, item_id="i2", price=4.0, at=50)],
        [msg("impressions", 3, event_id="imp3", user_id=A, rec_id=ra, items=["i4", "i5"], at=60),
         msg("click", 3, event_id="c4", user_id=B, item_id="i8", at=10 + 7200),  # outside the click window
         msg("purchase", 1, event_id="p2", user_id=A, item_id="i4", price=2.5, quantity=2, at=120),  # shown twice
         msg("click", 0, event_id="c1", user_id=A, item_id="i3", rec_id=ra, at=20),  # redelivered
         msg("purchase", 2, event_id="p3", user_id=B, item_id="i9", price=1.0, at=3600)],
    ]


def expected_totals() -> dict[str, dict[str, int]]:
    return {
        "rank": {"impressions": 2, "items_shown": 4, "customers": 1, "daily_customers": 1, "clicks": 1,
                 "clicked_impressions": 1,
                 "purchases": 1, "revenue_cents": 500, "converters": 1, "assigned_customers": 1, "buyers": 1,
                 "all_purchases": 1, "all_revenue_cents": 500},
        "pop": {"impressions": 1, "items_shown": 3, "customers": 1, "daily_customers": 1, "clicks": 1,
                "clicked_impressions": 1,
                "purchases": 1, "revenue_cents": 100, "converters": 1, "assigned_customers": 1, "buyers": 1,
                "all_purchases": 1, "all_revenue_cents": 100},
        "holdout": {"assigned_customers": 1, "buyers": 1, "all_purchases": 1, "all_revenue_cents": 400},
    }


def totals(counts: EffectCounts) -> dict[str, dict[str, int]]:
    return {arm: {k: v for k, v in counts.total(arm).as_dict().items() if v} for arm in counts.arms()
            if any(counts.total(arm).as_dict().values())}


def fold(records, experiment: str | None = EXPERIMENT.name) -> dict[int, Restore]:
    out: dict[int, Restore] = {}
    for r in records:
        out.setdefault(r.partition, Restore(experiment=experiment)).apply(r.key, r.value, r.headers)
    return out


def merged(restores: Mapping[int, Restore]) -> EffectCounts:
    total = EffectCounts()
    for r in restores.values():
        total = total.merge(r.effect)
    return total


def run(batches, gen: int, restored=None):
    worker = new_worker(gen, restored)
    for batch in batches:
        worker[0].process(batch)
    return worker


def test_the_scripted_shop_counts_exactly_and_lists_carry_their_rec_id_and_variant():
    processor, store, outputs, views, metrics = run(script(), gen=7)
    assert totals(store.effect_totals()) == expected_totals()
    recs = {}
    for r in outputs.on("recommendations"):
        rec = decode_recommendation(r.value)
        recs.setdefault(rec.user_id, rec)  # the first list of each customer, from the first batch
    assert (recs[A].variant, recs[B].variant, recs[H].variant) == ("rank", "pop", "holdout")
    assert (recs[A].rec_id, recs[B].rec_id) == (rec_id(A, "browse", 0), rec_id(B, "browse", 1))
    assert recs[H].items == [] and recs[A].items and recs[B].items
    # The changelog: every profile record's change, folded, is the partitions' totals; so is Redis.
    restores = fold(outputs.on(settings().changelog_topic))
    assert totals(merged(restores)) == expected_totals()
    for p, r in restores.items():
        assert r.effect == store.partitions[p].effect
        assert EffectCounts.from_bytes(views.effects[p]) == store.partitions[p].effect
    assert metrics.registry.get_sample_value("recostream_experiment_impressions", {"variant": "rank"}) == 2
    assert metrics.registry.get_sample_value("recostream_experiment_revenue", {"variant": "pop"}) == 1.0


def test_a_popularity_list_leaves_out_what_the_customer_bought():
    processor, store, outputs, *_ = run(script(), gen=7)
    last = {}
    for r in outputs.on("recommendations"):
        rec = decode_recommendation(r.value)
        last[rec.user_id] = rec
    assert last[B].variant == "pop" and "i9" not in {i.item_id for i in last[B].items}
    ids = [i.item_id for i in last[B].items]
    assert ids == sorted(ids, key=ids.index) and len(set(ids)) == len(ids)


def test_impressions_teach_no_model_and_are_deduplicated_like_events():
    processor, store, *_ = run(script()[:1], gen=7)
    version = processor.engine.model_version
    processor.process(script()[1][:3])  # three impressions, one a producer's duplicate
    assert processor.engine.model_version == version
    processor.process(script()[1][:3])  # all redelivered
    assert store.effect_totals().total("rank").impressions == 1
    assert store.effect_totals().total("pop").impressions == 1


def test_a_crash_after_any_prefix_of_the_changelog_loses_and_doubles_nothing():
    _, _, outputs, _, _ = run(script(), gen=7)
    log = [r for r in outputs.flushed + outputs.queued if r.topic == settings().changelog_topic]
    assert any(r.key == COUNTS_KEY for r in log) and any(h[0] == EFFECT for r in log for h in r.headers)
    assert len(log) > 10  # three batches: several profile records, then the counts records, in each
    for cut in range(len(log) + 1):
        prefix = log[:cut]
        restored = fold(prefix)
        # The fold is exactly the sum of the changes its profile records carry (the counts records only
        # restate it) ...
        only_changes = fold([r for r in prefix if r.key != COUNTS_KEY])
        assert merged(restored) == merged(only_changes), cut
        deltas = EffectCounts()
        for r in prefix:
            for name, raw in r.headers:
                if name == EFFECT:
                    deltas.apply(decode_delta(raw)[1])
        assert merged(restored) == deltas, cut
        # ... and a new owner that restores it and processes everything again ends exact.
        _, store, replay, _, _ = run(script(), gen=8, restored=restored)
        assert totals(store.effect_totals()) == expected_totals(), cut
        marker = [Marker(p) for p in (0, 1)]
        final = fold(prefix + marker + [r for r in replay.on(settings().changelog_topic)])
        assert totals(merged(final)) == expected_totals(), cut


class Marker:
    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.key, self.value, self.headers = marker_record(8, "new-owner")


def test_the_fold_of_counts_records_changes_stale_owners_other_experiments_and_old_records():
    one = (Increment("rank", 1, "impressions", 1),)
    two = EffectCounts()
    two.apply(one + one)
    r = Restore(experiment="unit-exp")
    r.apply(b'"u0"', b"legacy", None)  # before the protocol: no change
    r.apply(b"u1", b"p", [gen_header(3)])  # before experiments: no change
    r.apply(b"u1", b"p", [gen_header(3), effect_header("unit-exp", one)])
    r.apply(b"u2", b"p", [gen_header(3), effect_header("other-exp", one * 5)])  # another experiment
    r.apply(*counts_record(3, "other-exp", EffectCounts()))  # another experiment's total: ignored
    assert r.effect.total("rank").impressions == 1
    r.apply(*counts_record(3, "unit-exp", two))  # a total: replaces what came before
    r.apply(*position_record(3, {"click": 4}))
    r.apply(*marker_record(4, "b"))
    r.apply(b"u1", b"p", [gen_header(3), effect_header("unit-exp", one)])  # a stale owner
    r.apply(*counts_record(3, "unit-exp", EffectCounts()))  # a stale owner's total
    r.apply(b"u3", b"p", [gen_header(4), effect_header("unit-exp", one)])
    assert r.effect.total("rank").impressions == 3 and r.stale == 2
