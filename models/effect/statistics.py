"""The statistics of the effect report: intervals, a two-proportion test, the sample-ratio check.

Standard library only (``math``): the report must not pull in a scientific
stack for three formulas. Undefined results (no trials, a control rate of
zero) are ``nan``, which the report shows as ``null``.

* :func:`wilson_interval`: Wilson score interval for a proportion. Chosen
  over the normal (Wald) interval because shop rates are small (a few per
  cent) and the Wald interval is then too narrow and can leave [0, 1].
* :func:`two_proportion_p_value`: two-sided, pooled two-proportion z-test.
  Fixed horizon: valid when read once, at the sample size planned before the
  experiment started; looking at it repeatedly and stopping at the first
  small value inflates the false-positive rate well beyond the nominal level.
* :func:`sample_size_per_arm`: the customers each arm needs before the test
  is read, for a given baseline rate, smallest lift worth detecting, level
  and power (the "planned sample size" of a fixed-horizon test).
* :func:`srm_p_value`: chi-square goodness of fit of observed arm sizes
  against the configured shares (sample-ratio mismatch), through
  :func:`chi2_sf` and the regularised upper incomplete gamma function
  :func:`gammaincc` (series and continued fraction, as in Numerical Recipes).

Examples
--------
>>> lo, hi = wilson_interval(30, 1000)
>>> round(lo, 4), round(hi, 4)
(0.0211, 0.0425)
>>> round(chi2_sf(3.841458820694124, 1), 6)
0.05
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

__all__ = [
    "Z95",
    "wilson_interval",
    "two_proportion_p_value",
    "relative_lift",
    "gammaincc",
    "chi2_sf",
    "srm_p_value",
    "sample_size_per_arm",
]

#: The standard normal quantile of 0.975: a two-sided 95 % interval.
Z95 = 1.959963984540054

_EPS = 1e-15
_TINY = 1e-300
_MAX_ITER = 10_000


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of ``successes / trials`` (95 % by default); ``(0, 1)`` without trials.

    Examples
    --------
    >>> [round(b, 4) for b in wilson_interval(0, 10)]
    [0.0, 0.2775]
    >>> [round(b, 4) for b in wilson_interval(5, 10)]
    [0.2366, 0.7634]
    >>> wilson_interval(0, 0)
    (0.0, 1.0)
    """
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return (0.0, 1.0)
    n = float(trials)
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    # The bounds are exactly 0 at k = 0 and 1 at k = n (and enclose k/n): say so rather than round near them.
    low = 0.0 if successes == 0 else max(0.0, min(p, centre - half))
    high = 1.0 if successes == trials else min(1.0, max(p, centre + half))
    return (low, high)


def two_proportion_p_value(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test of ``x1/n1`` against ``x2/n2``.

    ``nan`` when either sample is empty; 1.0 when both rates are 0 or both 1
    (no variance, no evidence of a difference). Fixed horizon: see the module
    docstring.

    Examples
    --------
    >>> round(two_proportion_p_value(250, 1000, 200, 1000), 5)
    0.00742
    >>> two_proportion_p_value(0, 10, 0, 10), math.isnan(two_proportion_p_value(1, 0, 1, 10))
    (1.0, True)
    """
    if n1 <= 0 or n2 <= 0:
        return math.nan
    if not (0 <= x1 <= n1 and 0 <= x2 <= n2):
        raise ValueError(f"need 0 <= x <= n, got {x1}/{n1} and {x2}/{n2}")
    pooled = (x1 + x2) / (n1 + n2)
    var = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)
    if var <= 0.0:
        return 1.0
    z = (x1 / n1 - x2 / n2) / math.sqrt(var)
    return math.erfc(abs(z) / math.sqrt(2.0))


def relative_lift(treatment: float, control: float) -> float:
    """``treatment / control - 1``; ``nan`` if the control is 0 or either value is ``nan``.

    Examples
    --------
    >>> round(relative_lift(0.06, 0.05), 6), math.isnan(relative_lift(0.1, 0.0))
    (0.2, True)
    """
    if math.isnan(treatment) or math.isnan(control) or control == 0:
        return math.nan
    return treatment / control - 1.0


def _log_prefactor(a: float, x: float) -> float:
    return -x + a * math.log(x) - math.lgamma(a)


def _lower_series(a: float, x: float) -> float:
    """P(a, x) by its power series (converges fast for x < a + 1)."""
    ap, term = a, 1.0 / a
    total = term
    for _ in range(_MAX_ITER):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(_log_prefactor(a, x))


def _upper_fraction(a: float, x: float) -> float:
    """Q(a, x) by its continued fraction, modified Lentz (converges fast for x >= a + 1)."""
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITER):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        step = d * c
        h *= step
        if abs(step - 1.0) < _EPS:
            break
    return math.exp(_log_prefactor(a, x)) * h


def gammaincc(a: float, x: float) -> float:
    """The regularised upper incomplete gamma function Q(a, x) = Γ(a, x) / Γ(a).

    Examples
    --------
    >>> round(gammaincc(1.0, 2.0), 12) == round(math.exp(-2.0), 12)
    True
    >>> gammaincc(3.0, 0.0)
    1.0
    """
    if a <= 0 or x < 0:
        raise ValueError(f"need a > 0 and x >= 0, got a={a}, x={x}")
    if x == 0:
        return 1.0
    if x < a + 1.0:
        return min(1.0, max(0.0, 1.0 - _lower_series(a, x)))
    return min(1.0, max(0.0, _upper_fraction(a, x)))


def chi2_sf(x: float, dof: int) -> float:
    """Survival function of the chi-square distribution: P(X >= x) with ``dof`` degrees of freedom.

    Examples
    --------
    >>> [round(chi2_sf(x, k), 4) for x, k in ((3.84, 1), (5.99, 2), (11.07, 5))]
    [0.05, 0.05, 0.05]
    """
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")
    if x <= 0:
        return 1.0
    return gammaincc(dof / 2.0, x / 2.0)


def srm_p_value(observed: Sequence[int], shares: Sequence[float]) -> float:
    """Sample-ratio mismatch: chi-square goodness-of-fit p-value of arm sizes against their shares.

    ``nan`` with fewer than two arms or nobody observed. A very small value
    (the usual alarm is below 0.001) means the split is not the configured
    one: assignment, exposure or data loss differs between arms, and no other
    number of the report can be trusted.

    Examples
    --------
    >>> round(srm_p_value([5000, 5000], [0.5, 0.5]), 6)
    1.0
    >>> srm_p_value([5300, 4700], [0.5, 0.5]) < 0.001
    True
    """
    if len(observed) != len(shares):
        raise ValueError(f"{len(observed)} counts for {len(shares)} shares")
    total = sum(observed)
    if len(observed) < 2 or total <= 0:
        return math.nan
    norm = math.fsum(shares)
    stat = 0.0
    for o, s in zip(observed, shares):
        expected = total * s / norm
        if expected <= 0:
            raise ValueError("every share must be positive")
        stat += (o - expected) ** 2 / expected
    return chi2_sf(stat, len(observed) - 1)


def sample_size_per_arm(base_rate: float, relative_lift: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Customers per arm for the two-sided two-proportion test to detect ``base_rate * (1 + relative_lift)``.

    The usual normal approximation, ``(z_{1-alpha/2} + z_power)^2 (p1 q1 + p2 q2) / (p1 - p2)^2``,
    rounded up. Fix it before the start and read the p-value once, when
    every arm has reached it.

    Examples
    --------
    >>> sample_size_per_arm(0.03, 0.10)  # 3 % conversion, +10 % relative, 5 % level, 80 % power
    53208
    """
    p2 = base_rate * (1.0 + relative_lift)
    if not (0 < base_rate < 1 and 0 < p2 < 1 and relative_lift != 0):
        raise ValueError(f"need 0 < base_rate < 1, 0 < base_rate * (1 + lift) < 1 and a non-zero lift, "
                         f"got {base_rate}, {relative_lift}")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"need 0 < alpha < 1 and 0 < power < 1, got {alpha}, {power}")
    normal = NormalDist()
    z = normal.inv_cdf(1.0 - alpha / 2.0) + normal.inv_cdf(power)
    variance = base_rate * (1.0 - base_rate) + p2 * (1.0 - p2)
    return math.ceil(z * z * variance / (p2 - base_rate) ** 2)
