"""The engine under an experiment: arms served, lists named, impressions counted and never learned,
per-customer counts changes, variant rankers, and the attribution state kept in the profile."""

from __future__ import annotations

from types import SimpleNamespace

from models.effect import HOLDOUT, Experiment, make_rec_id
from models.engine import PersonalisationEngine, source_position
from models.profile import decode_profile, encode_profile, new_profile

EXPERIMENT = Experiment.from_mapping({
    "name": "e1", "salt": "s", "holdout": 0.25,
    "variants": [{"name": "rank", "share": 0.25, "strategy": "ranker"},
                 {"name": "light", "share": 0.25, "strategy": "ranker", "overrides": {"w_popularity": 0.5}},
                 {"name": "pop", "share": 0.25, "strategy": "popularity"}]})
TS = 1.7e9


def user_in(arm: str) -> str:
    return next(u for u in (f"c{k}" for k in range(1000)) if EXPERIMENT.assign(u) == arm)


def event(user: str, item: str, etype: str = "click", event_id: str | None = None, **extra):
    return SimpleNamespace(event_id=event_id or f"{user}-{item}-{etype}", user_id=user, item_id=item, type=etype,
                           ts=TS, category=None, price=extra.get("price"), quantity=1, order_id=None,
                           rec_id=extra.get("rec_id"))


def impression(user: str, rec_id: str, items: tuple, event_id: str = "imp-1"):
    return SimpleNamespace(event_id=event_id, user_id=user, rec_id=rec_id, items=items, ts=TS + 1, type="impression")


def engine() -> PersonalisationEngine:
    e = PersonalisationEngine(top_n=4, seed=3)
    for k in range(8):
        e.upsert_item(f"i{k}", "books")
    e.set_experiment(EXPERIMENT)
    return e


def test_each_arm_gets_its_strategy_and_every_list_a_rec_id_from_its_event_position():
    e = engine()
    users = {arm: user_in(arm) for arm in ("rank", "light", "pop", HOLDOUT)}
    warm = [event(f"w{k}", f"i{k % 3}") for k in range(30)]  # popularity: i0, i1, i2
    e.process(warm, {})
    evs = [event(u, "i1", "purchase", price=2.0) for u in users.values()]
    part = ("purchase", 0)
    out = e.process(evs, {}, positions=[(part, k) for k in range(len(evs))])
    recs = out.recommendations
    for k, (arm, user) in enumerate(users.items()):
        row = recs.users.index(user)
        assert recs.served[user] == (make_rec_id("e1", user, source_position(part, k)), arm)
        items = [i for i in recs.ids[row].tolist() if i is not None]
        if arm == HOLDOUT:
            assert items == []
        else:
            assert items and "i1" not in items  # bought: excluded in every arm
            issued = out.profiles[user].effect.issued
            assert [(r.rec_id, r.variant) for r in issued] == [recs.served[user]]
        assert out.effect[user]  # assigned, a buyer
    assert set([i for i in recs.ids[recs.users.index(users["pop"])].tolist() if i][:2]) == {"i0", "i2"}  # trending
    # The override variant's ranker learned every event the product's ranker learned.
    assert e.variant_rankers["light"][1].model_version == e.model_version == len(warm) + len(evs)


def test_a_redelivered_event_names_its_list_as_before():
    e = engine()
    user = user_in("rank")
    ev = event(user, "i2")
    first = e.process([ev], {}, positions=[(("click", 0), 5)])
    again = e.process([ev], first.profiles, positions=[(("click", 0), 5)])
    assert again.recommendations.served[user] == first.recommendations.served[user]
    assert again.duplicates == 1 and again.effect == {}
    assert len(again.profiles[user].effect.issued) == 1


def test_impressions_are_counted_once_learned_never_and_need_no_new_list():
    e = engine()
    user = user_in("rank")
    out = e.process([event(user, "i2")], {}, positions=[(("click", 0), 0)])
    rec_id = out.recommendations.served[user][0]
    version = e.model_version
    imp = impression(user, rec_id, ("i3", "i4"))
    out = e.process([imp], out.profiles, positions=[(("impressions", 0), 0)])
    assert e.model_version == version and len(out.recommendations) == 0
    assert {(i.arm, i.counter): i.amount for i in out.effect[user]}[("rank", "impressions")] == 1
    profiles = out.profiles
    dup = e.process([imp], profiles, positions=[(("impressions", 0), 1)])  # a producer's duplicate
    redelivered = e.process([imp], profiles, positions=[(("impressions", 0), 0)])
    assert dup.effect == redelivered.effect == {} and dup.duplicates == redelivered.duplicates == 1
    # An impression's id is its own: an event with the same id is not its duplicate.
    click = e.process([event(user, "i3", event_id="imp-1", rec_id=rec_id)], profiles,
                      positions=[(("click", 0), 1)])
    assert {(i.arm, i.counter) for i in click.effect[user]} >= {("rank", "clicks")}


def test_the_attribution_state_travels_in_the_profile_and_older_profiles_have_none():
    e = engine()
    user = user_in("pop")
    out = e.process([event(user, "i2")], {}, positions=[(("click", 0), 0)])
    profile = out.profiles[user]
    assert profile.effect is not None and decode_profile(encode_profile(profile)) == profile
    assert b"effect" not in encode_profile(new_profile("u9"))
    assert decode_profile(b'{"user_id": "u9", "orders": 1}').effect is None


def test_variant_rankers_survive_a_checkpoint_and_a_changed_variant_starts_afresh():
    e = engine()
    e.process([event(f"w{k}", f"i{k % 3}") for k in range(10)], {})
    restored = PersonalisationEngine.loads(e.dumps())
    restored.set_experiment(EXPERIMENT)
    assert restored.variant_rankers["light"][1].model_version == 10
    changed = Experiment.from_mapping({**EXPERIMENT.to_mapping(), "variants": [
        {"name": "rank", "share": 0.25, "strategy": "ranker"},
        {"name": "light", "share": 0.25, "strategy": "ranker", "overrides": {"w_popularity": 0.3}},
        {"name": "pop", "share": 0.25, "strategy": "popularity"}]})
    restored.set_experiment(changed)
    fresh = restored.variant_rankers["light"][1]
    assert fresh.model_version == 0 and fresh.n_items == 8 and fresh.w_popularity == 0.3
