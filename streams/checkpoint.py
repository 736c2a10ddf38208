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
those past their checkpoint offsets (see ``models.engine``). The events
between their checkpoint and the committed offset are not redelivered: the
worker reads them again for the models before each partition's first batch
(``BatchProcessor._catch_up_models``, bounded per partition). Nothing is
counted twice, and profiles, outputs and models lose nothing.

Periodic checkpoints are written by a forked child (as Redis does BGSAVE):
pickling the models takes ~0.13 s at 20k customers and 20k items (0.4 s
before customers and MF latents were pickled as arrays), and doing it in the
worker stopped every batch for that long plus the ``SET``. The fork is not
free either: while the child runs (about a second on a busy 2-core machine)
the worker's batches take about twice as long (copy-on-write faults, the
child's CPU; measured in docs/BENCHMARKS.md, session 5), which is why the
default interval is 300 s. Each forked checkpoint's log line gives the
child's CPU and the worker's page faults meanwhile. The fork happens at step
3 with the batch lock held, so the child's copy-on-write memory is exactly
the state step 3 describes; the worker goes on with the next batch at once
while the child pickles and SETs. Writes stay in
order: every save first waits for a running child, so a later checkpoint (the
one after a forget, the one at shutdown) can never be overwritten by an
earlier one. A child whose worker died before it wrote gives up (an orphaned
older snapshot must not overwrite a newer worker's checkpoint). Shutdown and
forget checkpoints are written in process. Memory: pages the worker changes
while the child runs are copied (bounded by the state size).

The key is per worker (``RECOSTREAM_WORKER_ID``, default ``hostname:metrics_port``,
stable across restarts of the same replica).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import time
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from models.engine import PersonalisationEngine
from streams.metrics import Metrics

log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(self, app: Any, url: str, key: str, interval_s: float, fork: bool = hasattr(os, "fork"),
                 child_timeout_s: float = 300.0, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.url = url
        self.client = aioredis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=2)
        self.fork = fork
        self.child_timeout_s = child_timeout_s
        self._child: asyncio.Future | None = None  # the running checkpoint child, if any
        self.fork_ms = 0.0
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
                and self._state() != self._saved_state and (self._child is None or self._child.done()):
            async with self.lock:
                await self.save_locked(background=self.fork)

    async def save(self) -> bool:
        async with self.lock:
            return await self.save_locked()

    async def save_locked(self, background: bool = False) -> bool:
        """Checkpoint now; the caller holds :attr:`lock`.

        ``background``: pickle and write in a forked child and return once it
        is forked (see the module doc); otherwise return once it is written.
        """
        await self.wait_for_child()  # checkpoints land in the order they were taken
        self._last = time.monotonic()
        started = time.perf_counter()
        await self.app.processor.drain()  # outputs durable before the checkpoint that reflects them
        state = self._state()
        if background:
            return self._fork_child(state, started)
        blob = self.app.engine.dumps()
        try:
            await self.client.set(self.key, blob)
        except (RedisError, OSError) as exc:
            # The next interval retries; offsets are committed regardless: profiles
            # and outputs stay exact, and a crash before the next written
            # checkpoint makes the models re-read more on resume, up to the
            # catch-up bound (docs/RELIABILITY.md, known limits).
            log.error("model checkpoint to %s failed: %s", self.key, exc)
            self._count(False)
            return False
        self._saved_state = state
        self._count(True)
        log.info("model checkpoint: %d bytes in %.0f ms, offsets %s", len(blob),
                 1000 * (time.perf_counter() - started), self.app.engine.model_offsets)
        return True

    def _fork_child(self, state: tuple, started: float) -> bool:
        parent = os.getpid()
        offsets = dict(self.app.engine.model_offsets)
        forking = time.perf_counter()
        try:
            pid = os.fork()
        except OSError as exc:  # e.g. no memory for the child's page tables: retry at the next interval
            log.error("model checkpoint: cannot fork (%s); the next interval retries", exc)
            self._count(False)
            return False
        if pid == 0:  # the child: a frozen copy of the models; touch nothing else of the worker
            code = 1
            try:
                # The event loop's signal wake-up socket is shared with the worker:
                # a signal to the child must not reach the worker's handlers.
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                # Lowest CPU priority: on a busy machine the pickling must not take
                # the worker's (or the broker's) core; a checkpoint can wait.
                os.nice(19)
                blob = self.app.engine.dumps()
                if os.getppid() == parent:  # an orphan's older snapshot must not overwrite a newer one
                    redis.Redis.from_url(self.url, socket_timeout=30, socket_connect_timeout=2).set(self.key, blob)
                    code = 0
            finally:
                os._exit(code)  # no atexit handlers, no inherited buffers flushed
        self.fork_ms = 1000 * (time.perf_counter() - forking)  # the pause of the worker (logged)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt  # copy-on-write from here on (logged)
        self._child = asyncio.ensure_future(self._reap(pid, state, started, offsets, faults))
        return True

    def _count(self, written: bool) -> None:
        if self.metrics is not None:
            (self.metrics.checkpoints_written if written else self.metrics.checkpoints_failed).inc()
            if written:
                self.metrics.checkpoint_time.set(time.time())

    async def _reap(self, pid: int, state: tuple, started: float, offsets: dict, faults_at_fork: int) -> bool:
        written = await self._wait_child(pid, state, started, offsets, faults_at_fork)
        self._count(written)
        return written

    async def _wait_child(self, pid: int, state: tuple, started: float, offsets: dict, faults_at_fork: int) -> bool:
        loop = asyncio.get_running_loop()
        try:
            _, status, usage = await asyncio.wait_for(loop.run_in_executor(None, os.wait4, pid, 0),
                                                      self.child_timeout_s)
        except ChildProcessError:  # reaped by someone else: its outcome is unknown
            log.warning("model checkpoint child %d was reaped elsewhere; the next interval checkpoints again", pid)
            return False
        except asyncio.TimeoutError:
            os.kill(pid, signal.SIGKILL)
            await loop.run_in_executor(None, os.waitpid, pid, 0)
            log.error("model checkpoint child %d took over %.0f s; killed (the next interval retries)",
                      pid, self.child_timeout_s)
            return False
        if os.waitstatus_to_exitcode(status) != 0:
            log.error("model checkpoint child %d failed (exit status %d); the next interval retries", pid,
                      os.waitstatus_to_exitcode(status))
            return False
        self._saved_state = state
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_at_fork
        log.info("model checkpoint (forked): the worker paused %.1f ms to fork, the child wrote it %.0f ms later "
                 "using %.0f ms of CPU; meanwhile the worker took %d minor page faults (mostly copy-on-write), "
                 "offsets %s",
                 self.fork_ms, 1000 * (time.perf_counter() - started), 1000 * (usage.ru_utime + usage.ru_stime),
                 faults, offsets)
        return True

    async def wait_for_child(self) -> bool | None:
        """Wait for a running checkpoint child; its result, or None if there was none."""
        child, self._child = self._child, None
        return None if child is None else await child

    async def delete(self) -> None:
        await self.wait_for_child()
        await self.client.delete(self.key)
