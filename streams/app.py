"""The Faust application: the worker's runtime (services, tasks, signals, logging).

Faust runs the worker's tasks (``agents/``) and its lifecycle. It does not
consume the input topics itself: its stream and table machinery cannot give
the worker's guarantees (it drops deliveries across consumer generations,
lets code run while a table is still recovering, and has no fencing of an
owner that lost its partitions; docs/RELIABILITY.md). Input is consumed by
the worker's own loop (``streams/loop.py``), which a Faust task runs.

The app is built by a factory, not at import time, so tests and the CLI can
start workers against any broker; the one object hung on it is the typed
:class:`~streams.wiring.Runtime` that the agents call into.
"""

from __future__ import annotations

import faust
from faust.app.base import BootStrategy

from streams.settings import Settings
from streams.wiring import Runtime


class _NoKafka(BootStrategy):
    # Faust's own consumer, producer, topic conductor and table manager are
    # not started: the worker's loop owns its Kafka clients, every one of
    # them configured by Settings.kafka_client_config() (security included).
    # The app's broker URL is only a setting Faust requires.
    enable_kafka = False
    enable_web = False


class RecoApp(faust.App):
    """The Faust app plus the worker's runtime, the one container agents use."""

    BootStrategy = _NoKafka
    runtime: Runtime


def create_app(settings: Settings) -> RecoApp:
    """The app; its tasks (``agents/``) need ``app.runtime`` set before the worker starts them."""
    if not settings.kafka_bootstrap_servers:
        raise ValueError("RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS (or KAFKA_BOOTSTRAP_SERVERS) is not set")
    app = RecoApp(
        settings.app_id,
        broker=[f"kafka://{hp.strip()}" for hp in settings.kafka_bootstrap_servers.split(",")],
        store="memory://",
        datadir=settings.data_dir,
        web_enabled=False,
        autodiscover=False,
    )
    return app
