"""Unit tests of the ranker's building blocks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.baselines import PopularityBaseline
from models.catalog import Catalog
from models.covisit import CoVisitation, SparseRows
from models.evaluation import prequential
from models.mf import ImplicitMF
from models.popularity import DecayClock, TrendingPopularity
from models.session_knn import SessionNeighbours


def test_catalog_grows_past_capacity_and_keeps_rows():
    cat = Catalog(capacity=2)
    rows = [cat.upsert(f"i{k}", category=f"c{k % 3}") for k in range(5000)]
    assert rows == list(range(5000)) and len(cat) == 5000
    assert cat.category[:6].tolist() == [0, 1, 2, 0, 1, 2]
    assert cat.available.all()
    cat.upsert("i7", available=False)
    cat.upsert("i7")  # an event on the item must not make it available again
    assert not cat.available[7]
    assert cat.row("missing") is None and len(cat) == 5000


def test_decay_clock_rescales_without_changing_ratios():
    pop = TrendingPopularity(half_life=1.0)
    pop.update(0, 1.0, t=0.0)
    for t in range(1, 1000):  # 1000 half-lives: increments would overflow without rescaling
        pop.update(1, 1.0, t=float(t))
    counts = pop.counts(2)
    assert np.isfinite(pop.scores(2)).all()
    assert math.isclose(counts[1], sum(0.5**k for k in range(999)), rel_tol=1e-9)
    assert counts[0] < 1e-250


@pytest.mark.parametrize("half_life", [0, -5, 0.0, float("nan")])
def test_forgetting_models_refuse_half_lives_that_are_not_positive(half_life):
    for make in (DecayClock, TrendingPopularity, lambda h: CoVisitation(half_life=h)):
        with pytest.raises(ValueError, match="half_life must be positive"):
            make(half_life)


def test_decay_clock_without_half_life_counts():
    clock = DecayClock(None)
    assert clock.increment(5.0) == clock.increment(1e12) == 1.0
    pop = TrendingPopularity(half_life=None)
    for row in [0, 1, 1, 2, 2, 2]:
        pop.update(row)
    assert pop.counts(4).tolist() == [1.0, 2.0, 3.0, 0.0]


def test_sparse_rows_bounded_and_gather_matches_dense():
    rng = np.random.default_rng(0)
    rows = SparseRows(max_neighbors=None)
    dense = np.zeros((30, 30))
    for _ in range(500):
        r, c, w = int(rng.integers(30)), int(rng.integers(30)), float(rng.random())
        rows.add(r, c, w)
        dense[r, c] += w
    hist, weights = [3, 7, 11], [1.0, 0.5, 0.25]
    assert np.allclose(rows.gather(hist, weights, 30), weights @ dense[hist])
    bounded = SparseRows(max_neighbors=4)
    for c in range(100):
        bounded.add(0, c, float(c))
        assert len(bounded.row(0)[0]) <= 8
    assert set(bounded.row(0)[0].tolist()) >= {96, 97, 98, 99}  # strongest survive


def test_covisitation_is_directed_and_distance_weighted():
    cv = CoVisitation(max_neighbors=None, distance_decay=0.5, forward=1.0, backward=0.25, half_life=None, alpha=0.0)
    cv.update([1, 0], 2, weight=1.0)  # history most recent first: 0 then 1 then 2
    assert cv.rows.get(1, 2) == 1.0 and cv.rows.get(2, 1) == 0.25
    assert cv.rows.get(0, 2) == 0.5 and cv.rows.get(2, 0) == 0.125
    assert cv.rows.get(0, 1) == 0.0  # update() only links the new item


def test_covisitation_popularity_normalisation_demotes_hubs():
    cv = CoVisitation(max_neighbors=None, half_life=None, alpha=0.5)
    for u in range(50):  # 'hub' follows everything
        cv.update([u + 10], 0)
    cv.update([5], 0)
    cv.update([5], 1)
    cv.update([5], 1)
    scores = cv.score([5], [1.0], n_items=100)
    assert scores[1] > scores[0]  # raw counts tie (2 vs 1+... ) but the niche item wins


def test_covisitation_prior_means_the_same_however_long_the_clock_has_run():
    """The prior is a mass in decayed units: co-visits learned ten half-lives into a clock's life
    score as they do on a new clock (the stored masses and the prior grow alike)."""
    def learn(cv, t0):
        for t, (history, row) in enumerate([([0], 1), ([0], 1), ([0], 2), ([3], 1), ([2, 0], 1)]):
            cv.update(history, row, t=t0 + t)
        return cv.score([0], [1.0], n_items=12)

    young, old = (CoVisitation(max_neighbors=None, half_life=100.0, alpha=0.5, prior_mass=2.0) for _ in range(2))
    old.update([10], 11, t=0.0)  # the clock starts ten half-lives before the same co-visits
    assert old.prior_now() == 2.0
    young_scores = learn(young, 0.0)
    assert np.allclose(learn(old, 1000.0), young_scores, rtol=1e-12)
    assert old.prior_now() == 1024 * young.prior_now() > 2.0 * 1024
    unprior = learn(CoVisitation(max_neighbors=None, half_life=100.0, alpha=0.5), 0.0)
    assert not np.allclose(unprior, young_scores)  # (the prior moves the scores compared)


def test_covisitation_memory_is_bounded_for_a_large_catalogue():
    rng = np.random.default_rng(1)
    cv = CoVisitation(max_neighbors=10, half_life=None)
    history = []
    for _ in range(20000):
        item = int(rng.integers(100_000))
        cv.update(history[::-1], item)
        history = (history + [item])[-20:]
    assert cv.rows.nnz <= 20 * len(cv.rows)
    s = cv.score(history[::-1], [1.0] * len(history), n_items=100_000)
    assert s.shape == (100_000,) and s.max() > 0


def test_mf_negative_sampling_separates_preferences_and_never_inserts_on_read():
    mf = ImplicitMF(n_factors=8, lr=0.05, n_negatives=4, seed=0)
    rows = {f"i{k}": k for k in range(20)}
    rng = np.random.default_rng(0)
    for _ in range(3000):  # even users like items 0-9, odd users items 10-19
        u = int(rng.integers(10))
        k = int(rng.integers(10)) + (10 if u % 2 else 0)
        mf.learn_one(f"u{u}", f"i{k}", rows[f"i{k}"], 1.0)
    s = mf.score("u0", 20)
    assert s[:10].mean() > s[10:].mean() + 0.2
    # the numpy mirror is exactly River's item factors
    for item, row in rows.items():
        assert np.array_equal(mf.item_factors[row], mf.model.i_latents[item])
    n_users, n_items = len(mf.model.u_latents), len(mf.model.i_latents)
    assert mf.predict_one("ghost", "i1") == 0.0 and mf.predict_one("u0", "ghost") == 0.0
    assert mf.score("ghost", 20) is None
    assert (len(mf.model.u_latents), len(mf.model.i_latents)) == (n_users, n_items)
    mf.forget_user("u0")
    assert mf.score("u0", 20) is None


def test_prequential_metrics_by_hand():
    # user a: x, y ; b: x, y ; a: z   -- popularity with k=2
    stream = [(0, "a", "x", "click"), (1, "b", "x", "click"), (2, "a", "y", "click"),
              (3, "b", "y", "click"), (4, "a", "z", "click")]
    ev = prequential(stream, {"pop": PopularityBaseline()}, k=2, exclude="interacted")
    score = ev.models["pop"]
    # first events of a and b are not scored (new users);
    # a@2: y never seen yet -> 0; b@3: y is rank 1 once x is excluded -> 1; a@4: z new -> 0
    assert score.rr.tolist() == [0.0, 1.0, 0.0]
    assert score.positions.tolist() == [2, 3, 4]
    assert score.n == 3 and math.isclose(score.hr, 1 / 3) and math.isclose(score.mrr, 1 / 3)
    assert score.segment(3, 5) == {"hr": 0.5, "mrr": 0.5, "n": 2}
    x, y = score.rolling_hr(window=2)
    assert x.tolist() == [3, 4] and y.tolist() == [0.5, 0.5]
    assert ev.events == 5 and ev.events_per_s > 0


def _plain_votes(sessions: dict[str, list[int]], user: str, recent: list[int], k: int) -> dict[int, float]:
    """Session-kNN by definition over full sessions: similarity is the summed weight 0.9 ** rank
    of the shared recent items, the k most similar other sessions (ties: the later one) vote."""
    weight = {row: 0.9 ** rank for rank, row in enumerate(recent)}
    order = list(sessions)
    sim = {v: sum(weight.get(r, 0.0) for r in set(items)) for v, items in sessions.items() if v != user}
    best = sorted((v for v in sim if sim[v] > 0), key=lambda v: (-sim[v], -order.index(v)))[:k]
    votes: dict[int, float] = {}
    for v in best:
        for r in set(sessions[v]):
            votes[r] = votes.get(r, 0.0) + sim[v]
    top = max(votes.values(), default=1.0)
    return {r: x / top for r, x in votes.items()}


def test_session_neighbours_vote_as_defined_and_forget_a_customer():
    rng = np.random.default_rng(5)
    knn = SessionNeighbours(sessions_per_item=1000, items_per_session=1000, neighbours=4)
    sessions: dict[str, list[int]] = {}
    for _ in range(600):
        user = f"u{int(rng.integers(40))}"
        row = int(rng.zipf(1.4)) % 30
        knn.update(user, row)
        sessions.setdefault(user, []).append(row)
    users = ["u1", "u7", "new"]
    recents = [list(dict.fromkeys(reversed(sessions[u])))[:5] for u in users[:2]] + [[3, 1]]
    uh = np.repeat(np.arange(3), [len(r) for r in recents])
    rows = np.array([r for rec in recents for r in rec])
    weights = np.array([0.9 ** k for rec in recents for k in range(len(rec))])
    vu, vr, v = knn.scores(users, uh, rows, weights)
    for b, user in enumerate(users):
        got = {int(r): float(x) for r, x in zip(vr[vu == b], v[vu == b])}
        want = _plain_votes(sessions, user, recents[b], 4)
        assert got.keys() == want.keys() and all(math.isclose(got[r], want[r]) for r in got), user
    knn.forget("u7")
    del sessions["u7"]
    vu, vr, v = knn.scores(users, uh, rows, weights)
    got = {int(r): float(x) for r, x in zip(vr[vu == 0], v[vu == 0])}
    assert got == pytest.approx(_plain_votes(sessions, "u1", recents[0], 4))


def test_session_neighbours_memory_is_bounded():
    knn = SessionNeighbours(sessions_per_item=5, items_per_session=3, neighbours=2)
    for k in range(5000):
        knn.update(f"u{k % 700}", k % 47)
    assert max(len(s) for s in knn._sessions_of._slots) <= 2 * 5
    assert knn._items_of.shape[1] == 3  # a session's last 3 distinct items, oldest first
    assert knn._items_of[knn._slot["u699"]].tolist() == [k % 47 for k in (3499, 4199, 4899)]
