"""Impressions: what the shop displayed, on the ``impressions`` topic, validated into :class:`Impression`.

The topic is keyed by ``user_id`` and partitioned like the input topics, so
a customer's impressions reach the worker that holds the customer's profile
and attribution state. An impression names the list it showed (``rec_id``,
from the :class:`~streams.contract.Recommendation` the shop displayed) and
the items in the order shown; the attribution credits later clicks and
purchases of those items to it (docs/EXPERIMENTS.md).
"""

from __future__ import annotations

import time
from typing import ClassVar, Union

import msgspec

from models.effect import IMPRESSION
from streams.contract.encoding import decode_wire, encode, preflight
from streams.contract.fields import BAD_CHARS, check_id, check_no_duplicate_fields, check_text, field_key_patterns
from streams.contract.limits import DEFAULT_LIMITS, Limits
from streams.contract.reasons import ContractError
from streams.contract.timestamps import epoch_ms, event_ts_seconds


class Impression(msgspec.Struct, frozen=True, gc=False):
    """A validated impression: ``items`` in the order shown, ``ts`` in epoch seconds (UTC).

    ``type`` is not a field: it tells the engine this record is an impression
    (:data:`models.effect.IMPRESSION`), not an event.

    Examples
    --------
    >>> imp = Impression("imp-1", "u1", "5d0c3e8f", ("i9", "i3"), 1714564800.0, surface="home")
    >>> imp.type, imp.items[0]
    ('impression', 'i9')
    """

    event_id: str
    user_id: str
    rec_id: str
    items: tuple[str, ...]
    ts: float
    surface: str | None = None
    type: ClassVar[str] = IMPRESSION


# What the shop sends; `surface` accepts JSON null as "absent".
class _WireImpression(msgspec.Struct, omit_defaults=True, gc=False):
    event_id: str
    user_id: str
    rec_id: str
    items: list[str]
    ts: Union[str, int, float]
    surface: Union[str, None] = None


_DECODER = msgspec.json.Decoder(_WireImpression)
_FIELD_KEYS = field_key_patterns(_WireImpression.__struct_fields__)


def decode_impression(raw: bytes | None, limits: Limits = DEFAULT_LIMITS, now: float | None = None) -> Impression:
    """Decode and validate one message of the ``impressions`` topic.

    Raises
    ------
    ContractError
        ``missing_field`` (no ``rec_id``, ``event_id``, ``user_id``, ``items``
        or ``ts``, or an empty one), ``wrong_type`` (``items`` not a list of
        strings, ``surface`` not a string), ``empty_items``,
        ``too_many_items`` (more than ``limits.max_impression_items``),
        ``id_too_long`` / ``invalid_value`` (an id or item id, as for events),
        ``string_too_long`` (``surface``), the timestamp reasons of events,
        and every reason of a message that is not a JSON object.

    Examples
    --------
    >>> decode_impression(b'{"event_id":"imp-1","user_id":"u1","rec_id":"r1","items":["i9","i3"],'
    ...                   b'"ts":1714564800000}').items
    ('i9', 'i3')
    >>> decode_impression(b'{"event_id":"imp-1","user_id":"u1","rec_id":"r1","items":[],"ts":1714564800000}')
    Traceback (most recent call last):
    ...
    streams.contract.ContractError: empty_items: field `items` lists no item: an impression shows at least one
    """
    raw = preflight(raw, limits)
    w: _WireImpression = decode_wire(_DECODER, raw, "ts")
    check_no_duplicate_fields(raw, _FIELD_KEYS)
    max_id = limits.max_id_length
    check_id(w.event_id, "event_id", max_id)
    check_id(w.user_id, "user_id", max_id)
    check_id(w.rec_id, "rec_id", max_id)
    items = w.items
    if not items:
        raise ContractError("empty_items", "field `items` lists no item: an impression shows at least one")
    if len(items) > limits.max_impression_items:
        raise ContractError("too_many_items",
                            f"field `items` lists {len(items)} items, limit is {limits.max_impression_items}")
    for item in items:
        check_id(item, "items[]", max_id)
    if now is None:
        now = time.time()
    ts = event_ts_seconds(w.ts, limits.min_ts, now + limits.max_future_skew_s)
    surface = w.surface or None
    if surface is not None:
        check_text(surface, "surface", limits.max_string_length, BAD_CHARS)
    return Impression(w.event_id, w.user_id, w.rec_id, tuple(items), ts, surface)


def impression_payload(imp: Impression) -> bytes:
    """The wire form of ``imp`` (``ts`` as integer epoch milliseconds), accepted by :func:`decode_impression`.

    Examples
    --------
    >>> imp = Impression("imp-1", "u1", "r1", ("i9",), 1714564800.0)
    >>> impression_payload(imp)
    b'{"event_id":"imp-1","user_id":"u1","rec_id":"r1","items":["i9"],"ts":1714564800000}'
    >>> decode_impression(impression_payload(imp), now=1714564800.0) == imp
    True
    """
    return encode(_WireImpression(imp.event_id, imp.user_id, imp.rec_id, list(imp.items), epoch_ms(imp.ts),
                                  imp.surface))
