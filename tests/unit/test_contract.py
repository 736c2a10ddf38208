"""The wire contract: every malformed message is rejected with the right
reason, every valid one is accepted, and nothing else ever escapes."""

from __future__ import annotations

import base64
import json
import math
import pickle
import re
import time

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.contract import (
    DEFAULT_LIMITS,
    EVENT_TYPES,
    REASONS,
    CatalogItem,
    ContractError,
    DeadLetter,
    Event,
    Limits,
    Recommendation,
    ScoredItem,
    dead_letter,
    decode_dead_letter,
    decode_event,
    decode_item,
    decode_recommendation,
    encode,
    event_payload,
)
from streams.contract.fields import field_key_patterns
from tests.strategies import NOW, messages

TS_MS = 1_714_564_800_000  # 2024-05-01T12:00:00Z
DROP = object()


def payload(overrides: dict | None = None, **kw) -> bytes:
    doc = {"event_id": "e-1", "user_id": "u-1", "item_id": "sku-1", "ts": TS_MS}
    doc.update(overrides or {})
    doc.update(kw)
    doc = {k: v for k, v in doc.items() if v is not DROP}
    return json.dumps(doc).encode()


def reject(raw, topic="browse", **kw) -> ContractError:
    with pytest.raises(ContractError) as info:
        decode_event(raw, topic, now=NOW, **kw)
    err = info.value
    assert err.reason in REASONS
    assert str(err) == f"{err.reason}: {err.detail}"
    assert err.detail
    return err


# ---------------------------------------------------------------------------
# Valid messages
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("topic", EVENT_TYPES)
def test_minimal_valid_event_of_each_type(topic):
    ev = decode_event(payload(), topic, now=NOW)
    assert ev == Event("e-1", "u-1", "sku-1", topic, TS_MS / 1000)
    assert ev.quantity == 1 and ev.price is None and ev.session_id is None


@pytest.mark.parametrize(
    "ts, expected",
    [
        ("2024-05-01T12:00:00Z", 1714564800.0),
        ("2024-05-01t12:00:00z", 1714564800.0),  # RFC 3339 5.6: T and Z are case-insensitive
        ("2024-05-01T14:00:00+02:00", 1714564800.0),
        ("2024-05-01T12:00:00.250Z", 1714564800.25),
        ("2024-05-01T12:00:00.123456789Z", 1714564800.123456789),
        ("2024-05-01 12:00:00Z", 1714564800.0),
        ("2016-12-31T23:59:60Z", 1483228800.0),  # a leap second: the instant after :59
        (TS_MS, 1714564800.0),
        (TS_MS + 0.5, 1714564800.0005),
    ],
)
def test_timestamp_formats(ts, expected):
    ev = decode_event(payload(ts=ts), "click", now=NOW)
    assert ev.ts == pytest.approx(expected, abs=1e-6)
    assert isinstance(ev.ts, float)


@pytest.mark.parametrize(
    "ts",
    [
        "2024-05-01T12:00:00",  # no offset: the producer's zone is unknown
        "2024-05-01",  # date only
        "2024-05-01T12",  # hour only
        "2024-05-01T12:00Z",  # no seconds
        "2024-W18-3T12:00:00Z",  # ISO week date
        "20240501T120000Z",  # ISO basic format
        "2024-05-01T12:00:00+24:00",  # offset out of range
        "2024-05-01T12:00:61Z",
    ],
)
def test_timestamps_that_are_not_rfc_3339_are_refused(ts):
    with pytest.raises(ContractError) as err:
        decode_event(payload(ts=ts), "click", now=NOW)
    assert err.value.reason == "invalid_value" and "RFC 3339" in err.value.detail


def test_epoch_milliseconds_as_a_string_are_refused_with_a_hint():
    with pytest.raises(ContractError) as err:
        decode_event(payload(ts=str(TS_MS)), "click", now=NOW)
    assert err.value.reason == "invalid_value" and "must be a JSON number" in err.value.detail


def test_whole_number_quantity_may_be_written_as_a_float():
    assert decode_event(payload(quantity=2.0), "purchase", now=NOW).quantity == 2
    with pytest.raises(ContractError) as err:
        decode_event(payload(quantity=2.5), "purchase", now=NOW)
    assert err.value.reason == "wrong_type"


@pytest.mark.parametrize("field, first, second", [("price", -5, 3), ("user_id", "u-1", "u-2"), ("ts", 1, TS_MS)])
def test_a_contract_field_given_twice_is_refused(field, first, second):
    raw = payload().rstrip(b"}") + f', "{field}": {json.dumps(first)}, "{field}": {json.dumps(second)}}}'.encode()
    with pytest.raises(ContractError) as err:
        decode_event(raw, "purchase", now=NOW)
    assert err.value.reason == "duplicate_field" and field in err.value.detail


def test_a_field_name_inside_a_string_value_is_not_a_duplicate():
    raw = payload(category='"price": 3', note='say \"price\": 1', price=2.0)
    assert decode_event(raw, "purchase", now=NOW).price == 2.0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["price", "item_id", "items", "user_id", "note"]), max_size=6),
       st.sampled_from(["", " ", '"', "\t"]))
def test_one_scan_finds_the_repeated_keys_that_a_scan_per_field_finds(keys, gap):
    """A message goes to the exact check exactly when some field's own pattern matches twice."""
    names = ["price", "item_id", "user_id"]
    raw = ("{" + ", ".join(f'"{k}"{gap}: 1' for k in keys) + "}").encode()
    one_scan = field_key_patterns(names).findall(raw)
    per_field = [len(re.findall(rb'"' + n.encode() + rb'"\s*:', raw)) for n in names]
    assert sorted(one_scan) == sorted(n.encode() for n, c in zip(names, per_field) for _ in range(c))


def test_unknown_fields_are_ignored_at_any_depth_below_the_nesting_limit():
    nested = {"a": 1}
    for _ in range(400):
        nested = {"n": [nested]}
    assert decode_event(payload(extra=nested), "click", now=NOW).item_id == "sku-1"


def test_full_purchase_with_type_field_and_unicode():
    raw = payload(
        type="purchase",
        session_id="s-9",
        category="Küche & Haushalt 🍳",
        price=19.99,
        quantity=3,
        order_id="o-7",
        user_id="ユーザー-1",
    )
    ev = decode_event(raw, "purchase", now=NOW)
    assert (ev.user_id, ev.category, ev.price, ev.quantity, ev.order_id) == (
        "ユーザー-1",
        "Küche & Haushalt 🍳",
        19.99,
        3,
        "o-7",
    )


def test_integer_price_becomes_float_and_negative_zero_is_folded():
    assert decode_event(payload(price=5), "purchase", now=NOW).price == 5.0
    ev = decode_event(payload(price=-0.0), "purchase", now=NOW)
    assert ev.price == 0.0 and math.copysign(1.0, ev.price) == 1.0


def test_unknown_extra_fields_nulls_and_empty_optionals_are_tolerated():
    raw = payload(
        {"future_field": {"nested": [1, 2, {"x": None}]}, "ab_bucket": 7},
        price=None,
        quantity=None,
        category="",
        session_id=None,
    )
    ev = decode_event(raw, "browse", now=NOW)
    assert ev.quantity == 1 and ev.category is None and ev.price is None


def test_60kb_extra_value_is_ignored_not_fatal():
    raw = payload(blob="x" * 60_000)
    assert len(raw) < DEFAULT_LIMITS.max_message_bytes
    assert decode_event(raw, "browse", now=NOW).item_id == "sku-1"


def test_bytes_likes_and_str_are_accepted():
    raw = payload()
    for value in (bytearray(raw), memoryview(raw), raw.decode()):
        assert decode_event(value, "browse", now=NOW).event_id == "e-1"


def test_unknown_topic_type_is_a_programming_error_not_a_dead_letter():
    with pytest.raises(ValueError) as info:
        decode_event(payload(), "refund", now=NOW)
    assert not isinstance(info.value, ContractError)


# ---------------------------------------------------------------------------
# Malformed messages: one reason per kind
# ---------------------------------------------------------------------------

DEEP = b'{"event_id":"e","user_id":"u","item_id":"i","ts":1714564800000,"x":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
DEEP_OBJ = b'{"event_id":"e","user_id":"u","item_id":"i","ts":1714564800000,"x":' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001

MALFORMED = [
    # (id, raw, topic, reason, detail fragment)
    ("none", None, "browse", "empty_value", "tombstone"),
    ("empty", b"", "browse", "empty_value", "empty"),
    ("oversized", payload(blob="x" * 70_000), "browse", "oversized", "limit is 65536"),
    ("oversized_garbage", b"\xff" * 70_000, "browse", "oversized", "bytes"),
    ("bad_utf8_in_field", payload().replace(b'"u-1"', b'"u-\xff"'), "browse", "bad_encoding", "UTF-8"),
    ("bad_utf8_in_extra", payload(note="ok").replace(b'"ok"', b'"\xc3\x28"'), "browse", "bad_encoding", "UTF-8"),
    ("encoded_surrogate", payload(note="ok").replace(b'"ok"', b'"\xed\xa0\x80"'), "browse", "bad_encoding", "UTF-8"),
    ("lone_surrogate_escape_field", payload().replace(b'"u-1"', b'"\\ud800"'), "browse", "bad_encoding", "surrogate"),
    ("lone_surrogate_escape_extra", payload(note="ok").replace(b'"ok"', b'"a\\udc00"'), "browse", "bad_encoding", "surrogate"),
    ("not_json", b"user=u-1&item=sku-1", "browse", "not_json", "malformed"),
    ("truncated", payload()[:-5], "browse", "not_json", "truncated"),
    ("trailing_garbage", payload() + b"}", "browse", "not_json", "trailing"),
    ("bom", b"\xef\xbb\xbf" + payload(), "browse", "not_json", "byte-order mark"),
    ("nan_literal_price", payload(price=1.0).replace(b"1.0", b"NaN"), "purchase", "not_json", "NaN"),
    ("infinity_literal_price", payload(price=1.0).replace(b"1.0", b"-Infinity"), "purchase", "not_json", "`-Infinity` is not valid JSON"),
    ("array", b"[1, 2, 3]", "browse", "not_object", "array"),
    ("string", b'"hello"', "browse", "not_object", "str"),
    ("null_json", b"null", "browse", "not_object", "null"),
    ("deep_array_extra", DEEP, "browse", "too_deep", "depth"),
    ("deep_object_extra", DEEP_OBJ, "browse", "too_deep", "depth"),
    ("deep_array_top", b"[" * 10_000 + b"]" * 10_000, "browse", "not_object", "array"),
    ("missing_user_id", payload(user_id=DROP), "click", "missing_field", "`user_id`"),
    ("missing_ts", payload(ts=DROP), "click", "missing_field", "`ts`"),
    ("null_item_id", payload(item_id=None), "click", "missing_field", "`item_id`"),
    ("empty_event_id", payload(event_id=""), "click", "missing_field", "`event_id`"),
    ("int_user_id", payload(user_id=42), "click", "wrong_type", "`user_id` must be str, got int"),
    ("bool_quantity", payload(quantity=True), "purchase", "wrong_type", "`quantity`"),
    ("float_quantity", payload(quantity=2.5), "purchase", "wrong_type", "whole number"),
    ("duplicate_price", payload(price=3.0).rstrip(b"}") + b', "price": -5}', "purchase", "duplicate_field",
     "`price` appears more than once"),
    ("string_price", payload(price="9.99"), "purchase", "wrong_type", "`price`"),
    ("bool_ts", payload(ts=True), "click", "wrong_type", "RFC 3339"),
    ("list_ts", payload(ts=[TS_MS]), "click", "wrong_type", "`ts`"),
    ("negative_price", payload(price=-3.5), "purchase", "invalid_value", "field `price` must be >= 0, got -3.5"),
    ("huge_price", payload(price=2e9), "purchase", "invalid_value", "<= 1e+09"),
    ("overflow_price", payload(price=1.0).replace(b"1.0", b"1e999"), "purchase", "invalid_value", "finite"),
    ("negative_price_on_browse", payload(price=-1), "browse", "invalid_value", "`price`"),
    ("zero_quantity", payload(quantity=0), "purchase", "invalid_value", "`quantity`"),
    ("huge_quantity", payload(quantity=10**30), "purchase", "invalid_value", "`quantity`"),
    ("unknown_type", payload(type="refund"), "purchase", "unknown_type", "refund"),
    ("empty_type", payload(type=""), "purchase", "unknown_type", "`type`"),
    ("int_type", payload(type=1), "purchase", "wrong_type", "`type`"),
    ("type_mismatch", payload(type="purchase"), "browse", "type_mismatch", "'purchase'"),
    ("long_id", payload(user_id="u" * 129), "browse", "id_too_long", "129 characters"),
    ("long_order_id", payload(order_id="o" * 500), "purchase", "id_too_long", "`order_id`"),
    ("control_char_id", payload(item_id="sku\x00-1"), "browse", "invalid_value", "control"),
    ("c1_control_id", payload(item_id="sku\x85"), "browse", "invalid_value", "control"),
    ("whitespace_id", payload(user_id="   "), "browse", "invalid_value", "whitespace"),
    ("unicode_whitespace_id", payload(user_id="\u3000\u2003"), "browse", "invalid_value", "whitespace"),
    ("long_category", payload(category="c" * 513), "browse", "string_too_long", "`category`"),
    ("bad_iso_ts", payload(ts="yesterday"), "browse", "invalid_value", "RFC 3339"),
    ("impossible_date_ts", payload(ts="2024-02-30T00:00:00Z"), "browse", "invalid_value", "RFC 3339"),
    ("huge_ts_string", payload(ts="2024-05-01T12:00:00" + "0" * 1000), "browse", "invalid_value", "RFC 3339"),
    ("ts_in_seconds", payload(ts=TS_MS // 1000), "browse", "ts_out_of_range", "looks like epoch seconds"),
    ("ts_before_1990", payload(ts="1989-12-31T23:59:59Z"), "browse", "ts_out_of_range", "outside"),
    ("ts_far_future", payload(ts=int((NOW + 2 * 86400) * 1000)), "browse", "ts_out_of_range", "outside"),
    ("ts_negative", payload(ts=-1), "browse", "ts_out_of_range", "outside"),
    ("ts_bignum", payload(ts=10**4000), "browse", "ts_out_of_range", "outside"),
    ("ts_overflow_float", payload(ts=1.0).replace(b"1.0", b"1e999"), "browse", "ts_out_of_range", "range"),
]


@pytest.mark.parametrize(
    "raw, topic, reason, fragment", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
@pytest.mark.timeout(10)  # hostile input must not hang the worker (a hang fails, no timing asserted)
def test_malformed_message_is_rejected_with_reason(raw, topic, reason, fragment):
    err = reject(raw, topic)
    assert err.reason == reason, str(err)
    assert fragment in err.detail, err.detail
    assert len(err.detail) < 300  # details go into a topic; attacker data stays bounded


def test_every_reason_is_exercised_or_reserved():
    from tests.unit.test_contract_impressions import MALFORMED as MALFORMED_IMPRESSIONS

    exercised = {c[3] for c in MALFORMED} | {c[2] for c in MALFORMED_IMPRESSIONS}
    # Raised by the worker, not the decoder: key_mismatch needs the Kafka key,
    # processing_error marks a valid event the engine failed on.
    assert exercised | {"key_mismatch", "processing_error"} == REASONS


def test_reason_codes_are_closed():
    with pytest.raises(ValueError):
        ContractError("made_up_reason", "x")


def test_limits_are_configurable():
    raw = payload(user_id="u" * 40)
    assert reject(raw, limits=Limits(max_id_length=32)).reason == "id_too_long"
    assert reject(payload(), limits=Limits(max_message_bytes=10)).reason == "oversized"
    future = payload(ts=int((NOW + 3600) * 1000))
    assert decode_event(future, "browse", now=NOW).ts == NOW + 3600
    assert reject(future, limits=Limits(max_future_skew_s=60)).reason == "ts_out_of_range"


def test_contract_error_pickles_for_multiprocess_workers():
    err = ContractError("not_json", "boom")
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.reason, clone.detail, str(clone)) == ("not_json", "boom", "not_json: boom")


# ---------------------------------------------------------------------------
# Catalogue items
# ---------------------------------------------------------------------------


def test_decode_item_valid_and_defaults():
    item = decode_item(b'{"item_id":"i1","category":"shoes","price":59.9,"colour":"red"}')
    assert item == CatalogItem("i1", "shoes", 59.9, True, None)
    item = decode_item(b'{"item_id":"i1","category":"shoes","price":0,"available":false,"title":"A\\nB"}')
    assert item.available is False and item.title == "A\nB" and item.price == 0.0


@pytest.mark.parametrize(
    "raw, reason",
    [
        (None, "empty_value"),
        (b'{"item_id":"i1","price":1}', "missing_field"),
        (b'{"item_id":"i1","category":"","price":1}', "missing_field"),
        (b'{"item_id":"i1","category":"c","price":"1"}', "wrong_type"),
        (b'{"item_id":"i1","category":"c","price":1,"available":"yes"}', "wrong_type"),
        (b'{"item_id":"i1","category":"c","price":-1}', "invalid_value"),
        (b'{"item_id":"i1","category":"c","price":NaN}', "not_json"),
        (b'{"item_id":"i1","category":"c","price":1e999}', "invalid_value"),
        (b'{"item_id":"i1","category":"c","price":1,"title":"a\\u0000b"}', "invalid_value"),
        (b'{"item_id":"' + b"i" * 200 + b'","category":"c","price":1}', "id_too_long"),
        (b'[{"item_id":"i1"}]', "not_object"),
    ],
)
def test_decode_item_rejections(raw, reason):
    with pytest.raises(ContractError) as info:
        decode_item(raw)
    assert info.value.reason == reason, str(info.value)


# ---------------------------------------------------------------------------
# Encoding, dead letters, recommendations
# ---------------------------------------------------------------------------


def test_event_payload_round_trip_and_wire_form():
    ev = decode_event(
        payload(type="purchase", price=3.25, quantity=2, order_id="o", category="c", session_id="s"),
        "purchase",
        now=NOW,
    )
    wire = json.loads(event_payload(ev))
    assert wire["ts"] == TS_MS and isinstance(wire["ts"], int)
    assert wire["type"] == "purchase"
    assert decode_event(event_payload(ev), "purchase", now=NOW) == ev
    assert "price" not in json.loads(event_payload(decode_event(payload(), "browse", now=NOW)))


def test_dead_letter_keeps_original_bytes():
    value = b'{"user_id": "\xff\xfe' + b"x" * 5000
    err = reject(value)
    dl = dead_letter(err, topic="browse", partition=2, offset=99, key=b"\x00k", value=value, now=NOW)
    assert (dl.reason, dl.topic, dl.partition, dl.offset, dl.ts) == ("bad_encoding", "browse", 2, 99, NOW)
    assert base64.b64decode(dl.value) == value
    assert base64.b64decode(dl.key) == b"\x00k"
    assert dl.value_utf8.startswith('{"user_id": "\\xff\\xfe')
    assert len(dl.value_utf8.encode()) <= 1024 + 3 * 2  # two bytes shown as \xNN
    again = decode_dead_letter(encode(dl))
    assert again == dl and isinstance(again, DeadLetter)


def test_dead_letter_of_tombstone():
    err = reject(None)
    dl = dead_letter(err, topic="click", partition=0, offset=1, key=None, value=None)
    assert dl.key is None and dl.value is None and dl.value_utf8 is None
    assert abs(dl.ts - time.time()) < 5


def test_recommendation_round_trip():
    rec = Recommendation("u1", [ScoredItem("a", 0.5), ScoredItem("b", 0.25)], 7, NOW, segment=3)
    raw = encode(rec)
    assert json.loads(raw)["items"][0] == {"item_id": "a", "score": 0.5}
    assert decode_recommendation(raw) == rec


# ---------------------------------------------------------------------------
# Property test: anything in -> Event with invariants, or ContractError
# ---------------------------------------------------------------------------

def _check_invariants(ev: Event, topic: str) -> None:
    lim = DEFAULT_LIMITS
    assert isinstance(ev, Event) and ev.type == topic
    for name in ("event_id", "user_id", "item_id", "session_id", "order_id"):
        value = getattr(ev, name)
        if value is None:
            assert name in ("session_id", "order_id")
            continue
        assert isinstance(value, str) and 0 < len(value) <= lim.max_id_length
        assert not value.isspace()
        assert all(not (ord(c) < 32 or 127 <= ord(c) <= 159 or 0xD800 <= ord(c) <= 0xDFFF) for c in value)
    assert isinstance(ev.ts, float) and lim.min_ts <= ev.ts <= NOW + lim.max_future_skew_s
    assert ev.price is None or (isinstance(ev.price, float) and 0.0 <= ev.price <= lim.max_price)
    assert type(ev.quantity) is int and 1 <= ev.quantity <= lim.max_quantity
    assert ev.category is None or 0 < len(ev.category) <= lim.max_string_length
    # The wire form must be accepted again and give back the same event
    # (up to the millisecond rounding of ts).
    again = decode_event(event_payload(ev), topic, now=NOW)
    assert msgspec.structs.replace(again, ts=ev.ts) == ev
    assert abs(again.ts - ev.ts) <= 0.0005 + 1e-6  # + float ulp at 1e9 s


@settings(
    max_examples=10_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(messages())
def test_property_decode_event_total_and_sound(msg):
    topic, raw, expected, valid = msg
    try:
        ev = decode_event(raw, topic, now=NOW)
    except ContractError as err:
        assert err.reason in REASONS
        assert expected != "valid", f"valid message rejected: {err}"
        if expected is not None:
            assert err.reason == expected, f"{err} (expected {expected})"
        return
    # Any exception other than ContractError propagates and fails the test.
    assert expected in ("valid", None), f"accepted a message that should fail with {expected}: {raw[:200]!r}"
    _check_invariants(ev, topic)
    if valid is not None:
        doc, seconds = valid
        assert (ev.event_id, ev.user_id, ev.item_id) == (doc["event_id"], doc["user_id"], doc["item_id"])
        assert ev.ts == pytest.approx(seconds, abs=1e-6)
        assert ev.price == doc.get("price")
        assert ev.quantity == (doc.get("quantity") or 1)
        assert ev.category == doc.get("category")
