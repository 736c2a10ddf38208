"""The experiment end to end, against the real broker and Redis, through real worker processes.

First a scripted shop, one record at a time (so that the order the worker sees is the script's):
lists served (their rec_id read from Redis), impressions, clicks with and without a rec_id, a click
on an item shown nowhere, a click outside the window, duplicates, a purchase of an item shown twice;
`recostream experiment report --json` must give exactly the counts the rules give. Then a stream of
impressions, clicks and purchases (with duplicates) while the worker is killed with SIGKILL and
restarted: the report, the changelog's fold and Redis must all hold exactly the counts of every
record once, whatever the point of the crash.

The stream's records are built so that their counts do not depend on how the worker interleaves
the topics (each click and purchase names its impression's rec_id, a customer's impressions show
disjoint items, every record of a customer within a few seconds): the expected counts are then
the attribution's over each customer's records in any order.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time

import pytest
from click.testing import CliRunner

from models.effect import Attribution, EffectCounts, Experiment, Impression, Interaction, day_of, experiment_report
from models.effect.counts import Counts
from models.profile import decode_profile
from streams.cli import cli
from streams.contract import decode_recommendation
from streams.kafka.produce import make_producer, publish_catalogue
from streams.settings import Settings, settings_env
from streams.sinks.redis import RedisKeys
from streams.state.changelog import Restore
from streams.tools.experiment import read_counts
from tests.helpers import read_topic, scrape_metric, wait_until

pytestmark = pytest.mark.integration

EXPERIMENT = Experiment.from_mapping({
    "name": "it-exp", "salt": "it-salt", "holdout": 0.2, "control": "pop",
    "variants": [{"name": "pop", "share": 0.4, "strategy": "popularity"},
                 {"name": "rank", "share": 0.4, "strategy": "ranker"}]})
T = (time.time() // 86400) * 86400 + 2 * 3600  # 02:00 UTC today: every record of the test on one day
DAY = day_of(T)


def user_in(arm: str, skip: int = 0) -> str:
    return [u for u in (f"s{k}" for k in range(1000)) if EXPERIMENT.assign(u) == arm][skip]


A, B, H = user_in("rank"), user_in("pop"), user_in("holdout")


class Shop:
    """Sends records keyed by user_id, and waits until the worker consumed each of them."""

    def __init__(self, settings: Settings, worker) -> None:
        self.s, self.worker = settings, worker
        self.producer = make_producer(settings)
        self.sent = 0

    def send(self, topic: str, **doc) -> None:
        doc["ts"] = int((T + doc.pop("at")) * 1000)
        self.producer.produce(topic, key=doc["user_id"].encode(), value=json.dumps(doc).encode())
        self.sent += 1

    def settle(self) -> None:
        assert self.producer.flush(30) == 0
        wait_until(lambda: scrape_metric(self.s, "recostream_events_consumed_total") >= self.sent, 60,
                   f"the worker consuming {self.sent} records", worker=self.worker)
        time.sleep(0.3)  # the batch's Redis write follows its consumption

    def rec(self, redis_client, user: str):
        raw = wait_until(lambda: redis_client.get(RedisKeys(self.s.redis_prefix).recs(user)), 60,
                         f"a list for {user}", worker=self.worker)
        return decode_recommendation(raw)


def report(settings: Settings) -> dict:
    result = CliRunner().invoke(cli, ["experiment", "report", "--json"], env=settings_env(settings))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def counts_of(cells: dict[str, dict[str, int]]) -> EffectCounts:
    return EffectCounts({(arm, DAY): Counts(**fields) for arm, fields in cells.items()})


def scripted_expectation() -> EffectCounts:
    return counts_of({
        # imp1 [i10 i11 i12] and imp2 [i11 i13]; clicks i10 (rec_id) and i11 (last touch) on imp1;
        # the purchase of i11 (2 x 5.00) goes to the latest impression showing it, once.
        "rank": {"impressions": 2, "items_shown": 5, "customers": 1, "daily_customers": 1, "clicks": 2,
                 "clicked_impressions": 1, "purchases": 1, "revenue_cents": 1000, "converters": 1,
                 "assigned_customers": 1, "buyers": 1, "all_purchases": 1, "all_revenue_cents": 1000},
        "pop": {"impressions": 1, "items_shown": 2, "customers": 1, "daily_customers": 1, "clicks": 1,
                "clicked_impressions": 1, "assigned_customers": 1},
        "holdout": {"assigned_customers": 1, "buyers": 1, "all_purchases": 1, "all_revenue_cents": 300},
        # the holdout gets an empty list, recorded nowhere: an impression naming it is unknown
        "unknown": {"impressions": 1, "items_shown": 1, "customers": 1, "daily_customers": 1},
    })


def play_script(shop: Shop, redis_client) -> None:
    for user, item in ((A, "i1"), (B, "i2"), (H, "i3")):
        shop.send(shop.s.topic_browse, event_id=f"b-{user}", user_id=user, item_id=item, at=0)
    shop.settle()
    first = {user: shop.rec(redis_client, user) for user in (A, B, H)}
    assert [first[u].variant for u in (A, B, H)] == ["rank", "pop", "holdout"]
    assert first[H].items == [] and first[A].items and first[B].items and len(first[A].rec_id) == 24
    imp = shop.s.topic_impressions
    shop.send(imp, event_id="imp1", user_id=A, rec_id=first[A].rec_id, items=["i10", "i11", "i12"], at=10)
    shop.send(imp, event_id="impB", user_id=B, rec_id=first[B].rec_id, items=["i20", "i21"], at=10)
    shop.send(imp, event_id="impH", user_id=H, rec_id=first[H].rec_id, items=["i30"], at=10)
    shop.settle()
    click = shop.s.topic_click
    shop.send(click, event_id="c1", user_id=A, item_id="i10", rec_id=first[A].rec_id, at=20)  # explicit
    shop.send(click, event_id="c2", user_id=A, item_id="i11", at=30)  # last touch
    shop.send(click, event_id="c3", user_id=A, item_id="i99", at=40)  # shown nowhere
    shop.send(click, event_id="c4", user_id=B, item_id="i20", rec_id=first[B].rec_id, at=20)
    shop.settle()
    shop.send(click, event_id="c5", user_id=A, item_id="i12", at=3600)  # an hour later: outside the window
    shop.send(imp, event_id="imp1", user_id=A, rec_id=first[A].rec_id, items=["i10", "i11", "i12"], at=10)  # again
    shop.send(click, event_id="c1", user_id=A, item_id="i10", rec_id=first[A].rec_id, at=20)  # again
    shop.settle()
    latest = shop.rec(redis_client, A)
    assert latest.rec_id != first[A].rec_id and latest.variant == "rank"  # each event's list has a name of its own
    shop.send(imp, event_id="imp2", user_id=A, rec_id=latest.rec_id, items=["i11", "i13"], at=3700)
    shop.settle()
    shop.send(shop.s.topic_purchase, event_id="p1", user_id=A, item_id="i11", price=5.0, quantity=2, at=3800)
    shop.send(shop.s.topic_purchase, event_id="p2", user_id=H, item_id="i3", price=3.0, at=3800)
    shop.settle()


def stream_records(users: list[str], seed: int) -> tuple[list[tuple[str, dict]], EffectCounts]:
    """Records of the second part, in the order they are sent, and their counts by the attribution's rules."""
    rng = random.Random(seed)
    per_user: dict[str, list[tuple[str, dict]]] = {}
    for n, user in enumerate(users):
        at = 7200 + rng.uniform(0, 60)
        recs = [("browse", {"event_id": f"{user}-b", "user_id": user, "item_id": f"i{n % 50}", "at": at})]
        for k in range(rng.randint(1, 3)):
            items = [f"{user}-{k}-{j}" for j in range(3)]  # a customer's impressions show disjoint items
            rec_id = f"r-{user}-{k}"
            recs.append(("impressions", {"event_id": f"{user}-i{k}", "user_id": user, "rec_id": rec_id,
                                         "items": items, "at": at + k}))
            if rng.random() < 0.7:
                recs.append(("click", {"event_id": f"{user}-c{k}", "user_id": user, "item_id": items[0],
                                       "rec_id": rec_id, "at": at + k + 1}))
            if rng.random() < 0.4:
                recs.append(("purchase", {"event_id": f"{user}-p{k}", "user_id": user, "item_id": items[1],
                                          "rec_id": rec_id, "price": 2.5, "quantity": 2, "at": at + k + 2}))
        per_user[user] = recs
    expected = EffectCounts()
    attribution = Attribution(EXPERIMENT)
    for user, recs in per_user.items():  # impressions first: the counts do not depend on the order
        state = attribution.new_state()
        for topic, doc in sorted(recs, key=lambda r: r[0] != "impressions"):
            ts = T + doc["at"]
            if topic == "impressions":
                expected.apply(attribution.impression(state, Impression(
                    doc["event_id"], user, doc["rec_id"], tuple(doc["items"]), ts)))
            else:
                expected.apply(attribution.interaction(state, Interaction(
                    doc["event_id"], user, doc["item_id"], topic, ts, rec_id=doc.get("rec_id"),
                    price=doc.get("price"), quantity=doc.get("quantity", 1))))
    queues = {user: list(recs) for user, recs in per_user.items()}
    order: list[tuple[str, dict]] = []
    while queues:  # customers interleaved, each customer's records in order, some sent twice
        user = rng.choice(sorted(queues))
        order.append(queues[user].pop(0))
        if rng.random() < 0.1:
            order.append(order[-1])
        if not queues[user]:
            del queues[user]
    return order, expected


def changelog_counts(settings: Settings) -> EffectCounts:
    restores: dict[int, Restore] = {}
    for msg in sorted(read_topic(settings, settings.changelog_topic, timeout=30.0),
                      key=lambda m: (m.partition(), m.offset())):
        restores.setdefault(msg.partition(), Restore(experiment=EXPERIMENT.name)).apply(
            msg.key(), msg.value(), msg.headers())
    total = EffectCounts()
    for r in restores.values():
        total = total.merge(r.effect)
    return total


def test_scripted_shop_then_a_kill_minus_9_mid_stream_counts_exactly(settings, start_worker, redis_client):
    s = settings.replace(experiment=json.dumps(EXPERIMENT.to_mapping()), worker_id="w-exp",
                         checkpoint_interval_s=2.0)
    publish_catalogue(make_producer(s), s, [{"item_id": f"i{k}", "category": f"c{k % 4}", "price": 1.0 + k}
                                            for k in range(60)])
    worker = start_worker(s)
    shop = Shop(s, worker)
    play_script(shop, redis_client)
    scripted = scripted_expectation()
    got = report(s)
    assert got["experiment"] == "it-exp" and got["control"] == "pop" and got["partitions"] == [0, 1]
    assert got["variants"] == experiment_report(EXPERIMENT, scripted)["variants"]
    assert {"comparisons", "srm_p_value", "vs_holdout"} <= set(got)
    assert scrape_metric(s, "recostream_experiment_impressions") == 4
    assert read_counts(s, redis_client)[0] == scripted

    # The stream, and a SIGKILL in the middle of it.
    users = [f"x{k}" for k in range(150)]
    order, streamed = stream_records(users, seed=int(os.environ.get("RECOSTREAM_FAULT_SEED", "3")))
    producer = make_producer(s)
    failures: list[str] = []

    def produce() -> None:
        for i, (topic, doc) in enumerate(order):
            doc = dict(doc)
            doc["ts"] = int((T + doc.pop("at")) * 1000)
            name = s.topic_impressions if topic == "impressions" else s.topic_for(topic)
            producer.produce(name, key=doc["user_id"].encode(), value=json.dumps(doc).encode(),
                             on_delivery=lambda err, msg: err and failures.append(str(err)))
            producer.poll(0)
            time.sleep(0.01 if i % 3 else 0.0)
        producer.flush(30)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    before = scrape_metric(s, "recostream_events_consumed_total")
    wait_until(lambda: scrape_metric(s, "recostream_events_consumed_total") > before + len(order) // 3, 60,
               "the worker consuming the stream", worker=worker)
    killed_after = scrape_metric(s, "recostream_events_consumed_total") - before
    os.killpg(worker.proc.pid, signal.SIGKILL)  # mid-batch, outputs in flight, no positions written
    worker.proc.wait(10)
    time.sleep(random.Random(1).uniform(0.5, 3.0))
    worker = start_worker(s)
    thread.join(120)
    assert not thread.is_alive() and not failures, failures

    expected = scripted.merge(streamed)
    state: dict = {}

    def exact() -> bool:
        state["redis"] = read_counts(s, redis_client)[0]
        return state["redis"] == expected

    try:
        wait_until(exact, 120, "the counts of every record once, in Redis", worker=worker)
    except BaseException:
        got_cells = state.get("redis", EffectCounts())
        print({arm: (got_cells.total(arm).as_dict(), expected.total(arm).as_dict()) for arm in expected.arms()})
        raise
    print(f"\nexperiment stream: {len(order)} records, killed after ~{killed_after:.0f} consumed, the new worker "
          f"consumed {scrape_metric(s, 'recostream_events_consumed_total'):.0f} and dropped "
          f"{scrape_metric(s, 'recostream_events_duplicate_total'):.0f} as duplicates; impressions "
          f"{sum(expected.total(a).impressions for a in expected.arms())}, clicks "
          f"{sum(expected.total(a).clicks for a in expected.arms())}, purchases "
          f"{sum(expected.total(a).all_purchases for a in expected.arms())}: exact in Redis")
    assert changelog_counts(s) == expected  # what any later owner restores
    assert report(s)["variants"] == experiment_report(EXPERIMENT, expected)["variants"]
    assert scrape_metric(s, "recostream_experiment_customers") == sum(
        expected.total(arm).customers for arm in ("pop", "rank", "holdout", "unknown"))
    assert not [m for m in read_topic(s, s.topic_dead_letter)]
    # The profiles carry the customers' attribution state (restored with them).
    profile_raw = next(m.value() for m in read_topic(s, s.changelog_topic) if m.key() == A.encode())
    assert decode_profile(profile_raw).effect.experiment == "it-exp"


def test_the_counts_key_is_fenced_like_the_others_and_never_expires(settings, redis_client):
    from streams.metrics import Metrics
    from streams.sinks.redis import RedisSink

    sink = RedisSink(settings.redis_url, settings.redis_prefix, 3600, Metrics(process_metrics=False),
                     app_id=settings.app_id)
    key = RedisKeys(settings.redis_prefix).effect(settings.app_id, 1)
    counts = scripted_expectation()
    sink.raise_fence(1, 5)
    assert sink.write([], {}, effects={1: (4, counts.to_bytes())}) == 1  # a stale owner: skipped, counted
    assert redis_client.get(key) is None
    recs = {"u1": b"{}"}
    assert sink.write([(1, 5, recs, {"u1": b"{}"})], {"version": 1}, effects={1: (5, counts.to_bytes())}) == 0
    assert EffectCounts.from_bytes(redis_client.get(key)) == counts and redis_client.ttl(key) == -1
    assert 0 < redis_client.ttl(RedisKeys(settings.redis_prefix).recs("u1")) <= 3600
    assert read_counts(settings, redis_client) == (counts, [1])
    sink.close()
