"""HybridRanker behaviour, and quality against popularity on synthetic data."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from models.baselines import DecayedCooccurrenceBaseline, PopularityBaseline
from models.covisit import CoVisitation
from models.evaluation import prequential
from models.ranking import HybridRanker, valid_counts, valid_part


def top_items(r, user, n, exclude="purchased") -> list[str]:
    """The items ``r`` recommends to ``user``, best first."""
    ids, scores = r.recommend([user], n=n, exclude=exclude)
    return valid_part(ids, scores, 0)[0].tolist()


def synthetic_events(n_users=120, n_items=240, n_categories=8, n_events=5000, p_preferred=0.85, seed=0):
    """Shoppers with a hidden favourite category, Zipf-ish item popularity.

    Each event picks a random user; with probability ``p_preferred`` the item
    comes from the user's hidden category, else from any category, with
    item popularity skewed inside each category. Popularity alone cannot
    know the hidden preference; a personalised model has to infer it.
    """
    rng = np.random.default_rng(seed)
    category = np.arange(n_items) % n_categories
    appeal = 1.0 / np.arange(1, n_items + 1) ** 0.8
    rng.shuffle(appeal)
    favourite = rng.integers(n_categories, size=n_users)
    by_category = [np.flatnonzero(category == c) for c in range(n_categories)]
    types = ["browse", "click", "purchase"]
    events = []
    for t in range(n_events):
        u = int(rng.integers(n_users))
        c = favourite[u] if rng.random() < p_preferred else int(rng.integers(n_categories))
        pool = by_category[c]
        p = appeal[pool] / appeal[pool].sum()
        item = int(rng.choice(pool, p=p))
        events.append((1_700_000_000.0 + 10 * t, f"u{u}", f"i{item}", types[int(rng.integers(3))]))
    return events, category


def test_ranker_beats_popularity_on_hidden_category_preferences():
    events, _ = synthetic_events()
    models = {"ranker": HybridRanker(seed=1), "pop": PopularityBaseline(), "cooc": DecayedCooccurrenceBaseline()}
    ev = prequential(events, models, k=10, exclude="purchased")
    hr = {name: score.hr for name, score in ev.models.items()}
    assert ev.models["ranker"].n > 4500
    assert hr["ranker"] > 1.5 * hr["pop"], hr
    assert hr["ranker"] >= hr["cooc"] - 0.005, hr  # at least as good as the strongest baseline
    # and it holds on both halves of the stream, not just on average
    n = ev.events
    for start, stop in [(0, n // 2), (n // 2, n)]:
        assert ev.models["ranker"].segment(start, stop)["hr"] > 1.5 * ev.models["pop"].segment(start, stop)["hr"]


def test_category_affinity_serves_brand_new_items():
    r = HybridRanker(seed=0)
    for i in range(5):
        r.upsert_item(f"shoe{i}", category="shoes")
        r.upsert_item(f"hat{i}", category="hats")
    for i in range(5):
        r.learn_one("ann", f"shoe{i}", "click", ts=float(i))
        r.learn_one("bob", f"hat{i}", "click", ts=float(i))
    r.upsert_item("new-shoe", category="shoes")  # no interactions at all yet
    top = top_items(r, "ann", n=1, exclude="interacted")
    assert top == ["new-shoe"]


def test_cold_start_user_gets_trending_items():
    r = HybridRanker(popularity_half_life=10)
    for t in range(30):
        r.learn_one(f"old{t}", "yesterday", "purchase", ts=None)
    for t in range(30):
        r.learn_one(f"new{t}", "today", "click", ts=None)
    # 'yesterday' has more (and stronger) events in total, 'today' is trending
    # (half-life of 10 events)
    assert top_items(r, "nobody", n=1) == ["today"]


def test_sequence_direction_matters():
    r = HybridRanker(w_popularity=0.0, w_mf=0.0, w_category=0.0)
    for u in range(20):  # everybody goes phone -> case, nobody case -> charger
        r.learn_one(f"u{u}", "phone", "click")
        r.learn_one(f"u{u}", "case", "click")
    for u in range(20, 30):
        r.learn_one(f"u{u}", "charger", "click")
        r.learn_one(f"u{u}", "phone", "click")
    r.learn_one("me", "phone", "click")
    items = top_items(r, "me", n=2, exclude="interacted")
    assert items[0] == "case"  # 20 forward transitions beat 10 backward ones


def test_batched_recommend_matches_single_calls_and_is_vectorised():
    events, _ = synthetic_events(n_events=1500)
    r = HybridRanker()
    for ts, u, i, e in events:
        r.learn_one(u, i, e, ts)
    users = [f"u{k}" for k in range(100)]
    ids, scores = r.recommend(users, n=20)
    for i, u in enumerate(users):
        one_ids, one_scores = r.recommend([u], n=20)
        assert np.array_equal(ids[i], one_ids[0]) and np.array_equal(scores[i], one_scores[0])
    assert (valid_counts(scores) == 20).all()


def test_state_is_bounded_per_user_and_per_item():
    r = HybridRanker(history_size=5, max_neighbors=3)
    for t in range(400):
        r.learn_one("u", f"i{t % 50}", "click")
    assert len(r._users["u"].history) == 5
    rows = r.items.covisit.rows
    assert max(len(rows.row(k)[0]) for k in range(len(rows))) <= 6


def test_new_items_from_events_join_the_catalogue():
    r = HybridRanker()
    r.learn_one("u", "unseen-item", "browse")
    assert r.n_items == 1 and bool(r.catalog.available[0])
    r.upsert_item("unseen-item", available=False)
    assert top_items(r, "v", n=5, exclude="none") == []


def test_predict_one_is_consistent_with_recommend():
    events, _ = synthetic_events(n_events=800)
    r = HybridRanker()
    for ts, u, i, e in events:
        r.learn_one(u, i, e, ts)
    ids, scores = r.recommend(["u3"], n=1, exclude="none")
    item, score = ids[0, 0], scores[0, 0]
    assert r.predict_one("u3", item) == pytest.approx(score)
    assert r.predict_one("u3", "no-such-item") == 0.0


def _first_stage_scores(r: HybridRanker, user_id: str, user, n_items: int) -> np.ndarray:
    """The first stage's fixed blend of every item, written out densely (its docstring's formula)."""
    from models.ranking.scoring import _Batch, _Terms

    ctx = r._context(n_items)
    scores = ctx.pop * ctx.base_scale
    t = _Terms(ctx, [user_id], [user])
    rows = np.arange(n_items)
    if t.aff is not None:
        scores = r.w_category * t.aff[0, t.cat_cols(ctx.row_cats(rows))] + scores
    if ctx.mf is not None:
        scores += _Batch(ctx, t).coef[0] * (ctx.factor_rows(rows) @ t.Uq[0])
    scores[t.cv_r] += t.cv_v * t.cvs[t.cv_u]
    return scores


def _reference_top(r: HybridRanker, user_id: str, n: int, exclude: str):
    """Top-n by brute force: first-stage candidates built the plain way (as the docstrings define
    them) and ranked by the dense first-stage blend; the second stage's candidates are their best
    ``rerank_candidates``, the user's recent items, the strongest co-visited and next items of its
    latest one, scored with the dense scores predict_one uses."""
    user = r._users.get(user_id)
    cat = r.catalog
    n_items = len(cat)
    scores = r._scores(user_id, user, n_items)
    avail = np.flatnonzero(cat.available)
    pop = r.items.popularity.scores(n_items)
    by_pop = avail[np.lexsort((avail, -pop[avail]))]
    if user is None or not user.history:
        rows = by_pop[:n]
        return [(cat.item_id(int(x)), float(scores[x])) for x in rows]
    cand = set(by_pop[: r.n_candidates].tolist())
    hist = list(reversed(user.history))
    weights = [w * r.history_decay ** i for i, w in enumerate(reversed(user.weights))]
    cv_rows, cv = r.items.covisit.score_sparse(hist, weights, r.items.covisit.mass(n_items), per_row=r.score_neighbors)
    if r.neighbor_candidates is not None:  # the user's C best neighbours, ties to the lower row
        cv_rows = cv_rows[np.lexsort((cv_rows, -cv))[: r.neighbor_candidates]]
    cand |= set(cv_rows.tolist())
    cats = cat.category
    for c in {int(cats[h]) for h in hist if cats[h] >= 0}:
        in_c = by_pop[cats[by_pop] == c]
        cand |= set(in_c[: r.n_candidates].tolist())
        newest = avail[cats[avail] == c][::-1]
        cand |= set(newest[: r.n_new_candidates].tolist())
    cand = np.array(sorted(cand), dtype=np.int64)
    first = _first_stage_scores(r, user_id, user, n_items)[cand]
    first[~cat.available[cand]] = -np.inf
    excl = user.excluded(exclude)
    if excl is not None and len(excl):
        first[np.isin(cand, excl)] = -np.inf
    keep = np.lexsort((cand, -first))[: max(n, r.rerank_candidates)]
    second = set(cand[keep][np.isfinite(first[keep])].tolist()) | set(hist)
    cols, _ = r.items.covisit.rows.row(hist[0])
    strongest, _ = r.items.covisit.rows.strongest(np.array([hist[0]]), 20)
    second |= set(r.items.covisit.rows.columns[strongest].tolist()) if len(cols) else set()
    nxt, _ = r.items.successors.rows.strongest(np.array([hist[0]]), 20)
    second |= set(r.items.successors.rows.columns[nxt].tolist())
    second = np.array(sorted(second), dtype=np.int64)
    s = scores[second].copy()
    s[~cat.available[second]] = -np.inf
    if excl is not None and len(excl):
        s[np.isin(second, excl)] = -np.inf
    order = np.lexsort((second, -s))
    return [(cat.item_id(int(second[i])), float(s[i])) for i in order[:n] if np.isfinite(s[i])]


@pytest.mark.parametrize("exclude", ["purchased", "interacted", "none"])
@pytest.mark.parametrize("caps", [{}, {"neighbor_candidates": 12, "score_neighbors": 8}, {"session_neighbours": True}],
                         ids=["default", "capped", "session-neighbours"])
def test_recommend_matches_a_brute_force_reference(exclude, caps):
    from streams.tools.generator import ShopperSimulator

    sim = ShopperSimulator(n_users=150, n_items=900, n_categories=6, seed=5)
    r = HybridRanker(seed=3, n_candidates=40, n_new_candidates=10, **caps)
    for item in sim.catalogue()[:800]:  # the rest arrive through events only: unknown category
        r.upsert_item(item["item_id"], item["category"], item["available"])
    events = list(sim.events(6000))
    for etype, ev in events:
        r.learn_one(ev["user_id"], ev["item_id"], etype, ev["ts"] / 1000)
    r.upsert_item("i3", available=False)
    users = sorted({ev["user_id"] for _, ev in events}) + ["nobody"]
    ids, scores = r.recommend(users, n=15, exclude=exclude)
    for row, user in enumerate(users):
        recs = list(zip(*(a.tolist() for a in valid_part(ids, scores, row))))
        ref = _reference_top(r, user, 15, exclude)
        assert len(recs) == len(ref), user
        assert [s for _, s in recs] == pytest.approx([s for _, s in ref], rel=1e-9, abs=1e-12), user
        # the same items, but for ties at the cut-off
        cut = ref[-1][1] if len(ref) == 15 else -np.inf
        assert {i for i, s in recs if s > cut + 1e-9} == {i for i, s in ref if s > cut + 1e-9}, user


def test_engine_popular_top_list_matches_nlargest():
    import heapq
    from types import SimpleNamespace as E

    from models.engine import PersonalisationEngine

    rng = np.random.default_rng(4)
    engine = PersonalisationEngine(top_n=5, seed=1)
    k = 0
    for batch in range(12):
        events = []
        for _ in range(50):
            k += 1
            item = f"i{min(int(rng.zipf(1.5)), 40)}"
            events.append(E(event_id=f"e{k}", user_id=f"u{rng.integers(30)}", item_id=item, type="click",
                            ts=1.7e9 + k, category=None, price=None, quantity=1, order_id=None))
        engine.process(events, profiles={})
        counts = engine._item_counts
        assert engine._popular(engine.hit_k) == heapq.nlargest(engine.hit_k, counts, key=counts.__getitem__)
        if batch == 5:  # a restored engine rebuilds the list from the counts
            engine = PersonalisationEngine.loads(engine.dumps())


@pytest.mark.parametrize("calls_every", [1, 7, 50])
def test_candidate_pools_kept_incrementally_match_a_rebuild(calls_every):
    """The pools brought up to date every _POOLS_EVERY learned events (top lists, blocks, row maps)
    equal those built from scratch, whatever the reads in between (which admit new items): new items,
    new categories, availability and category changes, and first categories named by events (which
    the pools take in at their update, without a rebuild)."""
    from models.ranking.candidates import _Context
    from models.ranking.hybrid import _POOLS_EVERY

    rng = np.random.default_rng(3)
    r = HybridRanker(seed=1, n_candidates=12, n_new_candidates=4)
    cats = [f"c{k}" for k in range(5)]
    for i in range(150):
        r.upsert_item(f"i{i}", category=cats[i % 5])
    items = [f"i{i}" for i in range(150)]
    checked = 0
    for step in range(1500):
        user = f"u{rng.integers(40)}"
        item = items[min(int(rng.zipf(1.3)) - 1, len(items) - 1)] if rng.random() < 0.8 else items[rng.integers(len(items))]
        named = None
        if rng.random() < 0.05:  # an event naming the category of an item without one
            unnamed = [i for i in items if r.item_category(i) is None]
            if unnamed:
                item, named = unnamed[rng.integers(len(unnamed))], str(rng.choice(cats + [f"named{step % 7}"]))
        r.learn_one(user, item, "click" if rng.random() < 0.8 else "purchase", ts=float(step), category=named)
        if (step + 1) % _POOLS_EVERY == 0:
            checked += 1
            ctx = r._ctx
            fresh = _Context(r)
            fresh.pop, fresh.base_scale = ctx.pop, ctx.base_scale
            fresh._build(ctx.n_items)
            n = ctx.n_items
            assert np.array_equal(ctx.top, fresh.top)
            for b, rows in enumerate(fresh.blocks):
                assert np.array_equal(ctx.blocks[b], rows), (step, b)
            assert all(not len(rows) for rows in ctx.blocks[len(fresh.blocks):])
            assert np.array_equal(ctx.block_of[:n], fresh.block_of[:n])
            inside = fresh.block_of[:n] >= 0
            assert np.array_equal(ctx.block_pos[:n][inside], fresh.block_pos[:n][inside])
            assert np.array_equal(ctx.in_cat_top[:n], fresh.in_cat_top[:n])
        if step % 97 == 0:  # a new item, sometimes in a brand-new category
            items.append(f"n{step}")
            r.upsert_item(items[-1], category=str(rng.choice(cats + [f"new{step}"])) if rng.random() < 0.5 else None)
        if step % 331 == 0:
            r.upsert_item(items[rng.integers(len(items))], available=bool(rng.random() < 0.5))
        if step % calls_every == 0:
            r.recommend([f"u{k}" for k in range(0, 40, 3)], n=5)
            # Between updates, block 0 is the last update's plus the rows new since, while there is room.
            ctx = r._ctx
            new = np.arange(ctx.base["n"], ctx.n_items)
            new = new[r.catalog.available[new]]
            room = max(r.n_candidates - len(ctx.base["top"]), 0)
            assert np.array_equal(ctx.top, np.concatenate((ctx.base["top"], new[:room])))
            # ... and each category's newest items are already those a rebuild would list.
            codes, avail = r.catalog.category, np.flatnonzero(r.catalog.available)
            for c in range(r.catalog.n_categories):
                newest = avail[codes[avail] == c][::-1][: r.n_new_candidates]
                assert np.array_equal(ctx.cat_new[c], newest), (step, c)
    assert checked == 1500 // _POOLS_EVERY
    assert len(r.catalog.fills) > 5 and r.catalog.version_without_fills < 10  # (fills were taken in, not rebuilt for)


def test_an_item_the_customer_went_further_with_scores_its_engagement_weight_more():
    """Two customers with the same history, but one clicked (carted) an item the other only viewed:
    at the second stage's prior, that item scores the ``own_engaged`` weight more for the first."""
    from models.ranking.features import FEATURES, PRIOR

    r = HybridRanker(w_mf=0.0, train_every=0)  # no factors, weights at their prior
    for user, first in (("viewer", "browse"), ("clicker", "click")):
        for k, (item, kind) in enumerate((("y", first), ("x", "browse"), ("z", "browse"))):
            r.learn_one(user, item, kind, 1_700_000_000.0 + k)
    gap = r.predict_one("clicker", "y") - r.predict_one("viewer", "y")
    assert gap == pytest.approx(PRIOR[FEATURES.index("own_engaged")])
    assert r.predict_one("clicker", "x") == pytest.approx(r.predict_one("viewer", "x"))


def test_the_second_stage_starts_from_the_weights_it_is_given_and_a_checkpoint_keeps_them():
    """choice_prior replaces the prior of the features it names: the scores before any step are
    those weights' scores, a checkpoint restores them, and steps go on from them."""
    from models.ranking.features import FEATURES, PRIOR

    given = {"transition": 1.0, "successor": 0.75}
    r = HybridRanker(w_mf=0.0, train_every=0, choice_prior=given)
    expected = [given.get(name, w) for name, w in zip(FEATURES, PRIOR)]
    assert r.choice.weights.tolist() == expected
    plain = HybridRanker(w_mf=0.0, train_every=0)
    for model in (r, plain):  # "b" follows "a" for everybody: a transition and a successor of "a"
        for k, user in enumerate(("u1", "u2", "u3")):
            model.learn_one(user, "a", "browse", 1_700_000_000.0 + 2 * k)
            model.learn_one(user, "b", "browse", 1_700_000_001.0 + 2 * k)
        model.learn_one("u4", "a", "browse", 1_700_000_010.0)
    restored = pickle.loads(pickle.dumps(r))
    assert restored.choice_prior == given and restored.choice.weights.tolist() == expected
    assert restored.predict_one("u4", "b") == r.predict_one("u4", "b") > plain.predict_one("u4", "b")
    learner = HybridRanker(w_mf=0.0, choice_prior=given, train_every=1)
    for k, user in enumerate(("u1", "u2", "u3")):
        learner.learn_one(user, "a", "browse", 1_700_000_000.0 + 2 * k)
        learner.learn_one(user, "b", "browse", 1_700_000_001.0 + 2 * k)
    assert learner.choice.n_updates > 0 and learner.choice.weights.tolist() != expected


def test_settings_out_of_their_range_are_refused():
    for bad in ({"covisit_prior": -1.0}, {"choice_g0": 0.0}, {"rerank_candidates": 0}, {"exclude": "viewed"},
                {"popularity_half_life": -5}, {"covisit_half_life": 0}, {"choice_prior": {"colour": 1.0}},
                {"choice_prior": {"transition": float("nan")}}, {"choice_prior": {"transition": "high"}}):
        with pytest.raises(ValueError):
            HybridRanker(**bad)
    with pytest.raises(ValueError):
        CoVisitation(prior_mass=-1.0)
