"""The Faust application: settings -> app, topics and tables.

The app is built by a factory, not at import time, so tests and the CLI can
start workers against any broker. State never lives at module level (it would
be lost on rebalance): profiles live in a changelog-backed table, derived views
in Redis, and model state in the engine owned by this app instance.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import SASLMechanism

from models.engine import PersonalisationEngine
from streams.faust_consumer import HandOffConsumer, RawBytesSchema, skip_empty_producer_buffer
from streams.settings import Settings


class PartitionedTable(faust.Table):
    """A table written from micro-batches that span several partitions.

    Faust picks a changelog partition from the *current* event, which inside a
    batch is merely the last one consumed. Each key's changelog record must go
    to the partition its source events came from, or a worker recovering that
    partition after a rebalance would miss it. So batch code says where, and
    produces the changelog records itself, in bulk, through the worker's
    :class:`~streams.kafka_sink.KafkaSink` (flushed before the batch is acked).
    These methods only change the local copy.
    """

    def put_local(self, key: Any, value: Any, partition: int) -> None:
        self.data[key] = value
        self._remember_partition(key, partition)

    def delete_local(self, key: Any) -> None:
        self.data.pop(key, None)
        getattr(self.data, "_key_partition", {}).pop(key, None)

    def _remember_partition(self, key: Any, partition: int) -> None:
        # The memory store drops keys of partitions this worker lost after a
        # rebalance using the partitions it saw in the changelog; keys written
        # here must be known too, or they would linger as stale copies.
        key_partition = getattr(self.data, "_key_partition", None)
        if key_partition is not None:
            key_partition[key] = partition


def _credentials(settings: Settings) -> Any:
    proto = settings.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None) if proto.endswith("SSL") else None
    if proto.startswith("SASL"):
        return SASLCredentials(username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
                               mechanism=SASLMechanism(settings.kafka_sasl_mechanism), ssl_context=context)
    return SSLCredentials(context)


class RecoApp(faust.App):
    """The Faust app plus the handles agents need (settings, topics, table, engine)."""

    settings_: Settings
    engine: PersonalisationEngine


def create_app(settings: Settings) -> RecoApp:
    if not settings.kafka_bootstrap_servers:
        raise ValueError("RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS (or KAFKA_BOOTSTRAP_SERVERS) is not set")
    brokers = [f"kafka://{hp.strip()}" for hp in settings.kafka_bootstrap_servers.split(",")]
    app = RecoApp(
        settings.app_id,
        broker=brokers,
        broker_credentials=_credentials(settings),
        store="memory://",
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        # See Settings.kafka_session_timeout_s: this is what makes the group
        # join take seconds, not half a minute, on tansu.
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
        web_port=settings.web_port,
        web_bind="127.0.0.1",
        web_enabled=False,
        autodiscover=False,
        # On SIGTERM, finish what was fetched (the current batch and the few
        # buffered messages) before stopping, so nothing acked lacks outputs.
        stream_wait_empty=True,
        # Commit on Faust's timer only (broker_commit_interval, 2.8 s), never
        # "every N acked messages": that commit runs inside the loop that
        # delivers messages, and each commit first drains the worker's outputs
        # (up to ~0.5 s on tansu), so delivery stopped while it waited
        # (docs/BENCHMARKS.md). The timer's commit drains concurrently.
        broker_commit_every=2**31 - 1,
    )
    app.settings_ = settings
    # Faust's consumer with a plain hand-off per message: cheaper, and no
    # message is marked read without being delivered (streams/faust_consumer.py).
    app.transport.Consumer = HandOffConsumer
    skip_empty_producer_buffer(app.producer.buffer)
    app.engine = PersonalisationEngine(top_n=settings.top_n, exclude=settings.exclude,
                                       n_segments=settings.n_segments,
                                       dedupe_window=settings.dedupe_window, seed=settings.seed)
    # We decode bytes ourselves: Faust would ack undecodable messages silently,
    # and the dead-letter topic needs the original bytes.
    app.input_topic = app.topic(*settings.input_topics, schema=RawBytesSchema())
    # The recommendations, dead-letter and changelog records are produced by
    # streams.kafka_sink.KafkaSink, not through Faust topics.
    app.control_topic = app.topic(settings.topic_control, schema=RawBytesSchema())
    app.profiles = app.tables.add(PartitionedTable(
        app, name="profiles", default=None, beacon=app.tables.beacon, partitions=settings.partitions,
        # bytes values -> the "raw" codec: profiles are msgspec-encoded by us, and
        # recovery from the changelog must hand back the same bytes.
        key_type=str, value_type=bytes))
    return app
