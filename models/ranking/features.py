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
  session; it is the item the customer is on;
* session transitions: co-visitation from the latest item alone (divided by
  that item's strongest neighbour): where shoppers go next from here.
"""

from __future__ import annotations

import numpy as np

from models.covisit import concat_ranges

__all__ = ["FEATURES", "PRIOR", "pair_features"]

#: Feature names, in the order of the columns of :func:`pair_features`.
FEATURES = ("covisit", "popularity", "mf", "category", "own", "own_recency_fast", "own_recency_slow",
            "own_count", "own_session", "latest", "transition")

#: Weights before anything is learned: the first stage's blend, re-consumption off.
PRIOR = (1.0, 0.1, 0.05, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

_TRANSITION_CANDIDATES = 20  # strongest next items of the latest item added to the candidates


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
        starts = np.array([u.session_start for u in users], dtype=np.float64)
        uh = np.repeat(np.arange(len(users)), lens)
        self.lens, self.uh, self.rows = lens, uh, rows
        self.rank = (np.arange(len(rows)) - np.repeat(np.cumsum(lens) - lens, lens)).astype(np.float64)
        self.count = counts
        self.session = times >= starts[uh]
        keys = uh * n_items + rows
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]

    def latest(self) -> np.ndarray:
        """Each customer's latest item (-1 without a history)."""
        first = np.cumsum(self.lens) - self.lens
        return np.where(self.lens > 0, self.rows[np.minimum(first, max(len(self.rows) - 1, 0))], -1)


def transition_candidates(covisit_rows, latest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(users, rows)``: the strongest next items of each customer's latest item."""
    has = np.flatnonzero(latest >= 0)
    idx, per = covisit_rows.strongest(latest[has], _TRANSITION_CANDIDATES)
    return np.repeat(has, per), covisit_rows.columns[idx].astype(np.int64)


def _transition(covisit_rows, latest: np.ndarray, pu: np.ndarray, pr: np.ndarray, n_items: int) -> np.ndarray:
    """Co-visitation from each pair's customer's latest item to the pair's row, over that item's strongest."""
    has = np.flatnonzero(latest >= 0)
    start, per = covisit_rows.regions(latest[has])
    idx = concat_ranges(start, per)
    if not len(idx):
        return np.zeros(len(pu))
    vals = covisit_rows.values[idx]
    users = np.repeat(has, per)
    line = np.repeat(np.arange(len(has)), per)
    top = np.zeros(len(has))
    np.maximum.at(top, line, vals)
    rel = vals / np.where(top > 0, top, 1.0)[line]
    keys = users * n_items + covisit_rows.columns[idx].astype(np.int64)
    order = np.argsort(keys, kind="stable")
    at, hit = _lookup(keys[order], pu * n_items + pr)
    return np.where(hit, rel[order][at], 0.0)


def pair_features(ranker, ctx, terms, users, pu: np.ndarray, pr: np.ndarray, own: _Own | None = None) -> np.ndarray:
    """Feature matrix (pairs x :data:`FEATURES`) of the ``(user index, row)`` pairs ``(pu, pr)``.

    ``terms`` are the first stage's per-user terms of ``users``
    (:class:`~models.ranking.scoring._Terms`), ``ctx`` its catalogue-wide
    cache; ``own`` the customers' histories if already built.
    """
    n_items = ctx.n_items
    X = np.zeros((len(pu), len(FEATURES)))
    if not len(pu):
        return X
    t = terms
    if len(t.cv_u):
        at, hit = _lookup(t.cv_u * n_items + t.cv_r, pu * n_items + pr)
        scale = t.cvs / ranker.w_covisit if ranker.w_covisit else np.zeros(t.B)
        X[:, 0] = np.where(hit, t.cv_v[at] * scale[pu], 0.0)
    top = ranker.items.popularity.max_value
    if top > 0:
        X[:, 1] = ctx.pop[pr] / top
    if ctx.mf is not None:
        raw = np.einsum("ij,ij->i", ctx.factor_rows(pr), t.Uq[pu])
        X[:, 2] = np.ldexp(raw, t.shift[pu])
    if t.aff is not None:
        X[:, 3] = t.aff[pu, ctx.row_cats(pr)]
    own = _Own(users, n_items) if own is None else own
    at, hit = _lookup(own.keys, pu * n_items + pr)
    src = own.order[at[hit]]
    rank = own.rank[src]
    X[hit, 4] = 1.0
    X[hit, 5] = 0.5 ** rank
    X[hit, 6] = 0.9 ** rank
    X[hit, 7] = np.log1p(own.count[src])
    X[hit, 8] = own.session[src]
    X[hit, 9] = rank == 0
    X[:, 10] = _transition(ranker.items.covisit.rows, own.latest(), pu, pr, n_items)
    return X
