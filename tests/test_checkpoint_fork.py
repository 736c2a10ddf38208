"""Background (forked) model checkpoints against the real embedded Redis."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import redis

from models.engine import PersonalisationEngine
from streams.checkpoint import Checkpointer
from streams.metrics import Metrics


def _event(k: int, user: str = "u1"):
    return SimpleNamespace(event_id=f"e{k}", user_id=user, item_id=f"i{k % 3}", type="click", ts=1.7e9 + k,
                           category="books", price=None, quantity=None, order_id=None)


class _Processor:
    def __init__(self) -> None:
        self.drains = 0

    async def drain(self) -> None:
        self.drains += 1


def _app() -> SimpleNamespace:
    engine = PersonalisationEngine(top_n=3)
    for k in range(3):
        engine.upsert_item(f"i{k}", "books")
    return SimpleNamespace(engine=engine, processor=_Processor())


def _learn(app, first: int, n: int) -> None:
    app.engine.process([_event(k) for k in range(first, first + n)], profiles={},
                       positions=[("t:0", k) for k in range(first, first + n)])


async def _fork_then_learn_more(url: str, key: str):
    """Learn 5 events, checkpoint in a forked child, learn 5 more at once: (app, checkpointer, offsets at the fork)."""
    app = _app()
    cp = Checkpointer(app, url, key, interval_s=0.0)
    _learn(app, 0, 5)
    at_fork = dict(app.engine.model_offsets)
    async with cp.lock:
        assert await cp.save_locked(background=True)
    _learn(app, 5, 5)  # the worker goes on at once; the child's copy does not see this
    return app, cp, at_fork


def test_forked_checkpoint_holds_the_state_at_the_fork_not_later_changes(settings):
    key = f"{settings.redis_prefix}:ckpt:fork"

    async def run():
        app, cp, at_fork = await _fork_then_learn_more(settings.redis_url, key)
        assert await cp.wait_for_child() is True
        assert app.processor.drains == 1
        return at_fork, dict(app.engine.model_offsets)

    at_fork, later = asyncio.run(run())
    assert at_fork != later
    restored = PersonalisationEngine.loads(redis.Redis.from_url(settings.redis_url).get(key))
    assert restored.model_offsets == at_fork


def test_a_later_checkpoint_is_never_overwritten_by_a_running_child(settings):
    key = f"{settings.redis_prefix}:ckpt:order"

    async def run():
        app, cp, _ = await _fork_then_learn_more(settings.redis_url, key)
        assert await cp.save()  # in process: waits for the child first, then writes the newer state
        return dict(app.engine.model_offsets)

    final = asyncio.run(run())
    restored = PersonalisationEngine.loads(redis.Redis.from_url(settings.redis_url).get(key))
    assert restored.model_offsets == final


def test_maybe_save_checkpoints_in_the_background_only_when_models_changed(settings):
    key = f"{settings.redis_prefix}:ckpt:maybe"
    client = redis.Redis.from_url(settings.redis_url)

    metrics = Metrics(process_metrics=False)

    def written() -> float:
        return metrics.registry.get_sample_value("recostream_model_checkpoints_total", {"outcome": "written"})

    async def run():
        app = _app()
        cp = Checkpointer(app, settings.redis_url, key, interval_s=0.001, metrics=metrics)
        _learn(app, 0, 5)
        await asyncio.sleep(0.01)
        await cp.maybe_save()
        assert await cp.wait_for_child() is True
        assert written() == 1
        assert metrics.registry.get_sample_value("recostream_model_last_checkpoint_timestamp_seconds") > 0
        first = client.get(key)
        await asyncio.sleep(0.01)
        await cp.maybe_save()  # nothing learned since: no new checkpoint
        assert await cp.wait_for_child() is None
        assert written() == 1
        return first

    first = asyncio.run(run())
    assert PersonalisationEngine.loads(first).model_offsets == {"t:0": 5}


def test_a_failed_fork_is_counted_and_retried_not_raised(settings, monkeypatch):
    """A host short of memory cannot fork: the checkpoint fails (counted, logged), the worker goes on."""
    import os

    metrics = Metrics(process_metrics=False)

    def no_memory():
        raise OSError(12, "Cannot allocate memory")

    async def run():
        app = _app()
        cp = Checkpointer(app, settings.redis_url, f"{settings.redis_prefix}:ckpt:nofork", interval_s=0.0,
                          metrics=metrics)
        _learn(app, 0, 5)
        with monkeypatch.context() as m:
            m.setattr(os, "fork", no_memory)
            async with cp.lock:
                assert await cp.save_locked(background=True) is False
        assert await cp.save()  # in process, as at shutdown: still works
        return cp

    asyncio.run(run())
    failed = metrics.registry.get_sample_value("recostream_model_checkpoints_total", {"outcome": "failed"})
    written = metrics.registry.get_sample_value("recostream_model_checkpoints_total", {"outcome": "written"})
    assert (failed, written) == (1, 1)
