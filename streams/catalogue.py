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


class CatalogueFollower:
    """Reads every partition of ``items`` from the beginning, forever, calling back per record.

    ``on_item`` gets each decoded item, ``on_removed`` the id of each tombstone;
    records that break the contract are skipped here (the worker's loop
    dead-letters them once, from the partition it owns).
    """

    def __init__(self, settings: Settings, on_item: Callable[[CatalogItem], None],
                 on_removed: Callable[[str], None]) -> None:
        self.settings = settings
        self.on_item = on_item
        self.on_removed = on_removed

    async def follow(self, should_stop: Callable[[], bool]) -> None:
        """Follow until ``should_stop()``; raises if the broker fails (the caller starts again)."""
        settings = self.settings
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
                        self._apply(msg.key, msg.value)
        finally:
            await consumer.stop()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            if key:
                self.on_removed(key.decode("utf-8", "replace"))
            return
        try:
            self.on_item(decode_item(value))
        except ContractError:
            pass  # dead-lettered once, by the owner of the partition
