"""The baselines' batched ``recommend`` against their dense definition (``_scores`` + exact top-n),
and their queued co-occurrence learning against adding each pair as it comes.

Streams are small and tie-heavy (few items, a skewed pick, equal counts
everywhere), some items are made unavailable and available again, and the
thresholds between the ranking paths are drawn, so that the compiled loop,
the one-by-one path it leaves users to and the dense path all serve.
"""

from __future__ import annotations

import pickle
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import models.baselines.cooccurrence as cooccurrence
from models.baselines import (
    CooccurrenceBaseline,
    DecayedCooccurrenceBaseline,
    PopularityBaseline,
    RepeatBaseline,
    RepeatCooccurrenceBaseline,
    paths,
)
from models.baselines.cooccurrence_lists import CooccurrenceLists
from models.baselines.pair_index import PairIndex
from models.covisit import SparseRows
from models.ranking import EXCLUDE_RULES
from models.ranking.topk import top_n

MAKERS = {
    "popularity": PopularityBaseline,
    "cooccurrence": lambda: CooccurrenceBaseline(window=20),
    "cooccurrence_decayed": DecayedCooccurrenceBaseline,
    "repeat": RepeatBaseline,
    "repeat_cooccurrence": RepeatCooccurrenceBaseline,
    "cooccurrence_short_window": lambda: CooccurrenceBaseline(window=4, decay=0.7),
}
TYPES = ("browse", "click", "purchase")
# Batched calls for everybody, no dense shortcut.
EVERY_PATH = {"DENSE_USERS": 1, "DENSE_ITEMS": 0, "DENSE_ABOVE": np.inf}


def dense_lists(model, user_ids, n, exclude):
    """The reference: every item scored by ``_scores``, unavailable and excluded ones removed,
    the ``n`` best finite scores, ties to the lower catalogue row."""
    out = []
    for user_id in user_ids:
        user = model._users.get(user_id)
        scores = model._scores(user_id, user, model.n_items)
        scores[~model.catalog.available] = -np.inf
        if user is not None:
            excluded = user.excluded(exclude)
            if excluded is not None and len(excluded):
                scores[excluded] = -np.inf
        rows = top_n(scores, n)
        out.append(([model.catalog.ids[r] for r in rows], scores[rows].tolist()))
    return out


def assert_same_lists(model, user_ids, n, exclude):
    ids, scores = model.recommend(user_ids, n=n, exclude=exclude)
    assert ids.shape == scores.shape == (len(user_ids), max(n, 0))
    for i, (want_ids, want_scores) in enumerate(dense_lists(model, user_ids, n, exclude)):
        m = len(want_ids)
        assert ids[i, :m].tolist() == want_ids, (type(model).__name__, user_ids[i], exclude)
        assert scores[i, :m].tolist() == want_scores  # float for float
        assert all(x is None for x in ids[i, m:]) and (scores[i, m:] == -np.inf).all()


def sequential_counts(events, window, decay):
    """The co-occurrence counts as a one-at-a-time learner adds them: each pair through ``SparseRows.add``."""
    rows, histories = SparseRows(), {}
    for user, row in events:
        history = histories.get(user, ())
        w = 1.0
        for h in reversed(history):
            if h != row:
                rows.add(h, row, w)
                rows.add(row, h, w)
            w *= 1.0 if decay is None else decay
        history = tuple(r for r in history if r != row) + (row,)
        histories[user] = history[-window:]
    return rows


@st.composite
def streams(draw):
    """Events over a small catalogue, with availability changes and points where lists are compared."""
    n_items = draw(st.integers(1, 25))
    n_users = draw(st.integers(1, 8))
    skew = draw(st.floats(1.05, 3.0))
    seed = draw(st.integers(0, 2**32 - 1))
    n_events = draw(st.integers(0, 160))
    rng = np.random.default_rng(seed)
    steps = []
    for t in range(n_events):
        item = min(int(rng.zipf(skew)), n_items)
        steps.append(("learn", f"u{rng.integers(n_users)}", f"i{item}", TYPES[rng.integers(3)], float(t)))
        if rng.random() < 0.04:
            steps.append(("avail", f"i{rng.integers(1, n_items + 1)}", bool(rng.random() < 0.5)))
        if rng.random() < 0.08:
            asked = [f"u{k}" for k in rng.integers(n_users + 1, size=int(rng.integers(1, 6)))]  # u{n_users}: unknown
            steps.append(("check", asked, int(rng.choice([1, 3, 10, 40]))))
    steps.append(("check", [f"u{k}" for k in range(n_users + 1)], 10))
    # The thresholds between the ranking paths and between the two ways of learning are drawn,
    # so that every one serves.
    path = {"DENSE_USERS": draw(st.sampled_from([1, paths.DENSE_USERS])),
            "DENSE_ABOVE": draw(st.sampled_from([0.0, paths.DENSE_ABOVE, np.inf])),
            "DENSE_ITEMS": draw(st.sampled_from([0, paths.DENSE_ITEMS]))}
    one_by_one = draw(st.sampled_from([0, cooccurrence._ONE_BY_ONE, 10**9]))
    return steps, path, one_by_one


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_recommend_equals_the_dense_definition(case):
    steps, path, one_by_one = case
    with mock.patch.multiple(paths, **path), mock.patch.object(cooccurrence, "_ONE_BY_ONE", one_by_one):
        replay_and_compare(steps)


def assert_both_lists(both: RepeatCooccurrenceBaseline, models: dict, user_ids, n, exclude):
    """One pass of ``recommend_with_decayed`` gives what each of the two models' ``recommend`` gives."""
    for got, name in zip(both.recommend_with_decayed(user_ids, n, exclude), ("repeat_cooccurrence",
                                                                             "cooccurrence_decayed")):
        want = models[name].recommend(user_ids, n, exclude)
        assert got[0].tolist() == want[0].tolist(), (name, exclude)
        assert got[1].tolist() == want[1].tolist()  # float for float


def replay_and_compare(steps):
    models = {name: make() for name, make in MAKERS.items()}
    both = RepeatCooccurrenceBaseline()
    for step in steps:
        if step[0] == "learn":
            for model in (*models.values(), both):
                model.learn_one(*step[1:])
        elif step[0] == "avail":
            for model in (*models.values(), both):
                model.upsert_item(step[1], available=step[2])
        else:
            for exclude in EXCLUDE_RULES:
                for model in models.values():
                    assert_same_lists(model, step[1], step[2], exclude)
                assert_both_lists(both, models, step[1], step[2], exclude)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_compiled_and_one_by_one_paths_both_serve_and_agree(name, monkeypatch):
    """A longer stream: most users are ranked by the compiled loop, those whose list needs items
    nobody co-visited with theirs (new customers of rare items) one by one; both as the dense definition."""
    for key, value in EVERY_PATH.items():
        monkeypatch.setattr(paths, key, value)
    model, twin = MAKERS[name](), MAKERS[name]()  # (twin: the other list of the same counts)
    other = DecayedCooccurrenceBaseline() if name == "repeat_cooccurrence" else None
    learners = [m for m in (model, twin, other) if m is not None]
    full_calls = []
    original = CooccurrenceLists.full
    monkeypatch.setattr(CooccurrenceLists, "full", lambda self, *a: full_calls.append(a) or original(self, *a))
    rng = np.random.default_rng(5)
    users = [f"u{k}" for k in range(30)]
    for t in range(3000):
        event = users[rng.integers(30)], f"i{min(int(rng.zipf(1.4)), 60)}", TYPES[rng.integers(3)], float(t)
        for m in learners:
            m.learn_one(*event)
        if t % 500 == 499:
            for exclude in EXCLUDE_RULES:
                assert_same_lists(model, users + ["nobody", "u3"], 10, exclude)
                if other is not None:
                    assert_both_lists(twin, {name: model, "cooccurrence_decayed": other}, users + ["nobody", "u3"],
                                      10, exclude)
        if t == 2000:
            users.append("late")  # one item nobody else has: the compiled loop cannot fill a list
            for m in learners:
                m.learn_one("late", "new", "click", float(t))
    if isinstance(model, CooccurrenceBaseline):
        assert 0 < len(full_calls) < 6 * 3 * 31  # neither path has all the (checks x rules x) users


@pytest.mark.parametrize("window, decay", [(20, None), (20, 0.9), (3, 0.7)])
@pytest.mark.parametrize("one_by_one", [0, 10**9])
def test_queued_learning_adds_what_each_pair_would(window, decay, one_by_one, monkeypatch):
    """Counts learned a queue at a time, read at odd moments, are the one-at-a-time learner's:
    the same values (bit for bit), in the same slots, and so the same checkpoint."""
    monkeypatch.setattr(cooccurrence, "_ONE_BY_ONE", one_by_one)
    for key, value in EVERY_PATH.items():
        monkeypatch.setattr(paths, key, value)
    rng = np.random.default_rng(11)
    events = [(f"u{rng.integers(40)}", int(min(rng.zipf(1.3), 300))) for _ in range(4000)]
    model = CooccurrenceBaseline(window=window, decay=decay)
    for t, (user, row) in enumerate(events):
        model.learn_one(user, f"i{row}", "click", float(t))
        if rng.random() < 0.01:  # a read empties the queue
            model.recommend([f"u{k}" for k in rng.integers(40, size=20)], n=5)
    want = sequential_counts([(u, model.catalog.row(f"i{r}")) for u, r in events], window, decay)
    assert pickle.dumps(model.cooc.__getstate__()) == pickle.dumps(want.__getstate__())


def test_checkpoint_drops_the_caches_and_lists_stay_the_same(monkeypatch):
    for key, value in EVERY_PATH.items():
        monkeypatch.setattr(paths, key, value)
    model = DecayedCooccurrenceBaseline()
    rng = np.random.default_rng(1)
    for t in range(800):
        model.learn_one(f"u{rng.integers(10)}", f"i{rng.integers(30)}", "click", float(t))
    before = model.dumps()
    lists = model.recommend([f"u{k}" for k in range(10)], n=5)
    assert model.dumps() == before  # index, queue and scratch arrays are not state
    clone = DecayedCooccurrenceBaseline.loads(before)
    for a, b in zip(clone.recommend([f"u{k}" for k in range(10)], n=5), lists):
        assert a.tolist() == b.tolist()
    for t in range(200):  # learning after reads keeps the index; the lists still match
        for m in (model, clone):
            m.learn_one(f"u{t % 10}", f"i{(7 * t) % 30}", "browse", 900.0 + t)
    for exclude in EXCLUDE_RULES:
        assert_same_lists(model, [f"u{k}" for k in range(10)], 5, exclude)
    assert model.dumps() == clone.dumps()


def test_batched_lists_do_not_depend_on_the_batch(monkeypatch):
    for key, value in EVERY_PATH.items():
        monkeypatch.setattr(paths, key, value)
    model = CooccurrenceBaseline()
    rng = np.random.default_rng(3)
    for t in range(1500):
        model.learn_one(f"u{rng.integers(200)}", f"i{min(int(rng.zipf(1.3)), 40)}", "click", float(t))
    users = [f"u{k}" for k in range(200)]
    ids, scores = model.recommend(users, n=10)
    for k in (0, 57, 199):
        one_ids, one_scores = model.recommend([users[k]], n=10)
        assert one_ids[0].tolist() == ids[k].tolist() and one_scores[0].tolist() == scores[k].tolist()


def test_pair_index_finds_every_entry_as_it_grows():
    rows = SparseRows()
    rng = np.random.default_rng(0)
    for _ in range(300):
        rows.add(int(rng.integers(50)), int(rng.integers(80)), 1.0)
    index = PairIndex(rows)
    for _ in range(5000):  # several times the table: it is rebuilt larger on the way
        r, c = int(rng.integers(60)), int(rng.integers(80))
        new = r >= len(rows) or c not in rows._slots[r]
        rows.add(r, c, 0.5)
        if new:
            index.insert(np.array([r]), np.array([c]), np.array([rows._slots[r][c]]))
    r, c = rng.integers(70, size=3000), rng.integers(90, size=3000)
    want = [rows.get(int(a), int(b)) for a, b in zip(r, c)]
    assert index.values(rows, r, c).tolist() == want


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.sampled_from([0.0, 1.0, 2.0, np.inf, -np.inf, np.nan]), max_size=40), st.integers(0, 45))
def test_top_n_is_exact_with_ties_to_the_lower_row(values, n):
    scores = np.array(values, dtype=float)
    want = sorted((i for i, v in enumerate(values) if np.isfinite(v)), key=lambda i: (-values[i], i))[:n]
    assert top_n(scores, n).tolist() == want
