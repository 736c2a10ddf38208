"""Consumers that do nothing with the events: what the worker's rate compares against.

Each reads the bench's pre-produced events in its own consumer group (or none),
so it sees them all, and is timed without its start-up (connection, group join).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from typing import Any

from streams.settings import Settings


def aiokafka_security(settings: Settings) -> dict[str, Any]:
    """aiokafka's security arguments, translated from :meth:`Settings.kafka_client_config`.

    >>> aiokafka_security(Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u",
    ...                            kafka_sasl_password="p"))
    {'security_protocol': 'SASL_PLAINTEXT', 'sasl_mechanism': 'PLAIN', 'sasl_plain_username': 'u', 'sasl_plain_password': 'p'}
    """
    conf = settings.kafka_client_config()
    proto = conf["security.protocol"]
    out: dict[str, Any] = {"security_protocol": proto}
    if proto.endswith("SSL"):
        out["ssl_context"] = ssl.create_default_context(cafile=conf.get("ssl.ca.location"))
    if proto.startswith("SASL"):
        out.update(sasl_mechanism=conf["sasl.mechanism"], sasl_plain_username=conf["sasl.username"],
                   sasl_plain_password=conf["sasl.password"])
    return out


async def assigned_consumer(settings: Settings, topics: list[str], **config: Any) -> tuple[Any, list]:
    """A started aiokafka consumer (no group) assigned every partition of ``topics``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                enable_auto_commit=False, **config, **aiokafka_security(settings))
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
    except BaseException:
        await consumer.stop()
        raise
    return consumer, tps


async def _raw_consume(settings: Settings, topics: list[str], expect: int, timeout: float) -> dict:
    consumer, tps = await assigned_consumer(settings, topics, auto_offset_reset="earliest")
    try:
        await consumer.seek_to_beginning(*tps)
        # Assigned and positioned: every fetch from here counts.
        n = 0
        t_first = time.perf_counter()
        t_last = None
        deadline = time.monotonic() + timeout
        while n < expect and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            got = sum(len(v) for v in batches.values())
            if got:
                n += got
                t_last = time.perf_counter()
        eps = n / (t_last - t_first) if t_last is not None and t_last > t_first else None
        return {"events": n, "eps": eps}
    finally:
        await consumer.stop()


def raw_consume_eps(settings: Settings, topics: list[str], expect: int, timeout: float = 300.0) -> dict:
    """Plain aiokafka ``getmany``, no decoding: ``{"events", "eps"}``."""
    return asyncio.run(_raw_consume(settings, topics, expect, timeout))


def bare_loop_eps(settings: Settings, topics: list[str], expect: int, timeout: float = 300.0) -> dict:
    """The worker's consumer (``streams.loop.make_consumer``), in its own group, taking micro-batches
    of ``batch_max_events`` and doing nothing with them: the ceiling of the worker's loop.

    Counts the events after the first batch over the time from that batch to the last.
    """
    from streams.loop import make_consumer

    consumer = make_consumer(settings.replace(app_id=f"{settings.app_id}-ref-loop-{uuid.uuid4().hex[:6]}"))
    try:
        consumer.subscribe(topics)
        n = first_n = 0
        t_first = t_last = None
        deadline = time.monotonic() + timeout
        while n < expect and time.monotonic() < deadline:
            batch = consumer.consume(settings.batch_max_events, settings.batch_max_wait_s)
            if not batch:
                continue
            now = time.perf_counter()
            n += len(batch)
            if t_first is None:
                t_first, first_n = now, len(batch)
            t_last = now
        eps = (n - first_n) / (t_last - t_first) if t_first is not None and t_last > t_first else None
        return {"events": n, "eps": eps}
    finally:
        consumer.close()
