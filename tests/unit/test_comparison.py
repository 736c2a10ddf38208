"""The ranker against the baselines of a replay: the quality rule and the paired, customer-clustered intervals."""

from __future__ import annotations

import math

import numpy as np

from models.baselines import PopularityBaseline, RepeatBaseline
from models.comparison import compare, margins, paired_difference
from models.evaluation import prequential


def test_with_one_observation_per_cluster_the_interval_is_the_paired_t_interval():
    rng = np.random.default_rng(3)
    x, y = rng.random(500) < 0.3, rng.random(500) < 0.2
    d, lo, hi = paired_difference(x, y, np.arange(500))
    diff = x.astype(float) - y.astype(float)
    se = diff.std(ddof=1) / math.sqrt(500)  # the textbook paired standard error
    assert math.isclose(d, diff.mean())
    assert math.isclose((hi - lo) / 2, 1.959963984540054 * se, rel_tol=1e-9)


def test_identical_models_differ_by_exactly_nothing():
    rr = np.array([0.0, 1.0, 0.5, 0.0])
    assert paired_difference(rr, rr, np.array([0, 0, 1, 1])) == (0.0, 0.0, 0.0)
    d, lo, hi = paired_difference(rr, rr * 0, np.zeros(4, dtype=np.int64))  # one customer: no interval
    assert d == 0.375 and math.isnan(lo) and math.isnan(hi)


def test_the_interval_covers_a_zero_difference_about_95_times_in_100_when_customers_differ():
    """Two models of the same quality overall, each better for some customers (a customer's events
    lean the same way): an interval that ignored the clustering would be too narrow and exclude 0
    far more often than 5 % of the time."""
    rng = np.random.default_rng(11)
    covered = naive_covered = 0
    reps = 400
    for _ in range(reps):
        customers = np.repeat(np.arange(150), rng.integers(1, 30, 150))
        base = rng.uniform(0.2, 0.6, 150)[customers]
        lean = rng.uniform(-0.15, 0.15, 150)[customers]  # which model this customer's events favour
        x = rng.random(len(customers)) < base + lean
        y = rng.random(len(customers)) < base - lean
        _, lo, hi = paired_difference(x, y, customers)
        covered += lo <= 0 <= hi
        _, lo, hi = paired_difference(x, y, np.arange(len(customers)))
        naive_covered += lo <= 0 <= hi
    assert 0.90 * reps <= covered <= 0.98 * reps  # (seeds 1-3 and 11: 93-97 %)
    assert naive_covered < 0.88 * reps  # (79-85 %)


def test_compare_names_the_best_baseline_and_applies_the_rule():
    stream = [(t, u, i, "click") for t, (u, i) in enumerate(
        [("a", "x"), ("b", "x"), ("a", "y"), ("b", "y"), ("a", "x"), ("c", "z"), ("b", "x"), ("c", "x"),
         ("a", "y"), ("c", "z"), ("b", "y"), ("a", "x")])]
    ev = prequential(stream, {"model": RepeatBaseline(), "popularity": PopularityBaseline(),
                              "repeat": RepeatBaseline()}, k=2, exclude="purchased")
    out = compare(ev, "model", stream)
    baselines = {name: ev.models[name].summary() for name in ("popularity", "repeat")}
    best = max(baselines, key=lambda name: (baselines[name]["hr"], baselines[name]["mrr"]))
    assert out["best_baseline"] == best
    assert out["rule_met"] == margins(ev.models["model"].summary(), baselines[best])[2]
    # The model is the repeat baseline itself: every paired difference is exactly 0.
    assert out["vs"]["repeat"] == {"hr_diff": 0.0, "hr_diff_ci95": [0.0, 0.0], "mrr_diff": 0.0,
                                   "mrr_diff_ci95": [0.0, 0.0]}
    for name in baselines:
        assert math.isclose(out["vs"][name]["hr_diff"], ev.models["model"].hr - ev.models[name].hr, abs_tol=1e-12)
        assert math.isclose(out["vs"][name]["mrr_diff"], ev.models["model"].mrr - ev.models[name].mrr, abs_tol=1e-12)
