"""Models-only catch-up (``PersonalisationEngine.catch_up``): the rules per event, without a broker.

The worker side (re-reading the range from the real broker after a ``kill -9``)
is ``tests/integration/test_reliability.py::test_models_learn_what_a_crash_left_between_their_checkpoint_and_the_committed_offset``.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from models.engine import PersonalisationEngine
from tests.helpers import shop_events

PART = ("click", 0)  # topic, partition


def _events(n: int, seed: int = 3) -> tuple[list, list]:
    return shop_events(n, n_users=40, n_items=150, seed=seed)


def _engine(catalogue, **kw) -> PersonalisationEngine:
    engine = PersonalisationEngine(**kw)
    for item in catalogue:
        engine.upsert_item(item["item_id"], item["category"], item["available"])
    return engine


def _live(engine, events, start: int = 0) -> dict:
    """Process ``events`` in batches of 50 at offsets ``start``.. as a worker would; the profiles after."""
    profiles: dict = {}
    for lo in range(0, len(events), 50):
        chunk = events[lo:lo + 50]
        out = engine.process(chunk, profiles, positions=[(PART, start + lo + k) for k in range(len(chunk))])
        profiles.update(out.profiles)
    return profiles


def test_a_restored_engine_that_catches_up_ranks_exactly_like_the_one_that_never_crashed():
    events, catalogue = _events(1500)
    live = _engine(catalogue)
    _live(live, events[:600])
    checkpoint = live.dumps()
    profiles = _live(live, events[600:], start=600)  # learned live, then the worker dies

    restored = PersonalisationEngine.loads(checkpoint)
    assert restored.model_version == 600
    learned = restored.catch_up(events[600:], [(PART, o) for o in range(600, 1500)], profiles)

    assert learned == 900
    assert restored.model_version == live.model_version == 1500
    assert restored.model_offsets == live.model_offsets == {PART: 1500}
    users = sorted({ev.user_id for ev in events})
    (ids, scores), (live_ids, live_scores) = restored.recommend(users), live.recommend(users)
    assert np.array_equal(ids, live_ids) and np.array_equal(scores, live_scores)


def test_producer_duplicates_are_learned_once_and_forgotten_customers_not_at_all():
    events, catalogue = _events(300)
    dup = SimpleNamespace(**vars(events[10]))  # a producer's retry of event 10, later in the stream
    stream = events[:200] + [dup] + events[200:]
    live = _engine(catalogue)
    checkpoint = live.dumps()
    profiles = _live(live, stream)
    assert live.model_version == len(events)  # the copy was dropped live

    forgotten = events[0].user_id
    del profiles[forgotten]
    restored = PersonalisationEngine.loads(checkpoint)
    learned = restored.catch_up(stream, [(PART, o) for o in range(len(stream))], profiles)

    assert learned == len(events) - sum(ev.user_id == forgotten for ev in events)
    assert forgotten not in restored.ranker._users
    assert restored.model_offsets == {PART: len(stream)}


def test_an_id_that_scrolled_out_of_the_dedupe_window_is_learned_once():
    events, catalogue = _events(200)
    user = events[0].user_id
    own = [ev for ev in events if ev.user_id == user]
    assert len(own) > 3
    dup = SimpleNamespace(**vars(own[0]))
    stream = own[:1] + [dup] + own[1:]  # the copy right behind: dropped live by a window of 2
    live = _engine(catalogue, dedupe_window=2)
    checkpoint = live.dumps()
    profiles = _live(live, stream)
    assert live.model_version == len(own)

    restored = PersonalisationEngine.loads(checkpoint)  # the window no longer holds own[0] at all
    assert restored.catch_up(stream, [(PART, o) for o in range(len(stream))], profiles) == len(own)


def test_catching_up_twice_or_behind_the_models_learns_nothing():
    events, catalogue = _events(200)
    live = _engine(catalogue)
    profiles = _live(live, events)
    version = live.model_version
    assert live.catch_up(events, [(PART, o) for o in range(len(events))], profiles) == 0
    assert live.model_version == version
