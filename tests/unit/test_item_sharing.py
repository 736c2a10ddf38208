"""Shared item-side learning: learners that apply the same updates in the same order agree.

``HybridRanker(share_items=True)`` queues each event's item-side part
(:mod:`models.ranking.item_updates`) and learns it when an update is applied;
:class:`models.sharded.ShardedRecommender` with ``sharing`` is N such workers
exchanging updates after every micro-batch.
"""

from __future__ import annotations

import pickle

import msgspec
import numpy as np
import pytest

from models.engine_update import decode_engine_update, encode_engine_update
from models.evaluation import served_lists
from models.ranking import HybridRanker
from models.ranking.item_updates import ItemUpdate, decode_update, encode_update
from models.sharded import ShardedRecommender, shard_of
from tests.helpers import item_side, shop_events


def _stream(events):
    return [(ev.ts, ev.user_id, ev.item_id, ev.type) for ev in events]


def test_one_learner_applying_each_event_right_away_is_the_unshared_ranker():
    # Without factors: shared, they are applied per update (here per event) from the users' factors as
    # the update carries them, unshared in blocks of 256 events; everything else is the same arithmetic.
    events, _ = shop_events(1500, n_users=50, n_items=200, seed=21)
    stream = _stream(events)
    shared, plain = HybridRanker(seed=3, share_items=True, w_mf=0), HybridRanker(seed=3, w_mf=0)
    for (_, _, _, a, sa), (_, _, _, b, sb) in zip(served_lists(stream, shared, 1, k=10),
                                                  served_lists(stream, plain, 1, k=10)):
        assert (a == b).all() and np.array_equal(sa, sb)
    assert item_side(shared, shared.catalog.ids) == item_side(plain, plain.catalog.ids)


def test_nothing_is_learned_item_side_before_an_update_is_applied():
    r = HybridRanker(share_items=True, popularity_half_life=None)
    r.learn_one("ann", "boots")
    r.learn_one("ann", "socks")
    assert r.model_version == 0 and r.items.popularity.scores(2).tolist() == [0.0, 0.0]
    assert r.recommend(["ann"], 2, exclude="none")[0].tolist() == [["socks", "boots"]]  # her own history
    update = r.take_updates()
    assert r.take_updates() is None  # handed out once
    assert update.items == ["boots", "socks"] and update.item == [0, 1] and update.history == [[], [0]]
    r.apply_updates(update)
    assert r.model_version == 2 and r.items.popularity.scores(2).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_applying_every_update_in_one_order_hold_the_same_item_side(workers):
    events, catalogue = shop_events(3000, n_users=90, n_items=250, seed=22)
    stream = _stream(events)
    many = ShardedRecommender(lambda: HybridRanker(seed=4, share_items=True), workers, sharing=True)
    # Catalogue rows differ between workers: each met its own customers' items first.
    for _ in served_lists(stream, many, 500, k=10):
        sides = [item_side(shard, sorted(catalogue_ids(many))) for shard in many.shards]
        assert all(side == sides[0] for side in sides[1:])
    assert many.model_version == len(stream) and all(s.model_version == len(stream) for s in many.shards)
    assert any(s.catalog.ids != many.shards[0].catalog.ids for s in many.shards[1:])
    # Each worker's customers' own state, factors included, is its own.
    for k, shard in enumerate(many.shards):
        own = {u for _, u, _, _ in stream if shard_of(u, workers) == k}
        assert set(shard.warm_users()) == own
        assert {u for u in own if shard.mf.user_vector(u) is not None} == own
        assert not any(shard.mf.user_vector(u) is not None for _, u, _, _ in stream if u not in own)
        assert not shard._mf_pending


def catalogue_ids(many: ShardedRecommender) -> set[str]:
    ids = set(many.shards[0].catalog.ids)
    assert all(set(s.catalog.ids) == ids for s in many.shards)  # every item reached every worker
    return ids


def test_sharing_workers_learn_from_every_customer_and_unshared_from_their_own():
    events, _ = shop_events(2000, n_users=80, n_items=200, seed=23)
    stream = _stream(events)
    shared = ShardedRecommender(lambda: HybridRanker(seed=5, share_items=True), 2, sharing=True)
    alone = ShardedRecommender(lambda: HybridRanker(seed=5), 2)
    for model in (shared, alone):
        for _ in served_lists(stream, model, 250, k=10):
            pass
    assert [s.model_version for s in shared.shards] == [len(stream)] * 2
    own = [sum(shard_of(u, 2) == k for _, u, _, _ in stream) for k in range(2)]
    assert [s.model_version for s in alone.shards] == own and alone.model_version == len(stream)


def test_an_update_survives_its_wire_form_and_names_items_by_id():
    r = HybridRanker(share_items=True, train_every=1)
    for item in ("a", "b", "c", "b"):
        r.learn_one("ann", item, "click", ts=1.0)
    update = r.take_updates()
    assert decode_update(encode_update(update)) == update
    assert [update.items[i] for i in update.item] == ["a", "b", "c", "b"]
    assert [[update.items[i] for i in h] for h in update.history] == [[], ["a"], ["b", "a"], ["c", "b", "a"]]
    assert update.choice_at and len(update.choice) == len(update.choice_at)
    other = HybridRanker(train_every=1)
    other.upsert_item("z")  # another catalogue: the update's items get rows of its own
    other.apply_updates(decode_update(encode_update(update)))
    assert other.catalog.ids == ["z", "a", "b", "c"] and other.model_version == 4
    assert other.choice.n_updates == len(update.choice)


def test_a_malformed_update_is_refused_with_a_clear_error():
    import msgspec

    with pytest.raises(msgspec.ValidationError):
        decode_update(msgspec.msgpack.encode([["a"], ["not an index"], [1.0], [None], [[]]]))
    assert isinstance(decode_update(encode_update(ItemUpdate([], [], [], [], []))), ItemUpdate)


def test_a_customers_factors_move_by_the_update_the_way_every_learner_moves_the_items():
    # The owner's factors after an update are the ones every learner computed while moving the item
    # factors: a second learner that meets the customer later (their partition moved) and takes their
    # factors continues exactly where the first stopped.
    events, _ = shop_events(1200, n_users=30, n_items=120, seed=24)
    stream = _stream(events)
    a, b = HybridRanker(seed=6, share_items=True), HybridRanker(seed=6, share_items=True)
    for k in range(0, len(stream), 100):
        for ts, user, item, etype in stream[k:k + 100]:
            a.learn_one(user, item, etype, ts)
        data = encode_update(a.take_updates())
        a.apply_updates(decode_update(data))
        b.apply_updates(decode_update(data))
    assert item_side(a, a.catalog.ids) == item_side(b, a.catalog.ids)
    assert not b.warm_users() and a.mf.item_factors.shape == b.mf.item_factors.shape


def test_a_batchs_second_stage_steps_computed_together_equal_those_computed_one_by_one():
    # Sharing, the steps of a micro-batch are computed when it is taken, in one batched ranking of the
    # choosing customers as they were at their events; the one-customer path at that same moment must
    # give the same steps, float for float (batches large enough for the many-customer context).
    events, _ = shop_events(6000, n_users=400, n_items=600, seed=5)
    r = HybridRanker(seed=3, share_items=True, train_every=8)
    batched, checked = r._choice_gradients, []

    def both(user_ids, users, rows):
        steps = batched(user_ids, users, rows)
        checked.append((len(users), steps, [r._choice_gradient(u, s, row) for u, s, row in zip(user_ids, users, rows)]))
        return steps

    r._choice_gradients = both
    for lo in range(0, len(events), 1000):
        for ev in events[lo:lo + 1000]:
            r.learn_one(ev.user_id, ev.item_id, event_type=ev.type, ts=ev.ts)
        r.end_batch()
    assert max(n for n, _, _ in checked) >= 32
    steps = [(a, b) for _, batch, one in checked for a, b in zip(batch, one)]
    assert sum(a is not None for a, _ in steps) >= 400
    for a, b in steps:
        assert (a is None) == (b is None) and (a is None or np.array_equal(a, b))


def test_an_events_category_reaches_every_learner_after_the_events_unless_the_catalogue_has_one():
    a, b = HybridRanker(share_items=True), HybridRanker(share_items=True)
    for r in (a, b):
        r.upsert_item("socks", category="hosiery")  # the catalogue topic's
    a.learn_one("ann", "boots", category="shoes")
    a.learn_one("ann", "socks", category="shoes")   # the catalogue's own wins
    a.learn_one("bob", "boots", category="footwear")  # the first naming counts
    assert a.item_category("boots") is None  # not before the update is applied
    update = a.take_updates()
    assert list(zip([update.items[i] for i in update.category_item], update.category)) == [("boots", "shoes")]
    for r in (a, b):
        r.apply_updates(decode_update(encode_update(update)))
        assert (r.item_category("boots"), r.item_category("socks")) == ("shoes", "hosiery")
    # Parts of an update carry its categories in the part that ends it, so applying them is applying it.
    first, last = update.part(0, 2), update.part(2, 3)
    assert not first.category and [last.items[i] for i in last.category_item] == ["boots"]
    # An update written before events named categories (its array ends at `mf_at`) decodes with none.
    fields = ItemUpdate.__struct_fields__
    older = msgspec.defstruct("Older", [(f, object) for f in fields[:fields.index("category_item")]], array_like=True)
    record = older(["x"], [0], [1.0], [None], [[]], [], [], [], b"", [], [], [], [])
    assert decode_update(msgspec.msgpack.encode(record)).category == []
    unshared = HybridRanker()
    unshared.learn_one("cy", "hat", category="headwear")  # learned at once, so named at once
    assert unshared.item_category("hat") == "headwear"


@pytest.mark.parametrize("clock", ["events", "time"])
def test_an_update_applied_whole_in_parts_or_event_by_event_leaves_the_same_checkpoint(clock):
    # The item side learns the events between two refreshes of the candidate pools in one call per
    # structure. Whole, in parts of any size or one event at a time, the state must be the same to
    # the last bit, through rescales of every decay clock (half-lives of a few events) and co-visit
    # rows pruned again and again (few neighbours kept). (Without factors: a part starts its users'
    # factors where the whole update started them.)
    events, _ = shop_events(3000, n_users=60, n_items=300, seed=31)
    span = events[-1].ts - events[0].ts
    unit = 1.0 if clock == "events" else span / len(events)
    params = dict(seed=2, share_items=True, w_mf=0, max_neighbors=12, decay_clock=clock, covisit_half_life=3 * unit,
                  popularity_half_life=(5 * unit, 40 * unit, None))
    learner = HybridRanker(**params)
    for ev in events:
        learner.learn_one(ev.user_id, ev.item_id, ev.type, ev.ts)
    update = decode_update(encode_update(learner.take_updates()))
    rng = np.random.default_rng(7)
    cuts = np.unique(np.concatenate(([0, update.n_events], rng.integers(1, update.n_events, 25))))
    whole, parts, single = HybridRanker(**params), HybridRanker(**params), HybridRanker(**params)
    for r in (whole, parts, single):  # the same rows for the same items: parts name them in other orders
        for item in update.items:
            r.upsert_item(item)
    whole.apply_updates(update)
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        parts.apply_updates(update.part(int(lo), int(hi)))
    for k in range(update.n_events):
        single.apply_updates(update.part(k, k + 1))
    t0 = 0.0 if clock == "events" else events[0].ts
    clocks = [whole.items.covisit.clock, whole.items.successors.clock, whole.items.popularity.counters[0].clock]
    assert all(c.t_ref > t0 for c in clocks)  # every clock rescaled
    met: dict[int, set[int]] = {}
    for i, history in zip(update.item, update.history):
        for h in history:
            met.setdefault(h, set()).add(i)
            met.setdefault(i, set()).add(h)
    assert max(map(len, met.values())) > 2 * 12 >= max(map(len, whole.items.covisit.rows._slots))  # pruned
    assert pickle.dumps(whole) == pickle.dumps(parts) == pickle.dumps(single)
    assert item_side(whole, whole.catalog.ids) == item_side(single, single.catalog.ids)


def test_a_customers_factor_steps_go_on_across_the_parts_of_an_update():
    # An update too large for one record travels as parts (the item log halves it until it fits).
    # One customer's steps are taken in order whole or in parts, so the parts, and parts of parts,
    # must leave their factors and the items' as the whole update does, bit for bit; the customer's
    # own learner takes their factors from the last part.
    events, _ = shop_events(3000, n_users=20, n_items=200, seed=32)
    busiest = max({ev.user_id for ev in events}, key=lambda u: sum(ev.user_id == u for ev in events))
    one = [ev for ev in events if ev.user_id == busiest]
    n = len(one)
    assert n >= 100
    whole, parts = HybridRanker(seed=8, share_items=True), HybridRanker(seed=8, share_items=True)
    for r in (whole, parts):
        for ev in one:
            r.learn_one(ev.user_id, ev.item_id, ev.type, ev.ts)
    update, same = whole.take_updates(), parts.take_updates()
    assert encode_update(update) == encode_update(same) and len(update.mf_at) >= n and len(update.mf_users) == 1
    whole.apply_updates(update)
    first, rest = update.part(0, n // 4), update.part(n // 4, n)
    m = rest.n_events
    records = [first, rest.part(0, m // 2), rest.part(m // 2, m)]
    assert records[0].mf_more == [0] and records[1].mf_resume == records[1].mf_more == [0]
    assert records[2].mf_resume == [0] and records[2].mf_more == []
    for record in records:
        parts.apply_updates(decode_update(encode_update(record)))
    user = one[0].user_id
    assert np.array_equal(whole.mf.user_vector(user), parts.mf.user_vector(user))
    n_items = len(whole.catalog)
    assert np.array_equal(whole.mf.item_factors[:n_items], parts.mf.item_factors[:n_items])
    assert not parts._mf_carry  # (taken by the part that resumed)
    assert item_side(whole, whole.catalog.ids) == item_side(parts, parts.catalog.ids)


def test_an_update_too_large_for_a_record_travels_in_parts_that_teach_what_it_does():
    # The item log halves a batch's update until each record fits; workers apply the records in order.
    from models.engine import PersonalisationEngine
    from streams.sharing.item_log import encode_in_records

    events, _ = shop_events(1200, n_users=40, n_items=300, seed=33)
    positions = [(("click", 0), k) for k in range(len(events))]
    owner, whole, parts = (PersonalisationEngine(top_n=10, seed=1) for _ in range(3))
    taken = []
    owner.process(events, {}, positions=positions, share=taken.append)
    (update,) = taken
    records = encode_in_records(update, 16_384)
    assert len(records) >= 4 and max(map(len, records)) <= 16_384
    assert encode_in_records(update, 1 << 30) == [encode_engine_update(update)]
    whole.apply_update(update)
    for record in records:
        parts.apply_update(decode_engine_update(record))
    assert parts.model_offsets == whole.model_offsets == {("click", 0): len(events)}
    ids = whole.ranker.catalog.ids
    counts = {k: v for k, v in item_side(whole.ranker, ids).items() if k != "factors"}
    assert counts == {k: v for k, v in item_side(parts.ranker, ids).items() if k != "factors"}
    assert not parts.ranker._mf_carry  # every customer's steps were taken up by the part after
    named = [i for i in ids if whole.ranker.item_category(i) is not None]
    assert named and all(parts.ranker.item_category(i) == whole.ranker.item_category(i) for i in ids)
    # Applied twice (a batch processed again), the parts teach nothing more.
    assert sum(parts.apply_update(decode_engine_update(record)) for record in records) == 0
