"""Shop events: what producers send on the input topics, validated into :class:`Event`, and back.

The input topics ``browse``, ``click`` and ``purchase`` (or one mixed topic
carrying every type) are keyed by ``user_id`` and carry JSON objects; the
event types come from :mod:`models.events`, the one vocabulary of the
project.
"""

from __future__ import annotations

import time
from typing import Union

import msgspec

from models.events import EVENT_TYPES
from streams.contract.encoding import decode_wire, encode, preflight
from streams.contract.fields import check_category, check_id, check_no_duplicate_fields, check_price, field_key_patterns
from streams.contract.limits import DEFAULT_LIMITS, Limits
from streams.contract.reasons import ContractError, short_repr
from streams.contract.timestamps import epoch_ms, event_ts_seconds


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
    #: The recommendation the customer acted on (``Recommendation.rec_id``), if the shop knows it;
    #: read by the attribution for clicks and purchases (docs/EXPERIMENTS.md).
    rec_id: str | None = None


# What producers actually send. Optional fields accept JSON null as "absent":
# producers that serialise `None` should not be dead-lettered for it.
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
    rec_id: Union[str, None] = None


_EVENT_DECODER = msgspec.json.Decoder(_WireEvent)
_EVENT_FIELD_KEYS = field_key_patterns(_WireEvent.__struct_fields__)
_EVENT_TYPE_SET = frozenset(EVENT_TYPES)
_CANONICAL_TYPE = {t: t for t in EVENT_TYPES}  # share one str object per type


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
    raw = preflight(raw, limits)
    w: _WireEvent = decode_wire(_EVENT_DECODER, raw, "ts")
    check_no_duplicate_fields(raw, _EVENT_FIELD_KEYS)

    max_id = limits.max_id_length
    check_id(w.event_id, "event_id", max_id)
    check_id(w.user_id, "user_id", max_id)
    check_id(w.item_id, "item_id", max_id)

    t = w.type
    if etype is None or (t is not None and t != etype):
        etype = _event_type(t, etype)

    if now is None:
        now = time.time()
    ts = event_ts_seconds(w.ts, limits.min_ts, now + limits.max_future_skew_s)

    # Empty optional strings mean "not provided" (common with form-encoded producers).
    session_id = w.session_id or None
    if session_id is not None:
        check_id(session_id, "session_id", max_id)
    order_id = w.order_id or None
    if order_id is not None:
        check_id(order_id, "order_id", max_id)
    rec_id = w.rec_id or None
    if rec_id is not None:
        check_id(rec_id, "rec_id", max_id)
    category = w.category or None
    if category is not None:
        check_category(category, limits.max_string_length)

    price = w.price
    if price is not None:
        price = check_price(price, limits.max_price)

    return Event(
        event_id=w.event_id,
        user_id=w.user_id,
        item_id=w.item_id,
        type=etype,
        ts=ts,
        session_id=session_id,
        category=category,
        price=price,
        quantity=_quantity(w.quantity, limits.max_quantity),
        order_id=order_id,
        rec_id=rec_id,
    )


def _event_type(payload_type: str | None, topic_type: str | None) -> str:
    """The event's type when the topic does not settle it: a mixed topic, or a payload that disagrees."""
    if topic_type is None:  # mixed topic: the payload says
        if payload_type is None:
            raise ContractError("missing_field", "field `type` is required on a topic that carries every event type")
        if payload_type not in _EVENT_TYPE_SET:
            raise ContractError(
                "unknown_type", f"field `type` must be one of {'|'.join(EVENT_TYPES)}, got {short_repr(payload_type)}"
            )
        return payload_type
    if payload_type in _EVENT_TYPE_SET:
        raise ContractError("type_mismatch", f"payload type {payload_type!r} arrived on the {topic_type!r} topic")
    raise ContractError(
        "unknown_type", f"field `type` must be one of {'|'.join(EVENT_TYPES)}, got {short_repr(payload_type)}"
    )


def _quantity(quantity: int | float | None, max_quantity: int) -> int:
    if quantity is None:
        return 1
    if quantity.__class__ is float:  # JSON has one number type: 2.0 is the integer 2, 2.5 is not
        if not quantity.is_integer():
            raise ContractError("wrong_type", f"field `quantity` must be a whole number, got {short_repr(quantity)}")
        quantity = int(quantity)
    if not (1 <= quantity <= max_quantity):
        raise ContractError(
            "invalid_value",
            f"field `quantity` must be in [1, {max_quantity}], got {short_repr(quantity)}",
        )
    return quantity


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
    return encode(
        _WireEvent(
            event_id=event.event_id,
            user_id=event.user_id,
            item_id=event.item_id,
            ts=epoch_ms(event.ts),
            type=event.type,
            session_id=event.session_id,
            category=event.category,
            price=event.price,
            quantity=event.quantity,
            order_id=event.order_id,
            rec_id=event.rec_id,
        )
    )
