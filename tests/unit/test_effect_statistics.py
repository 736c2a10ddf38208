"""The report's statistics against known values and closed forms (models/effect/statistics.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.effect.statistics import (
    chi2_sf,
    gammaincc,
    relative_lift,
    sample_size_per_arm,
    srm_p_value,
    two_proportion_p_value,
    wilson_interval,
)


# Critical values of the chi-square distribution (tables): sf(x, k) = alpha.
@pytest.mark.parametrize(("x", "k", "alpha"), [
    (3.841458820694124, 1, 0.05),
    (5.991464547107979, 2, 0.05),
    (11.070497693516351, 5, 0.05),
    (6.634896601021214, 1, 0.01),
    (23.209251158954356, 10, 0.01),
    (10.827566170662733, 1, 0.001),
    (124.34211340400407, 100, 0.05),
    (0.003932140000019522, 1, 0.95),
])
def test_chi2_sf_at_table_values(x, k, alpha):
    assert chi2_sf(x, k) == pytest.approx(alpha, rel=1e-9)


def test_chi2_sf_at_the_rounded_values_of_the_brief():
    for x, k in ((3.84, 1), (5.99, 2), (11.07, 5)):
        assert chi2_sf(x, k) == pytest.approx(0.05, abs=2e-4)


def even_dof_sf(x: float, k: int) -> float:
    """Closed form for even k: exp(-x/2) * sum_{j < k/2} (x/2)^j / j!."""
    half = x / 2
    return math.exp(-half) * math.fsum(half**j / math.factorial(j) for j in range(k // 2))


def odd_dof_sf(x: float, k: int) -> float:
    """Closed forms for k = 1 and k = 3."""
    base = math.erfc(math.sqrt(x / 2))
    return base if k == 1 else base + math.sqrt(2 * x / math.pi) * math.exp(-x / 2)


@settings(max_examples=400, deadline=None, database=None)
@given(st.floats(0.0, 300.0), st.integers(1, 60))
def test_chi2_sf_matches_the_closed_form_for_even_dof(x, m):
    assert chi2_sf(x, 2 * m) == pytest.approx(even_dof_sf(x, 2 * m), rel=1e-9, abs=1e-15)


@settings(max_examples=400, deadline=None, database=None)
@given(st.floats(0.0, 300.0), st.sampled_from([1, 3]))
def test_chi2_sf_matches_the_closed_form_for_odd_dof(x, k):
    assert chi2_sf(x, k) == pytest.approx(odd_dof_sf(x, k), rel=1e-9, abs=1e-15)


def test_gammaincc_edges():
    assert gammaincc(2.5, 0.0) == 1.0
    assert gammaincc(0.5, 1e-300) == pytest.approx(1.0)
    assert gammaincc(1.0, 800.0) == 0.0  # exp(-800) underflows to 0, not an error
    for a, x in ((0, 1), (-1, 1), (1, -1)):
        with pytest.raises(ValueError):
            gammaincc(a, x)
    with pytest.raises(ValueError):
        chi2_sf(1.0, 0)


def test_wilson_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753279986288), rel=1e-9)
    assert wilson_interval(5, 10) == pytest.approx((0.23659309051257, 0.76340690948743), rel=1e-9)
    assert wilson_interval(10, 10) == pytest.approx((0.72246720013712, 1.0), rel=1e-9)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


@settings(max_examples=300, deadline=None, database=None)
@given(st.integers(0, 10_000), st.integers(1, 10_000))
def test_wilson_contains_the_rate_and_narrows_with_more_trials(k, n):
    k = min(k, n)
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    lo4, hi4 = wilson_interval(4 * k, 4 * n)
    assert hi4 - lo4 < hi - lo


def test_two_proportion_known_value_and_degenerate_cases():
    # p1 = 0.25, p2 = 0.20, pooled 0.225: z = 2.6774, two-sided p = 0.00742
    assert two_proportion_p_value(250, 1000, 200, 1000) == pytest.approx(0.0074193, rel=1e-4)
    assert two_proportion_p_value(100, 1000, 100, 1000) == 1.0
    assert two_proportion_p_value(0, 5, 0, 7) == 1.0 and two_proportion_p_value(5, 5, 7, 7) == 1.0
    assert math.isnan(two_proportion_p_value(0, 0, 3, 10))
    with pytest.raises(ValueError):
        two_proportion_p_value(3, 2, 1, 2)


@settings(max_examples=300, deadline=None, database=None)
@given(st.integers(1, 5000), st.integers(1, 5000), st.floats(0, 1), st.floats(0, 1))
def test_two_proportion_is_symmetric_and_equals_the_2x2_chi_square(n1, n2, f1, f2):
    x1, x2 = round(f1 * n1), round(f2 * n2)
    p = two_proportion_p_value(x1, n1, x2, n2)
    assert p == two_proportion_p_value(x2, n2, x1, n1)
    assert 0.0 <= p <= 1.0
    # the pooled z-test is Pearson's chi-square on the 2x2 table: z^2 = X^2, one degree of freedom
    pooled = (x1 + x2) / (n1 + n2)
    if 0 < pooled < 1:
        z2 = (x1 / n1 - x2 / n2) ** 2 / (pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        assert p == pytest.approx(chi2_sf(z2, 1), rel=1e-7, abs=1e-12)


def test_srm():
    assert srm_p_value([5000, 5000], [0.5, 0.5]) == pytest.approx(1.0)
    # X^2 = (5100-5000)^2/5000 * 2 = 4, one dof
    assert srm_p_value([5100, 4900], [0.5, 0.5]) == pytest.approx(chi2_sf(4.0, 1))
    # shares need not be normalised; three arms, two dof
    stat = (450 - 400) ** 2 / 400 + (350 - 400) ** 2 / 400 + (200 - 200) ** 2 / 200
    assert srm_p_value([450, 350, 200], [2, 2, 1]) == pytest.approx(math.exp(-stat / 2))
    assert math.isnan(srm_p_value([0, 0], [0.5, 0.5])) and math.isnan(srm_p_value([10], [1.0]))
    with pytest.raises(ValueError):
        srm_p_value([1, 2], [1.0])


def test_relative_lift():
    assert relative_lift(0.05, 0.04) == pytest.approx(0.25)
    assert math.isnan(relative_lift(0.05, 0.0)) and math.isnan(relative_lift(math.nan, 0.1))


def test_sample_size_per_arm():
    n = sample_size_per_arm(0.03, 0.10)
    z = 1.959963984540054 + 0.8416212335729143  # quantiles 0.975 and 0.8
    assert n == math.ceil(z * z * (0.03 * 0.97 + 0.033 * 0.967) / 0.003**2) == 53208
    assert sample_size_per_arm(0.03, 0.20) < n < sample_size_per_arm(0.03, 0.05)
    assert sample_size_per_arm(0.03, 0.10, power=0.9) > n
    for args in ((0.0, 0.1), (0.5, 1.0), (0.03, 0.0), (0.03, 0.1, 0.0)):
        with pytest.raises(ValueError):
            sample_size_per_arm(*args)
