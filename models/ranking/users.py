"""Per-user state of the streaming recommenders, and its compact checkpoint form."""

from __future__ import annotations

import itertools
import operator

import msgspec
import numpy as np

from models.events import BROWSE, ENGAGEMENT, PURCHASE

#: A gap longer than this (seconds) between two events of a customer starts a new session.
SESSION_GAP_S = 1800.0

#: Items kept in a customer's interacted set (the most recently added; their purchases are among
#: them): the set travels in the customer's profile, which must stay bounded.
MAX_SET_ITEMS = 4096


class _User:
    """Bounded recent history plus the user's own interacted/purchased items.

    Each history item also keeps how often the customer came back to it while
    it stayed in the history (``counts``), when it was last seen (``times``)
    and how far the customer engaged with it there (``engagement``: the
    highest :data:`~models.events.ENGAGEMENT` of its events);
    ``session_start`` is when the customer's current session began (events
    further apart than :data:`SESSION_GAP_S` are in different sessions).
    They are what the ranker's re-consumption features read.

    The history is kept in tuples (rebuilt on each push, at most
    ``maxlen`` long): tuples of numbers, like the dicts of int keys here,
    are not tracked by Python's cyclic garbage collector, which keeps its
    full collections cheap with millions of users.
    """

    __slots__ = ("maxlen", "history", "weights", "counts", "times", "engagement", "session_start", "interacted",
                 "purchased", "n", "_excl")

    def __init__(self, history_size: int):
        self.maxlen = history_size
        self.history: tuple[int, ...] = ()  # rows, most recent last
        self.weights: tuple[float, ...] = ()
        self.counts: tuple[int, ...] = ()  # events on each history item while in the history
        self.times: tuple[float, ...] = ()  # ts of the last event on each history item
        self.engagement: tuple[int, ...] = ()  # highest engagement of the events on each history item
        self.session_start = 0.0
        self.interacted: dict[int, None] = {}  # ordered set (deterministic pickles)
        self.purchased: dict[int, None] = {}
        self.n = 0  # events pushed: the version of this state (see UserRecord)
        self._excl: dict[str, np.ndarray] = {}  # cached exclusion arrays

    def push(self, row: int, weight: float, purchase: bool, ts: float | None = None,
             engagement: int | None = None) -> None:
        """Record an event of ``weight`` on ``row`` at ``ts`` as the most recent history item.

        Without a ``ts`` no time passes: the event is in the current session. ``engagement``
        (:data:`~models.events.ENGAGEMENT`) defaults to a purchase's or a page view's.
        """
        history, weights, counts, times = self.history, self.weights, self.counts, self.times
        levels = self.engagement
        level = _default_engagement(purchase) if engagement is None else engagement
        last = times[-1] if times else None
        if ts is None:
            ts = self.session_start if last is None else last
        if last is None or ts - last > SESSION_GAP_S:
            self.session_start = ts
        count = 1
        # A revisit moves the item to the front instead of duplicating it, so
        # a shopper flicking between two products does not flood the history.
        if row in self.interacted and row in history:
            i = history.index(row)
            weight = max(weight, weights[i])
            count += counts[i]
            level = max(level, levels[i])
            history, weights = history[:i] + history[i + 1:], weights[:i] + weights[i + 1:]
            counts, times = counts[:i] + counts[i + 1:], times[:i] + times[i + 1:]
            levels = levels[:i] + levels[i + 1:]
        history, weights = history + (row,), weights + (weight,)
        counts, times = counts + (count,), times + (max(ts, last) if last is not None else ts,)
        levels = levels + (level,)
        drop = len(history) - self.maxlen
        if drop > 0:
            history, weights, counts, times = history[drop:], weights[drop:], counts[drop:], times[drop:]
            levels = levels[drop:]
        self.history, self.weights, self.counts, self.times = history, weights, counts, times
        self.engagement = levels
        interacted = self.interacted
        if row not in interacted:
            interacted[row] = None
            self._excl.pop("interacted", None)
            if len(interacted) > MAX_SET_ITEMS:
                oldest = next(iter(interacted))
                del interacted[oldest]
                if oldest in self.purchased:  # purchases stay a subset of the interacted items
                    del self.purchased[oldest]
                    self._excl.pop("purchased", None)
        if purchase and row not in self.purchased:
            self.purchased[row] = None
            self._excl.pop("purchased", None)
        self.n += 1

    def excluded(self, rule: str) -> np.ndarray | None:
        """The user's rows that the exclusion ``rule`` removes, sorted (``None`` for ``"none"``; cached)."""
        if rule == "none":
            return None
        arr = self._excl.get(rule)
        if arr is None:
            rows = self.interacted if rule == "interacted" else self.purchased
            arr = self._excl[rule] = np.sort(np.fromiter(rows, dtype=np.int64, count=len(rows)))
        return arr

    def frozen(self, rule: str) -> _User:
        """What ranking under ``rule`` reads of this user (history, its weights, counts and times, the
        session's start, the excluded rows), as it is now, for a ranking done later."""
        copy = _User.__new__(_User)
        copy.maxlen, copy.n, copy.session_start = self.maxlen, self.n, self.session_start
        copy.history, copy.weights, copy.counts, copy.times = self.history, self.weights, self.counts, self.times
        copy.engagement = self.engagement
        copy.interacted, copy.purchased = {}, {}  # (only through `excluded`, whose rule's rows are kept)
        copy._excl = {} if rule == "none" else {rule: self.excluded(rule)}
        return copy

    def __getstate__(self):
        return (self.maxlen, list(self.history), list(self.weights), list(self.interacted), list(self.purchased),
                list(self.counts), list(self.times), self.session_start, self.n, list(self.engagement))

    def __setstate__(self, state):
        maxlen, history, weights, interacted, purchased = state[:5]
        # Checkpoints from before counts and times: every item seen once, all in one session.
        counts, times, start = state[5:8] if len(state) > 5 else ([1] * len(history), [0.0] * len(history), 0.0)
        self.n = state[8] if len(state) > 8 else 0  # (before versions: 0, which no record carries)

        def last(values):
            return tuple(values[len(values) - maxlen:] if maxlen is not None and len(values) > maxlen else values)

        self.maxlen = maxlen
        self.history, self.weights, self.counts, self.times = last(history), last(weights), last(counts), last(times)
        self.session_start = start
        self.interacted = dict.fromkeys(interacted)
        self.purchased = dict.fromkeys(purchased)
        self._excl = {}
        self.engagement = last(state[9]) if len(state) > 9 else _engagement_of(self.history, self.purchased)


def _default_engagement(purchase: bool) -> int:
    """What an event known only as a purchase or not says: a purchase's engagement or a page view's."""
    return ENGAGEMENT[PURCHASE] if purchase else ENGAGEMENT[BROWSE]


def _engagement_of(history, purchased) -> tuple[int, ...]:
    """The engagement of a history kept without it: bought items a purchase's, the others a page view's."""
    return tuple(_default_engagement(row in purchased) for row in history)


def _pack_users(users: dict[str, _User], maxlen: int) -> dict | None:
    """Every user's state as a few flat arrays (``None`` if some user's ``maxlen`` differs).

    A checkpoint pickles tens of thousands of users, and one pickled object
    per user costs several times what its share of a few flat arrays does.
    The order of the users and of each user's items is kept, so equal models
    give equal bytes.

    >>> u = _User(3)
    >>> for row in (4, 7, 4, 9):
    ...     u.push(row, 1.0, purchase=row == 9)
    >>> packed = _pack_users({"ann": u}, maxlen=3)
    >>> v = _unpack_users(packed)["ann"]
    >>> v.history, v.counts, list(v.interacted), list(v.purchased)
    ((7, 4, 9), (1, 2, 1), [4, 7, 9], [9])
    """
    values = users.values()
    if any(u.maxlen != maxlen for u in values):
        return None
    n = len(users)

    def lengths(attr: str) -> np.ndarray:
        return np.fromiter(map(len, map(operator.attrgetter(attr), values)), dtype=np.int64, count=n)

    def concat(attr: str, lens: np.ndarray, dtype) -> np.ndarray:
        items = itertools.chain.from_iterable(map(operator.attrgetter(attr), values))
        return np.fromiter(items, dtype=dtype, count=int(lens.sum()))

    hist_lens, inter_lens, purch_lens = lengths("history"), lengths("interacted"), lengths("purchased")
    return {"ids": list(users), "maxlen": maxlen,
            "history": (hist_lens, concat("history", hist_lens, np.int64)),
            "weights": concat("weights", hist_lens, np.float64),  # one weight per history item
            "counts": concat("counts", hist_lens, np.int64),
            "times": concat("times", hist_lens, np.float64),
            "engagement": concat("engagement", hist_lens, np.int8),
            "session_start": np.fromiter(map(operator.attrgetter("session_start"), values), dtype=np.float64, count=n),
            "versions": np.fromiter(map(operator.attrgetter("n"), values), dtype=np.int64, count=n),
            "interacted": (inter_lens, concat("interacted", inter_lens, np.int64)),
            "purchased": (purch_lens, concat("purchased", purch_lens, np.int64))}


def _unpack_users(packed: dict) -> dict[str, _User]:
    """The inverse of :func:`_pack_users`."""
    maxlen = packed["maxlen"]

    def split(lens: np.ndarray, data: np.ndarray) -> list[list]:
        ends = np.cumsum(lens).tolist()
        flat = data.tolist()
        return [flat[a:b] for a, b in zip([0] + ends[:-1], ends)]

    hist_lens = packed["history"][0]
    histories, weights = split(*packed["history"]), split(hist_lens, packed["weights"])
    interacted, purchased = split(*packed["interacted"]), split(*packed["purchased"])
    if "counts" in packed:
        counts, times = split(hist_lens, packed["counts"]), split(hist_lens, packed["times"])
        starts = packed["session_start"].tolist()
    else:  # checkpoints from before counts and times: every item seen once, all in one session
        counts = [[1] * len(h) for h in histories]
        times = [[0.0] * len(h) for h in histories]
        starts = [0.0] * len(histories)
    versions = packed["versions"].tolist() if "versions" in packed else [0] * len(histories)
    levels = split(hist_lens, packed["engagement"]) if "engagement" in packed else [None] * len(histories)
    users: dict[str, _User] = {}
    new = _User.__new__
    for user_id, h, w, c, t, s, i, p, v, e in zip(packed["ids"], histories, weights, counts, times, starts,
                                                  interacted, purchased, versions, levels):
        u = new(_User)
        u.maxlen, u.history, u.weights, u.counts, u.times, u.session_start = maxlen, tuple(h), tuple(w), tuple(c), tuple(t), s
        u.interacted, u.purchased, u.n, u._excl = dict.fromkeys(i), dict.fromkeys(p), v, {}
        u.engagement = tuple(e) if e is not None else _engagement_of(u.history, u.purchased)
        users[user_id] = u
    return users


class UserRecord(msgspec.Struct, array_like=True, gc=False):
    """A customer's per-user ranker state in portable form: item ids, not this process's catalogue rows.

    What a worker writes into the customer's profile after every batch, so
    that a worker taking the customer's partition over serves them from their
    own history instead of as a newcomer (:meth:`StreamingRecommender.import_user
    <models.ranking.base.StreamingRecommender.import_user>`). ``n`` is the
    state's version: the events pushed into it.
    """

    n: int
    history: list[str]  # oldest first (empty when ``history_at`` names it)
    weights: list[float]
    counts: list[int]
    times: list[float]
    session_start: float
    interacted: list[str]  # in first-seen order
    purchased: list[int]  # positions in ``interacted``
    factors: bytes = b""  # the customer's latent factors (float32; float64 in older records), when the ranker has them ...
    steps: list[tuple[str, float]] = []  # ... and the factor steps queued for them: (item id, target)
    history_at: list[int] = []  # the history as positions in ``interacted``, its ids written once
    engagement: list[int] | None = None  # per history item (``None`` in older records: from ``purchased``)

    @property
    def history_ids(self) -> list[str]:
        """The history's item ids, oldest first, however the record holds them."""
        return [self.interacted[i] for i in self.history_at] if self.history_at else self.history


_RECORD_ENCODER = msgspec.msgpack.Encoder()
_RECORD_DECODER = msgspec.msgpack.Decoder(UserRecord)


def encode_user(user: _User, item_ids, factors: bytes = b"", steps: list[tuple[str, float]] = ()) -> bytes:
    """``user`` as :class:`UserRecord` bytes, its rows named by ``item_ids[row]``.

    >>> u = _User(3)
    >>> for row, ts in ((0, 10.0), (2, 20.0), (0, 30.0)):
    ...     u.push(row, 1.0, purchase=row == 2, ts=ts)
    >>> v, _ = decode_user(encode_user(u, ["a", "b", "c"]), {"a": 5, "c": 7}.__getitem__, 3)
    >>> v.history, v.counts, v.times, list(v.interacted), list(v.purchased), v.n
    ((7, 5), (1, 2), (20.0, 30.0), [5, 7], [7], 3)
    """
    name = item_ids.__getitem__
    interacted = user.interacted
    at = {row: i for i, row in enumerate(interacted)}
    purchased = [at[row] for row in user.purchased]
    # The history's items are among the interacted ones (unless the set's bound let one go): by position.
    history_at = [at.get(row, -1) for row in user.history]
    history = [] if -1 not in history_at else list(map(name, user.history))
    # Tuples go to the encoder as they are (it writes them as arrays, like the lists they decode to).
    # Whole weights (the event weights, usually) are written as ints, 1 byte instead of 9, and decode
    # to the same floats.
    weights = [int(w) if w % 1 == 0 else w for w in user.weights]
    return _RECORD_ENCODER.encode(UserRecord(
        user.n, history, weights, user.counts, user.times, user.session_start,
        list(map(name, interacted)), purchased, factors, steps, [] if history else history_at, user.engagement))


def decode_user(record: bytes, row_of, maxlen: int) -> tuple[_User, UserRecord]:
    """The inverse of :func:`encode_user`: ``(user, record)``, ids mapped to rows by ``row_of``."""
    r = _RECORD_DECODER.decode(record)
    u = _User.__new__(_User)
    u.maxlen, u.n, u.session_start, u._excl = maxlen, r.n, r.session_start, {}
    interacted = list(map(row_of, r.interacted))
    # (UserRecord.history_ids by the rows just mapped: no id looked up twice)
    history = [interacted[i] for i in r.history_at] if r.history_at else list(map(row_of, r.history))
    keep = slice(max(0, len(history) - maxlen), None)  # (a record of a longer history)
    u.history = tuple(history[keep])
    u.weights, u.counts, u.times = tuple(r.weights[keep]), tuple(r.counts[keep]), tuple(r.times[keep])
    u.interacted = dict.fromkeys(interacted)
    u.purchased = dict.fromkeys(interacted[i] for i in r.purchased)
    u.engagement = tuple(r.engagement[keep]) if r.engagement is not None else _engagement_of(u.history, u.purchased)
    return u, r
