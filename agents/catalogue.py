"""Every worker follows the whole catalogue, so unavailable items are never recommended."""

from __future__ import annotations

import asyncio
import logging

from streams.catalogue import follow_catalogue

log = logging.getLogger(__name__)


def register(app) -> None:
    @app.task
    async def follow_items() -> None:
        """Catalogue records update this worker's ranker, between batches of its loop."""
        runtime = app.runtime
        engine, submit = runtime.engine, runtime.loop.submit
        while not app.should_stop:
            try:
                await follow_catalogue(
                    runtime.settings,
                    on_item=lambda item: submit(lambda: engine.upsert_item(item.item_id, item.category,
                                                                           item.available)),
                    on_removed=lambda item_id: submit(lambda: engine.upsert_item(item_id, available=False)),
                    should_stop=lambda: app.should_stop,
                )
            except Exception:  # the catalogue must keep following; the loop is unaffected
                log.exception("following the catalogue failed; starting again in 1 s")
                await asyncio.sleep(1.0)
