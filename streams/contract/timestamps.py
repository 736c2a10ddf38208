"""Event times: the one parser and formatter, for the wire and for the CSV tools.

The wire rule (:func:`event_ts_seconds`, used by ``decode_event``): ``ts`` is
either an RFC 3339 date-time *string* with seconds and an offset, or epoch
milliseconds as a JSON *number*; anything else is refused with a reason, and
the time must lie within the contract's limits.

The CSV tools (``recostream replay``, ``produce --csv``, ``convert``) read
timestamps that are text in a cell, so :func:`parse_timestamp` has one
documented option for them, ``csv=True``: the cell may be surrounded by
blanks, may hold an epoch count as digits (milliseconds, or seconds with
``epoch_unit="s"`` for the public logs that use them), and may leave out the
offset (then it is UTC: the logs this project converts are all UTC).
Everything else is the wire's rule: the same regular expression, the same
arithmetic, so a time means the same thing in a CSV and on the wire.

Formatting is the inverse: :func:`epoch_ms` (what the wire and the CSVs
carry) and :func:`format_rfc3339` (whole seconds, ``Z``).

>>> parse_timestamp("2024-05-01T12:00:00Z"), parse_timestamp(" 1714564800000 ", csv=True)
(1714564800.0, 1714564800.0)
>>> parse_timestamp("2024-05-01T12:00:00", csv=True), format_rfc3339(1714564800.9)
(1714564800.0, '2024-05-01T12:00:00Z')
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from streams.contract.reasons import ContractError, short_repr

MAX_TS_STRING = 64  # longest plausible RFC 3339 string; bounds parser work
_PER_SECOND = {"ms": 1000.0, "s": 1.0}  # epoch units of the CSV option

# The offset is optional here; :func:`rfc3339_seconds` refuses its absence unless asked not to.
_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(?:([Zz])|([+-])(\d{2}):(\d{2}))?")
_EPOCH = re.compile(r"-?\d+")


def rfc3339_seconds(text: str, *, naive_utc: bool = False) -> float:
    """Epoch seconds of an RFC 3339 date-time; raises ValueError for anything else.

    Date and time with seconds and an offset are required (``Z``/``z`` or
    ``+hh:mm``); the separator is ``T``, ``t`` or a space (RFC 3339 5.6); a
    leap second (``:60``) is the instant after ``:59``. Date-only, hour-only,
    week dates and naive times are ISO 8601 but not RFC 3339, and are refused;
    ``naive_utc=True`` accepts a time without offset as UTC.

    >>> rfc3339_seconds("2024-05-01t12:00:00.5z"), rfc3339_seconds("2016-12-31T23:59:60Z")
    (1714564800.5, 1483228800.0)
    >>> rfc3339_seconds("2024-05-01")
    Traceback (most recent call last):
    ...
    ValueError: not an RFC 3339 date-time
    >>> rfc3339_seconds("2024-05-01T12:00:00", naive_utc=True)
    1714564800.0
    """
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError("not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if m.group(9):
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 23 or om > 59:
            raise ValueError("offset out of range")
        offset = timedelta(hours=oh, minutes=om) * (1 if m.group(9) == "+" else -1)
    elif m.group(8) or naive_utc:
        offset = timedelta(0)
    else:
        raise ValueError("not an RFC 3339 date-time (no offset)")
    leap = second == 60
    dt = datetime(year, month, day, hour, minute, 59 if leap else second, tzinfo=timezone(offset))
    return dt.timestamp() + leap + (float(m.group(7)) if m.group(7) else 0.0)


def parse_timestamp(text: str, *, csv: bool = False, epoch_unit: str = "ms") -> float:
    """Epoch seconds of a timestamp written as text; raises ValueError (or OverflowError).

    Without options, the wire's rule for a string: an RFC 3339 date-time.
    ``csv=True`` (a cell of a CSV log) also accepts blanks around the value,
    an epoch count written as digits, in ``epoch_unit`` (``"ms"`` or
    ``"s"``), and a date-time without offset, read as UTC.

    >>> parse_timestamp("1970-01-01T00:01:00Z"), parse_timestamp("60000", csv=True)
    (60.0, 60.0)
    >>> parse_timestamp("60", csv=True, epoch_unit="s"), parse_timestamp("2024-01-01 00:00:00", csv=True)
    (60.0, 1704067200.0)
    >>> parse_timestamp("60000")
    Traceback (most recent call last):
    ...
    ValueError: not an RFC 3339 date-time
    """
    if not csv:
        return rfc3339_seconds(text)
    text = text.strip()
    if not text:
        raise ValueError("empty timestamp")
    if _EPOCH.fullmatch(text):
        return int(text) / _PER_SECOND[epoch_unit]
    return rfc3339_seconds(text, naive_utc=True)


def event_ts_seconds(ts: str | int | float, min_ts: float, max_ts: float) -> float:
    """The wire rule for an event's ``ts``: its epoch seconds, within ``[min_ts, max_ts]``.

    Raises :class:`~streams.contract.ContractError` (``invalid_value`` for a
    string that is not RFC 3339, ``ts_out_of_range`` outside the bounds) with
    a hint for the two usual producer bugs: epoch milliseconds sent as a
    string, and epoch seconds sent where milliseconds are due.

    >>> event_ts_seconds(1714564800000, 631152000.0, 2e9), event_ts_seconds("2024-05-01T12:00:00Z", 0.0, 2e9)
    (1714564800.0, 1714564800.0)
    >>> event_ts_seconds(1714564800, 631152000.0, 2e9)
    Traceback (most recent call last):
    ...
    streams.contract.ContractError: ts_out_of_range: field `ts` = 1714564800 ms is outside [631152000, 2000000000] s (looks like epoch seconds; ms expected)
    """
    if isinstance(ts, str):
        if len(ts) > MAX_TS_STRING:
            raise ContractError("invalid_value", f"field `ts` is not an RFC 3339 date-time: {short_repr(ts)}")
        try:
            seconds = rfc3339_seconds(ts)
        except (ValueError, OverflowError, OSError):
            hint = " (epoch milliseconds must be a JSON number, not a string)" if ts.strip().isdigit() else ""
            raise ContractError(
                "invalid_value", f"field `ts` is not an RFC 3339 date-time: {short_repr(ts)}{hint}"
            ) from None
    else:
        # Compare in milliseconds first: a 4000-digit int would overflow float division.
        if not (min_ts * 1000.0 <= ts <= max_ts * 1000.0):
            # The classic producer bug: epoch seconds where milliseconds are due.
            hint = " (looks like epoch seconds; ms expected)" if min_ts <= ts <= max_ts else ""
            raise ContractError(
                "ts_out_of_range",
                f"field `ts` = {short_repr(ts)} ms is outside [{min_ts:.0f}, {max_ts:.0f}] s{hint}",
            )
        return ts / 1000.0
    if not (min_ts <= seconds <= max_ts):
        raise ContractError(
            "ts_out_of_range", f"field `ts` = {short_repr(ts)} is outside [{min_ts:.0f}, {max_ts:.0f}] s"
        )
    return seconds


def epoch_ms(seconds: float) -> int:
    """``seconds`` as whole epoch milliseconds (rounded), as the wire and the CSV logs carry them.

    >>> epoch_ms(1511544070.0), epoch_ms(1396314141.719)
    (1511544070000, 1396314141719)
    """
    return round(seconds * 1000.0)


def format_rfc3339(seconds: float) -> str:
    """``seconds`` as an RFC 3339 UTC date-time to the whole second (the fraction is dropped).

    >>> format_rfc3339(827865415.7)
    '1996-03-26T18:36:55Z'
    """
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
