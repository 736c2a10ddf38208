"""The hybrid ranker, the product's recommender: co-visitation + trending popularity + implicit MF.

The Faust workers and ``recostream replay`` both build it through the
defaults of :class:`HybridRanker`, so that offline evaluation and production
use the same code and configuration.

How :meth:`HybridRanker.recommend` stays cheap per user (none of this changes
what is recommended):

* catalogue-wide terms (candidate pools, quantised MF item factors) live in a
  cache (:class:`~models.ranking.candidates._Context`) kept up to date
  incrementally between calls;
* users are scored in chunks, all users of a chunk at once
  (:mod:`models.ranking.scoring`): neighbourhoods are gathered from the
  co-visitation slab in one index and summed per (user, item) with two radix
  sorts, pool items are scored as dense ``users x items`` blocks (one matrix
  product for MF), and a pool block is skipped for users whose ``n``-th best
  neighbour it cannot beat;
* MF scores are exact integer dot products of quantised factors (24 bits),
  so a user's scores do not depend on the batch it is scored in; ties at a
  cut-off go to the lower row. Batched and one-user calls (the replay, which
  takes a leaner path) give identical lists.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import numpy as np

from models.covisit import CoVisitation
from models.groups import concat_ranges, strongest_in_groups
from models.mf import ImplicitMF
from models.ranking.base import EXCLUDE_RULES, PAD_ID, PAD_SCORE, StreamingRecommender, check_request, padded
from models.ranking.candidates import _Context
from models.ranking.choice import SoftmaxChoice
from models.ranking.features import FEATURES, Sequels, _Own, pair_features, prior_with, starting_weights
from models.ranking.item_state import ItemState, _popularity
from models.ranking.item_updates import ItemUpdate, _Outbox, user_key
from models.ranking.scoring import _Batch, _histories, _Terms
from models.ranking.topk import _best_k
from models.ranking.users import _User
from models.session_knn import SessionNeighbours
from models.sets import member, unique_sorted

__all__ = ["HybridRanker", "ItemState"]

_SEQUEL_CANDIDATES = 20  # strongest rows of each sequel signal added to a customer's candidates
# The candidate pools (most popular and newest items, overall and per category) are brought up to
# date every _POOLS_EVERY learned events, at the same points of the stream in a worker and a replay;
# in between, new items join them where there is room (_Context.refresh). Most of the cost of a
# refresh was the pools', paid on every learning step.
_POOLS_EVERY = 256
# HybridRanker's covisit_prior (chosen in docs/QUALITY.md, "A prior in the co-visits' normalisation").
_COVISIT_PRIOR = 30.0
_CHUNK_USERS = 256  # users scored together by recommend, at most ...
_CHUNK_ENTRIES = 65_536  # ... and about this many neighbourhood entries (keeps temporaries cache-sized)


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
        Weight of the reverse edge ``j -> i`` relative to ``i -> j``: 1.0 counts co-visits
        both ways alike (the direction of travel is the second stage's transition and
        successor features).
    covisit_half_life, popularity_half_life
        Forgetting of co-visits (and successors) and of popularity, in units of
        ``decay_clock`` (``None``: never forget). Co-visits fade slowly (200,000 events):
        on the shop logs of docs/QUALITY.md forgetting them over 20,000 events loses hits
        in every cell. Popularity is trending; given several half-lives (the default:
        2,000 to 128,000 events) it serves the one whose top list has lately held the most
        of what customers discovered (:class:`~models.adaptive_popularity.AdaptivePopularity`):
        the same number of events is a day of a small shop and minutes of a large one.
    decay_clock
        ``"events"`` (default): half-lives count learned events, so forgetting
        follows traffic and quiet periods do not wipe the model; ``"time"``:
        half-lives in seconds of the events' ``ts``.
    alpha
        Popularity normalisation of co-visits (0.5: cosine).
    covisit_prior
        Pseudo co-visit mass added to every item's before that normalisation
        (:class:`~models.covisit.CoVisitation` ``prior_mass``): on a young or
        sparse log an item met once would otherwise get the largest
        normalised score there is.
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
        the model, at a cost in quality (many weak neighbours of several history items
        add up; the measured cost is in docs/QUALITY.md). For very large, long-lived
        states only.
    n_candidates, n_new_candidates
        Items scored per user besides its co-visitation neighbours: the
        ``n_candidates`` most popular available items, and per category of
        the user's history its ``n_candidates`` most popular and
        ``n_new_candidates`` newest ones. MF and category affinity re-rank
        these candidates; the cost per user does not grow with the catalogue.
    rerank_candidates
        The first stage's best ``rerank_candidates`` (by the fixed blend above),
        the customer's recent items and the 20 strongest co-visited and the 20
        most frequent direct successors of its latest item are the second
        stage's candidates: they are ranked by learned weights over
        :data:`~models.ranking.features.FEATURES` (:class:`~models.ranking.choice.SoftmaxChoice`,
        starting from the blend above).
    choice_lr, choice_l2, choice_g0
        Step size, pull towards the prior and AdaGrad's starting sum of squared
        gradients (larger damps the first steps) of the second stage's learning.
    choice_prior
        Starting weights of the second stage for some of its features (feature
        name -> weight; the others keep :data:`~models.ranking.features.PRIOR`),
        for example the ``second_stage_weights`` a replay of the shop's own log
        learned (``recostream replay --json``: ``model.facts``). A shop with
        little traffic gives the second stage few steps to learn from, and its
        lists are then mostly what it starts from.
    train_every
        The second stage learns from every ``train_every``-th learned event
        (a function of the event sequence, so replays and workers learn alike):
        before the event is learned, the customer's candidates are ranked and
        the model learns which of them was chosen. Each such step costs a
        one-customer ranking; 0 turns learning off.
    exclude
        The exclusion rule the second stage learns to rank under (the rule the
        lists are served with).
    session_neighbours
        Keep a session-kNN index (:class:`~models.session_knn.SessionNeighbours`)
        and give the second stage its votes (the ``session_knn`` features, 0
        otherwise). Off by default: it adds about a third to the worker's cost
        per event for +0.3 % HR@10 on YooChoose sessions (docs/QUALITY.md).
    share_items
        Learn the item side from updates instead of directly: :meth:`learn_one`
        learns the customer's own state and queues the event's item-side part,
        :meth:`take_updates` hands the queue out, and :meth:`apply_updates`
        folds an update (this learner's or another's) into popularity,
        co-visits, successors, the decay clock, the pools' schedule, the
        second stage and the item factors (its own customers' factors move
        with it). Learners that apply the same updates in the same order hold
        the same item side (:mod:`models.ranking.item_updates`).

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
    >>> ids, scores = r.recommend(["dan", "new-user"], n=3)
    >>> ids  # dan's own boots first (re-views allowed); the scarf is unavailable: padding
    array([['boots', 'sandals', None],
           ['sandals', 'boots', None]], dtype=object)
    >>> bool(scores[0, 0] > scores[0, 1]), scores[0, 2]
    (True, np.float64(-inf))
    >>> r.recommend(["dan"], n=1, exclude="interacted")[0].tolist()  # what he has not seen
    [['sandals']]
    >>> r.predict_one("dan", "boots") > r.predict_one("dan", "sandals")
    True
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
        covisit_backward: float = 1.0,
        covisit_half_life: float | None = 200_000,
        popularity_half_life: float | None | Sequence[float | None] = (2_000, 8_000, 32_000, 128_000),
        decay_clock: str = "events",
        alpha: float = 0.4,
        covisit_prior: float = _COVISIT_PRIOR,
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
        rerank_candidates: int = 50,
        choice_lr: float = 0.15,
        choice_l2: float = 0.0,
        choice_g0: float = SoftmaxChoice.g0,
        choice_prior: Mapping[str, float] | None = None,
        train_every: int = 32,
        exclude: str = "purchased",
        session_neighbours: bool = False,
        share_items: bool = False,
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
        if isinstance(popularity_half_life, Sequence):
            popularity_half_life = tuple(popularity_half_life)
            if not popularity_half_life:
                raise ValueError("popularity_half_life: name at least one half-life")
        self.popularity_half_life = popularity_half_life
        if decay_clock not in ("time", "events"):
            raise ValueError("decay_clock must be 'time' or 'events'")
        self.decay_clock = decay_clock
        self.alpha = alpha
        if covisit_prior < 0:
            raise ValueError("covisit_prior must be non-negative")
        pop_half_lives = popularity_half_life if isinstance(popularity_half_life, tuple) else (popularity_half_life,)
        for name, half_life in (("covisit_half_life", covisit_half_life),
                                *(("popularity_half_life", h) for h in pop_half_lives)):
            if half_life is not None and not half_life > 0:
                raise ValueError(f"{name} must be positive or None (never forgotten), got {half_life!r}")
        self.covisit_prior = covisit_prior
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
        if rerank_candidates < 1 or train_every < 0:
            raise ValueError("rerank_candidates must be positive and train_every non-negative")
        if not choice_g0 > 0:
            raise ValueError("choice_g0 must be positive")
        if exclude not in EXCLUDE_RULES:
            raise ValueError(f"exclude must be one of {EXCLUDE_RULES}, got {exclude!r}")
        self.choice_prior = starting_weights(choice_prior)
        self.rerank_candidates = rerank_candidates
        self.choice_lr = choice_lr
        self.choice_l2 = choice_l2
        self.choice_g0 = choice_g0
        self.train_every = train_every
        self.exclude = exclude
        self.session_neighbours = session_neighbours
        self.share_items = share_items
        super().__init__(history_size=history_size, event_weights=event_weights, seed=seed)

    def _reset(self) -> None:
        super()._reset()
        self.items = ItemState(
            self.catalog,
            _popularity(self.popularity_half_life),
            CoVisitation(
                max_neighbors=self.max_neighbors,
                distance_decay=self.covisit_decay,
                forward=1.0,
                backward=self.covisit_backward,
                half_life=self.covisit_half_life,
                alpha=self.alpha,
                prior_mass=self.covisit_prior,
            ),
        )
        self.mf = (
            ImplicitMF(
                n_factors=self.n_factors, lr=self.mf_lr, l2=self.mf_l2, n_negatives=self.n_negatives, seed=self.seed,
                deferred=self.share_items,
            )
            if self.w_mf
            else None
        )
        self.choice = SoftmaxChoice(prior_with(self.choice_prior), lr=self.choice_lr, l2=self.choice_l2,
                                    g0=self.choice_g0)
        self.sessions = SessionNeighbours(sessions_per_item=50) if self.session_neighbours else None
        self._outbox = _Outbox() if self.share_items else None
        self._mf_pending: dict[int, str] = {}  # user key -> id, of this learner's users in updates not applied yet
        # User key -> factors a part of an update left them at, for the next part (ItemUpdate.mf_more).
        self._mf_carry: dict[int, np.ndarray] = {}

    @property
    def served_popularity_half_life(self) -> float | None:
        """The half-life of the popularity served now: ``popularity_half_life``, or the one chosen
        among several (``None``: never forgotten)."""
        return self.items.popularity.half_life

    def facts(self) -> dict:
        """What the ranker has come to, for a report (``recostream replay --json``): the popularity
        half-life served, in events or seconds as ``decay_clock`` says (``None``: never forgotten), and
        the second stage's weights by feature with the learning steps that moved them."""
        half_life = self.served_popularity_half_life
        return {"decay_clock": self.decay_clock, "popularity_half_life": None if half_life is None else float(half_life),
                "second_stage_steps": self.choice.n_updates,
                "second_stage_weights": {name: round(float(w), 4) for name, w in zip(FEATURES, self.choice.weights)}}

    def _learn(self, user_id, user, row, weight, ts, personal=True):
        box = self._outbox
        if box is not None:  # shared: the item side learns it when the update comes back
            self._queue(box, user_id, user, row, weight, ts)
            box.add_steps(self._learn_personal(user_id, user, row, weight, personal))
            return False
        if self.train_every and user.history and self._n_learned % self.train_every == 0:
            grad = self._choice_gradient(user_id, user, row)
            if grad is not None:
                self.choice.apply_gradient(grad)
        t = float(self._n_learned) if self.decay_clock == "events" else ts
        self._learn_items(user.history[::-1], row, weight, t)
        self._learn_personal(user_id, user, row, weight, personal)
        if (self._n_learned + 1) % _POOLS_EVERY == 0 or "_ctx" not in self.__dict__:
            self._context(len(self.catalog), pools=True)  # exact pools after this event
        return True

    def _learn_personal(self, user_id: str, user: _User, row: int, weight: float, personal: bool) -> int:
        """The customer's own share of one event (session neighbours, factor steps); the factor steps queued."""
        if not personal:
            return 0
        if self.sessions is not None:
            self.sessions.update(user_id, row)
        if self.mf is None:
            return 0
        # Targets in (0, 1]: the strongest event type is a full positive.
        target = weight / max(self.event_weights.values())
        return self.mf.learn_one(user_id, self.catalog.item_id(row), row, target, seen=user.interacted)

    def _learn_items(self, history, row: int, weight: float, t: float | None) -> None:
        """The item side's share of one event: ``row`` after ``history`` (rows, most recent first) at clock ``t``."""
        self.items.learn((history,), (row,), (weight,), (t,))

    def _queue(self, box: _Outbox, user_id: str, user: _User, row: int, weight: float, ts: float | None) -> None:
        """Queue the item side's share of one event, with the second stage's step when the event
        trains it: every ``train_every``-th event of the update sequence, counting this learner's
        queued events after those applied (exact when its updates are applied right after)."""
        if self.train_every and user.history and (self._n_learned + len(box)) % self.train_every == 0:
            if self.sessions is None:
                # What the step reads changes in a batch only with the customer (the item side learns
                # when the batch is over): the batch's steps are computed together when it is taken.
                box.add_chooser(user_id, user.frozen(self.exclude), row)
            else:  # (session neighbours change with every event)
                grad = self._choice_gradient(user_id, user, row)
                if grad is not None:
                    box.add_choice(grad.tolist())
        box.add(row, weight, ts, user.history[::-1])

    def _learn_category(self, row: int, category: str) -> None:
        box = self._outbox
        if box is None:
            super()._learn_category(row, category)
        else:  # every learner takes it when it applies the update, after the update's events
            box.add_category(row, category)

    def take_updates(self) -> ItemUpdate | None:
        """The item-side parts of the events learned since the last call, as one update for every
        learner (this one included) to :meth:`apply_updates`; ``None`` when there are none (or the
        ranker does not share its item side). Factor steps go with their users' factors as they
        are now: applying the update moves the item factors everywhere, and this learner's users'
        factors here."""
        box = self._outbox
        if box is None:
            return None
        self._resolve_choices(box)
        if self.mf is None or not len(box):
            return box.take(self.catalog.item_id)
        users, rows, targets = self.mf.take_steps()
        index: dict[str, int] = {}
        uidx = [index.setdefault(user, len(index)) for user in users]
        keys = [user_key(user) for user in index]
        start = np.array([self.mf.user_start(user) for user in index], dtype="<f4").reshape(len(index),
                                                                                          self.mf.n_factors)
        self._mf_pending.update(zip(keys, index))
        return box.take(self.catalog.item_id, (uidx, rows, targets), keys, start.tobytes())

    def _resolve_choices(self, box: _Outbox) -> None:
        if box.choosers:
            _, user_ids, users, rows = zip(*box.choosers)
            box.resolve(self._choice_gradients(list(user_ids), list(users), list(rows)))

    def end_batch(self) -> None:
        """A micro-batch is learned: a learner alone applies its own update (nothing to do unshared)."""
        update = self.take_updates()
        if update is not None:
            self.apply_updates(update)

    def apply_updates(self, update: ItemUpdate, keep: Sequence[bool] | None = None) -> None:
        """Fold ``update`` (anyone's :meth:`take_updates`) into the item side as :meth:`learn_one`
        does unshared, event by event, to the same state; unknown items join the catalogue.
        ``keep[k]`` false skips event ``k`` and the second stage's steps taken before it (an event
        already applied).

        The events between two refreshes of the candidate pools (which read the item side as it
        stands after every ``_POOLS_EVERY``-th event) are learned in one :meth:`ItemState.learn`.
        The second stage's steps read nothing the events change (their gradients came computed),
        so they are taken in their order, apart from the events."""
        rows = [self._row(item) for item in update.items]
        n = update.n_events
        kept = range(n) if keep is None else [k for k in range(n) if keep[k]]
        at = update.choice_at
        for j, grad in enumerate(update.choice):
            if at[j] >= n or keep is None or keep[at[j]]:
                self.choice.apply_gradient(np.asarray(grad, dtype=np.float64))
        histories = [tuple(rows[h] for h in update.history[k]) for k in kept]
        item_rows = [rows[update.item[k]] for k in kept]
        weights = [update.weight[k] for k in kept]
        if self.decay_clock == "events":
            ts = np.arange(self._n_learned, self._n_learned + len(item_rows), dtype=np.float64)
        else:
            ts = [update.ts[k] for k in kept]
        mf = self.mf if self.mf is not None and self.mf.deferred else None
        lo = 0
        while lo < len(item_rows):
            # Up to the next refresh of the pools: after this learner's first event, then after
            # every _POOLS_EVERY-th.
            hi = lo + 1 if "_ctx" not in self.__dict__ else \
                min(len(item_rows), lo + _POOLS_EVERY - self._n_learned % _POOLS_EVERY)
            self.items.learn(histories[lo:hi], item_rows[lo:hi], weights[lo:hi], ts[lo:hi])
            if mf is not None:
                mf.observe_many(item_rows[lo:hi])
            self._n_learned += hi - lo
            if self._n_learned % _POOLS_EVERY == 0 or "_ctx" not in self.__dict__:
                self._context(len(self.catalog), pools=True)
            lo = hi
        if update.mf_at and self.mf is not None:
            self._apply_factor_steps(update, rows, keep)
        # Categories its events named last: the second stage's steps above were computed from lists
        # served before them, which could not hold an item by a category not yet known.
        for i, name in zip(update.category_item, update.category):
            self.catalog.fill_category(rows[i], name)  # (the catalogue's own wins)

    def _apply_factor_steps(self, update: ItemUpdate, rows: list[int], keep: Sequence[bool] | None) -> None:
        """The update's factor steps of the events kept: the item factors move; the users' factors too
        when they are this learner's."""
        mf = self.mf
        n_users, k = len(update.mf_users), mf.n_factors
        if len(update.mf_start) != 4 * n_users * k:
            return  # (another factor count: a learner of another configuration wrote it)
        sel = np.arange(len(update.mf_at)) if keep is None else \
            np.flatnonzero(np.asarray(keep, dtype=bool)[np.asarray(update.mf_at, dtype=np.int64)])
        items = np.asarray(update.mf_item, dtype=np.int64)[sel]
        start = np.frombuffer(update.mf_start, dtype="<f4").reshape(n_users, k).astype(np.float64)
        carry, keys = self._mf_carry, update.mf_users
        for i in update.mf_resume:  # (where the previous part left them, when it was applied here)
            kept = carry.pop(keys[i], None)
            if kept is not None and len(kept) == k:
                start[i] = kept
        U = mf.apply_steps(start, np.asarray(update.mf_user, dtype=np.int64)[sel],
                           np.asarray(rows, dtype=np.int64)[items], [update.items[i] for i in items.tolist()],
                           np.asarray(update.mf_target, dtype=np.float64)[sel])
        more = set(update.mf_more)
        for i in more:
            carry[keys[i]] = U[i].copy()
        pending, users = self._mf_pending, self._users
        U = U.astype("<f4").astype(np.float64)  # what the customer's record holds, exactly
        for i, key in enumerate(keys):
            if i in more:
                continue  # (their steps go on in the next part: taken from the last)
            user = pending.pop(key, None)
            if user is not None and user in users:
                mf.set_user_vector(user, U[i])

    def drop_users(self, user_ids):
        super().drop_users(user_ids)
        if self.sessions is not None:
            for user_id in user_ids:
                self.sessions.forget(user_id)
        if self.mf is not None:
            self.mf.forget_users(frozenset(user_ids))

    def users_with_queued_steps(self):
        return self.mf.queued_users() if self.mf is not None else frozenset()

    def _user_factors(self, user_ids):
        if self.mf is None:
            return {}
        vector, item_id = self.mf.user_vector, self.catalog.item_id
        steps = self.mf.queued_steps(frozenset(user_ids))
        out = {}
        for user in user_ids:
            u = vector(user)
            queued = steps.get(user)
            if u is not None or queued:
                out[user] = (b"" if u is None else u.astype("<f4").tobytes(),
                             [(item_id(row), y) for row, y in queued] if queued else [])
        return out

    def _set_user_factors(self, user_id, factors, steps):
        if self.mf is not None:
            k = self.mf.n_factors
            # float32 (little-endian); float64 in this machine's order in older records
            dtype = {4 * k: "<f4", 8 * k: np.float64}.get(len(factors))
            if dtype is None:  # (none, or a ranker with other factors wrote it)
                factors, steps = b"", []
            vector = np.frombuffer(factors, dtype=dtype).astype(np.float64) if factors else None
            self.mf.set_user_vector(user_id, vector, steps)

    def __getstate__(self):
        if self._outbox is not None:
            self._resolve_choices(self._outbox)
        state = super().__getstate__()
        # The catalogue-wide cache is rebuilt on demand, except its candidate pools: they change at
        # fixed points of the event sequence, so a restored ranker must go on with the ones it had.
        ctx = state.pop("_ctx", None)
        state["_pools"] = ctx.pools_state() if ctx is not None else None
        return state

    def __setstate__(self, state):
        # Checkpoints from before `score_neighbors` existed get the current default.
        state.setdefault("score_neighbors", None)
        state.setdefault("neighbor_candidates", 200)
        # ... and from before the learned second stage: it starts from its prior.
        for key, value in (("rerank_candidates", 50), ("choice_lr", 0.15), ("choice_l2", 0.0),
                           ("choice_g0", SoftmaxChoice.g0), ("train_every", 32), ("exclude", "purchased")):
            state.setdefault(key, value)
        # Interned like the literal a fresh model holds, so that a re-dump pickles it the same way.
        state["exclude"] = sys.intern(state["exclude"])
        state.setdefault("choice_prior", None)
        prior = prior_with(state["choice_prior"])
        if "choice" not in state:
            state["choice"] = SoftmaxChoice(prior, lr=state["choice_lr"], l2=state["choice_l2"], g0=state["choice_g0"])
        # ... and from before session neighbours and the features added with them: those start empty
        # and from their prior, the weights already learned are kept.
        state["choice"] = state["choice"].widened(prior)
        state.setdefault("session_neighbours", False)
        state.setdefault("sessions", None)
        state.setdefault("share_items", False)  # (checkpoints before sharing learned their item side directly)
        state.setdefault("_outbox", None)
        state.setdefault("_mf_pending", {})
        state.setdefault("_mf_carry", {})
        pools = state.pop("_pools", None)
        # ... and from before the co-visits' prior: they normalise with the current default.
        state.setdefault("covisit_prior", _COVISIT_PRIOR)
        items = state.get("items")
        if items is not None and "prior_mass" not in items.covisit.__dict__:
            items.covisit.prior_mass = state["covisit_prior"]
        super().__setstate__(state)
        if pools is not None:
            self._ctx = _Context(self)
            self._ctx.seed(pools)

    def _context(self, n_items: int, many: bool = False, pools: bool = False) -> _Context:
        """The catalogue-wide cache, up to date; the candidate pools are brought up to date only
        when ``pools`` (every :data:`_POOLS_EVERY` learned events), else they only take in new items:
        at any read they are a function of the event sequence, so reads never change what is learned."""
        ctx = self.__dict__.get("_ctx")
        if ctx is None:
            ctx = self._ctx = _Context(self)
        ctx.refresh(n_items, many, pools)
        return ctx

    def _scores(self, user_id, user, n_items):
        # Every item scored as recommend() scores its candidates: predict_one agrees with recommend.
        ctx = self._context(n_items)
        if user is None or not user.history:
            return ctx.pop * ctx.base_scale  # cold start: trending popularity only
        t = _Terms(ctx, [user_id], [user])
        rows = np.arange(n_items)
        own = _Own([user], n_items)
        X = pair_features(self, ctx, t, [user], np.zeros(n_items, dtype=np.int64), rows, own,
                          Sequels(self, own, [user_id], n_items))
        return self.choice.predict_many(X)

    def _first_one(self, ctx: _Context, user_id: str, user: _User, n: int, exclude: str):
        """The first stage for one user with a history: its best ``n`` candidates by the fixed
        blend, and its terms.

        The same candidates, the same arithmetic (in the same order) and the
        same tie rule as the batched path (:class:`_Batch`), so the results
        are identical; only the bookkeeping is simpler.
        """
        t = _Terms(ctx, [user_id], [user])
        blocks = [ctx.blocks[0]] if ctx.blocks else []
        if t.aff is not None:
            blocks += [ctx.blocks[b] for b in (1 + t.cat_ids[t.has_cat[0]]).tolist() if b < len(ctx.blocks)]
        # Candidates: the neighbours (sorted), then the block rows that are not neighbours.
        cv = t.cv_r
        pool = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)
        if len(cv) and len(pool):
            pool = pool[~member(pool, cv)]
        cand = np.concatenate((cv, pool))
        if not len(cand):
            return cand, t
        scores = ctx.row_base(cand)
        if t.aff is not None:
            scores = self.w_category * t.aff[0, t.cat_cols(ctx.row_cats(cand))] + scores
        if ctx.mf is not None:
            raw = ctx.factor_rows(cand) @ t.Uq[0]
            top = float(np.ldexp(np.abs(raw).max(), t.shift[0]))
            if top > 0:
                scores += float(np.ldexp(self.w_mf / top, t.shift[0])) * raw
        if len(cv):
            scores[: len(cv)] += t.cv_v * t.cvs[0]
        excl = user.excluded(exclude)  # sorted
        if excl is not None and len(excl):
            scores[member(cand, excl)] = -np.inf
        idx = _best_k(scores[None, :], n, lambda i, j: cand[j])[0]
        idx = idx[scores[idx] > -np.inf]
        return cand[idx], t

    def _second_pairs(self, ctx: _Context, t: _Terms, user_ids, users: list[_User], first: list[np.ndarray],
                      exclude: str):
        """The second stage's candidates of ``users``: ``(user index, row)`` pairs sorted by user then
        row, and their features. Candidates: the first stage's best (``first``), the user's recent
        items and the strongest next items of its latest one; no excluded or unavailable row."""
        N = ctx.n_items
        own = _Own(users, N)
        sequels = Sequels(self, own, user_ids, N)
        tu, tr = sequels.candidates(_SEQUEL_CANDIDATES)
        lens = np.array([len(f) for f in first], dtype=np.int64)
        pu = np.concatenate((np.repeat(np.arange(len(users)), lens), own.uh, tu))
        pr = np.concatenate([np.asarray(f, dtype=np.int64) for f in first] + [own.rows, tr])
        keys = unique_sorted(pu * N + pr)
        keys = keys[ctx.available[keys % N]]
        excl = [user.excluded(exclude) for user in users]
        if any(e is not None and len(e) for e in excl):
            # (ascending: customers in order, each one's excluded rows sorted)
            ekeys = np.concatenate([b * N + e for b, e in enumerate(excl) if e is not None and len(e)])
            keys = keys[~member(keys, ekeys)]
        pu, pr = keys // N, keys % N
        return pu, pr, pair_features(self, ctx, t, users, pu, pr, own, sequels)

    def _second(self, ctx: _Context, t: _Terms, user_ids, users: list[_User], first: list[np.ndarray], exclude: str,
                n: int):
        """Best ``n`` rows of each user by the learned scores: ``(rows, scores)``, users x n, padded
        with row 0 and ``-inf``; ties go to the lower row."""
        pu, pr, X = self._second_pairs(ctx, t, user_ids, users, first, exclude)
        s = self.choice.predict_many(X)
        at = strongest_in_groups(pu, s, n)  # (pu, pr) sorted: ties go to the lower row
        pu, pr, s = pu[at], pr[at], s[at]
        order = np.lexsort((pr, -s, pu))
        pu, pr, s = pu[order], pr[order], s[order]
        starts = np.searchsorted(pu, np.arange(len(users)))
        rank = np.arange(len(pu)) - starts[pu]
        keep = rank < n
        rows = np.zeros((len(users), n), dtype=np.int64)
        scores = np.full((len(users), n), PAD_SCORE)
        rows[pu[keep], rank[keep]] = pr[keep]
        scores[pu[keep], rank[keep]] = s[keep]
        return rows, scores

    def _choice_gradient(self, user_id: str, user: _User, row: int) -> np.ndarray | None:
        """The second stage's step for the user's choice of ``row`` among its candidates, before
        learning the event (``None``: the choice teaches nothing)."""
        ctx = self._context(len(self.catalog))
        first, t = self._first_one(ctx, user_id, user, self.rerank_candidates, self.exclude)
        _, pr, X = self._second_pairs(ctx, t, [user_id], [user], [first], self.exclude)
        at = np.flatnonzero(pr == row)
        return self.choice.gradient(X, int(at[0]) if len(at) else None)

    # -- many users at once: exact top-N over candidates ---------------------

    def recommend(self, user_ids: Sequence[str], n: int = 20,
                  exclude: str = "purchased") -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` items of each user: ``(ids, scores)`` (see :meth:`StreamingRecommender.recommend`).

        Only candidate items are scored (see :class:`_Context` and :class:`_Batch`): the user's
        co-visitation neighbours, the most popular available items, and the
        most popular and newest items of the categories in the user's history.
        The catalogue-wide terms are kept between calls and the users of a
        call are scored together (in chunks), so a user costs little more
        than the size of its candidate set, whatever the size of the
        catalogue. Ties go to the lower catalogue row.
        """
        check_request(user_ids, exclude)
        ids, scores = padded(len(user_ids), n)
        n_items = len(self.catalog)
        if n_items == 0 or n <= 0:
            return ids, scores
        ctx = self._context(n_items, many=len(user_ids) >= 32)
        cold_at, warm_at, warm_ids, warm_users = [], [], [], []
        for i, user_id in enumerate(user_ids):
            user = self._users.get(user_id)
            if user is None or not user.history:
                cold_at.append(i)
            else:
                warm_at.append(i)
                warm_ids.append(user_id)
                warm_users.append(user)
        if cold_at:  # trending popularity only: the same list for all of them
            rows, s = ctx.cold(n)
            ids[cold_at, :len(rows)] = ctx.item_ids(rows)
            scores[cold_at, :len(rows)] = s
        if len(warm_users) == 1:  # one user (the replay): the plain path, same results
            first, t = self._first_one(ctx, warm_ids[0], warm_users[0], max(n, self.rerank_candidates), exclude)
            rows, s = self._second(ctx, t, warm_ids, warm_users, [first], exclude, n)
            m = int((s[0] > PAD_SCORE).sum())
            ids[warm_at[0], :m] = ctx.item_ids(rows[0, :m])
            scores[warm_at[0], :m] = s[0, :m]
        elif warm_users:
            self._top_many(ctx, warm_at, warm_ids, warm_users, n, exclude, ids, scores)
        return ids, scores

    def _top_many(self, ctx: _Context, at: list[int], user_ids: list[str], users: list[_User], n: int,
                  exclude: str, ids: np.ndarray, scores: np.ndarray) -> None:
        """Rows ``at`` of :meth:`recommend`'s ``ids`` and ``scores``: the lists of ``users`` with a history."""
        for part, t, members, first in self._chunks(ctx, user_ids, users, max(n, self.rerank_candidates), exclude):
            rows, s = self._second(ctx, t, [user_ids[j] for j in part], members, first, exclude, n)
            real = s > PAD_SCORE  # the real entries come first, then padding
            chunk_ids = np.full(rows.shape, PAD_ID, dtype=object)
            chunk_ids[real] = ctx.item_ids(rows[real])
            out = [at[j] for j in part]
            ids[out, :rows.shape[1]] = chunk_ids
            scores[out, :rows.shape[1]] = s

    def _chunks(self, ctx: _Context, user_ids: list[str], users: list[_User], n: int, exclude: str):
        """``(indices into users, terms, those users, their first stage's best n rows)`` per chunk.

        Users are scored in chunks of similar neighbourhood sizes: the working
        set stays in the CPU caches and padded matrices stay tight. A user's
        scores do not depend on the other users of its chunk.
        """
        H, W, lens = _histories(ctx, users)
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
                members = [users[j] for j in part]
                idx = concat_ranges(starts[part], lens[part])
                t = _Terms(ctx, [user_ids[j] for j in part], members,
                           (H[idx], W[idx], lens[part], (rstart[idx], per[idx])))
                first, _, counts = _Batch(ctx, t).top(n, [user.excluded(exclude) for user in members])
                yield part, t, members, [first[i, :c] for i, c in enumerate(counts.tolist())]

    def _choice_gradients(self, user_ids: list[str], users: list[_User], chosen: list[int]) -> list:
        """:meth:`_choice_gradient` of many choices at once (``users``: as each was when it chose);
        the same steps, one batched ranking instead of one per choice."""
        if len(users) == 1:  # (a per-event replay) the plain path, same step, half the cost
            return [self._choice_gradient(user_ids[0], users[0], chosen[0])]
        ctx = self._context(len(self.catalog), many=len(users) >= 32)
        out: list = [None] * len(users)
        for part, t, members, first in self._chunks(ctx, user_ids, users, self.rerank_candidates, self.exclude):
            pu, pr, X = self._second_pairs(ctx, t, [user_ids[j] for j in part], members, first, self.exclude)
            bounds = np.searchsorted(pu, np.arange(len(part) + 1))  # pairs are sorted by user
            for i, j in enumerate(part):
                lo, hi = bounds[i], bounds[i + 1]
                hit = np.flatnonzero(pr[lo:hi] == chosen[j])
                out[j] = self.choice.gradient(X[lo:hi], int(hit[0]) if len(hit) else None)
        return out
