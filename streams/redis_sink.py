"""Writing recommendations and profile mirrors to Redis, through outages.

Key layout (prefix ``RECOSTREAM_REDIS_PREFIX``, default ``rs``):

==============================  =========================================================
key                             value
==============================  =========================================================
``rs:recs:{user_id}``           JSON recommendation: ``user_id``, ``items`` [{item_id, score}],
                                ``model_version``, ``generated_at`` (epoch s), ``segment``
``rs:profile:{user_id}``        JSON profile summary: counts, first/last seen, RFM,
                                recent items, top categories, segment
``rs:model``                    hash: ``version``, ``updated_at``, ``users``, ``items``
``rs:checkpoint:{app}:{worker}``  model checkpoint of one worker (binary; see streams/checkpoint.py)
==============================  =========================================================

Writes go in one pipeline per micro-batch. If Redis is unreachable the write is
retried with capped exponential backoff until it succeeds: the agent awaits
it, so consumption pauses (backpressure) instead of buffering without bound or
committing offsets for outputs that were never written. One error is logged
per outage, and one line when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Mapping

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.metrics import Metrics

log = logging.getLogger(__name__)


class RedisKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def recs(self, user_id: str) -> str:
        return f"{self.prefix}:recs:{user_id}"

    def profile(self, user_id: str) -> str:
        return f"{self.prefix}:profile:{user_id}"

    @property
    def model(self) -> str:
        return f"{self.prefix}:model"

    def checkpoint(self, app_id: str, worker_id: str) -> str:
        return f"{self.prefix}:checkpoint:{app_id}:{worker_id}"


class RedisSink:
    def __init__(self, url: str, prefix: str, ttl_s: int, metrics: Metrics,
                 max_backoff_s: float = 5.0) -> None:
        self.client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self.keys = RedisKeys(prefix)
        self.ttl = ttl_s or None
        self.metrics = metrics
        self.max_backoff_s = max_backoff_s
        self._outage_since: float | None = None

    async def _retrying(self, build) -> None:
        """Run a pipeline built by ``build(pipe)`` until it succeeds (see module doc)."""
        backoff = 0.05
        while True:
            try:
                pipe = self.client.pipeline(transaction=False)
                build(pipe)
                await pipe.execute()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.metrics.redis_errors.inc()
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    self.metrics.redis_up.set(0)
                    log.error("Redis unreachable (%s); pausing consumption and retrying with backoff", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            if self._outage_since is not None:
                log.warning("Redis reachable again after %.1f s; catching up", time.monotonic() - self._outage_since)
                self._outage_since = None
                self.metrics.redis_up.set(1)
            return

    async def write(self, recs: Mapping[str, bytes], profiles: Mapping[str, bytes], model: Mapping[str, str | int | float]) -> None:
        def build(pipe) -> None:
            for user, payload in recs.items():
                pipe.set(self.keys.recs(user), payload, ex=self.ttl)
            for user, payload in profiles.items():
                pipe.set(self.keys.profile(user), payload, ex=self.ttl)
            if model:
                pipe.hset(self.keys.model, mapping=dict(model))

        await self._retrying(build)

    async def delete_user(self, user_id: str) -> None:
        await self._retrying(lambda pipe: pipe.delete(self.keys.recs(user_id), self.keys.profile(user_id)))

    async def close(self) -> None:
        await self.client.aclose()
