"""Effect counters per (arm, day), the deltas that move them, and their sums.

The attribution (:mod:`models.effect.attribution`) turns each event into a
:data:`Delta`: a tuple of :class:`Increment` ``(arm, day, counter, amount)``.
Counters are integers only (revenue in hundredths of the currency unit), so
applying deltas in any order, or merging tables built on different workers,
gives exactly the same table: there is no floating-point sum whose result
depends on the order of its terms.

An arm is a variant name, ``holdout`` or ``unknown``; a day is a UTC day
number (:func:`day_of`).

Examples
--------
>>> t = EffectCounts()
>>> t.apply((Increment("a", 19844, "impressions", 1), Increment("a", 19844, "items_shown", 10)))
>>> t.total("a").impressions, t.total("a").items_shown, day_label(19844)
(1, 10, '2024-05-01')
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterable

import msgspec

__all__ = [
    "COUNTERS",
    "Counts",
    "Increment",
    "Delta",
    "day_of",
    "day_label",
    "revenue_cents",
    "merge_deltas",
    "encode_delta",
    "decode_delta",
    "EffectCounts",
]

_DAY_S = 86400


class Counts(msgspec.Struct, array_like=True, gc=False):
    """The counters of one arm over one day (or summed over days).

    Attributes
    ----------
    impressions
        Impressions counted under the arm, on the impression's day.
    items_shown
        Items in those impressions.
    customers
        Customers exposed to the arm for the first time in the experiment
        (their first impression under it), on that impression's day: summed
        over days, the distinct customers exposed.
    daily_customers
        Customers with at least one impression under the arm that day
        (distinct per day; summed over days, customer-days).
    clicks
        Clicks attributed to an impression of the arm, on the click's day.
    clicked_impressions
        Impressions of the arm that got their first attributed click, on that
        click's day (the numerator of the click-through rate).
    purchases
        Purchase lines attributed to an impression of the arm, on the purchase's day.
    revenue_cents
        ``price * quantity`` of those purchases, in hundredths, rounded.
    converters
        Customers with their first attributed purchase under the arm, on that
        purchase's day: summed over days, the distinct converting customers.
    assigned_customers
        Customers assigned to the arm (:meth:`~models.effect.experiment.Experiment.assign`)
        seen for the first time (any event), on that event's day.
    buyers
        Customers assigned to the arm with their first purchase of any item,
        attributed or not, on that purchase's day.
    all_purchases
        Purchase lines of customers assigned to the arm, any item.
    all_revenue_cents
        Their ``price * quantity``, in hundredths.

    Examples
    --------
    >>> (Counts(impressions=2) + Counts(impressions=1, clicks=1)).as_dict()["impressions"]
    3
    """

    impressions: int = 0
    items_shown: int = 0
    customers: int = 0
    daily_customers: int = 0
    clicks: int = 0
    clicked_impressions: int = 0
    purchases: int = 0
    revenue_cents: int = 0
    converters: int = 0
    assigned_customers: int = 0
    buyers: int = 0
    all_purchases: int = 0
    all_revenue_cents: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, f) + getattr(other, f) for f in COUNTERS))

    def as_dict(self) -> dict[str, int]:
        """Counter name to value, in :data:`COUNTERS` order.

        Examples
        --------
        >>> list(Counts(clicks=2).as_dict().items())[4]
        ('clicks', 2)
        """
        return {f: getattr(self, f) for f in COUNTERS}


#: Every counter of :class:`Counts`, in order.
COUNTERS: tuple[str, ...] = Counts.__struct_fields__
_COUNTER_SET = frozenset(COUNTERS)


class Increment(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Add ``amount`` to ``counter`` of ``(arm, day)``.

    Examples
    --------
    >>> Increment("ranker", 19844, "clicks", 1)
    Increment(arm='ranker', day=19844, counter='clicks', amount=1)
    """

    arm: str
    day: int
    counter: str
    amount: int


#: What one event changes: increments, in the order the attribution made them.
Delta = tuple[Increment, ...]


def day_of(ts: float) -> int:
    """The UTC day number (days since 1970-01-01) of an epoch-seconds time.

    Examples
    --------
    >>> day_of(1714521600.0), day_of(1714521599.9)
    (19844, 19843)
    """
    return math.floor(ts / _DAY_S)


def day_label(day: int) -> str:
    """ISO date of a day number.

    Examples
    --------
    >>> day_label(0)
    '1970-01-01'
    """
    return (_dt.date(1970, 1, 1) + _dt.timedelta(days=day)).isoformat()


def revenue_cents(price: float | None, quantity: int) -> int:
    """``price * quantity`` in hundredths, rounded (0 without a price).

    Examples
    --------
    >>> revenue_cents(9.99, 3), revenue_cents(None, 2)
    (2997, 0)
    """
    return 0 if price is None else round(price * quantity * 100)


def merge_deltas(*deltas: Iterable[Increment]) -> Delta:
    """One delta equal to applying all of them: amounts summed per ``(arm, day, counter)``,
    zero sums dropped, sorted so that equal effects give equal deltas.

    Examples
    --------
    >>> merge_deltas([Increment("a", 1, "clicks", 1)], [Increment("a", 1, "clicks", 2), Increment("b", 1, "clicks", 0)])
    (Increment(arm='a', day=1, counter='clicks', amount=3),)
    """
    sums: dict[tuple[str, int, str], int] = {}
    for delta in deltas:
        for inc in delta:
            key = (inc.arm, inc.day, inc.counter)
            sums[key] = sums.get(key, 0) + inc.amount
    return tuple(Increment(a, d, c, n) for (a, d, c), n in sorted(sums.items()) if n)


class _WireDelta(msgspec.Struct, array_like=True, gc=False):
    experiment: str
    increments: list[tuple[str, int, int, int]]


_DELTA_ENCODER = msgspec.msgpack.Encoder()
_DELTA_DECODER = msgspec.msgpack.Decoder(_WireDelta)
_COUNTER_INDEX = {name: i for i, name in enumerate(COUNTERS)}


def encode_delta(experiment: str, delta: Iterable[Increment]) -> bytes:
    """A delta of ``experiment`` as compact MessagePack: ``[experiment, [[arm, day, counter index, amount], ...]]``.

    Counters are written as their index in :data:`COUNTERS` (new counters only
    go at the end, as in :class:`Counts`' own encoding), so an increment costs
    a few bytes beside its arm name.

    Examples
    --------
    >>> raw = encode_delta("e1", [Increment("a", 19844, "clicks", 1)])
    >>> len(raw), decode_delta(raw)
    (13, ('e1', (Increment(arm='a', day=19844, counter='clicks', amount=1),)))
    """
    return _DELTA_ENCODER.encode(_WireDelta(experiment, [(i.arm, i.day, _COUNTER_INDEX[i.counter], i.amount)
                                                         for i in delta]))


def decode_delta(data: bytes) -> tuple[str, Delta]:
    """Inverse of :func:`encode_delta`: ``(experiment, delta)``."""
    wire = _DELTA_DECODER.decode(data)
    return wire.experiment, tuple(Increment(a, d, COUNTERS[c], n) for a, d, c, n in wire.increments)


class _Cell(msgspec.Struct, array_like=True, gc=False):
    arm: str
    day: int
    counts: Counts


_CELLS_ENCODER = msgspec.msgpack.Encoder()
_CELLS_DECODER = msgspec.msgpack.Decoder(list[_Cell])


class EffectCounts:
    """The counters of an experiment: one :class:`Counts` per (arm, day).

    Parameters
    ----------
    cells
        Initial counters, ``{(arm, day): Counts}`` (copied).

    Examples
    --------
    >>> a, b = EffectCounts(), EffectCounts()
    >>> a.apply([Increment("x", 1, "clicks", 1)])
    >>> b.apply([Increment("x", 2, "clicks", 2), Increment("y", 1, "impressions", 4)])
    >>> m = a.merge(b)
    >>> m.arms(), m.days(), m.total("x").clicks, m.cell("y", 1).impressions
    (['x', 'y'], [1, 2], 3, 4)
    >>> EffectCounts.from_bytes(m.to_bytes()) == m
    True
    """

    def __init__(self, cells: dict[tuple[str, int], Counts] | None = None):
        self._cells: dict[tuple[str, int], Counts] = {}
        for key, counts in (cells or {}).items():
            self._cells[key] = Counts(*(getattr(counts, f) for f in COUNTERS))

    def apply(self, delta: Iterable[Increment]) -> None:
        """Add a delta's increments (``KeyError`` on a counter that does not exist).

        Examples
        --------
        >>> t = EffectCounts()
        >>> t.apply([Increment("a", 1, "clicks", 2), Increment("a", 1, "clicks", 1)])
        >>> t.cell("a", 1).clicks
        3
        """
        for inc in delta:
            if inc.counter not in _COUNTER_SET:
                raise KeyError(f"unknown counter {inc.counter!r}")
            cell = self._cells.get((inc.arm, inc.day))
            if cell is None:
                cell = self._cells[(inc.arm, inc.day)] = Counts()
            setattr(cell, inc.counter, getattr(cell, inc.counter) + inc.amount)

    def merge(self, other: EffectCounts) -> EffectCounts:
        """A new table holding the sums of both (e.g. the tables of two partitions); neither changes.

        Examples
        --------
        >>> a = EffectCounts({("x", 1): Counts(clicks=1)})
        >>> a.merge(a).cell("x", 1).clicks, a.cell("x", 1).clicks
        (2, 1)
        """
        out = EffectCounts(self._cells)
        for key, counts in other._cells.items():
            out._cells[key] = out._cells[key] + counts if key in out._cells else Counts(*counts.as_dict().values())
        return out

    def cell(self, arm: str, day: int) -> Counts:
        """The counters of one arm on one day (zeros if nothing was counted).

        Examples
        --------
        >>> EffectCounts().cell("x", 1) == Counts()
        True
        """
        return self._cells.get((arm, day), Counts())

    def total(self, arm: str) -> Counts:
        """An arm's counters summed over every day.

        Examples
        --------
        >>> EffectCounts({("x", 1): Counts(clicks=1), ("x", 2): Counts(clicks=2)}).total("x").clicks
        3
        """
        out = Counts()
        for (a, _), counts in self._cells.items():
            if a == arm:
                out = out + counts
        return out

    def arms(self) -> list[str]:
        """Arms with at least one cell, sorted.

        Examples
        --------
        >>> EffectCounts({("b", 1): Counts(), ("a", 1): Counts()}).arms()
        ['a', 'b']
        """
        return sorted({a for a, _ in self._cells})

    def days(self) -> list[int]:
        """Days with at least one cell, sorted.

        Examples
        --------
        >>> EffectCounts({("a", 9): Counts(), ("a", 3): Counts()}).days()
        [3, 9]
        """
        return sorted({d for _, d in self._cells})

    def to_bytes(self) -> bytes:
        """MessagePack of the cells sorted by (arm, day): the same cells give the same bytes.

        Examples
        --------
        >>> EffectCounts({("a", 1): Counts(clicks=1)}).to_bytes()
        b'\\x91\\x93\\xa1a\\x01\\x9d\\x00\\x00\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00'
        """
        return _CELLS_ENCODER.encode([_Cell(a, d, self._cells[(a, d)]) for a, d in sorted(self._cells)])

    @classmethod
    def from_bytes(cls, data: bytes) -> EffectCounts:
        """Inverse of :meth:`to_bytes`.

        Examples
        --------
        >>> EffectCounts.from_bytes(EffectCounts({("a", 1): Counts(clicks=1)}).to_bytes()).total("a").clicks
        1
        """
        return cls({(c.arm, c.day): c.counts for c in _CELLS_DECODER.decode(data)})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EffectCounts):
            return NotImplemented
        zero = Counts()
        mine = {k: v for k, v in self._cells.items() if v != zero}
        theirs = {k: v for k, v in other._cells.items() if v != zero}
        return mine == theirs

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return f"EffectCounts({len(self._cells)} cells, arms={self.arms()})"
