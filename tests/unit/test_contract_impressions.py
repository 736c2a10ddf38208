"""The impressions topic's contract: good impressions decode, bad ones are refused with their reason;
clicks and purchases may carry a rec_id; recommendations carry their rec_id and variant."""

from __future__ import annotations

import json

import pytest

from streams.contract import (
    REASONS,
    ContractError,
    Impression,
    Limits,
    Recommendation,
    ScoredItem,
    decode_event,
    decode_impression,
    decode_recommendation,
    encode,
    event_payload,
    impression_payload,
)

NOW = 1714564800.0


def payload(**fields) -> bytes:
    doc = {"event_id": "imp-1", "user_id": "u1", "rec_id": "5d0c3e8f1a2b4c6d7e8f9a0b", "items": ["i9", "i3", "i7"],
           "ts": int(NOW * 1000), **fields}
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


def test_a_good_impression_decodes_with_its_items_in_order():
    imp = decode_impression(payload(surface="home", unknown={"nested": [1, 2]}), now=NOW)
    assert imp == Impression("imp-1", "u1", "5d0c3e8f1a2b4c6d7e8f9a0b", ("i9", "i3", "i7"), NOW, "home")
    assert imp.type == "impression"
    assert decode_impression(payload(ts="2024-05-01T12:00:00Z", surface=None), now=NOW).surface is None
    assert decode_impression(payload(items=["i1"] * 100), now=NOW).items == ("i1",) * 100
    assert decode_impression(impression_payload(imp), now=NOW) == imp


#: (name, raw, reason, fragment of the detail)
MALFORMED = [
    ("items_not_a_list", payload(items="i9"), "wrong_type", "`items` must be array"),
    ("items_an_object", payload(items={"i9": 1}), "wrong_type", "`items`"),
    ("items_not_strings", payload(items=["i9", 3]), "wrong_type", "`items` must be str"),
    ("item_null", payload(items=["i9", None]), "wrong_type", "`items`"),
    ("items_empty", payload(items=[]), "empty_items", "no item"),
    ("too_many_items", payload(items=[f"i{k}" for k in range(101)]), "too_many_items", "101 items, limit is 100"),
    ("item_id_too_long", payload(items=["i" * 129]), "id_too_long", "`items[]`"),
    ("item_id_empty", payload(items=["i1", ""]), "missing_field", "`items[]`"),
    ("item_id_control", payload(items=["i\u00001"]), "invalid_value", "`items[]`"),
    ("rec_id_missing", payload(rec_id=...), "missing_field", "`rec_id`"),
    ("rec_id_null", payload(rec_id=None), "missing_field", "`rec_id`"),
    ("rec_id_empty", payload(rec_id=""), "missing_field", "`rec_id`"),
    ("rec_id_a_number", payload(rec_id=7), "wrong_type", "`rec_id`"),
    ("rec_id_too_long", payload(rec_id="r" * 129), "id_too_long", "`rec_id`"),
    ("items_missing", payload(items=...), "missing_field", "`items`"),
    ("surface_a_number", payload(surface=3), "wrong_type", "`surface`"),
    ("surface_too_long", payload(surface="s" * 513), "string_too_long", "`surface`"),
    ("user_missing", payload(user_id=...), "missing_field", "`user_id`"),
    ("ts_seconds", payload(ts=int(NOW)), "ts_out_of_range", "`ts`"),
    ("duplicate_items", payload().replace(b'"items"', b'"items": ["x"], "items"', 1), "duplicate_field", "`items`"),
    ("not_json", b'{"event_id": ', "not_json", ""),
    ("not_object", b'["imp-1"]', "not_object", ""),
]


@pytest.mark.parametrize("raw, reason, fragment", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_a_bad_impression_is_refused_with_its_reason(raw, reason, fragment):
    with pytest.raises(ContractError) as info:
        decode_impression(raw, now=NOW)
    assert info.value.reason == reason, str(info.value)
    assert fragment in info.value.detail, info.value.detail
    assert reason in REASONS and len(info.value.detail) < 300


def test_the_item_limit_is_configurable():
    with pytest.raises(ContractError, match="too_many_items"):
        decode_impression(payload(items=["a", "b", "c"]), Limits(max_impression_items=2), now=NOW)


def test_clicks_and_purchases_may_carry_a_rec_id():
    raw = (b'{"event_id":"e1","user_id":"u1","item_id":"i9","ts":1714564800000,"price":5,'
           b'"rec_id":"5d0c3e8f1a2b4c6d7e8f9a0b"}')
    ev = decode_event(raw, "purchase", now=NOW)
    assert ev.rec_id == "5d0c3e8f1a2b4c6d7e8f9a0b"
    assert decode_event(event_payload(ev), "purchase", now=NOW) == ev
    assert decode_event(raw.replace(b'"rec_id":"5d0c3e8f1a2b4c6d7e8f9a0b"', b'"rec_id":""'), "click",
                        now=NOW).rec_id is None
    with pytest.raises(ContractError, match="wrong_type"):
        decode_event(raw.replace(b'"5d0c3e8f1a2b4c6d7e8f9a0b"', b"5"), "click", now=NOW)
    assert b"rec_id" not in event_payload(decode_event(raw.replace(b',"rec_id":"5d0c3e8f1a2b4c6d7e8f9a0b"', b""),
                                                       "click", now=NOW))


def test_a_recommendation_carries_its_rec_id_and_variant_and_older_ones_still_decode():
    rec = Recommendation("u1", [ScoredItem("i9", 0.5)], 3, NOW, 1, "5d0c3e8f1a2b4c6d7e8f9a0b", "ranker")
    doc = json.loads(encode(rec))
    assert (doc["rec_id"], doc["variant"]) == ("5d0c3e8f1a2b4c6d7e8f9a0b", "ranker")
    assert decode_recommendation(encode(rec)) == rec
    older = b'{"user_id":"u1","items":[],"model_version":1,"generated_at":1714564800.0,"segment":null}'
    assert (decode_recommendation(older).rec_id, decode_recommendation(older).variant) == (None, None)
