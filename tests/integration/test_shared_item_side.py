"""Two workers learn one item side through the item-updates topic (real broker, real Redis).

Two workers share a stream; one stops mid-stream (its partitions move to the other) and starts again
(they move back). At the end, each worker's item side, caught up to the same position of the
item-updates log, is the same: co-visitation neighbours, popularity, successors, the second stage and
the item factors, item by item; every event was learned once; every customer, moved or not, gets the
same list from either worker given their profile's state; no customer id is in the log. Records are
small, so each batch's update travels in several.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from models.engine import PersonalisationEngine
from models.engine_update import decode_engine_update
from models.profile import decode_profile
from streams.kafka.produce import make_producer, publish_catalogue, publish_events
from streams.metrics import Metrics
from streams.ports import PortFailed
from streams.sharing.item_log import ItemLog
from streams.sinks.redis import RedisKeys
from streams.tools.embedded import free_port
from streams.tools.generator import ShopperSimulator
from tests.helpers import item_side, own_topics, profile_totals, read_topic, scrape_metric, wait_until

pytestmark = pytest.mark.integration


def _caught_up(engine: PersonalisationEngine, log: list) -> PersonalisationEngine:
    """``engine`` with every record of the item-updates ``log`` it has not applied yet applied."""
    for msg in log:
        if msg.offset() >= engine.item_log_offset:
            if msg.value():
                engine.apply_update(decode_engine_update(msg.value()))
            engine.item_log_offset = msg.offset() + 1
    return engine


def _neighbours(engine: PersonalisationEngine, item: str, k: int = 10) -> list[str]:
    """``item``'s ``k`` strongest co-visited items, ties by id."""
    ranker = engine.ranker
    cols, vals = ranker.items.covisit.rows.row(ranker.catalog.row(item))
    pairs = sorted(zip((-vals).tolist(), [ranker.catalog.item_id(int(c)) for c in cols]))
    return [item_id for _, item_id in pairs[:k]]


def test_two_workers_hold_one_item_side_whoever_owned_which_partition(settings, start_worker, redis_client):
    # Checkpoints at each clean stop; records of at most 8 KiB, so a batch's update travels in parts.
    s = own_topics(settings, "share", checkpoint_interval_s=0.0, item_update_max_bytes=8192)
    sim = ShopperSimulator(n_users=120, n_items=250, seed=31)
    publish_catalogue(make_producer(s), s, sim.catalogue())
    events = list(sim.events(3600))
    phases = [events[:1600], events[1600:2600], events[2600:]]
    s_a = s.replace(worker_id="a", metrics_port=free_port())
    s_b = s.replace(worker_id="b", metrics_port=free_port())
    producer = make_producer(s)
    sent: list = []
    users = sorted({p["user_id"] for _, p in events})

    def publish(phase, worker) -> None:
        publish_events(producer, s, phase, live_ts=True, on_delivered=sent.append)
        expected = collections.Counter(p["user_id"] for _, p in sent)
        wait_until(lambda: profile_totals(redis_client, s, users) == {u: expected.get(u, 0) for u in users}, 120,
                   f"{len(sent)} events processed", worker=worker)

    a, b = start_worker(s_a), start_worker(s_b)
    publish(phases[0], b)
    # Each took the whole catalogue before its first event (tests/integration/test_catalogue_first.py).
    assert all(f"catalogue taken: {len(sim.catalogue())} records" in w.log() for w in (a, b))
    assert scrape_metric(s_a, "recostream_events_processed_total") > 0  # both served customers
    assert a.stop() == 0  # b takes every partition
    publish(phases[1], b)
    a = start_worker(s_a)  # partitions move back
    wait_until(lambda: "worker ready" in a.log(), 60, "a ready again", worker=a)
    publish(phases[2], a)
    assert a.stop() == 0 and b.stop() == 0

    keys = RedisKeys(s.redis_prefix)
    log = sorted(read_topic(s, s.item_updates_topic, timeout=30), key=lambda m: m.offset())
    workers = {name: _caught_up(PersonalisationEngine.loads(redis_client.get(keys.checkpoint(s.app_id, name))), log)
               for name in ("a", "b")}
    ea, eb = workers["a"], workers["b"]
    assert ea.item_log_offset == eb.item_log_offset == log[-1].offset() + 1

    # Every event learned once by the item side, in both.
    assert ea.model_version == eb.model_version == len(events)
    assert sum(ea.model_offsets.values()) == sum(eb.model_offsets.values()) == len(events)
    # The same item side, item by item, and so the same neighbours.
    items = sorted(set(ea.ranker.catalog.ids) | set(eb.ranker.catalog.ids))
    assert set(ea.ranker.catalog.ids) == set(eb.ranker.catalog.ids)
    assert item_side(ea.ranker, items) == item_side(eb.ranker, items)
    sampled = items[::10]
    assert [_neighbours(ea, i) for i in sampled] == [_neighbours(eb, i) for i in sampled]
    assert sum(map(len, (_neighbours(ea, i) for i in sampled))) > 5 * len(sampled)
    # Every customer, moved or not, gets the same list from either worker: lists depend on the item
    # side and the customer's own state (from their last profile record) only. (Both catalogues gave
    # items the same rows: each took the catalogue, published before the stream, before its first event.)
    assert ea.ranker.catalog.ids == eb.ranker.catalog.ids
    last = {}
    for m in sorted(read_topic(s, s.changelog_topic), key=lambda m: (m.partition(), m.offset())):
        if m.value() and m.key().decode() in set(users):
            last[m.key().decode()] = decode_profile(m.value())
    assert sorted(last) == users
    for engine in (ea, eb):
        for user, profile in last.items():
            engine.ranker.import_user(user, profile.model)
    (ids_a, scores_a), (ids_b, scores_b) = ea.recommend(users), eb.recommend(users)
    assert (ids_a == ids_b).all() and np.array_equal(scores_a, scores_b)
    # Both workers published; no customer id travels in the log.
    assert {m.key() for m in log if m.value()} == {b"a", b"b"}
    names, went_on = set(), 0
    for m in log:
        if m.value():
            update = decode_engine_update(m.value())
            names.update(update.ranker.items, (topic for topic, _ in update.sources))
            went_on += bool(update.ranker.mf_more)
            assert len(m.value()) <= 8192 or update.n_events == 1
    assert names and not names & set(users)
    assert went_on  # (updates were split, customers' factor steps going on from part to part)


def test_a_log_record_that_fails_to_apply_stops_the_exchange_not_the_batch(settings):
    """Applying the log is not the batch's doing: an update that fails to apply (a bug in applying it)
    raises PortFailed out of the exchange, which the batch processor lets through (the worker stops
    without writing positions) instead of retrying the batch event by event and dead-lettering it."""
    s = own_topics(settings, "applyfail")
    engines = {name: PersonalisationEngine(top_n=3, seed=1) for name in ("a", "b")}
    logs = {name: ItemLog(s, engine, Metrics(process_metrics=False), name) for name, engine in engines.items()}
    try:
        for name, engine in engines.items():
            for k in range(3):
                engine.upsert_item(f"i{k}", "books")
            logs[name].catch_up(timeout_s=30)
        batch = [SimpleNamespace(event_id=f"e{k}", user_id="u1", item_id=f"i{k % 3}", type="click", ts=1.7e9 + k,
                                 category="books", price=None, quantity=None, order_id=None) for k in range(4)]
        engines["a"].process(batch, {}, positions=[(("click", 0), k) for k in range(4)], share=logs["a"].exchange)
        assert engines["a"].model_version == 4

        def broken(update):
            raise IndexError("a bug in applying an update")

        engines["b"].apply_update = broken  # a's record comes first in b's exchange
        with pytest.raises(PortFailed, match="applying the log through offset .*IndexError"):
            engines["b"].process(batch[:1], {}, positions=[(("click", 1), 0)], share=logs["b"].exchange)
    finally:
        for item_log in logs.values():
            item_log.close()


def test_catching_up_while_peers_publish_reads_to_the_end_without_starting_over(settings, caplog):
    """A worker catching up on the log while its peers keep publishing: a read can return the end
    the broker reported for an earlier fetch followed by newer records. That end is not the log's end;
    taken for it, it lies below what was just applied, which reads as a topic created again (the
    worker then applied the whole log again, over and over under a steady stream)."""
    s = own_topics(settings, "catchup")
    busy = ItemLog(s, PersonalisationEngine(), Metrics(process_metrics=False), "busy")
    late = ItemLog(s, PersonalisationEngine(), Metrics(process_metrics=False), "late")
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            busy._publish([None] * 3)  # what the log looks like beside busy peers: records every few ms

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        with caplog.at_level(logging.WARNING, logger="streams.sharing.item_log"):
            deadline = time.monotonic() + 8
            rounds = 0
            while time.monotonic() < deadline:
                late.catch_up(timeout_s=30)
                rounds += 1
        stop.set()
        publisher.join()
        end = busy._publish([None])
        late.catch_up(timeout_s=30)
    finally:
        stop.set()
        busy.close(goodbye=False)
        late.close(goodbye=False)
    assert rounds > 10  # (each round reads to the end the broker reported when it began)
    assert [r.getMessage() for r in caplog.records if "created again" in r.getMessage()] == []
    assert late.engine.item_log_offset == end + 1
