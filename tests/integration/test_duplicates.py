"""At-least-once producers resend events: the same event_id must count once."""

from __future__ import annotations

import msgspec
import pytest

from streams.kafka.produce import make_producer, publish_catalogue, publish_events
from streams.sinks.redis import RedisKeys
from streams.tools.generator import ShopperSimulator
from tests.helpers import scrape_metric, wait_until

pytestmark = pytest.mark.integration


def test_duplicate_event_ids_count_once(settings, start_worker, redis_client):
    sim = ShopperSimulator(n_users=20, n_items=100, seed=5)
    events = list(sim.events(600))
    producer = make_producer(settings)
    publish_catalogue(producer, settings, sim.catalogue())
    # Every event twice, the second copy much later in the stream (a producer
    # retry after a timeout), then a burst of 50 more repeats.
    publish_events(producer, settings, events + events + events[:50])
    n_duplicates = len(events) + 50
    expected: dict[str, int] = {}
    for _, payload in events:
        expected[payload["user_id"]] = expected.get(payload["user_id"], 0) + 1
    keys = RedisKeys(settings.redis_prefix)
    worker = start_worker(settings)

    def profile_totals():
        out = {}
        for user in expected:
            raw = redis_client.get(keys.profile(user))
            out[user] = sum(msgspec.json.decode(raw)["counts"].values()) if raw else 0
        return out

    # Once the worker has consumed every message, the totals must equal the
    # number of distinct events and every copy must be counted as a duplicate.
    wait_until(lambda: scrape_metric(settings, "recostream_events_consumed_total") >= len(events) + n_duplicates,
               90, "every message consumed", worker=worker)
    wait_until(lambda: scrape_metric(settings, "recostream_events_duplicate_total") >= n_duplicates,
               30, "duplicates counted", worker=worker)
    assert profile_totals() == expected
    assert scrape_metric(settings, "recostream_events_duplicate_total") == n_duplicates
    assert scrape_metric(settings, "recostream_events_processed_total") == len(events)
