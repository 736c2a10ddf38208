"""Running one Faust worker in this process."""

from __future__ import annotations

from faust.worker import Worker

import agents
from streams.app import create_app
from streams.settings import Settings


def build_app(settings: Settings):
    app = create_app(settings)
    agents.register(app)
    return app


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Block until SIGTERM/SIGINT; Faust then stops agents after the current
    batch, flushes the producer and commits acked offsets before exiting."""
    app = build_app(settings)
    if settings.metrics_port:
        app.metrics.serve(settings.metrics_port)
    worker = Worker(app, loglevel=loglevel, quiet=True)
    # At loglevel >= WARNING Faust's spinner sets the root logger to DEBUG, so
    # every logger.debug() in Faust/aiokafka builds a LogRecord (~4% of a worker).
    worker.spinner = None
    worker.execute_from_commandline()
