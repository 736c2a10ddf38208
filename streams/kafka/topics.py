"""Topic creation through the Kafka admin API (works on Apache Kafka and tansu)."""

from __future__ import annotations

import logging
import time

from confluent_kafka.admin import AdminClient, NewTopic

from streams.settings import Settings

_quiet = logging.getLogger("librdkafka.check")
_quiet.setLevel(logging.CRITICAL)  # the reachability check reports its own failure


def topic_specs(settings: Settings) -> list[NewTopic]:
    """Every topic the product reads or writes."""
    p, rf = settings.partitions, settings.replication_factor
    specs = [NewTopic(name, p, rf) for name in settings.input_topics]
    # Impressions: keyed by user_id like the inputs, so partition p reaches the owner of p's profiles.
    specs.append(NewTopic(settings.topic_impressions, p, rf))
    # Catalogue: one record per item, latest wins, so compaction keeps it small.
    specs.append(NewTopic(settings.topic_items, p, rf, config={"cleanup.policy": "compact"}))
    specs.append(NewTopic(settings.topic_recommendations, p, rf))
    specs.append(NewTopic(settings.topic_dead_letter, p, rf))
    # Same partition count as the inputs: a user's commands reach the worker owning the user.
    specs.append(NewTopic(settings.topic_control, p, rf))
    # The profiles' changelog, partition for partition with the inputs. Not
    # compacted: restoring depends on the order of takeover markers and the
    # records around them (docs/RELIABILITY.md), which compaction would lose.
    specs.append(NewTopic(settings.changelog_topic, p, rf, config={"cleanup.policy": "delete", "retention.ms": "-1"}))
    # The item-updates log: ONE partition, whose order is the order every worker applies updates in.
    specs.append(NewTopic(settings.item_updates_topic, 1, rf, config={
        "cleanup.policy": "delete", "retention.ms": str(int(settings.item_updates_retention_s * 1000)),
        "max.message.bytes": str(settings.item_update_max_bytes + 65536)}))
    return specs


class KafkaUnreachable(RuntimeError):
    """The configured Kafka cluster did not answer."""


def check_kafka(settings: Settings, timeout: float = 15.0) -> None:
    """Raise :class:`KafkaUnreachable`, naming the setting, when the cluster does not answer in ``timeout``."""
    from confluent_kafka import KafkaException

    try:
        AdminClient({**settings.kafka_client_config(), "logger": _quiet}).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnreachable(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers!r} within {timeout:.0f} s "
            f"(RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS, and RECOSTREAM_KAFKA_SECURITY_PROTOCOL/SASL settings if the "
            f"cluster needs them): {exc.args[0].str() if exc.args and hasattr(exc.args[0], 'str') else exc}"
        ) from None


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


class TopicLayoutError(RuntimeError):
    """Topics the worker consumes together do not have the same number of partitions."""


def check_copartitioned(settings: Settings, timeout: float = 30.0) -> int:
    """The partition count shared by the inputs, impressions, control, catalogue and changelog topics.

    A worker owns partition ``p`` of all of them together (the range
    assignor hands partition ``p`` of every topic to one member), so their
    counts must be equal; otherwise some partitions would have no state or
    no owner. Raises :class:`TopicLayoutError` naming the topics.
    """
    admin = AdminClient(settings.kafka_client_config())
    names = [*settings.input_topics, settings.topic_impressions, settings.topic_control, settings.topic_items,
             settings.changelog_topic]
    topics = admin.list_topics(timeout=timeout).topics
    counts = {name: len(topics[name].partitions) for name in names if name in topics}
    missing = [n for n in names if n not in counts]
    if missing:
        raise TopicLayoutError(f"topics {missing} do not exist")
    if len(set(counts.values())) != 1:
        raise TopicLayoutError("topics consumed together must have the same number of partitions, got "
                               + ", ".join(f"{name}: {n}" for name, n in counts.items()))
    return next(iter(counts.values()))
