"""The recostream wire contract, declared once.

Every message that enters or leaves the stream workers is described here:

* input topics ``browse``, ``click`` and ``purchase`` (keyed by ``user_id``,
  JSON values) are decoded with :func:`decode_event` into :class:`Event`;
* the compacted ``items`` topic (keyed by ``item_id``) is decoded with
  :func:`decode_item` into :class:`CatalogItem`;
* rejected messages become :class:`DeadLetter` records;
* workers publish :class:`Recommendation` payloads to Redis and to the
  ``recommendations`` topic.

Decoding is the hot path of every worker, so it is a single typed
``msgspec`` decode into a private *wire* struct followed by a handful of cheap
Python checks.  Every failure is a :class:`ContractError` whose ``reason`` is
one of :data:`REASONS` -- a small, bounded set that is safe to use as a
Prometheus label -- and whose ``detail`` is meant for humans reading the
dead-letter topic.

Examples
--------
>>> ev = decode_event(
...     b'{"event_id": "e1", "user_id": "u1", "item_id": "i1",'
...     b' "ts": "2024-05-01T12:00:00Z"}',
...     "browse",
... )
>>> ev.type, ev.ts
('browse', 1714564800.0)
>>> event_payload(ev)
b'{"event_id":"e1","user_id":"u1","item_id":"i1","ts":1714564800000,"type":"browse","quantity":1}'
>>> try:
...     decode_event(b'{"event_id": "e1"}', "click")
... except ContractError as err:
...     print(err)
missing_field: field `user_id` is required
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Union

import msgspec

from models.events import EVENT_TYPES

__all__ = [
    "EVENT_TYPES",
    "REASONS",
    "Limits",
    "DEFAULT_LIMITS",
    "ContractError",
    "Event",
    "CatalogItem",
    "ScoredItem",
    "Recommendation",
    "DeadLetter",
    "decode_event",
    "decode_item",
    "decode_recommendation",
    "decode_dead_letter",
    "encode",
    "event_payload",
    "dead_letter",
]


REASONS: frozenset[str] = frozenset(
    {
        "empty_value",  # None (tombstone) or zero-length value
        "oversized",  # larger than Limits.max_message_bytes (checked before parsing)
        "bad_encoding",  # invalid UTF-8, or a lone UTF-16 surrogate escape
        "not_json",  # syntactically invalid JSON (incl. NaN/Infinity literals)
        "too_deep",  # nesting deeper than the decoder's recursion limit
        "not_object",  # valid JSON whose top level is not an object
        "missing_field",  # required field absent, null or empty
        "wrong_type",  # field has the wrong JSON type (bool is not int, 1 is not "1")
        "invalid_value",  # right type, unacceptable value (negative price, bad ts string...)
        "unknown_type",  # payload `type` is not one of EVENT_TYPES
        "type_mismatch",  # payload `type` disagrees with the topic it arrived on
        "id_too_long",  # an identifier longer than Limits.max_id_length
        "string_too_long",  # a free-text field longer than Limits.max_string_length
        "ts_out_of_range",  # before Limits.min_ts or too far in the future
        "key_mismatch",  # Kafka key missing or not the payload's user_id (checked by the worker)
        "duplicate_field",  # a field appears twice in one JSON object
        "processing_error",  # valid event on which the engine raised (a bug): parked for replay
    }
)
"""Every possible :attr:`ContractError.reason`; bounded so it can be a metric label."""


class Limits(msgspec.Struct, frozen=True):
    """Bounds enforced while decoding.

    Parameters
    ----------
    max_message_bytes
        Largest accepted raw value; checked before any parsing so a hostile
        producer cannot make the worker parse megabytes.
    max_id_length
        Longest identifier (``event_id``, ``user_id``, ``item_id``,
        ``session_id``, ``order_id``), in code points.
    max_string_length
        Longest free-text field (``category``, ``title``), in code points.
    min_ts
        Earliest accepted event time, epoch seconds (default 1990-01-01 UTC).
        Also catches producers that send epoch *seconds* where milliseconds
        are expected: those land in January 1970.
    max_future_skew_s
        How far in the future (relative to ``now``) an event time may be.
    max_price
        Largest accepted price.
    max_quantity
        Largest accepted purchase quantity.

    Examples
    --------
    >>> Limits().max_message_bytes
    65536
    >>> Limits(max_id_length=64).max_id_length
    64
    """

    max_message_bytes: int = 65536
    max_id_length: int = 128
    max_string_length: int = 512
    min_ts: float = 631152000.0  # 1990-01-01T00:00:00Z
    max_future_skew_s: float = 86400.0
    max_price: float = 1e9
    max_quantity: int = 100000


DEFAULT_LIMITS = Limits()


class ContractError(ValueError):
    """A message violates the wire contract.

    Parameters
    ----------
    reason
        Short code from :data:`REASONS` (a metric label).
    detail
        Human-readable explanation.

    Examples
    --------
    >>> err = ContractError("invalid_value", "field `price` must be >= 0, got -3.5")
    >>> str(err)
    'invalid_value: field `price` must be >= 0, got -3.5'
    >>> err.reason
    'invalid_value'
    """

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            # A typo here would silently create a new metric series.
            raise ValueError(f"unknown ContractError reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # keep picklable despite the 2-arg __init__
        return (type(self), (self.reason, self.detail))


# --------------------------------------------------------------------------
# Public structs
# --------------------------------------------------------------------------


class Event(msgspec.Struct, frozen=True, gc=False):
    """A validated, normalised shop event.

    ``ts`` is always epoch seconds (UTC) regardless of the wire format, and
    ``type`` always equals the topic the event arrived on.  ``gc=False``
    because events hold only scalars and there are many of them in flight.

    Examples
    --------
    >>> Event("e1", "u1", "i1", "purchase", 1714564800.0, price=9.5).quantity
    1
    """

    event_id: str
    user_id: str
    item_id: str
    type: str
    ts: float
    session_id: str | None = None
    category: str | None = None
    price: float | None = None
    quantity: int = 1
    order_id: str | None = None


class CatalogItem(msgspec.Struct, frozen=True, gc=False):
    """A catalogue entry from the compacted ``items`` topic.

    Examples
    --------
    >>> decode_item(b'{"item_id": "i1", "category": "shoes", "price": 59.9}')
    CatalogItem(item_id='i1', category='shoes', price=59.9, available=True, title=None)
    """

    item_id: str
    category: str
    price: float
    available: bool = True
    title: str | None = None


class ScoredItem(msgspec.Struct, frozen=True, gc=False):
    """One recommended item and its score."""

    item_id: str
    score: float


class Recommendation(msgspec.Struct):
    """Top-N recommendations for one user, written to Redis and the
    ``recommendations`` topic.

    Examples
    --------
    >>> rec = Recommendation("u1", [ScoredItem("i9", 0.75)], model_version=3,
    ...                      generated_at=1714564800.0)
    >>> encode(rec)
    b'{"user_id":"u1","items":[{"item_id":"i9","score":0.75}],"model_version":3,"generated_at":1714564800.0,"segment":null}'
    >>> decode_recommendation(encode(rec)) == rec
    True
    """

    user_id: str
    items: list[ScoredItem]
    model_version: int
    generated_at: float
    segment: int | None = None


class DeadLetter(msgspec.Struct):
    """A rejected message, as published to the dead-letter topic.

    ``key`` and ``value`` are base64 of the ORIGINAL bytes so the message can
    be replayed byte-for-byte; ``value_utf8`` is a lossy, truncated preview
    for humans only.
    """

    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str | None
    value_utf8: str | None
    ts: float
    #: Length of the original value in bytes.
    value_size: int = 0
    #: SHA-256 (hex) of the whole original value; with ``truncated``, what identifies it.
    value_sha256: str | None = None
    #: ``value`` holds only the first bytes of the original (see ``dead_letter``).
    truncated: bool = False


# --------------------------------------------------------------------------
# Wire (private) structs: what producers actually send
# --------------------------------------------------------------------------
# Optional fields accept JSON null as "absent": producers that serialise
# `None` should not be dead-lettered for it.


class _WireEvent(msgspec.Struct, omit_defaults=True, gc=False):
    event_id: str
    user_id: str
    item_id: str
    ts: Union[str, int, float]
    type: Union[str, None] = None
    session_id: Union[str, None] = None
    category: Union[str, None] = None
    price: Union[float, None] = None
    quantity: Union[int, float, None] = None
    order_id: Union[str, None] = None


class _WireItem(msgspec.Struct, gc=False):
    item_id: str
    category: str
    price: float
    available: Union[bool, None] = None
    title: Union[str, None] = None


_EVENT_DECODER = msgspec.json.Decoder(_WireEvent)
_ITEM_DECODER = msgspec.json.Decoder(_WireItem)
_RECO_DECODER = msgspec.json.Decoder(Recommendation)
_DEAD_DECODER = msgspec.json.Decoder(DeadLetter)
_ENCODER = msgspec.json.Encoder()

_EVENT_TYPE_SET = frozenset(EVENT_TYPES)
_CANONICAL_TYPE = {t: t for t in EVENT_TYPES}  # share one str object per type
_MAX_TS_STRING = 64  # longest plausible RFC 3339 string; bounds parser work

# C0/C1 control characters and (defensively) surrogates.  msgspec already
# refuses lone surrogates, this only matters if that ever changes.
_BAD_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Free text (titles) may legitimately contain tabs and line breaks.
_BAD_TEXT_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_LONE_SURROGATE_ESCAPE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
_EXPECTED_GOT = re.compile(r"^Expected `(?P<exp>[^`]+)`, got `(?P<got>[^`]+)`")
_AT_PATH = re.compile(r" - at `\$(?:\.(?P<field>[A-Za-z_][A-Za-z0-9_]*))?[^`]*`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")


def _short(value: Any, limit: int = 40) -> str:
    """repr() bounded so hostile values cannot bloat dead-letter details."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------
# Error translation (cold path)
# --------------------------------------------------------------------------


def _from_validation_error(exc: msgspec.ValidationError, ts_field: str | None) -> ContractError:
    msg = str(exc)
    m = _MISSING.match(msg)
    if m:
        return ContractError("missing_field", f"field `{m['field']}` is required")
    at = _AT_PATH.search(msg)
    field = at["field"] if at else None
    m = _EXPECTED_GOT.match(msg)
    if m:
        expected, got = m["exp"], m["got"]
        if field is None:
            # Only the top level has no path: the document is not an object.
            return ContractError("not_object", f"message must be a JSON object, got {got}")
        if got == "null":
            # Every optional field accepts null, so a null here is a required field.
            return ContractError("missing_field", f"field `{field}` is required, got null")
        if field == ts_field:
            expected = "an RFC 3339 date-time string or an epoch-milliseconds number"
        return ContractError("wrong_type", f"field `{field}` must be {expected}, got {got}")
    if msg.startswith(("Number out of range", "Integer value out of range")):
        if field == ts_field:
            return ContractError("ts_out_of_range", f"field `{field}` is out of range")
        return ContractError("invalid_value", f"field `{field}` is out of range (must be finite)")
    # Unknown msgspec wording (e.g. after an upgrade): still a bounded reason.
    return ContractError("invalid_value", msg[:200])


def _from_decode_error(raw: bytes, exc: Exception) -> ContractError:
    msg = str(exc)
    if raw[:3] == b"\xef\xbb\xbf":
        return ContractError("not_json", "message starts with a UTF-8 byte-order mark")
    # Tell the two "almost JSON" producer bugs apart from real garbage, because
    # msgspec's wording misleads (a lone surrogate in an ignored field reads as
    # "truncated").  The stdlib parser accepts both NaN/Infinity literals and
    # lone surrogates, so if it succeeds one of those is the culprit.  Cold
    # path only, and the input is already bounded by max_message_bytes.
    non_finite = []

    def _flag(literal: str) -> float:
        non_finite.append(literal)
        return 0.0

    try:
        json.loads(raw, parse_constant=_flag)
    except (ValueError, RecursionError):
        return ContractError("not_json", msg)
    if non_finite:
        return ContractError(
            "not_json", f"`{non_finite[0]}` is not valid JSON (numbers must be finite)"
        )
    if _LONE_SURROGATE_ESCAPE.search(raw):
        return ContractError("bad_encoding", "lone UTF-16 surrogate escape in a string")
    return ContractError("not_json", msg)


def _preflight(raw: Any, limits: Limits) -> bytes:
    """Cheap checks that must happen before the parser sees the bytes."""
    if raw is None:
        raise ContractError("empty_value", "message value is null (tombstone)")
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ContractError("bad_encoding", f"value is not encodable as UTF-8: {exc.reason}") from None
    elif not isinstance(raw, bytes):
        raw = bytes(raw)  # bytearray / memoryview from some client libraries
    n = len(raw)
    if n == 0:
        raise ContractError("empty_value", "message value is empty")
    if n > limits.max_message_bytes:
        raise ContractError(
            "oversized", f"message is {n} bytes, limit is {limits.max_message_bytes}"
        )
    # msgspec does not validate UTF-8 inside fields it skips, and raises a bare
    # UnicodeDecodeError for fields it keeps; one up-front check covers both.
    # isascii() is a few ns and true for nearly all real traffic.
    if not raw.isascii():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ContractError(
                "bad_encoding", f"invalid UTF-8 at byte {exc.start}: {exc.reason}"
            ) from None
    return raw


def _parse(decoder: msgspec.json.Decoder, raw: bytes, ts_field: str | None) -> Any:
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise _from_validation_error(exc, ts_field) from None
    except msgspec.DecodeError as exc:
        raise _from_decode_error(raw, exc) from None
    except RecursionError:
        raise ContractError("too_deep", "JSON nesting exceeds the decoder's depth limit") from None
    except UnicodeDecodeError as exc:  # unreachable after _preflight; belt and braces
        raise ContractError("bad_encoding", f"invalid UTF-8: {exc.reason}") from None


# --------------------------------------------------------------------------
# Field checks (hot path: keep them branch-light)
# --------------------------------------------------------------------------

# How each contract field appears as a key: `"name"` then optional whitespace and `:`.
# Inside a JSON string a quote is escaped, so a second match is either a second key
# or a string value holding `\"name\":`, which the exact check below tells apart.
_EVENT_FIELD_KEYS = tuple(re.compile(rb'"' + name.encode() + rb'"\s*:') for name in _WireEvent.__struct_fields__)


def _check_no_duplicate_fields(raw: bytes, keys: tuple[re.Pattern[bytes], ...]) -> None:
    r"""Reject a message in which a contract field appears twice (a decoder keeps only the last).

    A byte search per field on the hot path; the exact check (the standard
    library's parser, which sees every key of every object) runs only when a
    field name occurs more than once.

    >>> _check_no_duplicate_fields(b'{"price":-5,"quantity":1,"price":3}', _EVENT_FIELD_KEYS)
    Traceback (most recent call last):
    ...
    streams.contract.ContractError: duplicate_field: field `price` appears more than once
    >>> _check_no_duplicate_fields(b'{"price":3,"note":"\\"price\\": 1"}', _EVENT_FIELD_KEYS)
    """
    for pattern in keys:
        if len(pattern.findall(raw, 0)) > 1:
            def pairs(items: list) -> dict:
                seen: set = set()
                for key, _ in items:
                    if key in seen:
                        raise ContractError("duplicate_field", f"field `{key[:40]}` appears more than once")
                    seen.add(key)
                return dict(items)

            json.loads(raw, object_pairs_hook=pairs)
            return



def _check_id(value: str, field: str, max_len: int) -> None:
    if not value:
        raise ContractError("missing_field", f"field `{field}` must not be empty")
    if len(value) > max_len:
        raise ContractError(
            "id_too_long", f"field `{field}` is {len(value)} characters, limit is {max_len}"
        )
    # ASCII fast path: isprintable() is exactly "no C0 control / DEL" here.
    if value.isascii() and value.isprintable():
        if value.isspace():
            raise ContractError("invalid_value", f"field `{field}` is only whitespace")
        return
    if _BAD_CHARS.search(value):
        raise ContractError("invalid_value", f"field `{field}` contains control characters")
    if value.isspace():
        raise ContractError("invalid_value", f"field `{field}` is only whitespace")


def _check_text(value: str, field: str, max_len: int, pattern: re.Pattern[str]) -> None:
    if len(value) > max_len:
        raise ContractError(
            "string_too_long", f"field `{field}` is {len(value)} characters, limit is {max_len}"
        )
    if not (value.isascii() and value.isprintable()) and pattern.search(value):
        raise ContractError("invalid_value", f"field `{field}` contains control characters")


def _check_price(price: float, max_price: float) -> float:
    if price != price or price in (math.inf, -math.inf):  # unreachable from JSON; cheap
        raise ContractError("invalid_value", f"field `price` must be finite, got {price}")
    if price < 0.0:
        raise ContractError("invalid_value", f"field `price` must be >= 0, got {price}")
    if price > max_price:
        raise ContractError("invalid_value", f"field `price` must be <= {max_price:g}, got {price}")
    return price + 0.0  # folds -0.0 into 0.0


_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(?:([Zz])|([+-])(\d{2}):(\d{2}))")


def _rfc3339_seconds(ts: str) -> float:
    """Epoch seconds of an RFC 3339 date-time; raises ValueError for anything else.

    Date and time with seconds and an offset are required (``Z``/``z`` or
    ``+hh:mm``); the separator is ``T``, ``t`` or a space (RFC 3339 5.6); a
    leap second (``:60``) is the instant after ``:59``. Date-only, hour-only,
    week dates and naive times are ISO 8601 but not RFC 3339, and are refused.

    >>> _rfc3339_seconds("2024-05-01t12:00:00.5z"), _rfc3339_seconds("2016-12-31T23:59:60Z")
    (1714564800.5, 1483228800.0)
    >>> _rfc3339_seconds("2024-05-01")
    Traceback (most recent call last):
    ...
    ValueError: not an RFC 3339 date-time
    """
    m = _RFC3339.fullmatch(ts)
    if m is None:
        raise ValueError("not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if m.group(9):
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 23 or om > 59:
            raise ValueError("offset out of range")
        offset = timedelta(hours=oh, minutes=om) * (1 if m.group(9) == "+" else -1)
    else:
        offset = timedelta(0)
    leap = second == 60
    dt = datetime(year, month, day, hour, minute, 59 if leap else second, tzinfo=timezone(offset))
    return dt.timestamp() + leap + (float(m.group(7)) if m.group(7) else 0.0)


def _ts_seconds(ts: str | int | float, min_ts: float, max_ts: float) -> float:
    if isinstance(ts, str):
        if len(ts) > _MAX_TS_STRING:
            raise ContractError("invalid_value", f"field `ts` is not an RFC 3339 date-time: {_short(ts)}")
        try:
            seconds = _rfc3339_seconds(ts)
        except (ValueError, OverflowError, OSError):
            hint = " (epoch milliseconds must be a JSON number, not a string)" if ts.strip().isdigit() else ""
            raise ContractError(
                "invalid_value", f"field `ts` is not an RFC 3339 date-time: {_short(ts)}{hint}"
            ) from None
    else:
        # Compare in milliseconds first: a 4000-digit int would overflow float division.
        if not (min_ts * 1000.0 <= ts <= max_ts * 1000.0):
            # The classic producer bug: epoch seconds where milliseconds are due.
            hint = " (looks like epoch seconds; ms expected)" if min_ts <= ts <= max_ts else ""
            raise ContractError(
                "ts_out_of_range",
                f"field `ts` = {_short(ts)} ms is outside [{min_ts:.0f}, {max_ts:.0f}] s{hint}",
            )
        return ts / 1000.0
    if not (min_ts <= seconds <= max_ts):
        raise ContractError(
            "ts_out_of_range", f"field `ts` = {_short(ts)} is outside [{min_ts:.0f}, {max_ts:.0f}] s"
        )
    return seconds


# --------------------------------------------------------------------------
# Public decoders / encoders
# --------------------------------------------------------------------------


def decode_event(
    raw: bytes | None,
    topic_type: str | None,
    limits: Limits = DEFAULT_LIMITS,
    now: float | None = None,
) -> Event:
    """Decode and validate one event from an input topic.

    Parameters
    ----------
    raw
        The Kafka message value (``bytes``; ``bytearray``/``memoryview``/``str``
        are tolerated).
    topic_type
        The event type implied by the topic, one of :data:`EVENT_TYPES`, or
        ``None`` for a mixed topic carrying every type: then the payload's
        ``type`` field is required and decides.
    limits
        Bounds to enforce.
    now
        Reference time (epoch seconds) for the future-skew check; defaults to
        ``time.time()``.

    Returns
    -------
    Event
        With ``ts`` normalised to epoch seconds UTC.

    Raises
    ------
    ContractError
        If the message violates the contract; ``reason`` is in :data:`REASONS`.
    ValueError
        (not a ContractError) if ``topic_type`` itself is unknown: that is a
        worker misconfiguration, not bad data, and must not be dead-lettered.

    Examples
    --------
    >>> decode_event(b'{"event_id":"e","user_id":"u","item_id":"i",'
    ...              b'"ts":1714564800000,"price":12.5,"quantity":2}', "purchase").price
    12.5
    >>> decode_event(b'{"event_id":"e","user_id":"u","item_id":"i","ts":1,'
    ...              b'"type":"click"}', "browse")
    Traceback (most recent call last):
    ...
    streams.contract.ContractError: type_mismatch: payload type 'click' arrived on the 'browse' topic
    """
    etype = _CANONICAL_TYPE.get(topic_type) if topic_type is not None else None
    if etype is None and topic_type is not None:
        raise ValueError(f"topic_type must be one of {EVENT_TYPES} or None, got {topic_type!r}")
    raw = _preflight(raw, limits)
    w: _WireEvent = _parse(_EVENT_DECODER, raw, "ts")
    _check_no_duplicate_fields(raw, _EVENT_FIELD_KEYS)

    max_id = limits.max_id_length
    _check_id(w.event_id, "event_id", max_id)
    _check_id(w.user_id, "user_id", max_id)
    _check_id(w.item_id, "item_id", max_id)

    t = w.type
    if etype is None:  # mixed topic: the payload says
        if t is None:
            raise ContractError("missing_field", "field `type` is required on a topic that carries every event type")
        if t not in _EVENT_TYPE_SET:
            raise ContractError(
                "unknown_type", f"field `type` must be one of {'|'.join(EVENT_TYPES)}, got {_short(t)}"
            )
        etype = t
    elif t is not None and t != etype:
        if t in _EVENT_TYPE_SET:
            raise ContractError(
                "type_mismatch", f"payload type {t!r} arrived on the {etype!r} topic"
            )
        raise ContractError(
            "unknown_type", f"field `type` must be one of {'|'.join(EVENT_TYPES)}, got {_short(t)}"
        )

    if now is None:
        now = time.time()
    ts = _ts_seconds(w.ts, limits.min_ts, now + limits.max_future_skew_s)

    # Empty optional strings mean "not provided" (common with form-encoded producers).
    session_id = w.session_id or None
    if session_id is not None:
        _check_id(session_id, "session_id", max_id)
    order_id = w.order_id or None
    if order_id is not None:
        _check_id(order_id, "order_id", max_id)
    category = w.category or None
    if category is not None:
        _check_text(category, "category", limits.max_string_length, _BAD_CHARS)
        if category.isspace():
            raise ContractError("invalid_value", "field `category` is only whitespace")

    price = w.price
    if price is not None:
        price = _check_price(price, limits.max_price)

    quantity = w.quantity
    if quantity is None:
        quantity = 1
    elif quantity.__class__ is float:  # JSON has one number type: 2.0 is the integer 2, 2.5 is not
        if not quantity.is_integer():
            raise ContractError("wrong_type", f"field `quantity` must be a whole number, got {_short(quantity)}")
        quantity = int(quantity)
    if not (1 <= quantity <= limits.max_quantity):
        raise ContractError(
            "invalid_value",
            f"field `quantity` must be in [1, {limits.max_quantity}], got {_short(quantity)}",
        )

    return Event(
        event_id=w.event_id,
        user_id=w.user_id,
        item_id=w.item_id,
        type=etype,
        ts=ts,
        session_id=session_id,
        category=category,
        price=price,
        quantity=quantity,
        order_id=order_id,
    )


def decode_item(raw: bytes | None, limits: Limits = DEFAULT_LIMITS) -> CatalogItem:
    """Decode and validate one catalogue item from the ``items`` topic.

    A ``None`` value is a compaction tombstone (item deleted); callers should
    handle tombstones before calling this -- here it is rejected as
    ``empty_value`` like any other missing payload.

    Examples
    --------
    >>> decode_item(b'{"item_id":"i2","category":"bags","price":10,"available":false,'
    ...             b'"title":"Tote","extra":[1,2]}')
    CatalogItem(item_id='i2', category='bags', price=10.0, available=False, title='Tote')
    >>> decode_item(b'{"item_id":"i2","category":"bags","price":-1}')
    Traceback (most recent call last):
    ...
    streams.contract.ContractError: invalid_value: field `price` must be >= 0, got -1.0
    """
    raw = _preflight(raw, limits)
    w: _WireItem = _parse(_ITEM_DECODER, raw, None)
    _check_id(w.item_id, "item_id", limits.max_id_length)
    if not w.category:
        raise ContractError("missing_field", "field `category` must not be empty")
    _check_text(w.category, "category", limits.max_string_length, _BAD_CHARS)
    if w.category.isspace():
        raise ContractError("invalid_value", "field `category` is only whitespace")
    price = _check_price(w.price, limits.max_price)
    title = w.title or None
    if title is not None:
        _check_text(title, "title", limits.max_string_length, _BAD_TEXT_CHARS)
    return CatalogItem(
        item_id=w.item_id,
        category=w.category,
        price=price,
        available=True if w.available is None else w.available,
        title=title,
    )


def decode_recommendation(raw: bytes) -> Recommendation:
    """Decode a :class:`Recommendation` we produced ourselves (trusted input:
    plain msgspec errors propagate)."""
    return _RECO_DECODER.decode(raw)


def decode_dead_letter(raw: bytes) -> DeadLetter:
    """Decode a :class:`DeadLetter` record (for replay tooling)."""
    return _DEAD_DECODER.decode(raw)


def encode(obj: Any) -> bytes:
    """Encode any contract struct (or plain JSON-able value) as compact JSON.

    Note that an :class:`Event` encodes with its *internal* form (``ts`` in
    seconds); use :func:`event_payload` to produce the wire form.  msgspec
    encodes non-finite floats as ``null``.

    Examples
    --------
    >>> encode(ScoredItem("i1", 1.5))
    b'{"item_id":"i1","score":1.5}'
    """
    return _ENCODER.encode(obj)


def event_payload(event: Event) -> bytes:
    """The wire form of ``event`` (``ts`` as integer epoch milliseconds,
    ``None`` fields omitted), accepted by :func:`decode_event`.

    Sub-millisecond precision of ``ts`` is rounded away.

    Examples
    --------
    >>> ev = Event("e1", "u1", "i1", "purchase", 1714564800.0, price=3.0,
    ...            quantity=2, order_id="o1")
    >>> event_payload(ev)
    b'{"event_id":"e1","user_id":"u1","item_id":"i1","ts":1714564800000,"type":"purchase","price":3.0,"quantity":2,"order_id":"o1"}'
    >>> decode_event(event_payload(ev), "purchase", now=1714564800.0) == ev
    True
    """
    return _ENCODER.encode(
        _WireEvent(
            event_id=event.event_id,
            user_id=event.user_id,
            item_id=event.item_id,
            ts=round(event.ts * 1000.0),
            type=event.type,
            session_id=event.session_id,
            category=event.category,
            price=event.price,
            quantity=event.quantity,
            order_id=event.order_id,
        )
    )


_PREVIEW_BYTES = 1024
_MAX_KEY_BYTES = 1024


def dead_letter(
    err: ContractError,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    now: float | None = None,
    max_value_bytes: int = 65536,
) -> DeadLetter:
    """Build the dead-letter record for a rejected message, bounded whatever the message's size.

    ``value`` is kept whole (base64) when it has at most ``max_value_bytes``
    bytes, so it can be replayed byte for byte. A larger value (an
    ``oversized`` message can be as large as the broker accepts) keeps only
    its first ``max_value_bytes`` bytes, with ``value_size`` (the original
    length) and ``value_sha256`` (of the whole value) to identify it: the
    record then always fits the producer's limit (about 4/3 of
    ``max_value_bytes`` plus 2 KiB).

    Examples
    --------
    >>> err = ContractError("not_json", "JSON is malformed")
    >>> dl = dead_letter(err, topic="click", partition=3, offset=42,
    ...                  key=b"u1", value=b"{oops", now=1714564800.0)
    >>> dl.reason, dl.key, dl.value, dl.value_utf8, dl.truncated
    ('not_json', 'dTE=', 'e29vcHM=', '{oops', False)
    >>> big = dead_letter(ContractError("oversized", "too large"), topic="click", partition=0, offset=7,
    ...                   key=b"u1", value=b"x" * 5_000_000, max_value_bytes=1000)
    >>> len(big.value), big.value_size, big.truncated, len(big.value_sha256)
    (1336, 5000000, True, 64)
    """
    if value is not None and not isinstance(value, bytes):
        value = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)
    if key is not None and not isinstance(key, bytes):
        key = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else bytes(key)
    size = 0 if value is None else len(value)
    truncated = size > max_value_bytes or (key is not None and len(key) > _MAX_KEY_BYTES)
    return DeadLetter(
        reason=err.reason,
        detail=err.detail,
        topic=topic,
        partition=partition,
        offset=offset,
        key=None if key is None else base64.b64encode(key[:_MAX_KEY_BYTES]).decode("ascii"),
        value=None if value is None else base64.b64encode(value[:max_value_bytes]).decode("ascii"),
        # backslashreplace keeps undecodable bytes visible as \xNN instead of
        # hiding them behind U+FFFD, which is what a human debugging needs.
        value_utf8=None
        if value is None
        else value[:_PREVIEW_BYTES].decode("utf-8", "backslashreplace"),
        ts=time.time() if now is None else now,
        value_size=size,
        value_sha256=None if value is None else hashlib.sha256(value).hexdigest(),
        truncated=truncated,
    )
