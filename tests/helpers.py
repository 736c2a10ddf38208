"""What the integration tests share: a worker process, waiting, reading topics, metrics and Redis."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import msgspec
import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from streams.kafka.produce import make_producer, publish_events
from streams.settings import Settings
from streams.sinks.redis import RedisKeys
from streams.tools.scrape import metric_sum, scrape
from streams.tools.up import spawn_worker, stop_process


def shop_events(n: int, n_users: int, n_items: int, seed: int) -> tuple[list, list]:
    """``n`` simulated shop events as the engine takes them (``ts`` in seconds), and the catalogue."""
    from types import SimpleNamespace

    from streams.tools.generator import ShopperSimulator

    sim = ShopperSimulator(n_users=n_users, n_items=n_items, seed=seed)
    events = [SimpleNamespace(event_id=p["event_id"], user_id=p["user_id"], item_id=p["item_id"], type=t,
                              ts=p["ts"] / 1000, category=p.get("category"), price=p.get("price"),
                              quantity=p.get("quantity"), order_id=p.get("order_id"))
              for t, p in sim.events(n)]
    return events, sim.catalogue()


def own_topics(settings: Settings, tag: str, **changes) -> Settings:
    """``settings`` for a test of its own: 4 partitions, an app id and input/output topics tagged
    ``tag`` (created), so that its workers share nothing with another test's."""
    from streams.kafka.topics import ensure_topics

    s = settings.replace(partitions=4, app_id=f"{settings.app_id}-{tag}", **changes)
    s = s.replace(**{f"topic_{t}": f"{s.redis_prefix}.{tag}.{t}" for t in
                     ("browse", "click", "purchase", "items", "recommendations", "dead_letter", "control",
                      "impressions")})
    ensure_topics(s)
    return s


def item_side(ranker, items: list[str]) -> dict:
    """The item side of a ``HybridRanker`` named by item id: popularity, co-visit and successor rows,
    the second stage's weights, the item factors, the number of events learned."""
    cat = ranker.catalog
    pop = ranker.items.popularity.scores(len(cat))

    def rows(matrix):
        out = {}
        for item in items:
            cols, vals = matrix.rows.row(cat.row(item))
            out[item] = sorted(zip([cat.item_id(int(c)) for c in cols], vals.tolist()))
        return out

    factors = {}
    if ranker.mf is not None:
        F = ranker.mf.item_factors
        factors = {item: F[cat.row(item)].tolist() for item in items if cat.row(item) < len(F)}
    return {"popularity": {item: float(pop[cat.row(item)]) for item in items},
            "covisit": rows(ranker.items.covisit), "successors": rows(ranker.items.successors),
            "choice": ranker.choice.weights.tolist(), "factors": factors, "version": ranker.model_version}


class WorkerHandle:
    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc = spawn_worker(settings, log_path)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        return stop_process(self.proc)


def poll_until(predicate: Callable[[], object], timeout: float, interval: float = 0.2,
               between: Callable[[], None] | None = None):
    """Poll ``predicate`` until truthy and return its value; ``None`` on timeout (``between`` runs
    after each falsy poll)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if between is not None:
            between()
        time.sleep(interval)
    return None


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2,
               worker: WorkerHandle | None = None):
    """Poll ``predicate`` until truthy; fail with ``what`` (and the worker log) on timeout."""

    def alive() -> None:
        if worker is not None and not worker.alive():
            pytest.fail(f"worker died while waiting for {what}:\n{worker.log()[-4000:]}")

    value = poll_until(predicate, timeout, interval, alive)
    if value:
        return value
    tail = f"\nworker log:\n{worker.log()[-4000:]}" if worker is not None else ""
    pytest.fail(f"timed out after {timeout}s waiting for {what}{tail}")


def read_topic(settings: Settings, topic: str, timeout: float = 10.0) -> list:
    """Every message currently in ``topic`` (all partitions, from the beginning).

    Done at each partition's end-of-partition event, not at the high watermark
    of a ListOffsets request: tansu answers that with the last record batch's
    base offset + 1, so a watermark-bounded reader misses the rest of the
    batch. The fetch response's watermark, behind the end-of-partition event,
    is exact.
    """
    c = Consumer({**settings.kafka_client_config(), "group.id": f"reader-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", "enable.partition.eof": True})
    try:
        meta = c.list_topics(topic, timeout=timeout).topics[topic]
        c.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        out, done = [], set()
        deadline = time.monotonic() + timeout
        while len(done) < len(meta.partitions) and time.monotonic() < deadline:
            for msg in c.consume(1000, timeout=0.5):
                if msg.error() is None:
                    out.append(msg)
                elif msg.error().code() == KafkaError._PARTITION_EOF:
                    done.add(msg.partition())
        return out
    finally:
        c.close()


def scrape_metric(settings: Settings, name: str) -> float:
    """Sum of every sample of metric ``name`` on the worker's /metrics (0 if not up yet)."""
    return metric_sum(scrape(settings.metrics_port), name)


class StreamProducer:
    """Publishes generated events continuously from a thread, remembering each one."""

    def __init__(self, settings: Settings, sim, rate: float) -> None:
        self.settings, self.sim, self.rate = settings, sim, rate
        self.sent: list[tuple[str, dict]] = []  # acknowledged by the broker
        self.failure: Exception | None = None
        self._stop = threading.Event()
        self._producer = make_producer(settings)
        self._thread = threading.Thread(target=self._run, name="stream-producer", daemon=True)

    def _events(self):
        for pair in self.sim.events(10**9):
            if self._stop.is_set():
                return
            yield pair

    def _run(self) -> None:
        try:
            # Only events the broker acknowledged count as sent.
            publish_events(self._producer, self.settings, self._events(), rate=self.rate, live_ts=True,
                           on_delivered=self.sent.append)
        except Exception as exc:  # reported by stop()
            self.failure = exc

    def __enter__(self) -> "StreamProducer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        if self.failure is not None:  # expectations use acknowledged events only
            print(f"note: the test's producer reported: {self.failure}")

    def __exit__(self, *exc) -> None:
        self.stop()

    def expected_totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, payload in self.sent:
            out[payload["user_id"]] = out.get(payload["user_id"], 0) + 1
        return out


def profile_totals(redis_client, settings: Settings, users) -> dict[str, int]:
    """Events counted in each user's profile mirror in Redis (0 if none yet)."""
    keys = RedisKeys(settings.redis_prefix)
    raws = redis_client.mget([keys.profile(u) for u in users])
    return {u: (sum(msgspec.json.decode(r)["counts"].values()) if r else 0) for u, r in zip(users, raws)}
