"""Running one Faust worker in this process."""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
from typing import Callable

from faust.worker import Worker

import agents
from models.engine import PersonalisationEngine
from models.ranking.kernels import compile_now
from streams.app import create_app
from streams.kafka.topics import check_copartitioned, check_kafka, ensure_topics
from streams.metrics import Metrics
from streams.settings import Settings, SettingsError
from streams.sinks.redis import RedisSink
from streams.wiring import build_runtime

log = logging.getLogger(__name__)


class BoundedShutdownWorker(Worker):
    """A Faust worker that exits within ``shutdown_timeout_s`` of being told to stop.

    Stopping flushes outputs and writes positions; with the broker or Redis
    gone both retry forever (outputs are re-produced until acknowledged, by
    design), so a worker asked to stop would never exit. Exiting without that
    flush is what a crash does, and crashes are safe here: what follows the
    last position record is processed again by the next owner, and the
    per-customer deduplication makes that harmless (docs/RELIABILITY.md).
    """

    def __init__(self, app, *, shutdown_timeout_s: float, prepare: Callable[[], None] | None = None,
                 **kwargs) -> None:
        super().__init__(app, **kwargs)
        self.shutdown_timeout_s = shutdown_timeout_s
        self.prepare = prepare
        self._deadline: threading.Timer | None = None

    async def on_first_start(self) -> None:
        await super().on_first_start()  # logging is set up here
        if self.prepare is not None:  # before the app's tasks start
            self.prepare()

    def _schedule_shutdown(self, signal) -> None:  # every stop signal goes through here
        if self._deadline is None:
            self._deadline = threading.Timer(self.shutdown_timeout_s, self._exit_now, args=(signal,))
            self._deadline.daemon = True
            self._deadline.start()
        super()._schedule_shutdown(signal)

    def _exit_now(self, signal) -> None:
        log.error("worker did not stop within %.0f s of %s (broker or Redis unreachable?); exiting without "
                  "flushing outputs or committing offsets: the uncommitted events are replayed on restart",
                  self.shutdown_timeout_s, getattr(signal, "name", signal))
        logging.shutdown()
        os._exit(75)  # EX_TEMPFAIL: a supervisor should restart it


def build_app(settings: Settings, metrics: Metrics | None = None):
    """The worker's Faust app with its runtime built (what tests and tools use in process)."""
    app = create_app(settings)
    app.runtime = build_runtime(settings, metrics)
    agents.register(app)
    return app


def run_worker(settings: Settings, loglevel: str = "info", engine: PersonalisationEngine | None = None) -> None:
    """Block until SIGTERM/SIGINT; the loop then finishes its batch, writes positions and a model
    checkpoint and leaves the group, or the process exits after ``shutdown_timeout_s``.
    ``engine``: see :func:`~streams.wiring.build_runtime` (``None`` in production)."""
    check_kafka(settings)
    ensure_topics(settings)
    check_copartitioned(settings)
    metrics = Metrics()
    RedisSink(settings.redis_url, settings.redis_prefix, settings.recs_ttl_s, metrics).check()
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    app = create_app(settings)
    agents.register(app)

    def prepare() -> None:  # once logging is set up, so restoring the models is logged
        log.info("settings: %s", json.dumps(settings.redacted(), sort_keys=True))
        started = time.perf_counter()
        compile_now()
        log.info("ranking loops compiled or loaded in %.1f s", time.perf_counter() - started)
        try:
            app.runtime = build_runtime(settings, metrics, engine)
        except SettingsError as exc:
            # A setting that contradicts the app's models (read from Redis, so only here): the
            # operator's to change, not a fault, so one line and the CLI's usage status, no traceback.
            log.error("Error: %s", exc)
            logging.shutdown()
            os._exit(2)
        tune_gc()

    worker = BoundedShutdownWorker(app, loglevel=loglevel, quiet=True,
                                   shutdown_timeout_s=settings.shutdown_timeout_s, prepare=prepare)
    # At loglevel >= WARNING Faust's spinner sets the root logger to DEBUG, so
    # every logger.debug() in Faust and its libraries would build a LogRecord.
    worker.spinner = None
    worker.execute_from_commandline()


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running worker.

    The worker allocates several objects per message, so CPython's default gen-0
    threshold (700 allocations) runs a collection every few events, and the
    full collections walk every live object of the models' state, which grows
    with customers. Our state has almost no reference cycles, so collecting
    rarely loses nothing: objects built at start-up are frozen out of the
    collector and gen 0 is collected every 50,000 allocations. What it saves
    is measured in docs/BENCHMARKS.md.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
