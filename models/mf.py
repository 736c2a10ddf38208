"""Implicit-feedback matrix factorisation on top of River's ``FunkMF``."""

from __future__ import annotations

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
    seed
        Seeds factor initialisation and negative sampling.

    Examples
    --------
    >>> mf = ImplicitMF(n_factors=4, seed=1)
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
    ):
        self.n_factors = n_factors
        self.lr = lr
        self.l2 = l2
        self.n_negatives = n_negatives
        self.buffer_size = buffer_size
        self.seed = seed
        self.model = reco.FunkMF(
            n_factors=n_factors,
            optimizer=optim.SGD(lr),
            loss=optim.losses.Squared(),
            l2=l2,
            initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed),
            seed=seed,
        )
        self._rng = np.random.default_rng(seed)
        self._factors = np.zeros((0, n_factors))  # mirror of model.i_latents by row
        self._row_ids: dict[int, str] = {}
        self._recent = np.zeros(0, dtype=np.int64)  # ring buffer of recent item rows
        self._n_seen = 0

    # -- learning ---------------------------------------------------------

    def _fit(self, user: str, item_id: str, row: int, target: float) -> None:
        self.model.learn_one(user, item_id, target)
        self._factors = grow_to(self._factors, row + 1)
        self._factors[row] = self.model.i_latents[item_id]
        self._row_ids[row] = item_id

    def learn_one(self, user: str, item_id: str, row: int, target: float = 1.0, seen: Container[int] = ()) -> None:
        """Learn one positive and ``n_negatives`` sampled negatives."""
        self._fit(user, item_id, row, target)
        n_buf = min(self._n_seen, self.buffer_size)
        if n_buf:
            for neg in self._recent[self._rng.integers(0, n_buf, size=self.n_negatives)]:
                neg = int(neg)
                if neg != row and neg not in seen:
                    self._fit(user, self._row_ids[neg], neg, 0.0)
        if len(self._recent) < self.buffer_size:
            self._recent = grow_to(self._recent, min(self.buffer_size, self._n_seen + 1))
        self._recent[self._n_seen % self.buffer_size] = row
        self._n_seen += 1

    def forget_user(self, user: str) -> None:
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
        m = min(n_items, len(self._factors))
        out[:m] = self._factors[:m] @ u
        return out

    def predict_one(self, user: str, item_id: str) -> float:
        u = self.user_vector(user)
        if u is None or item_id not in self.model.i_latents:
            return 0.0
        return float(np.dot(u, self.model.i_latents[item_id]))

    def __getstate__(self):
        state = self.__dict__.copy()
        n = (max(self._row_ids) + 1) if self._row_ids else 0
        state["_factors"] = self._factors[:n].copy()
        state["_recent"] = self._recent[: min(self._n_seen, self.buffer_size)].copy()
        return state
