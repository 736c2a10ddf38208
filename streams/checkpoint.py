"""Model checkpoints in Redis, so a restarted worker resumes instead of relearning.

A checkpoint is the engine's full state (ranker, segments, live-quality state)
plus ``model_offsets``: per source partition, the next offset the models have
not learned. Order of operations, each step only after the previous one:

1. micro-batches are processed; their outputs are queued and written in the
   background (``streams.pipeline``);
2. between batches (the checkpoint holds the batch lock) every output is
   drained: on the broker and in Redis (``BatchProcessor.drain``);
3. the checkpoint is written (one ``SET``), reflecting exactly the events whose
   outputs are durable;
4. Faust commits acked offsets, each commit after draining the outputs again.

A crash anywhere replays from the last committed offset: profiles drop the
redelivered events (dedupe window with offsets) and the models relearn only
those past their checkpoint offsets (see ``models.engine``). Nothing is lost
and nothing is counted twice.

The key is per worker (``RECOSTREAM_WORKER_ID``, default ``hostname:metrics_port``,
stable across restarts of the same replica).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from models.engine import PersonalisationEngine

log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(self, app: Any, url: str, key: str, interval_s: float) -> None:
        self.app = app
        self.client = aioredis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=2)
        self.key = key
        self.interval_s = interval_s
        self._last = time.monotonic()
        self._saved_state: tuple | None = None
        self.restored = False
        # Held for a whole micro-batch by the agent, and by save(): a checkpoint
        # never sees a batch whose outputs are half written.
        self.lock = asyncio.Lock()

    async def restore(self) -> bool:
        """Replace the app's engine by the last checkpoint, once per process."""
        if self.restored:
            return False
        self.restored = True
        blob = await self.client.get(self.key)
        if blob is None:
            log.info("no model checkpoint at %s: starting fresh", self.key)
            return False
        self.app.engine = PersonalisationEngine.loads(blob)
        log.info("restored models from %s (%d bytes, version %d, offsets %s)", self.key, len(blob),
                 self.app.engine.model_version, self.app.engine.model_offsets)
        return True

    def _state(self) -> tuple:
        engine = self.app.engine
        return engine.model_version, tuple(sorted(engine.model_offsets.items())), engine.forgotten

    async def maybe_save(self) -> None:
        """Checkpoint if the interval has passed and the models changed since the last one."""
        if self.interval_s > 0 and time.monotonic() - self._last >= self.interval_s \
                and self._state() != self._saved_state:
            await self.save()

    async def save(self) -> bool:
        async with self.lock:
            return await self.save_locked()

    async def save_locked(self) -> bool:
        """Checkpoint now; the caller holds :attr:`lock`."""
        self._last = time.monotonic()
        started = time.perf_counter()
        await self.app.processor.drain()  # outputs durable before the checkpoint that reflects them
        state = self._state()
        blob = self.app.engine.dumps()
        try:
            await self.client.set(self.key, blob)
        except (RedisError, OSError) as exc:
            # The next interval retries; offsets are committed regardless, which
            # is safe: a restart then relearns from the older checkpoint's offsets.
            log.error("model checkpoint to %s failed: %s", self.key, exc)
            return False
        self._saved_state = state
        log.info("model checkpoint: %d bytes in %.0f ms, offsets %s", len(blob),
                 1000 * (time.perf_counter() - started), self.app.engine.model_offsets)
        return True

    async def delete(self) -> None:
        await self.client.delete(self.key)
