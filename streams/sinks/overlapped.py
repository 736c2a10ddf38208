"""Redis writes off the batch's critical path: one write in flight while the loop goes on.

A batch's Redis write is one script call (``streams/sinks/redis.py``), and
most of its time is Redis running the script: a profile of the worker in
``recostream bench`` found its loop waiting for that reply a sixth of the
time. :class:`OverlappedViews` runs each write on a thread of its own, so the
loop learns the next batch meanwhile (the thread waits on the socket without
the interpreter lock). What holds, and why:

* **Order.** One thread, at most one write in flight: :meth:`write` first
  waits for the previous write, so writes reach Redis in batch order, as when
  they were inline.
* **Backpressure.** For the same reason, during a Redis outage the loop is at
  most one batch ahead of Redis, never an unbounded queue.
* **Durability.** A write is durable once :meth:`flush` returns. The position
  checkpoint drains this sink with the Kafka outputs before it records a
  position (``streams/checkpointing/positions.py``), so no position passes a
  batch whose keys are not in Redis.
* **Errors.** An exception of a write (credentials refused, a script error)
  is raised by the next :meth:`write` or :meth:`flush`, on the loop's
  thread: the loop stops, as it did when the write was inline, and since the
  commit drains first, it records no position past the failed batch.
* **Fences and deletions** wait for the write in flight: a takeover's fence
  is raised, and a forgotten customer's keys deleted, after every earlier
  write of this worker.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Callable, Mapping, Sequence

from streams.ports import ViewGroup
from streams.sinks.redis import RedisSink


class OverlappedViews:
    """A :class:`~streams.ports.ViewSink` over ``views`` whose writes run on a thread of their own, one at a time."""

    def __init__(self, views: RedisSink) -> None:
        self.views = views
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: Future | None = None
        # A daemon: a worker stopping on an error must not hang on a write retrying against a dead Redis.
        self._thread = threading.Thread(target=self._serve, name="redis-writes", daemon=True)
        self._thread.start()

    @property
    def restarted(self) -> bool:
        return self.views.restarted

    @restarted.setter
    def restarted(self, value: bool) -> None:
        self.views.restarted = value

    def write(self, parts: Sequence[ViewGroup], model: Mapping[str, str | int | float],
              effects: Mapping[int, tuple[int, bytes]] | None = None,
              on_durable: Callable[[], None] | None = None) -> None:
        """Start writing once the previous write returned (raising its error, if any); the arguments
        must not change afterwards. ``on_durable`` runs on the writer's thread once Redis holds them."""
        self.flush()
        future: Future = Future()
        self._jobs.put((future, lambda: self.views.write(parts, model, effects, on_durable)))
        self._pending = future

    def flush(self) -> None:
        """Return once every write started so far is in Redis; raise the error of one that failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def raise_fence(self, partition: int, gen: int) -> int:
        self.flush()
        return self.views.raise_fence(partition, gen)

    def delete_user(self, user_id: str) -> None:
        self.flush()
        self.views.delete_user(user_id)

    def _serve(self) -> None:
        while True:
            future, run = self._jobs.get()
            try:
                future.set_result(run())
            except BaseException as exc:  # raised on the loop's thread by flush()
                future.set_exception(exc)
