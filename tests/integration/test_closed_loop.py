"""The closed loop end to end: shoppers shown their recommendations, a real worker running the experiment.

A :class:`ClosedLoopShop` (streams/tools/closed_loop.py) runs for about a minute against the embedded
broker and Redis and a real `recostream worker` serving the ranker to 45 % of the shoppers, trending
popularity to 45 % and nothing to a 10 % holdout. Then:

* the ranker's CTR is above popularity's with p < 0.01 (the report's `comparisons.ranker.ctr_p_value`,
  the pooled two-proportion z-test on impressions with a click / impressions, recomputed here from the
  counts), and the sample-ratio check passes (`srm_p_value` > 0.001);
* every count of `recostream experiment report --json` equals the count recomputed here from the topics
  alone (impressions, clicks, purchases, browses, and the recommendations topic for each rec_id's variant),
  with the attribution rules of docs/EXPERIMENTS.md written out again in plain Python.

Why the recount can be exact although the worker interleaves four topics in an order nobody knows: the
shop's times (simulated, not the wall clock) leave more than the purchase window between two sessions of
a shopper, and a shopper never names one rec_id in two impressions, so every click and purchase has at
most one impression it can be credited to (the recount asserts it), whatever the order the worker sees.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter, defaultdict

import msgspec
import pytest
import redis
from click.testing import CliRunner

from models.effect import Experiment
from streams.cli import cli
from streams.kafka.produce import make_producer, publish_catalogue, publish_events
from streams.settings import Settings, settings_env
from streams.sinks.redis import RedisKeys
from streams.tools.closed_loop import CLOSED_LOOP_EXPERIMENT, ClosedLoopShop, RedisLists
from tests.helpers import read_topic, scrape_metric, wait_until

pytestmark = pytest.mark.integration

CLICK_WINDOW_S, PURCHASE_WINDOW_S, CLOCK_SKEW_S = 600.0, 1200.0, 5.0
RUN_S, RATE = 70.0, 150.0
COMPARED = ("customers", "impressions", "items_shown", "clicks", "clicked_impressions", "purchases", "converters",
            "revenue", "assigned_customers", "buyers", "all_purchases", "all_revenue")


def read_all(settings: Settings, topic: str) -> list[dict]:
    """Every record of ``topic`` (JSON values), in offset order per partition."""
    msgs = read_topic(settings, topic, timeout=60)
    return [msgspec.json.decode(m.value()) for m in sorted(msgs, key=lambda m: (m.partition(), m.offset()))]


def recount(experiment: Experiment, topics: dict[str, list[dict]]) -> dict[str, Counter]:
    """The report's counters per arm, from the records alone (the rules of docs/EXPERIMENTS.md, Attribution)."""
    variant_of = {r["rec_id"]: r["variant"] for r in topics["recommendations"]}
    served = defaultdict(set)  # the arm each customer was served, as the worker wrote it
    for r in topics["recommendations"]:
        served[r["user_id"]].add(r["variant"])
    by_user = defaultdict(lambda: {"impressions": [], "events": []})
    for imp in topics["impressions"]:
        by_user[imp["user_id"]]["impressions"].append(
            {**imp, "ts": imp["ts"] / 1000, "arm": variant_of.get(imp["rec_id"], "unknown"), "clicked": set(),
             "bought": set()})
    for kind in ("browse", "click", "purchase"):
        for ev in topics[kind]:
            by_user[ev["user_id"]]["events"].append({**ev, "kind": kind, "ts": ev["ts"] / 1000})
    arms: dict[str, Counter] = defaultdict(Counter)
    for user, records in by_user.items():
        assigned = experiment.assign(user)
        assert served[user] <= {assigned}, f"{user} assigned {assigned}, served {served[user]}"
        _count_customer(assigned, records["impressions"], sorted(records["events"], key=lambda e: e["ts"]), arms)
    return arms


def _count_customer(assigned: str, impressions: list[dict], events: list[dict], arms: dict[str, Counter]) -> None:
    arms[assigned]["assigned_customers"] += 1
    for arm in {imp["arm"] for imp in impressions}:
        arms[arm]["customers"] += 1
    for imp in impressions:
        arms[imp["arm"]]["impressions"] += 1
        arms[imp["arm"]]["items_shown"] += len(imp["items"])
    converted: set[str] = set()
    arms[assigned]["buyers"] += any(ev["kind"] == "purchase" for ev in events)
    for ev in events:
        cents = round(ev["price"] * ev["quantity"] * 100) if ev["kind"] == "purchase" else 0
        if ev["kind"] == "purchase":
            arms[assigned]["all_purchases"] += 1
            arms[assigned]["all_revenue"] += cents
        if ev["kind"] == "browse":
            continue
        window = CLICK_WINDOW_S if ev["kind"] == "click" else PURCHASE_WINDOW_S
        # Explicit: the impression the event names, if it showed the item; last touch: one that showed
        # the item within the window before the event (or the clock skew after it).
        explicit = [i for i in impressions if ev.get("rec_id") and i["rec_id"] == ev["rec_id"]
                    and ev["item_id"] in i["items"]]
        touched = [i for i in impressions if ev["item_id"] in i["items"]
                   and i["ts"] <= ev["ts"] + CLOCK_SKEW_S and ev["ts"] - i["ts"] <= window]
        candidates = {i["event_id"]: i for i in explicit + touched}
        assert len(candidates) <= 1, f"the shop's premise broke: {ev} could go to {sorted(candidates)}"
        if not candidates:
            continue
        (imp,) = candidates.values()
        done = imp["clicked"] if ev["kind"] == "click" else imp["bought"]
        if ev["item_id"] in done:
            continue  # at most once per (impression, item, kind)
        c = arms[imp["arm"]]
        if ev["kind"] == "click":
            c["clicked_impressions"] += not imp["clicked"]
            c["clicks"] += 1
        else:
            c["purchases"] += 1
            c["revenue"] += cents
            c["converters"] += imp["arm"] not in converted
            converted.add(imp["arm"])
        done.add(ev["item_id"])


def report(settings: Settings) -> dict:
    result = CliRunner().invoke(cli, ["experiment", "report", "--json"], env=settings_env(settings))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def as_counts(arm: dict) -> dict:
    out = {k: arm[k] for k in COMPARED}
    out["revenue"], out["all_revenue"] = round(arm["revenue"] * 100), round(arm["all_revenue"] * 100)
    return out


def z_test_p(x1: int, n1: int, x2: int, n2: int) -> float:
    pooled = (x1 + x2) / (n1 + n2)
    z = (x1 / n1 - x2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return math.erfc(abs(z) / math.sqrt(2))


def run_shop(settings: Settings, shop: ClosedLoopShop, seconds: float) -> int:
    stop = threading.Event()
    sent: list[int] = []
    thread = threading.Thread(target=lambda: sent.append(publish_events(
        make_producer(settings), settings, shop.events(10**9), rate=RATE, should_stop=stop.is_set)), daemon=True)
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join(60)
    assert sent, "the shop's producer failed"
    return sent[0]


def test_the_ranker_beats_popularity_and_the_report_recounts_from_the_topics(settings, start_worker):
    s = settings.replace(experiment=json.dumps(CLOSED_LOOP_EXPERIMENT), worker_id="w-loop",
                         attribution_click_window_s=CLICK_WINDOW_S, attribution_purchase_window_s=PURCHASE_WINDOW_S)
    client = redis.Redis.from_url(s.redis_url)
    shop = ClosedLoopShop(n_users=200, n_items=400, seed=19, start_ms=int((time.time() - 2 * 86400) * 1000),
                          min_session_gap_ms=int((PURCHASE_WINDOW_S + 60) * 1000),
                          lists=RedisLists(client, RedisKeys(s.redis_prefix)))
    publish_catalogue(make_producer(s), s, shop.catalogue())
    worker = start_worker(s)
    wait_until(lambda: "worker ready" in worker.log(), 60, "the worker to start", worker=worker)
    sent = run_shop(s, shop, RUN_S)
    assert shop.stats["impressions"] > 600, shop.stats
    wait_until(lambda: scrape_metric(s, "recostream_events_consumed_total") >= sent, 60,
               f"the worker consuming {sent} records", worker=worker)

    topics = {name: read_all(s, getattr(s, f"topic_{name}"))
              for name in ("impressions", "browse", "click", "purchase", "recommendations")}
    assert sum(map(len, (topics[k] for k in ("impressions", "browse", "click", "purchase")))) == sent
    expected = {arm: {k: c[k] for k in COMPARED} for arm, c in recount(s.experiment_config, topics).items()}
    got: dict = {}

    def recounted() -> bool:
        got.update(report(s))
        return {arm: as_counts(v) for arm, v in got["variants"].items()} == expected

    try:
        wait_until(recounted, 30, "the report to equal the recount from the topics", worker=worker)
    except BaseException:
        print(json.dumps({"report": {a: as_counts(v) for a, v in got["variants"].items()}, "recount": expected}))
        raise
    ranker, popularity = got["variants"]["ranker"], got["variants"]["popularity"]
    p = got["comparisons"]["ranker"]["ctr_p_value"]
    print(f"closed loop: {shop.stats}; ctr ranker {ranker['ctr']:.4f} ({ranker['clicked_impressions']}/"
          f"{ranker['impressions']}), popularity {popularity['ctr']:.4f} ({popularity['clicked_impressions']}/"
          f"{popularity['impressions']}), ctr p {p:.3g}; converters/customers ranker {ranker['converters']}/"
          f"{ranker['customers']}, popularity {popularity['converters']}/{popularity['customers']}, conversion p "
          f"{got['comparisons']['ranker']['p_value']:.3g}; srm p {got['srm_p_value']:.3g}")
    assert ranker["ctr"] > popularity["ctr"] and p < 0.01
    assert math.isclose(p, z_test_p(ranker["clicked_impressions"], ranker["impressions"],
                                    popularity["clicked_impressions"], popularity["impressions"]),
                        rel_tol=1e-9, abs_tol=1e-300)
    assert got["srm_p_value"] > 0.001 and not got["srm_alarm"]
    assert "unknown" not in got["variants"] and got["variants"]["holdout"]["impressions"] == 0
