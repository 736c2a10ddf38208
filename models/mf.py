"""Implicit-feedback matrix factorisation on top of River's ``FunkMF``."""

from __future__ import annotations

import collections
import copy
import sys
import zlib
from collections.abc import Collection, Container, Sequence

import numpy as np
from river import optim, reco

from models.catalog import grow_to
from models.sets import unique_sorted

__all__ = ["ImplicitMF"]


class ImplicitMF:
    """Online implicit-feedback MF: positives with event weights + sampled negatives.

    River's ``FunkMF`` learns whatever target it is given; fed positives only
    it converges to "everything is 1" and ranks worse than popularity. Each
    positive ``(user, item, target)`` is therefore followed by
    ``n_negatives`` items drawn from the *recent event stream* with target 0.
    Sampling negatives proportionally to recent popularity (instead of
    uniformly) makes the factors explain *which* items a user prefers among
    those that are popular right now, rather than re-learning popularity,
    which the ranker already has as a separate signal. Negatives the user has
    interacted with are skipped (they are not unseen).

    Item factors live in a numpy matrix indexed by catalogue row and user
    factors in another one; River's latent dicts hold views of their rows, so
    scoring a user against the whole catalogue is one matrix-vector product
    and an SGD pass updates the matrices without copying anything back.

    River's ``predict_one`` inserts a random vector for unknown users/items
    (its latents are defaultdicts): every read here checks membership first,
    so predicting never changes the model.

    Parameters
    ----------
    n_factors
        Latent dimension.
    lr
        SGD learning rate.
    l2
        L2 regularisation.
    n_negatives
        Negatives sampled per positive.
    buffer_size
        Size of the ring buffer of recent event items negatives are drawn from.
    block_size
        SGD steps are applied every ``block_size`` events (one vectorised
        pass); until then reads see the factors of the last block.
    seed
        Seeds factor initialisation and negative sampling.
    deferred
        Never apply the queued steps on its own: :meth:`take_steps` hands
        them out and :meth:`apply_steps` applies steps given with their users'
        factors, so that learners sharing the item factors apply the same
        steps in the same order (a user's first factors are then drawn from
        their id, the same wherever they start; items' from the initialiser,
        in the order steps name them). Events join the stream negatives are
        drawn from through :meth:`observe`, as updates are applied.

    Examples
    --------
    >>> mf = ImplicitMF(n_factors=4, seed=1, block_size=1)
    >>> for _ in range(30):
    ...     _ = mf.learn_one("ann", "a", 0, 1.0)
    ...     _ = mf.learn_one("bob", "b", 1, 1.0)
    >>> mf.predict_one("ann", "a") > mf.predict_one("ann", "b")
    True
    >>> mf.predict_one("zoe", "a")  # unknown user: explicit fallback, no insert
    0.0
    >>> "zoe" in mf.model.u_latents
    False

    """

    def __init__(
        self,
        n_factors: int = 16,
        lr: float = 0.05,
        l2: float = 0.01,
        n_negatives: int = 4,
        buffer_size: int = 2000,
        seed: int = 0,
        block_size: int = 256,
        deferred: bool = False,
    ):
        self.n_factors = n_factors
        self.lr = lr
        self.l2 = l2
        self.n_negatives = n_negatives
        self.buffer_size = buffer_size
        self.seed = seed
        self.block_size = max(1, int(block_size))
        self.deferred = deferred
        self.model = reco.FunkMF(
            n_factors=n_factors,
            optimizer=optim.SGD(lr),
            loss=optim.losses.Squared(),
            l2=l2,
            initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed),
            seed=seed,
        )
        self._lr = float(lr)
        self._rng = np.random.default_rng(seed)
        self._F = np.zeros((0, n_factors))  # mirror of model.i_latents by row
        # Queued SGD steps, as three parallel lists (user, row, target): no
        # tuple per step for the garbage collector to track.
        self._pend_u: list[str] = []
        self._pend_r: list[int] = []
        self._pend_y: list[float] = []
        self._row_ids: dict[int, str] = {}
        self._recent: list[int] = []  # ring buffer of recent item rows
        self._rand: list[float] = []  # uniform draws for negative sampling, drawn in blocks
        self._n_seen = 0
        self._changed: list[np.ndarray] | None = None  # item rows updated since a reader last looked
        self._link()

    # -- learning ---------------------------------------------------------

    def learn_one(self, user: str, item_id: str, row: int, target: float = 1.0, seen: Container[int] = ()) -> int:
        """Learn one positive and ``n_negatives`` sampled negatives; return the steps queued.

        The negatives are drawn now (from the stream so far, skipping items in
        ``seen`` as it is now); the SGD steps themselves are queued and applied
        every ``block_size`` events, in one vectorised pass. Reads never
        apply them early, so what is learned does not depend on when (or how
        often) the model is read: a replay that reads after every event and a
        worker that reads after every micro-batch hold the same model.
        """
        if row not in self._row_ids:
            self._row_ids[row] = item_id
        pu, pr, py = self._pend_u, self._pend_r, self._pend_y
        queued = len(pu)
        pu.append(user)
        pr.append(row)
        py.append(target)
        n_seen = self._n_seen
        n_buf = n_seen if n_seen < self.buffer_size else self.buffer_size
        recent = self._recent
        if n_buf:
            rand = self._rand
            if len(rand) < self.n_negatives:
                rand = self._rand = self._rng.random(4096).tolist()
            for _ in range(self.n_negatives):
                neg = recent[int(rand.pop() * n_buf)]
                if neg != row and neg not in seen:
                    pu.append(user)
                    pr.append(neg)
                    py.append(0.0)
        steps = len(pu) - queued
        if self.deferred:
            return steps  # the event joins the recent stream when its update is applied (observe)
        self.observe(row)
        if self._n_seen % self.block_size == 0:
            self._flush()
        return steps

    def observe(self, row: int) -> None:
        """An event on ``row`` joins the recent stream negatives are drawn from (``learn_one`` does it
        unless ``deferred``; then the learner applying updates does, for every event of every
        learner, so that all draw from the same stream)."""
        recent, n_seen = self._recent, self._n_seen
        if len(recent) < self.buffer_size:
            recent.append(row)
        else:
            recent[n_seen % self.buffer_size] = row
        self._n_seen = n_seen + 1

    def observe_many(self, rows: Sequence[int]) -> None:
        """:meth:`observe` of each of ``rows`` in turn."""
        for row in rows:
            self.observe(row)

    def _flush(self) -> None:
        """Apply the queued SGD steps, exactly as River's ``FunkMF.learn_one`` would one after the other."""
        users, rows, ys = self._pend_u, self._pend_r, self._pend_y
        if not users:
            return
        self._pend_u, self._pend_r, self._pend_y = [], [], []
        model = self.model
        u_lat, i_lat, ids, uix = model.u_latents, model.i_latents, self._row_ids, self._uix
        # Latents are created in River's order (user, then item, per step) by
        # River's own initialiser, so random draws match a sequential run;
        # then they move into the factor matrices, River keeping views.
        new_users, new_rows = [], []
        uidx = []
        next_user = self._n_users
        for user, row in zip(users, rows):
            ui = uix.get(user)
            if ui is None:
                u_lat[user]
                ui = uix[user] = next_user  # the row _add_users gives it
                next_user += 1
                new_users.append(user)
            uidx.append(ui)
            item = ids[row]
            if item not in i_lat:
                i_lat[item]
                new_rows.append(row)
        self._place_items(new_rows)
        if new_users:
            self._add_users(new_users)
        rows = np.array(rows, dtype=np.int64)
        self._steps_vector(self._U, np.array(uidx, dtype=np.int64), rows, np.array(ys, dtype=np.float64), self._lr,
                           self.l2)
        self._stepped(rows)

    def _stepped(self, rows: np.ndarray) -> None:
        """``len(rows)`` steps changed these item rows: tell readers, count them as River does."""
        changed = self._changed
        if changed is not None:
            changed.append(rows)
            if len(changed) > 4096:  # nobody is reading: stop tracking
                self._changed = None
        model = self.model
        model.u_optimizer.n_iterations += len(rows)
        model.i_optimizer.n_iterations += len(rows)

    # -- learning shared: steps taken out and applied with their users' factors --

    def take_steps(self) -> tuple[list[str], list[int], list[float]]:
        """The queued steps, ``(users, rows, targets)`` in order, handed out once (``deferred``)."""
        steps = self._pend_u, self._pend_r, self._pend_y
        self._pend_u, self._pend_r, self._pend_y = [], [], []
        return steps

    def user_start(self, user: str) -> np.ndarray:
        """``user``'s factors, drawn from their id and the seed when they have none yet (no other
        random stream moves): where a user starts does not depend on which learner meets them first."""
        u = self.user_vector(user)
        if u is None:
            rng = np.random.default_rng([self.seed, zlib.crc32(user.encode())])
            # float32 values, as the customer's record and the updates carry them
            self.model.u_latents[user] = rng.normal(0.0, 0.1, self.n_factors).astype(np.float32).astype(np.float64)
            self._add_users([user])
            u = self.user_vector(user)
        return u

    def apply_steps(self, U: np.ndarray, uidx: np.ndarray, rows: np.ndarray, item_ids: Sequence[str],
                    ys: np.ndarray) -> np.ndarray:
        """Apply steps ``(uidx, rows, ys)`` whose users start from the rows of ``U`` (users x factors):
        the item factors move, ``U`` (a copy) is returned with where the users end. Items without
        factors (``item_ids[k]`` names row ``rows[k]``) get them from the initialiser first, in order."""
        ids, i_lat = self._row_ids, self.model.i_latents
        new_rows = []
        for row, item in zip(rows.tolist(), item_ids):
            if row not in ids:
                ids[row] = item
            if item not in i_lat:
                i_lat[item]
                new_rows.append(row)
        self._place_items(new_rows)
        U = np.array(U, dtype=np.float64)
        if len(rows):
            self._steps_vector(U, uidx, rows, ys, self._lr, self.l2)
            self._stepped(rows)
        return U

    def _place_items(self, rows: list[int]) -> None:
        """Move the new latents of item ``rows`` into the factor matrix (River keeping views of them)."""
        if not rows:
            return
        ids, i_lat = self._row_ids, self.model.i_latents
        vectors = [i_lat[ids[row]] for row in rows]
        self._grow_items(max(rows) + 1)
        F = self._F
        for row, vector in zip(rows, vectors):
            F[row] = vector
            i_lat[ids[row]] = F[row]

    def _grow_items(self, n: int) -> None:
        if len(self._F) >= n:
            return
        self._F = F = grow_to(self._F, n)
        i_lat = self.model.i_latents
        for row, item in self._row_ids.items():
            if item in i_lat:
                i_lat[item] = F[row]

    def _add_users(self, users: list) -> None:
        """Give ``users`` (fresh latents) the next rows of the user matrix."""
        u_lat, uix = self.model.u_latents, self._uix
        vectors = [u_lat[user] for user in users]
        first = self._n_users
        self._n_users += len(users)
        if len(self._U) < self._n_users:
            self._U = U = grow_to(self._U, self._n_users)
            for user, i in uix.items():
                if i < first:
                    u_lat[user] = U[i]
        U = self._U
        for i, (user, vector) in enumerate(zip(users, vectors), first):
            U[i] = vector
            u_lat[user] = U[i]
            uix[user] = i

    def _link(self) -> None:
        """Factor matrices from River's latents, which then become views into them."""
        u_lat, i_lat = self.model.u_latents, self.model.i_latents
        self._U = np.zeros((0, self.n_factors))
        self._uix: dict = {}
        self._n_users = 0
        self._add_users(list(u_lat))
        F = self._F
        for row, item in self._row_ids.items():
            if item in i_lat and row < len(F):
                F[row] = i_lat[item]
                i_lat[item] = F[row]

    def _steps_vector(self, U: np.ndarray, uidx: np.ndarray, rows: np.ndarray, ys: np.ndarray, lr: float,
                      l2: float) -> None:
        # Each user's steps stay in order (round k holds every user's k-th
        # queued step), so a user's vector moves exactly as in River. An item
        # met by several users in one round takes the sum of their steps, all
        # computed from its value at the start of the round (Hogwild-style
        # parallel SGD): hot items would otherwise serialise the whole batch.
        F = self._F
        clip = self.model.clip_gradient
        n = len(uidx)
        # Round of each step: how many steps of the same user precede it.
        by_user = np.argsort(uidx, kind="stable")
        su = uidx[by_user]
        first = np.flatnonzero(np.concatenate(([True], su[1:] != su[:-1])))
        rounds = np.empty(n, dtype=np.int64)
        rounds[by_user] = np.arange(n) - np.repeat(first, np.diff(np.append(first, n)))
        order = np.argsort(rounds, kind="stable")
        bounds = np.flatnonzero(np.diff(rounds[order])) + 1
        # np.add.at on the flat view: the same additions, in the same order, as on rows.
        flat, k = F.reshape(-1), F.shape[1]
        cols = np.arange(k)
        for sel in np.split(order, bounds):
            ui, ri = uidx[sel], rows[sel]
            u, v = U[ui], F[ri]
            g = 2.0 * (np.einsum("ij,ij->i", u, v) - ys[sel])
            if clip < 1e12:
                np.clip(g, -clip, clip, out=g)
            g = g[:, None]
            U[ui] = u - lr * (g * v + l2 * u)
            if len(ri) < 32:
                np.add.at(F, ri, -lr * (g * u + l2 * v))
            else:
                np.add.at(flat, (ri[:, None] * k + cols).ravel(), (-lr * (g * u + l2 * v)).ravel())

    def changed_rows(self) -> np.ndarray | None:
        """Item rows whose factors changed since the previous call (``None`` the first time, or
        when too much changed: the caller must reread every row). Transient, never serialised."""
        changed = self._changed
        self._changed = []
        if changed is None:
            return None
        return unique_sorted(np.concatenate(changed)) if changed else np.zeros(0, dtype=np.int64)

    @property
    def item_factors(self) -> np.ndarray:
        """Item factors by catalogue row, one row per item seen (River's ``i_latents`` are views
        of its rows; read only)."""
        return self._F

    def forget_user(self, user: str) -> None:
        self.forget_users({user})

    def forget_users(self, users: Collection[str]) -> None:
        """Drop these users' factors and the steps queued for them (one pass over the queue)."""
        self._drop_steps(users)
        u_lat, uix, U = self.model.u_latents, self._uix, self._U
        for user in users:
            u_lat.pop(user, None)
            i = uix.pop(user, None)
            if i is not None:
                U[i] = 0.0  # the row stays unused ...
        if self._n_users > 2 * len(uix) + 1024:  # ... until unused rows are the majority: compact
            self._link()

    def set_user_vector(self, user: str, vector: np.ndarray | None,
                        steps: Sequence[tuple[int, str, float]] = ()) -> None:
        """Replace ``user``'s factors by ``vector`` (``None``: none yet) and their queued steps by
        ``steps`` (``(row, item id, target)``). No random draw: the initialiser's stream is left
        as it is."""
        if vector is None:
            self.forget_user(user)
        else:
            self._drop_steps({user})
            i = self._uix.get(user)
            if i is not None:
                self._U[i] = vector  # River's latent is a view of this row
            else:
                self.model.u_latents[user] = np.array(vector, dtype=np.float64)
                self._add_users([user])
        for row, item_id, target in steps:
            if row not in self._row_ids:  # an item this model has not learned yet
                self._row_ids[row] = item_id
            self._pend_u.append(user)
            self._pend_r.append(row)
            self._pend_y.append(target)

    def queued_users(self) -> frozenset[str]:
        """Users with SGD steps queued."""
        return frozenset(self._pend_u)

    def queued_steps(self, users: Container[str]) -> dict[str, list[tuple[int, float]]]:
        """The queued SGD steps of ``users`` that have some, in order: ``(row, target)`` (one pass)."""
        out: dict[str, list[tuple[int, float]]] = {}
        for u, r, y in zip(self._pend_u, self._pend_r, self._pend_y):
            if u in users:
                steps = out.get(u)
                if steps is None:
                    steps = out[u] = []
                steps.append((r, y))
        return out

    def _drop_steps(self, users: Container[str]) -> None:
        keep = [i for i, u in enumerate(self._pend_u) if u not in users]
        if len(keep) < len(self._pend_u):
            self._pend_u = [self._pend_u[i] for i in keep]
            self._pend_r = [self._pend_r[i] for i in keep]
            self._pend_y = [self._pend_y[i] for i in keep]

    # -- reading (never mutates) ------------------------------------------

    def user_factors(self, users: Sequence[str]) -> np.ndarray:
        """Factor vectors of ``users``, one row each (a new array; zeros for users without factors).

        >>> mf = ImplicitMF(n_factors=2, seed=1, block_size=1)
        >>> _ = mf.learn_one("ann", "a", 0, 1.0)
        >>> U = mf.user_factors(["ann", "zoe"])
        >>> U.shape, bool(U[0].any()), U[1].tolist()
        ((2, 2), True, [0.0, 0.0])
        """
        get = self._uix.get  # the users' rows of the user matrix (River's latents are views of them)
        at = np.array([get(user, -1) for user in users], dtype=np.int64)
        U = self._U.take(np.maximum(at, 0), axis=0) if len(self._U) else np.zeros((len(at), self.n_factors))
        U[at < 0] = 0.0
        return U

    def user_vector(self, user: str) -> np.ndarray | None:
        return self.model.u_latents[user] if user in self.model.u_latents else None

    def score(self, user: str, n_items: int) -> np.ndarray | None:
        """``item_factors @ user_factors`` over the catalogue, ``None`` if the user is unknown."""
        u = self.user_vector(user)
        if u is None:
            return None
        out = np.zeros(n_items)
        m = min(n_items, len(self._F))
        out[:m] = self._F[:m] @ u
        return out

    def predict_one(self, user: str, item_id: str) -> float:
        u = self.user_vector(user)
        if u is None or item_id not in self.model.i_latents:
            return 0.0
        return float(np.dot(u, self.model.i_latents[item_id]))

    def __getstate__(self):
        state = {}
        for key, value in self.__dict__.items():
            if key in ("_changed", "_U", "_uix", "_n_users", "_pend_r", "_pend_y"):
                continue  # derived (River's latents are the state), or ...
            if key == "_pend_u":  # ... saved as the list of (user, row, target) steps it always was
                key, value = "_pending", list(zip(self._pend_u, self._pend_r, self._pend_y))
            state[key] = value
        n = (max(self._row_ids) + 1) if self._row_ids else 0
        state["_F"] = self._F[:n].copy()
        state["_recent"] = np.asarray(self._recent, dtype=np.int64)
        # River's latents as two matrices and their keys: one pickled array per
        # user and item cost ~4 us each (150 ms at 40k), a matrix ~nothing.
        model = state["model"] = copy.copy(self.model)
        for side in ("u_latents", "i_latents"):
            latents = getattr(model, side)
            setattr(model, side, collections.defaultdict(latents.default_factory))
            vectors = np.array(list(latents.values()), dtype=np.float64).reshape(len(latents), self.n_factors)
            state[f"_packed_{side}"] = (list(latents), vectors)
        return state

    def __setstate__(self, state):
        if "_factors" in state:  # checkpoints written before steps were queued
            state["_F"] = state.pop("_factors")
        state.setdefault("_pending", [])
        state.setdefault("block_size", 1)
        state.setdefault("deferred", False)
        state.setdefault("_lr", float(state["lr"]))
        state.setdefault("_rand", [])
        state["_changed"] = None
        state["_recent"] = [int(r) for r in state["_recent"]][: state["buffer_size"]]
        for side in ("u_latents", "i_latents"):  # (checkpoints before them hold River's dicts as they are)
            if f"_packed_{side}" in state:
                keys, vectors = state.pop(f"_packed_{side}")
                getattr(state["model"], side).update(zip(keys, vectors))
        # Interned keys, as pickle's default BUILD does, in the order of a
        # live object's attributes: byte-identical re-dumps.
        for key, value in state.items():
            if key == "_pending":
                self._pend_u = [step[0] for step in value]
                self._pend_r = [int(step[1]) for step in value]
                self._pend_y = [float(step[2]) for step in value]
            else:
                self.__dict__[sys.intern(key)] = value
        self._link()
