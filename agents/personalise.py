"""Shop events become fresh recommendations, one micro-batch at a time."""

from __future__ import annotations

import asyncio
import logging
import os

log = logging.getLogger(__name__)


def register(app) -> None:
    @app.task
    async def personalise() -> None:
        """The worker's loop consumes its partitions' events, updates profiles and models, and refreshes
        those shoppers' top-N; Faust stopping the task stops the loop after its batch."""
        loop = app.runtime.loop
        thread = asyncio.ensure_future(asyncio.to_thread(loop.run))
        try:
            await asyncio.shield(thread)
        except asyncio.CancelledError:
            loop.stop()
            await thread  # positions and the final checkpoint are written before the worker exits
            raise
        except Exception:
            # Nothing after the last position record is lost: the next owner
            # processes it again. Exit loudly so a supervisor restarts the worker.
            log.critical("the worker's loop failed; exiting (status 70) without writing positions", exc_info=True)
            logging.shutdown()
            os._exit(70)
