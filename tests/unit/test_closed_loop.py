"""The closed-loop shop without a broker: what shoppers are shown, how they react, where records go."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import Counter

import msgspec
import pytest

from streams.contract import Recommendation, ScoredItem, decode_event, decode_impression
from streams.kafka.produce import publish_events
from streams.settings import Settings
from streams.tools.bench.run import _own_names
from streams.tools.closed_loop import CLOSED_LOOP_EXPERIMENT, IMPRESSION, ClosedLoopShop
from streams.tools.generator import ShopperSimulator
from streams.tools.up import STACK_SETTINGS, with_closed_loop_experiment


class FreshLists:
    """A new list (new rec_id) at every read: ``items_for(user)`` ranked as given."""

    def __init__(self, items_for, variant: str = "ranker") -> None:
        self.items_for, self.variant = items_for, variant
        self.seq = itertools.count()

    def __call__(self, user: str) -> Recommendation:
        return Recommendation(user, [ScoredItem(i, 1.0) for i in self.items_for(user)], 1, 0.0,
                              rec_id=f"r{next(self.seq)}", variant=self.variant)


def shop(lists, **kw) -> ClosedLoopShop:
    return ClosedLoopShop(**{"n_users": 60, "n_items": 300, "seed": 4, "lists": lists, **kw})


def preferred_items(s: ClosedLoopShop, k: int = 10):
    return lambda user: s.items_by_category[s.preferences[user][0]][:k]


def test_without_lists_the_stream_is_the_simulators():
    plain = list(ShopperSimulator(n_users=60, n_items=300, seed=4).events(3000))
    assert list(shop(None).events(3000)) == plain
    assert list(shop(lambda user: None).events(3000)) == plain


def test_shoppers_see_the_top_of_their_list_and_react_after_it():
    s = shop(None)
    s.lists = FreshLists(preferred_items(s))
    records = list(s.events(6000))
    impressions = [r for kind, r in records if kind == IMPRESSION]
    assert len(impressions) == s.stats["impressions"] > 100
    shown_by_rec = {}
    for imp in impressions:
        assert imp["items"] == preferred_items(s)(imp["user_id"])[:5] and imp["surface"] == "home"
        decode_impression(msgspec.json.encode(imp), now=imp["ts"] / 1000)  # the contract accepts it
        shown_by_rec[imp["rec_id"]] = imp
    echoed = Counter()
    for kind, ev in records:
        if kind in ("click", "purchase"):
            decode_event(msgspec.json.encode(ev), kind, now=ev["ts"] / 1000)
        if kind != IMPRESSION and ev.get("rec_id"):  # names the list the shopper saw, an item it showed, after it
            imp = shown_by_rec[ev["rec_id"]]
            assert ev["user_id"] == imp["user_id"] and ev["item_id"] in imp["items"] and ev["ts"] > imp["ts"]
            echoed[kind] += 1
    shown_events = s.stats["shown_clicks"] + s.stats["shown_purchases"]
    assert 0.6 < sum(echoed.values()) / shown_events < 0.8  # 70 % carry the rec_id
    for user in {imp["user_id"] for imp in impressions}:
        times = [r["ts"] for _, r in records if r["user_id"] == user]
        assert times == sorted(times)


def test_tastes_and_position_drive_the_clicks():
    s = shop(None)
    user = s.user_id(0)
    liked = next(i for i in s.items if i["category"] in s.preferences[user])["item_id"]
    other = next(i for i in s.items if i["category"] not in s.preferences[user])["item_id"]
    assert s.click_probability(user, liked, 0) == pytest.approx(0.15)
    assert s.click_probability(user, other, 0) == pytest.approx(0.015)
    assert s.click_probability(user, liked, 4) == pytest.approx(0.15 / 5 ** 0.7)

    def clicks_per_impression(items_for) -> float:
        s.lists, s.stats = FreshLists(items_for), Counter()
        for k in range(3000):
            s.session_records(user, 1_767_225_600_000 + k * 3_600_000)
        return s.stats["shown_clicks"] / s.stats["impressions"]

    to_taste = clicks_per_impression(lambda u: [liked] * 5)
    off_taste = clicks_per_impression(lambda u: [other] * 5)
    assert to_taste > 5 * off_taste > 0


def test_no_impression_without_a_new_list():
    holdout = Recommendation("u0", [], 1, 0.0, rec_id="h1", variant="holdout")
    s = shop(lambda user: holdout)
    assert all(kind != IMPRESSION for kind, _ in s.events(2000))
    same = Recommendation("u0", [ScoredItem("i1", 1.0)], 1, 0.0, rec_id="r-same", variant="ranker")
    s = shop(lambda user: same)
    first = [kind for kind, _ in s.session_records("u0", 1_767_225_600_000)]
    again = [kind for kind, _ in s.session_records("u0", 1_767_229_200_000)]
    assert first[0] == IMPRESSION and IMPRESSION not in again  # the same list is not shown twice


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict]] = []

    def produce(self, topic, value=None, key=None, on_delivery=None, **kw):
        self.sent.append((topic, key, json.loads(value)))
        on_delivery(None, None)

    def poll(self, timeout=0):
        return 0

    def flush(self, timeout=None):
        return 0


def test_publish_events_routes_impressions_and_events():
    settings = Settings(topic_impressions="shown", topic_click="clicks")
    records = [(IMPRESSION, {"event_id": "m1", "user_id": "u1", "rec_id": "r1", "items": ["i1"], "ts": 5}),
               ("click", {"event_id": "e1", "user_id": "u1", "item_id": "i1", "rec_id": "r1", "ts": 6})]
    producer, delivered = FakeProducer(), []
    assert publish_events(producer, settings, records, on_delivered=delivered.append) == 2
    (t1, k1, v1), (t2, k2, v2) = producer.sent
    assert (t1, k1, v1) == ("shown", b"u1", records[0][1])  # no `type`: not a field of impressions
    assert (t2, k2, v2) == ("clicks", b"u1", {**records[1][1], "type": "click"})
    assert [kind for kind, _ in delivered] == [IMPRESSION, "click"]
    producer = FakeProducer()
    publish_events(producer, settings, records, live_ts=True)
    assert all(v["ts"] > 1_700_000_000_000 for _, _, v in producer.sent)


def test_up_runs_the_closed_loop_experiment_unless_one_is_configured():
    settings = with_closed_loop_experiment(Settings())
    assert json.loads(settings.experiment) == CLOSED_LOOP_EXPERIMENT
    assert dict(settings.experiment_config.shares) == {"ranker": 0.45, "popularity": 0.45, "holdout": 0.1}
    own = json.dumps({"name": "mine", "salt": "s", "variants": [{"name": "a", "share": 1.0, "strategy": "ranker"}]})
    assert with_closed_loop_experiment(Settings(experiment=own)).experiment == own
    # another process joining the stack (`experiment report`, a second worker) gets what the worker runs
    assert {"RECOSTREAM_EXPERIMENT", "RECOSTREAM_EXPERIMENT_FILE", "RECOSTREAM_TOPIC_IMPRESSIONS"} <= STACK_SETTINGS


def test_a_bench_run_names_every_topic_of_its_own():
    renamed = _own_names(Settings(), "bench-x")
    for f in dataclasses.fields(Settings):
        if f.name.startswith("topic_"):
            assert getattr(renamed, f.name).startswith("bench-x."), f.name


def test_the_printed_summary_ends_with_the_report():
    import io

    from rich.console import Console

    from models.effect import EffectCounts, Experiment, Increment, experiment_report, render_report
    from streams.tools.up import _print_summary

    counts = EffectCounts()
    counts.apply([Increment("ranker", 20000, "impressions", 40), Increment("ranker", 20000, "clicked_impressions", 9),
                  Increment("popularity", 20000, "impressions", 38), Increment("ranker", 20000, "customers", 7)])
    report = experiment_report(Experiment.from_mapping(CLOSED_LOOP_EXPERIMENT), counts)
    summary = {"seconds": 1.0, "events_produced": 5, "users_with_recommendations": 1,
               "time_to_first_recommendation_s": 0.5, "model": {}, "sample_user": None,
               "redis_keys": {"recommendations": "rs:recs:{user_id}"},
               "closed_loop": {"sessions": 3, "impressions": 2, "shown_clicks": 1}, "experiment": report}
    out = io.StringIO()
    _print_summary(Console(file=out, width=250), summary)
    text = out.getvalue()
    assert "3 sessions, 2 impressions, 1 clicks and 0 purchases of shown items" in text
    assert text.rstrip().endswith(render_report(report).rstrip())  # printed as is: no markup eaten
