"""One bench run, phase by phase: services, events, references, throughput, freshness, report.

Everything started is stopped at the end; the run's topics and keys are
deleted when external services are used.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from streams.settings import Settings
from streams.tools.bench.broker_freshness import broker_reference, measure_broker_freshness
from streams.tools.bench.events import generate_events, stamp_now
from streams.tools.bench.faust_reference import faust_default_eps
from streams.tools.bench.freshness import measure_freshness
from streams.tools.bench.profiling import profiled
from streams.tools.bench.references import bare_loop_eps, raw_consume_eps
from streams.tools.bench.report import build_report
from streams.tools.bench.throughput import measure_throughput
from streams.tools.bench.workers import Workers
from streams.tools.embedded import EmbeddedStack, start_broker, start_redis


@dataclass(frozen=True)
class Plan:
    """What one run does (the options of ``recostream bench``)."""

    n_events: int
    rate: float
    workers: int
    users: int
    items: int
    freshness_seconds: float
    references: bool = True
    seed: int = 7
    py_spy_dir: Path | None = None
    free_models: bool = False

    @property
    def freshness_events(self) -> int:
        return int(self.rate * self.freshness_seconds)


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=False)


def _start_services(settings: Settings, stack: EmbeddedStack, run_dir: Path) -> Settings:
    """Start the embedded broker and Redis for whichever of them ``settings`` does not name."""
    if not settings.kafka_bootstrap_servers:
        stack.broker = start_broker(run_dir)
        stack.servers.append(stack.broker)
        settings = settings.replace(kafka_bootstrap_servers=stack.bootstrap_servers)
    if not settings.redis_url:
        stack.redis = start_redis(run_dir)
        stack.servers.append(stack.redis)
        settings = settings.replace(redis_url=stack.redis_url)
    return settings


def _own_names(settings: Settings, tag: str) -> Settings:
    """Topics, consumer group and Redis keys of this run only: a run never touches another's data."""
    topics = ("browse", "click", "purchase", "items", "recommendations", "dead_letter", "control", "impressions")
    return settings.replace(app_id=tag, redis_prefix=tag,
                            **{f"topic_{t}": f"{tag}.{t.replace('_', '-')}" for t in topics})


def _preproduce(settings: Settings, plan: Plan, progress) -> tuple[Any, dict]:
    """Generate the events and produce them, with the catalogue: ``(simulator, facts about them)``."""
    from streams.kafka.produce import make_producer, publish_catalogue, publish_events

    task = progress.add_task("generating events", total=plan.n_events)
    sim, events = generate_events(plan.n_events, plan.users, plan.items, plan.seed,
                                  lambda k: progress.advance(task, k))
    events = stamp_now(events)
    producer = make_producer(settings)
    publish_catalogue(producer, settings, sim.catalogue())
    task = progress.add_task("pre-producing events", total=plan.n_events)
    t0 = time.monotonic()
    publish_events(producer, settings, events, on_progress=lambda k: progress.advance(task, k))
    return sim, {"produce_s": time.monotonic() - t0,
                 "distinct_users": len({p["user_id"] for _, p in events}),
                 "distinct_items": len({p["item_id"] for _, p in events})}


def _references(settings: Settings, plan: Plan, sim, run_dir: Path, progress) -> dict:
    """The no-work consumers over the pre-produced events, and the broker's own freshness."""
    topics, n = list(settings.input_topics), plan.n_events
    refs: dict[str, dict] = {}
    task = progress.add_task("reference: raw aiokafka consumer", total=n)
    refs["raw"] = raw_consume_eps(settings, topics, n)
    progress.update(task, completed=refs["raw"]["events"])
    task = progress.add_task("reference: the worker's loop, no work", total=n)
    refs["bare_loop"] = bare_loop_eps(settings, topics, n)
    progress.update(task, completed=refs["bare_loop"]["events"])
    task = progress.add_task("reference: no-op Faust agent (default)", total=n)
    refs["faust_default"] = faust_default_eps(settings, n, run_dir, on_progress=lambda k: progress.advance(task, k))
    if plan.freshness_seconds > 0:
        task = progress.add_task(f"reference: broker freshness at {plan.rate:g}/s", total=plan.freshness_events)
        refs["broker"] = measure_broker_freshness(settings, sim, plan.rate, plan.freshness_seconds,
                                                  on_progress=lambda k: progress.advance(task, k))
    return refs


def _measure_workers(settings: Settings, plan: Plan, pool: Workers, sim, progress) -> dict:
    """Throughput over the pre-produced events, then freshness at the offered load, on the same workers."""
    task = progress.add_task(f"worker x{plan.workers}: processing", total=plan.n_events)
    with profiled(pool, plan.py_spy_dir, "throughput"):
        thr = measure_throughput(pool, plan.n_events, timeout=max(600.0, plan.n_events / 200),
                                 on_progress=lambda k: progress.advance(task, k))
    fresh: dict[str, Any] = {}
    if plan.freshness_seconds > 0:
        task = progress.add_task(f"freshness at {plan.rate:g} events/s", total=plan.freshness_events)
        with profiled(pool, plan.py_spy_dir, "freshness"):
            fresh = measure_freshness(settings, pool, sim, plan.rate, plan.freshness_seconds,
                                      on_progress=lambda k: progress.advance(task, k))
    final = pool.scrape_all()
    return {"throughput": thr, "freshness": fresh, "final_samples": final, "peak_rss": list(pool.peak_rss),
            "rss_now": pool.rss_now()}


def run_bench(settings: Settings, *, n_events: int, rate: float, workers: int, users: int, items: int,
              freshness_seconds: float, references: bool = True, seed: int = 7, py_spy_dir: Path | None = None,
              free_models: bool = False, run_dir: Path | None = None,
              say: Callable[[str], None] = lambda m: None) -> dict:
    """Run every phase and return the report (:func:`~streams.tools.bench.report.build_report`)."""
    from streams.kafka.topics import ensure_topics

    plan = Plan(n_events, rate, workers, users, items, freshness_seconds, references, seed, py_spy_dir, free_models)
    tag = f"bench{os.getpid()}{uuid.uuid4().hex[:4]}"
    run_dir = run_dir or Path("run") / tag
    run_dir.mkdir(parents=True, exist_ok=True)
    stack = EmbeddedStack()
    external = {"kafka": bool(settings.kafka_bootstrap_servers), "redis": bool(settings.redis_url)}
    pool: Workers | None = None
    # Named first: the clean-up below must only ever touch this run's names, even if a start fails.
    settings = _own_names(settings, tag)
    try:
        settings = _start_services(settings, stack, run_dir)
        say(f"broker {settings.kafka_bootstrap_servers} ({'external' if external['kafka'] else 'embedded tansu'}), "
            f"redis {settings.redis_url.split('@')[-1]} ({'external' if external['redis'] else 'embedded'}), "
            f"run dir {run_dir}" + (", FREE MODELS (an upper bound, not the product)" if free_models else ""))
        ensure_topics(settings)
        with _progress() as progress:
            sim, shop = _preproduce(settings, plan, progress)
            refs = _references(settings, plan, sim, run_dir, progress) if references else {}
            pool = Workers(settings, workers, run_dir, free_models=free_models)
            measured = _measure_workers(settings, plan, pool, sim, progress)
        return build_report(settings, plan, shop, refs, measured, external)
    finally:
        if pool is not None:
            pool.stop()
        if any(external.values()):
            _cleanup_external(settings, external)
        stack.stop()


def _cleanup_external(settings: Settings, external: dict) -> None:
    """Delete the run's keys and topics from services that outlive it."""
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

