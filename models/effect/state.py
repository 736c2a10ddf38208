"""The per-customer attribution state and its byte encoding.

One :class:`EffectState` per customer, meant to be stored beside the
customer's profile: events are keyed by ``user_id``, so everything the
attribution needs about a customer (recent recommendations, recent
impressions, events still waiting for their impression, which arms already
counted the customer) lives in the partition and the changelog record that
already carry that customer. Every collection is bounded by the
:class:`~models.effect.attribution.Attribution` that updates it.

The encoding is MessagePack with structs as arrays (no field names on the
wire): new fields go at the end of a struct, with a default, so that older
payloads still decode.

Examples
--------
>>> s = EffectState("e1")
>>> s.shown.append(Shown("ev1", "r1", "ranker", 1714564800.0, ("i1", "i2")))
>>> decode_state(encode_state(s)) == s
True
>>> len(encode_state(s)) < 60
True
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

__all__ = ["rec_key", "Issued", "Shown", "Pending", "Marks", "EffectState", "encode_state", "decode_state"]


_HEX_ID = re.compile(r"[0-9a-f]{24}")


def rec_key(rec_id: str) -> str | bytes:
    """How :class:`Issued` holds ``rec_id``: its 12 bytes when it is 24 lowercase hex digits (the
    ids :func:`models.effect.make_rec_id` makes), else the id itself.

    Sixteen ids are kept per customer, in every copy of their profile, so the
    11 bytes saved on each are a sixth of a typical profile's attribution state.

    Examples
    --------
    >>> rec_key("0123456789abcdef01234567"), rec_key("r1"), rec_key("0123456789ABCDEF01234567")
    (b'\\x01#Eg\\x89\\xab\\xcd\\xef\\x01#Eg', 'r1', '0123456789ABCDEF01234567')
    """
    return bytes.fromhex(rec_id) if len(rec_id) == 24 and _HEX_ID.fullmatch(rec_id) else rec_id


class Issued(msgspec.Struct, array_like=True, gc=False):
    """A recommendation made to the customer: its id, the variant that ranked it, when.

    ``key`` is the id as :func:`rec_key` holds it; read the id through
    :attr:`rec_id`. Payloads that hold the id as text decode as they are.

    Examples
    --------
    >>> r = Issued(rec_key("0123456789abcdef01234567"), "ranker", 1714564800.0)
    >>> r.variant, r.rec_id
    ('ranker', '0123456789abcdef01234567')
    """

    key: Any  # str | bytes, which msgspec does not take as one type (JSON holds bytes as text)
    variant: str
    ts: float

    @property
    def rec_id(self) -> str:
        """The recommendation's id as lists and impressions carry it."""
        key = self.key
        return key.hex() if type(key) is bytes else key


class Shown(msgspec.Struct, array_like=True, gc=False):
    """An impression held for attribution.

    Attributes
    ----------
    event_id, rec_id, ts
        From the impression (``rec_id`` empty if it had none).
    arm
        The variant of the recommendation ``rec_id`` names, or ``unknown``.
    items
        The items shown, in order (at most the attribution's ``max_items``).
    clicked, bought
        Items already credited with a click / a purchase from this impression:
        each (impression, item, kind) is credited at most once.

    Examples
    --------
    >>> Shown("ev1", "r1", "ranker", 0.0, ("i1",)).clicked
    ()
    """

    event_id: str
    rec_id: str
    arm: str
    ts: float
    items: tuple[str, ...]
    clicked: tuple[str, ...] = ()
    bought: tuple[str, ...] = ()


class Pending(msgspec.Struct, array_like=True, gc=False):
    """A click or purchase that found no impression yet, kept for a while for a late one.

    Examples
    --------
    >>> Pending("ev2", "click", "i1", 10.0).revenue_cents
    0
    """

    event_id: str
    kind: str
    item_id: str
    ts: float
    rec_id: str = ""
    revenue_cents: int = 0


class Marks(msgspec.Struct, array_like=True, gc=False):
    """What has been counted of the customer under one arm (so that it is counted once).

    Attributes
    ----------
    exposed
        Counted in ``customers`` (has had an impression under the arm).
    days
        Days on which the customer was counted in ``daily_customers``, only
        those recent enough for an impression still to arrive (see the
        attribution's out-of-order rules), ascending.
    converted
        Counted in ``converters``.
    assigned
        Counted in ``assigned_customers``.
    bought
        Counted in ``buyers``.

    Examples
    --------
    >>> Marks().exposed
    False
    """

    exposed: bool = False
    days: tuple[int, ...] = ()
    converted: bool = False
    assigned: bool = False
    bought: bool = False


class EffectState(msgspec.Struct, array_like=True, gc=False):
    """Everything the attribution keeps about one customer.

    Attributes
    ----------
    experiment
        Name of the experiment the state belongs to; the state of another
        experiment is started afresh.
    newest_ts
        Latest event time seen for the customer (the reference for what is
        too old to keep); ``None`` before the first event.
    issued
        Recent recommendations, oldest first.
    shown
        Recent impressions, ascending by time (ties in arrival order).
    pending
        Clicks and purchases waiting for a late impression, in arrival order.
    marks
        Per arm, what has been counted of the customer once and for all.

    Examples
    --------
    >>> EffectState("e1").newest_ts is None
    True
    """

    experiment: str
    newest_ts: float | None = None
    issued: list[Issued] = msgspec.field(default_factory=list)
    shown: list[Shown] = msgspec.field(default_factory=list)
    pending: list[Pending] = msgspec.field(default_factory=list)
    marks: dict[str, Marks] = msgspec.field(default_factory=dict)


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(EffectState)


def encode_state(state: EffectState) -> bytes:
    """The state as compact MessagePack (deterministic: the same events give the same bytes).

    Examples
    --------
    >>> encode_state(EffectState("e1"))
    b'\\x96\\xa2e1\\xc0\\x90\\x90\\x90\\x80'
    """
    return _ENCODER.encode(state)


def decode_state(data: bytes) -> EffectState:
    """Inverse of :func:`encode_state` (``msgspec.ValidationError`` on a payload of another shape).

    Examples
    --------
    >>> decode_state(encode_state(EffectState("e1"))).experiment
    'e1'
    """
    return _DECODER.decode(data)
