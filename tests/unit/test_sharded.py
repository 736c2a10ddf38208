"""``ShardedRecommender``: N workers' rankers in one process, as ``recostream replay --workers N`` runs them."""

from __future__ import annotations

import numpy as np

from models.ranking import HybridRanker
from models.sharded import ShardedRecommender, shard_of
from tests.helpers import shop_events


def _train(model, events):
    for ev in events:
        model.learn_one(ev.user_id, ev.item_id, ev.type, ev.ts)
    return model


def test_one_worker_is_the_ranker_itself():
    events, _ = shop_events(800, n_users=40, n_items=150, seed=11)
    users = sorted({ev.user_id for ev in events})
    one = _train(ShardedRecommender(lambda: HybridRanker(seed=2), workers=1), events)
    plain = _train(HybridRanker(seed=2), events)
    for exclude in ("purchased", "interacted"):
        (a, sa), (b, sb) = one.recommend(users, 10, exclude), plain.recommend(users, 10, exclude)
        assert (a == b).all() and np.array_equal(sa, sb)


def test_each_worker_learns_its_own_customers_and_serves_them():
    events, catalogue = shop_events(1200, n_users=60, n_items=150, seed=12)
    users = sorted({ev.user_id for ev in events})
    three = ShardedRecommender(lambda: HybridRanker(seed=2), workers=3)
    for item in catalogue:
        three.upsert_item(item["item_id"], item["category"], item["available"])
    _train(three, events)
    for k, shard in enumerate(three.shards):
        mine = [ev for ev in events if shard_of(ev.user_id, 3) == k]
        assert shard.model_version == len(mine) and shard.n_users == len({ev.user_id for ev in mine})
        assert shard.n_items == len(catalogue)  # every worker follows the whole catalogue
        alone = _train(HybridRanker(seed=2), [])
        for item in catalogue:
            alone.upsert_item(item["item_id"], item["category"], item["available"])
        _train(alone, mine)
        own = [u for u in users if shard_of(u, 3) == k]
        assert (three.recommend(own, 10)[0] == alone.recommend(own, 10)[0]).all()
    assert three.model_version == len(events) and three.n_users == len(users)
