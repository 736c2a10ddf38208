"""``freshness_ms``: produce call -> the shopper's recommendations written to Redis, at a fixed offered load.

The workers stay up after the throughput phase; events are produced at
``rate`` events/s, each stamped with its produce time. :class:`RecsWatcher`
records when each shopper's recommendation key is written and up to which
event time that write covers; an event's freshness is the time from its
produce call to the first write covering it (when a client could read it).
The worker's own ``recostream_freshness_seconds`` histogram over the phase
is reported next to it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable

from streams.settings import Settings
from streams.sinks.redis import RedisKeys
from streams.tools.bench.stats import by_window, histogram_quantile, percentiles
from streams.tools.bench.workers import Workers
from streams.tools.scrape import histogram_buckets, metric_sum

# After the last event is produced: how long the workers get to consume the tail,
# and how long the watcher keeps listening for the last writes.
DRAIN_S = 10.0
SETTLE_S = 0.5


class RecsWatcher:
    """Records when each shopper's recommendation key is written, and which events that write covered.

    Redis keyspace notifications say when ``<prefix>:recs:<user>`` is SET; the
    profile mirror the worker writes in the same pipeline, after the
    recommendations, says up to which event time the write covers
    (``last_seen``). Events are stamped with their produce time, so an event
    is served by the first write whose ``last_seen`` reaches its time stamp:
    no ambiguity between several events of one shopper in flight.
    """

    def __init__(self, redis_url: str, prefix: str) -> None:
        import redis

        self.client = redis.Redis.from_url(redis_url)
        self.ok = True
        try:
            self.client.config_set("notify-keyspace-events", "K$")
        except Exception:  # managed Redis may forbid CONFIG: only the worker histogram is reported then
            self.ok = False
        db = self.client.connection_pool.connection_kwargs.get("db", 0)
        self.keys = RedisKeys(prefix)
        self.channel_prefix = f"__keyspace@{db}__:{self.keys.recs('')}"
        self.reader = redis.Redis.from_url(redis_url)
        # user -> [(time the recommendation key was written, newest event time it covers)]
        self.writes: dict[str, list[tuple[float, float]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.ok:
            return
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(self.channel_prefix + "*")
        self._thread = threading.Thread(target=self._run, name="recs-watcher", daemon=True)
        self._thread.start()

    def _burst(self) -> list[tuple[str, float]]:
        """``(user, time)`` of every SET notification waiting now (after up to 0.1 s for the first)."""
        n = len(self.channel_prefix)
        burst = []
        msg = self.pubsub.get_message(timeout=0.1)
        while msg is not None:
            if msg.get("data") in (b"set", "set"):
                ch = msg["channel"]
                burst.append(((ch.decode() if isinstance(ch, bytes) else ch)[n:], time.time()))
            # Not timeout=0: in a burst of notifications (one batch sets ~1,700
            # keys) the socket can hold half a message, and a non-blocking read
            # of the rest raises instead of waiting.
            msg = self.pubsub.get_message(timeout=0.05)
        return burst

    def _run(self) -> None:
        import msgspec

        decode = msgspec.json.Decoder().decode
        while not self._stop.is_set():
            burst = self._burst()
            if not burst:
                continue
            pipe = self.reader.pipeline(transaction=False)
            for user, _ in burst:
                pipe.get(self.keys.profile(user))
            for (user, t), raw in zip(burst, pipe.execute()):
                last_seen = None
                if raw:
                    with contextlib.suppress(Exception):
                        last_seen = decode(raw).get("last_seen")
                self.writes.setdefault(user, []).append((t, last_seen if last_seen is not None else -1.0))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            with contextlib.suppress(Exception):
                self.pubsub.close()
        with contextlib.suppress(Exception):
            self.client.close()
            self.reader.close()


def offer_events(settings: Settings, events: list[tuple[str, dict]], rate: float,
                 on_progress: Callable[[int], None] | None = None,
                 check: Callable[[], None] | None = None) -> tuple[list[tuple[str, float, float, str]], float]:
    """Produce ``events`` at ``rate`` events/s, each stamped with its produce time.

    Returns ``(user, produce time, event time, event id)`` per event and the
    rate achieved. The producer keeps librdkafka's 5 ms linger, as a shop's
    producer would; latencies count from the produce call, so the linger is
    part of them. ``check`` runs every 1,000 events (it raises to stop).
    """
    import msgspec

    from streams.kafka.produce import DeliveryReport, make_producer, send

    encode = msgspec.json.Encoder().encode
    producer = make_producer(settings, **{"linger.ms": 5})
    report = DeliveryReport()
    produced: list[tuple[str, float, float, str]] = []
    start = time.monotonic()
    for k, (etype, payload) in enumerate(events):
        ahead = k / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
        t = time.time()
        ts_ms = int(t * 1000)
        send(producer, settings.topic_for(etype), payload["user_id"].encode(),
             encode({**payload, "type": etype, "ts": ts_ms}), report)
        produced.append((payload["user_id"], t, ts_ms / 1000, payload["event_id"]))
        producer.poll(0)
        if on_progress and (k + 1) % 100 == 0:
            on_progress(100)
        if check and k % 1000 == 0:
            check()
    report.flush(producer)
    return produced, len(produced) / (time.monotonic() - start)


def _served(produced: list[tuple[str, float, float, str]],
            writes: dict[str, list[tuple[float, float]]]) -> tuple[list[tuple[float, float]], int]:
    """``(produce time, latency ms)`` of every event matched to the first later write covering it,
    and how many events found none."""
    pairs, missing = [], 0
    for user, t, ts, _ in produced:
        for t_write, covered in writes.get(user, ()):
            if covered >= ts - 1e-6 and t_write >= t:
                pairs.append((t, (t_write - t) * 1000))
                break
        else:
            missing += 1
    return pairs, missing


def _histogram_over_phase(before: list[dict], after: list[dict]) -> dict:
    """p50/p95/p99 (ms) of the workers' ``recostream_freshness_seconds``, counting this phase only."""
    name = "recostream_freshness_seconds"
    hist: dict[float, float] = {}
    for b, a in zip(before, after):
        hb = dict(histogram_buckets(b, name))
        for le, c in histogram_buckets(a, name):
            hist[le] = hist.get(le, 0.0) + c - hb.get(le, 0.0)
    buckets = sorted(hist.items())
    return {f"p{q}": (None if (v := histogram_quantile(buckets, q / 100)) is None else round(v * 1000, 1))
            for q in (50, 95, 99)}


def _drain(workers: Workers, before: list[dict], produced: int) -> None:
    """Wait (at most :data:`DRAIN_S`) until the workers have consumed every event produced."""
    expect = workers.total(before, "recostream_events_consumed_total") + produced
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline:
        if workers.total(workers.scrape_all(), "recostream_events_consumed_total") >= expect:
            break
        time.sleep(0.1)
    time.sleep(SETTLE_S)


def measure_freshness(settings: Settings, workers: Workers, sim, rate: float, seconds: float,
                      on_progress: Callable[[int], None] | None = None) -> dict:
    """Offer ``rate`` events/s of ``sim``'s shoppers for ``seconds`` to the running workers; the freshness keys."""
    pending = list(sim.events(int(rate * seconds)))
    watcher = RecsWatcher(settings.redis_url, settings.redis_prefix)
    watcher.start()
    before = workers.scrape_all()
    before_t = time.monotonic()
    produced, achieved = offer_events(settings, pending, rate, on_progress, workers.check_alive)
    _drain(workers, before, len(produced))
    watcher.stop()
    after = workers.scrape_all()
    # CPU each worker used over the phase, in cores: near 1.0 a worker is at its
    # capacity (its loop is one thread); well below, it is waiting.
    elapsed = time.monotonic() - before_t
    cpu_cores = [round((metric_sum(a, "process_cpu_seconds_total") - metric_sum(b, "process_cpu_seconds_total"))
                       / elapsed, 2) for b, a in zip(before, after)]
    pairs, missing = _served(produced, watcher.writes)
    if watcher.ok:
        out = percentiles([ms for _, ms in pairs])
        out["method"] = ("produce call -> SET of the shopper's recommendation key covering the event "
                         "(Redis keyspace notification + profile last_seen)")
    else:
        out = {"p50": None, "p95": None, "p99": None, "n": 0, "method": "unavailable (CONFIG SET refused)"}
    out["unmatched"] = missing
    checkpoints = "recostream_model_checkpoints_total"
    return {"freshness_ms": out,
            "freshness_ms_by_window": by_window(pairs, produced[0][1] if produced else 0.0),
            "freshness_worker_histogram_ms": _histogram_over_phase(before, after),
            "offered_rate_eps": rate, "achieved_rate_eps": round(achieved, 1), "freshness_events": len(produced),
            "freshness_worker_cpu_cores": cpu_cores,
            # A model checkpoint slows a worker for about a second (docs/BENCHMARKS.md):
            # say whether this phase's percentiles include one.
            "freshness_checkpoints": int(workers.total(after, checkpoints) - workers.total(before, checkpoints))}
