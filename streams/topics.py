"""Topic creation through the Kafka admin API (works on Apache Kafka and tansu)."""

from __future__ import annotations

import time

from confluent_kafka.admin import AdminClient, NewTopic

from streams.settings import Settings


def topic_specs(settings: Settings) -> list[NewTopic]:
    """Every topic the product reads or writes (Faust creates its own changelogs)."""
    p, rf = settings.partitions, settings.replication_factor
    specs = [NewTopic(name, p, rf) for name in settings.input_topics]
    # Catalogue: one record per item, latest wins, so compaction keeps it small.
    specs.append(NewTopic(settings.topic_items, p, rf, config={"cleanup.policy": "compact"}))
    specs.append(NewTopic(settings.topic_recommendations, p, rf))
    specs.append(NewTopic(settings.topic_dead_letter, p, rf))
    # Same partition count as the inputs: a user's commands reach the worker owning the user.
    specs.append(NewTopic(settings.topic_control, p, rf))
    return specs


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create missing topics; returns the names created. Existing topics are left alone."""
    admin = AdminClient(settings.kafka_client_config())
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [t for t in topic_specs(settings) if t.topic not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(wanted, operation_timeout=timeout, request_timeout=timeout)
    created = []
    for name, fut in futures.items():
        try:
            fut.result()
            created.append(name)
        except Exception as exc:  # a concurrent creator is fine; anything else is not
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    # Metadata propagates asynchronously on real clusters: wait until visible.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if {t.topic for t in wanted} <= set(admin.list_topics(timeout=timeout).topics):
            break
        time.sleep(0.1)
    return created
