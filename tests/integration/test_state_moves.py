"""A customer's own model state moves with their partition (real broker, real Redis, two workers).

Customers build a history on two workers; one worker stops and the other takes its partitions over;
each customer then sends one more event. The worker that serves them now must do so from their whole
history (read back from the changelog record it wrote) and keep their purchases out of their list.
"""

from __future__ import annotations

import collections

import msgspec
import pytest

from models.profile import decode_profile
from models.ranking.users import UserRecord
from streams.contract import decode_recommendation
from streams.kafka.produce import make_producer, publish_catalogue, publish_events
from streams.sinks.redis import RedisKeys
from streams.state.changelog import COUNTS_KEY, MARKER_KEY, POSITION_KEY
from streams.tools.embedded import free_port
from streams.tools.generator import ShopperSimulator
from tests.helpers import own_topics, profile_totals, read_topic, wait_until

pytestmark = pytest.mark.integration

MOVERS = 24


def _scripted(popular: list[str], items: list[str], phase: int):
    """Each mover looks at three items of their own again and again and buys the two most popular
    items (phase 1), then looks at one of their items once more (phase 2)."""
    events = []
    for c in range(MOVERS):
        user, own = f"mover-{c}", items[3 * c:3 * c + 3]
        if phase == 1:
            views = [own[k % 3] for k in range(9)]
            events += [("browse", {"event_id": f"m{c}-v{k}", "user_id": user, "item_id": item, "ts": 0})
                       for k, item in enumerate(views)]
            events += [("purchase", {"event_id": f"m{c}-p{k}", "user_id": user, "item_id": item, "ts": 0,
                                     "price": 10.0, "quantity": 1, "order_id": f"m{c}-o{k}"})
                       for k, item in enumerate(popular[:2])]
        else:
            events.append(("browse", {"event_id": f"m{c}-last", "user_id": user, "item_id": own[0], "ts": 0}))
    return events


def _last_records(settings) -> tuple[dict[str, tuple[str, bytes]], dict[str, set[str]]]:
    """From the changelog: each customer's last profile record and the worker that wrote it, and the
    workers that wrote each customer's records."""
    last, writers = {}, collections.defaultdict(set)
    owner: dict[int, str] = {}
    for msg in sorted(read_topic(settings, settings.changelog_topic), key=lambda m: (m.partition(), m.offset())):
        key = msg.key()
        if key == MARKER_KEY:
            owner[msg.partition()] = msgspec.json.decode(msg.value())["worker"]
        elif key not in (POSITION_KEY, COUNTS_KEY) and msg.value() is not None:
            user = key.decode()
            last[user] = (owner[msg.partition()], msg.value())
            writers[user].add(owner[msg.partition()])
    return last, writers


def test_a_moved_customer_is_served_from_their_own_history(settings, start_worker, redis_client):
    s = own_topics(settings, "mv")
    sim = ShopperSimulator(n_users=150, n_items=300, seed=29)
    catalogue = sim.catalogue()
    publish_catalogue(make_producer(s), s, catalogue)
    background = list(sim.events(3000))
    counts = collections.Counter(p["item_id"] for _, p in background)
    popular = [item for item, _ in counts.most_common(2)]
    own_items = [it["item_id"] for it in catalogue if it["item_id"] not in popular]

    s_a = s.replace(worker_id="a", metrics_port=free_port())
    s_b = s.replace(worker_id="b", metrics_port=free_port())
    a, b = start_worker(s_a), start_worker(s_b)
    producer = make_producer(s)
    sent: list = []
    phase1 = background + _scripted(popular, own_items, 1)
    publish_events(producer, s, phase1, live_ts=True, on_delivered=sent.append)
    expected = collections.Counter(p["user_id"] for _, p in sent)
    users = sorted(expected)
    wait_until(lambda: profile_totals(redis_client, s, users) == expected, 120, "phase 1 processed", worker=b)
    _, writers = _last_records(s)
    on_a = [u for u in (f"mover-{c}" for c in range(MOVERS)) if writers[u] == {"a"}]
    assert on_a, "worker a served some movers (4 partitions over 2 workers)"

    assert a.stop() == 0
    publish_events(producer, s, _scripted(popular, own_items, 2), live_ts=True, on_delivered=sent.append)
    expected = collections.Counter(p["user_id"] for _, p in sent)
    wait_until(lambda: profile_totals(redis_client, s, users) == expected, 120, "phase 2 processed", worker=b)

    last, writers = _last_records(s)
    keys = RedisKeys(s.redis_prefix)
    for user in on_a:
        worker, value = last[user]
        assert worker == "b" and writers[user] == {"a", "b"}
        profile = decode_profile(value)
        record = msgspec.msgpack.decode(profile.model, type=UserRecord)
        # The state b served from holds all 12 events, not just the one b saw.
        assert record.n == profile.model_version == expected[user] == 12
        assert tuple(record.history_ids) == profile.recent_items and len(record.history_ids) == 5  # 3 own + 2 bought
        assert sorted(record.interacted[i] for i in record.purchased) == sorted(popular)
        ids = [i.item_id for i in decode_recommendation(redis_client.get(keys.recs(user))).items]
        assert ids and not set(ids) & set(popular), f"{user}: bought items listed again: {ids}"
