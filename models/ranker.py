"""Hybrid top-N ranker: co-visitation + trending popularity + implicit MF.

The ranker is what the Faust workers and ``recostream replay`` run, both built
through the defaults of :class:`HybridRanker` so that offline evaluation and
production use the same code and configuration.

How :meth:`HybridRanker.recommend` stays cheap per user (none of this changes
what is recommended):

* catalogue-wide terms (candidate pools, quantised MF item factors) live in a
  cache (:class:`_Context`) kept up to date incrementally between calls;
* users are scored in chunks, all users of a chunk at once (:class:`_Terms`,
  :class:`_Batch`): neighbourhoods are gathered from the co-visitation slab in
  one index and summed per (user, item) with two radix sorts, pool items are
  scored as dense ``users x items`` blocks (one matrix product for MF), and
  a pool block is skipped for users whose ``n``-th best neighbour it cannot
  beat;
* MF scores are exact integer dot products of quantised factors (24 bits),
  so a user's scores do not depend on the batch it is scored in; ties at a
  cut-off go to the lower row. Batched and one-user calls (the replay, which
  takes a leaner path) give identical lists.
"""

from __future__ import annotations

import abc
import io
import itertools
import math
import operator
import pickle
import sys
from collections.abc import Sequence

import numpy as np

from models.catalog import Catalog, grow_to
from models.covisit import CoVisitation, _ranges
from models.events import EVENT_WEIGHTS, PURCHASE
from models.mf import ImplicitMF
from models.popularity import TrendingPopularity

__all__ = ["EVENT_WEIGHTS", "EXCLUDE_RULES", "StreamingRecommender", "ItemState", "HybridRanker"]


#: Values accepted by ``recommend(..., exclude=...)``.
EXCLUDE_RULES = ("purchased", "interacted", "none")

class _User:
    """Bounded recent history plus the user's own interacted/purchased items.

    The history is kept in tuples (rebuilt on each push, at most
    ``maxlen`` long): tuples of numbers, like the dicts of int keys here,
    are not tracked by Python's cyclic garbage collector, which keeps its
    full collections cheap with millions of users.
    """

    __slots__ = ("maxlen", "history", "weights", "interacted", "purchased", "_excl")

    def __init__(self, history_size: int):
        self.maxlen = history_size
        self.history: tuple[int, ...] = ()  # rows, most recent last
        self.weights: tuple[float, ...] = ()
        self.interacted: dict[int, None] = {}  # ordered set (deterministic pickles)
        self.purchased: dict[int, None] = {}
        self._excl: dict[str, np.ndarray] = {}  # cached exclusion arrays

    def push(self, row: int, weight: float, purchase: bool) -> None:
        history, weights = self.history, self.weights
        # A revisit moves the item to the front instead of duplicating it, so
        # a shopper flicking between two products does not flood the history.
        if row in self.interacted and row in history:
            i = history.index(row)
            weight = max(weight, weights[i])
            history = history[:i] + history[i + 1:]
            weights = weights[:i] + weights[i + 1:]
        history, weights = history + (row,), weights + (weight,)
        drop = len(history) - self.maxlen
        if drop > 0:
            history, weights = history[drop:], weights[drop:]
        self.history, self.weights = history, weights
        if row not in self.interacted:
            self.interacted[row] = None
            self._excl.pop("interacted", None)
        if purchase and row not in self.purchased:
            self.purchased[row] = None
            self._excl.pop("purchased", None)

    def excluded(self, rule: str) -> np.ndarray | None:
        if rule == "none":
            return None
        arr = self._excl.get(rule)
        if arr is None:
            rows = self.interacted if rule == "interacted" else self.purchased
            arr = self._excl[rule] = np.sort(np.fromiter(rows, dtype=np.int64, count=len(rows)))
        return arr

    def __getstate__(self):
        return (self.maxlen, list(self.history), list(self.weights), list(self.interacted), list(self.purchased))

    def __setstate__(self, state):
        maxlen, history, weights, interacted, purchased = state
        self.maxlen = maxlen
        self.history = tuple(history[len(history) - maxlen:] if maxlen is not None and len(history) > maxlen else history)
        self.weights = tuple(weights[len(weights) - maxlen:] if maxlen is not None and len(weights) > maxlen else weights)
        self.interacted = dict.fromkeys(interacted)
        self.purchased = dict.fromkeys(purchased)
        self._excl = {}


def _pack_users(users: dict[str, _User], maxlen: int) -> dict | None:
    """Every user's state as a few flat arrays (``None`` if some user's ``maxlen`` differs).

    A checkpoint pickles tens of thousands of users; one object each cost
    ~6 us (135 ms at 21k users), the arrays ~1 us per user. The order of the
    users and of each user's items is kept, so equal models give equal bytes.
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
    users: dict[str, _User] = {}
    new = _User.__new__
    for user_id, h, w, i, p in zip(packed["ids"], histories, weights, interacted, purchased):
        u = new(_User)
        u.maxlen, u.history, u.weights = maxlen, tuple(h), tuple(w)
        u.interacted, u.purchased, u._excl = dict.fromkeys(i), dict.fromkeys(p), {}
        users[user_id] = u
    return users


def _array(data: bytes, dtype: str, shape: tuple) -> np.ndarray:
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _scalar(data: bytes, dtype: str):
    return np.frombuffer(data, dtype=dtype)[0]


class _CanonicalPickler(pickle.Pickler):
    """Pickles numpy values by dtype *name* rather than dtype object.

    Plain pickle memoises dtype objects by identity, and a restored model
    holds different dtype objects than the original, so equal models could
    serialise to different bytes. Checkpoint equality is part of the model
    contract (deterministic restarts, "predicting does not mutate" checks).
    """

    def reducer_override(self, obj):
        if type(obj) is np.ndarray and obj.dtype.kind in "biufc":
            return _array, (obj.tobytes(), obj.dtype.str, obj.shape)
        if isinstance(obj, np.generic) and obj.dtype.kind in "biufc":
            return _scalar, (obj.tobytes(), obj.dtype.str)
        return NotImplemented


class StreamingRecommender(abc.ABC):
    """Shared machinery: catalogue, bounded user state, exclusion rules, top-N.

    Subclasses implement ``_learn(user_id, user, row, weight, ts)`` (called
    *before* the event enters the user's history) and
    ``_scores(user_id, user, n_items) -> np.ndarray`` (a fresh array, one
    score per catalogue row, higher is better; it must not mutate anything).

    """

    def __init__(self, history_size: int = 20, event_weights: dict[str, float] | None = None, seed: int = 0):
        self.history_size = history_size
        self.event_weights = dict(EVENT_WEIGHTS if event_weights is None else event_weights)
        self.seed = seed
        self._reset()

    def _reset(self) -> None:
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
        return len(self._users)

    @property
    def n_items(self) -> int:
        return len(self.catalog)

    def upsert_item(self, item_id: str, category: str | None = None, available: bool = True) -> None:
        """Add or update a catalogue item (category, availability)."""
        self.catalog.upsert(item_id, category=category, available=available)


    def item_category(self, item_id: str) -> str | None:
        """The catalogue's category of ``item_id`` (``None`` when unknown)."""
        return self.catalog.category_of(item_id)
    def learn_one(self, user_id: str, item_id: str, event_type: str = "click", ts: float | None = None) -> None:
        """Learn from one interaction; ``ts`` is in epoch seconds."""
        try:
            weight = self.event_weights[event_type]
        except KeyError:
            raise ValueError(f"unknown event_type {event_type!r}; expected one of {sorted(self.event_weights)}") from None
        row = self.catalog._rows.get(item_id)
        if row is None:
            row = self.catalog.upsert(item_id)
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = _User(self.history_size)
        self._learn(user_id, user, row, weight, ts)
        user.push(row, weight, event_type == PURCHASE)
        self._n_learned += 1

    def recommend(self, user_ids: Sequence[str], n: int = 20, exclude: str = "purchased") -> list[list[tuple[str, float]]]:
        """Top-``n`` ``(item_id, score)`` per user, best first.

        Unavailable items are never returned; ``exclude`` additionally removes
        the user's ``"purchased"`` items (default), all ``"interacted"`` items,
        or nothing (``"none"``).
        """
        if exclude not in EXCLUDE_RULES:
            raise ValueError(f"exclude must be one of {EXCLUDE_RULES}, got {exclude!r}")
        n_items = len(self.catalog)
        if isinstance(user_ids, str):
            raise TypeError("user_ids must be a sequence of user ids, not a string")
        if n_items == 0 or n <= 0:
            return [[] for _ in user_ids]
        blocked = ~self.catalog.available
        ids = self.catalog.ids
        out = []
        for user_id in user_ids:
            user = self._users.get(user_id)
            scores = self._scores(user_id, user, n_items)
            scores[blocked] = -np.inf
            if user is not None:
                excl = user.excluded(exclude)
                if excl is not None and len(excl):
                    scores[excl] = -np.inf
            out.append([(ids[r], float(scores[r])) for r in top_n(scores, n)])
        return out

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
        self._users.pop(user_id, None)

    def dumps(self) -> bytes:
        """Checkpoint (pickle; equal models give equal bytes)."""
        buf = io.BytesIO()
        _CanonicalPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(self)
        return buf.getvalue()

    @classmethod
    def loads(cls, data: bytes):
        model = pickle.loads(data)
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

    # -- helpers for subclasses --------------------------------------------

    def _weighted_history(self, user: _User | None, decay: float) -> tuple[list[int], list[float]]:
        """History rows, most recent first, with ``event_weight * decay**position``."""
        if user is None or not user.history:
            return [], []
        rows = list(reversed(user.history))
        weights, f = [], 1.0
        for w in reversed(user.weights):
            weights.append(w * f)
            f *= decay
        return rows, weights

    @abc.abstractmethod
    def _learn(self, user_id: str, user: _User, row: int, weight: float, ts: float | None) -> None:
        """Fold one interaction into the model's item-side state (subclass hook)."""

    @abc.abstractmethod
    def _scores(self, user_id: str, user: _User | None, n_items: int) -> np.ndarray:
        """Scores of every catalogue row for one user (subclass hook)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_users={self.n_users}, n_items={self.n_items}, model_version={self.model_version})"


_CHUNK_USERS = 256  # users scored together by recommend, at most ...
_CHUNK_ENTRIES = 65_536  # ... and about this many neighbourhood entries (keeps temporaries cache-sized)
_GEMM_ROWS = 128  # rows per matrix product (larger ones make OpenBLAS start threads that then spin)
_RADIX_BOUND = 1 << 16  # keys below this are sorted by numpy's O(n) radix sort (kind="stable" on uint16)


def _stable_order(keys: np.ndarray, bound: int) -> np.ndarray:
    """``np.argsort(keys, kind="stable")`` for non-negative ints below ``bound`` (radix sort when they fit 16 bits)."""
    if bound <= 256:
        keys = keys.astype(np.uint8)  # one radix pass instead of two
    elif bound <= _RADIX_BOUND:
        keys = keys.astype(np.uint16)
    return np.argsort(keys, kind="stable")


def _best_k(V: np.ndarray, k: int, ids) -> np.ndarray:
    """Column indices of the ``k`` best values of each row of ``V``; of values tied at the cut,
    those with the lowest ids (``ids(row_indices, column_indices)``) are kept.

    ``np.argpartition`` alone keeps an arbitrary subset of such ties, which
    could depend on a row's padding; this makes the choice a function of the
    candidates only (``-inf`` ties are left alone: they are never returned).

    >>> V = np.array([[1.0, 3.0, 2.0, 2.0, 2.0]])
    >>> sorted(_best_k(V, 3, lambda i, j: -j)[0].tolist())  # ids favour the last columns
    [1, 3, 4]
    """
    m, w = V.shape
    if w <= k:
        return np.broadcast_to(np.arange(w), (m, w))
    idx = np.argpartition(V, w - k, axis=1)[:, w - k:]
    vals = np.take_along_axis(V, idx, axis=1)
    T = vals.min(axis=1)
    tied = ((V == T[:, None]).sum(axis=1) > (vals == T[:, None]).sum(axis=1)) & (T > -np.inf)
    for i in np.flatnonzero(tied).tolist():
        row = V[i]
        above = np.flatnonzero(row > T[i])
        at = np.flatnonzero(row == T[i])
        at = at[np.argsort(ids(np.full(len(at), i), at), kind="stable")[: k - len(above)]]
        idx[i] = np.concatenate((above, at))
    return idx


def _run_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Index of the first element of each run of equal values in ``sorted_keys``."""
    if not len(sorted_keys):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))


def _exact_bits(n_factors: int) -> int:
    """Bits of the quantised MF factors: a dot product of two such vectors is an exact float64 sum."""
    return max(1, (52 - max(1, int(n_factors) - 1).bit_length()) // 2)


class _Context:
    """Catalogue-wide state of :meth:`HybridRanker.recommend`, kept up to date between calls.

    A cache, never model state (not serialised): everything in it is a
    function of the model, rebuilt from scratch after a restore and kept
    incrementally otherwise, so a restored model and the live one recommend
    exactly alike.

    * Candidate pools: the ``n_candidates`` most popular available items
      (block 0) and, per category, its ``n_candidates`` most popular and
      ``n_new_candidates`` newest available items minus block 0 (block
      ``1 + c``). Popularity values only grow between rescales, so the new
      top lists are found among the old ones and the rows updated since the
      previous call (:meth:`TrendingPopularity.track_changes`); a change of
      availability or category, or a rescale, rebuilds them. All categories
      are merged at once (:meth:`_merge_cats`), and only the blocks of the
      categories whose lists changed, or that gained or lost a block-0 row,
      are recomputed (:meth:`_cat_blocks`).
    * Derived arrays that change less often than every call (padded blocks,
      block factors, category codes, co-visitation norms) are kept across
      calls, keyed by what they derive from (``keep``); the norms are
      recomputed only for rows whose co-visitation mass moved.
    * MF item factors quantised to integers times a power of two (cached per
      factor update), so that every dot product is exact: scores do not
      depend on how users are batched or on the BLAS kernel used.
    """

    def __init__(self, ranker: "HybridRanker"):
        self.r = ranker
        self.catalog = None
        self.popularity = None
        self.n_items = 0
        self.cat_version = -1
        self.top = np.zeros(0, dtype=np.int64)  # rows of block 0, ascending
        self.in_cat_top = np.zeros(0, dtype=bool)  # rows in their category's top list
        self.cat_top: list[np.ndarray] = []
        self.cat_new: list[np.ndarray] = []
        self.cat_mat = None  # cat_top as a matrix (see _cat_matrix)
        self.cat_cnt = np.zeros(0, dtype=np.int64)
        self.blocks: list[np.ndarray] = []  # rows of each block, ascending
        self.block_of = np.zeros(0, dtype=np.int64)  # block of each row (-1: none)
        self.block_pos = np.zeros(0, dtype=np.int64)  # position of each row in its block
        self.n_cats = 0
        self.order = None  # every available row by popularity, when a cold list longer than block 0 was asked
        self.ids = np.zeros(0, dtype=object)  # item ids by row, as an object array (fast gathers)
        self.ids_n = 0
        self.mf = None
        self.rowmax = np.zeros(0)  # largest |factor| of each item row
        self.Fq = np.zeros((1, 0))
        self.f_exp = 0
        self.bits = 24
        self.fq_version = 0  # bumped whenever Fq changes
        self.blocks_version = 0  # bumped whenever a block changes
        self.norm = None
        self.norm_entries = 0
        self._norm_all = None  # (covisit, mass as of the last computation, mass ** -alpha)
        self.keep: dict = {}  # derived arrays kept across calls: key -> (token, value)
        pows = [1.0]
        for _ in range(max(1, ranker.history_size)):
            pows.append(pows[-1] * ranker.history_decay)  # same products as _weighted_history
        self.decay_pows = np.array(pows)

    # -- pools ----------------------------------------------------------------

    def refresh(self, n_items: int, many: bool = False) -> None:
        """Bring the cache up to date; ``many``: the call scores many users, so catalogue-wide
        arrays computed once for the call pay off."""
        self.many = many
        r = self.r
        cat, pop = r.catalog, r.items.popularity
        changed = pop.track_changes()
        self.pop = pop.scores(n_items)
        self.base_scale = r.w_popularity / pop.max_value if pop.max_value > 0 else 0.0
        if cat is not self.catalog:
            self.ids_n = 0
        if (changed is None or cat is not self.catalog or pop is not self.popularity
                or cat.version != self.cat_version or n_items < self.n_items):
            self._build(n_items)
        else:
            self._update(n_items, changed)
        self.available = cat.available
        self.cats = cat.category
        self.norm, self.norm_entries = None, 0  # covisit_norm() of this call
        self.call_cache: dict = {}
        self._refresh_mf()

    def _kept(self, key, token):
        """A derived array kept across calls, if it was derived from the same ``token`` (else ``None``)."""
        entry = self.keep.get(key)
        if entry is not None and len(entry[0]) == len(token) and all(a is b or (type(a) is int and a == b)
                                                                     for a, b in zip(entry[0], token)):
            return entry[1]
        return None

    def _key_order(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` by popularity, descending, ties to the lower row."""
        return rows[np.lexsort((rows, -self.pop[rows]))]

    def _build(self, n_items: int) -> None:
        r = self.r
        cat = r.catalog
        self.catalog, self.popularity = cat, r.items.popularity
        self.cat_version, self.n_items = cat.version, n_items
        p, q = r.n_candidates, r.n_new_candidates
        avail = np.flatnonzero(cat.available)
        order = self._key_order(avail)
        self.order = order
        self.top = np.sort(order[:p])
        self.n_cats = cat.n_categories if r.w_category else 0
        self.cat_top, self.cat_new = [], []
        self.cat_mat = None
        self.in_cat_top = np.zeros(n_items, dtype=bool)
        if self.n_cats:
            cats = cat.category
            by_cat = order[np.argsort(cats[order], kind="stable")]
            bounds = np.searchsorted(cats[by_cat], np.arange(self.n_cats + 1))
            newest = avail[::-1]
            newest = newest[np.argsort(cats[newest], kind="stable")]
            nbounds = np.searchsorted(cats[newest], np.arange(self.n_cats + 1))
            for c in range(self.n_cats):
                self.cat_top.append(np.sort(by_cat[bounds[c]:min(bounds[c + 1], bounds[c] + p)]))
                self.cat_new.append(newest[nbounds[c]:min(nbounds[c + 1], nbounds[c] + q)])
                self.in_cat_top[self.cat_top[-1]] = True
        self._set_blocks(n_items, None)

    def _update(self, n_items: int, changed: list[int]) -> None:
        r = self.r
        cat = r.catalog
        p, q = r.n_candidates, r.n_new_candidates
        old_n = self.n_items
        self.n_items = n_items
        rows = np.array(changed, dtype=np.int64)
        if len(rows) > 1:
            rows = np.unique(rows)
        new_rows = None
        if n_items > old_n:
            new_rows = np.arange(old_n, n_items)
            rows = np.union1d(rows, new_rows)
        if not len(rows):
            if len(self.block_of) < n_items:
                self._set_blocks(n_items, (), False)
            return
        avail = cat.available
        rows = rows[avail[rows]]
        self.order = None
        dirty: set[int] = set()
        # Rows already in a top list only moved up inside it.
        known = len(self.block_of)
        if len(rows) and rows[-1] >= known:
            in_top = np.zeros(len(rows), dtype=bool)
            old_rows = rows < known
            in_top[old_rows] = self.block_of[rows[old_rows]] == 0
        else:
            in_top = self.block_of[rows] == 0
        old_top = self.top
        self.top, top_changed = self._merge(self.top, rows[~in_top], p)
        cats = None
        if self.r.w_category and cat.n_categories:
            cats = cat.category
            while len(self.cat_top) < cat.n_categories:
                self.cat_top.append(np.zeros(0, dtype=np.int64))
                self.cat_new.append(np.zeros(0, dtype=np.int64))
            self.n_cats = cat.n_categories
            if len(self.in_cat_top) < n_items:
                self.in_cat_top = grow_to(self.in_cat_top, n_items, fill=False)
            rows = rows[~self.in_cat_top[rows]]
            rc = cats[rows]
            known_cat = rc >= 0
            if p > 0 and known_cat.any():
                dirty.update(self._merge_cats(rows[known_cat], rc[known_cat], p))
            if new_rows is not None:
                fresh = new_rows[avail[new_rows]]
                if len(fresh):
                    fc = cats[fresh]
                    for c in np.unique(fc[fc >= 0]).tolist():
                        self.cat_new[c] = np.concatenate((fresh[fc == c][::-1], self.cat_new[c]))[:q]
                        dirty.add(c)
        if top_changed and self.n_cats:
            # A category block is its top and newest rows minus block 0: only the
            # categories of the rows that entered or left block 0 change.
            moved = np.setxor1d(old_top, self.top, assume_unique=True)
            mc = cat.category[moved]
            dirty.update(np.unique(mc[(mc >= 0) & (mc < self.n_cats)]).tolist())
        if top_changed or dirty or len(self.block_of) < n_items or len(self.blocks) < 1 + self.n_cats:
            self._set_blocks(n_items, dirty, top_changed)

    def _cat_matrix(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        """The category top lists as one ``n_cats x p`` matrix of rows (ascending, padded
        with -1) and their lengths; kept in step with ``cat_top``."""
        M = self.cat_mat
        if M is None or len(M) != len(self.cat_top) or M.shape[1] != p:
            n = len(self.cat_top)
            M = np.full((n, p), -1, dtype=np.int64)
            cnt = np.array([len(t) for t in self.cat_top], dtype=np.int64)
            if n:
                M[np.arange(p) < cnt[:, None]] = np.concatenate(self.cat_top)
            self.cat_mat, self.cat_cnt = M, cnt
        return self.cat_mat, self.cat_cnt

    def _merge_cats(self, rows: np.ndarray, rc: np.ndarray, p: int) -> list[int]:
        """:meth:`_merge` of every category's top list with its new ``rows`` (categories ``rc``,
        none of them in a top list yet), all categories at once; returns the changed categories."""
        pop = self.pop
        M, cnt = self._cat_matrix(p)
        # Only rows that can beat their category's last one (values only grew).
        V = pop[np.maximum(M, 0)]
        V[M < 0] = np.inf
        thr = V.min(axis=1)
        thr[cnt < p] = -np.inf
        keep = pop[rows] >= thr[rc]
        if not keep.any():
            return []
        rows, rc = rows[keep], rc[keep]
        order = np.argsort(rc, kind="stable")  # rows ascending within each category
        rows, rc = rows[order], rc[order]
        starts = _run_starts(rc)
        cats = rc[starts]
        nx = np.diff(np.append(starts, len(rc)))
        # One line per category: its top list (padded to p), then its new rows.
        m, w = len(cats), p + int(nx.max())
        R = np.full((m, w), -1, dtype=np.int64)
        R[:, :p] = M[cats]
        line = np.repeat(np.arange(m), nx)
        R[line, p + np.arange(len(rows)) - np.repeat(starts, nx)] = rows
        V = pop[np.maximum(R, 0)]
        V[R < 0] = -np.inf
        idx = np.lexsort((R, -V), axis=-1)[:, :p]  # the p best, ties to the lower row
        sel = np.take_along_axis(R, idx, axis=1)
        real = sel >= 0
        changed = (real & (idx >= p)).any(axis=1)  # a new row got in
        if not changed.any():
            return []
        ch = np.flatnonzero(changed)
        cats, sel, real = cats[ch], sel[ch], real[ch]
        big = np.iinfo(np.int64).max
        S = np.sort(np.where(real, sel, big), axis=1)
        newcnt = real.sum(axis=1)
        old = M[cats]
        self.in_cat_top[old[old >= 0]] = False
        self.in_cat_top[S[S != big]] = True
        M[cats] = np.where(S == big, -1, S)
        cnt[cats] = newcnt
        out = cats.tolist()
        for i, (c, k) in enumerate(zip(out, newcnt.tolist())):
            self.cat_top[c] = S[i, :k]
        return out

    def _merge(self, top: np.ndarray, rows: np.ndarray, p: int) -> tuple[np.ndarray, bool]:
        """The ``p`` best of ``top`` (ascending, all rows' values only grew) and new ``rows``
        (ascending, none in ``top``); returns them ascending, and whether they changed."""
        if not len(rows):
            return top, False
        pop = self.pop
        if len(top) >= p:
            rows = rows[pop[rows] >= pop[top].min()]  # the others cannot get in
            if not len(rows):
                return top, False
        both = np.concatenate((top, rows))
        vals = pop[both]
        if len(both) > p:
            both = both[np.lexsort((both, -vals))[:p]]
            both.sort()
            if len(both) == len(top) and np.array_equal(both, top):
                return top, False
        else:
            both.sort()
        return both, True

    def _set_blocks(self, n_items: int, dirty, top_changed: bool = True) -> None:
        """(Re)compute the blocks listed in ``dirty`` (``None``: all), block 0 when ``top_changed``,
        and the row -> block maps."""
        self.blocks_version += 1
        if len(self.block_of) < n_items:
            self.block_of = grow_to(self.block_of, n_items, fill=-1)
            self.block_pos = grow_to(self.block_pos, n_items)
        if dirty is None or not self.blocks:
            old = self.blocks
            self.block_of[np.concatenate(old) if old else []] = -1
            top = np.sort(self.top)
            self.blocks = [top]
            for c in range(self.n_cats):
                self.blocks.append(self._cat_block(c, top))
            todo = range(len(self.blocks))
        else:
            while len(self.blocks) < 1 + self.n_cats:  # categories seen since the last build
                dirty = set(dirty) | {len(self.blocks) - 1}
                self.blocks.append(np.zeros(0, dtype=np.int64))
            dl = sorted(dirty)
            old = [self.blocks[1 + c] for c in dl]
            if top_changed:
                old.append(self.blocks[0])
                self.blocks[0] = self.top
            if old:
                self.block_of[np.concatenate(old)] = -1
            if top_changed:
                top = self.top
                self.block_of[top] = 0
                self.block_pos[top] = np.arange(len(top))
            if dl:
                self._cat_blocks(dl)
            return
        for b in todo:
            rows = self.blocks[b]
            self.block_of[rows] = b
            self.block_pos[rows] = np.arange(len(rows))

    def _cat_blocks(self, dl: list[int]) -> None:
        """:meth:`_cat_block` of the categories ``dl`` (ascending), all at once, and their rows' maps."""
        parts = [self.cat_top[c] for c in dl] + [self.cat_new[c] for c in dl]
        lens = [len(x) for x in parts]
        labels = np.array(dl + dl, dtype=np.int64)
        n = max(self.n_items, 1)
        key = np.repeat(labels, lens) * n + np.concatenate(parts) if sum(lens) else np.zeros(0, dtype=np.int64)
        key = np.sort(key, kind="stable")  # by category, then row (merges the sorted runs: fast)
        if len(key) > 1:
            key = key[np.concatenate(([True], key[1:] != key[:-1]))]  # no repeats
        lab = key // n
        rows = key - lab * n
        top = self.blocks[0]
        if len(top) and len(rows):
            at = np.searchsorted(top, rows)
            at[at == len(top)] = 0
            keep = top[at] != rows
            rows, lab = rows[keep], lab[keep]
        dla = np.array(dl, dtype=np.int64)
        lo = np.searchsorted(lab, dla)
        hi = np.searchsorted(lab, dla, side="right")
        for c, a, b in zip(dl, lo.tolist(), hi.tolist()):
            self.blocks[1 + c] = rows[a:b]
        self.block_of[rows] = 1 + lab
        self.block_pos[rows] = np.arange(len(rows)) - np.repeat(lo, hi - lo)

    def _cat_block(self, c: int, top: np.ndarray) -> np.ndarray:
        rows = np.concatenate((self.cat_top[c], self.cat_new[c]))
        if not len(rows):
            return rows
        rows.sort()
        keep = np.empty(len(rows), dtype=bool)
        keep[0] = True
        np.not_equal(rows[1:], rows[:-1], out=keep[1:])  # np.unique
        rows = rows[keep]
        if len(top):
            at = np.searchsorted(top, rows)
            at[at == len(top)] = 0
            rows = rows[top[at] != rows]
        return rows

    def item_ids(self, rows: np.ndarray) -> list[str]:
        """Item ids of ``rows`` (through an object array of the catalogue's ids, grown as it grows)."""
        ids = self.r.catalog.ids
        n = self.ids_n
        if n < len(ids):
            if len(self.ids) < len(ids):
                grown = np.empty(max(len(ids), 2 * len(self.ids)), dtype=object)
                grown[:n] = self.ids[:n]
                self.ids = grown
            self.ids[n:len(ids)] = ids[n:]
            self.ids_n = len(ids)
        return self.ids[rows].tolist()

    def cold(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of a user without history: trending popularity only."""
        if n > len(self.top) and len(self.top) == self.r.n_candidates:
            if self.order is None:
                self.order = self._key_order(np.flatnonzero(self.r.catalog.available))
            rows = self.order[:n]
        else:
            rows = self._key_order(self.top)[:n]
        return rows, self.pop[rows] * self.base_scale

    # -- MF -------------------------------------------------------------------

    def _refresh_mf(self) -> None:
        mf = self.r.mf
        if mf is None:
            self.mf = None
            return
        changed = mf.changed_rows()
        if mf is not self.mf:
            changed = None
        self.mf = mf
        F = mf._factors
        self.bits = _exact_bits(F.shape[1])
        if changed is None:  # every row
            self.rowmax = np.abs(F).max(axis=1) if F.size else np.zeros(len(F))
        elif not len(changed) and len(self.rowmax) == len(F):
            return
        else:
            if len(self.rowmax) < len(F):
                self.rowmax = grow_to(self.rowmax, len(F))[: len(F)]
            self.rowmax[changed] = np.abs(F[changed]).max(axis=1)
        self.fq_version += 1
        top = float(self.rowmax.max()) if len(self.rowmax) else 0.0
        f_exp = self.bits - math.frexp(top)[1]
        n = max(len(F), self.n_items)
        if changed is None or f_exp != self.f_exp or len(self.Fq) < len(F):
            # Rows without factors yet score 0: zero rows up to the catalogue size.
            Fq = np.zeros((n, F.shape[1]))
            Fq[: len(F)] = np.rint(np.ldexp(F, f_exp))
            self.Fq, self.f_exp = Fq, f_exp
        else:  # the same scale: only the rows that moved
            self.Fq[changed] = np.rint(np.ldexp(F[changed], f_exp))

    def block_factors(self, b: int) -> np.ndarray:
        """Quantised factors of block ``b``'s rows, transposed, in float64 (kept while blocks and factors are unchanged)."""
        token = (self.blocks_version, self.fq_version, self.Fq)
        kept = self._kept("F", token)
        if kept is None:
            # Every block's factors at once, transposed: block b is a slice of columns.
            widths = [len(x) for x in self.blocks]
            offsets = np.cumsum([0] + widths).tolist()
            rows = np.concatenate(self.blocks) if self.blocks else np.zeros(0, dtype=np.int64)
            FT = self.factor_rows(rows).T  # a transposed view: BLAS takes it as is (exact integer sums)
            kept = (FT, offsets)
            self.keep["F"] = ((self.blocks_version, self.fq_version, self.Fq), kept)
        FT, offsets = kept
        return FT[:, offsets[b]:offsets[b + 1]]

    def block_base(self, b: int) -> np.ndarray:
        """Popularity term of block ``b``'s rows (cached per call)."""
        return self.padded_blocks()[1][b, : len(self.blocks[b])]

    def padded_blocks(self):
        """Every block as one row of a padded matrix (cached per call): rows (padding: row 0),
        popularity terms (padding: -inf), category indices (padding: ``n_cats``), the width, and
        each block's largest popularity term (0 for an empty block). Rows and categories are kept
        across calls while the blocks and the catalogue are unchanged."""
        out = self.call_cache.get("padded")
        if out is None:
            token = (self.blocks_version, self.catalog.version, self.n_cats, self.catalog)
            kept = self._kept("padded", token)
            if kept is None:
                widths = np.array([len(b) for b in self.blocks], dtype=np.int64)
                wmax = int(widths.max()) if len(widths) else 0
                nb = len(self.blocks)
                pad = np.arange(wmax) >= widths[:, None]
                rows = np.zeros((nb, wmax), dtype=np.int64)
                if nb:
                    rows[~pad] = np.concatenate(self.blocks)
                # Block b > 0 holds category b - 1; block 0 its rows' own categories.
                cats = np.where(pad, self.n_cats, np.arange(nb)[:, None] - 1)
                if nb:
                    cats[0, : widths[0]] = self.block_cats(0)
                kept = (rows, cats, wmax, pad, widths)
                self.keep["padded"] = (token, kept)
            rows, cats, wmax, pad, widths = kept
            # Popularity terms of every block row, elementwise as pop[rows] * base_scale.
            base = self.pop[rows] * self.base_scale
            base[pad] = -np.inf
            top = base.max(axis=1) if wmax else np.zeros(len(rows))
            top[widths == 0] = 0.0
            out = self.call_cache["padded"] = (rows, base, cats, wmax, top.tolist())
        return out

    def row_base(self, rows: np.ndarray) -> np.ndarray:
        """Popularity term of ``rows``, ``-inf`` for unavailable ones (a new array)."""
        if self.many:
            base = self.call_cache.get("base")
            if base is None:
                base = self.call_cache["base"] = np.where(self.available, self.pop * self.base_scale, -np.inf)
            return base[rows]
        base = self.pop[rows] * self.base_scale
        base[~self.available[rows]] = -np.inf
        return base

    def row_cats(self, rows: np.ndarray) -> np.ndarray:
        """Category index of ``rows``, ``n_cats`` for unknown ones."""
        if self.many:
            token = (self.catalog.version, self.n_items, self.n_cats, self.catalog)
            cats = self._kept("cats", token)
            if cats is None:
                cats = np.where(self.cats >= 0, self.cats, self.n_cats)
                self.keep["cats"] = (token, cats)
            return cats[rows]
        c = self.cats[rows]
        return np.where(c >= 0, c, self.n_cats)

    def block_max_base(self, b: int) -> float:
        """Largest popularity term of block ``b`` (cached per call; 0 for an empty block)."""
        return self.padded_blocks()[4][b]

    def block_cats(self, b: int) -> np.ndarray:
        """Category of block ``b``'s rows, unknown ones as ``n_cats`` (cached per call)."""
        rows = self.blocks[b]
        token = (rows, self.catalog.version, self.n_cats, self.catalog)
        c = self._kept(("cats", b), token)
        if c is None:
            c = self.cats[rows]
            c = np.where(c >= 0, c, self.n_cats)
            self.keep[("cats", b)] = (token, c)
        return c

    def covisit_norm(self, mass: np.ndarray, entries: int) -> np.ndarray | None:
        """``mass ** -alpha`` of every row, computed once per call when the call needs more
        of them than there are rows (else ``None``: compute the few needed)."""
        if self.norm is None and (self.norm_entries + entries) > self.n_items:
            covisit = self.r.items.covisit
            alpha = covisit.alpha
            kept = self._norm_all
            if kept is not None and kept[0] is covisit and kept[1] == alpha and len(kept[2]) == len(mass):
                # Kept from an earlier call: recompute the rows whose mass moved (elementwise, so
                # the same values as computing them all).
                prev, norm = kept[2], kept[3]
                moved = np.flatnonzero(mass != prev)
                if len(moved):
                    m = mass[moved]
                    norm[moved] = np.power(np.maximum(m, 1e-300), -alpha)
                    prev[moved] = m
            else:
                norm = np.power(np.maximum(mass, 1e-300), -alpha)
                self._norm_all = (covisit, alpha, mass.copy(), norm)
            self.norm = norm
        self.norm_entries += entries
        return self.norm

    def factor_rows(self, rows: np.ndarray) -> np.ndarray:
        if len(self.Fq) < self.n_items:
            self.Fq = grow_to(self.Fq, self.n_items)
        return self.Fq.take(rows, axis=0)

    def user_factors(self, user_ids) -> tuple[np.ndarray, np.ndarray]:
        """Quantised user vectors (zeros for users without one) and the exponent turning
        ``Fq @ Uq`` products into MF scores."""
        mf = self.mf
        k = self.Fq.shape[1]
        get = mf._uix.get  # the users' rows of mf's user matrix (River's latents are views of them)
        at = np.array([get(uid, -1) for uid in user_ids], dtype=np.int64)
        U = mf._U.take(np.maximum(at, 0), axis=0) if len(mf._U) else np.zeros((len(at), k))
        U[at < 0] = 0.0
        top = np.abs(U).max(axis=1) if k else np.zeros(len(user_ids))
        e = self.bits - np.frexp(top)[1]
        Uq = np.rint(np.ldexp(U, e[:, None]))
        return Uq, -(e + self.f_exp)

    # -- scoring --------------------------------------------------------------

    def terms(self, user_ids, users, history=None):
        """Score terms of users with a history (see :class:`_Terms`)."""
        return _Terms(self, user_ids, users, history)


def _histories(ctx: _Context, users) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Histories of ``users`` (most recent first), one after the other: rows, weights
    (``event weight * history_decay ** position``) and lengths."""
    hist, wraw, lens = [], [], []
    for user in users:
        h = user.history
        lens.append(len(h))
        hist.extend(reversed(h))
        wraw.extend(reversed(user.weights))
    lens = np.array(lens, dtype=np.int64)
    H = np.array(hist, dtype=np.int64)
    pos = np.arange(len(H)) - np.repeat(np.cumsum(lens) - lens, lens)
    return H, np.array(wraw, dtype=np.float64) * ctx.decay_pows[pos], lens


class _Terms:
    """Per-user score terms of a batch of users with a history, all users at once.

    Attributes: ``cv_u, cv_r, cv_v`` the co-visitation score of each
    (user, row) with a positive score, sorted by user then row; ``cvs`` the
    per-user scale of those scores; ``aff`` (``None`` without categories)
    the category affinity per user and category, with one last zero column
    for unknown categories; ``Uq, shift`` quantised MF user vectors.
    Sums keep the order of the users' histories, so a user's terms do not
    depend on the other users of the batch.
    """

    def __init__(self, ctx: _Context, user_ids, users, history=None):
        r = ctx.r
        self.ctx = ctx
        self.B = B = len(users)
        if history is None:
            H, W, lens = _histories(ctx, users)
            regions = None
        else:
            H, W, lens, regions = history
        uh = np.repeat(np.arange(B), lens)
        # Co-visitation neighbourhood, summed per (user, row).
        self.cv_u = self.cv_r = np.zeros(0, dtype=np.int64)
        self.cv_v = np.zeros(0)
        self.cvs = np.zeros(B)
        if r.w_covisit:
            self._covisit(ctx, H, W, uh, B, regions)
        # Category affinity: share of the (decayed) history per category.
        self.aff = None
        nc = ctx.n_cats
        if nc:
            hc = ctx.cats[H]
            known = hc >= 0
            A = np.zeros((B, nc + 1))
            A[:, :nc] = np.bincount(uh[known] * nc + hc[known], W[known], minlength=B * nc).reshape(B, nc)
            top = A.max(axis=1)
            ok = top > 0
            A[ok] /= top[ok, None]
            self.aff = A
            self.has_cat = A[:, :nc] > 0
        # MF user vectors.
        self.Uq = self.shift = None
        if ctx.mf is not None:
            self.Uq, self.shift = ctx.user_factors(user_ids)

    def _covisit(self, ctx, H, W, uh, B, regions=None):
        covisit = ctx.r.items.covisit
        sparse = covisit.rows
        mass = covisit.mass(ctx.n_items)
        regions = sparse.regions(H) if regions is None else regions
        if not regions[1].sum():
            return
        # The strongest `score_neighbors` neighbours of each history item.
        idx, per = sparse.strongest(H, ctx.r.score_neighbors, regions)
        cols = sparse._C[idx]
        alpha = covisit.alpha
        norm = ctx.covisit_norm(mass, len(idx))
        norm_h = (norm[H] if norm is not None else np.power(np.maximum(mass[H], 1e-300), -alpha)) if alpha else np.ones(len(H))
        # Each neighbour value times its history item's weight, summed per
        # (user, row) in history order (as CoVisitation.score_sparse does).
        vals = sparse._V[idx] * np.repeat(W * norm_h, per)
        order = _stable_order(cols, ctx.n_items)
        us = np.repeat(uh, per)
        if B > 1:
            order = order[_stable_order(us[order], B)]
        us = us[order]
        cols = cols[order]
        starts = np.flatnonzero(np.concatenate(([True], (cols[1:] != cols[:-1]) | (us[1:] != us[:-1]))))
        self.cv_u = us[starts]
        self.cv_r = rows = cols[starts].astype(np.int64)
        v = np.add.reduceat(vals[order], starts)
        if alpha:
            v *= norm[rows] if norm is not None else np.power(np.maximum(mass[rows], 1e-300), -alpha)
        self.cv_v = v
        cap = ctx.r.neighbor_candidates
        if cap is not None and len(v) > cap:
            self._keep_strongest(cap)
            v = self.cv_v
        ustarts = _run_starts(self.cv_u)
        top = np.maximum.reduceat(v, ustarts)
        ok = top > 0
        self.cvs[self.cv_u[ustarts[ok]]] = ctx.r.w_covisit / top[ok]


    def _keep_strongest(self, cap: int) -> None:
        """Keep each user's ``cap`` best co-visitation scores (ties to the lower row), in order."""
        u, rows, v = self.cv_u, self.cv_r, self.cv_v
        ustarts = _run_starts(u)
        counts = np.diff(np.append(ustarts, len(u)))
        big = counts > cap
        if not big.any():
            return
        first, n = ustarts[big], counts[big]
        m = len(n)
        sel = _ranges(first, n)
        line = np.repeat(np.arange(m), n)
        vs = v[sel]
        # Each user's cap-th best score, through padded matrices of users of
        # similar sizes (sizes within a factor of 2: little padding to sort).
        Tu = np.empty(m)
        size_class = np.frexp(n.astype(np.float64))[1]
        classes = np.unique(size_class)
        for k in classes.tolist():
            members = np.flatnonzero(size_class == k) if len(classes) > 1 else np.arange(m)
            fm, nm = first[members], n[members]
            w = int(nm.max())
            P = np.full((len(members), w), -np.inf)
            ln = np.repeat(np.arange(len(members)), nm)
            s = _ranges(fm, nm)
            P[ln, s - np.repeat(fm, nm)] = v[s]
            Tu[members] = np.partition(P, w - cap, axis=1)[:, w - cap]
        T = Tu[line]
        above = vs > T
        # Of the scores tied with the cap-th best, those of the lowest rows fill the
        # remaining places (a user's neighbours are in ascending row order).
        tied = vs == T
        room = cap - np.bincount(line[above], minlength=m)
        n_tied = np.bincount(line[tied], minlength=m)
        rank = np.cumsum(tied) - (np.cumsum(n_tied) - n_tied)[line]  # 1-based among the user's ties
        keep = np.ones(len(u), dtype=bool)
        keep[sel] = above | (tied & (rank <= room[line]))
        at = np.flatnonzero(keep)
        self.cv_u, self.cv_r, self.cv_v = u[at], rows[at], v[at]


class _Batch:
    """Candidates and their scores for a chunk of users with a history (see :meth:`HybridRanker.recommend`).

    Candidates of a user are the rows of its blocks (block 0, and the block
    of each category with a positive affinity) and its co-visitation
    neighbours. Neighbours are scored one by one (a flat list sorted by user
    then row); the other block rows as dense ``users x rows`` matrices, one
    matrix product each for MF. Every candidate is scored once per user.

    Most users' best items are all neighbours: a block is only scored for
    the users whose ``n``-th best neighbour could still be beaten by one of
    its rows (bounded by the block's best popularity term, the user's
    category term and its largest MF term in the block). Skipping the others
    changes nothing but the work.
    """

    def __init__(self, ctx: _Context, t: _Terms):
        r = ctx.r
        self.ctx, self.t = ctx, t
        B = t.B
        nc = ctx.n_cats
        n_blocks = max(len(ctx.blocks), 1)
        # Active blocks: (block, users, rows, offset in the block buffers).
        loc = np.full((B, n_blocks), -1, dtype=np.int64)  # row of each user in each block
        self.blocks = []
        offset = np.zeros(n_blocks, dtype=np.int64)
        width = np.zeros(n_blocks, dtype=np.int64)
        size = 0
        for b, rows in enumerate(ctx.blocks):
            if not len(rows):
                continue
            if b == 0:
                users = np.arange(B)
            else:
                users = np.flatnonzero(t.has_cat[:, b - 1]) if nc else np.zeros(0, dtype=np.int64)
                if not len(users):
                    continue
            loc[users, b] = np.arange(len(users))
            offset[b], width[b] = size, len(rows)
            self.blocks.append((b, users, rows, size))
            size += len(users) * len(rows)
        self.size = size
        self.loc, self.offset, self.width, self.n_blocks = loc, offset, width, n_blocks
        # Where each neighbour sits in the blocks (-1: in none of its user's blocks).
        cu, cr = t.cv_u, t.cv_r
        self.cv_block, self.cv_pos, self.cv_flat = self.positions(cu, cr)
        # MF, scaled per user by its largest |score| over all its candidates.
        # Products of quantised factors are exact integers (M, cv_raw); times
        # 2**shift they are the MF scores, times coef the MF terms (both exact
        # rescalings of the same rounding).
        self.M = None
        self.block_top = np.zeros((B, n_blocks))  # largest |M| of each user in each block
        self.cv_raw = None
        self.mfs = np.zeros(B)
        self.coef = np.zeros(B)
        if ctx.mf is not None:
            top = np.zeros(B)
            M = self.M = np.empty(size)
            for b, users, rows, o in self.blocks:
                Mb = M[o:o + len(users) * len(rows)].reshape(len(users), len(rows))
                Fb, Ub = ctx.block_factors(b), t.Uq[users]
                for lo in range(0, len(users), _GEMM_ROWS):  # small products: BLAS stays on one thread
                    np.matmul(Ub[lo:lo + _GEMM_ROWS], Fb, out=Mb[lo:lo + _GEMM_ROWS])
                bt = np.abs(Mb).max(axis=1)
                self.block_top[users, b] = bt
                top[users] = np.maximum(top[users], bt)
            if len(cu):
                raw = np.empty(len(cu))
                inside = self.cv_flat >= 0
                raw[inside] = M[self.cv_flat[inside]]
                out = np.flatnonzero(~inside)
                if len(out):
                    # Sorted by user: one matrix-vector product per user (exact integer sums,
                    # so the same values as any other summation order).
                    F = ctx.factor_rows(cr[out])
                    uo = cu[out]
                    bounds = np.append(_run_starts(uo), len(uo)).tolist()
                    vals = np.empty(len(out))
                    Uq = t.Uq
                    for a, b, u in zip(bounds[:-1], bounds[1:], uo[bounds[:-1]].tolist()):
                        np.dot(F[a:b], Uq[u], out=vals[a:b])
                    raw[out] = vals
                starts = _run_starts(cu)
                users = cu[starts]
                top[users] = np.maximum(top[users], np.maximum.reduceat(np.abs(raw), starts))
                self.cv_raw = raw
            top = np.ldexp(top, t.shift)
            ok = top > 0
            self.mfs[ok] = r.w_mf / top[ok]
            self.coef = np.ldexp(self.mfs, t.shift)

    def positions(self, users: np.ndarray, rows: np.ndarray):
        """Block, position in it, and position in the block buffers of each (user, row); -1 when the
        row is in none of the user's blocks."""
        ctx = self.ctx
        b = ctx.block_of[rows]
        pos = ctx.block_pos[rows]
        flat = np.full(len(rows), -1, dtype=np.int64)
        sel = np.flatnonzero(b >= 0)  # rows in some block: is it one of the user's?
        bs = b[sel]
        lu = self.loc.ravel()[users[sel] * self.n_blocks + bs]
        ok = lu >= 0
        sel, bs, lu = sel[ok], bs[ok], lu[ok]
        flat[sel] = self.offset[bs] + lu * self.width[bs] + pos[sel]
        block = np.full(len(rows), -1, dtype=np.int64)
        block[sel] = bs
        return block, pos, flat

    def _cat_index(self, rows: np.ndarray) -> np.ndarray:
        c = self.ctx.cats[rows]
        return np.where(c >= 0, c, self.ctx.n_cats)

    def neighbour_scores(self) -> np.ndarray:
        """``category + base + mf + cv`` of every neighbour (``-inf`` when unavailable)."""
        ctx, t = self.ctx, self.t
        cu, cr = t.cv_u, t.cv_r
        s = ctx.row_base(cr)
        if t.aff is not None:
            s = ctx.r.w_category * t.aff.ravel()[cu * t.aff.shape[1] + ctx.row_cats(cr)] + s
        if self.cv_raw is not None:
            s += self.coef[cu] * self.cv_raw
        s += t.cv_v * t.cvs[cu]
        return s

    def block_scores(self, b: int, users: np.ndarray, rows: np.ndarray, o: int, sub: np.ndarray) -> np.ndarray:
        """``category + base + mf`` of the rows of block ``b`` for its users at local indices ``sub``."""
        ctx, t = self.ctx, self.t
        base = ctx.block_base(b)
        u = users[sub]
        w = ctx.r.w_category
        if t.aff is None:
            S = np.empty((len(u), len(rows)))
            S[:] = base
        elif b == 0:
            S = w * t.aff[u][:, ctx.block_cats(0)] + base
        else:
            S = (w * t.aff[u, b - 1])[:, None] + base
        if self.M is not None:
            M = self.M[o:o + len(users) * len(rows)].reshape(len(users), len(rows))
            S += self.coef[u][:, None] * (M if len(sub) == len(users) else M[sub])
        return S

    def top(self, n: int, excluded: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Best ``n`` finite-score candidates per user: ``(rows, scores, counts)``, ``users x n``
        matrices sorted by score descending then row ascending, and how many of each row are real.

        Each source (neighbours, blocks) hands over its best ``n`` per user,
        the final choice is among those. Which of several candidates tied at
        a cut-off survive depends only on the user's own candidates, never on
        the other users of the batch.
        """
        ctx, t = self.ctx, self.t
        B, k = t.B, n
        N = ctx.n_items
        cu, cr = t.cv_u, t.cv_r
        cs = self.neighbour_scores() if len(cu) else None
        # Excluded (user, row) pairs.
        lens = np.array([0 if e is None else len(e) for e in excluded], dtype=np.int64)
        eu = er = None
        if lens.sum():
            eu = np.repeat(np.arange(B), lens)
            er = np.concatenate([e for e in excluded if e is not None and len(e)]).astype(np.int64)
            if cs is not None:
                has = (lens > 0)[cu]  # only neighbours of users with exclusions
                hu, hr = cu[has], cr[has]
                ekeys = np.sort(eu * N + er)
                hkeys = hu * N + hr
                p = np.minimum(np.searchsorted(ekeys, hkeys), len(ekeys) - 1)
                hit = np.flatnonzero(has)[ekeys[p] == hkeys]
                cs[hit] = -np.inf
        # Each source's best k per user, in the user's slots of (CS, CR):
        # neighbours, block 0, then the user's category blocks.
        nc = ctx.n_cats
        slots = np.cumsum(t.has_cat, axis=1) if nc else None
        n_slots = 2 + (int(slots[:, -1].max()) if nc and B else 0)
        CS = np.full((B, k * n_slots), -np.inf)
        CR = np.zeros((B, k * n_slots), dtype=np.int64)
        arange_k = np.arange(k)
        t_cv = np.full(B, -np.inf)  # each user's k-th best neighbour score
        if cs is not None:
            starts = _run_starts(cu)
            counts = np.diff(np.append(starts, len(cu)))
            rank = np.arange(len(cu)) - np.repeat(starts, counts)
            # Users with at most k neighbours go straight in, the others
            # through a padded matrix (chunks group users of similar sizes).
            small = np.repeat(counts <= k, counts)
            CS[cu[small], rank[small]] = cs[small]
            CR[cu[small], rank[small]] = cr[small]
            big = counts > k
            if big.any():
                users = cu[starts[big]]
                w = int(counts[big].max())
                lw = np.zeros(B, dtype=np.int64)
                lw[users] = np.arange(len(users))
                sel = ~small
                P = np.full((len(users), w), -np.inf)
                P.ravel()[lw[cu[sel]] * w + rank[sel]] = cs[sel]
                # Column j of a user's row is its j-th neighbour: rows without a second matrix.
                first = starts[big]
                idx = _best_k(P, k, lambda i, j: cr[np.minimum(first[i] + j, len(cr) - 1)])
                best = np.take_along_axis(P, idx, axis=1)
                CS[users[:, None], arange_k] = best
                CR[users[:, None], arange_k] = cr[np.minimum(first[:, None] + idx, len(cr) - 1)]
                t_cv[users] = best.min(axis=1)
        # Blocks, for the users whose k-th neighbour a row of the block could
        # beat: bounded by the block's best popularity term, the user's
        # category term and its largest MF term in the block.
        if self.blocks:
            w_cat = ctx.r.w_category
            tops = ctx.padded_blocks()[4]
            bound = np.array([tops[b] if b < len(tops) else 0.0 for b in range(self.n_blocks)])[None, :] + np.zeros((B, 1))
            if t.aff is not None:
                bound[:, 0] += w_cat * t.aff.max(axis=1)
                bound[:, 1:] += w_cat * t.aff[:, : self.n_blocks - 1]
            if self.M is not None:
                bound += np.abs(self.coef)[:, None] * self.block_top
            need = (t_cv[:, None] <= bound) & (self.loc >= 0)
            todo = need.any()
        else:
            todo = False
        if todo:
            # Every (user, block) pair still in play is one row of a padded
            # matrix: block rows (padding scores -inf), their category and
            # popularity terms, and MF gathered from the block products.
            pu, pb = np.nonzero(need)
            pair = np.full((B, self.n_blocks), -1, dtype=np.int64)
            pair[pu, pb] = np.arange(len(pu))
            rows_p, base_p, cat_p, wmax, _ = ctx.padded_blocks()
            j = np.arange(wmax)
            S = base_p[pb]
            if t.aff is not None:
                S = w_cat * t.aff.ravel()[(pu * t.aff.shape[1])[:, None] + cat_p[pb]] + S
            if self.M is not None:
                at = (self.offset[pb] + self.loc[pu, pb] * self.width[pb])[:, None] + np.minimum(j, self.width[pb][:, None] - 1)
                S += self.coef[pu][:, None] * self.M[at]
            # Neighbours are scored above; excluded rows are not candidates.
            # Only the few users with a block in play matter here.
            in_play = need.any(axis=1)
            nb, flat_pair, flat_S = self.n_blocks, pair.ravel(), S.ravel()
            sel = np.flatnonzero(in_play[cu] & (self.cv_block >= 0))
            p = flat_pair[cu[sel] * nb + self.cv_block[sel]]
            ok = p >= 0
            flat_S[p[ok] * wmax + self.cv_pos[sel[ok]]] = -np.inf
            if eu is not None:
                sel = np.flatnonzero(in_play[eu])
                e_block, e_pos, _ = self.positions(eu[sel], er[sel])
                inb = np.flatnonzero(e_block >= 0)
                p = flat_pair[eu[sel[inb]] * nb + e_block[inb]]
                ok = p >= 0
                flat_S[p[ok] * wmax + e_pos[inb[ok]]] = -np.inf
            if wmax > k:
                idx = _best_k(S, k, lambda i, j: rows_p[pb[i], j])
                vals, rws = np.take_along_axis(S, idx, axis=1), rows_p[pb[:, None], idx]
            else:
                vals, rws = S, rows_p[pb]
            slot = np.where(pb > 0, slots[pu, np.maximum(pb - 1, 0)] if nc else 0, 0)
            cols = (k * (1 + slot))[:, None] + arange_k[: vals.shape[1]]
            CS[pu[:, None], cols] = vals
            CR[pu[:, None], cols] = rws
        # The best k of those, sorted by score (descending) then row; users
        # with no block in play have them all in their first k slots.
        W = CS.shape[1]
        if W > k:
            mixed = np.flatnonzero(need.any(axis=1)) if todo else np.zeros(0, dtype=np.int64)
            CS_k, CR_k = CS[:, :k].copy(), CR[:, :k].copy()
            if len(mixed):
                cs, cr_ = CS[mixed], CR[mixed]
                idx = _best_k(cs, k, lambda i, j: cr_[i, j])
                CS_k[mixed], CR_k[mixed] = np.take_along_axis(cs, idx, axis=1), np.take_along_axis(cr_, idx, axis=1)
            CS, CR = CS_k, CR_k
        order = np.lexsort((CR, -CS), axis=-1)
        CS, CR = np.take_along_axis(CS, order, axis=1), np.take_along_axis(CR, order, axis=1)
        return CR, CS, (CS > -np.inf).sum(axis=1)


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Rows of the ``n`` best finite scores, best first; ties go to the lower row.

    >>> top_n(np.array([0.1, 0.5, -np.inf, 0.5, 0.2]), 3).tolist()
    [1, 3, 4]

    """
    k = min(n, len(scores))
    cand = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    cand = cand[np.isfinite(scores[cand])]
    return cand[np.lexsort((cand, -scores[cand]))]


class ItemState:
    """Item-side state of the hybrid ranker: catalogue, popularity, co-visits.

    Everything here is a sum over events, independent of which learner saw
    them; :meth:`observe` is the single entry point for item-side updates and
    takes item *ids* so that several workers (each with its own catalogue
    rows) can exchange and apply each other's updates.

    """

    def __init__(self, catalog: Catalog, popularity: TrendingPopularity, covisit: CoVisitation):
        self.catalog = catalog
        self.popularity = popularity
        self.covisit = covisit

    def apply(self, row: int, history: Sequence[int], weight: float, ts: float | None) -> None:
        """Apply an event on ``row`` preceded by ``history`` rows (most recent first)."""
        self.popularity.update(row, weight, ts)
        self.covisit.update(history, row, weight, ts)

    def observe(self, item_id: str, history_ids: Sequence[str], weight: float = 1.0, ts: float | None = None) -> None:
        """Same as :meth:`apply` with item ids (for merging other workers' events)."""
        row = self.catalog.upsert(item_id)
        self.apply(row, [self.catalog.upsert(h) for h in history_ids], weight, ts)


class HybridRanker(StreamingRecommender):
    r"""Hybrid streaming ranker, the product's default recommender.

    For a user with recent history :math:`h_1..h_L` (most recent first) the
    score of item :math:`j` is

    .. math::

        s_j = w_{cv} \frac{cv_j}{\max cv} + w_{pop} \frac{pop_j}{\max pop}
              + w_{mf} \frac{mf_j}{\max |mf|} + w_{cat} \, aff_{cat(j)}

    * ``cv``: co-visitation neighbourhood score (:class:`~models.covisit.CoVisitation`)
      of the history weighted by ``event_weight * history_decay ** position``:
      the strongest, session-aware signal.
    * ``pop``: trending popularity (time-decayed counts): cold start for new
      users and a prior that breaks ties among neighbours towards what is hot.
    * ``mf``: implicit MF with sampled negatives, a long-term taste signal;
      it re-ranks the user's candidates (its maximum is taken over them).
    * ``aff``: the user's category affinity (share of recent history per
      category); lets items that have no co-visits yet (new items) reach users
      who like their category.

    Each signal is scaled to a maximum of 1 per user, so the weights are
    comparable across shops and traffic volumes.

    Parameters
    ----------
    history_size
        ``L``, number of recent items kept per user.
    history_decay
        Weight decay per position in the user's history when scoring.
    w_covisit, w_popularity, w_mf, w_category
        Blend weights.
    max_neighbors
        Co-visitation neighbours kept per item.
    covisit_decay
        Pair weight decay per step of distance when counting co-visits.
    covisit_backward
        Weight of the reverse edge ``j -> i`` relative to ``i -> j``.
    covisit_half_life, popularity_half_life
        Forgetting of co-visits and of popularity, in units of ``decay_clock``
        (``None``: never forget).
    decay_clock
        ``"events"`` (default): half-lives count learned events, so forgetting
        follows traffic and quiet periods do not wipe the model; ``"time"``:
        half-lives in seconds of the events' ``ts``.
    alpha
        Popularity normalisation of co-visits (0.5: cosine).
    n_factors, mf_lr, mf_l2, n_negatives
        Matrix factorisation hyperparameters.
    event_weights
        Strength per event type.
    seed
        Seeds everything random (MF initialisation and negative sampling).
    neighbor_candidates
        ``C``: co-visitation neighbours of a user that are candidates, its ``C`` best by
        co-visitation score (ties to the lower row); the co-visitation term of every
        other item is 0 (``None``: no limit). Keeps the work per user after summing the
        neighbourhood bounded, whatever the length of the history and the size of the
        rows. ``C = 200`` matches ``n_candidates`` (the popular items a user gets anyway)
        and is ten times a top-20 list; on MovieLens C = 100 and C = 200 give the
        uncapped HR@10 and MRR@10 (docs/QUALITY.md).
    score_neighbors
        ``K``: score only the ``K`` strongest co-visitation neighbours of each history
        item (``None``, the default: all of them, up to ``2 * max_neighbors``). Bounds the
        neighbourhood work per user at ``history_size * K`` entries whatever the age of
        the model, at a cost in quality: on MovieLens (docs/QUALITY.md) K = 100 gives
        HR@10 0.1321 and K = 50 0.1284 against 0.1342 uncapped (many weak neighbours of
        several history items add up). For very large, long-lived states only.
    n_candidates, n_new_candidates
        Items scored per user besides its co-visitation neighbours: the
        ``n_candidates`` most popular available items, and per category of
        the user's history its ``n_candidates`` most popular and
        ``n_new_candidates`` newest ones. MF and category affinity re-rank
        these candidates; the cost per user does not grow with the catalogue.

    Examples
    --------
    >>> r = HybridRanker(seed=42)
    >>> r.upsert_item("boots", category="shoes")
    >>> r.upsert_item("sandals", category="shoes")
    >>> r.upsert_item("scarf", category="accessories", available=False)
    >>> for user in ["ann", "bob", "cy"]:
    ...     r.learn_one(user, "boots", "click", ts=0.0)
    ...     r.learn_one(user, "sandals", "purchase", ts=60.0)
    >>> r.learn_one("dan", "boots", "click", ts=120.0)
    >>> [item for item, _ in r.recommend(["dan"], n=3)[0]]
    ['sandals', 'boots']
    >>> [item for item, _ in r.recommend(["new-user"], n=3, exclude="none")[0]]
    ['sandals', 'boots']
    >>> r.model_version, r.n_users, r.n_items
    (7, 4, 3)

    """

    def __init__(
        self,
        history_size: int = 20,
        history_decay: float = 0.9,
        w_covisit: float = 1.0,
        w_popularity: float = 0.1,
        w_mf: float = 0.05,
        w_category: float = 0.2,
        max_neighbors: int = 200,
        covisit_decay: float = 0.9,
        covisit_backward: float = 0.5,
        covisit_half_life: float | None = 20_000,
        popularity_half_life: float | None = 2_000,
        decay_clock: str = "events",
        alpha: float = 0.4,
        n_factors: int = 16,
        mf_lr: float = 0.05,
        mf_l2: float = 0.01,
        n_negatives: int = 4,
        event_weights: dict[str, float] | None = None,
        seed: int = 0,
        n_candidates: int = 200,
        n_new_candidates: int = 50,
        score_neighbors: int | None = None,
        neighbor_candidates: int | None = 200,
    ):
        self.history_decay = history_decay
        self.w_covisit = w_covisit
        self.w_popularity = w_popularity
        self.w_mf = w_mf
        self.w_category = w_category
        self.max_neighbors = max_neighbors
        self.covisit_decay = covisit_decay
        self.covisit_backward = covisit_backward
        self.covisit_half_life = covisit_half_life
        self.popularity_half_life = popularity_half_life
        if decay_clock not in ("time", "events"):
            raise ValueError("decay_clock must be 'time' or 'events'")
        self.decay_clock = decay_clock
        self.alpha = alpha
        self.n_factors = n_factors
        self.mf_lr = mf_lr
        self.mf_l2 = mf_l2
        self.n_negatives = n_negatives
        self.n_candidates = n_candidates
        self.n_new_candidates = n_new_candidates
        if score_neighbors is not None and score_neighbors < 1:
            raise ValueError("score_neighbors must be a positive int or None")
        self.score_neighbors = score_neighbors
        if neighbor_candidates is not None and neighbor_candidates < 1:
            raise ValueError("neighbor_candidates must be a positive int or None")
        self.neighbor_candidates = neighbor_candidates
        super().__init__(history_size=history_size, event_weights=event_weights, seed=seed)

    def _reset(self) -> None:
        super()._reset()
        self.items = ItemState(
            self.catalog,
            TrendingPopularity(self.popularity_half_life),
            CoVisitation(
                max_neighbors=self.max_neighbors,
                distance_decay=self.covisit_decay,
                forward=1.0,
                backward=self.covisit_backward,
                half_life=self.covisit_half_life,
                alpha=self.alpha,
            ),
        )
        self.mf = (
            ImplicitMF(
                n_factors=self.n_factors, lr=self.mf_lr, l2=self.mf_l2, n_negatives=self.n_negatives, seed=self.seed
            )
            if self.w_mf
            else None
        )

    def _learn(self, user_id, user, row, weight, ts):
        history = user.history[::-1]
        t = float(self._n_learned) if self.decay_clock == "events" else ts
        items = self.items
        items.popularity.update(row, weight, t)  # ItemState.apply, inlined
        items.covisit.update(history, row, weight, t)
        if self.mf is not None:
            # Targets in (0, 1]: the strongest event type is a full positive.
            target = weight / max(self.event_weights.values())
            self.mf.learn_one(user_id, self.catalog._ids[row], row, target, seen=user.interacted)

    def forget_user(self, user_id: str) -> None:
        super().forget_user(user_id)
        if self.mf is not None:
            self.mf.forget_user(user_id)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_ctx", None)  # a cache of the catalogue-wide terms, rebuilt on demand
        return state

    def __setstate__(self, state):
        # Checkpoints from before `score_neighbors` existed get the current default.
        state.setdefault("score_neighbors", None)
        state.setdefault("neighbor_candidates", 200)
        super().__setstate__(state)

    def _context(self, n_items: int, many: bool = False) -> _Context:
        ctx = self.__dict__.get("_ctx")
        if ctx is None:
            ctx = self._ctx = _Context(self)
        ctx.refresh(n_items, many)
        return ctx

    def _scores(self, user_id, user, n_items):
        # Every item scored with the terms recommend() uses (MF scaled over
        # the user's candidates): predict_one agrees with recommend.
        ctx = self._context(n_items)
        scores = ctx.pop * ctx.base_scale
        if user is None or not user.history:
            return scores  # cold start: trending popularity only
        t = ctx.terms([user_id], [user])
        batch = _Batch(ctx, t)
        rows = np.arange(n_items)
        if t.aff is not None:
            scores = self.w_category * t.aff[0, batch._cat_index(rows)] + scores
        if ctx.mf is not None:
            scores += batch.coef[0] * (ctx.factor_rows(rows) @ t.Uq[0])
        scores[t.cv_r] += t.cv_v * t.cvs[t.cv_u]
        return scores

    def _top_one(self, ctx: _Context, user_id: str, user: _User, n: int, exclude: str):
        """:meth:`recommend` for one user with a history: every candidate in one array.

        The same candidates, the same arithmetic (in the same order) and the
        same tie rule as the batched path (:class:`_Batch`), so the results
        are identical; only the bookkeeping is simpler.
        """
        t = ctx.terms([user_id], [user])
        blocks = [ctx.blocks[0]] if ctx.blocks else []
        if t.aff is not None:
            blocks += [ctx.blocks[1 + c] for c in np.flatnonzero(t.has_cat[0]).tolist() if 1 + c < len(ctx.blocks)]
        # Candidates: the neighbours (sorted), then the block rows that are not neighbours.
        cv = t.cv_r
        pool = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)
        if len(cv) and len(pool):
            at = np.minimum(np.searchsorted(cv, pool), len(cv) - 1)
            pool = pool[cv[at] != pool]
        cand = np.concatenate((cv, pool))
        if not len(cand):
            return cand, np.zeros(0)
        scores = ctx.row_base(cand)
        if t.aff is not None:
            scores = self.w_category * t.aff[0, ctx.row_cats(cand)] + scores
        if ctx.mf is not None:
            raw = ctx.factor_rows(cand) @ t.Uq[0]
            top = float(np.ldexp(np.abs(raw).max(), t.shift[0]))
            if top > 0:
                scores += float(np.ldexp(self.w_mf / top, t.shift[0])) * raw
        if len(cv):
            scores[: len(cv)] += t.cv_v * t.cvs[0]
        excl = user.excluded(exclude)  # sorted
        if excl is not None and len(excl):
            at = np.minimum(np.searchsorted(excl, cand), len(excl) - 1)
            scores[excl[at] == cand] = -np.inf
        idx = _best_k(scores[None, :], n, lambda i, j: cand[j])[0]
        idx = idx[np.lexsort((cand[idx], -scores[idx]))]
        idx = idx[scores[idx] > -np.inf]
        return cand[idx], scores[idx]

    # -- many users at once: exact top-N over candidates ---------------------

    def recommend(self, user_ids: Sequence[str], n: int = 20, exclude: str = "purchased") -> list[list[tuple[str, float]]]:
        """Top-``n`` ``(item_id, score)`` per user, best first (see :meth:`StreamingRecommender.recommend`).

        Only candidate items are scored (see :class:`_Context` and :class:`_Batch`): the user's
        co-visitation neighbours, the most popular available items, and the
        most popular and newest items of the categories in the user's history.
        The catalogue-wide terms are kept between calls and the users of a
        call are scored together (in chunks), so a user costs little more
        than the size of its candidate set, whatever the size of the
        catalogue. Ties go to the lower catalogue row.
        """
        if exclude not in EXCLUDE_RULES:
            raise ValueError(f"exclude must be one of {EXCLUDE_RULES}, got {exclude!r}")
        if isinstance(user_ids, str):
            raise TypeError("user_ids must be a sequence of user ids, not a string")
        n_items = len(self.catalog)
        if n_items == 0 or n <= 0:
            return [[] for _ in user_ids]
        ctx = self._context(n_items, many=len(user_ids) >= 32)
        ids = self.catalog.ids
        out: list = [None] * len(user_ids)
        cold = None
        warm_at, warm_ids, warm_users = [], [], []
        for i, user_id in enumerate(user_ids):
            user = self._users.get(user_id)
            if user is None or not user.history:
                if cold is None:
                    rows, scores = ctx.cold(n)
                    cold = list(zip(map(ids.__getitem__, rows.tolist()), scores.tolist()))
                out[i] = list(cold)
            else:
                warm_at.append(i)
                warm_ids.append(user_id)
                warm_users.append(user)
        if not warm_users:
            return out
        if len(warm_users) == 1:  # one user (the replay): the plain path, same results
            rows, scores = self._top_one(ctx, warm_ids[0], warm_users[0], n, exclude)
            out[warm_at[0]] = list(zip(ctx.item_ids(rows), scores.tolist()))
            return out
        # Users are scored in chunks of similar neighbourhood sizes: the
        # working set stays in the CPU caches and padded matrices stay tight.
        # A user's scores do not depend on the other users of its chunk.
        H, W, lens = _histories(ctx, warm_users)
        starts = np.cumsum(lens) - lens
        size = lens.copy()
        rstart, per = self.items.covisit.rows.regions(H)
        if self.w_covisit and len(H):
            nz = lens > 0
            k = self.score_neighbors
            size[nz] = np.add.reduceat(per if k is None else np.minimum(per, k), starts[nz])
        order = np.argsort(size, kind="stable")
        cut = np.cumsum(size[order] + 1) // _CHUNK_ENTRIES
        bounds = np.flatnonzero(np.diff(cut)) + 1
        for chunk in np.split(order, bounds):
            for lo in range(0, len(chunk), _CHUNK_USERS):
                part = chunk[lo:lo + _CHUNK_USERS].tolist()
                users = [warm_users[j] for j in part]
                idx = _ranges(starts[part], lens[part])
                t = ctx.terms([warm_ids[j] for j in part], users, (H[idx], W[idx], lens[part], (rstart[idx], per[idx])))
                rows, scores, counts = _Batch(ctx, t).top(n, [user.excluded(exclude) for user in users])
                width = rows.shape[1]
                pairs = list(zip(ctx.item_ids(rows.ravel()), scores.ravel().tolist()))
                for j, c in enumerate(counts.tolist()):
                    out[warm_at[part[j]]] = pairs[j * width:j * width + c]
        return out
