"""Item-side learning as a record that every worker applies: what one learner taught the shared state.

A ranker that shares its item side (``HybridRanker(share_items=True)``)
learns a customer's own state (history, sets, factors) when it learns an
event, and queues the event's item-side part: the item, its weight and time,
the customer's recent items before it, the second stage's gradient when
the event trains it, and its factor steps.
:meth:`~models.ranking.hybrid.HybridRanker.take_updates` hands the queue out
as one :class:`ItemUpdate`;
:meth:`~models.ranking.hybrid.HybridRanker.apply_updates` folds an update,
anyone's, into the item side: popularity, co-visits, successors, the decay
clock, the candidate pools' schedule, the second stage's weights, the item
factors and the stream factor negatives are drawn from.

Why learners agree. Applying an update reads nothing but the update and the
item side itself, so the item side is a function of the sequence of updates
applied: learners that apply the same updates in the same order hold the same
item side, whichever of them learned which customers (a replicated state
machine; the order is the ``item-updates`` topic's, or the replay's). Items
are named by id, so learners whose catalogues gave an item different rows
agree on everything but what follows rows: the order of ties and the
newest-items candidate pools.
"""

from __future__ import annotations

import hashlib

import msgspec

__all__ = ["ItemUpdate", "decode_update", "encode_update", "user_key"]


class ItemUpdate(msgspec.Struct, array_like=True, frozen=True):
    """The item-side part of consecutive learned events of one learner, in order.

    ``items`` names every item the update mentions; the per-event lists refer
    to them by position. Event ``k`` is ``items[item[k]]``, of ``weight[k]``
    at ``ts[k]`` (epoch seconds, or ``None``), after the customer's recent
    items ``history[k]`` (most recent first). ``choice[j]`` is a step of the
    second stage, taken before event ``choice_at[j]`` (non-decreasing).
    ``category[j]`` is the category the events named for ``items[category_item[j]]``,
    which the learner's catalogue had none for: appliers take it after the events.

    Matrix factorisation steps: step ``j`` belongs to event ``mf_at[j]``
    (non-decreasing) and moves the factors of user ``mf_users[mf_user[j]]``
    and item ``items[mf_item[j]]`` towards ``mf_target[j]``; ``mf_start``
    holds the users' factors before the steps (float32, little-endian, one
    row per user). Users travel as 64-bit keys of their ids
    (:func:`user_key`), never as ids: only their own learner knows whose
    factors the result is.

    An update too large for one record travels as parts (:meth:`part`).
    A user whose steps go on in the next part is in ``mf_more`` (positions
    in ``mf_users``): every learner keeps the factors the part left the user
    at, and the user's own learner does not take them yet. A user whose
    steps began in an earlier part is in ``mf_resume``: the part's steps
    start from the factors kept, as the whole update's would have gone on
    (``mf_start`` holds the whole update's start, used when none were kept).

    >>> u = ItemUpdate(items=["boots", "socks"], item=[1], weight=[1.0], ts=[None], history=[[0]])
    >>> decode_update(encode_update(u)) == u, u.n_events
    (True, 1)
    """

    items: list[str]
    item: list[int]
    weight: list[float]
    ts: list[float | None]
    history: list[list[int]]
    choice_at: list[int] = []
    choice: list[list[float]] = []
    mf_users: list[int] = []
    mf_start: bytes = b""
    mf_user: list[int] = []
    mf_item: list[int] = []
    mf_target: list[float] = []
    mf_at: list[int] = []
    category_item: list[int] = []  # (last: records written before them decode with none)
    category: list[str] = []
    mf_resume: list[int] = []  # (after these: records written before them decode with none)
    mf_more: list[int] = []

    @property
    def n_events(self) -> int:
        return len(self.item)

    def part(self, lo: int, hi: int) -> ItemUpdate:
        """Events ``lo`` to ``hi - 1`` with the second stage's steps taken before them, as an update of
        their own: applying ``u.part(0, m)`` then ``u.part(m, n)`` is applying ``u`` (the categories
        go with the part that ends it; a user's factor steps go on from part to part, ``mf_more``
        and ``mf_resume``, though a learner takes each part's steps in rounds of their own).

        >>> u = ItemUpdate(["a", "b", "c"], [0, 1, 2], [1.0, 1.0, 3.0], [None] * 3, [[], [0], [1, 0]],
        ...                choice_at=[2], choice=[[0.5]])
        >>> p = u.part(2, 3)
        >>> p.items, p.item, p.weight, p.history, p.choice_at, p.choice
        (['c', 'b', 'a'], [0], [3.0], [[1, 2]], [0], [[0.5]])
        """
        index: dict[int, int] = {}
        at = index.setdefault
        item = [at(i, len(index)) for i in self.item[lo:hi]]
        history = [[at(i, len(index)) for i in h] for h in self.history[lo:hi]]
        steps = [j for j, k in enumerate(self.choice_at) if lo <= k < hi]
        last = hi >= self.n_events
        mf = [j for j, k in enumerate(self.mf_at) if lo <= k < hi]
        users: dict[int, int] = {}
        mf_user = [users.setdefault(self.mf_user[j], len(users)) for j in mf]
        # Users with steps before the part (or before this update, when it is a part itself) resume
        # there; users with steps after it (or after this update) go on.
        before = {self.mf_user[j] for j, k in enumerate(self.mf_at) if k < lo} | set(self.mf_resume)
        after = {self.mf_user[j] for j, k in enumerate(self.mf_at) if k >= hi} | set(self.mf_more)
        mf_item = [at(self.mf_item[j], len(index)) for j in mf]
        # (Before `items` is listed: the item a category names may be in no event of this part.)
        category_item = [at(i, len(index)) for i in self.category_item] if last else []
        start = b""
        if users:
            width = len(self.mf_start) // len(self.mf_users)
            start = b"".join(self.mf_start[u * width:(u + 1) * width] for u in users)
        return ItemUpdate(items=[self.items[i] for i in index], item=item, weight=self.weight[lo:hi],
                          ts=self.ts[lo:hi], history=history, choice_at=[self.choice_at[j] - lo for j in steps],
                          choice=[self.choice[j] for j in steps], mf_users=[self.mf_users[u] for u in users],
                          mf_start=start, mf_user=mf_user, mf_item=mf_item,
                          mf_target=[self.mf_target[j] for j in mf], mf_at=[self.mf_at[j] - lo for j in mf],
                          category_item=category_item,
                          category=list(self.category) if last else [],
                          mf_resume=[i for u, i in users.items() if u in before],
                          mf_more=[i for u, i in users.items() if u in after])


def user_key(user_id: str) -> int:
    """The 64-bit key a user's factor steps travel under (BLAKE2b of the id).

    >>> user_key("ann") == user_key("ann") != user_key("bob")
    True
    """
    return int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest(), "little")


_encoder = msgspec.msgpack.Encoder()
_decoders: dict[type, msgspec.msgpack.Decoder] = {}


def encode_update(update: msgspec.Struct) -> bytes:
    """``update`` (an :class:`ItemUpdate`, or a record holding some) as MessagePack bytes, the form peers read."""
    return _encoder.encode(update)


def decode_update(data: bytes, type: type = ItemUpdate):
    """The ``type`` record of :func:`encode_update`'s bytes (``msgspec.DecodeError``, of which
    ``msgspec.ValidationError`` is one, on anything else)."""
    decoder = _decoders.get(type)
    if decoder is None:
        decoder = _decoders[type] = msgspec.msgpack.Decoder(type)
    return decoder.decode(data)


class _Outbox:
    """Item-side parts of the events learned since the last :meth:`take`, by catalogue row."""

    __slots__ = ("rows", "weights", "ts", "histories", "choice_at", "choice", "mf_counts", "choosers", "categories")

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.weights: list[float] = []
        self.ts: list[float | None] = []
        self.histories: list[tuple[int, ...]] = []
        self.choice_at: list[int] = []
        self.choice: list[list[float]] = []
        self.mf_counts: list[int] = []  # factor steps queued with each event
        self.categories: dict[int, str] = {}  # row -> the category an event named, first named first
        # Second-stage steps still to compute: (before event k, customer id, customer as they were, row chosen).
        self.choosers: list[tuple[int, str, object, int]] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, row: int, weight: float, ts: float | None, history: tuple[int, ...]) -> None:
        self.rows.append(row)
        self.weights.append(weight)
        self.ts.append(ts)
        self.histories.append(history)
        self.mf_counts.append(0)

    def add_steps(self, n: int) -> None:
        """The last event added queued ``n`` factor steps."""
        self.mf_counts[-1] = n

    def add_category(self, row: int, category: str) -> None:
        """An event named ``row``'s category (the first naming counts)."""
        self.categories.setdefault(row, category)

    def add_choice(self, gradient: list[float]) -> None:
        """A second-stage step, before the next event added."""
        self.choice_at.append(len(self.rows))
        self.choice.append(gradient)

    def add_chooser(self, user_id: str, user: object, row: int) -> None:
        """A second-stage step before the next event added, computed later (:meth:`resolve`) from
        ``user``, the customer's state as it is now."""
        self.choosers.append((len(self.rows), user_id, user, row))

    def resolve(self, gradients) -> None:
        """Steps of the :meth:`add_chooser` entries, in their order (``None``: no step)."""
        for (k, _, _, _), grad in zip(self.choosers, gradients):
            if grad is not None:
                self.choice_at.append(k)
                self.choice.append(grad.tolist())
        self.choosers = []

    def take(self, item_id, mf_steps: tuple[list[int], list[int], list[float]] = ([], [], []),
             mf_users: list[int] = (), mf_start: bytes = b"") -> ItemUpdate | None:
        """The queue as an update naming items by ``item_id(row)`` (``None`` if empty), with the factor
        steps ``(user index, row, target)`` queued with its events (``mf_counts``) and their users'
        keys and starting factors; empties it."""
        if not self.rows and not self.choice:  # (a category comes with its event's row)
            return None
        index: dict[int, int] = {}
        at = index.setdefault
        item = [at(row, len(index)) for row in self.rows]
        history = [[at(row, len(index)) for row in h] for h in self.histories]
        mf_user, mf_rows, mf_target = mf_steps
        mf_item = [at(row, len(index)) for row in mf_rows]
        mf_at = [k for k, n in enumerate(self.mf_counts) for _ in range(n)]
        category_item = [at(row, len(index)) for row in self.categories]
        update = ItemUpdate(items=[item_id(row) for row in index], item=item, weight=self.weights, ts=self.ts,
                            history=history, choice_at=self.choice_at, choice=self.choice, mf_users=list(mf_users),
                            mf_start=mf_start, mf_user=list(mf_user), mf_item=mf_item, mf_target=list(mf_target),
                            mf_at=mf_at, category_item=category_item, category=list(self.categories.values()))
        self.__init__()
        return update

    def __getstate__(self):
        assert not self.choosers, "resolve the second stage's steps before saving"
        return (self.rows, self.weights, self.ts, self.histories, self.choice_at, self.choice, self.mf_counts,
                self.categories)

    def __setstate__(self, state):
        self.rows, self.weights, self.ts, self.histories, self.choice_at, self.choice, self.mf_counts = state[:7]
        self.categories = dict(state[7]) if len(state) > 7 else {}  # (saved before events named categories)
        self.choosers = []
