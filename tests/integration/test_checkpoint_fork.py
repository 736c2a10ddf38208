"""Background (forked) model checkpoints against the real embedded Redis."""

from __future__ import annotations

import time
from types import SimpleNamespace

import redis

from models.engine import PersonalisationEngine
from streams.checkpointing.checkpointer import Checkpointer
from streams.metrics import Metrics


def _event(k: int, user: str = "u1"):
    return SimpleNamespace(event_id=f"e{k}", user_id=user, item_id=f"i{k % 3}", type="click", ts=1.7e9 + k,
                           category="books", price=None, quantity=None, order_id=None)


class _Outputs:
    def __init__(self) -> None:
        self.drains = 0

    def flush(self) -> None:
        self.drains += 1


def _engine() -> PersonalisationEngine:
    engine = PersonalisationEngine(top_n=3)
    for k in range(3):
        engine.upsert_item(f"i{k}", "books")
    return engine


def _learn(engine, first: int, n: int) -> None:
    engine.process([_event(k) for k in range(first, first + n)], profiles={},
                   positions=[(("t", 0), k) for k in range(first, first + n)])


def _checkpointer(engine, url, key, **kwargs) -> tuple[Checkpointer, _Outputs]:
    outputs = _Outputs()
    return Checkpointer(engine, outputs.flush, url, key, **kwargs), outputs


def _fork_then_learn_more(url: str, key: str):
    """Learn 5 events, checkpoint in a forked child, learn 5 more at once."""
    engine = _engine()
    cp, outputs = _checkpointer(engine, url, key, interval_s=0.0)
    _learn(engine, 0, 5)
    at_fork = dict(engine.model_offsets)
    assert cp.save(background=True)
    _learn(engine, 5, 5)  # the worker goes on at once; the child's copy does not see this
    return engine, cp, outputs, at_fork


def test_forked_checkpoint_holds_the_state_at_the_fork_not_later_changes(settings):
    key = f"{settings.redis_prefix}:ckpt:fork"
    engine, cp, outputs, at_fork = _fork_then_learn_more(settings.redis_url, key)
    assert cp.wait_for_child() is True
    assert outputs.drains == 1  # outputs durable before the checkpoint that reflects them
    assert at_fork != engine.model_offsets
    restored = PersonalisationEngine.loads(redis.Redis.from_url(settings.redis_url).get(key))
    assert restored.model_offsets == at_fork


def test_a_later_checkpoint_is_never_overwritten_by_a_running_child(settings):
    key = f"{settings.redis_prefix}:ckpt:order"
    engine, cp, _, _ = _fork_then_learn_more(settings.redis_url, key)
    assert cp.save()  # in process: waits for the child first, then writes the newer state
    restored = PersonalisationEngine.loads(redis.Redis.from_url(settings.redis_url).get(key))
    assert restored.model_offsets == engine.model_offsets


def test_maybe_save_checkpoints_in_the_background_only_when_models_changed(settings):
    key = f"{settings.redis_prefix}:ckpt:maybe"
    client = redis.Redis.from_url(settings.redis_url)
    metrics = Metrics(process_metrics=False)

    def written() -> float:
        return metrics.registry.get_sample_value("recostream_model_checkpoints_total", {"outcome": "written"})

    engine = _engine()
    cp, _ = _checkpointer(engine, settings.redis_url, key, interval_s=0.001, metrics=metrics)
    _learn(engine, 0, 5)
    time.sleep(0.01)
    cp.maybe_save()
    assert cp.wait_for_child() is True
    assert written() == 1
    assert metrics.registry.get_sample_value("recostream_model_last_checkpoint_timestamp_seconds") > 0
    first = client.get(key)
    time.sleep(0.01)
    cp.maybe_save()  # nothing learned since: no new checkpoint
    assert cp.wait_for_child() is None
    assert written() == 1
    assert PersonalisationEngine.loads(first).model_offsets == {("t", 0): 5}


def test_a_finished_child_is_reaped_between_batches(settings):
    key = f"{settings.redis_prefix}:ckpt:reap"
    metrics = Metrics(process_metrics=False)
    engine = _engine()
    cp, _ = _checkpointer(engine, settings.redis_url, key, interval_s=3600.0, metrics=metrics)
    _learn(engine, 0, 5)
    assert cp.save(background=True)
    deadline = time.monotonic() + 30
    while metrics.registry.get_sample_value("recostream_model_checkpoints_total", {"outcome": "written"}) != 1:
        assert time.monotonic() < deadline, "the child was never reaped"
        cp.maybe_save()  # what the loop calls after every batch
        time.sleep(0.01)
    assert cp.wait_for_child() is None


def test_a_failed_fork_is_counted_and_retried_not_raised(settings, monkeypatch):
    """A host short of memory cannot fork: the checkpoint fails (counted, logged), the worker goes on."""
    import os

    metrics = Metrics(process_metrics=False)

    def no_memory():
        raise OSError(12, "Cannot allocate memory")

    engine = _engine()
    cp, _ = _checkpointer(engine, settings.redis_url, f"{settings.redis_prefix}:ckpt:nofork", interval_s=0.0,
                          metrics=metrics)
    _learn(engine, 0, 5)
    with monkeypatch.context() as m:
        m.setattr(os, "fork", no_memory)
        assert cp.save(background=True) is False
    assert cp.save()  # in process, as at shutdown: still works
    failed = metrics.registry.get_sample_value("recostream_model_checkpoints_total", {"outcome": "failed"})
    written = metrics.registry.get_sample_value("recostream_model_checkpoints_total", {"outcome": "written"})
    assert (failed, written) == (1, 1)
