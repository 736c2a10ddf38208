"""Every worker follows the whole catalogue, so unavailable items are never recommended."""

from __future__ import annotations

from streams.catalogue import follow_catalogue
from streams.contract import ContractError, decode_item


def register(app) -> None:
    s = app.settings_
    items_topic = app.topic(s.topic_items, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    @app.task
    async def follow_items() -> None:
        """Catalogue records update this worker's ranker as they arrive."""
        await follow_catalogue(
            s,
            on_item=lambda item: app.engine.upsert_item(item.item_id, item.category, item.available),
            on_removed=lambda item_id: app.engine.upsert_item(item_id, available=False),
            should_stop=lambda: app.should_stop,
        )

    @app.agent(items_topic, name="check-catalogue")
    async def check_catalogue(stream):
        """Invalid catalogue records go to the dead-letter topic, once (each partition has one owner)."""
        async for event in stream.events():
            if event.message.value is None:
                continue  # tombstone: an item removed from the catalogue
            try:
                decode_item(event.message.value)
            except ContractError as err:
                app.processor.send_dead_letter(err, event.message)
