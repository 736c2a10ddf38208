"""Features of the ranker's second stage: what describes a candidate item for one customer.

The first stage (:mod:`models.ranking.scoring`) picks candidates with a
fixed blend; the second scores every candidate with learned weights
(:class:`~models.ranking.choice.SoftmaxChoice`) over these features. Each is
a function of the customer's state and the item only, never of the other
candidates or of the exclusion rule, so an item's score is the same in
``recommend`` and ``predict_one`` and for every rule.

* the first stage's signals, each on a fixed scale: co-visitation of the
  history (divided by the customer's strongest neighbour), trending
  popularity (divided by the most popular item), the MF prediction, the
  customer's category affinity;
* re-consumption (zero for items the customer has not interacted with
  recently): the item is in the customer's recent history; its recency rank
  (``0.5 ** rank`` and ``0.9 ** rank``, rank 0 the latest); how often the
  customer came back to it (``log(1 + count)``); it was seen in the current
  session; it is the item the customer is on; the customer went further
  than a page view with it (clicked, carted, favourited or bought it);
* session transitions: co-visitation from the latest item alone (divided by
  that item's strongest neighbour): where shoppers go next from here; and the
  sequential rule, how often shoppers went from the latest item straight to
  this one (divided by its most frequent successor);
* session neighbours: the votes of the sessions most similar to the
  customer's (:class:`~models.session_knn.SessionNeighbours`, divided by the
  customer's most voted item);
* the same co-visitation, popularity, transition, successor and neighbour
  signals on a log scale (``log`` of the ratio, mapped to [0, 1] over a fixed
  span; 0 where the signal is 0): a linear score in the log is a power of
  the signal, so the model can weigh ratios, not only differences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from models.events import CLICK, ENGAGEMENT
from models.groups import concat_ranges, strongest_in_groups, within

__all__ = ["FEATURES", "PRIOR", "Sequels", "pair_features", "prior_with", "starting_weights"]

#: Feature names, in the order of the columns of :func:`pair_features`.
#: (Columns are only ever appended: a checkpoint's learned weights keep their meaning.)
FEATURES = ("covisit", "popularity", "mf", "category", "own", "own_recency_fast", "own_recency_slow",
            "own_count", "own_session", "latest", "transition", "covisit_log", "popularity_log",
            "transition_log", "successor", "successor_log", "session_knn", "session_knn_log", "own_engaged")
_COLUMN = {name: j for j, name in enumerate(FEATURES)}
# Log-scale copies of ratio features: nats of the ratio mapped to [0, 1] (popularity spans more).
_LOG_SPANS = {"covisit": 10.0, "popularity": 15.0, "transition": 10.0, "successor": 10.0, "session_knn": 10.0}

#: Weights before anything is learned: the first stage's blend; shoppers come back to what they
#: looked at (re-consumption features at 0.5) and go on to what follows the item they are on
#: (transition and successor at 0.5: every dev log's second stage learns them positive, and a
#: small shop's second stage takes few steps); the rest is learned.
PRIOR = (1.0, 0.1, 0.05, 0.2, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.5)


def starting_weights(weights: Mapping[str, float] | None) -> dict[str, float] | None:
    """``weights`` (feature name -> starting weight, for some of :data:`FEATURES`) checked and in
    the features' order; ``None`` when there are none.

    >>> starting_weights({"successor": 0.5, "transition": 1})
    {'transition': 1.0, 'successor': 0.5}
    >>> starting_weights({"colour": 1.0})
    Traceback (most recent call last):
    ...
    ValueError: choice_prior: unknown feature 'colour'; the features are covisit, popularity, mf, category, own, \
own_recency_fast, own_recency_slow, own_count, own_session, latest, transition, covisit_log, popularity_log, \
transition_log, successor, successor_log, session_knn, session_knn_log, own_engaged
    """
    if not weights:
        return None
    unknown = sorted(set(weights) - _COLUMN.keys())
    if unknown:
        raise ValueError(f"choice_prior: unknown feature {unknown[0]!r}; the features are {', '.join(FEATURES)}")
    out = {}
    for name in FEATURES:
        if name in weights:
            value = weights[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"choice_prior: {name} must be a finite number, got {value!r}")
            out[name] = float(value)
    return out


def prior_with(weights: Mapping[str, float] | None) -> tuple[float, ...]:
    """:data:`PRIOR` with the starting weights ``weights`` (:func:`starting_weights`) in place of its own."""
    if not weights:
        return PRIOR
    return tuple(float(weights.get(name, w)) for name, w in zip(FEATURES, PRIOR))


def _lookup(keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``queries`` in the sorted ``keys`` and whether each is there."""
    if not len(keys):
        return np.zeros(len(queries), dtype=np.int64), np.zeros(len(queries), dtype=bool)
    at = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return at, keys[at] == queries


class _Own:
    """The recent histories of a batch of customers as sorted ``(user, row)`` keys, with each item's
    recency rank, count and whether it is in the current session."""

    def __init__(self, users, n_items: int):
        lens = np.array([len(u.history) for u in users], dtype=np.int64)
        rows = np.fromiter((r for u in users for r in reversed(u.history)), dtype=np.int64, count=int(lens.sum()))
        counts = np.fromiter((c for u in users for c in reversed(u.counts)), dtype=np.float64, count=len(rows))
        times = np.fromiter((t for u in users for t in reversed(u.times)), dtype=np.float64, count=len(rows))
        engaged = np.fromiter((e for u in users for e in reversed(u.engagement)), dtype=np.int64, count=len(rows))
        starts = np.array([u.session_start for u in users], dtype=np.float64)
        uh = np.repeat(np.arange(len(users)), lens)
        self.lens, self.uh, self.rows = lens, uh, rows
        self.rank = within(lens).astype(np.float64)
        self.count = counts
        self.session = times >= starts[uh]
        self.engaged = engaged >= ENGAGEMENT[CLICK]
        keys = uh * n_items + rows
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]

    def latest(self) -> np.ndarray:
        """Each customer's latest item (-1 without a history)."""
        first = np.cumsum(self.lens) - self.lens
        return np.where(self.lens > 0, self.rows[np.minimum(first, max(len(self.rows) - 1, 0))], -1)


def _logscale(x: np.ndarray, span: float) -> np.ndarray:
    """``log(x)`` of a ratio in (0, 1] mapped to [0, 1] over ``span`` nats; 0 where ``x`` is 0."""
    out = np.zeros(len(x))
    pos = x > 0
    out[pos] = np.maximum(np.log(x[pos]) + span, 0.0) / span
    return out


def _latest_row(rows, latest: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(user, row, value)``: the row of each customer's latest item in an item-to-item table
    (:class:`~models.covisit.SparseRows`), values divided by that row's largest, sorted by user then row."""
    has = np.flatnonzero(latest >= 0)
    start, per = rows.regions(latest[has])
    idx = concat_ranges(start, per)
    if not len(idx):
        return _NO_SIGNAL
    vals = rows.values[idx]
    nz = np.flatnonzero(per)
    top = np.maximum.reduceat(vals, (np.cumsum(per) - per)[nz])
    rel = vals / np.repeat(np.where(top > 0, top, 1.0), per[nz])
    keys = np.repeat(has, per) * n_items + rows.columns[idx].astype(np.int64)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    return keys // n_items, keys % n_items, rel[order]


def session_votes(ranker, own: _Own, user_ids):
    """Session-kNN votes of each customer's neighbours (:class:`~models.session_knn.SessionNeighbours`),
    from its recent items weighted ``0.9 ** rank``: ``(user, row, vote)`` as :func:`_latest_row`."""
    return ranker.sessions.scores(user_ids, own.uh, own.rows, 0.9 ** own.rank)


class Sequels:
    """What follows a customer's recent items, three per-customer sparse signals ``(user, row, value)``
    sorted by user then row, values relative to the customer's largest: co-visitation from the latest
    item (``transition``), its successors (``successor``) and the session neighbours' votes (``votes``)."""

    def __init__(self, ranker, own: _Own, user_ids, n_items: int):
        latest = own.latest()
        self.transition = _latest_row(ranker.items.covisit.rows, latest, n_items)
        self.successor = _latest_row(ranker.items.successors.rows, latest, n_items)
        self.votes = session_votes(ranker, own, user_ids) if ranker.sessions is not None else _NO_SIGNAL
        self.n_items = n_items

    def candidates(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(users, rows)``: the ``k`` strongest rows per customer of the transition and of the
        successor signal (ties to the lower row). The votes add no candidates: on every log they
        only re-rank (adding their best 20 changed HR@10 by less than 0.0005 and cost a sort)."""
        out = [_strongest(*sig, k) for sig in (self.transition, self.successor)]
        return np.concatenate([u for u, _ in out]), np.concatenate([r for _, r in out])

    def values(self, sig, pu: np.ndarray, pr: np.ndarray) -> np.ndarray:
        """The signal's value of each ``(user index, row)`` pair (0 where it has none)."""
        u, r, v = sig
        at, hit = _lookup(u * self.n_items + r, pu * self.n_items + pr)
        return np.where(hit, v[at], 0.0) if len(u) else np.zeros(len(pu))


_NO_SIGNAL = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0))


def _strongest(u: np.ndarray, r: np.ndarray, v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    at = strongest_in_groups(u, v, k)  # (u, r) sorted: ties go to the lower row
    return u[at], r[at]


def pair_features(ranker, ctx, terms, users, pu: np.ndarray, pr: np.ndarray, own: _Own,
                  sequels: Sequels) -> np.ndarray:
    """Feature matrix (pairs x :data:`FEATURES`) of the ``(user index, row)`` pairs ``(pu, pr)``.

    ``terms`` are the first stage's per-user terms of ``users``
    (:class:`~models.ranking.scoring._Terms`), ``ctx`` its catalogue-wide
    cache, ``own`` the customers' histories and ``sequels`` what follows them.
    """
    n_items = ctx.n_items
    X = np.zeros((len(pu), len(FEATURES)))
    if not len(pu):
        return X
    col = _COLUMN
    t = terms
    if len(t.cv_u):
        at, hit = _lookup(t.cv_u * n_items + t.cv_r, pu * n_items + pr)
        scale = t.cvs / ranker.w_covisit if ranker.w_covisit else np.zeros(t.B)
        X[:, col["covisit"]] = np.where(hit, t.cv_v[at] * scale[pu], 0.0)
    top = ranker.items.popularity.max_value
    if top > 0:
        X[:, col["popularity"]] = ctx.pop[pr] / top
    if ctx.mf is not None:
        raw = np.einsum("ij,ij->i", ctx.factor_rows(pr), t.Uq[pu])
        X[:, col["mf"]] = np.ldexp(raw, t.shift[pu])
    if t.aff is not None:
        X[:, col["category"]] = t.aff[pu, t.cat_cols(ctx.row_cats(pr))]
    at, hit = _lookup(own.keys, pu * n_items + pr)
    src = own.order[at[hit]]
    rank = own.rank[src]
    X[hit, col["own"]] = 1.0
    X[hit, col["own_recency_fast"]] = 0.5 ** rank
    X[hit, col["own_recency_slow"]] = 0.9 ** rank
    X[hit, col["own_count"]] = np.log1p(own.count[src])
    X[hit, col["own_session"]] = own.session[src]
    X[hit, col["latest"]] = rank == 0
    X[hit, col["own_engaged"]] = own.engaged[src]
    X[:, col["transition"]] = sequels.values(sequels.transition, pu, pr)
    X[:, col["successor"]] = sequels.values(sequels.successor, pu, pr)
    X[:, col["session_knn"]] = sequels.values(sequels.votes, pu, pr)
    for name, span in _LOG_SPANS.items():
        X[:, col[name + "_log"]] = _logscale(X[:, col[name]], span)
    return X
