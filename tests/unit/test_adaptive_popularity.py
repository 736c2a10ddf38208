"""AdaptivePopularity: which half-life it serves, and that readers see it as a TrendingPopularity."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from models.adaptive_popularity import AdaptivePopularity
from models.popularity import TrendingPopularity
from models.ranking import HybridRanker
from models.ranking.pickling import dumps, load


def _stream(pop, rows, novel=True):
    for t, row in enumerate(rows):
        pop.update(int(row), 1.0, t=float(t), novel=novel)


def _bursts(n_events: int, length: int = 60):
    """A new hot item every ``length`` events, met by a new customer each time (all discoveries)."""
    return [t // length for t in range(n_events)]


def _staples(n_events: int, seed: int = 0):
    """Ten staples, some more liked than others, a customer discovers half the time; the other half
    items met once."""
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, 11)
    return [int(rng.choice(10, p=p / p.sum())) if rng.random() < 0.5 else 10 + t for t in range(n_events)]


def test_one_half_life_serves_exactly_that_trending_popularity():
    adaptive, plain = AdaptivePopularity(half_lives=(50.0,), every=16), TrendingPopularity(50.0)
    rows = _staples(2_000)
    _stream(adaptive, rows)
    _stream(plain, rows)
    assert adaptive.scores(3_000).tolist() == plain.scores(3_000).tolist()
    assert adaptive.max_value == plain.max_value and adaptive.half_life == 50.0


@pytest.mark.parametrize("rows, served", [(_bursts(6_000), 20.0), (_staples(6_000), None)])
def test_serves_the_half_life_whose_top_list_holds_what_customers_discover(rows, served):
    pop = AdaptivePopularity(half_lives=(20.0, None), every=32, top=3)
    _stream(pop, rows)
    assert pop.half_life == served
    assert pop.hits[pop.half_lives.index(served)] > pop.hits.min() + pop.margin


def test_re_visits_are_no_evidence():
    pop = AdaptivePopularity(half_lives=(20.0, None), every=32, top=3)
    _stream(pop, _staples(6_000), novel=False)
    assert pop.hits.tolist() == [0.0, 0.0] and pop.half_life == 20.0  # the first until evidence says otherwise


def test_readers_track_the_served_counts_and_rebuild_when_it_changes():
    pop = AdaptivePopularity(half_lives=(20.0, None), every=32, top=3)
    assert pop.track_changes() is None  # first read: rebuild
    switched_at = None
    for t, row in enumerate(_staples(3_000)):
        before = pop.half_life
        pop.update(row, 1.0, t=float(t))
        changed = pop.track_changes()
        if pop.half_life != before:
            assert changed is None and switched_at is None
            switched_at = t
        else:
            assert changed == [row]
        assert pop.max_value == pop.scores(len(pop.serving._values)).max()
    assert switched_at is not None


def test_pickles_to_equal_bytes_and_keeps_choosing_alike():
    a = AdaptivePopularity(half_lives=(20.0, None), every=32, top=3)
    rows = _staples(4_000)
    _stream(a, rows[:2_000])
    b = load(dumps(a))
    assert dumps(b) == dumps(a)
    for t, row in enumerate(rows[2_000:], start=2_000):
        a.update(row, 1.0, t=float(t))
        b.update(row, 1.0, t=float(t))
    assert dumps(b) == dumps(a) and b.half_life == a.half_life
    assert pickle.loads(pickle.dumps(a)).track_changes() is None  # readers of a restored model rebuild


@pytest.mark.parametrize("half_lives", [(), (2_000, 0), (-1,)])
def test_refuses_bad_half_lives(half_lives):
    with pytest.raises(ValueError, match="half"):
        AdaptivePopularity(half_lives=half_lives)
    with pytest.raises(ValueError, match="popularity_half_life"):
        HybridRanker(popularity_half_life=half_lives)


def test_the_ranker_serves_adaptive_popularity_by_default_and_a_fixed_one_when_given_a_number():
    assert isinstance(HybridRanker().items.popularity, AdaptivePopularity)
    assert HybridRanker().popularity_half_life == (2_000, 8_000, 32_000, 128_000)
    assert HybridRanker(popularity_half_life=[500, None]).items.popularity.half_lives == (500, None)
    fixed = HybridRanker(popularity_half_life=2_000).items.popularity
    assert type(fixed) is TrendingPopularity and fixed.half_life == 2_000


def test_top_lists_are_exact_at_every_review_through_rescales():
    # A half-life of 20 time units over 30,000 rescales many times; all-time counts tie a lot.
    pop = AdaptivePopularity(half_lives=(20.0, 2_000.0, None), every=64, top=10)
    rng = np.random.default_rng(3)
    rows = (rng.zipf(1.3, 64 * 500) % 5_000).tolist()
    for t, row in enumerate(rows):
        pop.update(row, 1.0, t=3.0 * t)
        if pop.n_updates % pop.every == 0:
            for counter, top in zip(pop.counters, pop.tops):
                v = counter.scores(len(counter._values))
                best = np.lexsort((np.arange(len(v)), -v))[:10]
                assert top == tuple(int(r) for r in best if v[r] > 0)
    assert pop.counters[0].clock.t_ref > 0  # (the fast counter did rescale)
