"""The composition root: every runtime component of a worker, built once with its collaborators.

Each component gets what it uses through its constructor; nothing is looked
up at run time. :func:`build_runtime` is the one place that knows the whole
graph:

    settings -> metrics, Redis sink (writes overlapped), Kafka sink, engine (from its checkpoint, else a peer's)
             -> item log, store, processor, ownership, position checkpoint, model checkpointer
             -> loop -> catalogue follower

The durability rule (every output drained before a position is recorded)
lives in the position checkpoint; the model checkpointer drains the same
outputs through it before it saves the models.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Mapping

import redis

from models.engine import PersonalisationEngine
from streams.catalogue import CatalogueFollower
from streams.checkpointing.checkpointer import Checkpointer, load_engine, load_newest_peer
from streams.checkpointing.positions import PositionCheckpoint
from streams.loop import StreamLoop, make_consumer
from streams.metrics import Metrics
from streams.pipeline import BatchProcessor
from streams.settings import Settings, SettingsError
from streams.sharing import ItemLog
from streams.sinks.kafka import KafkaSink
from streams.sinks.overlapped import OverlappedViews
from streams.sinks.redis import RedisSink
from streams.state.ownership import Ownership
from streams.state.store import ProfileStore


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    metrics: Metrics
    engine: PersonalisationEngine
    outputs: KafkaSink
    sink: RedisSink
    processor: BatchProcessor
    checkpointer: Checkpointer
    loop: StreamLoop
    catalogue: CatalogueFollower


def check_ranker_overrides(engine: PersonalisationEngine, overrides: Mapping[str, Any]) -> None:
    """Stop (:class:`SettingsError`) where RECOSTREAM_RANKER asks of ``engine``'s ranker other parameters
    than it learned with. A checkpointed ranker keeps its parameters: its item side holds counts
    forgotten at its own rates, and every worker must apply the same updates the same way (the
    item-updates log), so a change starts new models (a new RECOSTREAM_APP_ID) rather than
    folding two rates into one state or letting workers disagree."""
    if not overrides:
        return
    have = engine.ranker_overrides
    if have != dict(overrides):
        raise SettingsError(f"RECOSTREAM_RANKER: {json.dumps(dict(overrides), sort_keys=True)}, but this app's "
                            f"checkpointed models learned with {json.dumps(have, sort_keys=True)}; models keep the "
                            "parameters they started with: set a new RECOSTREAM_APP_ID to start models with these")


def build_runtime(settings: Settings, metrics: Metrics | None = None,
                  engine: PersonalisationEngine | None = None) -> Runtime:
    """Build a worker's components. The engine is ``engine`` when given (the bench's
    free-models worker), else this worker's last checkpoint, else the peers' furthest along the
    item-updates log (a new worker joining others), else a new one."""
    s = settings
    metrics = metrics or Metrics()
    sink = RedisSink(s.redis_url, s.redis_prefix, s.recs_ttl_s, metrics, app_id=s.app_id)
    sink.check()
    checkpoint_key = sink.keys.checkpoint(s.app_id, s.effective_worker_id)
    if engine is None:
        client = redis.Redis.from_url(s.redis_url, socket_timeout=30)
        engine = sink.retrying(lambda: load_engine(client, checkpoint_key)) or \
            sink.retrying(lambda: load_newest_peer(client, sink.keys.checkpoint(s.app_id, "*"))) or \
            PersonalisationEngine(top_n=s.top_n, exclude=s.exclude, n_segments=s.n_segments,
                                  dedupe_window=s.dedupe_window, seed=s.seed, ranker_overrides=s.ranker_overrides)
    check_ranker_overrides(engine, s.ranker_overrides)
    # The experiment and the warm bound are configuration, not model state: whatever the engine's
    # origin, it serves and counts under the configured ones.
    engine.warm_customers = s.warm_customers
    engine.set_experiment(s.experiment_config, click_window_s=s.attribution_click_window_s,
                          purchase_window_s=s.attribution_purchase_window_s)
    metrics.set_experiment(s.experiment_config)
    outputs = KafkaSink(s, metrics, essential_topics=frozenset({s.changelog_topic}))
    store = ProfileStore()
    item_log = ItemLog(s, engine, metrics, s.effective_worker_id)
    views = OverlappedViews(sink)  # each batch's Redis write overlaps the next batch
    processor = BatchProcessor(s, engine, store, outputs, views, metrics, share=item_log.exchange)
    ownership = Ownership(s, store, outputs, views, metrics, s.effective_worker_id)
    positions = PositionCheckpoint(store, outputs, s.changelog_topic, sinks=[outputs, views])
    checkpointer = Checkpointer(engine, positions.drain, s.redis_url, checkpoint_key, s.checkpoint_interval_s,
                                metrics=metrics)
    catalogue_read = threading.Event()
    loop = StreamLoop(s, lambda: make_consumer(s), ownership, processor, outputs, positions, checkpointer, metrics,
                      item_log, catalogue_read)
    metrics.watch_consumer_lag(loop.lag_rows)
    # Catalogue records reach the ranker on the loop's thread, between its batches.
    catalogue = CatalogueFollower(
        s,
        on_item=lambda item: loop.submit(lambda: engine.upsert_item(item.item_id, item.category, item.available)),
        on_removed=lambda item_id: loop.submit(lambda: engine.upsert_item(item_id, available=False)),
        caught_up=catalogue_read,
    )
    return Runtime(s, metrics, engine, outputs, sink, processor, checkpointer, loop, catalogue)
