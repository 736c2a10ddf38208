"""A customer's own model state travels in their profile: a worker that takes their partition over
serves them from their history, not as a newcomer (``PersonalisationEngine`` and the ranker, no broker).

The worker side (revocation drops the state; the restored profile brings it back) is
``streams/loop.py`` and ``streams/pipeline.py::BatchProcessor.let_go``.
"""

from __future__ import annotations

import msgspec

from models.engine import PersonalisationEngine
from models.profile import decode_profile, encode_profile
from models.ranking.users import UserRecord
from tests.helpers import shop_events

PART = ("click", 0)
BATCH = 256  # the factors' block: every batch ends with no factor step queued


def _events(n: int, seed: int = 5) -> tuple[list, list]:
    return shop_events(n, n_users=50, n_items=200, seed=seed)


def _engine(catalogue) -> PersonalisationEngine:
    engine = PersonalisationEngine()
    for item in catalogue:
        engine.upsert_item(item["item_id"], item["category"], item["available"])
    return engine


def _run(engine, events, profiles: dict, start: int) -> dict:
    """Process ``events`` (at offsets ``start``..) in batches, as a worker; the lists served."""
    served = {}
    for lo in range(0, len(events), BATCH):
        chunk = events[lo:lo + BATCH]
        out = engine.process(chunk, profiles, positions=[(PART, start + lo + k) for k in range(len(chunk))])
        profiles.update(out.profiles)
        recs = out.recommendations
        served.update({u: recs.ids[i].tolist() for i, u in enumerate(recs.users)})
    return served


def _copy(profiles: dict) -> dict:
    """Another worker's copy of the stored profiles (the engine updates the profiles it is given)."""
    return {u: decode_profile(encode_profile(p)) for u, p in profiles.items()}


def _personal(profile) -> tuple:
    """The record's history and sets (factors depend on the item side, which differs between workers)."""
    r = msgspec.msgpack.decode(profile.model, type=UserRecord)
    return r.n, r.history_ids, r.weights, r.counts, r.times, r.interacted, r.purchased, r.engagement


def test_the_profile_carries_the_customers_own_state():
    events, catalogue = _events(600)
    profiles: dict = {}
    _run(_engine(catalogue), events, profiles, 0)
    for profile in profiles.values():
        n, history, *_ = _personal(profile)
        assert profile.model_version == n == sum(profile.counts.values())
        assert tuple(history) == profile.recent_items  # the same bounded history, most recent last


def test_a_worker_without_the_customers_state_serves_what_the_owner_would_have():
    events, catalogue = _events(1536)
    owner = _engine(catalogue)
    profiles: dict = {}
    _run(owner, events[:1024], profiles, 0)
    taker = PersonalisationEngine.loads(owner.dumps())  # the same item side ...
    taker.drop_users(list(profiles))  # ... and none of the customers' own state (their partition moved)
    assert taker.ranker.n_users == 0

    moved = _copy(profiles)
    expected = _run(owner, events[1024:], profiles, 1024)
    served = _run(taker, events[1024:], moved, 1024)

    assert served == expected
    assert {u: p.model for u, p in moved.items()} == {u: p.model for u, p in profiles.items()}


def test_the_state_in_the_profile_replaces_an_older_one_and_redeliveries_are_not_learned_twice():
    events, catalogue = _events(1536)
    owner = _engine(catalogue)
    profiles: dict = {}
    _run(owner, events[:512], profiles, 0)
    stale = owner.dumps()  # this worker's checkpoint; the customers then moved elsewhere and back
    _run(owner, events[512:1024], profiles, 512)
    back = PersonalisationEngine.loads(stale)

    # The first batch back holds events the profiles already have (a redelivery after the last
    # position record), which the old checkpoint's models have not learned: the item side learns
    # them, the customers' own state (taken from the profile, which holds them) does not again.
    moved = _copy(profiles)
    _run(owner, events[1024:], profiles, 1024)
    _run(back, events[768:], moved, 768)

    assert {u: _personal(p) for u, p in moved.items()} == {u: _personal(p) for u, p in profiles.items()}
    for user in {ev.user_id for ev in events[768:]}:  # the others are taken from their profile on first touch
        profile = moved[user]
        assert back.ranker.user_version(user) == profile.model_version == sum(profile.counts.values())


def test_a_customers_sets_are_bounded_and_their_record_with_them():
    from models.ranking.users import MAX_SET_ITEMS, _User, decode_user, encode_user

    user = _User(20)
    for row in range(MAX_SET_ITEMS + 10):
        user.push(row, 1.0, purchase=row % 2 == 0)
    assert len(user.interacted) == MAX_SET_ITEMS and next(iter(user.interacted)) == 10
    assert set(user.purchased) <= set(user.interacted) and min(user.purchased) == 10
    ids = [f"item-{row:0>120}" for row in range(MAX_SET_ITEMS + 10)]  # ids near the longest allowed
    record = encode_user(user, ids)
    assert len(record) < 0.6 * 2**20
    back, _ = decode_user(record, {item: row for row, item in enumerate(ids)}.__getitem__, 20)
    assert list(back.interacted) == list(user.interacted) and list(back.purchased) == list(user.purchased)


def test_a_record_with_queued_factor_steps_is_taken_by_a_worker_that_never_saw_those_items():
    from models.ranking.hybrid import HybridRanker

    events, catalogue = _events(500)
    owner, taker = HybridRanker(seed=1), HybridRanker(seed=1)
    for item in catalogue:
        owner.upsert_item(item["item_id"], item["category"], item["available"])
    for ev in events[:200]:
        owner.learn_one(ev.user_id, ev.item_id, ev.type, ev.ts)
    users = sorted({ev.user_id for ev in events})
    records = dict(zip(users, owner.export_users(users)))
    queued = [r for r in records.values() if r is not None and msgspec.msgpack.decode(r, type=UserRecord).steps]
    assert queued, "some customers have factor steps queued (200 events: less than one block)"
    for user, record in records.items():
        if record is not None:
            taker.import_user(user, record)
    for ev in events[200:]:  # the queued steps are applied at the next block (256 events)
        taker.learn_one(ev.user_id, ev.item_id, ev.type, ev.ts)
    ids, _ = taker.recommend(users, 10)
    assert (ids[:, 0] != None).all()  # noqa: E711 - an array comparison, element by element


def test_customers_beyond_the_warm_bound_are_held_in_their_profiles_and_served_the_same():
    events, catalogue = _events(3000)
    everyone, few = _engine(catalogue), _engine(catalogue)
    few.warm_customers = 8
    expected = _run(everyone, events, {}, 0)
    served = _run(few, events, {}, 0)
    assert served == expected
    assert everyone.ranker.n_users == 50
    assert few.ranker.n_users < everyone.ranker.n_users  # the last batch's customers and those with steps queued


def test_how_far_a_customer_engaged_with_each_recent_item_travels_with_their_record():
    import pickle

    from models.ranking.users import _pack_users, _unpack_users, _User, decode_user, encode_user

    user = _User(3)
    for row, level in ((4, 1), (7, 0), (4, 0), (9, 2), (7, 1)):  # a revisit keeps the highest
        user.push(row, 1.0, purchase=level == 2, engagement=level)
    assert (user.history, user.engagement) == ((4, 9, 7), (1, 2, 1))
    ids = [f"i{row}" for row in range(10)]
    back, _ = decode_user(encode_user(user, ids), {item: row for row, item in enumerate(ids)}.__getitem__, 3)
    assert back.engagement == pickle.loads(pickle.dumps(user)).engagement == user.engagement
    assert _unpack_users(_pack_users({"a": user}, 3))["a"].engagement == user.engagement
    # A record written before engagement was kept: bought items count as bought, the rest as viewed.
    old = msgspec.msgpack.decode(encode_user(user, ids), type=UserRecord)
    older = msgspec.msgpack.encode(msgspec.structs.replace(old, engagement=None))
    assert decode_user(older, {item: row for row, item in enumerate(ids)}.__getitem__, 3)[0].engagement == (0, 2, 0)


def test_a_record_with_engagement_is_read_by_a_worker_that_does_not_know_it():
    """In a rolling upgrade a customer can move back to a worker of the previous release: its
    record type ends before ``engagement`` and must read the rest of a newer record unchanged."""
    from models.ranking.users import _User, encode_user

    known = [f for f in msgspec.structs.fields(UserRecord) if f.name != "engagement"]
    Previous = msgspec.defstruct("Previous", [
        (f.name, f.type) if f.required else (f.name, f.type, f.default if f.default is not msgspec.NODEFAULT
                                              else msgspec.field(default_factory=f.default_factory))
        for f in known], array_like=True)
    user = _User(3)
    for row, level in ((1, 1), (2, 0)):
        user.push(row, 1.0, purchase=False, ts=float(row), engagement=level)
    new = msgspec.msgpack.decode(encode_user(user, ["a", "b", "c"]), type=UserRecord)
    old = msgspec.msgpack.decode(encode_user(user, ["a", "b", "c"]), type=Previous)
    assert [getattr(old, f.name) for f in known] == [getattr(new, f.name) for f in known]
