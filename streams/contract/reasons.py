"""Why a message is refused: the bounded set of reasons and the one error that carries them."""

from __future__ import annotations

from typing import Any

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
        "empty_items",  # an impression whose `items` list is empty: nothing was shown
        "too_many_items",  # an impression with more items than Limits.max_impression_items
        "processing_error",  # valid event on which the engine raised (a bug): parked for replay
    }
)
"""Every possible :attr:`ContractError.reason`; bounded so it can be a metric label."""


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

    # Its public home: tracebacks, logs and pickles name ``streams.contract.ContractError``.
    __module__ = "streams.contract"

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            # A typo here would silently create a new metric series.
            raise ValueError(f"unknown ContractError reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # keep picklable despite the 2-arg __init__
        return (type(self), (self.reason, self.detail))


def short_repr(value: Any, limit: int = 40) -> str:
    """``repr(value)`` bounded, so a hostile value cannot bloat a dead letter's detail.

    >>> short_repr("x" * 100, limit=10)
    "'xxxxxx..."
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
