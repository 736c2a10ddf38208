"""Hybrid top-N ranker: co-visitation + trending popularity + implicit MF.

The ranker is what the Faust workers and ``recostream replay`` run, both built
through the defaults of :class:`HybridRanker` so that offline evaluation and
production use the same code and configuration.

"""

from __future__ import annotations

import abc
import io
import pickle
from collections import deque
from collections.abc import Sequence

import numpy as np

from models.catalog import Catalog
from models.covisit import CoVisitation
from models.mf import ImplicitMF
from models.popularity import TrendingPopularity

__all__ = ["EVENT_WEIGHTS", "EXCLUDE_RULES", "StreamingRecommender", "ItemState", "HybridRanker"]

#: Default strength of each event type. A purchase says more about taste than
#: a click, a click more than a page view; the ratios (not the scale) matter.
EVENT_WEIGHTS = {"browse": 1.0, "click": 1.0, "purchase": 1.5}

#: Values accepted by ``recommend(..., exclude=...)``.
EXCLUDE_RULES = ("purchased", "interacted", "none")

class _User:
    """Bounded recent history plus the user's own interacted/purchased items."""

    __slots__ = ("history", "weights", "interacted", "purchased", "_excl")

    def __init__(self, history_size: int):
        self.history: deque[int] = deque(maxlen=history_size)  # rows, most recent last
        self.weights: deque[float] = deque(maxlen=history_size)
        self.interacted: dict[int, None] = {}  # ordered set (deterministic pickles)
        self.purchased: dict[int, None] = {}
        self._excl: dict[str, np.ndarray] = {}  # cached exclusion arrays

    def push(self, row: int, weight: float, purchase: bool) -> None:
        # A revisit moves the item to the front instead of duplicating it, so
        # a shopper flicking between two products does not flood the history.
        if row in self.interacted:
            try:
                i = self.history.index(row)
            except ValueError:
                i = -1
            if i >= 0:
                weight = max(weight, self.weights[i])
                del self.history[i]
                del self.weights[i]
        self.history.append(row)
        self.weights.append(weight)
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
            arr = self._excl[rule] = np.fromiter(rows, dtype=np.int64, count=len(rows))
        return arr

    def __getstate__(self):
        return (self.history.maxlen, list(self.history), list(self.weights), list(self.interacted), list(self.purchased))

    def __setstate__(self, state):
        maxlen, history, weights, interacted, purchased = state
        self.history = deque(history, maxlen=maxlen)
        self.weights = deque(weights, maxlen=maxlen)
        self.interacted = dict.fromkeys(interacted)
        self.purchased = dict.fromkeys(purchased)
        self._excl = {}


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

    def learn_one(self, user_id: str, item_id: str, event_type: str = "click", ts: float | None = None) -> None:
        """Learn from one interaction; ``ts`` is in epoch seconds."""
        try:
            weight = self.event_weights[event_type]
        except KeyError:
            raise ValueError(f"unknown event_type {event_type!r}; expected one of {sorted(self.event_weights)}") from None
        row = self.catalog.upsert(item_id)
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = _User(self.history_size)
        self._learn(user_id, user, row, weight, ts)
        user.push(row, weight, event_type == "purchase")
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


class _Candidates:
    """Per-call state of :meth:`HybridRanker.recommend` (catalogue-wide terms computed once per batch).

    Candidates of a user: the co-visitation neighbours of the history, the
    ``n_candidates`` most popular available items, and for every category of
    the history the ``n_candidates`` most popular and ``n_new_candidates``
    newest available items of that category. Only candidates are scored, so
    the cost of a user does not grow with the catalogue.
    """

    def __init__(self, ranker: "HybridRanker", n_items: int):
        self.r = ranker
        self.n_items = n_items
        cat = ranker.catalog
        self.available = cat.available
        pop = ranker.items.popularity.scores(n_items)
        top = pop.max() if n_items else 0.0
        self.base = pop * (ranker.w_popularity / top) if top > 0 else np.zeros(n_items)
        self.cats = cat.category
        self.n_cats = int(self.cats.max()) + 1 if n_items else 0
        avail = np.flatnonzero(self.available)
        # Available rows by popularity term (desc, ties to the lower row), and
        # the same grouped by category; newest (highest row) first per category.
        self.by_base = avail[np.lexsort((avail, -self.base[avail]))]
        self.p = ranker.n_candidates
        self.q = ranker.n_new_candidates
        self.top_base = self.by_base[: self.p]
        if ranker.w_category and self.n_cats:
            by_cat = self.by_base[np.argsort(self.cats[self.by_base], kind="stable")]
            start = np.searchsorted(self.cats[by_cat], np.arange(-1, self.n_cats + 1))
            newest = avail[::-1][np.argsort(self.cats[avail[::-1]], kind="stable")]
            self.cat_cands = [np.concatenate((by_cat[lo:min(hi, lo + self.p)], newest[lo:min(hi, lo + self.q)]))
                              for lo, hi in zip(start[1:-1], start[2:])]
        self.covisit = ranker.items.covisit
        self.mass = self.covisit.mass(n_items)
        self.mf = ranker.mf
        self.n_f = min(n_items, len(self.mf._factors)) if self.mf is not None else 0

    def cold(self, n: int):
        rows = self.by_base[:n]
        return rows, self.base[rows]

    def terms(self, user_id: str, user):
        """Candidates and the user's score terms: ``(cand, cv_rows, cv_vals, cv_scale, u, mf_scale, aff)``."""
        r = self.r
        rows_h, weights = r._weighted_history(user, r.history_decay)
        parts = [self.top_base]
        cv_rows = cv_vals = None
        cv_scale = 0.0
        if r.w_covisit:
            cv_rows, cv_vals = self.covisit.score_sparse(rows_h, weights, self.mass)
            if len(cv_vals):
                parts.append(cv_rows)
                t = cv_vals.max()
                if t > 0:
                    cv_scale = r.w_covisit / t
        aff = None
        if r.w_category and self.n_cats:
            hist_cats = self.cats[rows_h]
            known = hist_cats >= 0
            if known.any():
                aff = np.bincount(hist_cats[known], np.asarray(weights)[known], minlength=self.n_cats)
                aff /= aff.max()
                parts.extend(self.cat_cands[c] for c in np.flatnonzero(aff > 0).tolist())
        cand = _sorted_unique(np.concatenate(parts)) if len(parts) > 1 else np.sort(parts[0])
        # MF re-ranks the candidates: scaled by its largest |score| among them.
        u = self.mf.user_vector(user_id) if self.mf is not None else None
        mf_scale = 0.0
        mf_cand = None
        if u is not None:
            mf_cand = self._mf(u, cand)
            t = np.abs(mf_cand).max() if len(mf_cand) else 0.0
            if t > 0:
                mf_scale = r.w_mf / t
        return cand, cv_rows, cv_vals, cv_scale, u, mf_scale, aff, mf_cand

    def _mf(self, u, rows):
        mf = np.zeros(len(rows))
        inside = rows < self.n_f
        mf[inside] = self.mf.scores_of(u, rows[inside])
        return mf

    def score(self, rows, terms) -> np.ndarray:
        """Scores of ``rows`` (any rows, candidates or not) for the user of ``terms``."""
        cand, cv_rows, cv_vals, cv_scale, u, mf_scale, aff, mf_cand = terms
        scores = self.base[rows]
        if cv_scale:
            pos = np.searchsorted(cv_rows, rows)
            pos[pos >= len(cv_rows)] = 0
            scores += np.where(cv_rows[pos] == rows, cv_vals[pos], 0.0) * cv_scale
        if mf_scale:
            scores += (mf_cand if rows is cand else self._mf(u, rows)) * mf_scale
        if aff is not None:
            c = self.cats[rows]
            scores += self.r.w_category * np.where(c >= 0, aff[np.maximum(c, 0)], 0.0)
        return scores

    def top(self, user_id: str, user, n: int, excl):
        terms = self.terms(user_id, user)
        cand = terms[0]
        scores = self.score(cand, terms)
        scores[~self.available[cand]] = -np.inf
        if excl is not None and len(excl):
            pos = np.searchsorted(cand, excl)  # cand is sorted
            ok = pos < len(cand)
            pos, ex = pos[ok], excl[ok]
            scores[pos[cand[pos] == ex]] = -np.inf
        top = top_n(scores, n)
        return cand[top], scores[top]


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    a = np.sort(a)
    if len(a) > 1:
        a = a[np.concatenate(([True], a[1:] != a[:-1]))]
    return a


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
        history = list(reversed(user.history))
        t = float(self._n_learned) if self.decay_clock == "events" else ts
        self.items.apply(row, history, weight, t)
        if self.mf is not None:
            # Targets in (0, 1]: the strongest event type is a full positive.
            target = weight / max(self.event_weights.values())
            self.mf.learn_one(user_id, self.catalog.ids[row], row, target, seen=user.interacted)

    def forget_user(self, user_id: str) -> None:
        super().forget_user(user_id)
        if self.mf is not None:
            self.mf.forget_user(user_id)

    def _scores(self, user_id, user, n_items):
        # Every item scored with the terms recommend() uses (MF scaled over
        # the user's candidates): predict_one agrees with recommend.
        ctx = _Candidates(self, n_items)
        if user is None or not user.history:
            return ctx.base.copy()  # cold start: trending popularity only
        return ctx.score(np.arange(n_items), ctx.terms(user_id, user))

    # -- many users at once: exact top-N over candidates ---------------------

    def recommend(self, user_ids: Sequence[str], n: int = 20, exclude: str = "purchased") -> list[list[tuple[str, float]]]:
        """Top-``n`` ``(item_id, score)`` per user, best first (see :meth:`StreamingRecommender.recommend`).

        Only candidate items are scored (see :class:`_Candidates`): the user's
        co-visitation neighbours, the most popular available items, and the
        most popular and newest items of the categories in the user's history.
        The catalogue-wide terms are computed once per call, so recommending
        for a batch of users costs little more per user than the size of
        their candidate set, whatever the size of the catalogue.
        """
        if exclude not in EXCLUDE_RULES:
            raise ValueError(f"exclude must be one of {EXCLUDE_RULES}, got {exclude!r}")
        if isinstance(user_ids, str):
            raise TypeError("user_ids must be a sequence of user ids, not a string")
        n_items = len(self.catalog)
        if n_items == 0 or n <= 0:
            return [[] for _ in user_ids]
        ctx = _Candidates(self, n_items)
        ids = self.catalog.ids
        out = []
        for user_id in user_ids:
            user = self._users.get(user_id)
            if user is None or not user.history:
                rows, scores = ctx.cold(n)
            else:
                rows, scores = ctx.top(user_id, user, n, user.excluded(exclude))
            out.append([(ids[r], s) for r, s in zip(rows.tolist(), scores.tolist())])
        return out
