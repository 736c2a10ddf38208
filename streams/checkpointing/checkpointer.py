"""Model checkpoints in Redis, so a restarted worker resumes instead of relearning.

A checkpoint is the engine's full state (ranker, segments, live-quality state)
plus ``model_offsets`` and ``item_log_offset``: per source partition, the
next offset whose item-side update the models have not applied, and the next
record of the item-updates log to apply. It is taken on the consumer thread
between batches (``streams/loop.py``), after every output is acknowledged.

A restarted worker applies the item-updates log from its checkpoint's
``item_log_offset`` before it takes partitions
(``streams/sharing/item_log.py``): every batch whose input position was
recorded had its update in the log first, so the item side misses nothing;
each customer's own state comes with their profile. A worker without a
checkpoint of its own starts from the peers' furthest along the log.

Periodic checkpoints are written by a forked child (as Redis does BGSAVE):
pickling the models grows with customers and items, and on the consumer
thread every batch would wait for it and the ``SET``. The fork is not free
either: while the child runs, the worker's batches are slower (copy-on-write
faults, the child's CPU; docs/BENCHMARKS.md has the numbers), which is why
the default interval is 300 s. Each forked checkpoint's log line gives the
child's CPU and the worker's page faults meanwhile. Writes stay in order: every save
first waits for a running child, so a later checkpoint (the one after a
forget, the one at shutdown) can never be overwritten by an earlier one. A
child whose worker died before it wrote gives up (an orphaned older snapshot
must not overwrite a newer worker's checkpoint). Shutdown and forget
checkpoints are written in process.

The key is per worker (``RECOSTREAM_WORKER_ID``, default ``hostname:metrics_port``,
stable across restarts of the same replica).
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import time
from typing import Any, Callable

import redis
from redis.exceptions import RedisError

from models.engine import PersonalisationEngine
from streams.metrics import Metrics

log = logging.getLogger(__name__)


def load_engine(client: redis.Redis, key: str) -> PersonalisationEngine | None:
    """The engine of the last checkpoint at ``key``, or ``None``."""
    blob = client.get(key)
    if blob is None:
        log.info("no model checkpoint at %s: starting fresh", key)
        return None
    engine = PersonalisationEngine.loads(blob)
    log.info("restored models from %s (%d bytes, version %d, offsets %s)", key, len(blob), engine.model_version,
             engine.model_offsets)
    return engine


def load_newest_peer(client: redis.Redis, pattern: str) -> PersonalisationEngine | None:
    """The checkpoint among the keys matching ``pattern`` (the other workers') that is furthest along
    the item-updates log, or ``None``: a worker without a checkpoint of its own starts from it and
    applies the log's tail (the item side is the same in every worker; the customers' own state
    comes with their profiles, whatever the checkpoint holds of them)."""
    best = None
    for key in client.scan_iter(match=pattern, count=100):
        engine = load_engine(client, key)
        if engine is not None and (best is None or engine.item_log_offset > best.item_log_offset):
            best = engine
    return best


class Checkpointer:
    """Writes the engine's checkpoints (between batches; see the module doc).

    ``drain`` makes every output durable; it runs before each checkpoint.
    """

    def __init__(self, engine: PersonalisationEngine, drain: Callable[[], None], url: str, key: str,
                 interval_s: float, fork: bool = hasattr(os, "fork"), child_timeout_s: float = 300.0,
                 metrics: Metrics | None = None) -> None:
        self.engine = engine
        self.drain = drain
        self.metrics = metrics
        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=2)
        self.fork = fork
        self.child_timeout_s = child_timeout_s
        self._child: _Child | None = None  # the running checkpoint child, if any
        self.key = key
        self.interval_s = interval_s
        self._last = time.monotonic()
        self._saved_state: tuple | None = None

    def _state(self) -> tuple:
        engine = self.engine
        return engine.model_version, tuple(sorted(engine.model_offsets.items())), engine.forgotten

    def maybe_save(self) -> None:
        """Checkpoint if the interval has passed and the models changed since the last one; reap a child."""
        if self._child is not None and self._child.poll():
            self._finish(self._child)
            self._child = None
        if self.interval_s > 0 and time.monotonic() - self._last >= self.interval_s \
                and self._state() != self._saved_state and self._child is None:
            self.save(background=self.fork)

    def save(self, background: bool = False) -> bool:
        """Checkpoint now: in a forked child (``background``; returns once forked) or in process."""
        self.wait_for_child()  # checkpoints land in the order they were taken
        self._last = time.monotonic()
        started = time.perf_counter()
        self.drain()  # outputs durable before the checkpoint that reflects them
        state = self._state()
        if background:
            return self._fork_child(state, started)
        blob = self.engine.dumps()
        try:
            self.client.set(self.key, blob)
        except (RedisError, OSError) as exc:
            # The next interval retries; positions are written regardless: profiles
            # and outputs stay exact, and a crash before the next written
            # checkpoint makes the models re-read more on resume, up to the
            # catch-up bound (docs/RELIABILITY.md, known limits).
            log.error("model checkpoint to %s failed: %s", self.key, exc)
            self._count(False)
            return False
        self._saved_state = state
        self._count(True)
        log.info("model checkpoint: %d bytes in %.0f ms, offsets %s", len(blob),
                 1000 * (time.perf_counter() - started), self.engine.model_offsets)
        return True

    def _fork_child(self, state: tuple, started: float) -> bool:
        parent = os.getpid()
        offsets = dict(self.engine.model_offsets)
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
                # The parent's event loop has a signal wake-up socket: a signal
                # to the child must not reach the worker's handlers.
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                # Lowest CPU priority: on a busy machine the pickling must not take
                # the worker's (or the broker's) core; a checkpoint can wait.
                os.nice(19)
                blob = self.engine.dumps()
                if os.getppid() == parent:  # an orphan's older snapshot must not overwrite a newer one
                    redis.Redis.from_url(self.url, socket_timeout=30, socket_connect_timeout=2).set(self.key, blob)
                    code = 0
            finally:
                os._exit(code)  # no atexit handlers, no inherited buffers flushed
        fork_ms = 1000 * (time.perf_counter() - forking)  # the pause of the worker (logged)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt  # copy-on-write from here on (logged)
        self._child = _Child(pid, state, started, offsets, faults, fork_ms, time.monotonic() + self.child_timeout_s)
        return True

    def _count(self, written: bool) -> None:
        if self.metrics is not None:
            (self.metrics.checkpoints_written if written else self.metrics.checkpoints_failed).inc()
            if written:
                self.metrics.checkpoint_time.set(time.time())

    def _finish(self, child: "_Child") -> bool:
        written = child.outcome(self.child_timeout_s)
        if written:
            self._saved_state = child.state
        self._count(written)
        return written

    def wait_for_child(self) -> bool | None:
        """Wait for a running checkpoint child; its result, or None if there was none."""
        child, self._child = self._child, None
        if child is None:
            return None
        while not child.poll():
            time.sleep(0.01)
        return self._finish(child)

    def delete(self) -> None:
        self.wait_for_child()
        self.client.delete(self.key)


class _Child:
    """A forked checkpoint child and the facts its log line reports."""

    def __init__(self, pid: int, state: tuple, started: float, offsets: dict, faults_at_fork: int, fork_ms: float,
                 deadline: float) -> None:
        self.pid, self.state, self.started, self.offsets = pid, state, started, offsets
        self.faults_at_fork, self.fork_ms, self.deadline = faults_at_fork, fork_ms, deadline
        self.status: int | None = None
        self.usage: Any = None
        self.gone = False

    def poll(self) -> bool:
        """True once the child has exited (reaped here) or was killed for taking too long."""
        if self.status is not None or self.gone:
            return True
        try:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped by someone else: its outcome is unknown
            self.gone = True
            return True
        if pid:
            self.status, self.usage = status, usage
            return True
        if time.monotonic() > self.deadline:
            os.kill(self.pid, signal.SIGKILL)
            _, self.status, self.usage = os.wait4(self.pid, 0)
            self.gone = True
            log.error("model checkpoint child %d took too long; killed (the next interval retries)", self.pid)
            return True
        return False

    def outcome(self, timeout_s: float) -> bool:
        if self.gone:
            if self.status is None:
                log.warning("model checkpoint child %d was reaped elsewhere; the next interval checkpoints again",
                            self.pid)
            return False
        code = os.waitstatus_to_exitcode(self.status)
        if code != 0:
            log.error("model checkpoint child %d failed (exit status %d); the next interval retries", self.pid, code)
            return False
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self.faults_at_fork
        log.info("model checkpoint (forked): the worker paused %.1f ms to fork, the child wrote it %.0f ms later "
                 "using %.0f ms of CPU; meanwhile the worker took %d minor page faults (mostly copy-on-write), "
                 "offsets %s", self.fork_ms, 1000 * (time.perf_counter() - self.started),
                 1000 * (self.usage.ru_utime + self.usage.ru_stime), faults, self.offsets)
        return True
