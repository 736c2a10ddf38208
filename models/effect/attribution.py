"""Attribution: what each impression, click and purchase counts as, one customer at a time.

:class:`Attribution` holds the rules (the experiment, the windows, the
bounds) and no customer data; each customer has an
:class:`~models.effect.state.EffectState`, updated in place by every event of
that customer, in stream order, and each call returns the event's
:data:`~models.effect.counts.Delta`.

Why a keyed state and not one object per customer: events are keyed by
``user_id``, so a customer's state can travel with the customer's profile
(same partition, same changelog record, restored together); the state is
plain data that encodes to a few kilobytes at most, and the rules can change
(a longer window) without rewriting any stored state. Determinism: the same
state and the same event give the same delta and the same new state, so a
batch replayed after a crash (from the restored state) yields the deltas it
yielded before, which the caller applies once per event.

Rules
-----
* An impression counts under the variant of the recommendation its
  ``rec_id`` names (recorded by :meth:`Attribution.recommended`), or under
  ``unknown`` when the customer has no such recommendation on record.
* A click or purchase carrying a ``rec_id`` is credited to the latest held
  impression with that ``rec_id`` that showed the item (explicit; no window
  beyond the impression being held). Otherwise, or if there is none, it is
  credited to the latest held impression that showed the item, stamped no
  later than the event plus ``clock_skew_s`` and no earlier than the event
  minus the kind's window (last touch).
* Each (impression, item, kind) is credited at most once: a second click of
  the same item from the same impression counts nothing, and neither does it
  fall back to an older impression.
* Every event also counts for the arm the customer is *assigned* to (whether
  or not anything is attributed): ``assigned_customers``, and for purchases
  ``buyers``, ``all_purchases``, ``all_revenue_cents``; that is how the
  holdout, which sees no list, is measured.

Out of order
------------
Events are taken in the order they are processed; event times decide
attribution. ``newest_ts`` is the latest event time seen for the customer.

* Impressions are held in time order, so an impression processed after a
  later one is still found by a click that follows it in time.
* Impressions older than ``newest_ts`` minus the longest window are dropped;
  one arriving that late is still counted (impressions, items, customers)
  but not held, and counts in ``daily_customers`` only if its day is not
  before the day of that horizon (older exposure days are forgotten).
* A click or purchase that finds no impression waits, up to ``max_pending``
  of them and for ``late_s`` seconds of event time, for an impression
  processed after it (impressions and events come on different topics, so a
  click often overtakes the impression it came from). A late impression
  claims the waiting events it matches, in their arrival order: by
  ``rec_id`` for an event that carries one, by the last-touch rule otherwise.
* Nothing once credited is ever moved: a late impression does not take an
  event already credited to an older one, so counts only grow.

Examples
--------
>>> from models.effect.experiment import Experiment
>>> exp = Experiment.from_mapping({"name": "e1", "salt": "s",
...     "variants": [{"name": "ranker", "share": 1.0, "strategy": "ranker"}]})
>>> att = Attribution(exp)
>>> st = att.new_state()
>>> att.recommended(st, "r1", "ranker", 1000.0)
>>> d = att.impression(st, Impression("ev1", "u1", "r1", ("i1", "i2"), 1000.0))
>>> [(i.counter, i.amount) for i in d if i.counter in ("impressions", "items_shown")]
[('impressions', 1), ('items_shown', 2)]
>>> d = att.interaction(st, Interaction("ev2", "u1", "i2", "click", 1060.0))
>>> sorted(i.counter for i in d if i.arm == "ranker")
['clicked_impressions', 'clicks']
"""

from __future__ import annotations

import hashlib
import math

import msgspec

from models.effect.counts import Delta, Increment, day_of, revenue_cents
from models.effect.experiment import UNKNOWN, Experiment
from models.effect.state import EffectState, Issued, Marks, Pending, Shown, rec_key
from models.events import BROWSE, CLICK, EVENT_TYPES, PURCHASE

__all__ = ["IMPRESSION", "Impression", "Interaction", "Attribution", "make_rec_id"]

_KINDS = frozenset(EVENT_TYPES)

#: The kind of an impression record (the ``type`` a record of the ``impressions`` topic carries
#: through the engine); not an event type: impressions teach no model.
IMPRESSION = "impression"


class Impression(msgspec.Struct, frozen=True, gc=False):
    """What the shop displayed to a customer (a record of the ``impressions`` topic).

    Examples
    --------
    >>> Impression("ev1", "u1", "r1", ("i1", "i2"), 1714564800.0, surface="home").surface
    'home'
    """

    event_id: str
    user_id: str
    rec_id: str | None
    items: tuple[str, ...]
    ts: float
    surface: str | None = None


class Interaction(msgspec.Struct, frozen=True, gc=False):
    """A shop event of the customer: ``kind`` is ``browse``, ``click`` or ``purchase``.

    Examples
    --------
    >>> Interaction("ev2", "u1", "i1", "purchase", 1714564800.0, price=9.5, quantity=2).quantity
    2
    """

    event_id: str
    user_id: str
    item_id: str
    kind: str
    ts: float
    rec_id: str | None = None
    price: float | None = None
    quantity: int = 1


def make_rec_id(experiment: str, user_id: str, position: int) -> str:
    """A recommendation id that a replay reproduces: a hash of the experiment, the customer
    and the source position of the event the list was computed for.

    Examples
    --------
    >>> make_rec_id("e1", "u1", 42) == make_rec_id("e1", "u1", 42), len(make_rec_id("e1", "u1", 42))
    (True, 24)
    """
    return hashlib.blake2b(f"{experiment}\x00{user_id}\x00{position}".encode(), digest_size=12).hexdigest()


class Attribution:
    """The attribution rules of one experiment (see the module docstring).

    Parameters
    ----------
    experiment
        Assigns customers to arms and names the variants recommendations may carry.
    click_window_s, purchase_window_s
        How long after an impression a click / a purchase of an item it showed
        is credited to it by last touch.
    late_s
        How long (event time, behind the customer's newest event) a click or
        purchase waits for its impression.
    clock_skew_s
        How much later than the click or purchase an impression may be
        stamped and still be credited (shop front-end and back-end clocks).
    max_impressions, max_items, max_issued, max_pending
        Bounds of the per-customer state: impressions held, items held per
        impression (``items_shown`` still counts them all), recommendations
        on record, events waiting.

    Examples
    --------
    >>> from models.effect.experiment import Experiment
    >>> exp = Experiment.from_mapping({"name": "e1", "salt": "s",
    ...     "variants": [{"name": "a", "share": 1.0, "strategy": "ranker"}]})
    >>> Attribution(exp, click_window_s=0)
    Traceback (most recent call last):
    ...
    ValueError: click_window_s: must be a positive number of seconds, got 0
    """

    def __init__(self, experiment: Experiment, click_window_s: float = 1800.0, purchase_window_s: float = 86400.0,
                 late_s: float = 300.0, clock_skew_s: float = 5.0, max_impressions: int = 16, max_items: int = 100,
                 max_issued: int = 16, max_pending: int = 16):
        for name, value in (("click_window_s", click_window_s), ("purchase_window_s", purchase_window_s)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be a positive number of seconds, got {value!r}")
        for name, value in (("late_s", late_s), ("clock_skew_s", clock_skew_s)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: must be a number of seconds >= 0, got {value!r}")
        for name, value in (("max_impressions", max_impressions), ("max_items", max_items),
                            ("max_issued", max_issued), ("max_pending", max_pending)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        self.experiment = experiment
        self.windows = {CLICK: float(click_window_s), PURCHASE: float(purchase_window_s)}
        self.longest_window = max(self.windows.values())
        self.late_s = float(late_s)
        self.clock_skew_s = float(clock_skew_s)
        self.max_impressions = max_impressions
        self.max_items = max_items
        self.max_issued = max_issued
        self.max_pending = max_pending
        self._variants = frozenset(v.name for v in experiment.variants)

    def new_state(self) -> EffectState:
        """An empty state for a customer of this experiment.

        Examples
        --------
        >>> from models.effect.experiment import Experiment
        >>> exp = Experiment.from_mapping({"name": "e1", "salt": "s",
        ...     "variants": [{"name": "a", "share": 1.0, "strategy": "ranker"}]})
        >>> Attribution(exp).new_state()
        EffectState(experiment='e1', newest_ts=None, issued=[], shown=[], pending=[], marks={})
        """
        return EffectState(self.experiment.name)

    def recommended(self, state: EffectState, rec_id: str, variant: str, ts: float) -> None:
        """Record that the customer was sent recommendation ``rec_id`` ranked by ``variant``.

        Recording the same ``rec_id`` again changes nothing; only the latest
        ``max_issued`` recommendations are kept.

        Examples
        --------
        >>> from models.effect.experiment import Experiment
        >>> exp = Experiment.from_mapping({"name": "e1", "salt": "s",
        ...     "variants": [{"name": "a", "share": 1.0, "strategy": "ranker"}]})
        >>> att = Attribution(exp, max_issued=2)
        >>> st = att.new_state()
        >>> for i in range(3):
        ...     att.recommended(st, f"r{i}", "a", float(i))
        >>> [r.rec_id for r in st.issued]
        ['r1', 'r2']
        """
        if variant not in self._variants:
            raise ValueError(f"variant {variant!r} is not a variant of experiment {self.experiment.name!r}")
        self._adopt(state)
        key = rec_key(rec_id)
        if any(r.key == key for r in state.issued):
            return
        state.issued.append(Issued(key, variant, float(ts)))
        del state.issued[: -self.max_issued]

    def impression(self, state: EffectState, imp: Impression) -> Delta:
        """Count an impression, hold it for attribution and let it claim waiting events.

        An impression whose ``event_id`` is already held counts nothing (a redelivery).

        Examples
        --------
        >>> from models.effect.experiment import Experiment
        >>> exp = Experiment.from_mapping({"name": "e1", "salt": "s",
        ...     "variants": [{"name": "a", "share": 1.0, "strategy": "ranker"}]})
        >>> att = Attribution(exp)
        >>> st = att.new_state()
        >>> d = att.impression(st, Impression("ev1", "u1", "nobody-knows", ("i1",), 0.0))
        >>> sorted({(i.arm, i.counter) for i in d})[:3]
        [('a', 'assigned_customers'), ('unknown', 'customers'), ('unknown', 'daily_customers')]
        >>> att.impression(st, Impression("ev1", "u1", "nobody-knows", ("i1",), 0.0))
        ()
        """
        self._begin(state, imp.ts)
        if any(s.event_id == imp.event_id for s in state.shown):
            return ()
        out: list[Increment] = []
        arm = self._arm_of(state, imp.rec_id)
        day = day_of(imp.ts)
        out.append(Increment(arm, day, "impressions", 1))
        out.append(Increment(arm, day, "items_shown", len(imp.items)))
        self._expose(state, arm, day, out)
        self._assigned(state, imp.user_id, imp.ts, 0, False, out)
        if imp.ts >= state.newest_ts - self.longest_window:
            shown = Shown(imp.event_id, imp.rec_id or "", arm, float(imp.ts), tuple(imp.items[: self.max_items]))
            # Keep impressions in time order (after equal times) so that "the latest" means the latest in time.
            at = len(state.shown)
            while at and state.shown[at - 1].ts > shown.ts:
                at -= 1
            state.shown.insert(at, shown)
            del state.shown[: -self.max_impressions]
            if any(s is shown for s in state.shown):  # not dropped at once as the oldest of too many
                self._claim(state, shown, out)
        return tuple(out)

    def interaction(self, state: EffectState, ev: Interaction) -> Delta:
        """Count a browse, click or purchase for the customer's arm and attribute a click or purchase.

        Examples
        --------
        >>> from models.effect.experiment import Experiment
        >>> exp = Experiment.from_mapping({"name": "e1", "salt": "s",
        ...     "variants": [{"name": "a", "share": 1.0, "strategy": "ranker"}]})
        >>> att = Attribution(exp)
        >>> st = att.new_state()
        >>> d = att.interaction(st, Interaction("ev1", "u1", "i1", "purchase", 0.0, price=2.5))
        >>> [(i.counter, i.amount) for i in d]
        [('assigned_customers', 1), ('all_purchases', 1), ('all_revenue_cents', 250), ('buyers', 1)]
        >>> [p.event_id for p in st.pending]  # no impression yet: waits for one
        ['ev1']
        """
        if ev.kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(EVENT_TYPES)}, got {ev.kind!r}")
        self._begin(state, ev.ts)
        out: list[Increment] = []
        cents = revenue_cents(ev.price, ev.quantity) if ev.kind == PURCHASE else 0
        self._assigned(state, ev.user_id, ev.ts, cents, ev.kind == PURCHASE, out)
        if ev.kind == BROWSE:
            return tuple(out)
        target = self._target(state, ev.kind, ev.item_id, ev.ts, ev.rec_id or "")
        if target is not None:
            if ev.item_id not in (target.clicked if ev.kind == CLICK else target.bought):
                self._credit(state, target, ev.kind, ev.item_id, ev.ts, cents, out)
        elif ev.ts >= state.newest_ts - self.late_s and not any(p.event_id == ev.event_id for p in state.pending):
            state.pending.append(Pending(ev.event_id, ev.kind, ev.item_id, float(ev.ts), ev.rec_id or "", cents))
            del state.pending[: -self.max_pending]
        return tuple(out)

    # -- internals -------------------------------------------------------------------------------

    def _adopt(self, state: EffectState) -> None:
        # The state of another experiment says nothing about this one: the customer starts afresh.
        if state.experiment != self.experiment.name:
            state.experiment = self.experiment.name
            state.newest_ts = None
            state.issued.clear()
            state.shown.clear()
            state.pending.clear()
            state.marks.clear()

    def _begin(self, state: EffectState, ts: float) -> None:
        """Adopt the state, advance the customer's clock and drop what can no longer be credited."""
        self._adopt(state)
        if state.newest_ts is None or ts > state.newest_ts:
            state.newest_ts = float(ts)
        horizon = state.newest_ts - self.longest_window
        drop = 0
        while drop < len(state.shown) and state.shown[drop].ts < horizon:
            drop += 1
        del state.shown[:drop]
        waited = state.newest_ts - self.late_s
        if any(p.ts < waited for p in state.pending):
            state.pending[:] = [p for p in state.pending if p.ts >= waited]
        oldest_day = day_of(horizon)
        for marks in state.marks.values():
            if marks.days and marks.days[0] < oldest_day:
                marks.days = tuple(d for d in marks.days if d >= oldest_day)

    def _marks(self, state: EffectState, arm: str) -> Marks:
        marks = state.marks.get(arm)
        if marks is None:
            marks = state.marks[arm] = Marks()
        return marks

    def _arm_of(self, state: EffectState, rec_id: str | None) -> str:
        if rec_id:
            key = rec_key(rec_id)
            for r in reversed(state.issued):
                if r.key == key:
                    # A variant since removed from the settings is not an arm of this experiment any more.
                    return r.variant if r.variant in self._variants else UNKNOWN
        return UNKNOWN

    def _expose(self, state: EffectState, arm: str, day: int, out: list[Increment]) -> None:
        marks = self._marks(state, arm)
        if not marks.exposed:
            marks.exposed = True
            out.append(Increment(arm, day, "customers", 1))
        if day not in marks.days and day >= day_of(state.newest_ts - self.longest_window):
            marks.days = tuple(sorted((*marks.days, day)))
            out.append(Increment(arm, day, "daily_customers", 1))

    def _assigned(self, state: EffectState, user_id: str, ts: float, cents: int, purchase: bool,
                  out: list[Increment]) -> None:
        arm = self.experiment.assign(user_id)
        marks = self._marks(state, arm)
        day = day_of(ts)
        if not marks.assigned:
            marks.assigned = True
            out.append(Increment(arm, day, "assigned_customers", 1))
        if purchase:
            out.append(Increment(arm, day, "all_purchases", 1))
            if cents:
                out.append(Increment(arm, day, "all_revenue_cents", cents))
            if not marks.bought:
                marks.bought = True
                out.append(Increment(arm, day, "buyers", 1))

    def _last_touch(self, shown: Shown, kind: str, item: str, ts: float) -> bool:
        return (shown.ts <= ts + self.clock_skew_s and ts - shown.ts <= self.windows[kind]
                and item in shown.items)

    def _target(self, state: EffectState, kind: str, item: str, ts: float, rec_id: str) -> Shown | None:
        if rec_id:
            for s in reversed(state.shown):
                if s.rec_id == rec_id and item in s.items:
                    return s
        for s in reversed(state.shown):  # ascending by time: the first match is the latest
            if self._last_touch(s, kind, item, ts):
                return s
        return None

    def _credit(self, state: EffectState, shown: Shown, kind: str, item: str, ts: float, cents: int,
                out: list[Increment]) -> None:
        day = day_of(ts)
        if kind == CLICK:
            if not shown.clicked:
                out.append(Increment(shown.arm, day, "clicked_impressions", 1))
            shown.clicked = (*shown.clicked, item)
            out.append(Increment(shown.arm, day, "clicks", 1))
            return
        shown.bought = (*shown.bought, item)
        out.append(Increment(shown.arm, day, "purchases", 1))
        if cents:
            out.append(Increment(shown.arm, day, "revenue_cents", cents))
        marks = self._marks(state, shown.arm)
        if not marks.converted:
            marks.converted = True
            out.append(Increment(shown.arm, day, "converters", 1))

    def _claim(self, state: EffectState, shown: Shown, out: list[Increment]) -> None:
        """Credit to a newly held impression the waiting events it matches, in arrival order."""
        if not state.pending:
            return
        keep: list[Pending] = []
        for p in state.pending:
            if p.rec_id:
                match = p.rec_id == shown.rec_id and p.item_id in shown.items
            else:
                match = self._last_touch(shown, p.kind, p.item_id, p.ts)
            if match and p.item_id not in (shown.clicked if p.kind == CLICK else shown.bought):
                self._credit(state, shown, p.kind, p.item_id, p.ts, p.revenue_cents, out)
            else:
                keep.append(p)
        state.pending[:] = keep
