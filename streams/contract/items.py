"""Catalogue items: the compacted ``items`` topic, keyed by ``item_id``, validated into :class:`CatalogItem`.

A ``None`` value on that topic is a compaction tombstone (the item left the
catalogue); readers handle it before decoding.
"""

from __future__ import annotations

from typing import Union

import msgspec

from streams.contract.encoding import decode_wire, preflight
from streams.contract.fields import BAD_TEXT_CHARS, check_category, check_id, check_price, check_text
from streams.contract.limits import DEFAULT_LIMITS, Limits
from streams.contract.reasons import ContractError


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


# What producers send; `available` and `title` accept JSON null as "absent".
class _WireItem(msgspec.Struct, gc=False):
    item_id: str
    category: str
    price: float
    available: Union[bool, None] = None
    title: Union[str, None] = None


_ITEM_DECODER = msgspec.json.Decoder(_WireItem)


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
    raw = preflight(raw, limits)
    w: _WireItem = decode_wire(_ITEM_DECODER, raw, None)
    check_id(w.item_id, "item_id", limits.max_id_length)
    if not w.category:
        raise ContractError("missing_field", "field `category` must not be empty")
    check_category(w.category, limits.max_string_length)
    price = check_price(w.price, limits.max_price)
    title = w.title or None
    if title is not None:
        check_text(title, "title", limits.max_string_length, BAD_TEXT_CHARS)
    return CatalogItem(
        item_id=w.item_id,
        category=w.category,
        price=price,
        available=True if w.available is None else w.available,
        title=title,
    )
