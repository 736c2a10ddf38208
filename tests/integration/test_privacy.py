"""Forgetting a customer, and pseudonymised ids, through the real broker and Redis."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from models.engine import PersonalisationEngine
from streams.cli import cli
from streams.kafka.produce import make_producer, publish_catalogue, publish_events
from streams.privacy import pseudonym
from streams.settings import settings_env
from streams.sinks.redis import RedisKeys
from streams.state.changelog import Restore
from streams.tools.generator import ShopperSimulator
from tests.helpers import read_topic, scrape_metric, wait_until

pytestmark = pytest.mark.integration


def latest_by_key(messages):
    latest = {}
    for m in messages:
        latest[m.key()] = m.value()
    return latest


def test_forget_erases_the_customer_everywhere(settings, start_worker, redis_client):
    s = settings.replace(worker_id="w-forget", checkpoint_interval_s=0.5)
    # Ten customers "cust-0".."cust-9": no id is a prefix of another, so a
    # byte search of the checkpoint for the forgotten id is meaningful.
    sim = ShopperSimulator(n_users=10, n_items=200, seed=31, user_prefix="cust-")
    events = list(sim.events(1500))
    producer = make_producer(s)
    publish_catalogue(producer, s, sim.catalogue())
    publish_events(producer, s, events)
    target = "cust-7"
    keys = RedisKeys(s.redis_prefix)
    worker = start_worker(s)
    wait_until(lambda: scrape_metric(s, "recostream_events_processed_total") >= len(events), 60,
               "all events processed", worker=worker)
    checkpoint_key = keys.checkpoint(s.app_id, s.worker_id)
    # Precondition: a checkpoint that knows the customer. Checkpoints land from a forked child
    # an interval after the batches they hold, so the one there may predate the customer's events.
    wait_until(lambda: redis_client.exists(keys.recs(target))
               and target.encode() in (redis_client.get(checkpoint_key) or b""), 30,
               "the customer's recommendations and a checkpoint that knows them", worker=worker)

    result = CliRunner().invoke(cli, ["forget", target, "--wait", "30"], env=settings_env(s), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["erased_from_redis"] is True

    # Redis: no key of the customer remains; the checkpoint no longer holds them.
    leftovers = [k for k in redis_client.scan_iter(match=f"{s.redis_prefix}:*") if target.encode() in k]
    assert leftovers == []
    wait_until(lambda: target.encode() not in redis_client.get(checkpoint_key), 30,
               "a checkpoint without the customer", worker=worker)
    engine = PersonalisationEngine.loads(redis_client.get(checkpoint_key))
    assert target not in engine.ranker.dumps().decode("latin-1")
    others = [u for u in sim.preferences if u != target]
    assert all(redis_client.exists(keys.recs(u)) for u in others), "only the forgotten customer is erased"

    # Changelog: its last word on the customer is a tombstone, so a new owner restores no profile.
    records = read_topic(s, s.changelog_topic)
    assert latest_by_key(records)[target.encode()] is None
    restored = Restore()
    for m in sorted(records, key=lambda m: (m.partition(), m.offset())):
        restored.apply(m.key(), m.value(), m.headers())
    assert target not in restored.profiles and len(restored.profiles) == len(others)
    # Downstream consumers of the recommendations topic get a tombstone too.
    assert latest_by_key(read_topic(s, s.topic_recommendations))[target.encode()] is None
    assert worker.alive()


def test_pseudonymised_ids_never_reach_redis(settings, start_worker, redis_client):
    s = settings.replace(pseudonymize_key="k3y-for-tests")
    sim = ShopperSimulator(n_users=15, n_items=100, seed=32, user_prefix="alice-")
    events = list(sim.events(400))
    producer = make_producer(s)
    publish_catalogue(producer, s, sim.catalogue())
    publish_events(producer, s, events)
    worker = start_worker(s)
    keys = RedisKeys(s.redis_prefix)
    users = sorted({p["user_id"] for _, p in events})
    wait_until(lambda: all(redis_client.exists(keys.recs(pseudonym(u, s.pseudonymize_key))) for u in users), 60,
               "recommendations under pseudonymous ids", worker=worker)
    for key in redis_client.scan_iter(match=f"{s.redis_prefix}:*"):
        assert b"alice-" not in key
        if not key.endswith(b":model") and b":checkpoint:" not in key:
            assert b"alice-" not in redis_client.get(key)
    for m in read_topic(s, s.topic_recommendations):
        assert b"alice-" not in m.key() and b"alice-" not in m.value()
