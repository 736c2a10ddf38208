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
``rs:checkpoint:{app}:{worker}``  model checkpoint of one worker (binary; see streams/checkpointing/checkpointer.py)
``rs:fence:{app}:{partition}``  highest generation that owned the partition (see Fencing)
``rs:effect:{app}:{partition}``  the experiment's counts of the partition (``EffectCounts.to_bytes()``,
                                no TTL): overwritten, never added to, by each batch that
                                changed them and at every takeover; ``recostream experiment
                                report`` merges the partitions'
==============================  =========================================================

A micro-batch's writes are ONE command: a Lua script (``WRITE_BATCH``, run with
``EVALSHA``) that sets every key with its TTL and updates the model hash
inside Redis, because redis-py spends its Python time per command of a
pipeline, and a batch writes thousands of keys (docs/BENCHMARKS.md has the
numbers). The price: every key of a batch must live on one Redis node (no
Redis Cluster; a single primary, with Sentinel or replicas, is fine).

Fencing. The keys of a customer are written under the generation of the
partition the customer belongs to (``streams/state/changelog.py``). Redis
keeps the highest generation seen per partition (``{prefix}:fence:{app}:{p}``,
raised by every new owner when it takes the partition over); the script
skips the keys of a partition whose fence is above the writer's generation,
so a worker that lost a partition while paused cannot overwrite what the
new owner wrote. Skipped keys are counted (``recostream_fenced_writes_total``).

If Redis is unreachable a write is retried with capped exponential backoff
until it succeeds; the batch loop waits for it (backpressure: at most one
batch ahead, ``streams/sinks/overlapped.py``) instead of buffering without
bound or moving positions past outputs never written.
One error is logged per outage, and one line when it ends.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Mapping, Sequence, TypeVar

import redis
from redis.exceptions import AuthenticationError, AuthorizationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")


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

    def fence(self, app_id: str, partition: int) -> str:
        return f"{self.prefix}:fence:{app_id}:{partition}"

    def effect(self, app_id: str, partition: int) -> str:
        return f"{self.prefix}:effect:{app_id}:{partition}"


# KEYS[1]: the model hash; KEYS[2 .. 1+np]: the fence key of each partition of the batch;
# then the string keys, partition by partition: its keys with a TTL, then its keys without.
# ARGV: TTL (0 = none); n, then n field/value pairs of the model hash; np, then for each
# partition its writer's generation, its number of keys with a TTL and its number without
# (its effect key: 0 or 1); then one value per string key.
# Returns the number of keys skipped because their partition's fence is above the writer.
WRITE_BATCH = """
local ttl = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local a = 3 + 2 * n
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 3, a - 1)) end
local np = tonumber(ARGV[a])
local k = 2 + np
local v = a + 1 + 3 * np
local fenced = 0
for i = 1, np do
  local gen = tonumber(ARGV[a + 3 * i - 2])
  local nkeys = tonumber(ARGV[a + 3 * i - 1])
  local nlasting = tonumber(ARGV[a + 3 * i])
  local fence = tonumber(redis.call('GET', KEYS[1 + i]) or '-1')
  if fence > gen then
    fenced = fenced + nkeys + nlasting
  else
    if fence < gen then redis.call('SET', KEYS[1 + i], ARGV[a + 3 * i - 2]) end
    for j = 0, nkeys - 1 do
      if ttl > 0 then
        redis.call('SET', KEYS[k + j], ARGV[v + j], 'EX', ttl)
      else
        redis.call('SET', KEYS[k + j], ARGV[v + j])
      end
    end
    for j = nkeys, nkeys + nlasting - 1 do
      redis.call('SET', KEYS[k + j], ARGV[v + j])
    end
  end
  k = k + nkeys + nlasting
  v = v + nkeys + nlasting
end
return fenced
"""

# KEYS[1]: a partition's fence; ARGV[1]: the new owner's generation. Returns the fence after.
RAISE_FENCE = """
local fence = tonumber(redis.call('GET', KEYS[1]) or '-1')
local gen = tonumber(ARGV[1])
if gen > fence then redis.call('SET', KEYS[1], ARGV[1]) return gen end
return fence
"""


class RedisAccessDenied(RuntimeError):
    """Redis refused the worker's credentials or permissions: retrying cannot help."""


def _denied(exc: Exception) -> bool:
    text = str(exc)
    return isinstance(exc, (AuthenticationError, AuthorizationError)) or (
        isinstance(exc, ResponseError) and text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")))


class RedisSink:
    def __init__(self, url: str, prefix: str, ttl_s: int, metrics: Metrics, app_id: str = "recostream",
                 max_backoff_s: float = 5.0) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self.keys = RedisKeys(prefix)
        self.app_id = app_id
        self.ttl = ttl_s or None
        self.metrics = metrics
        self.max_backoff_s = max_backoff_s
        self._outage_since: float | None = None
        self._run_id: str | None = None
        #: Set when Redis came back from an outage as a new server process: it may have lost
        #: recent writes (append-only file fsynced each second), so owned customers are written again.
        self.restarted = False
        self._write_batch = self.client.register_script(WRITE_BATCH)
        self._raise_fence = self.client.register_script(RAISE_FENCE)

    def retrying(self, attempt: Callable[[], T]) -> T:
        """Run ``attempt()`` until it succeeds (see module doc)."""
        backoff = 0.05
        while True:
            try:
                result = attempt()
            except (RedisConnectionError, RedisTimeoutError, OSError, ResponseError) as exc:
                if _denied(exc):
                    raise RedisAccessDenied(f"Redis refused access ({exc}); check RECOSTREAM_REDIS_URL "
                                            "(its password, user and ACLs)") from None
                if isinstance(exc, ResponseError):
                    raise
                self.metrics.redis_errors.inc()
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    self.metrics.redis_up.set(0)
                    log.error("Redis unreachable (%s); pausing consumption and retrying with backoff", exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            if self._outage_since is not None:
                log.warning("Redis reachable again after %.1f s; catching up", time.monotonic() - self._outage_since)
                self._outage_since = None
                self.metrics.redis_up.set(1)
                self._check_restart()
            elif self._run_id is None:
                self._check_restart()
            return result

    def _check_restart(self) -> None:
        try:
            run_id = self.client.info("server").get("run_id")
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return  # checked again after the next outage
        if self._run_id is not None and run_id != self._run_id:
            log.warning("Redis restarted during the outage (it may have lost its last writes); "
                        "writing every owned customer's keys again")
            self.restarted = True
        self._run_id = run_id

    def check(self, timeout_s: float = 30.0) -> None:
        """At start: fail, naming the setting, when Redis refuses the credentials or does not answer in time."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.client.ping()
                return
            except (RedisConnectionError, RedisTimeoutError, OSError, ResponseError) as exc:
                if _denied(exc):
                    raise RedisAccessDenied(f"Redis refused access ({exc}); check RECOSTREAM_REDIS_URL "
                                            "(its password, user and ACLs)") from None
                if isinstance(exc, ResponseError) or time.monotonic() > deadline:
                    raise RedisAccessDenied(f"cannot reach Redis within {timeout_s:.0f} s ({exc}); check "
                                            "RECOSTREAM_REDIS_URL") from None
                time.sleep(0.5)

    def fence_key(self, partition: int) -> str:
        return self.keys.fence(self.app_id, partition)

    def raise_fence(self, partition: int, gen: int) -> int:
        """Make ``gen`` the lowest generation whose writes to ``partition`` are accepted; the fence after."""
        return int(self.retrying(lambda: self._raise_fence(keys=[self.fence_key(partition)], args=[gen])))

    def write(self, parts: Sequence[tuple[int, int, Mapping[str, bytes], Mapping[str, bytes]]],
              model: Mapping[str, str | int | float], effects: Mapping[int, tuple[int, bytes]] | None = None,
              on_durable: Callable[[], None] | None = None) -> int:
        """Write ``(partition, generation, recs by user, profiles by user)`` groups, the model hash and
        ``{partition: (generation, the partition's experiment counts)}`` (fenced like the other keys),
        then call ``on_durable()``; synchronous (the worker runs it on a thread of its own:
        ``streams/sinks/overlapped.py``).

        Returns the number of keys skipped by a fence (see the module doc)."""
        effects = effects or {}
        groups = list(parts) + [(p, gen, {}, {}) for p, (gen, _) in effects.items()
                                if all(p != q for q, _, _, _ in parts)]
        keys = [self.keys.model] + [self.fence_key(p) for p, _, _, _ in groups]
        args: list = [self.ttl or 0, len(model)]
        for field, value in model.items():
            args += (field, value)
        args.append(len(groups))
        values: list = []
        for p, gen, recs, profiles in groups:
            effect = effects.get(p)
            args += (gen, len(recs) + len(profiles), 0 if effect is None else 1)
            keys += [self.keys.recs(user) for user in recs]
            keys += [self.keys.profile(user) for user in profiles]
            values += recs.values()
            values += profiles.values()
            if effect is not None:
                keys.append(self.keys.effect(self.app_id, p))
                values.append(effect[1])
        args += values
        fenced = int(self.retrying(lambda: self._write_batch(keys=keys, args=args)))
        if fenced:
            self.metrics.fenced_writes.inc(fenced)
        if on_durable is not None:
            on_durable()
        return fenced

    def flush(self) -> None:
        """Nothing to wait for: a write is durable when it returns."""

    def delete_user(self, user_id: str) -> None:
        self.retrying(lambda: self.client.delete(self.keys.recs(user_id), self.keys.profile(user_id)))

    def close(self) -> None:
        self.client.close()
