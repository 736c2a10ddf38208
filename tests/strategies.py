"""Hypothesis strategies for wire messages: valid events and every way one can be wrong.

Shared by the contract's property test and the broker fuzz test; each drawn
message carries the reason the contract must give it (or ``"valid"``).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

from hypothesis import strategies as st

from streams.contract import DEFAULT_LIMITS, EVENT_TYPES

NOW = 1_750_000_000.0  # fixed "now" so future-skew checks are reproducible

# Strategies are module-level constants: building them inside the composite
# costs more than drawing from them and would blow the time budget.
_SAFE_TEXT = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"))
_ids = st.text(_SAFE_TEXT, min_size=1, max_size=12).filter(lambda s: not s.isspace())
_MIN_DT = datetime(1990, 1, 2)
_MAX_DT = datetime.fromtimestamp(NOW, timezone.utc).replace(tzinfo=None)
_OFFSETS = st.sampled_from(
    [timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
)
_TOPICS = st.sampled_from(EVENT_TYPES)
_TS_KINDS = st.sampled_from(["ms_int", "ms_float", "iso", "iso_z"])
_MS_INT = st.integers(int(DEFAULT_LIMITS.min_ts * 1000), int(NOW * 1000))
_MS_FLOAT = st.floats(DEFAULT_LIMITS.min_ts * 1000, NOW * 1000)
_DATETIMES = st.datetimes(_MIN_DT, _MAX_DT, timezones=_OFFSETS)
_BOOLS = st.booleans()
_OPTIONAL = st.fixed_dictionaries(
    {},
    optional={
        "session_id": st.none() | _ids,
        "order_id": st.none() | _ids,
        "rec_id": st.none() | _ids,  # the list a click or purchase came from (validated on every type)
        "category": st.none() | st.text(_SAFE_TEXT, min_size=1, max_size=20).filter(lambda s: not s.isspace()),
        "price": st.none() | st.floats(0, 1e9),
        "quantity": st.none() | st.integers(1, 100_000),
        "ab_bucket": st.integers() | st.text(max_size=5) | st.lists(st.booleans(), max_size=3),
    },
)


@st.composite
def valid_docs(draw):
    """A valid wire document plus the epoch seconds its ts must decode to."""
    topic = draw(_TOPICS)
    doc = {"event_id": draw(_ids), "user_id": draw(_ids), "item_id": draw(_ids)}
    ts_kind = draw(_TS_KINDS)
    if ts_kind == "ms_int":
        doc["ts"] = draw(_MS_INT)
        seconds = doc["ts"] / 1000
    elif ts_kind == "ms_float":
        doc["ts"] = draw(_MS_FLOAT)
        seconds = doc["ts"] / 1000
    else:
        dt = draw(_DATETIMES)
        text = dt.isoformat()
        if ts_kind == "iso_z" and dt.tzinfo is timezone.utc:
            text = text.replace("+00:00", "Z")
        doc["ts"] = text
        seconds = (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
    if draw(_BOOLS):
        doc["type"] = topic
    doc.update(draw(_OPTIONAL))
    return topic, doc, seconds


_ID_FIELDS = st.sampled_from(["event_id", "user_id", "item_id"])
_REQUIRED = st.sampled_from(["event_id", "user_id", "item_id", "ts"])
_KINDS = st.sampled_from(
    [
        "drop", "null", "empty", "wrong_type", "control", "too_long", "whitespace",
        "ts_seconds", "ts_future", "ts_garbage", "ts_type", "neg_price", "big_price",
        "price_str", "qty_out_of_range", "qty_float", "qty_bool", "type_unknown", "type_other",
        "long_category", "nan", "truncate", "bad_utf8", "not_object", "random_bytes",
        "random_json", "oversize",
    ]
)
_NOT_STR = st.integers() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.lists(st.integers(), max_size=2)
_CONTROL = st.characters(categories=("Cc",))
_LONG_LEN = st.integers(129, 2000)
_WHITESPACE = st.sampled_from([" ", "  ", "\u00a0", "\u2003 "])
_TS_SECONDS = st.integers(0, int(NOW))
_TS_FUTURE = st.integers(int((NOW + 86400) * 1000) + 1, 10**20)
_TS_GARBAGE = st.text(max_size=10).filter(lambda s: not s.strip()[:1].isdigit())
_TS_WRONG = st.booleans() | st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)
_NEG_PRICE = st.floats(max_value=-1e-300, allow_infinity=False)
_BIG_PRICE = st.floats(min_value=1.0000001e9, allow_infinity=False)
_SHORT_TEXT = st.text(max_size=5)
_BAD_QTY = st.integers(max_value=0) | st.integers(min_value=100_001)
_ANY_FLOAT = st.floats(allow_nan=False, allow_infinity=False)
_NOT_A_TYPE = st.text(max_size=8).filter(lambda s: s not in EVENT_TYPES)
_LONG_CAT = st.integers(513, 3000)
_NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
_BAD_UTF8 = st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"])
_NOT_OBJECT = st.lists(st.integers(), max_size=3) | st.integers() | st.text(max_size=5) | st.none() | st.booleans()
_BYTES = st.binary(max_size=64)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=8,
)


def _mutate(draw, doc):
    """Break a valid document in one way; return (raw, expected reason or
    None when several reasons are legitimate)."""
    kind = draw(_KINDS)
    doc = dict(doc)
    dump = lambda d: json.dumps(d).encode()  # noqa: E731 - a one-line helper of the strategy
    if kind == "drop":
        del doc[draw(_REQUIRED)]
        return dump(doc), "missing_field"
    if kind == "null":
        doc[draw(_REQUIRED)] = None
        return dump(doc), "missing_field"
    if kind == "empty":
        doc[draw(_ID_FIELDS)] = ""
        return dump(doc), "missing_field"
    if kind == "wrong_type":
        doc[draw(_ID_FIELDS)] = draw(_NOT_STR)
        return dump(doc), "wrong_type"
    if kind == "control":
        field = draw(_ID_FIELDS)
        doc[field] += draw(_CONTROL)
        return dump(doc), "invalid_value"
    if kind == "too_long":
        doc[draw(_ID_FIELDS)] = "x" * draw(_LONG_LEN)
        return dump(doc), "id_too_long"
    if kind == "whitespace":
        doc[draw(_ID_FIELDS)] = draw(_WHITESPACE)
        return dump(doc), "invalid_value"
    if kind == "ts_seconds":
        doc["ts"] = draw(_TS_SECONDS)
        return dump(doc), "ts_out_of_range"
    if kind == "ts_future":
        doc["ts"] = draw(_TS_FUTURE)
        return dump(doc), "ts_out_of_range"
    if kind == "ts_garbage":
        doc["ts"] = draw(_TS_GARBAGE)
        return dump(doc), "invalid_value"
    if kind == "ts_type":
        doc["ts"] = draw(_TS_WRONG)
        return dump(doc), "wrong_type"
    if kind == "neg_price":
        doc["price"] = draw(_NEG_PRICE)
        return dump(doc), "invalid_value"
    if kind == "big_price":
        doc["price"] = draw(_BIG_PRICE)
        return dump(doc), "invalid_value"
    if kind == "price_str":
        doc["price"] = draw(_SHORT_TEXT)
        return dump(doc), "wrong_type"
    if kind == "qty_out_of_range":
        doc["quantity"] = draw(_BAD_QTY)
        return dump(doc), "invalid_value"
    if kind == "qty_float":
        doc["quantity"] = draw(_ANY_FLOAT.filter(lambda f: not f.is_integer()))
        return dump(doc), "wrong_type"
    if kind == "qty_bool":
        doc["quantity"] = draw(_BOOLS)
        return dump(doc), "wrong_type"
    if kind == "type_unknown":
        doc["type"] = draw(_NOT_A_TYPE)
        return dump(doc), "unknown_type"
    if kind == "type_other":
        return None, "type_mismatch"  # resolved by the caller, which knows the topic
    if kind == "long_category":
        doc["category"] = "c" * draw(_LONG_CAT)
        return dump(doc), "string_too_long"
    if kind == "nan":
        doc["price"] = draw(_NON_FINITE)
        return dump(doc), "not_json"  # Python's json emits NaN/Infinity literals
    raw = dump(doc)
    if kind == "truncate":
        return raw[: draw(st.integers(1, len(raw) - 1))], "not_json"
    if kind == "bad_utf8":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(_BAD_UTF8) + raw[at:], "bad_encoding"
    if kind == "not_object":
        return json.dumps(draw(_NOT_OBJECT)).encode(), "not_object"
    if kind == "random_bytes":
        return draw(_BYTES), None
    if kind == "random_json":
        return json.dumps(draw(_JSON)).encode(), None
    assert kind == "oversize"
    doc["pad"] = "p" * 66_000
    return dump(doc), "oversized"


_VALID_OR_NOT = st.integers(0, 2)


@st.composite
def messages(draw):
    topic, doc, seconds = draw(valid_docs())
    if draw(_VALID_OR_NOT) == 0:
        return topic, json.dumps(doc, ensure_ascii=draw(_BOOLS)).encode(), "valid", (doc, seconds)
    raw, expected = _mutate(draw, doc)
    if expected == "type_mismatch":
        doc = dict(doc, type=draw(st.sampled_from([t for t in EVENT_TYPES if t != topic])))
        raw = json.dumps(doc).encode()
    return topic, raw, expected, None


