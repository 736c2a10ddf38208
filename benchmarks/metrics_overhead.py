"""What the worker's metrics cost per event: the real per-batch code path, metrics on vs off.

Runs :class:`streams.pipeline.BatchProcessor.process` (decode, dead-letter,
learn with the real engine, build outputs, every metric call) on generated
micro-batches twice, side by side on identical input: once with the real
:class:`streams.metrics.Metrics` and once with a null ``Metrics`` whose
every metric is a no-op. Kafka and Redis are replaced by
in-memory stand-ins so that only CPU work in the worker's process is timed.
Batches of the two variants are interleaved (each with its own engine fed
the same events) so drift affects both alike; medians are compared.

Also timed in isolation: only the metric statements one micro-batch
executes, and one scrape (rendering /metrics) of a worker's registry.

    .venv/bin/python benchmarks/metrics_overhead.py [--batches 200] [--batch-size 500]

Prints one JSON object. docs/MONITORING.md quotes the numbers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import generate_latest

from models.engine import PersonalisationEngine
from streams.metrics import EVENT_TYPES, Metrics
from streams.pipeline import BatchProcessor
from streams.settings import Settings
from streams.state.store import PartitionState, ProfileStore
from streams.tools.generator import ShopperSimulator

_encode = msgspec.json.Encoder().encode


class _Null:
    """A metric (or label child) that does nothing."""

    def inc(self, *_a, **_k): ...
    def dec(self, *_a, **_k): ...
    def set(self, *_a, **_k): ...
    def observe(self, *_a, **_k): ...
    def labels(self, *_a, **_k): return self


class NullMetrics(Metrics):
    """The Metrics interface with every metric a no-op: the "metrics off" baseline."""

    def __init__(self) -> None:
        super().__init__(process_metrics=False)
        null = _Null()
        for name, value in list(vars(self).items()):
            if name == "registry":
                continue
            if hasattr(value, "inc") or hasattr(value, "observe") or hasattr(value, "set"):
                setattr(self, name, null)
            elif isinstance(value, dict) and value and all(hasattr(v, "inc") or hasattr(v, "set") for v in value.values()):
                setattr(self, name, {k: null for k in value})

    def dead_letter(self, reason: str) -> None: ...
    def observe_segments(self, profiles) -> None: ...


class _Outputs:
    """streams.sinks.kafka.KafkaSink's interface, dropping every record."""

    def produce(self, topic, key, value, partition=None, headers=None):
        pass

    def flush(self):
        pass


class _Sink:
    """streams.sinks.redis.RedisSink's interface, dropping every write."""

    def write(self, parts, model):
        return 0


class _Message:
    """The confluent-kafka ``Message`` methods the pipeline reads."""

    __slots__ = ("_topic", "_partition", "_offset", "_key", "_value")

    def __init__(self, topic, partition, offset, key, value):
        self._topic, self._partition, self._offset, self._key, self._value = topic, partition, offset, key, value

    def topic(self):
        return self._topic

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def key(self):
        return self._key

    def value(self):
        return self._value


def make_processor(settings: Settings, metrics: Metrics, catalogue: list[dict]) -> BatchProcessor:
    engine = PersonalisationEngine(top_n=settings.top_n, exclude=settings.exclude, n_segments=settings.n_segments,
                                   dedupe_window=settings.dedupe_window, seed=settings.seed)
    for item in catalogue:
        engine.upsert_item(item["item_id"], item.get("category"), item.get("available", True))
    store = ProfileStore()
    for partition in range(settings.partitions):
        store.adopt(partition, PartitionState(gen=0))
    return BatchProcessor(settings, engine, store, _Outputs(), _Sink(), metrics)


def make_batches(settings: Settings, n_batches: int, batch_size: int, users: int, items: int) -> tuple[list, list]:
    sim = ShopperSimulator(n_users=users, n_items=items, seed=3)
    topic_of = {t: name for name, t in settings.input_topics.items()}
    events = sim.events(n_batches * batch_size)
    batches, next_offset = [], {}  # offsets are consecutive per topic-partition, as on Kafka
    now_ms = int(time.time() * 1000)
    for _ in range(n_batches):
        batch = []
        for etype, payload in itertools.islice(events, batch_size):
            payload = {**payload, "type": etype, "ts": now_ms}
            tp = (topic_of[etype], hash(payload["user_id"]) % settings.partitions)
            offset = next_offset[tp] = next_offset.get(tp, -1) + 1
            batch.append(_Message(tp[0], tp[1], offset, payload["user_id"].encode(), _encode(payload)))
        batches.append(batch)
    return batches, sim.catalogue()


def time_pipeline(args) -> dict:
    settings = Settings.from_env({})
    batches, catalogue = make_batches(settings, args.batches, args.batch_size, args.users, args.items)
    on = make_processor(settings, Metrics(process_metrics=False), list(catalogue))
    off = make_processor(settings, NullMetrics(), list(catalogue))
    t_on, t_off = [], []
    for i, batch in enumerate(batches):
        order = (on, off) if i % 2 else (off, on)  # alternate who goes first
        for proc in order:
            t0 = time.perf_counter()
            proc.process(batch)  # the batch's (in-memory) writes, metrics included
            (t_on if proc is on else t_off).append(time.perf_counter() - t0)
    warm = max(1, len(batches) // 10)  # the first batches build the models: skip them
    t_on, t_off = t_on[warm:], t_off[warm:]
    n = args.batch_size
    med_on, med_off = statistics.median(t_on), statistics.median(t_off)
    tot_on, tot_off = sum(t_on), sum(t_off)
    # Same batch, same model state: the paired difference cancels most drift.
    diffs = sorted((a - b) / n * 1e6 for a, b in zip(t_on, t_off))
    q1, q3 = diffs[len(diffs) // 4], diffs[3 * len(diffs) // 4]
    return {
        "batches_timed": len(t_on),
        "batch_size": n,
        "per_event_us_metrics_on": round(med_on / n * 1e6, 2),
        "per_event_us_metrics_off": round(med_off / n * 1e6, 2),
        "per_event_overhead_us_paired_median": round(statistics.median(diffs), 3),
        "per_event_overhead_us_paired_iqr": [round(q1, 3), round(q3, 3)],
        "overhead_share_of_batch_pct": round((tot_on - tot_off) / tot_off * 100, 2),
        "events_per_s_metrics_on": round(len(t_on) * n / tot_on),
        "events_per_s_metrics_off": round(len(t_off) * n / tot_off),
    }


def time_metric_statements(args) -> dict:
    """Only the metric statements of one batch, as pipeline.process runs them."""
    m = Metrics(process_metrics=False)
    n = args.batch_size
    types = [EVENT_TYPES[i % 3] for i in range(n)]
    users = [f"u{i}" for i in range(min(n, args.users))]
    profiles = {u: SimpleNamespace(segment=i % 6) for i, u in enumerate(users)}
    ages = [0.05 + (i % 10) * 0.01 for i in range(len(users))]
    learned = {t: types.count(t) for t in EVENT_TYPES}

    def one_batch():
        for t in types:
            m.consumed_by_type[t].inc()
        m.batch_size.observe(n)
        for t, k in learned.items():
            m.processed_by_type[t].inc(k)
        m.duplicates.inc(0)
        m.live_evaluated.inc(n // 2)
        m.hits_model.inc(n // 20)
        m.hits_popularity.inc(n // 40)
        m.observe_segments(profiles)
        m.recommendations_written.inc(len(users))
        for age in ages:
            m.freshness.observe(age)
        m.batch_seconds.observe(0.02)
        m.users.set(len(users))
        m.items.set(args.items)
        m.model_version.set(123)
        m.model_updated.set(time.time())

    rounds = max(50, args.batches)
    one_batch()
    t0 = time.perf_counter()
    for _ in range(rounds):
        one_batch()
    per_batch = (time.perf_counter() - t0) / rounds
    return {"per_batch_us": round(per_batch * 1e6, 1), "per_event_us": round(per_batch / n * 1e6, 3),
            "users_per_batch": len(users)}


def time_scrape() -> dict:
    m = Metrics()
    m.observe_segments({f"u{i}": SimpleNamespace(segment=i % 6) for i in range(1000)})
    m.watch_consumer_lag(lambda: [(t, p, 1000, 990) for t in ("browse", "click", "purchase", "items") for p in range(4)])
    for reason in ("not_json", "missing_field"):
        m.dead_letter(reason)
    body = generate_latest(m.registry)
    rounds = 300
    t0 = time.perf_counter()
    for _ in range(rounds):
        generate_latest(m.registry)
    return {"scrape_ms": round((time.perf_counter() - t0) / rounds * 1e3, 3), "scrape_bytes": len(body),
            "series": sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--items", type=int, default=1000)
    args = p.parse_args()
    out = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "pipeline": time_pipeline(args),
        "metric_statements_only": time_metric_statements(args),
        "scrape": time_scrape(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
