"""JSON in and out: the checks before a parser sees the bytes, the typed decode, and its errors as reasons.

Decoding is the hot path of every worker, so it is a single typed
``msgspec`` decode into a private *wire* struct (:func:`decode_wire`) after a
few cheap checks on the raw bytes (:func:`preflight`). Only when the decode
fails does the cold path run: msgspec's message is translated into one of
the bounded reasons, telling the "almost JSON" producer bugs apart from
garbage.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from streams.contract.limits import Limits
from streams.contract.reasons import ContractError

_ENCODER = msgspec.json.Encoder()

_LONE_SURROGATE_ESCAPE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
_EXPECTED_GOT = re.compile(r"^Expected `(?P<exp>[^`]+)`, got `(?P<got>[^`]+)`")
_AT_PATH = re.compile(r" - at `\$(?:\.(?P<field>[A-Za-z_][A-Za-z0-9_]*))?(?P<inner>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")


def encode(obj: Any) -> bytes:
    """Encode any contract struct (or plain JSON-able value) as compact JSON.

    Note that an :class:`~streams.contract.Event` encodes with its *internal*
    form (``ts`` in seconds); use :func:`~streams.contract.event_payload` to
    produce the wire form.  msgspec encodes non-finite floats as ``null``.

    Examples
    --------
    >>> from streams.contract import ScoredItem
    >>> encode(ScoredItem("i1", 1.5))
    b'{"item_id":"i1","score":1.5}'
    """
    return _ENCODER.encode(obj)


def preflight(raw: Any, limits: Limits) -> bytes:
    """The value as ``bytes`` after the checks that must happen before the parser sees it.

    >>> preflight(b"", Limits())
    Traceback (most recent call last):
    ...
    streams.contract.ContractError: empty_value: message value is empty
    """
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


def decode_wire(decoder: msgspec.json.Decoder, raw: bytes, ts_field: str | None) -> Any:
    """``decoder.decode(raw)``, every failure a :class:`~streams.contract.ContractError`.

    ``ts_field`` names the field holding a timestamp, whose type error says
    what a timestamp may be.
    """
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise _from_validation_error(exc, ts_field) from None
    except msgspec.DecodeError as exc:
        raise _from_decode_error(raw, exc) from None
    except RecursionError:
        raise ContractError("too_deep", "JSON nesting exceeds the decoder's depth limit") from None
    except UnicodeDecodeError as exc:  # unreachable after preflight; belt and braces
        raise ContractError("bad_encoding", f"invalid UTF-8: {exc.reason}") from None


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
        if got == "null" and not at["inner"]:
            # Every optional field accepts null, so a null here is a required field
            # (inside a field, e.g. an element of an impression's `items`, it is a wrong type).
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
