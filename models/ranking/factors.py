"""MF factors quantised so that every MF score of the ranker is an exact integer dot product."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from models.catalog import grow_to
from models.mf import ImplicitMF


def _exact_bits(n_factors: int) -> int:
    """Bits of the quantised MF factors: a dot product of two such vectors is an exact float64 sum.

    >>> _exact_bits(16)
    24
    """
    return max(1, (52 - max(1, int(n_factors) - 1).bit_length()) // 2)


class _QuantisedFactors:
    """The item factors of an :class:`~models.mf.ImplicitMF` as integers times a power of two.

    Item factors are rounded to ``bits`` significant bits on one scale
    (``2 ** -f_exp``) for the whole catalogue, user vectors to as many bits on
    a scale of their own: every product of the two is an exact float64 sum,
    whatever its summation order, so scores do not depend on how users are
    batched or on the BLAS kernel used. A cache (never model state), kept up
    to date incrementally: only the rows whose factors changed are quantised
    again while the scale holds.

    Examples
    --------
    >>> mf = ImplicitMF(n_factors=4, seed=1, block_size=1)
    >>> _ = mf.learn_one("ann", "a", 0, 1.0)
    >>> q = _QuantisedFactors()
    >>> q.refresh(mf, n_items=2)
    >>> F = q.rows(np.array([0, 1]), n_items=2)
    >>> bool((F == np.rint(F)).all()), F[1].tolist()  # integers; row 1 has no factors yet
    (True, [0.0, 0.0, 0.0, 0.0])
    """

    def __init__(self):
        self.mf = None
        self.rowmax = np.zeros(0)  # largest |factor| of each item row
        self.Fq = np.zeros((1, 0))
        self.f_exp = 0
        self.bits = 24
        self.version = 0  # bumped whenever Fq changes

    def refresh(self, mf: ImplicitMF | None, n_items: int) -> None:
        """Bring the quantised factors up to date with ``mf`` (``None``: no MF)."""
        if mf is None:
            self.mf = None
            return
        changed = mf.changed_rows()
        if mf is not self.mf:
            changed = None
        self.mf = mf
        F = mf.item_factors
        self.bits = _exact_bits(F.shape[1])
        if changed is None:  # every row
            self.rowmax = np.abs(F).max(axis=1) if F.size else np.zeros(len(F))
        elif not len(changed) and len(self.rowmax) == len(F):
            return
        else:
            if len(self.rowmax) < len(F):
                self.rowmax = grow_to(self.rowmax, len(F))[: len(F)]
            self.rowmax[changed] = np.abs(F[changed]).max(axis=1)
        self.version += 1
        top = float(self.rowmax.max()) if len(self.rowmax) else 0.0
        f_exp = self.bits - math.frexp(top)[1]
        n = max(len(F), n_items)
        if changed is None or f_exp != self.f_exp or len(self.Fq) < len(F):
            # Rows without factors yet score 0: zero rows up to the catalogue size.
            Fq = np.zeros((n, F.shape[1]))
            Fq[: len(F)] = np.rint(np.ldexp(F, f_exp))
            self.Fq, self.f_exp = Fq, f_exp
        else:  # the same scale: only the rows that moved
            self.Fq[changed] = np.rint(np.ldexp(F[changed], f_exp))

    def rows(self, rows: np.ndarray, n_items: int) -> np.ndarray:
        """Quantised factors of item ``rows`` (a new array; zeros for rows without factors)."""
        if len(self.Fq) < n_items:
            self.Fq = grow_to(self.Fq, n_items)
        return self.Fq.take(rows, axis=0)

    def users(self, user_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Quantised user vectors (zeros for users without one) and the exponent turning
        ``Fq @ Uq`` products into MF scores."""
        k = self.Fq.shape[1]
        U = self.mf.user_factors(user_ids)
        top = np.abs(U).max(axis=1) if k else np.zeros(len(user_ids))
        e = self.bits - np.frexp(top)[1]
        Uq = np.rint(np.ldexp(U, e[:, None]))
        return Uq, -(e + self.f_exp)
