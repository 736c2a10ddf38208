"""Customer profile maths: RFM, dedupe, bounded windows, features."""

from __future__ import annotations

import copy
import math

import pytest

from models.profile import (
    DEDUPE_WINDOW,
    FEATURE_KEYS,
    MAX_CATEGORIES,
    MAX_RECENT_ITEMS,
    Profile,
    apply_event,
    decode_profile,
    encode_profile,
    features,
    new_profile,
    profile_summary,
    rfm,
    top_categories,
)

T0 = 1_700_000_000.0
DAY = 86400.0


def ev(p: Profile, n: int | str, item: str = "i", kind: str = "browse", ts: float = T0, **kw) -> bool:
    return apply_event(p, event_id=f"e{n}", item_id=item, event_type=kind, ts=ts, **kw)


def test_new_profile_is_empty():
    p = new_profile("u1")
    assert p.user_id == "u1"
    assert p.counts == {"browse": 0, "click": 0, "purchase": 0}
    assert (p.first_seen, p.last_seen, p.monetary, p.orders, p.segment) == (None, None, 0.0, 0, None)
    # default factories must not share state between profiles
    q = new_profile("u2")
    ev(q, 1)
    assert p.counts["browse"] == 0 and p.recent_items == ()


def test_rfm_maths():
    p = new_profile("u")
    ev(p, 1, "a", "browse", T0 - 10 * DAY)
    ev(p, 2, "a", "purchase", T0 - 4 * DAY, price=10.0, quantity=3, order_id="o1")
    ev(p, 3, "b", "purchase", T0 - 4 * DAY, price=5.5, order_id="o1")  # same order, 2nd line
    ev(p, 4, "c", "purchase", T0 - 2 * DAY, price=100.0)  # no order id: event id is the order
    ev(p, 5, "d", "purchase", T0 - 1 * DAY)  # price unknown: counts as an order, adds no money
    recency, frequency, monetary = rfm(p, now=T0)
    assert recency == pytest.approx(1.0)
    assert frequency == 3
    assert monetary == pytest.approx(30.0 + 5.5 + 100.0)
    assert p.counts == {"browse": 1, "click": 0, "purchase": 4}


def test_rfm_recency_without_purchases_and_clamping():
    p = new_profile("u")
    assert rfm(p, T0) == (0.0, 0, 0.0)
    ev(p, 1, ts=T0 - 5 * DAY)
    ev(p, 2, ts=T0 - 1 * DAY)
    assert rfm(p, T0)[0] == pytest.approx(5.0)  # never bought since first seen
    ev(p, 3, kind="purchase", ts=T0 + DAY, price=1.0)  # producer clock ahead of ours
    assert rfm(p, T0) == (0.0, 1, 1.0)


def test_duplicate_event_changes_nothing():
    p = new_profile("u")
    assert ev(p, 1, "a", "purchase", price=20.0, category="toys", order_id="o1")
    before = encode_profile(p)
    assert not ev(p, 1, "a", "purchase", price=20.0, category="toys", order_id="o1")
    # even a "duplicate" whose payload differs is dropped: the id decides
    assert not ev(p, 1, "zzz", "click", ts=T0 + 99, category="other")
    assert encode_profile(p) == before


def test_unknown_event_type_raises_before_mutating():
    p = new_profile("u")
    before = copy.deepcopy(p)
    with pytest.raises(ValueError):
        ev(p, 1, kind="refund")
    assert p == before


def test_dedupe_window_is_bounded_fifo():
    p = new_profile("u")
    for i in range(DEDUPE_WINDOW + 10):
        assert ev(p, i)
    assert len(p.seen_event_ids) == DEDUPE_WINDOW
    assert p.seen_event_ids[0] == "e10" and p.seen_event_ids[-1] == f"e{DEDUPE_WINDOW + 9}"
    assert ev(p, 0)  # fell out of the window: accepted again (at-least-once, bounded memory)
    assert not ev(p, DEDUPE_WINDOW + 9)
    q = new_profile("u")
    for i in range(5):
        apply_event(q, event_id=str(i), item_id="x", event_type="click", ts=T0, window=3)
    assert q.seen_event_ids == ["2", "3", "4"]


def test_recent_items_bounded_most_recent_last_and_moved_on_reseen():
    p = new_profile("u")
    for i in range(MAX_RECENT_ITEMS + 5):
        ev(p, i, item=f"i{i}")
    assert len(p.recent_items) == MAX_RECENT_ITEMS
    assert p.recent_items[-1] == f"i{MAX_RECENT_ITEMS + 4}" and p.recent_items[0] == "i5"
    ev(p, "again", item="i10")
    assert p.recent_items[-1] == "i10" and p.recent_items.count("i10") == 1
    assert len(p.recent_items) == MAX_RECENT_ITEMS


def test_category_counts_bounded_and_heavy_hitters_survive():
    p = new_profile("u")
    n = 0
    for _ in range(50):  # a clear favourite
        ev(p, n := n + 1, category="shoes")
    for c in range(200):  # long tail of one-offs
        ev(p, n := n + 1, category=f"tail{c}")
    for _ in range(10):
        ev(p, n := n + 1, category="bags")
    assert len(p.category_counts) == MAX_CATEGORIES
    assert p.category_counts["shoes"] == 50.0
    assert "bags" in p.category_counts
    top = top_categories(p, 2)
    assert top[0] == ("shoes", 50.0) and top[1][0] == "bags"
    assert top_categories(p, 0) == []
    assert len(top_categories(p, 100)) == MAX_CATEGORIES


def test_out_of_order_timestamps():
    p = new_profile("u")
    for i, ts in enumerate([T0, T0 - 100, T0 + 50, T0 - 200, T0 + 10]):
        ev(p, i, ts=ts)
    assert (p.first_seen, p.last_seen) == (T0 - 200, T0 + 50)
    ev(p, "p1", kind="purchase", ts=T0 + 40)
    ev(p, "p2", kind="purchase", ts=T0 + 5)  # late purchase does not move recency back
    assert p.last_purchase == T0 + 40


def test_features_keys_are_stable_and_finite():
    empty = features(new_profile("u"), T0)
    assert tuple(empty) == FEATURE_KEYS
    p = new_profile("u")
    ev(p, 1, "a", "browse", T0 - 30 * DAY, category="x")
    ev(p, 2, "a", "click", T0 - 29 * DAY, category="y")
    ev(p, 3, "a", "purchase", T0 - 3 * DAY, category="x", price=1e9, quantity=100_000)
    f = features(p, T0)
    assert tuple(f) == FEATURE_KEYS
    assert all(isinstance(v, float) and math.isfinite(v) for v in f.values())
    assert f["log_browse"] == pytest.approx(math.log1p(1))
    assert f["log_recency_days"] == pytest.approx(math.log1p(3))
    assert f["log_tenure_days"] == pytest.approx(math.log1p(27))
    assert f["log_monetary"] == pytest.approx(math.log1p(1e14))
    assert f["log_avg_order_value"] == pytest.approx(math.log1p(1e14))
    # categories x:2, y:1 -> entropy of (2/3, 1/3)
    assert f["category_entropy"] == pytest.approx(-(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3))
    assert f["purchase_browse_ratio"] == pytest.approx(math.log1p(1 / 2))
    # "now" before the events (clock skew) must not produce NaN from log1p(negative)
    assert all(math.isfinite(v) for v in features(p, T0 - 365 * DAY).values())


def test_encode_decode_round_trip_and_summary():
    p = new_profile("ü-1")
    ev(p, 1, "a", "purchase", T0, category="toys", price=2.5, quantity=2, order_id="o")
    ev(p, 2, "b", "click", T0 + 60, category="games")
    p.segment = 4
    q = decode_profile(encode_profile(p))
    assert q == p and isinstance(q, Profile)
    s = profile_summary(p, now=T0 + DAY)
    assert s["user_id"] == "ü-1" and s["segment"] == 4 and s["orders"] == 1
    assert s["rfm"] == {"recency_days": pytest.approx(1.0), "frequency": 1, "monetary": 5.0}
    assert s["top_categories"] == [{"category": "games", "weight": 1.0}, {"category": "toys", "weight": 1.0}]
    assert s["recent_items"] == ["a", "b"] and isinstance(s["recent_items"], list)
    import json

    json.dumps(s)  # JSON-friendly as promised
    s["recent_items"].append("mutated")
    assert p.recent_items == ("a", "b")  # the summary is a copy


def test_decode_profile_tolerates_older_payloads():
    old = b'{"user_id":"u","counts":{"browse":3,"click":0,"purchase":0},"monetary":0.0,"orders":0}'
    p = decode_profile(old)
    assert p.counts["browse"] == 3 and p.recent_order_ids == () and p.last_purchase is None
    assert ev(p, 1)


def test_dedupe_window_offsets_and_seen_offset():
    from models.profile import seen_offset

    p = new_profile("u")
    for i in range(5):
        assert apply_event(p, event_id=f"e{i}", item_id="x", event_type="click", ts=T0, offset=100 + i, window=3)
    assert p.seen_event_ids == ["e2", "e3", "e4"] and p.seen_offsets == [102, 103, 104]
    assert seen_offset(p, "e3") == 103 and seen_offset(p, "e1") is None
    # ids are matched whole, never as a part of another id
    assert apply_event(p, event_id="e", item_id="x", event_type="click", ts=T0, window=3)
    assert apply_event(p, event_id="4", item_id="x", event_type="click", ts=T0, window=3)
    assert not apply_event(p, event_id="e4", item_id="x", event_type="click", ts=T0, window=3)
    assert p.seen_event_ids == ["e4", "e", "4"] and p.seen_offsets == [104, -1, -1]


def test_dedupe_window_with_awkward_ids():
    from models.profile import seen_offset

    p = new_profile("u")
    ids = ["a\nb", "a", "b", "\r", "\r\r", "\rn", "\n", "", "x y,z", "ü-é"]
    for i, e in enumerate(ids):
        assert ev(p, e, offset=i)  # ev() prefixes "e"
    for i, e in enumerate(ids):
        assert not ev(p, e), e
        assert seen_offset(p, f"e{e}") == i
    assert p.seen_event_ids == [f"e{e}" for e in ids]
    q = decode_profile(encode_profile(p))
    assert q == p and q.seen_event_ids == p.seen_event_ids and q.seen_offsets == list(range(len(ids)))
    assert apply_event(p, event_id="fresh", item_id="x", event_type="click", ts=T0, window=0)
    assert p.seen_event_ids == [] and p.seen_offsets == []


def test_decode_reads_the_json_payloads_of_earlier_versions():
    old = (b'{"user_id":"u","counts":{"browse":2,"click":0,"purchase":0},"first_seen":1.0,"last_seen":2.0,'
           b'"last_purchase":null,"monetary":0.0,"orders":0,"recent_items":["i1"],"category_counts":{"c":2.0},'
           b'"seen_event_ids":["e1","e2"],"seen_offsets":[41,42],"recent_order_ids":[],"segment":3}')
    p = decode_profile(old)
    assert p.seen_event_ids == ["e1", "e2"] and p.seen_offsets == [41, 42] and p.segment == 3
    assert p.category_counts == {"c": 2} and top_categories(p) == [("c", 2.0)]
    assert not ev(p, 1) and not ev(p, 2) and ev(p, 3)
    # windows written before offsets were kept: -1 for each id
    q = decode_profile(b'{"user_id":"u","seen_event_ids":["a","b"]}')
    assert q.seen_offsets == [-1, -1]
    # what encode_profile writes now (MessagePack) reads back, and stays small
    assert decode_profile(encode_profile(p)) == p
    assert encode_profile(p)[:1] != b"{"


def test_decode_reads_the_map_payloads_of_earlier_versions():
    import msgspec

    # What the map form held: the non-default fields by name, the attribution state as arrays,
    # the ranker's record as bytes, float category counts.
    old = msgspec.msgpack.encode({
        "user_id": "u", "counts": {"browse": 3, "click": 1, "purchase": 1}, "first_seen": 1.0, "last_seen": 5.0,
        "last_purchase": 5.0, "monetary": 12.5, "orders": 1, "recent_items": ["i1", "i2"],
        "category_counts": {"c": 3.0, "d": 2.0}, "seen_window": "\ne1\ne2\n",
        "seen_window_offsets": bytes(8) + bytes([1]) + bytes(7), "applied": [7], "segment": 2,
        "effect": ["exp", 5.0, [["0123456789abcdef01234567", "ranker", 4.0]], [], [], {}],
        "model": b"\x9b\x01", "model_version": 5, "unknown_field": 1,
    })
    assert old[0] == 0xDE  # a map of over 15 entries
    p = decode_profile(old)
    assert (p.user_id, p.counts, p.monetary, p.orders, p.recent_items) == (
        "u", {"browse": 3, "click": 1, "purchase": 1}, 12.5, 1, ("i1", "i2"))
    assert p.category_counts == {"c": 3, "d": 2} and all(type(v) is int for v in p.category_counts.values())
    assert p.seen_event_ids == ["e1", "e2"] and p.seen_offsets == [0, 1] and p.applied == (7,)
    assert p.effect.issued[0].rec_id == "0123456789abcdef01234567" and p.effect.issued[0].variant == "ranker"
    assert (p.model, p.model_version, p.segment) == (b"\x9b\x01", 5, 2)
    q = decode_profile(encode_profile(p))
    assert q == p and encode_profile(p)[0] == 0xDC  # an array of over 15 entries
    assert len(encode_profile(p)) < len(old) - 100  # no field names on the wire
