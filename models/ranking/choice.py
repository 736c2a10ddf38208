"""An online conditional-logit choice model: which of the candidates shown does a customer pick next.

The ranker's second stage (:class:`~models.ranking.hybrid.HybridRanker`)
scores each candidate with ``w . x`` over a few features; this model learns
``w`` from the stream, one choice at a time, by maximising the likelihood
of the chosen candidate under a softmax over all candidates (McFadden's
conditional logit, the listwise form of learning to rank). Unlike pairwise
updates against the top-ranked negatives, the gradient ``x_chosen - E_p[x]``
has no bias towards shrinking the weights when the chosen item is rarely on
top, so a weak signal keeps its weight.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SoftmaxChoice"]


class SoftmaxChoice:
    """Linear scores ``w . x`` learned online by AdaGrad on the softmax likelihood of each choice.

    Parameters
    ----------
    prior
        Starting weights, one per feature: the scores before anything is learned.
    lr
        AdaGrad step size (per-feature steps shrink as a feature's gradients add up, so
        features that are rarely non-zero keep learning at their own pace).
    l2
        Pull of the weights towards ``prior`` per update.
    g0
        AdaGrad's starting sum of squared gradients, per feature. A feature's first step is
        ``lr * g / sqrt(g0 + g**2)``: near ``g0 = 0`` it is ``lr`` in the gradient's direction
        whatever the gradient's size; a larger ``g0`` damps the first steps by their size.

    Examples
    --------
    >>> m = SoftmaxChoice(prior=[1.0, 0.0], lr=0.5)
    >>> X = np.array([[0.9, 0.0], [0.1, 1.0]])  # the second candidate has feature 1
    >>> for _ in range(20):
    ...     m.learn_one(X, 1)  # and is always the one chosen
    >>> scores = m.predict_many(X)
    >>> bool(scores[1] > scores[0]), m.n_updates
    (True, 20)
    >>> m.learn_one(X, None)  # a choice outside the candidates teaches nothing
    >>> m.n_updates
    20
    >>> a, b = SoftmaxChoice([0.0, 0.0], lr=0.5), SoftmaxChoice([0.0, 0.0], lr=0.5, g0=1.0)
    >>> a.learn_one(X, 1); b.learn_one(X, 1)
    >>> a.weights.round(3).tolist(), b.weights.round(3).tolist()  # g0 = 1: a first step by its size
    ([-0.5, 0.5], [-0.186, 0.224])
    """

    g0 = 1e-8  # the default; also what models pickled before ``g0`` was a parameter started from

    def __init__(self, prior, lr: float = 0.1, l2: float = 0.0, g0: float = g0):
        self.prior = tuple(float(v) for v in prior)
        self.lr = lr
        self.l2 = l2
        self.g0 = g0

    @property
    def weights(self) -> np.ndarray:
        """The current weights (``prior`` until the first update)."""
        w = self.__dict__.get("_w")
        return np.array(self.prior) if w is None else w

    @property
    def n_updates(self) -> int:
        return self.__dict__.get("_n", 0)

    def widened(self, prior) -> SoftmaxChoice:
        """This model over ``prior``'s longer feature list (features appended at the end): the
        weights learned so far are kept, the new features start at their prior."""
        prior = tuple(float(v) for v in prior)
        if len(prior) == len(self.prior):
            return self
        wide = SoftmaxChoice(prior, lr=self.lr, l2=self.l2, g0=self.g0)
        if "_w" in self.__dict__:
            k = len(self._w)
            wide._w = np.array(prior)
            wide._w[:k] = self._w
            wide._g2 = np.full(len(prior), self.g0)
            wide._g2[:k] = self._g2
            wide._n = self._n
        return wide

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """Scores of the rows of ``X`` (candidates x features).

        Summed feature by feature: a matrix product's summation order depends on the number of
        rows, and a candidate's score must not depend on which others are scored with it.
        """
        return _dot(X, self.weights)

    def learn_one(self, X: np.ndarray, chosen: int | None) -> None:
        """One choice: row ``chosen`` of the candidates ``X`` was picked (``None``: none of them)."""
        grad = self.gradient(X, chosen)
        if grad is not None:
            self.apply_gradient(grad)

    def gradient(self, X: np.ndarray, chosen: int | None) -> np.ndarray | None:
        """The step :meth:`learn_one` takes for this choice, from the current weights, without taking
        it (``None``: the choice teaches nothing). Several learners that apply the same gradients in
        the same order (:meth:`apply_gradient`) hold the same weights, whoever computed them."""
        if chosen is None or len(X) < 2:
            return None
        w = self.weights
        z = _dot(X, w)
        p = np.exp(z - z.max())
        p /= p.sum()
        return X[chosen] - p @ X - self.l2 * (w - np.array(self.prior))

    def apply_gradient(self, grad: np.ndarray) -> None:
        """Take one AdaGrad step along ``grad`` (:meth:`gradient`'s)."""
        if "_w" not in self.__dict__:
            self._w = np.array(self.prior)
            self._g2 = np.full(len(self.prior), self.g0)
            self._n = 0
        self._g2 += grad * grad
        self._w += self.lr * grad / np.sqrt(self._g2)
        self._n += 1


def _dot(X: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``X @ w`` with a fixed summation order per row."""
    out = np.zeros(len(X))
    for j, wj in enumerate(w.tolist()):
        out += X[:, j] * wj
    return out
