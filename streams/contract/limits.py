"""The bounds every decoded message must respect (from the worker's settings)."""

from __future__ import annotations

import msgspec


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
    max_impression_items
        Most items one impression may list (what a page shows at once).

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
    max_impression_items: int = 100


DEFAULT_LIMITS = Limits()
