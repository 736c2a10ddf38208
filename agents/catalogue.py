"""Every worker follows the whole catalogue, so unavailable items are never recommended."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


def register(app) -> None:
    @app.task
    async def follow_items() -> None:
        """Catalogue records update this worker's ranker, between batches of its loop."""
        follower = app.runtime.catalogue
        while not app.should_stop:
            try:
                await follower.follow(should_stop=lambda: app.should_stop)
            except Exception:  # the catalogue must keep following; the loop is unaffected
                log.exception("following the catalogue failed; starting again in 1 s")
                await asyncio.sleep(1.0)
