"""The replay command and the Faust agents run the same models with the same configuration.

The same event sequence goes once through Kafka and a real worker, and once
through `recostream replay`'s code path; the worker's model (read from its
checkpoint) and the replay's model must give identical top-N lists.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.engine import PersonalisationEngine
from streams.kafka.produce import make_producer, publish_events
from streams.kafka.topics import ensure_topics
from streams.sinks.redis import RedisKeys
from streams.tools.generator import ShopperSimulator
from streams.tools.replay import MODEL_NAME, build_models, run_replay
from tests.helpers import scrape_metric, wait_until

pytestmark = pytest.mark.integration


def test_agents_and_replay_give_the_same_recommendations(settings, start_worker, redis_client):
    # One mixed topic with one partition: the worker consumes in exactly the
    # order the events were produced, which is the order replay reads them.
    mixed = f"{settings.redis_prefix}.events"
    s = settings.replace(topic_browse=mixed, topic_click=mixed, topic_purchase=mixed, partitions=1,
                         topic_items=mixed + ".items", topic_control=mixed + ".control",
                         app_id=settings.app_id + "-eq", worker_id="w-eq", checkpoint_interval_s=0.5)
    ensure_topics(s)
    sim = ShopperSimulator(n_users=50, n_items=300, seed=41)
    events = list(sim.events(3000))
    publish_events(make_producer(s), s, events)

    worker = start_worker(s)
    key = RedisKeys(s.redis_prefix).checkpoint(s.app_id, s.worker_id)
    wait_until(lambda: scrape_metric(s, "recostream_events_processed_total") >= len(events), 90,
               "every event processed", worker=worker)
    wait_until(lambda: redis_client.exists(key)
               and PersonalisationEngine.loads(redis_client.get(key)).model_version == len(events), 30,
               "a checkpoint of the final model", worker=worker)
    live = PersonalisationEngine.loads(redis_client.get(key)).ranker

    offline = build_models(seed=s.seed)[MODEL_NAME]
    stream = [(p["ts"] / 1000, p["user_id"], p["item_id"], etype) for etype, p in events]
    run_replay(stream, k=10, exclude="purchased", models={MODEL_NAME: offline})

    users = sorted({p["user_id"] for _, p in events})
    assert live.model_version == offline.model_version == len(events)
    live_ids, live_scores = live.recommend(users, n=s.top_n, exclude=s.exclude)
    ids, scores = offline.recommend(users, n=s.top_n, exclude=s.exclude)
    assert np.array_equal(live_ids, ids) and np.array_equal(live_scores, scores)
