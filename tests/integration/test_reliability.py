"""Crashes, outages and rebalances against the real embedded broker and Redis.

Each test produces a continuous stream, breaks something in the middle, and
then checks counts: every produced valid event reflected exactly once in the
profiles, recommendations for every user with events.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from models.engine import PersonalisationEngine
from streams.contract import decode_recommendation
from streams.kafka.produce import make_producer, publish_catalogue, publish_events
from streams.kafka.topics import ensure_topics
from streams.sinks.redis import RedisKeys
from streams.tools.embedded import free_port, start_broker, start_redis
from streams.tools.generator import ShopperSimulator
from tests.helpers import StreamProducer, own_topics, profile_totals, scrape_metric, wait_until

pytestmark = pytest.mark.integration


def wait_exact_totals(redis_client, settings, stream: StreamProducer, worker, timeout=90.0):
    expected = stream.expected_totals()
    users = sorted(expected)
    last = {}

    def exact():
        last.update(profile_totals(redis_client, settings, users))
        return last == expected

    try:
        wait_until(exact, timeout, "profiles to reflect every produced event exactly once", worker=worker)
    except BaseException:
        diff = {u: (last.get(u), expected[u]) for u in users if last.get(u) != expected[u]}
        print(f"{len(diff)} users differ (got, expected): {dict(list(diff.items())[:10])}")
        raise
    return expected


def test_kill_minus_9_resumes_from_checkpoint_without_loss_or_double_count(settings, start_worker, redis_client):
    s = settings.replace(checkpoint_interval_s=1.0, worker_id="w-kill")
    sim = ShopperSimulator(n_users=80, n_items=300, seed=21)
    publish_catalogue(make_producer(s), s, sim.catalogue())
    keys = RedisKeys(s.redis_prefix)
    checkpoint_key = keys.checkpoint(s.app_id, s.worker_id)

    with StreamProducer(s, sim, rate=300) as stream:
        first = start_worker(s)
        wait_until(lambda: redis_client.exists(checkpoint_key) and scrape_metric(s, "recostream_events_processed_total") > 800,
                   60, "a checkpoint and some processing", worker=first)
        os.killpg(first.proc.pid, signal.SIGKILL)  # no shutdown hooks, no final checkpoint
        first.proc.wait(10)
        killed_at = time.time()
        second = start_worker(s)
        wait_until(lambda: scrape_metric(s, "recostream_events_processed_total") > 300, 60,
                   "the restarted worker to process events", worker=second)
    expected = wait_exact_totals(redis_client, s, stream, second)

    log = second.log()
    assert "restored models from" in log, "the restarted worker must resume from the checkpoint"
    restored = PersonalisationEngine.loads(redis_client.get(checkpoint_key))
    assert restored.model_offsets and all(o > 0 for o in restored.model_offsets.values())
    # Models learned every event exactly once across the crash: the restored
    # checkpoint plus catch-up equals the number of distinct events.
    assert restored.model_version <= sum(expected.values())
    fresh = [u for u in expected if decode_recommendation(redis_client.get(keys.recs(u))).generated_at > killed_at]
    assert fresh, "recommendations must resume after the restart"


def _committed_total(s) -> int:
    """Sum of the committed offsets (group ``app_id``) of every input partition: events committed."""
    c = Consumer({**s.kafka_client_config(), "group.id": s.app_id, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(topic, p) for topic in s.input_topics for p in range(s.partitions)]
        return sum(max(tp.offset, 0) for tp in c.committed(tps, timeout=10))
    finally:
        c.close()


def test_the_item_side_learns_from_the_updates_log_what_a_crash_left_after_its_checkpoint(
        settings, start_worker, redis_client):
    s = settings.replace(checkpoint_interval_s=0.0, worker_id="w-catch-up")  # checkpoints only at a clean stop
    sim = ShopperSimulator(n_users=60, n_items=200, seed=17)
    publish_catalogue(make_producer(s), s, sim.catalogue())
    events = list(sim.events(1400))
    first, second, third = events[:400], events[400:800], events[800:]
    checkpoint_key = RedisKeys(s.redis_prefix).checkpoint(s.app_id, s.worker_id)
    producer = make_producer(s)

    def publish_to(worker, batch) -> None:
        """Publish ``batch`` once ``worker`` is ready and wait until it processed all of it.

        Published during the worker's start-up, part of a batch would be
        dropped by Faust and recovered by the worker's guards instead (their
        own test: the burst test above); here the subject is the models."""
        wait_until(lambda: "worker ready" in worker.log(), 60, "the worker ready", worker=worker)
        publish_events(producer, s, batch, live_ts=True)
        wait_until(lambda: scrape_metric(s, "recostream_events_processed_total") >= len(batch), 60,
                   f"{len(batch)} events processed", worker=worker)

    w1 = start_worker(s)
    publish_to(w1, first)
    assert w1.stop() == 0  # a clean stop: checkpoint at the end of `first`
    assert PersonalisationEngine.loads(redis_client.get(checkpoint_key)).model_version == len(first)

    w2 = start_worker(s)
    publish_to(w2, second)
    wait_until(lambda: _committed_total(s) == len(first) + len(second), 30, "offsets of `second` committed", worker=w2)
    os.killpg(w2.proc.pid, signal.SIGKILL)  # its models' learning of `second` dies with it
    w2.proc.wait(10)

    w3 = start_worker(s)
    publish_to(w3, third)  # only `third` is delivered: `second` is committed
    applied = scrape_metric(s, "recostream_item_update_events_applied_total")
    skipped = scrape_metric(s, "recostream_item_update_events_skipped_total")
    assert w3.stop() == 0
    log = w3.log()
    assert "restored models from" in log and "item side caught up" in log

    # The item side learned every event exactly once, `second` included, which no
    # worker was delivered after the crash: w2's updates came back from the log.
    assert (applied, skipped) == (len(second) + len(third), 0)
    final = PersonalisationEngine.loads(redis_client.get(checkpoint_key))
    assert final.model_version == len(events)
    assert sum(final.model_offsets.values()) == len(events)


def test_a_burst_that_ends_while_the_worker_starts_is_processed_without_later_traffic(settings, start_worker):
    # Faust drops what it fetched while its flow is still suspended at start;
    # with no later message on a partition, only the worker's idle check
    # (BatchProcessor.process_dropped) finds such a range.
    sim = ShopperSimulator(n_users=60, n_items=200, seed=23)
    producer = make_producer(settings)
    publish_catalogue(producer, settings, sim.catalogue())
    events = list(sim.events(600))
    worker = start_worker(settings)
    publish_events(producer, settings, events, live_ts=True)
    wait_until(lambda: scrape_metric(settings, "recostream_events_processed_total") >= len(events), 60,
               "every event of the burst processed", worker=worker)
    assert scrape_metric(settings, "recostream_events_processed_total") == len(events)
    # Commits pass what the stream dropped and the worker read from the broker.
    wait_until(lambda: _committed_total(settings) == len(events), 30, "every offset committed", worker=worker)


def test_redis_outage_pauses_then_catches_up(settings, start_worker, redis_client, tmp_path):
    own = start_redis(tmp_path / "redis")  # this test stops its Redis; the others keep theirs
    s = settings.replace(redis_url=f"redis://127.0.0.1:{own.port}/0", checkpoint_interval_s=2.0)
    import redis as redis_lib

    client = redis_lib.Redis.from_url(s.redis_url)
    sim = ShopperSimulator(n_users=60, n_items=300, seed=22)
    publish_catalogue(make_producer(s), s, sim.catalogue())
    try:
        with StreamProducer(s, sim, rate=200) as stream:
            worker = start_worker(s)
            wait_until(lambda: scrape_metric(s, "recostream_recommendations_written_total") > 50, 60,
                       "recommendations before the outage", worker=worker)
            own.stop()  # SIGTERM: Redis writes its append-only file and exits
            time.sleep(30)
            assert worker.alive(), "the worker must survive a Redis outage"
            assert scrape_metric(s, "recostream_redis_up") == 0
            assert scrape_metric(s, "recostream_redis_errors_total") > 0
            own = start_redis(tmp_path / "redis", port=own.port)
            time.sleep(3)
        expected = wait_exact_totals(client, s, stream, worker, timeout=120)
        keys = RedisKeys(s.redis_prefix)
        missing = [u for u in expected if not client.exists(keys.recs(u))]
        assert not missing, f"users with events but no recommendations after the outage: {missing[:5]}"
        assert scrape_metric(s, "recostream_redis_up") == 1
        assert worker.log().count("Redis unreachable") == 1, "one error line per outage"
    finally:
        client.close()
        own.stop()


def test_rebalance_when_one_of_two_workers_stops(settings, start_worker, redis_client):
    """Two workers share a continuous stream over 4 partitions; one is stopped
    with SIGTERM mid-stream and the other takes over its partitions: every
    event counted exactly once. `make soak` repeats this test (it caught
    three different ways of losing an event, see docs/RELIABILITY.md)."""
    s = own_topics(settings, "rb")
    sim = ShopperSimulator(n_users=120, n_items=300, seed=23)
    publish_catalogue(make_producer(s), s, sim.catalogue())
    s_a = s.replace(worker_id="a", metrics_port=free_port())
    s_b = s.replace(worker_id="b", metrics_port=free_port())
    with StreamProducer(s, sim, rate=300) as stream:
        a = start_worker(s_a)
        b = start_worker(s_b)
        wait_until(lambda: scrape_metric(s_a, "recostream_events_processed_total") > 200
                   and scrape_metric(s_b, "recostream_events_processed_total") > 200,
                   60, "both workers processing", worker=b)
        assert a.stop() == 0, "SIGTERM must stop a worker cleanly"
        processed_b = scrape_metric(s_b, "recostream_events_processed_total")
        wait_until(lambda: scrape_metric(s_b, "recostream_events_processed_total") > processed_b + 600, 60,
                   "the remaining worker to take over", worker=b)
    expected = wait_exact_totals(redis_client, s, stream, b)
    assert sum(expected.values()) >= 1000  # both workers' 200+ events and the survivor's 600 more


def test_a_worker_whose_broker_is_gone_still_exits_after_sigterm(settings, start_worker, tmp_path):
    """Its outputs retry until the broker acknowledges them, so Faust's shutdown
    would wait forever; after shutdown_timeout_s it exits like a crash would."""
    broker = start_broker(tmp_path / "broker")  # this test stops its broker; the others keep theirs
    s = settings.replace(kafka_bootstrap_servers=f"127.0.0.1:{broker.port}", shutdown_timeout_s=3.0)
    try:
        ensure_topics(s)
        sim = ShopperSimulator(n_users=30, n_items=100, seed=5)
        publish_catalogue(make_producer(s), s, sim.catalogue())
        with StreamProducer(s, sim, rate=100):
            worker = start_worker(s)
            wait_until(lambda: scrape_metric(s, "recostream_recommendations_written_total") > 20, 60,
                       "recommendations before the broker goes", worker=worker)
        broker.stop()
        os.killpg(worker.proc.pid, signal.SIGTERM)
        code = worker.proc.wait(60)  # generous: the bound under test is 3 s
        assert code == 75, worker.log()[-3000:]
        assert "did not stop within 3 s of SIGTERM" in worker.log()
    finally:
        broker.stop()


def test_events_produced_in_transactions_are_each_counted_once_past_the_commit_markers(settings, start_worker,
                                                                                          redis_client):
    """A transaction's commit marker takes an offset that holds no event: the worker's next message comes
    past its position. It reads the partition again from the position, and once reading again shows the
    same gap, steps over it (streams/kafka/continuity.py): nothing waits forever, nothing is lost."""
    s = own_topics(settings, "txn")
    sim = ShopperSimulator(n_users=40, n_items=120, seed=5)
    publish_catalogue(make_producer(s), s, sim.catalogue())
    worker = start_worker(s.replace(metrics_port=free_port()))
    producer = make_producer(s, **{"transactional.id": f"{s.app_id}-shop"})
    producer.init_transactions(30)
    sent: list = []
    events = list(sim.events(600))
    for lo in range(0, len(events), 25):  # 24 transactions: a commit marker in every partition each touched
        producer.begin_transaction()
        publish_events(producer, s, events[lo:lo + 25], live_ts=True, on_delivered=sent.append)
        producer.commit_transaction(30)
    users = sorted({p["user_id"] for _, p in events})
    expected = {u: sum(p["user_id"] == u for _, p in sent) for u in users}
    wait_until(lambda: profile_totals(redis_client, s, users) == expected, 90, "every event counted once",
               worker=worker)
    assert len(sent) == len(events)
    stepped_over = scrape_metric(worker.settings, 'recostream_consumer_gaps_total{outcome="stepped_over"}')
    assert stepped_over >= 24  # (each transaction left a marker in at least one partition)
