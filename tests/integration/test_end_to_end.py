"""The whole pipeline through the real embedded broker and Redis.

Events are produced to Kafka, a real `recostream worker` process consumes
them, and the test reads what a shop would read: Redis keys and the
`recommendations` topic.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import msgspec
import pytest

from streams.contract import decode_recommendation
from streams.kafka.produce import make_producer, publish_catalogue, publish_events
from streams.sinks.redis import RedisKeys
from streams.tools.generator import ShopperSimulator
from tests.helpers import read_topic, wait_until

pytestmark = pytest.mark.integration


def produced_counts(events):
    counts: dict[str, Counter] = defaultdict(Counter)
    for etype, payload in events:
        counts[payload["user_id"]][etype] += 1
    return counts


def redis_profile_counts(redis_client, keys: RedisKeys, users):
    out = {}
    for user in users:
        raw = redis_client.get(keys.profile(user))
        out[user] = msgspec.json.decode(raw)["counts"] if raw else None
    return out


def test_generated_events_become_recommendations(settings, start_worker, redis_client):
    sim = ShopperSimulator(n_users=60, n_items=400, n_categories=8, seed=11)
    events = list(sim.events(4000))
    producer = make_producer(settings)
    publish_catalogue(producer, settings, sim.catalogue())
    assert publish_events(producer, settings, events) == len(events)
    expected = produced_counts(events)
    keys = RedisKeys(settings.redis_prefix)

    worker = start_worker(settings)

    def all_counted():
        got = redis_profile_counts(redis_client, keys, expected)
        return all(got[u] is not None and all(got[u].get(t, 0) == n for t, n in c.items())
                   and sum(got[u].values()) == sum(c.values()) for u, c in expected.items())

    wait_until(all_counted, 90, "every produced event counted exactly once in the profiles", worker=worker)

    # Every user with events has recommendations in Redis ...
    category = {it["item_id"]: it["category"] for it in sim.items}
    unavailable = {it["item_id"] for it in sim.items if not it["available"]}
    assert unavailable, "the simulated catalogue should contain unavailable items"
    preferred_share = []
    for user in expected:
        raw = redis_client.get(keys.recs(user))
        assert raw is not None, f"no recommendations in Redis for {user}"
        rec = decode_recommendation(raw)
        assert len(rec.items) == settings.top_n
        assert rec.model_version > 0
        items = [i.item_id for i in rec.items]
        assert not set(items) & unavailable, "unavailable items must never be recommended"
        top10 = items[:10]
        preferred_share.append(sum(category[i] in sim.preferences[user] for i in top10) / len(top10))
    # ... that favour the hidden preferences far above chance (2 of 8 categories = 0.25).
    mean_share = sum(preferred_share) / len(preferred_share)
    assert mean_share > 0.5, f"recommendations match hidden tastes only {mean_share:.2f} of the time"

    # ... and on the recommendations topic, keyed by user.
    topic_users = set()
    for msg in read_topic(settings, settings.topic_recommendations):
        rec = decode_recommendation(msg.value())
        assert msg.key().decode() == rec.user_id
        topic_users.add(rec.user_id)
    assert topic_users == set(expected)
    assert worker.alive()
