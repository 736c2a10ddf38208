"""Following the compacted ``items`` topic: every worker needs the whole catalogue.

A consumer-group agent would split the catalogue across workers, so each worker
reads every partition of ``items`` itself, from the beginning, without a group
(the topic is compacted: it holds one record per item). A tombstone (null
value) means the item left the catalogue: it becomes unavailable.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.contract import CatalogItem, ContractError, decode_item
from streams.settings import Settings

log = logging.getLogger(__name__)


def _security(settings: Settings) -> dict[str, Any]:
    proto = settings.kafka_security_protocol
    conf: dict[str, Any] = {"security_protocol": proto}
    if proto.endswith("SSL"):
        conf["ssl_context"] = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    if proto.startswith("SASL"):
        conf.update(sasl_mechanism=settings.kafka_sasl_mechanism, sasl_plain_username=settings.kafka_sasl_username,
                    sasl_plain_password=settings.kafka_sasl_password)
    return conf


async def follow_catalogue(settings: Settings, on_item: Callable[[CatalogItem], None],
                           on_removed: Callable[[str], None], should_stop: Callable[[], bool]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest", **_security(settings))
    await consumer.start()
    try:
        partitions = None
        while not partitions and not should_stop():
            await consumer.topics()  # refreshes cluster metadata
            partitions = consumer.partitions_for_topic(settings.topic_items)
        if not partitions:
            return
        consumer.assign([TopicPartition(settings.topic_items, p) for p in sorted(partitions)])
        while not should_stop():
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                for msg in records:
                    if msg.value is None:
                        if msg.key:
                            on_removed(msg.key.decode("utf-8", "replace"))
                        continue
                    try:
                        on_item(decode_item(msg.value))
                    except ContractError:
                        pass  # dead-lettered once, by the catalogue check agent
    finally:
        await consumer.stop()
