"""RECOSTREAM_RANKER in real worker processes: the ranker they run, what their checkpoint keeps, and a
worker asked for other parameters than the app's checkpoint stopping at start."""

from __future__ import annotations

import json

import pytest
import redis

from streams.checkpointing.checkpointer import load_newest_peer
from streams.kafka.produce import make_producer, publish_events
from streams.sinks.redis import RedisKeys
from streams.tools.generator import ShopperSimulator
from tests.helpers import poll_until, wait_until

pytestmark = pytest.mark.integration

SLOW = {"popularity_half_life": 123_456, "covisit_half_life": None}


def test_a_worker_runs_the_configured_ranker_and_stops_on_other_parameters_than_its_checkpoint(settings,
                                                                                               start_worker):
    s = settings.replace(ranker=json.dumps(SLOW))
    events = list(ShopperSimulator(n_users=20, n_items=50, seed=3).events(300))
    assert publish_events(make_producer(s), s, events) == len(events)
    worker = start_worker(s)
    client = redis.Redis.from_url(s.redis_url)
    pattern = RedisKeys(s.redis_prefix).checkpoint(s.app_id, "*")
    users = {payload["user_id"] for _, payload in events}
    keys = RedisKeys(s.redis_prefix)
    wait_until(lambda: all(client.exists(keys.profile(u)) for u in users), 90, "every customer's profile written",
               worker=worker)
    assert worker.stop() == 0  # SIGTERM: the models are checkpointed on the way out
    engine = load_newest_peer(client, pattern)
    assert engine is not None and engine.ranker_overrides == SLOW
    assert engine.ranker.popularity_half_life == 123_456 and engine.ranker.covisit_half_life is None

    other = start_worker(s.replace(ranker=json.dumps({"popularity_half_life": 2_000})))
    assert poll_until(lambda: not other.alive(), 60), "a worker asked for other parameters must stop"
    assert other.proc.returncode == 2  # a setting to change, as the CLI's usage errors
    log = other.log()
    assert "RECOSTREAM_RANKER" in log and "RECOSTREAM_APP_ID" in log and "123456" in log
    assert "Traceback" not in log
    client.close()
