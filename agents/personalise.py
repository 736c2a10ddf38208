"""Shop events become fresh recommendations, one micro-batch at a time."""

from __future__ import annotations

import asyncio

from streams.checkpoint import Checkpointer
from streams.kafka_sink import KafkaSink
from streams.metrics import Metrics
from streams.pipeline import BatchProcessor
from streams.redis_sink import RedisSink


async def finish_even_if_cancelled(coro) -> None:
    """Run ``coro`` to the end even if the agent is cancelled meanwhile (shutdown).

    Faust's take_events acks a batch when its body exits, even by
    cancellation; a batch cut short would be committed with half its outputs
    written. So a stopping worker first finishes the batch, then stops.
    """
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


def register(app) -> None:
    s = app.settings_
    app.metrics = Metrics()
    app.metrics.watch_consumer(app, [*s.input_topics, s.topic_items])
    app.sink = RedisSink(s.redis_url, s.redis_prefix, s.recs_ttl_s, app.metrics)
    app.outputs = KafkaSink(s, app.metrics)
    app.processor = BatchProcessor(app, app.metrics, app.sink, app.outputs)
    app.checkpoints = Checkpointer(app, s.redis_url, app.sink.keys.checkpoint(s.app_id, s.effective_worker_id),
                                   s.checkpoint_interval_s, metrics=app.metrics)

    # Faust flushes its producer before every commit, on rebalance and on stop:
    # exactly where the worker's own outputs must be durable too.
    flush_faust_producer = app.producer.flush

    async def flush_every_output() -> None:
        await app.processor.drain()
        await flush_faust_producer()

    app.producer.flush = flush_every_output

    @app.agent(app.input_topic, name="personalise")
    async def personalise(stream):
        """Each micro-batch of shop events updates profiles and models, then refreshes those shoppers' top-N."""
        await app.checkpoints.restore()
        async for batch in stream.take_events(s.batch_max_events, within=s.batch_max_wait_s):
            await finish_even_if_cancelled(process(batch))

    async def process(batch) -> None:
        async with app.checkpoints.lock:
            await app.processor.process(batch)

    @app.on_partitions_revoked.connect
    async def forget_expected_offsets(app, revoked, **kwargs) -> None:
        """Partitions move on a rebalance: their next offsets are the committed ones again, and a partition
        that comes back may have been processed elsewhere meanwhile (its models catch up again)."""
        app.processor.reset_positions()

    @app.timer(interval=1.0)
    async def process_what_faust_dropped() -> None:
        """A quiet partition's messages that Faust fetched but never delivered are processed from the broker."""
        async with app.checkpoints.lock:
            await app.processor.process_dropped()

    @app.timer(interval=1.0)
    async def checkpoint_models() -> None:
        """Models are checkpointed every interval in which they changed, between batches."""
        await app.checkpoints.maybe_save()

    @app.on_before_shutdown.connect
    async def checkpoint_on_shutdown(app, **kwargs) -> None:
        """A clean stop checkpoints the models, so the next start loses nothing."""
        await app.checkpoints.save()
