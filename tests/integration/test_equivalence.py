"""The replay command and the Faust agents run the same models with the same configuration.

The same event sequence goes once through Kafka and a real worker, and once
through `recostream replay`'s code path; the worker's model (read from its
checkpoint) and the replay's model must give identical top-N lists, and the
batched replay must serve, batch by batch, the lists the worker served.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from models.engine import PersonalisationEngine
from models.evaluation import served_lists
from models.ranking import valid_part
from streams.contract import decode_recommendation
from streams.kafka.produce import make_producer, publish_events
from streams.kafka.topics import ensure_topics
from streams.sinks.redis import RedisKeys
from streams.tools.generator import ShopperSimulator
from streams.tools.replay import MODEL_NAME, build_models, run_replay
from tests.helpers import read_topic, scrape_metric, wait_until

pytestmark = pytest.mark.integration


def test_agents_and_replay_give_the_same_recommendations(settings, start_worker, redis_client):
    # One mixed topic with one partition: the worker consumes in exactly the
    # order the events were produced, which is the order replay reads them.
    mixed = f"{settings.redis_prefix}.events"
    s = settings.replace(topic_browse=mixed, topic_click=mixed, topic_purchase=mixed, partitions=1,
                         topic_items=mixed + ".items", topic_control=mixed + ".control",
                         topic_impressions=mixed + ".impressions",
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

    # The item side learns a batch once it is over: the replay cuts the stream where the worker did.
    sizes = batch_sizes(served_by_version(s), len(events))
    offline = build_models(seed=s.seed, exclude=s.exclude)[MODEL_NAME]
    stream = [(p["ts"] / 1000, p["user_id"], p["item_id"], etype) for etype, p in events]
    # The events name their items' categories, which the worker's ranker takes: so does the replay.
    categories = {p["item_id"]: p["category"] for _, p in events if p.get("category")}
    assert categories
    run_replay(stream, k=10, exclude="purchased", models={MODEL_NAME: offline}, batch=sizes, categories=categories)

    users = sorted({p["user_id"] for _, p in events})
    assert live.model_version == offline.model_version == len(events)
    live_ids, live_scores = live.recommend(users, n=s.top_n, exclude=s.exclude)
    ids, scores = offline.recommend(users, n=s.top_n, exclude=s.exclude)
    assert np.array_equal(live_ids, ids) and np.array_equal(live_scores, scores)


def test_batched_replay_serves_the_lists_a_worker_served(settings, start_worker):
    # The worker's micro-batches are whatever its consumer returned; each batch's
    # recommendations carry the model version after it, so the boundaries can be
    # read back and given to the replay, which must then serve the same lists.
    mixed = f"{settings.redis_prefix}.events"
    s = settings.replace(topic_browse=mixed, topic_click=mixed, topic_purchase=mixed, partitions=1,
                         topic_items=mixed + ".items", topic_control=mixed + ".control",
                         topic_impressions=mixed + ".impressions",
                         app_id=settings.app_id + "-batch", worker_id="w-batch", batch_max_events=150)
    ensure_topics(s)
    events = list(ShopperSimulator(n_users=80, n_items=300, seed=43).events(2500))
    publish_events(make_producer(s), s, events)
    worker = start_worker(s)
    wait_until(lambda: scrape_metric(s, "recostream_events_processed_total") >= len(events), 90,
               "every event processed", worker=worker)

    served = wait_until(lambda: (r := served_by_version(s)) and max(r) == len(events) and r,
                        30, "the last batch's recommendations on the topic", worker=worker)
    versions = sorted(served)
    sizes = batch_sizes(served, len(events))
    assert len(versions) > 1, versions[:5]

    offline = build_models(seed=s.seed, exclude=s.exclude)[MODEL_NAME]
    stream = [(p["ts"] / 1000, p["user_id"], p["item_id"], etype) for etype, p in events]
    categories = {p["item_id"]: p["category"] for _, p in events if p.get("category")}
    batches = list(served_lists(stream, offline, sizes, k=s.top_n, exclude=s.exclude, categories=categories))
    assert len(batches) == len(versions)
    for version, (_, _, users, ids, scores) in zip(versions, batches):
        live = served[version]
        assert sorted(users) == sorted(live), version
        for r, user in enumerate(users):
            shown, shown_scores = valid_part(ids, scores, r)
            assert list(zip(shown.tolist(), np.round(shown_scores, 6).tolist())) == live[user], (version, user)


def served_by_version(s) -> dict[int, dict[str, list]]:
    """The lists on the recommendations topic by the model version they were served at (the number of
    events learned when their batch was over) and customer: ``(item, score)`` pairs."""
    served: dict[int, dict[str, list]] = defaultdict(dict)
    for m in read_topic(s, s.topic_recommendations):
        rec = decode_recommendation(m.value())
        served[rec.model_version][rec.user_id] = [(i.item_id, i.score) for i in rec.items]
    return served


def batch_sizes(served: dict[int, dict], n_events: int) -> list[int]:
    """The sizes of the worker's micro-batches, read from the versions its lists were served at."""
    versions = sorted(served)
    assert versions and versions[-1] == n_events, versions[-5:]
    return np.diff([0, *versions]).tolist()
