"""The worker's Faust consumer is configured as docs/BENCHMARKS.md says (no broker needed)."""

from __future__ import annotations

import asyncio

from streams.app import create_app
from streams.faust_consumer import HandOffConsumer, ShortFetchWaitThread
from streams.settings import Settings


def _app(**overrides):
    return create_app(Settings.from_env({}, kafka_bootstrap_servers="127.0.0.1:9", **overrides))


def test_fetch_wait_comes_from_the_settings_not_fausts_fixed_1500_ms():
    async def build():
        app = _app(kafka_fetch_max_wait_ms=37)
        consumer = app.consumer
        assert isinstance(consumer, HandOffConsumer)
        thread = consumer._new_consumer_thread()
        assert isinstance(thread, ShortFetchWaitThread)
        client = thread._create_worker_consumer(app.transport)
        return client._fetch_max_wait_ms

    assert asyncio.run(build()) == 37


def test_default_fetch_wait_is_short():
    assert Settings.from_env({}).kafka_fetch_max_wait_ms == 50


def test_offsets_are_committed_on_the_timer_not_inside_the_delivery_loop():
    # Faust commits every `broker_commit_every` acked messages from the loop
    # that delivers messages; each commit drains the worker's outputs first,
    # so delivery would stop while it waits.
    app = _app()
    assert app.conf.broker_commit_every >= 2**31 - 1
    assert app.conf.broker_commit_interval > 0
