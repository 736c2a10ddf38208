"""Checks of decoded fields: identifiers, free text, prices, and fields given twice.

They run on every accepted message, so each is branch-light with an ASCII
fast path; the regular expressions run only on the rare non-ASCII value.
"""

from __future__ import annotations

import json
import math
import re
from typing import Iterable

from streams.contract.reasons import ContractError

# C0/C1 control characters and (defensively) surrogates.  msgspec already
# refuses lone surrogates, this only matters if that ever changes.
BAD_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Free text (titles) may legitimately contain tabs and line breaks.
BAD_TEXT_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def field_key_patterns(names: Iterable[str]) -> re.Pattern[bytes]:
    """How any of the fields appears as a key: ``"name"`` then optional whitespace and ``:``; the
    name is the match's group.

    One pattern for every field: a single scan of the message finds every key occurrence. Matches
    cannot overlap (a match ends at the colon after a closing quote; field names hold no quotes),
    so it finds what one scan per field would. Inside a JSON string a quote is escaped, so a
    repeated name is either a second key or a string value holding ``\\"name\\":``, which the
    exact check of :func:`check_no_duplicate_fields` tells apart.
    """
    alternatives = b"|".join(re.escape(name.encode()) for name in names)
    return re.compile(rb'"(' + alternatives + rb')"\s*:')


def check_no_duplicate_fields(raw: bytes, keys: re.Pattern[bytes]) -> None:
    r"""Reject a message in which a contract field appears twice (a decoder keeps only the last).

    One scan for every field's key on the hot path (:func:`field_key_patterns`); the exact check
    (the standard library's parser, which sees every key of every object) runs only when a field
    name occurs more than once.

    >>> keys = field_key_patterns(["price", "quantity"])
    >>> check_no_duplicate_fields(b'{"price":-5,"quantity":1,"price":3}', keys)
    Traceback (most recent call last):
    ...
    streams.contract.ContractError: duplicate_field: field `price` appears more than once
    >>> check_no_duplicate_fields(b'{"price":3,"note":"\\"price\\": 1"}', keys)
    """
    found = keys.findall(raw)
    if len(found) > 1 and len(set(found)) < len(found):
        def pairs(items: list) -> dict:
            seen: set = set()
            for key, _ in items:
                if key in seen:
                    raise ContractError("duplicate_field", f"field `{key[:40]}` appears more than once")
                seen.add(key)
            return dict(items)

        json.loads(raw, object_pairs_hook=pairs)


def check_id(value: str, field: str, max_len: int) -> None:
    """An identifier: not empty, not too long, no control characters, not only whitespace."""
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
    if BAD_CHARS.search(value):
        raise ContractError("invalid_value", f"field `{field}` contains control characters")
    if value.isspace():
        raise ContractError("invalid_value", f"field `{field}` is only whitespace")


def check_text(value: str, field: str, max_len: int, pattern: re.Pattern[str]) -> None:
    """Free text: not too long, none of the characters ``pattern`` finds."""
    if len(value) > max_len:
        raise ContractError(
            "string_too_long", f"field `{field}` is {len(value)} characters, limit is {max_len}"
        )
    if not (value.isascii() and value.isprintable()) and pattern.search(value):
        raise ContractError("invalid_value", f"field `{field}` contains control characters")


def check_category(value: str, max_len: int) -> None:
    """A category name: free text without line breaks, not only whitespace."""
    check_text(value, "category", max_len, BAD_CHARS)
    if value.isspace():
        raise ContractError("invalid_value", "field `category` is only whitespace")


def check_price(price: float, max_price: float) -> float:
    """A price in ``[0, max_price]``; returns it with ``-0.0`` folded into ``0.0``."""
    if price != price or price in (math.inf, -math.inf):  # unreachable from JSON; cheap
        raise ContractError("invalid_value", f"field `price` must be finite, got {price}")
    if price < 0.0:
        raise ContractError("invalid_value", f"field `price` must be >= 0, got {price}")
    if price > max_price:
        raise ContractError("invalid_value", f"field `price` must be <= {max_price:g}, got {price}")
    return price + 0.0
