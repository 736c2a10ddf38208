"""The streaming-recommender contract that the ranker and every baseline follow.

A recommender learns one interaction at a time (:meth:`StreamingRecommender.learn_one`)
and ranks many users at once (:meth:`StreamingRecommender.recommend`), which
returns two ``users x n`` arrays, as the ``implicit`` library does: item ids
and their scores, best first. A row with fewer than ``n`` recommendations is
padded at its end with :data:`PAD_ID` and :data:`PAD_SCORE`;
:func:`valid_counts` and :func:`valid_part` give the real part.
"""

from __future__ import annotations

import abc
import sys
from collections.abc import Callable, Collection, Sequence

import numpy as np

from models.catalog import Catalog
from models.events import ENGAGEMENT, EVENT_WEIGHTS, PURCHASE
from models.ranking import pickling
from models.ranking.topk import top_n
from models.ranking.users import _pack_users, _unpack_users, _User, decode_user, encode_user

__all__ = ["EXCLUDE_RULES", "PAD_ID", "PAD_SCORE", "StreamingRecommender", "valid_counts", "valid_part"]

#: Values accepted by ``recommend(..., exclude=...)``.
EXCLUDE_RULES = ("purchased", "interacted", "none")

#: Item id of the padding at the end of a row with fewer than ``n`` recommendations.
PAD_ID = None
#: Score of that padding; every real recommendation has a finite score.
PAD_SCORE = -np.inf


def padded(n_users: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, scores)`` of ``n_users`` rows of ``n`` recommendations, all padding (to be filled)."""
    shape = (n_users, max(n, 0))
    return np.full(shape, PAD_ID, dtype=object), np.full(shape, PAD_SCORE)


def valid_counts(scores: np.ndarray) -> np.ndarray:
    """Number of real recommendations in each row of ``scores`` (they come first).

    >>> valid_counts(np.array([[0.9, 0.5, -np.inf], [-np.inf, -np.inf, -np.inf]])).tolist()
    [2, 0]
    """
    return np.count_nonzero(scores > PAD_SCORE, axis=-1)


def valid_part(ids: np.ndarray, scores: np.ndarray, row: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ``row`` of a :meth:`~StreamingRecommender.recommend` result without its padding.

    >>> ids = np.array([["x", "y", None]], dtype=object)
    >>> valid_part(ids, np.array([[0.9, 0.5, -np.inf]]), 0)
    (array(['x', 'y'], dtype=object), array([0.9, 0.5]))
    """
    m = int(valid_counts(scores[row]))
    return ids[row, :m], scores[row, :m]


def check_request(user_ids: Sequence[str], exclude: str) -> None:
    """Raise on arguments that no recommender accepts (see :meth:`StreamingRecommender.recommend`)."""
    if exclude not in EXCLUDE_RULES:
        raise ValueError(f"exclude must be one of {EXCLUDE_RULES}, got {exclude!r}")
    if isinstance(user_ids, str):
        raise TypeError("user_ids must be a sequence of user ids, not a string")


class StreamingRecommender(abc.ABC):
    """Shared machinery: catalogue, bounded user state, exclusion rules, top-N.

    Subclasses implement ``_learn(user_id, user, row, weight, ts)`` (called
    *before* the event enters the user's history) and
    ``_scores(user_id, user, n_items) -> np.ndarray`` (a fresh array, one
    score per catalogue row, higher is better; it must not mutate anything).

    Parameters
    ----------
    history_size
        Recent items kept per user.
    event_weights
        Strength per event type (default: :data:`models.events.EVENT_WEIGHTS`).
    seed
        Seeds everything random.

    Examples
    --------
    :meth:`recommend` ranks several users at once; a row with fewer than
    ``n`` recommendations ends with padding (id ``None``, score ``-inf``):

    >>> from models.baselines import PopularityBaseline
    >>> model = PopularityBaseline()
    >>> for user, item in [("ann", "boots"), ("bob", "boots"), ("bob", "scarf")]:
    ...     model.learn_one(user, item)
    >>> ids, scores = model.recommend(["cy", "bob"], n=3, exclude="interacted")
    >>> ids
    array([['boots', 'scarf', None],
           [None, None, None]], dtype=object)
    >>> scores
    array([[  2.,   1., -inf],
           [-inf, -inf, -inf]])
    >>> valid_part(ids, scores, 0)
    (array(['boots', 'scarf'], dtype=object), array([2., 1.]))
    >>> model.predict_one("cy", "scarf"), model.model_version, model.n_users, model.n_items
    (1.0, 3, 2, 2)

    """

    def __init__(self, history_size: int = 20, event_weights: dict[str, float] | None = None, seed: int = 0):
        self.history_size = history_size
        self.event_weights = dict(EVENT_WEIGHTS if event_weights is None else event_weights)
        self.seed = seed
        self._reset()

    def _reset(self) -> None:
        """Create the learned state (empty); subclasses add theirs."""
        self.catalog = Catalog()
        self._users: dict[str, _User] = {}
        self._n_learned = 0

    # -- public API ---------------------------------------------------------

    @property
    def model_version(self) -> int:
        """Number of interactions learned so far (monotonic)."""
        return self._n_learned

    @property
    def n_users(self) -> int:
        """Users with state (seen and not forgotten)."""
        return len(self._users)

    @property
    def n_items(self) -> int:
        """Items in the catalogue."""
        return len(self.catalog)

    def upsert_item(self, item_id: str, category: str | None = None, available: bool = True) -> None:
        """Add or update a catalogue item (category, availability)."""
        self.catalog.upsert(item_id, category=category, available=available)

    def excluded_rows(self, user_id: str, rule: str) -> np.ndarray | None:
        """Catalogue rows the exclusion ``rule`` removes from ``user_id``'s lists, sorted (``None``:
        an unknown customer, or the rule ``"none"``)."""
        user = self._users.get(user_id)
        return user.excluded(rule) if user is not None else None

    def item_category(self, item_id: str) -> str | None:
        """The catalogue's category of ``item_id`` (``None`` when unknown)."""
        return self.catalog.category_of(item_id)

    def learn_one(self, user_id: str, item_id: str, event_type: str = "click", ts: float | None = None, *,
                  items: bool = True, personal: bool = True, category: str | None = None) -> None:
        """Learn from one interaction; ``ts`` is in epoch seconds.

        A worker learns some events on one side only: ``personal=False`` when
        the customer's own state (history, sets, factors) holds the event
        already, having come with their profile (:meth:`import_user`), and
        ``items=False`` when the item-side state has learned it already
        (a restored checkpoint newer than the profile). ``category``, the
        event's category of the item, becomes the item's where the catalogue
        has none, once the item side has learned the event
        (:meth:`_learn_category`); the catalogue's own (:meth:`upsert_item`) wins.
        """
        try:
            weight = self.event_weights[event_type]
        except KeyError:
            raise ValueError(f"unknown event_type {event_type!r}; expected one of {sorted(self.event_weights)}") from None
        row = self._row(item_id)
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = _User(self.history_size)
        if items and self._learn(user_id, user, row, weight, ts, personal) is not False:
            self._n_learned += 1
        if items and category is not None and not self.catalog.has_category(row):
            self._learn_category(row, category)
        if personal:
            user.push(row, weight, event_type == PURCHASE, ts, ENGAGEMENT.get(event_type, 0))

    def _learn_category(self, row: int, category: str) -> None:
        """An event named the category of ``row``, which the catalogue has none for: here, at once
        (the item side has learned the event); a learner sharing its item side sends it with its
        update instead."""
        self.catalog.fill_category(row, category)

    def _row(self, item_id: str) -> int:
        """The catalogue row of ``item_id``, added if it is new."""
        row = self.catalog.row(item_id)
        return self.catalog.upsert(item_id) if row is None else row

    # -- per-customer state that moves between workers ------------------------

    def warm_users(self) -> list[str]:
        """The customers whose own state this model holds, in the order it took them."""
        return list(self._users)

    def users_with_queued_steps(self) -> frozenset[str]:
        """Customers with learning steps queued but not applied yet (none by default): their
        exported state would not hold those steps."""
        return frozenset()

    def user_version(self, user_id: str) -> int | None:
        """How many events ``user_id``'s own state holds (``None``: no state here)."""
        user = self._users.get(user_id)
        return None if user is None else user.n

    def export_users(self, user_ids: Sequence[str]) -> list[bytes | None]:
        """Each customer's own state in portable form (:class:`~models.ranking.users.UserRecord`
        bytes; ``None`` for a customer without state here)."""
        users = self._users
        factors = self._user_factors([u for u in user_ids if u in users])
        ids = self.catalog.ids
        return [None if (user := users.get(u)) is None else encode_user(user, ids, *factors.get(u, (b"", [])))
                for u in user_ids]

    def import_user(self, user_id: str, record: bytes) -> None:
        """Replace whatever state this model holds for ``user_id`` by ``record`` (:meth:`export_users`',
        possibly of another process: items are named by id). Item-side state is left as it is."""
        user, rec = decode_user(record, self._row, self.history_size)
        self._users[user_id] = user
        self._set_user_factors(user_id, rec.factors, [(self._row(item), item, y) for item, y in rec.steps])

    def drop_users(self, user_ids: Collection[str]) -> None:
        """Let go of these customers' own state in this process (another worker serves them now:
        their profiles carry it there). Item-side aggregates are kept, as by :meth:`forget_user`."""
        users = self._users
        for user_id in user_ids:
            users.pop(user_id, None)

    def _user_factors(self, user_ids: list[str]) -> dict[str, tuple[bytes, list[tuple[str, float]]]]:
        """Per customer with some, their latent factors and the steps queued for them (item id,
        target), for :meth:`export_users` (subclass hook; none by default)."""
        return {}

    def _set_user_factors(self, user_id: str, factors: bytes, steps: list[tuple[int, str, float]]) -> None:
        """Set the customer's latent factors (``b""``: none) and queued steps (row, item id, target) (subclass hook;
        a model without factors has nothing to set)."""
        return None

    def recommend(self, user_ids: Sequence[str], n: int = 20,
                  exclude: str = "purchased") -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` items of each user, best first: ``(ids, scores)``, both ``len(user_ids) x n``.

        ``ids`` holds item ids (dtype object), ``scores`` their scores (float);
        equal scores come in catalogue-row order. A row with fewer
        than ``n`` recommendations is padded at its end with id ``None`` and
        score ``-inf`` (:func:`valid_part`). Unavailable items are never
        returned; ``exclude`` additionally removes the user's ``"purchased"``
        items (default), all ``"interacted"`` items, or nothing (``"none"``).
        """
        return self._dense_lists(user_ids, n, exclude, self._scores)

    def _dense_lists(self, user_ids: Sequence[str], n: int, exclude: str,
                     score: Callable[[str, _User | None, int], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`recommend` from ``score(user_id, user, n_items)``: every item's score, per user."""
        check_request(user_ids, exclude)
        ids, scores = padded(len(user_ids), n)
        n_items = len(self.catalog)
        if n_items == 0 or n <= 0:
            return ids, scores
        blocked = ~self.catalog.available
        item_ids = self.catalog.ids
        for i, user_id in enumerate(user_ids):
            user = self._users.get(user_id)
            s = score(user_id, user, n_items)
            s[blocked] = -np.inf
            if user is not None:
                excl = user.excluded(exclude)
                if excl is not None and len(excl):
                    s[excl] = -np.inf
            rows = top_n(s, n)
            m = len(rows)
            ids[i, :m] = [item_ids[r] for r in rows.tolist()]
            scores[i, :m] = s[rows]
        return ids, scores

    def predict_one(self, user_id: str, item_id: str) -> float:
        """Score of one item for one user (0 for unknown items); never mutates."""
        row = self.catalog.row(item_id)
        if row is None:
            return 0.0
        return float(self._scores(user_id, self._users.get(user_id), len(self.catalog))[row])

    def forget_user(self, user_id: str) -> None:
        """Remove the user's history, sets and personal factors.

        Item-side aggregates (co-visit counts, popularity) are anonymous sums
        and are kept, as in any aggregate statistic.
        """
        self.drop_users((user_id,))

    def dumps(self) -> bytes:
        """Checkpoint (pickle; equal models give equal bytes)."""
        return pickling.dumps(self)

    @classmethod
    def loads(cls, data: bytes):
        """The model of a checkpoint written by :meth:`dumps` (by this or an earlier version)."""
        model = pickling.load(data)
        if not isinstance(model, cls):
            raise TypeError(f"checkpoint holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def __getstate__(self):
        state = self.__dict__.copy()
        packed = _pack_users(self._users, self.history_size)
        if packed is not None:
            del state["_users"]
            state["_users_packed"] = packed
        return state

    def __setstate__(self, state):
        if "_users_packed" in state:  # (checkpoints before it hold the users as objects)
            state["_users"] = _unpack_users(state.pop("_users_packed"))
        # Interned keys, as pickle's default BUILD does: byte-identical re-dumps.
        self.__dict__.update({sys.intern(k): v for k, v in state.items()})

    # -- hooks of subclasses --------------------------------------------------

    @abc.abstractmethod
    def _learn(self, user_id: str, user: _User, row: int, weight: float, ts: float | None,
               personal: bool = True) -> None:
        """Fold one interaction into the model's item-side state, and also into the customer's own
        factors unless ``personal`` is false (subclass hook). ``False`` says the item side
        will learn it later (a ranker sharing its item side): it is not counted as learned yet."""

    @abc.abstractmethod
    def _scores(self, user_id: str, user: _User | None, n_items: int) -> np.ndarray:
        """Scores of every catalogue row for one user (subclass hook)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_users={self.n_users}, n_items={self.n_items}, model_version={self.model_version})"
