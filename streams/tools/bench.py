"""``recostream bench``: throughput, Faust references and freshness of the real worker, in one run.

What one run does, in order, against the embedded stack (tansu + redis-server
on loopback) or the services named by ``RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS`` /
``RECOSTREAM_REDIS_URL``:

1. generates ``--events`` shop events with :class:`~streams.tools.generator.ShopperSimulator`
   (many shoppers, a large catalogue) and pre-produces them, plus the
   catalogue, to fresh topics of this run (stamped with the wall clock, so the
   worker's contract checks accept them);
2. references over those very events, each with its own consumer group:
   ``raw_consume_eps`` (plain aiokafka ``getmany``, no decoding),
   ``bare_loop_eps`` (the worker's own consumer, ``streams.loop.make_consumer``,
   consuming micro-batches of ``RECOSTREAM_BATCH_MAX_EVENTS`` and doing
   nothing with them: the ceiling of the worker's loop) and
   ``faust_default_eps`` (a no-op Faust agent looping ``stream.take_events``
   on a Faust app with Faust's defaults);
3. ``throughput_eps``: ``--workers`` real ``recostream worker`` processes
   (every feature on) process the events; the rate is measured on the
   workers' own Prometheus metrics, from the first consumed event to the
   last batch's Redis write;
4. ``freshness_ms``: the workers stay up and shopper events are produced at
   ``--rate`` events/s for ``--freshness-seconds``, each stamped with its
   produce time. A Redis keyspace-notification subscriber records when each
   shopper's recommendation key is written; an event's freshness is the time
   from its produce call to the first write of its shopper's recommendations
   after it (the time until a client could read them). The worker's own
   ``recostream_freshness_seconds`` histogram (event time -> Redis write,
   equal to produce -> write here) is reported next to it.

Rates of the Faust references count the events after the first delivered
batch, divided by the time from that batch to the last event, so group joins
and connection set-up are not counted (the raw consumer is timed from its
first fetch after assignment); the worker's rate starts at the metrics
poll that first sees a consumed event (polls every 50 ms, the midpoint of the
poll interval is used) and ends at the ``recostream_model_last_update``
timestamp the worker sets after each batch's Redis write.

Everything started is stopped at the end; topics and keys of the run are
deleted when external services are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import click

from models.events import EVENT_TYPES
from streams.settings import Settings, SettingsError
from streams.tools.scrape import histogram_buckets, metric_sum, scrape

# Polled fast until the workers start (the start time is estimated from the
# polls), then slowly: every scrape costs the worker a full exposition under
# the GIL (at 20 scrapes/s, ~9 % of its samples), and the end time comes from
# the worker's own timestamp, not from the poll.
POLL_START_S = 0.05
FRESHNESS_WINDOW_S = 5  # freshness percentiles are also reported per window of this many seconds
POLL_RUNNING_S = 0.5


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus-style ``histogram_quantile`` (linear inside a bucket)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


def percentiles(values: list[float], qs=(50, 95, 99)) -> dict[str, float | int | None]:
    import numpy as np

    if not values:
        return {f"p{q}": None for q in qs} | {"n": 0}
    arr = np.asarray(values)
    out: dict[str, Any] = {f"p{q}": round(float(np.percentile(arr, q)), 2) for q in qs}
    out["max"] = round(float(arr.max()), 2)
    out["n"] = len(values)
    return out


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set (VmHWM) of a live process, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def current_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# ---------------------------------------------------------------------------
# events
# ---------------------------------------------------------------------------


def generate_events(n: int, users: int, items: int, seed: int, on_progress: Callable[[int], None] | None = None):
    """``(simulator, [(event_type, payload), ...])`` with ``n`` generated events, in time order.

    One :class:`ShopperSimulator` staggers its shoppers' first sessions over
    ``users / 50`` minutes, so a short stream would only ever see a few
    thousand of them. The shoppers are therefore split over several
    simulators of at most 2,500 each (distinct seeds and user-id prefixes,
    same catalogue ids and categories), whose streams are merged by time:
    many shoppers are active from the start, as in a real shop.
    """
    import heapq

    from streams.tools.generator import ShopperSimulator

    n_sims = max(1, -(-users // 2500))
    sims = [ShopperSimulator(n_users=-(-users // n_sims), n_items=items, n_categories=16, seed=seed + k,
                             user_prefix=f"u{k}-" if n_sims > 1 else "u") for k in range(n_sims)]
    per_sim = -(-n // n_sims)
    def keyed(k: int, sim: ShopperSimulator):
        for etype, ev in sim.events(per_sim):
            yield ev["ts"], k, etype, ev

    streams = [keyed(k, sim) for k, sim in enumerate(sims)]
    events = []
    for _, _, etype, ev in heapq.merge(*streams):
        events.append((etype, ev))
        if on_progress and len(events) % 10_000 == 0:
            on_progress(10_000)
        if len(events) >= n:
            break
    if on_progress and len(events) % 10_000:
        on_progress(len(events) % 10_000)
    return sims[0], events

def stamp_now(events: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Keep the simulated order but stamp events with the current wall clock (ms, increasing)."""
    base = int(time.time() * 1000) - len(events)
    return [(etype, {**payload, "ts": base + k}) for k, (etype, payload) in enumerate(events)]


# ---------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------


async def _assigned_consumer(settings: Settings, topics: list[str], **config: Any) -> tuple[Any, list]:
    """A started aiokafka consumer (no group) assigned every partition of ``topics``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.catalogue import _security

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                enable_auto_commit=False, **config, **_security(settings))
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
    except BaseException:
        await consumer.stop()
        raise
    return consumer, tps


async def _raw_consume(settings: Settings, topics: list[str], expect: int, timeout: float) -> dict:
    consumer, tps = await _assigned_consumer(settings, topics, auto_offset_reset="earliest")
    try:
        await consumer.seek_to_beginning(*tps)
        # Assigned and positioned: time every fetch from here.
        n = 0
        t_first = time.perf_counter()
        t_last = None
        deadline = time.monotonic() + timeout
        while n < expect and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            got = sum(len(v) for v in batches.values())
            if got:
                n += got
                t_last = time.perf_counter()
        eps = n / (t_last - t_first) if t_last is not None and t_last > t_first else None
        return {"events": n, "eps": eps}
    finally:
        await consumer.stop()


def raw_consume_eps(settings: Settings, topics: list[str], expect: int, timeout: float = 300.0) -> dict:
    return asyncio.run(_raw_consume(settings, topics, expect, timeout))


def bare_loop_eps(settings: Settings, topics: list[str], expect: int, timeout: float = 300.0) -> dict:
    """The worker's consumer, in its own group, taking micro-batches and doing nothing with them."""
    from streams.loop import make_consumer

    consumer = make_consumer(settings.replace(app_id=f"{settings.app_id}-ref-loop-{uuid.uuid4().hex[:6]}"))
    try:
        consumer.subscribe(topics)
        n = first_n = 0
        t_first = t_last = None
        deadline = time.monotonic() + timeout
        while n < expect and time.monotonic() < deadline:
            batch = consumer.consume(settings.batch_max_events, settings.batch_max_wait_s)
            if not batch:
                continue
            now = time.perf_counter()
            n += len(batch)
            if t_first is None:
                t_first, first_n = now, len(batch)
            t_last = now
        eps = (n - first_n) / (t_last - t_first) if t_first is not None and t_last > t_first else None
        return {"events": n, "eps": eps}
    finally:
        consumer.close()


def run_faust_reference(settings: Settings, mode: str, expect: int, run_dir: Path, *,
                        overrides: dict | None = None, transport: str = "kafka",
                        timeout: float = 600.0, on_progress: Callable[[int], None] | None = None) -> dict:
    """Run the no-op Faust agent (``mode``: a label of the run) in a child process."""
    import subprocess

    from streams.tools.up import stop_process, worker_env

    tag = uuid.uuid4().hex[:6]
    out = run_dir / f"faust-{mode}-{tag}.json"
    progress_file = run_dir / f"faust-{mode}-{tag}.progress"
    s = settings.replace(app_id=f"{settings.app_id}-ref-{mode}-{tag}", data_dir=str(run_dir / f"ref-{tag}"))
    env = worker_env(s, RECOSTREAM_BENCH_REF=json.dumps({
        "mode": mode, "expect": expect, "out": str(out), "progress": str(progress_file),
        "overrides": overrides or {}, "transport": transport}))
    log_path = run_dir / f"faust-{mode}-{tag}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streams.tools.bench"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        seen = 0
        while not out.exists():
            if proc.poll() is not None:
                raise click.ClickException(f"Faust reference ({mode}) exited with {proc.returncode}; "
                                           f"log {log_path}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise click.ClickException(f"Faust reference ({mode}) did not finish in {timeout:.0f}s; log {log_path}")
            if on_progress:
                with contextlib.suppress(OSError, ValueError):
                    n = int(progress_file.read_text() or 0)
                    if n > seen:
                        on_progress(n - seen)
                        seen = n
            time.sleep(0.1)
        time.sleep(0.05)
        result = json.loads(out.read_text())
        if on_progress and result["events"] > seen:
            on_progress(result["events"] - seen)
        result["peak_rss_mb"] = peak_rss_mb(proc.pid)
        return result
    finally:
        stop_process(proc, timeout=10)


def _faust_reference_child(spec: dict) -> None:
    """Entry point of the child process: a Faust worker with one no-op agent."""
    import faust
    from faust.worker import Worker

    settings = Settings.from_env()
    mode, expect = spec["mode"], int(spec["expect"])
    transport = spec.get("transport", "kafka")
    overrides = dict(spec.get("overrides") or {})
    # Experiment knobs that are not Faust settings (prefixed with "_").
    no_sensors = overrides.pop("_no_sensors", False)
    no_acks = overrides.pop("_no_acks", False)
    take = int(overrides.pop("_take", settings.batch_max_events))
    # Faust's defaults, except what is needed to run here at all: where to
    # connect, reading the pre-produced topic from the beginning, no web
    # server (port clashes), and the session timeout that makes the group
    # join take seconds instead of ~30 s on tansu (not a throughput setting).
    conf = {"store": "memory://", "web_enabled": False, "autodiscover": False,
            "consumer_auto_offset_reset": "earliest", "datadir": settings.data_dir,
            "broker_session_timeout": settings.kafka_session_timeout_s,
            "broker_heartbeat_interval": settings.kafka_heartbeat_interval_s}
    conf.update(overrides)
    app = faust.App(settings.app_id,
                    broker=[f"{transport}://{hp.strip()}" for hp in settings.kafka_bootstrap_servers.split(",")],
                    **conf)
    topic = app.topic(*settings.input_topics, key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw", acks=not no_acks)
    if no_sensors:
        app.sensors._sensors.clear()
    state = {"n": 0, "first_n": 0, "t_first": None, "t_last": None, "written": False}
    progress = Path(spec["progress"])

    @app.agent(topic, name="bare")
    async def bare(stream):
        async for batch in stream.take_events(take, within=settings.batch_max_wait_s):
            now = time.perf_counter()
            state["n"] += len(batch)
            if state["t_first"] is None:
                state["t_first"], state["first_n"] = now, len(batch)
                state["wall_first"] = time.time()
            state["t_last"] = now
            if state["n"] % 10_000 < len(batch):
                progress.write_text(str(state["n"]))
            if state["n"] >= expect and not state["written"]:
                state["written"] = True
                span = state["t_last"] - state["t_first"]
                result = {"mode": mode, "transport": transport, "overrides": spec.get("overrides") or {},
                          "events": state["n"],
                          "seconds": span, "eps": (state["n"] - state["first_n"]) / span if span > 0 else None}
                tmp = Path(spec["out"] + ".tmp")
                tmp.write_text(json.dumps(result))
                tmp.rename(spec["out"])

    parent = os.getppid()

    @app.timer(1.0)
    async def orphaned() -> None:  # the bench died without stopping us: do not linger
        if os.getppid() != parent:
            os._exit(1)

    Worker(app, loglevel="info", quiet=True).execute_from_commandline()


# ---------------------------------------------------------------------------
# the real worker
# ---------------------------------------------------------------------------


class Workers:
    def __init__(self, settings: Settings, n: int, run_dir: Path) -> None:
        from streams.tools.embedded import free_port
        from streams.tools.up import spawn_worker

        self.ports = []
        self.procs = []
        self.logs = []
        for k in range(n):
            s = settings.replace(metrics_port=free_port(), web_port=free_port(),
                                 data_dir=str(run_dir / f"worker{k}"))
            log = run_dir / f"worker{k}.log"
            # "info", the worker's default: at "warning" Faust's progress spinner
            # lowers the root logger to DEBUG, which costs ~4% of the worker.
            self.procs.append(spawn_worker(s, log, loglevel="info"))
            self.ports.append(s.metrics_port)
            self.logs.append(log)
        self.peak_rss: list[float] = [0.0] * n

    def check_alive(self) -> None:
        for proc, log in zip(self.procs, self.logs):
            if proc.poll() is not None:
                raise click.ClickException(f"worker exited with {proc.returncode}; log {log}:\n"
                                           f"{log.read_text(errors='replace')[-3000:]}")

    def scrape_all(self) -> list[dict[str, float]]:
        for k, proc in enumerate(self.procs):
            rss = peak_rss_mb(proc.pid)
            if rss:
                self.peak_rss[k] = max(self.peak_rss[k], rss)
        return [scrape(p) for p in self.ports]

    def total(self, samples: list[dict[str, float]], name: str) -> float:
        return sum(metric_sum(s, name) for s in samples)

    def stop(self) -> None:
        from streams.tools.up import stop_process

        for proc in self.procs:
            stop_process(proc)


def measure_throughput(workers: Workers, expect: int, timeout: float,
                       on_progress: Callable[[int], None] | None = None) -> dict:
    last_zero = time.time()
    t_start = None
    seen = 0
    deadline = time.monotonic() + timeout
    while True:
        workers.check_alive()
        now = time.time()
        samples = workers.scrape_all()
        consumed = workers.total(samples, "recostream_events_consumed_total")
        if consumed <= 0 and t_start is None:
            last_zero = now
        elif t_start is None:
            t_start = (last_zero + now) / 2
        if on_progress and consumed > seen:
            on_progress(int(consumed - seen))
            seen = consumed
        done = (workers.total(samples, "recostream_events_processed_total")
                + workers.total(samples, "recostream_events_duplicate_total")
                + workers.total(samples, "recostream_events_dead_lettered_total"))
        if consumed >= expect and done >= expect:
            break
        if time.monotonic() > deadline:
            raise click.ClickException(f"workers processed {done:.0f}/{expect} events in {timeout:.0f}s")
        time.sleep(POLL_START_S if t_start is None else POLL_RUNNING_S)
    # The last batch's Redis write time, as the worker stamped it.
    t_end = max(metric_sum(s, "recostream_model_last_update_timestamp_seconds") for s in samples)
    span = max(t_end - t_start, 1e-9)
    return {
        "seconds": round(span, 3),
        "eps": expect / span,
        "consumed": int(consumed),
        "processed": int(workers.total(samples, "recostream_events_processed_total")),
        "duplicates": int(workers.total(samples, "recostream_events_duplicate_total")),
        "dead_lettered": int(workers.total(samples, "recostream_events_dead_lettered_total")),
        "recommendations_written": int(workers.total(samples, "recostream_recommendations_written_total")),
        "users_in_state": int(workers.total(samples, "recostream_users")),
        "items_in_state": int(max(metric_sum(s, "recostream_items") for s in samples)),
    }


class RecsWatcher:
    """Records when each shopper's recommendation key is written, and which events it covered.

    Redis keyspace notifications say when ``{prefix}:recs:{user}`` is SET; the
    profile mirror the worker writes in the same pipeline says up to which
    event time that write covers (``last_seen``). Events are stamped with
    their produce time, so an event is served by the first write whose
    ``last_seen`` reaches its time stamp: no ambiguity between several events
    of one shopper in flight.
    """

    def __init__(self, redis_url: str, prefix: str) -> None:
        import redis

        self.client = redis.Redis.from_url(redis_url)
        self.ok = True
        try:
            self.client.config_set("notify-keyspace-events", "K$")
        except Exception:  # managed Redis may forbid CONFIG: fall back to the worker histogram
            self.ok = False
        db = self.client.connection_pool.connection_kwargs.get("db", 0)
        self.channel_prefix = f"__keyspace@{db}__:{prefix}:recs:"
        self.prefix = prefix
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

    def _run(self) -> None:
        import msgspec

        decode = msgspec.json.Decoder().decode
        n = len(self.channel_prefix)
        while not self._stop.is_set():
            msg = self.pubsub.get_message(timeout=0.1)
            burst = []
            while msg is not None:
                if msg.get("data") in (b"set", "set"):
                    ch = msg["channel"]
                    burst.append(((ch.decode() if isinstance(ch, bytes) else ch)[n:], time.time()))
                # Not timeout=0: with a burst of notifications (one script sets
                # ~1,700 keys) the socket can hold half a message, and a
                # non-blocking read of the rest raises instead of waiting.
                msg = self.pubsub.get_message(timeout=0.05)
            if not burst:
                continue
            # What did each write contain? The profile mirror is written in the
            # same pipeline, after the recommendations: its last_seen is the
            # newest event time the write covers.
            pipe = self.reader.pipeline(transaction=False)
            for user, _ in burst:
                pipe.get(f"{self.prefix}:profile:{user}")
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

    Returns ``(user, produce time, event time, event id)`` per event and the rate achieved.
    librdkafka's default linger (5 ms), as a shop's producer would have; latencies
    count from the produce call, so the linger is part of them."""
    import msgspec

    from streams.kafka.produce import DeliveryReport, _send, make_producer

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
        _send(producer, settings.topic_for(etype), payload["user_id"].encode(),
              encode({**payload, "type": etype, "ts": ts_ms}), report)
        produced.append((payload["user_id"], t, ts_ms / 1000, payload["event_id"]))
        producer.poll(0)
        if on_progress and (k + 1) % 100 == 0:
            on_progress(100)
        if check and k % 1000 == 0:
            check()
    report.flush(producer)
    return produced, len(produced) / (time.monotonic() - start)


def _by_window(latencies: list[tuple[float, float]], t0: float) -> list[dict]:
    """p50/p99 of ``(produce time, latency ms)`` pairs per FRESHNESS_WINDOW_S of produce time."""
    windows: dict[int, list[float]] = {}
    for t, ms in latencies:
        windows.setdefault(int((t - t0) // FRESHNESS_WINDOW_S), []).append(ms)
    return [{"from_s": k * FRESHNESS_WINDOW_S, **percentiles(v, (50, 99))} for k, v in sorted(windows.items())]


async def _tail(settings: Settings, topics: list[str], received: dict[str, float], ready: threading.Event,
                stop: threading.Event) -> None:
    import msgspec

    event_id = msgspec.json.Decoder(dict).decode
    consumer, tps = await _assigned_consumer(settings, topics, fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms)
    try:
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        ready.set()
        while not stop.is_set():
            for msgs in (await consumer.getmany(timeout_ms=100)).values():
                now = time.time()
                for m in msgs:
                    received.setdefault(event_id(m.value)["event_id"], now)
    finally:
        await consumer.stop()


def broker_reference(settings: Settings) -> Settings:
    """The settings with each input topic replaced by the broker reference's own
    (``<topic>.broker-ref``: the same layout, a mixed topic stays one topic)."""
    return settings.replace(**{f"topic_{t}": f"{getattr(settings, f'topic_{t}')}.broker-ref" for t in EVENT_TYPES})


def measure_broker_freshness(settings: Settings, sim, rate: float, seconds: float,
                             on_progress: Callable[[int], None] | None = None) -> dict:
    """The broker's own freshness floor: the same offered load (same producer settings,
    topic layout and event mix, on topics of their own) read by a plain aiokafka
    consumer with the worker's fetch wait; latency = produce call -> consumed.
    Nothing of the product runs, so the worker's freshness cannot be lower."""
    from streams.kafka.topics import ensure_topics

    ref = broker_reference(settings)
    ensure_topics(ref)
    received: dict[str, float] = {}
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(_tail(ref, list(ref.input_topics), received, ready, stop)),
                              name="broker-freshness", daemon=True)
    thread.start()
    if not ready.wait(60):
        stop.set()
        raise RuntimeError("broker freshness reference: the consumer did not start within 60 s")
    try:
        produced, achieved = offer_events(ref, list(sim.events(int(rate * seconds))), rate, on_progress)
        deadline = time.monotonic() + 10
        while len(received) < len(produced) and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
    pairs = [(t, (received[eid] - t) * 1000) for _, t, _, eid in produced if eid in received]
    out = percentiles([ms for _, ms in pairs])
    out["unmatched"] = len(produced) - len(pairs)
    return {"freshness_broker_ms": out,
            "freshness_broker_ms_by_window": _by_window(pairs, produced[0][1] if produced else 0.0),
            "broker_ref_achieved_rate_eps": round(achieved, 1)}


def measure_freshness(settings: Settings, workers: Workers, sim, rate: float, seconds: float,
                      on_progress: Callable[[int], None] | None = None) -> dict:
    n_events = int(rate * seconds)
    pending = list(sim.events(n_events))
    watcher = RecsWatcher(settings.redis_url, settings.redis_prefix)
    watcher.start()
    before = [s for s in workers.scrape_all()]
    before_t = time.monotonic()
    produced, achieved = offer_events(settings, pending, rate, on_progress, workers.check_alive)
    # Let the tail drain (bounded), then match produce -> first later write.
    deadline = time.monotonic() + 10
    expect = sum(workers.total([s], "recostream_events_consumed_total") for s in before) + len(produced)
    while time.monotonic() < deadline:
        samples = workers.scrape_all()
        if workers.total(samples, "recostream_events_consumed_total") >= expect:
            break
        time.sleep(0.1)
    time.sleep(0.5)
    watcher.stop()
    after = workers.scrape_all()
    # CPU the workers used over the phase, in cores (1.0 = one core busy all the time): a worker
    # near 1.0 is at its capacity (its event loop is one thread).
    cpu_cores = [round((metric_sum(a, "process_cpu_seconds_total") - metric_sum(b, "process_cpu_seconds_total"))
                       / (time.monotonic() - before_t), 2) for b, a in zip(before, after)]
    pairs, missing = [], 0  # (produce time, latency ms): by when it was produced, does latency drift?
    for user, t, ts, _ in produced:
        for t_write, covered in watcher.writes.get(user, ()):
            if covered >= ts - 1e-6 and t_write >= t:
                pairs.append((t, (t_write - t) * 1000))
                break
        else:
            missing += 1
    latencies = [ms for _, ms in pairs]
    # The worker's own histogram, over this phase only.
    name = "recostream_freshness_seconds"
    hist: dict[float, float] = {}
    for b, a in zip(before, after):
        hb = dict(histogram_buckets(b, name))
        for le, c in histogram_buckets(a, name):
            hist[le] = hist.get(le, 0.0) + c - hb.get(le, 0.0)
    buckets = sorted(hist.items())
    worker_hist = {f"p{q}": (None if (v := histogram_quantile(buckets, q / 100)) is None else round(v * 1000, 1))
                   for q in (50, 95, 99)}
    out = percentiles(latencies) if watcher.ok else {"p50": None, "p95": None, "p99": None, "n": 0}
    out["method"] = ("produce call -> SET of the shopper's recommendation key covering the event "
                     "(Redis keyspace notification + profile last_seen)") if watcher.ok else "unavailable (CONFIG SET refused)"
    out["unmatched"] = missing
    timeline = _by_window(pairs, produced[0][1] if produced else 0.0)
    return {"freshness_ms": out, "freshness_ms_by_window": timeline, "freshness_worker_histogram_ms": worker_hist,
            "offered_rate_eps": rate, "achieved_rate_eps": round(achieved, 1), "freshness_events": len(produced),
            "freshness_worker_cpu_cores": cpu_cores,
            # A model checkpoint slows a worker for about a second (forked child, copy-on-write;
            # docs/BENCHMARKS.md): say whether this phase's percentiles include one.
            "freshness_checkpoints": int(workers.total(after, "recostream_model_checkpoints_total")
                                         - workers.total(before, "recostream_model_checkpoints_total"))}


# ---------------------------------------------------------------------------
# orchestration
# ---------------------------------------------------------------------------


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=False)


def run_bench(settings: Settings, *, n_events: int, rate: float, workers: int, users: int, items: int,
              freshness_seconds: float, references: bool = True, seed: int = 7,
              py_spy_dir: Path | None = None, run_dir: Path | None = None, say: Callable[[str], None] = lambda m: None) -> dict:
    from streams.kafka.produce import make_producer, publish_catalogue, publish_events
    from streams.kafka.topics import ensure_topics
    from streams.tools.embedded import EmbeddedStack, start_broker, start_redis

    tag = f"bench{os.getpid()}{uuid.uuid4().hex[:4]}"
    run_dir = run_dir or Path("run") / tag
    run_dir.mkdir(parents=True, exist_ok=True)
    stack = EmbeddedStack()
    external = {"kafka": bool(settings.kafka_bootstrap_servers), "redis": bool(settings.redis_url)}
    pool: Workers | None = None
    result: dict[str, Any] = {}
    broker_fresh: dict[str, Any] = {}
    try:
        if not external["kafka"]:
            stack.broker = start_broker(run_dir)
            stack.servers.append(stack.broker)
            settings = settings.replace(kafka_bootstrap_servers=stack.bootstrap_servers)
        if not external["redis"]:
            stack.redis = start_redis(run_dir)
            stack.servers.append(stack.redis)
            settings = settings.replace(redis_url=stack.redis_url)
        settings = settings.replace(
            app_id=f"{tag}", redis_prefix=tag,
            topic_browse=f"{tag}.browse", topic_click=f"{tag}.click", topic_purchase=f"{tag}.purchase",
            topic_items=f"{tag}.items", topic_recommendations=f"{tag}.recommendations",
            topic_dead_letter=f"{tag}.dead-letter")
        say(f"broker {settings.kafka_bootstrap_servers} ({'external' if external['kafka'] else 'embedded tansu'}), "
            f"redis {settings.redis_url.split('@')[-1]} ({'external' if external['redis'] else 'embedded'}), "
            f"run dir {run_dir}")
        ensure_topics(settings)
        input_topics = list(settings.input_topics)

        with _progress() as progress:
            task = progress.add_task("generating events", total=n_events)
            sim, events = generate_events(n_events, users, items, seed, lambda k: progress.advance(task, k))
            events = stamp_now(events)
            producer = make_producer(settings)
            publish_catalogue(producer, settings, sim.catalogue())
            task = progress.add_task("pre-producing events", total=n_events)
            t0 = time.monotonic()
            publish_events(producer, settings, events, on_progress=lambda k: progress.advance(task, k))
            produce_s = time.monotonic() - t0
            distinct_users = len({p["user_id"] for _, p in events})
            distinct_items = len({p["item_id"] for _, p in events})
            del events

            if references:
                task = progress.add_task("reference: raw aiokafka consumer", total=n_events)
                raw = raw_consume_eps(settings, input_topics, n_events)
                progress.update(task, completed=raw["events"])
                task = progress.add_task("reference: the worker's loop, no work", total=n_events)
                loop_ref = bare_loop_eps(settings, input_topics, n_events)
                progress.update(task, completed=loop_ref["events"])
                refs = {}
                for mode in ("default",):
                    task = progress.add_task(f"reference: no-op Faust agent ({mode})", total=n_events)
                    refs[mode] = run_faust_reference(settings, mode, n_events, run_dir,
                                                     on_progress=lambda k, t=task: progress.advance(t, k))
                if freshness_seconds > 0:
                    task = progress.add_task(f"reference: broker freshness at {rate:g}/s",
                                             total=int(rate * freshness_seconds))
                    broker_fresh = measure_broker_freshness(settings, sim, rate, freshness_seconds,
                                                            on_progress=lambda k: progress.advance(task, k))
            task = progress.add_task(f"worker x{workers}: processing", total=n_events)
            pool = Workers(settings, workers, run_dir)
            spies = _start_py_spy(pool, py_spy_dir, "throughput") if py_spy_dir else []
            try:
                thr = measure_throughput(pool, n_events, timeout=max(600.0, n_events / 200),
                                         on_progress=lambda k: progress.advance(task, k))
            finally:
                _stop_py_spy(spies)
            fresh: dict[str, Any] = {}
            if freshness_seconds > 0:
                task = progress.add_task(f"freshness at {rate:g} events/s", total=int(rate * freshness_seconds))
                spies = _start_py_spy(pool, py_spy_dir, "freshness") if py_spy_dir else []
                try:
                    fresh = measure_freshness(settings, pool, sim, rate, freshness_seconds,
                                              on_progress=lambda k: progress.advance(task, k))
                finally:
                    _stop_py_spy(spies)
            final = pool.scrape_all()
            rss_now = [current_rss_mb(p.pid) for p in pool.procs]

        bare = loop_ref["eps"] if references else None
        result = {
            "events": n_events,
            "workers": workers,
            "partitions": settings.partitions,
            "generated_users": users,
            "generated_items": items,
            "distinct_users_in_events": distinct_users,
            "distinct_items_in_events": distinct_items,
            "throughput_eps": round(thr["eps"], 1),
            "throughput_seconds": thr["seconds"],
            "bare_loop_eps": round(bare, 1) if bare else None,
            "faust_default_eps": round(refs["default"]["eps"], 1) if references and refs["default"]["eps"] else None,
            "raw_consume_eps": round(raw["eps"], 1) if references and raw["eps"] else None,
            "throughput_vs_bare": round(thr["eps"] / bare, 3) if bare else None,
            "bare_loop_vs_faust_default": (round(bare / refs["default"]["eps"], 3)
                                if references and bare and refs["default"]["eps"] else None),
            "freshness_ms": fresh.get("freshness_ms"),
            "freshness_ms_by_window": fresh.get("freshness_ms_by_window"),
            "freshness_worker_histogram_ms": fresh.get("freshness_worker_histogram_ms"),
            "freshness_worker_cpu_cores": fresh.get("freshness_worker_cpu_cores"),
            "freshness_checkpoints": fresh.get("freshness_checkpoints"),
            # The same load read by a plain consumer, no product: the broker's floor (see measure_broker_freshness).
            "freshness_broker_ms": broker_fresh.get("freshness_broker_ms"),
            "freshness_broker_ms_by_window": broker_fresh.get("freshness_broker_ms_by_window"),
            "offered_rate_eps": rate if fresh else None,
            "achieved_rate_eps": fresh.get("achieved_rate_eps"),
            "peak_rss_mb": round(max(pool.peak_rss), 1),
            "peak_rss_mb_per_worker": [round(r, 1) for r in pool.peak_rss],
            "rss_mb_at_end": [None if r is None else round(r, 1) for r in rss_now],
            "users_in_state": int(pool.total(final, "recostream_users")),
            "items_in_state": int(max(metric_sum(s, "recostream_items") for s in final)),
            "processed": thr["processed"],
            "duplicates": thr["duplicates"],
            "dead_lettered": thr["dead_lettered"],
            "recommendations_written": thr["recommendations_written"],
            "preproduce_eps": round(n_events / produce_s, 1) if produce_s else None,
            "worker_settings": {"batch_max_events": settings.batch_max_events,
                                "batch_max_wait_s": settings.batch_max_wait_s, "top_n": settings.top_n,
                                "checkpoint_interval_s": settings.checkpoint_interval_s},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "services": "external" if any(external.values()) else "embedded"},
        }
        return result
    finally:
        if pool is not None:
            pool.stop()
        if any(external.values()):
            _cleanup_external(settings, external)
        stack.stop()


def py_spy_command() -> str | None:
    """The py-spy executable (on PATH or beside this Python), if installed: it is optional."""
    import shutil

    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def _start_py_spy(pool: Workers, out_dir: Path, phase: str) -> list:
    """Sample every worker with py-spy (collapsed stacks, all threads, idle included) during one phase."""
    import subprocess

    exe = py_spy_command()
    out_dir.mkdir(parents=True, exist_ok=True)
    spies = []
    for k, proc in enumerate(pool.procs):
        out = out_dir / f"{phase}-worker{k}.collapsed.txt"
        spies.append(subprocess.Popen([exe, "record", "--pid", str(proc.pid), "--format", "raw", "--idle",
                                       "--threads", "--rate", "200", "--output", str(out)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
    return spies


def _stop_py_spy(spies: list) -> None:
    import signal

    for spy in spies:
        with contextlib.suppress(ProcessLookupError):
            spy.send_signal(signal.SIGINT)
    for spy in spies:
        try:
            spy.wait(30)
        except Exception:
            spy.kill()


def _cleanup_external(settings: Settings, external: dict) -> None:
    with contextlib.suppress(Exception):
        if external["redis"]:
            import redis

            r = redis.Redis.from_url(settings.redis_url)
            for key in r.scan_iter(match=f"{settings.redis_prefix}:*", count=1000):
                r.delete(key)
    with contextlib.suppress(Exception):
        if external["kafka"]:
            from confluent_kafka.admin import AdminClient

            from streams.kafka.topics import topic_specs

            admin = AdminClient(settings.kafka_client_config())
            refs = list(broker_reference(settings).input_topics)
            admin.delete_topics([t.topic for t in topic_specs(settings)] + refs, operation_timeout=10)


@click.command("bench")
@click.option("--events", "n_events", default=200_000, show_default=True, type=click.IntRange(min=100),
              help="Events pre-produced and processed for the throughput measurement.")
@click.option("--rate", default=2000.0, show_default=True, type=click.FloatRange(min=1.0),
              help="Offered load (events/s) of the freshness phase.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1, max=64),
              help="Worker processes (each its own `recostream worker`).")
@click.option("--users", default=50_000, show_default=True, type=click.IntRange(min=1), help="Simulated shoppers.")
@click.option("--items", "n_items", default=20_000, show_default=True, type=click.IntRange(min=16),
              help="Catalogue size.")
@click.option("--freshness-seconds", default=30.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Length of the freshness phase (0 skips it).")
@click.option("--references/--no-references", default=True, show_default=True,
              help="Measure the raw-consumer and no-op Faust references over the same events.")
@click.option("--seed", default=7, show_default=True, help="Simulator seed.")
@click.option("--py-spy", "py_spy_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Record each worker with py-spy during the throughput and freshness phases "
                   "(collapsed stacks per phase and worker in this directory).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object to stdout.")
def bench(n_events: int, rate: float, workers: int, users: int, n_items: int, freshness_seconds: float,
          references: bool, seed: int, py_spy_dir: Path | None, as_json: bool) -> None:
    """Benchmark the real worker: throughput, Faust references, freshness, memory.

    Starts the embedded broker and Redis (or uses RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS /
    RECOSTREAM_REDIS_URL), pre-produces --events generated shop events, measures
    a raw aiokafka consumer and a no-op Faust agent (product settings and Faust
    defaults) over them and the broker's own freshness (a plain consumer at
    --rate), then --workers real workers processing them (throughput_eps),
    then freshness (produce -> recommendations readable in Redis) at --rate
    events/s for --freshness-seconds. Progress goes to stderr;
    --json prints one JSON object with every number to stdout.
    """
    from rich.console import Console

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    if py_spy_dir is not None and py_spy_command() is None:
        raise click.UsageError("--py-spy needs the py-spy command, an optional tool: pip install py-spy")
    err = Console(stderr=True)
    # SIGTERM unwinds like Ctrl-C, so the servers and workers started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run_bench(settings, n_events=n_events, rate=rate, workers=workers, users=users, items=n_items,
                       freshness_seconds=freshness_seconds, references=references, seed=seed,
                       py_spy_dir=py_spy_dir, say=lambda m: err.print(m, highlight=False))
    if as_json:
        click.echo(json.dumps(result))
        return
    _print(err if not sys.stdout.isatty() else Console(), result)


def _print(console, r: dict) -> None:
    from rich.table import Table

    table = Table(title=f"recostream bench: {r['events']} events, {r['workers']} worker(s), "
                        f"{r['partitions']} partitions")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("worker throughput (events/s)", r["throughput_eps"]),
        ("the worker's loop doing nothing", r["bare_loop_eps"]),
        ("no-op Faust agent, Faust defaults", r["faust_default_eps"]),
        ("raw aiokafka consumer", r["raw_consume_eps"]),
        ("throughput / the bare loop", r["throughput_vs_bare"]),
    ]
    f = r.get("freshness_ms") or {}
    rows += [(f"freshness p{q} (ms) at {r['offered_rate_eps']} ev/s", f.get(f"p{q}")) for q in (50, 95, 99)]
    rows += [(f"  p99 of events produced from {w['from_s']} s", w["p99"]) for w in r.get("freshness_ms_by_window") or ()]
    rows += [("peak worker RSS (MiB)", r["peak_rss_mb"]), ("users / items in state",
                                                           f"{r['users_in_state']} / {r['items_in_state']}")]
    for name, value in rows:
        table.add_row(name, "-" if value is None else str(value))
    console.print(table)


if __name__ == "__main__":  # child process of a Faust reference
    _spec = os.environ.get("RECOSTREAM_BENCH_REF")
    if not _spec:
        sys.exit("streams.tools.bench is run through `recostream bench`")
    _faust_reference_child(json.loads(_spec))
