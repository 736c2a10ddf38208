"""Online customer segmentation with River.

:class:`CustomerSegments` wraps ``StandardScaler | KMeans`` behind a
River-style ``learn_one`` / ``predict_one`` interface, with two guarantees the
raw River objects do not give:

* ``predict_one`` never changes the model.  River's ``KMeans`` keeps its
  centres in ``defaultdict``s that draw a random coordinate (advancing the
  RNG) the first time a feature is looked up, and ``StandardScaler`` inserts
  zero statistics the same way; a predict on an unseen feature would
  therefore silently alter every later assignment.
* runs are reproducible from the seed across processes.  River initialises a
  centre coordinate the first time it iterates a feature, in ``set`` order,
  which depends on ``PYTHONHASHSEED``; here new features are initialised in
  sorted order before River sees them.

Examples
--------
>>> seg = CustomerSegments(n_segments=4, seed=1)
>>> seg.predict_one({"spend": 5.0})  # nothing learned yet
0
>>> for i in range(50):
...     seg.learn_one({"spend": 0.1 * (i % 5), "visits": 10.0})
...     seg.learn_one({"spend": 9.0 + 0.1 * (i % 5), "visits": 1.0})
>>> seg.predict_one({"spend": 0.2, "visits": 10.0}) != seg.predict_one({"spend": 9.2, "visits": 1.0})
True
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence

import numpy as np
from river import base, cluster, compose, preprocessing

__all__ = ["CustomerSegments"]

_FORMAT_VERSION = 1


class CustomerSegments(base.Clusterer):
    """Streaming customer segments: online standardisation + incremental k-means.

    Parameters
    ----------
    n_segments
        Number of k-means centres (segment ids are ``0 .. n_segments - 1``).
        Some may stay empty if the data has fewer natural groups.
    halflife
        How far a centre moves towards each point assigned to it (River
        ``KMeans.halflife``); smaller is smoother but adapts more slowly.
    seed
        Seeds the centre initialisation; equal seeds and equal inputs give
        equal segments.

    Notes
    -----
    Feature keys are frozen at the first ``learn_one`` (as produced by
    ``models.profile.features``): later unseen keys are ignored, and missing
    known keys are treated as their running mean.

    Examples
    --------
    >>> a = CustomerSegments(n_segments=3, seed=7)
    >>> b = CustomerSegments.loads(a.dumps())
    >>> a.learn_one({"x": 1.0}); b.learn_one({"x": 1.0})
    >>> a.dumps() == b.dumps()
    True
    """

    def __init__(self, n_segments: int = 6, halflife: float = 0.5, seed: int = 42):
        self.n_segments = n_segments
        self.halflife = halflife
        self.seed = seed
        self._init_state()

    def _init_state(self) -> None:
        if self.n_segments < 1:
            raise ValueError(f"n_segments must be >= 1, got {self.n_segments}")
        self._scaler = preprocessing.StandardScaler()
        self._kmeans = cluster.KMeans(
            n_clusters=self.n_segments, halflife=self.halflife, seed=self.seed
        )
        # Kept as a Pipeline for introspection (`seg.pipeline`); learn/predict
        # call the steps directly so `compose.learn_during_predict()` elsewhere
        # in the process cannot make predictions learn.
        self._pipeline = compose.Pipeline(self._scaler, self._kmeans)
        self._keys: tuple[str, ...] = ()
        self._n_learned = 0

    @property
    def pipeline(self) -> compose.Pipeline:
        """The underlying River pipeline (read-only use, please)."""
        return self._pipeline

    @property
    def n_learned(self) -> int:
        """Number of observations learned so far."""
        return self._n_learned

    def _clean(self, x: dict) -> dict[str, float]:
        # Only known keys, in a fixed order; non-finite values would poison a
        # centre forever, so they fall back to the running mean (0 after scaling).
        means = self._scaler.means
        out = {}
        for k in self._keys:
            v = x.get(k)
            if v is None or not math.isfinite(v):
                v = means[k]
            out[k] = float(v)
        return out

    def learn_one(self, x: dict) -> None:
        """Update the scaler and move the closest centre towards ``x``.

        Non-finite values and (after the first call) unseen keys are ignored.
        """
        if not self._keys:
            keys = tuple(sorted(k for k, v in x.items() if isinstance(v, (int, float))))
            if not keys:
                return
            self._keys = keys
            # Draw every centre coordinate now, in a deterministic order,
            # instead of letting River draw them in hash-dependent set order.
            for center in self._kmeans.centers.values():
                for k in keys:
                    center[k]
        xc = self._clean(x)
        self._scaler.learn_one(xc)
        self._kmeans.learn_one(self._scaler.transform_one(xc))
        self._n_learned += 1

    def predict_one(self, x: dict) -> int:
        """Segment id of ``x``; ``0`` before anything has been learned.

        Never mutates the model.
        """
        if not self._n_learned:
            return 0
        xt = self._scaler.transform_one(self._clean(x))
        # Same metric as River's KMeans, but in a fixed key order so ties and
        # rounding do not depend on the interpreter's hash seed.
        p = self._kmeans.p
        best, best_d = 0, math.inf
        for c, center in self._kmeans.centers.items():
            d = 0.0
            for k, v in xt.items():
                d += abs(center[k] - v) ** p
            if d < best_d:
                best, best_d = c, d
        return best

    def learn_predict_many(self, X: np.ndarray, keys: Sequence[str]) -> list[int]:
        """Learn the rows of ``X`` one after the other; the segment of each row right after learning it.

        The same as ``learn_one(x)`` then ``predict_one(x)`` for each row ``x``
        (a dict of ``keys`` to the row's values), in order, but vectorised: the
        running means and variances of all rows come from prefix sums (equal
        to the sequential updates up to rounding), and only the k-means step,
        which depends on the previous row's move, loops in Python. Right after
        learning ``x``, ``predict_one(x)`` is the centre that just moved towards
        it, so no second pass is needed.

        Examples
        --------
        >>> import numpy as np
        >>> a, b = CustomerSegments(n_segments=3, seed=1), CustomerSegments(n_segments=3, seed=1)
        >>> X = np.array([[0.0, 10.0], [9.0, 1.0], [0.2, 9.5], [9.1, 1.2]] * 5)
        >>> one = []
        >>> for row in X:
        ...     a.learn_one({"spend": row[0], "visits": row[1]})
        ...     one.append(a.predict_one({"spend": row[0], "visits": row[1]}))
        >>> b.learn_predict_many(X, ["spend", "visits"]) == one
        True
        """
        X = np.asarray(X, dtype=np.float64)
        keys = list(keys)
        if not len(X):
            return []
        if not self._keys:
            if not all(isinstance(k, str) for k in keys):
                return self._learn_predict_rows(X, keys)
            self.learn_one(dict(zip(keys, X[0].tolist())))
            return [self.predict_one(dict(zip(keys, X[0].tolist())))] + self.learn_predict_many(X[1:], keys)
        if set(keys) != set(self._keys) or len(keys) != len(self._keys) or not np.isfinite(X).all():
            return self._learn_predict_rows(X, keys)  # the general path handles missing and non-finite values
        X = X[:, [keys.index(k) for k in self._keys]]
        scaler, kmeans = self._scaler, self._kmeans
        counts, means, vars_ = scaler.counts, scaler.means, scaler.vars
        n0 = np.array([counts[k] for k in self._keys], dtype=np.float64)
        m0 = np.array([means[k] for k in self._keys])
        v0 = np.array([vars_[k] for k in self._keys])
        # Running mean and (population) variance after each row, shifted by
        # the mean so far (or the first row) to keep the sums well conditioned.
        K = np.where(n0 > 0, m0, X[0])
        Y = X - K
        n = n0 + np.arange(1, len(X) + 1)[:, None]
        D = n0 * (m0 - K) + np.cumsum(Y, axis=0)  # n * (mean - K)
        M = K + D / n
        M2 = v0 * n0 + n0 * (m0 - K) ** 2 + np.cumsum(Y * Y, axis=0) - D * D / n
        V = np.maximum(M2, 0.0) / n
        Z = np.zeros_like(X)
        ok = V > 0
        Z[ok] = (X[ok] - M[ok]) / np.sqrt(V[ok])
        for j, k in enumerate(self._keys):
            counts[k] = int(n0[j]) + len(X)
            means[k] = float(M[-1, j])
            vars_[k] = float(V[-1, j])
        # Sequential k-means: each row moves its closest centre.
        h, p = kmeans.halflife, kmeans.p
        ids = list(kmeans.centers)
        centers = [[kmeans.centers[c][k] for k in self._keys] for c in ids]
        dist = math.dist if p == 2 else (lambda c, z: sum(abs(a - b) ** p for a, b in zip(c, z)))
        out = []
        for z in Z.tolist():
            best, best_d = 0, dist(centers[0], z)
            for c in range(1, len(centers)):
                d = dist(centers[c], z)
                if d < best_d:
                    best, best_d = c, d
            centers[best] = [a + h * (b - a) for a, b in zip(centers[best], z)]
            out.append(ids[best])
        for c, values in zip(ids, centers):
            center = kmeans.centers[c]
            for k, v in zip(self._keys, values):
                center[k] = v
        self._n_learned += len(X)
        return out

    def _learn_predict_rows(self, X: np.ndarray, keys: list) -> list[int]:
        out = []
        for row in X.tolist():
            x = dict(zip(keys, row))
            self.learn_one(x)
            out.append(self.predict_one(x))
        return out

    def dumps(self) -> bytes:
        """Serialise the whole model (pickle).

        Only :meth:`loads` what this service wrote itself: unpickling runs code.
        """
        return pickle.dumps(
            {
                "version": _FORMAT_VERSION,
                "params": self._get_params(),
                "scaler": self._scaler,
                "kmeans": self._kmeans,
                "keys": self._keys,
                "n_learned": self._n_learned,
            },
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    @classmethod
    def loads(cls, b: bytes) -> "CustomerSegments":
        """Rebuild a model from :meth:`dumps` output (a new instance)."""
        state = pickle.loads(b)
        if not isinstance(state, dict) or state.get("version") != _FORMAT_VERSION:
            raise ValueError("not a CustomerSegments snapshot (or unsupported version)")
        obj = cls(**state["params"])
        obj._scaler = state["scaler"]
        obj._kmeans = state["kmeans"]
        obj._pipeline = compose.Pipeline(obj._scaler, obj._kmeans)
        obj._keys = tuple(state["keys"])
        obj._n_learned = int(state["n_learned"])
        return obj

    @classmethod
    def _unit_test_params(cls):
        yield {"n_segments": 3, "seed": 1}
