"""Implicit-feedback matrix factorisation on top of River's ``FunkMF``."""

from __future__ import annotations

import sys
from collections.abc import Container

import numpy as np
from river import optim, reco

from models.catalog import grow_to

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

    Item factors are mirrored in a numpy matrix indexed by catalogue row, so
    that scoring a user against the whole catalogue is one matrix-vector
    product; only rows touched by an update are copied.

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

    Examples
    --------
    >>> mf = ImplicitMF(n_factors=4, seed=1, block_size=1)
    >>> for _ in range(30):
    ...     mf.learn_one("ann", "a", 0, 1.0)
    ...     mf.learn_one("bob", "b", 1, 1.0)
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
    ):
        self.n_factors = n_factors
        self.lr = lr
        self.l2 = l2
        self.n_negatives = n_negatives
        self.buffer_size = buffer_size
        self.seed = seed
        self.block_size = max(1, int(block_size))
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
        self._pending: list[tuple[str, int, float]] = []  # queued SGD steps (user, row, target)
        self._row_ids: dict[int, str] = {}
        self._recent: list[int] = []  # ring buffer of recent item rows
        self._rand: list[float] = []  # uniform draws for negative sampling, drawn in blocks
        self._n_seen = 0

    # -- learning ---------------------------------------------------------

    def learn_one(self, user: str, item_id: str, row: int, target: float = 1.0, seen: Container[int] = ()) -> None:
        """Learn one positive and ``n_negatives`` sampled negatives.

        The negatives are drawn now (from the stream so far, skipping items in
        ``seen`` as it is now); the SGD steps themselves are queued and applied
        every ``block_size`` events, in one vectorised pass. Reads never
        apply them early, so what is learned does not depend on when (or how
        often) the model is read: a replay that reads after every event and a
        worker that reads after every micro-batch hold the same model.
        """
        if row not in self._row_ids:
            self._row_ids[row] = item_id
        pending = self._pending
        pending.append((user, row, target))
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
                    pending.append((user, neg, 0.0))
        if len(recent) < self.buffer_size:
            recent.append(row)
        else:
            recent[n_seen % self.buffer_size] = row
        self._n_seen = n_seen + 1
        if self._n_seen % self.block_size == 0:
            self._flush()

    def _flush(self) -> None:
        """Apply the queued SGD steps, exactly as River's ``FunkMF.learn_one`` would one after the other."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        model = self.model
        u_lat, i_lat, ids = model.u_latents, model.i_latents, self._row_ids
        # Latents are created in River's order (user, then item, per step) by
        # River's own initialiser, so random draws match a sequential run.
        new_rows = []
        for user, row, _ in pending:
            u_lat[user]
            item = ids[row]
            if item not in i_lat:
                i_lat[item]
                new_rows.append(row)
        if new_rows:
            self._F = grow_to(self._F, max(new_rows) + 1)
            for row in new_rows:
                self._F[row] = i_lat[ids[row]]
        self._steps_vector(pending, self._lr, self.l2)
        n = len(pending)
        model.u_optimizer.n_iterations += n
        model.i_optimizer.n_iterations += n

    def _steps_vector(self, pending, lr: float, l2: float) -> None:
        # Each user's steps stay in order (round k holds every user's k-th
        # queued step), so a user's vector moves exactly as in River. An item
        # met by several users in one round takes the sum of their steps, all
        # computed from its value at the start of the round (Hogwild-style
        # parallel SGD): hot items would otherwise serialise the whole batch.
        u_lat, i_lat, ids, F = self.model.u_latents, self.model.i_latents, self._row_ids, self._F
        clip = self.model.clip_gradient
        user_index: dict[str, int] = {}
        counts: list[int] = []
        n = len(pending)
        uidx = np.empty(n, dtype=np.int64)
        rounds = np.empty(n, dtype=np.int64)
        for k, (user, _, _) in enumerate(pending):
            ui = user_index.get(user)
            if ui is None:
                ui = user_index[user] = len(counts)
                counts.append(0)
            rounds[k] = counts[ui]
            counts[ui] += 1
            uidx[k] = ui
        rows = np.fromiter((p[1] for p in pending), dtype=np.int64, count=n)
        ys = np.fromiter((p[2] for p in pending), dtype=np.float64, count=n)
        users = list(user_index)
        U = np.array([u_lat[u] for u in users])
        order = np.argsort(rounds, kind="stable")
        bounds = np.flatnonzero(np.diff(rounds[order])) + 1
        for sel in np.split(order, bounds):
            ui, ri = uidx[sel], rows[sel]
            u, v = U[ui], F[ri]
            g = 2.0 * (np.einsum("ij,ij->i", u, v) - ys[sel])
            if clip < 1e12:
                np.clip(g, -clip, clip, out=g)
            g = g[:, None]
            U[ui] = u - lr * (g * v + l2 * u)
            np.add.at(F, ri, -lr * (g * u + l2 * v))
        for k, user in enumerate(users):
            u_lat[user][:] = U[k]
        for row in set(rows.tolist()):
            i_lat[ids[row]][:] = F[row]

    @property
    def _factors(self) -> np.ndarray:
        """Item factors by catalogue row (a mirror of River's ``i_latents``)."""
        return self._F

    def forget_user(self, user: str) -> None:
        self._pending = [step for step in self._pending if step[0] != user]
        self.model.u_latents.pop(user, None)

    # -- reading (never mutates) ------------------------------------------

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

    def scores_of(self, user_vec: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``item_factors[rows] @ user_vec`` (rows must be < ``len(item factors)``): the same
        arithmetic as :meth:`score`, for a subset of the catalogue."""
        return self._F[rows] @ user_vec

    def predict_one(self, user: str, item_id: str) -> float:
        u = self.user_vector(user)
        if u is None or item_id not in self.model.i_latents:
            return 0.0
        return float(np.dot(u, self.model.i_latents[item_id]))

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_pending"] = list(self._pending)
        n = (max(self._row_ids) + 1) if self._row_ids else 0
        state["_F"] = self._F[:n].copy()
        state["_recent"] = np.asarray(self._recent, dtype=np.int64)
        return state

    def __setstate__(self, state):
        if "_factors" in state:  # checkpoints written before steps were queued
            state["_F"] = state.pop("_factors")
        state.setdefault("_pending", [])
        state.setdefault("block_size", 1)
        state.setdefault("_lr", float(state["lr"]))
        state.setdefault("_rand", [])
        state["_recent"] = [int(r) for r in state["_recent"]][: state["buffer_size"]]
        # Interned keys, as pickle's default BUILD does: byte-identical re-dumps.
        self.__dict__.update({sys.intern(k): v for k, v in state.items()})
